/* tests/unit/test_pbview.c: proto/pbview: the nanopb behaviour zero-copy views rely on (a bytes
 * callback of a buffer stream sees the read position in stream->state), the varint encoder
 * against known encodings, and the hand parser's primitives on hostile input. */
#include "proto/pbview.h"
#include "tests/unit/runner.h"
#include <stdio.h>
#include <string.h>
#include <pb_decode.h>
#include "grpc_testing.pb.h"
#include "health.pb.h"

/* workers/ take stream->state of a buffer stream as a pointer into the message from inside a
 * bytes callback (buf_read() in pb_decode.c). Pin that nanopb behaviour. */
static void test_view_cb_views_in_place(void)
{
    static const uint8_t msg[] = { 0x0a, 0x03, 'a', 'b', 'c' }; /* service = "abc" */
    grpc_health_v1_HealthCheckRequest req = grpc_health_v1_HealthCheckRequest_init_zero;
    struct rs_pb_view v = { 0 };
    pb_istream_t s = pb_istream_from_buffer(msg, sizeof(msg));

    rs_pb_view_bind(&req.service, &v);
    CU_ASSERT_FATAL(pb_decode(&s, grpc_health_v1_HealthCheckRequest_fields, &req));
    CU_ASSERT(v.set);
    CU_ASSERT(v.p == msg + 2);
    CU_ASSERT_EQUAL(v.len, 3);
    CU_ASSERT(rs_pb_view_inside(&v, msg, sizeof(msg)));
}

/* The same through a submessage: the substream's state still points into the outer buffer. */
static void test_view_cb_views_in_place_nested(void)
{
    static const uint8_t msg[] = { 0x0a, 0x05, 0x12, 0x03, 'a', 'b', 'c' };
    grpc_testing_StreamingInputCallRequest req = grpc_testing_StreamingInputCallRequest_init_zero;
    struct rs_pb_view body = { 0 };
    pb_istream_t s = pb_istream_from_buffer(msg, sizeof(msg));

    rs_pb_view_bind(&req.payload.body, &body);
    CU_ASSERT_FATAL(pb_decode(&s, grpc_testing_StreamingInputCallRequest_fields, &req));
    CU_ASSERT(body.set);
    CU_ASSERT(body.p == msg + 4);
    CU_ASSERT_EQUAL(body.len, 3);
}

/* An absent field leaves its view unset, and an unset view counts as inside. */
static void test_view_absent_field_unset(void)
{
    static const uint8_t msg[1];
    grpc_health_v1_HealthCheckRequest req = grpc_health_v1_HealthCheckRequest_init_zero;
    struct rs_pb_view v = { 0 };
    pb_istream_t s = pb_istream_from_buffer(msg, 0);

    rs_pb_view_bind(&req.service, &v);
    CU_ASSERT_FATAL(pb_decode(&s, grpc_health_v1_HealthCheckRequest_fields, &req));
    CU_ASSERT(!v.set);
    CU_ASSERT(rs_pb_view_inside(&v, msg, 0));
}

/* Found by tests/fuzz/fuzz_pbview: a string field sent as a varint (or fixed32/64) still reaches
 * the callback, as a copy on nanopb's stack, and pb_decode() succeeds: the view then points into
 * a dead stack frame. rs_pb_views_inside() is the check that refuses it. */
