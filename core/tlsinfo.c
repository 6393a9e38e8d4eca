/* core/tlsinfo.c: what the TLS record crypto and SHA-256 run on. The wolfSSL half is decided
 * at compile time (its options.h says which assembly was built in); the CPU half comes from
 * CPUID, since wolfSSL picks AES-NI/AVX2 code at run time only where both agree. */
#include "core/tlsinfo.h"
#include "core/sha256.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <wolfssl/options.h> /* first: the library's build configuration */
#include <wolfssl/ssl.h>
#include <wolfssl/version.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#ifdef RS_WOLFSSL_FROM_SOURCE
#define BUILD_ORIGIN "source build"
#else
#define BUILD_ORIGIN "system library"
#endif
#ifdef WOLFSSL_AESNI
#define BUILT_AESNI "yes"
#else
#define BUILT_AESNI "no"
#endif
/* USE_INTEL_SPEEDUP switches on the AVX1/AVX2 code of AES-GCM, SHA-2, ChaCha20 and Poly1305. */
#ifdef USE_INTEL_SPEEDUP
#define BUILT_AVX2 "yes"
#else
#define BUILT_AVX2 "no"
#endif
#ifdef WOLFSSL_SP_X86_64_ASM
#define BUILT_SP_ASM "yes"
#else
#define BUILT_SP_ASM "no"
#endif

/* Appends the names of the CPU's crypto-relevant features to |buf| (at least 64 bytes). AVX and
 * AVX2 count only when the OS saves the YMM registers (OSXSAVE and XCR0 bits 1-2). */
static void describe_cpu(char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
#if defined(__x86_64__) || defined(__i386__)
    unsigned int eax, ebx, ecx, edx;
    unsigned int eax7, ebx7 = 0, ecx7, edx7;
    int os_avx = 0;

    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        snprintf(buf, len, "unknown");
        return;
    }
    if (ecx & bit_OSXSAVE) {
        unsigned int xcr0_lo, xcr0_hi;

        __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
        (void)xcr0_hi;
        os_avx = (xcr0_lo & 0x6u) == 0x6u;
    }
    if (!__get_cpuid_count(7, 0, &eax7, &ebx7, &ecx7, &edx7))
        ebx7 = 0;

    const struct {
        int on;
        const char *name;
    } flags[] = {
        { (ecx & bit_AES) != 0, "aes" },           { (ecx & bit_PCLMUL) != 0, "pclmul" },
        { os_avx && (ecx & bit_AVX) != 0, "avx" }, { os_avx && (ebx7 & bit_AVX2) != 0, "avx2" },
        { (ebx7 & bit_BMI2) != 0, "bmi2" },        { (ebx7 & bit_ADX) != 0, "adx" },
        { (ebx7 & (1u << 29)) != 0, "sha-ni" },
    };
    size_t i;

    for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        int n;

        if (!flags[i].on)
            continue;
        n = snprintf(buf + off, len - off, "%s%s", off ? " " : "", flags[i].name);
        if (n < 0 || (size_t)n >= len - off)
            break;
        off += (size_t)n;
    }
    if (off == 0)
        snprintf(buf, len, "none");
#else
    (void)off;
    snprintf(buf, len, "not x86");
#endif
}

/* Written once under pthread_once, read-only afterwards. */
static pthread_once_t describe_once = PTHREAD_ONCE_INIT;
static char describe_line[512];

static void describe(void)
{
    const char *lib = wolfSSL_lib_version(); /* the library actually linked */
    char cpu[96];
    char headers[48] = "";

    if (strcmp(lib, LIBWOLFSSL_VERSION_STRING) != 0)
        snprintf(headers, sizeof(headers), ", headers %s", LIBWOLFSSL_VERSION_STRING);
    describe_cpu(cpu, sizeof(cpu));
    snprintf(describe_line, sizeof(describe_line),
             "wolfSSL %s (" BUILD_ORIGIN "%s: AES-NI " BUILT_AESNI ", AVX2 asm " BUILT_AVX2
             ", SP x86_64 asm " BUILT_SP_ASM "; CPU: %s); SHA-256: %s",
             lib, headers, cpu, rs_sha256_provider());
}

const char *rs_tls_describe(void)
{
    pthread_once(&describe_once, describe);
    return describe_line;
}
