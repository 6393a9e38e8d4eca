/* workers/bulk/put.c: Put: uploads an object as a stream of PutRequests, staged and written on the
 * ring, then published under its name. Upload (resumable uploads, upload.h) runs on the same
 * machinery: its stream appends to the upload's file with the same stages, and the stream that
 * carries finish publishes with the same checks. How the methods run: workers/bulk/bulk.c. */
#include "workers/bulk/bulk_internal.h"
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
#include "core/crc32c.h"
#include "core/log.h"
#include "core/sha256.h"
#include "workers/bulk/index.h"
#include "workers/bulk/storeop.h"

/* --- Put ------------------------------------------------------------------------------- */

/* Data is staged into two buffers and written a buffer at a time: one fills while the other is
 * being written, so the network side and the page-cache copy run on two cores at once, and the
 * ring sees one large write per PUT_STAGE bytes instead of one per (typically 64 KiB) message.
 * The staging copy costs less than it saves: measured in perf/RESULTS.md (Put throughput). */
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

#define PUT_STAGE (512u * 1024)

struct put;
struct put_stage {
    struct put *p;
    uint8_t *buf;                /* owned, PUT_STAGE bytes, allocated with the header */
    size_t len;                  /* bytes staged */
    size_t done;                 /* bytes of |len| written (short writes resume here) */
    uint64_t off;                /* file offset of buf[0] */
    bool busy;                   /* a write is in flight, or waits for the file (|deferred|) */
    bool deferred;               /* full before the unnamed file existed: put_on_create writes it */
    struct rs_store_fault fault; /* fault point "put.write" of the write in flight */
};

struct put {
    struct rs_bulk_reply reply;
    struct rs_store_op op;     /* the metadata step in flight, counted in |inflight| */
    struct rs_store_meta meta; /* name from the header; the rest filled when publishing */
    char key[RS_STORE_KEY_LEN + 1];
    struct rs_sha256 sha; /* of every byte received so far */
    uint64_t want_size;   /* from the header; 0: unchecked */
    uint8_t want_sha[RS_SHA256_LEN];
    uint8_t if_match[RS_SHA256_LEN]; /* PutHeader.if_match_sha256, when has_if_match */
    unsigned claim_tries;            /* claim retries so far (put_claim) */
    uint64_t received;               /* bytes received and hashed */
    uint64_t staged; /* bytes copied into a stage: the file offset of the next staged byte */
    struct put_stage stage[2];
    unsigned cur;                /* the stage being filled */
    const uint8_t *wp;           /* rest of a message waiting for a free stage: a view, held */
    size_t wlen;                 /*   unconsumed until it is staged */
    int fd;                      /* the unnamed file, when has_fd */
    unsigned inflight;           /* ring ops whose completion has not arrived, |keeping| included */
    struct rs_store_fault fault; /* fault points "put.fsync", "put.dirsync" */
    bool has_fd;
    bool keeping;       /* a ring slot is held for closing |fd| (rs_store_keep_arm) */
    bool creating;      /* the name check or the create of the unnamed file is in flight */
    bool direct;        /* fd has O_DIRECT: stage writes are aligned */
    bool stage_charged; /* the two stages are charged to the connection (rs_call_charge) */
    bool has_header;
    bool check_sha;
    bool overwrite;
    bool has_if_match; /* compare-and-swap: publish only over the version if_match names */
    bool claimed;      /* holds the store's claim on |key| (rs_store_claim) */
    bool io_failed;    /* a write failed: the file's tail is unknown */
    /* Upload only. The stream holds the upload (rs_uploads_acquire) from its first message to
     * upload_settle(): its file (fd, borrowed: has_fd without a close), its hash (sha) and
     * persisted_size (up_start). Every way out writes and fsyncs what was staged, then gives
     * the upload back with the new persisted_size, or discards or publishes it. */
    bool is_upload;
    bool up_finish;       /* a message carried finish */
    bool up_finalizing;   /* put_finalize ran: the upload ends with this stream, unless ... */
    bool up_check_failed; /* ... a check failed (discarded), or the call ended first (kept) */
    bool up_published;    /* the publish succeeded */
    bool failing;         /* a request error: settle first, then fail with fail_status */
    bool synced;          /* the final fsync of the upload's file is done */
    bool settled;         /* the upload is given back (or was never taken) */
    struct rs_upload *up; /* the acquired upload, while held */
    uint64_t up_start;    /* persisted_size when the stream took it */
    struct rs_upload_status up_st; /* the status answered */
    enum rs_grpc_status fail_status;
    char fail_msg[256];
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
 * data as a view (plain data, or checked_data's with its CRC32C in |crc| when |has_crc|). */
struct put_req {
    enum put_part part;
    ringstream_v1_PutHeader hdr;
    struct rs_pb_view name, sha, if_match, data;
    uint32_t crc;
    bool has_crc;
};

static const char *put_parse(const uint8_t *msg, size_t len, struct put_req *r)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);
    pb_wire_type_t wt;
    uint32_t tag;

