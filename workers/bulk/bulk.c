/* workers/bulk/bulk.c: the six methods of ringstream.v1.Bulk (proto/bulk.proto).
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
 * What still runs on the worker thread: List's getdents64 (io_uring has no getdents; bounded
 * to one batch per turn), fcntl to clear O_DIRECT and posix_fadvise (flags on an open file,
 * never I/O), and a close() or unlinkat() only as the fallback when no ring slot is free. */
#include "workers/bulk/bulk.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "bulk.pb.h"
#include "core/log.h"
#include "core/sha256.h"
#include "workers/bulk/name.h"
#include "workers/bulk/store.h"
#include "workers/bulk/storeop.h"

#define CHUNK_DEFAULT  (64u * 1024)
#define CHUNK_MAX      (1024u * 1024)
#define CHUNK_OVERHEAD 22 /* Chunk field headers: tag + 10-byte varint, twice */
#define VARINT_MAX     10

struct rs_bulk {
    struct rs_store store;
    struct rs_service svc;
    /* TEST-ONLY knob, never for production: RINGSTREAM_TEST_WRITE_DELAY_US (read once in
     * rs_bulk_open) makes every Put write completion take effect that much later (the stage
     * stays busy, held messages stay unconsumed), so tests can watch a slow consumer push back
     * on the client through flow control (tests/e2e/test_backpressure.py). 0: no delay. */
    uint64_t test_write_delay_ns;
};

static struct rs_store *call_store(struct rs_call *call)
{
    struct rs_bulk *b = rs_call_service_ctx(call);

    return &b->store;
}

/* --- finishing ------------------------------------------------------------------------- */

/* rs_call_finishf() that also records that the call is finished. */
__attribute__((format(printf, 4, 5))) static void
fail(struct rs_call *call, bool *finished, enum rs_grpc_status status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    *finished = true;
    rs_call_finish(call, status, msg);
}

static void finish_ok(struct rs_call *call, bool *finished)
{
    *finished = true;
    rs_call_finish(call, RS_GRPC_OK, NULL);
}

/* A failed rs_call_send(); -EAGAIN is the caller's business. */
static void fail_send(struct rs_call *call, bool *finished, int err)
{
    if (err == -ECANCELED) { /* the call is over already */
        *finished = true;
        return;
    }
    if (err == -EMSGSIZE)
        fail(call, finished, RS_GRPC_RESOURCE_EXHAUSTED,
             "response message exceeds the maximum message size (%zu bytes)",
             rs_call_max_msg(call));
    else if (err == -ENOMEM)
        fail(call, finished, RS_GRPC_RESOURCE_EXHAUSTED, "server out of buffer memory");
    else
        fail(call, finished, rs_grpc_status_from_errno(err), "sending: %s", strerror(-err));
}

/* An error from store.c about object |name| (valid, so safe to print). */
static void fail_store(struct rs_call *call, bool *finished, int err, const char *doing,
                       const char *name, size_t len)
{
    if (err == -ENOENT)
        fail(call, finished, RS_GRPC_NOT_FOUND, "object \"%.*s\" not found", (int)len, name);
    else if (err == -EBADMSG)
        fail(call, finished, RS_GRPC_DATA_LOSS, "object \"%.*s\": stored metadata is corrupt",
             (int)len, name);
    else
        fail(call, finished, rs_grpc_status_from_errno(err), "%s \"%.*s\": %s", doing, (int)len,
             name, strerror(-err));
}

/* A store operation that failed to start or ended with |err|. */
static void fail_op(struct rs_call *call, bool *finished, int err, const char *doing,
                    const char *name, size_t len)
{
    if (err == RS_STORE_OP_NOSLOT)
        fail(call, finished, RS_GRPC_RESOURCE_EXHAUSTED, "no free I/O slot on this worker");
    else
        fail_store(call, finished, err, doing, name, len);
}

/* --- decoding -------------------------------------------------------------------------- */

struct view {
    const uint8_t *p; /* into the message handed to on_message */
    size_t len;
    bool set;
};

/* nanopb decode callback for a string/bytes field: records a view and skips the bytes. For a
 * stream from pb_istream_from_buffer(), stream->state is the read position (buf_read() in
 * pb_decode.c, unchanged since 0.4.0); view_inside() checks that this still holds. */
static bool view_cb(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    struct view *v = *arg;

    v->p = stream->state;
    v->len = stream->bytes_left;
    v->set = true;
    return pb_read(stream, NULL, stream->bytes_left);
}

static void view_bind(pb_callback_t *cb, struct view *v)
{
    cb->funcs.decode = view_cb;
    cb->arg = v;
}

static bool view_inside(const struct view *v, const uint8_t *msg, size_t len)
{
    return !v->set || (v->p >= msg && v->len <= len && (size_t)(v->p - msg) <= len - v->len);
}

/* Reads a length-delimited field's payload as a view of |msg| (|s| reads |msg|). */
static bool take_bytes(pb_istream_t *s, const uint8_t *msg, size_t len, struct view *v)
{
    uint32_t n;

    if (!pb_decode_varint32(s, &n))
        return false;
    if (n > s->bytes_left)
        PB_RETURN_ERROR(s, "length runs past the end of the message");
    v->p = msg + (len - s->bytes_left);
    v->len = n;
    v->set = true;
    return pb_read(s, NULL, n);
}

/* Next field of a hand-parsed message. Returns NULL, or why the message is malformed. */
static const char *next_field(pb_istream_t *s, pb_wire_type_t *wt, uint32_t *tag)
{
    bool eof;

    if (!pb_decode_tag(s, wt, tag, &eof))
        return eof ? "truncated field" : PB_GET_ERROR(s);
    if (*tag == 0)
        return "field number 0";
    return NULL;
}

/* Decodes a whole request with nanopb; its views must already be bound. On failure the call
 * is finished with INVALID_ARGUMENT. */
static bool decode(struct rs_call *call, bool *finished, const uint8_t *msg, size_t len,
                   const pb_msgdesc_t *fields, void *dst, const char *what)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);

    if (!pb_decode(&s, fields, dst)) {
        fail(call, finished, RS_GRPC_INVALID_ARGUMENT, "malformed %s: %s", what, PB_GET_ERROR(&s));
        return false;
    }
    return true;
}

static const char name_rules[] =
        "1..255 bytes of [A-Za-z0-9._/-], no empty, \".\" or \"..\" segment, no leading \"/\"";

/* Checks a request's name; on failure finishes the call with INVALID_ARGUMENT. */
static bool name_ok(struct rs_call *call, bool *finished, const struct view *v, const char *field)
{
    if (!v->set || v->len == 0) {
        fail(call, finished, RS_GRPC_INVALID_ARGUMENT, "%s is required (%s)", field, name_rules);
        return false;
    }
    if (!rs_bulk_name_valid((const char *)v->p, v->len)) {
        fail(call, finished, RS_GRPC_INVALID_ARGUMENT,
             "%s is not a valid object name (%zu bytes): %s", field, v->len, name_rules);
        return false;
    }
    return true;
}

/* --- encoding -------------------------------------------------------------------------- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Sends one Chunk { data = 1; offset = 2 }, data by reference (rs_call_send copies it into
 * the send queue). Returns what rs_call_send() returns. */
static int send_chunk(struct rs_call *call, const uint8_t *data, size_t len, uint64_t offset)
{
    uint8_t head[1 + VARINT_MAX], tail[1 + VARINT_MAX];
    struct iovec iov[3] = { { .iov_base = head, .iov_len = 0 } };
    int n = 1;

    if (len > 0) {
        head[0] = (1u << 3) | PB_WT_STRING;
        iov[0].iov_len = 1 + put_varint(head + 1, len);
        iov[n].iov_base = (void *)data;
        iov[n++].iov_len = len;
    }
    if (offset > 0) {
        tail[0] = (2u << 3) | PB_WT_VARINT;
        iov[n].iov_base = tail;
        iov[n++].iov_len = 1 + put_varint(tail + 1, offset);
    }
    return rs_call_send(call, iov, n);
}

