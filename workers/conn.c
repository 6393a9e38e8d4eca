/* workers/conn.c: one HTTP/2 connection: its nghttp2 server session, the receive path
 * (multishot recv into provided buffers, parsed where it landed) and the send path (frames
 * gathered into one sendmsg, DATA payloads by reference into the streams' send queues).
 *
 * The transport under the session is plain TCP or TLS (core/tls.h), and the session does not
 * know which: the two places that differ are transport_input() (bytes that arrived go to
 * nghttp2 directly, or through TLS first) and transport_output() (the gathered frames go out
 * as they are, or are encrypted into one ciphertext buffer first). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "core/log.h"
#include "workers/internal.h"

#define RS_CONN_WINDOW (16 << 20) /* connection receive window; credited as bytes land */
/* TLS: frames are encrypted ahead, while the previous ciphertext is being sent, up to this
 * much ciphertext waiting (one gathered batch may go past it). */
#define RS_TLS_AHEAD ((size_t)1 << 20)
/* What a connection costs before any stream: itself and its output buffer (nghttp2's session
 * adds a few KiB more, bounded by SETTINGS). */
#define RS_CONN_CHARGE (sizeof(struct rs_conn) + RS_CONN_OUTBUF)

uint64_t rs_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void rs_conn_glitch(struct rs_conn *c, const char *what)
{
    if (c->glitch_tokens-- > 0 || (c->flags & RS_CONN_F_CALM))
        return;
    c->flags |= RS_CONN_F_CALM;
    rs_metric_add(&c->w->metrics.glitch_goaways, 1);
    rs_conn_note_close(c, RS_CLOSE_GLITCH);
    rs_log_warn("conn %u: too many suspicious frames (last: %s): GOAWAY ENHANCE_YOUR_CALM", c->slot,
                what);
    nghttp2_session_terminate_session(c->h2, NGHTTP2_ENHANCE_YOUR_CALM);
    rs_worker_mark_pending(c->w, c);
}

/* Ends the session: GOAWAY(|code|) goes out, input is ignored from now on, and rs_conn_run()
 * closes the connection once nghttp2 wants neither to read nor to write. */
static void terminate(struct rs_conn *c, uint32_t code, const char *why)
{
    if (c->flags & (RS_CONN_F_TERM | RS_CONN_F_CLOSING))
        return;
    c->flags |= RS_CONN_F_TERM;
    rs_conn_note_close(c, RS_CLOSE_GOAWAY);
    rs_log_info("conn %u: GOAWAY %s: %s", c->slot, nghttp2_http2_strerror(code), why);
    if (nghttp2_session_terminate_session(c->h2, code) != 0)
        rs_conn_close(c);
    rs_worker_mark_pending(c->w, c);
}

/* Is the peer too slow with its input (--header-timeout-ms)? Two ways to hold a connection
 * open with a trickle of bytes that the idle timeout never sees:
 * - a request's header block (HEADERS + CONTINUATION) still incomplete after the bound. The
 *   stream was created when its HEADERS began (it is in RECV_HEADERS); a block nghttp2
 *   ignores creates none, so for it bytes must have arrived since it began;
 * - bytes keep arriving but the parser made no progress for the bound: a frame header (9
 *   bytes) or the padding of a frame sent a byte at a time. A slow DATA upload is not
 *   affected: each DATA chunk that arrives is progress. */
static bool slow_input(const struct rs_conn *c, uint64_t now_ms)
{
    const struct rs_config *cfg = &c->w->srv->cfg;
    uint64_t bound = cfg->header_timeout_ms > 0 ? cfg->header_timeout_ms : RS_HEADER_TIMEOUT_MS;
    const struct rs_list *l;

    if (!c->got_frame)
        return false; /* the handshake timeout covers this */
    if (c->active_ms > c->progress_ms && now_ms - c->progress_ms >= bound)
        return true;
    if (c->hdr_begin_ms == 0 || now_ms - c->hdr_begin_ms < bound)
        return false;
    if (c->active_ms > c->hdr_begin_ms)
        return true;
    for (l = c->calls.next; l != &c->calls; l = l->next)
        if (rs_container_of(l, struct rs_call, link)->state == RS_STREAM_RECV_HEADERS)
            return true;
    return false;
}

static void update_window(struct rs_conn *c);
static int tls_account(struct rs_conn *c);