    while (s.bytes_left > 0) {
        const char *why = rs_pb_next_field(&s, &wt, &tag);

        if (why != NULL)
            return why;
        if ((tag == 1 || tag == 2 || tag == 3) && wt != PB_WT_STRING)
            return "wrong wire type for header or data";
        if (tag == 1) {
            struct rs_pb_view sub = { 0 };
            pb_istream_t hs;
            /* A header repeated right after a header merges into it, as protobuf does. */
            unsigned flags = r->part == PUT_HEADER ? PB_DECODE_NOINIT : 0;

            if (!rs_pb_take_bytes(&s, msg, len, &sub))
                return PB_GET_ERROR(&s);
            hs = pb_istream_from_buffer(sub.p, sub.len);
            if (flags == 0) {
                r->name = (struct rs_pb_view){ 0 };
                r->sha = (struct rs_pb_view){ 0 };
                r->if_match = (struct rs_pb_view){ 0 };
            }
            rs_pb_view_bind(&r->hdr.name, &r->name);
            rs_pb_view_bind(&r->hdr.sha256, &r->sha);
            rs_pb_view_bind(&r->hdr.if_match_sha256, &r->if_match);
            if (!pb_decode_ex(&hs, ringstream_v1_PutHeader_fields, &r->hdr, flags))
                return PB_GET_ERROR(&hs);
            r->part = PUT_HEADER;
        } else if (tag == 2) {
            if (!rs_pb_take_bytes(&s, msg, len, &r->data))
                return PB_GET_ERROR(&s);
            r->part = PUT_DATA;
            r->has_crc = false;
        } else if (tag == 3) {
            struct rs_pb_view sub = { 0 };
            const char *why_cd;

            if (!rs_pb_take_bytes(&s, msg, len, &sub))
                return PB_GET_ERROR(&s);
            why_cd = rs_bulk_parse_checked(sub.p, sub.len, &r->data, &r->crc);
            if (why_cd != NULL)
                return why_cd;
            r->part = PUT_DATA;
            r->has_crc = true;
        } else if (!pb_skip_field(&s, wt)) {
            return PB_GET_ERROR(&s);
        }
    }
    if (!rs_pb_view_inside(&r->name, msg, len) || !rs_pb_view_inside(&r->sha, msg, len) ||
        !rs_pb_view_inside(&r->if_match, msg, len))
        return "a string field with a scalar wire type"; /* nanopb passes it as a stack copy */
    return NULL;
}

/* Runs once the call is done and the last completion has arrived: that completion (the kept
 * slot's timer, cancelled when the call ended, if nothing else) gave back the slot the close
 * takes, so the close never runs on the worker thread. */
static bool upload_settle(struct rs_call *call, struct put *p);

static void put_release(struct rs_call *call, struct put *p)
{
    if (p->released || p->inflight > 0)
        return;
    if (p->is_upload && upload_settle(call, p))
        return; /* its last completion calls again */
    p->released = true;
    if (p->claimed)
        rs_store_unclaim(rs_bulk_call_store(call), p->key);
    p->claimed = false;
    /* an unpublished O_TMPFILE file disappears here, its blocks freed in an io-wq thread */
    if (p->has_fd && !p->is_upload && rs_store_close_fd(call, p->fd) < 0)
        rs_log_bug("bulk: Put: no ring slot to close its file (fd %d)", p->fd);
    p->has_fd = false;
    rs_sha256_free(&p->sha);
    free(p->stage[0].buf);
    free(p->stage[1].buf);
    p->stage[0].buf = NULL;
    p->stage[1].buf = NULL;
    if (p->stage_charged)
        rs_call_uncharge(call, 2 * (size_t)PUT_STAGE);
    p->stage_charged = false;
}

/* Where every completion starts: counts it in, releases the Put once the call is over.
 * Returns true while the Put goes on. */
static bool put_step(struct rs_call *call, struct put *p)
{
    p->inflight--;
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return false;
    }
    return !p->finished;
}

static void put_on_create(struct rs_call *call, struct rs_store_op *op, int res);
static void put_write(struct rs_call *call, struct put *p, struct put_stage *s);
static void put_drain(struct rs_call *call, struct put *p);
static void upload_settled(struct rs_call *call, struct put *p);

static void put_create(struct rs_call *call, struct put *p)
{
    int ret;

    rs_store_op_init(&p->op, rs_bulk_call_store(call), put_on_create, p);
    ret = rs_store_op_create(call, &p->op);
    if (ret < 0) {
        rs_bulk_fail_op(call, &p->finished, ret, "creating", p->meta.name, p->meta.name_len);
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
            rs_bulk_fail(call, &p->finished, RS_GRPC_ALREADY_EXISTS,
                         "object \"%s\" already exists (set overwrite to replace it)",
                         p->meta.name);
        } else {
            rs_bulk_fail_op(call, &p->finished, res, "checking", p->meta.name, p->meta.name_len);
        }
    }
    p->creating = false;
    rs_call_consume(call); /* a message held while both stages waited, if any */
}

/* Compares the version found (|res| from rs_store_op_stat() into op->meta) with if_match.
 * Returns true on a match; otherwise finishes the call with FAILED_PRECONDITION (or the store
 * error). */
static bool put_match(struct rs_call *call, struct put *p, int res)
{
    char got[2 * RS_SHA256_LEN + 1], want[2 * RS_SHA256_LEN + 1];

    if (res == -ENOENT) {
        p->up_check_failed = true;
        rs_bulk_fail(call, &p->finished, RS_GRPC_FAILED_PRECONDITION,
                     "object \"%s\" does not exist, PutHeader.if_match_sha256 needs it to",
                     p->meta.name);
        return false;
    }
    if (res < 0) {
        rs_bulk_fail_op(call, &p->finished, res, "checking", p->meta.name, p->meta.name_len);
        return false;
    }
    if (memcmp(p->op.meta.sha256, p->if_match, RS_SHA256_LEN) == 0)
        return true;
    hexify(got, p->op.meta.sha256, RS_SHA256_LEN);
    hexify(want, p->if_match, RS_SHA256_LEN);
    p->up_check_failed = true;
    rs_bulk_fail(call, &p->finished, RS_GRPC_FAILED_PRECONDITION,
                 "object \"%s\" has SHA-256 %s, PutHeader.if_match_sha256 is %s", p->meta.name, got,
                 want);
    return false;
}

