/* core/budget.c: see core/budget.h. */
#include "core/budget.h"
#include <assert.h>
#include <stdbool.h>
#include <errno.h>

int rs_budget_init(struct rs_budget *b, size_t limit, size_t share)
{
    unsigned i;

    if (limit == 0 || share == 0 || share > limit)
        return -EINVAL;
    b->limit = limit;
    b->share = share;
    b->used = 0;
    b->peak = 0;
    for (i = 0; i < RS_BUDGET_R_COUNT; i++)
        b->refused[i] = 0;
    return 0;
}

/* What is left of |cap| when |used| is taken, without wrapping. */
static size_t room(size_t cap, size_t used)
{
    return used < cap ? cap - used : 0;
}

int rs_budget_charge(struct rs_budget *b, struct rs_budget_acct *a, size_t n)
{
    if (n > b->limit - b->used) {
        b->refused[RS_BUDGET_R_WORKER]++;
        return -ENOBUFS;
    }
    if (n > b->share - a->used) {
        b->refused[RS_BUDGET_R_SHARE]++;
        return -EDQUOT;
    }
    /* The last eighth of the budget is kept for light connections (holding at most an eighth
     * of their share once charged): when attackers' shares add up to more than the budget, a
     * bystander's small calls still find memory. */
    if (n > room(b->share / 8, a->used) && n > room(b->limit - b->limit / 8, b->used)) {
        b->refused[RS_BUDGET_R_WORKER]++;
        return -ENOBUFS;
    }
    b->used += n;
    a->used += n;
    if (b->used > b->peak)
        b->peak = b->used;
    return 0;
}

void rs_budget_release(struct rs_budget *b, struct rs_budget_acct *a, size_t n)
{
    assert(n <= a->used && n <= b->used);
    a->used -= n;
    b->used -= n;
}

enum rs_budget_level rs_budget_level(const struct rs_budget *b)
{
    /* Compared as fractions of the limit without overflow: used/limit >= k/8. */
    size_t eighth = b->limit / 8;

    if (b->used >= b->limit - eighth)
        return RS_BUDGET_NO_ACCEPT;
    if (b->used >= b->limit - 2 * eighth)
        return RS_BUDGET_REFUSE;
    if (b->used >= b->limit / 2)
        return RS_BUDGET_SHRINK;
    return RS_BUDGET_OK;
}

int rs_budget_admit_stream(struct rs_budget *b, const struct rs_budget_acct *a)
{
    /* Near the budget only the connections that hold much are refused: one holding at most an
     * eighth of its share (a bystander making small calls) keeps getting streams, or a few
     * attackers parked at their shares would have every other client refused. */
    bool heavy = a->used > b->share / 8;

    if ((heavy && rs_budget_level(b) >= RS_BUDGET_REFUSE) || a->used >= b->share) {
        b->refused[RS_BUDGET_R_STREAM]++;
        return 0;
    }
    return 1;
}

int rs_budget_admit_conn(struct rs_budget *b)
{
    if (rs_budget_level(b) >= RS_BUDGET_NO_ACCEPT) {
        b->refused[RS_BUDGET_R_ACCEPT]++;
        return 0;
    }
    return 1;
}

size_t rs_budget_stream_window(const struct rs_budget *b, size_t full, size_t min)
{
    size_t half = b->limit / 2, refuse = b->limit - 2 * (b->limit / 8), span, into, win;

    if (min > full)
        min = full;
    if (b->used < half)
        return full;
    if (b->used >= refuse || refuse <= half)
        return min;
    /* linear from |full| at half the budget to |min| at the refusal level */
    span = refuse - half;
    into = b->used - half;
    win = full - (size_t)((double)(full - min) * ((double)into / (double)span));
    return win < min ? min : win;
}

size_t rs_budget_default(uint64_t mem_total, unsigned workers)
{
    const uint64_t lo = (uint64_t)64 << 20, hi = (uint64_t)4 << 30;
    uint64_t each;

    if (workers == 0)
        workers = 1;
    if (mem_total == 0)
        return (size_t)256 << 20;
    each = mem_total / 4 / workers;
    if (each < lo)
        each = lo;
    if (each > hi)
        each = hi;
    return (size_t)each;
}
