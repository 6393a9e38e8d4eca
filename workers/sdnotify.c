/* workers/sdnotify.c: systemd's socket activation, notification and watchdog protocol
 * (workers/sdnotify.h says why it is not libsystemd's). */
#include "workers/sdnotify.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Parses a whole decimal number of up to |max|; returns 0 or -EINVAL. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    unsigned long long v;
    char *end;

    if (s == NULL || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* 1 when the variable |name| is unset (it is for every process) or names this process, 0 when
 * it names another, -EINVAL when it is no pid. */
static int pid_is_ours(const char *name, int unset_means)
{
    const char *s = getenv(name);
    uint64_t pid;

    if (s == NULL)
        return unset_means;
    if (parse_u64(s, INT32_MAX, &pid) < 0 || pid == 0)
        return -EINVAL;
    return (pid_t)pid == getpid() ? 1 : 0;
}

int rs_sd_listen_fds(void)
{
    uint64_t n = 0;
    int ret, fd;

    ret = pid_is_ours("LISTEN_PID", 0);
    if (ret > 0) {
        ret = parse_u64(getenv("LISTEN_FDS"), INT32_MAX - RS_SD_LISTEN_FDS_START, &n);
        for (fd = RS_SD_LISTEN_FDS_START; ret == 0 && fd < RS_SD_LISTEN_FDS_START + (int)n; fd++) {
            int flags = fcntl(fd, F_GETFD);

            if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
                ret = -errno;
        }
        if (ret == 0)
            ret = (int)n;
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return ret;
}

int rs_sd_is_listening_stream(int fd)
{
    struct stat st;
    int type = 0, listening = 0;
    socklen_t len = sizeof(type);

    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISSOCK(st.st_mode))
        return 0;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return 0;
    len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
        return 0;
    return listening != 0;
}

int rs_sd_watchdog_usec(uint64_t *usec)
{
    const char *s = getenv("WATCHDOG_USEC");
    uint64_t v;
    int ret;

    if (s == NULL)
        return 0;
    if (parse_u64(s, UINT64_MAX - 1, &v) < 0 || v == 0)
        return -EINVAL;
    ret = pid_is_ours("WATCHDOG_PID", 1);
    if (ret <= 0)
        return ret;
    *usec = v;
    return 1;
}

int rs_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t plen;
    socklen_t alen;
    ssize_t n;
    int fd, ret;

    if (path == NULL)
        return 0;
    plen = strlen(path);
    /* a path, or an abstract address written with a leading '@' */
    if ((path[0] != '/' && path[0] != '@') || plen < 2 || plen > sizeof(sun.sun_path))
        return -EAFNOSUPPORT;
    memcpy(sun.sun_path, path, plen);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0';
    alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&sun, alen);
    ret = n < 0 ? -errno : 1;
    close(fd);
    return ret;
}

int rs_sd_notifyf(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    if (getenv("NOTIFY_SOCKET") == NULL)
        return 0;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return rs_sd_notify(buf);
}
