/* tests/unit/fake_ring.h: a link-time substitute for uring/ring.c, for tests and fuzzing.
 *
 * A program linked with fake_ring.c instead of rs_uring gets every function of uring/ring.h,
 * but nothing reaches the kernel: each queued operation is recorded (kind, fd, user_data, and
 * for a sendmsg a copy of its iovecs), completions are CQEs the test posts, delivered by
 * rs_ring_wait() in the order posted, and provided receive buffers are plain test memory.
 * The state hangs off struct rs_ring (its opaque |ring| member), so there is no file-scope
 * state. One thread only, as the real ring. */
#ifndef RS_TESTS_FAKE_RING_H
#define RS_TESTS_FAKE_RING_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "uring/ring.h"

enum rs_fake_kind {
    RS_FAKE_ANY = 0, /* as a filter: every kind */
    RS_FAKE_ACCEPT,
    RS_FAKE_RECV,
    RS_FAKE_SENDMSG,
    RS_FAKE_SENDMSG_ZC,
    RS_FAKE_READ,
    RS_FAKE_WRITE,
    RS_FAKE_FSYNC,
    RS_FAKE_TIMEOUT,
    RS_FAKE_CANCEL,
    RS_FAKE_OPENAT,
    RS_FAKE_STATX,
    RS_FAKE_LINKAT,
    RS_FAKE_RENAMEAT,
    RS_FAKE_UNLINKAT,
    RS_FAKE_FGETXATTR,
    RS_FAKE_FSETXATTR,
    RS_FAKE_CLOSE,
};

/* One queued operation. |done| is set by rs_fake_ring_complete() (or, for a multishot op, by
 * a final completion without RS_RING_F_MORE). */
struct rs_fake_op {
    enum rs_fake_kind kind;
    int fd;
    uint64_t user_data;
    uint64_t target;   /* RS_FAKE_CANCEL: the user_data to cancel */
    struct iovec *iov; /* owned copy of a sendmsg's iovecs (the bytes themselves borrowed) */
    size_t iovcnt;
    uint64_t timeout_ns; /* RS_FAKE_TIMEOUT */
    bool done;
};

/* Sets up the fake's state ahead of rs_ring_init(), which then keeps it: failures can be armed
 * (rs_fake_ring_fail_next) for submissions made during a worker's setup. Returns 0 or -ENOMEM. */
int rs_fake_ring_prepare(struct rs_ring *r);

/* Number of operations recorded since rs_ring_init(), done or not. */
size_t rs_fake_ring_nops(struct rs_ring *r);
/* View of operation |i| (< nops), valid until the next queued operation. */
struct rs_fake_op *rs_fake_ring_op(struct rs_ring *r, size_t i);
/* Index of the first operation of |kind| (RS_FAKE_ANY: any) at or after |from| that is not
 * done, or -1. */
long rs_fake_ring_find(struct rs_ring *r, enum rs_fake_kind kind, size_t from);
/* Operations of |kind| not done yet. */
size_t rs_fake_ring_pending(struct rs_ring *r, enum rs_fake_kind kind);
/* Total bytes of a sendmsg's iovecs. */
size_t rs_fake_ring_op_bytes(const struct rs_fake_op *op);

/* The next |n| submissions of |kind| (RS_FAKE_ANY: of any kind) fail with -EBUSY, as when the
 * submission queue stays full. Nothing is recorded for a failed one. */
void rs_fake_ring_fail_next(struct rs_ring *r, enum rs_fake_kind kind, unsigned n);
/* Submissions that failed because of rs_fake_ring_fail_next(). */
unsigned rs_fake_ring_failed(struct rs_ring *r);

/* Posts a completion; rs_ring_wait() delivers it. Returns 0 or -ENOMEM. */
int rs_fake_ring_post(struct rs_ring *r, uint64_t user_data, int32_t res, unsigned flags,
                      unsigned bid);
/* Posts the completion of operation |i| with |res| (|flags| as RS_RING_F_*) and marks it done
 * unless |flags| has RS_RING_F_MORE. Returns 0 or -ENOMEM. */
int rs_fake_ring_complete(struct rs_ring *r, size_t i, int32_t res, unsigned flags);
/* Posts, for every cancel not done, -ECANCELED for the ops it names (marked done) and 0 for
 * itself (-ENOENT when nothing matched). Returns how many cancels ran. */
unsigned rs_fake_ring_run_cancels(struct rs_ring *r);
/* Completions posted and not yet delivered. */
size_t rs_fake_ring_posted(struct rs_ring *r);

/* Takes a free provided buffer, copies |len| (<= bufsize) bytes of |data| into it and returns
 * its id, or -1 when every buffer is in use (a real recv would end with -ENOBUFS). */
int rs_fake_ring_buf_fill(struct rs_ring *r, const void *data, size_t len);
/* Provided buffers handed out and not recycled yet. */
unsigned rs_fake_ring_bufs_in_use(struct rs_ring *r);
/* Calls of rs_ring_wait(). */
unsigned rs_fake_ring_waits(struct rs_ring *r);

#endif /* RS_TESTS_FAKE_RING_H */
