/* workers/internal.h: the structures shared by the worker loop (worker.c), the HTTP/2
 * connection (conn.c) and the call state machine (call.c). Never included outside workers/. */
#ifndef RS_WORKERS_INTERNAL_H
#define RS_WORKERS_INTERNAL_H
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "core/budget.h"
#include "core/call.h"
#include "core/chunkq.h"
#include "core/list.h"
#include "core/pool.h"
#include "core/timerheap.h"
#include "core/tls.h"
#include "proto/grpc.h"
#include "uring/ring.h"
#include "workers/server.h"

/* Completion kinds; the op byte of every user_data. */
enum rs_op {
    RS_OP_ACCEPT = 1, /* slot 0 */
    RS_OP_RECV,       /* slot = connection */
    RS_OP_SEND,       /* slot = connection */
    RS_OP_IO,         /* slot = I/O request */
    RS_OP_WAKE,       /* slot 0: eventfd read, another thread asked us to stop */
    RS_OP_TIMER,      /* slot 0: the drain deadline */
    RS_OP_CANCEL,     /* slot 0: completion of a cancel request, nothing to do */
    RS_OP_TICK,       /* slot 0: the once-a-second sweep of idle and stuck connections */
    RS_OP_TIMERS,     /* slot 0, gen = arming: the ring timeout of the worker's timer heap */
    RS_OP_BACKOFF,    /* slot 0: the accept backoff after EMFILE/ENFILE is over */
};

#define RS_CONN_IOV      128 /* iovecs gathered into one sendmsg */
#define RS_CONN_OUTBUF   ((size_t)64 * 1024)
#define RS_OUTBUF_CACHED 128 /* free output buffers a worker keeps for its connections */
#define RS_CONN_TXREFS   64  /* DATA frames referenced by one sendmsg */
#define RS_RECV_BUFS     64
#define RS_RECV_BUFSIZE  ((size_t)64 * 1024)
#define RS_BUF_HEADROOM  64 /* room before a zero-copy buffer for its message's headers */
#define RS_POOL_BLOCK    (64 * 1024 + RS_BUF_HEADROOM)
/* Small blocks: a send queue's first message when it fits one (a unary response), so it pins
 * a 1 KiB allocation (with struct rs_block and malloc's header) instead of a 64 KiB one. */
#define RS_POOL_SMALL_BLOCK  960
#define RS_POOL_SMALL_CACHED 1024 /* free small blocks a worker keeps: at most ~1 MiB */
/* Tiny blocks: the same for a message of up to 200 bytes (most unary responses; 32 B in the
 * compare harness's UnaryCall), a 240-byte allocation (256 with malloc's header) instead of
 * 1 KiB. With 1,000 calls in flight the small blocks were ~800 KiB resident. */
#define RS_POOL_TINY_BLOCK  200
#define RS_POOL_TINY_CACHED 1024 /* free tiny blocks a worker keeps: at most 256 KiB */

struct rs_server {
    struct rs_config cfg;
    const struct rs_service **services; /* borrowed entries */
    size_t nservices;
    size_t *method_base;       /* owned, per service: index of its first method in the metrics'
                                * call table; set by rs_server_start(), NULL before */
    size_t nmethods;           /* of every service; row nmethods of the table is "unknown" */
    size_t *stat_base;         /* owned, per service: index of its first counter in the workers'
                                * metrics.stats; set by rs_server_start(), NULL before */
    size_t nstats;             /* of every service (struct rs_service.nstats) */
    struct rs_worker *workers; /* cfg.workers of them */
    bool started;
    bool setup_failed;         /* written before the second barrier, read after it */
    unsigned nexited;          /* workers whose thread is done (atomic) */
    pthread_barrier_t barrier; /* workers + main: setup done; then go or give up */
    /* TLS: the context new connections use; NULL without --tls-cert. Replaced by a reload
     * (rs_server_reload_tls) under |tls_lock|; a connection holds its own reference. */
    struct rs_tls_ctx *tls;
    pthread_mutex_t tls_lock;
    struct rs_tls_keys *tls_keys; /* owned: session ticket keys, the same for every context */
};

#define RS_METRICS_CODES RS_STATS_CODES /* the label set is methods x gRPC status codes */
/* grpc_server_handling_seconds' buckets: go-grpc-prometheus' (Prometheus' DefBuckets) */
#define RS_METRICS_BUCKETS 12 /* 11 bounds and +Inf */

