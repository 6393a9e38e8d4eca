/* workers/bulk/list.c: List: the objects whose names match a prefix, in byte order, walked from
 * the store's sorted name index (index.h) one batch at a time, metadata read on the ring. How
 * the methods run: workers/bulk/bulk.c. */
#include "workers/bulk/bulk_internal.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "core/log.h"
#include "workers/bulk/index.h"
#include "workers/bulk/storeop.h"

/* --- List ------------------------------------------------------------------------------ */

/* A List reads up to LIST_WINDOW names from the index after the last name it read (the index
 * is in ascending byte order, so no sorting here), stats each on the ring in parallel (openat,
 * fgetxattr, close: the objects, not the index, say size, SHA-256 and time), and once the
 * whole batch is back sends its objects in index order. A name without an object (a Delete
 * whose recheck is still queued) is skipped and handed back to rs_index_recheck(). The next
 * batch is read only when the send queue has room for a whole batch (rs_call_want_writable
 * otherwise), so a client that stops reading holds the stream's send queue and one batch:
 * LIST_WINDOW ops (~45 KiB) and names (~8 KiB), whatever the number of objects. */
#define LIST_WINDOW 32
/* Send room wanted before reading the next batch: LIST_WINDOW ObjectInfos of a long name. */
#define LIST_ROOM (LIST_WINDOW * ringstream_v1_ObjectInfo_size)

struct list {
    struct rs_store_op *ops;       /* owned, LIST_WINDOW of them; ops[i] stats names[i] */
    struct rs_index_name *names;   /* owned, LIST_WINDOW; the batch, in index order */
    int *res;                      /* owned, LIST_WINDOW; each op's result */
    size_t n;                      /* names in the batch */
    size_t next;                   /* the batch's next entry to send */
    unsigned pending;              /* of the batch, stats still in flight */
    unsigned inflight;             /* every ring op started and not back yet */
    struct rs_index_name last;     /* the batch's last name: where the next one starts */
    char prefix[RS_BULK_NAME_MAX]; /* ListRequest.prefix; a longer one matches no name */
    size_t plen;
    bool started; /* a batch was read: continue after |last| */
    bool eof;     /* the index has no name after the batch */
    bool waiting; /* for room in the send queue before the next batch */
    bool got;
    bool finished;
};

static void list_release(struct rs_call *call, struct list *l)
{
    if (l->inflight > 0)
        return;
    free(l->ops);
    l->ops = NULL;
    free(l->names);
    l->names = NULL;
    free(l->res);
    l->res = NULL;
}

static void list_fail(struct rs_call *call, struct list *l, int err)
{
    rs_bulk_count_error(call, err);
    if (err == RS_STORE_OP_NOSLOT)
        rs_bulk_fail(call, &l->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "no free I/O slot on this worker");
    else if (err == -EIO)
        rs_bulk_fail(call, &l->finished, RS_GRPC_UNAVAILABLE,
                     "the name index is out of date after a write error; a restart rebuilds it");
    else
        rs_bulk_fail(call, &l->finished, rs_grpc_status_from_errno(err), "listing objects: %s",
                     strerror(-err));
}

static void list_on_meta(struct rs_call *call, struct rs_store_op *op, int res);

/* Reads the next batch of names and starts their stats; finishes at the end of the index. */
static void list_batch(struct rs_call *call, struct list *l)
{
    struct rs_index *ix = rs_bulk_call_index(call);
    ssize_t n;

    if (l->eof) {
        list_release(call, l);
        rs_bulk_finish_ok(call, &l->finished);
        return;
    }
    if (rs_call_send_room(call) < LIST_ROOM && !rs_call_send_idle(call)) {
        l->waiting = true; /* on_writable continues */
        rs_call_want_writable(call);
        return;
    }
    if (l->started)
        n = rs_index_scan(ix, l->prefix, l->plen, l->last.name, l->last.len, true, l->names,
                          LIST_WINDOW);
    else
        n = rs_index_scan(ix, l->prefix, l->plen, l->prefix, l->plen, false, l->names, LIST_WINDOW);
    if (n < 0) {
        list_fail(call, l, (int)n);
        return;
    }
    l->eof = n < LIST_WINDOW;
    l->n = (size_t)n;
    l->next = 0;
    if (n == 0) {
        list_batch(call, l); /* eof: finishes */
        return;
    }
    l->started = true;
    l->last = l->names[n - 1];
    for (size_t i = 0; i < l->n; i++) {
        int ret;

        rs_store_op_init(&l->ops[i], rs_bulk_call_store(call), list_on_meta, l);
        ret = rs_store_op_stat(call, &l->ops[i], l->names[i].name, l->names[i].len);
        if (ret < 0) {
            list_fail(call, l, ret);
            return;
        }
        l->res[i] = 1; /* in flight */
        l->pending++;
        l->inflight++;
    }
}