/* A Chunk whose data lives in a buffer from rs_call_buf_get(): the offset field first, then the
 * data field's header, so the data goes last and is queued by reference (protobuf accepts
 * fields in any order). Takes ownership of |buf| when it returns 0. */
static int send_chunk_buf(struct rs_call *call, void *buf, size_t len, uint64_t offset)
{
    uint8_t head[2 * (1 + VARINT_MAX)];
    struct iovec iov = { .iov_base = head, .iov_len = 0 };

    if (offset > 0) {
        head[0] = (2u << 3) | PB_WT_VARINT;
        iov.iov_len = 1 + put_varint(head + 1, offset);
    }
    if (len > 0) {
        head[iov.iov_len] = (1u << 3) | PB_WT_STRING;
        iov.iov_len += 1 + put_varint(head + iov.iov_len + 1, len);
    }
    return rs_call_send_buf(call, &iov, 1, buf, len);
}

static size_t encode_info(uint8_t *buf, size_t cap, const struct rs_store_meta *m)
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

/* The one ObjectInfo a unary call answers with; held while the send queue is full. */
struct reply {
    uint8_t buf[ringstream_v1_ObjectInfo_size];
    size_t len;
    bool pending;
};

static void reply_flush(struct rs_call *call, struct reply *r, bool *finished)
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
        fail_send(call, finished, ret);
    else
        finish_ok(call, finished);
}

/* Answers |m| and finishes OK (now, or from on_writable). */
static void reply_info(struct rs_call *call, struct reply *r, bool *finished,
                       const struct rs_store_meta *m)
{
    r->len = encode_info(r->buf, sizeof(r->buf), m);
    if (r->len == 0) {
        fail(call, finished, RS_GRPC_INTERNAL, "cannot encode ObjectInfo");
        return;
    }
    r->pending = true;
    reply_flush(call, r, finished);
}

static void hexify(char *out, const uint8_t *in, size_t n)
{
    static const char d[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

static int64_t now_unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_start_nothing(struct rs_call *call)
{
}

/* --- Put ------------------------------------------------------------------------------- */

/* Data is staged into two buffers and written a buffer at a time: one fills while the other is
 * being written, so the network side and the page-cache copy run on two cores at once, and the
 * ring sees one large write per PUT_STAGE bytes instead of one per (typically 64 KiB) message.
 * The staging copy costs less than it saves: measured in perf/RESULTS.md (Put throughput). */
#define PUT_STAGE (512u * 1024)

struct put;
struct put_stage {
    struct put *p;
    uint8_t *buf;  /* owned, PUT_STAGE bytes, allocated with the header */
    size_t len;    /* bytes staged */
    size_t done;   /* bytes of |len| written (short writes resume here) */
    uint64_t off;  /* file offset of buf[0] */
    bool busy;     /* a write is in flight, or waits for the file (|deferred|) */
    bool deferred; /* full before the unnamed file existed: put_on_create writes it */
    int test_res;  /* test-only write delay: the completion's result, replayed by the timer */
    bool test_delayed;
};

struct put {
    struct reply reply;
    struct rs_store_op op;     /* the metadata step in flight, counted in |inflight| */
    struct rs_store_meta meta; /* name from the header; the rest filled when publishing */
    char key[RS_STORE_KEY_LEN + 1];
    struct rs_sha256 sha; /* of every byte received so far */
    uint64_t want_size;   /* from the header; 0: unchecked */
    uint8_t want_sha[RS_SHA256_LEN];
    uint64_t received; /* bytes received and hashed */
    uint64_t staged;   /* bytes copied into a stage: the file offset of the next staged byte */
    struct put_stage stage[2];
    unsigned cur;      /* the stage being filled */
    const uint8_t *wp; /* rest of a message waiting for a free stage: a view, held */
    size_t wlen;       /*   unconsumed until it is staged */
    int fd;            /* the unnamed file, when has_fd */
    unsigned inflight; /* ring ops whose completion has not arrived */
    bool has_fd;
    bool creating; /* the name check or the create of the unnamed file is in flight */
    bool direct;   /* fd has O_DIRECT: stage writes are aligned */
    bool has_header;
    bool check_sha;
    bool overwrite;
    bool half_closed;
    bool finished;
    bool released;
};

enum put_part {
    PUT_NONE,
    PUT_HEADER,
    PUT_DATA,
};

/* One PutRequest: which part of the oneof came last (protobuf's rule), the header fields, the
 * data as a view. */
struct put_req {
    enum put_part part;
    ringstream_v1_PutHeader hdr;
    struct view name, sha, data;
};

static const char *put_parse(const uint8_t *msg, size_t len, struct put_req *r)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);
    pb_wire_type_t wt;
    uint32_t tag;

    while (s.bytes_left > 0) {
        const char *why = next_field(&s, &wt, &tag);

        if (why != NULL)
            return why;
        if ((tag == 1 || tag == 2) && wt != PB_WT_STRING)
            return "wrong wire type for header or data";
        if (tag == 1) {
            struct view sub = { 0 };
            pb_istream_t hs;
            /* A header repeated right after a header merges into it, as protobuf does. */
            unsigned flags = r->part == PUT_HEADER ? PB_DECODE_NOINIT : 0;

            if (!take_bytes(&s, msg, len, &sub))
                return PB_GET_ERROR(&s);
            hs = pb_istream_from_buffer(sub.p, sub.len);
            if (flags == 0) {
                r->name = (struct view){ 0 };
                r->sha = (struct view){ 0 };
            }
            view_bind(&r->hdr.name, &r->name);
            view_bind(&r->hdr.sha256, &r->sha);
            if (!pb_decode_ex(&hs, ringstream_v1_PutHeader_fields, &r->hdr, flags))
                return PB_GET_ERROR(&hs);
            r->part = PUT_HEADER;
        } else if (tag == 2) {
            if (!take_bytes(&s, msg, len, &r->data))
                return PB_GET_ERROR(&s);
            r->part = PUT_DATA;
        } else if (!pb_skip_field(&s, wt)) {
            return PB_GET_ERROR(&s);
        }
    }
    if (!view_inside(&r->name, msg, len) || !view_inside(&r->sha, msg, len))
        return "internal: nanopb no longer reads buffers in place";
    return NULL;
}

static void put_release(struct rs_call *call, struct put *p)
{
    if (p->released || p->inflight > 0)
        return;
    p->released = true;
    if (p->has_fd)
        rs_store_close_fd(call, p->fd); /* an unpublished O_TMPFILE file disappears here */
    p->has_fd = false;
    rs_sha256_free(&p->sha);
    free(p->stage[0].buf);
    free(p->stage[1].buf);
    p->stage[0].buf = NULL;
    p->stage[1].buf = NULL;
}

static void put_on_create(struct rs_call *call, struct rs_store_op *op, int res);
static void put_write(struct rs_call *call, struct put *p, struct put_stage *s);
static void put_drain(struct rs_call *call, struct put *p);

static void put_create(struct rs_call *call, struct put *p)
{
    int ret;

    rs_store_op_init(&p->op, call_store(call), put_on_create, p);
    ret = rs_store_op_create(call, &p->op);
    if (ret < 0) {
        fail_op(call, &p->finished, ret, "creating", p->meta.name, p->meta.name_len);
        return;
    }
    p->inflight++;
}

