/* workers/bulk/index.h: the bulk store's sorted index of object names, for List.
 *
 * The objects (objects/<key> with their xattr, store.h) are the source of truth; the index is
 * a sorted set of their names kept beside them (<data>/index.mdb, an LMDB B-tree) so that List
 * can walk names in ascending byte order from any point, holding one batch at a time. Why LMDB,
 * how writes avoid blocking the workers and how the index stays right across kill -9: the
 * comment at the top of index.c.
 *
 * Invariant (while running): every object that exists has its name in the index, from the
 * moment rs_index_add() returned for its publish (and again at every start). The index may
 * briefly hold names whose object is gone (a Delete's recheck is queued, not done yet): List
 * stats every name it sends and skips those, handing them back to rs_index_recheck().
 *
 * Thread-safe: every function but _open and _close may be called from any worker at once.
 * Only rs_index_add() takes LMDB's writer lock on the caller's thread; no call here makes a
 * file-system syscall on the caller's thread (LMDB's map is read and written as memory). */
#ifndef RS_WORKERS_BULK_INDEX_H
#define RS_WORKERS_BULK_INDEX_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "workers/bulk/name.h"

struct rs_index;

/* One name read from the index; name is NUL-terminated (valid names hold no NUL). */
struct rs_index_name {
    size_t len;
    char name[RS_BULK_NAME_MAX + 1];
};

/* Opens (creating when missing) the index of the store whose data directory is |data_dir|
 * and whose objects/ directory is |objfd| (borrowed; must stay open until rs_index_close()).
 * When the last stop was not clean (no clean marker), or the index cannot be opened, the
 * index is rebuilt from objects/ before this returns, and one line says how many names it
 * holds and how long that took. Blocking: call it once at startup, before the workers run.
 * Starts the index's recheck thread. Returns 0 and *out (owned, release with
 * rs_index_close()), or -errno with a one-line reason in |err|. */
int rs_index_open(struct rs_index **out, const char *data_dir, int objfd, char *err, size_t errlen);
/* Finishes the queued rechecks, stops the thread, syncs the index and marks it clean, so the
 * next start trusts it. Call it after the workers stopped. Accepts NULL. */
void rs_index_close(struct rs_index *ix);

/* The object |name| was just published (call it after the link or rename succeeded, before
 * answering the client). Returns 0, or -errno after logging it: the index is then marked
 * broken (List answers UNAVAILABLE until a restart rebuilds it). */
int rs_index_add(struct rs_index *ix, const char *name, size_t len);
/* |name|'s object may be gone (a Delete ended, or List found no object for the name): queues
 * it for the index thread, which removes the name if the object is absent. Never blocks on
 * I/O; when the queue is full the request is dropped (List skips and requeues stale names). */
void rs_index_recheck(struct rs_index *ix, const char *name, size_t len);

/* Reads up to |max| names that begin with |prefix| (|plen| bytes, any bytes), in ascending
 * byte order, starting at |from| (|from_len| bytes; |after|: strictly after it). Returns the
 * number read into |out| (fewer than |max|: no more), -EIO when the index is broken, or
 * another -errno. */
ssize_t rs_index_scan(struct rs_index *ix, const char *prefix, size_t plen, const char *from,
                      size_t from_len, bool after, struct rs_index_name *out, size_t max);

/* For tests: names in the index (stale ones included), or -errno. */
ssize_t rs_index_count(struct rs_index *ix);
/* For tests: waits until every queued recheck is done. */
void rs_index_settle(struct rs_index *ix);

#endif /* RS_WORKERS_BULK_INDEX_H */
