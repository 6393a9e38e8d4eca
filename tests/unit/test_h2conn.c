/* tests/unit/test_h2conn.c: HTTP/2 connections without sockets. An in-process nghttp2 client
 * session talks to one server connection through the fake ring (tests/unit/fake_ring.c): the
 * client's output becomes recv completions with provided buffers, the server's sendmsg iovecs
 * are fed to the client, then completed with their byte count. Every case ends by closing the
 * connection and checking that everything was given back: the conn and its calls freed, every
 * pool block back, no I/O slot or receive buffer in use. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <nghttp2/nghttp2.h>
#include "tests/unit/fake_ring.h"
#include "tests/unit/runner.h"
#include "workers/internal.h"

#define H2T_STREAMS 8
#define H2T_ROUNDS  64 /* loop turns one pump may take */
#define H2T_MSG     8192

struct h2t_stream {
    int32_t id;
    uint8_t *req; /* owned: the request body (gRPC messages) */
    size_t req_len, req_off;
    bool end_stream;
    int http_status; /* -1 until :status */
    int grpc_status; /* -1 until grpc-status */
    int rst;         /* RST_STREAM error code received, -1 none */
    int nmeta;       /* response headers and trailers named x-m-* */
    size_t data;     /* DATA payload bytes received */
    bool closed;
};

/* What handlers saw; reached from a call through rs_call_service_ctx(). */
struct h2t_handlers {
    int nmessages;
    int ndone;
    enum rs_grpc_status done_status;
    int send_ret;     /* last failing rs_call_send() result, 0 if none */
    int nsent;        /* messages queued by Flood */
    int meta_refused; /* rs_call_add_metadata() errors in Meta */
};

struct h2t {
    struct rs_server *srv;
    struct rs_worker *w;
    struct rs_service svc;
    struct h2t_handlers hs;
    uint32_t slot;
    nghttp2_session *cli;
    struct h2t_stream st[H2T_STREAMS];
    int nst;
    int goaway; /* GOAWAY error code received, -1 none */
    bool hold_sends;
};

/* ---- handlers ---------------------------------------------------------------------------- */

static struct h2t_handlers *hs_of(struct rs_call *call)
{
    return rs_call_service_ctx(call);
}

static void on_done_count(struct rs_call *call, enum rs_grpc_status status)
{
    hs_of(call)->ndone++;
    hs_of(call)->done_status = status;
}

/* Hold: keeps every message (never consumes). */
static void hold_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    hs_of(call)->nmessages++;
}

/* Echo: sends each message back; OK at half-close. */
static void echo_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
    int ret;

    hs_of(call)->nmessages++;
    ret = rs_call_send(call, &iov, 1);
    rs_call_consume(call);
    if (ret < 0) {
        hs_of(call)->send_ret = ret;
        rs_call_finish(call, RS_GRPC_RESOURCE_EXHAUSTED, "send failed");
    }
}

static void consume_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    hs_of(call)->nmessages++;
    rs_call_consume(call);
}

static void finish_ok(struct rs_call *call)
{
    rs_call_finish(call, RS_GRPC_OK, NULL);
}

/* Flood: queues messages until the send queue is full. */
static void flood_start(struct rs_call *call)
{
    static const uint8_t zero[H2T_MSG];
    struct iovec iov = { .iov_base = (void *)zero, .iov_len = sizeof(zero) };
    int i;

    for (i = 0; i < 1024; i++) {
        int ret = rs_call_send(call, &iov, 1);

        if (ret < 0) {
            hs_of(call)->send_ret = ret;
            break;
        }
        hs_of(call)->nsent++;
    }
}

/* Meta: 40 response metadata entries, one message, OK. */
static void meta_start(struct rs_call *call)
{
    static const uint8_t one[1] = { 1 };
    struct iovec iov = { .iov_base = (void *)one, .iov_len = 1 };
    char name[16];
    int i;

    for (i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "x-m-%d", i);
        if (rs_call_add_metadata(call, name, "v", 1) < 0)
            hs_of(call)->meta_refused++;
    }
    rs_call_send(call, &iov, 1);
    rs_call_finish(call, RS_GRPC_OK, NULL);
}

/* Big: a small message, then one far larger than the worker's (tiny) pool. */
static void big_start(struct rs_call *call)
{
    static const uint8_t small[100];
    struct iovec iov = { .iov_base = (void *)small, .iov_len = sizeof(small) };
    uint8_t *big = calloc(1, 512 * 1024);
    int ret;

    ret = rs_call_send(call, &iov, 1);
    if (ret == 0 && big != NULL) {
        iov.iov_base = big;
        iov.iov_len = 512 * 1024;
        ret = rs_call_send(call, &iov, 1);
    }
    free(big);
    hs_of(call)->send_ret = ret;
    if (ret == -ENOMEM)
        rs_call_finish(call, RS_GRPC_RESOURCE_EXHAUSTED, "server out of buffer memory");
}

/* Count: adds 5 to its service's counter 1, tries counter 2 (past nstats: ignored), OK. */
static void count_start(struct rs_call *call)
{
    rs_call_stat_add(call, 1, 5);
    rs_call_stat_add(call, 2, 1);
    rs_call_finish(call, RS_GRPC_OK, NULL);
}

