/* workers/bulk/bulk.c: the ringstream.v1.Bulk service (proto/bulk.proto): its table, open and
 * close, and the helpers its methods share (bulk_internal.h). The methods live in put.c (Put
 * and Upload), get.c, echo.c, list.c, unary.c (Stat and Delete) and upload_methods.c
 * (StartUpload, QueryUpload, AbortUpload); the resumable uploads' table is upload.c.
 *
 *
 * Requests are decoded with nanopb from the message view on_message hands over. Every string
 * and bytes field of a request is a callback (proto/bulk.options) that records a view into
 * that message, so names keep their exact length and bulk data is never copied into a struct.
 * PutRequest (a oneof holding bytes) and Chunk are read field by field with nanopb's wire
 * primitives; responses carrying data (Chunk) are encoded by hand: field headers plus an
 * iovec pointing at the data.
 *
 * Every method runs on its call's worker and never blocks it: file data and file-system
 * metadata alike go through the worker's ring (metadata steps in storeop.h), so each method is
 * a small state machine advanced by completions. A method that starts ring I/O counts it and
 * frees what the I/O uses only once on_done has run and the last completion has arrived.
 * |finished| in a state means we called rs_call_finish(): later events only release resources.
 * What still runs on the worker thread: List's reads of the name index and a publish's one
 * index write (LMDB, page cache only, see index.c), fcntl to clear O_DIRECT and posix_fadvise
 * (flags on an open file, never I/O), and an unlinkat() of a temporary name only as the
 * fallback when no ring slot is free. A close never does: it is issued from a completion, or
 * in a slot held for it ahead (storeop.h). Storage errors map to gRPC codes through one table
 * (status.h). Test builds (RS_FAULT_INJECTION) have named fault points on the store's ring
 * ops, listed in storeop.h. */
#include "workers/bulk/bulk_internal.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "core/crc32c.h"
#include "core/log.h"
#include "workers/bulk/index.h"
#include "workers/bulk/name.h"
#include "workers/bulk/storeop.h"

struct rs_store *rs_bulk_call_store(struct rs_call *call)
{
    struct rs_bulk *b = rs_call_service_ctx(call);

    return &b->store;
}

struct rs_uploads *rs_bulk_call_uploads(struct rs_call *call)
{
    struct rs_bulk *b = rs_call_service_ctx(call);

    return &b->uploads;
}

struct rs_index *rs_bulk_call_index(struct rs_call *call)
{
    struct rs_bulk *b = rs_call_service_ctx(call);

    return b->index;
}

uint32_t rs_bulk_crc32c(struct rs_call *call, uint32_t crc, const void *data, size_t len)
{
    const struct rs_bulk *b = rs_call_service_ctx(call);

    return b->bench_no_crc ? 0 : rs_crc32c(crc, data, len);
}

/* --- counting -------------------------------------------------------------------------- */

static const char *const cause_names[RS_BULK_CAUSE_COUNT] = {
    [RS_BULK_CAUSE_ENOSPC] = "enospc",
    [RS_BULK_CAUSE_EDQUOT] = "edquot",
    [RS_BULK_CAUSE_EIO] = "eio",
    [RS_BULK_CAUSE_EROFS] = "erofs",
    [RS_BULK_CAUSE_EACCES] = "eacces",
    [RS_BULK_CAUSE_EBADMSG] = "ebadmsg",
    [RS_BULK_CAUSE_ENOMEM] = "enomem",
    [RS_BULK_CAUSE_EMFILE] = "emfile",
    [RS_BULK_CAUSE_TRANSIENT] = "transient",
    [RS_BULK_CAUSE_OTHER] = "other",
};

