/* workers/bulk/storeop.c: see storeop.h.
 *
 * Each chain is a few completion callbacks named for the step that just finished. The last
 * thing a chain does is op_done(): after it the op may already run the handler's next chain,
 * so nothing touches |op| afterwards. */
#include "workers/bulk/storeop.h"
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "core/fault.h"
#include "core/log.h"

enum {
    OP_EXISTS = 1,
    OP_STAT,
    OP_OPEN,
    OP_CREATE,
    OP_SET_META,
    OP_PUBLISH,
    OP_DELETE,
};

/* Opening an object only to read its xattr: O_NOFOLLOW keeps lgetxattr()'s refusal of a
 * symlink, O_NONBLOCK keeps a FIFO planted in objects/ from holding an io-wq thread forever. */
#define META_OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
/* Opening an object to read its data (Get): as the old synchronous open. */
#define DATA_OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
#define TMPFILE_FLAGS   (O_TMPFILE | O_RDWR | O_CLOEXEC)
#define TMPFILE_MODE    0640

void rs_store_op_init(struct rs_store_op *op, const struct rs_store *st, rs_store_op_cb done,
                      void *arg)
{
    memset(op, 0, sizeof(*op));
    op->st = st;
    op->done = done;
    op->arg = arg;
    op->fd = -1;
}

bool rs_store_op_busy(const struct rs_store_op *op)
{
    return op->busy;
}

int rs_store_close_fd(struct rs_call *call, int fd)
{
    return rs_call_close(call, fd, NULL, NULL) < 0 ? -ENOMEM : 0;
}

/* Long enough never to matter: the timer is cancelled when the call ends. */
#define KEEP_NS (3600ull * 1000000000ull)

int rs_store_keep_arm(struct rs_call *call, rs_call_io_cb cb, void *arg)
{
    return rs_call_timer(call, KEEP_NS, cb, arg);
}

/* --- fault points ------------------------------------------------------------------------- */

static void on_fault_timer(struct rs_call *call, void *arg, int res)
{
    struct rs_store_fault *sf = arg;

    if (sf->err != 0) {
        sf->cb(call, sf->arg, sf->err); /* the op never ran: its result is the fault */
        return;
    }
    /* The delay is over, or the call ended during it: the op runs either way (it may be the
     * clean-up of a chain past its commit); its completion sees rs_call_is_done(). */
    (void)res;
    res = sf->issue(call, sf->arg);
    if (res < 0) /* -ECANCELED: a commit the call ended before (see commit()) */
        sf->cb(call, sf->arg, res == -ECANCELED ? -ECANCELED : RS_STORE_OP_NOSLOT);
}

int rs_store_fault_run(struct rs_call *call, struct rs_store_fault *sf, const char *point,
                       int (*issue)(struct rs_call *call, void *arg), rs_call_io_cb cb, void *arg)
{
    struct rs_fault f = { 0 };
    int ret;

    sf->err = 0;
    sf->delay = 0;
    sf->short_io = false;
    if (!rs_fault_hit(point, &f))
        return issue(call, arg);
    sf->err = f.err;
    sf->delay = f.delay_ns;
    sf->short_io = f.short_io != 0;
    if (sf->err == 0 && sf->delay == 0)
        return issue(call, arg); /* "short": the issuer halves its transfer */
    sf->issue = issue;
    sf->cb = cb;
    sf->arg = arg;
    ret = rs_call_timer(call, sf->delay > 0 ? sf->delay : 1, on_fault_timer, sf);
    if (ret == -ECANCELED && sf->err == 0)
        return issue(call, arg); /* the call is over: no delay for its clean-up */
    return ret < 0 ? -ENOMEM : 0;
}

static void begin(struct rs_store_op *op, int kind)
{
    assert(!op->busy);
    op->kind = kind;
    op->fd = -1;
    op->res = 0;
    op->pending = 0;
    op->tries = 0;
    op->want_len = 0;
    op->removed = false;
}

/* The chain's last step: nothing may touch |op| after the callback. */
static void op_done(struct rs_call *call, struct rs_store_op *op, int res)
{
    op->busy = false;
    op->done(call, op, res);
}

/* Closes the fd the chain holds, if any. Only from a completion, as the first op it issues:
 * the slot that completion gave back is free for the close. */
