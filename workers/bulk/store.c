/* workers/bulk/store.c: see store.h. */
#include "workers/bulk/store.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include "core/log.h"

#define META_MAGIC    "rso1"
#define META_FIXED    52 /* bytes before the name */
#define META_MAX      (META_FIXED + RS_BULK_NAME_MAX)
#define AUX_NAME_LEN  20 /* "tmp-" or "del-" and 16 hex digits */
#define PROC_PATH_MAX (sizeof("/proc/self/fd/") + 10 + 1 + RS_STORE_KEY_LEN + 1)

static const char hexdig[] = "0123456789abcdef";

static void hex(char *out, const uint8_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

static bool is_key(const char *s)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++) {
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    }
    return n == RS_STORE_KEY_LEN;
}

/* "tmp-" or "del-" and 16 random hex digits. Returns 0 or -errno. */
static int aux_name(char out[AUX_NAME_LEN + 1], const char *kind)
{
    uint8_t rnd[8];

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return -EIO;
    memcpy(out, kind, 4);
    hex(out + 4, rnd, sizeof(rnd));
    return 0;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int meta_decode(const uint8_t *buf, size_t n, struct rs_store_meta *m)
{
    if (n <= META_FIXED || n > META_MAX || memcmp(buf, META_MAGIC, 4) != 0)
        return -EBADMSG;
    m->size = get_le64(buf + 4);
    m->modified_unix_ms = (int64_t)get_le64(buf + 12);
    memcpy(m->sha256, buf + 20, RS_SHA256_LEN);
    m->name_len = n - META_FIXED;
    memcpy(m->name, buf + META_FIXED, m->name_len);
    m->name[m->name_len] = '\0';
    if (!rs_bulk_name_valid(m->name, m->name_len))
        return -EBADMSG;
    return 0;
}

/* Checks that the metadata found under the key of |name| is really |name|'s. */
static int meta_check_name(const struct rs_store_meta *m, const char *name, size_t len)
{
    if (m->name_len != len || memcmp(m->name, name, len) != 0)
        return -EBADMSG;
    return 0;
}

static int fd_meta(int fd, struct rs_store_meta *m)
{
    uint8_t buf[META_MAX];
    ssize_t n = fgetxattr(fd, RS_STORE_XATTR, buf, sizeof(buf));

    if (n < 0)
        return errno == ENODATA || errno == ERANGE ? -EBADMSG : -errno;
    return meta_decode(buf, (size_t)n, m);
}

/* getxattr() by path relative to the directory |dirfd| (there is no fgetxattrat()), through
 * /proc/self/fd: one syscall, no open. */
static int path_meta(int dirfd, const char *key, struct rs_store_meta *m)
{
    char path[PROC_PATH_MAX];
    uint8_t buf[META_MAX];
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dirfd, key);
    n = lgetxattr(path, RS_STORE_XATTR, buf, sizeof(buf));
    if (n < 0)
        return errno == ENODATA || errno == ERANGE ? -EBADMSG : -errno;
    return meta_decode(buf, (size_t)n, m);
}

static int link_fd(int fd, int dirfd, const char *name)
{
    char src[sizeof("/proc/self/fd/") + 10];

    snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, src, dirfd, name, AT_SYMLINK_FOLLOW) < 0)
        return -errno;
    return 0;
}

/* Removes the tmp-/del- names a crash left behind: each was never or no longer an object. */
static void sweep(int objfd)
{
    int fd = openat(objfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d;
    const struct dirent *e;

    if (fd < 0)
        return;
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "tmp-", 4) != 0 && strncmp(e->d_name, "del-", 4) != 0)
            continue;
        if (unlinkat(objfd, e->d_name, 0) == 0)
            rs_log_info("bulk: removed leftover %s", e->d_name);
    }
    closedir(d);
}