static enum rs_bulk_cause cause_of(int err)
{
    switch (-err) {
    case ENOSPC:
        return RS_BULK_CAUSE_ENOSPC;
    case EDQUOT:
        return RS_BULK_CAUSE_EDQUOT;
    case EIO:
        return RS_BULK_CAUSE_EIO;
    case EROFS:
        return RS_BULK_CAUSE_EROFS;
    case EACCES:
    case EPERM:
        return RS_BULK_CAUSE_EACCES;
    case EBADMSG:
        return RS_BULK_CAUSE_EBADMSG;
    case ENOMEM:
        return RS_BULK_CAUSE_ENOMEM;
    case EMFILE:
    case ENFILE:
        return RS_BULK_CAUSE_EMFILE;
    case EAGAIN:
    case EINTR:
    case EBUSY:
    case ESTALE:
    case ETIMEDOUT:
        return RS_BULK_CAUSE_TRANSIENT;
    default:
        return RS_BULK_CAUSE_OTHER;
    }
}

void rs_bulk_count_error(struct rs_call *call, int err)
{
    if (err >= 0 || err == -ENOENT || err == -EEXIST || err == RS_STORE_OP_NOSLOT)
        return;
    rs_call_stat_add(call, RS_BULK_STAT_ERRORS + cause_of(err), 1);
}

/* "StartUpload" -> "start_upload": the op label of a method, from its :path. */
static void op_name(const char *path, char *out, size_t cap)
{
    const char *m = strrchr(path, '/');
    size_t n = 0;

    for (m = m != NULL ? m + 1 : path; *m != '\0' && n + 2 < cap; m++) {
        if (*m >= 'A' && *m <= 'Z') {
            if (n > 0)
                out[n++] = '_';
            out[n++] = (char)(*m - 'A' + 'a');
        } else {
            out[n++] = *m;
        }
    }
    out[n] = '\0';
}

/* struct rs_service.render_stats: the store's series. Operations come from the calls table
 * (every Bulk call, whoever ended it: the method, a deadline, the client or the drain), so a
 * new method is counted without code of its own. */
static void bulk_render_stats(FILE *f, const struct rs_stats_view *v)
{
    const struct rs_bulk *b = v->ctx;
    char op[64];
    size_t m, code, c;
    unsigned i;

    fputs("# HELP ringstream_bulk_operations_total Bulk store calls finished, by operation and "
          "by the status the client got (grpc_server_handled_total of ringstream.v1.Bulk under "
          "the store's names).\n# TYPE ringstream_bulk_operations_total counter\n",
          f);
    for (i = 0; i < v->nworkers; i++)
        for (m = 0; m < b->svc.nmethods; m++)
            for (code = 0; code < RS_STATS_CODES; code++) {
                uint64_t n = rs_stat_load(&v->calls[i][m * RS_STATS_CODES + code]);

                if (n == 0)
                    continue; /* absent series are 0 to Prometheus */
                op_name(b->svc.methods[m].path, op, sizeof(op));
                fprintf(f,
                        "ringstream_bulk_operations_total{worker=\"%u\",op=\"%s\","
                        "result=\"%s\"} %llu\n",
                        i, op, rs_grpc_status_name((int)code), (unsigned long long)n);
            }
    fputs("# HELP ringstream_bulk_stored_bytes_total Object bytes stored by the Puts that "
          "published.\n# TYPE ringstream_bulk_stored_bytes_total counter\n",
          f);
    for (i = 0; i < v->nworkers; i++)
        fprintf(f, "ringstream_bulk_stored_bytes_total{worker=\"%u\"} %llu\n", i,
                (unsigned long long)rs_stat_load(&v->stats[i][RS_BULK_STAT_STORED_BYTES]));
    fputs("# HELP ringstream_bulk_read_bytes_total Object bytes Gets read from storage.\n"
          "# TYPE ringstream_bulk_read_bytes_total counter\n",
          f);
    for (i = 0; i < v->nworkers; i++)
        fprintf(f, "ringstream_bulk_read_bytes_total{worker=\"%u\"} %llu\n", i,
                (unsigned long long)rs_stat_load(&v->stats[i][RS_BULK_STAT_READ_BYTES]));
    fputs("# HELP ringstream_bulk_storage_errors_total Storage errors the store answered a call "
          "with, by errno (eacces includes EPERM, emfile ENFILE; transient is EAGAIN, EINTR, "
          "EBUSY, ESTALE, ETIMEDOUT).\n# TYPE ringstream_bulk_storage_errors_total counter\n",
          f);
    for (i = 0; i < v->nworkers; i++)
        for (c = 0; c < RS_BULK_CAUSE_COUNT; c++)
            fprintf(f, "ringstream_bulk_storage_errors_total{worker=\"%u\",cause=\"%s\"} %llu\n", i,
                    cause_names[c],
                    (unsigned long long)rs_stat_load(&v->stats[i][RS_BULK_STAT_ERRORS + c]));
}