/* The header's if_match check (the publish checks again under the claim). */
static void put_on_match_header(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct put *p = op->arg;

    p->inflight--;
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (!p->finished && put_match(call, p, res)) {
        put_create(call, p);
        if (!p->finished)
            return;
    }
    p->creating = false;
    rs_call_consume(call); /* a message held while both stages waited, if any */
}

/* The slot held for closing the file: the call ended (the core cancelled the timer), or the
 * timer ran out and is armed again. */
static void put_on_keep(struct rs_call *call, void *arg, int res)
{
    struct put *p = arg;

    p->inflight--;
    p->keeping = false;
    if (res == 0 && !rs_call_is_done(call) && rs_store_keep_arm(call, put_on_keep, p) == 0) {
        p->keeping = true;
        p->inflight++;
        return;
    }
    if (rs_call_is_done(call))
        put_release(call, p);
}

static void put_on_create(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct put *p = op->arg;

    p->inflight--;
    p->creating = false;
    if (res >= 0) {
        /* First thing in this completion: hold the slot it gave back for the file's close. */
        if (rs_store_keep_arm(call, put_on_keep, p) < 0) {
            if (rs_store_close_fd(call, res) < 0)
                rs_log_bug("bulk: Put: no ring slot to close its file (fd %d)", res);
            res = RS_STORE_OP_NOSLOT;
        } else {
            p->keeping = true;
            p->inflight++;
            p->fd = res;
            p->has_fd = true;
            p->direct = op->direct;
        }
    }
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (!p->finished && res < 0)
        rs_bulk_fail_op(call, &p->finished, res, "creating", p->meta.name, p->meta.name_len);
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

/* The staging buffers are memory this peer makes the server hold: charged to its connection
 * (core/call.h rs_call_charge), given back in put_release. False: the call is failed. */
static bool put_alloc_stages(struct rs_call *call, struct put *p)
{
    if (rs_call_charge(call, 2 * (size_t)PUT_STAGE) < 0) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "server memory for this connection is spent (upload buffers)");
        return false;
    }
    p->stage_charged = true;
    if (posix_memalign((void **)&p->stage[0].buf, RS_STORE_DIRECT_ALIGN, PUT_STAGE) != 0)
        p->stage[0].buf = NULL;
    if (posix_memalign((void **)&p->stage[1].buf, RS_STORE_DIRECT_ALIGN, PUT_STAGE) != 0)
        p->stage[1].buf = NULL;
    if (p->stage[0].buf == NULL || p->stage[1].buf == NULL) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "no memory for upload buffers");
        return false;
    }
    p->stage[0].p = p;
    p->stage[1].p = p;
    return true;
}

/* The header arrived: check it and allocate what the upload needs, then, on the ring, check
 * that the name is free (unless overwriting) and create the unnamed file. Data may arrive
 * meanwhile: it is hashed and staged as usual, and a stage that fills waits for the file
 * (put_write). The header itself is consumed at once: a message held across turns this early
 * in a stream would need more receive room than the stream has reserved. */
static void put_start(struct rs_call *call, struct put *p, const struct put_req *r)
{
    int ret;

    if (!rs_bulk_name_ok(call, &p->finished, &r->name, "PutHeader.name"))
        return;
    if (r->sha.set && r->sha.len != 0 && r->sha.len != RS_SHA256_LEN) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                     "PutHeader.sha256 must be empty or 32 raw bytes, got %zu bytes", r->sha.len);
        return;
    }
    if (r->if_match.set && r->if_match.len != 0 && r->if_match.len != RS_SHA256_LEN) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                     "PutHeader.if_match_sha256 must be empty or 32 raw bytes, got %zu bytes",
                     r->if_match.len);
        return;
    }
    p->has_if_match = r->if_match.set && r->if_match.len == RS_SHA256_LEN;
    if (p->has_if_match)
        memcpy(p->if_match, r->if_match.p, RS_SHA256_LEN);
    memcpy(p->meta.name, r->name.p, r->name.len);
    p->meta.name[r->name.len] = '\0';
    p->meta.name_len = r->name.len;
    p->check_sha = r->sha.set && r->sha.len == RS_SHA256_LEN;
    if (p->check_sha)
        memcpy(p->want_sha, r->sha.p, RS_SHA256_LEN);
    p->want_size = r->hdr.size;
    p->overwrite = r->hdr.overwrite || p->has_if_match; /* if_match implies overwrite */
    ret = rs_store_key(p->meta.name, p->meta.name_len, p->key);
    if (ret < 0) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INTERNAL, "hashing the name: %s", strerror(-ret));
        return;
    }
    ret = rs_sha256_init(&p->sha);
    if (ret < 0) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED, "no memory for hashing");
        return;
    }
    if (!put_alloc_stages(call, p))
        return;
    p->has_header = true;
    p->creating = true;
    if (p->has_if_match) {
        /* Fails early (FAILED_PRECONDITION before the upload); the publish checks again. */
        rs_store_op_init(&p->op, rs_bulk_call_store(call), put_on_match_header, p);
        ret = rs_store_op_stat(call, &p->op, p->meta.name, p->meta.name_len);
        if (ret < 0)
            rs_bulk_fail_op(call, &p->finished, ret, "checking", p->meta.name, p->meta.name_len);
        else
            p->inflight++;
    } else if (p->overwrite) {
        put_create(call, p);
    } else {
        /* Fails early (ALREADY_EXISTS before the upload); the publish's linkat decides races. */
        rs_store_op_init(&p->op, rs_bulk_call_store(call), put_on_exists, p);
        ret = rs_store_op_exists(call, &p->op, p->key);
        if (ret < 0)
            rs_bulk_fail_op(call, &p->finished, ret, "checking", p->meta.name, p->meta.name_len);
        else
            p->inflight++;
    }
    if (p->finished)
        p->creating = false;
}