void rs_conn_tick(struct rs_conn *c, uint64_t now_ms)
{
    const struct rs_config *cfg = &c->w->srv->cfg;
    int budget = (int)cfg->glitch_budget;

    if (c->flags & RS_CONN_F_CLOSING)
        return;
    if (c->got_frame && !(c->flags & (RS_CONN_F_TERM | RS_CONN_F_GOAWAY)))
        update_window(c);
    /* A quiet TLS connection gives its output buffers back (they stay sized while busy). */
    if (c->tls != NULL && !(c->flags & RS_CONN_F_SENDING) && now_ms - c->active_ms >= 1000) {
        rs_tls_trim(c->tls);
        tls_account(c);
    }
    /* The budget refills over 10 s: a steady trickle of odd frames is tolerated, a burst not. */
    c->glitch_tokens += budget / 10 > 0 ? budget / 10 : 1;
    if (c->glitch_tokens > budget)
        c->glitch_tokens = budget;
    if (!c->got_frame && now_ms - c->born_ms >= cfg->handshake_ms) {
        rs_log_debug("conn %u: no HTTP/2 preface within %u ms, closing", c->slot,
                     cfg->handshake_ms);
        rs_conn_note_close(c, RS_CLOSE_HANDSHAKE);
        rs_conn_close(c);
        return;
    }
    if (slow_input(c, now_ms)) {
        terminate(c, NGHTTP2_NO_ERROR, "request headers or a frame too slow");
        return;
    }
    if (rs_list_empty(&c->calls) && now_ms - c->active_ms >= cfg->idle_ms &&
        !(c->flags & RS_CONN_F_GOAWAY)) {
        /* GOAWAY first: a client that raced a new request in sees it refused, not lost. */
        rs_log_debug("conn %u: idle for %u ms, closing", c->slot, cfg->idle_ms);
        rs_conn_drain(c);
    }
}

static struct rs_call *stream_call(nghttp2_session *h2, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h2, id);
}

/* ---- nghttp2 callbacks: record the event, never run handlers ---------------------------- */

/* Was client stream id |id| (odd, below the highest used) skipped, so never used? */
static bool id_skipped(const struct rs_conn *c, int32_t id)
{
    unsigned i, n = c->nidgaps < 8 ? c->nidgaps : 8;

    for (i = 0; i < n; i++)
        if (id >= c->idgaps[i].lo && id <= c->idgaps[i].hi)
            return true;
    return false;
}

/* Is a HEADERS frame on |id| one that RFC 9113 5.1.1 makes a connection error and nghttp2 1.52
 * drops without a word? An even id (server-initiated; we never push), or an odd id below the
 * highest one used that was skipped: the first use of a higher id closed it while idle. Odd
 * ids below that were used and are closed now are left to nghttp2 (trailers that crossed our
 * RST_STREAM must be ignored, RFC 9113 5.1). Records the skipped ids of a new stream id. */
static bool headers_id_invalid(struct rs_conn *c, nghttp2_session *h2, int32_t id)
{
    /* the id a client counting up by two would use next; 64-bit: last may be 2^31-1 */
    int64_t next = c->last_begun_id == 0 ? 1 : (int64_t)c->last_begun_id + 2;

    if (nghttp2_session_find_stream(h2, id) != NULL)
        return false; /* trailers, or a stream nghttp2 still knows */
    if (id % 2 == 0)
        return true;
    if (id > c->last_begun_id) {
        if (id > next) {
            c->idgaps[c->nidgaps % 8] = (struct rs_idgap){ (int32_t)next, id - 2 };
            c->nidgaps++;
        }
        c->last_begun_id = id;
        return false;
    }
    return id_skipped(c, id);
}

/* Every frame, once its header (and a HEADERS frame's padding and priority fields) arrived,
 * before nghttp2 decides to act on it or drop it. */