#define H2T_NSTATS    2
#define H2T_COUNT_ROW 5 /* Count's index in h2t_methods */

/* The service's series: its two counters and Count's OK calls, as worker 0 has them. */
static void h2t_render(FILE *f, const struct rs_stats_view *v)
{
    fprintf(f, "t_stat{i=\"0\"} %llu\nt_stat{i=\"1\"} %llu\nt_count_ok %llu\n",
            (unsigned long long)rs_stat_load(&v->stats[0][0]),
            (unsigned long long)rs_stat_load(&v->stats[0][1]),
            (unsigned long long)rs_stat_load(
                    &v->calls[0][H2T_COUNT_ROW * RS_STATS_CODES + RS_GRPC_OK]));
}

static const struct rs_method h2t_methods[] = {
    { .path = "/t.T/Hold", .on_message = hold_message, .on_done = on_done_count },
    { .path = "/t.T/Echo",
      .on_message = echo_message,
      .on_half_close = finish_ok,
      .on_done = on_done_count },
    { .path = "/t.T/Flood",
      .on_start = flood_start,
      .on_message = consume_message,
      .on_done = on_done_count },
    { .path = "/t.T/Meta",
      .on_start = meta_start,
      .on_message = consume_message,
      .on_done = on_done_count },
    { .path = "/t.T/Big",
      .on_start = big_start,
      .on_message = consume_message,
      .on_done = on_done_count },
    { .path = "/t.T/Count",
      .on_start = count_start,
      .on_message = consume_message,
      .on_done = on_done_count },
};
_Static_assert(H2T_COUNT_ROW == sizeof(h2t_methods) / sizeof(h2t_methods[0]) - 1,
               "Count is the last method");

/* ---- the client session ---------------------------------------------------------------- */

static struct h2t_stream *cli_stream(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static int cli_on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    struct h2t_stream *st = cli_stream(s, frame->hd.stream_id);
    char v[16];

    if (st == NULL)
        return 0;
    snprintf(v, sizeof(v), "%.*s", (int)(valuelen < 15 ? valuelen : 15), (const char *)value);
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        st->http_status = atoi(v);
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        st->grpc_status = atoi(v);
    else if (namelen > 4 && memcmp(name, "x-m-", 4) == 0)
        st->nmeta++;
    return 0;
}

static int cli_on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct h2t *t = ud;
    struct h2t_stream *st;

    if (frame->hd.type == NGHTTP2_GOAWAY)
        t->goaway = (int)frame->goaway.error_code;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        st = cli_stream(s, frame->hd.stream_id);
        if (st != NULL)
            st->rst = (int)frame->rst_stream.error_code;
    }
    return 0;
}

static int cli_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                       size_t len, void *ud)
{
    struct h2t_stream *st = cli_stream(s, id);

    if (st != NULL)
        st->data += len;
    return 0;
}

static int cli_on_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud)
{
    struct h2t_stream *st = cli_stream(s, id);

    if (st != NULL)
        st->closed = true;
    return 0;
}

static ssize_t cli_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    struct h2t_stream *st = src->ptr;
    size_t n = st->req_len - st->req_off;

    if (n > len)
        n = len;
    memcpy(buf, st->req + st->req_off, n);
    st->req_off += n;
    if (st->req_off == st->req_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!st->end_stream)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

/* ---- the fake kernel: moves bytes between the two sessions ------------------------------ */

static struct rs_conn *conn_of_test(struct h2t *t)
{
    return t->w->conns[t->slot];
}

/* Client bytes into the server: recv completions with provided buffers. */
static void deliver(struct h2t *t, const uint8_t *data, size_t len)
{
    struct rs_ring *r = &t->w->ring;
    struct rs_conn *c = conn_of_test(t);
    long op = rs_fake_ring_find(r, RS_FAKE_RECV, 0);
    int guard = 0;

    if (c == NULL || (c->flags & RS_CONN_F_CLOSING) || op < 0)
        return; /* the socket is gone: the bytes are lost */
    while (len > 0 && guard++ < 4096) {
        size_t n = len < r->bufsize ? len : r->bufsize;
        int bid = rs_fake_ring_buf_fill(r, data, n);

        if (bid < 0) { /* every buffer is with the server: let it parse */
            rs_worker_turn(t->w);
            continue;
        }
        rs_fake_ring_post(r, rs_fake_ring_op(r, (size_t)op)->user_data, (int32_t)n,
                          RS_RING_F_MORE | RS_RING_F_BUFFER, (unsigned)bid);
        data += n;
        len -= n;
    }
}

