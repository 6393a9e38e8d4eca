/* tests/unit/test_pct.c: percent-encoding of grpc-message. */
#include "proto/grpc.h"
#include "tests/unit/runner.h"
#include <errno.h>
#include <string.h>

struct pct_case {
    const char *raw;
    size_t raw_len;
    const char *enc;
};

#define C(raw, enc)               \
    {                             \
        raw, sizeof(raw) - 1, enc \
    }

static const struct pct_case enc_cases[] = {
    C("", ""),
    C("hello world", "hello world"),
    C(" !\"#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~", " !\"#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"),
    C("%", "%25"),
    C("100%", "100%25"),
    C("%25", "%2525"),
    C("a\tb\n", "a%09b%0A"),
    C("\r\n", "%0D%0A"),
    C("\x00", "%00"),
    C("x\x00y", "x%00y"),
    C("\x1f", "%1F"),
    C("\x7f", "%7F"),
    C("\x80", "%80"),
    C("\xff", "%FF"),
    C("caf\xc3\xa9", "caf%C3%A9"),                       /* é */
    C("\xe2\x82\xac 5", "%E2%82%AC 5"),                  /* € */
    C("\xe6\x97\xa5\xe6\x9c\xac", "%E6%97%A5%E6%9C%AC"), /* 日本 */
    C("\xf0\x9f\x98\x80", "%F0%9F%98%80"),               /* U+1F600 */
};

static void test_encode_table(void)
{
    char out[128];
    size_t i;

    for (i = 0; i < sizeof(enc_cases) / sizeof(enc_cases[0]); i++) {
        const struct pct_case *c = &enc_cases[i];
        ssize_t n = rs_grpc_pct_encode(c->raw, c->raw_len, out, sizeof(out));

        CU_ASSERT_EQUAL(n, (ssize_t)strlen(c->enc));
        CU_ASSERT_STRING_EQUAL(out, c->enc);
    }
}

static void test_decode_table(void)
{
    char out[128];
    size_t i;

    for (i = 0; i < sizeof(enc_cases) / sizeof(enc_cases[0]); i++) {
        const struct pct_case *c = &enc_cases[i];
        ssize_t n = rs_grpc_pct_decode(c->enc, strlen(c->enc), out, sizeof(out));

        CU_ASSERT_EQUAL_FATAL(n, (ssize_t)c->raw_len);
        CU_ASSERT_EQUAL(memcmp(out, c->raw, c->raw_len), 0);
        CU_ASSERT_EQUAL(out[n], '\0');
    }
}

static void test_decode_lowercase_hex(void)
{
    char out[16];

    CU_ASSERT_EQUAL(rs_grpc_pct_decode("%c3%a9%4a", 9, out, sizeof(out)), 3);
    CU_ASSERT_STRING_EQUAL(out, "\xc3\xa9J");
}

static void test_decode_malformed_left_literal(void)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        { "%", "%" },       { "%4", "%4" },     { "abc%", "abc%" }, { "abc%2", "abc%2" },
        { "%G1", "%G1" },   { "%1G", "%1G" },   { "%zz", "%zz" },   { "%%41", "%A" },
        { "%%", "%%" },     { "% 41", "% 41" }, { "%-1", "%-1" },   { "%4%41", "%4A" },
        { "100%", "100%" }, { "%x41", "%x41" },
    };
    char out[32];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ssize_t n = rs_grpc_pct_decode(cases[i].in, strlen(cases[i].in), out, sizeof(out));

        CU_ASSERT_EQUAL(n, (ssize_t)strlen(cases[i].out));
        CU_ASSERT_STRING_EQUAL(out, cases[i].out);
    }
}

static void test_decode_respects_len(void)
{
    char out[8];

    /* Only the first 2 bytes of "%41" are in range: a truncated escape, kept literal. */
    CU_ASSERT_EQUAL(rs_grpc_pct_decode("%41", 2, out, sizeof(out)), 2);
    CU_ASSERT_STRING_EQUAL(out, "%4");
}

