/* client/get.c: `ringstream get NAME FILE`. Every chunk's CRC32C is checked on arrival and
 * the SHA-256 of the whole file against the server's (Stat) before FILE.part is renamed to
 * FILE; a mismatch leaves no file. An interrupted download resumes from FILE.part (offset and
 * if_match_sha256; the SHA-256 recorded under $XDG_CACHE_HOME/ringstream/downloads/);
 * --streams N fetches N ranges on N connections into the .part file and resumes each range
 * from its last durable checkpoint (get_parallel()). */
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
#include <time.h>
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
    struct pget *pg;   /* --streams: the download, for checkpoints; NULL otherwise */
    struct prange *pr; /* --streams: the range this call fetches */
};

struct pget;
struct prange;
static void pget_written(struct pget *p, struct prange *r, size_t len);
static void sync_parent(const char *path);

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
        if (g->pg != NULL)
            pget_written(g->pg, g->pr, data.len);
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
                rsc_json_info(stderr, "get", &oi, ",\"resumed_from\":0,\"resumed_bytes\":0");
        }
    }
out:
    rs_sha256_free(&h);
    return code;
}

/* --streams N: ranged Gets on N connections written in place into FILE.part, resumable.
 *
 * The state (pget_format()) lives beside the single-stream one, under
 * $XDG_CACHE_HOME/ringstream/downloads/ and keyed by FILE.part's path and the object's name,
 * like put's upload state: the download directory stays clean, one file per download, written
 * atomically (rsc_state_write: temp name, fsync, rename). It names the object (server, name,
 * size, SHA-256), N and the ranges still to fetch, each with how many of its bytes are durable:
 * a checkpoint snapshots what every range has written, fdatasyncs FILE.part, and only then
 * records the snapshot, so the state never claims bytes that were not synced. Checkpoints come
 * from their own thread (pget_syncer()) every PGET_SYNC_BYTES per stream written or PGET_SYNC_S
 * seconds, and when the download stops for any reason but an integrity failure. The state
 * ends with the CRC32C of its text: a torn, edited or foreign state, or a .part of another
 * size, restarts from byte 0. */

#define PGET_MAX_RANGES (2 * RSC_MAX_STREAMS)
#define PGET_SYNC_BYTES (64ull << 20) /* per stream */
#define PGET_SYNC_S     1.0
#define PGET_STATE_MAX  16384

struct prange {
    uint64_t off, end;        /* [off, end) of the object still to fetch */
    uint64_t durable;         /* bytes from off synced and recorded (under pget.ckpt) */
    _Atomic uint64_t written; /* bytes from off written to FILE.part, contiguous */
};

struct pget {
    const char *what, *name, *spath;
    const ringstream_v1_ObjectInfo *oi;
    int fd;
    unsigned streams, nranges;
    struct prange r[PGET_MAX_RANGES];
    atomic_uint next;          /* the next range a worker takes */
    atomic_bool stop;          /* a worker failed: the others stop at their next chunk */
    atomic_bool changed;       /* FAILED_PRECONDITION: the object changed */
    _Atomic uint64_t unsynced; /* bytes written since the last checkpoint began */
    pthread_mutex_t ckpt;      /* one checkpoint at a time */
    int ckpt_err;              /* -errno of the first failed checkpoint (under ckpt) */
    pthread_mutex_t mu;        /* for |wake|, |kick|, |done| */
    pthread_cond_t wake;       /* the checkpoint thread's: time for one, or the end */
    bool kick, done;
};

static void pget_header(const struct pget *p, char *out, size_t len)
{
    char namehex[2 * RSC_SMALL_MSG + 1], shahex[2 * RS_SHA256_LEN + 1];
    size_t nlen = strlen(p->name);

    rsc_hex(namehex, (const uint8_t *)p->name, nlen < RSC_SMALL_MSG ? nlen : RSC_SMALL_MSG);
    rsc_hex(shahex, p->oi->sha256, RS_SHA256_LEN);
    snprintf(out, len,
             "ringstream parallel get 1\nserver %s %s\nname %s\nsize %" PRIu64 "\nsha256 %s\n",
             rsc_cli.conn.tls.on ? "tls" : "tcp", rsc_cli.conn.server, namehex, p->oi->size,
             shahex);
}

