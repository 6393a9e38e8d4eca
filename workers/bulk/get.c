/* workers/bulk/get.c: Get: downloads an object as a stream of Chunks read ahead on the ring.
 * How the methods run: workers/bulk/bulk.c. */
#include "workers/bulk/bulk_internal.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "core/log.h"
#include "workers/bulk/storeop.h"

/* --- Get ------------------------------------------------------------------------------- */

/* Chunks are read ahead into up to GET_READS buffers while the send queue has room for them,
 * so the next reads overlap the sending of the current chunk; chunks are sent strictly in
 * object order whatever order their reads complete in.
 *
 * Read-ahead follows what can leave soon (issue 15): chunks being read plus queued bytes no
 * DATA frame carries yet stay within the peer's flow-control window plus GET_AHEAD chunks,
 * and within GET_READS chunks whatever the window (bytes that are not being framed are not
 * leaving: the socket is full). A stalled download (client not reading, or not giving window
 * back) thus holds about one chunk, not a full send queue; the data stays on disk until the
 * client is ready for it. A moving download keeps GET_READS chunks in flight as before. */
#define CHUNK_DEFAULT  (64u * 1024)
#define CHUNK_MAX      (1024u * 1024)
#define CHUNK_OVERHEAD RS_BULK_CHUNK_HEAD_MAX /* Chunk fields beside the data */
#define GET_READS      4
#define GET_AHEAD      1 /* chunks read beyond what the peer's window takes now */
/* A chunk is read into as many pool blocks as it spans (64 KiB each: a 1 MiB chunk takes 16),
 * with one preadv, and queued by reference, block after block, so no chunk size costs a copy
 * of its data in our own code. */
#define GET_BLOCKS 16

struct get;
struct get_slot {
    struct get *g;
    uint8_t *buf;                 /* owned, malloc'd, |chunk| bytes, when there are no blocks */
    void *blk[GET_BLOCKS];        /* owned: the pool blocks of the chunk, |nblk| of them */
    unsigned nblk;                /* when > 0 (|pooled|), |blk| holds the chunk, not |buf| */
    size_t bcap;                  /* bytes of each pool block */
    bool pooled;                  /* from rs_call_buf_get(): sent by reference, no copy */
    struct iovec iov[GET_BLOCKS]; /* the read in flight, into the blocks (|pooled|) */
    struct rs_store_fault fault;  /* fault point "get.read" of the read in flight */
    uint64_t pos;                 /* object offset of the chunk */
    size_t want;                  /* bytes of the chunk */
    size_t filled;                /* of them, bytes read so far */
    uint32_t crc;                 /* CRC32C of the |filled| bytes, updated as each read completes */
    bool reading;                 /* a pread is in flight */
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
    uint8_t if_match[32];                       /* GetRequest.if_match_sha256, when has_if_match */
    bool has_if_match;
    int fd; /* the object, when has_fd; held so one version is sent */
    bool has_fd;
    bool keeping; /* a ring slot is held for closing |fd| (rs_store_keep_arm) */
    bool got;     /* the request arrived */
    bool opening; /* the open is in flight */
    bool holding; /* the chunk at |head| waits for room in the send queue */
    bool finished;
};

static void get_on_read(struct rs_call *call, void *arg, int res);

/* Gives a slot's memory back: pool blocks to the pool, a malloc'd buffer with its charge. */
static void slot_free(struct rs_call *call, struct get *g, struct get_slot *s)
{
    while (s->nblk > 0)
        rs_call_buf_put(call, s->blk[--s->nblk]);
    if (s->buf != NULL) {
        free(s->buf);
        rs_call_uncharge(call, g->chunk);
        s->buf = NULL;
    }
    s->pooled = false;
}

/* Memory for a |want|-byte chunk in |s| (emptied by slot_free()): the pool blocks it spans,
 * or, when the pool or the budget has no block left for all of them, a buffer of its own
 * charged to the connection like the blocks (sent by copy). False when neither is to be had. */