/* --- finishing ------------------------------------------------------------------------- */

/* rs_call_finishf() that also records that the call is finished. */
void rs_bulk_fail(struct rs_call *call, bool *finished, enum rs_grpc_status status, const char *fmt,
                  ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    *finished = true;
    rs_call_finish(call, status, msg);
}

void rs_bulk_finish_ok(struct rs_call *call, bool *finished)
{
    *finished = true;
    rs_call_finish(call, RS_GRPC_OK, NULL);
}

void rs_bulk_fail_errno(struct rs_call *call, bool *finished, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rs_bulk_count_error(call, err);
    *finished = true;
    rs_call_finish(call, rs_bulk_status_from_errno(err), msg);
}

/* A failed rs_call_send(); -EAGAIN is the caller's business. */
void rs_bulk_fail_send(struct rs_call *call, bool *finished, int err)
{
    if (err == -ECANCELED) { /* the call is over already */
        *finished = true;
        return;
    }
    if (err == -EMSGSIZE)
        rs_bulk_fail(call, finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "response message exceeds the maximum message size (%zu bytes)",
                     rs_call_max_msg(call));
    else if (err == -ENOMEM)
        rs_bulk_fail(call, finished, RS_GRPC_RESOURCE_EXHAUSTED, "server out of buffer memory");
    else
        rs_bulk_fail(call, finished, rs_bulk_status_from_errno(err), "sending: %s", strerror(-err));
}

/* An error from store.c about object |name| (valid, so safe to print). */
void rs_bulk_fail_store(struct rs_call *call, bool *finished, int err, const char *doing,
                        const char *name, size_t len)
{
    rs_bulk_count_error(call, err);
    if (err == -ENOENT)
        rs_bulk_fail(call, finished, RS_GRPC_NOT_FOUND, "object \"%.*s\" not found", (int)len,
                     name);
    else if (err == -EBADMSG)
        rs_bulk_fail(call, finished, RS_GRPC_DATA_LOSS,
                     "object \"%.*s\": stored metadata is corrupt", (int)len, name);
    else
        rs_bulk_fail(call, finished, rs_bulk_status_from_errno(err), "%s \"%.*s\": %s", doing,
                     (int)len, name, strerror(-err));
}

/* A store operation that failed to start or ended with |err|. */
void rs_bulk_fail_op(struct rs_call *call, bool *finished, int err, const char *doing,
                     const char *name, size_t len)
{
    if (err == RS_STORE_OP_NOSLOT)
        rs_bulk_fail(call, finished, RS_GRPC_RESOURCE_EXHAUSTED, "no free I/O slot on this worker");
    else
        rs_bulk_fail_store(call, finished, err, doing, name, len);
}

/* --- decoding -------------------------------------------------------------------------- */

/* Decodes a whole request with nanopb; its views must already be bound. On failure the call
 * is finished with INVALID_ARGUMENT. */
