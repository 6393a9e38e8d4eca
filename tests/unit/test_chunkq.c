/* tests/unit/test_chunkq.c: the block pool and the bounded chunk queue over it. */
#include "core/chunkq.h"
#include "core/budget.h"
#include "core/pool.h"
#include "tests/unit/runner.h"
#include <errno.h>
#include <string.h>

/* Small blocks so block boundaries are easy to hit; 4 blocks so the pool is easy to exhaust. */
#define BS      16
#define NBLOCKS 4
#define NCACHE  2
#define QCAP    40

static struct rs_pool pool;
static struct rs_chunkq q;
static struct rs_chunkq q2; /* second queue on the same pool, cap large */
static unsigned char pattern[256];

static void setup(void)
{
    size_t i;

    for (i = 0; i < sizeof(pattern); i++)
        pattern[i] = (unsigned char)(i * 13 + 5);
    CU_ASSERT_EQUAL_FATAL(rs_pool_init(&pool, BS, NBLOCKS, NCACHE), 0);
    rs_chunkq_init(&q, QCAP, &pool);
    rs_chunkq_init(&q2, 1000, &pool);
}

static void teardown(void)
{
    rs_chunkq_free(&q);
    rs_chunkq_free(&q2);
    rs_pool_fini(&pool);
}

static size_t blocks_in_use(void)
{
    return pool.nlive - pool.ncached;
}

/* Gathers |len| bytes at |off| through peek, for comparing with the pattern. */
static size_t gather(const struct rs_chunkq *cq, size_t off, size_t len, unsigned char *out)
{
    struct iovec iov[16];
    size_t n = rs_chunkq_peek(cq, off, len, iov, 16);
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        memcpy(out + o, iov[i].iov_base, iov[i].iov_len);
        o += iov[i].iov_len;
    }
    return o;
}

static void test_pool_init_rejects_zero(void)
{
    struct rs_pool p;

    CU_ASSERT_EQUAL(rs_pool_init(&p, 0, 4, 1), -EINVAL);
    CU_ASSERT_EQUAL(rs_pool_init(&p, 16, 0, 1), -EINVAL);
    CU_ASSERT_EQUAL(rs_pool_init(&p, 16, 1, 0), 0);
    rs_pool_fini(&p);
}

static void test_pool_cap_and_reset(void)
{
    struct rs_block *b[NBLOCKS];
    size_t i;

    for (i = 0; i < NBLOCKS; i++) {
        b[i] = rs_pool_get(&pool);
        CU_ASSERT_PTR_NOT_NULL_FATAL(b[i]);
        CU_ASSERT_EQUAL(b[i]->head, 0);
        CU_ASSERT_EQUAL(b[i]->tail, 0);
        CU_ASSERT_FALSE(rs_list_linked(&b[i]->link));
    }
    CU_ASSERT_PTR_NULL(rs_pool_get(&pool));
    CU_ASSERT_EQUAL(pool.nlive, NBLOCKS);
    CU_ASSERT_EQUAL(rs_pool_bytes_in_use(&pool), NBLOCKS * BS);
    b[0]->head = 3;
    b[0]->tail = 9;
    rs_pool_put(&pool, b[0]);
    CU_ASSERT_EQUAL(rs_pool_bytes_in_use(&pool), (NBLOCKS - 1) * BS);
    /* The cached block comes back, reset. */
    CU_ASSERT_PTR_EQUAL(rs_pool_get(&pool), b[0]);
    CU_ASSERT_EQUAL(b[0]->head, 0);
    CU_ASSERT_EQUAL(b[0]->tail, 0);
    for (i = 0; i < NBLOCKS; i++)
        rs_pool_put(&pool, b[i]);
}

