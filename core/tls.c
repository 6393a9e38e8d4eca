/* core/tls.c: wolfSSL in non-blocking mode over caller-owned bytes (see core/tls.h). The IO
 * callbacks never touch a socket: the receive callback reads from a view of the buffer the
 * ring received into (WOLFSSL_CBIO_ERR_WANT_READ once it is consumed), the send callback
 * appends to one of two output buffers (one being sent by the caller, one filling). */
#include "core/tls.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <wolfssl/options.h> /* first: the library's build configuration */
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>

/* Our own TLS 1.3 record sealing (see seal_records()) needs wolfSSL's internal structures and
 * the streaming AES-GCM calls: both come with the Debian source build (scripts/wolfssl/build.sh
 * installs internal.h, configured with --enable-aesgcm-stream). Debian's binary library has
 * neither; records are then built by wolfSSL_write() alone. */
#if defined(RS_WOLFSSL_FROM_SOURCE) && defined(WOLFSSL_AESGCM_STREAM) && defined(WOLFSSL_TLS13) && \
        __has_include(<wolfssl/internal.h>)
#define RS_TLS_SEAL 1
#include <wolfssl/error-ssl.h>
#include <wolfssl/internal.h>
#include <wolfssl/wolfcrypt/aes.h>
#ifdef RS_HAVE_IPSEC_MB
#define RS_TLS_IMB 1
#include <intel-ipsec-mb.h>
#endif
#else
#define RS_TLS_SEAL 0
#endif
#ifndef RS_TLS_IMB
#define RS_TLS_IMB 0
#endif

#define RS_TLS_RECORD  16384               /* largest TLS plaintext record */
#define RS_TLS_OUT_MAX ((size_t)8 << 20)   /* bound of one output buffer */
#define RS_TLS_OUT_MIN ((size_t)16 * 1024) /* first allocation of an output buffer */
/* wolfSSL's own per-connection state, estimated: 40 KiB of handshake and key state plus the
 * two record buffers inside struct WOLFSSL (16491 bytes each with LARGE_STATIC_BUFFERS, see
 * scripts/wolfssl/build.sh; sizeof(WOLFSSL) is 35376 with them, 2384 without). */
#define RS_TLS_STATE ((size_t)72 * 1024)

/* TLS 1.3 suites, then TLS 1.2 ECDHE with AEAD only: no CBC, no static RSA. */
static const char suites[] = "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"
                             "TLS13-CHACHA20-POLY1305-SHA256:"
                             "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                             "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                             "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

#define RS_TLS_TICKET_NAME  16                                  /* WOLFSSL_TICKET_NAME_SZ */
#define RS_TLS_TICKET_NONCE CHACHA20_POLY1305_AEAD_IV_SIZE      /* 12 of the 16 iv bytes */
#define RS_TLS_TICKET_TAG   CHACHA20_POLY1305_AEAD_AUTHTAG_SIZE /* 16 of the 32 mac bytes */
#define RS_TLS_TICKET_MAX_S (7u * 24 * 3600) /* RFC 8446 4.6.1: lifetime at most 7 days */

struct ticket_key {
    uint8_t name[RS_TLS_TICKET_NAME];
    uint8_t key[CHACHA20_POLY1305_AEAD_KEYSIZE];
    bool live; /* false: wiped, matches no name */
};

struct rs_tls_keys {
    pthread_rwlock_t lock;    /* shared: seal, open; exclusive: rotate */
    struct ticket_key key[2]; /* under |lock|: key[cur] seals, key[cur ^ 1] only opens */
    unsigned cur;             /* under |lock| */
    struct timespec made;     /* under |lock|: when key[cur] was made (CLOCK_MONOTONIC) */
    unsigned period;          /* seconds between rotations; fixed */
    atomic_uint refs;
};

struct rs_tls_ctx {
    WOLFSSL_CTX *ctx; /* owned */
    atomic_uint refs;
    bool mtls;                /* a client certificate is required and verified */
    struct rs_tls_keys *keys; /* one reference held, or NULL (wolfSSL's ticket keys) */
};

/* A connection's AES key expanded for intel-ipsec-mb, with the raw key it was made from, to
 * notice a KeyUpdate (wolfSSL stores each key it installs in keys.server_write_key or
 * keys.client_write_key). */
struct imb_key;
static void imb_key_free(struct imb_key *k);

struct outbuf {
    uint8_t *p; /* owned */
    size_t len, cap;
};

