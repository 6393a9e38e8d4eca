/* workers/interop/interop.c: grpc.testing.TestService (proto/grpc_testing.proto), see
 * interop.h for what each method promises.
 *
 * Requests are decoded with nanopb from the view on_message hands over. Every string and bytes
 * field is a callback (proto/grpc_testing.options): bound where a method needs the field as a
 * view of the message, left unbound (nanopb then skips it) everywhere else, so a payload body
 * is never copied. Responses that carry a payload are encoded by hand: a few field header
 * bytes plus iovecs that all point at one block of zeros.
 *
 * StreamingOutputCall and FullDuplexCall answer a request in place: its view stays held (not
 * consumed) while its responses go out, one response_parameters entry at a time, each after
 * a ring timer of interval_us. Holding the view keeps the client's flow-control window closed,
 * so a client that stops reading its responses cannot push further requests either.
 * HalfDuplexCall copies its requests (bounded by the stream buffer, see
 * RS_INTEROP_HALF_DUPLEX_MAX) until the client half-closes, then answers them the same way,
 * oldest first.
 *
 * |finished| in a state means we called rs_call_finish(): later events only release what the
 * call holds. Every state starts with struct common, so on_start can reach it for any method. */
#include "workers/interop/interop.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "grpc_testing.pb.h"
#include "core/list.h"
#include "proto/pbview.h"

#define ECHO_INITIAL  "x-grpc-test-echo-initial"
#define ECHO_TRAILING "x-grpc-test-echo-trailing-bin"
#define ZERO_BLOCK    (64u * 1024)
#define IOV_STACK     72 /* the header and 71 blocks: a 4 MiB body needs no heap iovec array */

/* Every response body: iovecs point here as many times as the size needs. */
static const uint8_t zeros[ZERO_BLOCK];

/* --- wire helpers ---------------------------------------------------------------------- */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t rs_interop_payload_head(uint8_t out[RS_INTEROP_PAYLOAD_HEAD_MAX], uint32_t size)
{
    size_t blen = size > 0 ? 1 + varint_len(size) : 0; /* proto3 omits an empty body */
    size_t n;

    out[0] = (1u << 3) | PB_WT_STRING;
    n = 1 + rs_pb_put_varint(out + 1, (uint64_t)blen + size);
    if (size > 0) {
        out[n] = (2u << 3) | PB_WT_STRING;
        n += 1 + rs_pb_put_varint(out + n + 1, size);
    }
    return n;
}

int rs_interop_next_params(const uint8_t *msg, size_t len, size_t *pos, struct rs_interop_params *p)
{
    pb_istream_t s;

    if (*pos > len)
        return -EBADMSG;
    s = pb_istream_from_buffer(msg + *pos, len - *pos);
    while (s.bytes_left > 0) {
        grpc_testing_ResponseParameters rp = grpc_testing_ResponseParameters_init_zero;
        pb_wire_type_t wt;
        uint32_t tag;
        bool eof;

        /* A 0 byte fails here too: pb_decode() takes it as an end marker, we do not. */
        if (!pb_decode_tag(&s, &wt, &tag, &eof) || tag == 0)
            return -EBADMSG;
        if (tag != 2) {
            if (!pb_skip_field(&s, wt))
                return -EBADMSG;
            continue;
        }
        if (wt != PB_WT_STRING ||
            !pb_decode_delimited(&s, grpc_testing_ResponseParameters_fields, &rp))
            return -EBADMSG;
        p->size = rp.size;
        p->interval_us = rp.interval_us;
        p->compressed = rp.has_compressed && rp.compressed.value;
        *pos = len - s.bytes_left;
        return 1;
    }
    *pos = len;
    return 0;
}

/* --- common to every method ------------------------------------------------------------ */

struct common {
    bool got;         /* a request message arrived */
    bool half_closed; /* on_half_close ran */
    bool finished;    /* we called rs_call_finish() */
};

/* Ends the call; the trailing metadata echo goes with the status. */
static void finish(struct rs_call *call, struct common *c, enum rs_grpc_status status,
                   const char *msg)
{
    const char *v;
    size_t len;

    if (c->finished)
        return;
    c->finished = true;
    v = rs_call_metadata(call, ECHO_TRAILING, &len);
    if (v != NULL)
        rs_call_add_metadata(call, ECHO_TRAILING, v, len); /* -ENOMEM: the status still goes */
    rs_call_finish(call, status, msg);
}