static void test_views_inside_refuses_scalar_wire_type(void)
{
    static const uint8_t varint[] = { 0x08, 0x61 }; /* service: varint 'a' */
    static const uint8_t fixed64[] = { 0x09, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h' };
    static const uint8_t good[] = { 0x0a, 0x01, 'a' };
    const struct {
        const uint8_t *msg;
        size_t len;
        bool inside;
    } cases[] = {
        { varint, sizeof(varint), false },
        { fixed64, sizeof(fixed64), false },
        { good, sizeof(good), true },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        grpc_health_v1_HealthCheckRequest req = grpc_health_v1_HealthCheckRequest_init_zero;
        struct rs_pb_view v = { 0 };
        pb_istream_t s = pb_istream_from_buffer(cases[i].msg, cases[i].len);

        rs_pb_view_bind(&req.service, &v);
        CU_ASSERT_FATAL(pb_decode(&s, grpc_health_v1_HealthCheckRequest_fields, &req));
        CU_ASSERT(v.set);
        CU_ASSERT_EQUAL(rs_pb_view_inside(&v, cases[i].msg, cases[i].len), cases[i].inside);
        CU_ASSERT_EQUAL(rs_pb_views_inside(grpc_health_v1_HealthCheckRequest_fields, &req,
                                           cases[i].msg, cases[i].len),
                        cases[i].inside);
    }
}

/* The same one submessage down (payload.body sent as a fixed32). */
static void test_views_inside_refuses_scalar_wire_type_nested(void)
{
    static const uint8_t msg[] = { 0x0a, 0x05, 0x15, 'a', 'b', 'c', 'd' };
    grpc_testing_StreamingInputCallRequest req = grpc_testing_StreamingInputCallRequest_init_zero;
    struct rs_pb_view body = { 0 };
    pb_istream_t s = pb_istream_from_buffer(msg, sizeof(msg));

    rs_pb_view_bind(&req.payload.body, &body);
    CU_ASSERT_FATAL(pb_decode(&s, grpc_testing_StreamingInputCallRequest_fields, &req));
    CU_ASSERT(body.set);
    CU_ASSERT(!rs_pb_views_inside(grpc_testing_StreamingInputCallRequest_fields, &req, msg,
                                  sizeof(msg)));
}

static void test_view_inside_bounds(void)
{
    static const uint8_t msg[8];
    struct rs_pb_view v = { .p = msg + 2, .len = 6, .set = true };

    CU_ASSERT(rs_pb_view_inside(&v, msg, sizeof(msg)));
    v.len = 7; /* one past the end */
    CU_ASSERT(!rs_pb_view_inside(&v, msg, sizeof(msg)));
    v = (struct rs_pb_view){ .p = msg + 1, .len = 0, .set = true };
    CU_ASSERT(!rs_pb_view_inside(&v, msg + 2, 4)); /* before the message */
    v = (struct rs_pb_view){ .p = msg + 8, .len = 0, .set = true };
    CU_ASSERT(rs_pb_view_inside(&v, msg, sizeof(msg))); /* empty, at the very end */
}

static void test_put_varint_known_encodings(void)
{
    static const struct {
        uint64_t v;
        size_t len;
        uint8_t enc[10];
    } cases[] = {
        { 0, 1, { 0x00 } },
        { 127, 1, { 0x7f } },
        { 128, 2, { 0x80, 0x01 } },
        { 300, 2, { 0xac, 0x02 } },
        { UINT64_C(1) << 32, 5, { 0x80, 0x80, 0x80, 0x80, 0x10 } },
        { UINT64_MAX, 10, { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 } },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t out[12];
        size_t n;

        memset(out, 0xee, sizeof(out));
        n = rs_pb_put_varint(out, cases[i].v);
        CU_ASSERT_EQUAL(n, cases[i].len);
        CU_ASSERT(memcmp(out, cases[i].enc, cases[i].len) == 0);
        CU_ASSERT_EQUAL(out[cases[i].len], 0xee); /* nothing written past the varint */
    }
}

/* What nanopb's own decoder reads back is what we wrote. */
static void test_put_varint_roundtrips(void)
{
    static const uint64_t values[] = { 0,         1,     127,        128,
                                       16383,     16384, UINT32_MAX, UINT64_C(1) << 63,
                                       UINT64_MAX };
    size_t i;

    for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint8_t buf[10];
        size_t n = rs_pb_put_varint(buf, values[i]);
        pb_istream_t s = pb_istream_from_buffer(buf, n);
        uint64_t got = 0;

        CU_ASSERT(pb_decode_varint(&s, &got));
        CU_ASSERT_EQUAL(got, values[i]);
        CU_ASSERT_EQUAL(s.bytes_left, 0);
    }
}

static void test_next_field_reads_tag(void)
{
    static const uint8_t msg[] = { 0x08, 0x01, 0x92, 0x01 }; /* 1: varint, 18: bytes */
    pb_istream_t s = pb_istream_from_buffer(msg, sizeof(msg));
    pb_wire_type_t wt;
    uint32_t tag;

    CU_ASSERT_PTR_NULL(rs_pb_next_field(&s, &wt, &tag));
    CU_ASSERT_EQUAL(tag, 1);
    CU_ASSERT_EQUAL(wt, PB_WT_VARINT);
    CU_ASSERT(pb_skip_field(&s, wt));
    CU_ASSERT_PTR_NULL(rs_pb_next_field(&s, &wt, &tag));
    CU_ASSERT_EQUAL(tag, 18);
    CU_ASSERT_EQUAL(wt, PB_WT_STRING);
}

