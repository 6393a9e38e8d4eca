/* client/get.c: `ringstream get NAME FILE`. Every chunk's CRC32C is checked on arrival and
 * the SHA-256 of the whole file against the server's (Stat) before FILE.part is renamed to
 * FILE; a mismatch leaves no file. An interrupted download resumes from FILE.part (offset and
 * if_match_sha256; the SHA-256 recorded under $XDG_CACHE_HOME/ringstream/downloads/);
 * --streams N fetches N ranges on N connections into the .part file. */
#include "client/cli.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core/crc32c.h"
#include "proto/grpc.h"
#include "proto/pbview.h"

/* --- get ---------------------------------------------------------------------------------- */

struct get {
    int fd;
    bool to_stdout;
    uint64_t next_off;   /* the offset the next chunk must have */
    uint64_t end;        /* one past the last byte asked for */
    struct rs_sha256 *h; /* running hash (sequential Gets), or NULL */
    int io_err;
    char bad[160];     /* why the call was cancelled for integrity */
    atomic_bool *stop; /* --streams: another range failed; NULL otherwise */
    bool stopped;      /* this call was cancelled because of |stop| */
};

#define GET_STOPPED (-2) /* get_range(): cancelled because another range failed, not printed */

static int on_chunk(void *arg, const uint8_t *m, size_t len)
{
    struct get *g = arg;

    if (g->stop != NULL && atomic_load(g->stop)) {
        g->stopped = true;
        return -1;
    }
    ringstream_v1_Chunk ch = ringstream_v1_Chunk_init_zero;
    struct rs_pb_view data = { 0 };
    pb_istream_t s = pb_istream_from_buffer(m, len);
    int ret;

    rs_pb_view_bind(&ch.data, &data);
    if (!pb_decode(&s, ringstream_v1_Chunk_fields, &ch) ||
        !rs_pb_views_inside(ringstream_v1_Chunk_fields, &ch, m, len)) {
        snprintf(g->bad, sizeof(g->bad), "malformed Chunk message");
        return -1;
    }
    if (ch.offset != g->next_off || data.len > g->end - g->next_off) {
        snprintf(g->bad, sizeof(g->bad),
                 "chunk at offset %" PRIu64 " (%zu bytes) where %" PRIu64 " was due", ch.offset,
                 data.len, g->next_off);
        return -1;
    }
    if (rs_crc32c(0, data.p, data.len) != ch.crc32c) {
        snprintf(g->bad, sizeof(g->bad),
                 "CRC32C mismatch in the chunk at offset %" PRIu64 " (%zu bytes): got %08x, "
                 "computed %08x",
                 ch.offset, data.len, ch.crc32c, rs_crc32c(0, data.p, data.len));
        return -1;
    }
    if (g->to_stdout) {
        size_t off = 0;

        while (off < data.len) {
            ssize_t n = write(g->fd, data.p + off, data.len - off);

            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                g->io_err = -errno;
                return -1;
            }
            off += (size_t)n;
        }
    } else {
        ret = rsc_pwrite_full(g->fd, data.p, data.len, ch.offset);
        if (ret < 0) {
            g->io_err = ret;
            return -1;
        }
    }
    if (g->h != NULL && rs_sha256_update(g->h, data.p, data.len) < 0) {
        g->io_err = -EIO;
        return -1;
    }
    g->next_off += data.len;
    rsc_progress_add(data.len);
    return 0;
}

/* One ranged Get on |c|. Returns 0, or the exit code after printing the error; |*st| and
 * |*call_ret| let the caller tell FAILED_PRECONDITION apart. */
