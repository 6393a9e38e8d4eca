/* core/timerheap.c: binary min-heap of timers; see core/timerheap.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include "core/timerheap.h"

void rs_timerheap_init(struct rs_timerheap *h)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
    h->seq = 0;
}

void rs_timerheap_free(struct rs_timerheap *h)
{
    size_t i;

    for (i = 0; i < h->n; i++)
        h->v[i]->idx = RS_TIMER_NONE;
    free(h->v);
    rs_timerheap_init(h);
}

void rs_timer_init(struct rs_timer *t)
{
    t->expiry = 0;
    t->seq = 0;
    t->idx = RS_TIMER_NONE;
}

static bool before(const struct rs_timer *a, const struct rs_timer *b)
{
    return a->expiry < b->expiry || (a->expiry == b->expiry && a->seq < b->seq);
}

static void place(struct rs_timerheap *h, size_t i, struct rs_timer *t)
{
    h->v[i] = t;
    t->idx = i;
}

static void sift_up(struct rs_timerheap *h, size_t i)
{
    struct rs_timer *t = h->v[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!before(t, h->v[parent]))
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(struct rs_timerheap *h, size_t i)
{
    struct rs_timer *t = h->v[i];

    for (;;) {
        size_t child = 2 * i + 1;

        if (child >= h->n)
            break;
        if (child + 1 < h->n && before(h->v[child + 1], h->v[child]))
            child++;
        if (!before(h->v[child], t))
            break;
        place(h, i, h->v[child]);
        i = child;
    }
    place(h, i, t);
}

int rs_timerheap_add(struct rs_timerheap *h, struct rs_timer *t, uint64_t expiry)
{
    if (t->idx != RS_TIMER_NONE)
        return -EALREADY;
    if (h->n == h->cap) {
        size_t cap = h->cap == 0 ? 64 : h->cap * 2;
        struct rs_timer **v = realloc(h->v, cap * sizeof(*v));

        if (v == NULL)
            return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    t->expiry = expiry;
    t->seq = h->seq++;
    h->v[h->n] = t;
    t->idx = h->n++;
    sift_up(h, t->idx);
    return 0;
}

void rs_timerheap_remove(struct rs_timerheap *h, struct rs_timer *t)
{
    size_t i = t->idx;
    struct rs_timer *last;

    if (i == RS_TIMER_NONE || i >= h->n || h->v[i] != t)
        return;
    t->idx = RS_TIMER_NONE;
    last = h->v[--h->n];
    if (i == h->n)
        return;
    place(h, i, last);
    if (i > 0 && before(last, h->v[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

struct rs_timer *rs_timerheap_peek(const struct rs_timerheap *h)
{
    return h->n > 0 ? h->v[0] : NULL;
}

struct rs_timer *rs_timerheap_pop_expired(struct rs_timerheap *h, uint64_t now)
{
    struct rs_timer *t = rs_timerheap_peek(h);

    if (t == NULL || t->expiry > now)
        return NULL;
    rs_timerheap_remove(h, t);
    return t;
}