/* One step of everything outside the worker. Returns true when something moved. */
static bool kernel_step(struct h2t *t)
{
    struct rs_ring *r = &t->w->ring;
    struct rs_conn *c = conn_of_test(t);
    bool moved = false;
    const uint8_t *data;
    ssize_t n;
    long i;

    while ((n = nghttp2_session_mem_send(t->cli, &data)) > 0) {
        deliver(t, data, (size_t)n);
        moved = true;
    }
    for (i = rs_fake_ring_find(r, RS_FAKE_SENDMSG, 0); i >= 0 && !t->hold_sends;
         i = rs_fake_ring_find(r, RS_FAKE_SENDMSG, (size_t)i + 1)) {
        struct rs_fake_op *op = rs_fake_ring_op(r, (size_t)i);
        size_t k, total = rs_fake_ring_op_bytes(op);

        for (k = 0; k < op->iovcnt; k++)
            nghttp2_session_mem_recv(t->cli, op->iov[k].iov_base, op->iov[k].iov_len);
        rs_fake_ring_complete(r, (size_t)i, (int32_t)total, 0);
        moved = true;
    }
    /* Zero-copy: the result (with MORE), then the notification that the pages are free. */
    for (i = rs_fake_ring_find(r, RS_FAKE_SENDMSG_ZC, 0); i >= 0 && !t->hold_sends;
         i = rs_fake_ring_find(r, RS_FAKE_SENDMSG_ZC, (size_t)i + 1)) {
        struct rs_fake_op *op = rs_fake_ring_op(r, (size_t)i);
        size_t k, total = rs_fake_ring_op_bytes(op);

        for (k = 0; k < op->iovcnt; k++)
            nghttp2_session_mem_recv(t->cli, op->iov[k].iov_base, op->iov[k].iov_len);
        rs_fake_ring_complete(r, (size_t)i, (int32_t)total, RS_RING_F_MORE);
        rs_fake_ring_complete(r, (size_t)i, 0, RS_RING_F_NOTIF);
        moved = true;
    }
    /* rs_conn_close() shut the socket down: the armed recv ends. */
    if (c != NULL && (c->flags & RS_CONN_F_CLOSING)) {
        i = rs_fake_ring_find(r, RS_FAKE_RECV, 0);
        if (i >= 0) {
            rs_fake_ring_complete(r, (size_t)i, 0, 0);
            moved = true;
        }
    }
    if (rs_fake_ring_run_cancels(r) > 0)
        moved = true;
    return moved || rs_fake_ring_posted(r) > 0;
}

static void pump(struct h2t *t)
{
    int round;

    for (round = 0; round < H2T_ROUNDS; round++) {
        bool moved = kernel_step(t);

        rs_worker_turn(t->w);
        /* done when nothing moved and the turn left nothing to deliver (a flush it made is a
         * sendmsg the next step carries to the client, unless the test holds sends) */
        if (!moved && rs_fake_ring_posted(&t->w->ring) == 0 && rs_list_empty(&t->w->pending) &&
            !nghttp2_session_want_write(t->cli) &&
            (t->hold_sends || rs_fake_ring_pending(&t->w->ring, RS_FAKE_SENDMSG) == 0))
            break;
    }
}

/* Completes every pending timer of |op| (RS_OP_TIMERS: the call timers' one ring timeout;
 * RS_OP_TIMER: the drain) as expired. Returns how many. Call timers live in a heap keyed by
 * the monotonic clock, so a test first lets their real time pass (call_timers_due). */
static int fire_timers(struct h2t *t, unsigned which)
{
    struct rs_ring *r = &t->w->ring;
    long i;
    int n = 0;

    for (i = rs_fake_ring_find(r, RS_FAKE_TIMEOUT, 0); i >= 0;
         i = rs_fake_ring_find(r, RS_FAKE_TIMEOUT, (size_t)i + 1)) {
        if (rs_ud_op(rs_fake_ring_op(r, (size_t)i)->user_data) == which) {
            rs_fake_ring_complete(r, (size_t)i, -ETIME, 0);
            n++;
        }
    }
    return n;
}

/* Lets |ms| of real time pass, then fires the call timers' ring timeout. */
static int call_timers_due(struct h2t *t, unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
    return fire_timers(t, RS_OP_TIMERS);
}

static size_t pending_ud_op(struct h2t *t, enum rs_fake_kind kind, unsigned which)
{
    struct rs_ring *r = &t->w->ring;
    size_t n = 0;
    long i;

    for (i = rs_fake_ring_find(r, kind, 0); i >= 0; i = rs_fake_ring_find(r, kind, (size_t)i + 1))
        if (rs_ud_op(rs_fake_ring_op(r, (size_t)i)->user_data) == which)
            n++;
    return n;
}

/* ---- fixture ------------------------------------------------------------------------------ */

struct h2t_opts {
    size_t pool_bytes;      /* 0: default */
    size_t zc_threshold;    /* send_zc_threshold; 0: off */
    uint32_t client_window; /* client's SETTINGS_INITIAL_WINDOW_SIZE; 0 means 0 if set */
    bool set_client_window;
    enum rs_fake_kind fail_kind; /* submissions failing during rs_worker_init() */
    unsigned fail_n;
    bool listen;  /* give the worker a dummy listening descriptor */
    bool no_conn; /* no connection: the worker alone */
};

