/* tests/unit/test_timeout_base64.c: grpc-timeout parsing and base64 for -bin metadata. */
#include "proto/grpc.h"
#include "tests/unit/runner.h"
#include <errno.h>
#include <string.h>

static int parse(const char *s, int64_t *ns)
{
    return rs_grpc_timeout_parse(s, strlen(s), ns);
}

static void test_timeout_every_unit(void)
{
    static const struct {
        const char *v;
        int64_t ns;
    } cases[] = {
        { "1H", INT64_C(3600000000000) },
        { "1M", INT64_C(60000000000) },
        { "1S", INT64_C(1000000000) },
        { "1m", INT64_C(1000000) },
        { "1u", INT64_C(1000) },
        { "1n", 1 },
        { "0n", 0 },
        { "0H", 0 },
        { "250m", INT64_C(250000000) },
        { "00000001S", INT64_C(1000000000) },
        { "99999999n", INT64_C(99999999) },
        { "99999999u", INT64_C(99999999000) },
        { "99999999m", INT64_C(99999999000000) },
        { "99999999S", INT64_C(99999999000000000) },
        { "99999999M", INT64_C(5999999940000000000) },
        { "2562047H", INT64_C(9223369200000000000) },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ns = -1;

        CU_ASSERT_EQUAL(parse(cases[i].v, &ns), 0);
        CU_ASSERT_EQUAL(ns, cases[i].ns);
    }
}

static void test_timeout_saturates(void)
{
    int64_t ns = 0;

    /* 2562048 hours is just past INT64_MAX nanoseconds. */
    CU_ASSERT_EQUAL(parse("2562048H", &ns), 0);
    CU_ASSERT_EQUAL(ns, INT64_MAX);
    ns = 0;
    CU_ASSERT_EQUAL(parse("99999999H", &ns), 0);
    CU_ASSERT_EQUAL(ns, INT64_MAX);
}

static void test_timeout_rejects(void)
{
    /* "\3775S" is 0xff then "5S" (octal: a hex escape would take the 5 in). */
    static const char *const bad[] = {
        "",    "S",   "5",   "123456789S", "000000000n", "5s",   "5h",   "5X", "-5S",    "+5S",
        " 5S", "5 S", "5S ", "5SS",        "0x5S",       "5.0S", "1e3n", "S5", "\3775S",
    };
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ns = 42;

        CU_ASSERT_EQUAL(parse(bad[i], &ns), -EINVAL);
        CU_ASSERT_EQUAL(ns, 42);
    }
}

static void test_timeout_respects_len(void)
{
    int64_t ns = 42;

    CU_ASSERT_EQUAL(rs_grpc_timeout_parse("5S", 1, &ns), -EINVAL);
    CU_ASSERT_EQUAL(rs_grpc_timeout_parse("5Sxyz", 2, &ns), 0);
    CU_ASSERT_EQUAL(ns, INT64_C(5000000000));
    CU_ASSERT_EQUAL(rs_grpc_timeout_parse("5\0S", 3, &ns), -EINVAL);
    CU_ASSERT_EQUAL(rs_grpc_timeout_parse(NULL, 0, &ns), -EINVAL);
}

/* RFC 4648 section 10. */
static const struct {
    const char *raw;
    const char *padded;
    const char *unpadded;
} rfc_vectors[] = {
    { "", "", "" },
    { "f", "Zg==", "Zg" },
    { "fo", "Zm8=", "Zm8" },
    { "foo", "Zm9v", "Zm9v" },
    { "foob", "Zm9vYg==", "Zm9vYg" },
    { "fooba", "Zm9vYmE=", "Zm9vYmE" },
    { "foobar", "Zm9vYmFy", "Zm9vYmFy" },
};
#define NVEC (sizeof(rfc_vectors) / sizeof(rfc_vectors[0]))

static void test_base64_encode_rfc4648(void)
{
    char out[16];
    size_t i;

    for (i = 0; i < NVEC; i++) {
        const char *raw = rfc_vectors[i].raw;
        ssize_t n = rs_base64_encode((const uint8_t *)raw, strlen(raw), out, sizeof(out));

        CU_ASSERT_EQUAL(n, (ssize_t)strlen(rfc_vectors[i].padded));
        CU_ASSERT_STRING_EQUAL(out, rfc_vectors[i].padded);
    }
}

static void test_base64_decode_rfc4648(void)
{
    uint8_t out[16];
    size_t i;

    for (i = 0; i < NVEC; i++) {
        const char *raw = rfc_vectors[i].raw;
        const char *p = rfc_vectors[i].padded;
        const char *u = rfc_vectors[i].unpadded;

        memset(out, 0, sizeof(out));
        CU_ASSERT_EQUAL_FATAL(rs_base64_decode(p, strlen(p), out, sizeof(out)),
                              (ssize_t)strlen(raw));
        CU_ASSERT_EQUAL(memcmp(out, raw, strlen(raw)), 0);
        memset(out, 0, sizeof(out));
        CU_ASSERT_EQUAL_FATAL(rs_base64_decode(u, strlen(u), out, sizeof(out)),
                              (ssize_t)strlen(raw));
        CU_ASSERT_EQUAL(memcmp(out, raw, strlen(raw)), 0);
    }
}

