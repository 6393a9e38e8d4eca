/* workers/bulk/upload.h: the table of resumable uploads (StartUpload, Upload, QueryUpload,
 * AbortUpload in proto/bulk.proto) and its files.
 *
 * On disk, beside objects/:
 *
 *   <data>/uploads/<id>    one file per open upload: its bytes so far, at their offsets in
 *                          the object; <id> is 32 lower-case hex digits (128 random bits).
 *                          Its header (the StartUpload PutHeader) is the user xattr
 *                          RS_UPLOAD_XATTR (layout below). It is created unnamed (O_TMPFILE),
 *                          given the xattr, fsynced, then linked under <id> and uploads/ is
 *                          fsynced: an upload exists with its header, or not at all.
 *
 *   offset  bytes  field
 *        0      4  magic "rsu1"
 *        4      1  flags: 1 overwrite, 2 sha256 given, 4 if_match_sha256 given
 *        5      8  size, little-endian (0: unchecked)
 *       13     32  sha256 (zeros when not given)
 *       45     32  if_match_sha256 (zeros when not given)
 *       77  1..255 name (no NUL)
 *
 * persisted_size is what an Upload stream wrote and then fsynced through the ring before it
 * recorded it here; only then is it reported. The running SHA-256 of those bytes travels with
 * the entry in memory, lent to the one Upload stream at a time that appends. After a restart
 * (or kill -9) rs_uploads_open() takes the file's size as persisted_size, fsyncs it and hashes
 * it once, at startup, before any worker serves: never bigger than what is on disk, and the
 * hash always of exactly those bytes. Finishing publishes the same inode into objects/ (with
 * the object xattr, see store.h); the uploads/ name is then removed. A file found at startup
 * with the object xattr and a second link was published: its uploads/ name is removed.
 *
 * The table is shared by every worker (a client may resume over another connection): one
 * mutex, held for table lookups and state changes only, never across I/O and never per byte.
 * Files of expired, aborted and failed uploads are unlinked and closed by the table's own
 * thread (blocking syscalls, never on a worker), which also expires uploads untouched for
 * the TTL and forgets published statuses after it. */
#ifndef RS_WORKERS_BULK_UPLOAD_H
#define RS_WORKERS_BULK_UPLOAD_H
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "core/sha256.h"
#include "workers/bulk/store.h"

#define RS_UPLOAD_ID_LEN         32 /* hex digits, without the NUL */
#define RS_UPLOAD_XATTR          "user.ringstream.upload"
#define RS_UPLOAD_HDR_FIXED      77
#define RS_UPLOAD_HDR_MAX        (RS_UPLOAD_HDR_FIXED + RS_BULK_NAME_MAX)
#define RS_UPLOAD_TTL_MS_DEFAULT (24ull * 3600 * 1000)
#define RS_UPLOAD_MAX_DEFAULT    1000u

/* What StartUpload accepted: the PutHeader of the object to be published. */
struct rs_upload_hdr {
    uint64_t want_size; /* 0: unchecked */
    bool overwrite;     /* also set when has_if_match */
    bool check_sha;
    bool has_if_match;
    uint8_t want_sha[RS_SHA256_LEN];
    uint8_t if_match[RS_SHA256_LEN];
    size_t name_len;
    char name[RS_BULK_NAME_MAX + 1]; /* NUL-terminated; a valid name */
};

/* Encodes |h| as the xattr value. Returns its length, or 0 for a name of a bad length. */
size_t rs_upload_hdr_encode(const struct rs_upload_hdr *h, uint8_t buf[RS_UPLOAD_HDR_MAX]);
/* Decodes |len| bytes. Returns 0 or -EBADMSG (bad length, magic, flags or name). */
int rs_upload_hdr_decode(const uint8_t *buf, size_t len, struct rs_upload_hdr *h);
/* True when |s| (|len| bytes) has the shape of an upload id. */
bool rs_upload_id_valid(const char *s, size_t len);

enum rs_upload_state {
    RS_UPLOAD_OPEN,
    RS_UPLOAD_PUBLISHED, /* kept for QueryUpload until the TTL passes */
    RS_UPLOAD_DEAD,      /* aborted or failed: the thread removes it and its file */
};