static void put_on_exists(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct put *p = op->arg;

    p->inflight--;
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (!p->finished) {
        if (res == 0) {
            put_create(call, p);
            if (!p->finished)
                return;
        } else if (res > 0) {
            fail(call, &p->finished, RS_GRPC_ALREADY_EXISTS,
                 "object \"%s\" already exists (set overwrite to replace it)", p->meta.name);
        } else {
            fail_op(call, &p->finished, res, "checking", p->meta.name, p->meta.name_len);
        }
    }
    p->creating = false;
    rs_call_consume(call); /* a message held while both stages waited, if any */
}

static void put_on_create(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct put *p = op->arg;

    p->inflight--;
    p->creating = false;
    if (res >= 0) {
        p->fd = res;
        p->has_fd = true;
        p->direct = op->direct;
    }
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (!p->finished && res < 0)
        fail_op(call, &p->finished, res, "creating", p->meta.name, p->meta.name_len);
    if (p->finished) {
        rs_call_consume(call); /* a message held while both stages waited, if any */
        return;
    }
    /* Stages that filled while the file was being created: write them now. */
    for (unsigned i = 0; i < 2 && !p->finished; i++) {
        if (p->stage[i].deferred) {
            p->stage[i].deferred = false;
            put_write(call, p, &p->stage[i]);
        }
    }
    if (p->half_closed)
        put_drain(call, p);
}

/* The header arrived: check it and allocate what the upload needs, then, on the ring, check
 * that the name is free (unless overwriting) and create the unnamed file. Data may arrive
 * meanwhile: it is hashed and staged as usual, and a stage that fills waits for the file
 * (put_write). The header itself is consumed at once: a message held across turns this early
 * in a stream would need more receive room than the stream has reserved. */
static void put_start(struct rs_call *call, struct put *p, const struct put_req *r)
{
    int ret;

    if (!name_ok(call, &p->finished, &r->name, "PutHeader.name"))
        return;
    if (r->sha.set && r->sha.len != 0 && r->sha.len != RS_SHA256_LEN) {
        fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
             "PutHeader.sha256 must be empty or 32 raw bytes, got %zu bytes", r->sha.len);
        return;
    }
    memcpy(p->meta.name, r->name.p, r->name.len);
    p->meta.name[r->name.len] = '\0';
    p->meta.name_len = r->name.len;
    p->check_sha = r->sha.set && r->sha.len == RS_SHA256_LEN;
    if (p->check_sha)
        memcpy(p->want_sha, r->sha.p, RS_SHA256_LEN);
    p->want_size = r->hdr.size;
    p->overwrite = r->hdr.overwrite;
    ret = rs_store_key(p->meta.name, p->meta.name_len, p->key);
    if (ret < 0) {
        fail(call, &p->finished, RS_GRPC_INTERNAL, "hashing the name: %s", strerror(-ret));
        return;
    }
    ret = rs_sha256_init(&p->sha);
    if (ret < 0) {
        fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED, "no memory for hashing");
        return;
    }
    if (posix_memalign((void **)&p->stage[0].buf, RS_STORE_DIRECT_ALIGN, PUT_STAGE) != 0)
        p->stage[0].buf = NULL;
    if (posix_memalign((void **)&p->stage[1].buf, RS_STORE_DIRECT_ALIGN, PUT_STAGE) != 0)
        p->stage[1].buf = NULL;
    if (p->stage[0].buf == NULL || p->stage[1].buf == NULL) {
        fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED, "no memory for upload buffers");
        return;
    }
    p->stage[0].p = p;
    p->stage[1].p = p;
    p->has_header = true;
    p->creating = true;
    if (p->overwrite) {
        put_create(call, p);
    } else {
        /* Fails early (ALREADY_EXISTS before the upload); the publish's linkat decides races. */
        rs_store_op_init(&p->op, call_store(call), put_on_exists, p);
        ret = rs_store_op_exists(call, &p->op, p->key);
        if (ret < 0)
            fail_op(call, &p->finished, ret, "checking", p->meta.name, p->meta.name_len);
        else
            p->inflight++;
    }
    if (p->finished)
        p->creating = false;
}

static void put_on_write(struct rs_call *call, void *arg, int res);
static void put_on_test_delay(struct rs_call *call, void *arg, int res);
static void put_finalize(struct rs_call *call, struct put *p);
static void put_on_meta(struct rs_call *call, struct rs_store_op *op, int res);
static void put_on_fsync(struct rs_call *call, void *arg, int res);
static void put_on_publish(struct rs_call *call, struct rs_store_op *op, int res);
static void put_on_dirsync(struct rs_call *call, void *arg, int res);

/* Writes what is left of stage |s|. */
static void put_write(struct rs_call *call, struct put *p, struct put_stage *s)
{
    int ret;

    if (!p->has_fd) { /* still being created: put_on_create writes it */
        s->busy = true;
        s->deferred = true;
        return;
    }
    /* Full stages are aligned; the tail of the object (or a short write's rest) may not be,
     * and is the last write of the upload: it goes through the page cache. */
    if (p->direct &&
        ((s->len - s->done) % RS_STORE_DIRECT_ALIGN != 0 ||
         (s->off + s->done) % RS_STORE_DIRECT_ALIGN != 0 || s->done % RS_STORE_DIRECT_ALIGN != 0)) {
        ret = rs_store_buffered(p->fd);
        if (ret < 0) {
            fail(call, &p->finished, RS_GRPC_INTERNAL, "clearing O_DIRECT: %s", strerror(-ret));
            return;
        }
        p->direct = false;
    }
    ret = rs_call_pwrite(call, p->fd, s->buf + s->done, s->len - s->done, s->off + s->done,
                         put_on_write, s);

    if (ret < 0) {
        fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED, "no free I/O slot on this worker");
        return;
    }
    s->busy = true;
    p->inflight++;
}

/* Copies the held data (p->wp, p->wlen) into stages, writing each one that fills. Returns true
 * when all of it is staged (the message may be consumed), false when both stages are busy. */
static bool put_stage_data(struct rs_call *call, struct put *p)
{
    while (p->wlen > 0 && !p->finished) {
        struct put_stage *s = &p->stage[p->cur];
        size_t n;

        if (s->busy)
            return false;
        if (s->len == 0)
            s->off = p->staged;
        n = PUT_STAGE - s->len < p->wlen ? PUT_STAGE - s->len : p->wlen;
        memcpy(s->buf + s->len, p->wp, n);
        s->len += n;
        p->wp += n;
        p->wlen -= n;
        p->staged += n;
        if (s->len == PUT_STAGE) {
            s->done = 0;
            put_write(call, p, s);
            p->cur ^= 1;
        }
    }
    return true;
}

/* After the client half-closed: write the partly filled stage, then finalize once idle. */
static void put_drain(struct rs_call *call, struct put *p)
{
    struct put_stage *s = &p->stage[p->cur];

    if (p->finished || p->creating || p->wlen > 0 || p->stage[0].busy || p->stage[1].busy)
        return; /* put_on_create or the last put_on_write calls again */
    if (s->len > 0) {
        s->done = 0;
        put_write(call, p, s);
        return;
    }
    put_finalize(call, p);
}

/* The client half-closed and every byte is written: check, write the metadata, sync, then
 * publish, then sync objects/. */