__attribute__((format(printf, 4, 5))) static void
failf(struct rs_call *call, struct common *c, enum rs_grpc_status status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    finish(call, c, status, msg);
}

/* A failed rs_call_send_ex(); -EAGAIN is the caller's business. */
static void fail_send(struct rs_call *call, struct common *c, int err)
{
    if (err == -ECANCELED) /* the call is over already */
        c->finished = true;
    else if (err == -EMSGSIZE)
        failf(call, c, RS_GRPC_RESOURCE_EXHAUSTED,
              "response message exceeds the maximum message size (%zu bytes)",
              rs_call_max_msg(call));
    else if (err == -ENOMEM)
        failf(call, c, RS_GRPC_RESOURCE_EXHAUSTED, "server out of buffer memory");
    else
        failf(call, c, rs_grpc_status_from_errno(err), "sending: %s", strerror(-err));
}

/* Request headers are in: echo x-grpc-test-echo-initial into the response headers, which go
 * out with the first message (or as trailers-only, should the call end without one). */
static void on_start_common(struct rs_call *call)
{
    struct common *c = rs_call_state(call);
    size_t len;
    const char *v = rs_call_metadata(call, ECHO_INITIAL, &len);

    if (v != NULL && rs_call_add_metadata(call, ECHO_INITIAL, v, len) < 0)
        failf(call, c, RS_GRPC_RESOURCE_EXHAUSTED, "cannot echo %s", ECHO_INITIAL);
}

/* Decodes a request; on failure finishes the call with INVALID_ARGUMENT. */
static bool decode(struct rs_call *call, struct common *c, const uint8_t *msg, size_t len,
                   const pb_msgdesc_t *fields, void *dst, const char *what)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);

    if (!pb_decode(&s, fields, dst)) {
        failf(call, c, RS_GRPC_INVALID_ARGUMENT, "malformed %s: %s", what, PB_GET_ERROR(&s));
        return false;
    }
    /* A string sent with a scalar wire type leaves a view into nanopb's stack (pbview.h). */
    if (!rs_pb_views_inside(fields, dst, msg, len)) {
        failf(call, c, RS_GRPC_INVALID_ARGUMENT,
              "malformed %s: a string field with a scalar wire type", what);
        return false;
    }
    return true;
}

/* expect_compressed: a request the client promised to compress must have arrived compressed.
 * An unset or false expect_compressed accepts either. */
static bool compression_ok(struct rs_call *call, struct common *c, bool has,
                           const grpc_testing_BoolValue *expect, const char *what)
{
    if (has && expect->value && !rs_call_msg_was_compressed(call)) {
        failf(call, c, RS_GRPC_INVALID_ARGUMENT,
              "%s.expect_compressed is set but the request arrived uncompressed", what);
        return false;
    }
    return true;
}

/* A response_status the client asks to be finished with; |msg| views the request. */
struct echo_status {
    struct rs_pb_view msg;
    int32_t code;
    bool set;
};

static void finish_status(struct rs_call *call, struct common *c, const struct echo_status *es)
{
    char text[1024];
    size_t n = 0;
    enum rs_grpc_status status = RS_GRPC_UNKNOWN; /* what a client makes of a foreign code */

    if (es->code >= RS_GRPC_OK && es->code <= RS_GRPC_UNAUTHENTICATED)
        status = (enum rs_grpc_status)es->code;
    if (es->msg.p != NULL) { /* longer ones are cut: rs_call_finish() would cut them anyway */
        n = es->msg.len < sizeof(text) - 1 ? es->msg.len : sizeof(text) - 1;
        memcpy(text, es->msg.p, n);
    }
    text[n] = '\0';
    finish(call, c, status, text);
}

/* Sends { payload { body: |size| zeros } }, a SimpleResponse or StreamingOutputCallResponse.
 * Returns what rs_call_send_ex() returns. */