bool rs_bulk_decode(struct rs_call *call, bool *finished, const uint8_t *msg, size_t len,
                    const pb_msgdesc_t *fields, void *dst, const char *what)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);

    if (!pb_decode(&s, fields, dst)) {
        rs_bulk_fail(call, finished, RS_GRPC_INVALID_ARGUMENT, "malformed %s: %s", what,
                     PB_GET_ERROR(&s));
        return false;
    }
    /* A string sent with a scalar wire type leaves a view into nanopb's stack (pbview.h). */
    if (!rs_pb_views_inside(fields, dst, msg, len)) {
        rs_bulk_fail(call, finished, RS_GRPC_INVALID_ARGUMENT,
                     "malformed %s: a string field with a scalar wire type", what);
        return false;
    }
    return true;
}

/* A ChecksummedData { bytes data = 1; fixed32 crc32c = 2; }: data as a view of |msg|, crc 0
 * when absent (proto3's default). Returns NULL, or why it is malformed. */
const char *rs_bulk_parse_checked(const uint8_t *msg, size_t len, struct rs_pb_view *data,
                                  uint32_t *crc)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);
    pb_wire_type_t wt;
    uint32_t tag;

    *data = (struct rs_pb_view){ .p = msg, .len = 0, .set = false };
    *crc = 0;
    while (s.bytes_left > 0) {
        const char *why = rs_pb_next_field(&s, &wt, &tag);

        if (why != NULL)
            return why;
        if (tag == 1) {
            if (wt != PB_WT_STRING)
                return "wrong wire type for ChecksummedData.data";
            if (!rs_pb_take_bytes(&s, msg, len, data))
                return PB_GET_ERROR(&s);
        } else if (tag == 2) {
            if (wt != PB_WT_32BIT)
                return "wrong wire type for ChecksummedData.crc32c";
            if (!pb_decode_fixed32(&s, crc))
                return PB_GET_ERROR(&s);
        } else if (!pb_skip_field(&s, wt)) {
            return PB_GET_ERROR(&s);
        }
    }
    return NULL;
}

void rs_bulk_log_prefix(struct rs_call *call, const char *prefix, size_t len)
{
    char name[RS_BULK_NAME_MAX + 1];

    if (!rs_call_access_logged(call) || len == 0 || len > RS_BULK_NAME_MAX)
        return; /* off, it costs List this branch */
    memcpy(name, prefix, len);
    name[len] = 'x'; /* "a/" begins "a/x": the prefix of a valid name may end in a "/" */
    if (rs_bulk_name_valid(name, len) || rs_bulk_name_valid(name, len + 1))
        rs_call_set_log_name(call, name, len);
}

static const char name_rules[] =
        "1..255 bytes of [A-Za-z0-9._/-], no empty, \".\" or \"..\" segment, no leading \"/\"";

/* Checks a request's name; on failure finishes the call with INVALID_ARGUMENT. */
bool rs_bulk_name_ok(struct rs_call *call, bool *finished, const struct rs_pb_view *v,
                     const char *field)
{
    if (!v->set || v->len == 0) {
        rs_bulk_fail(call, finished, RS_GRPC_INVALID_ARGUMENT, "%s is required (%s)", field,
                     name_rules);
        return false;
    }
    if (!rs_bulk_name_valid((const char *)v->p, v->len)) {
        rs_bulk_fail(call, finished, RS_GRPC_INVALID_ARGUMENT,
                     "%s is not a valid object name (%zu bytes): %s", field, v->len, name_rules);
        return false;
    }
    rs_call_set_log_name(call, (const char *)v->p, v->len);
    return true;
}

/* --- encoding -------------------------------------------------------------------------- */

/* Writes the head of a Chunk { data = 1; offset = 2; crc32c = 3 } whose |len| data bytes
 * follow it: the offset field (left out when 0, as proto3 does), the crc32c field (always: the
 * contract says the server always sets it) and last the data field's tag and length (left out
 * with the data when |len| is 0), so the data itself can follow by reference. Protobuf
 * accepts fields in any order. */