struct rs_tls {
    WOLFSSL *ssl;           /* owned */
    struct rs_tls_ctx *ctx; /* one reference held */
    /* receive: the view of ciphertext being fed */
    const uint8_t *in;
    size_t inlen, inoff;
    /* send: out[fill] collects output; out[fill ^ 1] is taken while |taken| */
    struct outbuf out[2];
    unsigned fill;
    bool taken;
    bool overflow;        /* the send callback hit RS_TLS_OUT_MAX */
    bool ready;           /* handshake complete */
    bool shut;            /* close_notify queued */
    bool seal;            /* TLS 1.3 with AES-GCM: rs_tls_write() seals records itself */
    struct imb_key *wkey; /* owned: the write key for intel-ipsec-mb, or NULL */
    char *peer;           /* owned: the verified client identity, see rs_tls_peer() */
    uint8_t *stage;       /* owned, RS_TLS_RECORD bytes: small pieces gathered into one record */
    char err[96];
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_ret;

static void lib_init(void)
{
    init_ret = wolfSSL_Init();
}

/* Who seals TLS 1.3 AES-GCM records, decided once per process (seal_init()). */
static pthread_once_t seal_once = PTHREAD_ONCE_INIT;
static bool seal_on;                      /* rs_tls_write() seals them itself */
static const char *seal_line = "wolfSSL"; /* for rs_tls_sealer() */
#if RS_TLS_IMB
/* Process-wide, made once and only read after: the GCM entry points it holds keep their state
 * in the caller's key and context structures, so every worker thread may call them at once.
 * NULL: wolfSSL's AES-GCM seals. */
static IMB_MGR *imb;
#endif

/* RS_TLS_SEAL (environment, for comparisons and tests): "off" leaves every record to wolfSSL,
 * "wolfssl" seals with wolfSSL's AES-GCM, anything else (the default) with intel-ipsec-mb where
 * the CPU has VAES and VPCLMULQDQ with AVX-512 (about twice wolfSSL's AVX2 code), else with
 * wolfSSL's. */
static void seal_init(void)
{
#if RS_TLS_SEAL
    const char *env = getenv("RS_TLS_SEAL");

    pthread_once(&init_once, lib_init);
    /* internal.h compiled with the installed options.h must describe the structures the
     * library was built with; a size mismatch would mean another configuration. */
    if (wolfSSL_GetObjectSize() != (int)sizeof(WOLFSSL)) {
        seal_line = "wolfSSL (internal.h does not match the library)";
        return;
    }
    if (env != NULL && strcmp(env, "off") == 0) {
        seal_line = "wolfSSL (RS_TLS_SEAL=off)";
        return;
    }
    seal_on = true;
    seal_line = "ringstream, AES-GCM by wolfSSL";
#if RS_TLS_IMB
    if (env == NULL || strcmp(env, "wolfssl") != 0) {
        const uint64_t want = IMB_FEATURE_VAES | IMB_FEATURE_VPCLMULQDQ;
        IMB_MGR *m = alloc_mb_mgr(0);
        IMB_ARCH arch = IMB_ARCH_NONE;

        if (m != NULL)
            init_mb_mgr_auto(m, &arch);
        if (m != NULL && arch == IMB_ARCH_AVX512 && (m->features & want) == want &&
            imb_get_errno(m) == 0) {
            imb = m;
            seal_line = "ringstream, AES-GCM by intel-ipsec-mb " IMB_VERSION_STR " (VAES, AVX-512)";
        } else if (m != NULL) {
            free_mb_mgr(m);
        }
    }
#endif
#endif
}

bool rs_tls_seal_built(void)
{
    pthread_once(&seal_once, seal_init);
    return seal_on;
}

const char *rs_tls_sealer(void)
{
    pthread_once(&seal_once, seal_init);
    return seal_line;
}

/* Room for |n| more bytes at the end of the filling output buffer, which grows by doubling up
 * to RS_TLS_OUT_MAX (then, or out of memory, |overflow| is set and NULL returned). */
static uint8_t *out_reserve(struct rs_tls *t, size_t n)
{
    struct outbuf *o = &t->out[t->fill];
    size_t need = o->len + n;

    if (need > o->cap) {
        size_t cap = o->cap > 0 ? o->cap : RS_TLS_OUT_MIN;
        uint8_t *p;

        while (cap < need)
            cap *= 2;
        if (cap > RS_TLS_OUT_MAX) {
            t->overflow = true;
            return NULL;
        }
        p = realloc(o->p, cap);
        if (p == NULL) {
            t->overflow = true;
            return NULL;
        }
        o->p = p;
        o->cap = cap;
    }
    return o->p + o->len;
}

static int on_io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    struct rs_tls *t = arg;
    size_t n = t->inlen - t->inoff;

    (void)ssl;
    if (n == 0)
        return WOLFSSL_CBIO_ERR_WANT_READ;
    if (n > (size_t)sz)
        n = (size_t)sz;
    memcpy(buf, t->in + t->inoff, n);
    t->inoff += n;
    return (int)n;
}

static int on_io_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    struct rs_tls *t = arg;
    uint8_t *p = out_reserve(t, (size_t)sz);

    (void)ssl;
    if (p == NULL)
        return WOLFSSL_CBIO_ERR_GENERAL;
    memcpy(p, buf, (size_t)sz);
    t->out[t->fill].len += (size_t)sz;
    return sz;
}

static void wolf_reason(int code, char *buf, size_t len)
{
    char s[WOLFSSL_MAX_ERROR_SZ];

    if (code == WOLFSSL_FAILURE) { /* the file loaders' only failure value */
        snprintf(buf, len, "malformed PEM or wrong type");
        return;
    }
    wolfSSL_ERR_error_string_n((unsigned long)code, s, sizeof(s));
    snprintf(buf, len, "%s (%d)", s, code);
}

static int readable(const char *what, const char *path, char *err, size_t errlen)
{
    if (access(path, R_OK) != 0) {
        snprintf(err, errlen, "cannot read the TLS %s %s: %s", what, path, strerror(errno));
        return -errno;
    }
    return 0;
}

/* ---- ticket keys ------------------------------------------------------------------------ */

static int fill_random(void *p, size_t n)
{
    uint8_t *b = p;

    while (n > 0) {
        ssize_t got = getrandom(b, n, 0);

        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -EIO;
        }
        b += got;
        n -= (size_t)got;
    }
    return 0;
}

static double seconds_since(const struct timespec *t)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Under the exclusive lock. The previous key is wiped, the current one becomes previous. */
static int rotate_locked(struct rs_tls_keys *k)
{
    struct ticket_key fresh;

    if (fill_random(fresh.name, sizeof(fresh.name)) < 0 ||
        fill_random(fresh.key, sizeof(fresh.key)) < 0) {
        explicit_bzero(&fresh, sizeof(fresh));
        return -EIO;
    }
    fresh.live = true;
    k->cur ^= 1u;
    k->key[k->cur] = fresh;
    explicit_bzero(&fresh, sizeof(fresh));
    clock_gettime(CLOCK_MONOTONIC, &k->made);
    return 0;
}

struct rs_tls_keys *rs_tls_keys_new(unsigned rotate_s, char *err, size_t errlen)
{
    struct rs_tls_keys *k = calloc(1, sizeof(*k));

    if (k == NULL) {
        snprintf(err, errlen, "out of memory for the TLS ticket keys");
        return NULL;
    }
    k->period = rotate_s > 0 ? rotate_s : 1;
    atomic_init(&k->refs, 1);
    if (rotate_locked(k) < 0) { /* key[1] current, key[0] not live */
        snprintf(err, errlen, "no randomness for the TLS ticket keys (getrandom)");
        free(k);
        return NULL;
    }
    pthread_rwlock_init(&k->lock, NULL);
    return k;
}

void rs_tls_keys_ref(struct rs_tls_keys *k)
{
    atomic_fetch_add(&k->refs, 1);
}

void rs_tls_keys_unref(struct rs_tls_keys *k)
{
    if (k == NULL || atomic_fetch_sub(&k->refs, 1) != 1)
        return;
    pthread_rwlock_destroy(&k->lock);
    explicit_bzero(k->key, sizeof(k->key));
    free(k);
}

