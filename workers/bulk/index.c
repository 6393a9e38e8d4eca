/* workers/bulk/index.c: see index.h.
 *
 * DESIGN: why an LMDB index, and how it stays right.
 *
 * Need. List answers in ascending byte order of name with bounded memory. objects/ is in hash
 * order (the file name is the SHA-256 of the object name), so without an index every List has
 * to read the whole directory and hold every match before it can send the first one (31 MiB
 * per 100k objects). With a sorted index a List holds one batch of names, sends them, and
 * continues from the last name sent when the client has read them.
 *
 * Choice: LMDB (Debian's liblmdb, 0.9.24): an embedded copy-on-write B+tree in one file,
 * mapped read-only; readers take no lock and never block the writer or each other, which fits
 * workers that must not wait; one writer at a time (a process-shared mutex), fine for one short
 * write per publish; keys up to 511 bytes hold a 255-byte name; its default key order is
 * exactly the byte order the contract asks for (memcmp, a name before the longer names it
 * begins). The alternatives: a sorted file per directory batch merged on List (what we had,
 * unbounded), an in-memory tree rebuilt at every start (memory grows with the store, ~100
 * bytes a name, and a 1M store would take seconds to start every time), or SQLite (more
 * machinery, a statement per lookup, readers and writer share locks). LMDB wins on "bounded
 * memory, no locks on the read side, crash-proof file format, one Debian package".
 *
 * What is stored: key = name, value = an 8-byte sequence number of the insert (unique across
 * restarts: it starts from the wall clock in ns). No metadata: List stats each name it sends
 * (on the ring, as Stat does), so the objects stay the only source of size, SHA-256 and time,
 * and a racing overwrite can never make List show stale metadata.
 *
 * Writes and the worker rule ("a worker never blocks on a file-system syscall").
 * - Reads (List): LMDB reads are loads from its read-only map: page-cache reads, as allowed.
 * - rs_index_add() (a publish) runs on the worker: one write transaction with MDB_NOSYNC. It
 *   never fsyncs; its commit writes the few dirty pages (whole pages, so no read before
 *   write) and the meta page into the page cache, about 4 pwrite/writev calls (strace): 18-24
 *   us per add measured by perf/index_add on a loaded 2-core VM, against ~1.2 ms of server
 *   CPU per small Put (its data and directory fsyncs), within the noise of
 *   perf/put_small.py. We accept these two buffered writes on the worker rather than a thread
 *   hop because the Put must not be answered before its name is listed (Put then List must
 *   see it) and core/call.h has no way to wake a call from another thread; they block only
 *   under the kernel's dirty-page throttling, which then slows every writer, the Puts' data
 *   writes included. MDB_WRITEMAP would save the pwrites, but a page fault on a sparse map at
 *   ENOSPC is SIGBUS: a full disk must fail an index write (logged, index marked broken, List
 *   UNAVAILABLE until a restart rebuilds it), not kill the process.
 * - Removing names needs a stat of the object (is it really gone?), a file-system syscall, so
 *   it runs on the index thread: rs_index_recheck() queues a name (bounded queue, a mutex held
 *   for a copy), and the thread removes it when the object is absent. The thread's statx runs
 *   outside any LMDB transaction, so a worker's rs_index_add() never waits for disk: the
 *   thread reads the name's sequence number, stats, then deletes only if the number is
 *   unchanged (an add in between means a Put republished it).
 *
 * Crash safety (objects are the truth, the index must agree after kill -9 at any moment).
 * - Put: the object is linked first, then rs_index_add(), then the client is answered. A crash
 *   between the two leaves an object the index lacks: the rebuild below adds it.
 * - Delete: the object is removed first, then its name is rechecked. A crash between leaves a
 *   stale name, which List skips anyway and the rebuild drops.
 * - A clean marker, <data>/index.clean, exists only while the server is stopped cleanly: it is
 *   removed (and the removal synced) at start before any request is served, and written after
 *   the final mdb_env_sync() at a clean stop. A start without it (kill -9, power loss with
 *   unsynced MDB_NOSYNC pages, an index that does not open) deletes the index and rebuilds it
 *   from objects/ (readdir, one lgetxattr per object) before serving, and logs one line with
 *   the count and the time. The rebuild keeps only objects whose metadata names the object
 *   their file name is the key of, which is exactly the set Stat finds. */
#include "workers/bulk/index.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include "core/log.h"
#include "workers/bulk/store.h"

