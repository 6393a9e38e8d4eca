/* client/rpc.c: see rpc.h. The socket is non-blocking and every wait is a poll() bounded by
 * the connection's timeouts, so no call can hang forever. nghttp2's output is gathered into
 * |out| and written (through wolfSSL when TLS is on) until the kernel says EAGAIN; input is
 * read until EAGAIN and fed to nghttp2_session_mem_recv(). */
#include "client/rpc.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <nghttp2/nghttp2.h>
#include <wolfssl/options.h> /* first: the library's build configuration */
#include <wolfssl/ssl.h>
#include "core/tls.h"
#include "proto/grpc.h"

#define DEFAULT_PORT "50051"
#define OUT_HIGH     (256 * 1024) /* stop pulling frames from nghttp2 above this */
#define IN_BUF       (64 * 1024)
/* TLS ciphertext read ahead: one recv() feeds wolfSSL many records. With its own socket reads
 * wolfSSL asks for a 5-byte record header and then for the rest of the record, two recv()
 * calls per record (four per 16 KiB DATA frame, sent as header and payload records). */
#define RX_BUF             (256 * 1024)
#define MAX_RECV_MSG       (16u * 1024 * 1024)
#define STREAM_WINDOW      (8 * 1024 * 1024)
#define CONN_WINDOW        (64 * 1024 * 1024)
#define DEFAULT_CONNECT_MS 10000
#define DEFAULT_IDLE_MS    60000

struct call {
    int32_t id;
    const uint8_t *req; /* the single request message, or NULL with |next| */
    size_t reqlen;
    rsc_next_fn next;
    rsc_msg_fn on_msg;
    void *arg;
    uint8_t prefix[RS_GRPC_PREFIX_LEN];
    const uint8_t *msg; /* message being sent (view from |next|) */
    size_t msglen;
    size_t sent; /* bytes of prefix + msg already handed to nghttp2 */
    bool have_msg, eof;
    bool cancelled; /* a callback returned -1 */
    bool closed;
    int http_status;
    bool have_grpc_status;
    struct rsc_status *st; /* the caller's (rsc_call_run) or |own| */
    struct rsc_status own;
    rsc_done_fn on_done;         /* NULL for rsc_call_run(): its loop collects the call */
    struct call *prev, *next_cl; /* in rsc_conn.calls */
    struct rs_deframer df;
};

struct rsc_conn {
    int fd;
    WOLFSSL_CTX *tls_ctx; /* owned; NULL for plain TCP */
    WOLFSSL *tls;         /* owned */
    nghttp2_session *h2;
    char authority[300];
    bool dead; /* transport failed: every call fails */
    int idle_ms;
    char why[256]; /* why |dead| */
    uint8_t *out;  /* bytes waiting for the socket: out[out_off..out_len) */
    size_t out_len, out_off, out_cap;
    uint8_t in[IN_BUF];
    uint8_t *rx; /* owned, RX_BUF bytes (TLS only): ciphertext read, rx[rx_off..rx_len) unused */
    size_t rx_off, rx_len;
    /* owned, or NULL: opens application records from rx straight into in (core/tls.h) */
    struct rs_tls_opener *opener;
    bool rx_short; /* rx[rx_off..rx_len) is part of a record: the socket must bring the rest */
    uint64_t rx_bytes;
    int64_t last_progress; /* monotonic ms of the last byte moved */
    struct call *calls;    /* open calls, owned; newest first */
    unsigned ncalls;
};

static __attribute__((format(printf, 3, 4))) void seterr(char *err, size_t len, const char *fmt,
                                                         ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Splits "HOST:PORT", "[V6]:PORT" or "HOST". Returns 0 or -EINVAL. */
static int split_server(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    size_t n;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL)
            return -EINVAL;
        n = (size_t)(close - s - 1);
        colon = close[1] == ':' ? close + 1 : NULL;
        if (close[1] != '\0' && colon == NULL)
            return -EINVAL;
        if (n == 0 || n >= hostlen)
            return -EINVAL;
        memcpy(host, s + 1, n);
        host[n] = '\0';
    } else {
        colon = strrchr(s, ':');
        n = colon != NULL ? (size_t)(colon - s) : strlen(s);
        if (n == 0 || n >= hostlen || (colon != NULL && memchr(s, ':', n) != NULL))
            return -EINVAL;
        memcpy(host, s, n);
        host[n] = '\0';
    }
    if (colon == NULL) {
        snprintf(port, portlen, "%s", DEFAULT_PORT);
        return 0;
    }
    if (colon[1] == '\0' || strlen(colon + 1) >= portlen ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return -EINVAL;
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
}

