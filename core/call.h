/* core/call.h: the handler API every service is written against.
 *
 * A call is one gRPC stream. Everything about it runs on the worker thread that owns its
 * connection; no callback is ever invoked from another thread, and none re-enters: callbacks
 * run after the worker has finished parsing input, never from inside nghttp2.
 *
 * Receive: on_message hands over one whole message (the 5-byte prefix removed). The view stays
 * valid until the handler calls rs_call_consume(); no further message is delivered until then,
 * and the bytes withheld keep the client's flow-control window closed. A handler that finishes
 * with a message during the callback calls rs_call_consume() before returning; one that waits
 * for I/O (a file write) calls it from the I/O completion.
 *
 * Send: rs_call_send() queues one message into the stream's bounded send queue. When the queue
 * is full it answers -EAGAIN and on_writable follows once there is room again.
 *
 * End: rs_call_finish() ends the call with a status; queued messages go out first, then the
 * trailers. on_done is called exactly once, when the stream is gone (finished, reset by the
 * client, failed, or its connection closed); after it the handler must not use the call except
 * from completions of I/O it started, which still arrive (with rs_call_is_done() true), so the
 * handler can release what the I/O held. The call's memory lives until on_done has returned and
 * every such completion has arrived. */
#ifndef RS_CORE_CALL_H
#define RS_CORE_CALL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>
#include "proto/grpc.h"

struct rs_call;
struct rs_stats_view;

/* A method's streaming shape, as its .proto declares it (grpc_type in the metrics). */
enum rs_method_type {
    RS_METHOD_UNARY = 0, /* the default of a designated initializer */
    RS_METHOD_CLIENT_STREAM,
    RS_METHOD_SERVER_STREAM,
    RS_METHOD_BIDI_STREAM,
};

struct rs_method {
    const char *path; /* "/package.Service/Method" */
    enum rs_method_type type;
    size_t state_size; /* bytes of zeroed per-call state, see rs_call_state() */
    /* Request headers arrived and the call was routed. May send, finish, or do nothing. */
    void (*on_start)(struct rs_call *call);
    /* One whole request message, a view valid until rs_call_consume(call). */
    void (*on_message)(struct rs_call *call, const uint8_t *msg, size_t len);
    /* The client half-closed: no more messages will come. NULL: ignored. */
    void (*on_half_close)(struct rs_call *call);
    /* The send queue has room again after rs_call_send() answered -EAGAIN. NULL: ignored. */
    void (*on_writable)(struct rs_call *call);
    /* The call is over; |status| is what the client was told, or RS_GRPC_CANCELLED when the
     * stream was reset or the connection lost, or RS_GRPC_DEADLINE_EXCEEDED when the client's
     * grpc-timeout expired (the server already answered and reset the stream). Release
     * per-call resources here; stop any further work. NULL: ignored. */
    void (*on_done)(struct rs_call *call, enum rs_grpc_status status);
    /* The server started draining (SIGTERM): the call may run on until the drain timeout.
     * Long-lived calls (watches) should finish now. NULL: ignored. */
    void (*on_drain)(struct rs_call *call);
};

struct rs_service {
    const char *name;                /* "package.Service" */
    const struct rs_method *methods; /* borrowed; must outlive the server */
    size_t nmethods;
    void *ctx; /* borrowed; shared read-only by every worker, see rs_call_service_ctx() */
    /* The service's own counters for GET /metrics: |nstats| of them per worker, zeroed at
     * start, added to with rs_call_stat_add() and written out by |render_stats| (any thread,
     * while the server runs; read each counter with rs_stat_load()). 0 and NULL: none. */
    size_t nstats;
    void (*render_stats)(FILE *f, const struct rs_stats_view *v);
};

#define RS_STATS_CODES 17 /* gRPC status codes 0..16 */

/* What render_stats reads. Every pointer is a view valid during the call only. */
struct rs_stats_view {
    unsigned nworkers;
    const uint64_t *const *stats; /* per worker: the service's |nstats| counters */
    /* per worker: the service's finished calls, RS_STATS_CODES per method (in the order of
     * its methods table), by the gRPC status the client got; the counts behind
     * grpc_server_handled_total */
    const uint64_t *const *calls;
    void *ctx; /* the service's */
};

