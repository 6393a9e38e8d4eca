/* core/sha256.c: SHA-256 through OpenSSL's libcrypto (its low-level SHA256_* functions). libcrypto
 * picks its SHA-NI code path itself (from its own CPUID probe); we only report what the CPU offers.
 *
 * Built with -DRS_SHA256=wolfcrypt (CMake), the same interface runs on wolfCrypt instead: only
 * to measure the alternative side by side (perf/RESULTS.md), never the default. */
#include "core/sha256.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#ifdef RS_SHA256_WOLFCRYPT
#include <wolfssl/options.h>
#include <wolfssl/version.h>
#include <wolfssl/wolfcrypt/sha256.h>

int rs_sha256_init(struct rs_sha256 *h)
{
    wc_Sha256 *s = malloc(sizeof(*s));

    h->impl = NULL;
    if (s == NULL)
        return -ENOMEM;
    if (wc_InitSha256(s) != 0) {
        free(s);
        return -ENOMEM;
    }
    h->impl = s;
    return 0;
}

int rs_sha256_update(struct rs_sha256 *h, const void *data, size_t len)
{
    if (h->impl == NULL)
        return -EIO;
    return len == 0 || wc_Sha256Update(h->impl, data, (word32)len) == 0 ? 0 : -EIO;
}

int rs_sha256_final(struct rs_sha256 *h, uint8_t out[RS_SHA256_LEN])
{
    if (h->impl == NULL)
        return -EIO;
    return wc_Sha256Final(h->impl, out) == 0 ? 0 : -EIO;
}

int rs_sha256_copy(struct rs_sha256 *dst, const struct rs_sha256 *src)
{
    wc_Sha256 *s = malloc(sizeof(*s));

    dst->impl = NULL;
    if (s == NULL)
        return -ENOMEM;
    if (src->impl == NULL || wc_Sha256Copy(src->impl, s) != 0) {
        free(s);
        return -EIO;
    }
    dst->impl = s;
    return 0;
}

void rs_sha256_free(struct rs_sha256 *h)
{
    if (h->impl != NULL) {
        wc_Sha256Free(h->impl);
        free(h->impl);
    }
    h->impl = NULL;
}

const char *rs_sha256_provider(void)
{
    return "wolfCrypt " LIBWOLFSSL_VERSION_STRING
           " SHA-256 (comparison build, RS_SHA256=wolfcrypt)";
}
#else
/* The low-level SHA256_* functions, not EVP: they run the same libcrypto code (the default
 * provider's SHA-256 is a wrapper around them, and both take libcrypto's SHA-NI path from its
 * CPUID probe), but without OpenSSL's provider machinery. The first EVP digest initialises
 * that machinery (library init, config file, default provider, algorithm tables), which makes
 * about 1.8 MiB more of libcrypto resident in every ringstreamd for nothing we use, and each
 * EVP context is a fetch plus two allocations. OpenSSL 3 marks these functions deprecated
 * (in favour of EVP) but keeps them; the warning is silenced here alone. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

int rs_sha256_init(struct rs_sha256 *h)
{
    SHA256_CTX *ctx = malloc(sizeof(*ctx));

    h->impl = NULL;
    if (ctx == NULL)
        return -ENOMEM;
    if (SHA256_Init(ctx) != 1) {
        free(ctx);
        return -ENOMEM;
    }
    h->impl = ctx;
    return 0;
}

int rs_sha256_update(struct rs_sha256 *h, const void *data, size_t len)
{
    if (h->impl == NULL)
        return -EIO;
    if (len == 0)
        return 0;
    if (SHA256_Update(h->impl, data, len) != 1)
        return -EIO;
    return 0;
}

int rs_sha256_final(struct rs_sha256 *h, uint8_t out[RS_SHA256_LEN])
{
    if (h->impl == NULL)
        return -EIO;
    if (SHA256_Final(out, h->impl) != 1)
        return -EIO;
    return 0;
}

int rs_sha256_copy(struct rs_sha256 *dst, const struct rs_sha256 *src)
{
    SHA256_CTX *ctx;

    dst->impl = NULL;
    if (src->impl == NULL)
        return -EIO;
    ctx = malloc(sizeof(*ctx));
    if (ctx == NULL)
        return -ENOMEM;
    memcpy(ctx, src->impl, sizeof(*ctx)); /* the whole state: no pointers inside */
    dst->impl = ctx;
    return 0;
}

void rs_sha256_free(struct rs_sha256 *h)
{
    if (h->impl != NULL)
        OPENSSL_cleanse(h->impl, sizeof(SHA256_CTX));
    free(h->impl);
    h->impl = NULL;
}

/* CPUID.(EAX=7,ECX=0):EBX bit 29 is the SHA extensions flag. __get_cpuid_count checks that
 * leaf 7 exists before asking for it. */
static int cpu_has_sha_ni(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned int eax, ebx, ecx, edx;

    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return 0;
    return (ebx >> 29) & 1u;
#else
    return 0;
#endif
}

/* Written once under pthread_once, read-only afterwards. */
static pthread_once_t provider_once = PTHREAD_ONCE_INIT;
static char provider_line[128];

static void provider_describe(void)
{
    snprintf(provider_line, sizeof(provider_line), "OpenSSL %s libcrypto SHA-256 (SHA-NI: %s)",
             OpenSSL_version(OPENSSL_VERSION_STRING), cpu_has_sha_ni() ? "yes" : "no");
}

const char *rs_sha256_provider(void)
{
    pthread_once(&provider_once, provider_describe);
    return provider_line;
}
#endif /* RS_SHA256_WOLFCRYPT */
