/* tests/unit/test_interop_codec.c: the hand-written wire code of workers/interop: the payload
 * field headers it encodes and the response_parameters cursor it reads requests with, checked
 * against nanopb, plus the nanopb behaviour its zero-copy views rely on. */
#include "workers/interop/interop.h"
#include "tests/unit/runner.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "grpc_testing.pb.h"
#include "proto/pbview.h"

/* head + |size| zeros, decoded by nanopb as a StreamingOutputCallResponse. */
static void check_head_roundtrip(uint32_t size)
{
    uint8_t head[RS_INTEROP_PAYLOAD_HEAD_MAX];
    size_t hlen = rs_interop_payload_head(head, size);
    uint8_t *msg = calloc(1, hlen + size);
    grpc_testing_StreamingOutputCallResponse resp =
            grpc_testing_StreamingOutputCallResponse_init_zero;
    struct rs_pb_view body = { 0 };
    pb_istream_t s;

    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    CU_ASSERT(hlen >= 2 && hlen <= RS_INTEROP_PAYLOAD_HEAD_MAX);
    memcpy(msg, head, hlen);
    rs_pb_view_bind(&resp.payload.body, &body);
    s = pb_istream_from_buffer(msg, hlen + size);
    CU_ASSERT_FATAL(pb_decode(&s, grpc_testing_StreamingOutputCallResponse_fields, &resp));
    CU_ASSERT(resp.has_payload);
    CU_ASSERT_EQUAL(resp.payload.type, grpc_testing_PayloadType_COMPRESSABLE);
    if (size == 0) {
        CU_ASSERT(!body.set);
    } else {
        CU_ASSERT(body.set);
        CU_ASSERT_EQUAL(body.len, size);
        CU_ASSERT(body.p == msg + hlen); /* the body is what follows the head */
    }
    free(msg);
}

static void test_payload_head_roundtrips(void)
{
    static const uint32_t sizes[] = { 0,     1,     125,    126,     127,     128,    16383,
                                      16384, 27182, 271828, 2097151, 2097152, 4194304 };
    size_t i;

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        check_head_roundtrip(sizes[i]);
}

static void test_payload_head_exact_bytes(void)
{
    uint8_t head[RS_INTEROP_PAYLOAD_HEAD_MAX];
    static const uint8_t empty[] = { 0x0a, 0x00 };
    static const uint8_t one[] = { 0x0a, 0x03, 0x12, 0x01 };
    static const uint8_t big[] = { 0x0a, 0x83, 0x01, 0x12, 0x80, 0x01 }; /* body 128 */

    CU_ASSERT_EQUAL(rs_interop_payload_head(head, 0), sizeof(empty));
    CU_ASSERT(memcmp(head, empty, sizeof(empty)) == 0);
    CU_ASSERT_EQUAL(rs_interop_payload_head(head, 1), sizeof(one));
    CU_ASSERT(memcmp(head, one, sizeof(one)) == 0);
    CU_ASSERT_EQUAL(rs_interop_payload_head(head, 128), sizeof(big));
    CU_ASSERT(memcmp(head, big, sizeof(big)) == 0);
}

static void test_payload_head_largest(void)
{
    uint8_t head[RS_INTEROP_PAYLOAD_HEAD_MAX];

    /* 0xffffffff + 6 needs a 5-byte varint, the body length too: 12 bytes. */
    CU_ASSERT_EQUAL(rs_interop_payload_head(head, UINT32_MAX), RS_INTEROP_PAYLOAD_HEAD_MAX);
    CU_ASSERT_EQUAL(rs_interop_payload_head(head, INT32_MAX), RS_INTEROP_PAYLOAD_HEAD_MAX);
}

/* --- the response_parameters cursor -------------------------------------------------- */

struct rp_list {
    const grpc_testing_ResponseParameters *v;
    size_t n;
};

static bool encode_rps(pb_ostream_t *s, const pb_field_t *field, void *const *arg)
{
    const struct rp_list *l = *arg;
    size_t i;

    for (i = 0; i < l->n; i++)
        if (!pb_encode_tag_for_field(s, field) ||
            !pb_encode_submessage(s, grpc_testing_ResponseParameters_fields, &l->v[i]))
            return false;
    return true;
}

static bool encode_body(pb_ostream_t *s, const pb_field_t *field, void *const *arg)
{
    static const uint8_t body[300];

    return pb_encode_tag_for_field(s, field) && pb_encode_string(s, body, sizeof(body));
}

/* A request with every field set, the entries in |l|; returns its length. */
static size_t encode_request(uint8_t *buf, size_t cap, struct rp_list *l)
{
    grpc_testing_StreamingOutputCallRequest req = grpc_testing_StreamingOutputCallRequest_init_zero;
    pb_ostream_t s = pb_ostream_from_buffer(buf, cap);

    req.response_parameters.funcs.encode = encode_rps;
    req.response_parameters.arg = l;
    req.has_payload = true;
    req.payload.body.funcs.encode = encode_body;
    req.has_response_compressed = true;
    req.response_compressed.value = true;
    req.has_response_status = true;
    req.response_status.code = 2;
    if (!pb_encode(&s, grpc_testing_StreamingOutputCallRequest_fields, &req))
        return 0;
    return s.bytes_written;
}

static const grpc_testing_ResponseParameters rps[] = {
    { .size = 31415 },
    { .size = 9, .interval_us = 1000 },
    { .size = 0, .has_compressed = true, .compressed = { .value = true } },
    { .size = -5, .has_compressed = true, .compressed = { .value = false } },
    { .size = 2147483647, .interval_us = -1 },
};

