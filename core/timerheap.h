/* core/timerheap.h: a binary min-heap of timer entries ordered by expiry, for one worker.
 *
 * Each worker keeps every call timer (grpc-timeout deadlines, their grace, handler timers) in
 * one heap and arms a single ring timeout for the earliest expiry, so timers never hold a
 * slot of the worker's fixed I/O table. Entries are embedded in (or allocated for) their
 * owner; the heap only holds pointers to them. Equal expiries come out in insertion order.
 * Insert and remove are O(log n); the earliest is O(1). One thread only. */
#ifndef RS_CORE_TIMERHEAP_H
#define RS_CORE_TIMERHEAP_H
#include <stddef.h>
#include <stdint.h>

#define RS_TIMER_NONE ((size_t)-1) /* rs_timer.idx of an entry that is in no heap */

struct rs_timer {
    uint64_t expiry; /* any monotonic unit the owner chooses (the worker: ns) */
    uint64_t seq;    /* insertion order, breaks ties between equal expiries */
    size_t idx;      /* position in the heap, or RS_TIMER_NONE */
};

struct rs_timerheap {
    struct rs_timer **v; /* owned array of borrowed entries; v[0] is the earliest */
    size_t n;
    size_t cap;
    uint64_t seq; /* next insertion number */
};

/* Allocates nothing. */
void rs_timerheap_init(struct rs_timerheap *h);
/* Frees the array; the entries still in it are the owner's to free (they are left with idx
 * RS_TIMER_NONE). Accepts an initialised empty heap. */
void rs_timerheap_free(struct rs_timerheap *h);
/* Marks an entry as in no heap; call once before its first rs_timerheap_add(). */
void rs_timer_init(struct rs_timer *t);
/* Inserts |t| (borrowed until it is removed or popped) with |expiry|. Returns 0, or
 *   -EALREADY  |t| is already in a heap;
 *   -ENOMEM    the array could not grow; |h| unchanged. */
int rs_timerheap_add(struct rs_timerheap *h, struct rs_timer *t, uint64_t expiry);
/* Removes |t| if it is in |h|; harmless when it is not. */
void rs_timerheap_remove(struct rs_timerheap *h, struct rs_timer *t);
/* The earliest entry, or NULL when the heap is empty. View valid until the next change. */
struct rs_timer *rs_timerheap_peek(const struct rs_timerheap *h);
/* Removes and returns the earliest entry if its expiry is <= |now|, else NULL. */
struct rs_timer *rs_timerheap_pop_expired(struct rs_timerheap *h, uint64_t now);
static inline size_t rs_timerheap_count(const struct rs_timerheap *h)
{
    return h->n;
}

#endif /* RS_CORE_TIMERHEAP_H */
