/* perf/crc32c.c: which CRC32C provider core/crc32c.c should use (Chunk.crc32c, ChecksummedData).
 *
 * Compares, on 4 KiB, 64 KiB and 1 MiB buffers:
 *   isal      Intel ISA-L's crc32_iscsi (Debian's libisal; it picks its kernel for the CPU when
 *             the library loads), called through rs_crc32c() as the server calls it;
 *   sse42     a plain loop of the SSE4.2 crc32 instruction, 8 bytes at a time (one dependency
 *             chain: bound by the instruction's latency);
 *   sse42x3   the same instruction on three independent streams of a block at once, combined
 *             with "shift by L zero bytes" tables (the CRC register is linear over GF(2):
 *             crc(r, A|B) = shift_|B|(crc(r, A)) ^ crc(0, B)), the construction of Mark Adler's
 *             crc32c.c and the kernel's crc32c-intel, written here from that identity.
 * Before timing, all three are checked against each other and against the check value of
 * "123456789" on every length 0..4100 at every alignment 0..7 and on the benchmark sizes.
 *
 * Last, for scale, ISA-L over 64 KiB pieces of a 512 MiB buffer walked in order: memory that
 * is not in any cache, what a CRC computed in a second pass over cold buffers would see.
 *
 * Usage: crc32c [--seconds S] [--repeats N]
 * GB/s means 10^9 bytes of input per second, the median of N runs of >= S s each, the buffer
 * filled once and reused (so it is in cache: what the server's CRC sees right after a read). */
#include "core/crc32c.h"
#include <nmmintrin.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LONG_BLOCK  8192u /* bytes per stream of a long 3-way block */
#define SHORT_BLOCK 256u  /* bytes per stream of a short 3-way block */

/* shift tables: shift[k][v] = the register after L zero bytes, starting from v << 8k */
static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];

__attribute__((target("sse4.2"))) static uint32_t hw_raw(uint32_t reg, const uint8_t *p, size_t n)
{
    uint64_t r = reg;

    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        r = _mm_crc32_u8((uint32_t)r, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;

        memcpy(&w, p, 8);
        r = _mm_crc32_u64(r, w);
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        r = _mm_crc32_u8((uint32_t)r, *p++);
        n--;
    }
    return (uint32_t)r;
}

static uint32_t crc_sse42(uint32_t crc, const void *data, size_t n)
{
    return ~hw_raw(~crc, data, n);
}

__attribute__((target("sse4.2"))) static uint32_t zeros_raw(uint32_t reg, size_t n)
{
    uint64_t r = reg;

    for (size_t i = 0; i < n / 8; i++)
        r = _mm_crc32_u64(r, 0);
    return (uint32_t)r;
}

static void shift_init(uint32_t tab[4][256], size_t len)
{
    for (unsigned k = 0; k < 4; k++)
        for (unsigned v = 0; v < 256; v++)
            tab[k][v] = zeros_raw((uint32_t)v << (8 * k), len);
}

static inline uint32_t shift(const uint32_t tab[4][256], uint32_t r)
{
    return tab[0][r & 0xff] ^ tab[1][(r >> 8) & 0xff] ^ tab[2][(r >> 16) & 0xff] ^ tab[3][r >> 24];
}