static void drop_fd(struct rs_call *call, struct rs_store_op *op)
{
    if (op->fd >= 0 && rs_store_close_fd(call, op->fd) < 0)
        rs_log_bug("bulk: no ring slot to close fd %d right after a completion", op->fd);
    op->fd = -1;
}

/* --- the aux name: removed, then the chain ends with op->res ---------------------------- */

static void on_aux_unlinked(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    /* A publish whose rename failed reports the rename's error; a tmp- name left by a failed
     * unlink is removed at the next start. */
    if (res < 0)
        rs_log_warn("bulk: removing %s: %s (removed at the next start)", op->aux, strerror(-res));
    op_done(call, op, op->res);
}

static void unlink_aux(struct rs_call *call, struct rs_store_op *op, int res)
{
    op->res = res;
    if (rs_call_unlinkat(call, rs_store_dirfd(op->st), op->aux, 0, on_aux_unlinked, op) == 0)
        return;
    /* No ring slot: never leave the name behind, even at the price of one blocking syscall. */
    on_aux_unlinked(call, op, unlinkat(rs_store_dirfd(op->st), op->aux, 0) < 0 ? -errno : 0);
}

/* --- exists ----------------------------------------------------------------------------- */

static void on_exists_statx(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    op_done(call, op, res == 0 ? 1 : res == -ENOENT ? 0 : res);
}

int rs_store_op_exists(struct rs_call *call, struct rs_store_op *op, const char *key)
{
    begin(op, OP_EXISTS);
    memcpy(op->key, key, sizeof(op->key));
    op->key[RS_STORE_KEY_LEN] = '\0';
    if (rs_call_statx(call, rs_store_dirfd(op->st), op->key, AT_SYMLINK_NOFOLLOW, STATX_TYPE,
                      &op->stx, on_exists_statx, op) < 0)
        return RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}

/* --- reading metadata: openat, fgetxattr, close (Stat, List, and Delete's middle) -------- */

static void delete_unlink(struct rs_call *call, struct rs_store_op *op, int res);

/* The metadata read is over with |res|: a Delete goes on to the unlink (the fd, if any, is
 * closed after it), the rest close the fd and end here. */
static void meta_end(struct rs_call *call, struct rs_store_op *op, int res)
{
    if (op->kind == OP_DELETE) {
        delete_unlink(call, op, res);
        return;
    }
    drop_fd(call, op);
    op_done(call, op, res);
}

static void on_meta_xattr(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;
    int ret;

    ret = rs_store_meta_decode(op->xattr, res, &op->meta);
    if (ret == 0 && op->want_len > 0)
        ret = rs_store_meta_check_name(&op->meta, op->want, op->want_len);
    meta_end(call, op, ret);
}

static int issue_meta_xattr(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    return rs_call_fgetxattr(call, op->fd, RS_STORE_XATTR, op->xattr, sizeof(op->xattr),
                             on_meta_xattr, op);
}

static void on_meta_open(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (res < 0) {
        meta_end(call, op, res == -ELOOP ? -EBADMSG : res); /* ELOOP: a symlink, not ours */
        return;
    }
    op->fd = res;
    if (rs_call_is_done(call) && op->kind != OP_DELETE) {
        meta_end(call, op, -ECANCELED);
        return;
    }
    if (rs_store_fault_run(call, &op->fault, "store.getxattr", issue_meta_xattr, on_meta_xattr,
                           op) < 0)
        meta_end(call, op, RS_STORE_OP_NOSLOT);
}

static int issue_meta_open(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    return rs_call_openat(call, rs_store_dirfd(op->st), op->path, META_OPEN_FLAGS, 0, on_meta_open,
                          op);
}

static int meta_start(struct rs_call *call, struct rs_store_op *op)
{
    return rs_store_fault_run(call, &op->fault, "store.open", issue_meta_open, on_meta_open, op);
}

static int want_name(struct rs_store_op *op, const char *name, size_t len)
{
    if (len == 0 || len > RS_BULK_NAME_MAX)
        return -EINVAL;
    memcpy(op->want, name, len);
    op->want[len] = '\0';
    op->want_len = len;
    return rs_store_key(name, len, op->key);
}