static int send_payload(struct rs_call *call, uint32_t size, bool compress)
{
    uint8_t head[RS_INTEROP_PAYLOAD_HEAD_MAX];
    struct iovec stack[IOV_STACK], *iov = stack;
    size_t hlen = rs_interop_payload_head(head, size);
    size_t nblocks = ((size_t)size + ZERO_BLOCK - 1) / ZERO_BLOCK;
    size_t left = size, n = 1;
    int ret;

    if (hlen + size > rs_call_max_msg(call))
        return -EMSGSIZE;
    if (1 + nblocks > IOV_STACK) {
        iov = calloc(1 + nblocks, sizeof(*iov));
        if (iov == NULL)
            return -ENOMEM;
    }
    iov[0].iov_base = head;
    iov[0].iov_len = hlen;
    while (left > 0) {
        iov[n].iov_base = (void *)zeros;
        iov[n].iov_len = left < ZERO_BLOCK ? left : ZERO_BLOCK;
        left -= iov[n++].iov_len;
    }
    /* Large compressed responses cost CPU out of proportion to their bytes: rs_call_send_ex
     * gzips them only within the connection's compression budget, past it they go plain. */
    ret = rs_call_send_ex(call, iov, (int)n, compress ? RS_CALL_SEND_COMPRESS : 0);
    if (iov != stack)
        free(iov);
    return ret;
}

/* --- one-response methods: EmptyCall, UnaryCall, StreamingInputCall -------------------- */

enum reply_kind {
    REPLY_EMPTY,     /* Empty */
    REPLY_PAYLOAD,   /* SimpleResponse */
    REPLY_AGGREGATE, /* StreamingInputCallResponse */
};

struct unary {
    struct common c;
    enum reply_kind kind;
    uint64_t value; /* REPLY_PAYLOAD: body bytes; REPLY_AGGREGATE: body bytes received */
    bool compress;  /* REPLY_PAYLOAD: response_compressed */
    bool pending;   /* the reply waits for room in the send queue */
};

static int reply_send(struct rs_call *call, const struct unary *u)
{
    grpc_testing_StreamingInputCallResponse agg = grpc_testing_StreamingInputCallResponse_init_zero;
    uint8_t buf[grpc_testing_StreamingInputCallResponse_size];
    pb_ostream_t s = pb_ostream_from_buffer(buf, sizeof(buf));
    struct iovec iov = { .iov_base = buf };

    switch (u->kind) {
    case REPLY_EMPTY:
        return rs_call_send_ex(call, NULL, 0, 0);
    case REPLY_PAYLOAD:
        return send_payload(call, (uint32_t)u->value, u->compress);
    case REPLY_AGGREGATE:
        /* The field is an int32: a sum past it is reported as INT32_MAX. */
        agg.aggregated_payload_size = u->value > INT32_MAX ? INT32_MAX : (int32_t)u->value;
        if (!pb_encode(&s, grpc_testing_StreamingInputCallResponse_fields, &agg))
            return -EPROTO;
        iov.iov_len = s.bytes_written;
        return rs_call_send_ex(call, &iov, 1, 0);
    }
    return -EINVAL;
}

/* Sends the reply and finishes OK, now or from on_writable. */
static void reply_flush(struct rs_call *call, struct unary *u)
{
    int ret;

    if (!u->pending || u->c.finished)
        return;
    ret = reply_send(call, u);
    if (ret == -EAGAIN)
        return;
    u->pending = false;
    if (ret < 0)
        fail_send(call, &u->c, ret);
    else
        finish(call, &u->c, RS_GRPC_OK, NULL);
}

static void reply(struct rs_call *call, struct unary *u, enum reply_kind kind, uint64_t value,
                  bool compress)
{
    u->kind = kind;
    u->value = value;
    u->compress = compress;
    u->pending = true;
    reply_flush(call, u);
}

/* The one request of a unary method: false when the call is over or this is a second one. */
static bool unary_first(struct rs_call *call, struct common *c)
{
    if (c->finished)
        return false;
    if (c->got) {
        failf(call, c, RS_GRPC_INVALID_ARGUMENT, "a unary method takes one request message");
        return false;
    }
    c->got = true;
    return true;
}

static void unary_on_half_close(struct rs_call *call)
{
    struct unary *u = rs_call_state(call);

    u->c.half_closed = true;
    if (!u->c.got)
        failf(call, &u->c, RS_GRPC_INVALID_ARGUMENT, "missing request message");
}

static void unary_on_writable(struct rs_call *call)
{
    reply_flush(call, rs_call_state(call));
}