static int h2t_init(struct h2t *t, const struct h2t_opts *o)
{
    nghttp2_session_callbacks *cbs;
    struct rs_config cfg;
    char err[256];
    int fd;

    memset(t, 0, sizeof(*t));
    t->goaway = -1;
    rs_config_defaults(&cfg);
    cfg.nlisten = 0;
    cfg.workers = 1;
    cfg.max_conns = 4;
    if (o->pool_bytes > 0)
        cfg.pool_bytes = o->pool_bytes;
    cfg.send_zc_threshold = o->zc_threshold;
    t->srv = rs_server_new(&cfg, err, sizeof(err));
    if (t->srv == NULL)
        return -1;
    t->svc.name = "t.T";
    t->svc.methods = h2t_methods;
    t->svc.nmethods = sizeof(h2t_methods) / sizeof(h2t_methods[0]);
    t->svc.ctx = &t->hs;
    t->svc.nstats = H2T_NSTATS;
    t->svc.render_stats = h2t_render;
    rs_server_add_service(t->srv, &t->svc);
    if (rs_server_layout(t->srv) < 0)
        return -1;
    t->w = &t->srv->workers[0];
    if (o->listen)
        t->w->listen_fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (o->fail_n > 0) {
        /* Armed on the ring before rs_worker_init() so its own submissions fail. */
        if (rs_fake_ring_prepare(&t->w->ring) < 0)
            return -1;
        rs_fake_ring_fail_next(&t->w->ring, o->fail_kind, o->fail_n);
    }
    if (rs_worker_init(t->w, err, sizeof(err)) < 0)
        return -1;
    if (o->no_conn)
        return 0;
    fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    /* The connection comes in through the accept path, as from a listening socket. */
    rs_fake_ring_post(&t->w->ring, rs_ud_make(RS_OP_ACCEPT, 0, 0), fd, RS_RING_F_MORE, 0);
    rs_worker_turn(t->w);
    t->slot = 1;
    if (conn_of_test(t) == NULL)
        return -1;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_header_callback(cbs, cli_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, cli_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cli_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cli_on_close);
    if (nghttp2_session_client_new(&t->cli, cbs, t) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return -1;
    }
    nghttp2_session_callbacks_del(cbs);
    if (o->set_client_window) {
        nghttp2_settings_entry iv = { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->client_window };

        nghttp2_submit_settings(t->cli, NGHTTP2_FLAG_NONE, &iv, 1);
    } else {
        nghttp2_submit_settings(t->cli, NGHTTP2_FLAG_NONE, NULL, 0);
    }
    pump(t);
    return 0;
}

/* Opens a gRPC call on |path| with |nmsg| messages of |len| bytes. Returns the stream. */
static struct h2t_stream *h2t_call(struct h2t *t, const char *path, int nmsg, size_t len,
                                   bool end_stream, const char *timeout)
{
    struct h2t_stream *st = &t->st[t->nst++];
    nghttp2_data_provider prd = { .source.ptr = st, .read_callback = cli_read };
    nghttp2_nv nv[7];
    size_t nnv = 0;
    int i;

#define NV(n, v)                                                                    \
    nv[nnv++] = (nghttp2_nv){ (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), \
                              NGHTTP2_NV_FLAG_NONE }
    NV(":method", "POST");
    NV(":scheme", "http");
    NV(":path", path);
    NV(":authority", "t");
    NV("content-type", "application/grpc");
    NV("te", "trailers");
    if (timeout != NULL)
        NV("grpc-timeout", timeout);
#undef NV
    st->http_status = st->grpc_status = st->rst = -1;
    st->end_stream = end_stream;
    st->req_len = (size_t)nmsg * (5 + len);
    st->req = calloc(1, st->req_len + 1);
    for (i = 0; i < nmsg && st->req != NULL; i++) {
        uint8_t *p = st->req + (size_t)i * (5 + len);

        p[1] = (uint8_t)(len >> 24);
        p[2] = (uint8_t)(len >> 16);
        p[3] = (uint8_t)(len >> 8);
        p[4] = (uint8_t)len;
        memset(p + 5, 'a' + i % 26, len);
    }
    st->id = nghttp2_submit_request(t->cli, NULL, nv, nnv, &prd, st);
    return st;
}

static unsigned ioreqs_in_use(struct rs_worker *w)
{
    unsigned i, n = 0;

    for (i = 1; i < w->nioreqs; i++)
        if (w->ioreqs[i].call != NULL)
            n++;
    return n;
}

/* Closes the connection (if still open), lets every completion come back and checks that
 * everything was released; then tears the worker down. */
static void h2t_fini(struct h2t *t)
{
    struct rs_conn *c;
    bool leaked;
    int i;

    if (t->srv == NULL)
        return;
    c = t->slot != 0 ? conn_of_test(t) : NULL;
    if (c != NULL) {
        t->hold_sends = false;
        rs_conn_close(c);
        pump(t);
    }
    if (t->slot != 0)
        CU_ASSERT_PTR_NULL(conn_of_test(t));
    CU_ASSERT_EQUAL(t->w->pool.nlive - t->w->pool.ncached, 0);
    CU_ASSERT_EQUAL(ioreqs_in_use(t->w), 0);
    CU_ASSERT_EQUAL(rs_fake_ring_bufs_in_use(&t->w->ring), 0);
    leaked = (t->slot != 0 && conn_of_test(t) != NULL) || t->w->pool.nlive != t->w->pool.ncached;
    nghttp2_session_del(t->cli);
    for (i = 0; i < t->nst; i++)
        free(t->st[i].req);
    if (leaked)
        return; /* tearing down would trip the pool's assertion: leave it to the leak report */
    rs_worker_fini(t->w);
    rs_server_destroy(t->srv);
}

/* ---- cases -------------------------------------------------------------------------------- */