/* Why a connection was closed (ringstream_connections_closed_total's reason label). The first
 * reason noted wins; one never noted is "other". */
enum rs_close_reason {
    RS_CLOSE_OTHER = 0,
    RS_CLOSE_PEER,          /* the peer closed or reset the TCP connection, or ended the session */
    RS_CLOSE_ERROR,         /* a socket or HTTP/2 error, or the connection's memory share */
    RS_CLOSE_HANDSHAKE,     /* no HTTP/2 preface within --handshake-timeout-ms */
    RS_CLOSE_GOAWAY,        /* we ended the session: idle or header timeout, protocol error */
    RS_CLOSE_GLITCH,        /* the glitch budget ran out: GOAWAY ENHANCE_YOUR_CALM */
    RS_CLOSE_DRAIN,         /* the drain time ran out */
    RS_CLOSE_TLS_HANDSHAKE, /* the TLS handshake failed: not TLS, no h2 in ALPN, no suite in
                             * common, client certificate missing or untrusted (alert sent) */
    RS_CLOSE_TLS,           /* a TLS failure after the handshake: a record that does not
                             * decrypt, a renegotiation, the output bound (alert sent) */
    RS_CLOSE_COUNT
};

/* Per method (a row of the call table), go-grpc-prometheus' other series. */
struct rs_method_metrics {
    uint64_t started;                     /* calls routed to the method (its handler started) */
    uint64_t msg_in;                      /* request messages handed to the handler */
    uint64_t msg_out;                     /* response messages the handler queued */
    uint64_t sum_ns;                      /* of the handled calls' durations */
    uint64_t buckets[RS_METRICS_BUCKETS]; /* handled calls by duration, not cumulative */
};

/* What a worker counts for GET /metrics (workers/metrics.c). Written only by the worker's own
 * thread, with rs_metric_add() (a relaxed atomic store of load + 1: a plain add on x86-64,
 * no lock, no shared cache line); read by any worker answering /metrics with relaxed atomic
 * loads, so a value is never torn, at most a moment old. */
struct rs_worker_metrics {
    uint64_t conns_accepted;
    uint64_t conns_closed;
    uint64_t conns_refused; /* accepted by the kernel, closed at once: limit, budget, drain */
    uint64_t streams_opened;
    uint64_t streams_closed;
    uint64_t bytes_in; /* TCP payload received and sent */
    uint64_t bytes_out;
    uint64_t *calls; /* owned, (nmethods + 1) x RS_METRICS_CODES: finished gRPC calls */
    struct rs_method_metrics *methods; /* owned, nmethods + 1 rows, cache-line aligned */
    uint64_t *stats;  /* owned, srv->nstats: the services' own counters, cache-line aligned */
    uint64_t tick_ms; /* rs_now_ms() of the worker's last once-a-second tick (liveness) */
    uint64_t closed_by[RS_CLOSE_COUNT]; /* connections closed, by enum rs_close_reason */
    uint64_t glitch_goaways;            /* GOAWAY ENHANCE_YOUR_CALM sent */
    /* sampled by the worker's once-a-second tick (gauges; walking the streams is not for the
     * hot path) */
    uint64_t streams_stalled; /* with data queued but no flow-control window to send it */
    uint64_t queued_bytes;    /* in the streams' send queues */
};