static void empty_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct unary *u = rs_call_state(call);
    grpc_testing_Empty req = grpc_testing_Empty_init_zero;

    if (unary_first(call, &u->c) &&
        decode(call, &u->c, msg, len, grpc_testing_Empty_fields, &req, "Empty"))
        reply(call, u, REPLY_EMPTY, 0, false);
    rs_call_consume(call);
}

static void simple_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct unary *u = rs_call_state(call);
    grpc_testing_SimpleRequest req = grpc_testing_SimpleRequest_init_zero;
    struct echo_status es = { .set = false };

    if (!unary_first(call, &u->c))
        goto out;
    rs_pb_view_bind(&req.response_status.message, &es.msg);
    if (!decode(call, &u->c, msg, len, grpc_testing_SimpleRequest_fields, &req, "SimpleRequest") ||
        !compression_ok(call, &u->c, req.has_expect_compressed, &req.expect_compressed,
                        "SimpleRequest"))
        goto out;
    if (req.response_type != grpc_testing_PayloadType_COMPRESSABLE) {
        failf(call, &u->c, RS_GRPC_INVALID_ARGUMENT, "unsupported response_type %d",
              (int)req.response_type);
        goto out;
    }
    if (req.response_size < 0) {
        failf(call, &u->c, RS_GRPC_INVALID_ARGUMENT, "negative response_size %d",
              (int)req.response_size);
        goto out;
    }
    es.code = req.response_status.code;
    if (req.has_response_status && es.code != RS_GRPC_OK) {
        finish_status(call, &u->c, &es); /* copies the message before the view goes */
        goto out;
    }
    reply(call, u, REPLY_PAYLOAD, (uint64_t)req.response_size,
          req.has_response_compressed && req.response_compressed.value);
out:
    rs_call_consume(call);
}

static void input_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct unary *u = rs_call_state(call);
    grpc_testing_StreamingInputCallRequest req = grpc_testing_StreamingInputCallRequest_init_zero;
    struct rs_pb_view body = { .len = 0 };

    if (u->c.finished)
        goto out;
    u->c.got = true;
    rs_pb_view_bind(&req.payload.body, &body);
    if (decode(call, &u->c, msg, len, grpc_testing_StreamingInputCallRequest_fields, &req,
               "StreamingInputCallRequest") &&
        compression_ok(call, &u->c, req.has_expect_compressed, &req.expect_compressed,
                       "StreamingInputCallRequest"))
        u->value += body.len;
out:
    rs_call_consume(call);
}

static void input_on_half_close(struct rs_call *call)
{
    struct unary *u = rs_call_state(call);

    u->c.half_closed = true;
    if (!u->c.finished)
        reply(call, u, REPLY_AGGREGATE, u->value, false); /* no request at all: 0 */
}

/* --- streaming responses: StreamingOutputCall, FullDuplexCall, HalfDuplexCall ----------- */

enum out_kind {
    OUT_SERVER, /* StreamingOutputCall: one request, its responses, its status (or OK) */
    OUT_FULL,   /* FullDuplexCall: each request answered as it arrives */
    OUT_HALF,   /* HalfDuplexCall: requests kept until half-close, then answered */
};

/* A HalfDuplexCall request kept until the client half-closes. */
struct hd_req {
    struct rs_list link; /* in out.queue */
    size_t len;
    uint8_t data[];
};

/* What keeping a HalfDuplexCall request of |len| bytes costs: its bytes and its header. */
static size_t hd_charge(size_t len)
{
    return sizeof(struct hd_req) + len;
}

struct out {
    struct common c;
    enum out_kind kind;
    /* The request being answered, while |answering|. */
    const uint8_t *msg;           /* the held on_message view, or hd->data */
    size_t len;                   /*   its bytes */
    size_t pos;                   /* where rs_interop_next_params() reads next */
    struct rs_interop_params cur; /* the entry being answered, when has_cur */
    struct echo_status status;    /* the request's response_status; views |msg| */
    bool compress_all;            /* the request's response_compressed */
    bool answering;
    bool held;            /* msg is the on_message view, released with rs_call_consume() */
    bool has_cur;         /* cur is read but not sent (its timer runs, or the queue was full) */
    bool waited;          /* cur's interval_us has passed */
    bool timing;          /* a timer is in flight; out_on_timer resumes */
    struct hd_req *hd;    /* owned; the HalfDuplexCall request being answered */
    struct rs_list queue; /* of struct hd_req, oldest first, owned; initialised in on_start */
    size_t queued;        /* bytes charged for queue and hd; <= half_duplex_max() */
};

