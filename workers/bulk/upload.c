/* workers/bulk/upload.c: see upload.h. The table, its thread, the header codec and the
 * startup recovery; the methods are in upload_methods.c (StartUpload, QueryUpload,
 * AbortUpload) and put.c (Upload, which shares Put's staging and publish). */
#include "workers/bulk/upload.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <pb_encode.h>
#include "bulk.pb.h"
#include "core/log.h"

#define HDR_MAGIC "rsu1"
enum {
    HDR_F_OVERWRITE = 1u << 0,
    HDR_F_SHA = 1u << 1,
    HDR_F_IF_MATCH = 1u << 2,
};

size_t rs_upload_hdr_encode(const struct rs_upload_hdr *h, uint8_t buf[RS_UPLOAD_HDR_MAX])
{
    if (h->name_len == 0 || h->name_len > RS_BULK_NAME_MAX)
        return 0;
    memcpy(buf, HDR_MAGIC, 4);
    buf[4] = (uint8_t)((h->overwrite ? HDR_F_OVERWRITE : 0) | (h->check_sha ? HDR_F_SHA : 0) |
                       (h->has_if_match ? HDR_F_IF_MATCH : 0));
    rs_put_le64(buf + 5, h->want_size);
    if (h->check_sha)
        memcpy(buf + 13, h->want_sha, RS_SHA256_LEN);
    else
        memset(buf + 13, 0, RS_SHA256_LEN);
    if (h->has_if_match)
        memcpy(buf + 45, h->if_match, RS_SHA256_LEN);
    else
        memset(buf + 45, 0, RS_SHA256_LEN);
    memcpy(buf + RS_UPLOAD_HDR_FIXED, h->name, h->name_len);
    return RS_UPLOAD_HDR_FIXED + h->name_len;
}

int rs_upload_hdr_decode(const uint8_t *buf, size_t len, struct rs_upload_hdr *h)
{
    unsigned flags;

    if (len <= RS_UPLOAD_HDR_FIXED || len > RS_UPLOAD_HDR_MAX || memcmp(buf, HDR_MAGIC, 4) != 0)
        return -EBADMSG;
    flags = buf[4];
    if (flags & ~(unsigned)(HDR_F_OVERWRITE | HDR_F_SHA | HDR_F_IF_MATCH))
        return -EBADMSG;
    if ((flags & HDR_F_IF_MATCH) && !(flags & HDR_F_OVERWRITE))
        return -EBADMSG; /* the encoder never writes it: if_match implies overwrite */
    memset(h, 0, sizeof(*h));
    h->overwrite = flags & HDR_F_OVERWRITE;
    h->check_sha = flags & HDR_F_SHA;
    h->has_if_match = flags & HDR_F_IF_MATCH;
    h->want_size = rs_get_le64(buf + 5);
    if (h->check_sha)
        memcpy(h->want_sha, buf + 13, RS_SHA256_LEN);
    if (h->has_if_match)
        memcpy(h->if_match, buf + 45, RS_SHA256_LEN);
    h->name_len = len - RS_UPLOAD_HDR_FIXED;
    memcpy(h->name, buf + RS_UPLOAD_HDR_FIXED, h->name_len);
    h->name[h->name_len] = '\0';
    if (!rs_bulk_name_valid(h->name, h->name_len))
        return -EBADMSG;
    return 0;
}

