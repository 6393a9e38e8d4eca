/* core/chunkq.c: bounded FIFO of pool blocks (see core/chunkq.h). */
#include "core/chunkq.h"
#include "core/budget.h"
#include "core/pool.h"
#include <assert.h>
#include <errno.h>
#include <string.h>

void rs_chunkq_init(struct rs_chunkq *q, size_t cap, struct rs_pool *pool)
{
    rs_list_init(&q->blocks);
    q->used = 0;
    q->cap = cap;
    q->pool = pool;
    q->small = NULL;
    q->tiny = NULL;
    q->budget = NULL;
    q->acct = NULL;
}

void rs_chunkq_set_budget(struct rs_chunkq *q, struct rs_budget *budget,
                          struct rs_budget_acct *acct)
{
    assert(rs_list_empty(&q->blocks));
    q->budget = budget;
    q->acct = acct;
}

void rs_chunkq_set_small(struct rs_chunkq *q, struct rs_pool *small)
{
    assert(rs_list_empty(&q->blocks));
    assert(small == NULL || small->block_size < q->pool->block_size);
    q->small = small;
}

void rs_chunkq_set_tiny(struct rs_chunkq *q, struct rs_pool *tiny)
{
    assert(rs_list_empty(&q->blocks));
    assert(tiny == NULL || q->small == NULL || tiny->block_size < q->small->block_size);
    q->tiny = tiny;
}

/* The pool the blocks for |len| bytes about to be queued come from: the tiny or the small one
 * when they fit one such block, only into an empty queue (so a queue holds at most one tiny
 * or small block, at its front); else the main pool. */
static struct rs_pool *pick_pool(const struct rs_chunkq *q, size_t len)
{
    if (!rs_list_empty(&q->blocks))
        return q->pool;
    if (q->tiny != NULL && len <= q->tiny->block_size)
        return q->tiny;
    if (q->small != NULL && len <= q->small->block_size)
        return q->small;
    return q->pool;
}

/* A block for the queue from |pool|: charged first, then taken. NULL with *err set. */
static struct rs_block *take_block(struct rs_chunkq *q, struct rs_pool *pool, int *err)
{
    struct rs_block *b;
    int ret;

    if (q->budget != NULL) {
        ret = rs_budget_charge(q->budget, q->acct, pool->block_size);
        if (ret < 0) {
            *err = ret;
            return NULL;
        }
    }
    b = rs_pool_get(pool);
    if (b == NULL) {
        if (q->budget != NULL)
            rs_budget_release(q->budget, q->acct, pool->block_size);
        *err = -ENOMEM;
    }
    return b;
}

static void give_block(struct rs_chunkq *q, struct rs_block *b)
{
    size_t size = b->size;

    if (q->tiny != NULL && size == q->tiny->block_size)
        rs_pool_put(q->tiny, b);
    else if (q->small != NULL && size == q->small->block_size)
        rs_pool_put(q->small, b);
    else
        rs_pool_put(q->pool, b);
    if (q->budget != NULL)
        rs_budget_release(q->budget, q->acct, size);
}

static struct rs_block *last_block(const struct rs_chunkq *q)
{
    if (rs_list_empty(&q->blocks))
        return NULL;
    return rs_container_of(q->blocks.prev, struct rs_block, link);
}

/* Copies into the free space of |b| (never before its tail, so views do not move). */
static size_t fill_block(struct rs_block *b, const unsigned char *src, size_t len)
{
    size_t n = b->size - b->tail;

    if (n > len)
        n = len;
    memcpy(b->data + b->tail, src, n);
    b->tail += n;
    return n;
}

ssize_t rs_chunkq_push(struct rs_chunkq *q, const void *data, size_t len)
{
    const unsigned char *src = data;
    size_t want = rs_chunkq_room(q);
    size_t done = 0;
    struct rs_block *b;
    int err = 0;

    if (want > len)
        want = len;
    b = last_block(q);
    if (b != NULL)
        done = fill_block(b, src, want);
    while (done < want) {
        b = take_block(q, pick_pool(q, want), &err);
        if (b == NULL) {
            if (done == 0)
                return err;
            break;
        }
        rs_list_insert_tail(&q->blocks, &b->link);
        done += fill_block(b, src + done, want - done);
    }
    q->used += done;
    return (ssize_t)done;
}