static void test_base64_rejects(void)
{
    static const char *const bad[] = {
        "Z",        "Zm9vY", "Zg=",      "Z===",    "====",     "=",     "==",
        "Zg==Zg==", "Zm=v",  "Zg===",    "Zm9v=",   "Zm9v!",    "Zm 9v", "Zm9v\n",
        "Zm-_",     "Zm8==", "Zg=\x80=", "\xffZm8", "Zm9vYg=A", "Z=g=",
    };
    uint8_t out[32];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(rs_base64_decode(bad[i], strlen(bad[i]), out, sizeof(out)), -EINVAL);
    }
    CU_ASSERT_EQUAL(rs_base64_decode("Zm9v\0YQ=", 8, out, sizeof(out)), -EINVAL);
}

static void test_base64_round_trip_binary(void)
{
    uint8_t raw[256], dec[256];
    char enc[4 * 86 + 1];
    size_t len;
    int i;

    for (i = 0; i < 256; i++)
        raw[i] = (uint8_t)(255 - i);
    for (len = 0; len <= sizeof(raw); len++) {
        ssize_t n = rs_base64_encode(raw, len, enc, sizeof(enc));

        CU_ASSERT_EQUAL_FATAL(n, (ssize_t)((len + 2) / 3 * 4));
        CU_ASSERT_EQUAL_FATAL(rs_base64_decode(enc, (size_t)n, dec, sizeof(dec)), (ssize_t)len);
        CU_ASSERT_EQUAL_FATAL(memcmp(raw, dec, len), 0);
        /* Strip the padding: the unpadded form decodes the same. */
        while (n > 0 && enc[n - 1] == '=')
            n--;
        CU_ASSERT_EQUAL_FATAL(rs_base64_decode(enc, (size_t)n, dec, sizeof(dec)), (ssize_t)len);
        CU_ASSERT_EQUAL_FATAL(memcmp(raw, dec, len), 0);
    }
}

static void test_base64_full_alphabet(void)
{
    static const uint8_t raw[] = { 0xfb, 0xff, 0xbf, 0x00, 0x10, 0x83 };
    char enc[16];
    uint8_t dec[8];

    CU_ASSERT_EQUAL(rs_base64_encode(raw, sizeof(raw), enc, sizeof(enc)), 8);
    CU_ASSERT_STRING_EQUAL(enc, "+/+/ABCD");
    CU_ASSERT_EQUAL(rs_base64_decode("+/+/ABCD", 8, dec, sizeof(dec)), 6);
    CU_ASSERT_EQUAL(memcmp(dec, raw, sizeof(raw)), 0);
}

static void test_base64_enospc(void)
{
    char enc[8];
    uint8_t dec[4];

    CU_ASSERT_EQUAL(rs_base64_encode((const uint8_t *)"", 0, enc, 0), -ENOSPC);
    CU_ASSERT_EQUAL(rs_base64_encode((const uint8_t *)"", 0, enc, 1), 0);
    CU_ASSERT_STRING_EQUAL(enc, "");
    CU_ASSERT_EQUAL(rs_base64_encode((const uint8_t *)"f", 1, enc, 4), -ENOSPC);
    CU_ASSERT_EQUAL(rs_base64_encode((const uint8_t *)"f", 1, enc, 5), 4);
    CU_ASSERT_EQUAL(rs_base64_decode("Zm9v", 4, dec, 2), -ENOSPC);
    CU_ASSERT_EQUAL(rs_base64_decode("Zm9v", 4, dec, 3), 3);
    CU_ASSERT_EQUAL(rs_base64_decode("Zg==", 4, dec, 0), -ENOSPC);
    CU_ASSERT_EQUAL(rs_base64_decode("Zg==", 4, dec, 1), 1);
    CU_ASSERT_EQUAL(dec[0], 'f');
    CU_ASSERT_EQUAL(rs_base64_decode("", 0, dec, 0), 0);
}

static CU_TestInfo tests[] = {
    { "timeout: every unit", test_timeout_every_unit },
    { "timeout: overflow saturates", test_timeout_saturates },
    { "timeout: malformed rejected", test_timeout_rejects },
    { "timeout: only len bytes read", test_timeout_respects_len },
    { "base64: RFC 4648 encode", test_base64_encode_rfc4648 },
    { "base64: RFC 4648 decode padded and unpadded", test_base64_decode_rfc4648 },
    { "base64: invalid input rejected", test_base64_rejects },
    { "base64: binary round trip at every length", test_base64_round_trip_binary },
    { "base64: '+' and '/'", test_base64_full_alphabet },
    { "base64: ENOSPC", test_base64_enospc },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "proto/grpc timeout and base64", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
