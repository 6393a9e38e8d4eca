/* core/chunkq.h: bounded FIFO of byte blocks for one stream. One worker only. */
#ifndef RS_CORE_CHUNKQ_H
#define RS_CORE_CHUNKQ_H
#include <sys/types.h>
#include <sys/uio.h>
#include "core/list.h"

struct rs_pool;
struct rs_chunkq {
    struct rs_list blocks; /* of struct rs_block, oldest first */
    size_t used;           /* bytes queued */
    size_t cap;            /* soft capacity, fixed at init; used <= cap except after _append */
    struct rs_pool *pool;  /* borrowed; must outlive the queue */
};

/* Allocates nothing. |pool| is borrowed. */
void rs_chunkq_init(struct rs_chunkq *q, size_t cap, struct rs_pool *pool);
/* Copies up to min(len, cap - used) bytes in. Returns bytes taken (0 when full) or
 *   -ENOMEM  pool exhausted before anything was taken; |q| unchanged. */
ssize_t rs_chunkq_push(struct rs_chunkq *q, const void *data, size_t len);
/* Copies all |len| bytes in, ignoring the capacity (the caller admits whole messages).
 * Returns 0, or -ENOMEM with |q| unchanged (blocks taken are given back). */
int rs_chunkq_append(struct rs_chunkq *q, const void *data, size_t len);
/* Fills up to |n| views of queued bytes starting |off| bytes past the oldest byte and covering
 * at most |max| bytes. Returns the number of iovecs filled. Views stay valid until the bytes
 * they cover are consumed or the queue is freed (later pushes do not move them). */
size_t rs_chunkq_peek(const struct rs_chunkq *q, size_t off, size_t max, struct iovec *iov,
                      size_t n);
/* Drops |len| (<= used) oldest bytes, returning emptied blocks to the pool. */
void rs_chunkq_consume(struct rs_chunkq *q, size_t len);
/* Bytes of pool blocks the queue would hold after appending |len| more bytes (0: now). Whole
 * blocks count, so this is the memory the queue pins, not only the bytes it holds. */
size_t rs_chunkq_footprint_after(const struct rs_chunkq *q, size_t len);
/* The most bytes an append may bring while the footprint stays within the capacity (the whole
 * capacity when the queue is empty). */
size_t rs_chunkq_admits(const struct rs_chunkq *q);
/* Links |b| (a block of q's pool, unlinked, bytes [head, tail) filled) at the end: its bytes
 * are queued without a copy. Takes ownership; ignores the capacity, as _append does. */
struct rs_block;
void rs_chunkq_append_block(struct rs_chunkq *q, struct rs_block *b);
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