static void test_pool_cache_bound(void)
{
    struct rs_block *b[NBLOCKS];
    size_t i;

    for (i = 0; i < NBLOCKS; i++)
        b[i] = rs_pool_get(&pool);
    for (i = 0; i < NBLOCKS; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(b[i]);
        rs_pool_put(&pool, b[i]);
    }
    /* Two kept for reuse, two freed to malloc. */
    CU_ASSERT_EQUAL(pool.ncached, NCACHE);
    CU_ASSERT_EQUAL(pool.nlive, NCACHE);
    CU_ASSERT_EQUAL(rs_pool_bytes_in_use(&pool), 0);
    /* Freed blocks no longer count against the cap. */
    for (i = 0; i < NBLOCKS; i++) {
        b[i] = rs_pool_get(&pool);
        CU_ASSERT_PTR_NOT_NULL_FATAL(b[i]);
    }
    CU_ASSERT_EQUAL(pool.ncached, 0);
    CU_ASSERT_EQUAL(pool.nlive, NBLOCKS);
    for (i = 0; i < NBLOCKS; i++)
        rs_pool_put(&pool, b[i]);
}

static void test_pool_no_cache(void)
{
    struct rs_pool p;
    struct rs_block *b;

    CU_ASSERT_EQUAL_FATAL(rs_pool_init(&p, 8, 1, 0), 0);
    b = rs_pool_get(&p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NULL(rs_pool_get(&p));
    rs_pool_put(&p, b);
    CU_ASSERT_EQUAL(p.nlive, 0);
    CU_ASSERT_EQUAL(p.ncached, 0);
    rs_pool_fini(&p);
}

static void test_push_stops_at_capacity(void)
{
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 100), QCAP);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), QCAP);
    CU_ASSERT_EQUAL(rs_chunkq_room(&q), 0);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 1), 0);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), QCAP);
    CU_ASSERT_EQUAL(blocks_in_use(), 3); /* 16 + 16 + 8 */
}

static void test_push_zero_bytes(void)
{
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 0), 0);
    CU_ASSERT_EQUAL(blocks_in_use(), 0);
    CU_ASSERT_EQUAL(rs_chunkq_append(&q, pattern, 0), 0);
    CU_ASSERT_EQUAL(blocks_in_use(), 0);
    CU_ASSERT_TRUE(rs_list_empty(&q.blocks));
}

static void test_push_fills_tail_block_first(void)
{
    unsigned char out[32];

    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 3), 3);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern + 3, 3), 3);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern + 6, 10), 10);
    CU_ASSERT_EQUAL(blocks_in_use(), 1);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern + 16, 1), 1);
    CU_ASSERT_EQUAL(blocks_in_use(), 2);
    CU_ASSERT_EQUAL(gather(&q, 0, 17, out), 17);
    CU_ASSERT_EQUAL(memcmp(out, pattern, 17), 0);
}

static void test_push_pool_exhausted_enomem_unchanged(void)
{
    struct iovec iov[8];
    unsigned char out[64];

    CU_ASSERT_EQUAL(rs_chunkq_push(&q2, pattern, NBLOCKS * BS), NBLOCKS * BS);
    CU_ASSERT_PTR_NULL(rs_pool_get(&pool));
    CU_ASSERT_EQUAL(rs_chunkq_push(&q2, pattern, 1), -ENOMEM);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q2), NBLOCKS * BS);
    CU_ASSERT_EQUAL(rs_chunkq_peek(&q2, 0, 1000, iov, 8), NBLOCKS);
    CU_ASSERT_EQUAL(gather(&q2, 0, 1000, out), NBLOCKS * BS);
    CU_ASSERT_EQUAL(memcmp(out, pattern, NBLOCKS * BS), 0);
    /* A queue with no blocks at all is unchanged too. */
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 5), -ENOMEM);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), 0);
    CU_ASSERT_TRUE(rs_list_empty(&q.blocks));
}

static void test_push_partial_when_pool_runs_out(void)
{
    unsigned char out[64];

    /* 60 bytes: four blocks, the last with 4 bytes free. */
    CU_ASSERT_EQUAL(rs_chunkq_push(&q2, pattern, 60), 60);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q2, pattern + 60, 10), 4);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q2), 64);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q2, pattern, 1), -ENOMEM);
    CU_ASSERT_EQUAL(gather(&q2, 0, 64, out), 64);
    CU_ASSERT_EQUAL(memcmp(out, pattern, 64), 0);
}

static void test_pool_shared_between_queues(void)
{
    CU_ASSERT_EQUAL(rs_chunkq_push(&q2, pattern, 3 * BS), 3 * BS);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, QCAP), BS);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), BS);
}

