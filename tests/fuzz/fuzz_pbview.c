/* tests/fuzz/fuzz_pbview.c: the protobuf views of proto/pbview.c and the request decoders of
 * workers/bulk over peer bytes.
 *
 * Input: a selector byte (mod 3), then:
 *   0  a raw message, decoded the ways the Bulk service decodes requests: nanopb with views
 *      bound (GetRequest, StatRequest, DeleteRequest, ListRequest, as get.c, unary.c and
 *      list.c do through rs_bulk_decode), and the hand-written field loop of put.c's
 *      put_parse() (static, so reproduced here step by step with the same primitives:
 *      rs_pb_next_field, rs_pb_take_bytes, pb_decode_ex with PB_DECODE_NOINIT);
 *   1  a GetRequest built from the input (offset, length, chunk_size, name, optional unknown
 *      fields), encoded by hand with rs_pb_put_varint, then decoded;
 *   2  a 64-bit value for rs_pb_put_varint.
 * Invariants: every view lies inside the message (and for 1: is exactly the name written, at
 * the place written); a decoded GetRequest has the values encoded; rs_pb_take_bytes consumes
 * exactly its varint and payload; varints round-trip through nanopb in 1..10 bytes. */
#include <string.h>
#include <pb_decode.h>
#include "bulk.pb.h"
#include "fuzz.h"
#include "proto/pbview.h"

static void check_inside(const struct rs_pb_view *v, const uint8_t *msg, size_t len)
{
    RS_FUZZ_CHECK(rs_pb_view_inside(v, msg, len));
    if (v->set)
        RS_FUZZ_CHECK(v->p >= msg && v->p + v->len <= msg + len);
}

/* A request with one string field bound to a view, decoded as rs_bulk_decode() does. */
static void decode_one(const uint8_t *msg, size_t len, const pb_msgdesc_t *fields, void *dst,
                       pb_callback_t *cb)
{
    struct rs_pb_view v = { 0 };
    pb_istream_t s = pb_istream_from_buffer(msg, len);

    rs_pb_view_bind(cb, &v);
    /* What rs_bulk_decode() accepts: pb_decode() and then rs_pb_views_inside(). */
    if (pb_decode(&s, fields, dst) && rs_pb_views_inside(fields, dst, msg, len))
        check_inside(&v, msg, len);
}

/* put.c's put_parse(), step for step. */
static void put_parse_like(const uint8_t *msg, size_t len)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);
    ringstream_v1_PutHeader hdr = ringstream_v1_PutHeader_init_zero;
    struct rs_pb_view name = { 0 }, sha = { 0 }, data = { 0 };
    bool header_last = false;
    pb_wire_type_t wt;
    uint32_t tag;

    while (s.bytes_left > 0) {
        const char *why = rs_pb_next_field(&s, &wt, &tag);

        if (why != NULL)
            return;
        if ((tag == 1 || tag == 2) && wt != PB_WT_STRING)
            return;
        if (tag == 1 || tag == 2) {
            struct rs_pb_view sub = { 0 };
            size_t before = s.bytes_left;

            if (!rs_pb_take_bytes(&s, msg, len, &sub))
                return;
            check_inside(&sub, msg, len);
            /* The payload ends where the stream now stands. */
            RS_FUZZ_CHECK(sub.p + sub.len == msg + (len - s.bytes_left));
            RS_FUZZ_CHECK(before - s.bytes_left > sub.len);
            if (tag == 2) {
                data = sub;
                header_last = false;
                continue;
            }
            pb_istream_t hs = pb_istream_from_buffer(sub.p, sub.len);
            unsigned flags = header_last ? PB_DECODE_NOINIT : 0;

            if (flags == 0) {
                name = (struct rs_pb_view){ 0 };
                sha = (struct rs_pb_view){ 0 };
            }
            rs_pb_view_bind(&hdr.name, &name);
            rs_pb_view_bind(&hdr.sha256, &sha);
            if (!pb_decode_ex(&hs, ringstream_v1_PutHeader_fields, &hdr, flags))
                return;
            header_last = true;
        } else if (!pb_skip_field(&s, wt)) {
            return;
        }
    }
    /* put_parse() refuses the message here when a view is outside it: a name or sha256 sent
     * with a scalar wire type (regress-put-name-as-varint) points into nanopb's stack. */
    if (!rs_pb_view_inside(&name, msg, len) || !rs_pb_view_inside(&sha, msg, len))
        return;
    RS_FUZZ_CHECK(rs_pb_views_inside(ringstream_v1_PutHeader_fields, &hdr, msg, len));
    check_inside(&name, msg, len);
    check_inside(&sha, msg, len);
    check_inside(&data, msg, len);
}