#define INDEX_FILE     "index.mdb"
#define INDEX_LOCK     "index.mdb-lock"
#define INDEX_CLEAN    "index.clean"
#define INDEX_MAP_SIZE (64ull << 30) /* address space only; the file grows as names arrive */
#define INDEX_READERS  512           /* reader slots: a List's read transaction is short */
#define RECHECK_CAP    1024          /* queued rechecks; more are dropped (see index.h) */
#define REBUILD_TXN    65536         /* names per write transaction while rebuilding */

struct rs_index {
    MDB_env *env; /* owned */
    MDB_dbi dbi;
    int objfd;                /* borrowed, objects/ */
    int datafd;               /* owned, the data directory (for the marker and its fsync) */
    atomic_bool broken;       /* a write failed: the index may lack names until a rebuild */
    atomic_uint_fast64_t seq; /* the next insert's sequence number */
    /* the recheck queue, a ring of names, and the thread that drains it */
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* work queued, or stopping */
    pthread_cond_t idle_cv;  /* the queue became empty and the thread idle */
    struct rs_index_name *q; /* owned, RECHECK_CAP entries */
    size_t qhead;
    size_t qlen;
    unsigned long dropped; /* rechecks dropped because the queue was full */
    bool busy;             /* the thread is working on a name it popped */
    bool stopping;
    bool has_thread;
    pthread_t thread;
};

static uint64_t now_ns(int clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* LMDB codes are positive (MDB_*) or errno values: keep errno values, map the rest. */
static int mdb_errno(int rc)
{
    if (rc > 0 && rc < 1000)
        return -rc;
    if (rc == MDB_MAP_FULL)
        return -ENOSPC;
    if (rc == MDB_READERS_FULL || rc == MDB_TXN_FULL)
        return -EAGAIN;
    return -EIO;
}

static void mark_broken(struct rs_index *ix, const char *doing, int rc)
{
    if (!atomic_exchange(&ix->broken, true))
        rs_log_error("bulk index: %s failed (%s): List answers UNAVAILABLE until a restart "
                     "rebuilds the index",
                     doing, mdb_strerror(rc));
}

static int put_name(MDB_txn *txn, MDB_dbi dbi, const char *name, size_t len, uint64_t seq)
{
    MDB_val k = { .mv_size = len, .mv_data = (void *)name };
    MDB_val v = { .mv_size = sizeof(seq), .mv_data = &seq };

    return mdb_put(txn, dbi, &k, &v, 0);
}

/* --- open, rebuild, close -------------------------------------------------------------- */

static int env_open(struct rs_index *ix, const char *path)
{
    MDB_txn *txn;
    int rc;

    rc = mdb_env_create(&ix->env);
    if (rc != 0)
        return rc;
    rc = mdb_env_set_mapsize(ix->env, INDEX_MAP_SIZE);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(ix->env, INDEX_READERS);
    if (rc == 0)
        rc = mdb_env_open(ix->env, path, MDB_NOSUBDIR | MDB_NOSYNC | MDB_NOMETASYNC | MDB_NOTLS,
                          0640);
    if (rc == 0)
        rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, NULL, 0, &ix->dbi);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    if (rc != 0) {
        mdb_env_close(ix->env);
        ix->env = NULL;
    }
    return rc;
}

/* Reads the metadata of objects/<key> and checks it is the object Stat would find under its
 * name. Returns 0 with the name in |m|, or -errno / -EBADMSG. */
static int rebuild_read(const struct rs_index *ix, const char *key, struct rs_store_meta *m)
{
    char path[sizeof("/proc/self/fd/") + 12 + 256]; /* d_name is up to 255 bytes */
    char want[RS_STORE_KEY_LEN + 1];
    uint8_t buf[RS_STORE_META_MAX];
    ssize_t n;
    int ret;

    snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", ix->objfd, key);
    n = lgetxattr(path, RS_STORE_XATTR, buf, sizeof(buf));
    ret = rs_store_meta_decode(buf, n < 0 ? -errno : (int)n, m);
    if (ret < 0)
        return ret;
    ret = rs_store_key(m->name, m->name_len, want);
    if (ret < 0)
        return ret;
    return strcmp(want, key) == 0 ? 0 : -EBADMSG;
}