static void put_on_write(struct rs_call *call, void *arg, int res);
static void put_finalize(struct rs_call *call, struct put *p);
static void put_on_meta(struct rs_call *call, struct rs_store_op *op, int res);
static void put_on_fsync(struct rs_call *call, void *arg, int res);
static void put_on_publish(struct rs_call *call, struct rs_store_op *op, int res);
static void put_on_dirsync(struct rs_call *call, void *arg, int res);
static void put_publish(struct rs_call *call, struct put *p);

/* A storage error while finishing: the file's state is unknown (an Upload is then discarded);
 * no free ring slot and a call that ended before the commit are not storage errors. */
static void put_io_error(struct put *p, int res)
{
    if (res != RS_STORE_OP_NOSLOT && res != -ECANCELED)
        p->io_failed = true;
}

/* Issues the pwrite of what is left of stage |s|; half of it under a "short" fault (aligned
 * down while the file has O_DIRECT), so the completion sees a short count. */
static int put_issue_write(struct rs_call *call, void *arg)
{
    struct put_stage *s = arg;
    struct put *p = s->p;
    size_t len = s->len - s->done;

    if (s->fault.short_io && len > 1) {
        size_t half = len / 2;

        if (p->direct)
            half -= half % RS_STORE_DIRECT_ALIGN;
        if (half > 0)
            len = half;
    }
    return rs_call_pwrite(call, p->fd, s->buf + s->done, len, s->off + s->done, put_on_write, s);
}

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
            rs_bulk_fail(call, &p->finished, RS_GRPC_INTERNAL, "clearing O_DIRECT: %s",
                         strerror(-ret));
            return;
        }
        p->direct = false;
    }
    ret = rs_store_fault_run(call, &s->fault, "put.write", put_issue_write, put_on_write, s);
    if (ret < 0) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "no free I/O slot on this worker");
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
        int ret;

        if (s->busy)
            return false;
        if (s->len == 0)
            s->off = p->staged;
        n = PUT_STAGE - s->len < p->wlen ? PUT_STAGE - s->len : p->wlen;
        /* Hashed as staged, so the hash covers exactly the bytes that reach the file (an
         * Upload that breaks keeps what was staged; put_stage_data's caller drops the rest). */
        ret = rs_sha256_update(&p->sha, p->wp, n);
        if (ret < 0) {
            rs_bulk_fail(call, &p->finished, RS_GRPC_INTERNAL, "hashing: %s", strerror(-ret));
            return true;
        }
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
    if (p->is_upload && (!p->up_finish || p->failing)) {
        if (!upload_settle(call, p))
            upload_settled(call, p);
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
        p->up_finalizing = p->is_upload;
        p->up_check_failed = true;
        rs_bulk_fail(call, &p->finished, RS_GRPC_DATA_LOSS,
                     "received %" PRIu64 " bytes but PutHeader.size says %" PRIu64, p->received,
                     p->want_size);
        return;
    }
    if (p->is_upload) {
        /* From here the upload ends with this stream (published, or discarded when a check
         * fails). The digest comes from a copy: the running hash stays whole. */
        struct rs_sha256 c = { 0 };

        p->up_finalizing = true;
        ret = rs_sha256_copy(&c, &p->sha);
        if (ret == 0)
            ret = rs_sha256_final(&c, p->meta.sha256);
        rs_sha256_free(&c);
    } else {
        ret = rs_sha256_final(&p->sha, p->meta.sha256);
    }
    if (ret < 0) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INTERNAL, "hashing: %s", strerror(-ret));
        return;
    }
    if (p->check_sha && memcmp(p->meta.sha256, p->want_sha, RS_SHA256_LEN) != 0) {
        char got[2 * RS_SHA256_LEN + 1], want[2 * RS_SHA256_LEN + 1];

        hexify(got, p->meta.sha256, RS_SHA256_LEN);
        hexify(want, p->want_sha, RS_SHA256_LEN);
        p->up_check_failed = true;
        rs_bulk_fail(call, &p->finished, RS_GRPC_DATA_LOSS,
                     "SHA-256 mismatch: the data received hashes to %s, PutHeader.sha256 is %s",
                     got, want);
        return;
    }
    p->meta.size = p->received;
    p->meta.modified_unix_ms = now_unix_ms();
    rs_store_op_init(&p->op, rs_bulk_call_store(call), put_on_meta, p);
    ret = rs_store_op_set_meta(call, &p->op, p->fd, &p->meta);
    if (ret < 0) {
        rs_bulk_fail_op(call, &p->finished, ret, "storing metadata of", p->meta.name,
                        p->meta.name_len);
        return;
    }
    p->inflight++;
}

static int put_issue_fsync(struct rs_call *call, void *arg)
{
    struct put *p = arg;

    return rs_call_fsync(call, p->fd, put_on_fsync, p);
}

static int put_issue_dirsync(struct rs_call *call, void *arg)
{
    return rs_call_fsync(call, rs_store_dirfd(rs_bulk_call_store(call)), put_on_dirsync, arg);
}

