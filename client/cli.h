/* client/cli.h: what the ringstream command-line client's files share (client/main.c the
 * command line, stat/rm/ls; put.c; get.c; cli.c the helpers below). One process, one command:
 * the options are a global set once by main(). Not a library API: client/rpc.h is that. */
#ifndef RS_CLIENT_CLI_H
#define RS_CLIENT_CLI_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "bulk.pb.h"
#include "client/rpc.h"
#include "core/sha256.h"

/* Exit codes (documented in usage() and the README). */
enum {
    RSC_EX_OK = 0,
    RSC_EX_GRPC = 1,      /* the server answered with an error status */
    RSC_EX_USAGE = 2,     /* bad command line */
    RSC_EX_IO = 3,        /* local file or cache I/O failed */
    RSC_EX_INTEGRITY = 4, /* CRC32C or SHA-256 mismatch, or the server said DATA_LOSS */
    RSC_EX_CONN = 5,      /* cannot connect, TLS failure, connection lost, timeout */
};

#define RSC_SVC           "/ringstream.v1.Bulk/"
#define RSC_DATA_CHUNK    (1024 * 1024) /* bytes per request message: well under the 4 MiB limit */
#define RSC_GET_CHUNK     (1024 * 1024) /* Chunk size asked of the server (its cap) */
#define RSC_HDR_ROOM      128           /* room before the data for a data message's fields */
#define RSC_SMALL_MSG     1024
#define RSC_MAX_STREAMS   64
#define RSC_DEFAULT_SRV   "127.0.0.1:50051"
#define RSC_DEFAULT_RESUM (8ull << 20)

/* The command line, filled by main() before any command runs. */
struct rsc_cli {
    struct rsc_conn_opts conn;
    bool json, overwrite, progress;
    uint64_t resumable_threshold;
    uint64_t limit_rate; /* bytes per second, 0 = none */
    unsigned streams;
    unsigned conns;      /* bench */
    uint64_t bench_size; /* bench */
    double duration_s;   /* bench */
    const char *cmd;
};
extern struct rsc_cli rsc_cli;

/* --- output (cli.c) --- */

/* Lower-case hex of |n| bytes into |out| (2n+1 bytes). */
void rsc_hex(char *out, const uint8_t *in, size_t n);
/* |s| as a JSON string (quoted, escaped). */
void rsc_json_str(FILE *f, const char *s);
/* Where JSON results go: stdout, or |rsc_json_out| when a command set it (get NAME -). */
extern FILE *rsc_json_out;
FILE *rsc_jout(void);
/* One JSON result line for an ObjectInfo; |extra| (NULL or ",\"k\":v...") goes before the }. */
void rsc_json_info(FILE *f, const char *cmd, const ringstream_v1_ObjectInfo *oi, const char *extra);
/* One line on stderr for a failure ("ringstream: WHAT: STATUS: message"), and with --json one
 * object on the result stream. |grpc| is the status number or -1, |status| its name or NULL
 * for a local failure. Returns |code| for `return rsc_fail(...)`. */
__attribute__((format(printf, 5, 6))) int rsc_fail(int code, const char *what, int grpc,
                                                   const char *status, const char *fmt, ...);
/* The exit code and error line for an rsc_call_run() that did not end with OK. */
int rsc_fail_call(const char *what, int ret, const struct rsc_status *st);

/* --- progress bar and --limit-rate (cli.c) --- */

double rsc_now_s(void);
/* A transfer of |total| bytes (0: unknown) of which |already| were there (resumed). */
void rsc_progress_begin(uint64_t total, uint64_t already);
void rsc_progress_draw(bool final);
/* |n| more bytes moved: redraws at most 5 times a second, sleeps for --limit-rate. Any thread. */
void rsc_progress_add(uint64_t n);
void rsc_progress_end(void);

/* --- protobuf (cli.c) --- */

struct rsc_bytes {
    const void *p;
    size_t n;
};
/* Binds a string/bytes field's encode callback to |b| (borrowed until the encode). */
void rsc_bind_bytes(pb_callback_t *cb, struct rsc_bytes *b);
/* Encodes into |buf|; returns the length, 0 when it does not fit. */
size_t rsc_encode(const pb_msgdesc_t *fields, const void *msg, uint8_t *buf, size_t cap);
bool rsc_decode_info(const uint8_t *m, size_t len, ringstream_v1_ObjectInfo *oi);
/* Collects the single response of a rsc_unary call. */
struct rsc_unary {
    const pb_msgdesc_t *fields;
    void *out;
    int n;
};
/* rsc_msg_fn decoding the single response of a unary call into a struct rsc_unary. */
int rsc_on_unary(void *arg, const uint8_t *m, size_t len);
/* Runs a unary call. Returns 0 with |out| filled, or the exit code after printing the error. */
int rsc_unary(struct rsc_conn *c, const char *what, const char *method, const uint8_t *req,
              size_t reqlen, const pb_msgdesc_t *fields, void *out, struct rsc_status *st);
/* A message whose only field is string 1 = |name| (Stat/Delete/List requests, UploadRef) into
 * |buf| (RSC_SMALL_MSG bytes). Returns its length. */
size_t rsc_name_request(const pb_msgdesc_t *fields, const char *name, uint8_t *buf);
/* Writes a varint just before |end|; returns the new start. */
uint8_t *rsc_put_varint_before(uint8_t *end, uint64_t v);
/* Wraps |n| bytes at |data| (RSC_HDR_ROOM free before, 5 after) as field |outer| =
 * ChecksummedData{data, crc32c}. Returns the start; |*end| is past the CRC. */
uint8_t *rsc_wrap_checked(uint8_t *data, size_t n, unsigned outer, uint8_t **end);

/* --- files and the cache dir (cli.c) --- */

/* Reads up to |len| bytes, retrying short reads. Returns the count (< len only at EOF) or
 * -errno. */
ssize_t rsc_read_full(int fd, uint8_t *buf, size_t len);
/* Returns 0 or -errno. */
int rsc_pwrite_full(int fd, const uint8_t *p, size_t len, uint64_t off);
/* SHA-256 of the first |len| bytes of |fd| (pread); shown as |label| on the progress bar.
 * Returns 0, -ENODATA (the file is shorter), -EIO or -errno. */
int rsc_hash_fd(int fd, uint64_t len, struct rs_sha256 *h, uint8_t *buf, size_t cap,
                const char *label);
/* The state file of |kind| ("uploads", "downloads") named by the SHA-256 of |key|, under
 * $XDG_CACHE_HOME/ringstream/ (created). Returns 0 or -errno. */
int rsc_state_path(const char *kind, const char *key, size_t keylen, char *out, size_t len);
/* Atomically (temp file, fsync, rename). Returns 0 or -errno. */
int rsc_state_write(const char *path, const char *text);
/* NUL-terminated into |buf|. Returns 0 or -errno (-ENOENT: none). */
int rsc_state_read(const char *path, char *buf, size_t len);

/* --- calls (cli.c) --- */

/* Returns an open connection, or NULL with the error printed and the exit code in |*code|. */
struct rsc_conn *rsc_connect_or_fail(const char *what, int *code);
/* Stat of |name|. Returns 0 or the exit code (error printed). */
int rsc_do_stat(struct rsc_conn *c, const char *what, const char *name,
                ringstream_v1_ObjectInfo *oi);

/* --- commands --- */

int rsc_cmd_put(int argc, char **argv); /* put.c */
int rsc_cmd_get(int argc, char **argv); /* get.c */

#endif /* RS_CLIENT_CLI_H */
