/* client/bench.c: see bench.h. Every request message is built once before the clock starts
 * (the client measures the server, not its own encoder); a connection's calls are driven by
 * its thread with rsc_conn_poll(). Latencies go into a log-linear histogram (32 sub-buckets
 * per power of two, so a percentile is within ~3%), one per thread, merged at the end. */
#include "client/bench.h"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pb_decode.h>
#include "core/crc32c.h"
#include "proto/grpc.h"
#include "proto/pbview.h"
#include "bulk.pb.h"

#define SVC        "/ringstream.v1.Bulk/"
#define OBJ_NAME   "bench/obj"
#define PUT_PIECE  (1024 * 1024)
#define ECHO_PIECE (64 * 1024)
#define HSUB       32
#define HBUCKETS   (60 * HSUB)
#define DRAIN_S    30.0 /* calls still open this long after the end: the connection is dropped */

/* A request stream built ahead: |first| once (may be empty), |nfull| times |full|, |tail|. */
struct seq {
    uint8_t *first;
    size_t firstlen;
    uint8_t *full;
    size_t fulllen;
    uint64_t nfull;
    uint8_t *tail;
    size_t taillen;
};

struct worker;

struct slot {
    struct worker *w;
    unsigned idx;
    double t0;
    uint64_t pos; /* next message of the request stream: 0 = first */
    uint64_t rx;  /* bytes of payload received by this call */
    uint8_t name_hdr[300];
    struct seq s; /* put: |first| is this slot's header */
};

struct worker {
    const struct rsc_bench_opts *o;
    pthread_t tid;
    struct rsc_conn *c;
    double deadline;
    struct slot *slots;
    uint64_t calls, errors, crc_errors, bytes;
    bool conn_failed;
    char first_error[600];
    uint64_t hist[HBUCKETS];
    uint64_t max_us;
};

static const struct seq *shared_seq; /* echo: the same stream for every call */
static const uint8_t *unary_req, *get_req;
static size_t unary_req_len, get_req_len;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned hbucket(uint64_t us)
{
    unsigned e;

    if (us < HSUB)
        return (unsigned)us;
    e = 63u - (unsigned)__builtin_clzll(us); /* >= 5 */
    if (e >= 63)
        return HBUCKETS - 1;
    return (e - 4) * HSUB + (unsigned)((us >> (e - 5)) & (HSUB - 1));
}

static uint64_t hvalue(unsigned idx)
{
    unsigned e, sub;

    if (idx < HSUB)
        return idx;
    e = idx / HSUB + 4;
    sub = idx % HSUB;
    return (uint64_t)(HSUB + sub) << (e - 5);
}

static uint64_t percentile(const uint64_t *h, uint64_t n, double q)
{
    uint64_t want = (uint64_t)(q * (double)n + 0.999999), seen = 0;

    if (want == 0)
        want = 1;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        seen += h[i];
        if (seen >= want)
            return hvalue(i);
    }
    return 0;
}

/* --- request messages ---------------------------------------------------------------------- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    return rs_pb_put_varint(p, v);
}

/* field |outer| = ChecksummedData{data, crc32c}. Returns owned, or NULL. */
static uint8_t *checked_msg(unsigned outer, const uint8_t *data, size_t n, size_t *len)
{
    uint8_t *m = malloc(n + 40), *p = m;
    uint32_t crc = rs_crc32c(0, data, n);
    uint8_t tmp[10];
    size_t inner = 1 + rs_pb_put_varint(tmp, n) + n + 5;

    if (m == NULL)
        return NULL;
    *p++ = (uint8_t)((outer << 3) | PB_WT_STRING);
    p += put_varint(p, inner);
    *p++ = (1 << 3) | PB_WT_STRING;
    p += put_varint(p, n);
    memcpy(p, data, n);
    p += n;
    *p++ = (2 << 3) | PB_WT_32BIT;
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(crc >> (8 * i));
    *len = (size_t)(p - m);
    return m;
}

/* Chunk{data}. Returns owned, or NULL. */
static uint8_t *chunk_msg(const uint8_t *data, size_t n, size_t *len)
{
    uint8_t *m = malloc(n + 16), *p = m;

    if (m == NULL)
        return NULL;
    *p++ = (1 << 3) | PB_WT_STRING;
    p += put_varint(p, n);
    memcpy(p, data, n);
    *len = (size_t)(p - m) + n;
    return m;
}

/* A string field 1 (StatRequest, GetRequest.name, ...) into |out|. Returns its length. */
static size_t name_msg(uint8_t *out, const char *name)
{
    size_t n = strlen(name), len = 0;

    out[len++] = (1 << 3) | PB_WT_STRING;
    len += put_varint(out + len, n);
    memcpy(out + len, name, n);
    return len + n;
}