/* Fills the empty index from objects/. Returns the count of names, or -errno. */
static ssize_t rebuild_fill(struct rs_index *ix, char *err, size_t errlen)
{
    struct rs_store_meta m;
    const struct dirent *e;
    MDB_txn *txn = NULL;
    ssize_t count = 0;
    size_t in_txn = 0;
    unsigned long skipped = 0;
    int fd, rc, ret;
    DIR *d;

    fd = openat(ix->objfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (d = fdopendir(fd)) == NULL) {
        ret = -errno;
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "bulk index: cannot read objects/: %s", strerror(-ret));
        return ret;
    }
    while ((errno = 0, e = readdir(d)) != NULL) {
        if (!rs_store_is_key(e->d_name))
            continue;
        ret = rebuild_read(ix, e->d_name, &m);
        if (ret == -ENOENT)
            continue;
        if (ret < 0) {
            skipped++;
            continue;
        }
        if (txn == NULL) {
            rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
            if (rc != 0)
                goto err_mdb;
        }
        rc = put_name(txn, ix->dbi, m.name, m.name_len, atomic_fetch_add(&ix->seq, 1));
        if (rc != 0)
            goto err_mdb;
        count++;
        if (++in_txn == REBUILD_TXN) {
            rc = mdb_txn_commit(txn);
            txn = NULL;
            in_txn = 0;
            if (rc != 0)
                goto err_mdb;
        }
    }
    if (errno != 0) {
        ret = -errno;
        snprintf(err, errlen, "bulk index: reading objects/: %s", strerror(-ret));
        goto err_abort;
    }
    if (txn != NULL) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
        if (rc != 0)
            goto err_mdb;
    }
    closedir(d);
    if (skipped > 0)
        rs_log_warn("bulk index: %lu object files with unreadable or mismatched metadata left "
                    "out (Stat does not find them either)",
                    skipped);
    return count;
err_mdb:
    ret = mdb_errno(rc);
    snprintf(err, errlen, "bulk index: writing %s: %s", INDEX_FILE, mdb_strerror(rc));
err_abort:
    if (txn != NULL)
        mdb_txn_abort(txn);
    closedir(d);
    return ret;
}

static int unlink_index(struct rs_index *ix, char *err, size_t errlen)
{
    static const char *const files[] = { INDEX_FILE, INDEX_LOCK };

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (unlinkat(ix->datafd, files[i], 0) < 0 && errno != ENOENT) {
            int ret = -errno;

            snprintf(err, errlen, "bulk index: cannot remove %s: %s", files[i], strerror(-ret));
            return ret;
        }
    }
    return 0;
}

static int rebuild(struct rs_index *ix, const char *path, const char *why, char *err, size_t errlen)
{
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    ssize_t n;
    int ret, rc;

    ret = unlink_index(ix, err, errlen);
    if (ret < 0)
        return ret;
    rc = env_open(ix, path);
    if (rc != 0) {
        snprintf(err, errlen, "bulk index: cannot create %s: %s", path, mdb_strerror(rc));
        return mdb_errno(rc);
    }
    n = rebuild_fill(ix, err, errlen);
    if (n < 0)
        return (int)n;
    rs_log_info("bulk index: rebuilt from objects/ (%s): %zd names in %" PRIu64 " ms", why, n,
                (now_ns(CLOCK_MONOTONIC) - t0) / 1000000u);
    return 0;
}

static void *recheck_main(void *arg);

int rs_index_open(struct rs_index **out, const char *data_dir, int objfd, char *err, size_t errlen)
{
    struct rs_index *ix = calloc(1, sizeof(*ix));
    char path[4096];
    int ret, rc;

    *out = NULL;
    if (ix == NULL) {
        snprintf(err, errlen, "bulk index: out of memory");
        return -ENOMEM;
    }
    ix->objfd = objfd;
    atomic_init(&ix->broken, false);
    atomic_init(&ix->seq, now_ns(CLOCK_REALTIME));
    ix->q = calloc(RECHECK_CAP, sizeof(*ix->q));
    if (ix->q == NULL) {
        snprintf(err, errlen, "bulk index: out of memory");
        ret = -ENOMEM;
        goto err_free;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", data_dir, INDEX_FILE) >= sizeof(path)) {
        snprintf(err, errlen, "bulk index: data dir path too long");
        ret = -ENAMETOOLONG;
        goto err_free;
    }
    ix->datafd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ix->datafd < 0) {
        ret = -errno;
        snprintf(err, errlen, "bulk index: cannot open %s: %s", data_dir, strerror(-ret));
        goto err_free;
    }
    if (faccessat(ix->datafd, INDEX_CLEAN, F_OK, 0) < 0) {
        ret = rebuild(ix, path, "no clean-stop marker", err, errlen);
    } else {
        rc = env_open(ix, path);
        if (rc == 0) {
            ret = 0;
            rs_log_info("bulk index: %s opened after a clean stop", INDEX_FILE);
        } else {
            rs_log_warn("bulk index: cannot open %s (%s); rebuilding it", path, mdb_strerror(rc));
            ret = rebuild(ix, path, "unreadable index", err, errlen);
        }
    }
    if (ret < 0)
        goto err_env;
    /* From here on a crash must make the next start rebuild. */
    if ((unlinkat(ix->datafd, INDEX_CLEAN, 0) < 0 && errno != ENOENT) || fsync(ix->datafd) < 0) {
        ret = -errno;
        snprintf(err, errlen, "bulk index: cannot clear %s: %s", INDEX_CLEAN, strerror(-ret));
        goto err_env;
    }
    pthread_mutex_init(&ix->mu, NULL);
    pthread_cond_init(&ix->cv, NULL);
    pthread_cond_init(&ix->idle_cv, NULL);
    ret = -pthread_create(&ix->thread, NULL, recheck_main, ix);
    if (ret < 0) {
        snprintf(err, errlen, "bulk index: cannot start its thread: %s", strerror(-ret));
        goto err_sync;
    }
    ix->has_thread = true;
    *out = ix;
    return 0;