/* The state text of |p| with durable counts |dur| (one per range). Returns its length, or 0
 * when it does not fit. */
static size_t pget_format(const struct pget *p, const uint64_t *dur, char *out, size_t len)
{
    size_t n;

    pget_header(p, out, len);
    n = strlen(out);
    n += (size_t)snprintf(out + n, len - n, "streams %u\nranges %u\n", p->streams, p->nranges);
    for (unsigned i = 0; i < p->nranges && n < len; i++)
        n += (size_t)snprintf(out + n, len - n, "%" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                              p->r[i].off, p->r[i].end, dur[i]);
    if (n >= len)
        return 0;
    n += (size_t)snprintf(out + n, len - n, "check %08x\n", rs_crc32c(0, out, n));
    return n < len ? n : 0;
}

static bool parse_u64(const char **s, char stop, uint64_t *v)
{
    char *end;

    if (**s < '0' || **s > '9')
        return false;
    errno = 0;
    *v = strtoull(*s, &end, 10);
    if (errno != 0 || *end != stop)
        return false;
    *s = end + 1;
    return true;
}

/* Loads the ranges of |text| into |p| (durable = written = the recorded counts). Returns
 * the saved N, or 0 when |text| is not a valid state of this very download. */
static unsigned pget_parse(struct pget *p, const char *text)
{
    char head[PGET_STATE_MAX];
    const char *s = text, *check = strstr(text, "check ");
    uint64_t streams, count, crc, prev_end = 0;

    pget_header(p, head, sizeof(head));
    if (check == NULL || strncmp(text, head, strlen(head)) != 0)
        return 0;
    s = check + 6;
    if (strlen(s) != 9 || s[8] != '\n')
        return 0;
    crc = strtoull(s, NULL, 16);
    if (crc != rs_crc32c(0, text, (size_t)(check - text)))
        return 0;
    s = text + strlen(head);
    if (strncmp(s, "streams ", 8) != 0)
        return 0;
    s += 8;
    if (!parse_u64(&s, '\n', &streams) || streams < 1 || streams > RSC_MAX_STREAMS ||
        strncmp(s, "ranges ", 7) != 0)
        return 0;
    s += 7;
    if (!parse_u64(&s, '\n', &count) || count > PGET_MAX_RANGES)
        return 0;
    for (unsigned i = 0; i < count; i++) {
        struct prange *r = &p->r[i];

        if (!parse_u64(&s, ' ', &r->off) || !parse_u64(&s, ' ', &r->end) ||
            !parse_u64(&s, '\n', &r->durable) || r->off < prev_end || r->off >= r->end ||
            r->end > p->oi->size || r->durable > r->end - r->off)
            return 0;
        atomic_store(&r->written, r->durable);
        prev_end = r->end;
    }
    if (s != check)
        return 0;
    p->nranges = (unsigned)count;
    return (unsigned)streams;
}

/* N ranges of the whole object, nothing fetched. */
static void pget_fresh(struct pget *p)
{
    uint64_t size = p->oi->size, per = (size + p->streams - 1) / p->streams;

    if (per < RSC_GET_CHUNK)
        per = RSC_GET_CHUNK;
    p->nranges = 0;
    for (uint64_t off = 0; off < size && p->nranges < RSC_MAX_STREAMS; off += per) {
        struct prange *r = &p->r[p->nranges++];

        r->off = off;
        r->end = size - off < per ? size : off + per;
        r->durable = 0;
        atomic_store(&r->written, 0);
    }
}

/* A resume with another N: what is left (each range's undone tail) becomes the ranges, and
 * the largest are halved (on chunk boundaries) until there are N. More than N left: the N
 * workers take them in turn. */