bool rs_upload_id_valid(const char *s, size_t len)
{
    if (len != RS_UPLOAD_ID_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- the table (lock held) -------------------------------------------------------------- */

static struct rs_upload *find(struct rs_uploads *u, const char *id, size_t len)
{
    if (!rs_upload_id_valid(id, len))
        return NULL;
    for (size_t i = 0; i < u->n; i++)
        if (u->v[i]->state != RS_UPLOAD_DEAD && memcmp(u->v[i]->id, id, len) == 0)
            return u->v[i];
    return NULL;
}

/* The open upload |id| when no stream holds it: 0, or -ENOENT (unknown, expired, discarded),
 * -EBUSY (an Upload stream holds it), -EALREADY (published). Called with the lock held. */
static int find_idle(struct rs_uploads *u, const char *id, size_t len, struct rs_upload **out)
{
    struct rs_upload *up = find(u, id, len);

    if (up == NULL)
        return -ENOENT;
    if (up->busy)
        return -EBUSY;
    if (up->state == RS_UPLOAD_PUBLISHED)
        return -EALREADY;
    *out = up;
    return 0;
}

static int insert(struct rs_uploads *u, struct rs_upload *up)
{
    if (u->n == u->cap) {
        size_t cap = u->cap ? 2 * u->cap : 16;
        struct rs_upload **v = realloc(u->v, cap * sizeof(*v));

        if (v == NULL)
            return -ENOMEM;
        u->v = v;
        u->cap = cap;
    }
    u->v[u->n++] = up;
    return 0;
}

static void status_of(const struct rs_uploads *u, const struct rs_upload *up,
                      struct rs_upload_status *st)
{
    memcpy(st->id, up->id, sizeof(st->id));
    st->persisted = up->persisted;
    st->expires_ms = up->touched_ms + (int64_t)u->ttl_ms;
    st->published = up->state == RS_UPLOAD_PUBLISHED;
    if (st->published)
        st->object = up->object;
}

static void free_upload(struct rs_upload *up)
{
    rs_sha256_free(&up->sha);
    free(up);
}

/* --- the thread: expiry and removals ---------------------------------------------------- */

/* One removal the thread does with the lock dropped. */
struct reap {
    char id[RS_UPLOAD_ID_LEN + 1];
    int fd;
    bool unlink;
};

static void *reaper_main(void *arg)
{
    struct rs_uploads *u = arg;

    pthread_mutex_lock(&u->lock);
    while (!u->stop) {
        struct reap todo[64];
        size_t ntodo = 0, i = 0;
        int64_t now = now_ms();
        uint64_t tick_ms = u->ttl_ms / 4;
        struct timespec until;

        while (i < u->n && ntodo < sizeof(todo) / sizeof(todo[0])) {
            struct rs_upload *up = u->v[i];
            bool expired = now >= up->touched_ms + (int64_t)u->ttl_ms;
            bool drop = false;

            if (up->busy) {
                i++;
                continue;
            }
            if (up->state == RS_UPLOAD_DEAD) {
                drop = true;
            } else if (up->state == RS_UPLOAD_OPEN && expired) {
                rs_log_info("bulk: upload %s of \"%s\" expired at %" PRIu64 " bytes", up->id,
                            up->hdr.name, up->persisted);
                u->nopen--;
                drop = true;
            } else if (up->state == RS_UPLOAD_PUBLISHED && (!up->unlinked || expired)) {
                if (!up->unlinked) {
                    todo[ntodo] = (struct reap){ .fd = up->fd, .unlink = true };
                    memcpy(todo[ntodo++].id, up->id, sizeof(up->id));
                    up->fd = -1;
                    up->unlinked = true;
                }
                if (expired) {
                    rs_log_debug("bulk: upload %s: published status forgotten", up->id);
                    u->v[i] = u->v[--u->n];
                    free_upload(up);
                    continue;
                }
                i++;
                continue;
            }
            if (drop) {
                todo[ntodo] = (struct reap){ .fd = up->fd, .unlink = true };
                memcpy(todo[ntodo++].id, up->id, sizeof(up->id));
                u->v[i] = u->v[--u->n];
                free_upload(up);
                continue;
            }
            i++;
        }
        if (ntodo > 0) {
            pthread_mutex_unlock(&u->lock);
            for (i = 0; i < ntodo; i++) {
                if (todo[i].unlink && unlinkat(u->dirfd, todo[i].id, 0) < 0 && errno != ENOENT)
                    rs_log_warn("bulk: removing uploads/%s: %s", todo[i].id, strerror(errno));
                if (todo[i].fd >= 0)
                    close(todo[i].fd);
            }
            if (fsync(u->dirfd) < 0)
                rs_log_warn("bulk: syncing uploads/: %s", strerror(errno));
            pthread_mutex_lock(&u->lock);
            continue; /* more may be waiting */
        }
        if (tick_ms < 10)
            tick_ms = 10;
        if (tick_ms > 1000)
            tick_ms = 1000;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(tick_ms / 1000);
        until.tv_nsec += (long)(tick_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&u->wake, &u->lock, &until);
    }
    pthread_mutex_unlock(&u->lock);
    return NULL;
}

/* --- startup ------------------------------------------------------------------------------ */

/* Hashes the whole file |fd| of |size| bytes into |sha|. Blocking: startup only. */
static int rehash(int fd, uint64_t size, struct rs_sha256 *sha)
{
    size_t cap = 1u << 20;
    uint8_t *buf = malloc(cap);
    uint64_t off = 0;
    int ret = rs_sha256_init(sha);

    if (buf == NULL || ret < 0) {
        free(buf);
        return -ENOMEM;
    }
    while (off < size) {
        size_t want = size - off < cap ? (size_t)(size - off) : cap;
        ssize_t n = pread(fd, buf, want, (off_t)off);

        if (n <= 0) {
            ret = n < 0 ? -errno : -EIO;
            break;
        }
        ret = rs_sha256_update(sha, buf, (size_t)n);
        if (ret < 0)
            break;
        off += (uint64_t)n;
    }
    free(buf);
    return ret;
}

/* uploads/<name> (open as |fd|, taken) was published before a crash: keep its status for
 * QueryUpload until the TTL, as if the server had not stopped; the thread removes the name. */
static void load_published(struct rs_uploads *u, const char *name, int fd)
{
    uint8_t x[RS_STORE_META_MAX];
    struct rs_upload *up = calloc(1, sizeof(*up));
    ssize_t n = fgetxattr(fd, RS_STORE_XATTR, x, sizeof(x));

    if (up == NULL || rs_store_meta_decode(x, n < 0 ? -errno : (int)n, &up->object) < 0) {
        rs_log_warn("bulk: uploads/%s was published; removing its upload name", name);
        free(up);
        if (unlinkat(u->dirfd, name, 0) < 0)
            rs_log_warn("bulk: removing uploads/%s: %s", name, strerror(errno));
        close(fd);
        return;
    }
    memcpy(up->id, name, RS_UPLOAD_ID_LEN + 1);
    memcpy(up->hdr.name, up->object.name, up->object.name_len + 1);
    up->hdr.name_len = up->object.name_len;
    up->fd = fd;
    up->persisted = up->object.size;
    up->touched_ms = up->object.modified_unix_ms;
    up->state = RS_UPLOAD_PUBLISHED;
    if (insert(u, up) < 0) {
        free(up);
        close(fd);
        return;
    }
    rs_log_info("bulk: upload %s had published \"%s\" before the restart", up->id, up->hdr.name);
}

/* Loads uploads/<name>, or removes it when it is a leftover. */
static void load_one(struct rs_uploads *u, const char *name)
{
    uint8_t x[RS_UPLOAD_HDR_MAX];
    struct rs_upload *up;
    struct stat stt;
    ssize_t n;
    int fd;

    fd = openat(u->dirfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        rs_log_warn("bulk: uploads/%s: %s (left alone)", name, strerror(errno));
        return;
    }
    if (fstat(fd, &stt) < 0) {
        rs_log_warn("bulk: uploads/%s: %s (left alone)", name, strerror(errno));
        goto err_close;
    }
    if (stt.st_nlink > 1 && (fgetxattr(fd, RS_STORE_XATTR, x, sizeof(x)) >= 0 || errno == ERANGE)) {
        /* The object's metadata and a second name: published into objects/, and the crash
         * came before its uploads/ name went. (With one name, a finish that got its metadata
         * written but did not publish: an open upload; the next finish rewrites it.) */
        load_published(u, name, fd);
        return;
    }
    up = calloc(1, sizeof(*up));
    if (up == NULL)
        goto err_close;
    n = fgetxattr(fd, RS_UPLOAD_XATTR, x, sizeof(x));
    if (n < 0 || rs_upload_hdr_decode(x, (size_t)n, &up->hdr) < 0) {
        rs_log_warn("bulk: uploads/%s: no valid upload header; removing it", name);
        free(up);
        goto err_remove;
    }
    /* What is in the file is what the next Upload continues from: make it durable first. */
    if (fsync(fd) < 0 || rehash(fd, (uint64_t)stt.st_size, &up->sha) < 0) {
        rs_log_warn("bulk: uploads/%s: cannot read it back (%s); left alone", name,
                    strerror(errno));
        free_upload(up);
        goto err_close;
    }
    memcpy(up->id, name, RS_UPLOAD_ID_LEN + 1);
    up->fd = fd;
    up->persisted = (uint64_t)stt.st_size;
    up->touched_ms = (int64_t)stt.st_mtim.tv_sec * 1000 + stt.st_mtim.tv_nsec / 1000000;
    up->state = RS_UPLOAD_OPEN;
    if (insert(u, up) < 0) {
        free_upload(up);
        goto err_close;
    }
    u->nopen++;
    rs_log_info("bulk: upload %s of \"%s\" resumed at %" PRIu64 " bytes", up->id, up->hdr.name,
                up->persisted);
    return;
err_remove:
    if (unlinkat(u->dirfd, name, 0) < 0)
        rs_log_warn("bulk: removing uploads/%s: %s", name, strerror(errno));
err_close:
    close(fd);
}

int rs_uploads_open(struct rs_uploads *u, int datafd, char *err, size_t errlen)
{
    struct dirent *de;
    DIR *d;
    int fd, ret;

    memset(u, 0, sizeof(*u));
    u->dirfd = -1;
    u->ttl_ms = RS_UPLOAD_TTL_MS_DEFAULT;
    u->max = RS_UPLOAD_MAX_DEFAULT;
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->wake, NULL);
    if (mkdirat(datafd, "uploads", 0750) < 0 && errno != EEXIST) {
        ret = -errno;
        snprintf(err, errlen, "data dir: cannot create uploads/: %s", strerror(-ret));
        return ret;
    }
    u->dirfd = openat(datafd, "uploads", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (u->dirfd < 0) {
        ret = -errno;
        snprintf(err, errlen, "data dir: cannot open uploads/: %s", strerror(-ret));
        return ret;
    }
    fd = dup(u->dirfd);
    d = fd < 0 ? NULL : fdopendir(fd);
    if (d == NULL) {
        ret = -errno;
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "data dir: cannot read uploads/: %s", strerror(-ret));
        return ret;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (!rs_upload_id_valid(de->d_name, strlen(de->d_name))) {
            rs_log_warn("bulk: uploads/%s is not ours; left alone", de->d_name);
            continue;
        }
        load_one(u, de->d_name);
    }
    closedir(d);
    if (fsync(u->dirfd) < 0)
        rs_log_warn("bulk: syncing uploads/: %s", strerror(errno));
    ret = pthread_create(&u->thread, NULL, reaper_main, u);
    if (ret != 0) {
        snprintf(err, errlen, "bulk: cannot start the uploads thread: %s", strerror(ret));
        return -ret;
    }
    u->started = true;
    return 0;
}

void rs_uploads_close(struct rs_uploads *u)
{
    if (u->started) {
        pthread_mutex_lock(&u->lock);
        u->stop = true;
        pthread_cond_signal(&u->wake);
        pthread_mutex_unlock(&u->lock);
        pthread_join(u->thread, NULL);
        u->started = false;
    }
    for (size_t i = 0; i < u->n; i++) {
        struct rs_upload *up = u->v[i];

        /* The workers are gone: what the thread had still to remove goes now. */
        if (up->state == RS_UPLOAD_DEAD || (up->state == RS_UPLOAD_PUBLISHED && !up->unlinked))
            (void)unlinkat(u->dirfd, up->id, 0);
        if (up->fd >= 0)
            close(up->fd);
        free_upload(up);
    }
    free(u->v);
    u->v = NULL;
    u->n = u->cap = 0;
    if (u->dirfd >= 0)
        close(u->dirfd);
    u->dirfd = -1;
    pthread_cond_destroy(&u->wake);
    pthread_mutex_destroy(&u->lock);
}

void rs_uploads_limits(struct rs_uploads *u, uint64_t ttl_ms, unsigned max)
{
    pthread_mutex_lock(&u->lock);
    u->ttl_ms = ttl_ms > 0 ? ttl_ms : 1;
    u->max = max;
    pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->lock);
}