/* PutRequest{header{name, size, overwrite}} into |out| (300 bytes). Returns its length. */
static size_t put_header_msg(uint8_t *out, const char *name, uint64_t size)
{
    uint8_t h[300];
    size_t hl = name_msg(h, name), len = 0;

    h[hl++] = (2 << 3) | PB_WT_VARINT;
    hl += put_varint(h + hl, size);
    h[hl++] = (4 << 3) | PB_WT_VARINT;
    h[hl++] = 1;
    out[len++] = (1 << 3) | PB_WT_STRING;
    len += put_varint(out + len, hl);
    memcpy(out + len, h, hl);
    return len + hl;
}

static int seq_build(struct seq *s, unsigned field, uint64_t size, size_t piece, bool checked)
{
    uint8_t *pat = malloc(piece);
    size_t n = size < piece ? (size_t)size : piece, tn = (size_t)(size % piece);

    if (pat == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < piece; i++)
        pat[i] = (uint8_t)(i * 131 + (i >> 9));
    s->nfull = size / piece;
    if (s->nfull > 0) {
        s->full =
                checked ? checked_msg(field, pat, n, &s->fulllen) : chunk_msg(pat, n, &s->fulllen);
        if (s->full == NULL)
            goto err;
    }
    if (tn > 0) {
        s->tail = checked ? checked_msg(field, pat, tn, &s->taillen)
                          : chunk_msg(pat, tn, &s->taillen);
        if (s->tail == NULL)
            goto err;
    }
    free(pat);
    return 0;
err:
    free(pat);
    return -ENOMEM;
}

static void seq_free(struct seq *s)
{
    free(s->full);
    free(s->tail);
}

static int seq_next(const struct seq *s, uint64_t *pos, const uint8_t **msg, size_t *len)
{
    uint64_t p = (*pos)++;

    if (p == 0 && s->firstlen > 0) {
        *msg = s->first;
        *len = s->firstlen;
        return 1;
    }
    if (p == 0)
        p = (*pos)++;
    if (p - 1 < s->nfull) {
        *msg = s->full;
        *len = s->fulllen;
        return 1;
    }
    if (p - 1 == s->nfull && s->taillen > 0) {
        *msg = s->tail;
        *len = s->taillen;
        return 1;
    }
    return 0;
}

/* --- calls ------------------------------------------------------------------------------ */

static int slot_next(void *arg, const uint8_t **msg, size_t *len)
{
    struct slot *sl = arg;

    return seq_next(sl->w->o->kind == RSC_BENCH_PUT ? &sl->s : shared_seq, &sl->pos, msg, len);
}

static int slot_msg(void *arg, const uint8_t *m, size_t len)
{
    struct slot *sl = arg;

    if (sl->w->o->kind == RSC_BENCH_GET) {
        ringstream_v1_Chunk ch = ringstream_v1_Chunk_init_zero;
        struct rs_pb_view data = { 0 };
        pb_istream_t s = pb_istream_from_buffer(m, len);

        rs_pb_view_bind(&ch.data, &data);
        if (!pb_decode(&s, ringstream_v1_Chunk_fields, &ch) ||
            !rs_pb_views_inside(ringstream_v1_Chunk_fields, &ch, m, len) ||
            rs_crc32c(0, data.p, data.len) != ch.crc32c)
            return -1;
        sl->rx += data.len;
    } else {
        sl->rx += len;
    }
    return 0;
}

static void slot_start(struct slot *sl);

static void slot_done(void *arg, int ret, const struct rsc_status *st)
{
    struct slot *sl = arg;
    struct worker *w = sl->w;
    double t = now_s();
    uint64_t us = (uint64_t)((t - sl->t0) * 1e6);

    if (ret == 0 && st->code == 0) {
        w->calls++;
        w->hist[hbucket(us)]++;
        if (us > w->max_us)
            w->max_us = us;
        w->bytes += w->o->kind == RSC_BENCH_PUT ? w->o->size : sl->rx;
    } else {
        w->errors++;
        if (ret == -ECANCELED)
            w->crc_errors++;
        else if (ret < 0)
            w->conn_failed = true;
        if (w->first_error[0] == '\0')
            snprintf(w->first_error, sizeof(w->first_error), "%s: %s",
                     ret == -ECANCELED ? "INTEGRITY"
                     : ret < 0         ? "UNAVAILABLE"
                                       : rs_grpc_status_name(st->code),
                     ret == -ECANCELED ? "malformed chunk or CRC32C mismatch" : st->msg);
    }
    if (t < w->deadline && ret >= 0)
        slot_start(sl);
}

