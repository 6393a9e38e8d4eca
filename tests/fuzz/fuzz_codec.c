/* tests/fuzz/fuzz_codec.c: the header-value codecs of proto/grpc.c: grpc-timeout, the
 * percent-encoding of grpc-message and base64 for -bin metadata.
 *
 * Input: a selector byte (mod 3), a capacity byte, then the value. Output buffers are heap
 * blocks of exactly the capacity asked for, so AddressSanitizer sees any write past it.
 *
 * Invariants: grpc-timeout is accepted exactly when it is 1..8 digits and a unit, with the
 * value a reference computes in 128 bits, saturated; pct_encode output is printable ASCII with
 * no '%' other than escapes and decodes back to the input; pct_decode is never longer than its
 * input and is stable (decode(encode(decode(x))) == decode(x)); base64 encodes to 4*ceil(n/3)
 * bytes and decodes back; any accepted base64 re-encodes to an input that decodes to the same
 * bytes; every -ENOSPC answer is for a capacity that really is too small, and a capacity of
 * exactly the needed size works.
 *
 * RS_FUZZ_BREAK=1 in the environment corrupts the base64 round trip's copy on purpose: the
 * ctest entry fuzz/harness_reports_a_broken_invariant runs that and must fail. */
#include <errno.h>
#include <string.h>
#include "fuzz.h"
#include "proto/grpc.h"

static bool broken;

static void *xmalloc(size_t n)
{
    void *p = malloc(n == 0 ? 1 : n);

    RS_FUZZ_CHECK(p != NULL);
    return p;
}

static void fuzz_timeout(const char *v, size_t len)
{
    static const int64_t units[128] = {
        ['H'] = INT64_C(3600000000000), ['M'] = INT64_C(60000000000), ['S'] = INT64_C(1000000000),
        ['m'] = INT64_C(1000000),       ['u'] = INT64_C(1000),        ['n'] = 1,
    };
    bool valid = len >= 2 && len <= 9 && (unsigned char)v[len - 1] < 128 &&
                 units[(unsigned char)v[len - 1]] != 0;
    unsigned __int128 value = 0;
    int64_t ns = -1;
    int ret;

    for (size_t i = 0; valid && i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            valid = false;
        else
            value = value * 10 + (unsigned)(v[i] - '0');
    }
    ret = rs_grpc_timeout_parse(v, len, &ns);
    RS_FUZZ_CHECK(ret == (valid ? 0 : -EINVAL));
    if (valid) {
        value *= (unsigned __int128)units[(unsigned char)v[len - 1]];
        if (value > INT64_MAX)
            value = INT64_MAX;
        RS_FUZZ_CHECK(ns >= 0 && (unsigned __int128)ns == value);
    }
}

static void fuzz_pct(const char *in, size_t len, size_t cap)
{
    size_t need = 0;
    char *enc, *dec, *dec2, *out;
    ssize_t elen, dlen, d2len, r;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];

        need += c >= 0x20 && c <= 0x7e && c != '%' ? 1 : 3;
    }
    /* Exactly the size needed works; one byte less does not. */
    enc = xmalloc(need + 1);
    elen = rs_grpc_pct_encode(in, len, enc, need + 1);
    RS_FUZZ_CHECK(elen == (ssize_t)need && enc[elen] == '\0');
    out = xmalloc(need);
    RS_FUZZ_CHECK(rs_grpc_pct_encode(in, len, out, need) == -ENOSPC);
    free(out);
    for (ssize_t i = 0; i < elen; i++)
        RS_FUZZ_CHECK(enc[i] >= 0x20 && enc[i] <= 0x7e);
    /* Decodes back to the input. */
    dec = xmalloc(len + 1);
    dlen = rs_grpc_pct_decode(enc, (size_t)elen, dec, len + 1);
    RS_FUZZ_CHECK(dlen == (ssize_t)len && memcmp(dec, in, len) == 0 && dec[len] == '\0');
    free(dec);
    free(enc);

    /* The input as a received grpc-message: never longer than itself, stable. */
    dec = xmalloc(len + 1);
    dlen = rs_grpc_pct_decode(in, len, dec, len + 1);
    RS_FUZZ_CHECK(dlen >= 0 && (size_t)dlen <= len && dec[dlen] == '\0');
    enc = xmalloc(3 * (size_t)dlen + 1);
    elen = rs_grpc_pct_encode(dec, (size_t)dlen, enc, 3 * (size_t)dlen + 1);
    RS_FUZZ_CHECK(elen >= 0);
    dec2 = xmalloc((size_t)elen + 1);
    d2len = rs_grpc_pct_decode(enc, (size_t)elen, dec2, (size_t)elen + 1);
    RS_FUZZ_CHECK(d2len == dlen && memcmp(dec2, dec, (size_t)dlen) == 0);
    free(dec2);
    free(enc);
    /* Any capacity: the answer, or -ENOSPC only when the result does not fit. */
    out = xmalloc(cap);
    r = rs_grpc_pct_decode(in, len, out, cap);
    if ((size_t)dlen + 1 <= cap)
        RS_FUZZ_CHECK(r == dlen && memcmp(out, dec, (size_t)dlen) == 0);
    else
        RS_FUZZ_CHECK(r == -ENOSPC);
    r = rs_grpc_pct_encode(in, len, out, cap);
    RS_FUZZ_CHECK(need + 1 <= cap ? r == (ssize_t)need : r == -ENOSPC);
    free(out);
    free(dec);
}

