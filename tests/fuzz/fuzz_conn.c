/* tests/fuzz/fuzz_conn.c: libFuzzer target for a whole connection's input path. Arbitrary bytes
 * go into one server connection through the fake ring (tests/unit/fake_ring.c) as recv
 * completions; every send is completed, the worker loop runs, then the connection is closed and
 * everything it held must have come back (else abort(), which libFuzzer reports).
 *
 * Input: byte 0 is options, the rest is what the client sends.
 *   bit 0      prepend a valid client preface (the magic and an empty SETTINGS frame)
 *   bits 1-3   chunking: the input arrives in pieces of 1, 3, 16, 100, 1000, 16384 bytes or whole
 *   bit 4      hold sends: complete them only after all input was delivered
 *   bit 5      the first sendmsg cannot be submitted (a full submission queue)
 *   bit 6      fire call timers (deadlines, graces) half-way through
 *   bit 7      start a drain (as SIGTERM does) half-way through */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core/log.h"
#include "tests/unit/fake_ring.h"
#include "workers/interop/interop.h"
#include "workers/internal.h"

#define FZ_ROUNDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_echo(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };

    if (rs_call_send(call, &iov, 1) == -ENOMEM)
        rs_call_finish(call, RS_GRPC_RESOURCE_EXHAUSTED, "no memory");
    rs_call_consume(call);
}

static void fz_hold(struct rs_call *call, const uint8_t *msg, size_t len)
{
    /* keeps the message: the call ends only by reset, deadline or close */
}

static void fz_finish(struct rs_call *call)
{
    rs_call_finish(call, RS_GRPC_OK, NULL);
}

static void fz_meta_start(struct rs_call *call)
{
    rs_call_add_metadata(call, "x-a", "1", 1);
    rs_call_add_metadata(call, "x-b-bin", "AAE=", 4);
}

static const struct rs_method fz_methods[] = {
    { .path = "/f.F/Echo",
      .on_start = fz_meta_start,
      .on_message = fz_echo,
      .on_half_close = fz_finish },
    { .path = "/f.F/Hold", .on_message = fz_hold },
};

static const struct rs_service fz_service = {
    .name = "f.F",
    .methods = fz_methods,
    .nmethods = sizeof(fz_methods) / sizeof(fz_methods[0]),
};

struct fz {
    struct rs_server *srv;
    struct rs_worker *w;
    bool hold_sends;
};

static struct rs_conn *fz_conn(struct fz *f)
{
    return f->w->conns[1];
}

/* Everything outside the worker: completes sends, ends the recv of a closed conn, runs
 * cancels, optionally fires the call timers' ring timeout (RS_OP_TIMERS: the heap runs what is
 * due, and every timer of an ended call is due at once) and the drain timer. */
static void fz_kernel(struct fz *f, bool timers)
{
    struct rs_ring *r = &f->w->ring;
    struct rs_conn *c = fz_conn(f);
    long i;

    for (i = rs_fake_ring_find(r, RS_FAKE_SENDMSG, 0); i >= 0 && !f->hold_sends;
         i = rs_fake_ring_find(r, RS_FAKE_SENDMSG, (size_t)i + 1))
        rs_fake_ring_complete(r, (size_t)i,
                              (int32_t)rs_fake_ring_op_bytes(rs_fake_ring_op(r, (size_t)i)), 0);
    if (c == NULL || (c->flags & RS_CONN_F_CLOSING)) {
        i = rs_fake_ring_find(r, RS_FAKE_RECV, 0);
        if (i >= 0)
            rs_fake_ring_complete(r, (size_t)i, 0, 0);
    }
    rs_fake_ring_run_cancels(r);
    if (timers) {
        for (i = rs_fake_ring_find(r, RS_FAKE_TIMEOUT, 0); i >= 0;
             i = rs_fake_ring_find(r, RS_FAKE_TIMEOUT, (size_t)i + 1)) {
            unsigned op = rs_ud_op(rs_fake_ring_op(r, (size_t)i)->user_data);

            if (op == RS_OP_TIMERS || op == RS_OP_TIMER)
                rs_fake_ring_complete(r, (size_t)i, -ETIME, 0);
        }
    }
}

static void fz_pump(struct fz *f, bool timers)
{
    int round;

    for (round = 0; round < FZ_ROUNDS; round++) {
        fz_kernel(f, timers);
        if (rs_fake_ring_posted(&f->w->ring) == 0 && rs_list_empty(&f->w->pending))
            break;
        rs_worker_turn(f->w);
    }
}