static void slot_start(struct slot *sl)
{
    struct worker *w = sl->w;
    const struct rsc_bench_opts *o = w->o;
    int ret;

    sl->t0 = now_s();
    sl->pos = 0;
    sl->rx = 0;
    switch (o->kind) {
    case RSC_BENCH_UNARY:
        ret = rsc_call_start(w->c, SVC "Stat", unary_req, unary_req_len, NULL, slot_msg, slot_done,
                             sl);
        break;
    case RSC_BENCH_GET:
        ret = rsc_call_start(w->c, SVC "Get", get_req, get_req_len, NULL, slot_msg, slot_done, sl);
        break;
    case RSC_BENCH_PUT:
        ret = rsc_call_start(w->c, SVC "Put", NULL, 0, slot_next, slot_msg, slot_done, sl);
        break;
    case RSC_BENCH_ECHO:
        ret = rsc_call_start(w->c, SVC "Echo", NULL, 0, slot_next, slot_msg, slot_done, sl);
        break;
    default:
        ret = -EINVAL;
    }
    if (ret < 0) {
        w->errors++;
        w->conn_failed = true;
        if (w->first_error[0] == '\0')
            snprintf(w->first_error, sizeof(w->first_error), "cannot start a call: %s",
                     strerror(-ret));
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char err[512];

    w->c = rsc_conn_open(w->o->conn, err, sizeof(err));
    if (w->c == NULL) {
        w->conn_failed = true;
        w->errors++;
        snprintf(w->first_error, sizeof(w->first_error), "UNAVAILABLE: %s", err);
        return NULL;
    }
    for (unsigned i = 0; i < w->o->streams; i++)
        slot_start(&w->slots[i]);
    while (rsc_conn_calls(w->c) > 0 && now_s() < w->deadline + DRAIN_S)
        if (rsc_conn_poll(w->c, 100) < 0)
            break;
    rsc_conn_close(w->c); /* fails (and counts) whatever is still open */
    w->c = NULL;
    return NULL;
}

/* --- setup -------------------------------------------------------------------------------- */

struct put_one {
    const struct seq *s;
    uint64_t pos;
};

static int put_one_next(void *arg, const uint8_t **msg, size_t *len)
{
    struct put_one *p = arg;

    return seq_next(p->s, &p->pos, msg, len);
}

/* Stores the object unary and get read. Returns 0 or an exit code (printed). */
static int setup_object(const struct rsc_bench_opts *o)
{
    struct seq s = { 0 };
    uint8_t hdr[300];
    struct put_one p = { &s, 0 };
    struct rsc_status st;
    char err[512];
    struct rsc_conn *c;
    int ret;

    if (seq_build(&s, 3, o->size, PUT_PIECE, true) < 0) {
        fprintf(stderr, "ringstream: bench: out of memory\n");
        return 3;
    }
    s.first = hdr;
    s.firstlen = put_header_msg(hdr, OBJ_NAME, o->size);
    c = rsc_conn_open(o->conn, err, sizeof(err));
    if (c == NULL) {
        seq_free(&s);
        fprintf(stderr, "ringstream: bench: UNAVAILABLE: %s\n", err);
        return 5;
    }
    ret = rsc_call_run(c, SVC "Put", NULL, 0, put_one_next, NULL, &p, &st);
    rsc_conn_close(c);
    seq_free(&s);
    if (ret < 0 || st.code != 0) {
        fprintf(stderr, "ringstream: bench: put %s: %s: %s\n", OBJ_NAME,
                ret < 0 ? "UNAVAILABLE" : rs_grpc_status_name(st.code), st.msg);
        return ret < 0 ? 5 : 1;
    }
    return 0;
}

int rsc_bench_kind_parse(const char *s, enum rsc_bench_kind *kind)
{
    static const char *const names[] = { "unary", "get", "put", "echo" };

    for (unsigned i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *kind = (enum rsc_bench_kind)i;
            return 0;
        }
    }
    return -EINVAL;
}