static void test_append_ignores_capacity(void)
{
    unsigned char out[64];

    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 30), 30);
    CU_ASSERT_EQUAL(rs_chunkq_append(&q, pattern + 30, 20), 0);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), 50);
    CU_ASSERT_EQUAL(rs_chunkq_room(&q), 0);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 1), 0);
    CU_ASSERT_EQUAL(gather(&q, 0, 64, out), 50);
    CU_ASSERT_EQUAL(memcmp(out, pattern, 50), 0);
}

static void test_append_all_or_nothing(void)
{
    unsigned char out[64];

    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 10), 10);
    CU_ASSERT_EQUAL(blocks_in_use(), 1);
    /* 6 fit in the tail block; 54 more need 4 blocks, only 3 remain. */
    CU_ASSERT_EQUAL(rs_chunkq_append(&q, pattern + 10, 60), -ENOMEM);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), 10);
    CU_ASSERT_EQUAL(blocks_in_use(), 1);
    CU_ASSERT_EQUAL(pool.nlive, NCACHE + 1); /* blocks taken went back (cache holds 2) */
    CU_ASSERT_EQUAL(gather(&q, 0, 64, out), 10);
    CU_ASSERT_EQUAL(memcmp(out, pattern, 10), 0);
    /* Untouched tail block: a push still lands right after byte 10. */
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern + 10, 2), 2);
    CU_ASSERT_EQUAL(gather(&q, 0, 64, out), 12);
    CU_ASSERT_EQUAL(memcmp(out, pattern, 12), 0);
    /* 4 in the tail + 48 in exactly 3 blocks: fits the pool. */
    CU_ASSERT_EQUAL(rs_chunkq_append(&q, pattern + 12, 52), 0);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), 64);
    CU_ASSERT_EQUAL(blocks_in_use(), NBLOCKS);
    CU_ASSERT_EQUAL(gather(&q, 0, 64, out), 64);
    CU_ASSERT_EQUAL(memcmp(out, pattern, 64), 0);
    CU_ASSERT_EQUAL(rs_chunkq_append(&q, pattern, 1), -ENOMEM);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), 64);
}

static void test_peek_offsets_across_blocks(void)
{
    struct iovec iov[8];
    size_t off, max, n, i, total;

    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, QCAP), QCAP);
    n = rs_chunkq_peek(&q, 0, 1000, iov, 8);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_EQUAL(iov[0].iov_len, 16);
    CU_ASSERT_EQUAL(iov[1].iov_len, 16);
    CU_ASSERT_EQUAL(iov[2].iov_len, 8);
    n = rs_chunkq_peek(&q, 10, 20, iov, 8);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(iov[0].iov_len, 6);
    CU_ASSERT_EQUAL(iov[1].iov_len, 14);
    CU_ASSERT_EQUAL(memcmp(iov[0].iov_base, pattern + 10, 6), 0);
    CU_ASSERT_EQUAL(memcmp(iov[1].iov_base, pattern + 16, 14), 0);
    n = rs_chunkq_peek(&q, 16, 1000, iov, 8);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(iov[0].iov_len, 16);
    CU_ASSERT_EQUAL(memcmp(iov[0].iov_base, pattern + 16, 16), 0);
    CU_ASSERT_EQUAL(rs_chunkq_peek(&q, QCAP, 1000, iov, 8), 0);
    CU_ASSERT_EQUAL(rs_chunkq_peek(&q, QCAP + 5, 1000, iov, 8), 0);
    CU_ASSERT_EQUAL(rs_chunkq_peek(&q, 0, 0, iov, 8), 0);
    CU_ASSERT_EQUAL(rs_chunkq_peek(&q, 0, 1000, iov, 0), 0);
    n = rs_chunkq_peek(&q, 3, 1000, iov, 1);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(iov[0].iov_len, 13);
    /* Every (off, max) pair sees exactly the right bytes. */
    for (off = 0; off <= QCAP; off++) {
        for (max = 0; max <= QCAP + 2; max++) {
            n = rs_chunkq_peek(&q, off, max, iov, 8);
            total = 0;
            for (i = 0; i < n; i++) {
                CU_ASSERT_FATAL(iov[i].iov_len > 0);
                CU_ASSERT_EQUAL_FATAL(
                        memcmp(iov[i].iov_base, pattern + off + total, iov[i].iov_len), 0);
                total += iov[i].iov_len;
            }
            CU_ASSERT_EQUAL_FATAL(total, (max < QCAP - off ? max : QCAP - off));
        }
    }
}

