/* tests/unit/fake_ring.c: see fake_ring.h. Implements every function of uring/ring.h without
 * io_uring; the opaque struct io_uring of ring.h is defined here as the fake's state. */
#include "tests/unit/fake_ring.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_MAX_OPS   (1u << 20) /* bound on recorded ops: a runaway test fails, not OOMs */
#define FAKE_MAX_POSTS (1u << 16)

struct io_uring {
    struct rs_fake_op *ops; /* owned */
    size_t nops, capops;
    struct rs_ring_cqe *posts; /* owned FIFO of posted completions */
    size_t npost_head, nposts, capposts;
    enum rs_fake_kind fail_kind;
    unsigned fail_left;
    unsigned failed;
    bool *buf_used; /* owned, nbufs entries */
    unsigned bufs_in_use;
    unsigned waits;
    bool prepared; /* by rs_fake_ring_prepare(): rs_ring_init() keeps this state */
};

int rs_ring_probe(char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    return 0;
}

int rs_ring_init(struct rs_ring *r, unsigned entries, char *err, size_t errlen)
{
    (void)entries;
    if (r->ring != NULL && r->ring->prepared) {
        r->ring->prepared = false;
        return 0;
    }
    memset(r, 0, sizeof(*r));
    r->ring = calloc(1, sizeof(*r->ring));
    if (r->ring == NULL) {
        snprintf(err, errlen, "fake ring: out of memory");
        return -ENOMEM;
    }
    return 0;
}

int rs_ring_bufs_init(struct rs_ring *r, uint16_t bgid, unsigned nbufs, size_t bufsize)
{
    if (nbufs == 0 || (nbufs & (nbufs - 1)) != 0 || nbufs > 32768)
        return -EINVAL;
    r->bufs = malloc((size_t)nbufs * bufsize);
    r->ring->buf_used = calloc(nbufs, sizeof(bool));
    if (r->bufs == NULL || r->ring->buf_used == NULL) {
        free(r->bufs);
        r->bufs = NULL;
        free(r->ring->buf_used);
        r->ring->buf_used = NULL;
        return -ENOMEM;
    }
    r->nbufs = nbufs;
    r->bufsize = bufsize;
    r->bgid = bgid;
    return 0;
}

void rs_ring_fini(struct rs_ring *r)
{
    size_t i;

    if (r->ring == NULL)
        return;
    for (i = 0; i < r->ring->nops; i++)
        free(r->ring->ops[i].iov);
    free(r->ring->ops);
    free(r->ring->posts);
    free(r->ring->buf_used);
    free(r->ring);
    free(r->bufs);
    memset(r, 0, sizeof(*r));
}

void *rs_ring_buf(struct rs_ring *r, unsigned bid)
{
    return r->bufs + (size_t)bid * r->bufsize;
}

void rs_ring_buf_recycle(struct rs_ring *r, unsigned bid)
{
    if (bid >= r->nbufs || !r->ring->buf_used[bid]) {
        fprintf(stderr, "fake ring: recycle of buffer %u that is not in use\n", bid);
        abort();
    }
    r->ring->buf_used[bid] = false;
    r->ring->bufs_in_use--;
}

/* Records one op, or fails it as a full submission queue would. */
static struct rs_fake_op *record(struct rs_ring *r, enum rs_fake_kind kind, int fd, uint64_t ud,
                                 int *ret)
{
    struct io_uring *f = r->ring;
    struct rs_fake_op *op;

    if (f->fail_left > 0 && (f->fail_kind == RS_FAKE_ANY || f->fail_kind == kind)) {
        f->fail_left--;
        f->failed++;
        *ret = -EBUSY;
        return NULL;
    }
    if (f->nops == f->capops) {
        size_t cap = f->capops ? f->capops * 2 : 64;
        struct rs_fake_op *n;

        if (cap > FAKE_MAX_OPS) {
            *ret = -EBUSY;
            return NULL;
        }
        n = realloc(f->ops, cap * sizeof(*n));
        if (n == NULL) {
            *ret = -EBUSY;
            return NULL;
        }
        f->ops = n;
        f->capops = cap;
    }
    op = &f->ops[f->nops++];
    memset(op, 0, sizeof(*op));
    op->kind = kind;
    op->fd = fd;
    op->user_data = ud;
    *ret = 0;
    return op;
}

static int simple(struct rs_ring *r, enum rs_fake_kind kind, int fd, uint64_t ud)
{
    int ret;

    record(r, kind, fd, ud, &ret);
    return ret;
}

int rs_ring_accept_multishot(struct rs_ring *r, int fd, uint64_t ud)
{
    return simple(r, RS_FAKE_ACCEPT, fd, ud);
}

int rs_ring_accept(struct rs_ring *r, int fd, uint64_t ud)
{
    return simple(r, RS_FAKE_ACCEPT, fd, ud);
}