/* O_TMPFILE, a user xattr on it and a linkat() through /proc/self/fd, as Put uses them. */
static int probe(int objfd, const char *dir, char *err, size_t errlen)
{
    char name[AUX_NAME_LEN + 1];
    int fd, ret;

    fd = openat(objfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0640);
    if (fd < 0) {
        ret = -errno;
        snprintf(
                err, errlen,
                "data dir %s: the file system does not support O_TMPFILE (%s); use ext4, xfs, btrfs or tmpfs",
                dir, strerror(-ret));
        return ret;
    }
    if (fsetxattr(fd, RS_STORE_XATTR, "probe", 5, 0) < 0) {
        ret = -errno;
        snprintf(
                err, errlen,
                "data dir %s: the file system does not support user xattrs (%s); mount it with user_xattr or use ext4, xfs, btrfs or tmpfs",
                dir, strerror(-ret));
        goto out;
    }
    ret = aux_name(name, "tmp-");
    if (ret == 0)
        ret = link_fd(fd, objfd, name);
    if (ret < 0) {
        snprintf(
                err, errlen,
                "data dir %s: cannot link an O_TMPFILE file through /proc/self/fd (%s); is /proc mounted?",
                dir, strerror(-ret));
        goto out;
    }
    unlinkat(objfd, name, 0);
out:
    close(fd);
    return ret;
}

int rs_store_open(struct rs_store *s, const char *data_dir, char *err, size_t errlen)
{
    int dfd, ret;

    s->objfd = -1;
    if (mkdir(data_dir, 0750) < 0 && errno != EEXIST) {
        ret = -errno;
        snprintf(err, errlen, "data dir %s: cannot create it: %s", data_dir, strerror(-ret));
        return ret;
    }
    dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        ret = -errno;
        snprintf(err, errlen, "data dir %s: cannot open it: %s", data_dir, strerror(-ret));
        return ret;
    }
    if (mkdirat(dfd, "objects", 0750) < 0 && errno != EEXIST) {
        ret = -errno;
        snprintf(err, errlen, "data dir %s: cannot create objects/: %s", data_dir, strerror(-ret));
        goto err_close_dir;
    }
    s->objfd = openat(dfd, "objects", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->objfd < 0) {
        ret = -errno;
        snprintf(err, errlen, "data dir %s: cannot open objects/: %s", data_dir, strerror(-ret));
        goto err_close_dir;
    }
    ret = probe(s->objfd, data_dir, err, errlen);
    if (ret < 0)
        goto err_close_obj;
    sweep(s->objfd);
    close(dfd);
    return 0;
err_close_obj:
    close(s->objfd);
    s->objfd = -1;
err_close_dir:
    close(dfd);
    return ret;
}

void rs_store_close(struct rs_store *s)
{
    if (s->objfd >= 0)
        close(s->objfd);
    s->objfd = -1;
}

int rs_store_key(const char *name, size_t len, char key[RS_STORE_KEY_LEN + 1])
{
    struct rs_sha256 h = { 0 };
    uint8_t d[RS_SHA256_LEN];
    int ret;

    ret = rs_sha256_init(&h);
    if (ret == 0)
        ret = rs_sha256_update(&h, name, len);
    if (ret == 0)
        ret = rs_sha256_final(&h, d);
    rs_sha256_free(&h);
    if (ret == 0)
        hex(key, d, sizeof(d));
    return ret;
}