static void test_peek_after_consume(void)
{
    struct iovec iov[4];
    size_t n;

    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 20), 20);
    rs_chunkq_consume(&q, 5);
    n = rs_chunkq_peek(&q, 0, 1000, iov, 4);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(iov[0].iov_len, 11);
    CU_ASSERT_EQUAL(memcmp(iov[0].iov_base, pattern + 5, 11), 0);
    n = rs_chunkq_peek(&q, 12, 1000, iov, 4);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(iov[0].iov_len, 3);
    CU_ASSERT_EQUAL(memcmp(iov[0].iov_base, pattern + 17, 3), 0);
}

static void test_views_survive_pushes(void)
{
    struct iovec before[4], after[4];
    size_t n, i;

    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 10), 10);
    n = rs_chunkq_peek(&q, 0, 1000, before, 4);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern + 10, 25), 25);
    CU_ASSERT_EQUAL(rs_chunkq_append(&q, pattern + 35, 20), 0);
    n = rs_chunkq_peek(&q, 0, 10, after, 4);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_PTR_EQUAL(after[0].iov_base, before[0].iov_base);
    CU_ASSERT_EQUAL(memcmp(before[0].iov_base, pattern, 10), 0);
    /* Consuming part of a block leaves the rest of its views in place. */
    rs_chunkq_consume(&q, 4);
    n = rs_chunkq_peek(&q, 0, 1000, after, 4);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    CU_ASSERT_PTR_EQUAL(after[0].iov_base, (unsigned char *)before[0].iov_base + 4);
    for (i = 0, n = 4; i < 4; i++)
        n += after[i].iov_len;
    CU_ASSERT_EQUAL(n, 55);
}

static void test_consume_returns_blocks(void)
{
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, QCAP), QCAP);
    CU_ASSERT_EQUAL(blocks_in_use(), 3);
    CU_ASSERT_EQUAL(rs_pool_bytes_in_use(&pool), 3 * BS);
    rs_chunkq_consume(&q, 0);
    CU_ASSERT_EQUAL(blocks_in_use(), 3);
    rs_chunkq_consume(&q, 15);
    CU_ASSERT_EQUAL(blocks_in_use(), 3);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), 25);
    rs_chunkq_consume(&q, 1);
    CU_ASSERT_EQUAL(blocks_in_use(), 2);
    CU_ASSERT_EQUAL(pool.ncached, 1);
    rs_chunkq_consume(&q, 20); /* across a boundary: second block goes, 4 left in the third */
    CU_ASSERT_EQUAL(blocks_in_use(), 1);
    CU_ASSERT_EQUAL(pool.ncached, NCACHE);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), 4);
    CU_ASSERT_EQUAL(rs_chunkq_room(&q), QCAP - 4);
    rs_chunkq_consume(&q, 4);
    CU_ASSERT_EQUAL(blocks_in_use(), 0);
    CU_ASSERT_EQUAL(rs_pool_bytes_in_use(&pool), 0);
    CU_ASSERT_EQUAL(pool.ncached, NCACHE);
    CU_ASSERT_EQUAL(pool.nlive, NCACHE); /* the third block did not fit the cache */
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), 0);
    CU_ASSERT_TRUE(rs_list_empty(&q.blocks));
}

static void test_consume_everything_at_once(void)
{
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 33), 33);
    rs_chunkq_consume(&q, 33);
    CU_ASSERT_EQUAL(blocks_in_use(), 0);
    CU_ASSERT_TRUE(rs_list_empty(&q.blocks));
    /* The queue is usable again and the cached blocks are reused. */
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 5), 5);
    CU_ASSERT_EQUAL(pool.ncached, NCACHE - 1);
}

static void test_free_on_empty_queue(void)
{
    struct rs_chunkq e;

    rs_chunkq_init(&e, 10, &pool);
    rs_chunkq_free(&e);
    rs_chunkq_free(&e);
    CU_ASSERT_EQUAL(rs_chunkq_used(&e), 0);
    CU_ASSERT_TRUE(rs_list_empty(&e.blocks));
    CU_ASSERT_EQUAL(pool.nlive, 0);
}