static void fuzz_base64(const char *in, size_t len, size_t cap)
{
    size_t need = (len + 2) / 3 * 4;
    char *enc;
    uint8_t *dec, *out;
    ssize_t elen, dlen, r;

    /* Bytes -> base64 -> the same bytes. */
    enc = xmalloc(need + 1);
    elen = rs_base64_encode((const uint8_t *)in, len, enc, need + 1);
    RS_FUZZ_CHECK(elen == (ssize_t)need && enc[need] == '\0');
    RS_FUZZ_CHECK(rs_base64_encode((const uint8_t *)in, len, enc, need) == -ENOSPC);
    dec = xmalloc(len);
    dlen = rs_base64_decode(enc, need, dec, len);
    if (broken && len > 0)
        dec[0] ^= 1;
    RS_FUZZ_CHECK(dlen == (ssize_t)len && memcmp(dec, in, len) == 0);
    /* Unpadded, as some clients send it. */
    while (elen > 0 && enc[elen - 1] == '=')
        elen--;
    RS_FUZZ_CHECK(rs_base64_decode(enc, (size_t)elen, dec, len) == (ssize_t)len);
    RS_FUZZ_CHECK(memcmp(dec, in, len) == 0);
    free(dec);
    free(enc);

    /* The input as received -bin metadata: if accepted, it means bytes that re-encode to a
     * value decoding to them again; the output size follows from the input alone. */
    dec = xmalloc(len);
    dlen = rs_base64_decode(in, len, dec, len);
    RS_FUZZ_CHECK(dlen == -EINVAL || (dlen >= 0 && (size_t)dlen <= len / 4 * 3 + 2));
    if (dlen >= 0) {
        size_t n = (size_t)dlen;
        size_t n64 = (n + 2) / 3 * 4;
        uint8_t *back = xmalloc(n);

        enc = xmalloc(n64 + 1);
        RS_FUZZ_CHECK(rs_base64_encode(dec, n, enc, n64 + 1) == (ssize_t)n64);
        RS_FUZZ_CHECK(rs_base64_decode(enc, n64, back, n) == (ssize_t)n);
        RS_FUZZ_CHECK(memcmp(back, dec, n) == 0);
        free(back);
        free(enc);
        out = xmalloc(cap);
        r = rs_base64_decode(in, len, out, cap);
        RS_FUZZ_CHECK(n <= cap ? r == dlen && memcmp(out, dec, n) == 0 : r == -ENOSPC);
        free(out);
    }
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rs_fuzz_in in = { data, size };
    unsigned sel = rs_fuzz_u8(&in) % 3;
    size_t cap = rs_fuzz_u8(&in);
    const char *v = (const char *)in.p;

    broken = getenv("RS_FUZZ_BREAK") != NULL;
    switch (sel) {
    case 0:
        fuzz_timeout(v, in.left);
        break;
    case 1:
        fuzz_pct(v, in.left, cap);
        break;
    case 2:
        fuzz_base64(v, in.left, cap);
        break;
    }
    return 0;
}
