/* perf/crypto.c: throughput of the crypto under ringstream's TLS records and object hashes.
 *
 * SHA-256 (wolfCrypt, and libcrypto through core/sha256), AES-128-GCM, AES-256-GCM and
 * ChaCha20-Poly1305 (wolfCrypt, and libcrypto EVP as the peer), sealing and opening 16 KiB TLS
 * records and 1 MiB buffers. Built twice from this one file: `crypto` against the wolfSSL that
 * ringstream links (rs::wolfssl, normally the Debian source build with AES-NI/AVX2) and
 * `crypto_system` against Debian's libwolfssl.so. Both check wolfCrypt against libcrypto
 * (same digests, ciphertexts and tags; a forged tag is refused) before timing anything.
 *
 * Usage: crypto [--seconds S] [--repeats N] [--tsv] [--wolfcrypt-only]
 * MB/s means 10^6 bytes of input per second; each figure is the median of N runs of >= S s. */
#include "core/sha256.h"
#include "core/tlsinfo.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wolfssl/options.h> /* first: the library's build configuration */
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/sha256.h>
#include <wolfssl/wolfcrypt/wc_port.h>
#include <openssl/evp.h>

#define REC_LEN (16u * 1024u)   /* a full TLS record's plaintext */
#define BUF_LEN (1024u * 1024u) /* a bulk buffer */
#define TAG_LEN 16
#define IV_LEN  12
#define AAD_LEN 13 /* TLS 1.2 style additional data; TLS 1.3 uses 5 */

enum alg {
    ALG_SHA256,
    ALG_AES128_GCM,
    ALG_AES256_GCM,
    ALG_CHACHA20_POLY1305,
};
enum op {
    OP_HASH,
    OP_SEAL,
    OP_OPEN,
};
enum impl {
    IMPL_WOLFCRYPT,
    IMPL_LIBCRYPTO,
};

static const char *const alg_names[] = { "SHA-256", "AES-128-GCM", "AES-256-GCM",
                                         "ChaCha20-Poly1305" };
static const char *const op_names[] = { "hash", "seal", "open" };
static const char *const impl_names[] = { "wolfcrypt", "libcrypto" };

/* Everything one run needs. Lives in main(); the Aes members keep their 16-byte alignment. */
struct kit {
    Aes aes128; /* wolfCrypt GCM keys, set once */
    Aes aes256;
    EVP_CIPHER_CTX *evp128; /* libcrypto AEAD contexts, key set once; owned */
    EVP_CIPHER_CTX *evp256;
    EVP_CIPHER_CTX *evpchacha;
    uint8_t key[32];
    uint8_t iv[IV_LEN]; /* fixed: a benchmark may reuse a nonce, a server never does */
    uint8_t aad[AAD_LEN];
    uint8_t tag[TAG_LEN];      /* output of the last seal */
    uint8_t open_tag[TAG_LEN]; /* tag of |sealed| for open runs */
    uint8_t digest[RS_SHA256_LEN];
    uint8_t *in;     /* BUF_LEN of plaintext; owned */
    uint8_t *out;    /* BUF_LEN scratch; owned */
    uint8_t *sealed; /* BUF_LEN: ciphertext the open runs decrypt; owned */
};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int wc_hash(struct kit *k, const uint8_t *in, size_t len)
{
    wc_Sha256 sha;
    int ret;

    ret = wc_InitSha256(&sha);
    if (ret != 0)
        return -EIO;
    ret = wc_Sha256Update(&sha, in, (word32)len);
    if (ret == 0)
        ret = wc_Sha256Final(&sha, k->digest);
    wc_Sha256Free(&sha);
    return ret == 0 ? 0 : -EIO;
}

static int ossl_hash(struct kit *k, const uint8_t *in, size_t len)
{
    struct rs_sha256 h = { 0 };
    int ret;

    ret = rs_sha256_init(&h);
    if (ret < 0)
        return ret;
    ret = rs_sha256_update(&h, in, len);
    if (ret == 0)
        ret = rs_sha256_final(&h, k->digest);
    rs_sha256_free(&h);
    return ret;
}

