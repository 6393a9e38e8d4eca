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
#include <unistd.h>
#include "core/log.h"

#define META_MAGIC "rso1"

static const char hexdig[] = "0123456789abcdef";

static void hex(char *out, const uint8_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

bool rs_store_is_key(const char *s)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++) {
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    }
    return n == RS_STORE_KEY_LEN;
}

int rs_store_aux_name(char out[RS_STORE_AUX_LEN + 1], const char *kind)
{
    uint8_t rnd[8];

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return -EIO;
    memcpy(out, kind, 4);
    hex(out + 4, rnd, sizeof(rnd));
    return 0;
}

int rs_store_meta_decode(const uint8_t *buf, int res, struct rs_store_meta *m)
{
    size_t n;

    if (res < 0)
        return res == -ENODATA || res == -ERANGE ? -EBADMSG : res;
    n = (size_t)res;
    if (n <= RS_STORE_META_FIXED || n > RS_STORE_META_MAX || memcmp(buf, META_MAGIC, 4) != 0)
        return -EBADMSG;
    m->size = rs_get_le64(buf + 4);
    m->modified_unix_ms = (int64_t)rs_get_le64(buf + 12);
    memcpy(m->sha256, buf + 20, RS_SHA256_LEN);
    m->name_len = n - RS_STORE_META_FIXED;
    memcpy(m->name, buf + RS_STORE_META_FIXED, m->name_len);
    m->name[m->name_len] = '\0';
    if (!rs_bulk_name_valid(m->name, m->name_len))
        return -EBADMSG;
    return 0;
}

int rs_store_meta_check_name(const struct rs_store_meta *m, const char *name, size_t len)
{
    if (m->name_len != len || memcmp(m->name, name, len) != 0)
        return -EBADMSG;
    return 0;
}

size_t rs_store_meta_encode(const struct rs_store_meta *m, uint8_t buf[RS_STORE_META_MAX])
{
    if (m->name_len == 0 || m->name_len > RS_BULK_NAME_MAX)
        return 0;
    memcpy(buf, META_MAGIC, 4);
    rs_put_le64(buf + 4, m->size);
    rs_put_le64(buf + 12, (uint64_t)m->modified_unix_ms);
    memcpy(buf + 20, m->sha256, RS_SHA256_LEN);
    memcpy(buf + RS_STORE_META_FIXED, m->name, m->name_len);
    return RS_STORE_META_FIXED + m->name_len;
}

/* Startup only (the probe): the workers link through the ring, see storeop.c. */
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
    char name[RS_STORE_AUX_LEN + 1];
    int fd, ret;

    fd = openat(objfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0640);
    if (fd < 0 && (errno == EACCES || errno == EPERM || errno == EROFS)) {
        ret = -errno; /* a permission or a read-only mount, not a missing feature */
        snprintf(err, errlen, "data dir %s: not writable (%s)", dir, strerror(-ret));
        return ret;
    }
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
    ret = rs_store_aux_name(name, "tmp-");
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
    s->nclaims = 0;
    pthread_mutex_init(&s->claim_lock, NULL);
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
        if (ret == -EACCES || ret == -EPERM || ret == -EROFS)
            snprintf(err, errlen, "data dir %s: not writable (%s)", data_dir, strerror(-ret));
        else
            snprintf(err, errlen, "data dir %s: cannot create objects/: %s", data_dir,
                     strerror(-ret));
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

bool rs_store_claim(struct rs_store *s, const char *key)
{
    bool ok = true;
    unsigned i;

    pthread_mutex_lock(&s->claim_lock);
    for (i = 0; i < s->nclaims && ok; i++)
        ok = strcmp(s->claims[i], key) != 0;
    if (ok && s->nclaims == RS_STORE_CLAIMS)
        ok = false;
    if (ok) {
        memcpy(s->claims[s->nclaims], key, RS_STORE_KEY_LEN);
        s->claims[s->nclaims++][RS_STORE_KEY_LEN] = '\0';
    }
    pthread_mutex_unlock(&s->claim_lock);
    return ok;
}

void rs_store_unclaim(struct rs_store *s, const char *key)
{
    unsigned i;

    pthread_mutex_lock(&s->claim_lock);
    for (i = 0; i < s->nclaims; i++) {
        if (strcmp(s->claims[i], key) == 0) {
            s->nclaims--;
            if (i != s->nclaims)
                memcpy(s->claims[i], s->claims[s->nclaims], sizeof(s->claims[i]));
            break;
        }
    }
    pthread_mutex_unlock(&s->claim_lock);
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

int rs_store_buffered(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
        return -errno;
    return 0;
}

int rs_store_direct(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) < 0)
        return -errno;
    return 0;
}

int rs_store_dirfd(const struct rs_store *s)
{
    return s->objfd;
}