/* Waits for |events| on |fd| until |deadline| (monotonic ms). Returns 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd p = { .fd = fd, .events = events };
        int n;

        if (left <= 0)
            return -ETIMEDOUT;
        n = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0)
            return 0;
    }
}

static int tcp_connect(const char *host, const char *port, int timeout_ms, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res, *ai;
    int64_t deadline = now_ms() + timeout_ms;
    int rc, fd = -1, last = ECONNREFUSED;

    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        seterr(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        int one = 1, soerr = 0;
        socklen_t sl = sizeof(soerr);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            rc = wait_fd(fd, POLLOUT, deadline);
            if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                break;
            last = rc < 0 ? -rc : soerr;
        } else {
            last = errno;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        seterr(err, errlen, "cannot connect to %s:%s: %s", host, port, strerror(last));
    return fd;
}

static const char *tls_err(WOLFSSL *ssl, int ret)
{
    static char buf[WOLFSSL_MAX_ERROR_SZ];

    wolfSSL_ERR_error_string_n((unsigned long)wolfSSL_get_error(ssl, ret), buf, sizeof(buf));
    return buf;
}

/* wolfSSL's receive callback: serves ciphertext from c->rx, refilled by one recv() of up to
 * RX_BUF bytes when it is used up. */
static int on_tls_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    struct rsc_conn *c = arg;
    size_t n;

    (void)ssl;
    if (c->rx_off == c->rx_len) {
        ssize_t got = recv(c->fd, c->rx, RX_BUF, 0);

        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return WOLFSSL_CBIO_ERR_WANT_READ;
            if (errno == EINTR)
                return WOLFSSL_CBIO_ERR_ISR;
            return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_GENERAL;
        }
        if (got == 0)
            return WOLFSSL_CBIO_ERR_CONN_CLOSE;
        c->rx_off = 0;
        c->rx_len = (size_t)got;
        c->rx_short = false;
    }
    n = c->rx_len - c->rx_off;
    if (n > (size_t)sz)
        n = (size_t)sz;
    memcpy(buf, c->rx + c->rx_off, n);
    c->rx_off += n;
    return (int)n;
}