int rs_ring_recv_multishot(struct rs_ring *r, int fd, uint64_t ud)
{
    return simple(r, RS_FAKE_RECV, fd, ud);
}

static int sendmsg_op(struct rs_ring *r, enum rs_fake_kind kind, int fd, const struct msghdr *msg,
                      uint64_t ud)
{
    struct rs_fake_op *op;
    int ret;

    op = record(r, kind, fd, ud, &ret);
    if (op == NULL)
        return ret;
    if (msg->msg_iovlen > 0) {
        op->iov = malloc(msg->msg_iovlen * sizeof(*op->iov));
        if (op->iov == NULL) {
            r->ring->nops--;
            return -EBUSY;
        }
        memcpy(op->iov, msg->msg_iov, msg->msg_iovlen * sizeof(*op->iov));
    }
    op->iovcnt = msg->msg_iovlen;
    return 0;
}

int rs_ring_sendmsg(struct rs_ring *r, int fd, const struct msghdr *msg, uint64_t ud)
{
    return sendmsg_op(r, RS_FAKE_SENDMSG, fd, msg, ud);
}

int rs_ring_sendmsg_zc(struct rs_ring *r, int fd, const struct msghdr *msg, uint64_t ud)
{
    return sendmsg_op(r, RS_FAKE_SENDMSG_ZC, fd, msg, ud);
}

int rs_ring_has_sendmsg_zc(void)
{
    return 1;
}

int rs_ring_read(struct rs_ring *r, int fd, void *buf, size_t len, uint64_t off, uint64_t ud)
{
    return simple(r, RS_FAKE_READ, fd, ud);
}

int rs_ring_readv(struct rs_ring *r, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t off,
                  uint64_t ud)
{
    return simple(r, RS_FAKE_READ, fd, ud);
}

int rs_ring_write(struct rs_ring *r, int fd, const void *buf, size_t len, uint64_t off, uint64_t ud)
{
    return simple(r, RS_FAKE_WRITE, fd, ud);
}

int rs_ring_fsync(struct rs_ring *r, int fd, uint64_t ud)
{
    return simple(r, RS_FAKE_FSYNC, fd, ud);
}

