/* proto/pbview.h: zero-copy views of string/bytes fields for nanopb decoding, and the few wire
 * primitives the hand-written codecs in workers/ share. Stateless; any thread. */
#ifndef RS_PROTO_PBVIEW_H
#define RS_PROTO_PBVIEW_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pb.h>
#include <pb_decode.h>

/* A field's payload as a view of the message being decoded: valid as long as that message. */
struct rs_pb_view {
    const uint8_t *p; /* into the message handed to on_message */
    size_t len;
    bool set; /* the field was present */
};

/* nanopb decode callback for a string/bytes field: records a view and skips the bytes. For a
 * stream from pb_istream_from_buffer(), stream->state is the read position (buf_read() in
 * pb_decode.c, unchanged since 0.4.0; tests/unit/test_pbview.c pins it, and
 * rs_pb_view_inside() checks that this still holds). Only for such streams. */
bool rs_pb_view_cb(pb_istream_t *stream, const pb_field_t *field, void **arg);
/* Binds |cb| to rs_pb_view_cb() recording into |v| (borrowed; must outlive the decode). */
void rs_pb_view_bind(pb_callback_t *cb, struct rs_pb_view *v);
/* True when |v| is unset or lies wholly inside |msg|..|msg|+|len|. */
bool rs_pb_view_inside(const struct rs_pb_view *v, const uint8_t *msg, size_t len);
/* True when every view bound with rs_pb_view_bind() in |msg_struct| (a message of type |fields|
 * just decoded from |msg|, |len| bytes), its static submessages included, is unset or inside
 * |msg|. Call it after every successful pb_decode() with views: a string field sent with a
 * varint or fixed wire type reaches the callback as a copy on nanopb's stack (decode_callback_
 * field), so its view would dangle once pb_decode() returns. False means malformed input. */
bool rs_pb_views_inside(const pb_msgdesc_t *fields, const void *msg_struct, const uint8_t *msg,
                        size_t len);
/* Reads a length-delimited field's payload as a view of |msg| (|s| reads |msg|). Returns false
 * with PB_GET_ERROR(s) set when the length is malformed or runs past the end. */
bool rs_pb_take_bytes(pb_istream_t *s, const uint8_t *msg, size_t len, struct rs_pb_view *v);
/* Next field of a hand-parsed message. Returns NULL, or why the message is malformed (a
 * static string, or PB_GET_ERROR(s)). At the end of the message returns "truncated field". */
const char *rs_pb_next_field(pb_istream_t *s, pb_wire_type_t *wt, uint32_t *tag);
/* Writes |v| as a protobuf varint at |p| (room for 10 bytes). Returns the bytes written. */
size_t rs_pb_put_varint(uint8_t *p, uint64_t v);

#endif /* RS_PROTO_PBVIEW_H */