static void test_echo_roundtrip(void)
{
    struct h2t t;
    struct h2t_stream *st;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    st = h2t_call(&t, "/t.T/Echo", 2, 100, true, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(st->http_status, 200);
    CU_ASSERT_EQUAL(st->grpc_status, RS_GRPC_OK);
    CU_ASSERT_EQUAL(st->data, 2 * 105);
    CU_ASSERT_EQUAL(t.hs.ndone, 1);
    CU_ASSERT_EQUAL(t.hs.done_status, RS_GRPC_OK);
    CU_ASSERT(rs_list_empty(&conn_of_test(&t)->calls));
    h2t_fini(&t);
}

static void test_reset_while_held(void)
{
    struct h2t t;
    struct h2t_stream *st;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    st = h2t_call(&t, "/t.T/Hold", 1, 1000, false, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(t.hs.nmessages, 1);
    CU_ASSERT_EQUAL(t.hs.ndone, 0);
    nghttp2_submit_rst_stream(t.cli, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    pump(&t);
    CU_ASSERT_EQUAL(t.hs.ndone, 1);
    CU_ASSERT_EQUAL(t.hs.done_status, RS_GRPC_CANCELLED);
    CU_ASSERT(rs_list_empty(&conn_of_test(&t)->calls));
    h2t_fini(&t);
    CU_ASSERT_EQUAL(t.hs.ndone, 1); /* once, also after the connection closed */
}

static void test_deadline_with_data_queued(void)
{
    struct h2t t;
    struct h2t_stream *st;

    /* The client's stream window is 0: nothing the handler queues can leave. */
    CU_ASSERT_EQUAL_FATAL(
            h2t_init(&t, &(struct h2t_opts){ .set_client_window = true, .client_window = 0 }), 0);
    st = h2t_call(&t, "/t.T/Flood", 1, 10, true, "100m");
    pump(&t);
    CU_ASSERT(t.hs.nsent > 0);
    CU_ASSERT_EQUAL(t.hs.send_ret, -EAGAIN);
    CU_ASSERT_EQUAL(st->data, 0);
    CU_ASSERT(call_timers_due(&t, 150) >= 1); /* the deadline (100 ms) */
    pump(&t);
    /* The trailers wait behind data the client does not read: a grace timer resets the stream
     * (none if the stream was reset at once). */
    call_timers_due(&t, 250);
    pump(&t);
    CU_ASSERT(st->closed);
    CU_ASSERT(st->grpc_status == RS_GRPC_DEADLINE_EXCEEDED || st->rst == NGHTTP2_CANCEL);
    CU_ASSERT_EQUAL(t.hs.ndone, 1);
    CU_ASSERT_EQUAL(t.hs.done_status, RS_GRPC_DEADLINE_EXCEEDED);
    CU_ASSERT(rs_list_empty(&conn_of_test(&t)->calls));
    CU_ASSERT_EQUAL(t.w->pool.nlive - t.w->pool.ncached, 0);
    h2t_fini(&t);
}

/* Finding 5: the first sendmsg of a flush cannot be submitted. */
static void test_submit_failure(void)
{
    struct h2t t;
    struct h2t_stream *st;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    st = h2t_call(&t, "/t.T/Echo", 1, 1000, true, NULL);
    /* Deliver the request, then fail the response's flush (it references a DATA frame). */
    rs_fake_ring_fail_next(&t.w->ring, RS_FAKE_SENDMSG, 1);
    pump(&t);
    CU_ASSERT_EQUAL(rs_fake_ring_failed(&t.w->ring), 1);
    CU_ASSERT_EQUAL(t.hs.nmessages, 1);
    CU_ASSERT_EQUAL(st->grpc_status, -1); /* nothing reached the client */
    /* The connection closed on the failure; its call and the conn itself must be freed. */
    CU_ASSERT_PTR_NULL(conn_of_test(&t));
    CU_ASSERT_EQUAL(t.hs.ndone, 1);
    CU_ASSERT_EQUAL(t.w->pool.nlive - t.w->pool.ncached, 0);
    h2t_fini(&t);
}

/* Finding 5 on the zero-copy path: the first SENDMSG_ZC of a flush cannot be submitted. */
static void test_submit_failure_zc(void)
{
    struct h2t t;
    struct h2t_stream *st;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ .zc_threshold = 1 }), 0);
    st = h2t_call(&t, "/t.T/Echo", 1, 1000, true, NULL);
    rs_fake_ring_fail_next(&t.w->ring, RS_FAKE_SENDMSG_ZC, 1);
    pump(&t);
    CU_ASSERT_EQUAL(rs_fake_ring_failed(&t.w->ring), 1);
    CU_ASSERT_EQUAL(st->grpc_status, -1);
    CU_ASSERT_PTR_NULL(conn_of_test(&t));
    CU_ASSERT_EQUAL(t.hs.ndone, 1);
    CU_ASSERT_EQUAL(t.w->pool.nlive - t.w->pool.ncached, 0);
    h2t_fini(&t);
}