static inline void rs_metric_add(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* A token bucket of uncompressed bytes the server may gzip; see rs_call_compress_budget(). */
struct rs_zbucket {
    uint64_t tokens;
    uint64_t last_ns; /* monotonic time of the last refill */
    uint32_t gen;     /* zconn: the connection generation the bucket belongs to */
    bool live;        /* zconn: |gen| is meaningful */
};

struct rs_worker {
    struct rs_ring ring;
    struct rs_server *srv; /* borrowed; read-only after start */
    struct rs_pool pool;   /* payload blocks of every send queue on this worker */
    struct rs_pool small;  /* RS_POOL_SMALL_BLOCK blocks for small messages; unused when its
                            * block_size is 0 (tests that build a worker by hand) */
    struct rs_pool tiny;   /* RS_POOL_TINY_BLOCK blocks for tiny messages; the same */
    unsigned id;
    int listen_fds[RS_LISTEN_MAX]; /* srv->cfg.listen[i]; -1 = none */
    unsigned accepting;            /* bit i: the multishot accept on listen_fds[i] is armed */
    int wake_fd;                   /* eventfd written by rs_server_stop() */
    uint64_t wake_buf;
    pthread_t thread;
    unsigned flags;
    /* connections by slot; slot 0 is never used (it names the worker in user_data) */
    struct rs_conn **conns;
    uint32_t *conn_gen;
    unsigned nconns;
    unsigned free_hint;
    /* file I/O requests by slot */
    struct rs_ioreq *ioreqs;
    unsigned nioreqs;
    unsigned io_free;       /* head of the free list of ioreq slots, 0 = none */
    struct rs_list pending; /* of rs_conn.pending_link: conns with deferred work */
    struct __kernel_timespec drain_ts;
    struct __kernel_timespec tick_ts;
    int setup_ret;
    char setup_err[256];

    /* limits (issue 15). The ioreq table above grows on demand up to nioreqs_max; nothing the
     * kernel reads lives in it, so moving it is safe. */
    unsigned nioreqs_max; /* derived from --max-conns at setup */
    /* call timers: one heap, one ring timeout armed for the earliest expiry */
    struct rs_timerheap timers;        /* of struct call_timer (worker.c), owned */
    struct __kernel_timespec timer_ts; /* delay of the armed ring timeout */
    uint64_t timer_armed_ns;           /* monotonic expiry it was armed for; 0 = none armed */
    uint32_t timer_gen;                /* generation of the armed one; older ones are stale */
    /* accept backoff after EMFILE/ENFILE */
    struct __kernel_timespec accept_ts;
    unsigned accept_backoff_ms; /* 0 = accepting normally */
    unsigned accept_refused;    /* accept failures since the last log line */
    uint64_t accept_logged_ms;  /* monotonic time of the last such log line; 0 = none */
    /* compression budget (workers/callx.c): per connection slot, and the worker's */
    struct rs_zbucket *zconn; /* owned, nconns entries */
    struct rs_zbucket zworker;
    /* memory a peer can make this worker hold (core/budget.h); every connection has an
     * account in it */
    struct rs_budget budget;
    uint64_t budget_logged_ms; /* monotonic time of the last "budget full" log line */
    uint64_t errlog_s;         /* monotonic second of the server-error warn lines below */
    unsigned errlog_n;         /* server-error warn lines written in that second */
    unsigned errlog_dropped;   /* and left out (said in the next one written) */
    /* output buffers (RS_CONN_OUTBUF bytes): a connection takes one when it has frames to send
     * and gives it back when the send is over, so an idle connection holds none. The first
     * RS_OUTBUF_CACHED come from one mapping per worker, page-aligned (a flush of a few small
     * frames dirties one page) and never freed; past them a burst takes malloc'ed ones, freed
     * when given back. */
    uint8_t *outslab;      /* owned (mmap): RS_OUTBUF_CACHED * RS_CONN_OUTBUF bytes, or NULL */
    unsigned outslab_used; /* slab buffers ever handed out (the rest untouched) */
    void *outbuf_free;     /* free slab buffers: a stack threaded through their first bytes */
    struct rs_worker_metrics metrics;
    uint8_t tls_plain[16384]; /* TLS receive: plaintext of one record, parsed at once */
};

enum {
    RS_WORKER_F_DRAINING = 1u << 0,
    RS_WORKER_F_ACCEPTING = 1u << 1,   /* a multishot accept is armed */
    RS_WORKER_F_ACCEPT_WAIT = 1u << 2, /* out of descriptors: the retry timeout is armed */
    /* A submission failed (full submission queue) and is retried by rs_worker_rearm(). */
    RS_WORKER_F_OWE_ACCEPT = 1u << 3,
    RS_WORKER_F_OWE_WAKE = 1u << 4,
    RS_WORKER_F_OWE_TICK = 1u << 5,
    RS_WORKER_F_OWE_DRAIN_TIMER = 1u << 6,
    RS_WORKER_F_OWE_ACCEPT_CANCEL = 1u << 7,
    RS_WORKER_F_DRAIN_GRACE = 1u << 8, /* --drain-ms ran out; calls were ended, closing next */
};

struct rs_ioreq {
    struct rs_call *call; /* holds a reference while in flight; NULL when the slot is free */
    rs_call_io_cb cb;     /* NULL: the result is dropped (a fire-and-forget close) */
    void *arg;
    uint32_t gen;
    unsigned next_free;
    int kind; /* RS_IO_* */
};

enum {
    RS_IO_READ = 1,
    RS_IO_WRITE,
    RS_IO_FSYNC,
    RS_IO_OPENAT,
    RS_IO_STATX,
    RS_IO_LINKAT,
    RS_IO_RENAMEAT,
    RS_IO_UNLINKAT,
    RS_IO_FGETXATTR,
    RS_IO_FSETXATTR,
    RS_IO_CLOSE,
    RS_IO_READV /* buf: the iovec array, len: its count */
};

struct rs_txref {
    struct rs_call *call; /* holds the bytes [0, len) at the front of call->txq unconsumed */
    size_t len;
};

struct rs_conn {
    struct rs_worker *w; /* borrowed */
    nghttp2_session *h2; /* owned */
    int fd;
    uint32_t slot;
    uint32_t gen;
    unsigned flags;
    unsigned inflight;           /* armed recv + in-flight send; freed only at 0 when closing */
    uint64_t born_ms;            /* monotonic, at accept */
    uint64_t active_ms;          /* monotonic, last time bytes arrived */
    int glitch_tokens;           /* suspicious events left before ENHANCE_YOUR_CALM */
    char peer[64];               /* "ip:port" for the access log, filled at its first line */
    uint8_t close_reason;        /* enum rs_close_reason, noted before rs_conn_close() */
    bool got_frame;              /* a valid HTTP/2 frame arrived: the handshake is done */
    struct rs_tls *tls;          /* owned; NULL for h2c. The transport under the session */
    size_t tls_charged;          /* rs_tls_mem() as last charged to |acct| */
    struct iovec tls_iov;        /* TLS: the ciphertext being sent (rs_tls_out_take's view) */
    struct rs_budget_acct acct;  /* what this connection holds, charged to w->budget */
    uint32_t window;             /* SETTINGS_INITIAL_WINDOW_SIZE last submitted */
    uint32_t window_floor;       /* the smaller of that and the one before it until the peer
                                  * ACKs: what nghttp2 may still hold streams to */
    struct rs_list calls;        /* every rs_call of this conn, live or waiting to be freed */
    struct rs_list ready;        /* of rs_call.ready_link: calls with work to run */
    struct rs_list pending_link; /* in worker->pending */
    /* send: one sendmsg in flight at a time, gathered from out[] and queue blocks */
    uint8_t *out;  /* owned, RS_CONN_OUTBUF bytes, from rs_worker_outbuf_get() while frames
                    * are being gathered or sent; NULL otherwise */
    size_t outlen; /* bytes of out[] referenced by iov[] */
    struct iovec iov[RS_CONN_IOV];
    int iovcnt;
    int iovoff; /* first iovec not yet fully sent */
    struct msghdr msg;
    struct rs_txref txrefs[RS_CONN_TXREFS];
    unsigned ntxrefs;
    unsigned zc_notifs; /* zero-copy notifications still to come for this flush */
    bool zc;            /* this flush goes by IORING_OP_SENDMSG_ZC */
    bool send_op;       /* a sendmsg (or its retry after a short send) is in flight */
    bool send_failed;   /* the flush failed; the conn is closing */
    /* input bounds (appended; see rs_conn_tick) */
    uint64_t hdr_begin_ms; /* monotonic: a request header block began; 0 = none in progress */
    uint64_t progress_ms;  /* monotonic: the parser last made progress (a frame began, a
                            * DATA chunk or a header field arrived) */
    int32_t last_begun_id; /* highest client stream id whose HEADERS began */
    unsigned nidgaps;      /* entries of idgaps[] in use, oldest overwritten first */
    struct rs_idgap {
        int32_t lo, hi; /* odd client stream ids lo..hi were skipped: never used */
    } idgaps[8];
};

enum {
    RS_CONN_F_CLOSING = 1u << 0, /* no more reads or writes; freed at inflight == 0 */
    RS_CONN_F_SENDING = 1u << 1, /* a sendmsg is in flight */
    RS_CONN_F_RECVING = 1u << 2, /* the multishot recv is armed */
    RS_CONN_F_GOAWAY = 1u << 3,  /* GOAWAY submitted for the drain */
    RS_CONN_F_CALM = 1u << 4,    /* GOAWAY(ENHANCE_YOUR_CALM) submitted */
    RS_CONN_F_TERM = 1u << 5,    /* a connection error was answered with GOAWAY: ignore input */
    RS_CONN_F_LINGER = 1u << 6,  /* TLS failed or ended: send the alert/close_notify, close */
};

struct rs_meta {
    char *name;  /* owned, NUL-terminated, lower-case */
    char *value; /* owned, NUL-terminated */
    size_t value_len;
};

/* What a request asked for, filled while its HEADERS arrive. */
enum rs_route {
    RS_ROUTE_NONE = 0, /* still receiving headers */
    RS_ROUTE_GRPC,     /* call->method is set */
    RS_ROUTE_HTTP,     /* a plain HTTP answer was submitted */
};

/* A stream's life, seen from the server (RFC 9113 5.1). Changed only by rs_stream_set_state(),
 * which asserts the legal predecessor (h2o's h2o_http2_stream_set_state):
 *
 *   RECV_HEADERS -> OPEN -> FINISHED -> TRAILERS_SENT -> CLOSED -> DONE -> (reaped)
 *
 * OPEN -> TRAILERS_SENT for a plain HTTP answer; any state before CLOSED -> CLOSED when nghttp2
 * closes the stream or the connection goes. The request direction is independent of it (a
 * response may end before the client's END_STREAM or after it): RS_CALL_F_REMOTE_END and
 * RS_CALL_F_HALF_CLOSED say where the input is. */
enum rs_stream_state {
    RS_STREAM_RECV_HEADERS = 0, /* the request's header block is arriving */
    RS_STREAM_OPEN,             /* routed; a plain HTTP answer waits here for END_STREAM */
    RS_STREAM_FINISHED,         /* the status is final; queued messages, then the trailers */
    RS_STREAM_TRAILERS_SENT,    /* the last HEADERS (or a plain answer) is submitted */
    RS_STREAM_CLOSED,           /* nghttp2 closed the stream: never name it to the session again */
    RS_STREAM_DONE,             /* on_done delivered; reaped once nothing references the call */
};

#define RS_CALL_META_INLINE 4
#define RS_CALL_STR_INLINE  256

/* One HTTP/2 stream; for gRPC paths, one call. Freed only by the reap at the end of
 * rs_conn_run(), once it is DONE, no I/O is in flight and no queued byte is referenced by a
 * sendmsg. */
struct rs_call {
    struct rs_conn *conn; /* borrowed; outlives the call */
    const struct rs_method *method;
    const struct rs_service *service;
    int32_t stream_id;
    enum rs_stream_state state; /* only through rs_stream_set_state() */
    unsigned flags;
    unsigned refs;             /* in-flight file I/O requests and timers */
    unsigned ntimers;          /* of |refs|, timers (cancelled when the call ends) */
    size_t charged;            /* charged to conn->acct: the call, its headers, its state and
                                * what the handler charged (rs_call_charge); not the queues */
    size_t rx_charged;         /* charged for the receive side: deframer buffer + inflated */
    size_t inflated_len;       /* bytes of |inflated| */
    size_t bufs_charged;       /* blocks handed out by rs_call_buf_get and not yet queued */
    struct rs_list timers;     /* of call_timer.link (worker.c); all-zero until the first */
    int64_t timeout_ns;        /* from grpc-timeout; 0 = none */
    uint8_t *inflated;         /* owned: the decompressed message with the handler, or NULL */
    bool req_gzip;             /* grpc-encoding: gzip on the request */
    bool accept_gzip;          /* grpc-accept-encoding lists gzip */
    bool last_compressed;      /* the message with the handler arrived compressed */
    struct rs_list link;       /* in conn->calls */
    struct rs_list ready_link; /* in conn->ready while it has work */
    /* receive */
    struct rs_deframer rx;
    size_t uncredited; /* bytes received and not yet given back to the stream window */
    /* send */
    struct rs_chunkq txq;
    size_t tx_framed; /* bytes at the front of txq referenced by DATA frames being sent */
    /* request headers; their strings come from rs_call_strdup() (release with rs_call_strfree) */
    char *path;        /* owned; NULL when the request had no :path (CONNECT) */
    char *method_name; /* owned :method; NULL when missing */
    char *content_type;
    char *grpc_encoding;
    struct rs_meta *meta; /* meta_inline, or an owned array past RS_CALL_META_INLINE entries */
    size_t nmeta;
    size_t header_bytes;
    /* A request's few short header strings and metadata entries live in the call itself, so
     * a unary call does not pay a malloc and a free for each (perf: they were the top malloc
     * site); what does not fit is malloc'ed. */
    struct rs_meta meta_inline[RS_CALL_META_INLINE];
    size_t str_used;                     /* bytes of str_inline handed out */
    char str_inline[RS_CALL_STR_INLINE]; /* bump-allocated, never given back before the call goes */
    /* response */
    struct rs_meta *resp_meta; /* owned; headers before the first message, else trailers */
    size_t nresp_meta;
    size_t resp_meta_bytes; /* of resp_meta, counted as SETTINGS_MAX_HEADER_LIST_SIZE does */
    enum rs_grpc_status status;
    char *status_msg; /* owned, percent-encoded */
    enum rs_route route;
    void *state_mem;             /* method->state_size bytes (rs_call_state()): state_inline when
                                  * they fit, else owned */
    max_align_t state_inline[4]; /* a small method state, without a malloc per call */
    const char *http_status;     /* static; the plain HTTP answer owed once the request ended */
    const char *http_allow;      /* static or NULL */
    const char *http_body;       /* static body of a plain HTTP answer */
    size_t http_len;
    size_t http_off;
    char *http_owned; /* owned body of a generated answer (/metrics), or NULL */
    /* for the log line and the metrics when the call ends */
    uint64_t born_ns;   /* monotonic, at the first HEADERS */
    uint64_t bytes_in;  /* gRPC message bytes (prefix included) handed to the handler */
    uint64_t bytes_out; /* DATA payload bytes framed for sending */
    size_t metrics_row; /* 1 + the method's row in the metrics tables once started, else 0 */
    char *log_name;     /* owned; the object named in the access log, or NULL */
};

/* The true flags beside the state: events and conditions that do not order a stream's life. */
enum {
    RS_CALL_F_STARTED = 1u << 0,        /* on_start ran */
    RS_CALL_F_HELD = 1u << 1,           /* a message view is with the handler */
    RS_CALL_F_REMOTE_END = 1u << 2,     /* END_STREAM received */
    RS_CALL_F_HALF_CLOSED = 1u << 3,    /* on_half_close delivered */
    RS_CALL_F_RESP_SUBMITTED = 1u << 4, /* response HEADERS submitted with our data provider */
    RS_CALL_F_DEFERRED = 1u << 5,       /* our data provider answered DEFERRED */
    RS_CALL_F_WANT_WRITABLE = 1u << 6,  /* rs_call_send answered -EAGAIN */
    RS_CALL_F_IN_CALLBACK = 1u << 7,    /* the handler's on_message is running */
    RS_CALL_F_FAILED = 1u << 8,         /* the transport failed the call (bad message etc.) */
    RS_CALL_F_DEADLINE = 1u << 9,       /* grpc-timeout expired */
    RS_CALL_F_DRAIN = 1u << 10,         /* on_drain is owed */
    RS_CALL_F_DRAINED = 1u << 11,       /* on_drain delivered */
    RS_CALL_F_COMMIT = 1u << 12,        /* the handler is committing: no core-made finish */
    RS_CALL_F_DEADLINE_OWED = 1u << 13, /* the deadline expired during the commit */
    RS_CALL_F_STATUS = 1u << 14,        /* rs_call_finish() set |status| */
    RS_CALL_F_SHUTDOWN = 1u << 15,      /* the drain ran out: queued data is dropped */
};

/* Response metadata bound per header block (rs_call_add_metadata answers -E2BIG past it):
 * the client's SETTINGS_MAX_HEADER_LIST_SIZE, at most this, less room for our own fields. */
#define RS_CALL_META_BYTES    ((size_t)16 * 1024)
#define RS_CALL_META_RESERVED ((size_t)1536) /* :status, content-type, grpc-status/-message */

/* call.c: a NUL-terminated copy of |n| bytes at |p|, owned by |call| (its inline space while
 * there is room, else malloc'ed); release with rs_call_strfree(), which accepts NULL. NULL
 * when out of memory. */
char *rs_call_strdup(struct rs_call *call, const uint8_t *p, size_t n);
void rs_call_strfree(struct rs_call *call, char *s);

/* worker.c */
/* Sets up |w| (its srv, id and wake_fd come from rs_server_new()) on the calling thread, which
 * then owns its ring: ring, receive buffers, pool, slot tables; arms the accept (when there is
 * a listening socket), the wake-up read and the tick. Returns 0 or -errno with a reason in |err|;
 * rs_worker_fini() is needed either way. worker threads call it first; tests call it directly. */
int rs_worker_init(struct rs_worker *w, char *err, size_t errlen);
/* Frees what rs_worker_init() set up; accepts a worker it never ran on, and a second call. */
void rs_worker_fini(struct rs_worker *w);
/* One loop turn: waits for completions, dispatches each, runs pending connections, then
 * retries submissions that failed (rs_worker_rearm). Returns completions handled or -errno. */
int rs_worker_turn(struct rs_worker *w);
/* Dispatches one completion (what rs_worker_turn() does for each). */
void rs_worker_handle_cqe(struct rs_worker *w, const struct rs_ring_cqe *cqe);
/* Runs the deferred work of every pending connection and frees those that are done. */
void rs_worker_run_pending(struct rs_worker *w);
/* Retries every owed submission (RS_WORKER_F_OWE_*); what fails again stays owed. */
void rs_worker_rearm(struct rs_worker *w);
/* True when the worker holds no connection. */
bool rs_worker_idle(const struct rs_worker *w);
void rs_worker_mark_pending(struct rs_worker *w, struct rs_conn *c);
/* Returns owned RS_CONN_OUTBUF bytes (contents undefined), release with rs_worker_outbuf_put();
 * NULL when malloc failed. */
uint8_t *rs_worker_outbuf_get(struct rs_worker *w);
/* Takes ownership of |buf| (NULL is accepted): cached for the next connection, or freed. */
void rs_worker_outbuf_put(struct rs_worker *w, uint8_t *buf);
int rs_worker_queue_io(struct rs_worker *w, struct rs_call *call, int kind, int fd, void *buf,
                       size_t len, uint64_t off, rs_call_io_cb cb, void *arg);
/* Cancels every timer |call| has pending; their callbacks then run with -ECANCELED. */
void rs_worker_cancel_timers(struct rs_worker *w, struct rs_call *call);

/* conn.c */
uint64_t rs_now_ms(void);
/* Counts one suspicious event (a reset, an empty frame, a stream we had to reset) against the
 * connection's budget; past it the connection ends with GOAWAY(ENHANCE_YOUR_CALM). */
void rs_conn_glitch(struct rs_conn *c, const char *what);
/* Once a second: refills the glitch budget, closes idle and handshake-stuck connections. */
void rs_conn_tick(struct rs_conn *c, uint64_t now_ms);
/* The receive window new streams of |c| get now: the configured one, smaller as the worker's
 * memory budget fills (core/budget.h). */
uint32_t rs_conn_stream_window(const struct rs_conn *c);
/* |tls| (borrowed; the conn takes its own reference) makes it a TLS connection; NULL: h2c. */
struct rs_conn *rs_conn_new(struct rs_worker *w, int fd, uint32_t slot, uint32_t gen,
                            struct rs_tls_ctx *tls);
void rs_conn_on_recv(struct rs_conn *c, const struct rs_ring_cqe *cqe);
void rs_conn_on_send(struct rs_conn *c, const struct rs_ring_cqe *cqe);
/* Runs deferred work: ready calls, then flushes. Called after each completion batch. */
void rs_conn_run(struct rs_conn *c);
void rs_conn_close(struct rs_conn *c);
/* Notes why |c| is about to close, unless a reason was noted already. */
static inline void rs_conn_note_close(struct rs_conn *c, enum rs_close_reason r)
{
    if (c->close_reason == RS_CLOSE_OTHER)
        c->close_reason = (uint8_t)r;
}
void rs_conn_drain(struct rs_conn *c);
/* Frees the conn if it is closing and nothing is in flight; returns true if freed. */
bool rs_conn_maybe_free(struct rs_conn *c);

/* worker.c: lays out the metrics tables of the services registered (method_base, stat_base);
 * rs_server_start() calls it, before any worker's rs_worker_init(). Once only. Returns 0 or
 * -ENOMEM. */
int rs_server_layout(struct rs_server *s);

/* metrics.c */
/* Allocates the worker's call table (metrics.calls). Returns 0 or -ENOMEM. */
int rs_metrics_init(struct rs_worker *w);
void rs_metrics_fini(struct rs_worker *w);
/* Counts a finished gRPC call of |call| (method may be NULL: unknown) with |status|. */
void rs_metrics_call(struct rs_worker *w, const struct rs_call *call, int status);
/* Samples the worker's gauges that need a walk of its streams (stalled, queued bytes); from
 * the once-a-second tick, on the worker's own thread. */
void rs_metrics_sample(struct rs_worker *w);
/* The call was routed to its method, whose handler starts now: counted as started. */
void rs_metrics_started(struct rs_worker *w, struct rs_call *call);
/* One request message handed to the handler, one response message queued. */
static inline void rs_metrics_msg_in(struct rs_worker *w, const struct rs_call *call)
{
    if (call->metrics_row != 0) /* 0 also when method_metrics is off */
        rs_metric_add(&w->metrics.methods[call->metrics_row - 1].msg_in, 1);
}
static inline void rs_metrics_msg_out(struct rs_worker *w, const struct rs_call *call)
{
    if (call->metrics_row != 0)
        rs_metric_add(&w->metrics.methods[call->metrics_row - 1].msg_out, 1);
}
/* Renders every worker's figures in Prometheus text format 0.0.4. Returns owned text (release
 * with free()) of *len bytes, or NULL when out of memory. Safe from any worker thread. */
char *rs_metrics_render(const struct rs_server *s, size_t *len);
/* Monotonic clock in ns. */
uint64_t rs_mono_ns(void);

/* call.c: the stream state machine. Internal names are rs_stream_*; rs_call_* is the handler
 * API of core/call.h. */
/* Returns an owned stream in RECV_HEADERS, linked into c->calls, or NULL (out of memory). */
struct rs_call *rs_stream_new(struct rs_conn *c, int32_t stream_id);
/* Moves |call| to |next|; asserts that its current state is a legal predecessor. */
void rs_stream_set_state(struct rs_call *call, enum rs_stream_state next);
/* The stream is gone from the session (nghttp2 closed it, or the connection): -> CLOSED. */
void rs_stream_close(struct rs_call *call);
/* Runs what the call has pending: start, messages, half-close, writable, done. Never frees. */
void rs_stream_run(struct rs_call *call);
void rs_stream_mark_ready(struct rs_call *call);
/* True when the call is DONE and nothing references it any more. */
bool rs_stream_reapable(const struct rs_call *call);
/* As rs_stream_reapable(); when true, marks the connection pending so that the reap at the end
 * of its rs_conn_run() frees the call. The caller must leave the call alone then. */
bool rs_stream_maybe_reap(struct rs_call *call);
/* The drain ran out: ends an unfinished gRPC call with UNAVAILABLE "server shutting down"
 * (trailers after what is already framed; the rest of its queue is dropped). Leaves plain
 * HTTP answers, calls that are committing, and calls whose trailers are out alone. */
void rs_stream_shutdown(struct rs_call *call);
/* Frees a reapable call; only rs_conn_run()'s reap calls it. */
void rs_stream_free(struct rs_call *call);
/* Routes a request whose HEADERS are complete: RECV_HEADERS -> OPEN. A plain HTTP answer is
 * owed until the request ended (rs_stream_run submits it), except CONNECT (answered at once). */
void rs_stream_route(struct rs_call *call);
extern const nghttp2_data_provider rs_stream_data_provider;
/* nghttp2 send_data_callback target: appends the DATA frame to the conn's send list. */
int rs_stream_frame_data(struct rs_call *call, const uint8_t *framehd, size_t length);
/* Charges |n| more bytes of the stream's own memory (headers, state) to its connection.
 * Returns 0, or -ENOBUFS/-EDQUOT (nothing charged). */
int rs_stream_charge(struct rs_call *call, size_t n);
/* Brings the charge for the receive side (deframer buffer, decompressed message) up to date.
 * Returns 0, or -ENOBUFS/-EDQUOT when it grew past what the budget allows (the caller fails
 * the stream; the old charge stands until the buffer is freed). */
int rs_stream_rx_account(struct rs_call *call);
/* Logs, at most once a second per worker, that the budget refused something. */
void rs_worker_budget_note(struct rs_worker *w, int err, const char *what);
/* The transport failed the call (a bad message, no memory): counts a glitch, finishes it. */
void rs_stream_fail(struct rs_call *call, enum rs_grpc_status status, const char *msg);

/* Former names, kept for the send path of conn.c (release_txrefs), which another branch
 * rewrites: marking ready, and "freed?" now meaning "reaped after this batch". */
static inline void rs_call_mark_ready(struct rs_call *call)
{
    rs_stream_mark_ready(call);
}
static inline bool rs_call_maybe_free(struct rs_call *call)
{
    return rs_stream_maybe_reap(call);
}

#endif /* RS_WORKERS_INTERNAL_H */