size_t rs_bulk_chunk_head(uint8_t head[RS_BULK_CHUNK_HEAD_MAX], size_t len, uint64_t offset,
                          uint32_t crc32c)
{
    size_t n = 0;

    if (offset > 0) {
        head[n++] = (2u << 3) | PB_WT_VARINT;
        n += rs_pb_put_varint(head + n, offset);
    }
    head[n++] = (3u << 3) | PB_WT_32BIT; /* fixed32: little-endian */
    head[n++] = (uint8_t)crc32c;
    head[n++] = (uint8_t)(crc32c >> 8);
    head[n++] = (uint8_t)(crc32c >> 16);
    head[n++] = (uint8_t)(crc32c >> 24);
    if (len > 0) {
        head[n++] = (1u << 3) | PB_WT_STRING;
        n += rs_pb_put_varint(head + n, len);
    }
    return n;
}

/* Sends one Chunk, data by reference (rs_call_send copies it into the send queue). Returns
 * what rs_call_send() returns. */
int rs_bulk_send_chunk(struct rs_call *call, const uint8_t *data, size_t len, uint64_t offset,
                       uint32_t crc32c)
{
    uint8_t head[RS_BULK_CHUNK_HEAD_MAX];
    struct iovec iov[2] = {
        { .iov_base = head, .iov_len = rs_bulk_chunk_head(head, len, offset, crc32c) },
        { .iov_base = (void *)data, .iov_len = len },
    };

    return rs_call_send(call, iov, len > 0 ? 2 : 1);
}

/* A Chunk whose data lives in |nbufs| buffers from rs_call_buf_get() (rs_call_send_bufs()):
 * the head goes by copy, the data last and by reference. Takes ownership of the buffers when
 * it returns 0. */
int rs_bulk_send_chunk_bufs(struct rs_call *call, void *const *bufs, size_t nbufs, size_t len,
                            uint64_t offset, uint32_t crc32c)
{
    uint8_t head[RS_BULK_CHUNK_HEAD_MAX];
    struct iovec iov = { .iov_base = head,
                         .iov_len = rs_bulk_chunk_head(head, len, offset, crc32c) };

    return rs_call_send_bufs(call, &iov, 1, bufs, nbufs, len);
}

size_t rs_bulk_encode_info(uint8_t *buf, size_t cap, const struct rs_store_meta *m)
{
    ringstream_v1_ObjectInfo info = ringstream_v1_ObjectInfo_init_zero;
    pb_ostream_t s = pb_ostream_from_buffer(buf, cap);

    memcpy(info.name, m->name, m->name_len);
    info.name[m->name_len] = '\0';
    info.size = m->size;
    memcpy(info.sha256, m->sha256, sizeof(info.sha256));
    info.modified_unix_ms = m->modified_unix_ms;
    if (!pb_encode(&s, ringstream_v1_ObjectInfo_fields, &info)) {
        rs_log_bug("bulk: encoding ObjectInfo: %s", PB_GET_ERROR(&s));
        return 0;
    }
    return s.bytes_written;
}

void rs_bulk_reply_flush(struct rs_call *call, struct rs_bulk_reply *r, bool *finished)
{
    struct iovec iov = { .iov_base = r->buf, .iov_len = r->len };
    int ret;

    if (!r->pending)
        return;
    ret = rs_call_send(call, &iov, 1);
    if (ret == -EAGAIN)
        return; /* on_writable calls again */
    r->pending = false;
    if (ret < 0)
        rs_bulk_fail_send(call, finished, ret);
    else
        rs_bulk_finish_ok(call, finished);
}

/* Answers |m| and finishes OK (now, or from on_writable). */
void rs_bulk_reply_info(struct rs_call *call, struct rs_bulk_reply *r, bool *finished,
                        const struct rs_store_meta *m)
{
    r->len = rs_bulk_encode_info(r->buf, sizeof(r->buf), m);
    if (r->len == 0) {
        rs_bulk_fail(call, finished, RS_GRPC_INTERNAL, "cannot encode ObjectInfo");
        return;
    }
    r->pending = true;
    rs_bulk_reply_flush(call, r, finished);
}