static void pget_resplit(struct pget *p)
{
    unsigned n = 0;

    for (unsigned i = 0; i < p->nranges; i++) {
        struct prange *r = &p->r[i];

        if (r->durable == r->end - r->off)
            continue;
        p->r[n].off = r->off + r->durable;
        p->r[n].end = r->end;
        p->r[n].durable = 0;
        atomic_store(&p->r[n].written, 0);
        n++;
    }
    p->nranges = n;
    while (p->nranges < p->streams && p->nranges < PGET_MAX_RANGES) {
        unsigned big = 0;
        uint64_t mid;

        for (unsigned i = 1; i < p->nranges; i++)
            if (p->r[i].end - p->r[i].off > p->r[big].end - p->r[big].off)
                big = i;
        if (p->nranges == 0 || p->r[big].end - p->r[big].off < 2 * RSC_GET_CHUNK)
            break;
        mid = p->r[big].off + (p->r[big].end - p->r[big].off) / 2 / RSC_GET_CHUNK * RSC_GET_CHUNK;
        memmove(&p->r[big + 2], &p->r[big + 1], (p->nranges - big - 1) * sizeof(p->r[0]));
        p->r[big + 1].off = mid;
        p->r[big + 1].end = p->r[big].end;
        p->r[big + 1].durable = 0;
        atomic_store(&p->r[big + 1].written, 0);
        p->r[big].end = mid;
        p->nranges++;
    }
}

/* Records every range's durable bytes: snapshot, fdatasync, then the state. Returns 0 or
 * -errno (that of the first failure from then on). */
static int pget_checkpoint(struct pget *p)
{
    uint64_t snap[PGET_MAX_RANGES];
    char text[PGET_STATE_MAX];
    bool moved = false;
    int ret = 0;

    pthread_mutex_lock(&p->ckpt);
    if (p->ckpt_err != 0) {
        ret = p->ckpt_err;
        goto out;
    }
    atomic_store(&p->unsynced, 0);
    for (unsigned i = 0; i < p->nranges; i++) {
        snap[i] = atomic_load(&p->r[i].written);
        moved |= snap[i] != p->r[i].durable;
    }
    if (!moved)
        goto out;
    /* Everything in |snap| was written before this sync began: it is durable after it. */
    if (fdatasync(p->fd) < 0) {
        ret = -errno;
    } else if (pget_format(p, snap, text, sizeof(text)) == 0) {
        ret = -ENAMETOOLONG;
    } else {
        ret = rsc_state_write(p->spath, text);
        if (ret == 0)
            for (unsigned i = 0; i < p->nranges; i++)
                p->r[i].durable = snap[i];
    }
    p->ckpt_err = ret;
out:
    pthread_mutex_unlock(&p->ckpt);
    return ret;
}

/* The checkpoint thread: one every PGET_SYNC_S seconds, or sooner when pget_written() kicks
 * it, so no worker waits for an fdatasync. A failed checkpoint stops the download. */