static int get_range(struct rsc_conn *c, const char *what, const char *name, uint64_t off,
                     uint64_t len, const uint8_t *if_match, struct get *g, struct rsc_status *st,
                     bool quiet_precondition)
{
    ringstream_v1_GetRequest r = ringstream_v1_GetRequest_init_zero;
    struct rsc_bytes bn = { name, strlen(name) }, bm = { if_match, if_match ? RS_SHA256_LEN : 0 };
    uint8_t req[RSC_SMALL_MSG];
    size_t rlen;
    int ret;

    rsc_bind_bytes(&r.name, &bn);
    rsc_bind_bytes(&r.if_match_sha256, &bm);
    r.offset = off;
    r.length = len;
    r.chunk_size = RSC_GET_CHUNK;
    rlen = rsc_encode(ringstream_v1_GetRequest_fields, &r, req, sizeof(req));
    g->next_off = off;
    g->end = len > 0 ? off + len : UINT64_MAX;
    ret = rsc_call_run(c, RSC_SVC "Get", req, rlen, NULL, on_chunk, g, st);
    if (g->io_err != 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "writing: %s", strerror(-g->io_err));
    if (g->stopped)
        return GET_STOPPED;
    if (ret == -ECANCELED)
        return rsc_fail(RSC_EX_INTEGRITY, what, -1, "INTEGRITY", "%s", g->bad);
    if (ret == 0 && st->code == RS_GRPC_FAILED_PRECONDITION && quiet_precondition)
        return -1;
    if (ret < 0 || st->code != 0)
        return rsc_fail_call(what, ret, st);
    if (len > 0 && g->next_off != off + len)
        return rsc_fail(RSC_EX_INTEGRITY, what, -1, "INTEGRITY",
                        "the server sent %" PRIu64 " of %" PRIu64 " bytes", g->next_off - off, len);
    return 0;
}

static int integrity_fail_sha(const char *what, const uint8_t *want, const uint8_t *got)
{
    char a[65], b[65];

    rsc_hex(a, want, RS_SHA256_LEN);
    rsc_hex(b, got, RS_SHA256_LEN);
    return rsc_fail(RSC_EX_INTEGRITY, what, -1, "INTEGRITY",
                    "SHA-256 mismatch: the server's object is %s, received %s", a, b);
}

static int get_to_stdout(const char *what, const char *name)
{
    ringstream_v1_ObjectInfo oi;
    struct rs_sha256 h;
    struct get g = { .fd = STDOUT_FILENO, .to_stdout = true, .h = &h };
    uint8_t got[RS_SHA256_LEN];
    struct rsc_status st;
    struct rsc_conn *c;
    int code;

    rsc_json_out = stderr;
    if (rs_sha256_init(&h) < 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "out of memory");
    c = rsc_connect_or_fail(what, &code);
    if (c == NULL)
        goto out;
    code = rsc_do_stat(c, what, name, &oi);
    if (code == 0) {
        rsc_progress_begin(oi.size, 0);
        code = get_range(c, what, name, 0, 0, oi.sha256, &g, &st, false);
    }
    rsc_conn_close(c);
    if (code == 0) {
        if (rs_sha256_final(&h, got) < 0) {
            code = rsc_fail(RSC_EX_IO, what, -1, NULL, "SHA-256 failed");
        } else if (g.next_off != oi.size || memcmp(got, oi.sha256, RS_SHA256_LEN) != 0) {
            code = integrity_fail_sha(what, oi.sha256, got);
        } else {
            rsc_progress_end();
            if (rsc_cli.json)
                rsc_json_info(stderr, "get", &oi, ",\"resumed_from\":0");
        }
    }
out:
    rs_sha256_free(&h);
    return code;
}

struct range_job {
    const char *what, *name;
    const uint8_t *sha;
    uint64_t off, len;
    int fd;
    int code;
    atomic_bool *stop; /* shared by the jobs of one get */
    pthread_t tid;
};

static void *range_thread(void *arg)
{
    struct range_job *j = arg;
    struct get g = { .fd = j->fd, .stop = j->stop };
    struct rsc_status st;
    struct rsc_conn *c = rsc_connect_or_fail(j->what, &j->code);

    if (c != NULL) {
        j->code = get_range(c, j->what, j->name, j->off, j->len, j->sha, &g, &st, false);
        rsc_conn_close(c);
    }
    if (j->code != 0)
        atomic_store(j->stop, true); /* the others stop at their next chunk */
    return NULL;
}

