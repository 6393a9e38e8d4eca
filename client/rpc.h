/* client/rpc.h: a small blocking gRPC client over one HTTP/2 connection (nghttp2 client
 * session, plain TCP or TLS with ALPN h2 through wolfSSL). One connection, one thread; calls
 * run one at a time with rsc_call_run(), which drives the socket with poll() until the call
 * ends. Request messages are pulled from a producer, responses pushed to a consumer, each one
 * whole gRPC message (the 5-byte prefix is this module's business). */
#ifndef RS_CLIENT_RPC_H
#define RS_CLIENT_RPC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rsc_conn;

struct rsc_tls_opts {
    bool on;
    const char *ca;         /* PEM CA bundle; NULL: the system's (Debian's ca-certificates) */
    const char *cert, *key; /* client certificate chain and key, both or neither */
    const char *servername; /* SNI and the name checked in the certificate; NULL: the host */
};

struct rsc_conn_opts {
    const char *server; /* "HOST:PORT", "[V6]:PORT" or "HOST" (port 50051) */
    struct rsc_tls_opts tls;
    int connect_timeout_ms; /* TCP connect and TLS handshake; 0: 10 s */
    int idle_timeout_ms;    /* a call with no bytes moving for this long fails; 0: 60 s */
};

/* A gRPC status as received (code 0..16) plus its decoded grpc-message. */
struct rsc_status {
    int code;
    char msg[512];
};

/* Request producer: points |*msg| at the next message's payload (a view the producer keeps
 * valid until its next call or the end of the call) and returns 1; returns 0 when the
 * request stream ends, or -1 to cancel the call (the producer keeps its own reason). */
typedef int (*rsc_next_fn)(void *arg, const uint8_t **msg, size_t *len);
/* Response consumer: one whole message, a view valid for the call only. Returns 0, or -1 to
 * cancel the call (RST_STREAM CANCEL; the consumer keeps its own reason). */
typedef int (*rsc_msg_fn)(void *arg, const uint8_t *msg, size_t len);

/* Connects (TCP, then TLS when asked) and sends the HTTP/2 preface. Returns owned (release
 * with rsc_conn_close), or NULL with a one-line reason in |err|. */
struct rsc_conn *rsc_conn_open(const struct rsc_conn_opts *o, char *err, size_t errlen);
/* Sends GOAWAY as far as the socket takes it without waiting, closes. Accepts NULL. */
void rsc_conn_close(struct rsc_conn *c);

/* Runs one call of |method| ("/pkg.Service/Method") to its end. |next| is NULL for a request
 * that is exactly the one message |req|/|reqlen| (borrowed for the call). Returns
 *   0            the call ended; |*st| holds its status (possibly not OK);
 *   -ECANCELED   |next| or |on_msg| returned -1 (the call was reset);
 *   -ECONNRESET, -ETIMEDOUT, -EPROTO, ... the connection failed (reason in |st->msg|; the
 *                connection is unusable afterwards). */
int rsc_call_run(struct rsc_conn *c, const char *method, const uint8_t *req, size_t reqlen,
                 rsc_next_fn next, rsc_msg_fn on_msg, void *arg, struct rsc_status *st);

/* Asynchronous calls, for several streams on one connection (bench): |on_done| gets the
 * outcome once, with |ret| and |st| as rsc_call_run() would return them (st a view valid for
 * the callback only). |req| is borrowed until then. Returns 0 (started), or -errno
 * (|on_done| not called). */
typedef void (*rsc_done_fn)(void *arg, int ret, const struct rsc_status *st);
int rsc_call_start(struct rsc_conn *c, const char *method, const uint8_t *req, size_t reqlen,
                   rsc_next_fn next, rsc_msg_fn on_msg, rsc_done_fn on_done, void *arg);
/* One round of I/O: writes what is pending, waits up to |timeout_ms| for input, processes it
 * (callbacks run from here). Returns 0, or -ECONNRESET once the connection failed (every
 * asynchronous call then got its |on_done|). */
int rsc_conn_poll(struct rsc_conn *c, int timeout_ms);
/* Calls open on |c|. */
unsigned rsc_conn_calls(const struct rsc_conn *c);

/* Bytes of DATA payload received and sent on |c| so far (for progress and rates). */
uint64_t rsc_conn_rx_bytes(const struct rsc_conn *c);

#endif /* RS_CLIENT_RPC_H */
