/* core/fault.h: named fault-injection points for tests. Compiled in only when the build sets
 * RS_FAULT_INJECTION (CMake option of the same name, for test builds); in every other build
 * rs_fault_hit() is a constant 0 and the points cost nothing.
 *
 * Faults are configured once at startup from the environment variable RS_FAULTS (test builds
 * only), a comma-separated list of rules:
 *
 *     point=action[@N][xM]
 *
 *   point   a name used at a call site, e.g. "ring.sqe", "put.write", "store.fsync"
 *   action  an errno name in lower case (eio, enospc, edquot, erofs, eacces, enomem, ebusy,
 *           eagain, eintr), "short" (a short transfer: the site moves half of what it asked
 *           for), or "delay:MS" (the site waits MS milliseconds before completing)
 *   @N      skip the first N hits of the point (default 0)
 *   xM      fire on M hits after the skipped ones, then stop (default: every hit)
 *
 * Example: RS_FAULTS="put.write=enospc@3x1,ring.sqe=ebusy@100x5". Several rules may name the
 * same point; the first that fires wins. Counters are atomic: points may be hit from any
 * thread. */
#ifndef RS_CORE_FAULT_H
#define RS_CORE_FAULT_H
#include <stdint.h>

struct rs_fault {
    int err;           /* -errno to return, or 0 */
    uint64_t delay_ns; /* > 0: complete after this delay */
    int short_io;      /* 1: transfer half the bytes */
};

#ifdef RS_FAULT_INJECTION
/* Parses RS_FAULTS. Returns 0, or -EINVAL with the offending rule in |err|. Call once, before
 * threads start. Without RS_FAULTS, or an empty one, no point ever fires. */
int rs_fault_init(char *err, unsigned errlen);
/* Counts a hit of |point|; returns 1 and fills |out| (may be NULL) when a rule fires, else 0. */
int rs_fault_hit(const char *point, struct rs_fault *out);
/* Drops every rule (unit tests), then parses |spec| as RS_FAULTS would be. */
int rs_fault_set(const char *spec, char *err, unsigned errlen);
#define RS_FAULT_ENABLED 1
#else
static inline int rs_fault_init(char *err, unsigned errlen)
{
    (void)err;
    (void)errlen;
    return 0;
}
static inline int rs_fault_hit(const char *point, struct rs_fault *out)
{
    (void)point;
    (void)out;
    return 0;
}
#define RS_FAULT_ENABLED 0
#endif

#endif /* RS_CORE_FAULT_H */