unsigned rs_tls_keys_period(const struct rs_tls_keys *k)
{
    return k->period;
}

int rs_tls_keys_rotate(struct rs_tls_keys *k)
{
    int ret;

    pthread_rwlock_wrlock(&k->lock);
    ret = rotate_locked(k);
    pthread_rwlock_unlock(&k->lock);
    return ret;
}

/* Rotates when the current key is |period| old: twice when it is two periods old (a server
 * that issued no ticket for that long keeps no key that old). Takes the lock shared to look. */
static void rotate_if_due(struct rs_tls_keys *k)
{
    double age;

    pthread_rwlock_rdlock(&k->lock);
    age = seconds_since(&k->made);
    pthread_rwlock_unlock(&k->lock);
    if (age < k->period)
        return;
    pthread_rwlock_wrlock(&k->lock);
    age = seconds_since(&k->made); /* another thread may have rotated meanwhile */
    if (age >= 2.0 * k->period && rotate_locked(k) == 0) {
        explicit_bzero(&k->key[k->cur ^ 1u], sizeof(k->key[0])); /* live = false */
        age = 0;
    }
    if (age >= k->period)
        rotate_locked(k); /* no randomness: the old key seals on, retried on the next ticket */
    pthread_rwlock_unlock(&k->lock);
}

static void ticket_aad(uint8_t *aad, const uint8_t *name, const uint8_t *iv, size_t len)
{
    memcpy(aad, name, RS_TLS_TICKET_NAME);
    memcpy(aad + RS_TLS_TICKET_NAME, iv, RS_TLS_TICKET_NONCE);
    aad[RS_TLS_TICKET_NAME + RS_TLS_TICKET_NONCE] = (uint8_t)(len >> 8);
    aad[RS_TLS_TICKET_NAME + RS_TLS_TICKET_NONCE + 1] = (uint8_t)len;
}

#define RS_TLS_TICKET_AAD (RS_TLS_TICKET_NAME + RS_TLS_TICKET_NONCE + 2)

int rs_tls_keys_seal(struct rs_tls_keys *k, uint8_t name[16], uint8_t iv[16], uint8_t mac[32],
                     uint8_t *buf, size_t len)
{
    uint8_t aad[RS_TLS_TICKET_AAD];
    int ret;

    if (len > UINT16_MAX)
        return -EIO;
    rotate_if_due(k);
    memset(iv, 0, 16);
    memset(mac, 0, 32);
    if (fill_random(iv, RS_TLS_TICKET_NONCE) < 0)
        return -EIO;
    pthread_rwlock_rdlock(&k->lock);
    memcpy(name, k->key[k->cur].name, RS_TLS_TICKET_NAME);
    ticket_aad(aad, name, iv, len);
    ret = wc_ChaCha20Poly1305_Encrypt(k->key[k->cur].key, iv, aad, sizeof(aad), buf, (word32)len,
                                      buf, mac);
    pthread_rwlock_unlock(&k->lock);
    return ret == 0 ? 0 : -EIO;
}

int rs_tls_keys_open(struct rs_tls_keys *k, const uint8_t name[16], const uint8_t iv[16],
                     const uint8_t mac[32], uint8_t *buf, size_t len)
{
    uint8_t aad[RS_TLS_TICKET_AAD];
    unsigned i;
    int ret = -ENOKEY;

    if (len > UINT16_MAX)
        return -EBADMSG;
    rotate_if_due(k);
    ticket_aad(aad, name, iv, len);
    pthread_rwlock_rdlock(&k->lock);
    for (i = 0; i < 2; i++) {
        const struct ticket_key *key = &k->key[k->cur ^ i];

        if (!key->live || memcmp(key->name, name, RS_TLS_TICKET_NAME) != 0)
            continue;
        ret = wc_ChaCha20Poly1305_Decrypt(key->key, iv, aad, sizeof(aad), buf, (word32)len, mac,
                                          buf) == 0
                      ? (int)i
                      : -EBADMSG;
        break;
    }
    pthread_rwlock_unlock(&k->lock);
    return ret;
}

/* wolfSSL's SessionTicketEncCb. Sealing: |ticket| holds |in_len| bytes of wolfSSL's session
 * state; encrypt in place, set *out_len (same length: no padding), fill key_name, iv and mac.
 * Opening: the same fields as received; decrypt in place. Returns WOLFSSL_TICKET_RET_OK,
 * _CREATE (opened with the previous key: issue a fresh ticket; TLS 1.3 always issues one on
 * resumption anyway), _REJECT (unknown key or bad tag: a full handshake, not an error) or
 * _FATAL (sealing failed: no ticket). Called by every worker concurrently. */
static int on_ticket(WOLFSSL *ssl, unsigned char key_name[WOLFSSL_TICKET_NAME_SZ],
                     unsigned char iv[WOLFSSL_TICKET_IV_SZ],
                     unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc, unsigned char *ticket,
                     int in_len, int *out_len, void *arg)
{
    struct rs_tls_keys *k = arg;
    int ret;

    (void)ssl;
    if (in_len < 0)
        return WOLFSSL_TICKET_RET_REJECT;
    if (enc) {
        if (rs_tls_keys_seal(k, key_name, iv, mac, ticket, (size_t)in_len) < 0)
            return WOLFSSL_TICKET_RET_FATAL;
        *out_len = in_len;
        return WOLFSSL_TICKET_RET_OK;
    }
    ret = rs_tls_keys_open(k, key_name, iv, mac, ticket, (size_t)in_len);
    if (ret < 0)
        return WOLFSSL_TICKET_RET_REJECT;
    *out_len = in_len;
    return ret == 0 ? WOLFSSL_TICKET_RET_OK : WOLFSSL_TICKET_RET_CREATE;
}

/* ---- contexts --------------------------------------------------------------------------- */

struct rs_tls_ctx *rs_tls_ctx_new(const char *cert, const char *key, const char *client_ca,
                                  struct rs_tls_keys *keys, char *err, size_t errlen)
{
    struct rs_tls_ctx *c;
    char why[WOLFSSL_MAX_ERROR_SZ + 16];
    int ret;