int rs_store_op_stat(struct rs_call *call, struct rs_store_op *op, const char *name, size_t len)
{
    int ret;

    begin(op, OP_STAT);
    ret = want_name(op, name, len);
    if (ret < 0)
        return ret;
    op->path = op->key;
    if (meta_start(call, op) < 0)
        return RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}

int rs_store_op_stat_key(struct rs_call *call, struct rs_store_op *op, const char *key)
{
    begin(op, OP_STAT);
    memcpy(op->key, key, sizeof(op->key));
    op->key[RS_STORE_KEY_LEN] = '\0';
    op->path = op->key;
    if (meta_start(call, op) < 0)
        return RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}

/* --- open for reading: openat, then fgetxattr and statx at once (Get) -------------------- */

static void open_check(struct rs_call *call, struct rs_store_op *op)
{
    int ret, fd;

    if (--op->pending > 0)
        return;
    /* The order of the checks, and so which error wins, is the synchronous code's. */
    ret = rs_store_meta_decode(op->xattr, op->xres, &op->meta);
    if (ret == 0)
        ret = rs_store_meta_check_name(&op->meta, op->want, op->want_len);
    if (ret == 0 && op->sres < 0)
        ret = op->sres;
    if (ret == 0 && op->stx.stx_size != op->meta.size)
        ret = -EBADMSG;
    if (ret == 0 && rs_call_is_done(call))
        ret = -ECANCELED;
    if (ret < 0) {
        drop_fd(call, op);
        op_done(call, op, ret);
        return;
    }
    /* Downloads read front to back: ask for the larger readahead window. Only advice, and it
     * only sets a flag on the open file (no I/O), so it stays a plain syscall. */
    (void)posix_fadvise(op->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    fd = op->fd;
    op->fd = -1; /* handed over */
    op_done(call, op, fd);
}

static void on_open_xattr(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    op->xres = res;
    open_check(call, op);
}

static void on_open_statx(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    op->sres = res;
    open_check(call, op);
}

static void on_open_open(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (res < 0) {
        op_done(call, op, res);
        return;
    }
    op->fd = res;
    if (rs_call_is_done(call)) {
        drop_fd(call, op);
        op_done(call, op, -ECANCELED);
        return;
    }
    if (rs_call_fgetxattr(call, op->fd, RS_STORE_XATTR, op->xattr, sizeof(op->xattr), on_open_xattr,
                          op) < 0) {
        drop_fd(call, op);
        op_done(call, op, RS_STORE_OP_NOSLOT);
        return;
    }
    op->pending = 2; /* the fgetxattr, and this function's hold until statx is queued */
    op->sres = RS_STORE_OP_NOSLOT;
    /* "" with AT_EMPTY_PATH: the fd itself, as fstat() */
    if (rs_call_statx(call, op->fd, "", AT_EMPTY_PATH, STATX_SIZE, &op->stx, on_open_statx, op) ==
        0)
        op->pending++;
    open_check(call, op); /* drops the hold; the fgetxattr's completion comes later */
}

static int issue_data_open(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    return rs_call_openat(call, rs_store_dirfd(op->st), op->key, DATA_OPEN_FLAGS, 0, on_open_open,
                          op);
}

int rs_store_op_open(struct rs_call *call, struct rs_store_op *op, const char *name, size_t len)
{
    int ret;

    begin(op, OP_OPEN);
    ret = want_name(op, name, len);
    if (ret < 0)
        return ret;
    if (rs_store_fault_run(call, &op->fault, "store.open", issue_data_open, on_open_open, op) < 0)
        return RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}

/* --- create: openat O_TMPFILE, with O_DIRECT first ---------------------------------------- */

static void on_create_open(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (res == -EINVAL && op->direct && !rs_call_is_done(call)) {
        /* A file system without O_DIRECT (tmpfs): buffered. */
        op->direct = false;
        if (rs_call_openat(call, rs_store_dirfd(op->st), ".", TMPFILE_FLAGS, TMPFILE_MODE,
                           on_create_open, op) < 0)
            op_done(call, op, RS_STORE_OP_NOSLOT);
        return;
    }
    if (res < 0) {
        op_done(call, op, res);
        return;
    }
    if (rs_call_is_done(call)) {
        op->fd = res; /* an unnamed file: nothing is left behind */
        drop_fd(call, op);
        op_done(call, op, -ECANCELED);
        return;
    }
    op_done(call, op, res);
}

static int issue_create(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    return rs_call_openat(call, rs_store_dirfd(op->st), ".", TMPFILE_FLAGS | O_DIRECT, TMPFILE_MODE,
                          on_create_open, op);
}

int rs_store_op_create(struct rs_call *call, struct rs_store_op *op)
{
    begin(op, OP_CREATE);
    op->direct = true;
    if (rs_store_fault_run(call, &op->fault, "store.create", issue_create, on_create_open, op) < 0)
        return RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}

/* --- set the metadata: fsetxattr ----------------------------------------------------------- */

static void on_set_meta(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    op->fd = -1; /* the caller's */
    op_done(call, op, res);
}

static int issue_set_meta(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    return rs_call_fsetxattr(call, op->fd, RS_STORE_XATTR, op->xattr, op->xlen, 0, on_set_meta, op);
}

int rs_store_op_set_meta(struct rs_call *call, struct rs_store_op *op, int fd,
                         const struct rs_store_meta *m)
{
    size_t n;

    begin(op, OP_SET_META);
    n = rs_store_meta_encode(m, op->xattr);
    if (n == 0)
        return -EINVAL;
    op->fd = fd; /* borrowed: the caller's, never closed by the op */
    op->xlen = n;
    if (rs_store_fault_run(call, &op->fault, "store.setxattr", issue_set_meta, on_set_meta, op) < 0)
        return RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}

/* --- publish: linkat, or linkat to a tmp- name and renameat ------------------------------- */

/* Right before the op that makes a change visible (so after any fault delay): 0 while the call
 * is open (the core then leaves ending it to the handler), -ECANCELED once it has ended. */
static int commit(struct rs_call *call)
{
    if (rs_call_is_done(call))
        return -ECANCELED;
    return rs_call_commit_begin(call);
}

static void on_publish_rename(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (res < 0) {
        unlink_aux(call, op, res);
        return;
    }
    op_done(call, op, 0);
}

static int issue_publish_rename(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    if (commit(call) < 0)
        return -ECANCELED;
    return rs_call_renameat(call, rs_store_dirfd(op->st), op->aux, rs_store_dirfd(op->st), op->key,
                            0, on_publish_rename, op);
}

static int link_aux(struct rs_call *call, struct rs_store_op *op);

static void on_publish_link(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;
    int ret;

    if (!op->overwrite) {
        op_done(call, op, res); /* -EEXIST: another upload of this name won */
        return;
    }
    if (res == -EEXIST && op->tries < 4 && !rs_call_is_done(call)) {
        ret = link_aux(call, op); /* a tmp- name collision: draw another */
        if (ret < 0)
            op_done(call, op, ret);
        return;
    }
    if (res < 0) {
        op_done(call, op, res);
        return;
    }
    /* The rename makes the new version visible: only while the call is still open (commit(),
     * in the issue function); otherwise the tmp- name goes and nothing is left. */
    ret = rs_store_fault_run(call, &op->fault, "put.rename", issue_publish_rename,
                             on_publish_rename, op);
    if (ret < 0)
        unlink_aux(call, op, ret == -ECANCELED ? -ECANCELED : RS_STORE_OP_NOSLOT);
}

static int link_aux(struct rs_call *call, struct rs_store_op *op)
{
    int ret = rs_store_aux_name(op->aux, "tmp-");

    if (ret < 0)
        return ret;
    op->tries++;
    if (rs_call_linkat(call, AT_FDCWD, op->src, rs_store_dirfd(op->st), op->aux, AT_SYMLINK_FOLLOW,
                       on_publish_link, op) < 0)
        return RS_STORE_OP_NOSLOT;
    return 0;
}

static int issue_publish_link(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    if (commit(call) < 0)
        return -ECANCELED;
    return rs_call_linkat(call, AT_FDCWD, op->src, rs_store_dirfd(op->st), op->key,
                          AT_SYMLINK_FOLLOW, on_publish_link, op);
}

int rs_store_op_publish(struct rs_call *call, struct rs_store_op *op, int fd, const char *key,
                        bool overwrite)
{
    begin(op, OP_PUBLISH);
    op->overwrite = overwrite;
    memcpy(op->key, key, sizeof(op->key));
    op->key[RS_STORE_KEY_LEN] = '\0';
    snprintf(op->src, sizeof(op->src), "/proc/self/fd/%d", fd);
    if (overwrite) {
        /* linkat cannot replace a name, rename can: link under a fresh name, rename over. */
        int ret = link_aux(call, op);

        if (ret < 0)
            return ret;
    } else {
        /* The linkat makes the object visible: only while the call is still open (commit(),
         * in the issue function). linkat never replaces: -EEXIST. */
        int ret = rs_store_fault_run(call, &op->fault, "put.link", issue_publish_link,
                                     on_publish_link, op);

        if (ret < 0)
            return ret == -ECANCELED ? -ECANCELED : RS_STORE_OP_NOSLOT;
    }
    op->busy = true;
    return 0;
}

/* --- delete: renameat aside (NOREPLACE), read the metadata, unlinkat, close, fsync objects/ -- */

static void on_delete_dirsync(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (res < 0) {
        rs_log_error("bulk: deleted an object, but syncing objects/ failed: %s", strerror(-res));
        op->res = res;
    }
    op_done(call, op, op->res);
}

static int issue_delete_dirsync(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    return rs_call_fsync(call, rs_store_dirfd(op->st), on_delete_dirsync, op);
}

static void delete_dirsync(struct rs_call *call, struct rs_store_op *op)
{
    if (rs_store_fault_run(call, &op->fault, "delete.dirsync", issue_delete_dirsync,
                           on_delete_dirsync, op) < 0)
        on_delete_dirsync(call, op, RS_STORE_OP_NOSLOT);
}

static void on_delete_closed(struct rs_call *call, void *arg, int res)
{
    (void)res; /* the fd is gone whatever close says */
    delete_dirsync(call, arg);
}

static void on_delete_unlinked(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;
    int fd = op->fd;

    /* The object is gone from its name since the rename; a del- name left behind is removed
     * at the next start and never seen by a request. */
    if (res < 0)
        rs_log_warn("bulk: removing %s: %s (removed at the next start)", op->aux, strerror(-res));
    op->fd = -1;
    if (fd >= 0 && rs_call_close(call, fd, on_delete_closed, op) == 0)
        return; /* the slot this completion gave back */
    if (fd >= 0)
        rs_log_bug("bulk: no ring slot to close fd %d right after a completion", fd);
    delete_dirsync(call, op);
}

static int issue_delete_unlink(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    return rs_call_unlinkat(call, rs_store_dirfd(op->st), op->aux, 0, on_delete_unlinked, op);
}

/* After the metadata read (|res|): remove the del- name. */
static void delete_unlink(struct rs_call *call, struct rs_store_op *op, int res)
{
    op->res = res;
    if (rs_store_fault_run(call, &op->fault, "delete.unlink", issue_delete_unlink,
                           on_delete_unlinked, op) < 0)
        on_delete_unlinked(call, op, RS_STORE_OP_NOSLOT);
}

static void on_delete_rename(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (res < 0) {
        op_done(call, op, res); /* nothing changed */
        return;
    }
    /* Nobody else can reach this version now: what we report is what we remove. Committed:
     * the chain runs to its end even if the call ends meanwhile. */
    op->removed = true;
    op->path = op->aux;
    if (meta_start(call, op) < 0)
        delete_unlink(call, op, RS_STORE_OP_NOSLOT);
}

static int issue_delete_rename(struct rs_call *call, void *arg)
{
    struct rs_store_op *op = arg;

    if (commit(call) < 0)
        return -ECANCELED;
    return rs_call_renameat(call, rs_store_dirfd(op->st), op->key, rs_store_dirfd(op->st), op->aux,
                            RENAME_NOREPLACE, on_delete_rename, op);
}

int rs_store_op_delete(struct rs_call *call, struct rs_store_op *op, const char *name, size_t len)
{
    int ret;

    begin(op, OP_DELETE);
    ret = want_name(op, name, len);
    if (ret == 0)
        ret = rs_store_aux_name(op->aux, "del-");
    if (ret < 0)
        return ret;
    /* The rename removes the name: only while the call is still open (commit(), in the issue
     * function). */
    ret = rs_store_fault_run(call, &op->fault, "delete.rename", issue_delete_rename,
                             on_delete_rename, op);
    if (ret < 0)
        return ret == -ECANCELED ? -ECANCELED : RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}