static void put_finalize(struct rs_call *call, struct put *p)
{
    int ret;

    if (p->want_size != 0 && p->received != p->want_size) {
        fail(call, &p->finished, RS_GRPC_DATA_LOSS,
             "received %" PRIu64 " bytes but PutHeader.size says %" PRIu64, p->received,
             p->want_size);
        return;
    }
    ret = rs_sha256_final(&p->sha, p->meta.sha256);
    if (ret < 0) {
        fail(call, &p->finished, RS_GRPC_INTERNAL, "hashing: %s", strerror(-ret));
        return;
    }
    if (p->check_sha && memcmp(p->meta.sha256, p->want_sha, RS_SHA256_LEN) != 0) {
        char got[2 * RS_SHA256_LEN + 1], want[2 * RS_SHA256_LEN + 1];

        hexify(got, p->meta.sha256, RS_SHA256_LEN);
        hexify(want, p->want_sha, RS_SHA256_LEN);
        fail(call, &p->finished, RS_GRPC_DATA_LOSS,
             "SHA-256 mismatch: the data received hashes to %s, PutHeader.sha256 is %s", got, want);
        return;
    }
    p->meta.size = p->received;
    p->meta.modified_unix_ms = now_unix_ms();
    rs_store_op_init(&p->op, call_store(call), put_on_meta, p);
    ret = rs_store_op_set_meta(call, &p->op, p->fd, &p->meta);
    if (ret < 0) {
        fail_op(call, &p->finished, ret, "storing metadata of", p->meta.name, p->meta.name_len);
        return;
    }
    p->inflight++;
}

static void put_on_meta(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct put *p = op->arg;

    p->inflight--;
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (p->finished)
        return;
    if (res < 0) {
        fail_store(call, &p->finished, res, "storing metadata of", p->meta.name, p->meta.name_len);
        return;
    }
    if (rs_call_fsync(call, p->fd, put_on_fsync, p) < 0) {
        fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED, "no free I/O slot on this worker");
        return;
    }
    p->inflight++;
}

static void put_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct put *p = rs_call_state(call);
    struct put_req r = { .part = PUT_NONE };
    const char *why;

    if (p->finished) {
        rs_call_consume(call);
        return;
    }
    why = put_parse(msg, len, &r);
    if (why != NULL) {
        fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT, "malformed PutRequest: %s", why);
    } else if (r.part == PUT_NONE) {
        fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
             "PutRequest carries neither header nor data");
    } else if (!p->has_header) {
        if (r.part != PUT_HEADER)
            fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                 "the first PutRequest must carry the header");
        else
            put_start(call, p, &r);
    } else if (r.part == PUT_HEADER) {
        fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
             "a second PutRequest header; only the first message carries one");
    } else if (p->want_size != 0 && r.data.len > p->want_size - p->received) {
        fail(call, &p->finished, RS_GRPC_DATA_LOSS,
             "more data than PutHeader.size (%" PRIu64 " bytes)", p->want_size);
    } else if (r.data.len > 0) {
        int ret = rs_sha256_update(&p->sha, r.data.p, r.data.len);

        if (ret < 0) {
            fail(call, &p->finished, RS_GRPC_INTERNAL, "hashing: %s", strerror(-ret));
        } else {
            p->wp = r.data.p;
            p->wlen = r.data.len;
            p->received += r.data.len;
            if (!put_stage_data(call, p))
                return; /* held: put_on_write stages the rest and consumes */
        }
    }
    rs_call_consume(call);
}

static void put_on_write(struct rs_call *call, void *arg, int res)
{
    struct put_stage *s = arg;
    struct put *p = s->p;
    const struct rs_bulk *b = rs_call_service_ctx(call);

    /* Test-only knob: the completion takes effect after the delay; the write stays counted in
     * |inflight| and the stage busy until put_on_test_delay replays it. */
    if (b->test_write_delay_ns > 0 && !s->test_delayed && res > 0 && !rs_call_is_done(call) &&
        !p->finished && rs_call_timer(call, b->test_write_delay_ns, put_on_test_delay, s) == 0) {
        s->test_delayed = true;
        s->test_res = res;
        return;
    }
    s->test_delayed = false;
    p->inflight--;
    s->busy = false;
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (p->finished) {
        rs_call_consume(call); /* a held message, if any */
        return;
    }
    if (res <= 0) {
        int err = res < 0 ? res : -EIO;

        fail(call, &p->finished, rs_grpc_status_from_errno(err), "writing \"%s\": %s", p->meta.name,
             strerror(-err));
        rs_call_consume(call);
        return;
    }
    s->done += (size_t)res;
    if (s->done < s->len) { /* short write: the rest */
        put_write(call, p, s);
        return;
    }
    s->len = 0;
    if (p->wlen > 0) {
        if (!put_stage_data(call, p))
            return;
        rs_call_consume(call); /* the held message is staged in full */
    }
    if (p->half_closed)
        put_drain(call, p);
}

/* The test-only write delay is over (or the call ended): the write's completion, late. */
static void put_on_test_delay(struct rs_call *call, void *arg, int res)
{
    struct put_stage *s = arg;

    put_on_write(call, s, s->test_res);
}

static void put_on_fsync(struct rs_call *call, void *arg, int res)
{
    struct put *p = arg;
    int ret;

    p->inflight--;
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (p->finished)
        return;
    if (res < 0) {
        fail(call, &p->finished, rs_grpc_status_from_errno(res), "syncing \"%s\": %s", p->meta.name,
             strerror(-res));
        return;
    }
    rs_store_op_init(&p->op, call_store(call), put_on_publish, p);
    ret = rs_store_op_publish(call, &p->op, p->fd, p->key, p->overwrite);
    if (ret < 0) {
        fail_op(call, &p->finished, ret, "publishing", p->meta.name, p->meta.name_len);
        return;
    }
    p->inflight++;
}

static void put_on_publish(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct put *p = op->arg;

    p->inflight--;
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (p->finished)
        return;
    if (res == -EEXIST) {
        fail(call, &p->finished, RS_GRPC_ALREADY_EXISTS,
             "object \"%s\" was created by another upload meanwhile (set overwrite to replace it)",
             p->meta.name);
        return;
    }
    if (res < 0) {
        fail_op(call, &p->finished, res, "publishing", p->meta.name, p->meta.name_len);
        return;
    }
    /* The new name is durable once objects/ itself is synced. */
    if (rs_call_fsync(call, rs_store_dirfd(call_store(call)), put_on_dirsync, p) < 0) {
        fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED,
             "object \"%s\" published but not synced: no free I/O slot", p->meta.name);
        return;
    }
    p->inflight++;
}

static void put_on_dirsync(struct rs_call *call, void *arg, int res)
{
    struct put *p = arg;

    p->inflight--;
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (p->finished)
        return;
    if (res < 0) {
        rs_log_error("bulk: object \"%s\" published but syncing objects/ failed: %s", p->meta.name,
                     strerror(-res));
        fail(call, &p->finished, RS_GRPC_INTERNAL,
             "object \"%s\" published but syncing its directory failed: %s", p->meta.name,
             strerror(-res));
        return;
    }
    reply_info(call, &p->reply, &p->finished, &p->meta);
}

static void put_on_half_close(struct rs_call *call)
{
    struct put *p = rs_call_state(call);

    p->half_closed = true;
    if (p->finished)
        return;
    if (!p->has_header) {
        fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
             "empty Put: the stream ended before the header");
        return;
    }
    put_drain(call, p); /* or the last put_on_write does */
}

static void put_on_writable(struct rs_call *call)
{
    struct put *p = rs_call_state(call);

    reply_flush(call, &p->reply, &p->finished);
}

static void put_on_done(struct rs_call *call, enum rs_grpc_status status)
{
    put_release(call, rs_call_state(call)); /* or the last completion does */
}

/* --- Get ------------------------------------------------------------------------------- */

/* Chunks are read ahead into up to GET_READS buffers while the send queue has room for them,
 * so the next reads overlap the sending of the current chunk; chunks are sent strictly in
 * object order whatever order their reads complete in. Memory: at most GET_READS chunks. */
#define GET_READS 4