static bool slot_alloc(struct rs_call *call, struct get *g, struct get_slot *s, size_t want)
{
    size_t cap = 0, n;
    void *b = rs_call_buf_get(call, &cap);

    if (b != NULL && cap > 0 && (want + cap - 1) / cap <= GET_BLOCKS) {
        n = (want + cap - 1) / cap;
        s->blk[s->nblk++] = b;
        s->bcap = cap;
        while (s->nblk < n && (b = rs_call_buf_get(call, &cap)) != NULL)
            s->blk[s->nblk++] = b;
        if (s->nblk == n) {
            s->pooled = true;
            return true;
        }
        b = NULL;
    }
    rs_call_buf_put(call, b);
    while (s->nblk > 0)
        rs_call_buf_put(call, s->blk[--s->nblk]);
    if (rs_call_charge(call, g->chunk) == 0) {
        s->buf = malloc(g->chunk);
        if (s->buf == NULL)
            rs_call_uncharge(call, g->chunk);
    }
    s->pooled = false;
    return s->buf != NULL;
}

/* Runs once the call is done and the last completion has arrived, which gave back the slot the
 * close takes (the kept slot's timer, cancelled when the call ended, if nothing else): the last
 * close of an object deleted meanwhile frees its blocks, never on the worker thread. */
static void get_release(struct rs_call *call, struct get *g)
{
    if (g->opening || g->nreading > 0 || g->keeping)
        return;
    if (g->has_fd && rs_store_close_fd(call, g->fd) < 0)
        rs_log_bug("bulk: Get: no ring slot to close its file (fd %d)", g->fd);
    g->has_fd = false;
    for (unsigned i = 0; i < GET_READS; i++)
        slot_free(call, g, &g->slot[i]);
}

/* Issues the read of what is left of the chunk in |s|: one pread, or one preadv over the pool
 * blocks from the one the next byte goes to; half of it under a "short" fault, so the
 * completion sees a short count. */
static int get_issue_read(struct rs_call *call, void *arg)
{
    struct get_slot *s = arg;
    size_t at = s->filled, left = s->want - s->filled, n;
    unsigned k = 0;

    if (s->fault.short_io && left > 1)
        left /= 2;
    if (!s->pooled)
        return rs_call_pread(call, s->g->fd, s->buf + s->filled, left, s->pos + s->filled,
                             get_on_read, s);
    while (left > 0) {
        size_t off = at % s->bcap;

        n = left < s->bcap - off ? left : s->bcap - off;
        s->iov[k].iov_base = (uint8_t *)s->blk[at / s->bcap] + off;
        s->iov[k].iov_len = n;
        k++;
        at += n;
        left -= n;
    }
    if (k == 1)
        return rs_call_pread(call, s->g->fd, s->iov[0].iov_base, s->iov[0].iov_len,
                             s->pos + s->filled, get_on_read, s);
    return rs_call_preadv(call, s->g->fd, s->iov, k, s->pos + s->filled, get_on_read, s);
}

/* Reads what is left of the chunk in |s|. */
static bool get_read(struct rs_call *call, struct get *g, struct get_slot *s)
{
    int ret = rs_store_fault_run(call, &s->fault, "get.read", get_issue_read, get_on_read, s);

    if (ret < 0) {
        rs_bulk_fail(call, &g->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "no free I/O slot on this worker");
        return false;
    }
    s->reading = true;
    g->nreading++;
    return true;
}

/* Chunks that may be read ahead now (counting those being read or waiting to be queued): as
 * many as the send queue has room for and the flow-control window lets leave soon (see the
 * top of this section), at most GET_READS. A chunk read that cannot leave would only wait in
 * memory, so with no room nothing is read (an idle queue takes one chunk of any size). */
