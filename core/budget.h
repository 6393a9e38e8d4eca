/* core/budget.h: one memory budget per worker, shared by its connections, each capped at a
 * share. One worker only (no locking).
 *
 * Everything a peer can make the server hold is charged here while it is held: receive
 * buffers (a stream's partial and undelivered messages), send queues (pool blocks), memory a
 * handler keeps for a call (decompressed messages, Put staging, HalfDuplexCall's queue), and
 * a connection's own buffers. A charge names the connection (its account) and the worker (the
 * budget); it fails when either would go over, so one connection cannot take the whole worker
 * and the worker never goes past its budget whatever its connections do.
 *
 * As the worker's budget fills, the server degrades in a fixed order, never by OOM:
 *   RS_BUDGET_OK         below half: full windows;
 *   RS_BUDGET_SHRINK     from half: new streams get a smaller receive window;
 *   RS_BUDGET_REFUSE     from 3/4: new streams are refused (REFUSED_STREAM, clients retry) to
 *                        connections holding more than an eighth of their share;
 *   RS_BUDGET_NO_ACCEPT  from 7/8: no new connections are accepted.
 * A connection over its share is treated as RS_BUDGET_REFUSE whatever the worker's level. */
#ifndef RS_CORE_BUDGET_H
#define RS_CORE_BUDGET_H
#include <stddef.h>
#include <stdint.h>

enum rs_budget_level {
    RS_BUDGET_OK = 0,
    RS_BUDGET_SHRINK,
    RS_BUDGET_REFUSE,
    RS_BUDGET_NO_ACCEPT,
};

/* Why something was refused; counters for logs and metrics. */
enum rs_budget_refusal {
    RS_BUDGET_R_WORKER = 0, /* a charge would pass the worker's budget */
    RS_BUDGET_R_SHARE,      /* a charge would pass the connection's share */
    RS_BUDGET_R_STREAM,     /* a new stream was refused (REFUSED_STREAM) */
    RS_BUDGET_R_ACCEPT,     /* a connection was not accepted */
    RS_BUDGET_R_COUNT
};

struct rs_budget {
    size_t limit; /* bytes the worker may hold on behalf of peers; fixed at init */
    size_t share; /* most one connection may hold; fixed at init, <= limit */
    size_t used;  /* invariant: used <= limit; the sum of every account's used */
    size_t peak;  /* highest |used| seen */
    uint64_t refused[RS_BUDGET_R_COUNT];
};

/* One connection's account; zero it to initialise. */
struct rs_budget_acct {
    size_t used; /* invariant: used <= budget share */
};

/* Returns 0, or -EINVAL when |limit| is 0 or |share| is 0 or above |limit|. */
int rs_budget_init(struct rs_budget *b, size_t limit, size_t share);
/* Charges |n| bytes to |a| and |b|. The last eighth of the budget is only for connections
 * that hold at most an eighth of their share after the charge (light ones, e.g. a bystander's
 * small calls). Returns 0, or (nothing charged)
 *   -ENOBUFS  the worker's budget would be passed (or its last eighth, by a heavy connection);
 *   -EDQUOT   the connection's share would be passed. */
int rs_budget_charge(struct rs_budget *b, struct rs_budget_acct *a, size_t n);
/* Gives back |n| bytes charged earlier to |a| (asserted: never more than charged). */
void rs_budget_release(struct rs_budget *b, struct rs_budget_acct *a, size_t n);
/* The worker's level now. */
enum rs_budget_level rs_budget_level(const struct rs_budget *b);
/* May |a|'s connection open a new stream? Not when it holds its whole share, nor from the
 * refusal level on when it holds more than an eighth of its share (lighter connections, such as
 * a bystander's small calls, still get streams). Counts a refusal when not. */
int rs_budget_admit_stream(struct rs_budget *b, const struct rs_budget_acct *a);
/* May the worker accept a connection? Counts a refusal when not. */
int rs_budget_admit_conn(struct rs_budget *b);
/* The receive window for a new stream: |full| below half the budget, then shrinking linearly
 * to |min| at the refusal level (never below |min|, never above |full|). */
size_t rs_budget_stream_window(const struct rs_budget *b, size_t full, size_t min);
/* A default budget for a worker: a quarter of physical memory split over |workers|, at least
 * 64 MiB and at most 4 GiB each. |mem_total| is physical memory in bytes (0: unknown, which
 * gives 256 MiB). */
size_t rs_budget_default(uint64_t mem_total, unsigned workers);

#endif /* RS_CORE_BUDGET_H */