/* --streams N: N ranged Gets on N connections written in place, then one SHA-256 pass. */
static int get_parallel(const char *what, const char *name, int fd,
                        const ringstream_v1_ObjectInfo *oi)
{
    struct range_job jobs[RSC_MAX_STREAMS];
    atomic_bool stop = false;
    uint64_t per = (oi->size + rsc_cli.streams - 1) / rsc_cli.streams;
    unsigned n = 0;
    int code = 0;

    if (ftruncate(fd, (off_t)oi->size) < 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "%s", strerror(errno));
    if (per < RSC_GET_CHUNK)
        per = RSC_GET_CHUNK;
    rsc_progress_begin(oi->size, 0);
    for (uint64_t off = 0; off < oi->size && n < RSC_MAX_STREAMS; off += per, n++) {
        jobs[n] = (struct range_job){ .what = what,
                                      .name = name,
                                      .sha = oi->sha256,
                                      .off = off,
                                      .len = oi->size - off < per ? oi->size - off : per,
                                      .fd = fd,
                                      .stop = &stop };
        if (pthread_create(&jobs[n].tid, NULL, range_thread, &jobs[n]) != 0) {
            atomic_store(&stop, true);
            code = rsc_fail(RSC_EX_IO, what, -1, NULL, "cannot start a thread");
            break;
        }
    }
    /* The first range that failed reported it; the others stopped quietly (GET_STOPPED). */
    for (unsigned i = 0; i < n; i++) {
        pthread_join(jobs[i].tid, NULL);
        if (code == 0 && jobs[i].code != GET_STOPPED)
            code = jobs[i].code;
    }
    return code != 0 || !atomic_load(&stop) ? code : RSC_EX_CONN;
}

/* Best effort: fsync the directory holding |path|, so a rename into it is durable. */
static void sync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int dfd;

    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* some file systems cannot sync a directory: not an error here */
        close(dfd);
    }
}

