/* tests/unit/test_sha256.c: core/sha256 against the FIPS 180-2 / CAVP vectors, and streamed
 * updates at awkward split points against a one-shot digest. */
#include "core/sha256.h"
#include "tests/unit/runner.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

/* 1 MiB plus an odd tail, so no split size divides it evenly. */
#define BIG_LEN ((size_t)(1u << 20) + 4099u)

static uint8_t *big;
static uint8_t big_digest[RS_SHA256_LEN]; /* one-shot digest of big, from suite init */

static void hex(const uint8_t *d, char out[2 * RS_SHA256_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < RS_SHA256_LEN; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * RS_SHA256_LEN] = '\0';
}

/* Hashes |len| bytes of |data| in pieces of |step| bytes (the last one shorter). */
static int digest_stepped(const uint8_t *data, size_t len, size_t step, uint8_t out[RS_SHA256_LEN])
{
    struct rs_sha256 h = { 0 };
    size_t off = 0;
    int ret;

    ret = rs_sha256_init(&h);
    if (ret < 0)
        return ret;
    while (off < len) {
        size_t n = len - off < step ? len - off : step;

        ret = rs_sha256_update(&h, data + off, n);
        if (ret < 0)
            goto out;
        off += n;
    }
    ret = rs_sha256_final(&h, out);
out:
    rs_sha256_free(&h);
    return ret;
}

static void check_vector(const void *msg, size_t len, const char *want)
{
    uint8_t d[RS_SHA256_LEN];
    char got[2 * RS_SHA256_LEN + 1];

    CU_ASSERT_EQUAL_FATAL(digest_stepped(msg, len, len ? len : 1, d), 0);
    hex(d, got);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "\n  len %zu: got %s\n  want      %s\n", len, got, want);
    CU_ASSERT_STRING_EQUAL(got, want);
}

static int suite_init(void)
{
    uint64_t x = 0x9e3779b97f4a7c15u; /* xorshift64: reproducible, not all-equal bytes */
    unsigned int n = 0;
    size_t i;

    big = malloc(BIG_LEN);
    if (big == NULL)
        return -1;
    for (i = 0; i < BIG_LEN; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big[i] = (uint8_t)(x >> 32);
    }
    /* Reference computed outside core/sha256, straight through EVP_Digest. */
    if (EVP_Digest(big, BIG_LEN, big_digest, &n, EVP_sha256(), NULL) != 1 || n != RS_SHA256_LEN)
        return -1;
    return 0;
}

static int suite_cleanup(void)
{
    free(big);
    big = NULL;
    return 0;
}