static void test_params_in_order(void)
{
    struct rp_list l = { rps, sizeof(rps) / sizeof(rps[0]) };
    struct rs_interop_params p;
    uint8_t buf[1024];
    size_t len = encode_request(buf, sizeof(buf), &l), pos = 0, i;

    CU_ASSERT_FATAL(len > 0);
    for (i = 0; i < l.n; i++) {
        size_t before = pos;

        CU_ASSERT_EQUAL_FATAL(rs_interop_next_params(buf, len, &pos, &p), 1);
        CU_ASSERT(pos > before && pos <= len);
        CU_ASSERT_EQUAL(p.size, rps[i].size);
        CU_ASSERT_EQUAL(p.interval_us, rps[i].interval_us);
        CU_ASSERT_EQUAL(p.compressed, rps[i].has_compressed && rps[i].compressed.value);
    }
    CU_ASSERT_EQUAL(rs_interop_next_params(buf, len, &pos, &p), 0);
    CU_ASSERT_EQUAL(pos, len);
    CU_ASSERT_EQUAL(rs_interop_next_params(buf, len, &pos, &p), 0); /* stays at the end */
}

static void test_params_none(void)
{
    struct rp_list l = { rps, 0 };
    struct rs_interop_params p;
    uint8_t buf[1024];
    size_t len = encode_request(buf, sizeof(buf), &l), pos = 0;

    CU_ASSERT_FATAL(len > 0);
    CU_ASSERT_EQUAL(rs_interop_next_params(buf, len, &pos, &p), 0);
    CU_ASSERT_EQUAL(pos, len);
    pos = 0;
    CU_ASSERT_EQUAL(rs_interop_next_params(buf, 0, &pos, &p), 0); /* the empty message */
}

/* Every proper prefix of a request that ends inside an entry is malformed from there, and
 * the cursor never reads past the cut (run under ASan to see it). */
static void test_params_every_cut(void)
{
    struct rp_list l = { rps, 2 };
    struct rs_interop_params p;
    uint8_t buf[1024];
    size_t len = encode_request(buf, sizeof(buf), &l), cut;

    CU_ASSERT_FATAL(len > 0);
    for (cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut > 0 ? cut : 1);
        size_t pos = 0;
        int ret, n = 0;

        CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
        memcpy(copy, buf, cut);
        while ((ret = rs_interop_next_params(copy, cut, &pos, &p)) == 1)
            n++;
        CU_ASSERT(n <= 2);
        CU_ASSERT(ret == 0 || ret == -EBADMSG);
        if (ret == 0)
            CU_ASSERT_EQUAL(pos, cut);
        free(copy);
    }
}

static void test_params_hostile(void)
{
    static const struct {
        const char *name;
        uint8_t bytes[16];
        size_t len;
    } cases[] = {
        { "entry with varint wire type", { 0x10, 0x01 }, 2 },
        { "entry length past the end", { 0x12, 0x05, 0x08, 0x01 }, 4 },
        { "entry with a truncated varint inside", { 0x12, 0x01, 0x08 }, 3 },
        { "unterminated tag varint", { 0x80 }, 1 },
        { "zero tag", { 0x00 }, 1 },
        { "field number 0 with a type", { 0x02, 0x00 }, 2 },
        { "unknown field truncated", { 0x1a, 0x09, 0x00 }, 3 },
        { "invalid wire type 7", { 0x0f }, 1 },
        { "entry with an 11-byte varint inside",
          { 0x12, 0x0c, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 },
          14 },
    };
    struct rs_interop_params p;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t pos = 0;

        if (rs_interop_next_params(cases[i].bytes, cases[i].len, &pos, &p) != -EBADMSG)
            CU_FAIL(cases[i].name);
        CU_ASSERT_EQUAL(pos, 0); /* unchanged */
    }
}

static void test_params_pos_past_end(void)
{
    static const uint8_t msg[] = { 0x12, 0x00 };
    struct rs_interop_params p;
    size_t pos = 3;

    CU_ASSERT_EQUAL(rs_interop_next_params(msg, sizeof(msg), &pos, &p), -EBADMSG);
    pos = 0;
    CU_ASSERT_EQUAL(rs_interop_next_params(msg, sizeof(msg), &pos, &p), 1); /* empty entry */
    CU_ASSERT_EQUAL(p.size, 0);
    CU_ASSERT_EQUAL(p.interval_us, 0);
    CU_ASSERT(!p.compressed);
}

/* An unbound callback field is skipped: a 1 MiB body needs no buffer. */
static void test_nanopb_skips_unbound_body(void)
{
    size_t n = 1u << 20, len;
    uint8_t head[RS_INTEROP_PAYLOAD_HEAD_MAX];
    uint8_t *msg;
    grpc_testing_SimpleRequest req = grpc_testing_SimpleRequest_init_zero;
    pb_istream_t s;

    /* SimpleRequest.payload is field 3: retag the head's first byte. */
    len = rs_interop_payload_head(head, (uint32_t)n);
    msg = calloc(1, len + n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    memcpy(msg, head, len);
    msg[0] = (3u << 3) | PB_WT_STRING;
    s = pb_istream_from_buffer(msg, len + n);
    CU_ASSERT(pb_decode(&s, grpc_testing_SimpleRequest_fields, &req));
    CU_ASSERT(req.has_payload);
    free(msg);
}

static CU_TestInfo tests[] = {
    { "payload head round-trips through nanopb", test_payload_head_roundtrips },
    { "payload head exact bytes", test_payload_head_exact_bytes },
    { "payload head at the largest sizes", test_payload_head_largest },
    { "params come out in order, then the end", test_params_in_order },
    { "a request without params", test_params_none },
    { "params at every cut of a request", test_params_every_cut },
    { "hostile params are malformed", test_params_hostile },
    { "params cursor past the end", test_params_pos_past_end },
    { "nanopb skips an unbound body", test_nanopb_skips_unbound_body },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "workers/interop codec", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