    err[0] = '\0';
    pthread_once(&init_once, lib_init);
    if (init_ret != WOLFSSL_SUCCESS) {
        snprintf(err, errlen, "wolfSSL_Init failed (%d)", init_ret);
        return NULL;
    }
    (void)rs_tls_seal_built(); /* decided here, not on some worker's first connection */
    if (readable("certificate", cert, err, errlen) < 0 || readable("key", key, err, errlen) < 0 ||
        (client_ca != NULL && readable("client CA", client_ca, err, errlen) < 0))
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto err_nomem;
    atomic_init(&c->refs, 1);
    c->ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
    if (c->ctx == NULL)
        goto err_free;
    if (wolfSSL_CTX_SetMinVersion(c->ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
        wolfSSL_CTX_set_cipher_list(c->ctx, suites) != WOLFSSL_SUCCESS) {
        snprintf(err, errlen, "wolfSSL: cannot restrict versions and cipher suites");
        goto err_ctx;
    }
    ret = wolfSSL_CTX_use_certificate_chain_file(c->ctx, cert);
    if (ret != WOLFSSL_SUCCESS) {
        wolf_reason(ret, why, sizeof(why));
        snprintf(err, errlen, "TLS certificate %s is not a usable PEM chain: %s", cert, why);
        goto err_ctx;
    }
    ret = wolfSSL_CTX_use_PrivateKey_file(c->ctx, key, WOLFSSL_FILETYPE_PEM);
    if (ret != WOLFSSL_SUCCESS) {
        wolf_reason(ret, why, sizeof(why));
        snprintf(err, errlen, "TLS key %s is not a usable PEM key: %s", key, why);
        goto err_ctx;
    }
    if (wolfSSL_CTX_check_private_key(c->ctx) != WOLFSSL_SUCCESS) {
        snprintf(err, errlen, "TLS key %s does not match the certificate %s", key, cert);
        goto err_ctx;
    }
    if (client_ca != NULL) {
        ret = wolfSSL_CTX_load_verify_locations(c->ctx, client_ca, NULL);
        if (ret != WOLFSSL_SUCCESS) {
            wolf_reason(ret, why, sizeof(why));
            snprintf(err, errlen, "TLS client CA %s is not usable: %s", client_ca, why);
            goto err_ctx;
        }
        wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                               NULL);
        c->mtls = true;
    } else {
        wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_NONE, NULL);
    }
    /* Tickets sealed with our keys, shared across reloads; no server-side session cache
     * (stateless: nothing per session is kept, and no global cache lock for the workers). */
    wolfSSL_CTX_set_session_cache_mode(c->ctx, WOLFSSL_SESS_CACHE_OFF);
    if (c->mtls) {
        /* No resumption under mutual TLS: a resumed handshake carries no client certificate
         * and a ticket does not keep it, so the identity handed to handlers would be lost. */
        if (wolfSSL_CTX_NoTicketTLSv12(c->ctx) != WOLFSSL_SUCCESS ||
            wolfSSL_CTX_no_ticket_TLSv13(c->ctx) != 0) {
            snprintf(err, errlen, "wolfSSL: cannot turn session tickets off");
            goto err_ctx;
        }
    } else if (keys != NULL) {
        unsigned life = keys->period < RS_TLS_TICKET_MAX_S ? keys->period : RS_TLS_TICKET_MAX_S;

        if (wolfSSL_CTX_set_TicketEncCb(c->ctx, on_ticket) != WOLFSSL_SUCCESS ||
            wolfSSL_CTX_set_TicketEncCtx(c->ctx, keys) != WOLFSSL_SUCCESS ||
            wolfSSL_CTX_set_TicketHint(c->ctx, (int)life) != WOLFSSL_SUCCESS ||
            wolfSSL_CTX_set_timeout(c->ctx, life) != WOLFSSL_SUCCESS) {
            snprintf(err, errlen, "wolfSSL: cannot set the session ticket keys");
            goto err_ctx;
        }
        rs_tls_keys_ref(keys);
        c->keys = keys;
    }
    wolfSSL_CTX_SetIORecv(c->ctx, on_io_recv);
    wolfSSL_CTX_SetIOSend(c->ctx, on_io_send);
    return c;
err_ctx:
    wolfSSL_CTX_free(c->ctx);
err_free:
    free(c);
    if (err[0] != '\0')
        return NULL;
err_nomem:
    snprintf(err, errlen, "out of memory for the TLS context");
    return NULL;
}

void rs_tls_ctx_ref(struct rs_tls_ctx *ctx)
{
    atomic_fetch_add(&ctx->refs, 1);
}

void rs_tls_ctx_unref(struct rs_tls_ctx *ctx)
{
    if (ctx == NULL || atomic_fetch_sub(&ctx->refs, 1) != 1)
        return;
    wolfSSL_CTX_free(ctx->ctx);
    rs_tls_keys_unref(ctx->keys);
    free(ctx);
}

struct rs_tls *rs_tls_new(struct rs_tls_ctx *ctx)
{
    struct rs_tls *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->ssl = wolfSSL_new(ctx->ctx);
    if (t->ssl == NULL)
        goto err_free;
    wolfSSL_SetIOReadCtx(t->ssl, t);
    wolfSSL_SetIOWriteCtx(t->ssl, t);
    if (wolfSSL_UseALPN(t->ssl, (char *)"h2", 2, WOLFSSL_ALPN_FAILED_ON_MISMATCH) !=
        WOLFSSL_SUCCESS)
        goto err_ssl;
    rs_tls_ctx_ref(ctx);
    t->ctx = ctx;
    return t;
err_ssl:
    wolfSSL_free(t->ssl);
err_free:
    free(t);
    return NULL;
}

void rs_tls_destroy(struct rs_tls *t)
{
    if (t == NULL)
        return;
    wolfSSL_free(t->ssl);
    imb_key_free(t->wkey);
    rs_tls_ctx_unref(t->ctx);
    free(t->out[0].p);
    free(t->out[1].p);
    free(t->stage);
    free(t->peer);
    free(t);
}