static int on_begin_frame(nghttp2_session *h2, const nghttp2_frame_hd *hd, void *user_data)
{
    struct rs_conn *c = user_data;
    uint64_t now = c->active_ms; /* the parser's callbacks run on bytes that just arrived */

    c->progress_ms = now;
    if (hd->type == NGHTTP2_CONTINUATION)
        return 0;        /* the header block goes on; it keeps its start time */
    c->hdr_begin_ms = 0; /* any other frame: a header block before it is complete */
    if (hd->type != NGHTTP2_HEADERS || hd->stream_id == 0)
        return 0;
    c->hdr_begin_ms = now;
    if (headers_id_invalid(c, h2, hd->stream_id)) {
        rs_log_debug("conn %u: HEADERS on stream %d, never usable by the client", c->slot,
                     hd->stream_id);
        terminate(c, NGHTTP2_PROTOCOL_ERROR, "HEADERS on an invalid stream id");
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
    struct rs_conn *c = user_data;
    struct rs_call *call;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if ((c->w->flags & RS_WORKER_F_DRAINING) || (c->flags & RS_CONN_F_TERM)) {
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    /* Near the worker's memory budget, or with this connection at its share, new streams are
     * refused (gRPC clients retry REFUSED_STREAM elsewhere or later): degrade, never OOM. */
    if (!rs_budget_admit_stream(&c->w->budget, &c->acct)) {
        rs_worker_budget_note(c->w, c->acct.used >= c->w->budget.share ? -EDQUOT : -ENOBUFS,
                              "a new stream (REFUSED_STREAM)");
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    call = rs_stream_new(c, frame->hd.stream_id);
    if (call == NULL) {
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, call);
    return 0;
}

static bool name_is(const uint8_t *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);

    return len == n && memcmp(name, lit, n) == 0;
}

/* Is "gzip" one of the comma-separated tokens of |v|? */
static bool accepts_gzip(const uint8_t *v, size_t len)
{
    size_t i = 0, s, e;

    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == ','))
            i++;
        s = i;
        while (i < len && v[i] != ',')
            i++;
        e = i;
        while (e > s && v[e - 1] == ' ')
            e--;
        if (e - s == 4 && memcmp(v + s, "gzip", 4) == 0)
            return true;
    }
    return false;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct rs_conn *c = user_data;
    struct rs_call *call = stream_call(h2, frame->hd.stream_id);
    char **slot = NULL;
    struct rs_meta *m;

    c->progress_ms = c->active_ms;
    if (call == NULL || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* refused stream, or request trailers: nothing we use */
    /* RFC 9113 counts 32 bytes of overhead per field, as SETTINGS_MAX_HEADER_LIST_SIZE does. */
    call->header_bytes += namelen + valuelen + 32;
    if (call->header_bytes > c->w->srv->cfg.max_header_list) {
        /* The client ignored our SETTINGS: drop the rest, routing answers 431. */
        call->flags |= RS_CALL_F_FAILED;
        return 0;
    }
    if (name_is(name, namelen, ":path"))
        slot = &call->path;
    else if (name_is(name, namelen, ":method"))
        slot = &call->method_name;
    else if (name_is(name, namelen, "content-type"))
        slot = &call->content_type;
    else if (name_is(name, namelen, "grpc-encoding"))
        slot = &call->grpc_encoding;
    if (slot != NULL) {
        rs_call_strfree(call, *slot);
        *slot = rs_call_strdup(call, value, valuelen);
        return *slot == NULL ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    /* Transport headers the handler never needs to see. */
    if (name_is(name, namelen, "grpc-timeout")) {
        int64_t ns;

        /* A malformed timeout is ignored, as the reference servers do. */
        if (rs_grpc_timeout_parse((const char *)value, valuelen, &ns) == 0)
            call->timeout_ns = ns > 0 ? ns : 1;
        return 0;
    }
    if (name_is(name, namelen, "grpc-accept-encoding")) {
        call->accept_gzip = accepts_gzip(value, valuelen);
        return 0;
    }
    if (name_is(name, namelen, "te"))
        return 0;
    if (call->nmeta < RS_CALL_META_INLINE) {
        call->meta = call->meta_inline;
    } else if (call->meta == call->meta_inline) {
        m = malloc((call->nmeta + 1) * sizeof(*m));
        if (m == NULL)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        memcpy(m, call->meta_inline, sizeof(call->meta_inline));
        call->meta = m;
    } else {
        m = realloc(call->meta, (call->nmeta + 1) * sizeof(*m));
        if (m == NULL)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        call->meta = m;
    }
    m = &call->meta[call->nmeta];
    m->name = rs_call_strdup(call, name, namelen);
    m->value = rs_call_strdup(call, value, valuelen);
    m->value_len = valuelen;
    if (m->name == NULL || m->value == NULL) {
        rs_call_strfree(call, m->name);
        rs_call_strfree(call, m->value);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    call->nmeta++;
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
    struct rs_conn *c = user_data;
    struct rs_call *call;

    c->got_frame = true;
    c->progress_ms = c->active_ms;
    if (frame->hd.type == NGHTTP2_SETTINGS && (frame->hd.flags & NGHTTP2_FLAG_ACK))
        c->window_floor = c->window; /* nghttp2 applies our last SETTINGS now */
    if (frame->hd.type == NGHTTP2_HEADERS)
        c->hdr_begin_ms = 0; /* the header block is complete */
    if (frame->hd.type == NGHTTP2_RST_STREAM)
        rs_conn_glitch(c, "RST_STREAM");
    else if (frame->hd.type == NGHTTP2_DATA && frame->hd.length == 0 &&
             !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        rs_conn_glitch(c, "empty DATA");
    else if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_HEADERS &&
             !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        rs_conn_glitch(c, "trailers without END_STREAM");

    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    call = stream_call(h2, frame->hd.stream_id);
    if (call == NULL)
        return 0;
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        call->flags |= RS_CALL_F_REMOTE_END;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
        call->state == RS_STREAM_RECV_HEADERS)
        rs_stream_route(call);
    rs_stream_mark_ready(call);
    return 0;
}

/* A frame nghttp2 rejected (and answered itself, with RST_STREAM or GOAWAY). */
static int on_invalid_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, int lib_error,
                                 void *user_data)
{
    struct rs_conn *c = user_data;

    if (frame->hd.type == NGHTTP2_HEADERS)
        c->hdr_begin_ms = 0; /* nghttp2 dealt with the header block */
    rs_log_debug("conn %u: invalid frame type %u on stream %d: %s", c->slot, frame->hd.type,
                 frame->hd.stream_id, nghttp2_strerror(lib_error));
    rs_conn_glitch(c, nghttp2_strerror(lib_error));
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *h2, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
    struct rs_conn *c = user_data;
    struct rs_call *call = stream_call(h2, stream_id);
    int ret;

    c->progress_ms = c->active_ms;
    if (call == NULL || call->route != RS_ROUTE_GRPC || call->state != RS_STREAM_OPEN ||
        (call->flags & RS_CALL_F_FAILED)) {
        /* Nobody will read these bytes: give the window back at once. */
        nghttp2_session_consume(h2, stream_id, len);
        return 0;
    }
    /* The connection window is credited as bytes land in a stream's queue, the stream's only
     * when the handler has consumed them: one stalled stream never stalls its siblings. */
    nghttp2_session_consume_connection(h2, len);
    ret = rs_deframer_push(&call->rx, data, len);
    if (ret < 0) {
        nghttp2_session_consume_stream(h2, stream_id, len);
        rs_stream_fail(call, RS_GRPC_RESOURCE_EXHAUSTED,
                       ret == -ENOMEM ? "server out of memory" : "flow control violated");
        return 0;
    }
    /* Every byte buffered for a stream is charged to its connection: a peer parking partial
     * messages on many streams runs into its share, not into the worker's memory. */
    ret = rs_stream_rx_account(call);
    if (ret < 0) {
        call->uncredited += len;
        rs_stream_fail(call, RS_GRPC_RESOURCE_EXHAUSTED,
                       ret == -EDQUOT ? "connection over its memory share"
                                      : "server memory budget exhausted");
        return 0;
    }
    call->uncredited += len;
    rs_stream_mark_ready(call);
    return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
    struct rs_conn *c = user_data;
    struct rs_call *call;

    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR)
        rs_log_warn("conn %u: sent GOAWAY %s (last stream %d)", c->slot,
                    nghttp2_http2_strerror(frame->goaway.error_code), frame->goaway.last_stream_id);

    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    call = stream_call(h2, frame->hd.stream_id);
    /* The response is complete while the request is not: tell the client to stop sending
     * (RST_STREAM NO_ERROR, RFC 9113 8.1) instead of letting it upload into the void. */
    if (call != NULL && (call->flags & RS_CALL_F_DEADLINE))
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_CANCEL);
    else if (call != NULL && !(call->flags & RS_CALL_F_REMOTE_END))
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct rs_call *call = stream_call(h2, stream_id);

    if (call == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
    rs_stream_close(call);
    return 0;
}