static void test_empty_message(void)
{
    check_vector("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_abc(void)
{
    check_vector("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_448_bit_message(void)
{
    static const char m[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

    CU_ASSERT_EQUAL(sizeof(m) - 1, 448 / 8);
    check_vector(m, sizeof(m) - 1,
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_896_bit_message(void)
{
    static const char m[] = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                            "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";

    CU_ASSERT_EQUAL(sizeof(m) - 1, 896 / 8);
    check_vector(m, sizeof(m) - 1,
                 "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_one_million_a(void)
{
    static const char want[] = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    const size_t len = 1000000;
    uint8_t *m = malloc(len);
    uint8_t d[RS_SHA256_LEN];
    char got[2 * RS_SHA256_LEN + 1];

    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    memset(m, 'a', len);
    check_vector(m, len, want);
    /* Same vector in 1000-byte updates, the way FIPS 180-2 appendix B.3 is often fed. */
    CU_ASSERT_EQUAL(digest_stepped(m, len, 1000, d), 0);
    hex(d, got);
    CU_ASSERT_STRING_EQUAL(got, want);
    free(m);
}

static void test_one_shot_matches_evp_reference(void)
{
    uint8_t d[RS_SHA256_LEN];

    CU_ASSERT_EQUAL_FATAL(digest_stepped(big, BIG_LEN, BIG_LEN, d), 0);
    CU_ASSERT_EQUAL(memcmp(d, big_digest, RS_SHA256_LEN), 0);
}

/* Sizes around the 64-byte block and 4 KiB page boundaries, plus primes and odd numbers. */
static const size_t split_sizes[] = { 1,     2,     3,     7,     31,    63,     64,     65,
                                      127,   129,   1000,  4095,  4096,  4097,   8191,   12289,
                                      16383, 16385, 65535, 65537, 99991, 262147, 1048575 };

static void test_streamed_updates_match_one_shot(void)
{
    size_t i;

    for (i = 0; i < sizeof(split_sizes) / sizeof(split_sizes[0]); i++) {
        uint8_t d[RS_SHA256_LEN];

        CU_ASSERT_EQUAL_FATAL(digest_stepped(big, BIG_LEN, split_sizes[i], d), 0);
        if (memcmp(d, big_digest, RS_SHA256_LEN) != 0)
            fprintf(stderr, "\n  pieces of %zu bytes differ from one-shot\n", split_sizes[i]);
        CU_ASSERT_EQUAL(memcmp(d, big_digest, RS_SHA256_LEN), 0);
    }
}

/* One cut at |at|: a short head, then everything else in one update (and the reverse). */
static void test_single_cut_matches_one_shot(void)
{
    size_t i;

    for (i = 0; i < sizeof(split_sizes) / sizeof(split_sizes[0]); i++) {
        const size_t cuts[2] = { split_sizes[i], BIG_LEN - split_sizes[i] };
        size_t j;

        for (j = 0; j < 2; j++) {
            struct rs_sha256 h = { 0 };
            uint8_t d[RS_SHA256_LEN];

            CU_ASSERT_EQUAL_FATAL(rs_sha256_init(&h), 0);
            CU_ASSERT_EQUAL(rs_sha256_update(&h, big, cuts[j]), 0);
            CU_ASSERT_EQUAL(rs_sha256_update(&h, big + cuts[j], BIG_LEN - cuts[j]), 0);
            CU_ASSERT_EQUAL(rs_sha256_final(&h, d), 0);
            rs_sha256_free(&h);
            CU_ASSERT_EQUAL(memcmp(d, big_digest, RS_SHA256_LEN), 0);
        }
    }
}

static void test_empty_updates_change_nothing(void)
{
    struct rs_sha256 h = { 0 };
    uint8_t d[RS_SHA256_LEN];
    char got[2 * RS_SHA256_LEN + 1];

    CU_ASSERT_EQUAL_FATAL(rs_sha256_init(&h), 0);
    CU_ASSERT_EQUAL(rs_sha256_update(&h, NULL, 0), 0);
    CU_ASSERT_EQUAL(rs_sha256_update(&h, "a", 1), 0);
    CU_ASSERT_EQUAL(rs_sha256_update(&h, "", 0), 0);
    CU_ASSERT_EQUAL(rs_sha256_update(&h, "bc", 2), 0);
    CU_ASSERT_EQUAL(rs_sha256_final(&h, d), 0);
    rs_sha256_free(&h);
    hex(d, got);
    CU_ASSERT_STRING_EQUAL(got, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_free_accepts_zeroed_and_freed_context(void)
{
    struct rs_sha256 h = { 0 };

    rs_sha256_free(&h);
    CU_ASSERT_PTR_NULL(h.impl);
    CU_ASSERT_EQUAL_FATAL(rs_sha256_init(&h), 0);
    rs_sha256_free(&h);
    rs_sha256_free(&h);
    CU_ASSERT_PTR_NULL(h.impl);
}

static void test_use_after_free_fails_with_eio(void)
{
    struct rs_sha256 h = { 0 };
    uint8_t d[RS_SHA256_LEN];

    CU_ASSERT_EQUAL_FATAL(rs_sha256_init(&h), 0);
    rs_sha256_free(&h);
    CU_ASSERT_EQUAL(rs_sha256_update(&h, "abc", 3), -EIO);
    CU_ASSERT_EQUAL(rs_sha256_final(&h, d), -EIO);
}

static void test_reinit_after_final_starts_over(void)
{
    struct rs_sha256 h = { 0 };
    uint8_t d1[RS_SHA256_LEN], d2[RS_SHA256_LEN];

    CU_ASSERT_EQUAL_FATAL(rs_sha256_init(&h), 0);
    CU_ASSERT_EQUAL(rs_sha256_update(&h, "abc", 3), 0);
    CU_ASSERT_EQUAL(rs_sha256_final(&h, d1), 0);
    rs_sha256_free(&h);
    CU_ASSERT_EQUAL_FATAL(rs_sha256_init(&h), 0);
    CU_ASSERT_EQUAL(rs_sha256_update(&h, "abc", 3), 0);
    CU_ASSERT_EQUAL(rs_sha256_final(&h, d2), 0);
    rs_sha256_free(&h);
    CU_ASSERT_EQUAL(memcmp(d1, d2, RS_SHA256_LEN), 0);
}

static void test_provider_names_openssl_and_sha_ni(void)
{
    const char *p = rs_sha256_provider();

    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(strncmp(p, "OpenSSL ", 8), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p, "libcrypto SHA-256"));
    CU_ASSERT(strstr(p, "(SHA-NI: yes)") != NULL || strstr(p, "(SHA-NI: no)") != NULL);
    CU_ASSERT_PTR_EQUAL(rs_sha256_provider(), p); /* built once */
}

static CU_TestInfo vector_tests[] = {
    { "FIPS 180-2: empty message", test_empty_message },
    { "FIPS 180-2: abc", test_abc },
    { "FIPS 180-2: 448-bit message", test_448_bit_message },
    { "FIPS 180-2: 896-bit message", test_896_bit_message },
    { "FIPS 180-2: one million 'a'", test_one_million_a },
    CU_TEST_INFO_NULL,
};

static CU_TestInfo stream_tests[] = {
    { "one-shot matches the EVP reference", test_one_shot_matches_evp_reference },
    { "streamed updates match one-shot", test_streamed_updates_match_one_shot },
    { "a single cut anywhere matches one-shot", test_single_cut_matches_one_shot },
    { "empty updates change nothing", test_empty_updates_change_nothing },
    CU_TEST_INFO_NULL,
};

static CU_TestInfo api_tests[] = {
    { "free accepts a zeroed and a freed context", test_free_accepts_zeroed_and_freed_context },
    { "use after free fails with -EIO", test_use_after_free_fails_with_eio },
    { "re-init after final starts over", test_reinit_after_final_starts_over },
    { "provider names OpenSSL and SHA-NI", test_provider_names_openssl_and_sha_ni },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "core/sha256 vectors", NULL, NULL, NULL, NULL, vector_tests },
    { "core/sha256 streaming", suite_init, suite_cleanup, NULL, NULL, stream_tests },
    { "core/sha256 api", NULL, NULL, NULL, NULL, api_tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
