/* workers/server.h: the server: configuration, service registry, worker threads. */
#ifndef RS_WORKERS_SERVER_H
#define RS_WORKERS_SERVER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "core/call.h"

#define RS_HEADER_TIMEOUT_MS 10000u /* default of rs_config.header_timeout_ms */
#define RS_LISTEN_MAX        8      /* --listen addresses */

/* One address every worker binds with SO_REUSEPORT and accepts on with one multishot accept. */
struct rs_listen {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool h2c; /* written h2c://HOST:PORT: cleartext even when TLS is configured */
};

struct rs_config {
    struct rs_listen listen[RS_LISTEN_MAX]; /* nlisten of them; 0: none (tests feed conns) */
    unsigned nlisten;
    const char *tls_cert;      /* PEM chain; with tls_key, every non-h2c:// address is TLS.
                                * Borrowed: must outlive the server (SIGHUP rereads it) */
    const char *tls_key;       /* PEM private key; borrowed, as tls_cert */
    const char *tls_client_ca; /* PEM CAs client certificates must chain to; NULL: no mTLS */
    unsigned tls_ticket_hours; /* session ticket key rotation interval (default 24); kept
                                * across SIGHUP reloads */
    unsigned workers;          /* threads, each with its own ring */
    size_t max_msg;            /* largest message received or sent (default 4 MiB) */
    size_t stream_buffer;      /* per-stream receive window and send queue bytes (default 1 MiB) */
    uint32_t max_streams;      /* SETTINGS_MAX_CONCURRENT_STREAMS (default 100) */
    uint32_t max_header_list;  /* SETTINGS_MAX_HEADER_LIST_SIZE (default 16 KiB) */
    unsigned max_conns;        /* connections per worker (default 4096) */
    size_t pool_bytes;         /* cap of each worker's block pool (default 1 GiB) */
    size_t worker_budget;      /* memory a worker may hold for peers; 0 = derived from the
                                * machine's memory and the worker count (core/budget.h) */
    size_t conn_share;         /* most one connection may hold of it; 0 = budget / 8 */
    unsigned idle_ms;      /* close a connection with no stream for this long (default 300000) */
    unsigned handshake_ms; /* close a connection that sent no HTTP/2 frame by then (10000) */
    unsigned header_timeout_ms; /* a request header block, or a frame trickling in, must
                                 * complete by then, else GOAWAY and close; 0 means the
                                 * default, RS_HEADER_TIMEOUT_MS */
    unsigned glitch_budget;     /* suspicious events per connection per 10 s before GOAWAY
                                 * ENHANCE_YOUR_CALM (default 1000) */
    size_t send_zc_threshold;   /* DATA bytes per flush from which sends are zero-copy; 0 = off */
    unsigned drain_ms;          /* graceful shutdown: time in-flight calls get (default 30000) */
    bool metrics;               /* answer GET /metrics (default true) */
    bool method_metrics;        /* count started/messages/histogram per method (default true;
                                 * main.c: off with --metrics off and no --metrics-listen) */
    bool access_log;            /* one line per call on stderr (default false) */
    int listen_fd; /* a listening socket passed in (systemd socket activation): every worker
                    * accepts on a duplicate of it instead of binding; -1 = bind listen[].
                    * Borrowed: the caller keeps it open while the server lives */
};

/* Fills the documented defaults (listen 127.0.0.1:50051, one worker per online CPU). */
void rs_config_defaults(struct rs_config *cfg);

struct rs_server;

/* Returns owned server (release with rs_server_destroy), or NULL with a reason in |err|.
 * Binds the listening sockets, so an address in use fails here. |cfg| is copied. */
struct rs_server *rs_server_new(const struct rs_config *cfg, char *err, size_t errlen);
/* Registers |svc| (borrowed; must outlive the server). Before rs_server_start() only. */
int rs_server_add_service(struct rs_server *s, const struct rs_service *svc);
/* Starts the worker threads. Returns 0 or -errno with a reason in |err|. */
int rs_server_start(struct rs_server *s, char *err, size_t errlen);
/* Asks every worker to drain: GOAWAY, in-flight calls finish for up to drain_ms, then close.
 * Safe from any thread (also a signal-waiting one). */
void rs_server_stop(struct rs_server *s);
/* Live figures summed over the workers, for STATUS= and the watchdog. */
struct rs_server_stats {
    uint64_t conns_open;
    uint64_t streams_open;
    uint64_t calls; /* gRPC calls finished */
    uint64_t bytes_in, bytes_out;
    unsigned workers_stalled; /* workers whose loop has not turned for |stall_ms| */
};
/* Fills |out|; safe from any thread once the server started. */
void rs_server_stats(const struct rs_server *s, uint64_t stall_ms, struct rs_server_stats *out);

/* True once every worker thread is done (after rs_server_stop() and the drain). */
bool rs_server_stopped(const struct rs_server *s);
/* Rereads the TLS certificate, key and client CA: new connections use them, established ones
 * keep theirs. On a bad file the old ones stay. Returns 0 (also without TLS) or -errno with a
 * one-line reason in |err|. Safe from any thread. */
int rs_server_reload_tls(struct rs_server *s, char *err, size_t errlen);
/* --metrics-listen (workers/metrics_http.c, in ringstreamd only). Loads libmicrohttpd
 * (dlopen: only this feature needs it), then binds and listens on |addr| (before the workers
 * start, so a missing library or a taken port fails early and connections wait in the
 * backlog). Returns the socket, or -1 with a one-line reason in |err|. */
int rs_metrics_http_listen(const struct sockaddr *addr, socklen_t addrlen, char *err,
                           size_t errlen);
/* Serves GET /metrics over HTTP/1.1 on |fd| (takes ownership, also on failure) from a thread
 * of libmicrohttpd's. |srv| is borrowed and must have started; stop this before
 * rs_server_stop() (stopped workers free their counters). Returns owned, release with
 * rs_metrics_http_stop(); or NULL with a one-line reason in |err|. */
struct rs_metrics_http;
struct rs_metrics_http *rs_metrics_http_start(const struct rs_server *srv, int fd, char *err,
                                              size_t errlen);
/* Stops serving and joins the thread. Accepts NULL. */
void rs_metrics_http_stop(struct rs_metrics_http *m);
/* Waits for the workers to exit, then frees everything. Accepts NULL. */
void rs_server_destroy(struct rs_server *s);

#endif /* RS_WORKERS_SERVER_H */