static unsigned get_window(const struct rs_call *call, const struct get *g)
{
    size_t cw = g->chunk + CHUNK_OVERHEAD + RS_GRPC_PREFIX_LEN;
    size_t n = rs_call_send_room(call) / cw;
    size_t soon = rs_call_send_window(call), unframed = rs_call_send_unframed(call);

    soon = soon > GET_READS * cw - GET_AHEAD * cw ? GET_READS * cw : soon + GET_AHEAD * cw;
    soon = soon > unframed ? (soon - unframed) / cw : 0;
    if (soon < n)
        n = soon;

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
        int ret = s->pooled
                          ? rs_bulk_send_chunk_bufs(call, s->blk, s->nblk, s->want, s->pos, s->crc)
                          : rs_bulk_send_chunk(call, s->buf, s->want, s->pos, s->crc);

        if (ret == -EAGAIN) {
            g->holding = true; /* on_writable resumes */
            return;
        }
        g->holding = false;
        if (ret < 0) {
            rs_bulk_fail_send(call, &g->finished, ret);
            return;
        }
        /* The queue has the bytes (a pool buffer went by reference): a stalled client then
         * costs its queue and no buffer. */
        if (s->pooled) {
            s->nblk = 0; /* the queue owns the blocks now */
            s->pooled = false;
        } else {
            slot_free(call, g, s);
        }
        g->head = (g->head + 1) % GET_READS;
        g->nused--;
    }
    if (g->nused == 0 && g->next == g->end) {
        rs_bulk_finish_ok(call, &g->finished);
        return;
    }
    if (g->next < g->end && g->nused == 0 && get_window(call, g) == 0) {
        rs_call_want_writable(call); /* read on once the queue drains */
        return;
    }
    while (g->next < g->end && g->nused < get_window(call, g)) {
        struct get_slot *s = &g->slot[(g->head + g->nused) % GET_READS];
        size_t want = g->end - g->next < g->chunk ? (size_t)(g->end - g->next) : g->chunk;

        /* Each chunk sent gave its memory to the queue (blocks) or back (a buffer); a read
         * that could not start left it here, sized for that chunk: give it back. */
        slot_free(call, g, s);
        if (!slot_alloc(call, g, s, want)) {
            if (g->nused > 0)
                return; /* go on with the buffers we have */
            rs_bulk_fail(call, &g->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                         "no memory for a %zu-byte chunk", g->chunk);
            return;
        }
        s->g = g;
        s->pos = g->next;
        s->want = want;
        s->filled = 0;
        s->crc = 0;
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
        rs_bulk_fail_errno(call, &g->finished, res, "reading the object: %s", strerror(-res));
        return;
    }
    if (res == 0) {
        rs_bulk_fail(call, &g->finished, RS_GRPC_DATA_LOSS,
                     "the object is shorter than its recorded size");
        return;
    }
    /* The CRC of what this read brought, while it is still in cache: the kernel has just
     * copied it (for a 1 MiB chunk, a later pass would read it back from memory). */
    if (s->pooled) {
        size_t left = (size_t)res, n;

        for (unsigned k = 0; left > 0; k++, left -= n) {
            n = left < s->iov[k].iov_len ? left : s->iov[k].iov_len;
            s->crc = rs_bulk_crc32c(call, s->crc, s->iov[k].iov_base, n);
        }
    } else {
        s->crc = rs_bulk_crc32c(call, s->crc, s->buf + s->filled, (size_t)res);
    }
    s->filled += (size_t)res;
    rs_call_stat_add(call, RS_BULK_STAT_READ_BYTES, (uint64_t)res);
    if (s->filled < s->want)
        get_read(call, g, s); /* short read: the rest */
    else if (!g->holding)
        get_pump(call, g);
}

/* The slot held for closing the file: the call ended (the core cancelled the timer), or the
 * timer ran out and is armed again. */
static void get_on_keep(struct rs_call *call, void *arg, int res)
{
    struct get *g = arg;

    g->keeping = false;
    if (res == 0 && !rs_call_is_done(call) && rs_store_keep_arm(call, get_on_keep, g) == 0) {
        g->keeping = true;
        return;
    }
    if (rs_call_is_done(call))
        get_release(call, g);
}

