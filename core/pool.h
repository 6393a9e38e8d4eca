/* core/pool.h: per-worker pool of fixed-size byte blocks. One worker only (no locking).
 *
 * Blocks are the only payload memory a stream's send queue holds. The pool caps how many
 * blocks exist at once (exhaustion is expected and fails one stream, never the process)
 * and keeps a bounded cache of free blocks so steady traffic does not hit malloc. */
#ifndef RS_CORE_POOL_H
#define RS_CORE_POOL_H
#include <stddef.h>
#include "core/list.h"

struct rs_block {
    struct rs_list link; /* in a chunkq, or in the pool's free cache */
    size_t head;         /* first unread byte of data[] */
    size_t tail;         /* one past the last written byte; head <= tail <= size */
    size_t size;         /* usable bytes of data[]: the block_size of the pool it came from */
    unsigned char data[];
};

struct rs_pool {
    size_t block_size; /* usable bytes per block (data[]), fixed at init */
    size_t max_blocks; /* cap on blocks alive at once (in use + cached) */
    size_t max_cached; /* cap on free blocks kept for reuse */
    size_t nlive;      /* blocks allocated and not yet freed to malloc */
    size_t ncached;    /* blocks on |free|; invariant: ncached <= max_cached, ncached <= nlive */
    struct rs_list free;
};

/* Allocates nothing. Returns 0, or -EINVAL when block_size or max_blocks is 0. */
int rs_pool_init(struct rs_pool *p, size_t block_size, size_t max_blocks, size_t max_cached);
/* Frees the cached blocks. Every block taken must have been put back (asserted). */
void rs_pool_fini(struct rs_pool *p);
/* Returns owned block with head == tail == 0, release with rs_pool_put(); NULL when
 * max_blocks are live or malloc failed. */
struct rs_block *rs_pool_get(struct rs_pool *p);
/* Takes ownership of |b| (must be unlinked); caches it or frees it. */
void rs_pool_put(struct rs_pool *p, struct rs_block *b);
/* Bytes held by blocks in use (not cached). */
size_t rs_pool_bytes_in_use(const struct rs_pool *p);

#endif /* RS_CORE_POOL_H */