static int wc_seal(struct kit *k, enum alg a, const uint8_t *in, uint8_t *out, size_t len,
                   uint8_t tag[TAG_LEN])
{
    int ret;

    if (a == ALG_CHACHA20_POLY1305)
        ret = wc_ChaCha20Poly1305_Encrypt(k->key, k->iv, k->aad, AAD_LEN, in, (word32)len, out,
                                          tag);
    else
        ret = wc_AesGcmEncrypt(a == ALG_AES128_GCM ? &k->aes128 : &k->aes256, out, in, (word32)len,
                               k->iv, IV_LEN, tag, TAG_LEN, k->aad, AAD_LEN);
    return ret == 0 ? 0 : -EIO;
}

/* Returns 0, or -EBADMSG when the tag does not verify. */
static int wc_open(struct kit *k, enum alg a, const uint8_t *in, uint8_t *out, size_t len,
                   const uint8_t tag[TAG_LEN])
{
    int ret;

    if (a == ALG_CHACHA20_POLY1305)
        ret = wc_ChaCha20Poly1305_Decrypt(k->key, k->iv, k->aad, AAD_LEN, in, (word32)len, tag,
                                          out);
    else
        ret = wc_AesGcmDecrypt(a == ALG_AES128_GCM ? &k->aes128 : &k->aes256, out, in, (word32)len,
                               k->iv, IV_LEN, tag, TAG_LEN, k->aad, AAD_LEN);
    return ret == 0 ? 0 : -EBADMSG;
}

static EVP_CIPHER_CTX *evp_ctx(struct kit *k, enum alg a)
{
    if (a == ALG_AES128_GCM)
        return k->evp128;
    if (a == ALG_AES256_GCM)
        return k->evp256;
    return k->evpchacha;
}

/* One AEAD operation on a context whose cipher and key are set: new IV, AAD, data, tag. */
static int ossl_aead(struct kit *k, enum alg a, int enc, const uint8_t *in, uint8_t *out,
                     size_t len, uint8_t tag[TAG_LEN])
{
    EVP_CIPHER_CTX *ctx = evp_ctx(k, a);
    int n;

    if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, k->iv, enc) != 1)
        return -EIO;
    if (EVP_CipherUpdate(ctx, NULL, &n, k->aad, AAD_LEN) != 1)
        return -EIO;
    if (EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1)
        return -EIO;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1)
        return -EIO;
    if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1)
        return enc ? -EIO : -EBADMSG;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag) != 1)
        return -EIO;
    return 0;
}

