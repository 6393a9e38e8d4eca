/* proto/pbview.c: zero-copy field views and wire primitives over nanopb (see pbview.h). */
#include "proto/pbview.h"
#include <pb_common.h>

bool rs_pb_view_cb(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    struct rs_pb_view *v = *arg;

    v->p = stream->state;
    v->len = stream->bytes_left;
    v->set = true;
    return pb_read(stream, NULL, stream->bytes_left);
}

void rs_pb_view_bind(pb_callback_t *cb, struct rs_pb_view *v)
{
    cb->funcs.decode = rs_pb_view_cb;
    cb->arg = v;
}

bool rs_pb_view_inside(const struct rs_pb_view *v, const uint8_t *msg, size_t len)
{
    return !v->set || (v->p >= msg && v->len <= len && (size_t)(v->p - msg) <= len - v->len);
}

/* Submessages nest at most this deep in our .proto files; deeper ones are not searched. */
#define VIEWS_MAX_DEPTH 8

static bool views_inside(const pb_msgdesc_t *fields, const void *msg_struct, const uint8_t *msg,
                         size_t len, int depth)
{
    pb_field_iter_t it;

    if (depth > VIEWS_MAX_DEPTH || !pb_field_iter_begin_const(&it, fields, msg_struct))
        return true; /* no fields */
    do {
        pb_type_t at = PB_ATYPE(it.type), ht = PB_HTYPE(it.type);

        if (ht == PB_HTYPE_ONEOF && *(const pb_size_t *)it.pSize != it.tag)
            continue; /* not the member present: its bytes belong to another */
        if (at == PB_ATYPE_CALLBACK) {
            const pb_callback_t *cb = it.pData;

            if (cb->funcs.decode == rs_pb_view_cb && cb->arg != NULL &&
                !rs_pb_view_inside(cb->arg, msg, len))
                return false;
        } else if (at == PB_ATYPE_STATIC && ht != PB_HTYPE_REPEATED &&
                   PB_LTYPE_IS_SUBMSG(it.type) && it.submsg_desc != NULL) {
            if (!views_inside(it.submsg_desc, it.pData, msg, len, depth + 1))
                return false;
        }
    } while (pb_field_iter_next(&it));
    return true;
}

bool rs_pb_views_inside(const pb_msgdesc_t *fields, const void *msg_struct, const uint8_t *msg,
                        size_t len)
{
    return views_inside(fields, msg_struct, msg, len, 0);
}

bool rs_pb_take_bytes(pb_istream_t *s, const uint8_t *msg, size_t len, struct rs_pb_view *v)
{
    uint32_t n;

    if (!pb_decode_varint32(s, &n))
        return false;
    if (n > s->bytes_left)
        PB_RETURN_ERROR(s, "length runs past the end of the message");
    v->p = msg + (len - s->bytes_left);
    v->len = n;
    v->set = true;
    return pb_read(s, NULL, n);
}

const char *rs_pb_next_field(pb_istream_t *s, pb_wire_type_t *wt, uint32_t *tag)
{
    bool eof;

    if (!pb_decode_tag(s, wt, tag, &eof))
        return eof ? "truncated field" : PB_GET_ERROR(s);
    if (*tag == 0)
        return "field number 0";
    return NULL;
}

size_t rs_pb_put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}
