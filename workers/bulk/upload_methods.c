/* workers/bulk/upload_methods.c: StartUpload, QueryUpload and AbortUpload, the unary side of
 * resumable uploads (the table and the layout: upload.h; the Upload stream: put.c). How the
 * methods run: workers/bulk/bulk.c. */
#include "workers/bulk/bulk_internal.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <pb_decode.h>
#include "core/log.h"
#include "workers/bulk/storeop.h"
#include "workers/bulk/upload.h"

static void hexify(char *out, const uint8_t *in, size_t n)
{
    static const char d[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

/* Answers |st| as an UploadStatus and finishes OK (now, or from on_writable). */
void rs_bulk_reply_upload(struct rs_call *call, struct rs_bulk_reply *r, bool *finished,
                          const struct rs_upload_status *st)
{
    r->len = rs_upload_encode_status(r->buf, sizeof(r->buf), st);
    if (r->len == 0) {
        rs_bulk_fail(call, finished, RS_GRPC_INTERNAL, "cannot encode UploadStatus");
        return;
    }
    r->pending = true;
    rs_bulk_reply_flush(call, r, finished);
}

/* --- StartUpload ------------------------------------------------------------------------- */

/* The chain: check the name (exists, or if_match's stat), create an unnamed file in uploads/,
 * write the header xattr, fsync it, link it under its id, fsync uploads/, add it to the
 * table. Every step is a ring op issued from the previous one's completion. */
struct start {
    struct rs_bulk_reply reply;
    struct rs_store_op op;
    struct rs_upload_hdr hdr;
    char key[RS_STORE_KEY_LEN + 1];
    char id[RS_UPLOAD_ID_LEN + 1];
    char src[32]; /* "/proc/self/fd/<fd>" for linkat */
    uint8_t xattr[RS_UPLOAD_HDR_MAX];
    size_t xlen;
    int fd;
    bool has_fd;
    bool reserved; /* holds a place in the table (rs_uploads_reserve) */
    bool got;
    bool finished;
};

/* Ends the chain early: the file (unnamed, so nothing is left) closes in the slot the
 * completion we run from gave back; the reservation goes. */
static void start_drop(struct rs_call *call, struct start *s)
{
    if (s->has_fd && rs_store_close_fd(call, s->fd) < 0)
        rs_log_bug("bulk: StartUpload: no ring slot to close its file (fd %d)", s->fd);
    s->has_fd = false;
    if (s->reserved)
        rs_uploads_unreserve(rs_bulk_call_uploads(call));
    s->reserved = false;
}

/* A completion of the chain: false (everything dropped) when the chain must stop. */
static bool start_step(struct rs_call *call, struct start *s, int res, const char *doing)
{
    if (rs_call_is_done(call) || s->finished) {
        start_drop(call, s);
        return false;
    }
    if (res < 0) {
        start_drop(call, s);
        rs_bulk_fail_op(call, &s->finished, res, doing, s->hdr.name, s->hdr.name_len);
        return false;
    }
    return true;
}

static void start_on_dirsync(struct rs_call *call, void *arg, int res)
{
    struct start *s = arg;
    struct rs_upload_status st;
    int ret;

    /* Linked: the upload exists now, even if the client went away meanwhile (it then expires
     * unused). A failed directory sync is logged: the name is there, maybe not durable. */
    if (res < 0)
        rs_log_warn("bulk: StartUpload: syncing uploads/: %s", strerror(-res));
    ret = rs_uploads_add(rs_bulk_call_uploads(call), s->id, &s->hdr, s->fd, &st);
    s->reserved = false; /* used up either way */
    if (ret < 0) {
        start_drop(call, s); /* closes it; the name expires as an empty upload after a restart */
        if (!rs_call_is_done(call) && !s->finished)
            rs_bulk_fail(call, &s->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                         "no memory for another upload");
        return;
    }
    s->has_fd = false; /* the table's */
    if (!rs_call_is_done(call) && !s->finished)
        rs_bulk_reply_upload(call, &s->reply, &s->finished, &st);
}

static void start_on_link(struct rs_call *call, void *arg, int res)
{
    struct start *s = arg;
    struct rs_uploads *u = rs_bulk_call_uploads(call);

    if (res < 0) {
        start_step(call, s, res == -EEXIST ? -EIO : res, "starting an upload of");
        return;
    }
    if (rs_call_fsync(call, u->dirfd, start_on_dirsync, s) < 0)
        start_on_dirsync(call, s, RS_STORE_OP_NOSLOT);
}

static void start_on_fsync(struct rs_call *call, void *arg, int res)
{
    struct start *s = arg;
    struct rs_uploads *u = rs_bulk_call_uploads(call);

    if (!start_step(call, s, res, "syncing an upload of"))
        return;
    snprintf(s->src, sizeof(s->src), "/proc/self/fd/%d", s->fd);
    if (rs_call_linkat(call, AT_FDCWD, s->src, u->dirfd, s->id, AT_SYMLINK_FOLLOW, start_on_link,
                       s) < 0)
        start_step(call, s, RS_STORE_OP_NOSLOT, "starting an upload of");
}

static void start_on_xattr(struct rs_call *call, void *arg, int res)
{
    struct start *s = arg;

    if (!start_step(call, s, res, "writing the upload header of"))
        return;
    if (rs_call_fsync(call, s->fd, start_on_fsync, s) < 0)
        start_step(call, s, RS_STORE_OP_NOSLOT, "syncing an upload of");
}

static void start_on_open(struct rs_call *call, void *arg, int res)
{
    struct start *s = arg;

    if (res >= 0) {
        s->fd = res;
        s->has_fd = true;
    }
    if (!start_step(call, s, res, "creating an upload of"))
        return;
    if (rs_call_fsetxattr(call, s->fd, RS_UPLOAD_XATTR, s->xattr, s->xlen, 0, start_on_xattr, s) <
        0)
        start_step(call, s, RS_STORE_OP_NOSLOT, "writing the upload header of");
}

static void start_create(struct rs_call *call, struct start *s)
{
    struct rs_uploads *u = rs_bulk_call_uploads(call);

    if (rs_call_openat(call, u->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0640, start_on_open,
                       s) < 0)
        start_step(call, s, RS_STORE_OP_NOSLOT, "creating an upload of");
}

static void start_on_check(struct rs_call *call, struct rs_store_op *op, int res)
{
    struct start *s = op->arg;

    if (s->hdr.has_if_match) {
        if (res == -ENOENT) {
            start_drop(call, s);
            if (!rs_call_is_done(call) && !s->finished)
                rs_bulk_fail(call, &s->finished, RS_GRPC_FAILED_PRECONDITION,
                             "object \"%s\" does not exist, PutHeader.if_match_sha256 needs it to",
                             s->hdr.name);
            return;
        }
        if (!start_step(call, s, res, "checking"))
            return;
        if (memcmp(op->meta.sha256, s->hdr.if_match, RS_SHA256_LEN) != 0) {
            char got[2 * RS_SHA256_LEN + 1], want[2 * RS_SHA256_LEN + 1];

            start_drop(call, s);
            hexify(got, op->meta.sha256, RS_SHA256_LEN);
            hexify(want, s->hdr.if_match, RS_SHA256_LEN);
            rs_bulk_fail(call, &s->finished, RS_GRPC_FAILED_PRECONDITION,
                         "object \"%s\" has SHA-256 %s, PutHeader.if_match_sha256 is %s",
                         s->hdr.name, got, want);
            return;
        }
    } else {
        if (!start_step(call, s, res, "checking"))
            return;
        if (res > 0) {
            start_drop(call, s);
            rs_bulk_fail(call, &s->finished, RS_GRPC_ALREADY_EXISTS,
                         "object \"%s\" already exists (set overwrite to replace it)", s->hdr.name);
            return;
        }
    }
    start_create(call, s);
}

static void start_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct start *s = rs_call_state(call);
    ringstream_v1_PutHeader h = ringstream_v1_PutHeader_init_zero;
    struct rs_pb_view name = { 0 }, sha = { 0 }, if_match = { 0 };
    uint8_t rnd[RS_UPLOAD_ID_LEN / 2];
    int ret;

    if (s->finished)
        goto out;
    if (s->got) {
        rs_bulk_fail(call, &s->finished, RS_GRPC_INVALID_ARGUMENT,
                     "StartUpload: one request message only");
        goto out;
    }
    s->got = true;
    rs_pb_view_bind(&h.name, &name);
    rs_pb_view_bind(&h.sha256, &sha);
    rs_pb_view_bind(&h.if_match_sha256, &if_match);
    if (!rs_bulk_decode(call, &s->finished, msg, len, ringstream_v1_PutHeader_fields, &h,
                        "PutHeader") ||
        !rs_bulk_name_ok(call, &s->finished, &name, "PutHeader.name"))
        goto out;
    if (sha.set && sha.len != 0 && sha.len != RS_SHA256_LEN) {
        rs_bulk_fail(call, &s->finished, RS_GRPC_INVALID_ARGUMENT,
                     "PutHeader.sha256 must be empty or 32 raw bytes, got %zu bytes", sha.len);
        goto out;
    }
    if (if_match.set && if_match.len != 0 && if_match.len != RS_SHA256_LEN) {
        rs_bulk_fail(call, &s->finished, RS_GRPC_INVALID_ARGUMENT,
                     "PutHeader.if_match_sha256 must be empty or 32 raw bytes, got %zu bytes",
                     if_match.len);
        goto out;
    }
    memcpy(s->hdr.name, name.p, name.len);
    s->hdr.name[name.len] = '\0';
    s->hdr.name_len = name.len;
    s->hdr.want_size = h.size;
    s->hdr.check_sha = sha.set && sha.len == RS_SHA256_LEN;
    if (s->hdr.check_sha)
        memcpy(s->hdr.want_sha, sha.p, RS_SHA256_LEN);
    s->hdr.has_if_match = if_match.set && if_match.len == RS_SHA256_LEN;
    if (s->hdr.has_if_match)
        memcpy(s->hdr.if_match, if_match.p, RS_SHA256_LEN);
    s->hdr.overwrite = h.overwrite || s->hdr.has_if_match;
    s->xlen = rs_upload_hdr_encode(&s->hdr, s->xattr);
    ret = rs_store_key(s->hdr.name, s->hdr.name_len, s->key);
    if (ret < 0 || s->xlen == 0 || getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd)) {
        rs_bulk_fail(call, &s->finished, RS_GRPC_INTERNAL, "cannot name the upload");
        goto out;
    }
    hexify(s->id, rnd, sizeof(rnd));
    if (!rs_uploads_reserve(rs_bulk_call_uploads(call))) {
        rs_bulk_fail(call, &s->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "too many open uploads (the server's --max-uploads)");
        goto out;
    }
    s->reserved = true;
    rs_store_op_init(&s->op, rs_bulk_call_store(call), start_on_check, s);
    if (s->hdr.has_if_match)
        ret = rs_store_op_stat(call, &s->op, s->hdr.name, s->hdr.name_len);
    else if (!s->hdr.overwrite)
        ret = rs_store_op_exists(call, &s->op, s->key);
    else
        ret = 1;
    if (ret == 1) {
        start_create(call, s);
    } else if (ret < 0) {
        rs_uploads_unreserve(rs_bulk_call_uploads(call));
        s->reserved = false;
        rs_bulk_fail_op(call, &s->finished, ret, "checking", s->hdr.name, s->hdr.name_len);
    }
out:
    rs_call_consume(call);
}