static void put_on_meta(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct put *p = op->arg;

    if (!put_step(call, p))
        return;
    if (res < 0) {
        put_io_error(p, res);
        rs_bulk_fail_store(call, &p->finished, res, "storing metadata of", p->meta.name,
                           p->meta.name_len);
        return;
    }
    if (rs_store_fault_run(call, &p->fault, "put.fsync", put_issue_fsync, put_on_fsync, p) < 0) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "no free I/O slot on this worker");
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
        rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT, "malformed PutRequest: %s", why);
    } else if (r.part == PUT_NONE) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                     "PutRequest carries neither header nor data");
    } else if (!p->has_header) {
        if (r.part != PUT_HEADER)
            rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                         "the first PutRequest must carry the header");
        else
            put_start(call, p, &r);
    } else if (r.part == PUT_HEADER) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                     "a second PutRequest header; only the first message carries one");
    } else if (p->want_size != 0 && r.data.len > p->want_size - p->received) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_DATA_LOSS,
                     "more data than PutHeader.size (%" PRIu64 " bytes)", p->want_size);
    } else if (r.has_crc && rs_crc32c(0, r.data.p, r.data.len) != r.crc) {
        /* Checked before the bytes are hashed or staged: nothing of this message is kept. */
        rs_bulk_fail(call, &p->finished, RS_GRPC_DATA_LOSS,
                     "CRC32C mismatch in checked_data at object offset %" PRIu64
                     " (%zu bytes): computed %08" PRIx32 ", sent %08" PRIx32,
                     p->received, r.data.len, rs_crc32c(0, r.data.p, r.data.len), r.crc);
    } else if (r.data.len > 0) {
        p->wp = r.data.p;
        p->wlen = r.data.len;
        p->received += r.data.len;
        if (!put_stage_data(call, p))
            return; /* held: put_on_write stages the rest and consumes */
    }
    rs_call_consume(call);
}

static void put_on_write(struct rs_call *call, void *arg, int res)
{
    struct put_stage *s = arg;
    struct put *p = s->p;

    p->inflight--;
    s->busy = false;
    /* Accounted first, also when the call is over: an Upload writes the rest on its way out. */
    if (res > 0) {
        s->done += (size_t)res;
        if (s->done >= s->len)
            s->len = s->done = 0;
    } else {
        p->io_failed = true;
    }
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (p->finished) {
        rs_call_consume(call); /* a held message, if any */
        return;
    }
    if (res <= 0) {
        rs_bulk_fail_op(call, &p->finished, res < 0 ? res : -EIO, "writing", p->meta.name,
                        p->meta.name_len);
        rs_call_consume(call);
        return;
    }
    if (s->len != 0) { /* short write: the rest */
        put_write(call, p, s);
        return;
    }
    if (p->wlen > 0) {
        if (!put_stage_data(call, p))
            return;
        rs_call_consume(call); /* the held message is staged in full */
    }
    if (p->half_closed)
        put_drain(call, p);
}

static void put_on_fsync(struct rs_call *call, void *arg, int res)
{
    struct put *p = arg;

    if (!put_step(call, p))
        return;
    if (res < 0) {
        put_io_error(p, res);
        rs_bulk_fail_op(call, &p->finished, res, "syncing", p->meta.name, p->meta.name_len);
        return;
    }
    put_publish(call, p);
}

/* Publishes the synced file. Publishing makes the object visible: rs_store_op_publish()
 * refuses (-ECANCELED, nothing published) once the core has ended the call, and from then on
 * the status we give is what the client gets. */
static void put_publish_now(struct rs_call *call, struct put *p)
{
    int ret;

    rs_store_op_init(&p->op, rs_bulk_call_store(call), put_on_publish, p);
    ret = rs_store_op_publish(call, &p->op, p->fd, p->key, p->overwrite);
    if (ret < 0) {
        rs_bulk_fail_op(call, &p->finished, ret, "publishing", p->meta.name, p->meta.name_len);
        return;
    }
    p->inflight++;
}

static void put_on_match_publish(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct put *p = op->arg;

    if (!put_step(call, p))
        return;
    if (put_match(call, p, res))
        put_publish_now(call, p);
}

static void put_on_claim_timer(struct rs_call *call, void *arg, int res)
{
    struct put *p = arg;

    if (!put_step(call, p))
        return;
    put_publish(call, p);
}

/* A replace holds the store's claim on its key from the if_match re-check to the end of the
 * rename (rs_store_claim), so two compare-and-swaps from one base cannot both pass the
 * compare: the second one compares against the first one's result. Another holder: wait on a
 * ring timer (never blocking the worker), bounded. */
#define PUT_CLAIM_WAIT_NS 1000000ull /* 1 ms */
#define PUT_CLAIM_TRIES   10000u     /* 10 s of waiting at most */

static void put_publish(struct rs_call *call, struct put *p)
{
    struct rs_store *st = rs_bulk_call_store(call);
    int ret;

    if (p->overwrite && !p->claimed) {
        if (!rs_store_claim(st, p->key)) {
            if (++p->claim_tries > PUT_CLAIM_TRIES) {
                rs_bulk_fail(call, &p->finished, RS_GRPC_UNAVAILABLE,
                             "object \"%s\" is being replaced by another upload; retry",
                             p->meta.name);
                return;
            }
            if (rs_call_timer(call, PUT_CLAIM_WAIT_NS, put_on_claim_timer, p) < 0) {
                rs_bulk_fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                             "no free I/O slot on this worker");
                return;
            }
            p->inflight++;
            return;
        }
        p->claimed = true;
    }
    if (!p->has_if_match) {
        put_publish_now(call, p);
        return;
    }
    rs_store_op_init(&p->op, st, put_on_match_publish, p);
    ret = rs_store_op_stat(call, &p->op, p->meta.name, p->meta.name_len);
    if (ret < 0) {
        rs_bulk_fail_op(call, &p->finished, ret, "checking", p->meta.name, p->meta.name_len);
        return;
    }
    p->inflight++;
}

