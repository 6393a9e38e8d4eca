/* workers/bulk/storeop.h: the bulk store's metadata steps, run on a call's ring.
 *
 * What a request does to the store's metadata (open an object, read or write its xattr,
 * statx, link, rename, unlink, close) is a short chain of ring operations driven by their
 * completions (rs_call_openat() and friends, core/call.h): a slow or contended file system
 * then delays the call that waits for it, never the other connections of its worker. One
 * struct rs_store_op runs one chain at a time; the layout it works on is in store.h.
 *
 * Ownership: an op lives in the handler's per-call state (rs_call_state()), which outlives
 * every completion of the call. The paths, names, xattr value and struct statx the ring
 * borrows are inside it, so a busy op must stay where it is.
 *
 * Completion: a start function returns 0, after which |done| runs exactly once, on the worker,
 * from a ring completion (never from inside the start function); or it returns a negative
 * code and |done| never runs:
 *   RS_STORE_OP_NOSLOT  no free ring slot on this worker;
 *   -ENOMEM, -EIO       hashing the name or drawing a temporary name failed;
 *   -EINVAL             (rs_store_op_set_meta) a name of a bad length.
 * When |done| runs, the op is idle again (|done| may start the next chain on it) and has
 * released all it took: an fd it opened is closed unless |res| hands it over, a temporary name
 * is removed. A chain that sees its call has ended stops at its next step, cleans up and
 * reports -ECANCELED. A step that finds no ring slot mid-chain reports RS_STORE_OP_NOSLOT.
 * Every close is issued from a completion, so the slot that completion just gave back is there
 * for it: a close never runs on the worker thread (the last close of an unnamed or deleted
 * file frees its blocks, which can take long).
 *
 * Publish and status agree: _publish and _delete call rs_call_commit_begin() (core/call.h)
 * right before the step that makes the change visible (the linkat or rename of a publish, the
 * rename aside of a delete), and abandon the chain with -ECANCELED, changing nothing, when the
 * core has already ended the call (deadline, client reset, drain). Past that step the chain
 * runs to its end even if the call ends, so the change is also made durable (objects/ is
 * fsynced).
 *
 * Fault points (core/fault.h; compiled in only with RS_FAULT_INJECTION, configured with
 * RS_FAULTS="point=action..."). Each sits in front of one ring op: "delay:MS" waits on a ring
 * timer before issuing it (never a blocking sleep), an errno replaces the op's result (the op
 * is not issued, so nothing changes), "short" makes a read or write transfer half (the
 * handler must move the rest):
 *   put.write        Put and Upload: a pwrite of staged data (delay, short, errno)
 *   put.fsync        Put: the fsync of the unnamed file before it is published (delay, errno)
 *   put.link         Put: the linkat that publishes a new name (delay, errno)
 *   put.rename       Put with overwrite: the rename over the old version (delay, errno)
 *   put.dirsync      Put: the fsync of objects/ after the publish (delay, errno)
 *   store.create     Put: the openat(O_TMPFILE) of the unnamed file (delay, errno)
 *   store.setxattr   Put: the fsetxattr of the metadata (delay, errno)
 *   store.open       Stat, Get, Delete, List: the openat of an object (delay, errno)
 *   get.read         Get: a pread or preadv of a chunk of the object (delay, short, errno)
 *   store.getxattr   Stat, Delete, List: the fgetxattr of the metadata (delay, errno)
 *   delete.rename    Delete: the rename aside that removes the name (delay, errno)
 *   delete.unlink    Delete: the unlink of the renamed-aside file (delay, errno)
 *   delete.dirsync   Delete: the fsync of objects/ that makes the delete durable (delay, errno)
 */
#ifndef RS_WORKERS_BULK_STOREOP_H
#define RS_WORKERS_BULK_STOREOP_H
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include "core/call.h"
#include "workers/bulk/store.h"

#define RS_STORE_OP_NOSLOT (-ENOBUFS) /* no free ring slot: not an errno of the syscalls used */