struct rs_upload {
    char id[RS_UPLOAD_ID_LEN + 1];
    struct rs_upload_hdr hdr;
    int fd;               /* owned by the table: uploads/<id> O_RDWR; -1 once closed */
    struct rs_sha256 sha; /* of bytes [0, persisted); lent to the stream while busy */
    uint64_t persisted;   /* durable bytes */
    int64_t touched_ms;   /* expires at touched_ms + TTL */
    enum rs_upload_state state;
    bool busy;     /* an Upload stream holds it: fd, hdr and persisted are the stream's */
    bool unlinked; /* published: its uploads/ name is gone */
    struct rs_store_meta object; /* when PUBLISHED */
};

/* A copy of an entry's status, for UploadStatus. */
struct rs_upload_status {
    char id[RS_UPLOAD_ID_LEN + 1];
    uint64_t persisted;
    int64_t expires_ms;
    bool published;
    struct rs_store_meta object;
};

struct rs_uploads {
    pthread_mutex_t lock; /* guards everything below but dirfd */
    pthread_cond_t wake;  /* the thread's: work, or stop */
    pthread_t thread;
    bool started;
    bool stop;
    int dirfd; /* owned; <data>/uploads; read-only once open */
    uint64_t ttl_ms;
    unsigned max;
    unsigned nopen; /* OPEN entries plus reservations (rs_uploads_reserve) */
    struct rs_upload **v;
    size_t n, cap;
};

/* Creates <data>/uploads when missing, loads the uploads found there (blocking: fsync and one
 * hashing read of each, see above) and starts the table's thread. At startup only, before the
 * workers run. Returns 0, or -errno with a one-line reason in |err|. */
int rs_uploads_open(struct rs_uploads *u, int datafd, char *err, size_t errlen);
/* Stops the thread and frees the table; files of open uploads stay. Accepts a failed open. */
void rs_uploads_close(struct rs_uploads *u);
/* TTL (ms, >= 1) and the most open uploads; may be called at any time. */
void rs_uploads_limits(struct rs_uploads *u, uint64_t ttl_ms, unsigned max);

/* Holds room for one more open upload: true, or false when max are open. */
bool rs_uploads_reserve(struct rs_uploads *u);
void rs_uploads_unreserve(struct rs_uploads *u);
/* Adds an upload from a reservation (used up either way): takes ownership of |fd| and fills
 * |st|, or returns -ENOMEM and the caller keeps |fd|. */
int rs_uploads_add(struct rs_uploads *u, const char *id, const struct rs_upload_hdr *h, int fd,
                   struct rs_upload_status *st);
/* Status of |id|: 0, or -ENOENT (unknown, expired, aborted). */
int rs_uploads_query(struct rs_uploads *u, const char *id, size_t len, struct rs_upload_status *st);
/* Discards an open, idle upload and returns its last status: 0, -ENOENT, -EBUSY (an Upload
 * stream runs), -EALREADY (published). */
int rs_uploads_abort(struct rs_uploads *u, const char *id, size_t len, struct rs_upload_status *st);
/* For an Upload stream: marks |id| busy and returns it in *out, its hash state moved into
 * |sha| (the caller's until it gives it back). Returns 0, -ENOENT, -EBUSY, -EALREADY. */
int rs_uploads_acquire(struct rs_uploads *u, const char *id, size_t len, struct rs_upload **out,
                       struct rs_sha256 *sha);
/* The stream is over: |persisted| bytes are durable, |sha| (taken back) hashes them. Fills
 * |st|. */
void rs_uploads_release(struct rs_uploads *u, struct rs_upload *up, uint64_t persisted,
                        struct rs_sha256 *sha, struct rs_upload_status *st);
/* The stream ended the upload: its bytes are discarded (a failed finish, a broken file). */
void rs_uploads_discard(struct rs_uploads *u, struct rs_upload *up, const char *why);
/* The stream published |m|: the status keeps it until the TTL passes. Fills |st|. */
void rs_uploads_published(struct rs_uploads *u, struct rs_upload *up, const struct rs_store_meta *m,
                          struct rs_upload_status *st);

/* Encodes an UploadStatus. Returns its length, or 0 (a bug, logged). */
size_t rs_upload_encode_status(uint8_t *buf, size_t cap, const struct rs_upload_status *st);

#endif /* RS_WORKERS_BULK_UPLOAD_H */