/* Builds t->peer from the verified client certificate. Out of memory leaves it NULL. */
static void keep_peer(struct rs_tls *t)
{
    WOLFSSL_X509 *x = wolfSSL_get_peer_certificate(t->ssl);
    char subject[256], *san;
    size_t len, off;

    if (x == NULL)
        return;
    subject[0] = '\0';
    wolfSSL_X509_NAME_oneline(wolfSSL_X509_get_subject_name(x), subject, sizeof(subject));
    len = strlen(subject) + 32;
    t->peer = malloc(len);
    if (t->peer == NULL)
        goto out;
    off = (size_t)snprintf(t->peer, len, "subject=%s; san=", subject);
    while ((san = wolfSSL_X509_get_next_altname(x)) != NULL) {
        size_t n = strlen(san);
        char *p = realloc(t->peer, off + n + 2);

        if (p == NULL)
            break;
        t->peer = p;
        off += (size_t)snprintf(t->peer + off, n + 2, "%s%s", t->peer[off - 1] == '=' ? "" : ",",
                                san);
    }
out:
    wolfSSL_X509_free(x);
}

#if RS_TLS_SEAL
/* TLS 1.3 AEAD limit for AES-GCM (RFC 8446 5.5: 2^24.5 records per key), as wolfSSL counts it
 * (AEAD_AES_LIMIT): at this sequence number a KeyUpdate is sent before the next record. */
#define RS_TLS_GCM_LIMIT ((uint64_t)0x016A09E6)

/* The negotiated connection is one whose application records we can seal: TLS 1.3 over a
 * stream, AES-GCM with a 16-byte tag, wolfSSL's cipher object keyed, and our view of wolfSSL's
 * structures the library's own. */
static bool seal_suite(const struct rs_tls *t)
{
    const WOLFSSL *ssl = t->ssl;

    return rs_tls_seal_built() && ssl->options.tls1_3 && !ssl->options.dtls &&
           ssl->specs.bulk_cipher_algorithm == wolfssl_aes_gcm &&
           ssl->specs.aead_mac_size == AES_GCM_AUTH_SZ && ssl->encrypt.setup &&
           ssl->encrypt.aes != NULL;
}

/* wolfSSL would write the next record itself now: refused after a decryption failure (as
 * SendData() refuses), or with its own output still buffered (never, since on_io_send() takes
 * all or fails, but then the order of records would be at stake). */
static bool seal_now(const struct rs_tls *t)
{
    const WOLFSSL *ssl = t->ssl;

    return t->seal && !t->shut && ssl->options.handShakeState == HANDSHAKE_DONE &&
           ssl->buffers.outputBuffer.length == 0 && ssl->error != VERIFY_MAC_ERROR &&
           ssl->error != DECRYPT_ERROR;
}

/* The nonce of the next record one way: the IV with the sequence number XORed into the last
 * 8 bytes, as BuildTls13Nonce() does. */
static void make_nonce(uint8_t nonce[AESGCM_NONCE_SZ], const uint8_t *iv, word32 hi, word32 lo)
{
    uint64_t seq = (uint64_t)hi << 32 | lo;
    int i;

    memcpy(nonce, iv, AESGCM_NONCE_SZ);
    for (i = 0; i < 8; i++)
        nonce[AESGCM_NONCE_SZ - 1 - i] ^= (uint8_t)(seq >> (8 * i));
}

static void seq_next(word32 *hi, word32 *lo)
{
    if (++*lo == 0)
        ++*hi;
}

/* The next write nonce, the sequence number advanced, so that the next record wolfSSL builds
 * itself (an alert, a KeyUpdate, close_notify) carries the number after ours. */
static void seal_nonce(WOLFSSL *ssl, uint8_t nonce[AESGCM_NONCE_SZ])
{
    make_nonce(nonce, ssl->keys.aead_enc_imp_IV, ssl->keys.sequence_number_hi,
               ssl->keys.sequence_number_lo);
    seq_next(&ssl->keys.sequence_number_hi, &ssl->keys.sequence_number_lo);
}

/* The keys one way: the write key is the server's on a server, the client's on a client. */
static const uint8_t *raw_key(const WOLFSSL *ssl, bool write)
{
    return (ssl->options.side == WOLFSSL_SERVER_END) == write ? ssl->keys.server_write_key
                                                              : ssl->keys.client_write_key;
}

/* One record's AES-GCM: intel-ipsec-mb's with the connection's expanded key, or wolfSSL's own
 * cipher object (streaming calls to seal, one call to open). */
struct gcm {
    Aes *aes;
#if RS_TLS_IMB
    const struct gcm_key_data *key; /* NULL: wolfSSL's */
    bool aes256;
    struct gcm_context_data ctx;
#endif
};

#if RS_TLS_IMB
struct imb_key {
    struct gcm_key_data key; /* 64-byte aligned: the structure is allocated so */
    uint8_t raw[AES_256_KEY_SIZE];
    bool keyed; /* key holds the expansion of raw */
};
#endif

static void imb_key_free(struct imb_key *k)
{
#if RS_TLS_IMB
    if (k != NULL)
        explicit_bzero(k, sizeof(*k));
#endif
    free(k);
}

/* Points |g| at the cipher for the current key one way (|write| or read), through |*slot| (the
 * connection's expanded key for intel-ipsec-mb, allocated on first use and expanded again when
 * wolfSSL installed another key: a KeyUpdate, ours or the peer's). */
static int gcm_setup(WOLFSSL *ssl, bool write, struct imb_key **slot, struct gcm *g)
{
    g->aes = write ? ssl->encrypt.aes : ssl->decrypt.aes;
#if RS_TLS_IMB
    g->key = NULL;
    if (imb != NULL) {
        size_t klen = ssl->specs.key_size;
        const uint8_t *raw = raw_key(ssl, write);
        struct imb_key *k = *slot;

        if (klen != AES_128_KEY_SIZE && klen != AES_256_KEY_SIZE)
            return 0; /* wolfSSL's AES takes it */
        if (k == NULL) {
            k = aligned_alloc(64, (sizeof(*k) + 63) & ~(size_t)63);
            if (k == NULL)
                return -ENOMEM;
            k->keyed = false;
            *slot = k;
        }
        g->aes256 = klen == AES_256_KEY_SIZE;
        if (!k->keyed || memcmp(k->raw, raw, klen) != 0) {
            if (g->aes256)
                IMB_AES256_GCM_PRE(imb, raw, &k->key);
            else
                IMB_AES128_GCM_PRE(imb, raw, &k->key);
            memcpy(k->raw, raw, klen);
            k->keyed = true;
        }
        g->key = &k->key;
    }
#else
    (void)slot;
#endif
    return 0;
}

