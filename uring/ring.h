/* uring/ring.h: the io_uring layer. One ring per worker thread, used by that thread only.
 *
 * Callers never see liburing types: they queue operations tagged with a 64-bit user_data and
 * receive completions through rs_ring_wait(). user_data packs an op code, a generation and a
 * slot (see rs_ud_make()), never a bare pointer, so a completion for a connection or request
 * slot that has since been reused is detected instead of becoming a use-after-free. */
#ifndef RS_URING_RING_H
#define RS_URING_RING_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <linux/time_types.h>

struct io_uring;
struct io_uring_buf_ring;
struct statx;

struct rs_ring {
    struct io_uring *ring;        /* owned */
    struct io_uring_buf_ring *br; /* owned mmap of the provided-buffer ring, or NULL */
    uint8_t *bufs;                /* owned (mmap): nbufs * bufsize bytes of receive buffers */
    unsigned nbufs;               /* power of two */
    size_t bufsize;
    uint16_t bgid; /* buffer group id of |br| */
};

/* Completion flags forwarded from the CQE. */
enum {
    RS_RING_F_MORE = 1u << 0,   /* a multishot op stays armed */
    RS_RING_F_BUFFER = 1u << 1, /* |bid| names a provided buffer the caller must recycle */
    RS_RING_F_NOTIF = 1u << 2,  /* zero-copy send notification */
};

struct rs_ring_cqe {
    uint64_t user_data;
    int32_t res; /* bytes, fd, or -errno */
    unsigned flags;
    unsigned bid;
};

/* user_data = op << 56 | (gen & 0xffffff) << 32 | slot. */
static inline uint64_t rs_ud_make(unsigned op, uint32_t gen, uint32_t slot)
{
    return (uint64_t)op << 56 | (uint64_t)(gen & 0xffffffu) << 32 | slot;
}
static inline unsigned rs_ud_op(uint64_t ud)
{
    return (unsigned)(ud >> 56);
}
static inline uint32_t rs_ud_gen(uint64_t ud)
{
    return (uint32_t)(ud >> 32) & 0xffffffu;
}
static inline uint32_t rs_ud_slot(uint64_t ud)
{
    return (uint32_t)ud;
}

/* Checks that io_uring works here and has every opcode ringstream uses. Returns 0, or -errno
 * with one line in |err| naming the cause and the fix (io_uring_disabled sysctl, seccomp). */
int rs_ring_probe(char *err, size_t errlen);

/* Sets up a ring with SINGLE_ISSUER | DEFER_TASKRUN, to be used only by the calling thread.
 * Returns 0 or -errno (with a reason in |err|). */
int rs_ring_init(struct rs_ring *r, unsigned entries, char *err, size_t errlen);
/* Registers |nbufs| (a power of two) receive buffers of |bufsize| bytes as buffer group
 * |bgid|. Returns 0 or -errno. */
int rs_ring_bufs_init(struct rs_ring *r, uint16_t bgid, unsigned nbufs, size_t bufsize);
/* Tears everything down; accepts a zeroed ring. */
void rs_ring_fini(struct rs_ring *r);

/* View of provided buffer |bid|, valid until rs_ring_buf_recycle(r, bid). */
void *rs_ring_buf(struct rs_ring *r, unsigned bid);
void rs_ring_buf_recycle(struct rs_ring *r, unsigned bid);

/* Queue operations. Each returns 0, or -EBUSY when no SQE could be had even after submitting.
 * Pointers passed in are borrowed until the completion arrives. */
int rs_ring_accept_multishot(struct rs_ring *r, int fd, uint64_t ud);
/* One accept (no RS_RING_F_MORE): re-armed per connection, it queues behind the other rings'
 * accepts on a shared listening socket, which spreads connections over them. */