/* One fault point in front of one ring op (see the list above). */
struct rs_store_fault {
    int err;        /* the rule's -errno, or 0 */
    uint64_t delay; /* ns */
    bool short_io;  /* the issuer moves half */
    int (*issue)(struct rs_call *call, void *arg);
    rs_call_io_cb cb;
    void *arg;
};

struct rs_store_op;
typedef void (*rs_store_op_cb)(struct rs_call *call, struct rs_store_op *op, int res);

struct rs_store_op {
    const struct rs_store *st; /* borrowed; outlives the op */
    rs_store_op_cb done;
    void *arg;                 /* the handler's; the op never touches it */
    struct rs_store_meta meta; /* result of _stat, _stat_key, _open and _delete */
    bool direct;               /* result of _create: the new fd has O_DIRECT */
    bool removed; /* result of _delete: the name is gone (renamed aside), whatever res says */
    /* private: the chain in progress; every buffer below is borrowed by the ring */
    bool busy;
    bool overwrite;
    int kind;
    int fd;           /* opened by the chain and not handed over; -1 when none */
    int res;          /* the result, kept while the chain cleans up */
    int xres;         /* _open: what fgetxattr answered */
    int sres;         /* _open: what statx answered */
    unsigned pending; /* _open: of fgetxattr and statx, those in flight */
    unsigned tries;   /* _publish: temporary names tried */
    const char *path; /* the name in objects/ the metadata is read from: key or aux */
    size_t want_len;  /* the name the metadata must carry (want), 0: any */
    char want[RS_BULK_NAME_MAX + 1];
    char key[RS_STORE_KEY_LEN + 1];
    char aux[RS_STORE_AUX_LEN + 1];
    char src[32]; /* "/proc/self/fd/<fd>": linkat's way to name an unnamed file */
    uint8_t xattr[RS_STORE_META_MAX];
    size_t xlen; /* _set_meta: bytes of |xattr| to write */
    struct statx stx;
    struct rs_store_fault fault; /* the fault point of the step in flight */
};

/* Prepares an idle op; allocates nothing. |st| is borrowed; |done| and |arg| as above. */
void rs_store_op_init(struct rs_store_op *op, const struct rs_store *st, rs_store_op_cb done,
                      void *arg);
/* True from a successful start until |done| runs. */
bool rs_store_op_busy(const struct rs_store_op *op);

/* statx of the object file |key|. res: 1 when it exists, 0 when not, or -errno. */
int rs_store_op_exists(struct rs_call *call, struct rs_store_op *op, const char *key);
/* Reads the metadata of |name|'s object into op->meta, never its data (openat O_NOFOLLOW,
 * fgetxattr, close). res: 0, -ENOENT, -EBADMSG (metadata missing, corrupt or another name's;
 * a symlink where the object should be), or -errno. |name| is copied. */
int rs_store_op_stat(struct rs_call *call, struct rs_store_op *op, const char *name, size_t len);
/* As rs_store_op_stat() for the object file |key| (found by readdir), whatever name its
 * metadata carries. |key| is copied. */
int rs_store_op_stat_key(struct rs_call *call, struct rs_store_op *op, const char *key);
/* Opens |name|'s object for reading, reads its metadata into op->meta and checks it against
 * the file's size (fgetxattr and statx on the new fd, in parallel). res: the fd, owned by the
 * handler from then on (close it with rs_store_close_fd()); or -ENOENT, -EBADMSG (metadata
 * missing, corrupt, another name's, or disagreeing with the size), or -errno. */
int rs_store_op_open(struct rs_call *call, struct rs_store_op *op, const char *name, size_t len);
/* Creates an unnamed file in objects/ (O_TMPFILE|O_RDWR), with O_DIRECT where the file system
 * has it (op->direct; see rs_store_buffered()). res: the fd, owned by the handler from then
 * on; or -errno. */
