/* workers/bulk/bulk_internal.h: what the files of the Bulk service share (bulk.c holds the
 * helpers, the service table and rs_bulk_open/close; put.c (Put, Upload), get.c, echo.c,
 * list.c, unary.c (Stat, Delete) and upload_methods.c (StartUpload, QueryUpload, AbortUpload)
 * hold the methods). Not for use outside workers/bulk/.
 *
 * |finished| below is the flag of the caller's per-call state that says we called
 * rs_call_finish(): the helpers that finish the call set it, and later events only release
 * resources. */
#ifndef RS_WORKERS_BULK_BULK_INTERNAL_H
#define RS_WORKERS_BULK_BULK_INTERNAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pb.h>
#include "bulk.pb.h"
#include "core/call.h"
#include "proto/pbview.h"
#include "workers/bulk/bulk.h"
#include "workers/bulk/status.h"
#include "workers/bulk/store.h"
#include "workers/bulk/upload.h"

struct rs_index;

struct rs_bulk {
    struct rs_store store;
    struct rs_index *index;    /* owned; the sorted names List walks (index.h) */
    struct rs_uploads uploads; /* resumable uploads (upload.h); shared by every worker */
    struct rs_service svc;
    struct rs_method methods[10]; /* the service table, copied in by rs_bulk_open */
    bool bench_no_crc;            /* RS_BENCH_NO_CRC was set: Chunk.crc32c left 0 (perf only) */
};

/* One per method, in put.c, get.c, echo.c, list.c and unary.c; rs_bulk_open lists them. */
extern const struct rs_method rs_bulk_put_method;
extern const struct rs_method rs_bulk_get_method;
extern const struct rs_method rs_bulk_echo_method;
extern const struct rs_method rs_bulk_stat_method;
extern const struct rs_method rs_bulk_list_method;
extern const struct rs_method rs_bulk_delete_method;
/* Resumable uploads: upload_methods.c, and Upload in put.c. */
extern const struct rs_method rs_bulk_start_upload_method;
extern const struct rs_method rs_bulk_upload_method;
extern const struct rs_method rs_bulk_query_upload_method;
extern const struct rs_method rs_bulk_abort_upload_method;

/* The store of the service |call| belongs to; borrowed, lives as long as the service. */
struct rs_store *rs_bulk_call_store(struct rs_call *call);
/* The store's name index (index.h); borrowed, lives as long as the service. */
struct rs_index *rs_bulk_call_index(struct rs_call *call);
/* The upload table of the service |call| belongs to; borrowed, lives as long as the service. */
struct rs_uploads *rs_bulk_call_uploads(struct rs_call *call);
/* rs_crc32c() (core/crc32c.h) for Chunk.crc32c; 0 when the service was opened with
 * RS_BENCH_NO_CRC in the environment (a benchmark-only switch, perf/get_crc.sh). */
uint32_t rs_bulk_crc32c(struct rs_call *call, uint32_t crc, const void *data, size_t len);
/* An on_start for methods with nothing to do before the first message. */
void rs_bulk_on_start_nothing(struct rs_call *call);

/* --- counting (GET /metrics; bulk.c renders them) --------------------------------------- */

/* The storage errors counted, by cause (ringstream_bulk_storage_errors_total's label). */
enum rs_bulk_cause {
    RS_BULK_CAUSE_ENOSPC = 0,
    RS_BULK_CAUSE_EDQUOT,
    RS_BULK_CAUSE_EIO,
    RS_BULK_CAUSE_EROFS,
    RS_BULK_CAUSE_EACCES,  /* and EPERM */
    RS_BULK_CAUSE_EBADMSG, /* stored metadata corrupt */
    RS_BULK_CAUSE_ENOMEM,
    RS_BULK_CAUSE_EMFILE,    /* and ENFILE */
    RS_BULK_CAUSE_TRANSIENT, /* EAGAIN, EINTR, EBUSY, ESTALE, ETIMEDOUT */
    RS_BULK_CAUSE_OTHER,
    RS_BULK_CAUSE_COUNT
};

/* The service's per-worker counters (struct rs_service.nstats): add with rs_call_stat_add(). */
enum rs_bulk_stat {
    RS_BULK_STAT_STORED_BYTES = 0, /* object bytes of the Puts that published */
    RS_BULK_STAT_READ_BYTES,       /* object bytes Gets read from storage */
    RS_BULK_STAT_ERRORS,           /* RS_BULK_CAUSE_COUNT of them: storage errors by cause */
    RS_BULK_STAT_COUNT = RS_BULK_STAT_ERRORS + RS_BULK_CAUSE_COUNT
};

/* Counts |err| (-errno from the store) as a storage error by its cause; the answers that are
 * not errors of the store (ENOENT, EEXIST) and RS_STORE_OP_NOSLOT are not counted. The
 * failing helpers below call it: a method calls it itself only for an errno it answers some
 * other way. */
void rs_bulk_count_error(struct rs_call *call, int err);

/* --- finishing ------------------------------------------------------------------------- */

/* rs_call_finishf() that also records that the call is finished. */
__attribute__((format(printf, 4, 5))) void rs_bulk_fail(struct rs_call *call, bool *finished,
                                                        enum rs_grpc_status status, const char *fmt,
                                                        ...);
