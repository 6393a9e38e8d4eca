/* core/pool.c: per-worker block pool (see core/pool.h). */
#include "core/pool.h"
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

int rs_pool_init(struct rs_pool *p, size_t block_size, size_t max_blocks, size_t max_cached)
{
    if (block_size == 0 || max_blocks == 0 || block_size > SIZE_MAX - sizeof(struct rs_block))
        return -EINVAL;
    p->block_size = block_size;
    p->max_blocks = max_blocks;
    p->max_cached = max_cached;
    p->nlive = 0;
    p->ncached = 0;
    rs_list_init(&p->free);
    return 0;
}

void rs_pool_fini(struct rs_pool *p)
{
    struct rs_list *e, *next;

    assert(p->nlive == p->ncached); /* every block taken was put back */
    for (e = p->free.next; e != &p->free; e = next) {
        next = e->next;
        free(rs_container_of(e, struct rs_block, link));
    }
    rs_list_init(&p->free);
    p->nlive = 0;
    p->ncached = 0;
}

struct rs_block *rs_pool_get(struct rs_pool *p)
{
    struct rs_block *b;

    if (!rs_list_empty(&p->free)) {
        /* Most recently put first: its memory is the likeliest to be in cache. */
        b = rs_container_of(p->free.next, struct rs_block, link);
        rs_list_unlink(&b->link);
        p->ncached--;
    } else {
        if (p->nlive >= p->max_blocks)
            return NULL;
        b = malloc(sizeof(*b) + p->block_size);
        if (b == NULL)
            return NULL;
        rs_list_init(&b->link);
        b->size = p->block_size;
        p->nlive++;
    }
    b->head = 0;
    b->tail = 0;
    return b;
}

void rs_pool_put(struct rs_pool *p, struct rs_block *b)
{
    assert(!rs_list_linked(&b->link));
    assert(p->nlive > p->ncached);
    if (p->ncached < p->max_cached) {
        rs_list_insert_head(&p->free, &b->link);
        p->ncached++;
        return;
    }
    free(b);
    p->nlive--;
}

size_t rs_pool_bytes_in_use(const struct rs_pool *p)
{
    return (p->nlive - p->ncached) * p->block_size;
}