static void *pget_syncer(void *arg)
{
    struct pget *p = arg;
    struct timespec ts;

    pthread_mutex_lock(&p->mu);
    while (!p->done) {
        if (!p->kick) {
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += (time_t)PGET_SYNC_S;
            pthread_cond_timedwait(&p->wake, &p->mu, &ts);
        }
        p->kick = false;
        if (p->done)
            break;
        pthread_mutex_unlock(&p->mu);
        if (pget_checkpoint(p) < 0)
            atomic_store(&p->stop, true);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* on_chunk() after each chunk of a range is written. */
static void pget_written(struct pget *p, struct prange *r, size_t len)
{
    uint64_t limit = PGET_SYNC_BYTES * p->streams, before;

    atomic_fetch_add(&r->written, len);
    before = atomic_fetch_add(&p->unsynced, len);
    if (before < limit && before + len >= limit) {
        pthread_mutex_lock(&p->mu);
        p->kick = true;
        pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
}

struct pworker {
    struct pget *p;
    int code;
    pthread_t tid;
};

/* Takes ranges until none is left, on one connection opened at the first. */
static void *pget_worker(void *arg)
{
    struct pworker *w = arg;
    struct pget *p = w->p;
    struct rsc_conn *c = NULL;
    struct rsc_status st;
    unsigned i;

    while (w->code == 0 && !atomic_load(&p->stop) &&
           (i = atomic_fetch_add(&p->next, 1)) < p->nranges) {
        struct prange *r = &p->r[i];
        uint64_t from = r->off + atomic_load(&r->written);
        struct get g = { .fd = p->fd, .stop = &p->stop, .pg = p, .pr = r };

        if (from >= r->end)
            continue;
        if (c == NULL && (c = rsc_connect_or_fail(p->what, &w->code)) == NULL)
            break;
        w->code = get_range(c, p->what, p->name, from, r->end - from, p->oi->sha256, &g, &st, true);
        if (w->code == -1) { /* FAILED_PRECONDITION: the caller starts over */
            atomic_store(&p->changed, true);
            w->code = GET_STOPPED;
        }
    }
    rsc_conn_close(c);
    if (w->code != 0)
        atomic_store(&p->stop, true); /* the others stop at their next chunk */
    return NULL;
}

/* Runs the workers over p->r. Returns 0, -1 (the object changed) or the exit code. */
static int pget_run(struct pget *p, uint64_t resumed)
{
    struct pworker w[RSC_MAX_STREAMS];
    unsigned n = 0, want = p->streams < p->nranges ? p->streams : p->nranges;
    pthread_t syncer;
    int code = 0, ret;

    atomic_store(&p->next, 0);
    atomic_store(&p->stop, false);
    atomic_store(&p->changed, false);
    atomic_store(&p->unsynced, 0);
    p->kick = p->done = false;
    if (pthread_create(&syncer, NULL, pget_syncer, p) != 0)
        return rsc_fail(RSC_EX_IO, p->what, -1, NULL, "cannot start a thread");
    rsc_progress_begin(p->oi->size, resumed);
    for (; n < want; n++) {
        w[n] = (struct pworker){ .p = p };
        if (pthread_create(&w[n].tid, NULL, pget_worker, &w[n]) != 0) {
            atomic_store(&p->stop, true);
            code = rsc_fail(RSC_EX_IO, p->what, -1, NULL, "cannot start a thread");
            break;
        }
    }
    /* The first worker that failed reported it; the others stopped quietly (GET_STOPPED). */
    for (unsigned i = 0; i < n; i++) {
        pthread_join(w[i].tid, NULL);
        if (code == 0 && w[i].code != GET_STOPPED)
            code = w[i].code;
    }
    pthread_mutex_lock(&p->mu);
    p->done = true;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->mu);
    pthread_join(syncer, NULL);
    if (code == 0 && atomic_load(&p->changed))
        return -1;
    if (code == RSC_EX_INTEGRITY)
        return code; /* the caller drops FILE.part and the state */
    /* Done, or stopped (connection lost, server error, local I/O, a failed checkpoint): what
     * arrived counts. */
    ret = pget_checkpoint(p);
    if (ret < 0 && code == 0)
        return rsc_fail(RSC_EX_IO, p->what, -1, NULL, "saving the download state: %s",
                        strerror(-ret));
    if (code == 0 && atomic_load(&p->stop))
        code = RSC_EX_CONN;
    return code;
}

/* Starts |p| over from byte 0: the fresh state is durable before FILE.part is emptied, so a
 * crash in between never pairs an old state with new bytes. Returns 0 or the exit code. */
static int pget_restart(struct pget *p, const char *part)
{
    uint64_t zero[PGET_MAX_RANGES] = { 0 };
    char text[PGET_STATE_MAX];
    int ret;

    pget_fresh(p);
    if (pget_format(p, zero, text, sizeof(text)) == 0)
        return rsc_fail(RSC_EX_USAGE, p->what, -1, NULL, "name too long");
    ret = rsc_state_write(p->spath, text);
    if (ret < 0)
        return rsc_fail(RSC_EX_IO, p->what, -1, NULL, "cannot save the download state: %s",
                        strerror(-ret));
    sync_parent(p->spath); /* the rename too, before the old bytes go */
    if (ftruncate(p->fd, 0) < 0 || ftruncate(p->fd, (off_t)p->oi->size) < 0)
        return rsc_fail(RSC_EX_IO, p->what, -1, NULL, "%s: %s", part, strerror(errno));
    return 0;
}

/* The whole --streams download into |fd| (FILE.part), resuming from the state at |spath|.
 * |c| does the Stat again when the object changed mid-way (|oi| is then updated).
 * |*keep_part| is set once FILE.part is worth keeping; |*resumed| gets the bytes not
 * fetched again. Returns 0 or the exit code (printed). */
static int get_parallel(const char *what, const char *name, int fd, const char *part,
                        const char *spath, struct rsc_conn *c, ringstream_v1_ObjectInfo *oi,
                        bool *keep_part, uint64_t *resumed)
{
    struct pget *p = calloc(1, sizeof(*p));
    char *text = malloc(PGET_STATE_MAX);
    struct stat sb;
    unsigned saved;
    int code = 0;

    *resumed = 0;
    if (p == NULL || text == NULL) {
        code = rsc_fail(RSC_EX_IO, what, -1, NULL, "out of memory");
        goto out;
    }
    *p = (struct pget){
        .what = what, .name = name, .spath = spath, .oi = oi, .fd = fd, .streams = rsc_cli.streams
    };
    pthread_mutex_init(&p->ckpt, NULL);
    pthread_mutex_init(&p->mu, NULL);
    {
        pthread_condattr_t ca;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->wake, &ca);
        pthread_condattr_destroy(&ca);
    }
    saved = 0;
    if (fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == oi->size &&
        rsc_state_read(spath, text, PGET_STATE_MAX) == 0)
        saved = pget_parse(p, text);
    if (saved != 0) {
        if (saved != p->streams)
            pget_resplit(p);
        *resumed = oi->size;
        for (unsigned i = 0; i < p->nranges; i++)
            *resumed -= p->r[i].end - p->r[i].off - p->r[i].durable;
    } else {
        code = pget_restart(p, part);
    }
    for (int attempt = 0; code == 0; attempt++) {
        *keep_part = true; /* from here an interruption leaves a resumable FILE.part */
        code = pget_run(p, *resumed);
        if (code != -1)
            break;
        if (attempt > 0) { /* changed twice while downloading: let the user retry */
            code = rsc_fail(RSC_EX_GRPC, what, -1, "FAILED_PRECONDITION",
                            "the object keeps changing");
            break;
        }
        /* FAILED_PRECONDITION: the object changed since the download began; start over. */
        code = rsc_do_stat(c, what, name, oi);
        if (code == 0)
            code = pget_restart(p, part);
        *resumed = 0;
    }
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->ckpt);
out:
    free(text);
    free(p);
    return code;
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
        code = get_parallel(what, name, fd, part, spath, c, &oi, &keep_part, &resume);
        if (code == 0) {
            ret = rsc_hash_fd(fd, oi.size, &h, buf, RSC_DATA_CHUNK, "verifying ");
            if (ret < 0)
                code = rsc_fail(RSC_EX_IO, what, -1, NULL, "re-reading %s: %s", part,
                                strerror(-ret));
        }
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
        char extra[128];

        /* resumed_from: the offset a single stream resumed from; with --streams, the bytes
         * already there (the same number: bytes not fetched again), also as resumed_bytes. */
        snprintf(extra, sizeof(extra),
                 ",\"resumed_from\":%" PRIu64 ",\"resumed_bytes\":%" PRIu64 ",\"streams\":%u",
                 resume, resume, rsc_cli.streams > 1 ? rsc_cli.streams : 1);
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
