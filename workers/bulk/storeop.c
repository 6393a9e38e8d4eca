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

void rs_store_close_fd(struct rs_call *call, int fd)
{
    if (rs_call_close(call, fd, NULL, NULL) < 0)
        close(fd);
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
}

/* The chain's last step: nothing may touch |op| after the callback. */
static void op_done(struct rs_call *call, struct rs_store_op *op, int res)
{
    op->busy = false;
    op->done(call, op, res);
}

/* Closes the fd the chain holds, if any. */
static void drop_fd(struct rs_call *call, struct rs_store_op *op)
{
    if (op->fd >= 0)
        rs_store_close_fd(call, op->fd);
    op->fd = -1;
}

/* --- the aux name: removed, then the chain ends with op->res ---------------------------- */

static void on_aux_unlinked(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    /* A Delete reports a failed unlink (the object might still be there, aside); a publish
     * whose rename failed reports the rename's error, as the synchronous code did. */
    if (res < 0 && op->res == 0 && op->kind == OP_DELETE)
        op->res = res;
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

/* The metadata read is over with |res|: a Delete goes on to the unlink, the rest end here. */
static void meta_end(struct rs_call *call, struct rs_store_op *op, int res)
{
    if (op->kind == OP_DELETE)
        unlink_aux(call, op, res);
    else
        op_done(call, op, res);
}

static void on_meta_xattr(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;
    int ret;

    drop_fd(call, op);
    ret = rs_store_meta_decode(op->xattr, res, &op->meta);
    if (ret == 0 && op->want_len > 0)
        ret = rs_store_meta_check_name(&op->meta, op->want, op->want_len);
    meta_end(call, op, ret);
}

static void on_meta_open(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (res < 0) {
        meta_end(call, op, res == -ELOOP ? -EBADMSG : res); /* ELOOP: a symlink, not ours */
        return;
    }
    op->fd = res;
    if (rs_call_is_done(call)) {
        drop_fd(call, op);
        meta_end(call, op, -ECANCELED);
        return;
    }
    if (rs_call_fgetxattr(call, op->fd, RS_STORE_XATTR, op->xattr, sizeof(op->xattr), on_meta_xattr,
                          op) < 0) {
        drop_fd(call, op);
        meta_end(call, op, RS_STORE_OP_NOSLOT);
    }
}

static int meta_start(struct rs_call *call, struct rs_store_op *op)
{
    return rs_call_openat(call, rs_store_dirfd(op->st), op->path, META_OPEN_FLAGS, 0, on_meta_open,
                          op);
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

int rs_store_op_open(struct rs_call *call, struct rs_store_op *op, const char *name, size_t len)
{
    int ret;

    begin(op, OP_OPEN);
    ret = want_name(op, name, len);
    if (ret < 0)
        return ret;
    if (rs_call_openat(call, rs_store_dirfd(op->st), op->key, DATA_OPEN_FLAGS, 0, on_open_open,
                       op) < 0)
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
        rs_store_close_fd(call, res); /* an unnamed file: nothing is left behind */
        op_done(call, op, -ECANCELED);
        return;
    }
    op_done(call, op, res);
}

int rs_store_op_create(struct rs_call *call, struct rs_store_op *op)
{
    begin(op, OP_CREATE);
    op->direct = true;
    if (rs_call_openat(call, rs_store_dirfd(op->st), ".", TMPFILE_FLAGS | O_DIRECT, TMPFILE_MODE,
                       on_create_open, op) < 0)
        return RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}

/* --- set the metadata: fsetxattr ----------------------------------------------------------- */

static void on_set_meta(struct rs_call *call, void *arg, int res)
{
    op_done(call, arg, res);
}

int rs_store_op_set_meta(struct rs_call *call, struct rs_store_op *op, int fd,
                         const struct rs_store_meta *m)
{
    size_t n;

    begin(op, OP_SET_META);
    n = rs_store_meta_encode(m, op->xattr);
    if (n == 0)
        return -EINVAL;
    if (rs_call_fsetxattr(call, fd, RS_STORE_XATTR, op->xattr, n, 0, on_set_meta, op) < 0)
        return RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}

/* --- publish: linkat, or linkat to a tmp- name and renameat ------------------------------- */

static void on_publish_rename(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (res < 0) {
        unlink_aux(call, op, res);
        return;
    }
    op_done(call, op, 0);
}

static int link_aux(struct rs_call *call, struct rs_store_op *op);

static void on_publish_link(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (!op->overwrite) {
        op_done(call, op, res); /* -EEXIST: another upload of this name won */
        return;
    }
    if (res == -EEXIST && op->tries < 4 && !rs_call_is_done(call)) {
        int ret = link_aux(call, op); /* a tmp- name collision: draw another */

        if (ret < 0)
            op_done(call, op, ret);
        return;
    }
    if (res < 0) {
        op_done(call, op, res);
        return;
    }
    if (rs_call_is_done(call)) {
        unlink_aux(call, op, -ECANCELED); /* a cancelled upload leaves nothing */
        return;
    }
    if (rs_call_renameat(call, rs_store_dirfd(op->st), op->aux, rs_store_dirfd(op->st), op->key, 0,
                         on_publish_rename, op) < 0)
        unlink_aux(call, op, RS_STORE_OP_NOSLOT);
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
    } else if (rs_call_linkat(call, AT_FDCWD, op->src, rs_store_dirfd(op->st), op->key,
                              AT_SYMLINK_FOLLOW, on_publish_link, op) < 0) {
        return RS_STORE_OP_NOSLOT; /* linkat never replaces: -EEXIST */
    }
    op->busy = true;
    return 0;
}

/* --- delete: renameat aside (NOREPLACE), read the metadata, unlinkat ----------------------- */

static void on_delete_rename(struct rs_call *call, void *arg, int res)
{
    struct rs_store_op *op = arg;

    if (res < 0) {
        op_done(call, op, res);
        return;
    }
    /* Nobody else can reach this version now: what we report is what we remove. */
    if (rs_call_is_done(call)) {
        unlink_aux(call, op, -ECANCELED);
        return;
    }
    op->path = op->aux;
    if (meta_start(call, op) < 0)
        unlink_aux(call, op, RS_STORE_OP_NOSLOT);
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
    if (rs_call_renameat(call, rs_store_dirfd(op->st), op->key, rs_store_dirfd(op->st), op->aux,
                         RENAME_NOREPLACE, on_delete_rename, op) < 0)
        return RS_STORE_OP_NOSLOT;
    op->busy = true;
    return 0;
}