/* Sends the batch's objects in order as long as the send queue takes them, then the next
 * batch. */
static void list_pump(struct rs_call *call, struct list *l)
{
    uint8_t buf[ringstream_v1_ObjectInfo_size];
    struct iovec iov = { .iov_base = buf };

    while (l->next < l->n) {
        int ret;

        if (l->res[l->next] != 0) { /* gone, or unreadable (logged) */
            l->next++;
            continue;
        }
        iov.iov_len = rs_bulk_encode_info(buf, sizeof(buf), &l->ops[l->next].meta);
        if (iov.iov_len == 0) {
            rs_bulk_fail(call, &l->finished, RS_GRPC_INTERNAL, "cannot encode ObjectInfo");
            return;
        }
        ret = rs_call_send(call, &iov, 1);
        if (ret == -EAGAIN)
            return; /* on_writable resumes */
        if (ret < 0) {
            rs_bulk_fail_send(call, &l->finished, ret);
            return;
        }
        l->next++;
    }
    list_batch(call, l);
}

static void list_on_meta(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct list *l = op->arg;
    size_t i = (size_t)(op - l->ops);

    l->pending--;
    l->inflight--;
    if (rs_call_is_done(call)) {
        list_release(call, l);
        return;
    }
    if (l->finished)
        return;
    l->res[i] = res;
    if (res == RS_STORE_OP_NOSLOT) {
        list_fail(call, l, res);
        return;
    }
    if (res == -ENOENT)
        rs_index_recheck(rs_bulk_call_index(call), l->names[i].name, l->names[i].len);
    else if (res < 0)
        rs_log_warn("bulk: object \"%s\": unreadable metadata (%s), left out of List",
                    l->names[i].name, strerror(-res));
    if (l->pending == 0)
        list_pump(call, l);
}

static void list_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct list *l = rs_call_state(call);
    ringstream_v1_ListRequest req = ringstream_v1_ListRequest_init_zero;
    struct rs_pb_view prefix = { 0 };

    if (l->got || l->finished) {
        if (!l->finished)
            rs_bulk_fail(call, &l->finished, RS_GRPC_INVALID_ARGUMENT,
                         "List takes one ListRequest");
        rs_call_consume(call);
        return;
    }
    l->got = true;
    rs_pb_view_bind(&req.prefix, &prefix);
    if (!rs_bulk_decode(call, &l->finished, msg, len, ringstream_v1_ListRequest_fields, &req,
                        "ListRequest"))
        goto out;
    l->plen = prefix.set ? prefix.len : 0;
    if (l->plen > sizeof(l->prefix)) {
        rs_bulk_finish_ok(call, &l->finished); /* longer than any name: no match */
        goto out;
    }
    if (l->plen > 0)
        memcpy(l->prefix, prefix.p, l->plen);
    rs_bulk_log_prefix(call, l->prefix, l->plen);
    l->ops = calloc(LIST_WINDOW, sizeof(*l->ops));
    l->names = malloc(LIST_WINDOW * sizeof(*l->names));
    l->res = calloc(LIST_WINDOW, sizeof(*l->res));
    if (l->ops == NULL || l->names == NULL || l->res == NULL) {
        list_fail(call, l, -ENOMEM);
        goto out;
    }
    list_batch(call, l);
out:
    rs_call_consume(call);
}

static void list_on_half_close(struct rs_call *call)
{
    struct list *l = rs_call_state(call);

    if (!l->got && !l->finished)
        rs_bulk_fail(call, &l->finished, RS_GRPC_INVALID_ARGUMENT, "List needs a ListRequest");
}

static void list_on_writable(struct rs_call *call)
{
    struct list *l = rs_call_state(call);

    if (l->finished || l->ops == NULL || l->pending > 0)
        return;
    if (l->waiting) {
        l->waiting = false;
        list_batch(call, l);
    } else {
        list_pump(call, l);
    }
}

static void list_on_done(struct rs_call *call, enum rs_grpc_status status)
{
    list_release(call, rs_call_state(call)); /* or the last completion does */
}

const struct rs_method rs_bulk_list_method = {
    .path = "/ringstream.v1.Bulk/List",
    .type = RS_METHOD_SERVER_STREAM,
    .state_size = sizeof(struct list),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = list_on_message,
    .on_half_close = list_on_half_close,
    .on_writable = list_on_writable,
    .on_done = list_on_done,
};