err_sync:
    pthread_cond_destroy(&ix->idle_cv);
    pthread_cond_destroy(&ix->cv);
    pthread_mutex_destroy(&ix->mu);
err_env:
    if (ix->env != NULL)
        mdb_env_close(ix->env);
    close(ix->datafd);
err_free:
    free(ix->q);
    free(ix);
    return ret;
}

/* Writes the clean marker after the index itself is on disk. */
static void mark_clean(struct rs_index *ix)
{
    int fd, rc;

    if (atomic_load(&ix->broken))
        return; /* the next start rebuilds */
    rc = mdb_env_sync(ix->env, 1);
    if (rc != 0) {
        rs_log_error("bulk index: final sync failed (%s); the next start rebuilds it",
                     mdb_strerror(rc));
        return;
    }
    fd = openat(ix->datafd, INDEX_CLEAN, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || fsync(fd) < 0 || fsync(ix->datafd) < 0)
        rs_log_error("bulk index: cannot write %s (%s); the next start rebuilds it", INDEX_CLEAN,
                     strerror(errno));
    if (fd >= 0)
        close(fd);
}

void rs_index_close(struct rs_index *ix)
{
    if (ix == NULL)
        return;
    if (ix->has_thread) {
        pthread_mutex_lock(&ix->mu);
        ix->stopping = true;
        pthread_cond_signal(&ix->cv);
        pthread_mutex_unlock(&ix->mu);
        pthread_join(ix->thread, NULL);
    }
    mark_clean(ix);
    if (ix->dropped > 0)
        rs_log_info("bulk index: %lu rechecks were dropped (queue full)", ix->dropped);
    pthread_cond_destroy(&ix->idle_cv);
    pthread_cond_destroy(&ix->cv);
    pthread_mutex_destroy(&ix->mu);
    mdb_env_close(ix->env);
    close(ix->datafd);
    free(ix->q);
    free(ix);
}

/* --- writes ---------------------------------------------------------------------------- */

int rs_index_add(struct rs_index *ix, const char *name, size_t len)
{
    MDB_txn *txn;
    int rc;

    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0)
        goto err;
    rc = put_name(txn, ix->dbi, name, len, atomic_fetch_add(&ix->seq, 1));
    if (rc != 0) {
        mdb_txn_abort(txn);
        goto err;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        goto err;
    return 0;
err:
    mark_broken(ix, "adding a name", rc);
    return mdb_errno(rc);
}

void rs_index_recheck(struct rs_index *ix, const char *name, size_t len)
{
    if (len == 0 || len > RS_BULK_NAME_MAX)
        return;
    pthread_mutex_lock(&ix->mu);
    if (ix->qlen == RECHECK_CAP) {
        ix->dropped++;
    } else {
        struct rs_index_name *slot = &ix->q[(ix->qhead + ix->qlen) % RECHECK_CAP];

        memcpy(slot->name, name, len);
        slot->name[len] = '\0';
        slot->len = len;
        ix->qlen++;
        pthread_cond_signal(&ix->cv);
    }
    pthread_mutex_unlock(&ix->mu);
}