static void put_on_publish(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct put *p = op->arg;

    if (p->claimed) /* the replace is over (or never happened) */
        rs_store_unclaim(rs_bulk_call_store(call), p->key);
    p->claimed = false;
    if (res == 0) /* published: list it even if the call has ended meanwhile */
        rs_index_add(rs_bulk_call_index(call), p->meta.name, p->meta.name_len);
    if (res == 0) {
        p->up_published = p->is_upload;
        rs_call_stat_add(call, RS_BULK_STAT_STORED_BYTES, p->meta.size);
    }
    if (res == 0 && rs_call_is_done(call)) {
        /* Published, and the client reset the stream meanwhile (it chose not to hear the
         * outcome): the object stays (anything kept beside the objects must follow it here
         * too), so make its name durable all the same. */
        p->inflight--;
        if (rs_store_fault_run(call, &p->fault, "put.dirsync", put_issue_dirsync, put_on_dirsync,
                               p) == 0)
            p->inflight++;
        else
            put_release(call, p);
        return;
    }
    if (!put_step(call, p))
        return;
    if (res == -EEXIST) {
        p->up_check_failed = true;
        rs_bulk_fail(
                call, &p->finished, RS_GRPC_ALREADY_EXISTS,
                "object \"%s\" was created by another upload meanwhile (set overwrite to replace it)",
                p->meta.name);
        return;
    }
    if (res < 0) {
        put_io_error(p, res);
        rs_bulk_fail_op(call, &p->finished, res, "publishing", p->meta.name, p->meta.name_len);
        return;
    }
    /* The new name is durable once objects/ itself is synced. */
    if (rs_store_fault_run(call, &p->fault, "put.dirsync", put_issue_dirsync, put_on_dirsync, p) <
        0) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "object \"%s\" published but not synced: no free I/O slot", p->meta.name);
        return;
    }
    p->inflight++;
}

static void put_on_dirsync(struct rs_call *call, void *arg, int res)
{
    struct put *p = arg;

    if (!put_step(call, p))
        return;
    if (res < 0) {
        /* Visible but maybe not durable: fail, so the client retries (with overwrite, the
         * retry is idempotent). */
        rs_log_error("bulk: object \"%s\" published but syncing objects/ failed: %s", p->meta.name,
                     strerror(-res));
        rs_bulk_fail_errno(call, &p->finished, res,
                           "object \"%s\" published but syncing its directory failed: %s",
                           p->meta.name, strerror(-res));
        return;
    }
    if (p->is_upload) {
        rs_uploads_published(rs_bulk_call_uploads(call), p->up, &p->meta, &p->up_st);
        p->up = NULL;
        p->settled = true;
        rs_bulk_reply_upload(call, &p->reply, &p->finished, &p->up_st);
        return;
    }
    rs_bulk_reply_info(call, &p->reply, &p->finished, &p->meta);
}

static void put_on_half_close(struct rs_call *call)
{
    struct put *p = rs_call_state(call);

    p->half_closed = true;
    if (p->finished)
        return;
    if (!p->has_header) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                     "empty Put: the stream ended before the header");
        return;
    }
    put_drain(call, p); /* or the last put_on_write does */
}

static void put_on_writable(struct rs_call *call)
{
    struct put *p = rs_call_state(call);

    rs_bulk_reply_flush(call, &p->reply, &p->finished);
}

static void put_on_done(struct rs_call *call, enum rs_grpc_status status)
{
    put_release(call, rs_call_state(call)); /* or the last completion does */
}

const struct rs_method rs_bulk_put_method = {
    .path = "/ringstream.v1.Bulk/Put",
    .type = RS_METHOD_CLIENT_STREAM,
    .state_size = sizeof(struct put),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = put_on_message,
    .on_half_close = put_on_half_close,
    .on_writable = put_on_writable,
    .on_done = put_on_done,
};

/* --- Upload ------------------------------------------------------------------------------ */

/* One UploadRequest; data as a view (checked_data's with its CRC when has_crc). */
struct upload_req {
    struct rs_pb_view id, data;
    uint64_t write_offset;
    uint32_t crc;
    bool has_crc;
    bool finish;
};

static const char *upload_parse(const uint8_t *msg, size_t len, struct upload_req *r)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);
    pb_wire_type_t wt;
    uint32_t tag;
    uint64_t v;

    while (s.bytes_left > 0) {
        const char *why = rs_pb_next_field(&s, &wt, &tag);

        if (why != NULL)
            return why;
        if ((tag == 1 || tag == 3 || tag == 4) && wt != PB_WT_STRING)
            return "wrong wire type for upload_id, data or checked_data";
        if ((tag == 2 || tag == 5) && wt != PB_WT_VARINT)
            return "wrong wire type for write_offset or finish";
        if (tag == 1) {
            if (!rs_pb_take_bytes(&s, msg, len, &r->id))
                return PB_GET_ERROR(&s);
        } else if (tag == 2 || tag == 5) {
            if (!pb_decode_varint(&s, &v))
                return PB_GET_ERROR(&s);
            if (tag == 2)
                r->write_offset = v;
            else
                r->finish = v != 0;
        } else if (tag == 3) {
            if (!rs_pb_take_bytes(&s, msg, len, &r->data))
                return PB_GET_ERROR(&s);
            r->has_crc = false;
        } else if (tag == 4) {
            struct rs_pb_view sub = { 0 };
            const char *why_cd;

            if (!rs_pb_take_bytes(&s, msg, len, &sub))
                return PB_GET_ERROR(&s);
            why_cd = rs_bulk_parse_checked(sub.p, sub.len, &r->data, &r->crc);
            if (why_cd != NULL)
                return why_cd;
            r->has_crc = true;
        } else if (!pb_skip_field(&s, wt)) {
            return PB_GET_ERROR(&s);
        }
    }
    return NULL;
}

static void upload_on_settle_io(struct rs_call *call, struct put *p, int res);

static void upload_on_settle_write(struct rs_call *call, void *arg, int res)
{
    struct put_stage *s = arg;
    struct put *p = s->p;

    if (res > 0) {
        s->done += (size_t)res;
        if (s->done >= s->len)
            s->len = s->done = 0;
    }
    upload_on_settle_io(call, p, res > 0 ? 0 : res < 0 ? res : -EIO);
}