/* Three streams of |len| bytes each (a multiple of 8), from an 8-byte aligned |p|. */
__attribute__((target("sse4.2"))) static uint32_t
x3_blocks(uint32_t reg, const uint8_t **pp, size_t *np, size_t len, const uint32_t tab[4][256])
{
    const uint8_t *p = *pp;
    size_t n = *np;

    while (n >= 3 * len) {
        uint64_t a = reg, b = 0, c = 0;
        const uint8_t *end = p + len;

        do {
            uint64_t wa, wb, wc;

            memcpy(&wa, p, 8);
            memcpy(&wb, p + len, 8);
            memcpy(&wc, p + 2 * len, 8);
            a = _mm_crc32_u64(a, wa);
            b = _mm_crc32_u64(b, wb);
            c = _mm_crc32_u64(c, wc);
            p += 8;
        } while (p < end);
        reg = shift(tab, shift(tab, (uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
        p += 2 * len;
        n -= 3 * len;
    }
    *pp = p;
    *np = n;
    return reg;
}

__attribute__((target("sse4.2"))) static uint32_t crc_sse42x3(uint32_t crc, const void *data,
                                                              size_t n)
{
    const uint8_t *p = data;
    uint32_t reg = ~crc;

    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        reg = _mm_crc32_u8(reg, *p++);
        n--;
    }
    reg = x3_blocks(reg, &p, &n, LONG_BLOCK, (const uint32_t(*)[256])shift_long);
    reg = x3_blocks(reg, &p, &n, SHORT_BLOCK, (const uint32_t(*)[256])shift_short);
    return ~hw_raw(reg, p, n);
}

/* --- checks ------------------------------------------------------------------------------ */

typedef uint32_t (*crc_fn)(uint32_t crc, const void *data, size_t n);

static const struct impl {
    const char *name;
    crc_fn fn;
} impls[] = {
    { "isal", rs_crc32c },
    { "sse42", crc_sse42 },
    { "sse42x3", crc_sse42x3 },
};
#define NIMPL (sizeof(impls) / sizeof(impls[0]))

static bool agree(const uint8_t *buf, size_t len)
{
    uint32_t want = impls[0].fn(0, buf, len);

    for (size_t i = 1; i < NIMPL; i++) {
        uint32_t got = impls[i].fn(0, buf, len);

        if (got != want) {
            fprintf(stderr, "crc32c: %s gives %08x, %s %08x on %zu bytes\n", impls[i].name, got,
                    impls[0].name, want, len);
            return false;
        }
        /* continuing over a cut must give the same */
        if (len > 3 &&
            impls[i].fn(impls[i].fn(0, buf, len / 3), buf + len / 3, len - len / 3) != want) {
            fprintf(stderr, "crc32c: %s differs when continued, %zu bytes\n", impls[i].name, len);
            return false;
        }
    }
    return true;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = { 4096, 65536, 1048576 };
    double seconds = 0.3, gbs[NIMPL][3];
    unsigned repeats = 5;
    volatile uint32_t sink = 0;
    uint8_t *buf;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--repeats") == 0 && i + 1 < argc)
            repeats = (unsigned)atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: crc32c [--seconds S] [--repeats N]\n");
            return 2;
        }
    }
    if (repeats == 0 || repeats > 101 || !(seconds > 0 && seconds < 60)) {
        fprintf(stderr, "crc32c: --repeats 1..101, --seconds in (0, 60)\n");
        return 2;
    }
    if (!__builtin_cpu_supports("sse4.2")) {
        fprintf(stderr, "crc32c: this CPU has no SSE4.2: only ISA-L can run here\n");
        return 1;
    }
    shift_init(shift_long, LONG_BLOCK);
    shift_init(shift_short, SHORT_BLOCK);
    buf = aligned_alloc(64, (1u << 20) + 64);
    if (buf == NULL)
        return 1;
    srand(1);
    for (size_t i = 0; i < (1u << 20) + 64; i++)
        buf[i] = (uint8_t)rand();

    for (size_t i = 0; i < NIMPL; i++)
        if (impls[i].fn(0, "123456789", 9) != 0xE3069283u) {
            fprintf(stderr, "crc32c: %s fails the check value\n", impls[i].name);
            return 1;
        }
    for (size_t len = 0; len <= 4100; len++)
        for (size_t al = 0; al < 8; al++)
            if (!agree(buf + al, len))
                return 1;
    for (size_t s = 0; s < 3; s++)
        if (!agree(buf, sizes[s]) || !agree(buf + 3, sizes[s]) ||
            !agree(buf + 1, 3 * LONG_BLOCK + 3 * SHORT_BLOCK + 13))
            return 1;

    for (size_t s = 0; s < 3; s++) {
        for (size_t i = 0; i < NIMPL; i++) {
            double runs[101];

            for (unsigned r = 0; r < repeats; r++) {
                double t0 = now_s(), t;
                uint64_t bytes = 0;

                do {
                    for (int k = 0; k < 64; k++) {
                        sink ^= impls[i].fn(0, buf, sizes[s]);
                        bytes += sizes[s];
                    }
                    t = now_s() - t0;
                } while (t < seconds);
                runs[r] = (double)bytes / t / 1e9;
            }
            qsort(runs, repeats, sizeof(runs[0]), cmp_double);
            gbs[i][s] = runs[repeats / 2];
        }
    }
    printf("CRC32C, GB/s (10^9 bytes/s), median of %u runs of >= %.2f s; all providers agree\n",
           repeats, seconds);
    printf("| provider | 4 KiB | 64 KiB | 1 MiB |\n|---|--:|--:|--:|\n");
    for (size_t i = 0; i < NIMPL; i++)
        printf("| %s | %.1f | %.1f | %.1f |\n",
               i == 0   ? "ISA-L crc32_iscsi (rs_crc32c)"
               : i == 1 ? "SSE4.2 _mm_crc32_u64, one stream"
                        : "SSE4.2 _mm_crc32_u64, 3 streams + shift tables",
               gbs[i][0], gbs[i][1], gbs[i][2]);
    {
        const size_t cold_len = (size_t)512 << 20, piece = 65536;
        uint8_t *cold = malloc(cold_len);
        double runs[101];

        if (cold == NULL)
            return 1;
        memset(cold, 0x5a, cold_len); /* touch every page: no page faults while timing */
        for (unsigned r = 0; r < repeats; r++) {
            double t0 = now_s(), t;

            for (size_t off = 0; off < cold_len; off += piece)
                sink ^= rs_crc32c(0, cold + off, piece);
            t = now_s() - t0;
            runs[r] = (double)cold_len / t / 1e9;
        }
        qsort(runs, repeats, sizeof(runs[0]), cmp_double);
        printf("| ISA-L, 64 KiB pieces of a 512 MiB buffer (not in cache) | | %.1f | |\n",
               runs[repeats / 2]);
        free(cold);
    }
    (void)sink;
    free(buf);
    return 0;
}