struct get;
struct get_slot {
    struct get *g;
    uint8_t *buf;  /* owned; |chunk| bytes: a pool buffer (|pooled|) or malloc'd */
    bool pooled;   /* from rs_call_buf_get(): sent by reference, no copy */
    uint64_t pos;  /* object offset of the chunk */
    size_t want;   /* bytes of the chunk */
    size_t filled; /* of them, bytes read so far */
    bool reading;  /* a pread is in flight */
};

struct get {
    struct rs_store_op op;           /* opens the object; in flight while |opening| */
    struct get_slot slot[GET_READS]; /* a ring of chunks in object order, from |head| */
    unsigned head;                   /* the slot of the next chunk to send */
    unsigned nused;                  /* slots holding a chunk (being read or waiting to go) */
    unsigned nreading;               /* preads in flight */
    size_t chunk;                    /* effective chunk size */
    uint64_t next;                   /* object offset of the next chunk to read */
    uint64_t end;                    /* one past the last byte to send */
    uint64_t req_offset, req_length, req_chunk; /* from the GetRequest, used once it is open */
    int fd; /* the object, when has_fd; held so one version is sent */
    bool has_fd;
    bool got;     /* the request arrived */
    bool opening; /* the open is in flight */
    bool holding; /* the chunk at |head| waits for room in the send queue */
    bool finished;
};

static void get_on_read(struct rs_call *call, void *arg, int res);

static void get_release(struct rs_call *call, struct get *g)
{
    if (g->opening || g->nreading > 0)
        return;
    if (g->has_fd)
        rs_store_close_fd(call, g->fd);
    g->has_fd = false;
    for (unsigned i = 0; i < GET_READS; i++) {
        if (g->slot[i].pooled)
            rs_call_buf_put(call, g->slot[i].buf);
        else
            free(g->slot[i].buf);
        g->slot[i].buf = NULL;
    }
}

/* Reads what is left of the chunk in |s|. */
static bool get_read(struct rs_call *call, struct get *g, struct get_slot *s)
{
    int ret = rs_call_pread(call, g->fd, s->buf + s->filled, s->want - s->filled,
                            s->pos + s->filled, get_on_read, s);

    if (ret < 0) {
        fail(call, &g->finished, RS_GRPC_RESOURCE_EXHAUSTED, "no free I/O slot on this worker");
        return false;
    }
    s->reading = true;
    g->nreading++;
    return true;
}

/* Chunks that may be read ahead now: as many as the send queue has room for, at most
 * GET_READS. A chunk read while the queue is full would only wait in memory, so with no room
 * nothing is read (an idle queue takes one chunk of any size). */
static unsigned get_window(const struct rs_call *call, const struct get *g)
{
    size_t n = rs_call_send_room(call) / (g->chunk + CHUNK_OVERHEAD + RS_GRPC_PREFIX_LEN);

    if (n == 0 && g->nused == 0 && rs_call_send_idle(call))
        n = 1;
    return n > GET_READS ? GET_READS : (unsigned)n;
}

/* Sends the chunks that are read, in order, then starts the reads the window allows. */
static void get_pump(struct rs_call *call, struct get *g)
{
    /* A slot not reading holds a whole chunk: its short reads were completed first. */
    while (g->nused > 0 && !g->slot[g->head].reading) {
        struct get_slot *s = &g->slot[g->head];
        int ret = s->pooled ? send_chunk_buf(call, s->buf, s->want, s->pos)
                            : send_chunk(call, s->buf, s->want, s->pos);

        if (ret == -EAGAIN) {
            g->holding = true; /* on_writable resumes */
            return;
        }
        g->holding = false;
        if (ret < 0) {
            fail_send(call, &g->finished, ret);
            return;
        }
        /* The queue has the bytes (a pool buffer went by reference): a stalled client then
         * costs its queue and no buffer. */
        if (!s->pooled)
            free(s->buf);
        s->buf = NULL;
        g->head = (g->head + 1) % GET_READS;
        g->nused--;
    }
    if (g->nused == 0 && g->next == g->end) {
        finish_ok(call, &g->finished);
        return;
    }
    if (g->next < g->end && g->nused == 0 && get_window(call, g) == 0) {
        rs_call_want_writable(call); /* read on once the queue drains */
        return;
    }
    while (g->next < g->end && g->nused < get_window(call, g)) {
        struct get_slot *s = &g->slot[(g->head + g->nused) % GET_READS];

        if (s->buf == NULL) {
            size_t cap = 0;

            s->buf = rs_call_buf_get(call, &cap);
            s->pooled = s->buf != NULL && cap >= g->chunk;
            if (s->buf != NULL && !s->pooled) {
                rs_call_buf_put(call, s->buf); /* chunks above a pool block go by copy */
                s->buf = NULL;
            }
            if (s->buf == NULL)
                s->buf = malloc(g->chunk);
            if (s->buf == NULL && g->nused > 0)
                return; /* go on with the buffers we have */
            if (s->buf == NULL) {
                fail(call, &g->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "no memory for a %zu-byte chunk", g->chunk);
                return;
            }
        }
        s->g = g;
        s->pos = g->next;
        s->want = g->end - g->next < g->chunk ? (size_t)(g->end - g->next) : g->chunk;
        s->filled = 0;
        if (!get_read(call, g, s))
            return;
        g->next += s->want;
        g->nused++;
    }
}

static void get_on_read(struct rs_call *call, void *arg, int res)
{
    struct get_slot *s = arg;
    struct get *g = s->g;

    s->reading = false;
    g->nreading--;
    if (rs_call_is_done(call)) {
        get_release(call, g);
        return;
    }
    if (g->finished)
        return;
    if (res < 0) {
        fail(call, &g->finished, rs_grpc_status_from_errno(res), "reading the object: %s",
             strerror(-res));
        return;
    }
    if (res == 0) {
        fail(call, &g->finished, RS_GRPC_DATA_LOSS, "the object is shorter than its recorded size");
        return;
    }
    s->filled += (size_t)res;
    if (s->filled < s->want)
        get_read(call, g, s); /* short read: the rest */
    else if (!g->holding)
        get_pump(call, g);
}

/* The object is open (or not): check the range, then start reading. */
static void get_on_open(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct get *g = op->arg;
    const struct rs_store_meta *m = &op->meta;
    uint64_t chunk;

    g->opening = false;
    if (res >= 0) {
        g->fd = res;
        g->has_fd = true;
    }
    if (rs_call_is_done(call)) {
        get_release(call, g);
        return;
    }
    if (g->finished)
        return;
    if (res < 0) {
        fail_op(call, &g->finished, res, "opening", op->want, op->want_len);
        return;
    }
    if (g->req_offset > m->size) {
        fail(call, &g->finished, RS_GRPC_OUT_OF_RANGE,
             "offset %" PRIu64 " is past the end of \"%s\" (%" PRIu64 " bytes)", g->req_offset,
             m->name, m->size);
        return;
    }
    g->next = g->req_offset;
    g->end = g->req_length == 0 || g->req_length > m->size - g->req_offset
                     ? m->size
                     : g->req_offset + g->req_length;
    chunk = g->req_chunk == 0 ? CHUNK_DEFAULT : g->req_chunk;
    if (chunk > CHUNK_MAX)
        chunk = CHUNK_MAX;
    if (chunk + CHUNK_OVERHEAD > rs_call_max_msg(call)) /* a tiny --max-msg */
        chunk = rs_call_max_msg(call) > CHUNK_OVERHEAD + 1 ? rs_call_max_msg(call) - CHUNK_OVERHEAD
                                                           : 1;
    g->chunk = (size_t)chunk;
    get_pump(call, g);
}