static void upload_on_settle_fsync(struct rs_call *call, void *arg, int res)
{
    struct put *p = arg;

    if (res == 0)
        p->synced = true;
    upload_on_settle_io(call, p, res);
}

static void upload_on_settle_io(struct rs_call *call, struct put *p, int res)
{
    p->inflight--;
    if (res < 0) {
        rs_log_warn("bulk: upload %s: writing its file: %s", p->up->id, strerror(-res));
        p->io_failed = true;
    }
    if (rs_call_is_done(call)) {
        put_release(call, p);
        return;
    }
    if (!upload_settle(call, p))
        upload_settled(call, p);
}

/* Gives the upload back once what was staged is written and fsynced: returns true while that
 * I/O is in flight (its completion calls again), false once the upload is settled. Runs when
 * the stream ends without finish (cleanly or not, the call open or over), and records the
 * outcome of a finish. */
static bool upload_settle(struct rs_call *call, struct put *p)
{
    struct rs_uploads *u = rs_bulk_call_uploads(call);
    struct put_stage *s = NULL;

    if (p->up == NULL || p->settled)
        return false;
    if (p->up_finalizing && (p->up_published || p->up_check_failed || p->io_failed)) {
        if (p->up_published)
            rs_uploads_published(u, p->up, &p->meta, &p->up_st);
        else
            rs_uploads_discard(u, p->up,
                               p->up_check_failed ? "its finish failed a check"
                                                  : "a storage error while finishing");
        p->up = NULL;
        p->settled = true;
        return false;
    }
    /* Not finalizing, or a finish that did not get to its outcome (the call ended before the
     * publish, no ring slot): the upload stays, with every byte written; sync and give back. */
    p->up_finalizing = false;
    if (!p->io_failed) {
        /* What is staged but not written, lowest offset first (a short write's rest). */
        for (unsigned i = 0; i < 2; i++) {
            struct put_stage *t = &p->stage[i];

            if (t->buf != NULL && t->len > t->done && (s == NULL || t->off < s->off))
                s = t;
        }
        if (s != NULL && p->direct) {
            /* The rest of a stage is a tail: unaligned in general. */
            if (rs_store_buffered(p->fd) < 0)
                p->io_failed = true;
            p->direct = false;
        }
        if (s != NULL) {
            if (!p->io_failed && rs_call_pwrite(call, p->fd, s->buf + s->done, s->len - s->done,
                                                s->off + s->done, upload_on_settle_write, s) == 0) {
                p->inflight++;
                return true;
            }
            /* No ring slot: the tail is hashed but cannot be written, so the hash would not
             * match the file; the upload cannot go on (rare: a slot was just given back). */
            p->io_failed = true;
        } else if (!p->synced && p->staged > p->up_start) {
            if (rs_call_fsync(call, p->fd, upload_on_settle_fsync, p) == 0) {
                p->inflight++;
                return true;
            }
            p->io_failed = true;
        }
    }
    rs_log_debug("bulk: upload %s: stream ended at %" PRIu64 " bytes%s", p->up->id, p->staged,
                 p->io_failed ? " (discarded)" : "");
    if (p->io_failed)
        rs_uploads_discard(u, p->up, "writing its file failed");
    else
        rs_uploads_release(u, p->up, p->staged, &p->sha, &p->up_st);
    p->up = NULL;
    p->settled = true;
    return false;
}

/* Settled with the call still open: answer. */
static void upload_settled(struct rs_call *call, struct put *p)
{
    if (rs_call_is_done(call) || p->finished)
        return;
    if (p->failing)
        rs_bulk_fail(call, &p->finished, p->fail_status, "%s", p->fail_msg);
    else if (p->io_failed)
        rs_bulk_fail(call, &p->finished, RS_GRPC_UNAVAILABLE,
                     "writing the upload failed; the upload was discarded");
    else
        rs_bulk_reply_upload(call, &p->reply, &p->finished, &p->up_st);
}

/* A request error once the upload is held: the bytes before it are kept, so write and sync
 * them first (as at a clean end), then fail with |status|. Further messages are dropped. */
__attribute__((format(printf, 4, 5))) static void
upload_fail(struct rs_call *call, struct put *p, enum rs_grpc_status status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(p->fail_msg, sizeof(p->fail_msg), fmt, ap);
    va_end(ap);
    p->fail_status = status;
    p->failing = true;
    p->half_closed = true; /* no more input is taken */
    put_drain(call, p);
}

