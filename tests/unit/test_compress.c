/* tests/unit/test_compress.c: gzip for gRPC messages, including a decompression bomb. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "proto/compress.h"
#include "tests/unit/runner.h"

static void test_round_trip_across_iovecs(void)
{
    static uint8_t a[100000], b[77];
    struct iovec iov[2] = { { a, sizeof(a) }, { b, sizeof(b) } };
    uint8_t *z = NULL, *out = NULL;
    size_t zlen = 0, outlen = 0, i;

    for (i = 0; i < sizeof(a); i++)
        a[i] = (uint8_t)(i * 7 + i / 300);
    memset(b, 'b', sizeof(b));
    CU_ASSERT_EQUAL_FATAL(rs_gzip_deflate(iov, 2, &z, &zlen), 0);
    CU_ASSERT(zlen > 18 && z[0] == 0x1f && z[1] == 0x8b); /* a gzip member */
    CU_ASSERT_EQUAL_FATAL(rs_gzip_inflate(z, zlen, sizeof(a) + sizeof(b), &out, &outlen), 0);
    CU_ASSERT_EQUAL(outlen, sizeof(a) + sizeof(b));
    CU_ASSERT(memcmp(out, a, sizeof(a)) == 0);
    CU_ASSERT(memcmp(out + sizeof(a), b, sizeof(b)) == 0);
    free(z);
    free(out);
}

static void test_empty_message(void)
{
    uint8_t *z = NULL, *out = (uint8_t *)1;
    size_t zlen = 0, outlen = 1;

    CU_ASSERT_EQUAL_FATAL(rs_gzip_deflate(NULL, 0, &z, &zlen), 0);
    CU_ASSERT_EQUAL(rs_gzip_inflate(z, zlen, 100, &out, &outlen), 0);
    CU_ASSERT_EQUAL(outlen, 0);
    CU_ASSERT_PTR_NULL(out);
    free(z);
}

/* 64 MiB of zeros deflate to ~64 KiB; with a 4 MiB limit inflation must stop at the limit. */
static void test_bomb_stops_at_max(void)
{
    size_t big = 64u << 20, zlen = 0, outlen = 0;
    uint8_t *zeros = calloc(1, big), *z = NULL, *out = NULL;
    struct iovec iov = { zeros, big };

    CU_ASSERT_PTR_NOT_NULL_FATAL(zeros);
    CU_ASSERT_EQUAL_FATAL(rs_gzip_deflate(&iov, 1, &z, &zlen), 0);
    free(zeros);
    CU_ASSERT(zlen < (1u << 20));
    CU_ASSERT_EQUAL(rs_gzip_inflate(z, zlen, 4u << 20, &out, &outlen), -EMSGSIZE);
    CU_ASSERT_PTR_NULL(out);
    free(z);
}

static void test_exactly_max_is_accepted(void)
{
    static uint8_t data[4096];
    struct iovec iov = { data, sizeof(data) };
    uint8_t *z = NULL, *out = NULL;
    size_t zlen = 0, outlen = 0;

    memset(data, 'x', sizeof(data));
    CU_ASSERT_EQUAL_FATAL(rs_gzip_deflate(&iov, 1, &z, &zlen), 0);
    CU_ASSERT_EQUAL(rs_gzip_inflate(z, zlen, sizeof(data), &out, &outlen), 0);
    CU_ASSERT_EQUAL(outlen, sizeof(data));
    free(out);
    out = NULL;
    CU_ASSERT_EQUAL(rs_gzip_inflate(z, zlen, sizeof(data) - 1, &out, &outlen), -EMSGSIZE);
    free(z);
}

static void test_corrupt_truncated_and_trailing_input(void)
{
    static const uint8_t garbage[] = "this is not gzip at all";
    static uint8_t data[1000];
    struct iovec iov = { data, sizeof(data) };
    uint8_t *z = NULL, *out = NULL, *longer;
    size_t zlen = 0, outlen = 0;

    CU_ASSERT_EQUAL(rs_gzip_inflate(garbage, sizeof(garbage), 1000, &out, &outlen), -EINVAL);
    CU_ASSERT_EQUAL_FATAL(rs_gzip_deflate(&iov, 1, &z, &zlen), 0);
    CU_ASSERT_EQUAL(rs_gzip_inflate(z, zlen - 4, 1000, &out, &outlen), -EINVAL); /* truncated */
    longer = malloc(zlen + 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(longer);
    memcpy(longer, z, zlen);
    memcpy(longer + zlen, "xyz", 3);
    CU_ASSERT_EQUAL(rs_gzip_inflate(longer, zlen + 3, 1000, &out, &outlen), -EINVAL);
    z[zlen - 1] ^= 0xff; /* ISIZE trailer no longer matches */
    CU_ASSERT_EQUAL(rs_gzip_inflate(z, zlen, 1000, &out, &outlen), -EINVAL);
    free(longer);
    free(z);
}

static CU_TestInfo tests[] = {
    { "round trip across iovecs", test_round_trip_across_iovecs },
    { "empty message", test_empty_message },
    { "bomb stops at max", test_bomb_stops_at_max },
    { "exactly max is accepted, one less refused", test_exactly_max_is_accepted },
    { "corrupt, truncated and trailing input", test_corrupt_truncated_and_trailing_input },
    CU_TEST_INFO_NULL,
};
static CU_SuiteInfo suites[] = {
    { "proto/compress", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