/* --- what the methods call ------------------------------------------------------------------ */

bool rs_uploads_reserve(struct rs_uploads *u)
{
    bool ok;

    pthread_mutex_lock(&u->lock);
    ok = u->nopen < u->max;
    if (ok)
        u->nopen++;
    pthread_mutex_unlock(&u->lock);
    return ok;
}

void rs_uploads_unreserve(struct rs_uploads *u)
{
    pthread_mutex_lock(&u->lock);
    u->nopen--;
    pthread_mutex_unlock(&u->lock);
}

int rs_uploads_add(struct rs_uploads *u, const char *id, const struct rs_upload_hdr *h, int fd,
                   struct rs_upload_status *st)
{
    struct rs_upload *up = calloc(1, sizeof(*up));
    int ret = -ENOMEM;

    if (up != NULL && rs_sha256_init(&up->sha) == 0) {
        memcpy(up->id, id, RS_UPLOAD_ID_LEN);
        up->id[RS_UPLOAD_ID_LEN] = '\0';
        up->hdr = *h;
        up->fd = fd;
        up->touched_ms = now_ms();
        up->state = RS_UPLOAD_OPEN;
        ret = 0;
    }
    pthread_mutex_lock(&u->lock);
    if (ret == 0)
        ret = insert(u, up);
    if (ret < 0)
        u->nopen--; /* the reservation */
    else
        status_of(u, up, st);
    pthread_mutex_unlock(&u->lock);
    if (ret < 0 && up != NULL)
        free_upload(up);
    if (ret == 0)
        rs_log_debug("bulk: upload %s of \"%s\" started", up->id, h->name);
    return ret;
}