static void get_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct get *g = rs_call_state(call);
    ringstream_v1_GetRequest req = ringstream_v1_GetRequest_init_zero;
    struct view name = { 0 };
    int ret;

    if (g->got || g->finished) {
        if (!g->finished)
            fail(call, &g->finished, RS_GRPC_INVALID_ARGUMENT, "Get takes one GetRequest");
        rs_call_consume(call);
        return;
    }
    g->got = true;
    view_bind(&req.name, &name);
    if (!decode(call, &g->finished, msg, len, ringstream_v1_GetRequest_fields, &req,
                "GetRequest") ||
        !name_ok(call, &g->finished, &name, "GetRequest.name"))
        goto out;
    g->req_offset = req.offset;
    g->req_length = req.length;
    g->req_chunk = req.chunk_size;
    rs_store_op_init(&g->op, call_store(call), get_on_open, g);
    ret = rs_store_op_open(call, &g->op, (const char *)name.p, name.len); /* copies the name */
    if (ret < 0) {
        fail_op(call, &g->finished, ret, "opening", (const char *)name.p, name.len);
        goto out;
    }
    g->opening = true;
out:
    rs_call_consume(call);
}

static void get_on_half_close(struct rs_call *call)
{
    struct get *g = rs_call_state(call);

    if (!g->got && !g->finished)
        fail(call, &g->finished, RS_GRPC_INVALID_ARGUMENT, "Get needs a GetRequest");
}

static void get_on_writable(struct rs_call *call)
{
    struct get *g = rs_call_state(call);

    /* Either a chunk waits for room (holding) or reading waits for it (rs_call_want_writable). */
    if (!g->finished && g->has_fd && !g->opening)
        get_pump(call, g);
}

static void get_on_done(struct rs_call *call, enum rs_grpc_status status)
{
    get_release(call, rs_call_state(call)); /* or the last completion does */
}

/* --- Echo ------------------------------------------------------------------------------ */

struct echo {
    uint64_t offset;     /* bytes echoed so far: the offset of the next chunk */
    const uint8_t *data; /* the held message's data, a view until rs_call_consume() */
    size_t len;
    bool holding; /* a message waits for room in the send queue, unconsumed */
    bool half_closed;
    bool finished;
};

static const char *chunk_parse(const uint8_t *msg, size_t len, struct view *data)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);
    pb_wire_type_t wt;
    uint32_t tag;

    while (s.bytes_left > 0) {
        const char *why = next_field(&s, &wt, &tag);

        if (why != NULL)
            return why;
        if (tag == 1) {
            if (wt != PB_WT_STRING)
                return "wrong wire type for data";
            if (!take_bytes(&s, msg, len, data))
                return PB_GET_ERROR(&s);
        } else if (tag == 2) {
            uint64_t ignored; /* the server sets offset */

            if (wt != PB_WT_VARINT)
                return "wrong wire type for offset";
            if (!pb_decode_varint(&s, &ignored))
                return PB_GET_ERROR(&s);
        } else if (!pb_skip_field(&s, wt)) {
            return PB_GET_ERROR(&s);
        }
    }
    return NULL;
}

/* Sends the held message, consumes it, or keeps holding it until on_writable: the client's
 * upload then stalls at its flow-control window until it reads. */
static void echo_flush(struct rs_call *call, struct echo *e)
{
    int ret = send_chunk(call, e->data, e->len, e->offset);

    if (ret == -EAGAIN) {
        e->holding = true;
        return;
    }
    e->holding = false;
    rs_call_consume(call);
    if (ret < 0) {
        fail_send(call, &e->finished, ret);
        return;
    }
    e->offset += e->len;
    if (e->half_closed)
        finish_ok(call, &e->finished);
}

static void echo_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct echo *e = rs_call_state(call);
    struct view data = { 0 };
    const char *why;

    if (e->finished) {
        rs_call_consume(call);
        return;
    }
    why = chunk_parse(msg, len, &data);
    if (why != NULL) {
        fail(call, &e->finished, RS_GRPC_INVALID_ARGUMENT, "malformed Chunk: %s", why);
        rs_call_consume(call);
        return;
    }
    e->data = data.p;
    e->len = data.len;
    echo_flush(call, e);
}

static void echo_on_half_close(struct rs_call *call)
{
    struct echo *e = rs_call_state(call);

    e->half_closed = true;
    if (!e->holding && !e->finished)
        finish_ok(call, &e->finished);
}

static void echo_on_writable(struct rs_call *call)
{
    struct echo *e = rs_call_state(call);

    if (e->holding && !e->finished)
        echo_flush(call, e);
}

/* --- Stat and Delete ------------------------------------------------------------------- */

struct unary {
    struct reply reply;
    struct rs_store_op op; /* the store operation; it cleans up after itself if the call ends */
    bool got;
    bool finished;
};

/* Decodes a request whose only field is the name (StatRequest, DeleteRequest have the same
 * shape) and checks it. */
static bool unary_name(struct rs_call *call, struct unary *u, const uint8_t *msg, size_t len,
                       const pb_msgdesc_t *fields, pb_callback_t *cb, void *req, struct view *name,
                       const char *what, const char *field)
{
    if (u->got) {
        fail(call, &u->finished, RS_GRPC_INVALID_ARGUMENT, "%s: one request message only", what);
        return false;
    }
    u->got = true;
    view_bind(cb, name);
    return decode(call, &u->finished, msg, len, fields, req, what) &&
           name_ok(call, &u->finished, name, field);
}

static void stat_on_op(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct unary *u = op->arg;

    if (rs_call_is_done(call) || u->finished)
        return;
    if (res < 0)
        fail_op(call, &u->finished, res, "reading", op->want, op->want_len);
    else
        reply_info(call, &u->reply, &u->finished, &op->meta);
}

static void stat_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct unary *u = rs_call_state(call);
    ringstream_v1_StatRequest req = ringstream_v1_StatRequest_init_zero;
    struct view name = { 0 };

    if (!u->finished && unary_name(call, u, msg, len, ringstream_v1_StatRequest_fields, &req.name,
                                   &req, &name, "StatRequest", "StatRequest.name")) {
        int ret;

        rs_store_op_init(&u->op, call_store(call), stat_on_op, u);
        ret = rs_store_op_stat(call, &u->op, (const char *)name.p, name.len);
        if (ret < 0)
            fail_op(call, &u->finished, ret, "reading", (const char *)name.p, name.len);
    }
    rs_call_consume(call);
}

static void delete_on_op(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct unary *u = op->arg;

    if (rs_call_is_done(call) || u->finished)
        return;
    if (res == -EBADMSG)
        fail(call, &u->finished, RS_GRPC_DATA_LOSS,
             "object \"%s\" deleted, but its stored metadata was corrupt", op->want);
    else if (res < 0)
        fail_op(call, &u->finished, res, "deleting", op->want, op->want_len);
    else
        reply_info(call, &u->reply, &u->finished, &op->meta);
}

static void delete_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct unary *u = rs_call_state(call);
    ringstream_v1_DeleteRequest req = ringstream_v1_DeleteRequest_init_zero;
    struct view name = { 0 };

    if (!u->finished && unary_name(call, u, msg, len, ringstream_v1_DeleteRequest_fields, &req.name,
                                   &req, &name, "DeleteRequest", "DeleteRequest.name")) {
        int ret;

        rs_store_op_init(&u->op, call_store(call), delete_on_op, u);
        ret = rs_store_op_delete(call, &u->op, (const char *)name.p, name.len);
        if (ret < 0)
            fail_op(call, &u->finished, ret, "deleting", (const char *)name.p, name.len);
    }
    rs_call_consume(call);
}

static void unary_on_half_close(struct rs_call *call)
{
    struct unary *u = rs_call_state(call);

    if (!u->got && !u->finished)
        fail(call, &u->finished, RS_GRPC_INVALID_ARGUMENT, "missing request message");
}

static void unary_on_writable(struct rs_call *call)
{
    struct unary *u = rs_call_state(call);

    reply_flush(call, &u->reply, &u->finished);
}

