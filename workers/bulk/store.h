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
 * Only metadata calls live here (they are plain syscalls for now); file data goes through the
 * worker's ring (rs_call_pread/pwrite/fsync). Every function that takes a name expects one
 * that passed rs_bulk_name_valid(). Thread-safe: a struct rs_store is read-only once open. */
#ifndef RS_WORKERS_BULK_STORE_H
#define RS_WORKERS_BULK_STORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "core/sha256.h"
#include "workers/bulk/name.h"

#define RS_STORE_KEY_LEN 64 /* hex digits of a key, without the NUL */
#define RS_STORE_XATTR   "user.ringstream.meta"

struct rs_store {
    int objfd; /* owned; <data>/objects opened O_RDONLY|O_DIRECTORY; -1 when closed */
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
 * entries. Returns 0, or -errno with a one-line reason in |err|. Release with
 * rs_store_close(). */
int rs_store_open(struct rs_store *s, const char *data_dir, char *err, size_t errlen);
/* Accepts a store whose open failed. */
void rs_store_close(struct rs_store *s);

/* Writes the hex key of |name| and a NUL. Returns 0 or -ENOMEM / -EIO (hash provider). */
int rs_store_key(const char *name, size_t len, char key[RS_STORE_KEY_LEN + 1]);

/* Returns 1 when an object called |key| exists, 0 when not, or -errno. */
int rs_store_exists(const struct rs_store *s, const char *key);

/* Opens the object for reading and reads its metadata. Returns an owned fd (close it) and
 * fills |m|, or -ENOENT, -EBADMSG (metadata missing, corrupt, or disagreeing with the file's
 * size), or another -errno. */
int rs_store_open_object(const struct rs_store *s, const char *name, size_t len,
                         struct rs_store_meta *m);
/* Reads the metadata only. Same errors as rs_store_open_object(). */
int rs_store_stat(const struct rs_store *s, const char *name, size_t len, struct rs_store_meta *m);

/* Returns an owned fd of a new unnamed file in objects/ (O_TMPFILE|O_RDWR), or -errno. The
 * file is opened with O_DIRECT where the file system has it (*direct set): uploads then skip
 * the page-cache copy, so writes must be aligned to RS_STORE_DIRECT_ALIGN in address, length
 * and offset until rs_store_buffered() turns O_DIRECT off (for an unaligned tail). */
#define RS_STORE_DIRECT_ALIGN 4096
int rs_store_create(const struct rs_store *s, bool *direct);
/* Clears O_DIRECT on |fd|. Returns 0 or -errno. */
int rs_store_buffered(int fd);
/* Writes |m| as the xattr of the unnamed file |fd|. Returns 0 or -errno. */
int rs_store_set_meta(int fd, const struct rs_store_meta *m);
/* Gives the unnamed file |fd| the name |key|. Without |overwrite| an existing object fails
 * with -EEXIST (atomic: of concurrent publishers exactly one wins); with it the object is
 * replaced in one rename. Returns 0 or -errno. The caller fsyncs objects/ afterwards
 * (rs_store_dirfd()) to make the new name durable. */
int rs_store_publish(const struct rs_store *s, int fd, const char *key, bool overwrite);
/* The objects/ directory fd, borrowed for the store's life (for an fsync through the ring). */
int rs_store_dirfd(const struct rs_store *s);

/* Removes the object called |name| and fills |m| with the metadata of exactly the version
 * removed (it is first renamed aside, so a concurrent overwrite cannot slip in between).
 * Returns 0, -ENOENT, another -errno, or -EBADMSG: the object was removed but its metadata
 * was unreadable (then |m| is undefined). */
int rs_store_delete(const struct rs_store *s, const char *name, size_t len,
                    struct rs_store_meta *m);

/* Metadata of every object whose name starts with the |plen| bytes of |prefix| (any bytes),
 * in ascending byte order of name. Objects with unreadable metadata are skipped and logged.
 * Returns 0 with an owned array in |*out| (release with free(); NULL when |*n| is 0), or
 * -errno. Reads the whole directory: memory grows with the number of matching objects. */
int rs_store_list(const struct rs_store *s, const char *prefix, size_t plen,
                  struct rs_store_meta **out, size_t *n);

#endif /* RS_WORKERS_BULK_STORE_H */
