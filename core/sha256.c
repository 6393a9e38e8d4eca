/* core/sha256.c: SHA-256 through OpenSSL's libcrypto EVP interface. libcrypto picks its
 * SHA-NI code path itself (from its own CPUID probe); we only report what the CPU offers.
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
#include <openssl/crypto.h>
#include <openssl/evp.h>

int rs_sha256_init(struct rs_sha256 *h)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    h->impl = NULL;
    if (ctx == NULL)
        return -ENOMEM;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        /* libcrypto reports allocation failure and a missing provider alike. */
        EVP_MD_CTX_free(ctx);
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
    if (EVP_DigestUpdate(h->impl, data, len) != 1)
        return -EIO;
    return 0;
}

int rs_sha256_final(struct rs_sha256 *h, uint8_t out[RS_SHA256_LEN])
{
    unsigned int n = 0;

    if (h->impl == NULL)
        return -EIO;
    if (EVP_DigestFinal_ex(h->impl, out, &n) != 1 || n != RS_SHA256_LEN)
        return -EIO;
    return 0;
}

int rs_sha256_copy(struct rs_sha256 *dst, const struct rs_sha256 *src)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    dst->impl = NULL;
    if (ctx == NULL)
        return -ENOMEM;
    if (src->impl == NULL || EVP_MD_CTX_copy_ex(ctx, src->impl) != 1) {
        EVP_MD_CTX_free(ctx);
        return -EIO;
    }
    dst->impl = ctx;
    return 0;
}

void rs_sha256_free(struct rs_sha256 *h)
{
    EVP_MD_CTX_free(h->impl); /* accepts NULL */
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