/* --- List ------------------------------------------------------------------------------ */

/* io_uring has no getdents, so the directory is read on the worker thread, one batch per turn:
 * one getdents64 of LIST_DENTS_BYTES (about 256 entries of key length), then the metadata of
 * the batch's objects is read on the ring (openat, fgetxattr, close; LIST_WINDOW objects at
 * once), and the next batch is read only after a zero timer, from a later turn. A huge List
 * thus holds the worker for one getdents64 and a few hundred submissions at a time.
 * Trade-off: a synchronous lgetxattr per entry (the old way) costs one syscall and no ring
 * traffic, but each may wait for an inode read on a cold cache, 256 in a row; three ring ops
 * per entry cost more CPU in all, but a slow disk then delays this List and nobody else.
 *
 * Order: names go out in ascending byte order and directory order is hash order, so every
 * match is collected before the first is sent. Each batch's matches are sorted when the batch
 * ends (a few hundred at most), and the sorted runs are merged while sending (a min-heap of
 * runs), so no single turn sorts the whole listing. Memory: one struct rs_store_meta (~320
 * bytes) per matching object until the call ends, 16 bytes per batch, and while reading the
 * LIST_WINDOW ops (~42 KiB) and the dirent buffer (22 KiB). */
#define LIST_DENTS_BYTES (256 * 88) /* an entry with a 64-byte name takes 88 bytes */
#define LIST_WINDOW      32

struct list_run {
    size_t at;  /* the run's next match to send, in list.v */
    size_t end; /* one past its last */
};

struct list {
    struct rs_store_meta *v; /* owned; the matches, each batch's sorted in place */
    size_t n;
    size_t cap;
    struct list_run *runs; /* owned; once sending, a min-heap by the name at |at| */
    size_t nruns;
    size_t runs_cap;
    size_t run_start;        /* the first match of the batch being read */
    struct rs_store_op *ops; /* owned, LIST_WINDOW of them; metadata reads */
    uint8_t *dents;          /* owned, LIST_DENTS_BYTES; the batch being read */
    size_t dlen;             /* bytes of it */
    size_t dpos;             /* offset of its next entry */
    char *prefix;            /* owned copy of ListRequest.prefix */
    size_t plen;
    int dirfd;         /* objects/ open for reading, when has_dir */
    unsigned inflight; /* the opendir, metadata reads, the yield timer */
    unsigned nbusy;    /* of |ops|, those busy */
    bool has_dir;
    bool sending; /* every match is collected; list_pump sends */
    bool got;
    bool finished;
};

static void list_release(struct rs_call *call, struct list *l)
{
    if (l->inflight > 0)
        return;
    if (l->has_dir)
        rs_store_close_fd(call, l->dirfd);
    l->has_dir = false;
    free(l->v);
    l->v = NULL;
    free(l->runs);
    l->runs = NULL;
    free(l->ops);
    l->ops = NULL;
    free(l->dents);
    l->dents = NULL;
    free(l->prefix);
    l->prefix = NULL;
}

static void list_fail(struct rs_call *call, struct list *l, int err)
{
    if (err == RS_STORE_OP_NOSLOT)
        fail(call, &l->finished, RS_GRPC_RESOURCE_EXHAUSTED, "no free I/O slot on this worker");
    else
        fail(call, &l->finished, rs_grpc_status_from_errno(err), "listing objects: %s",
             strerror(-err));
}

/* Ascending byte order of names; a name sorts before the longer names it begins. */
static int meta_cmp(const void *a, const void *b)
{
    const struct rs_store_meta *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);

    if (c != 0)
        return c;
    return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static bool run_less(const struct list *l, size_t i, size_t j)
{
    return meta_cmp(&l->v[l->runs[i].at], &l->v[l->runs[j].at]) < 0;
}

static void runs_sift_down(struct list *l, size_t i)
{
    for (;;) {
        size_t least = i, c = 2 * i + 1;
        struct list_run t;

        if (c < l->nruns && run_less(l, c, least))
            least = c;
        if (c + 1 < l->nruns && run_less(l, c + 1, least))
            least = c + 1;
        if (least == i)
            return;
        t = l->runs[i];
        l->runs[i] = l->runs[least];
        l->runs[least] = t;
        i = least;
    }
}

/* Sends the smallest unsent name of all runs, as long as the send queue takes them. */
static void list_pump(struct rs_call *call, struct list *l)
{
    uint8_t buf[ringstream_v1_ObjectInfo_size];
    struct iovec iov = { .iov_base = buf };

    while (l->nruns > 0) {
        struct list_run *r = &l->runs[0];
        int ret;

        iov.iov_len = encode_info(buf, sizeof(buf), &l->v[r->at]);
        if (iov.iov_len == 0) {
            fail(call, &l->finished, RS_GRPC_INTERNAL, "cannot encode ObjectInfo");
            return;
        }
        ret = rs_call_send(call, &iov, 1);
        if (ret == -EAGAIN)
            return; /* on_writable resumes */
        if (ret < 0) {
            fail_send(call, &l->finished, ret);
            return;
        }
        if (++r->at == r->end)
            l->runs[0] = l->runs[--l->nruns];
        if (l->nruns > 0)
            runs_sift_down(l, 0);
    }
    list_release(call, l);
    finish_ok(call, &l->finished);
}

/* The directory is read and every metadata read is back: close it, then send. */
static void list_end(struct rs_call *call, struct list *l)
{
    rs_store_close_fd(call, l->dirfd);
    l->has_dir = false;
    for (size_t i = l->nruns / 2; i-- > 0;)
        runs_sift_down(l, i);
    l->sending = true;
    list_pump(call, l);
}

static void list_on_yield(struct rs_call *call, void *arg, int res);

/* The batch's last metadata read is back: sort its matches into a run, then yield the worker
 * before the next getdents64. */
static void list_batch_done(struct rs_call *call, struct list *l)
{
    if (l->n > l->run_start) {
        if (l->nruns == l->runs_cap) {
            size_t cap = l->runs_cap ? 2 * l->runs_cap : 16;
            struct list_run *grown = realloc(l->runs, cap * sizeof(*grown));

            if (grown == NULL) {
                list_fail(call, l, -ENOMEM);
                return;
            }
            l->runs = grown;
            l->runs_cap = cap;
        }
        qsort(l->v + l->run_start, l->n - l->run_start, sizeof(*l->v), meta_cmp);
        l->runs[l->nruns].at = l->run_start;
        l->runs[l->nruns].end = l->n;
        l->nruns++;
        l->run_start = l->n;
    }
    if (rs_call_timer(call, 0, list_on_yield, l) < 0) {
        list_fail(call, l, RS_STORE_OP_NOSLOT);
        return;
    }
    l->inflight++;
}

static void list_on_meta(struct rs_call *call, struct rs_store_op *op, int res);

/* Starts metadata reads for the batch's next entries, as many as the window allows. */
static void list_feed(struct rs_call *call, struct list *l)
{
    unsigned slot = 0;

    while (l->dpos < l->dlen && l->nbusy < LIST_WINDOW) {
        const struct dirent64 *e = (const struct dirent64 *)(l->dents + l->dpos);
        int ret;

        l->dpos += e->d_reclen;
        if (!rs_store_is_key(e->d_name))
            continue; /* ".", "..", tmp- and del- names */
        while (rs_store_op_busy(&l->ops[slot]))
            slot++;
        rs_store_op_init(&l->ops[slot], call_store(call), list_on_meta, l);
        ret = rs_store_op_stat_key(call, &l->ops[slot], e->d_name);
        if (ret < 0) {
            list_fail(call, l, ret);
            return;
        }
        l->nbusy++;
        l->inflight++;
    }
    if (l->dpos == l->dlen && l->nbusy == 0)
        list_batch_done(call, l);
}