static int run_once(struct kit *k, enum alg a, enum op o, enum impl im, size_t len)
{
    switch (o) {
    case OP_HASH:
        return im == IMPL_WOLFCRYPT ? wc_hash(k, k->in, len) : ossl_hash(k, k->in, len);
    case OP_SEAL:
        if (im == IMPL_WOLFCRYPT)
            return wc_seal(k, a, k->in, k->out, len, k->tag);
        return ossl_aead(k, a, 1, k->in, k->out, len, k->tag);
    case OP_OPEN:
        if (im == IMPL_WOLFCRYPT)
            return wc_open(k, a, k->sealed, k->out, len, k->open_tag);
        return ossl_aead(k, a, 0, k->sealed, k->out, len, k->open_tag);
    }
    return -EINVAL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median MB/s over |repeats| runs of at least |seconds| each, or a negative -errno. */
static double measure(struct kit *k, enum alg a, enum op o, enum impl im, size_t len,
                      double seconds, int repeats)
{
    double rates[16];
    int r;

    if (o == OP_OPEN && wc_seal(k, a, k->in, k->sealed, len, k->open_tag) < 0)
        return -EIO;
    if (run_once(k, a, o, im, len) < 0) /* warm-up: caches, key schedules, CPU clocks */
        return -EIO;
    for (r = 0; r < repeats; r++) {
        double t0 = now(), t;
        unsigned long n = 0;

        do {
            if (run_once(k, a, o, im, len) < 0)
                return -EIO;
            n++;
            t = now() - t0;
        } while (t < seconds);
        rates[r] = (double)n * (double)len / t / 1e6;
    }
    qsort(rates, (size_t)repeats, sizeof(rates[0]), cmp_double);
    return rates[repeats / 2];
}

/* wolfCrypt and libcrypto must agree before their speeds mean anything. Returns 0 or -1. */
static int cross_check(struct kit *k)
{
    static const size_t lens[] = { 0, 1, 15, 16, 17, 255, REC_LEN, BUF_LEN - 3 };
    uint8_t d1[RS_SHA256_LEN], t1[TAG_LEN], t2[TAG_LEN];
    size_t i;
    int a;

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t len = lens[i];

        if (wc_hash(k, k->in, len) < 0)
            return -1;
        memcpy(d1, k->digest, sizeof(d1));
        if (ossl_hash(k, k->in, len) < 0 || memcmp(d1, k->digest, sizeof(d1)) != 0) {
            fprintf(stderr, "crypto: SHA-256 of %zu bytes differs\n", len);
            return -1;
        }
        for (a = ALG_AES128_GCM; a <= ALG_CHACHA20_POLY1305; a++) {
            const char *name = alg_names[a];

            if (wc_seal(k, a, k->in, k->sealed, len, t1) < 0 ||
                ossl_aead(k, a, 1, k->in, k->out, len, t2) < 0) {
                fprintf(stderr, "crypto: %s seal of %zu bytes failed\n", name, len);
                return -1;
            }
            if (memcmp(k->sealed, k->out, len) != 0 || memcmp(t1, t2, TAG_LEN) != 0) {
                fprintf(stderr, "crypto: %s ciphertexts of %zu bytes differ\n", name, len);
                return -1;
            }
            memset(k->out, 0, len);
            if (wc_open(k, a, k->sealed, k->out, len, t2) < 0 || memcmp(k->out, k->in, len) != 0) {
                fprintf(stderr, "crypto: %s open of %zu bytes failed\n", name, len);
                return -1;
            }
            t2[0] ^= 1;
            if (wc_open(k, a, k->sealed, k->out, len, t2) != -EBADMSG ||
                ossl_aead(k, a, 0, k->sealed, k->out, len, t2) != -EBADMSG) {
                fprintf(stderr, "crypto: %s accepted a forged tag\n", name);
                return -1;
            }
        }
    }
    return 0;
}

static int kit_init(struct kit *k)
{
    uint64_t x = 0x2545f4914f6cdd1du;
    size_t i;

    memset(k, 0, sizeof(*k));
    k->in = malloc(BUF_LEN);
    k->out = malloc(BUF_LEN + TAG_LEN);
    k->sealed = malloc(BUF_LEN + TAG_LEN);
    if (k->in == NULL || k->out == NULL || k->sealed == NULL)
        return -ENOMEM;
    for (i = 0; i < BUF_LEN; i++) { /* xorshift64: incompressible, reproducible */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        k->in[i] = (uint8_t)(x >> 24);
    }
    for (i = 0; i < sizeof(k->key); i++)
        k->key[i] = (uint8_t)(0xa0 + i);
    for (i = 0; i < IV_LEN; i++)
        k->iv[i] = (uint8_t)(0x10 + i);
    for (i = 0; i < AAD_LEN; i++)
        k->aad[i] = (uint8_t)i;

    if (wc_AesInit(&k->aes128, NULL, INVALID_DEVID) != 0 ||
        wc_AesInit(&k->aes256, NULL, INVALID_DEVID) != 0 ||
        wc_AesGcmSetKey(&k->aes128, k->key, 16) != 0 ||
        wc_AesGcmSetKey(&k->aes256, k->key, 32) != 0)
        return -EIO;

    k->evp128 = EVP_CIPHER_CTX_new();
    k->evp256 = EVP_CIPHER_CTX_new();
    k->evpchacha = EVP_CIPHER_CTX_new();
    if (k->evp128 == NULL || k->evp256 == NULL || k->evpchacha == NULL)
        return -ENOMEM;
    if (EVP_CipherInit_ex(k->evp128, EVP_aes_128_gcm(), NULL, k->key, k->iv, 1) != 1 ||
        EVP_CipherInit_ex(k->evp256, EVP_aes_256_gcm(), NULL, k->key, k->iv, 1) != 1 ||
        EVP_CipherInit_ex(k->evpchacha, EVP_chacha20_poly1305(), NULL, k->key, k->iv, 1) != 1)
        return -EIO;
    return 0;
}