static ssize_t on_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    struct rs_conn *c = user_data;
    size_t room = RS_CONN_OUTBUF - c->outlen;
    struct iovec *last;

    if (room == 0 || c->iovcnt == RS_CONN_IOV)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (c->out == NULL && (c->out = rs_worker_outbuf_get(c->w)) == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (len > room)
        len = room;
    memcpy(c->out + c->outlen, data, len);
    last = c->iovcnt > 0 ? &c->iov[c->iovcnt - 1] : NULL;
    if (last != NULL && (uint8_t *)last->iov_base + last->iov_len == c->out + c->outlen) {
        last->iov_len += len; /* contiguous with the previous control bytes */
    } else {
        c->iov[c->iovcnt].iov_base = c->out + c->outlen;
        c->iov[c->iovcnt].iov_len = len;
        c->iovcnt++;
    }
    c->outlen += len;
    return (ssize_t)len;
}

static int on_send_data(nghttp2_session *h2, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data)
{
    return rs_stream_frame_data(source->ptr, framehd, length);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* The smallest stream window the budget shrinks to: a few DATA frames' worth. */
#define RS_MIN_STREAM_WINDOW (64u * 1024)

static uint32_t rs_conn_stream_window_full(const struct rs_conn *c)
{
    size_t full = c->w->srv->cfg.stream_buffer;

    return full > 0x7fffffff ? 0x7fffffff : (uint32_t)full;
}

uint32_t rs_conn_stream_window(const struct rs_conn *c)
{
    const struct rs_config *cfg = &c->w->srv->cfg;
    size_t full = cfg->stream_buffer > 0x7fffffff ? 0x7fffffff : cfg->stream_buffer;

    return (uint32_t)rs_budget_stream_window(&c->w->budget, full, RS_MIN_STREAM_WINDOW);
}

/* The first stage of degradation: as the worker's budget fills, the streams' receive windows
 * shrink (SETTINGS_INITIAL_WINDOW_SIZE, which also applies to the streams already open, RFC
 * 9113 6.9.2), and grow back as it empties. Changes of less than a quarter are not worth a
 * SETTINGS frame. */
static void update_window(struct rs_conn *c)
{
    uint32_t want = rs_conn_stream_window(c), have = c->window;
    uint32_t diff = want > have ? want - have : have - want;
    nghttp2_settings_entry iv;

    if (diff == 0 || (diff < have / 4 && want != rs_conn_stream_window_full(c)))
        return;
    iv.settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
    iv.value = want;
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, &iv, 1) != 0)
        return;
    c->window_floor = want < c->window ? want : c->window;
    c->window = want;
    rs_log_debug("conn %u: stream window %u -> %u (worker budget %zu of %zu bytes)", c->slot, have,
                 want, c->w->budget.used, c->w->budget.limit);
    rs_worker_mark_pending(c->w, c);
}