static void test_free_returns_every_block(void)
{
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, QCAP), QCAP);
    CU_ASSERT_EQUAL(rs_chunkq_append(&q, pattern, 20), 0);
    CU_ASSERT_EQUAL(blocks_in_use(), NBLOCKS);
    rs_chunkq_free(&q);
    CU_ASSERT_EQUAL(rs_chunkq_used(&q), 0);
    CU_ASSERT_TRUE(rs_list_empty(&q.blocks));
    CU_ASSERT_EQUAL(rs_pool_bytes_in_use(&pool), 0);
    CU_ASSERT_EQUAL(pool.ncached, NCACHE);
    CU_ASSERT_EQUAL(pool.nlive, NCACHE);
    CU_ASSERT_EQUAL(rs_chunkq_push(&q, pattern, 1), 1);
}

/* A message that fits a small block takes one (charged its own size), only into an empty queue;
 * what follows goes into main pool blocks after filling the small one. */
static void test_small_block_for_a_small_message(void)
{
    struct rs_pool small;
    struct rs_budget budget;
    struct rs_budget_acct acct = { 0 };
    struct rs_chunkq sq;
    unsigned char out[64];

    CU_ASSERT_EQUAL_FATAL(rs_pool_init(&small, 8, 4, 4), 0);
    CU_ASSERT_EQUAL_FATAL(rs_budget_init(&budget, 4096, 1024), 0);
    rs_chunkq_init(&sq, 1000, &pool);
    rs_chunkq_set_budget(&sq, &budget, &acct);
    rs_chunkq_set_small(&sq, &small);
    /* too big for a small block: main blocks, as before */
    CU_ASSERT_EQUAL(rs_chunkq_append(&sq, pattern, 9), 0);
    CU_ASSERT_EQUAL(small.nlive, 0);
    CU_ASSERT_EQUAL(acct.used, 1 * BS);
    rs_chunkq_consume(&sq, 9);
    CU_ASSERT_EQUAL(acct.used, 0);
    /* fits: one small block, charged 8 */
    CU_ASSERT_EQUAL(rs_chunkq_append(&sq, pattern, 6), 0);
    CU_ASSERT_EQUAL(small.nlive - small.ncached, 1);
    CU_ASSERT_EQUAL(blocks_in_use(), 0);
    CU_ASSERT_EQUAL(acct.used, 8);
    /* the queue is not empty: the next bytes fill the small block, then take main blocks */
    CU_ASSERT_EQUAL(rs_chunkq_push(&sq, pattern + 6, 4), 4);
    CU_ASSERT_EQUAL(small.nlive - small.ncached, 1);
    CU_ASSERT_EQUAL(blocks_in_use(), 1);
    CU_ASSERT_EQUAL(acct.used, 8 + BS);
    CU_ASSERT_EQUAL(gather(&sq, 0, 10, out), 10);
    CU_ASSERT_EQUAL(memcmp(out, pattern, 10), 0);
    /* the small block goes back to its own pool, the charge with it */
    rs_chunkq_consume(&sq, 10);
    CU_ASSERT_EQUAL(small.nlive, small.ncached);
    CU_ASSERT_EQUAL(blocks_in_use(), 0);
    CU_ASSERT_EQUAL(acct.used, 0);
    rs_chunkq_free(&sq);
    rs_pool_fini(&small);
}

/* With a tiny pool as well: a message that fits a tiny block takes one, one that fits only a
 * small block a small one, a bigger one main blocks; each block goes back to its own pool. */