/* --- QueryUpload and AbortUpload ---------------------------------------------------------- */

struct ref {
    struct rs_bulk_reply reply;
    bool got;
    bool finished;
};

static bool ref_decode(struct rs_call *call, struct ref *r, const uint8_t *msg, size_t len,
                       struct rs_pb_view *id, const char *what)
{
    ringstream_v1_UploadRef ref = ringstream_v1_UploadRef_init_zero;

    if (r->got) {
        rs_bulk_fail(call, &r->finished, RS_GRPC_INVALID_ARGUMENT, "%s: one request message only",
                     what);
        return false;
    }
    r->got = true;
    rs_pb_view_bind(&ref.upload_id, id);
    if (!rs_bulk_decode(call, &r->finished, msg, len, ringstream_v1_UploadRef_fields, &ref,
                        "UploadRef"))
        return false;
    if (!id->set || id->len == 0) {
        rs_bulk_fail(call, &r->finished, RS_GRPC_INVALID_ARGUMENT,
                     "UploadRef.upload_id is required");
        return false;
    }
    return true;
}

static void query_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct ref *r = rs_call_state(call);
    struct rs_pb_view id = { 0 };
    struct rs_upload_status st;

    if (!r->finished && ref_decode(call, r, msg, len, &id, "QueryUpload")) {
        if (rs_uploads_query(rs_bulk_call_uploads(call), (const char *)id.p, id.len, &st) < 0)
            rs_bulk_fail(call, &r->finished, RS_GRPC_NOT_FOUND,
                         "no upload %.*s (unknown, expired or aborted)",
                         (int)(id.len > 64 ? 64 : id.len), (const char *)id.p);
        else
            rs_bulk_reply_upload(call, &r->reply, &r->finished, &st);
    }
    rs_call_consume(call);
}