static bool is_ip_literal(const char *host)
{
    uint8_t a[16];

    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

static int tls_setup(struct rsc_conn *c, const struct rsc_tls_opts *t, const char *host,
                     int64_t deadline, char *err, size_t errlen)
{
    static const char *const system_ca = "/etc/ssl/certs/ca-certificates.crt";
    const char *name = t->servername != NULL ? t->servername : host;
    char alpn[] = "h2";
    char *proto = NULL;
    unsigned short plen = 0;
    int ret;

    wolfSSL_Init();
    c->tls_ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
    if (c->tls_ctx == NULL) {
        seterr(err, errlen, "TLS: out of memory");
        return -1;
    }
    ret = wolfSSL_CTX_load_verify_locations(c->tls_ctx, t->ca != NULL ? t->ca : system_ca, NULL);
    if (ret != WOLFSSL_SUCCESS) {
        seterr(err, errlen, "TLS: cannot load CA file %s", t->ca != NULL ? t->ca : system_ca);
        return -1;
    }
    wolfSSL_CTX_set_verify(c->tls_ctx, WOLFSSL_VERIFY_PEER, NULL);
    if (t->cert != NULL) {
        if (wolfSSL_CTX_use_certificate_chain_file(c->tls_ctx, t->cert) != WOLFSSL_SUCCESS) {
            seterr(err, errlen, "TLS: cannot load client certificate %s", t->cert);
            return -1;
        }
        if (wolfSSL_CTX_use_PrivateKey_file(c->tls_ctx, t->key, WOLFSSL_FILETYPE_PEM) !=
            WOLFSSL_SUCCESS) {
            seterr(err, errlen, "TLS: cannot load client key %s", t->key);
            return -1;
        }
        if (wolfSSL_CTX_check_private_key(c->tls_ctx) != WOLFSSL_SUCCESS) {
            seterr(err, errlen, "TLS: %s does not match the certificate %s", t->key, t->cert);
            return -1;
        }
    }
    c->tls = wolfSSL_new(c->tls_ctx);
    if (c->tls == NULL) {
        seterr(err, errlen, "TLS: out of memory");
        return -1;
    }
    c->rx = malloc(RX_BUF);
    if (c->rx == NULL) {
        seterr(err, errlen, "TLS: out of memory");
        return -1;
    }
    wolfSSL_set_fd(c->tls, c->fd); /* sends: wolfSSL's own; receives: on_tls_recv */
    wolfSSL_SSLSetIORecv(c->tls, on_tls_recv);
    wolfSSL_SetIOReadCtx(c->tls, c);
    wolfSSL_UseALPN(c->tls, alpn, sizeof(alpn) - 1, WOLFSSL_ALPN_FAILED_ON_MISMATCH);
    if (!is_ip_literal(name))
        wolfSSL_UseSNI(c->tls, WOLFSSL_SNI_HOST_NAME, name, (unsigned short)strlen(name));
    /* The name check: wolfSSL 5.5.4 as built here (no WOLFSSL_IP_ALT_NAME) matches DNS names
     * only, so an IP literal is checked by the chain alone, and only against a CA given with
     * --ca (a private PKI): with the system's public CAs it needs --servername. */
    if (!is_ip_literal(name)) {
        wolfSSL_check_domain_name(c->tls, name);
    } else if (t->ca == NULL) {
        seterr(err, errlen,
               "TLS to an IP address (%s) with the system CAs cannot check the server's name: "
               "give --servername NAME or --ca FILE",
               name);
        return -1;
    }
    for (;;) {
        int e;

        ret = wolfSSL_connect(c->tls);
        if (ret == WOLFSSL_SUCCESS)
            break;
        e = wolfSSL_get_error(c->tls, ret);
        if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE) {
            ret = wait_fd(c->fd, e == WOLFSSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
            if (ret < 0) {
                seterr(err, errlen, "TLS handshake with %s: %s", host, strerror(-ret));
                return -1;
            }
            continue;
        }
        seterr(err, errlen, "TLS handshake with %s failed: %s", host, tls_err(c->tls, ret));
        return -1;
    }
    if (wolfSSL_ALPN_GetProtocol(c->tls, &proto, &plen) != WOLFSSL_SUCCESS || plen != 2 ||
        memcmp(proto, "h2", 2) != 0) {
        seterr(err, errlen, "TLS: %s did not agree to HTTP/2 (ALPN h2)", host);
        return -1;
    }
    c->opener = rs_tls_opener_new(); /* NULL: wolfSSL_read() takes every record */
    return 0;
}

/* --- nghttp2 callbacks ------------------------------------------------------------------- */

static struct call *call_of(struct rsc_conn *c, int32_t id)
{
    return nghttp2_session_get_stream_user_data(c->h2, id);
}

static void call_unlink(struct rsc_conn *c, struct call *k)
{
    if (k->prev != NULL)
        k->prev->next_cl = k->next_cl;
    else
        c->calls = k->next_cl;
    if (k->next_cl != NULL)
        k->next_cl->prev = k->prev;
    k->prev = k->next_cl = NULL;
    c->ncalls--;
}

/* Hands an ended asynchronous call to its owner and frees it (|ret| as rsc_call_run's). */
static void call_done(struct rsc_conn *c, struct call *k, int ret)
{
    call_unlink(c, k);
    if (k->id > 0 && c->h2 != NULL)
        nghttp2_session_set_stream_user_data(c->h2, k->id, NULL);
    rs_deframer_free(&k->df);
    k->on_done(k->arg, ret, k->st);
    free(k);
}

static void call_cancel(struct rsc_conn *c, struct call *k)
{
    if (!k->cancelled) {
        k->cancelled = true;
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, k->id, NGHTTP2_CANCEL);
    }
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct rsc_conn *c = user_data;
    struct call *k = call_of(c, frame->hd.stream_id);

    if (k == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        k->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        k->have_grpc_status = true;
        k->st->code = valuelen > 0 && valuelen < 4 ? atoi((const char *)value) : 2;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        if (rs_grpc_pct_decode((const char *)value, valuelen, k->st->msg, sizeof(k->st->msg)) < 0)
            snprintf(k->st->msg, sizeof(k->st->msg), "%.*s", (int)(sizeof(k->st->msg) - 1),
                     (const char *)value);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *user_data)
{
    struct rsc_conn *c = user_data;
    struct call *k = call_of(c, id);
    struct rs_grpc_msg m;
    int rc;

    c->rx_bytes += len;
    if (k == NULL || k->cancelled)
        return 0;
    if (rs_deframer_push(&k->df, data, len) < 0) {
        snprintf(k->st->msg, sizeof(k->st->msg), "out of memory buffering a response");
        k->st->code = RS_GRPC_RESOURCE_EXHAUSTED;
        call_cancel(c, k);
        return 0;
    }
    while ((rc = rs_deframer_next(&k->df, 0, &m)) == 1) {
        int r = -1;

        if (m.compressed)
            snprintf(k->st->msg, sizeof(k->st->msg), "compressed response not asked for");
        else
            r = k->on_msg != NULL ? k->on_msg(k->arg, m.data, m.len) : 0;
        rs_deframer_pop(&k->df);
        if (r < 0) {
            call_cancel(c, k);
            return 0;
        }
    }
    if (rc < 0) {
        snprintf(k->st->msg, sizeof(k->st->msg), "malformed response message (%s)",
                 rc == -EMSGSIZE ? "too large" : strerror(-rc));
        call_cancel(c, k);
    }
    return 0;
}

/* A server that ends its side (trailers) while the request is still being sent has answered:
 * stop sending (RST_STREAM NO_ERROR, as gRPC clients do) instead of uploading the rest. */
static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
    struct rsc_conn *c = user_data;
    struct call *k = call_of(c, frame->hd.stream_id);

    if (k != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        !(k->eof && !k->have_msg))
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, k->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *user_data)
{
    struct rsc_conn *c = user_data;
    struct call *k = call_of(c, id);

    if (k == NULL)
        return 0;
    k->closed = true;
    if (k->cancelled || k->have_grpc_status)
        goto done;
    if (k->http_status != 0 && k->http_status != 200) {
        k->st->code = rs_grpc_status_from_http(k->http_status);
        snprintf(k->st->msg, sizeof(k->st->msg), "HTTP status %d", k->http_status);
    } else if (error_code != NGHTTP2_NO_ERROR) {
        k->st->code = error_code == NGHTTP2_REFUSED_STREAM ? RS_GRPC_UNAVAILABLE : RS_GRPC_INTERNAL;
        snprintf(k->st->msg, sizeof(k->st->msg), "stream reset by the server (%s)",
                 nghttp2_http2_strerror(error_code));
    } else {
        k->st->code = RS_GRPC_INTERNAL;
        snprintf(k->st->msg, sizeof(k->st->msg), "response ended without grpc-status");
    }
done:
    if (k->on_done != NULL)
        call_done(c, k, k->cancelled ? -ECANCELED : 0);
    return 0;
}