static void test_next_field_malformed(void)
{
    static const struct {
        const char *what;
        size_t len;
        uint8_t msg[8];
    } cases[] = {
        { "empty: no field at all", 0, { 0 } },
        { "truncated tag varint", 1, { 0x80 } },
        { "truncated multi-byte tag varint", 3, { 0xff, 0xff, 0xff } },
        { "tag varint too long", 6, { 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 } },
        { "field number 0, varint", 1, { 0x00 } },
        { "field number 0, bytes", 2, { 0x02, 0x00 } },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pb_istream_t s = pb_istream_from_buffer(cases[i].msg, cases[i].len);
        pb_wire_type_t wt;
        uint32_t tag;
        const char *why = rs_pb_next_field(&s, &wt, &tag);

        CU_ASSERT_PTR_NOT_NULL(why);
        if (why == NULL)
            fprintf(stderr, "\n  accepted: %s\n", cases[i].what);
    }
}

/* next_field() does not judge wire types: it reports 6 and 7 as read, and the caller's
 * pb_skip_field() (or its wire type check) rejects them. */
static void test_next_field_bad_wire_type_left_to_caller(void)
{
    static const uint8_t wt6[] = { 0x0e, 0x00 }, wt7[] = { 0x0f, 0x00 };
    const uint8_t *msgs[] = { wt6, wt7 };
    size_t i;

    for (i = 0; i < 2; i++) {
        pb_istream_t s = pb_istream_from_buffer(msgs[i], 2);
        pb_wire_type_t wt;
        uint32_t tag;

        CU_ASSERT_PTR_NULL(rs_pb_next_field(&s, &wt, &tag));
        CU_ASSERT_EQUAL(tag, 1);
        CU_ASSERT_EQUAL(wt, 6 + i);
        CU_ASSERT(!pb_skip_field(&s, wt));
        CU_ASSERT(strcmp(PB_GET_ERROR(&s), "(none)") != 0);
    }
}

static void test_take_bytes_views_payload(void)
{
    static const uint8_t msg[] = { 0x12, 0x03, 'x', 'y', 'z', 0x08, 0x01 };
    pb_istream_t s = pb_istream_from_buffer(msg, sizeof(msg)); /* reads |msg| itself */
    struct rs_pb_view v = { 0 };

    CU_ASSERT_FATAL(pb_read(&s, NULL, 1));
    CU_ASSERT_FATAL(rs_pb_take_bytes(&s, msg, sizeof(msg), &v));
    CU_ASSERT(v.set);
    CU_ASSERT(v.p == msg + 2);
    CU_ASSERT_EQUAL(v.len, 3);
    CU_ASSERT_EQUAL(s.bytes_left, 2);
}

static void test_take_bytes_malformed(void)
{
    static const struct {
        size_t len;
        uint8_t msg[4];
    } cases[] = {
        { 0, { 0 } },                /* no length */
        { 1, { 0x80 } },             /* truncated length */
        { 2, { 0x02, 'a' } },        /* runs one past the end */
        { 4, { 0xff, 0xff, 0x7f } }, /* far past the end */
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pb_istream_t s = pb_istream_from_buffer(cases[i].msg, cases[i].len);
        struct rs_pb_view v = { 0 };

        CU_ASSERT(!rs_pb_take_bytes(&s, cases[i].msg, cases[i].len, &v));
        CU_ASSERT(!v.set);
        CU_ASSERT(strcmp(PB_GET_ERROR(&s), "(none)") != 0);
    }
}

static CU_TestInfo tests[] = {
    { "view_cb views a bytes field in place", test_view_cb_views_in_place },
    { "view_cb views in place inside a submessage", test_view_cb_views_in_place_nested },
    { "an absent field leaves its view unset", test_view_absent_field_unset },
    { "view_inside bounds", test_view_inside_bounds },
    { "views_inside refuses a string sent with a scalar wire type",
      test_views_inside_refuses_scalar_wire_type },
    { "views_inside refuses it inside a submessage",
      test_views_inside_refuses_scalar_wire_type_nested },
    { "put_varint known encodings", test_put_varint_known_encodings },
    { "put_varint round-trips through nanopb", test_put_varint_roundtrips },
    { "next_field reads tag and wire type", test_next_field_reads_tag },
    { "next_field on malformed input returns why", test_next_field_malformed },
    { "next_field leaves bad wire types to the caller",
      test_next_field_bad_wire_type_left_to_caller },
    { "take_bytes views the payload", test_take_bytes_views_payload },
    { "take_bytes on malformed lengths fails", test_take_bytes_malformed },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "proto/pbview", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