/* A short send, then its retry cannot be submitted: the references still go back. */
static void test_short_send_then_failure(void)
{
    struct h2t t;
    long i;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    h2t_call(&t, "/t.T/Echo", 1, 1000, true, NULL);
    t.hold_sends = true;
    pump(&t);
    i = rs_fake_ring_find(&t.w->ring, RS_FAKE_SENDMSG, 0);
    CU_ASSERT_FATAL(i >= 0);
    rs_fake_ring_fail_next(&t.w->ring, RS_FAKE_SENDMSG, 1);
    rs_fake_ring_complete(
            &t.w->ring, (size_t)i,
            (int32_t)(rs_fake_ring_op_bytes(rs_fake_ring_op(&t.w->ring, (size_t)i)) / 2), 0);
    rs_worker_turn(t.w);
    CU_ASSERT_EQUAL(rs_fake_ring_failed(&t.w->ring), 1);
    t.hold_sends = false;
    pump(&t);
    CU_ASSERT_PTR_NULL(conn_of_test(&t));
    CU_ASSERT_EQUAL(t.hs.ndone, 1);
    CU_ASSERT_EQUAL(t.w->pool.nlive - t.w->pool.ncached, 0);
    h2t_fini(&t);
}

/* Finding 1a, with a sendmsg in flight when the bad HEADERS arrive. */
static void test_protocol_error_send_in_flight(void)
{
    /* HEADERS on stream 1, END_HEADERS | END_STREAM; HPACK: :method GET, :scheme http, :path /
     * (static table entries only, so both HPACK contexts stay in step). */
    static const uint8_t headers1[] = {
        0, 0, 3, NGHTTP2_HEADERS, 0x5, 0, 0, 0, 1, 0x82, 0x86, 0x84
    };
    struct h2t t;
    struct h2t_stream *st;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    CU_ASSERT_EQUAL_FATAL(nghttp2_session_set_next_stream_id(t.cli, 3), 0);
    st = h2t_call(&t, "/t.T/Echo", 1, 100, false, NULL);
    t.hold_sends = true; /* the response to stream 3 stays in flight */
    pump(&t);
    CU_ASSERT_EQUAL(st->id, 3);
    CU_ASSERT_EQUAL(t.hs.nmessages, 1);
    CU_ASSERT(rs_fake_ring_pending(&t.w->ring, RS_FAKE_SENDMSG) > 0);
    deliver(&t, headers1, sizeof(headers1));
    rs_worker_turn(t.w);
    t.hold_sends = false;
    pump(&t);
    CU_ASSERT_EQUAL(t.goaway, NGHTTP2_PROTOCOL_ERROR);
    h2t_fini(&t);
}

