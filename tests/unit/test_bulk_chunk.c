/* tests/unit/test_bulk_chunk.c: the hand-written Chunk encoder of the Bulk service
 * (rs_bulk_chunk_head in workers/bulk/bulk.c), decoded back with nanopb's generated Chunk
 * description: data, offset and crc32c must come out as the contract (proto/bulk.proto) says. */
#include "workers/bulk/bulk_internal.h"
#include "core/crc32c.h"
#include "tests/unit/runner.h"
#include <pb_decode.h>
#include <stdlib.h>
#include <string.h>

/* A Chunk as a client decodes it: head followed by |len| data bytes. */
struct decoded {
    ringstream_v1_Chunk msg;
    struct rs_pb_view data;
    bool ok;
};

static uint8_t wire[RS_BULK_CHUNK_HEAD_MAX + 70000];

static size_t encode(const uint8_t *data, size_t len, uint64_t offset, uint32_t crc)
{
    size_t n = rs_bulk_chunk_head(wire, len, offset, crc);

    CU_ASSERT_FATAL(n <= RS_BULK_CHUNK_HEAD_MAX);
    CU_ASSERT_FATAL(n + len <= sizeof(wire));
    if (len > 0) /* memcpy from NULL is undefined even for 0 bytes */
        memcpy(wire + n, data, len);
    return n + len;
}

static void decode(struct decoded *d, size_t n)
{
    pb_istream_t s = pb_istream_from_buffer(wire, n);

    memset(d, 0, sizeof(*d));
    rs_pb_view_bind(&d->msg.data, &d->data);
    d->ok = pb_decode(&s, ringstream_v1_Chunk_fields, &d->msg);
    if (!d->ok)
        printf("\n  pb_decode: %s", PB_GET_ERROR(&s));
}

/* Looks for field 3 with wire type 5 in the head itself: "always set" means on the wire. */
static bool head_has_crc_field(size_t head_len)
{
    for (size_t i = 0; i < head_len; i++)
        if (wire[i] == ((3u << 3) | PB_WT_32BIT))
            return true;
    return false;
}

static void test_round_trip_with_crc(void)
{
    static uint8_t data[65536];
    struct decoded d;
    uint32_t crc;
    size_t n;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 31 + (i >> 9));
    crc = rs_crc32c(0, data, sizeof(data));
    n = encode(data, sizeof(data), 123456789012ull, crc);
    decode(&d, n);
    CU_ASSERT_TRUE_FATAL(d.ok);
    CU_ASSERT_EQUAL(d.msg.offset, 123456789012ull);
    CU_ASSERT_EQUAL(d.msg.crc32c, crc);
    CU_ASSERT_TRUE(d.data.set);
    CU_ASSERT_EQUAL(d.data.len, sizeof(data));
    CU_ASSERT_PTR_EQUAL(d.data.p, wire + (n - sizeof(data))); /* data goes last */
    CU_ASSERT_EQUAL(memcmp(d.data.p, data, sizeof(data)), 0);
}

static void test_known_crc_value_is_little_endian_fixed32(void)
{
    struct decoded d;
    size_t n = encode((const uint8_t *)"123456789", 9, 0, rs_crc32c(0, "123456789", 9));

    /* offset 0 is left out: crc32c tag, 4 bytes LE, data tag, length 9, the data */
    CU_ASSERT_EQUAL(n, 1 + 4 + 1 + 1 + 9);
    CU_ASSERT_EQUAL(wire[0], 0x1d);
    CU_ASSERT_EQUAL(wire[1], 0x83);
    CU_ASSERT_EQUAL(wire[2], 0x92);
    CU_ASSERT_EQUAL(wire[3], 0x06);
    CU_ASSERT_EQUAL(wire[4], 0xe3);
    CU_ASSERT_EQUAL(wire[5], 0x0a);
    CU_ASSERT_EQUAL(wire[6], 9);
    decode(&d, n);
    CU_ASSERT_TRUE_FATAL(d.ok);
    CU_ASSERT_EQUAL(d.msg.crc32c, 0xE3069283u);
    CU_ASSERT_EQUAL(d.msg.offset, 0);
}

static void test_empty_data_still_carries_crc(void)
{
    struct decoded d;
    size_t n = encode(NULL, 0, 4096, rs_crc32c(0, NULL, 0));

    CU_ASSERT_TRUE(head_has_crc_field(n));
    decode(&d, n);
    CU_ASSERT_TRUE_FATAL(d.ok);
    CU_ASSERT_FALSE(d.data.set); /* proto3: empty bytes are left out */
    CU_ASSERT_EQUAL(d.msg.offset, 4096);
    CU_ASSERT_EQUAL(d.msg.crc32c, 0);
    n = encode(NULL, 0, 0, 0);
    CU_ASSERT_EQUAL(n, 5); /* the crc32c field alone */
    CU_ASSERT_TRUE(head_has_crc_field(n));
}

static void test_largest_head_fits_the_bound(void)
{
    /* 10-byte varints for both the offset and the length */
    size_t n = rs_bulk_chunk_head(wire, SIZE_MAX, UINT64_MAX, 0xffffffffu);

    CU_ASSERT_EQUAL(n, RS_BULK_CHUNK_HEAD_MAX);
}

static void test_varint_boundaries(void)
{
    static const uint8_t data[16385];
    static const uint64_t offsets[] = { 1, 127, 128, 16383, 16384, UINT32_MAX, 1ull << 40 };
    static const size_t lens[] = { 1, 127, 128, 16383, 16384, 16385 };

    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        for (size_t j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
            uint32_t crc = rs_crc32c(0, data, lens[j]);
            struct decoded d;

            decode(&d, encode(data, lens[j], offsets[i], crc));
            CU_ASSERT_TRUE_FATAL(d.ok);
            CU_ASSERT_EQUAL(d.msg.offset, offsets[i]);
            CU_ASSERT_EQUAL(d.msg.crc32c, crc);
            CU_ASSERT_EQUAL(d.data.len, lens[j]);
        }
    }
}

static void test_truncated_chunk_does_not_decode(void)
{
    static const uint8_t data[100];
    size_t n = encode(data, sizeof(data), 7, 1);
    struct decoded d;

    /* cut inside the data and inside the crc32c field: both must fail to decode */
    decode(&d, n - 1);
    CU_ASSERT_FALSE(d.ok);
    decode(&d, 1 + 1 + 3); /* offset field, crc32c tag, 3 of its 4 bytes */
    CU_ASSERT_FALSE(d.ok);
}

static CU_TestInfo tests[] = {
    { "round trip: data by reference, offset and crc32c", test_round_trip_with_crc },
    { "crc32c is a little-endian fixed32 (check value)",
      test_known_crc_value_is_little_endian_fixed32 },
    { "empty data still carries crc32c", test_empty_data_still_carries_crc },
    { "largest head fits RS_BULK_CHUNK_HEAD_MAX", test_largest_head_fits_the_bound },
    { "varint boundaries of offset and length", test_varint_boundaries },
    { "truncated chunk does not decode", test_truncated_chunk_does_not_decode },
    CU_TEST_INFO_NULL,
};
static CU_SuiteInfo suites[] = {
    { "workers/bulk chunk encoding", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