int rs_store_exists(const struct rs_store *s, const char *key)
{
    struct stat st;

    if (fstatat(s->objfd, key, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 1;
    return errno == ENOENT ? 0 : -errno;
}

int rs_store_open_object(const struct rs_store *s, const char *name, size_t len,
                         struct rs_store_meta *m)
{
    char key[RS_STORE_KEY_LEN + 1];
    struct stat st;
    int fd, ret;

    ret = rs_store_key(name, len, key);
    if (ret < 0)
        return ret;
    fd = openat(s->objfd, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    ret = fd_meta(fd, m);
    if (ret == 0)
        ret = meta_check_name(m, name, len);
    if (ret == 0 && fstat(fd, &st) < 0)
        ret = -errno;
    if (ret == 0 && (uint64_t)st.st_size != m->size)
        ret = -EBADMSG;
    if (ret < 0) {
        close(fd);
        return ret;
    }
    /* Downloads read front to back: ask for the larger readahead window. Only advice. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return fd;
}

int rs_store_stat(const struct rs_store *s, const char *name, size_t len, struct rs_store_meta *m)
{
    char key[RS_STORE_KEY_LEN + 1];
    int ret;

    ret = rs_store_key(name, len, key);
    if (ret < 0)
        return ret;
    ret = path_meta(s->objfd, key, m);
    if (ret < 0)
        return ret;
    return meta_check_name(m, name, len);
}

int rs_store_create(const struct rs_store *s, bool *direct)
{
    int fd = openat(s->objfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC | O_DIRECT, 0640);

    *direct = fd >= 0;
    if (fd < 0 && errno == EINVAL) /* a file system without O_DIRECT (tmpfs): buffered */
        fd = openat(s->objfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

int rs_store_buffered(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
        return -errno;
    return 0;
}

int rs_store_set_meta(int fd, const struct rs_store_meta *m)
{
    uint8_t buf[META_MAX];

    if (m->name_len == 0 || m->name_len > RS_BULK_NAME_MAX)
        return -EINVAL;
    memcpy(buf, META_MAGIC, 4);
    put_le64(buf + 4, m->size);
    put_le64(buf + 12, (uint64_t)m->modified_unix_ms);
    memcpy(buf + 20, m->sha256, RS_SHA256_LEN);
    memcpy(buf + META_FIXED, m->name, m->name_len);
    if (fsetxattr(fd, RS_STORE_XATTR, buf, META_FIXED + m->name_len, 0) < 0)
        return -errno;
    return 0;
}

int rs_store_publish(const struct rs_store *s, int fd, const char *key, bool overwrite)
{
    char tmp[AUX_NAME_LEN + 1];
    int ret;

    if (!overwrite)
        return link_fd(fd, s->objfd, key); /* linkat never replaces: -EEXIST */
    /* linkat cannot replace a name, rename can: link under a fresh name, rename over. */
    for (int tries = 0;; tries++) {
        ret = aux_name(tmp, "tmp-");
        if (ret == 0)
            ret = link_fd(fd, s->objfd, tmp);
        if (ret != -EEXIST || tries == 3)
            break;
    }
    if (ret < 0)
        return ret;
    if (renameat(s->objfd, tmp, s->objfd, key) < 0) {
        ret = -errno;
        unlinkat(s->objfd, tmp, 0);
        return ret;
    }
    return 0;
}

int rs_store_dirfd(const struct rs_store *s)
{
    return s->objfd;
}

int rs_store_delete(const struct rs_store *s, const char *name, size_t len, struct rs_store_meta *m)
{
    char key[RS_STORE_KEY_LEN + 1];
    char aside[AUX_NAME_LEN + 1];
    int ret;

    ret = rs_store_key(name, len, key);
    if (ret == 0)
        ret = aux_name(aside, "del-");
    if (ret < 0)
        return ret;
    /* After the rename nobody else can reach this version: what we report is what we remove. */
    if (renameat2(s->objfd, key, s->objfd, aside, RENAME_NOREPLACE) < 0)
        return -errno;
    ret = path_meta(s->objfd, aside, m);
    if (ret == 0)
        ret = meta_check_name(m, name, len);
    if (unlinkat(s->objfd, aside, 0) < 0 && ret == 0)
        ret = -errno;
    return ret;
}

static int meta_cmp(const void *a, const void *b)
{
    const struct rs_store_meta *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);

    if (c != 0)
        return c;
    return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

int rs_store_list(const struct rs_store *s, const char *prefix, size_t plen,
                  struct rs_store_meta **out, size_t *n)
{
    struct rs_store_meta *v = NULL, *grown;
    size_t cnt = 0, cap = 0;
    DIR *d;
    int fd, ret = 0;

    *out = NULL;
    *n = 0;
    fd = openat(s->objfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    d = fdopendir(fd);
    if (d == NULL) {
        ret = -errno;
        close(fd);
        return ret;
    }
    for (;;) {
        const struct dirent *e;

        errno = 0;
        e = readdir(d);
        if (e == NULL) {
            ret = -errno;
            break;
        }
        if (!is_key(e->d_name))
            continue;
        if (cnt == cap) {
            cap = cap ? 2 * cap : 64;
            grown = realloc(v, cap * sizeof(*v));
            if (grown == NULL) {
                ret = -ENOMEM;
                break;
            }
            v = grown;
        }
        ret = path_meta(s->objfd, e->d_name, &v[cnt]);
        if (ret == -ENOENT) /* deleted since readdir() */
            continue;
        if (ret < 0) {
            rs_log_warn("bulk: objects/%s: unreadable metadata (%s), left out of List", e->d_name,
                        strerror(-ret));
            continue;
        }
        if (v[cnt].name_len < plen || (plen > 0 && memcmp(v[cnt].name, prefix, plen) != 0))
            continue;
        cnt++;
    }
    closedir(d);
    if (ret < 0) {
        free(v);
        return ret;
    }
    if (cnt == 0) {
        free(v);
        return 0;
    }
    qsort(v, cnt, sizeof(*v), meta_cmp);
    *out = v;
    *n = cnt;
    return 0;
}