int rs_ring_timeout(struct rs_ring *r, const struct __kernel_timespec *ts, uint64_t ud)
{
    struct rs_fake_op *op;
    int ret;

    op = record(r, RS_FAKE_TIMEOUT, -1, ud, &ret);
    if (op != NULL)
        op->timeout_ns = (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
    return ret;
}

int rs_ring_cancel(struct rs_ring *r, uint64_t target, uint64_t ud)
{
    struct rs_fake_op *op;
    int ret;

    op = record(r, RS_FAKE_CANCEL, -1, ud, &ret);
    if (op != NULL)
        op->target = target;
    return ret;
}

int rs_ring_openat(struct rs_ring *r, int dirfd, const char *path, int flags, mode_t mode,
                   uint64_t ud)
{
    return simple(r, RS_FAKE_OPENAT, dirfd, ud);
}

int rs_ring_statx(struct rs_ring *r, int dirfd, const char *path, int flags, unsigned mask,
                  struct statx *stx, uint64_t ud)
{
    return simple(r, RS_FAKE_STATX, dirfd, ud);
}

int rs_ring_linkat(struct rs_ring *r, int olddirfd, const char *oldpath, int newdirfd,
                   const char *newpath, int flags, uint64_t ud)
{
    return simple(r, RS_FAKE_LINKAT, olddirfd, ud);
}

int rs_ring_renameat(struct rs_ring *r, int olddirfd, const char *oldpath, int newdirfd,
                     const char *newpath, unsigned flags, uint64_t ud)
{
    return simple(r, RS_FAKE_RENAMEAT, olddirfd, ud);
}

int rs_ring_unlinkat(struct rs_ring *r, int dirfd, const char *path, int flags, uint64_t ud)
{
    return simple(r, RS_FAKE_UNLINKAT, dirfd, ud);
}

int rs_ring_fgetxattr(struct rs_ring *r, int fd, const char *name, void *value, size_t len,
                      uint64_t ud)
{
    return simple(r, RS_FAKE_FGETXATTR, fd, ud);
}

int rs_ring_fsetxattr(struct rs_ring *r, int fd, const char *name, const void *value, size_t len,
                      int flags, uint64_t ud)
{
    return simple(r, RS_FAKE_FSETXATTR, fd, ud);
}

int rs_ring_close(struct rs_ring *r, int fd, uint64_t ud)
{
    return simple(r, RS_FAKE_CLOSE, fd, ud);
}

int rs_ring_wait(struct rs_ring *r, rs_ring_cqe_fn fn, void *ctx)
{
    struct io_uring *f = r->ring;
    size_t n = 0, end = f->nposts;

    f->waits++;
    /* Only what was posted before this call: completions posted by |fn| wait for the next. */
    while (f->npost_head < end) {
        struct rs_ring_cqe c = f->posts[f->npost_head++];

        fn(ctx, &c);
        n++;
    }
    if (f->npost_head == f->nposts)
        f->npost_head = f->nposts = 0;
    return (int)n;
}

/* ---- test side ------------------------------------------------------------------------- */

int rs_fake_ring_prepare(struct rs_ring *r)
{
    memset(r, 0, sizeof(*r));
    r->ring = calloc(1, sizeof(*r->ring));
    if (r->ring == NULL)
        return -ENOMEM;
    r->ring->prepared = true;
    return 0;
}

size_t rs_fake_ring_nops(struct rs_ring *r)
{
    return r->ring->nops;
}

struct rs_fake_op *rs_fake_ring_op(struct rs_ring *r, size_t i)
{
    return i < r->ring->nops ? &r->ring->ops[i] : NULL;
}

long rs_fake_ring_find(struct rs_ring *r, enum rs_fake_kind kind, size_t from)
{
    size_t i;

    for (i = from; i < r->ring->nops; i++)
        if (!r->ring->ops[i].done && (kind == RS_FAKE_ANY || r->ring->ops[i].kind == kind))
            return (long)i;
    return -1;
}

size_t rs_fake_ring_pending(struct rs_ring *r, enum rs_fake_kind kind)
{
    size_t i, n = 0;

    for (i = 0; i < r->ring->nops; i++)
        if (!r->ring->ops[i].done && (kind == RS_FAKE_ANY || r->ring->ops[i].kind == kind))
            n++;
    return n;
}

size_t rs_fake_ring_op_bytes(const struct rs_fake_op *op)
{
    size_t i, n = 0;

    for (i = 0; i < op->iovcnt; i++)
        n += op->iov[i].iov_len;
    return n;
}

void rs_fake_ring_fail_next(struct rs_ring *r, enum rs_fake_kind kind, unsigned n)
{
    r->ring->fail_kind = kind;
    r->ring->fail_left = n;
}

unsigned rs_fake_ring_failed(struct rs_ring *r)
{
    return r->ring->failed;
}

int rs_fake_ring_post(struct rs_ring *r, uint64_t user_data, int32_t res, unsigned flags,
                      unsigned bid)
{
    struct io_uring *f = r->ring;
    struct rs_ring_cqe *c;

    if (f->nposts == f->capposts) {
        size_t cap = f->capposts ? f->capposts * 2 : 64;
        struct rs_ring_cqe *n;

        if (cap > FAKE_MAX_POSTS)
            return -ENOMEM;
        n = realloc(f->posts, cap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        f->posts = n;
        f->capposts = cap;
    }
    c = &f->posts[f->nposts++];
    c->user_data = user_data;
    c->res = res;
    c->flags = flags;
    c->bid = bid;
    return 0;
}

int rs_fake_ring_complete(struct rs_ring *r, size_t i, int32_t res, unsigned flags)
{
    struct rs_fake_op *op = rs_fake_ring_op(r, i);
    int ret;

    if (op == NULL || op->done)
        return -EINVAL;
    ret = rs_fake_ring_post(r, op->user_data, res, flags, 0);
    if (ret == 0 && !(flags & RS_RING_F_MORE))
        op->done = true;
    return ret;
}

unsigned rs_fake_ring_run_cancels(struct rs_ring *r)
{
    struct io_uring *f = r->ring;
    unsigned ran = 0;
    size_t i, j;

    for (i = 0; i < f->nops; i++) {
        struct rs_fake_op *c = &f->ops[i];
        int found = 0;

        if (c->done || c->kind != RS_FAKE_CANCEL)
            continue;
        for (j = 0; j < f->nops; j++) {
            if (!f->ops[j].done && f->ops[j].kind != RS_FAKE_CANCEL &&
                f->ops[j].user_data == c->target) {
                rs_fake_ring_complete(r, j, -ECANCELED, 0);
                found = 1;
            }
        }
        rs_fake_ring_complete(r, i, found ? 0 : -ENOENT, 0);
        ran++;
    }
    return ran;
}

size_t rs_fake_ring_posted(struct rs_ring *r)
{
    return r->ring->nposts - r->ring->npost_head;
}

int rs_fake_ring_buf_fill(struct rs_ring *r, const void *data, size_t len)
{
    unsigned i;

    if (len > r->bufsize)
        return -1;
    for (i = 0; i < r->nbufs; i++) {
        if (!r->ring->buf_used[i]) {
            r->ring->buf_used[i] = true;
            r->ring->bufs_in_use++;
            memcpy(rs_ring_buf(r, i), data, len);
            return (int)i;
        }
    }
    return -1;
}

unsigned rs_fake_ring_bufs_in_use(struct rs_ring *r)
{
    return r->ring->bufs_in_use;
}

unsigned rs_fake_ring_waits(struct rs_ring *r)
{
    return r->ring->waits;
}