static void test_round_trip_every_byte(void)
{
    char raw[256];
    char enc[256 * 3 + 1];
    char dec[257];
    ssize_t n, m;
    int i;

    for (i = 0; i < 256; i++)
        raw[i] = (char)i;
    n = rs_grpc_pct_encode(raw, sizeof(raw), enc, sizeof(enc));
    /* 0x20..0x7e except '%' stay (94 bytes); the other 162 take 3 bytes each. */
    CU_ASSERT_EQUAL_FATAL(n, 94 + 162 * 3);
    for (i = 0; i < n; i++)
        CU_ASSERT_TRUE(enc[i] >= 0x20 && enc[i] <= 0x7e);
    m = rs_grpc_pct_decode(enc, (size_t)n, dec, sizeof(dec));
    CU_ASSERT_EQUAL_FATAL(m, 256);
    CU_ASSERT_EQUAL(memcmp(raw, dec, sizeof(raw)), 0);
}

static void test_round_trip_utf8(void)
{
    static const char msg[] = "d\xc3\xa9j\xc3\xa0 vu: 100% \xe2\x9c\x93\n";
    char enc[128], dec[128];
    ssize_t n;

    n = rs_grpc_pct_encode(msg, sizeof(msg) - 1, enc, sizeof(enc));
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_EQUAL(rs_grpc_pct_decode(enc, (size_t)n, dec, sizeof(dec)), (ssize_t)sizeof(msg) - 1);
    CU_ASSERT_STRING_EQUAL(dec, msg);
}

static void test_encode_enospc(void)
{
    char out[8];

    CU_ASSERT_EQUAL(rs_grpc_pct_encode("", 0, out, 0), -ENOSPC);
    CU_ASSERT_EQUAL(rs_grpc_pct_encode("", 0, out, 1), 0);
    CU_ASSERT_EQUAL(rs_grpc_pct_encode("abc", 3, out, 3), -ENOSPC);
    CU_ASSERT_EQUAL(rs_grpc_pct_encode("abc", 3, out, 4), 3);
    CU_ASSERT_STRING_EQUAL(out, "abc");
    CU_ASSERT_EQUAL(rs_grpc_pct_encode("%", 1, out, 3), -ENOSPC);
    CU_ASSERT_EQUAL(rs_grpc_pct_encode("%", 1, out, 4), 3);
    CU_ASSERT_STRING_EQUAL(out, "%25");
    CU_ASSERT_EQUAL(rs_grpc_pct_encode("a\n", 2, out, 4), -ENOSPC);
    CU_ASSERT_EQUAL(rs_grpc_pct_encode("a\n", 2, out, 5), 4);
}

static void test_encode_exact_capacity_table(void)
{
    char out[128];
    size_t i;

    for (i = 0; i < sizeof(enc_cases) / sizeof(enc_cases[0]); i++) {
        const struct pct_case *c = &enc_cases[i];
        size_t want = strlen(c->enc);

        CU_ASSERT_EQUAL(rs_grpc_pct_encode(c->raw, c->raw_len, out, want), -ENOSPC);
        CU_ASSERT_EQUAL(rs_grpc_pct_encode(c->raw, c->raw_len, out, want + 1), (ssize_t)want);
    }
}

static void test_decode_enospc(void)
{
    char out[8];

    CU_ASSERT_EQUAL(rs_grpc_pct_decode("", 0, out, 0), -ENOSPC);
    CU_ASSERT_EQUAL(rs_grpc_pct_decode("%41", 3, out, 1), -ENOSPC);
    CU_ASSERT_EQUAL(rs_grpc_pct_decode("%41", 3, out, 2), 1);
    CU_ASSERT_STRING_EQUAL(out, "A");
    CU_ASSERT_EQUAL(rs_grpc_pct_decode("abcd", 4, out, 4), -ENOSPC);
    CU_ASSERT_EQUAL(rs_grpc_pct_decode("abcd", 4, out, 5), 4);
}

static CU_TestInfo tests[] = {
    { "encode table", test_encode_table },
    { "decode table", test_decode_table },
    { "decode accepts lower-case hex", test_decode_lowercase_hex },
    { "decode leaves malformed sequences literal", test_decode_malformed_left_literal },
    { "decode stops at len", test_decode_respects_len },
    { "round trip of every byte", test_round_trip_every_byte },
    { "round trip of UTF-8 text", test_round_trip_utf8 },
    { "encode ENOSPC", test_encode_enospc },
    { "encode needs exactly len+1", test_encode_exact_capacity_table },
    { "decode ENOSPC", test_decode_enospc },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "proto/grpc pct", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
