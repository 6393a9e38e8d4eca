/* workers/callx.c: core/call.h accessors that look at the stream's flow control and buffer
 * sizes (issue 15). Kept apart from call.c, which owns the call's state machine. */
#include <nghttp2/nghttp2.h>
#include <time.h>
#include "core/chunkq.h"
#include "workers/internal.h"

size_t rs_call_send_window(const struct rs_call *call)
{
    nghttp2_session *h2 = call->conn->h2;
    int32_t sw, cw;

    if (h2 == NULL || call->state >= RS_STREAM_CLOSED)
        return 0;
    sw = nghttp2_session_get_stream_remote_window_size(h2, call->stream_id);
    cw = nghttp2_session_get_remote_window_size(h2);
    if (sw <= 0 || cw <= 0)
        return 0;
    return (size_t)(sw < cw ? sw : cw);
}

size_t rs_call_send_unframed(const struct rs_call *call)
{
    size_t used = rs_chunkq_used(&call->txq);

    return used > call->tx_framed ? used - call->tx_framed : 0;
}

size_t rs_call_stream_buffer(const struct rs_call *call)
{
    return call->txq.cap;
}

/* Compression budget. gzip costs CPU in proportion to the bytes it reads, not to the bytes it
 * sends: zeros deflate about 1000:1, so a client asking for large compressed responses costs
 * the worker ~1000x more CPU than its bytes (issue 15). Each connection may have
 * RS_ZCONN_RATE uncompressed bytes a second gzipped (bursts of RS_ZCONN_BURST), and the
 * whole worker RS_ZWORKER_RATE; past either, messages go out plain, so the client pays for
 * them in bytes and flow control paces it. ~280 MB/s of deflate per core (zlib level 6) makes
 * that about 6 % of a core per connection and 25 % per worker at most. */
#define RS_ZCONN_RATE    ((uint64_t)16 << 20)
#define RS_ZCONN_BURST   ((uint64_t)16 << 20)
#define RS_ZWORKER_RATE  ((uint64_t)64 << 20)
#define RS_ZWORKER_BURST ((uint64_t)64 << 20)

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void zrefill(struct rs_zbucket *b, uint64_t now, uint64_t rate, uint64_t burst)
{
    double add = (double)rate * (double)(now - b->last_ns) / 1e9;

    b->tokens = add >= (double)(burst - b->tokens) ? burst : b->tokens + (uint64_t)add;
    b->last_ns = now;
}

bool rs_call_compress_budget(struct rs_call *call, size_t len)
{
    struct rs_conn *c = call->conn;
    struct rs_worker *w = c->w;
    struct rs_zbucket *b;
    uint64_t now;

    if (!call->accept_gzip)
        return true; /* nothing will be compressed: nothing to charge */
    if (w->zconn == NULL || c->slot >= w->nconns)
        return false;
    now = now_ns();
    b = &w->zconn[c->slot];
    if (!b->live || b->gen != c->gen) {
        b->live = true;
        b->gen = c->gen;
        b->tokens = RS_ZCONN_BURST;
        b->last_ns = now;
    }
    if (w->zworker.last_ns == 0) {
        w->zworker.tokens = RS_ZWORKER_BURST;
        w->zworker.last_ns = now;
    }
    zrefill(b, now, RS_ZCONN_RATE, RS_ZCONN_BURST);
    zrefill(&w->zworker, now, RS_ZWORKER_RATE, RS_ZWORKER_BURST);
    if (b->tokens < len || w->zworker.tokens < len)
        return false;
    b->tokens -= len;
    w->zworker.tokens -= len;
    return true;
}
