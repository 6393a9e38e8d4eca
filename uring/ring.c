#include "uring/ring.h"
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

static const struct {
    int op;
    const char *name;
} needed_ops[] = {
    { IORING_OP_ACCEPT, "ACCEPT" },       { IORING_OP_RECV, "RECV" },
    { IORING_OP_SENDMSG, "SENDMSG" },     { IORING_OP_READ, "READ" },
    { IORING_OP_WRITE, "WRITE" },         { IORING_OP_FSYNC, "FSYNC" },
    { IORING_OP_TIMEOUT, "TIMEOUT" },     { IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL" },
    { IORING_OP_OPENAT, "OPENAT" },       { IORING_OP_STATX, "STATX" },
    { IORING_OP_LINKAT, "LINKAT" },       { IORING_OP_RENAMEAT, "RENAMEAT" },
    { IORING_OP_UNLINKAT, "UNLINKAT" },   { IORING_OP_FGETXATTR, "FGETXATTR" },
    { IORING_OP_FSETXATTR, "FSETXATTR" }, { IORING_OP_CLOSE, "CLOSE" },
};

static int explain(int ret, char *err, size_t errlen)
{
    switch (ret) {
    case -EPERM:
    case -EACCES:
        snprintf(err, errlen,
                 "io_uring is not permitted here (%s): set sysctl kernel.io_uring_disabled=0, "
                 "or allow io_uring_setup in the container's seccomp profile",
                 strerror(-ret));
        break;
    case -ENOSYS:
        snprintf(err, errlen,
                 "io_uring is not available (ENOSYS): the kernel lacks it or a seccomp profile "
                 "blocks it; use Linux >= 6.1 and allow io_uring_setup");
        break;
    case -EINVAL:
        snprintf(err, errlen,
                 "io_uring rejected SINGLE_ISSUER|DEFER_TASKRUN (EINVAL): Linux >= 6.1 is needed");
        break;
    case -ENOMEM:
        snprintf(err, errlen,
                 "io_uring ring could not be allocated (ENOMEM): raise RLIMIT_MEMLOCK "
                 "(LimitMEMLOCK= in the unit) or lower --workers");
        break;
    default:
        snprintf(err, errlen, "io_uring setup failed: %s", strerror(-ret));
        break;
    }
    return ret;
}

int rs_ring_probe(char *err, size_t errlen)
{
    struct io_uring ring;
    struct io_uring_probe *probe;
    unsigned i;
    int ret;

    ret = io_uring_queue_init(8, &ring, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (ret < 0)
        return explain(ret, err, errlen);
    probe = io_uring_get_probe_ring(&ring);
    if (probe == NULL) {
        io_uring_queue_exit(&ring);
        snprintf(err, errlen, "io_uring opcode probe failed: Linux >= 6.1 is needed");
        return -ENOSYS;
    }
    ret = 0;
    for (i = 0; i < sizeof(needed_ops) / sizeof(needed_ops[0]); i++) {
        if (!io_uring_opcode_supported(probe, needed_ops[i].op)) {
            snprintf(err, errlen, "io_uring lacks IORING_OP_%s: Linux >= 6.1 is needed",
                     needed_ops[i].name);
            ret = -ENOSYS;
            break;
        }
    }
    io_uring_free_probe(probe);
    io_uring_queue_exit(&ring);
    return ret;
}

int rs_ring_init(struct rs_ring *r, unsigned entries, char *err, size_t errlen)
{
    struct io_uring_params p;
    int ret;

    memset(r, 0, sizeof(*r));
    r->ring = calloc(1, sizeof(*r->ring));
    if (r->ring == NULL)
        return -ENOMEM;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
              IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 4; /* multishot ops post many CQEs per SQE */
    ret = io_uring_queue_init_params(entries, r->ring, &p);
    if (ret < 0) {
        free(r->ring);
        r->ring = NULL;
        return explain(ret, err, errlen);
    }
    return 0;
}

int rs_ring_bufs_init(struct rs_ring *r, uint16_t bgid, unsigned nbufs, size_t bufsize)
{
    struct io_uring_buf_reg reg;
    size_t ring_bytes = nbufs * sizeof(struct io_uring_buf);
    void *mem;
    unsigned i;
    int ret;

    if (nbufs == 0 || (nbufs & (nbufs - 1)) != 0 || nbufs > 32768)
        return -EINVAL;
    mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED)
        return -errno;
    /* The buffers are mapped, not malloc'ed: page-aligned, so a small receive dirties one
     * page of its buffer rather than two (the kernel takes buffers in ring order, so with
     * small messages every buffer gets written), and untouched pages stay unallocated. */
    r->bufs =
            mmap(NULL, nbufs * bufsize, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (r->bufs == MAP_FAILED) {
        r->bufs = NULL;
        munmap(mem, ring_bytes);
        return -ENOMEM;
    }
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)mem;
    reg.ring_entries = nbufs;
    reg.bgid = bgid;
    ret = io_uring_register_buf_ring(r->ring, &reg, 0);
    if (ret < 0) {
        munmap(r->bufs, nbufs * bufsize);
        r->bufs = NULL;
        munmap(mem, ring_bytes);
        return ret;
    }
    r->br = mem;
    r->nbufs = nbufs;
    r->bufsize = bufsize;
    r->bgid = bgid;
    io_uring_buf_ring_init(r->br);
    for (i = 0; i < nbufs; i++)
        io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * bufsize, (unsigned)bufsize,
                              (unsigned short)i, io_uring_buf_ring_mask(nbufs), (int)i);
    io_uring_buf_ring_advance(r->br, (int)nbufs);
    return 0;
}

