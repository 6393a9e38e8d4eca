/* workers/bulk/list.c: List: the objects whose names match a prefix, in byte order, metadata read
 * on the ring. How the methods run: workers/bulk/bulk.c. */
#include "workers/bulk/bulk_internal.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "core/log.h"
#include "workers/bulk/storeop.h"

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
        rs_bulk_fail(call, &l->finished, RS_GRPC_RESOURCE_EXHAUSTED,
                     "no free I/O slot on this worker");
    else
        rs_bulk_fail(call, &l->finished, rs_grpc_status_from_errno(err), "listing objects: %s",
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

        iov.iov_len = rs_bulk_encode_info(buf, sizeof(buf), &l->v[r->at]);
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
        if (++r->at == r->end)
            l->runs[0] = l->runs[--l->nruns];
        if (l->nruns > 0)
            runs_sift_down(l, 0);
    }
    list_release(call, l);
    rs_bulk_finish_ok(call, &l->finished);
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
        rs_store_op_init(&l->ops[slot], rs_bulk_call_store(call), list_on_meta, l);
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
    l->prefix = malloc(l->plen + 1);
    l->ops = calloc(LIST_WINDOW, sizeof(*l->ops));
    l->dents = malloc(LIST_DENTS_BYTES);
    if (l->prefix == NULL || l->ops == NULL || l->dents == NULL) {
        list_fail(call, l, -ENOMEM);
        goto out;
    }
    if (l->plen > 0)
        memcpy(l->prefix, prefix.p, l->plen);
    if (rs_call_openat(call, rs_store_dirfd(rs_bulk_call_store(call)), ".",
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
        rs_bulk_fail(call, &l->finished, RS_GRPC_INVALID_ARGUMENT, "List needs a ListRequest");
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

const struct rs_method rs_bulk_list_method = {
    .path = "/ringstream.v1.Bulk/List",
    .state_size = sizeof(struct list),
    .on_start = rs_bulk_on_start_nothing,
    .on_message = list_on_message,
    .on_half_close = list_on_half_close,
    .on_writable = list_on_writable,
    .on_done = list_on_done,
};