/* Finding 7: 40 response metadata entries all arrive, or rs_call_add_metadata says no. */
static void test_metadata_count(void)
{
    struct h2t t;
    struct h2t_stream *st;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    st = h2t_call(&t, "/t.T/Meta", 0, 0, true, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(st->grpc_status, RS_GRPC_OK);
    CU_ASSERT_EQUAL(st->nmeta + t.hs.meta_refused, 40);
    h2t_fini(&t);
}

/* A service's own counters: per worker, bounded by its nstats, rendered by its callback with
 * the calls the core counted for its methods. */
static void test_service_counters(void)
{
    struct h2t t;
    struct h2t_stream *a, *b;
    size_t len = 0;
    char *text;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    a = h2t_call(&t, "/t.T/Count", 0, 0, true, NULL);
    b = h2t_call(&t, "/t.T/Count", 0, 0, true, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(a->grpc_status, RS_GRPC_OK);
    CU_ASSERT_EQUAL(b->grpc_status, RS_GRPC_OK);
    text = rs_metrics_render(t.srv, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "t_stat{i=\"0\"} 0\nt_stat{i=\"1\"} 10\nt_count_ok 2\n"));
    if (strstr(text, "t_count_ok 2\n") == NULL)
        fprintf(stderr, "rendered:\n%s\n", text);
    free(text);
    h2t_fini(&t);
}

static void test_exhausted_pool(void)
{
    struct h2t t;
    struct h2t_stream *a, *b;

    /* A pool of 3 blocks (pool_bytes / block + 1). */
    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ .pool_bytes = 2 * RS_POOL_BLOCK }), 0);
    a = h2t_call(&t, "/t.T/Big", 0, 0, true, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(t.hs.send_ret, -ENOMEM);
    CU_ASSERT(a->closed);
    CU_ASSERT(a->grpc_status == RS_GRPC_RESOURCE_EXHAUSTED || a->rst >= 0);
    CU_ASSERT_NOT_EQUAL(a->grpc_status, RS_GRPC_OK);
    CU_ASSERT_EQUAL(t.hs.ndone, 1);
    CU_ASSERT_EQUAL(t.w->pool.nlive - t.w->pool.ncached, 0);
    t.hs.send_ret = 0;
    b = h2t_call(&t, "/t.T/Echo", 1, 1000, true, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(b->grpc_status, RS_GRPC_OK);
    CU_ASSERT_EQUAL(b->data, 1005);
    CU_ASSERT_EQUAL(t.hs.send_ret, 0);
    CU_ASSERT_EQUAL(t.hs.ndone, 2);
    h2t_fini(&t);
}

/* ---- finding 6: the worker's own submissions --------------------------------------------- */

static int init_failing(struct h2t *t, enum rs_fake_kind kind, unsigned n, bool listen)
{
    return h2t_init(t, &(struct h2t_opts){
                               .fail_kind = kind, .fail_n = n, .listen = listen, .no_conn = true });
}

static void test_tick_rearmed(void)
{
    struct h2t t;

    CU_ASSERT_EQUAL_FATAL(init_failing(&t, RS_FAKE_TIMEOUT, 1, false), 0);
    CU_ASSERT_EQUAL(rs_fake_ring_failed(&t.w->ring), 1);
    CU_ASSERT_EQUAL(pending_ud_op(&t, RS_FAKE_TIMEOUT, RS_OP_TICK), 0);
    rs_worker_turn(t.w);
    CU_ASSERT_EQUAL(pending_ud_op(&t, RS_FAKE_TIMEOUT, RS_OP_TICK), 1);
    /* The tick fires and its re-arm fails: a later turn arms it again. */
    rs_fake_ring_fail_next(&t.w->ring, RS_FAKE_TIMEOUT, 1);
    fire_timers(&t, RS_OP_TICK);
    rs_worker_turn(t.w);
    CU_ASSERT_EQUAL(rs_fake_ring_failed(&t.w->ring), 2);
    rs_worker_turn(t.w);
    CU_ASSERT_EQUAL(pending_ud_op(&t, RS_FAKE_TIMEOUT, RS_OP_TICK), 1);
    h2t_fini(&t);
}

static void test_wake_and_accept_rearmed(void)
{
    struct h2t t;

    CU_ASSERT_EQUAL_FATAL(init_failing(&t, RS_FAKE_ANY, 3, true), 0);
    CU_ASSERT_EQUAL(rs_fake_ring_failed(&t.w->ring), 3);
    CU_ASSERT_EQUAL(rs_fake_ring_pending(&t.w->ring, RS_FAKE_ANY), 0);
    rs_worker_turn(t.w);
    CU_ASSERT_EQUAL(rs_fake_ring_pending(&t.w->ring, RS_FAKE_ACCEPT), 1);
    CU_ASSERT_EQUAL(pending_ud_op(&t, RS_FAKE_READ, RS_OP_WAKE), 1);
    CU_ASSERT_EQUAL(pending_ud_op(&t, RS_FAKE_TIMEOUT, RS_OP_TICK), 1);
    h2t_fini(&t);
}

static void test_drain_timer_rearmed(void)
{
    struct h2t t;
    long i;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ .listen = true }), 0);
    h2t_call(&t, "/t.T/Hold", 1, 10, false, NULL); /* a call that never ends by itself */
    pump(&t);
    CU_ASSERT_EQUAL(t.hs.nmessages, 1);
    /* The drain starts; its timeout and the accept's cancel cannot be submitted. */
    rs_fake_ring_fail_next(&t.w->ring, RS_FAKE_ANY, 2);
    i = rs_fake_ring_find(&t.w->ring, RS_FAKE_READ, 0);
    CU_ASSERT_FATAL(i >= 0);
    rs_fake_ring_complete(&t.w->ring, (size_t)i, 8, 0);
    pump(&t);
    CU_ASSERT(rs_fake_ring_failed(&t.w->ring) >= 2);
    CU_ASSERT(t.w->flags & RS_WORKER_F_DRAINING);
    CU_ASSERT_EQUAL(pending_ud_op(&t, RS_FAKE_TIMEOUT, RS_OP_TIMER), 1);
    CU_ASSERT_EQUAL(rs_fake_ring_pending(&t.w->ring, RS_FAKE_ACCEPT), 0); /* cancelled */
    CU_ASSERT_EQUAL(t.goaway, NGHTTP2_NO_ERROR);
    /* The drain deadline passes: the held call is cut off, everything is freed. */
    fire_timers(&t, RS_OP_TIMER);
    pump(&t);
    CU_ASSERT(rs_worker_idle(t.w));
    CU_ASSERT_EQUAL(t.hs.ndone, 1);
    h2t_fini(&t);
}

/* The call timers share one ring timeout; when its submission fails it is armed again at the
 * end of the loop turn, and a reset call's timer still ends (with -ECANCELED) and frees it. */