static int submit_settings(struct rs_conn *c)
{
    const struct rs_config *cfg = &c->w->srv->cfg;
    uint32_t win = rs_conn_stream_window(c);
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->max_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, win },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->max_header_list },
    };
    int rv;

    c->window = win;
    c->window_floor = win;

    rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    if (rv == 0)
        rv = nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, RS_CONN_WINDOW);
    return rv;
}

/* Brings the connection's charge for its TLS buffers up to date. Returns 0, or -ENOBUFS /
 * -EDQUOT when they grew past what the budget allows (the caller closes the connection). */
static int tls_account(struct rs_conn *c)
{
    size_t now = rs_tls_mem(c->tls);
    int ret;

    if (now < c->tls_charged) {
        rs_budget_release(&c->w->budget, &c->acct, c->tls_charged - now);
    } else if (now > c->tls_charged) {
        ret = rs_budget_charge(&c->w->budget, &c->acct, now - c->tls_charged);
        if (ret < 0) {
            rs_worker_budget_note(c->w, ret, "TLS buffers (connection closed)");
            return ret;
        }
    }
    c->tls_charged = now;
    return 0;
}

struct rs_conn *rs_conn_new(struct rs_worker *w, int fd, uint32_t slot, uint32_t gen,
                            struct rs_tls_ctx *tls)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    struct rs_conn *c;
    int rv;

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    /* The connection's own buffers are the first thing charged to its account. */
    /* The output buffer is charged from the start (it is taken whenever there is something to
     * send, and that may not fail for want of budget), though held only while sending. */
    if (rs_budget_charge(&w->budget, &c->acct, RS_CONN_CHARGE) < 0)
        goto err_free_conn;
    c->w = w;
    c->fd = fd;
    c->born_ms = rs_now_ms();
    c->active_ms = c->born_ms;
    c->progress_ms = c->born_ms;
    c->glitch_tokens = (int)w->srv->cfg.glitch_budget;
    c->slot = slot;
    c->gen = gen;
    rs_list_init(&c->calls);
    rs_list_init(&c->ready);
    rs_list_init(&c->pending_link);
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        goto err_uncharge;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        goto err_uncharge;
    }
    /* Receive windows are credited by hand: a stream's only once its bytes were consumed. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* A server keeps closed streams in RFC 7540's priority tree by default, up to
     * SETTINGS_MAX_CONCURRENT_STREAMS of them per connection (nghttp2_stream + its
     * bookkeeping on every close): memory and CPU for a dependency tree gRPC never uses. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* nghttp2's rapid-reset limiter follows the glitch budget: the same burst, refilled at the
     * same pace (budget per 10 s), so --glitch-budget is the one knob for both. */
    nghttp2_option_set_stream_reset_rate_limit(
            opt, w->srv->cfg.glitch_budget,
            w->srv->cfg.glitch_budget / 10 > 0 ? w->srv->cfg.glitch_budget / 10 : 1);
    rv = nghttp2_session_server_new2(&c->h2, cbs, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        goto err_uncharge;
    if (submit_settings(c) != 0)
        goto err_del_session;
    if (tls != NULL) {
        c->tls = rs_tls_new(tls);
        if (c->tls == NULL)
            goto err_del_session;
        if (tls_account(c) < 0)
            goto err_free_tls;
    }
    if (rs_ring_recv_multishot(&w->ring, fd, rs_ud_make(RS_OP_RECV, gen, slot)) < 0)
        goto err_free_tls;
    c->flags |= RS_CONN_F_RECVING;
    c->inflight++;
    return c;
err_free_tls:
    if (c->tls != NULL) {
        rs_budget_release(&w->budget, &c->acct, c->tls_charged);
        rs_tls_destroy(c->tls);
    }
err_del_session:
    nghttp2_session_del(c->h2);
err_uncharge:
    rs_budget_release(&w->budget, &c->acct, RS_CONN_CHARGE);
err_free_conn:
    free(c);
    return NULL;
}

void rs_conn_close(struct rs_conn *c)
{
    struct rs_list *l;

    if (c->flags & RS_CONN_F_CLOSING)
        return;
    c->flags |= RS_CONN_F_CLOSING;
    rs_metric_add(&c->w->metrics.closed_by[c->close_reason], 1);
    /* Ends the armed recv and any send in flight; their completions drop |inflight|. */
    shutdown(c->fd, SHUT_RDWR);
    for (l = c->calls.next; l != &c->calls; l = l->next) {
        rs_stream_close(rs_container_of(l, struct rs_call, link));
    }
    rs_worker_mark_pending(c->w, c);
}

void rs_conn_drain(struct rs_conn *c)
{
    struct rs_list *l;

    if (c->flags & (RS_CONN_F_CLOSING | RS_CONN_F_GOAWAY))
        return;
    c->flags |= RS_CONN_F_GOAWAY;
    for (l = c->calls.next; l != &c->calls; l = l->next) {
        struct rs_call *call = rs_container_of(l, struct rs_call, link);

        call->flags |= RS_CALL_F_DRAIN;
        rs_stream_mark_ready(call);
    }
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    rs_worker_mark_pending(c->w, c);
}