/* Decodes and checks a whole StreamingOutputCallRequest before anything is sent for it.
 * Returns NULL, or why it is unacceptable (INVALID_ARGUMENT). */
static const char *out_parse(const uint8_t *msg, size_t len, struct echo_status *es,
                             bool *compress_all)
{
    grpc_testing_StreamingOutputCallRequest req = grpc_testing_StreamingOutputCallRequest_init_zero;
    pb_istream_t s = pb_istream_from_buffer(msg, len);
    struct rs_interop_params p;
    size_t pos = 0;
    int ret;

    *es = (struct echo_status){ .set = false };
    /* response_parameters stays unbound: nanopb skips it, rs_interop_next_params reads it. */
    rs_pb_view_bind(&req.response_status.message, &es->msg);
    if (!pb_decode(&s, grpc_testing_StreamingOutputCallRequest_fields, &req))
        return PB_GET_ERROR(&s);
    if (!rs_pb_views_inside(grpc_testing_StreamingOutputCallRequest_fields, &req, msg, len))
        return "a string field with a scalar wire type";
    if (req.response_type != grpc_testing_PayloadType_COMPRESSABLE)
        return "unsupported response_type";
    while ((ret = rs_interop_next_params(msg, len, &pos, &p)) == 1)
        if (p.size < 0)
            return "negative response_parameters.size";
    if (ret < 0)
        return "malformed response_parameters";
    es->set = req.has_response_status;
    es->code = req.response_status.code;
    *compress_all = req.has_response_compressed && req.response_compressed.value;
    return NULL;
}

/* Starts answering |msg| (its views are taken from where it lies now). Returns NULL, or why
 * the request is unacceptable; then nothing changed but |status| and |compress_all|. */
static const char *out_begin(struct out *o, const uint8_t *msg, size_t len)
{
    const char *why = out_parse(msg, len, &o->status, &o->compress_all);

    if (why != NULL)
        return why;
    o->msg = msg;
    o->len = len;
    o->pos = 0;
    o->has_cur = false;
    o->answering = true;
    return NULL;
}

/* Lets go of the request being answered. */
static void out_release(struct rs_call *call, struct out *o)
{
    if (o->held && !rs_call_is_done(call))
        rs_call_consume(call);
    o->held = false;
    if (o->hd != NULL) {
        o->queued -= hd_charge(o->hd->len);
        free(o->hd);
        o->hd = NULL;
    }
    o->msg = NULL;
    o->answering = false;
    o->has_cur = false;
}

/* HalfDuplexCall after half-close: answers the oldest kept request, or finishes OK. */
static void out_take_queued(struct rs_call *call, struct out *o)
{
    struct rs_list *e = o->queue.next;

    if (rs_list_empty(&o->queue)) {
        finish(call, &o->c, RS_GRPC_OK, NULL);
        return;
    }
    rs_list_unlink(e);
    o->hd = rs_container_of(e, struct hd_req, link);
    if (out_begin(o, o->hd->data, o->hd->len) != NULL) /* half_on_message checked it */
        failf(call, &o->c, RS_GRPC_INTERNAL, "a kept HalfDuplexCall request became unreadable");
}

/* Every response of the current request is out: its status, then the next request. */
static void out_request_done(struct rs_call *call, struct out *o)
{
    if (o->kind == OUT_SERVER || (o->status.set && o->status.code != RS_GRPC_OK))
        finish_status(call, &o->c, &o->status); /* unset: code 0, no message: OK */
    out_release(call, o);
    if (o->c.finished)
        return;
    if (o->kind == OUT_HALF)
        out_take_queued(call, o);
    else if (o->c.half_closed) /* not while held, but cheap to be sure */
        finish(call, &o->c, RS_GRPC_OK, NULL);
}

static void out_on_timer(struct rs_call *call, void *arg, int res);

