/* workers/bulk/store.h: the on-disk layout of the bulk store.
 *
 *   <data>/objects/<key>   one file per object; <key> is the lower-case hex SHA-256 of the
 *                          name (64 bytes), so names are flat keys ("a" and "a/b" coexist)
 *                          and every name of up to 255 bytes fits in one directory entry.
 *   <data>/objects/tmp-<16 hex>, del-<16 hex>
 *                          short-lived names used while an object is overwritten or deleted;
 *                          leftovers of a crash are removed by rs_store_open().
 *
 * The object's metadata lives on the file itself, in one user xattr, RS_STORE_XATTR:
 *
 *   offset  bytes  field
 *        0      4  magic "rso1"
 *        4      8  size, little-endian
 *       12      8  modified_unix_ms, little-endian, signed
 *       20     32  SHA-256 of the data
 *       52  1..255 name (no NUL)
 *
 * It is written with fsetxattr() on the unnamed (O_TMPFILE) file before the file gets its
 * name, so data and metadata appear together, and Stat and List never read data.
 *
 * This module holds the layout: names, the metadata codec, and opening the store at startup
 * (plain syscalls on the main thread, before any worker runs). What requests do to the store
 * runs on the worker's ring: metadata steps in storeop.h, file data with rs_call_pread/pwrite/
 * fsync. Every function that takes a name expects one that passed rs_bulk_name_valid().
 * Thread-safe: a struct rs_store is read-only once open, but for its claim table (own mutex). */
#ifndef RS_WORKERS_BULK_STORE_H
#define RS_WORKERS_BULK_STORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

/* Little-endian 64-bit fields of the store's on-disk records (object and upload xattrs). */
static inline void rs_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t rs_get_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
#include "core/sha256.h"
#include "workers/bulk/name.h"

#define RS_STORE_KEY_LEN      64 /* hex digits of a key, without the NUL */
#define RS_STORE_AUX_LEN      20 /* "tmp-" or "del-" and 16 hex digits, without the NUL */
#define RS_STORE_META_FIXED   52 /* bytes of the xattr before the name */
#define RS_STORE_META_MAX     (RS_STORE_META_FIXED + RS_BULK_NAME_MAX)
#define RS_STORE_XATTR        "user.ringstream.meta"
#define RS_STORE_DIRECT_ALIGN 4096

#define RS_STORE_CLAIMS 64 /* keys being replaced under a claim at once, all workers */

struct rs_store {
    int objfd; /* owned; <data>/objects opened O_RDONLY|O_DIRECTORY; -1 when closed */
    /* Claims: a publish that replaces an object (overwrite, if_match_sha256) holds its key
     * from the compare to the rename, so a compare-and-swap and the replace it guards are one
     * step for every other replace of that key. A few keys, any worker: a mutex, never held
     * across I/O. */
    pthread_mutex_t claim_lock;
    unsigned nclaims;
    char claims[RS_STORE_CLAIMS][RS_STORE_KEY_LEN + 1];
};

struct rs_store_meta {
    uint64_t size;
    int64_t modified_unix_ms;
    uint8_t sha256[RS_SHA256_LEN];
    size_t name_len;
    char name[RS_BULK_NAME_MAX + 1]; /* NUL-terminated copy; valid names hold no NUL */
};

/* Creates |data_dir| and its objects/ folder when missing, checks that the file system takes
 * O_TMPFILE, user xattrs and linkat() through /proc/self/fd, and removes leftover tmp-/del-
 * entries. Blocking: call it once at startup, before the workers run. Returns 0, or -errno
 * with a one-line reason in |err|. Release with rs_store_close(). */
int rs_store_open(struct rs_store *s, const char *data_dir, char *err, size_t errlen);
/* Accepts a store whose open failed. */
void rs_store_close(struct rs_store *s);
/* The objects/ directory fd, borrowed for the store's life. */
int rs_store_dirfd(const struct rs_store *s);

/* Takes the claim on |key| for the caller: true, or false when another publish holds it (or
 * RS_STORE_CLAIMS are held; retry later either way). Never blocks beyond the table's mutex. */
bool rs_store_claim(struct rs_store *s, const char *key);
/* Gives back a claim taken with rs_store_claim(). */
void rs_store_unclaim(struct rs_store *s, const char *key);

/* Writes the hex key of |name| and a NUL. Returns 0 or -ENOMEM / -EIO (hash provider). */
int rs_store_key(const char *name, size_t len, char key[RS_STORE_KEY_LEN + 1]);
/* True when |s| is a key (64 lower-case hex digits), the name of an object file. */
bool rs_store_is_key(const char *s);
/* Writes |kind| ("tmp-" or "del-"), 16 random hex digits and a NUL. Returns 0 or -EIO. */
int rs_store_aux_name(char out[RS_STORE_AUX_LEN + 1], const char *kind);

/* Encodes |m| as the xattr value. Returns its length, or 0 for a name of a bad length. */
size_t rs_store_meta_encode(const struct rs_store_meta *m, uint8_t buf[RS_STORE_META_MAX]);
/* Decodes what fgetxattr(RS_STORE_XATTR) answered: |res| bytes of |buf|, or -errno. Returns 0,
 * -EBADMSG (no such xattr, too long, or corrupt), or |res| when it is another -errno. */
int rs_store_meta_decode(const uint8_t *buf, int res, struct rs_store_meta *m);
/* Checks that the metadata found under the key of |name| is really |name|'s: 0 or -EBADMSG. */
int rs_store_meta_check_name(const struct rs_store_meta *m, const char *name, size_t len);

/* Clears O_DIRECT on |fd| (fcntl: only a flag on the open file, never I/O). Returns 0 or
 * -errno. An unnamed file is created with O_DIRECT where the file system has it: full stages
 * then skip the page-cache copy, so writes must be aligned to RS_STORE_DIRECT_ALIGN in
 * address, length and offset until this turns it off (for an unaligned tail). */
int rs_store_buffered(int fd);
/* Sets O_DIRECT on |fd| (fcntl, as above): an upload's file, for a stream that starts at an
 * aligned offset. Returns 0 or -errno (-EINVAL where the file system has no O_DIRECT). */
int rs_store_direct(int fd);

#endif /* RS_WORKERS_BULK_STORE_H */
