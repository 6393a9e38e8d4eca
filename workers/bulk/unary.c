/* workers/bulk/unary.c: Stat and Delete: one name in, one ObjectInfo or nothing out.
 * How the methods run: workers/bulk/bulk.c. */
#include "workers/bulk/bulk_internal.h"
#include <errno.h>
#include <string.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "core/log.h"
#include "workers/bulk/index.h"
#include "workers/bulk/storeop.h"

/* --- Stat and Delete ------------------------------------------------------------------- */

struct unary {
    struct rs_bulk_reply reply;
    struct rs_store_op op; /* the store operation; it cleans up after itself if the call ends */
    /* Delete: the claim on the name's key (rs_store_claim) held from before the rename aside
     * to its end, so a compare-and-swap Put never replaces a version deleted after its
     * compare (put.c). */
    char key[RS_STORE_KEY_LEN + 1];
    char name[RS_BULK_NAME_MAX + 1];
    size_t name_len;
    unsigned claim_tries;
    bool claimed;
    bool got;
    bool finished;
};

/* Decodes a request whose only field is the name (StatRequest, DeleteRequest have the same
 * shape) and checks it. */
static bool unary_name(struct rs_call *call, struct unary *u, const uint8_t *msg, size_t len,
                       const pb_msgdesc_t *fields, pb_callback_t *cb, void *req,
                       struct rs_pb_view *name, const char *what, const char *field)
{
    if (u->got) {
        rs_bulk_fail(call, &u->finished, RS_GRPC_INVALID_ARGUMENT, "%s: one request message only",
                     what);
        return false;
    }
    u->got = true;
    rs_pb_view_bind(cb, name);
    return rs_bulk_decode(call, &u->finished, msg, len, fields, req, what) &&
           rs_bulk_name_ok(call, &u->finished, name, field);
}

static void stat_on_op(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct unary *u = op->arg;

    if (rs_call_is_done(call) || u->finished)
        return;
    if (res < 0)
        rs_bulk_fail_op(call, &u->finished, res, "reading", op->want, op->want_len);
    else
        rs_bulk_reply_info(call, &u->reply, &u->finished, &op->meta);
}

static void stat_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct unary *u = rs_call_state(call);
    ringstream_v1_StatRequest req = ringstream_v1_StatRequest_init_zero;
    struct rs_pb_view name = { 0 };

    if (!u->finished && unary_name(call, u, msg, len, ringstream_v1_StatRequest_fields, &req.name,
                                   &req, &name, "StatRequest", "StatRequest.name")) {
        int ret;

        rs_store_op_init(&u->op, rs_bulk_call_store(call), stat_on_op, u);
        ret = rs_store_op_stat(call, &u->op, (const char *)name.p, name.len);
        if (ret < 0)
            rs_bulk_fail_op(call, &u->finished, ret, "reading", (const char *)name.p, name.len);
    }
    rs_call_consume(call);
}

static void delete_on_op(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct unary *u = op->arg;

    if (u->claimed)
        rs_store_unclaim(rs_bulk_call_store(call), u->key);
    u->claimed = false;
    /* The index rechecks the name off the worker and drops it only if the object is gone, so
     * this runs whatever the outcome, also when the call ended meanwhile (a committed delete
     * finishes anyway). */
    rs_index_recheck(rs_bulk_call_index(call), op->want, op->want_len);
    if (rs_call_is_done(call) || u->finished)
        return;
    if (res == -EBADMSG)
        rs_bulk_fail(call, &u->finished, RS_GRPC_DATA_LOSS,
                     "object \"%s\" deleted, but its stored metadata was corrupt", op->want);
    else if (res < 0)
        rs_bulk_fail_op(call, &u->finished, res, "deleting", op->want, op->want_len);
    else
        rs_bulk_reply_info(call, &u->reply, &u->finished, &op->meta);
}

#define DELETE_CLAIM_WAIT_NS 1000000ull /* 1 ms */
#define DELETE_CLAIM_TRIES   10000u     /* 10 s of waiting at most */

static void delete_start(struct rs_call *call, struct unary *u);

static void delete_on_claim_timer(struct rs_call *call, void *arg, int res)
{
    struct unary *u = arg;

    if (rs_call_is_done(call) || u->finished)
        return;
    delete_start(call, u);
}

/* Takes the claim on the name (waiting on a ring timer while a replace holds it), then runs the
 * delete chain. */
static void delete_start(struct rs_call *call, struct unary *u)
{
    struct rs_store *st = rs_bulk_call_store(call);
    int ret;

    if (!rs_store_claim(st, u->key)) {
        if (++u->claim_tries > DELETE_CLAIM_TRIES)
            rs_bulk_fail(call, &u->finished, RS_GRPC_UNAVAILABLE,
                         "object \"%s\" is being replaced by an upload; retry", u->name);
        else if (rs_call_timer(call, DELETE_CLAIM_WAIT_NS, delete_on_claim_timer, u) < 0)
            rs_bulk_fail(call, &u->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                         "no free I/O slot on this worker");
        return;
    }
    u->claimed = true;
    rs_store_op_init(&u->op, st, delete_on_op, u);
    ret = rs_store_op_delete(call, &u->op, u->name, u->name_len);
    if (ret < 0) {
        rs_store_unclaim(st, u->key);
        u->claimed = false;
        rs_bulk_fail_op(call, &u->finished, ret, "deleting", u->name, u->name_len);
    }
}

static void delete_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct unary *u = rs_call_state(call);
    ringstream_v1_DeleteRequest req = ringstream_v1_DeleteRequest_init_zero;
    struct rs_pb_view name = { 0 };

    if (!u->finished && unary_name(call, u, msg, len, ringstream_v1_DeleteRequest_fields, &req.name,
                                   &req, &name, "DeleteRequest", "DeleteRequest.name")) {
        int ret;

        memcpy(u->name, name.p, name.len);
        u->name[name.len] = '\0';
        u->name_len = name.len;
        ret = rs_store_key(u->name, u->name_len, u->key);
        if (ret < 0)
            rs_bulk_fail(call, &u->finished, RS_GRPC_INTERNAL, "hashing the name: %s",
                         strerror(-ret));
        else
            delete_start(call, u);
    }
    rs_call_consume(call);
}

static void unary_on_half_close(struct rs_call *call)
{
    struct unary *u = rs_call_state(call);

    if (!u->got && !u->finished)
        rs_bulk_fail(call, &u->finished, RS_GRPC_INVALID_ARGUMENT, "missing request message");
}

static void unary_on_writable(struct rs_call *call)
{
    struct unary *u = rs_call_state(call);

    rs_bulk_reply_flush(call, &u->reply, &u->finished);
}

const struct rs_method rs_bulk_stat_method = {
    .path = "/ringstream.v1.Bulk/Stat",
    .state_size = sizeof(struct unary),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = stat_on_message,
    .on_half_close = unary_on_half_close,
    .on_writable = unary_on_writable,
};

const struct rs_method rs_bulk_delete_method = {
    .path = "/ringstream.v1.Bulk/Delete",
    .state_size = sizeof(struct unary),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = delete_on_message,
    .on_half_close = unary_on_half_close,
    .on_writable = unary_on_writable,
};