bool rs_conn_maybe_free(struct rs_conn *c)
{
    if (!(c->flags & RS_CONN_F_CLOSING) || c->inflight > 0 || !rs_list_empty(&c->calls))
        return false;
    rs_list_unlink(&c->pending_link);
    c->w->conns[c->slot] = NULL;
    nghttp2_session_del(c->h2);
    if (c->tls != NULL) {
        rs_budget_release(&c->w->budget, &c->acct, c->tls_charged);
        rs_tls_destroy(c->tls);
    }
    close(c->fd);
    rs_worker_outbuf_put(c->w, c->out);
    rs_budget_release(&c->w->budget, &c->acct, RS_CONN_CHARGE);
    if (c->acct.used != 0) /* every call was freed: nothing may still be charged */
        rs_log_bug("conn %u: %zu bytes still charged at free", c->slot, c->acct.used);
    free(c);
    return true;
}

/* ---- receive -------------------------------------------------------------------------- */

/* Plaintext for the session: from the socket as it is, or decrypted by TLS. Returns 0 or
 * -EBADMSG after an HTTP/2 input error (logged). */
static int session_input(void *arg, const uint8_t *data, size_t len)
{
    struct rs_conn *c = arg;
    ssize_t rv;

    if (c->flags & (RS_CONN_F_CLOSING | RS_CONN_F_TERM))
        return 0; /* a GOAWAY answered a connection error: the rest is ignored */
    rv = nghttp2_session_mem_recv(c->h2, data, len);
    if (rv < 0) {
        rs_log_info("conn %u: HTTP/2 input error: %s", c->slot, nghttp2_strerror((int)rv));
        return -EBADMSG;
    }
    return 0;
}

/* The TLS connection failed or the peer ended it: the alert or close_notify wolfSSL queued
 * goes out, then the connection closes (rs_conn_run); no more input is read. */
static void tls_end(struct rs_conn *c, int err)
{
    if (err == -ECONNRESET) {
        rs_tls_shutdown(c->tls); /* answer close_notify with ours */
        rs_conn_note_close(c, RS_CLOSE_PEER);
    } else {
        rs_conn_note_close(c, rs_tls_ready(c->tls) ? RS_CLOSE_TLS : RS_CLOSE_TLS_HANDSHAKE);
    }
    rs_log_debug("conn %u: TLS %s: %s", c->slot,
                 rs_tls_ready(c->tls) ? "connection ended" : "handshake failed",
                 err == -ENOBUFS ? "output bound reached" : rs_tls_error(c->tls));
    c->flags |= RS_CONN_F_LINGER;
    rs_worker_mark_pending(c->w, c);
}

static void transport_input(struct rs_conn *c, const uint8_t *data, size_t len)
{
    int ret;

    if (c->tls == NULL) {
        ret = session_input(c, data, len);
    } else {
        ret = rs_tls_recv(c->tls, data, len, c->w->tls_plain, sizeof(c->w->tls_plain),
                          session_input, c);
        if (ret < 0 && ret != -EBADMSG) {
            tls_end(c, ret);
            ret = 0;
        }
        if (tls_account(c) < 0)
            ret = -ENOBUFS;
    }
    if (ret < 0) {
        rs_conn_note_close(c, RS_CLOSE_ERROR);
        rs_conn_close(c);
    }
}

void rs_conn_on_recv(struct rs_conn *c, const struct rs_ring_cqe *cqe)
{
    struct rs_worker *w = c->w;

    if (cqe->flags & RS_RING_F_BUFFER) {
        if (cqe->res > 0 && !(c->flags & (RS_CONN_F_CLOSING | RS_CONN_F_TERM | RS_CONN_F_LINGER))) {
            /* Also the time of every parser callback on these bytes (progress, header block
             * start): one clock read per recv, not one per frame and header field. */
            c->active_ms = rs_now_ms();
            rs_metric_add(&w->metrics.bytes_in, (uint64_t)cqe->res);
            transport_input(c, rs_ring_buf(&w->ring, cqe->bid), (size_t)cqe->res);
        }
        rs_ring_buf_recycle(&w->ring, cqe->bid);
    }
    if (!(cqe->flags & RS_RING_F_MORE)) {
        c->flags &= ~RS_CONN_F_RECVING;
        c->inflight--;
        if (c->flags & RS_CONN_F_CLOSING) {
            /* nothing to re-arm */
        } else if (cqe->res == 0 || (cqe->res < 0 && cqe->res != -ENOBUFS)) {
            if (cqe->res < 0 && cqe->res != -ECONNRESET)
                rs_log_info("conn %u: recv: %s", c->slot, strerror(-cqe->res));
            rs_conn_note_close(c, cqe->res == 0 || cqe->res == -ECONNRESET ? RS_CLOSE_PEER
                                                                           : RS_CLOSE_ERROR);
            rs_conn_close(c);
        } else if (rs_ring_recv_multishot(&w->ring, c->fd,
                                          rs_ud_make(RS_OP_RECV, c->gen, c->slot)) == 0) {
            /* -ENOBUFS: every buffer was in use; they were recycled as parsed, so re-arm. */
            c->flags |= RS_CONN_F_RECVING;
            c->inflight++;
        } else {
            rs_conn_note_close(c, RS_CLOSE_ERROR);
            rs_conn_close(c);
        }
    }
    rs_worker_mark_pending(w, c);
}