/* A counter another thread may be writing: never torn, at most a moment old. */
static inline uint64_t rs_stat_load(const uint64_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

/* Per-call state of |state_size| bytes, zeroed at start; lives as long as the call. */
void *rs_call_state(struct rs_call *call);
/* The |ctx| of the service the call was routed to. */
void *rs_call_service_ctx(const struct rs_call *call);
/* The :path of the call; view valid for the call's life. */
const char *rs_call_path(const struct rs_call *call);
/* The verified client certificate of a mutual-TLS connection (--tls-client-ca), as
 * "subject=<one-line X.509 subject>; san=<name>,<name>"; NULL over h2c or TLS without client
 * certificates. View valid for the call's life. */
const char *rs_call_peer_identity(const struct rs_call *call);
/* Names the object the call is about (|len| bytes, copied) for its access-log line; does
 * nothing (no copy) when the access log is off. The first name given is kept. */
void rs_call_set_log_name(struct rs_call *call, const char *name, size_t len);
/* True when the access log is on: work done only for rs_call_set_log_name() can be skipped
 * otherwise. */
bool rs_call_access_logged(const struct rs_call *call);
/* Adds |n| to counter |i| (below its service's |nstats|) of the call's worker. No lock and
 * no cache line shared with another worker: each worker writes only its own counters. */
void rs_call_stat_add(struct rs_call *call, size_t i, uint64_t n);
/* Largest message the call accepts and sends (the server's --max-msg). */
size_t rs_call_max_msg(const struct rs_call *call);

/* Request metadata (custom headers; pseudo-headers and the transport's own ones excluded).
 * Names are lower-case; values of -bin headers are the raw base64 text as sent. Views valid
 * for the call's life. rs_call_metadata() returns the first value of |name| or NULL. */
size_t rs_call_metadata_count(const struct rs_call *call);
void rs_call_metadata_at(const struct rs_call *call, size_t i, const char **name,
                         const char **value, size_t *value_len);
const char *rs_call_metadata(const struct rs_call *call, const char *name, size_t *value_len);

/* Adds a response header (before the first message) or, once messages are flowing, a trailer
 * sent with the status. Copies both. Any number of entries is sent, within a size bound per
 * header block: the client's SETTINGS_MAX_HEADER_LIST_SIZE, at most 16 KiB, less about 1.5 KiB
 * kept for the server's own fields (each entry counts name + value + 32 bytes, as the setting
 * does). Returns 0, -EINVAL for a name that is not lower-case token characters or is reserved,
 * -E2BIG past the bound (nothing added; the call goes on), -ENOMEM, -EALREADY when the trailers
 * were already submitted or the call is over. */
int rs_call_add_metadata(struct rs_call *call, const char *name, const char *value, size_t len);

/* Releases the message last handed to on_message. Allowed during on_message or later. */
void rs_call_consume(struct rs_call *call);

/* Queues one message: the concatenation of |iov| with the gRPC prefix in front (copied). The
 * first message also sends the response headers. Returns 0 or
 *   -EAGAIN     the send queue is full; nothing queued; on_writable follows;
 *   -EMSGSIZE   longer than rs_call_max_msg();
 *   -ENOMEM     the worker's block pool is exhausted (the caller should finish the call with
 *               RESOURCE_EXHAUSTED);
 *   -ECANCELED  the call is done or already finished. */
int rs_call_send(struct rs_call *call, const struct iovec *iov, int iovcnt);
/* As rs_call_send(); with RS_CALL_SEND_COMPRESS the message is gzip-compressed when the client
 * accepts gzip (grpc-accept-encoding), and sent plain otherwise. */
enum {
    RS_CALL_SEND_COMPRESS = 1u << 0
};
int rs_call_send_ex(struct rs_call *call, const struct iovec *iov, int iovcnt, unsigned flags);
/* Charges |len| uncompressed bytes to the call's connection's and worker's compression
 * budgets (workers/callx.c: 16 MiB/s per connection, 64 MiB/s per worker, in bursts of as
 * much) and returns true, or returns false, charging nothing, when either is spent: send that
 * message without RS_CALL_SEND_COMPRESS (plain; the client then pays in bytes). True without
 * charging when the client does not accept gzip. rs_call_send_ex() applies it to every
 * message sent with RS_CALL_SEND_COMPRESS, so handlers need not call it themselves. */
bool rs_call_compress_budget(struct rs_call *call, size_t len);
/* True when the client's last request message arrived compressed (grpc-encoding gzip). */
bool rs_call_msg_was_compressed(const struct rs_call *call);
/* True when the server is draining (see on_drain). */
bool rs_call_server_draining(const struct rs_call *call);
/* Zero-copy sends. rs_call_buf_get() returns an owned buffer of *cap bytes from the worker's
 * block pool, charged to the call's connection (NULL when the pool, the worker's memory budget
 * or the connection's share is exhausted): fill it (say with rs_call_pread()), then give it to
 * rs_call_send_buf(), or back with rs_call_buf_put(). */
void *rs_call_buf_get(struct rs_call *call, size_t *cap);
void rs_call_buf_put(struct rs_call *call, void *buf);
/* Queues one message: |hdr| (copied) followed by the first |len| bytes of |buf| (queued by
 * reference and sent from there). Takes ownership of |buf| when it returns 0; otherwise the
 * caller keeps it. Returns as rs_call_send(); never compresses. */
int rs_call_send_buf(struct rs_call *call, const struct iovec *hdr, int hdrcnt, void *buf,
                     size_t len);
/* The same for a message whose data spans |nbufs| buffers from rs_call_buf_get(), in order:
 * every one but the last filled to its capacity, the last with the rest of the |len| bytes.
 * Takes ownership of all of them when it returns 0; otherwise the caller keeps them. -EINVAL
 * when |len| does not split that way. The send queue takes it when it has room for all the
 * buffers (an empty queue takes any message up to the max). */
int rs_call_send_bufs(struct rs_call *call, const struct iovec *hdr, int hdrcnt, void *const *bufs,
                      size_t nbufs, size_t len);
/* Memory a handler keeps for a call beyond its messages (staging buffers, queued requests) is
 * charged to the call's connection and worker (the per-worker budget, each connection capped
 * at its share), so one peer cannot make the server hold more than its share.
 * rs_call_charge() returns 0, or -ENOMEM when the budget or the connection's share would be
 * passed (charging nothing: the handler should finish with RESOURCE_EXHAUSTED). Whatever is
 * still charged when the call is freed is released then; rs_call_uncharge() gives back earlier
 * (never more than was charged). */
int rs_call_charge(struct rs_call *call, size_t n);
void rs_call_uncharge(struct rs_call *call, size_t n);
/* Payload bytes of the largest message the send queue takes now without answering -EAGAIN. */
size_t rs_call_send_room(const struct rs_call *call);
/* True when nothing is queued: the next message is taken whatever its size (up to the max). */
bool rs_call_send_idle(const struct rs_call *call);
/* Flow control as the peer sees it (workers/callx.c), so a handler that produces data on
 * demand (a file download) reads ahead only what can leave soon:
 * rs_call_send_window() is what the peer's flow control takes now on this stream (the least
 * of its stream and connection windows; 0 once the stream is closed), and
 * rs_call_send_unframed() the bytes queued that no DATA frame carries yet (they will use
 * that window first). A WINDOW_UPDATE alone wakes no handler: on_writable (when asked for)
 * follows queued bytes leaving, so a handler that waits for the window keeps a message
 * queued while it waits. */
size_t rs_call_send_window(const struct rs_call *call);
size_t rs_call_send_unframed(const struct rs_call *call);
/* The server's --stream-buffer: each stream's receive window and send queue capacity. A
 * handler that keeps request bytes (HalfDuplexCall) bounds them by it. */
size_t rs_call_stream_buffer(const struct rs_call *call);
/* Asks for on_writable once the send queue has room again, without a failed rs_call_send()
 * (a handler that waits for room before reading data it would send). */
void rs_call_want_writable(struct rs_call *call);

/* Ends the call: queued messages, then trailers with grpc-status and a percent-encoded
 * grpc-message (|msg| may be NULL). With nothing sent yet this is a trailers-only response.
 * Later calls are ignored. */
void rs_call_finish(struct rs_call *call, enum rs_grpc_status status, const char *msg);
/* printf-style convenience over rs_call_finish(). */
void rs_call_finishf(struct rs_call *call, enum rs_grpc_status status, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* A handler that is about to make its work visible (publish an upload, apply a delete) brackets
 * that step so that what it did and the status the client is told always agree:
 *
 * rs_call_commit_begin() returns 0 when the call is still open, or -ECANCELED when the core has
 * already ended it (deadline, client reset, drain timeout, transport failure, or an earlier
 * rs_call_finish): the handler must then abandon the step and change nothing. After 0, the core
 * no longer ends the call on its own for a deadline: an expiry during the commit is deferred,
 * and the status the handler gives rs_call_finish() is what the client gets (the work was done
 * or was not). rs_call_finish() ends the commit. A client reset during the commit still closes
 * the stream (the client chose not to hear the outcome); on_done follows as usual. */
int rs_call_commit_begin(struct rs_call *call);
/* True between a successful rs_call_commit_begin() and the rs_call_finish() that ends it. */
bool rs_call_committing(const struct rs_call *call);

/* True once on_done has been called (or is running). */
bool rs_call_is_done(const struct rs_call *call);

/* Asynchronous file I/O on the worker's ring, on behalf of a call. |cb| runs on the worker
 * with |res| = bytes transferred or -errno, exactly once, even if the call ends meanwhile
 * (then rs_call_is_done() is true). |buf| is borrowed until |cb|. Returns 0 when submitted,
 * or -ENOMEM (no op slot; |cb| will not run). */
typedef void (*rs_call_io_cb)(struct rs_call *call, void *arg, int res);
int rs_call_pread(struct rs_call *call, int fd, void *buf, size_t len, uint64_t off,
                  rs_call_io_cb cb, void *arg);
/* One read into several buffers (preadv); |iov| is borrowed until |cb|, as the buffers are. */
int rs_call_preadv(struct rs_call *call, int fd, const struct iovec *iov, unsigned iovcnt,
                   uint64_t off, rs_call_io_cb cb, void *arg);
int rs_call_pwrite(struct rs_call *call, int fd, const void *buf, size_t len, uint64_t off,
                   rs_call_io_cb cb, void *arg);
int rs_call_fsync(struct rs_call *call, int fd, rs_call_io_cb cb, void *arg);
/* Runs |cb| after |ns| nanoseconds with |res| 0, or with -ECANCELED soon after the call ends
 * (on_done), so a timer never keeps a finished call alive. Same contract as the I/O above. */
int rs_call_timer(struct rs_call *call, uint64_t ns, rs_call_io_cb cb, void *arg);

/* Asynchronous file-system metadata on the worker's ring, as the syscalls of the same names
 * (renameat is renameat2). Same contract as rs_call_pread(): |cb| runs exactly once, on the
 * worker, the call is kept alive until then, and they may be started after on_done too (to
 * close an fd or remove a temporary name). |res| is the new fd (openat; owned by the handler
 * from then on, even when the call is done), the value's length (fgetxattr), otherwise 0; or
 * -errno. Paths, xattr names and values, and |stx| are borrowed until cb: keep them in the
 * per-call state (rs_call_state()), never on the stack. |cb| may be NULL: the result is then
 * dropped (useful for a close nobody waits for). Returns 0 when submitted, or -ENOMEM (no op
 * slot; |cb| will not run, and for rs_call_close() the fd is still open). */
struct statx;
int rs_call_openat(struct rs_call *call, int dirfd, const char *path, int flags, unsigned mode,
                   rs_call_io_cb cb, void *arg);
int rs_call_statx(struct rs_call *call, int dirfd, const char *path, int flags, unsigned mask,
                  struct statx *stx, rs_call_io_cb cb, void *arg);
int rs_call_linkat(struct rs_call *call, int olddirfd, const char *oldpath, int newdirfd,
                   const char *newpath, int flags, rs_call_io_cb cb, void *arg);
/* |flags|: 0 or RENAME_NOREPLACE (fails with -EEXIST instead of replacing |newpath|). */
int rs_call_renameat(struct rs_call *call, int olddirfd, const char *oldpath, int newdirfd,
                     const char *newpath, unsigned flags, rs_call_io_cb cb, void *arg);
int rs_call_unlinkat(struct rs_call *call, int dirfd, const char *path, int flags, rs_call_io_cb cb,
                     void *arg);
int rs_call_fgetxattr(struct rs_call *call, int fd, const char *name, void *value, size_t len,
                      rs_call_io_cb cb, void *arg);
int rs_call_fsetxattr(struct rs_call *call, int fd, const char *name, const void *value, size_t len,
                      int flags, rs_call_io_cb cb, void *arg);
/* Closes |fd| off the worker thread: the last reference's release (truncating an unlinked
 * O_TMPFILE file, for one) runs in a kernel io-wq thread. Do not use |fd| after this call. */
int rs_call_close(struct rs_call *call, int fd, rs_call_io_cb cb, void *arg);

#endif /* RS_CORE_CALL_H */
