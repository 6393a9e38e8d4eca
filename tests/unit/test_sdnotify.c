/* tests/unit/test_sdnotify.c: workers/sdnotify against systemd's documented protocol: the
 * environment variables of socket activation and the watchdog, and NOTIFY_SOCKET datagrams to
 * a path and to an abstract address. */
#include "workers/sdnotify.h"
#include "tests/unit/runner.h"
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

static void setenv_pid(const char *name, pid_t pid)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%d", (int)pid);
    setenv(name, buf, 1);
}

static void test_listen_fds_other_pid_is_none_and_unset(void)
{
    setenv_pid("LISTEN_PID", getpid() + 1);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_FDNAMES", "x", 1);
    CU_ASSERT_EQUAL(rs_sd_listen_fds(), 0);
    CU_ASSERT_PTR_NULL(getenv("LISTEN_PID"));
    CU_ASSERT_PTR_NULL(getenv("LISTEN_FDS"));
    CU_ASSERT_PTR_NULL(getenv("LISTEN_FDNAMES"));
    CU_ASSERT_EQUAL(rs_sd_listen_fds(), 0); /* unset: none */
}

static void test_listen_fds_malformed_is_einval(void)
{
    setenv_pid("LISTEN_PID", getpid());
    setenv("LISTEN_FDS", "1x", 1);
    CU_ASSERT_EQUAL(rs_sd_listen_fds(), -EINVAL);
    CU_ASSERT_PTR_NULL(getenv("LISTEN_FDS"));
    setenv("LISTEN_PID", "-3", 1);
    setenv("LISTEN_FDS", "1", 1);
    CU_ASSERT_EQUAL(rs_sd_listen_fds(), -EINVAL);
}

static void test_listen_fds_ours_counts_and_sets_cloexec(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0), moved = -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int saved = dup(RS_SD_LISTEN_FDS_START); /* fd 3 may be the runner's */

    CU_ASSERT_FATAL(s >= 0);
    CU_ASSERT_EQUAL(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    CU_ASSERT_EQUAL(listen(s, 1), 0);
    moved = dup2(s, RS_SD_LISTEN_FDS_START);
    CU_ASSERT_EQUAL_FATAL(moved, RS_SD_LISTEN_FDS_START);
    CU_ASSERT_EQUAL(fcntl(moved, F_GETFD) & FD_CLOEXEC, 0);
    setenv_pid("LISTEN_PID", getpid());
    setenv("LISTEN_FDS", "1", 1);
    CU_ASSERT_EQUAL(rs_sd_listen_fds(), 1);
    CU_ASSERT_NOT_EQUAL(fcntl(moved, F_GETFD) & FD_CLOEXEC, 0);
    CU_ASSERT_EQUAL(rs_sd_is_listening_stream(moved), 1);
    close(moved);
    close(s);
    if (saved >= 0) {
        dup2(saved, RS_SD_LISTEN_FDS_START);
        close(saved);
    }
}

static void test_is_listening_stream(void)
{
    int p[2], s = socket(AF_INET, SOCK_STREAM, 0), d = socket(AF_INET, SOCK_DGRAM, 0);

    CU_ASSERT_FATAL(s >= 0 && d >= 0 && pipe(p) == 0);
    CU_ASSERT_EQUAL(rs_sd_is_listening_stream(p[0]), 0);
    CU_ASSERT_EQUAL(rs_sd_is_listening_stream(s), 0); /* not listening yet */
    CU_ASSERT_EQUAL(rs_sd_is_listening_stream(d), 0);
    CU_ASSERT_EQUAL(listen(s, 1), 0);
    CU_ASSERT_EQUAL(rs_sd_is_listening_stream(s), 1);
    close(p[0]);
    close(p[1]);
    close(s);
    close(d);
    CU_ASSERT_EQUAL(rs_sd_is_listening_stream(p[0]), -EBADF);
}

static void test_watchdog(void)
{
    uint64_t usec = 0;

    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    CU_ASSERT_EQUAL(rs_sd_watchdog_usec(&usec), 0);
    setenv("WATCHDOG_USEC", "30000000", 1);
    CU_ASSERT_EQUAL(rs_sd_watchdog_usec(&usec), 1);
    CU_ASSERT_EQUAL(usec, 30000000);
    setenv_pid("WATCHDOG_PID", getpid() + 1); /* meant for another process */
    CU_ASSERT_EQUAL(rs_sd_watchdog_usec(&usec), 0);
    setenv_pid("WATCHDOG_PID", getpid());
    CU_ASSERT_EQUAL(rs_sd_watchdog_usec(&usec), 1);
    setenv("WATCHDOG_USEC", "0", 1);
    CU_ASSERT_EQUAL(rs_sd_watchdog_usec(&usec), -EINVAL);
    setenv("WATCHDOG_USEC", "12s", 1);
    CU_ASSERT_EQUAL(rs_sd_watchdog_usec(&usec), -EINVAL);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

/* Binds a datagram socket at |addr| (a path, or '@' for an abstract name), points NOTIFY_SOCKET
 * at it, notifies and returns what arrived (or "" on failure) in |out|. */
static int notify_roundtrip(const char *addr, const char *state, char *out, size_t outlen)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t len = strlen(addr);
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret;
    ssize_t n;

    out[0] = '\0';
    if (s < 0)
        return -errno;
    memcpy(sun.sun_path, addr, len);
    if (addr[0] == '@')
        sun.sun_path[0] = '\0';
    if (bind(s, (struct sockaddr *)&sun,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0) {
        close(s);
        return -errno;
    }
    setenv("NOTIFY_SOCKET", addr, 1);
    ret = rs_sd_notifyf("%s", state);
    n = recv(s, out, outlen - 1, MSG_DONTWAIT);
    if (n >= 0)
        out[n] = '\0';
    unsetenv("NOTIFY_SOCKET");
    close(s);
    return ret;
}

static void test_notify_path_and_abstract(void)
{
    char path[64], got[256];

    unsetenv("NOTIFY_SOCKET");
    CU_ASSERT_EQUAL(rs_sd_notify("READY=1"), 0); /* outside systemd: nothing */
    snprintf(path, sizeof(path), "/tmp/rs-sdnotify-%d", (int)getpid());
    unlink(path);
    CU_ASSERT_EQUAL(notify_roundtrip(path, "READY=1\nSTATUS=serving", got, sizeof(got)), 1);
    CU_ASSERT_STRING_EQUAL(got, "READY=1\nSTATUS=serving");
    unlink(path);
    snprintf(path, sizeof(path), "@rs-sdnotify-%d", (int)getpid());
    CU_ASSERT_EQUAL(notify_roundtrip(path, "WATCHDOG=1", got, sizeof(got)), 1);
    CU_ASSERT_STRING_EQUAL(got, "WATCHDOG=1");
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    CU_ASSERT_EQUAL(rs_sd_notify("READY=1"), -EAFNOSUPPORT);
    unsetenv("NOTIFY_SOCKET");
}

static CU_TestInfo tests[] = {
    { "LISTEN_PID of another process: none, variables unset",
      test_listen_fds_other_pid_is_none_and_unset },
    { "malformed LISTEN_* is -EINVAL", test_listen_fds_malformed_is_einval },
    { "our LISTEN_FDS counts and sets close-on-exec",
      test_listen_fds_ours_counts_and_sets_cloexec },
    { "listening stream sockets only", test_is_listening_stream },
    { "WATCHDOG_USEC and WATCHDOG_PID", test_watchdog },
    { "NOTIFY_SOCKET path and abstract address", test_notify_path_and_abstract },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "workers/sdnotify", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