/* The object is open (or not): check the range, then start reading. */
static void get_on_open(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct get *g = op->arg;
    const struct rs_store_meta *m = &op->meta;
    uint64_t chunk;

    g->opening = false;
    if (res >= 0) {
        /* First thing in this completion: hold the slot it gave back for the close. */
        if (rs_store_keep_arm(call, get_on_keep, g) < 0) {
            if (rs_store_close_fd(call, res) < 0)
                rs_log_bug("bulk: Get: no ring slot to close its file (fd %d)", res);
            res = RS_STORE_OP_NOSLOT;
        } else {
            g->keeping = true;
            g->fd = res;
            g->has_fd = true;
        }
    }
    if (rs_call_is_done(call)) {
        get_release(call, g);
        return;
    }
    if (g->finished)
        return;
    if (res < 0) {
        rs_bulk_fail_op(call, &g->finished, res, "opening", op->want, op->want_len);
        return;
    }
    /* The SHA-256 of the version just opened, the one this Get sends (it holds the fd). Before
     * the range: a client resuming past the end of a changed object learns that it changed. */
    if (g->has_if_match && memcmp(g->if_match, m->sha256, sizeof(g->if_match)) != 0) {
        rs_bulk_fail(call, &g->finished, RS_GRPC_FAILED_PRECONDITION,
                     "object \"%s\" changed: its SHA-256 is not if_match_sha256", m->name);
        return;
    }
    if (g->req_offset > m->size) {
        rs_bulk_fail(call, &g->finished, RS_GRPC_OUT_OF_RANGE,
                     "offset %" PRIu64 " is past the end of \"%s\" (%" PRIu64 " bytes)",
                     g->req_offset, m->name, m->size);
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
    struct rs_pb_view name = { 0 }, if_match = { 0 };
    int ret;

    if (g->got || g->finished) {
        if (!g->finished)
            rs_bulk_fail(call, &g->finished, RS_GRPC_INVALID_ARGUMENT, "Get takes one GetRequest");
        rs_call_consume(call);
        return;
    }
    g->got = true;
    rs_pb_view_bind(&req.name, &name);
    rs_pb_view_bind(&req.if_match_sha256, &if_match);
    if (!rs_bulk_decode(call, &g->finished, msg, len, ringstream_v1_GetRequest_fields, &req,
                        "GetRequest") ||
        !rs_bulk_name_ok(call, &g->finished, &name, "GetRequest.name"))
        goto out;
    if (if_match.len != 0 && if_match.len != sizeof(g->if_match)) {
        rs_bulk_fail(call, &g->finished, RS_GRPC_INVALID_ARGUMENT,
                     "GetRequest.if_match_sha256 has %zu bytes: a SHA-256 has 32 (or leave it "
                     "empty)",
                     if_match.len);
        goto out;
    }
    if (if_match.len > 0) {
        memcpy(g->if_match, if_match.p, sizeof(g->if_match));
        g->has_if_match = true;
    }
    g->req_offset = req.offset;
    g->req_length = req.length;
    g->req_chunk = req.chunk_size;
    rs_store_op_init(&g->op, rs_bulk_call_store(call), get_on_open, g);
    ret = rs_store_op_open(call, &g->op, (const char *)name.p, name.len); /* copies the name */
    if (ret < 0) {
        rs_bulk_fail_op(call, &g->finished, ret, "opening", (const char *)name.p, name.len);
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
        rs_bulk_fail(call, &g->finished, RS_GRPC_INVALID_ARGUMENT, "Get needs a GetRequest");
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

const struct rs_method rs_bulk_get_method = {
    .path = "/ringstream.v1.Bulk/Get",
    .type = RS_METHOD_SERVER_STREAM,
    .state_size = sizeof(struct get),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = get_on_message,
    .on_half_close = get_on_half_close,
    .on_writable = get_on_writable,
    .on_done = get_on_done,
};