int rs_store_op_create(struct rs_call *call, struct rs_store_op *op);
/* Writes |m| (encoded now; |m| is not borrowed) as the metadata of the file |fd|, which must
 * stay open until |done|. res: 0 or -errno. */
int rs_store_op_set_meta(struct rs_call *call, struct rs_store_op *op, int fd,
                         const struct rs_store_meta *m);
/* Gives the unnamed file |fd| (open until |done|) the name |key|. Without |overwrite|: one
 * linkat(), which never replaces, so of concurrent publishers exactly one wins and the others
 * get -EEXIST. With it: a link under a fresh tmp- name, then one rename over |key| (the old
 * version, if any, is replaced atomically), and the tmp- name removed if the rename fails or
 * the call ended before it. The visible step is bracketed by rs_call_commit_begin(): res
 * -ECANCELED means the call had ended and nothing was published. res: 0, -EEXIST, -ECANCELED,
 * or -errno. The handler fsyncs objects/ afterwards (rs_store_dirfd()) to make the new name
 * durable, even when the call ended after a successful publish. */
int rs_store_op_publish(struct rs_call *call, struct rs_store_op *op, int fd, const char *key,
                        bool overwrite);
/* Removes |name|'s object and fills op->meta with the metadata of exactly the version removed:
 * it is first renamed aside (RENAME_NOREPLACE to a fresh del- name), so a concurrent overwrite
 * cannot slip in, then read, then unlinked, and objects/ is fsynced, so an acknowledged delete
 * survives a power loss. The rename is the visible step (rs_call_commit_begin() before it:
 * the start function returns -ECANCELED, changing nothing, when the call has ended). Once
 * renamed, the chain runs to its end even if the call ends; an unlink that fails then only
 * leaves a del- name, removed at the next start (logged), not an error. res: 0, -ENOENT,
 * another -errno (of the rename: nothing changed; of the directory fsync: deleted but maybe
 * not durable), or -EBADMSG: the object was removed but its metadata was unreadable (op->meta
 * undefined). */
int rs_store_op_delete(struct rs_call *call, struct rs_store_op *op, const char *name, size_t len);

/* Closes |fd| through the ring without waiting for it (the call stays alive until it is
 * done). Returns 0, or -ENOMEM: no ring slot, |fd| is still open and still the caller's. Never
 * closes on the worker thread: call it from a completion (its slot was just given back), or
 * hold a slot for it ahead (rs_store_keep_arm()). */
int rs_store_close_fd(struct rs_call *call, int fd);

/* A ring slot held for a later close: a long timer that stays in flight until the call ends
 * (the core then cancels it). Its completion, with the call done, is where the holder closes
 * the fd it keeps, in the slot the timer gave back. Arm it from a completion, right after
 * taking the fd. |cb| runs as for rs_call_timer(); it re-arms with rs_store_keep_arm() when
 * |res| is 0 and the call is not done (the timer expired). Returns 0 or -ENOMEM/-ECANCELED. */
int rs_store_keep_arm(struct rs_call *call, rs_call_io_cb cb, void *arg);

/* Issues one ring op through fault point |point|: |issue| starts it (with |cb| and |arg| as
 * its completion) and returns 0 or a negative code. No rule fires: |issue| runs now. A delay:
 * a ring timer first, then |issue| (a failure then reaches |cb| as RS_STORE_OP_NOSLOT). An
 * error: |issue| never runs, |cb| gets the error from a timer's completion. "short":
 * |sf|->short_io is set before |issue| runs. |sf| is borrowed until |cb| runs; keep it beside
 * the op. Returns 0, what |issue| returned, or -ENOMEM (no slot for the timer). Without
 * RS_FAULT_INJECTION this is a call of |issue|. */
int rs_store_fault_run(struct rs_call *call, struct rs_store_fault *sf, const char *point,
                       int (*issue)(struct rs_call *call, void *arg), rs_call_io_cb cb, void *arg);

#endif /* RS_WORKERS_BULK_STOREOP_H */