int rs_ring_accept(struct rs_ring *r, int fd, uint64_t ud);
int rs_ring_recv_multishot(struct rs_ring *r, int fd, uint64_t ud);
int rs_ring_sendmsg(struct rs_ring *r, int fd, const struct msghdr *msg, uint64_t ud);
/* Zero-copy sendmsg: the result CQE has RS_RING_F_MORE, then an RS_RING_F_NOTIF CQE with the
 * same user_data says the kernel is done with the buffers (not before). */
int rs_ring_sendmsg_zc(struct rs_ring *r, int fd, const struct msghdr *msg, uint64_t ud);
/* 1 when this kernel has IORING_OP_SENDMSG_ZC, 0 when not, -errno when the probe failed. */
int rs_ring_has_sendmsg_zc(void);
int rs_ring_read(struct rs_ring *r, int fd, void *buf, size_t len, uint64_t off, uint64_t ud);
/* preadv: |iov| (|iovcnt| entries) is borrowed until the completion. */
int rs_ring_readv(struct rs_ring *r, int fd, const struct iovec *iov, unsigned iovcnt, uint64_t off,
                  uint64_t ud);
int rs_ring_write(struct rs_ring *r, int fd, const void *buf, size_t len, uint64_t off,
                  uint64_t ud);
int rs_ring_fsync(struct rs_ring *r, int fd, uint64_t ud);
/* A relative timeout; |ts| borrowed until the completion (-ETIME when it fires). */
int rs_ring_timeout(struct rs_ring *r, const struct __kernel_timespec *ts, uint64_t ud);
/* Cancels every op whose user_data equals |target|; its own completion comes as |ud|. */
int rs_ring_cancel(struct rs_ring *r, uint64_t target, uint64_t ud);

/* File-system metadata, as the syscalls of the same names (openat, statx, linkat, renameat2,
 * unlinkat, fgetxattr, fsetxattr, close). Paths, xattr names and values and |stx| are borrowed
 * until the completion. res: the new fd (openat), the value's length (fgetxattr), else 0; or
 * -errno. The kernel runs the ones that may sleep in its io-wq threads ("iou-wrk"). */
int rs_ring_openat(struct rs_ring *r, int dirfd, const char *path, int flags, mode_t mode,
                   uint64_t ud);
int rs_ring_statx(struct rs_ring *r, int dirfd, const char *path, int flags, unsigned mask,
                  struct statx *stx, uint64_t ud);
int rs_ring_linkat(struct rs_ring *r, int olddirfd, const char *oldpath, int newdirfd,
                   const char *newpath, int flags, uint64_t ud);
/* |flags| as renameat2(): 0, RENAME_NOREPLACE or RENAME_EXCHANGE. */
int rs_ring_renameat(struct rs_ring *r, int olddirfd, const char *oldpath, int newdirfd,
                     const char *newpath, unsigned flags, uint64_t ud);
int rs_ring_unlinkat(struct rs_ring *r, int dirfd, const char *path, int flags, uint64_t ud);
int rs_ring_fgetxattr(struct rs_ring *r, int fd, const char *name, void *value, size_t len,
                      uint64_t ud);
int rs_ring_fsetxattr(struct rs_ring *r, int fd, const char *name, const void *value, size_t len,
                      int flags, uint64_t ud);
/* Always runs in an io-wq thread (IOSQE_ASYNC): when this is the file's last reference, its
 * release (truncating an unlinked file, a file system's flush on close) happens there and not
 * in the task work of the submitting thread. The fd stays open until the op runs. */
int rs_ring_close(struct rs_ring *r, int fd, uint64_t ud);

/* Submits queued SQEs, waits for at least one completion (or |timeout_ms| when >= 0), and calls
 * |fn| for every completion available, then marks them all seen. Returns the number handled,
 * or -errno (-EINTR is retried internally). */
typedef void (*rs_ring_cqe_fn)(void *ctx, const struct rs_ring_cqe *cqe);
int rs_ring_wait(struct rs_ring *r, rs_ring_cqe_fn fn, void *ctx);

#endif /* RS_URING_RING_H */