static void abort_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct ref *r = rs_call_state(call);
    struct rs_pb_view id = { 0 };
    struct rs_upload_status st;
    int ret;

    if (!r->finished && ref_decode(call, r, msg, len, &id, "AbortUpload")) {
        int n = (int)(id.len > 64 ? 64 : id.len);

        ret = rs_uploads_abort(rs_bulk_call_uploads(call), (const char *)id.p, id.len, &st);
        if (ret == -ENOENT)
            rs_bulk_fail(call, &r->finished, RS_GRPC_NOT_FOUND,
                         "no upload %.*s (unknown, expired or aborted)", n, (const char *)id.p);
        else if (ret == -EBUSY)
            rs_bulk_fail(call, &r->finished, RS_GRPC_ABORTED,
                         "upload %.*s has an Upload stream running", n, (const char *)id.p);
        else if (ret == -EALREADY)
            rs_bulk_fail(call, &r->finished, RS_GRPC_FAILED_PRECONDITION,
                         "upload %.*s was already published", n, (const char *)id.p);
        else
            rs_bulk_reply_upload(call, &r->reply, &r->finished, &st);
    }
    rs_call_consume(call);
}

static void ref_on_half_close(struct rs_call *call)
{
    struct ref *r = rs_call_state(call);

    if (!r->got && !r->finished)
        rs_bulk_fail(call, &r->finished, RS_GRPC_INVALID_ARGUMENT, "missing request message");
}

