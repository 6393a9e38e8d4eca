/* tests/fuzz/fuzz.h: what the libFuzzer targets share. A target checks invariants with
 * RS_FUZZ_CHECK(); a failed one prints itself and aborts, which libFuzzer reports as a crash and
 * saves the input under -artifact_prefix. */
#ifndef RS_TESTS_FUZZ_FUZZ_H
#define RS_TESTS_FUZZ_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define RS_FUZZ_CHECK(cond)                                                              \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* libFuzzer's entry point; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the input front to back: control bytes and payload. Past the end it answers 0s. */
struct rs_fuzz_in {
    const uint8_t *p;
    size_t left;
};

static inline uint8_t rs_fuzz_u8(struct rs_fuzz_in *in)
{
    uint8_t v = 0;

    if (in->left > 0) {
        v = *in->p++;
        in->left--;
    }
    return v;
}

static inline uint16_t rs_fuzz_u16(struct rs_fuzz_in *in)
{
    uint16_t hi = rs_fuzz_u8(in);

    return (uint16_t)(hi << 8 | rs_fuzz_u8(in));
}

/* Up to |want| bytes as a view; |*got| says how many there were. */
static inline const uint8_t *rs_fuzz_take(struct rs_fuzz_in *in, size_t want, size_t *got)
{
    const uint8_t *p = in->p;

    *got = want < in->left ? want : in->left;
    in->p += *got;
    in->left -= *got;
    return p;
}

#endif /* RS_TESTS_FUZZ_FUZZ_H */