static ssize_t data_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    struct call *k = source->ptr;
    size_t done = 0;

    while (done < length) {
        size_t total, n;

        if (!k->have_msg) {
            int r;

            if (k->eof)
                break;
            if (k->next == NULL) {
                r = k->req != NULL ? 1 : 0;
                k->msg = k->req;
                k->msglen = k->reqlen;
                k->req = NULL;
            } else {
                r = k->next(k->arg, &k->msg, &k->msglen);
            }
            if (r < 0) {
                k->cancelled = true;
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            }
            if (r == 0) {
                k->eof = true;
                break;
            }
            rs_grpc_prefix_write(k->prefix, false, (uint32_t)k->msglen);
            k->have_msg = true;
            k->sent = 0;
        }
        total = RS_GRPC_PREFIX_LEN + k->msglen;
        while (k->sent < total && done < length) {
            if (k->sent < RS_GRPC_PREFIX_LEN) {
                n = RS_GRPC_PREFIX_LEN - k->sent;
                if (n > length - done)
                    n = length - done;
                memcpy(buf + done, k->prefix + k->sent, n);
            } else {
                size_t at = k->sent - RS_GRPC_PREFIX_LEN;

                n = k->msglen - at;
                if (n > length - done)
                    n = length - done;
                memcpy(buf + done, k->msg + at, n);
            }
            k->sent += n;
            done += n;
        }
        if (k->sent == total)
            k->have_msg = false;
    }
    if (k->eof && !k->have_msg)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)done;
}

/* --- transport --------------------------------------------------------------------------- */