/* Reads |name|'s sequence number: 0 when found, MDB_NOTFOUND, or another LMDB code. */
static int get_seq(MDB_txn *txn, MDB_dbi dbi, const struct rs_index_name *n, uint64_t *seq)
{
    MDB_val k = { .mv_size = n->len, .mv_data = (void *)n->name }, v;
    int rc = mdb_get(txn, dbi, &k, &v);

    if (rc == 0) {
        if (v.mv_size == sizeof(*seq))
            memcpy(seq, v.mv_data, sizeof(*seq));
        else
            *seq = 0;
    }
    return rc;
}

/* On the index thread: removes |n| when its object is absent and no add came in between. */
static void recheck_one(struct rs_index *ix, const struct rs_index_name *n)
{
    char key[RS_STORE_KEY_LEN + 1];
    uint64_t seq0, seq;
    struct stat st;
    MDB_txn *txn;
    int rc;

    rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return;
    rc = get_seq(txn, ix->dbi, n, &seq0);
    mdb_txn_abort(txn);
    if (rc != 0)
        return; /* not listed: nothing to do */
    if (rs_store_key(n->name, n->len, key) < 0)
        return;
    if (fstatat(ix->objfd, key, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
        return; /* still there (or cannot tell): keep the name */
    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        mark_broken(ix, "removing a name", rc);
        return;
    }
    if (get_seq(txn, ix->dbi, n, &seq) == 0 && seq == seq0) {
        MDB_val k = { .mv_size = n->len, .mv_data = (void *)n->name };

        rc = mdb_del(txn, ix->dbi, &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            mdb_txn_abort(txn);
            return; /* a stale name stays: List skips it */
        }
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        mark_broken(ix, "removing a name", rc);
}

static void *recheck_main(void *arg)
{
    struct rs_index *ix = arg;
    struct rs_index_name n;

    pthread_mutex_lock(&ix->mu);
    for (;;) {
        while (ix->qlen == 0 && !ix->stopping)
            pthread_cond_wait(&ix->cv, &ix->mu);
        if (ix->qlen == 0)
            break; /* stopping, and every queued recheck is done */
        n = ix->q[ix->qhead];
        ix->qhead = (ix->qhead + 1) % RECHECK_CAP;
        ix->qlen--;
        ix->busy = true;
        pthread_mutex_unlock(&ix->mu);
        recheck_one(ix, &n);
        pthread_mutex_lock(&ix->mu);
        ix->busy = false;
        if (ix->qlen == 0)
            pthread_cond_broadcast(&ix->idle_cv);
    }
    pthread_cond_broadcast(&ix->idle_cv);
    pthread_mutex_unlock(&ix->mu);
    return NULL;
}

void rs_index_settle(struct rs_index *ix)
{
    pthread_mutex_lock(&ix->mu);
    while (ix->qlen > 0 || ix->busy)
        pthread_cond_wait(&ix->idle_cv, &ix->mu);
    pthread_mutex_unlock(&ix->mu);
}

/* --- reads ----------------------------------------------------------------------------- */

ssize_t rs_index_scan(struct rs_index *ix, const char *prefix, size_t plen, const char *from,
                      size_t from_len, bool after, struct rs_index_name *out, size_t max)
{
    MDB_val k = { .mv_size = from_len, .mv_data = (void *)from }, v;
    MDB_cursor *cur;
    MDB_txn *txn;
    size_t n = 0;
    int rc;

    if (atomic_load(&ix->broken))
        return -EIO;
    if (max == 0)
        return 0;
    rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return mdb_errno(rc);
    rc = mdb_cursor_open(txn, ix->dbi, &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return mdb_errno(rc);
    }
    /* LMDB takes no empty key: an empty start is the first name. */
    rc = from_len == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST)
                       : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && after && from_len > 0 && k.mv_size == from_len &&
        memcmp(k.mv_data, from, from_len) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    while (rc == 0 && n < max) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break; /* past the names that begin with |prefix| */
        if (k.mv_size > 0 && k.mv_size <= RS_BULK_NAME_MAX) {
            memcpy(out[n].name, k.mv_data, k.mv_size);
            out[n].name[k.mv_size] = '\0';
            out[n].len = k.mv_size;
            n++;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mdb_errno(rc);
    return (ssize_t)n;
}

ssize_t rs_index_count(struct rs_index *ix)
{
    MDB_stat st;
    MDB_txn *txn;
    int rc;

    rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return mdb_errno(rc);
    rc = mdb_stat(txn, ix->dbi, &st);
    mdb_txn_abort(txn);
    return rc != 0 ? mdb_errno(rc) : (ssize_t)st.ms_entries;
}