void rs_bulk_finish_ok(struct rs_call *call, bool *finished);
/* A storage error |err| (-errno) answered with rs_bulk_status_from_errno() and |fmt|; counted
 * by rs_bulk_count_error(). */
__attribute__((format(printf, 4, 5))) void rs_bulk_fail_errno(struct rs_call *call, bool *finished,
                                                              int err, const char *fmt, ...);
/* A failed rs_call_send(); -EAGAIN is the caller's business. */
void rs_bulk_fail_send(struct rs_call *call, bool *finished, int err);
/* An error from the store about object |name| (valid, so safe to print); the status comes
 * from rs_bulk_status_from_errno() (status.h). */
void rs_bulk_fail_store(struct rs_call *call, bool *finished, int err, const char *doing,
                        const char *name, size_t len);
/* A store operation that failed to start or ended with |err|. */
void rs_bulk_fail_op(struct rs_call *call, bool *finished, int err, const char *doing,
                     const char *name, size_t len);

/* --- decoding -------------------------------------------------------------------------- */

/* Decodes a whole request with nanopb; its views must already be bound. On failure the call
 * is finished with INVALID_ARGUMENT. */
bool rs_bulk_decode(struct rs_call *call, bool *finished, const uint8_t *msg, size_t len,
                    const pb_msgdesc_t *fields, void *dst, const char *what);
/* Reads a ChecksummedData { data = 1; crc32c = 2 } of |len| bytes at |msg|: |data| becomes a
 * view of |msg|, |crc| 0 when absent. Returns NULL, or why it is malformed (static text). */
const char *rs_bulk_parse_checked(const uint8_t *msg, size_t len, struct rs_pb_view *data,
                                  uint32_t *crc);

/* Names List's |prefix| in the call's access-log line when it could begin a valid name (else
 * the line says "-": nothing from the client that could break the line is logged). */
void rs_bulk_log_prefix(struct rs_call *call, const char *prefix, size_t len);
/* Checks a request's name; on failure finishes the call with INVALID_ARGUMENT. */
bool rs_bulk_name_ok(struct rs_call *call, bool *finished, const struct rs_pb_view *v,
                     const char *field);

/* --- encoding -------------------------------------------------------------------------- */

/* Longest Chunk head: offset (tag + 10-byte varint), crc32c (tag + 4 bytes), data's tag and
 * length (tag + 10-byte varint). A Chunk of n data bytes is at most n + this long. */
#define RS_BULK_CHUNK_HEAD_MAX (1 + 10 + 1 + 4 + 1 + 10)
/* Writes what precedes the |len| data bytes of a Chunk { data = 1; offset = 2; crc32c = 3 }:
 * offset (when not 0), crc32c (always), then data's tag and length (when |len| > 0). Returns
 * the bytes written. */
size_t rs_bulk_chunk_head(uint8_t head[RS_BULK_CHUNK_HEAD_MAX], size_t len, uint64_t offset,
                          uint32_t crc32c);
/* Sends one Chunk, |crc32c| being the CRC32C of its data (computed by the caller where the data
 * is hot), data by reference (rs_call_send copies it into the send queue). Returns what
 * rs_call_send() returns. */
int rs_bulk_send_chunk(struct rs_call *call, const uint8_t *data, size_t len, uint64_t offset,
                       uint32_t crc32c);
/* A Chunk whose data lives in |nbufs| buffers from rs_call_buf_get(), each full but the last.
 * Takes ownership of them when it returns 0. Returns what rs_call_send_bufs() returns. */
int rs_bulk_send_chunk_bufs(struct rs_call *call, void *const *bufs, size_t nbufs, size_t len,
                            uint64_t offset, uint32_t crc32c);
/* Encodes |m| as an ObjectInfo into |buf|. Returns its length, or 0 (a bug, logged). */
size_t rs_bulk_encode_info(uint8_t *buf, size_t cap, const struct rs_store_meta *m);

/* The one ObjectInfo (or UploadStatus) a call answers with; held while the send queue is
 * full. */
#define RS_BULK_REPLY_MAX                                            \
    (ringstream_v1_UploadStatus_size > ringstream_v1_ObjectInfo_size \
             ? ringstream_v1_UploadStatus_size                       \
             : ringstream_v1_ObjectInfo_size)
struct rs_bulk_reply {
    uint8_t buf[RS_BULK_REPLY_MAX];
    size_t len;
    bool pending;
};

/* Sends a pending reply and finishes OK; keeps it pending on -EAGAIN (call again from
 * on_writable). */
void rs_bulk_reply_flush(struct rs_call *call, struct rs_bulk_reply *r, bool *finished);
/* Answers |m| and finishes OK (now, or from on_writable). */
void rs_bulk_reply_info(struct rs_call *call, struct rs_bulk_reply *r, bool *finished,
                        const struct rs_store_meta *m);
/* Answers |st| as an UploadStatus and finishes OK (now, or from on_writable). */
void rs_bulk_reply_upload(struct rs_call *call, struct rs_bulk_reply *r, bool *finished,
                          const struct rs_upload_status *st);

#endif /* RS_WORKERS_BULK_BULK_INTERNAL_H */