void rs_bulk_on_start_nothing(struct rs_call *call)
{
}

/* --- the service ----------------------------------------------------------------------- */

/* The service table, in routing order; rs_bulk_open copies it into struct rs_bulk. */
static const struct rs_method *const bulk_methods[] = {
    &rs_bulk_put_method,          &rs_bulk_get_method,    &rs_bulk_echo_method,
    &rs_bulk_stat_method,         &rs_bulk_list_method,   &rs_bulk_delete_method,
    &rs_bulk_start_upload_method, &rs_bulk_upload_method, &rs_bulk_query_upload_method,
    &rs_bulk_abort_upload_method,
};
_Static_assert(sizeof(bulk_methods) / sizeof(bulk_methods[0]) ==
                       sizeof(((struct rs_bulk *)0)->methods) / sizeof(struct rs_method),
               "struct rs_bulk holds every method");

int rs_bulk_open(struct rs_bulk **out, const char *data_dir, char *err, size_t errlen)
{
    struct rs_bulk *b = calloc(1, sizeof(*b));
    size_t i;
    int ret;

    *out = NULL;
    if (b == NULL) {
        snprintf(err, errlen, "bulk store: out of memory");
        return -ENOMEM;
    }
    ret = rs_store_open(&b->store, data_dir, err, errlen);
    if (ret < 0) {
        free(b);
        return ret;
    }
    ret = rs_index_open(&b->index, data_dir, rs_store_dirfd(&b->store), err, errlen);
    if (ret < 0) {
        rs_store_close(&b->store);
        free(b);
        return ret;
    }
    {
        int dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        ret = dfd < 0 ? -errno : rs_uploads_open(&b->uploads, dfd, err, errlen);
        if (dfd < 0)
            snprintf(err, errlen, "data dir %s: cannot open it: %s", data_dir, strerror(-ret));
        else
            close(dfd);
        if (ret < 0) {
            rs_uploads_close(&b->uploads);
            rs_index_close(b->index);
            rs_store_close(&b->store);
            free(b);
            return ret;
        }
    }
    /* The hash provider reads its configuration file on first use: do that here, on the main
     * thread, rather than on a worker during the first request. Only a warm-up. */
    {
        char key[RS_STORE_KEY_LEN + 1];

        (void)rs_store_key("warm-up", 7, key);
    }
    /* Benchmark only (perf/get_crc.sh): Get and Echo send crc32c = 0 instead of computing it,
     * to measure what the CRC costs. Never set it in service: clients would see mismatches. */
    b->bench_no_crc = getenv("RS_BENCH_NO_CRC") != NULL;
    if (b->bench_no_crc)
        rs_log_warn("bulk: RS_BENCH_NO_CRC is set: Chunk.crc32c is sent as 0 (benchmark only)");
    b->svc.name = "ringstream.v1.Bulk";
    for (i = 0; i < sizeof(bulk_methods) / sizeof(bulk_methods[0]); i++)
        b->methods[i] = *bulk_methods[i];
    b->svc.methods = b->methods;
    b->svc.nmethods = sizeof(bulk_methods) / sizeof(bulk_methods[0]);
    b->svc.ctx = b;
    b->svc.nstats = RS_BULK_STAT_COUNT;
    b->svc.render_stats = bulk_render_stats;
    *out = b;
    return 0;
}

void rs_bulk_set_upload_limits(struct rs_bulk *b, uint64_t ttl_ms, unsigned max_uploads)
{
    rs_uploads_limits(&b->uploads, ttl_ms, max_uploads);
}

const struct rs_service *rs_bulk_service(struct rs_bulk *b)
{
    return &b->svc;
}

void rs_bulk_close(struct rs_bulk *b)
{
    if (b == NULL)
        return;
    rs_uploads_close(&b->uploads);
    rs_index_close(b->index); /* before the store: it uses objects/ */
    rs_store_close(&b->store);
    free(b);
}
