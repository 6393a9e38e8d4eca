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
 * reports -ECANCELED. A step that finds no ring slot mid-chain reports RS_STORE_OP_NOSLOT;
 * its clean-up (close, unlink) then falls back to a plain syscall on the worker rather than
 * leak an fd or leave a name behind. */
#ifndef RS_WORKERS_BULK_STOREOP_H
#define RS_WORKERS_BULK_STOREOP_H
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include "core/call.h"
#include "workers/bulk/store.h"

#define RS_STORE_OP_NOSLOT (-ENOBUFS) /* no free ring slot: not an errno of the syscalls used */

struct rs_store_op;
typedef void (*rs_store_op_cb)(struct rs_call *call, struct rs_store_op *op, int res);

struct rs_store_op {
    const struct rs_store *st; /* borrowed; outlives the op */
    rs_store_op_cb done;
    void *arg;                 /* the handler's; the op never touches it */
    struct rs_store_meta meta; /* result of _stat, _stat_key, _open and _delete */
    bool direct;               /* result of _create: the new fd has O_DIRECT */
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
    struct statx stx;
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
 * the call ended before it. res: 0, -EEXIST, or -errno. The handler fsyncs objects/ afterwards
 * (rs_store_dirfd()) to make the new name durable. */
int rs_store_op_publish(struct rs_call *call, struct rs_store_op *op, int fd, const char *key,
                        bool overwrite);
/* Removes |name|'s object and fills op->meta with the metadata of exactly the version removed:
 * it is first renamed aside (RENAME_NOREPLACE to a fresh del- name), so a concurrent overwrite
 * cannot slip in, then read, then unlinked. Once renamed, the unlink happens even if the call
 * ends. res: 0, -ENOENT, another -errno, or -EBADMSG: the object was removed but its metadata
 * was unreadable (op->meta undefined). */
int rs_store_op_delete(struct rs_call *call, struct rs_store_op *op, const char *name, size_t len);

/* Closes |fd| through the ring without waiting for it (the call stays alive until it is
 * done); when no ring slot is free, a plain close() on the worker. Never fails to close. */
void rs_store_close_fd(struct rs_call *call, int fd);

#endif /* RS_WORKERS_BULK_STOREOP_H */