/* Accepts a kit whose kit_init() failed part way. */
static void kit_free(struct kit *k)
{
    wc_AesFree(&k->aes128);
    wc_AesFree(&k->aes256);
    EVP_CIPHER_CTX_free(k->evp128);
    EVP_CIPHER_CTX_free(k->evp256);
    EVP_CIPHER_CTX_free(k->evpchacha);
    free(k->in);
    free(k->out);
    free(k->sealed);
}

static void usage(void)
{
    fprintf(stderr, "usage: crypto [--seconds S] [--repeats N (1-16)] [--tsv] "
                    "[--wolfcrypt-only]\n");
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = { REC_LEN, BUF_LEN };
    double seconds = 0.25;
    int repeats = 5, tsv = 0, wolf_only = 0, failed = 0;
    struct kit k;
    int i, a, ret;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = strtod(argv[++i], NULL);
        } else if (strcmp(argv[i], "--repeats") == 0 && i + 1 < argc) {
            repeats = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--tsv") == 0) {
            tsv = 1;
        } else if (strcmp(argv[i], "--wolfcrypt-only") == 0) {
            wolf_only = 1;
        } else {
            usage();
            return 64;
        }
    }
    if (!(seconds > 0) || repeats < 1 || repeats > 16) {
        usage();
        return 64;
    }
    if (wolfCrypt_Init() != 0) {
        fprintf(stderr, "crypto: wolfCrypt_Init failed\n");
        return 1;
    }
    ret = kit_init(&k);
    if (ret < 0) {
        fprintf(stderr, "crypto: setup failed: %s\n", strerror(-ret));
        kit_free(&k);
        return 1;
    }
    if (cross_check(&k) < 0) {
        kit_free(&k);
        return 1;
    }

    printf("%s%s\n", tsv ? "# " : "", rs_tls_describe());
    if (!tsv)
        printf("%-18s %-4s %8s %-10s %10s\n", "algorithm", "op", "bytes", "impl", "MB/s");
    for (a = ALG_SHA256; a <= ALG_CHACHA20_POLY1305; a++) {
        int o, im;
        size_t s;

        for (o = OP_HASH; o <= OP_OPEN; o++) {
            if ((a == ALG_SHA256) != (o == OP_HASH))
                continue;
            for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
                for (im = IMPL_WOLFCRYPT; im <= IMPL_LIBCRYPTO; im++) {
                    double mbps;

                    if (wolf_only && im != IMPL_WOLFCRYPT)
                        continue;
                    mbps = measure(&k, a, o, im, sizes[s], seconds, repeats);
                    if (mbps < 0) {
                        fprintf(stderr, "crypto: %s %s %s failed\n", alg_names[a], op_names[o],
                                impl_names[im]);
                        failed = 1;
                        continue;
                    }
                    if (tsv)
                        printf("%s\t%s\t%zu\t%s\t%.0f\n", alg_names[a], op_names[o], sizes[s],
                               impl_names[im], mbps);
                    else
                        printf("%-18s %-4s %8zu %-10s %10.0f\n", alg_names[a], op_names[o],
                               sizes[s], impl_names[im], mbps);
                    fflush(stdout);
                }
            }
        }
    }
    kit_free(&k);
    wolfCrypt_Cleanup();
    return failed;
}