static void conn_fail(struct rsc_conn *c, const char *fmt, const char *detail)
{
    if (!c->dead) {
        c->dead = true;
        snprintf(c->why, sizeof(c->why), fmt, detail);
    }
}

/* Moves nghttp2's output into |out| and writes as much as the socket takes. Returns true when
 * bytes are still waiting for the socket. */
static bool conn_flush(struct rsc_conn *c)
{
    while (!c->dead) {
        ssize_t n;

        if (c->out_off == c->out_len) {
            c->out_off = c->out_len = 0;
            while (c->out_len < OUT_HIGH) {
                const uint8_t *p;
                ssize_t m = nghttp2_session_mem_send(c->h2, &p);

                if (m < 0) {
                    conn_fail(c, "HTTP/2: %s", nghttp2_strerror((int)m));
                    return false;
                }
                if (m == 0)
                    break;
                if (c->out_len + (size_t)m > c->out_cap) {
                    size_t cap = c->out_cap ? c->out_cap : 64 * 1024;
                    uint8_t *o;

                    while (cap < c->out_len + (size_t)m)
                        cap *= 2;
                    o = realloc(c->out, cap);
                    if (o == NULL) {
                        conn_fail(c, "%s", "out of memory");
                        return false;
                    }
                    c->out = o;
                    c->out_cap = cap;
                }
                memcpy(c->out + c->out_len, p, (size_t)m);
                c->out_len += (size_t)m;
            }
            if (c->out_len == 0)
                return false;
        }
        if (c->tls != NULL) {
            int len = (int)(c->out_len - c->out_off), r;

            r = wolfSSL_write(c->tls, c->out + c->out_off, len);
            if (r <= 0) {
                int e = wolfSSL_get_error(c->tls, r);

                if (e == WOLFSSL_ERROR_WANT_WRITE || e == WOLFSSL_ERROR_WANT_READ)
                    return true;
                conn_fail(c, "TLS write: %s", tls_err(c->tls, r));
                return false;
            }
            n = r;
        } else {
            n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return true;
                conn_fail(c, "send: %s", strerror(errno));
                return false;
            }
        }
        c->out_off += (size_t)n;
    }
    return false;
}

/* Opens the next application record in c->rx into c->in ourselves (rs_tls_open), reading
 * more ciphertext behind a partial record when c->rx holds no whole one. Returns the
 * plaintext length (> 0), 0 when the socket has nothing more now, -EAGAIN when wolfSSL must
 * read the next record (from c->rx, through on_tls_recv), or -1 after conn_fail(). */
static ssize_t open_next(struct rsc_conn *c)
{
    for (;;) {
        size_t used, have;
        ssize_t n = rs_tls_open(c->opener, c->tls, c->rx + c->rx_off, c->rx_len - c->rx_off, c->in,
                                sizeof(c->in), &used);

        if (n == -EAGAIN)
            return -EAGAIN;
        c->rx_off += used;
        if (n > 0)
            return n;
        if (used > 0)
            continue;                 /* a record of padding only */
        have = c->rx_len - c->rx_off; /* part of a record, or nothing */
        if (have > 0 && c->rx_off > 0)
            memmove(c->rx, c->rx + c->rx_off, have);
        c->rx_off = 0;
        c->rx_len = have;
        n = recv(c->fd, c->rx + have, RX_BUF - have, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                c->rx_short = have > 0;
                return 0;
            }
            conn_fail(c, "recv: %s", strerror(errno));
            return -1;
        }
        if (n == 0) {
            conn_fail(c, "%s", "the server closed the connection");
            return -1;
        }
        c->rx_len += (size_t)n;
        c->rx_short = false;
    }
}