/* ---- send ----------------------------------------------------------------------------- */

static void release_txrefs(struct rs_conn *c)
{
    unsigned i;

    for (i = 0; i < c->ntxrefs; i++) {
        struct rs_call *call = c->txrefs[i].call;

        rs_chunkq_consume(&call->txq, c->txrefs[i].len);
        call->tx_framed -= c->txrefs[i].len;
        if (!rs_call_maybe_free(call) && (call->flags & RS_CALL_F_WANT_WRITABLE))
            rs_call_mark_ready(call);
    }
    c->ntxrefs = 0;
}

static void send_done(struct rs_conn *c);

static void submit_send(struct rs_conn *c)
{
    uint64_t ud = rs_ud_make(RS_OP_SEND, c->gen, c->slot);
    int ret;

    /* From here the flush owns iov[] and the txrefs until send_done(), also when the submission
     * fails: send_done() releases only a flush marked as sending. */
    c->flags |= RS_CONN_F_SENDING;
    memset(&c->msg, 0, sizeof(c->msg));
    if (c->tls != NULL) {
        c->msg.msg_iov = &c->tls_iov;
        c->msg.msg_iovlen = 1;
    } else {
        c->msg.msg_iov = &c->iov[c->iovoff];
        c->msg.msg_iovlen = (size_t)(c->iovcnt - c->iovoff);
    }
    ret = c->zc ? rs_ring_sendmsg_zc(&c->w->ring, c->fd, &c->msg, ud)
                : rs_ring_sendmsg(&c->w->ring, c->fd, &c->msg, ud);
    if (ret < 0) {
        c->send_failed = true;
        rs_conn_note_close(c, RS_CLOSE_ERROR);
        rs_conn_close(c);
        send_done(c);
        return;
    }
    c->send_op = true;
    c->inflight++;
}

/* The flush is over once its last byte went out (or the send failed) and, for a zero-copy
 * send, the kernel has said it no longer reads the pages: only then may the queued blocks be
 * consumed and out[] be reused. */
static void send_done(struct rs_conn *c)
{
    if (c->send_op || c->zc_notifs > 0 || !(c->flags & RS_CONN_F_SENDING))
        return;
    release_txrefs(c);
    if (c->tls != NULL)
        rs_tls_out_done(c->tls);
    c->flags &= ~RS_CONN_F_SENDING;
    c->iovcnt = 0;
    c->iovoff = 0;
    c->outlen = 0;
    c->send_failed = false;
    if (c->tls == NULL) {
        rs_worker_outbuf_put(c->w, c->out); /* an idle connection holds no output buffer */
        c->out = NULL;
    }
    rs_worker_mark_pending(c->w, c);
}

void rs_conn_on_send(struct rs_conn *c, const struct rs_ring_cqe *cqe)
{
    size_t n;

    c->inflight--;
    if (cqe->flags & RS_RING_F_NOTIF) {
        c->zc_notifs--;
        send_done(c);
        return;
    }
    c->send_op = false;
    if (cqe->flags & RS_RING_F_MORE) { /* a zero-copy send: its notification follows */
        c->zc_notifs++;
        c->inflight++;
    }
    if (cqe->res < 0 || (c->flags & RS_CONN_F_CLOSING) || c->send_failed) {
        if (cqe->res < 0 && cqe->res != -EPIPE && cqe->res != -ECONNRESET)
            rs_log_info("conn %u: send: %s", c->slot, strerror(-cqe->res));
        c->send_failed = true;
        rs_conn_note_close(c, cqe->res == -EPIPE || cqe->res == -ECONNRESET ? RS_CLOSE_PEER
                                                                            : RS_CLOSE_ERROR);
        rs_conn_close(c);
        send_done(c);
        return;
    }
    /* A short send: skip what went out and send the rest before anything new. */
    n = (size_t)cqe->res;
    rs_metric_add(&c->w->metrics.bytes_out, n);
    if (c->tls != NULL) {
        if (n < c->tls_iov.iov_len) {
            c->tls_iov.iov_base = (uint8_t *)c->tls_iov.iov_base + n;
            c->tls_iov.iov_len -= n;
            submit_send(c);
            return;
        }
        send_done(c);
        return;
    }
    while (c->iovoff < c->iovcnt && n >= c->iov[c->iovoff].iov_len) {
        n -= c->iov[c->iovoff].iov_len;
        c->iovoff++;
    }
    if (c->iovoff < c->iovcnt) {
        c->iov[c->iovoff].iov_base = (uint8_t *)c->iov[c->iovoff].iov_base + n;
        c->iov[c->iovoff].iov_len -= n;
        submit_send(c);
        return;
    }
    send_done(c);
}