/* Sends what is due until the request is answered, a timer runs, or the queue is full. */
static void out_pump(struct rs_call *call, struct out *o)
{
    int ret;

    while (!o->c.finished && o->answering && !o->timing) {
        if (!o->has_cur) {
            ret = rs_interop_next_params(o->msg, o->len, &o->pos, &o->cur);
            if (ret < 0) { /* out_parse() read it all: cannot happen */
                failf(call, &o->c, RS_GRPC_INTERNAL, "response_parameters became unreadable");
                break;
            }
            if (ret == 0) {
                out_request_done(call, o);
                continue;
            }
            o->has_cur = true;
            o->waited = false;
        }
        if (o->cur.interval_us > 0 && !o->waited) {
            ret = rs_call_timer(call, (uint64_t)o->cur.interval_us * 1000, out_on_timer, o);
            if (ret < 0) {
                failf(call, &o->c, RS_GRPC_RESOURCE_EXHAUSTED, "no timer slot on this worker");
                break;
            }
            o->timing = true;
            return;
        }
        ret = send_payload(call, (uint32_t)o->cur.size, o->cur.compressed || o->compress_all);
        if (ret == -EAGAIN)
            return; /* on_writable resumes */
        if (ret < 0) {
            fail_send(call, &o->c, ret);
            break;
        }
        o->has_cur = false;
    }
    if (o->c.finished && o->answering)
        out_release(call, o);
}

static void out_on_timer(struct rs_call *call, void *arg, int res)
{
    struct out *o = arg;

    o->timing = false;
    if (rs_call_is_done(call)) /* on_done released everything */
        return;
    if (res < 0 && !o->c.finished)
        failf(call, &o->c, RS_GRPC_INTERNAL, "interval timer: %s", strerror(-res));
    o->waited = true;
    out_pump(call, o);
}

static void out_start(struct rs_call *call, enum out_kind kind)
{
    struct out *o = rs_call_state(call);

    o->kind = kind;
    rs_list_init(&o->queue);
    on_start_common(call);
}

static void server_on_start(struct rs_call *call)
{
    out_start(call, OUT_SERVER);
}

static void full_on_start(struct rs_call *call)
{
    out_start(call, OUT_FULL);
}

static void half_on_start(struct rs_call *call)
{
    out_start(call, OUT_HALF);
}

/* StreamingOutputCall and FullDuplexCall: answer the request in place, holding its view. */
static void out_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct out *o = rs_call_state(call);
    const char *why;

    if (o->c.finished) {
        rs_call_consume(call);
        return;
    }
    if (o->kind == OUT_SERVER && o->c.got) { /* only after the first one's answer */
        failf(call, &o->c, RS_GRPC_INVALID_ARGUMENT,
              "StreamingOutputCall takes one request message");
        rs_call_consume(call);
        return;
    }
    o->c.got = true;
    why = out_begin(o, msg, len);
    if (why != NULL) {
        failf(call, &o->c, RS_GRPC_INVALID_ARGUMENT, "malformed StreamingOutputCallRequest: %s",
              why);
        rs_call_consume(call);
        return;
    }
    o->held = true;
    out_pump(call, o);
}

/* The most a HalfDuplexCall may keep: its stream buffer, capped. */
static size_t half_duplex_max(const struct rs_call *call)
{
    size_t sb = rs_call_stream_buffer(call);

    return sb < RS_INTEROP_HALF_DUPLEX_MAX ? sb : RS_INTEROP_HALF_DUPLEX_MAX;
}

/* HalfDuplexCall: keep a copy; nothing is answered before the client half-closes. */
static void half_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct out *o = rs_call_state(call);
    struct echo_status es;
    struct hd_req *r;
    const char *why;
    bool all;

    if (o->c.finished)
        goto out;
    o->c.got = true;
    why = out_parse(msg, len, &es, &all);
    if (why != NULL) {
        failf(call, &o->c, RS_GRPC_INVALID_ARGUMENT, "malformed StreamingOutputCallRequest: %s",
              why);
        goto out;
    }
    if (hd_charge(len) > half_duplex_max(call) - o->queued) {
        failf(call, &o->c, RS_GRPC_RESOURCE_EXHAUSTED,
              "HalfDuplexCall keeps at most %zu bytes of requests (the stream buffer) until "
              "the client half-closes",
              half_duplex_max(call));
        goto out;
    }
    r = malloc(sizeof(*r) + len);
    if (r == NULL) {
        failf(call, &o->c, RS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        goto out;
    }
    r->len = len;
    if (len > 0)
        memcpy(r->data, msg, len);
    rs_list_insert_tail(&o->queue, &r->link);
    o->queued += hd_charge(len);
out:
    rs_call_consume(call);
}