static void raw(const uint8_t *msg, size_t len)
{
    ringstream_v1_GetRequest get = ringstream_v1_GetRequest_init_zero;
    ringstream_v1_StatRequest stat = ringstream_v1_StatRequest_init_zero;
    ringstream_v1_DeleteRequest del = ringstream_v1_DeleteRequest_init_zero;
    ringstream_v1_ListRequest list = ringstream_v1_ListRequest_init_zero;
    /* A copy of exactly |len| bytes: a read past the message is a heap overflow. */
    uint8_t *m = malloc(len == 0 ? 1 : len);

    RS_FUZZ_CHECK(m != NULL);
    memcpy(m, msg, len);
    decode_one(m, len, ringstream_v1_GetRequest_fields, &get, &get.name);
    decode_one(m, len, ringstream_v1_StatRequest_fields, &stat, &stat.name);
    decode_one(m, len, ringstream_v1_DeleteRequest_fields, &del, &del.name);
    decode_one(m, len, ringstream_v1_ListRequest_fields, &list, &list.prefix);
    put_parse_like(m, len);
    free(m);
}

static size_t put_field_varint(uint8_t *p, uint32_t field, uint64_t v)
{
    size_t n = rs_pb_put_varint(p, (uint64_t)field << 3 | PB_WT_VARINT);

    return n + rs_pb_put_varint(p + n, v);
}

static void get_roundtrip(struct rs_fuzz_in *in)
{
    ringstream_v1_GetRequest req = ringstream_v1_GetRequest_init_zero;
    struct rs_pb_view v = { 0 };
    uint64_t offset = 0, length = 0;
    uint32_t chunk = 0;
    uint8_t ctl = rs_fuzz_u8(in);
    const uint8_t *name;
    size_t nlen, n = 0, name_at;
    uint8_t *msg;
    pb_istream_t s;

    for (int i = 0; i < 8; i++)
        offset = offset << 8 | rs_fuzz_u8(in);
    for (int i = 0; i < 8; i++)
        length = length << 8 | rs_fuzz_u8(in);
    for (int i = 0; i < 4; i++)
        chunk = chunk << 8 | rs_fuzz_u8(in);
    name = rs_fuzz_take(in, in->left, &nlen);
    msg = malloc(nlen + 64);
    RS_FUZZ_CHECK(msg != NULL);
    if (ctl & 1)
        n += put_field_varint(msg + n, 15, offset); /* unknown field: skipped */
    n += rs_pb_put_varint(msg + n, 1 << 3 | PB_WT_STRING);
    n += rs_pb_put_varint(msg + n, nlen);
    name_at = n;
    memcpy(msg + n, name, nlen);
    n += nlen;
    /* proto3 leaves zeros out; ctl bit 2 writes them anyway. */
    if (offset != 0 || (ctl & 2))
        n += put_field_varint(msg + n, 2, offset);
    if (length != 0 || (ctl & 2))
        n += put_field_varint(msg + n, 3, length);
    if (chunk != 0 || (ctl & 2))
        n += put_field_varint(msg + n, 4, chunk);
    s = pb_istream_from_buffer(msg, n);
    rs_pb_view_bind(&req.name, &v);
    RS_FUZZ_CHECK(pb_decode(&s, ringstream_v1_GetRequest_fields, &req));
    RS_FUZZ_CHECK(v.set && v.p == msg + name_at && v.len == nlen);
    RS_FUZZ_CHECK(req.offset == offset && req.length == length && req.chunk_size == chunk);
    free(msg);
}

static void varint_roundtrip(struct rs_fuzz_in *in)
{
    uint64_t v = 0, back = 0;
    uint8_t buf[10];
    size_t n, want = 1;
    pb_istream_t s;

    for (int i = 0; i < 8; i++)
        v = v << 8 | rs_fuzz_u8(in);
    v >>= rs_fuzz_u8(in) % 64; /* short values as often as long ones */
    for (uint64_t t = v; t >= 0x80; t >>= 7)
        want++;
    n = rs_pb_put_varint(buf, v);
    RS_FUZZ_CHECK(n == want && n <= 10);
    s = pb_istream_from_buffer(buf, n);
    RS_FUZZ_CHECK(pb_decode_varint(&s, &back) && back == v && s.bytes_left == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rs_fuzz_in in = { data, size };

    switch (rs_fuzz_u8(&in) % 3) {
    case 0:
        raw(in.p, in.left);
        break;
    case 1:
        get_roundtrip(&in);
        break;
    case 2:
        varint_roundtrip(&in);
        break;
    }
    return 0;
}