static void ref_on_writable(struct rs_call *call)
{
    struct ref *r = rs_call_state(call);

    rs_bulk_reply_flush(call, &r->reply, &r->finished);
}

static void start_on_half_close(struct rs_call *call)
{
    struct start *s = rs_call_state(call);

    if (!s->got && !s->finished)
        rs_bulk_fail(call, &s->finished, RS_GRPC_INVALID_ARGUMENT, "missing request message");
}

static void start_on_writable(struct rs_call *call)
{
    struct start *s = rs_call_state(call);

    rs_bulk_reply_flush(call, &s->reply, &s->finished);
}

const struct rs_method rs_bulk_start_upload_method = {
    .path = "/ringstream.v1.Bulk/StartUpload",
    .state_size = sizeof(struct start),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = start_on_message,
    .on_half_close = start_on_half_close,
    .on_writable = start_on_writable,
};

const struct rs_method rs_bulk_query_upload_method = {
    .path = "/ringstream.v1.Bulk/QueryUpload",
    .state_size = sizeof(struct ref),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = query_on_message,
    .on_half_close = ref_on_half_close,
    .on_writable = ref_on_writable,
};

const struct rs_method rs_bulk_abort_upload_method = {
    .path = "/ringstream.v1.Bulk/AbortUpload",
    .state_size = sizeof(struct ref),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = abort_on_message,
    .on_half_close = ref_on_half_close,
    .on_writable = ref_on_writable,
};