static void out_on_half_close(struct rs_call *call)
{
    struct out *o = rs_call_state(call);

    o->c.half_closed = true;
    if (o->c.finished || o->answering)
        return;
    if (o->kind == OUT_SERVER) {
        if (!o->c.got)
            failf(call, &o->c, RS_GRPC_INVALID_ARGUMENT, "missing request message");
        return; /* else the answer finishes the call */
    }
    if (o->kind == OUT_FULL) {
        finish(call, &o->c, RS_GRPC_OK, NULL);
        return;
    }
    out_take_queued(call, o);
    out_pump(call, o);
}

static void out_on_writable(struct rs_call *call)
{
    out_pump(call, rs_call_state(call));
}

static void out_on_done(struct rs_call *call, enum rs_grpc_status status)
{
    struct out *o = rs_call_state(call);
    struct rs_list *e, *next;

    out_release(call, o); /* the core let go of a held view itself */
    if (o->queue.next == NULL)
        return; /* on_start never ran */
    for (e = o->queue.next; e != &o->queue; e = next) {
        next = e->next;
        free(rs_container_of(e, struct hd_req, link));
    }
    rs_list_init(&o->queue);
    o->queued = 0;
}

/* --- UnimplementedCall ----------------------------------------------------------------- */

static void unimplemented_on_start(struct rs_call *call)
{
    struct common *c = rs_call_state(call);

    on_start_common(call);
    failf(call, c, RS_GRPC_UNIMPLEMENTED, "%s is not implemented, by design", rs_call_path(call));
}

static void discard_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    rs_call_consume(call);
}

/* --- the service ----------------------------------------------------------------------- */

static const struct rs_method interop_methods[] = {
    {
            .path = "/grpc.testing.TestService/EmptyCall",
            .state_size = sizeof(struct unary),
            .on_start = on_start_common,
            .on_message = empty_on_message,
            .on_half_close = unary_on_half_close,
            .on_writable = unary_on_writable,
    },
    {
            .path = "/grpc.testing.TestService/UnaryCall",
            .state_size = sizeof(struct unary),
            .on_start = on_start_common,
            .on_message = simple_on_message,
            .on_half_close = unary_on_half_close,
            .on_writable = unary_on_writable,
    },
    {
            .path = "/grpc.testing.TestService/StreamingOutputCall",
            .type = RS_METHOD_SERVER_STREAM,
            .state_size = sizeof(struct out),
            .on_start = server_on_start,
            .on_message = out_on_message,
            .on_half_close = out_on_half_close,
            .on_writable = out_on_writable,
            .on_done = out_on_done,
    },
    {
            .path = "/grpc.testing.TestService/StreamingInputCall",
            .type = RS_METHOD_CLIENT_STREAM,
            .state_size = sizeof(struct unary),
            .on_start = on_start_common,
            .on_message = input_on_message,
            .on_half_close = input_on_half_close,
            .on_writable = unary_on_writable,
    },
    {
            .path = "/grpc.testing.TestService/FullDuplexCall",
            .type = RS_METHOD_BIDI_STREAM,
            .state_size = sizeof(struct out),
            .on_start = full_on_start,
            .on_message = out_on_message,
            .on_half_close = out_on_half_close,
            .on_writable = out_on_writable,
            .on_done = out_on_done,
    },
    {
            .path = "/grpc.testing.TestService/HalfDuplexCall",
            .type = RS_METHOD_BIDI_STREAM,
            .state_size = sizeof(struct out),
            .on_start = half_on_start,
            .on_message = half_on_message,
            .on_half_close = out_on_half_close,
            .on_writable = out_on_writable,
            .on_done = out_on_done,
    },
    {
            .path = "/grpc.testing.TestService/UnimplementedCall",
            .state_size = sizeof(struct common),
            .on_start = unimplemented_on_start,
            .on_message = discard_on_message,
    },
};

static const struct rs_service interop_service = {
    .name = "grpc.testing.TestService",
    .methods = interop_methods,
    .nmethods = sizeof(interop_methods) / sizeof(interop_methods[0]),
    .ctx = NULL,
};

const struct rs_service *rs_interop_service(void)
{
    return &interop_service;
}
