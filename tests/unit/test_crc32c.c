/* tests/unit/test_crc32c.c: core/crc32c against published CRC32C check values (RFC 3720
 * appendix B.4, the "123456789" check value) and a bitwise reference at every split point. */
#include "core/crc32c.h"
#include "tests/unit/runner.h"
#include <stdlib.h>
#include <string.h>

/* The textbook reflected bitwise CRC32C: slow and obviously right. */
static uint32_t crc32c_ref(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    while (len-- > 0) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void test_check_values(void)
{
    uint8_t buf[32];

    CU_ASSERT_EQUAL(rs_crc32c(0, "123456789", 9), 0xE3069283u);
    CU_ASSERT_EQUAL(rs_crc32c(0, "", 0), 0u);
    /* RFC 3720 B.4: 32 bytes of zeros, of ones, incrementing, decrementing */
    memset(buf, 0, sizeof(buf));
    CU_ASSERT_EQUAL(rs_crc32c(0, buf, sizeof(buf)), 0x8A9136AAu);
    memset(buf, 0xff, sizeof(buf));
    CU_ASSERT_EQUAL(rs_crc32c(0, buf, sizeof(buf)), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    CU_ASSERT_EQUAL(rs_crc32c(0, buf, sizeof(buf)), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    CU_ASSERT_EQUAL(rs_crc32c(0, buf, sizeof(buf)), 0x113FDB5Cu);
}

static void test_any_split_matches_reference(void)
{
    enum {
        N = 1031
    };
    uint8_t *data = malloc(N);
    uint32_t want;

    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    srand(7);
    for (size_t i = 0; i < N; i++)
        data[i] = (uint8_t)rand();
    want = crc32c_ref(0, data, N);
    CU_ASSERT_EQUAL(rs_crc32c(0, data, N), want);
    for (size_t cut = 0; cut <= N; cut++) {
        uint32_t c = rs_crc32c(rs_crc32c(0, data, cut), data + cut, N - cut);

        if (c != want) {
            CU_FAIL("split CRC differs from the one-shot CRC");
            break;
        }
    }
    /* every length and misalignment up to 64 bytes, where SIMD kernels take their tail paths */
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len <= 64; len++)
            CU_ASSERT_EQUAL(rs_crc32c(0, data + off, len), crc32c_ref(0, data + off, len));
    free(data);
}

static CU_TestInfo tests[] = {
    { "published check values", test_check_values },
    { "any split matches the bitwise reference", test_any_split_matches_reference },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "core/crc32c", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
