/* core/chunkq.h: bounded FIFO of byte blocks for one stream. One worker only. */
#ifndef RS_CORE_CHUNKQ_H
#define RS_CORE_CHUNKQ_H
#include <sys/types.h>
#include <sys/uio.h>
#include "core/list.h"

struct rs_pool;
struct rs_budget;
struct rs_budget_acct;
struct rs_chunkq {
    struct rs_list blocks; /* of struct rs_block, oldest first */
    size_t used;           /* bytes queued */
    size_t cap;            /* soft capacity, fixed at init; used <= cap except after _append */
    struct rs_pool *pool;  /* borrowed; must outlive the queue */
    struct rs_pool *small; /* borrowed or NULL: smaller blocks, for a message that fits one */
    struct rs_pool *tiny;  /* borrowed or NULL: smaller still, tried before |small| */
    /* memory accounting (core/budget.h): every block linked here is charged to |acct| and
     * |budget| for as long as it is linked; NULL = not accounted */
    struct rs_budget *budget;    /* borrowed; must outlive the queue */
    struct rs_budget_acct *acct; /* borrowed; must outlive the queue */
};

/* Allocates nothing. |pool| is borrowed. The queue is not accounted until
 * rs_chunkq_set_budget(). */
void rs_chunkq_init(struct rs_chunkq *q, size_t cap, struct rs_pool *pool);
/* Charges every block the queue takes from now on (one pool block size each) to |acct| and
 * |budget| (both borrowed), and releases the charge when the block leaves. Only on an empty
 * queue. */
void rs_chunkq_set_budget(struct rs_chunkq *q, struct rs_budget *budget,
                          struct rs_budget_acct *acct);
/* Lets an empty queue take its first block from |small| (borrowed, must outlive the queue,
 * blocks smaller than the main pool's) when everything being queued fits in one: a small
 * message then pins a small block, not a large one (a unary response of a few dozen bytes in
 * a 64 KiB block churns malloc and spreads RSS over the whole heap). Only on an empty queue. */
void rs_chunkq_set_small(struct rs_chunkq *q, struct rs_pool *small);
/* The same with |tiny| (blocks smaller than the small pool's when both are set), tried first: a
 * unary response of a few dozen bytes then pins a ~256-byte block, not a 1 KiB one. Only on an
 * empty queue. */
void rs_chunkq_set_tiny(struct rs_chunkq *q, struct rs_pool *tiny);
/* Copies up to min(len, cap - used) bytes in. Returns bytes taken (0 when full) or, when
 * nothing could be taken (|q| unchanged):
 *   -ENOMEM   pool exhausted;
 *   -ENOBUFS  the worker's memory budget is spent;
 *   -EDQUOT   the connection's share of it is spent. */
ssize_t rs_chunkq_push(struct rs_chunkq *q, const void *data, size_t len);
/* Copies all |len| bytes in, ignoring the capacity (the caller admits whole messages).
 * Returns 0, or -ENOMEM/-ENOBUFS/-EDQUOT (as rs_chunkq_push()) with |q| unchanged (blocks
 * taken are given back). */
int rs_chunkq_append(struct rs_chunkq *q, const void *data, size_t len);
/* Fills up to |n| views of queued bytes starting |off| bytes past the oldest byte and covering
 * at most |max| bytes. Returns the number of iovecs filled. Views stay valid until the bytes
 * they cover are consumed or the queue is freed (later pushes do not move them). */
size_t rs_chunkq_peek(const struct rs_chunkq *q, size_t off, size_t max, struct iovec *iov,
                      size_t n);
/* Drops |len| (<= used) oldest bytes, returning emptied blocks to the pool. */
void rs_chunkq_consume(struct rs_chunkq *q, size_t len);
/* Bytes of pool blocks the queue would hold after appending |len| more bytes (0: now). Whole
 * blocks count, so this is the memory the queue pins, not only the bytes it holds; a small
 * block counts as a main pool block (an upper bound). */
size_t rs_chunkq_footprint_after(const struct rs_chunkq *q, size_t len);
/* The most bytes an append may bring while the footprint stays within the capacity (the whole
 * capacity when the queue is empty). */
size_t rs_chunkq_admits(const struct rs_chunkq *q);
/* Links |b| (a block of q's pool, unlinked, bytes [head, tail) filled) at the end: its bytes
 * are queued without a copy. Ignores the capacity, as _append does. Returns 0 and takes
 * ownership, or -ENOBUFS/-EDQUOT (the charge failed) and the caller keeps |b|. */
struct rs_block;
int rs_chunkq_append_block(struct rs_chunkq *q, struct rs_block *b);
/* Returns every block to the pool; accepts an initialised empty queue. */
void rs_chunkq_free(struct rs_chunkq *q);

static inline size_t rs_chunkq_used(const struct rs_chunkq *q)
{
    return q->used;
}
static inline size_t rs_chunkq_room(const struct rs_chunkq *q)
{
    return q->used >= q->cap ? 0 : q->cap - q->used;
}

#endif /* RS_CORE_CHUNKQ_H */