static int gcm_begin(struct gcm *g, const uint8_t *nonce, const uint8_t *aad, size_t aadlen)
{
#if RS_TLS_IMB
    if (g->key != NULL) {
        if (g->aes256)
            IMB_AES256_GCM_INIT_VAR_IV(imb, g->key, &g->ctx, nonce, AESGCM_NONCE_SZ, aad, aadlen);
        else
            IMB_AES128_GCM_INIT_VAR_IV(imb, g->key, &g->ctx, nonce, AESGCM_NONCE_SZ, aad, aadlen);
        return 0;
    }
#endif
    if (wc_AesGcmEncryptInit(g->aes, NULL, 0, nonce, AESGCM_NONCE_SZ) != 0 ||
        wc_AesGcmEncryptUpdate(g->aes, NULL, NULL, 0, aad, (word32)aadlen) != 0)
        return -EPROTO;
    return 0;
}

static int gcm_update(struct gcm *g, uint8_t *dst, const uint8_t *src, size_t len)
{
#if RS_TLS_IMB
    if (g->key != NULL) {
        if (g->aes256)
            IMB_AES256_GCM_ENC_UPDATE(imb, g->key, &g->ctx, dst, src, len);
        else
            IMB_AES128_GCM_ENC_UPDATE(imb, g->key, &g->ctx, dst, src, len);
        return 0;
    }
#endif
    return wc_AesGcmEncryptUpdate(g->aes, dst, src, (word32)len, NULL, 0) == 0 ? 0 : -EPROTO;
}

static int gcm_final(struct gcm *g, uint8_t tag[AES_GCM_AUTH_SZ])
{
#if RS_TLS_IMB
    if (g->key != NULL) {
        if (g->aes256)
            IMB_AES256_GCM_ENC_FINALIZE(imb, g->key, &g->ctx, tag, AES_GCM_AUTH_SZ);
        else
            IMB_AES128_GCM_ENC_FINALIZE(imb, g->key, &g->ctx, tag, AES_GCM_AUTH_SZ);
        return 0;
    }
#endif
    return wc_AesGcmEncryptFinal(g->aes, tag, AES_GCM_AUTH_SZ) == 0 ? 0 : -EPROTO;
}

/* Opens |len| bytes of ciphertext and their tag into |out|: 0, or -EBADMSG (the tag does not
 * verify; |out| is then wiped). */
static int gcm_open(struct gcm *g, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
                    const uint8_t *in, size_t len, const uint8_t *tag, uint8_t *out)
{
#if RS_TLS_IMB
    if (g->key != NULL) {
        uint8_t want[AES_GCM_AUTH_SZ], diff = 0;
        int i;

        if (g->aes256) {
            IMB_AES256_GCM_INIT_VAR_IV(imb, g->key, &g->ctx, nonce, AESGCM_NONCE_SZ, aad, aadlen);
            IMB_AES256_GCM_DEC_UPDATE(imb, g->key, &g->ctx, out, in, len);
            IMB_AES256_GCM_DEC_FINALIZE(imb, g->key, &g->ctx, want, sizeof(want));
        } else {
            IMB_AES128_GCM_INIT_VAR_IV(imb, g->key, &g->ctx, nonce, AESGCM_NONCE_SZ, aad, aadlen);
            IMB_AES128_GCM_DEC_UPDATE(imb, g->key, &g->ctx, out, in, len);
            IMB_AES128_GCM_DEC_FINALIZE(imb, g->key, &g->ctx, want, sizeof(want));
        }
        for (i = 0; i < AES_GCM_AUTH_SZ; i++) /* in constant time */
            diff |= (uint8_t)(want[i] ^ tag[i]);
        if (diff != 0) {
            explicit_bzero(out, len);
            return -EBADMSG;
        }
        return 0;
    }
#endif
    if (wc_AesGcmDecrypt(g->aes, out, in, (word32)len, nonce, AESGCM_NONCE_SZ, tag, AES_GCM_AUTH_SZ,
                         aad, (word32)aadlen) != 0) {
        explicit_bzero(out, len);
        return -EBADMSG;
    }
    return 0;
}

/* Seals the |total| bytes of |iov| as TLS 1.3 application_data records of up to 16 KiB of
 * plaintext each, cut wherever 16 KiB ends (a record may hold the tail of one piece and the
 * head of the next). Each record is encrypted straight from the pieces into the output buffer:
 * no copy of the plaintext, no copy of the ciphertext. Records are as wolfSSL builds them
 * (BuildTls13Message): header 23 3 3 length, plaintext, inner content type 23, tag; the header
 * is the additional data; the nonce as seal_nonce(). */
static int seal_records(struct rs_tls *t, const struct iovec *iov, int iovcnt, size_t total)
{
    static const uint8_t inner_type = application_data;
    WOLFSSL *ssl = t->ssl;
    struct gcm g;
    int i = 0, ret;
    size_t off = 0;

    ret = gcm_setup(ssl, true, &t->wkey, &g);
    if (ret < 0)
        return ret;
    while (total > 0) {
        size_t n = total < RS_TLS_RECORD ? total : RS_TLS_RECORD;
        size_t body = n + 1 + AES_GCM_AUTH_SZ, left = n;
        uint8_t nonce[AESGCM_NONCE_SZ], *r, *dst;

        if (ssl->keys.sequence_number_hi != 0 || ssl->keys.sequence_number_lo >= RS_TLS_GCM_LIMIT) {
            /* wolfSSL sends the KeyUpdate (through on_io_send, after our records) and
             * installs the next write key, IV and sequence number 0 */
            if (wolfSSL_update_keys(ssl) != WOLFSSL_SUCCESS) {
                snprintf(t->err, sizeof(t->err), "KeyUpdate at the AES-GCM record limit failed");
                return t->overflow ? -ENOBUFS : -EPROTO;
            }
            ret = gcm_setup(ssl, true, &t->wkey, &g);
            if (ret < 0)
                return ret;
        }
        r = out_reserve(t, RECORD_HEADER_SZ + body);
        if (r == NULL)
            return -ENOBUFS;
        r[0] = application_data;
        r[1] = SSLv3_MAJOR;
        r[2] = TLSv1_2_MINOR;
        r[3] = (uint8_t)(body >> 8);
        r[4] = (uint8_t)body;
        seal_nonce(ssl, nonce);
        if (gcm_begin(&g, nonce, r, RECORD_HEADER_SZ) < 0)
            goto fail;
        dst = r + RECORD_HEADER_SZ;
        while (left > 0 && i < iovcnt) {
            size_t m = iov[i].iov_len - off;

            if (m > left)
                m = left;
            if (m > 0 && gcm_update(&g, dst, (const uint8_t *)iov[i].iov_base + off, m) < 0)
                goto fail;
            dst += m;
            left -= m;
            off += m;
            if (off == iov[i].iov_len) {
                i++;
                off = 0;
            }
        }
        if (gcm_update(&g, dst, &inner_type, 1) < 0 || gcm_final(&g, dst + 1) < 0)
            goto fail;
        t->out[t->fill].len += RECORD_HEADER_SZ + body;
        total -= n;
    }
    return 0;
fail:
    snprintf(t->err, sizeof(t->err), "AES-GCM record sealing failed");
    return -EPROTO;
}
/* wolfSSL's ProcessReply() state between records (doProcessInit, src/internal.c). */
#define RS_WOLF_PROCESS_INIT 0