static void test_tiny_block_before_small(void)
{
    struct rs_pool small, tiny;
    struct rs_budget budget;
    struct rs_budget_acct acct = { 0 };
    struct rs_chunkq sq;
    unsigned char out[64];

    CU_ASSERT_EQUAL_FATAL(rs_pool_init(&small, 8, 4, 4), 0);
    CU_ASSERT_EQUAL_FATAL(rs_pool_init(&tiny, 4, 4, 4), 0);
    CU_ASSERT_EQUAL_FATAL(rs_budget_init(&budget, 4096, 1024), 0);
    rs_chunkq_init(&sq, 1000, &pool);
    rs_chunkq_set_budget(&sq, &budget, &acct);
    rs_chunkq_set_small(&sq, &small);
    rs_chunkq_set_tiny(&sq, &tiny);
    /* fits a tiny block: one, charged 4 */
    CU_ASSERT_EQUAL(rs_chunkq_append(&sq, pattern, 3), 0);
    CU_ASSERT_EQUAL(tiny.nlive - tiny.ncached, 1);
    CU_ASSERT_EQUAL(small.nlive, 0);
    CU_ASSERT_EQUAL(acct.used, 4);
    /* the queue is not empty: the next bytes fill the tiny block, then take main blocks */
    CU_ASSERT_EQUAL(rs_chunkq_push(&sq, pattern + 3, 5), 5);
    CU_ASSERT_EQUAL(tiny.nlive - tiny.ncached, 1);
    CU_ASSERT_EQUAL(small.nlive, 0);
    CU_ASSERT_EQUAL(blocks_in_use(), 1);
    CU_ASSERT_EQUAL(acct.used, 4 + BS);
    CU_ASSERT_EQUAL(gather(&sq, 0, 8, out), 8);
    CU_ASSERT_EQUAL(memcmp(out, pattern, 8), 0);
    rs_chunkq_consume(&sq, 8);
    CU_ASSERT_EQUAL(tiny.nlive, tiny.ncached);
    CU_ASSERT_EQUAL(blocks_in_use(), 0);
    CU_ASSERT_EQUAL(acct.used, 0);
    /* too big for a tiny block, fits a small one */
    CU_ASSERT_EQUAL(rs_chunkq_push(&sq, pattern, 7), 7);
    CU_ASSERT_EQUAL(tiny.nlive - tiny.ncached, 0);
    CU_ASSERT_EQUAL(small.nlive - small.ncached, 1);
    CU_ASSERT_EQUAL(acct.used, 8);
    rs_chunkq_consume(&sq, 7);
    CU_ASSERT_EQUAL(small.nlive, small.ncached);
    /* too big for either: main blocks */
    CU_ASSERT_EQUAL(rs_chunkq_append(&sq, pattern, 9), 0);
    CU_ASSERT_EQUAL(tiny.nlive - tiny.ncached, 0);
    CU_ASSERT_EQUAL(small.nlive - small.ncached, 0);
    CU_ASSERT_EQUAL(acct.used, 1 * BS);
    rs_chunkq_free(&sq);
    CU_ASSERT_EQUAL(acct.used, 0);
    rs_pool_fini(&tiny);
    rs_pool_fini(&small);
}

static CU_TestInfo tests[] = {
    { "pool init rejects zero sizes", test_pool_init_rejects_zero },
    { "pool caps live blocks and resets reused ones", test_pool_cap_and_reset },
    { "pool cache is bounded", test_pool_cache_bound },
    { "pool without cache frees at once", test_pool_no_cache },
    { "push stops at capacity", test_push_stops_at_capacity },
    { "push and append of zero bytes take no block", test_push_zero_bytes },
    { "push fills the tail block first", test_push_fills_tail_block_first },
    { "pool exhausted: ENOMEM, queue unchanged", test_push_pool_exhausted_enomem_unchanged },
    { "push takes what fits when the pool runs out", test_push_partial_when_pool_runs_out },
    { "queues share the pool", test_pool_shared_between_queues },
    { "append ignores capacity", test_append_ignores_capacity },
    { "append is all or nothing", test_append_all_or_nothing },
    { "peek at offsets across blocks", test_peek_offsets_across_blocks },
    { "peek after a partial consume", test_peek_after_consume },
    { "views do not move on push", test_views_survive_pushes },
    { "consume returns emptied blocks", test_consume_returns_blocks },
    { "consume of everything empties the queue", test_consume_everything_at_once },
    { "free accepts an empty queue", test_free_on_empty_queue },
    { "free returns every block", test_free_returns_every_block },
    { "a small message takes a small block", test_small_block_for_a_small_message },
    { "a tiny message takes a tiny block before a small one", test_tiny_block_before_small },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "core/chunkq", NULL, NULL, setup, teardown, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
