/* workers/bulk/echo.c: Echo: sends every Chunk back as it comes, holding it while the send queue is
 * full.
 * How the methods run: workers/bulk/bulk.c. */
#include "workers/bulk/bulk_internal.h"
#include <errno.h>
#include <string.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "core/log.h"
#include "workers/bulk/storeop.h"

/* --- Echo ------------------------------------------------------------------------------ */

struct echo {
    uint64_t offset;     /* bytes echoed so far: the offset of the next chunk */
    const uint8_t *data; /* the held message's data, a view until rs_call_consume() */
    size_t len;
    uint32_t crc32c; /* of |data|, computed as the message arrived (its bytes still in cache) */
    bool holding;    /* a message waits for room in the send queue, unconsumed */
    bool half_closed;
    bool finished;
};

static const char *chunk_parse(const uint8_t *msg, size_t len, struct rs_pb_view *data)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);
    pb_wire_type_t wt;
    uint32_t tag;

    while (s.bytes_left > 0) {
        const char *why = rs_pb_next_field(&s, &wt, &tag);

        if (why != NULL)
            return why;
        if (tag == 1) {
            if (wt != PB_WT_STRING)
                return "wrong wire type for data";
            if (!rs_pb_take_bytes(&s, msg, len, data))
                return PB_GET_ERROR(&s);
        } else if (tag == 2) {
            uint64_t ignored; /* the server sets offset */

            if (wt != PB_WT_VARINT)
                return "wrong wire type for offset";
            if (!pb_decode_varint(&s, &ignored))
                return PB_GET_ERROR(&s);
        } else if (tag == 3) {
            uint32_t ignored; /* the server computes crc32c; a client's value is ignored */

            if (wt != PB_WT_32BIT)
                return "wrong wire type for crc32c";
            if (!pb_decode_fixed32(&s, &ignored))
                return PB_GET_ERROR(&s);
        } else if (!pb_skip_field(&s, wt)) {
            return PB_GET_ERROR(&s);
        }
    }
    return NULL;
}

/* Sends the held message, consumes it, or keeps holding it until on_writable: the client's
 * upload then stalls at its flow-control window until it reads. */
static void echo_flush(struct rs_call *call, struct echo *e)
{
    int ret = rs_bulk_send_chunk(call, e->data, e->len, e->offset, e->crc32c);

    if (ret == -EAGAIN) {
        e->holding = true;
        return;
    }
    e->holding = false;
    rs_call_consume(call);
    if (ret < 0) {
        rs_bulk_fail_send(call, &e->finished, ret);
        return;
    }
    e->offset += e->len;
    if (e->half_closed)
        rs_bulk_finish_ok(call, &e->finished);
}

static void echo_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct echo *e = rs_call_state(call);
    struct rs_pb_view data = { 0 };
    const char *why;

    if (e->finished) {
        rs_call_consume(call);
        return;
    }
    why = chunk_parse(msg, len, &data);
    if (why != NULL) {
        rs_bulk_fail(call, &e->finished, RS_GRPC_INVALID_ARGUMENT, "malformed Chunk: %s", why);
        rs_call_consume(call);
        return;
    }
    e->data = data.p;
    e->len = data.len;
    /* Now, while the bytes just deframed are hot, not when a full queue lets them go. */
    e->crc32c = rs_bulk_crc32c(call, 0, data.p, data.len);
    echo_flush(call, e);
}

static void echo_on_half_close(struct rs_call *call)
{
    struct echo *e = rs_call_state(call);

    e->half_closed = true;
    if (!e->holding && !e->finished)
        rs_bulk_finish_ok(call, &e->finished);
}

static void echo_on_writable(struct rs_call *call)
{
    struct echo *e = rs_call_state(call);

    if (e->holding && !e->finished)
        echo_flush(call, e);
}

const struct rs_method rs_bulk_echo_method = {
    .path = "/ringstream.v1.Bulk/Echo",
    .type = RS_METHOD_BIDI_STREAM,
    .state_size = sizeof(struct echo),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = echo_on_message,
    .on_half_close = echo_on_half_close,
    .on_writable = echo_on_writable,
};