int rs_uploads_query(struct rs_uploads *u, const char *id, size_t len, struct rs_upload_status *st)
{
    struct rs_upload *up;

    pthread_mutex_lock(&u->lock);
    up = find(u, id, len);
    if (up != NULL)
        status_of(u, up, st);
    pthread_mutex_unlock(&u->lock);
    return up != NULL ? 0 : -ENOENT;
}

int rs_uploads_abort(struct rs_uploads *u, const char *id, size_t len, struct rs_upload_status *st)
{
    struct rs_upload *up;
    int ret;

    pthread_mutex_lock(&u->lock);
    ret = find_idle(u, id, len, &up);
    if (ret == 0) {
        status_of(u, up, st);
        up->state = RS_UPLOAD_DEAD;
        u->nopen--;
        pthread_cond_signal(&u->wake);
        rs_log_debug("bulk: upload %s of \"%s\" aborted at %" PRIu64 " bytes", up->id, up->hdr.name,
                     up->persisted);
    }
    pthread_mutex_unlock(&u->lock);
    return ret;
}

int rs_uploads_acquire(struct rs_uploads *u, const char *id, size_t len, struct rs_upload **out,
                       struct rs_sha256 *sha)
{
    struct rs_upload *up;
    int ret;

    pthread_mutex_lock(&u->lock);
    ret = find_idle(u, id, len, &up);
    if (ret == 0) {
        up->busy = true;
        *sha = up->sha;
        up->sha.impl = NULL;
        *out = up;
    }
    pthread_mutex_unlock(&u->lock);
    return ret;
}