void rs_ring_fini(struct rs_ring *r)
{
    if (r->ring == NULL)
        return;
    if (r->br != NULL) {
        io_uring_unregister_buf_ring(r->ring, r->bgid);
        munmap(r->br, r->nbufs * sizeof(struct io_uring_buf));
        r->br = NULL;
        munmap(r->bufs, r->nbufs * r->bufsize);
        r->bufs = NULL;
    }
    io_uring_queue_exit(r->ring);
    free(r->ring);
    r->ring = NULL;
}

void *rs_ring_buf(struct rs_ring *r, unsigned bid)
{
    return r->bufs + (size_t)bid * r->bufsize;
}

void rs_ring_buf_recycle(struct rs_ring *r, unsigned bid)
{
    io_uring_buf_ring_add(r->br, rs_ring_buf(r, bid), (unsigned)r->bufsize, (unsigned short)bid,
                          io_uring_buf_ring_mask(r->nbufs), 0);
    io_uring_buf_ring_advance(r->br, 1);
}

static struct io_uring_sqe *get_sqe(struct rs_ring *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(r->ring);

    if (sqe == NULL) {
        /* The SQ is full: hand what is queued to the kernel and try once more. */
        io_uring_submit(r->ring);
        sqe = io_uring_get_sqe(r->ring);
    }
    return sqe;
}

int rs_ring_accept_multishot(struct rs_ring *r, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_accept(struct rs_ring *r, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_recv_multishot(struct rs_ring *r, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = r->bgid;
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_sendmsg(struct rs_ring *r, int fd, const struct msghdr *msg, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_sendmsg(sqe, fd, msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_sendmsg_zc(struct rs_ring *r, int fd, const struct msghdr *msg, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_sendmsg_zc(sqe, fd, msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_has_sendmsg_zc(void)
{
    struct io_uring_probe *probe = io_uring_get_probe();
    int ret;

    if (probe == NULL)
        return -ENOSYS;
    ret = io_uring_opcode_supported(probe, IORING_OP_SENDMSG_ZC) ? 1 : 0;
    io_uring_free_probe(probe);
    return ret;
}

int rs_ring_read(struct rs_ring *r, int fd, void *buf, size_t len, uint64_t off, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_readv(struct rs_ring *r, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t off,
                  uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_readv(sqe, fd, iov, iovcnt, off);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_write(struct rs_ring *r, int fd, const void *buf, size_t len, uint64_t off, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_write(sqe, fd, buf, (unsigned)len, off);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_fsync(struct rs_ring *r, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_fsync(sqe, fd, 0);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_timeout(struct rs_ring *r, const struct __kernel_timespec *ts, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    /* liburing 2.3 takes a non-const pointer; the kernel only reads it. */
    io_uring_prep_timeout(sqe, (struct __kernel_timespec *)ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_cancel(struct rs_ring *r, uint64_t target, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_cancel64(sqe, target, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_openat(struct rs_ring *r, int dirfd, const char *path, int flags, mode_t mode,
                   uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_openat(sqe, dirfd, path, flags, mode);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_statx(struct rs_ring *r, int dirfd, const char *path, int flags, unsigned mask,
                  struct statx *stx, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_statx(sqe, dirfd, path, flags, mask, stx);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_linkat(struct rs_ring *r, int olddirfd, const char *oldpath, int newdirfd,
                   const char *newpath, int flags, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_linkat(sqe, olddirfd, oldpath, newdirfd, newpath, flags);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_renameat(struct rs_ring *r, int olddirfd, const char *oldpath, int newdirfd,
                     const char *newpath, unsigned flags, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_renameat(sqe, olddirfd, oldpath, newdirfd, newpath, flags);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_unlinkat(struct rs_ring *r, int dirfd, const char *path, int flags, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_unlinkat(sqe, dirfd, path, flags);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_fgetxattr(struct rs_ring *r, int fd, const char *name, void *value, size_t len,
                      uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_fgetxattr(sqe, fd, name, value, (unsigned)len);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_fsetxattr(struct rs_ring *r, int fd, const char *name, const void *value, size_t len,
                      int flags, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_fsetxattr(sqe, fd, name, value, flags, (unsigned)len);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_close(struct rs_ring *r, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(r);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_close(sqe, fd);
    sqe->flags |= IOSQE_ASYNC; /* see ring.h: the last fput runs in io-wq, not here */
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int rs_ring_wait(struct rs_ring *r, rs_ring_cqe_fn fn, void *ctx)
{
    struct io_uring_cqe *cqe;
    struct rs_ring_cqe c;
    unsigned head, n = 0;
    int ret;

    do {
        ret = io_uring_submit_and_wait(r->ring, 1);
    } while (ret == -EINTR);
    if (ret < 0 && ret != -EBUSY && ret != -ETIME)
        return ret;
    io_uring_for_each_cqe(r->ring, head, cqe) {
        c.user_data = cqe->user_data;
        c.res = cqe->res;
        c.flags = 0;
        c.bid = 0;
        if (cqe->flags & IORING_CQE_F_MORE)
            c.flags |= RS_RING_F_MORE;
        if (cqe->flags & IORING_CQE_F_NOTIF)
            c.flags |= RS_RING_F_NOTIF;
        if (cqe->flags & IORING_CQE_F_BUFFER) {
            c.flags |= RS_RING_F_BUFFER;
            c.bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        }
        fn(ctx, &c);
        n++;
    }
    io_uring_cq_advance(r->ring, n);
    return (int)n;
}