/* The first message: take the upload and set the stream up to append to it. */
static bool upload_begin(struct rs_call *call, struct put *p, const struct upload_req *r)
{
    struct rs_uploads *u = rs_bulk_call_uploads(call);
    const struct rs_upload_hdr *h;
    int n = (int)(r->id.len > 64 ? 64 : r->id.len);
    int ret;

    if (!r->id.set || r->id.len == 0) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                     "UploadRequest.upload_id is required");
        return false;
    }
    ret = rs_uploads_acquire(u, (const char *)r->id.p, r->id.len, &p->up, &p->sha);
    if (ret == -ENOENT)
        rs_bulk_fail(call, &p->finished, RS_GRPC_NOT_FOUND,
                     "no upload %.*s (unknown, expired or aborted)", n, (const char *)r->id.p);
    else if (ret == -EBUSY)
        rs_bulk_fail(call, &p->finished, RS_GRPC_ABORTED,
                     "upload %.*s has another Upload stream running", n, (const char *)r->id.p);
    else if (ret == -EALREADY)
        rs_bulk_fail(call, &p->finished, RS_GRPC_FAILED_PRECONDITION,
                     "upload %.*s was already published (QueryUpload tells the object)", n,
                     (const char *)r->id.p);
    if (ret < 0)
        return false;
    h = &p->up->hdr;
    p->up_start = p->up->persisted;
    p->received = p->staged = p->up_start;
    p->fd = p->up->fd; /* the table's; never closed by the stream */
    p->has_fd = true;
    /* Full stages skip the page cache as Put's do when the stream starts aligned (put_write
     * clears it for an unaligned tail); the file system may not have O_DIRECT (tmpfs). */
    p->direct = p->up_start % RS_STORE_DIRECT_ALIGN == 0 && rs_store_direct(p->fd) == 0;
    if (!p->direct)
        (void)rs_store_buffered(p->fd);
    if (r->write_offset != p->up_start) {
        p->up_finish = false;
        rs_uploads_release(u, p->up, p->up_start, &p->sha, &p->up_st);
        p->up = NULL;
        p->settled = true;
        rs_bulk_fail(call, &p->finished, RS_GRPC_FAILED_PRECONDITION,
                     "write_offset %" PRIu64 " of the first UploadRequest must be the upload's "
                     "persisted_size %" PRIu64,
                     r->write_offset, p->up_start);
        return false;
    }
    memcpy(p->meta.name, h->name, h->name_len + 1);
    p->meta.name_len = h->name_len;
    rs_call_set_log_name(call, h->name, h->name_len);
    p->want_size = h->want_size;
    p->check_sha = h->check_sha;
    memcpy(p->want_sha, h->want_sha, RS_SHA256_LEN);
    p->has_if_match = h->has_if_match;
    memcpy(p->if_match, h->if_match, RS_SHA256_LEN);
    p->overwrite = h->overwrite;
    ret = rs_store_key(p->meta.name, p->meta.name_len, p->key);
    if (ret < 0) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INTERNAL, "hashing the name: %s", strerror(-ret));
        return false; /* put_release settles (nothing written) */
    }
    if (!put_alloc_stages(call, p))
        return false;
    p->has_header = true;
    return true;
}

static void upload_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct put *p = rs_call_state(call);
    struct upload_req r = { 0 };
    const char *why;

    if (p->finished || p->failing) {
        rs_call_consume(call);
        return;
    }
    why = upload_parse(msg, len, &r);
    if (why != NULL) {
        if (p->up != NULL)
            upload_fail(call, p, RS_GRPC_INVALID_ARGUMENT, "malformed UploadRequest: %s", why);
        else
            rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                         "malformed UploadRequest: %s", why);
        rs_call_consume(call);
        return;
    }
    if (p->up == NULL) {
        if (!upload_begin(call, p, &r)) {
            rs_call_consume(call);
            return;
        }
    } else if (r.id.len != RS_UPLOAD_ID_LEN || memcmp(r.id.p, p->up->id, RS_UPLOAD_ID_LEN) != 0) {
        upload_fail(call, p, RS_GRPC_INVALID_ARGUMENT,
                    "UploadRequest.upload_id changed within the stream (was %s)", p->up->id);
        rs_call_consume(call);
        return;
    } else if (p->up_finish) {
        upload_fail(call, p, RS_GRPC_INVALID_ARGUMENT,
                    "an UploadRequest after the one with finish");
        rs_call_consume(call);
        return;
    } else if (r.write_offset != 0 && r.write_offset != p->received) {
        upload_fail(call, p, RS_GRPC_FAILED_PRECONDITION,
                    "write_offset %" PRIu64 " but this stream is at offset %" PRIu64,
                    r.write_offset, p->received);
        rs_call_consume(call);
        return;
    }
    if (r.has_crc && rs_crc32c(0, r.data.p, r.data.len) != r.crc) {
        upload_fail(call, p, RS_GRPC_DATA_LOSS,
                    "CRC32C mismatch in checked_data at object offset %" PRIu64
                    " (%zu bytes): computed %08" PRIx32 ", sent %08" PRIx32
                    "; the upload keeps the %" PRIu64 " bytes before it",
                    p->received, r.data.len, rs_crc32c(0, r.data.p, r.data.len), r.crc,
                    p->received);
        rs_call_consume(call);
        return;
    }
    if (p->want_size != 0 && r.data.len > p->want_size - p->received) {
        upload_fail(call, p, RS_GRPC_DATA_LOSS, "more data than PutHeader.size (%" PRIu64 " bytes)",
                    p->want_size);
        rs_call_consume(call);
        return;
    }
    p->up_finish = r.finish;
    if (r.data.len > 0) {
        p->wp = r.data.p;
        p->wlen = r.data.len;
        p->received += r.data.len;
        if (!put_stage_data(call, p))
            return; /* held: put_on_write stages the rest and consumes */
    }
    rs_call_consume(call);
}

static void upload_on_start(struct rs_call *call)
{
    struct put *p = rs_call_state(call);

    p->is_upload = true;
}

static void upload_on_half_close(struct rs_call *call)
{
    struct put *p = rs_call_state(call);

    if (p->finished || p->failing)
        return;
    p->half_closed = true;
    if (p->up == NULL) {
        rs_bulk_fail(call, &p->finished, RS_GRPC_INVALID_ARGUMENT,
                     "empty Upload: the stream ended before the first UploadRequest");
        return;
    }
    put_drain(call, p); /* or the last put_on_write does */
}

const struct rs_method rs_bulk_upload_method = {
    .path = "/ringstream.v1.Bulk/Upload",
    .type = RS_METHOD_CLIENT_STREAM,
    .state_size = sizeof(struct put),
    .on_start = upload_on_start,
    .on_message = upload_on_message,
    .on_half_close = upload_on_half_close,
    .on_writable = put_on_writable,
    .on_done = put_on_done,
};