/* Reads until the socket is empty. Returns bytes read (0 with nothing), or -1 when dead. */
static ssize_t conn_read(struct rsc_conn *c)
{
    ssize_t total = 0;

    while (!c->dead) {
        ssize_t n;

        n = c->opener != NULL && c->tls != NULL ? open_next(c) : -EAGAIN;
        if (n == 0)
            return total;
        if (n == -1)
            return -1;
        if (n > 0) {
            /* opened by us */
        } else if (c->tls != NULL) {
            int r = wolfSSL_read(c->tls, c->in, (int)sizeof(c->in));

            if (r <= 0) {
                int e = wolfSSL_get_error(c->tls, r);

                if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
                    return total;
                if (e == WOLFSSL_ERROR_ZERO_RETURN)
                    conn_fail(c, "%s", "the server closed the connection");
                else
                    conn_fail(c, "TLS read: %s", tls_err(c->tls, r));
                return -1;
            }
            n = r;
        } else {
            n = recv(c->fd, c->in, sizeof(c->in), 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return total;
                conn_fail(c, "recv: %s", strerror(errno));
                return -1;
            }
            if (n == 0) {
                conn_fail(c, "%s", "the server closed the connection");
                return -1;
            }
        }
        total += n;
        if (nghttp2_session_mem_recv(c->h2, c->in, (size_t)n) < 0) {
            conn_fail(c, "%s", "HTTP/2 protocol error from the server");
            return -1;
        }
    }
    return -1;
}

struct rsc_conn *rsc_conn_open(const struct rsc_conn_opts *o, char *err, size_t errlen)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
        { NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 1 << 16 },
    };
    int timeout = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : DEFAULT_CONNECT_MS;
    char host[256], port[16];
    struct rsc_conn *c;

    if (split_server(o->server, host, sizeof(host), port, sizeof(port)) < 0) {
        seterr(err, errlen, "bad server address \"%s\" (want HOST:PORT)", o->server);
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    c->idle_ms = o->idle_timeout_ms > 0 ? o->idle_timeout_ms : DEFAULT_IDLE_MS;
    snprintf(c->authority, sizeof(c->authority), "%s", o->server);
    c->fd = tcp_connect(host, port, timeout, err, errlen);
    if (c->fd < 0)
        goto err_free;
    if (o->tls.on && tls_setup(c, &o->tls, host, now_ms() + timeout, err, errlen) < 0)
        goto err_close;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        seterr(err, errlen, "out of memory");
        goto err_close;
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    if (nghttp2_session_client_new(&c->h2, cbs, c) != 0) {
        nghttp2_session_callbacks_del(cbs);
        seterr(err, errlen, "out of memory");
        goto err_close;
    }
    nghttp2_session_callbacks_del(cbs);
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0) {
        seterr(err, errlen, "HTTP/2 session setup failed");
        goto err_close;
    }
    return c;
err_close:
    rsc_conn_close(c);
    return NULL;
err_free:
    free(c);
    return NULL;
}

void rsc_conn_close(struct rsc_conn *c)
{
    bool was_dead;

    if (c == NULL)
        return;
    was_dead = c->dead;
    if (c->h2 != NULL && !c->dead) {
        nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
        conn_flush(c);
    }
    if (!c->dead)
        conn_fail(c, "%s", "connection closed by the client");
    while (c->calls != NULL) { /* asynchronous calls still open: they fail */
        struct call *k = c->calls;

        snprintf(k->st->msg, sizeof(k->st->msg), "%s", c->why);
        call_done(c, k, -ECONNRESET);
    }
    nghttp2_session_del(c->h2);
    if (c->tls != NULL) {
        if (!was_dead)
            wolfSSL_shutdown(c->tls);
        wolfSSL_free(c->tls);
    }
    rs_tls_opener_free(c->opener);
    wolfSSL_CTX_free(c->tls_ctx);
    if (c->fd >= 0)
        close(c->fd);
    free(c->out);
    free(c->rx);
    free(c);
}

uint64_t rsc_conn_rx_bytes(const struct rsc_conn *c)
{
    return c->rx_bytes;
}

/* Submits the request of |k| (linked into |c| on success). Returns 0 or -errno. */
static int call_submit(struct rsc_conn *c, struct call *k, const char *method)
{
    const char *scheme = c->tls != NULL ? "https" : "http";
#define NV(n, v) \
    { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME }
    nghttp2_nv hdrs[] = {
        NV(":method", "POST"),
        NV(":scheme", scheme),
        NV(":path", method),
        NV(":authority", c->authority),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "ringstream-cli/0.1"),
    };