void rs_uploads_release(struct rs_uploads *u, struct rs_upload *up, uint64_t persisted,
                        struct rs_sha256 *sha, struct rs_upload_status *st)
{
    pthread_mutex_lock(&u->lock);
    up->persisted = persisted;
    up->sha = *sha;
    sha->impl = NULL;
    up->touched_ms = now_ms();
    up->busy = false;
    status_of(u, up, st);
    pthread_mutex_unlock(&u->lock);
}

void rs_uploads_discard(struct rs_uploads *u, struct rs_upload *up, const char *why)
{
    pthread_mutex_lock(&u->lock);
    rs_log_info("bulk: upload %s of \"%s\" discarded: %s", up->id, up->hdr.name, why);
    up->state = RS_UPLOAD_DEAD;
    up->busy = false;
    u->nopen--;
    pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->lock);
}

void rs_uploads_published(struct rs_uploads *u, struct rs_upload *up, const struct rs_store_meta *m,
                          struct rs_upload_status *st)
{
    pthread_mutex_lock(&u->lock);
    up->state = RS_UPLOAD_PUBLISHED;
    up->object = *m;
    up->persisted = m->size;
    up->touched_ms = now_ms();
    up->busy = false;
    u->nopen--;
    status_of(u, up, st);
    rs_log_info("bulk: upload %s published \"%s\" (%" PRIu64 " bytes)", up->id, m->name, m->size);
    pthread_cond_signal(&u->wake); /* the thread removes the uploads/ name */
    pthread_mutex_unlock(&u->lock);
}

size_t rs_upload_encode_status(uint8_t *buf, size_t cap, const struct rs_upload_status *st)
{
    ringstream_v1_UploadStatus m = ringstream_v1_UploadStatus_init_zero;
    pb_ostream_t s = pb_ostream_from_buffer(buf, cap);

    memcpy(m.upload_id, st->id, RS_UPLOAD_ID_LEN + 1);
    m.persisted_size = st->persisted;
    m.expires_unix_ms = st->expires_ms;
    if (st->published) {
        m.has_object = true;
        memcpy(m.object.name, st->object.name, st->object.name_len);
        m.object.name[st->object.name_len] = '\0';
        m.object.size = st->object.size;
        memcpy(m.object.sha256, st->object.sha256, RS_SHA256_LEN);
        m.object.modified_unix_ms = st->object.modified_unix_ms;
    }
    if (!pb_encode(&s, ringstream_v1_UploadStatus_fields, &m)) {
        rs_log_bug("bulk: encoding UploadStatus: %s", PB_GET_ERROR(&s));
        return 0;
    }
    return s.bytes_written;
}