/* TLS: gathers the session's frames and encrypts them (the queued blocks are released at once:
 * the plaintext is no longer needed), also while the previous ciphertext is being sent, so
 * the next batch is ready when the kernel has taken it; then sends what waits, handshake and
 * alerts included, unless a send is in flight. Over TLS the session speaks only once the
 * handshake is done, and not after TLS ended. */
static void transport_output(struct rs_conn *c)
{
    const uint8_t *p;
    size_t len;
    int ret;

    if (rs_tls_ready(c->tls) && !(c->flags & RS_CONN_F_LINGER) &&
        rs_tls_out_pending(c->tls) < RS_TLS_AHEAD) {
        c->iovcnt = 0;
        c->iovoff = 0;
        c->outlen = 0;
        ret = nghttp2_session_send(c->h2);
        if (ret != 0) {
            rs_log_debug("conn %u: HTTP/2 send error: %s", c->slot, nghttp2_strerror(ret));
            release_txrefs(c);
            rs_conn_note_close(c, RS_CLOSE_ERROR);
            rs_conn_close(c);
            return;
        }
        if (c->iovcnt > 0) {
            ret = rs_tls_write(c->tls, c->iov, c->iovcnt);
            release_txrefs(c);
            c->iovcnt = 0;
            c->outlen = 0;
            if (ret < 0) {
                rs_log_debug("conn %u: TLS write: %s", c->slot,
                             ret == -EPROTO ? rs_tls_error(c->tls) : strerror(-ret));
                rs_conn_note_close(c, RS_CLOSE_ERROR);
                rs_conn_close(c);
                return;
            }
        }
    }
    if (tls_account(c) < 0) {
        rs_conn_note_close(c, RS_CLOSE_ERROR);
        rs_conn_close(c);
        return;
    }
    if (c->flags & RS_CONN_F_SENDING)
        return;
    len = rs_tls_out_take(c->tls, &p);
    if (len == 0) {
        if (c->flags & RS_CONN_F_LINGER)
            rs_conn_close(c); /* the alert or close_notify is out */
        return;
    }
    c->tls_iov.iov_base = (void *)p;
    c->tls_iov.iov_len = len;
    c->zc = false; /* the ciphertext buffer is ours, and reused at once */
    submit_send(c);
}

static void flush(struct rs_conn *c)
{
    int rv;

    if (c->flags & RS_CONN_F_CLOSING)
        return;
    if (c->tls != NULL) {
        transport_output(c);
        return;
    }
    if (c->flags & RS_CONN_F_SENDING)
        return;
    c->iovcnt = 0;
    c->iovoff = 0;
    c->outlen = 0;
    rv = nghttp2_session_send(c->h2);
    if (rv != 0) {
        rs_log_info("conn %u: HTTP/2 send error: %s", c->slot, nghttp2_strerror(rv));
        release_txrefs(c);
        rs_conn_note_close(c, RS_CLOSE_ERROR);
        rs_conn_close(c);
        return;
    }
    if (c->iovcnt > 0) {
        size_t data = 0;
        unsigned i;

        /* Zero-copy pays only for large payloads (page pinning and a second completion per
         * send); the threshold is --send-zc-threshold, off by default (perf/RESULTS.md). */
        for (i = 0; i < c->ntxrefs; i++)
            data += c->txrefs[i].len;
        c->zc = c->w->srv->cfg.send_zc_threshold > 0 && data >= c->w->srv->cfg.send_zc_threshold;
        submit_send(c);
    }
}

/* The one place a call is freed: after the batch, once it is DONE and nothing holds it. */
static void reap(struct rs_conn *c)
{
    struct rs_list *l, *next;

    for (l = c->calls.next; l != &c->calls; l = next) {
        struct rs_call *call = rs_container_of(l, struct rs_call, link);

        next = l->next;
        if (rs_stream_reapable(call))
            rs_stream_free(call);
    }
}

void rs_conn_run(struct rs_conn *c)
{
    struct rs_call *call;
    int rounds;

    /* Handlers may make more calls ready (a consume, a send); bound the loop anyway. */
    for (rounds = 0; rounds < 64; rounds++) {
        while (!rs_list_empty(&c->ready)) {
            call = rs_container_of(c->ready.next, struct rs_call, ready_link);
            rs_list_unlink(&call->ready_link);
            rs_stream_run(call);
        }
        flush(c);
        if (rs_list_empty(&c->ready))
            break;
    }
    if (!rs_list_empty(&c->ready))
        rs_worker_mark_pending(c->w, c);
    reap(c);
    if (!(c->flags & (RS_CONN_F_CLOSING | RS_CONN_F_SENDING | RS_CONN_F_LINGER)) &&
        !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        rs_conn_note_close(c, RS_CLOSE_PEER); /* unless we ended it (GOAWAY noted first) */
        if (c->tls != NULL) {
            /* close_notify first; flush() closes once it is out */
            rs_tls_shutdown(c->tls);
            c->flags |= RS_CONN_F_LINGER;
            flush(c);
        } else {
            rs_conn_close(c);
        }
    }
    if ((c->flags & RS_CONN_F_CLOSING) && !rs_list_empty(&c->ready))
        rs_worker_mark_pending(c->w, c);
}