static void test_timer_rearmed(void)
{
    struct h2t t;
    struct h2t_stream *st;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    rs_fake_ring_fail_next(&t.w->ring, RS_FAKE_TIMEOUT, 1);
    st = h2t_call(&t, "/t.T/Hold", 1, 10, false, "1H"); /* a deadline timer */
    pump(&t);
    CU_ASSERT_EQUAL(rs_fake_ring_failed(&t.w->ring), 1);
    CU_ASSERT(pending_ud_op(&t, RS_FAKE_TIMEOUT, RS_OP_TIMERS) >= 1); /* armed again */
    CU_ASSERT_EQUAL(ioreqs_in_use(t.w), 0);                           /* timers hold no I/O slot */
    nghttp2_submit_rst_stream(t.cli, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    pump(&t);
    CU_ASSERT_EQUAL(t.hs.ndone, 1);
    /* The cancelled timer's callback runs from the next timer completion, then the call goes. */
    fire_timers(&t, RS_OP_TIMERS);
    pump(&t);
    CU_ASSERT(rs_list_empty(&conn_of_test(&t)->calls));
    h2t_fini(&t);
}

/* Issue 15's degradation order as the worker's memory budget fills: smaller stream windows
 * (SETTINGS_INITIAL_WINDOW_SIZE), then REFUSED_STREAM for new streams; back to full windows
 * and served streams once it empties. The budget is filled by hand (|used| stands for what
 * other connections hold). */
static void test_budget_degrades_in_order(void)
{
    struct h2t t;
    struct h2t_stream *st;
    struct rs_budget *b;
    uint32_t full, win;
    size_t used0;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    pump(&t);
    b = &t.w->budget;
    used0 = b->used;
    full = nghttp2_session_get_remote_settings(t.cli, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
    CU_ASSERT_EQUAL(full, t.srv->cfg.stream_buffer);
    /* 5/8 of the budget: windows shrink, streams are still served */
    b->used = b->limit / 2 + b->limit / 8;
    rs_conn_tick(conn_of_test(&t), rs_now_ms());
    pump(&t);
    win = nghttp2_session_get_remote_settings(t.cli, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
    CU_ASSERT(win < full);
    CU_ASSERT(win >= 64 * 1024);
    st = h2t_call(&t, "/t.T/Echo", 2, 100, true, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(st->grpc_status, RS_GRPC_OK);
    /* 3/4: a light connection (a bystander holding at most an eighth of its share) still
     * gets streams; a heavy one gets REFUSED_STREAM, which gRPC clients retry */
    b->used = b->limit - 2 * (b->limit / 8);
    st = h2t_call(&t, "/t.T/Echo", 1, 100, true, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(st->grpc_status, RS_GRPC_OK);
    conn_of_test(&t)->acct.used += b->share / 4; /* stands for what its other streams hold */
    st = h2t_call(&t, "/t.T/Echo", 1, 100, true, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(st->rst, NGHTTP2_REFUSED_STREAM);
    CU_ASSERT(b->refused[RS_BUDGET_R_STREAM] >= 1);
    conn_of_test(&t)->acct.used -= b->share / 4;
    /* emptied: full windows again, streams served */
    b->used = used0;
    rs_conn_tick(conn_of_test(&t), rs_now_ms());
    pump(&t);
    CU_ASSERT_EQUAL(
            nghttp2_session_get_remote_settings(t.cli, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE), full);
    st = h2t_call(&t, "/t.T/Echo", 2, 100, true, NULL);
    pump(&t);
    CU_ASSERT_EQUAL(st->grpc_status, RS_GRPC_OK);
    CU_ASSERT_EQUAL(b->used, used0);
    h2t_fini(&t);
}

/* A connection's streams are charged to it: all of it comes back when they end. */
static void test_budget_charges_return(void)
{
    struct h2t t;
    struct h2t_stream *st;
    size_t before;

    CU_ASSERT_EQUAL_FATAL(h2t_init(&t, &(struct h2t_opts){ 0 }), 0);
    pump(&t);
    before = conn_of_test(&t)->acct.used;
    CU_ASSERT(before > 0); /* the connection's own buffers */
    st = h2t_call(&t, "/t.T/Hold", 1, 100000, false, NULL);
    pump(&t);
    CU_ASSERT(conn_of_test(&t)->acct.used > before); /* the call and its held message */
    nghttp2_submit_rst_stream(t.cli, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    pump(&t);
    CU_ASSERT(rs_list_empty(&conn_of_test(&t)->calls));
    CU_ASSERT_EQUAL(conn_of_test(&t)->acct.used, before);
    h2t_fini(&t);
}

int main(void)
{
    CU_TestInfo lifecycle[] = {
        { "echo round trip (the harness itself)", test_echo_roundtrip },
        { "reset while a message is held", test_reset_while_held },
        { "deadline with data queued", test_deadline_with_data_queued },
        { "exhausted pool, then a second stream", test_exhausted_pool },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo send_path[] = {
        { "first sendmsg of a flush cannot be submitted (finding 5)", test_submit_failure },
        { "first zero-copy sendmsg cannot be submitted (finding 5)", test_submit_failure_zc },
        { "short send, then the retry cannot be submitted", test_short_send_then_failure },
        CU_TEST_INFO_NULL,
    };
    CU_TestInfo worker_ring[] = {
        { "tick re-armed after a failed submission", test_tick_rearmed },
        { "wake-up and accept re-armed", test_wake_and_accept_rearmed },
        { "drain timeout re-armed, the drain ends", test_drain_timer_rearmed },
        { "call timers re-armed after a failed submission", test_timer_rearmed },
        { "budget: smaller windows, then refused streams, then back",
          test_budget_degrades_in_order },
        { "budget: a connection's charges come back when its streams end",
          test_budget_charges_return },
        CU_TEST_INFO_NULL,
    };
    /* These need the core branch's fixes (findings 1a and 7); they fail before its merge. */
    CU_TestInfo after_core[] = {
        { "HEADERS on an unused lower stream: GOAWAY (finding 1a)",
          test_protocol_error_send_in_flight },
        { "40 response metadata entries (finding 7)", test_metadata_count },
        { "a service's own counters, rendered with its calls", test_service_counters },
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        { "h2conn lifecycle", NULL, NULL, NULL, NULL, lifecycle },
        { "h2conn send path", NULL, NULL, NULL, NULL, send_path },
        { "worker ring submissions", NULL, NULL, NULL, NULL, worker_ring },
        { "expected after core merge", NULL, NULL, NULL, NULL, after_core },
        CU_SUITE_INFO_NULL,
    };

    return rs_test_run(suites);
}