/* One turn's worth of the directory: one getdents64, the worker's only blocking call here. */
static void list_batch(struct rs_call *call, struct list *l)
{
    ssize_t n = getdents64(l->dirfd, l->dents, LIST_DENTS_BYTES);

    if (n < 0) {
        list_fail(call, l, -errno);
        return;
    }
    if (n == 0) {
        list_end(call, l);
        return;
    }
    l->dlen = (size_t)n;
    l->dpos = 0;
    list_feed(call, l);
}

static void list_on_yield(struct rs_call *call, void *arg, int res)
{
    struct list *l = arg;

    l->inflight--;
    if (rs_call_is_done(call)) {
        list_release(call, l);
        return;
    }
    if (l->finished)
        return;
    list_batch(call, l);
}

static void list_on_meta(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct list *l = op->arg;

    l->nbusy--;
    l->inflight--;
    if (rs_call_is_done(call)) {
        list_release(call, l);
        return;
    }
    if (l->finished)
        return;
    if (res == 0) {
        const struct rs_store_meta *m = &op->meta;

        if (m->name_len >= l->plen && (l->plen == 0 || memcmp(m->name, l->prefix, l->plen) == 0)) {
            if (l->n == l->cap) {
                size_t cap = l->cap ? 2 * l->cap : 64;
                struct rs_store_meta *grown = realloc(l->v, cap * sizeof(*grown));

                if (grown == NULL) {
                    list_fail(call, l, -ENOMEM);
                    return;
                }
                l->v = grown;
                l->cap = cap;
            }
            l->v[l->n++] = *m;
        }
    } else if (res == RS_STORE_OP_NOSLOT) {
        list_fail(call, l, res);
        return;
    } else if (res != -ENOENT) { /* ENOENT: deleted since getdents64 */
        rs_log_warn("bulk: objects/%s: unreadable metadata (%s), left out of List", op->key,
                    strerror(-res));
    }
    list_feed(call, l);
}

static void list_on_opendir(struct rs_call *call, void *arg, int res)
{
    struct list *l = arg;

    l->inflight--;
    if (res >= 0) {
        l->dirfd = res;
        l->has_dir = true;
    }
    if (rs_call_is_done(call)) {
        list_release(call, l);
        return;
    }
    if (l->finished)
        return;
    if (res < 0) {
        list_fail(call, l, res);
        return;
    }
    list_batch(call, l);
}

static void list_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct list *l = rs_call_state(call);
    ringstream_v1_ListRequest req = ringstream_v1_ListRequest_init_zero;
    struct view prefix = { 0 };

    if (l->got || l->finished) {
        if (!l->finished)
            fail(call, &l->finished, RS_GRPC_INVALID_ARGUMENT, "List takes one ListRequest");
        rs_call_consume(call);
        return;
    }
    l->got = true;
    view_bind(&req.prefix, &prefix);
    if (!decode(call, &l->finished, msg, len, ringstream_v1_ListRequest_fields, &req,
                "ListRequest"))
        goto out;
    l->plen = prefix.set ? prefix.len : 0;
    l->prefix = malloc(l->plen + 1);
    l->ops = calloc(LIST_WINDOW, sizeof(*l->ops));
    l->dents = malloc(LIST_DENTS_BYTES);
    if (l->prefix == NULL || l->ops == NULL || l->dents == NULL) {
        list_fail(call, l, -ENOMEM);
        goto out;
    }
    if (l->plen > 0)
        memcpy(l->prefix, prefix.p, l->plen);
    if (rs_call_openat(call, rs_store_dirfd(call_store(call)), ".",
                       O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, list_on_opendir, l) < 0) {
        list_fail(call, l, RS_STORE_OP_NOSLOT);
        goto out;
    }
    l->inflight++;
out:
    rs_call_consume(call);
}

static void list_on_half_close(struct rs_call *call)
{
    struct list *l = rs_call_state(call);

    if (!l->got && !l->finished)
        fail(call, &l->finished, RS_GRPC_INVALID_ARGUMENT, "List needs a ListRequest");
}

static void list_on_writable(struct rs_call *call)
{
    struct list *l = rs_call_state(call);

    if (l->sending && !l->finished)
        list_pump(call, l);
}

static void list_on_done(struct rs_call *call, enum rs_grpc_status status)
{
    list_release(call, rs_call_state(call)); /* or the last completion does */
}

/* --- the service ----------------------------------------------------------------------- */

static const struct rs_method bulk_methods[] = {
    {
            .path = "/ringstream.v1.Bulk/Put",
            .state_size = sizeof(struct put),
            .on_start = on_start_nothing,
            .on_message = put_on_message,
            .on_half_close = put_on_half_close,
            .on_writable = put_on_writable,
            .on_done = put_on_done,
    },
    {
            .path = "/ringstream.v1.Bulk/Get",
            .state_size = sizeof(struct get),
            .on_start = on_start_nothing,
            .on_message = get_on_message,
            .on_half_close = get_on_half_close,
            .on_writable = get_on_writable,
            .on_done = get_on_done,
    },
    {
            .path = "/ringstream.v1.Bulk/Echo",
            .state_size = sizeof(struct echo),
            .on_start = on_start_nothing,
            .on_message = echo_on_message,
            .on_half_close = echo_on_half_close,
            .on_writable = echo_on_writable,
    },
    {
            .path = "/ringstream.v1.Bulk/Stat",
            .state_size = sizeof(struct unary),
            .on_start = on_start_nothing,
            .on_message = stat_on_message,
            .on_half_close = unary_on_half_close,
            .on_writable = unary_on_writable,
    },
    {
            .path = "/ringstream.v1.Bulk/List",
            .state_size = sizeof(struct list),
            .on_start = on_start_nothing,
            .on_message = list_on_message,
            .on_half_close = list_on_half_close,
            .on_writable = list_on_writable,
            .on_done = list_on_done,
    },
    {
            .path = "/ringstream.v1.Bulk/Delete",
            .state_size = sizeof(struct unary),
            .on_start = on_start_nothing,
            .on_message = delete_on_message,
            .on_half_close = unary_on_half_close,
            .on_writable = unary_on_writable,
    },
};

int rs_bulk_open(struct rs_bulk **out, const char *data_dir, char *err, size_t errlen)
{
    struct rs_bulk *b = calloc(1, sizeof(*b));
    const char *delay;
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
    /* The hash provider reads its configuration file on first use: do that here, on the main
     * thread, rather than on a worker during the first request. Only a warm-up. */
    {
        char key[RS_STORE_KEY_LEN + 1];

        (void)rs_store_key("warm-up", 7, key);
    }
    delay = getenv("RINGSTREAM_TEST_WRITE_DELAY_US"); /* test-only, see struct rs_bulk */
    if (delay != NULL && delay[0] != '\0') {
        b->test_write_delay_ns = strtoull(delay, NULL, 10) * 1000u;
        rs_log_warn("bulk: RINGSTREAM_TEST_WRITE_DELAY_US=%s: each Put write completes %" PRIu64
                    " us late (test-only knob)",
                    delay, b->test_write_delay_ns / 1000u);
    }
    b->svc.name = "ringstream.v1.Bulk";
    b->svc.methods = bulk_methods;
    b->svc.nmethods = sizeof(bulk_methods) / sizeof(bulk_methods[0]);
    b->svc.ctx = b;
    *out = b;
    return 0;
}

const struct rs_service *rs_bulk_service(struct rs_bulk *b)
{
    return &b->svc;
}

void rs_bulk_close(struct rs_bulk *b)
{
    if (b == NULL)
        return;
    rs_store_close(&b->store);
    free(b);
}