struct rs_tls_opener {
    struct imb_key *key; /* owned: the read key for intel-ipsec-mb, or NULL */
};

struct rs_tls_opener *rs_tls_opener_new(void)
{
    return rs_tls_seal_built() ? calloc(1, sizeof(struct rs_tls_opener)) : NULL;
}

void rs_tls_opener_free(struct rs_tls_opener *o)
{
    if (o != NULL)
        imb_key_free(o->key);
    free(o);
}

ssize_t rs_tls_open(struct rs_tls_opener *o, struct WOLFSSL *ssl, const uint8_t *in, size_t len,
                    uint8_t *out, size_t cap, size_t *used)
{
    uint8_t nonce[AESGCM_NONCE_SZ];
    struct gcm g;
    size_t body, n;

    *used = 0;
    /* TLS 1.3 over a stream with AES-GCM, the handshake done, and wolfSSL between records:
     * nothing of the next record read into its buffer, no plaintext waiting, no failure */
    if (o == NULL || !ssl->options.tls1_3 || ssl->options.dtls ||
        ssl->options.handShakeState != HANDSHAKE_DONE ||
        ssl->specs.bulk_cipher_algorithm != wolfssl_aes_gcm ||
        ssl->specs.aead_mac_size != AES_GCM_AUTH_SZ || !ssl->decrypt.setup ||
        ssl->decrypt.aes == NULL ||
        ssl->buffers.inputBuffer.idx != ssl->buffers.inputBuffer.length ||
        ssl->buffers.clearOutputBuffer.length != 0 ||
        ssl->options.processReply != RS_WOLF_PROCESS_INIT || ssl->error == VERIFY_MAC_ERROR ||
        ssl->error == DECRYPT_ERROR)
        return -EAGAIN;
    if (len < RECORD_HEADER_SZ)
        return 0;
    body = (size_t)in[3] << 8 | in[4];
    /* TLSCiphertext: application_data, legacy version 3.3, at most 2^14 + 256 bytes */
    if (in[0] != application_data || in[1] != SSLv3_MAJOR || in[2] != TLSv1_2_MINOR ||
        body < AES_GCM_AUTH_SZ + 1 || body > RS_TLS_RECORD + 256 || body - AES_GCM_AUTH_SZ > cap)
        return -EAGAIN; /* wolfSSL answers what is wrong with it */
    if (len < RECORD_HEADER_SZ + body)
        return 0;
    if (gcm_setup(ssl, false, &o->key, &g) < 0)
        return -EAGAIN;
    n = body - AES_GCM_AUTH_SZ;
    make_nonce(nonce, ssl->keys.aead_dec_imp_IV, ssl->keys.peer_sequence_number_hi,
               ssl->keys.peer_sequence_number_lo);
    if (gcm_open(&g, nonce, in, RECORD_HEADER_SZ, in + RECORD_HEADER_SZ, n,
                 in + RECORD_HEADER_SZ + n, out) < 0)
        return -EAGAIN;              /* wolfSSL fails it again and sends bad_record_mac */
    while (n > 0 && out[n - 1] == 0) /* TLSInnerPlaintext: content, type, zero padding */
        n--;
    if (n == 0 || out[n - 1] != application_data) {
        /* a KeyUpdate, a NewSessionTicket or an alert (or no type at all): wolfSSL reads the
         * record again, with the sequence number we left alone */
        explicit_bzero(out, body - AES_GCM_AUTH_SZ);
        return -EAGAIN;
    }
    seq_next(&ssl->keys.peer_sequence_number_hi, &ssl->keys.peer_sequence_number_lo);
    *used = RECORD_HEADER_SZ + body;
    return (ssize_t)(n - 1);
}
#else
static bool seal_suite(const struct rs_tls *t)
{
    (void)t;
    return false;
}

struct rs_tls_opener *rs_tls_opener_new(void)
{
    return NULL;
}

void rs_tls_opener_free(struct rs_tls_opener *o)
{
    (void)o;
}

ssize_t rs_tls_open(struct rs_tls_opener *o, struct WOLFSSL *ssl, const uint8_t *in, size_t len,
                    uint8_t *out, size_t cap, size_t *used)
{
    (void)o, (void)ssl, (void)in, (void)len, (void)out, (void)cap;
    *used = 0;
    return -EAGAIN;
}

static void imb_key_free(struct imb_key *k)
{
    free(k);
}
#endif

/* Classifies a failed wolfSSL call: 0 for "wants more input", else a negative errno. */
static int failure(struct rs_tls *t, int ret)
{
    int e = wolfSSL_get_error(t->ssl, ret);

    if (e == WOLFSSL_ERROR_WANT_READ)
        return 0;
    if (t->overflow)
        return -ENOBUFS;
    if (e == WOLFSSL_ERROR_ZERO_RETURN) {
        snprintf(t->err, sizeof(t->err), "close_notify received");
        return -ECONNRESET;
    }
    wolf_reason(e, t->err, sizeof(t->err));
    return -EPROTO;
}