int rs_chunkq_append(struct rs_chunkq *q, const void *data, size_t len)
{
    const unsigned char *src = data;
    struct rs_block *tail = last_block(q);
    size_t in_tail = tail != NULL ? tail->size - tail->tail : 0;
    struct rs_pool *pool = pick_pool(q, len);
    struct rs_list fresh;
    struct rs_list *e, *next;
    struct rs_block *b;
    size_t done = 0;
    size_t need;
    int err = 0;

    if (in_tail > len)
        in_tail = len;
    /* Take every block first, so a failure leaves |q| untouched. */
    rs_list_init(&fresh);
    for (need = len - in_tail; need > 0; need -= need < b->size ? need : b->size) {
        b = take_block(q, pool, &err);
        if (b == NULL)
            goto err_put_fresh;
        rs_list_insert_tail(&fresh, &b->link);
    }
    if (tail != NULL)
        done = fill_block(tail, src, in_tail);
    for (e = fresh.next; e != &fresh; e = next) {
        next = e->next;
        b = rs_container_of(e, struct rs_block, link);
        rs_list_unlink(e);
        rs_list_insert_tail(&q->blocks, e);
        done += fill_block(b, src + done, len - done);
    }
    assert(done == len);
    q->used += len;
    return 0;
err_put_fresh:
    for (e = fresh.next; e != &fresh; e = next) {
        next = e->next;
        rs_list_unlink(e);
        give_block(q, rs_container_of(e, struct rs_block, link));
    }
    return err;
}

size_t rs_chunkq_peek(const struct rs_chunkq *q, size_t off, size_t max, struct iovec *iov,
                      size_t n)
{
    const struct rs_list *e;
    size_t filled = 0;

    for (e = q->blocks.next; e != &q->blocks && filled < n && max > 0; e = e->next) {
        struct rs_block *b = rs_container_of(e, struct rs_block, link);
        size_t avail = b->tail - b->head;

        if (off >= avail) {
            off -= avail;
            continue;
        }
        avail -= off;
        if (avail > max)
            avail = max;
        iov[filled].iov_base = b->data + b->head + off;
        iov[filled].iov_len = avail;
        filled++;
        max -= avail;
        off = 0;
    }
    return filled;
}

void rs_chunkq_consume(struct rs_chunkq *q, size_t len)
{
    struct rs_list *e, *next;

    assert(len <= q->used);
    q->used -= len;
    for (e = q->blocks.next; e != &q->blocks && len > 0; e = next) {
        struct rs_block *b = rs_container_of(e, struct rs_block, link);
        size_t avail = b->tail - b->head;

        next = e->next;
        if (len < avail) {
            b->head += len;
            return;
        }
        len -= avail;
        rs_list_unlink(e);
        give_block(q, b);
    }
}

void rs_chunkq_free(struct rs_chunkq *q)
{
    struct rs_list *e, *next;

    for (e = q->blocks.next; e != &q->blocks; e = next) {
        next = e->next;
        rs_list_unlink(e);
        give_block(q, rs_container_of(e, struct rs_block, link));
    }
    q->used = 0;
}

/* Whole blocks held, and the unwritten end of the last one. Blocks linked by reference
 * (rs_chunkq_append_block) may be partly filled anywhere in the list, so count them. */
static size_t blocks_held(const struct rs_chunkq *q, size_t *slack)
{
    const struct rs_list *e;
    size_t n = 0;

    *slack = 0;
    for (e = q->blocks.next; e != &q->blocks; e = e->next)
        n++;
    if (n > 0)
        *slack = last_block(q)->size - last_block(q)->tail;
    return n;
}

size_t rs_chunkq_footprint_after(const struct rs_chunkq *q, size_t len)
{
    size_t bs = q->pool->block_size, slack, now = blocks_held(q, &slack) * bs;
    size_t over = len > slack ? len - slack : 0;

    return now + (over + bs - 1) / bs * bs;
}

size_t rs_chunkq_admits(const struct rs_chunkq *q)
{
    size_t bs = q->pool->block_size, slack, now = blocks_held(q, &slack) * bs;

    if (now == 0)
        return q->cap;
    return slack + (now >= q->cap ? 0 : (q->cap - now) / bs * bs);
}

int rs_chunkq_append_block(struct rs_chunkq *q, struct rs_block *b)
{
    int ret;

    assert(b->head <= b->tail && b->tail <= b->size && b->size == q->pool->block_size);
    if (q->budget != NULL) {
        ret = rs_budget_charge(q->budget, q->acct, b->size);
        if (ret < 0)
            return ret;
    }
    rs_list_insert_tail(&q->blocks, &b->link);
    q->used += b->tail - b->head;
    return 0;
}