int rsc_cmd_get(int argc, char **argv)
{
    const char *name, *file;
    char what[300], part[PATH_MAX], spath[PATH_MAX], key[PATH_MAX + 600], text[512];
    char abspart[PATH_MAX], shahex[65];
    ringstream_v1_ObjectInfo oi;
    uint8_t got[RS_SHA256_LEN];
    struct rs_sha256 h = { 0 };
    struct rsc_status st;
    struct rsc_conn *c = NULL;
    uint64_t resume = 0;
    uint8_t *buf = NULL;
    int fd = -1, code, ret;
    bool keep_part = false;

    if (argc != 2)
        return rsc_fail(RSC_EX_USAGE, "get", -1, NULL, "usage: ringstream get NAME FILE");
    name = argv[0];
    file = argv[1];
    snprintf(what, sizeof(what), "get %s", name);
    if (strcmp(file, "-") == 0)
        return get_to_stdout(what, name);
    if ((size_t)snprintf(part, sizeof(part), "%s.part", file) >= sizeof(part))
        return rsc_fail(RSC_EX_USAGE, what, -1, NULL, "%s: path too long", file);

    c = rsc_connect_or_fail(what, &code);
    if (c == NULL)
        return code;
    code = rsc_do_stat(c, what, name, &oi);
    if (code != 0)
        goto out;
    rsc_hex(shahex, oi.sha256, RS_SHA256_LEN);
    fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        code = rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", part, strerror(errno));
        goto out;
    }
    if (realpath(part, abspart) == NULL) {
        code = rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", part, strerror(errno));
        goto out;
    }
    /* Keyed by file and object name, not server: the recorded SHA-256 (and if_match_sha256)
     * decides whether the bytes already there belong to the object. */
    snprintf(key, sizeof(key), "%s\n%s", abspart, name);
    ret = rsc_state_path("downloads", key, strlen(key), spath, sizeof(spath));
    if (ret < 0) {
        code = rsc_fail(RSC_EX_IO, what, -1, NULL, "cache dir: %s", strerror(-ret));
        goto out;
    }
    buf = malloc(RSC_DATA_CHUNK);
    if (buf == NULL || rs_sha256_init(&h) < 0) {
        code = rsc_fail(RSC_EX_IO, what, -1, NULL, "out of memory");
        goto out;
    }

    if (rsc_cli.streams > 1) {
        if (ftruncate(fd, 0) < 0) {
            code = rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", part, strerror(errno));
            goto out;
        }
        code = get_parallel(what, name, fd, &oi);
        if (code == 0 && rsc_hash_fd(fd, oi.size, &h, buf, RSC_DATA_CHUNK, "verifying ") < 0)
            code = rsc_fail(RSC_EX_IO, what, -1, NULL, "re-reading %s: %s", part, strerror(errno));
        if (code == 0)
            resume = 0;
        goto verify;
    }

    /* A download of this very object left in FILE.part by an earlier run resumes where it
     * stopped, if the object is still the version it started with. */
    {
        struct stat sb;
        char want[512];

        snprintf(want, sizeof(want), "%s\n", shahex);
        if (fstat(fd, &sb) == 0 && sb.st_size > 0 &&
            rsc_state_read(spath, text, sizeof(text)) == 0 && strcmp(text, want) == 0 &&
            (uint64_t)sb.st_size <= oi.size) {
            resume = (uint64_t)sb.st_size;
            ret = rsc_hash_fd(fd, resume, &h, buf, RSC_DATA_CHUNK, "re-reading ");
            if (ret < 0) {
                code = rsc_fail(RSC_EX_IO, what, -1, NULL, "re-reading %s: %s", part,
                                strerror(-ret));
                goto out;
            }
        }
    }
    if (resume == 0) {
        if (ftruncate(fd, 0) < 0) {
            code = rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", part, strerror(errno));
            goto out;
        }
        snprintf(text, sizeof(text), "%s\n", shahex);
        ret = rsc_state_write(spath, text);
        if (ret < 0) {
            code = rsc_fail(RSC_EX_IO, what, -1, NULL, "cannot save the download state: %s",
                            strerror(-ret));
            goto out;
        }
    }
    for (int attempt = 0;; attempt++) {
        struct get g = { .fd = fd, .h = &h };

        rsc_progress_begin(oi.size, resume);
        keep_part = true; /* from here an interruption leaves a resumable FILE.part */
        code = get_range(c, what, name, resume, 0, oi.sha256, &g, &st, attempt == 0);
        if (code != -1)
            break;
        /* FAILED_PRECONDITION: the object changed since the download began; start over. */
        rs_sha256_free(&h);
        if (rs_sha256_init(&h) < 0 || ftruncate(fd, 0) < 0) {
            code = rsc_fail(RSC_EX_IO, what, -1, NULL, "restarting: %s", strerror(errno));
            goto out;
        }
        code = rsc_do_stat(c, what, name, &oi);
        if (code != 0)
            goto out;
        rsc_hex(shahex, oi.sha256, RS_SHA256_LEN);
        snprintf(text, sizeof(text), "%s\n", shahex);
        rsc_state_write(spath, text);
        resume = 0;
    }
verify:
    if (code != 0) {
        /* An integrity failure leaves nothing behind; anything else a resumable part. */
        if (code == RSC_EX_INTEGRITY || !keep_part) {
            unlink(part);
            unlink(spath);
        }
        goto out;
    }
    if (rs_sha256_final(&h, got) < 0) {
        code = rsc_fail(RSC_EX_IO, what, -1, NULL, "SHA-256 failed");
        goto out;
    }
    if (memcmp(got, oi.sha256, RS_SHA256_LEN) != 0) {
        code = integrity_fail_sha(what, oi.sha256, got);
        unlink(part);
        unlink(spath);
        goto out;
    }
    if (fsync(fd) < 0 || rename(part, file) < 0) {
        code = rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", file, strerror(errno));
        goto out;
    }
    sync_parent(file); /* the new name survives a crash too */
    unlink(spath);
    rsc_progress_end();
    if (rsc_cli.json) {
        char extra[96];

        snprintf(extra, sizeof(extra), ",\"resumed_from\":%" PRIu64 ",\"streams\":%u", resume,
                 rsc_cli.streams > 1 ? rsc_cli.streams : 1);
        rsc_json_info(stdout, "get", &oi, extra);
    }
out:
    if (code != 0 && fd >= 0 && !keep_part)
        unlink(part); /* failed before any data: no empty FILE.part left behind */
    rs_sha256_free(&h);
    free(buf);
    if (fd >= 0)
        close(fd);
    rsc_conn_close(c);
    return code;
}