int rs_tls_recv(struct rs_tls *t, const uint8_t *in, size_t len, uint8_t *scratch, size_t cap,
                rs_tls_plain_cb cb, void *arg)
{
    int ret, n;

    t->in = in;
    t->inlen = len;
    t->inoff = 0;
    ret = 0;
    if (!t->ready) {
        n = wolfSSL_accept(t->ssl);
        if (n != WOLFSSL_SUCCESS) {
            ret = failure(t, n);
            goto out;
        }
        t->ready = true;
        t->seal = seal_suite(t);
        if (t->ctx->mtls)
            keep_peer(t);
    }
    for (;;) {
        n = wolfSSL_read(t->ssl, scratch, (int)(cap > INT32_MAX ? INT32_MAX : cap));
        if (n <= 0) {
            ret = failure(t, n);
            break;
        }
        ret = cb(arg, scratch, (size_t)n);
        if (ret < 0)
            break;
    }
out:
    t->in = NULL;
    t->inlen = 0;
    t->inoff = 0;
    return ret;
}

bool rs_tls_ready(const struct rs_tls *t)
{
    return t->ready;
}

/* One wolfSSL_write(): wolfSSL cuts |n| bytes into records of up to 16 KiB, copies each into
 * its record buffer, encrypts it there and hands it to on_io_send(). That callback never
 * answers WOLFSSL_CBIO_ERR_WANT_WRITE (it appends, or fails at the output bound), so a write
 * is whole or fatal: no partial write is ever resumed, and wolfSSL's rule that a write after
 * WANT_WRITE must pass the same buffer again never applies. |p| is free again on return. */
static int write_record(struct rs_tls *t, const void *p, size_t n)
{
    int ret = wolfSSL_write(t->ssl, p, (int)n);

    if (ret == (int)n)
        return 0;
    if (t->overflow)
        return -ENOBUFS;
    wolf_reason(wolfSSL_get_error(t->ssl, ret), t->err, sizeof(t->err));
    return -EPROTO;
}

/* Pieces of at least RS_TLS_DIRECT bytes (DATA payloads in pool blocks) are encrypted from
 * where they lie, in records of up to 16 KiB; smaller ones (frame headers, HEADERS, SETTINGS,
 * WINDOW_UPDATE, short messages) are gathered in the stage and leave as one record when the
 * next large piece comes, the stage fills or the batch ends. The threshold weighs a copy of
 * the piece (about 30 ns per KiB here) against a record of its own (22 bytes on the wire and
 * an AEAD call of a few hundred ns). With 16 KiB DATA frames each payload is one full record
 * and the 9-byte frame header rides with whatever small frames precede it. */
#define RS_TLS_DIRECT ((size_t)4096)

int rs_tls_write(struct rs_tls *t, const struct iovec *iov, int iovcnt)
{
    size_t staged = 0;
    int i, ret;

#if RS_TLS_SEAL
    if (seal_now(t)) {
        size_t total = 0;

        for (i = 0; i < iovcnt; i++)
            total += iov[i].iov_len;
        return seal_records(t, iov, iovcnt, total);
    }
#endif
    for (i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;

        if (left >= RS_TLS_DIRECT) {
            if (staged > 0) {
                ret = write_record(t, t->stage, staged);
                if (ret < 0)
                    return ret;
                staged = 0;
            }
            while (left > 0) { /* in pieces an int can count */
                size_t n = left < ((size_t)1 << 30) ? left : (size_t)1 << 30;

                ret = write_record(t, p, n);
                if (ret < 0)
                    return ret;
                p += n;
                left -= n;
            }
            continue;
        }
        if (t->stage == NULL) {
            t->stage = malloc(RS_TLS_RECORD);
            if (t->stage == NULL)
                return -ENOMEM;
        }
        while (left > 0) {
            size_t n = RS_TLS_RECORD - staged;

            if (n > left)
                n = left;
            memcpy(t->stage + staged, p, n);
            staged += n;
            p += n;
            left -= n;
            if (staged == RS_TLS_RECORD) {
                ret = write_record(t, t->stage, staged);
                if (ret < 0)
                    return ret;
                staged = 0;
            }
        }
    }
    return staged > 0 ? write_record(t, t->stage, staged) : 0;
}

void rs_tls_shutdown(struct rs_tls *t)
{
    if (t->shut)
        return;
    t->shut = true;
    wolfSSL_shutdown(t->ssl); /* queues close_notify; the peer's answer is not awaited */
}

size_t rs_tls_out_pending(const struct rs_tls *t)
{
    return t->out[t->fill].len;
}

size_t rs_tls_out_take(struct rs_tls *t, const uint8_t **data)
{
    struct outbuf *o = &t->out[t->fill];

    if (t->taken || o->len == 0) {
        *data = NULL;
        return 0;
    }
    t->taken = true;
    t->fill ^= 1u;
    *data = o->p;
    return o->len;
}

void rs_tls_out_done(struct rs_tls *t)
{
    struct outbuf *o = &t->out[t->fill ^ 1u];

    if (!t->taken)
        return;
    t->taken = false;
    o->len = 0;
}

void rs_tls_trim(struct rs_tls *t)
{
    unsigned i;

    for (i = 0; i < 2; i++) {
        struct outbuf *o = &t->out[i];

        if (o->len == 0 && !(t->taken && i != t->fill)) {
            free(o->p);
            o->p = NULL;
            o->cap = 0;
        }
    }
    free(t->stage);
    t->stage = NULL;
}

size_t rs_tls_mem(const struct rs_tls *t)
{
    return RS_TLS_STATE + t->out[0].cap + t->out[1].cap + (t->stage != NULL ? RS_TLS_RECORD : 0);
}

const char *rs_tls_peer(const struct rs_tls *t)
{
    return t->peer;
}

const char *rs_tls_error(const struct rs_tls *t)
{
    return t->err;
}

const char *rs_tls_version(const struct rs_tls *t)
{
    return wolfSSL_get_version(t->ssl);
}

const char *rs_tls_cipher(const struct rs_tls *t)
{
    return wolfSSL_get_cipher_name(t->ssl);
}

bool rs_tls_sealing(const struct rs_tls *t)
{
    return t->seal;
}

int rs_tls_set_write_seq(struct rs_tls *t, uint64_t seq)
{
#if RS_TLS_SEAL
    if (t->seal) {
        t->ssl->keys.sequence_number_hi = (word32)(seq >> 32);
        t->ssl->keys.sequence_number_lo = (word32)seq;
        return 0;
    }
#endif
    (void)t;
    (void)seq;
    return -ENOTSUP;
}

bool rs_tls_resumed(const struct rs_tls *t)
{
    return wolfSSL_session_reused(t->ssl) == 1;
}