int rsc_bench_run(const struct rsc_bench_opts *o)
{
    static const char *const names[] = { "unary", "get", "put", "echo" };
    struct worker *ws = calloc(o->conns, sizeof(*ws));
    struct slot *slots = calloc((size_t)o->conns * o->streams, sizeof(*slots));
    uint64_t *hist = calloc(HBUCKETS, sizeof(*hist));
    uint64_t calls = 0, errors = 0, crc_errors = 0, bytes = 0, max_us = 0;
    struct seq echo = { 0 }, putdata = { 0 };
    uint8_t ureq[300], greq[300];
    const char *first_error = NULL;
    bool conn_failed = false;
    unsigned started = 0;
    double t0, el;
    int code = 0;

    if (ws == NULL || slots == NULL || hist == NULL) {
        fprintf(stderr, "ringstream: bench: out of memory\n");
        code = 3;
        goto out;
    }
    switch (o->kind) {
    case RSC_BENCH_UNARY:
    case RSC_BENCH_GET:
        code = setup_object(o);
        unary_req_len = name_msg(ureq, OBJ_NAME);
        unary_req = ureq;
        get_req_len = name_msg(greq, OBJ_NAME);
        greq[get_req_len++] = (4 << 3) | PB_WT_VARINT; /* GetRequest.chunk_size: 1 MiB */
        get_req_len += put_varint(greq + get_req_len, 1024 * 1024);
        get_req = greq;
        break;
    case RSC_BENCH_PUT:
        if (seq_build(&putdata, 3, o->size, PUT_PIECE, true) < 0)
            code = 3;
        break;
    case RSC_BENCH_ECHO:
        if (seq_build(&echo, 1, o->size, ECHO_PIECE, false) < 0)
            code = 3;
        shared_seq = &echo;
        break;
    }
    if (code != 0)
        goto out;
    t0 = now_s();
    for (unsigned i = 0; i < o->conns; i++) {
        struct worker *w = &ws[i];

        w->o = o;
        w->deadline = t0 + o->duration_s;
        w->slots = &slots[(size_t)i * o->streams];
        for (unsigned j = 0; j < o->streams; j++) {
            struct slot *sl = &w->slots[j];
            char name[64];

            sl->w = w;
            sl->idx = j;
            if (o->kind == RSC_BENCH_PUT) {
                snprintf(name, sizeof(name), "bench/put-%u-%u", i, j);
                sl->s = putdata;
                sl->s.first = sl->name_hdr;
                sl->s.firstlen = put_header_msg(sl->name_hdr, name, o->size);
            }
        }
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            fprintf(stderr, "ringstream: bench: cannot start a thread\n");
            code = 3;
            break;
        }
        started++;
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(ws[i].tid, NULL);
    el = now_s() - t0;
    if (code != 0)
        goto out;
    for (unsigned i = 0; i < o->conns; i++) {
        calls += ws[i].calls;
        errors += ws[i].errors;
        crc_errors += ws[i].crc_errors;
        bytes += ws[i].bytes;
        conn_failed |= ws[i].conn_failed;
        if (ws[i].max_us > max_us)
            max_us = ws[i].max_us;
        for (unsigned b = 0; b < HBUCKETS; b++)
            hist[b] += ws[i].hist[b];
        if (first_error == NULL && ws[i].first_error[0] != '\0')
            first_error = ws[i].first_error;
    }
    if (o->json) {
        printf("{\"ok\":%s,\"command\":\"bench\",\"kind\":\"%s\",\"conns\":%u,\"streams\":%u,"
               "\"size\":%" PRIu64 ",\"seconds\":%.3f,\"calls\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"calls_per_s\":%.1f,\"bytes_per_s\":%.0f,\"latency_us\":{\"p50\":%" PRIu64
               ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64 ",\"max\":%" PRIu64
               "}}\n",
               errors ? "false" : "true", names[o->kind], o->conns, o->streams, o->size, el, calls,
               errors, (double)calls / el, (double)bytes / el, percentile(hist, calls, 0.5),
               percentile(hist, calls, 0.9), percentile(hist, calls, 0.99),
               percentile(hist, calls, 0.999), max_us);
    } else {
        if (o->kind == RSC_BENCH_UNARY) /* Stat of one object: no payload of --size */
            printf("bench unary (Stat): %u conns x %u streams, %.2f s\n", o->conns, o->streams, el);
        else
            printf("bench %s: %u conns x %u streams, %" PRIu64 " bytes per call, %.2f s\n",
                   names[o->kind], o->conns, o->streams, o->size, el);
        printf("calls %" PRIu64 " (%.1f/s), errors %" PRIu64 ", %.1f MiB/s\n", calls,
               (double)calls / el, errors, (double)bytes / el / (1024.0 * 1024.0));
        printf("latency us: p50 %" PRIu64 "  p90 %" PRIu64 "  p99 %" PRIu64 "  p999 %" PRIu64
               "  max %" PRIu64 "\n",
               percentile(hist, calls, 0.5), percentile(hist, calls, 0.9),
               percentile(hist, calls, 0.99), percentile(hist, calls, 0.999), max_us);
    }
    fflush(stdout);
    if (first_error != NULL)
        fprintf(stderr, "ringstream: bench %s: %" PRIu64 " failed calls; first: %s\n",
                names[o->kind], errors, first_error);
    code = crc_errors > 0 ? 4 : conn_failed ? 5 : errors > 0 ? 1 : 0;
out:
    shared_seq = NULL; /* they pointed into this frame */
    unary_req = get_req = NULL;
    seq_free(&echo);
    seq_free(&putdata);
    free(hist);
    free(slots);
    free(ws);
    return code;
}
