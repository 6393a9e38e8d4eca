/* tests/fuzz/fuzz_gzip.c: rs_gzip_inflate() of proto/compress.c with a maximum size.
 *
 * Input: a selector byte, the maximum (2 bytes, so 0..65535), then the data.
 *   selector % 4 == 0 or 2: the data is a gzip member as a peer would send it;
 *   selector odd:  the data is deflated with rs_gzip_deflate (split into up to three iovecs at
 *                  points the selector picks) and inflated back;
 *   selector % 4 == 2: a count byte and that many edits (2-byte offset, byte to xor) come
 *                  first; the rest is deflated, edited, cut at the length the last edit's
 *                  offset says when the count is odd, and inflated. zlib is not instrumented,
 *                  so near-valid members reach its error paths far sooner this way.
 * Invariants: the answer is the one a reference inflate (zlib in one call into a buffer of
 * max + 1 bytes) gives: 0 with the same bytes, -EMSGSIZE when the output would pass max,
 * -EINVAL for corrupt or trailing input; the output buffer is never larger than max + 1 bytes
 * (AddressSanitizer's malloc_usable_size() is the size asked for); a round trip gives the input
 * back when it fits and -EMSGSIZE when it does not; nothing leaks (LeakSanitizer). */
#include <errno.h>
#include <malloc.h>
#include <string.h>
#include <zlib.h>
#include "fuzz.h"
#include "proto/compress.h"

/* 0 / -EMSGSIZE / -EINVAL / -ENOMEM, and the bytes inflated (at most max + 1) in |ref|. */
static int reference(const uint8_t *in, size_t len, size_t max, uint8_t *ref, size_t *reflen)
{
    z_stream z;
    int zr, ret;

    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = ref;
    z.avail_out = (uInt)(max + 1);
    zr = inflate(&z, Z_FINISH);
    *reflen = max + 1 - z.avail_out;
    if (*reflen > max)
        ret = -EMSGSIZE;
    else if (zr == Z_STREAM_END)
        ret = z.avail_in == 0 ? 0 : -EINVAL;
    else if (zr == Z_MEM_ERROR)
        ret = -ENOMEM;
    else
        ret = -EINVAL;
    inflateEnd(&z);
    return ret;
}

static void check_inflate(const uint8_t *in, size_t len, size_t max)
{
    uint8_t *ref = malloc(max + 1), *out = (uint8_t *)"unset";
    size_t reflen = 0, outlen = 12345;
    int want, got;

    RS_FUZZ_CHECK(ref != NULL);
    want = reference(in, len, max, ref, &reflen);
    got = rs_gzip_inflate(in, len, max, &out, &outlen);
    RS_FUZZ_CHECK(got == want);
    if (got == 0) {
        RS_FUZZ_CHECK(outlen == reflen && outlen <= max);
        RS_FUZZ_CHECK((outlen == 0) == (out == NULL));
        if (outlen > 0) {
            RS_FUZZ_CHECK(malloc_usable_size(out) <= max + 1);
            RS_FUZZ_CHECK(memcmp(out, ref, outlen) == 0);
        }
        free(out);
    } else {
        /* Untouched on failure. */
        RS_FUZZ_CHECK(outlen == 12345);
    }
    free(ref);
}

static void roundtrip(uint8_t sel, const uint8_t *data, size_t len, size_t max)
{
    struct iovec iov[3];
    size_t a = len == 0 ? 0 : (size_t)(sel >> 1) % (len + 1);
    size_t b = len == 0 ? 0 : (size_t)(sel >> 4) * 31 % (len - a + 1);
    int n = 0;
    uint8_t *gz = NULL, *out = NULL;
    size_t gzlen = 0, outlen = 0;
    int ret;

    iov[n++] = (struct iovec){ .iov_base = (void *)data, .iov_len = a };
    iov[n++] = (struct iovec){ .iov_base = (void *)(data + a), .iov_len = b };
    iov[n++] = (struct iovec){ .iov_base = (void *)(data + a + b), .iov_len = len - a - b };
    RS_FUZZ_CHECK(rs_gzip_deflate(iov, n, &gz, &gzlen) == 0);
    ret = rs_gzip_inflate(gz, gzlen, max, &out, &outlen);
    if (len <= max) {
        RS_FUZZ_CHECK(ret == 0 && outlen == len);
        RS_FUZZ_CHECK(len == 0 || memcmp(out, data, len) == 0);
        free(out);
    } else {
        RS_FUZZ_CHECK(ret == -EMSGSIZE);
    }
    check_inflate(gz, gzlen, max);
    free(gz);
}

static void corrupted(struct rs_fuzz_in *in, size_t max)
{
    uint8_t nedits = rs_fuzz_u8(in) % 16;
    uint16_t at[16];
    uint8_t x[16];
    struct iovec iov;
    uint8_t *gz = NULL;
    size_t gzlen = 0;

    for (uint8_t i = 0; i < nedits; i++) {
        at[i] = rs_fuzz_u16(in);
        x[i] = rs_fuzz_u8(in);
    }
    iov = (struct iovec){ .iov_base = (void *)in->p, .iov_len = in->left };
    RS_FUZZ_CHECK(rs_gzip_deflate(&iov, 1, &gz, &gzlen) == 0);
    for (uint8_t i = 0; i < nedits && gzlen > 0; i++)
        gz[at[i] % gzlen] ^= x[i];
    if ((nedits & 1) && gzlen > 0)
        gzlen = at[nedits - 1] % gzlen;
    check_inflate(gz, gzlen, max);
    free(gz);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rs_fuzz_in in = { data, size };
    uint8_t sel = rs_fuzz_u8(&in);
    size_t max = rs_fuzz_u16(&in);

    if (sel & 1)
        roundtrip(sel, in.p, in.left, max);
    else if (sel & 2)
        corrupted(&in, max);
    else
        check_inflate(in.p, in.left, max);
    return 0;
}