#undef NV
    nghttp2_data_provider prov;

    k->st->code = RS_GRPC_UNKNOWN;
    k->st->msg[0] = '\0';
    if (c->dead) {
        snprintf(k->st->msg, sizeof(k->st->msg), "%s", c->why);
        return -ECONNRESET;
    }
    rs_deframer_init(&k->df, MAX_RECV_MSG);
    prov.source.ptr = k;
    prov.read_callback = data_read;
    k->id = nghttp2_submit_request(c->h2, NULL, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), &prov, k);
    if (k->id < 0) {
        snprintf(k->st->msg, sizeof(k->st->msg), "HTTP/2: %s", nghttp2_strerror(k->id));
        return -EPROTO;
    }
    k->next_cl = c->calls;
    if (c->calls != NULL)
        c->calls->prev = k;
    c->calls = k;
    c->ncalls++;
    if (c->ncalls == 1)
        c->last_progress = now_ms();
    return 0;
}

int rsc_call_start(struct rsc_conn *c, const char *method, const uint8_t *req, size_t reqlen,
                   rsc_next_fn next, rsc_msg_fn on_msg, rsc_done_fn on_done, void *arg)
{
    struct call *k = calloc(1, sizeof(*k));
    int ret;

    if (k == NULL)
        return -ENOMEM;
    *k = (struct call){
        .req = req, .reqlen = reqlen, .next = next, .on_msg = on_msg, .on_done = on_done, .arg = arg
    };
    k->st = &k->own;
    ret = call_submit(c, k, method);
    if (ret < 0)
        free(k);
    return ret;
}

unsigned rsc_conn_calls(const struct rsc_conn *c)
{
    return c->ncalls;
}

int rsc_conn_poll(struct rsc_conn *c, int timeout_ms)
{
    bool pending;
    struct pollfd p;

    if (!c->dead) {
        pending = conn_flush(c);
        p = (struct pollfd){ .fd = c->fd, .events = POLLIN | (pending ? POLLOUT : 0) };
        if (c->dead) {
            /* the flush failed: fall through to failing the calls */
        } else if (c->tls != NULL &&
                   (wolfSSL_pending(c->tls) > 0 || (c->rx_off < c->rx_len && !c->rx_short))) {
            /* wolfSSL holds decrypted bytes, or c->rx ciphertext, the socket no longer shows */
            conn_read(c);
            c->last_progress = now_ms();
        } else {
            int n = poll(&p, 1, timeout_ms);

            if (n < 0 && errno != EINTR)
                conn_fail(c, "poll: %s", strerror(errno));
            if (n > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)) && conn_read(c) > 0)
                c->last_progress = now_ms();
            if (n > 0 && (p.revents & POLLOUT))
                c->last_progress = now_ms();
            if (!c->dead && c->ncalls > 0 && now_ms() - c->last_progress > c->idle_ms) {
                char what[64];

                snprintf(what, sizeof(what), "%d", c->idle_ms / 1000);
                conn_fail(c, "no answer from the server for %s s", what);
            }
        }
        if (!c->dead)
            conn_flush(c); /* what the input asked for: WINDOW_UPDATE, RST_STREAM, PING ack */
    }
    if (!c->dead)
        return 0;
    for (struct call *k = c->calls, *nx; k != NULL; k = nx) {
        nx = k->next_cl;
        if (k->on_done != NULL) {
            snprintf(k->st->msg, sizeof(k->st->msg), "%s", c->why);
            call_done(c, k, -ECONNRESET);
        }
    }
    return -ECONNRESET;
}

int rsc_call_run(struct rsc_conn *c, const char *method, const uint8_t *req, size_t reqlen,
                 rsc_next_fn next, rsc_msg_fn on_msg, void *arg, struct rsc_status *st)
{
    struct call *k = calloc(1, sizeof(*k));
    int ret;

    if (k == NULL) {
        snprintf(st->msg, sizeof(st->msg), "out of memory");
        return -ENOMEM;
    }
    *k = (struct call){ .req = req, .reqlen = reqlen, .next = next, .on_msg = on_msg, .arg = arg };
    k->st = st;
    ret = call_submit(c, k, method);
    if (ret < 0) {
        free(k);
        return ret;
    }
    while (!k->closed && !c->dead)
        rsc_conn_poll(c, 1000);
    ret = k->closed ? (k->cancelled ? -ECANCELED : 0) : -ECONNRESET;
    if (!k->closed)
        snprintf(st->msg, sizeof(st->msg), "%s", c->why);
    call_unlink(c, k);
    if (!k->closed && c->h2 != NULL)
        nghttp2_session_set_stream_user_data(c->h2, k->id, NULL);
    rs_deframer_free(&k->df);
    free(k);
    return ret;
}