static void fz_deliver(struct fz *f, const uint8_t *p, size_t len)
{
    struct rs_ring *r = &f->w->ring;
    struct rs_conn *c = fz_conn(f);
    long op = rs_fake_ring_find(r, RS_FAKE_RECV, 0);
    int bid;

    if (c == NULL || (c->flags & RS_CONN_F_CLOSING) || op < 0 || len == 0)
        return;
    bid = rs_fake_ring_buf_fill(r, p, len);
    if (bid < 0)
        abort(); /* the server must recycle every buffer it parsed */
    rs_fake_ring_post(r, rs_fake_ring_op(r, (size_t)op)->user_data, (int32_t)len,
                      RS_RING_F_MORE | RS_RING_F_BUFFER, (unsigned)bid);
    rs_worker_turn(f->w);
    fz_pump(f, false);
}

static int fz_init(struct fz *f)
{
    struct rs_config cfg;
    char err[256];
    int fd;

    memset(f, 0, sizeof(*f));
    rs_config_defaults(&cfg);
    cfg.nlisten = 0;
    cfg.workers = 1;
    cfg.max_conns = 2;
    cfg.stream_buffer = 64 * 1024;
    cfg.max_msg = 256 * 1024;
    cfg.pool_bytes = 64 * (size_t)RS_POOL_BLOCK;
    cfg.glitch_budget = 50;
    f->srv = rs_server_new(&cfg, err, sizeof(err));
    if (f->srv == NULL)
        return -1;
    rs_server_add_service(f->srv, &fz_service);
    rs_server_add_service(f->srv, rs_interop_service()); /* grpc.testing: timers, gzip, metadata */
    f->w = &f->srv->workers[0];
    if (rs_worker_init(f->w, err, sizeof(err)) < 0)
        return -1;
    fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rs_fake_ring_post(&f->w->ring, rs_ud_make(RS_OP_ACCEPT, 0, 0), fd, RS_RING_F_MORE, 0);
    rs_worker_turn(f->w);
    if (fz_conn(f) == NULL)
        return -1;
    fz_pump(f, false);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                     "\0\0\0\4\0\0\0\0\0";
    static const size_t chunks[8] = { 0, 1, 3, 16, 100, 1000, 16384, 0 };
    struct fz f;
    uint8_t opt;
    size_t chunk, off, half;
    unsigned i, in_use = 0;

    if (size < 1)
        return 0;
    rs_log_set_level(RS_LOG_ERROR);
    opt = data[0];
    data++;
    size--;
    if (fz_init(&f) < 0)
        abort();
    f.hold_sends = (opt & 0x10) != 0;
    if (opt & 0x20)
        rs_fake_ring_fail_next(&f.w->ring, RS_FAKE_SENDMSG, 1);
    if (opt & 0x01)
        fz_deliver(&f, preface, sizeof(preface) - 1);
    chunk = chunks[(opt >> 1) & 7];
    if (chunk == 0 || chunk > f.w->ring.bufsize)
        chunk = f.w->ring.bufsize;
    half = size / 2;
    for (off = 0; off < size;) {
        size_t n = size - off < chunk ? size - off : chunk;

        if (off <= half && off + n > half) {
            if (opt & 0x40)
                fz_pump(&f, true);
            if (opt & 0x80) {
                struct rs_ring_cqe wake = { .user_data = rs_ud_make(RS_OP_WAKE, 0, 0), .res = 8 };

                rs_worker_handle_cqe(f.w, &wake);
            }
        }
        fz_deliver(&f, data + off, n);
        off += n;
    }
    f.hold_sends = false;
    fz_pump(&f, false);
    /* The end: close what is left, let every completion (and timer) come back. */
    if (fz_conn(&f) != NULL)
        rs_conn_close(fz_conn(&f));
    fz_pump(&f, true);
    fz_pump(&f, true);
    for (i = 1; i < f.w->nioreqs; i++)
        if (f.w->ioreqs[i].call != NULL)
            in_use++;
    if (fz_conn(&f) != NULL || f.w->pool.nlive != f.w->pool.ncached || in_use != 0 ||
        rs_fake_ring_bufs_in_use(&f.w->ring) != 0) {
        fprintf(stderr, "fuzz_conn: not freed: conn %p, pool blocks %zu, io slots %u, bufs %u\n",
                (void *)fz_conn(&f), f.w->pool.nlive - f.w->pool.ncached, in_use,
                rs_fake_ring_bufs_in_use(&f.w->ring));
        abort();
    }
    rs_worker_fini(f.w);
    rs_server_destroy(f.srv);
    return 0;
}
