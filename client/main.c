/* client/main.c: the ringstream command-line client (put, get, ls, stat, rm) for the Bulk
 * service of proto/bulk.proto. Every transfer is checked end to end: Put sends CRC32C-checked
 * data and the SHA-256 of the file in its header; Get checks every chunk's CRC32C on receipt
 * and the SHA-256 of the whole file against the server's before the file gets its name
 * (data goes to FILE.part and is renamed on success). Large uploads are resumable
 * (StartUpload/Upload/QueryUpload), interrupted downloads resume from FILE.part.
 * Local state lives under $XDG_CACHE_HOME/ringstream/ (~/.cache/ringstream/). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "bulk.pb.h"
#include "client/bench.h"
#include "client/rpc.h"
#include "core/crc32c.h"
#include "core/sha256.h"
#include "proto/grpc.h"
#include "proto/pbview.h"

/* Exit codes (documented in usage() and the README). */
enum {
    EX_OK = 0,
    EX_GRPC = 1,      /* the server answered with an error status */
    EX_USAGE = 2,     /* bad command line */
    EX_IO = 3,        /* local file or cache I/O failed */
    EX_INTEGRITY = 4, /* CRC32C or SHA-256 mismatch, or the server said DATA_LOSS */
    EX_CONN = 5,      /* cannot connect, TLS failure, connection lost, timeout */
};

#define SVC           "/ringstream.v1.Bulk/"
#define DATA_CHUNK    (1024 * 1024) /* bytes per request message: well under the 4 MiB limit */
#define GET_CHUNK     (1024 * 1024) /* Chunk size asked of the server (its cap) */
#define HDR_ROOM      128           /* room before the data for a data message's fields */
#define SMALL_MSG     1024
#define MAX_STREAMS   64
#define DEFAULT_SRV   "127.0.0.1:50051"
#define DEFAULT_RESUM (8ull << 20)

static struct {
    struct rsc_conn_opts conn;
    bool json, overwrite, progress;
    uint64_t resumable_threshold;
    uint64_t limit_rate; /* bytes per second, 0 = none */
    unsigned streams;
    unsigned conns;      /* bench */
    uint64_t bench_size; /* bench */
    double duration_s;   /* bench */
    const char *cmd;
} opt;

/* --- output ------------------------------------------------------------------------------ */

static void hex(char *out, const uint8_t *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* The stream JSON results go to: stdout, or stderr when stdout carries the data (get -). */
static FILE *json_out = NULL;

static FILE *jout(void)
{
    return json_out != NULL ? json_out : stdout;
}

static void json_info(FILE *f, const char *cmd, const ringstream_v1_ObjectInfo *oi,
                      const char *extra)
{
    char h[2 * RS_SHA256_LEN + 1];

    hex(h, oi->sha256, RS_SHA256_LEN);
    fprintf(f, "{\"ok\":true,\"command\":\"%s\",\"name\":", cmd);
    json_str(f, oi->name);
    fprintf(f, ",\"size\":%" PRIu64 ",\"sha256\":\"%s\",\"modified_unix_ms\":%" PRId64 "%s}\n",
            oi->size, h, oi->modified_unix_ms, extra != NULL ? extra : "");
    fflush(f);
}

/* One line on stderr for every failure ("ringstream: get big.bin: NOT_FOUND: ..."), and with
 * --json one object on the result stream. Returns |code| for `return fail(...)`. */
static __attribute__((format(printf, 5, 6))) int fail(int code, const char *what, int grpc,
                                                      const char *status, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (opt.progress)
        fputs("\r\033[K", stderr);
    if (status != NULL)
        fprintf(stderr, "ringstream: %s: %s: %s\n", what, status, msg);
    else
        fprintf(stderr, "ringstream: %s: %s\n", what, msg);
    if (opt.json) {
        FILE *f = jout();

        fprintf(f, "{\"ok\":false,\"command\":\"%s\",\"exit\":%d,\"error\":", opt.cmd, code);
        /* every failure has a name for scripts: the status, or what kind of local failure */
        json_str(f, status != NULL     ? status
                    : code == EX_USAGE ? "USAGE"
                    : code == EX_IO    ? "LOCAL_IO"
                                       : "ERROR");
        if (grpc >= 0)
            fprintf(f, ",\"grpc_status\":%d", grpc);
        fputs(",\"message\":", f);
        json_str(f, msg);
        fputs(",\"what\":", f);
        json_str(f, what);
        fputs("}\n", f);
        fflush(f);
    }
    return code;
}

/* Turns the outcome of rsc_call_run() that was not an OK status into an exit code. */
static int fail_call(const char *what, int ret, const struct rsc_status *st)
{
    if (ret == -ECANCELED)
        return fail(EX_IO, what, -1, NULL, "cancelled: %s", st->msg);
    if (ret < 0)
        return fail(EX_CONN, what, -1, "UNAVAILABLE", "%s", st->msg);
    return fail(st->code == RS_GRPC_DATA_LOSS ? EX_INTEGRITY : EX_GRPC, what, st->code,
                rs_grpc_status_name(st->code), "%s", st->msg);
}

/* --- progress bar and rate limit ----------------------------------------------------------- */

static struct {
    uint64_t total;    /* 0: unknown */
    uint64_t base;     /* bytes already there when this run began (a resumed transfer) */
    const char *label; /* "" for the transfer, "hashing " or "verifying " for a local pass */
    _Atomic uint64_t done;
    double start, last;
    atomic_flag printing;
    bool drawn;
} prog;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void human(char *out, size_t len, double v)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    unsigned u = 0;

    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, len, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
}

static void progress_begin(uint64_t total, uint64_t already)
{
    prog.total = total;
    prog.base = already;
    prog.label = "";
    atomic_store(&prog.done, already);
    prog.start = now_s();
    prog.last = 0;
    prog.drawn = false;
}

static void progress_draw(bool final)
{
    uint64_t done = atomic_load(&prog.done);
    double t = now_s(), el = t - prog.start;
    double rate = el > 0 ? (double)(done - prog.base) / el : 0; /* of this run's bytes */
    char d[32], tot[32], r[32], eta[32] = "";

    human(d, sizeof(d), (double)done);
    human(r, sizeof(r), rate);
    if (prog.total > 0) {
        human(tot, sizeof(tot), (double)prog.total);
        if (rate > 0 && done < prog.total) {
            unsigned s = (unsigned)((double)(prog.total - done) / rate);

            snprintf(eta, sizeof(eta), "  ETA %u:%02u:%02u", s / 3600, s / 60 % 60, s % 60);
        }
        fprintf(stderr, "\r\033[K%s%s / %s  %3.0f%%  %s/s%s", prog.label, d, tot,
                100.0 * (double)done / (double)prog.total, r, eta);
    } else {
        fprintf(stderr, "\r\033[K%s%s  %s/s", prog.label, d, r);
    }
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
    prog.drawn = true;
}

/* Counts |n| more bytes moved; redraws at most 5 times a second, sleeps for --limit-rate. */
static void progress_add(uint64_t n)
{
    uint64_t done = atomic_fetch_add(&prog.done, n) + n;

    if (opt.limit_rate > 0) {
        double ahead = (double)(done - prog.base) / (double)opt.limit_rate - (now_s() - prog.start);

        if (ahead > 0) {
            struct timespec ts = { .tv_sec = (time_t)ahead,
                                   .tv_nsec = (long)((ahead - (double)(time_t)ahead) * 1e9) };

            nanosleep(&ts, NULL);
        }
    }
    if (opt.progress && !atomic_flag_test_and_set(&prog.printing)) {
        double t = now_s();

        if (t - prog.last >= 0.2) {
            prog.last = t;
            progress_draw(false);
        }
        atomic_flag_clear(&prog.printing);
    }
}

static void progress_end(void)
{
    if (opt.progress)
        progress_draw(true);
}

/* --- protobuf helpers --------------------------------------------------------------------- */

struct bytes {
    const void *p;
    size_t n;
};

static bool enc_bytes(pb_ostream_t *s, const pb_field_t *f, void *const *arg)
{
    const struct bytes *b = *arg;

    if (b == NULL || b->n == 0)
        return true;
    return pb_encode_tag_for_field(s, f) && pb_encode_string(s, b->p, b->n);
}

static void bind_bytes(pb_callback_t *cb, struct bytes *b)
{
    cb->funcs.encode = enc_bytes;
    cb->arg = b;
}

static size_t encode(const pb_msgdesc_t *fields, const void *msg, uint8_t *buf, size_t cap)
{
    pb_ostream_t s = pb_ostream_from_buffer(buf, cap);

    return pb_encode(&s, fields, msg) ? s.bytes_written : 0;
}

static bool decode_info(const uint8_t *m, size_t len, ringstream_v1_ObjectInfo *oi)
{
    pb_istream_t s = pb_istream_from_buffer(m, len);

    memset(oi, 0, sizeof(*oi));
    return pb_decode(&s, ringstream_v1_ObjectInfo_fields, oi);
}

/* Collects the single response of a unary call. */
struct unary {
    const pb_msgdesc_t *fields;
    void *out;
    int n;
};

static int on_unary(void *arg, const uint8_t *m, size_t len)
{
    struct unary *u = arg;
    pb_istream_t s = pb_istream_from_buffer(m, len);

    if (++u->n > 1 || !pb_decode(&s, u->fields, u->out))
        return -1;
    return 0;
}

/* Runs a unary call. Returns 0 with |out| filled, or the exit code after printing the error. */
static int unary(struct rsc_conn *c, const char *what, const char *method, const uint8_t *req,
                 size_t reqlen, const pb_msgdesc_t *fields, void *out, struct rsc_status *st)
{
    struct unary u = { fields, out, 0 };
    int ret = rsc_call_run(c, method, req, reqlen, NULL, on_unary, &u, st);

    if (ret == -ECANCELED)
        return fail(EX_CONN, what, -1, "INTERNAL", "malformed response from the server");
    if (ret < 0 || st->code != 0)
        return fail_call(what, ret, st);
    if (u.n != 1)
        return fail(EX_CONN, what, -1, "INTERNAL", "no response message from the server");
    return 0;
}

static size_t name_request(const pb_msgdesc_t *fields, const char *name, uint8_t *buf)
{
    /* StatRequest, DeleteRequest, ListRequest and UploadRef: one string field, number 1. */
    ringstream_v1_StatRequest r = ringstream_v1_StatRequest_init_zero;
    struct bytes b = { name, strlen(name) };

    bind_bytes(&r.name, &b);
    return encode(fields, &r, buf, SMALL_MSG);
}

/* Writes a protobuf varint just before |end|. Returns the new start. */
static uint8_t *put_varint_before(uint8_t *end, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = rs_pb_put_varint(tmp, v);

    memcpy(end - n, tmp, n);
    return end - n;
}

/* Builds ChecksummedData around |n| data bytes that already sit at |data| (with HDR_ROOM
 * bytes free before and 5 after), wrapped as field |outer| (PutRequest.checked_data = 3,
 * UploadRequest.checked_data = 4). Returns the start of the field; |*end| past the CRC. */
static uint8_t *wrap_checked(uint8_t *data, size_t n, unsigned outer, uint8_t **end)
{
    uint32_t crc = rs_crc32c(0, data, n);
    uint8_t *p = data, *e = data + n;
    size_t inner;

    *e++ = (2 << 3) | PB_WT_32BIT; /* ChecksummedData.crc32c, fixed32 little-endian */
    for (int i = 0; i < 4; i++)
        *e++ = (uint8_t)(crc >> (8 * i));
    p = put_varint_before(p, n);
    *--p = (1 << 3) | PB_WT_STRING; /* ChecksummedData.data */
    inner = (size_t)(e - p);
    p = put_varint_before(p, inner);
    *--p = (uint8_t)((outer << 3) | PB_WT_STRING);
    *end = e;
    return p;
}

/* --- files and the cache dir ------------------------------------------------------------- */

/* Reads up to |len| bytes, retrying short reads. Returns bytes read (< len only at EOF) or
 * -errno. */
static ssize_t read_full(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static int pwrite_full(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* SHA-256 of the first |len| bytes of |fd| (pread: the offset is left alone); with the
 * progress bar on, shown as |label| (a local pass: not rate-limited). */
static int hash_fd(int fd, uint64_t len, struct rs_sha256 *h, uint8_t *buf, size_t cap,
                   const char *label)
{
    uint64_t off = 0;
    double last = 0;

    if (opt.progress && len >= DATA_CHUNK) {
        progress_begin(len, 0);
        prog.label = label;
    }

    while (off < len) {
        size_t want = len - off < cap ? (size_t)(len - off) : cap;
        ssize_t n = pread(fd, buf, want, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ENODATA; /* shorter than it was */
        if (rs_sha256_update(h, buf, (size_t)n) < 0)
            return -EIO;
        off += (uint64_t)n;
        if (opt.progress && len >= DATA_CHUNK && now_s() - last >= 0.2) {
            atomic_store(&prog.done, off);
            last = now_s();
            progress_draw(false);
        }
    }
    return 0;
}

static int mkdir_p(char *path)
{
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST) {
            *p = '/';
            return -errno;
        }
        *p = '/';
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* The state file for |kind| ("uploads" or "downloads") keyed by SHA-256 of |key|; creates the
 * directory. Returns 0 or -errno. */
static int state_path(const char *kind, const char *key, size_t keylen, char *out, size_t len)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[PATH_MAX], h[2 * RS_SHA256_LEN + 1];
    uint8_t d[RS_SHA256_LEN];
    struct rs_sha256 s;
    int ret;

    if (xdg != NULL && xdg[0] == '/')
        snprintf(dir, sizeof(dir), "%s/ringstream/%s", xdg, kind);
    else if (home != NULL && home[0] == '/')
        snprintf(dir, sizeof(dir), "%s/.cache/ringstream/%s", home, kind);
    else
        return -ENOENT;
    ret = mkdir_p(dir);
    if (ret < 0)
        return ret;
    if (rs_sha256_init(&s) < 0)
        return -ENOMEM;
    ret = rs_sha256_update(&s, key, keylen) < 0 || rs_sha256_final(&s, d) < 0 ? -EIO : 0;
    rs_sha256_free(&s);
    if (ret < 0)
        return ret;
    hex(h, d, 16);
    if ((size_t)snprintf(out, len, "%s/%s", dir, h) >= len)
        return -ENAMETOOLONG;
    return 0;
}

/* Writes |text| to |path| atomically (temp file, fsync, rename). Returns 0 or -errno. */
static int state_write(const char *path, const char *text)
{
    char tmp[PATH_MAX + 8];
    size_t len = strlen(text);
    int fd, ret = 0;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (pwrite_full(fd, (const uint8_t *)text, len, 0) < 0 || fsync(fd) < 0)
        ret = -errno;
    close(fd);
    if (ret == 0 && rename(tmp, path) < 0)
        ret = -errno;
    if (ret < 0)
        unlink(tmp);
    return ret;
}

/* Reads a state file into |buf| (NUL-terminated). Returns 0, -ENOENT or -errno. */
static int state_read(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    n = read_full(fd, (uint8_t *)buf, len - 1);
    close(fd);
    if (n < 0)
        return (int)n;
    buf[n] = '\0';
    return 0;
}

/* --- connection --------------------------------------------------------------------------- */

static struct rsc_conn *connect_or_fail(const char *what, int *code)
{
    char err[512];
    struct rsc_conn *c = rsc_conn_open(&opt.conn, err, sizeof(err));

    if (c == NULL)
        *code = fail(EX_CONN, what, -1, "UNAVAILABLE", "%s", err);
    return c;
}

/* --- stat, rm, ls ------------------------------------------------------------------------- */

static void print_info_human(const ringstream_v1_ObjectInfo *oi, bool long_form)
{
    char h[2 * RS_SHA256_LEN + 1], when[64] = "-";
    time_t t = (time_t)(oi->modified_unix_ms / 1000);
    struct tm tm;

    hex(h, oi->sha256, RS_SHA256_LEN);
    if (gmtime_r(&t, &tm) != NULL)
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (long_form)
        printf("name:     %s\nsize:     %" PRIu64 "\nsha256:   %s\nmodified: %s\n", oi->name,
               oi->size, h, when);
    else
        printf("%12" PRIu64 "  %s  %s\n", oi->size, when, oi->name);
}

/* Stat of |name|. Returns 0 or the exit code (error printed). */
static int do_stat(struct rsc_conn *c, const char *what, const char *name,
                   ringstream_v1_ObjectInfo *oi)
{
    uint8_t req[SMALL_MSG];
    size_t len = name_request(ringstream_v1_StatRequest_fields, name, req);
    struct rsc_status st;

    return unary(c, what, SVC "Stat", req, len, ringstream_v1_ObjectInfo_fields, oi, &st);
}

static int cmd_stat(int argc, char **argv)
{
    ringstream_v1_ObjectInfo oi;
    char what[300];
    struct rsc_conn *c;
    int code;

    if (argc != 1)
        return fail(EX_USAGE, "stat", -1, NULL, "usage: ringstream stat NAME");
    snprintf(what, sizeof(what), "stat %s", argv[0]);
    c = connect_or_fail(what, &code);
    if (c == NULL)
        return code;
    code = do_stat(c, what, argv[0], &oi);
    if (code == 0) {
        if (opt.json)
            json_info(stdout, "stat", &oi, NULL);
        else
            print_info_human(&oi, true);
    }
    rsc_conn_close(c);
    return code;
}

static int cmd_rm(int argc, char **argv)
{
    ringstream_v1_ObjectInfo oi;
    uint8_t req[SMALL_MSG];
    struct rsc_status st;
    char what[300];
    struct rsc_conn *c;
    size_t len;
    int code;

    if (argc != 1)
        return fail(EX_USAGE, "rm", -1, NULL, "usage: ringstream rm NAME");
    snprintf(what, sizeof(what), "rm %s", argv[0]);
    c = connect_or_fail(what, &code);
    if (c == NULL)
        return code;
    len = name_request(ringstream_v1_DeleteRequest_fields, argv[0], req);
    code = unary(c, what, SVC "Delete", req, len, ringstream_v1_ObjectInfo_fields, &oi, &st);
    if (code == 0 && opt.json)
        json_info(stdout, "rm", &oi, NULL);
    rsc_conn_close(c);
    return code;
}

struct ls_state {
    uint64_t count;
    bool bad;
};

static int on_list(void *arg, const uint8_t *m, size_t len)
{
    struct ls_state *ls = arg;
    ringstream_v1_ObjectInfo oi;

    if (!decode_info(m, len, &oi)) {
        ls->bad = true;
        return -1;
    }
    ls->count++;
    if (opt.json)
        json_info(stdout, "ls", &oi, NULL);
    else
        print_info_human(&oi, false);
    return 0;
}

static int cmd_ls(int argc, char **argv)
{
    const char *prefix = argc > 0 ? argv[0] : "";
    struct ls_state ls = { 0 };
    uint8_t req[SMALL_MSG];
    struct rsc_status st;
    struct rsc_conn *c;
    size_t len;
    int code, ret;

    if (argc > 1)
        return fail(EX_USAGE, "ls", -1, NULL, "usage: ringstream ls [PREFIX]");
    c = connect_or_fail("ls", &code);
    if (c == NULL)
        return code;
    len = name_request(ringstream_v1_ListRequest_fields, prefix, req);
    ret = rsc_call_run(c, SVC "List", req, len, NULL, on_list, &ls, &st);
    rsc_conn_close(c);
    if (ls.bad)
        return fail(EX_CONN, "ls", -1, "INTERNAL", "malformed ObjectInfo from the server");
    if (ret < 0 || st.code != 0)
        return fail_call("ls", ret, &st);
    return EX_OK;
}

/* --- put ---------------------------------------------------------------------------------- */

struct put {
    int fd;
    bool is_stdin;
    uint64_t size;             /* of the file (0 for stdin: unknown) */
    uint64_t off;              /* bytes read and sent so far */
    bool header_sent;          /* Put: the header went out; Upload: the first message went out */
    bool finished;             /* the last message went out */
    int io_err;                /* -errno of a local read failure */
    uint8_t *buf;              /* HDR_ROOM + DATA_CHUNK + 8 */
    struct rs_sha256 h;        /* of what was sent (stdin: the only hash) */
    uint8_t header[SMALL_MSG]; /* Put: the encoded header message */
    size_t header_len;
    char upload_id[65]; /* Upload: every message names it */
    uint64_t response_n;
    ringstream_v1_ObjectInfo info; /* Put's answer */
    ringstream_v1_UploadStatus up; /* Upload's answer */
    bool upload;
};

/* Reads the next piece of the input into p->buf + HDR_ROOM. Returns its length or -1. */
static ssize_t put_read(struct put *p, bool *last)
{
    ssize_t n = read_full(p->fd, p->buf + HDR_ROOM, DATA_CHUNK);

    if (n < 0) {
        p->io_err = (int)n;
        return -1;
    }
    if (!p->is_stdin && p->off + (uint64_t)n > p->size)
        n = (ssize_t)(p->size - p->off); /* the file grew: the header's size is the truth */
    if (!p->is_stdin && p->off + (uint64_t)n < p->size && n < DATA_CHUNK) {
        p->io_err = -ENODATA; /* shrank under us */
        return -1;
    }
    *last = p->is_stdin ? n < DATA_CHUNK : p->off + (uint64_t)n == p->size;
    if (rs_sha256_update(&p->h, p->buf + HDR_ROOM, (size_t)n) < 0) {
        p->io_err = -EIO;
        return -1;
    }
    return n;
}

static int put_next(void *arg, const uint8_t **msg, size_t *len)
{
    struct put *p = arg;
    uint8_t *start, *end;
    bool last = false;
    ssize_t n;

    if (!p->header_sent) {
        p->header_sent = true;
        *msg = p->header;
        *len = p->header_len;
        return 1;
    }
    if (p->finished)
        return 0;
    n = put_read(p, &last);
    if (n < 0)
        return -1;
    if (n == 0) { /* nothing left (an empty object, or stdin ended on a chunk boundary) */
        p->finished = true;
        return 0;
    }
    start = wrap_checked(p->buf + HDR_ROOM, (size_t)n, 3, &end);
    p->off += (uint64_t)n;
    p->finished = last;
    progress_add((uint64_t)n);
    *msg = start;
    *len = (size_t)(end - start);
    return 1;
}

static int upload_next(void *arg, const uint8_t **msg, size_t *len)
{
    struct put *p = arg;
    uint8_t *start, *end, *q;
    size_t idlen = strlen(p->upload_id);
    bool last = false, first = !p->header_sent;
    ssize_t n;

    if (p->finished)
        return 0;
    n = put_read(p, &last);
    if (n < 0)
        return -1;
    if (n > 0) {
        start = wrap_checked(p->buf + HDR_ROOM, (size_t)n, 4, &end);
    } else {
        last = true;
        start = end = p->buf + HDR_ROOM;
    }
    if (first) { /* UploadRequest.write_offset: where this stream's data starts */
        start = put_varint_before(start, p->off);
        *--start = (2 << 3) | PB_WT_VARINT;
    }
    q = start - idlen; /* UploadRequest.upload_id */
    memcpy(q, p->upload_id, idlen);
    start = put_varint_before(q, idlen);
    *--start = (1 << 3) | PB_WT_STRING;
    if (last) { /* UploadRequest.finish */
        *end++ = (5 << 3) | PB_WT_VARINT;
        *end++ = 1;
    }
    p->header_sent = true;
    p->off += (uint64_t)n;
    p->finished = last;
    progress_add((uint64_t)n);
    *msg = start;
    *len = (size_t)(end - start);
    return 1;
}

static int on_put_response(void *arg, const uint8_t *m, size_t len)
{
    struct put *p = arg;
    pb_istream_t s = pb_istream_from_buffer(m, len);
    bool ok;

    if (++p->response_n > 1)
        return -1;
    if (p->upload)
        ok = pb_decode(&s, ringstream_v1_UploadStatus_fields, &p->up);
    else
        ok = pb_decode(&s, ringstream_v1_ObjectInfo_fields, &p->info);
    return ok ? 0 : -1;
}

/* Checks the stored object against what was sent and prints the result. */
static int put_done(struct put *p, const char *what, const ringstream_v1_ObjectInfo *oi,
                    const uint8_t *sha, uint64_t size, uint64_t resumed_from, bool resumable)
{
    char extra[128];

    if (oi->size != size || memcmp(oi->sha256, sha, RS_SHA256_LEN) != 0) {
        char a[65], b[65];

        hex(a, sha, RS_SHA256_LEN);
        hex(b, oi->sha256, RS_SHA256_LEN);
        return fail(EX_INTEGRITY, what, -1, "INTEGRITY",
                    "the server stored %" PRIu64 " bytes with SHA-256 %s; sent %" PRIu64
                    " bytes with SHA-256 %s",
                    oi->size, b, size, a);
    }
    progress_end();
    snprintf(extra, sizeof(extra), ",\"resumable\":%s,\"resumed_from\":%" PRIu64,
             resumable ? "true" : "false", resumed_from);
    if (opt.json)
        json_info(stdout, "put", oi, extra);
    return EX_OK;
}

/* One Put stream: header, then CRC32C-checked data. */
static int put_stream(struct put *p, const char *what, const char *name, const uint8_t *sha)
{
    ringstream_v1_PutRequest r = ringstream_v1_PutRequest_init_zero;
    struct bytes bn = { name, strlen(name) }, bs = { sha, sha != NULL ? RS_SHA256_LEN : 0 };
    uint8_t got[RS_SHA256_LEN];
    struct rsc_status st;
    struct rsc_conn *c;
    int code, ret;

    r.which_part = ringstream_v1_PutRequest_header_tag;
    bind_bytes(&r.part.header.name, &bn);
    bind_bytes(&r.part.header.sha256, &bs);
    r.part.header.size = p->is_stdin ? 0 : p->size;
    r.part.header.overwrite = opt.overwrite;
    p->header_len = encode(ringstream_v1_PutRequest_fields, &r, p->header, sizeof(p->header));
    if (p->header_len == 0)
        return fail(EX_USAGE, what, -1, NULL, "name too long");
    c = connect_or_fail(what, &code);
    if (c == NULL)
        return code;
    progress_begin(p->is_stdin ? 0 : p->size, 0);
    ret = rsc_call_run(c, SVC "Put", NULL, 0, put_next, on_put_response, p, &st);
    rsc_conn_close(c);
    if (p->io_err != 0)
        return fail(EX_IO, what, -1, NULL, "reading the input: %s",
                    p->io_err == -ENODATA ? "the file shrank while being sent"
                                          : strerror(-p->io_err));
    if (ret == -ECANCELED)
        return fail(EX_CONN, what, -1, "INTERNAL", "malformed response from the server");
    if (ret < 0 || st.code != 0)
        return fail_call(what, ret, &st);
    if (p->response_n != 1)
        return fail(EX_CONN, what, -1, "INTERNAL", "no ObjectInfo in the response");
    if (rs_sha256_final(&p->h, got) < 0)
        return fail(EX_IO, what, -1, NULL, "SHA-256 failed");
    return put_done(p, what, &p->info, got, p->off, 0, false);
}

/* Resumable upload state: identity() = "id\npath\nsize\nmtime_ns\nino\ndev\noverwrite|create\n",
 * then the SHA-256 in hex and "\n" (put_resumable). */
static void identity(char *out, size_t len, const char *id, const char *path, const struct stat *s)
{
    /* --overwrite is part of it: StartUpload fixed it for the upload's publication. */
    snprintf(out, len, "%s\n%s\n%" PRIu64 "\n%" PRId64 "\n%" PRIu64 "\n%" PRIu64 "\n%s\n", id, path,
             (uint64_t)s->st_size, (int64_t)s->st_mtim.tv_sec * 1000000000 + s->st_mtim.tv_nsec,
             (uint64_t)s->st_ino, (uint64_t)s->st_dev, opt.overwrite ? "overwrite" : "create");
}

static int upload_ref_call(struct rsc_conn *c, const char *method, const char *id,
                           ringstream_v1_UploadStatus *us, struct rsc_status *st)
{
    uint8_t req[SMALL_MSG];
    size_t len = name_request(ringstream_v1_UploadRef_fields, id, req);
    struct unary u = { ringstream_v1_UploadStatus_fields, us, 0 };
    int ret;

    memset(us, 0, sizeof(*us));
    ret = rsc_call_run(c, method, req, len, NULL, on_unary, &u, st);
    if (ret == 0 && st->code == 0 && u.n != 1)
        return -EPROTO;
    return ret;
}

/* The SHA-256 of the whole file, before sending: it goes in the header, so the server refuses
 * (DATA_LOSS) rather than publish anything but this file's exact bytes. Returns 0 or the exit
 * code (printed). */
static int prehash(struct put *p, const char *what, const char *file, uint8_t sha[RS_SHA256_LEN])
{
    struct rs_sha256 pre;
    int ret;

    if (rs_sha256_init(&pre) < 0)
        return fail(EX_IO, what, -1, NULL, "out of memory");
    ret = hash_fd(p->fd, p->size, &pre, p->buf, DATA_CHUNK, "hashing ");
    if (ret == 0 && rs_sha256_final(&pre, sha) < 0)
        ret = -EIO;
    rs_sha256_free(&pre);
    if (ret < 0)
        return fail(EX_IO, what, -1, NULL, "%s: %s", file,
                    ret == -ENODATA ? "shrank while being read" : strerror(-ret));
    return 0;
}

static bool unhex(const char *in, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < 2 * n; i++) {
        int v = in[i] >= '0' && in[i] <= '9'   ? in[i] - '0'
                : in[i] >= 'a' && in[i] <= 'f' ? in[i] - 'a' + 10
                                               : -1;

        if (v < 0)
            return false;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return true;
}

/* The state file holds identity() and then the file's SHA-256 in hex, so a resume with an
 * unchanged file skips the hashing pass (a changed one fails the server's check anyway). */
static int put_resumable(struct put *p, const char *what, const char *name, const char *path,
                         const struct stat *sb)
{
    uint8_t sha[RS_SHA256_LEN];
    char shahex[2 * RS_SHA256_LEN + 1];
    bool have_sha = false;
    char key[PATH_MAX + 600], spath[PATH_MAX], text[PATH_MAX + 200], want[PATH_MAX + 200];
    char abspath[PATH_MAX];
    ringstream_v1_UploadStatus us;
    struct rsc_status st;
    struct rsc_conn *c;
    uint64_t resumed_from = 0;
    int code, ret;
    char id[65] = "";

    if (realpath(path, abspath) == NULL)
        return fail(EX_IO, what, -1, NULL, "%s: %s", path, strerror(errno));
    snprintf(key, sizeof(key), "%s\n%s\n%s", opt.conn.server, opt.conn.tls.on ? "tls" : "tcp",
             name);
    ret = state_path("uploads", key, strlen(key), spath, sizeof(spath));
    if (ret < 0)
        return fail(EX_IO, what, -1, NULL, "cache dir: %s", strerror(-ret));
    c = connect_or_fail(what, &code);
    if (c == NULL)
        return code;

    /* An upload of this name to this server left by an earlier run? */
    if (state_read(spath, text, sizeof(text)) == 0) {
        char *nl = strchr(text, '\n');

        if (nl != NULL && (size_t)(nl - text) < sizeof(id)) {
            memcpy(id, text, (size_t)(nl - text));
            id[nl - text] = '\0';
        }
        identity(want, sizeof(want), id, abspath, sb);
        if (id[0] != '\0' && strncmp(want, text, strlen(want)) == 0) {
            const char *h = text + strlen(want);

            have_sha = strlen(h) == 2 * RS_SHA256_LEN + 1 && h[2 * RS_SHA256_LEN] == '\n' &&
                       unhex(h, sha, RS_SHA256_LEN);
        }
        if (id[0] != '\0' && have_sha) {
            ret = upload_ref_call(c, SVC "QueryUpload", id, &us, &st);
            if (ret < 0 && ret != -EPROTO) {
                rsc_conn_close(c);
                return fail_call(what, ret, &st);
            }
            if (ret == 0 && st.code == 0 && us.has_object) { /* published; the answer was lost */
                rsc_conn_close(c);
                unlink(spath);
                p->off = sb->st_size;
                return put_done(p, what, &us.object, sha, (uint64_t)sb->st_size,
                                (uint64_t)sb->st_size, true);
            }
            if (ret == 0 && st.code == 0 && us.persisted_size <= (uint64_t)sb->st_size) {
                resumed_from = us.persisted_size;
            } else {
                id[0] = '\0'; /* expired or unknown: start over */
            }
        } else if (id[0] != '\0') {
            /* The file changed since: the old upload is of no use. */
            upload_ref_call(c, SVC "AbortUpload", id, &us, &st);
            id[0] = '\0';
        }
        if (id[0] == '\0')
            unlink(spath);
    }
    if (!have_sha) {
        code = prehash(p, what, path, sha);
        if (code != 0) {
            rsc_conn_close(c);
            return code;
        }
    }
    if (id[0] == '\0') {
        ringstream_v1_PutHeader h = ringstream_v1_PutHeader_init_zero;
        struct bytes bn = { name, strlen(name) }, bs = { sha, RS_SHA256_LEN };
        uint8_t req[SMALL_MSG];
        size_t len;

        bind_bytes(&h.name, &bn);
        bind_bytes(&h.sha256, &bs);
        h.size = (uint64_t)sb->st_size;
        h.overwrite = opt.overwrite;
        len = encode(ringstream_v1_PutHeader_fields, &h, req, sizeof(req));
        struct unary u = { ringstream_v1_UploadStatus_fields, &us, 0 };

        memset(&us, 0, sizeof(us));
        ret = rsc_call_run(c, SVC "StartUpload", req, len, NULL, on_unary, &u, &st);
        if (ret == 0 && st.code == RS_GRPC_UNIMPLEMENTED) {
            /* A server without resumable uploads: one Put stream does the job. */
            rsc_conn_close(c);
            return put_stream(p, what, name, sha);
        }
        if (ret == -ECANCELED || (ret == 0 && st.code == 0 && u.n != 1)) {
            rsc_conn_close(c);
            return fail(EX_CONN, what, -1, "INTERNAL", "malformed StartUpload response");
        }
        if (ret < 0 || st.code != 0) {
            rsc_conn_close(c);
            return fail_call(what, ret, &st);
        }
        snprintf(id, sizeof(id), "%s", us.upload_id);
        identity(text, sizeof(text), id, abspath, sb);
        hex(shahex, sha, RS_SHA256_LEN);
        strncat(text, shahex, sizeof(text) - strlen(text) - 2);
        strcat(text, "\n");
        ret = state_write(spath, text);
        if (ret < 0) {
            upload_ref_call(c, SVC "AbortUpload", id, &us, &st);
            rsc_conn_close(c);
            return fail(EX_IO, what, -1, NULL, "cannot save the upload state %s: %s", spath,
                        strerror(-ret));
        }
    }
    p->upload = true;
    snprintf(p->upload_id, sizeof(p->upload_id), "%s", id);
    /* ABORTED: the server still runs the stream of a client that died (kill -9) and has not
     * noticed yet; FAILED_PRECONDITION: persisted_size moved since QueryUpload. Both: ask
     * again where to start, a bounded number of times. */
    for (int attempt = 1;; attempt++) {
        if (lseek(p->fd, (off_t)resumed_from, SEEK_SET) < 0) {
            rsc_conn_close(c);
            return fail(EX_IO, what, -1, NULL, "%s: %s", path, strerror(errno));
        }
        p->off = resumed_from;
        p->header_sent = p->finished = false;
        p->response_n = 0;
        progress_begin(p->size, resumed_from);
        ret = rsc_call_run(c, SVC "Upload", NULL, 0, upload_next, on_put_response, p, &st);
        if (p->io_err != 0 || ret != 0 || attempt == 5 ||
            (st.code != RS_GRPC_ABORTED && st.code != RS_GRPC_FAILED_PRECONDITION))
            break;
        if (st.code == RS_GRPC_ABORTED) {
            struct timespec ts = { 0, 200000000L * attempt };

            nanosleep(&ts, NULL);
        }
        ret = upload_ref_call(c, SVC "QueryUpload", id, &us, &st);
        if (ret != 0 || st.code != 0 || us.has_object || us.persisted_size > p->size)
            break;
        resumed_from = us.persisted_size;
    }
    rsc_conn_close(c);
    if (p->io_err != 0)
        return fail(EX_IO, what, -1, NULL, "reading %s: %s", path,
                    p->io_err == -ENODATA ? "the file shrank while being sent"
                                          : strerror(-p->io_err));
    if (ret == -ECANCELED)
        return fail(EX_CONN, what, -1, "INTERNAL", "malformed response from the server");
    if (ret < 0) /* connection lost: the state stays, the same command resumes */
        return fail_call(what, ret, &st);
    if (st.code == 0 && us.has_object && p->response_n == 0) { /* published meanwhile */
        unlink(spath);
        return put_done(p, what, &us.object, sha, (uint64_t)sb->st_size, resumed_from, true);
    }
    if (st.code != 0) {
        /* A finish that failed its checks ended the upload; NOT_FOUND: it expired. Either
         * way the next run starts over. ABORTED, UNAVAILABLE and an offset disagreement keep
         * the state: the next run asks again. */
        if (st.code != RS_GRPC_ABORTED && st.code != RS_GRPC_UNAVAILABLE &&
            st.code != RS_GRPC_FAILED_PRECONDITION)
            unlink(spath);
        return fail_call(what, ret, &st);
    }
    if (p->response_n != 1 || !p->up.has_object)
        return fail(EX_CONN, what, -1, "INTERNAL", "the finishing Upload returned no object");
    unlink(spath);
    return put_done(p, what, &p->up.object, sha, (uint64_t)sb->st_size, resumed_from, true);
}

static int cmd_put(int argc, char **argv)
{
    struct put p = { .fd = -1 };
    uint8_t sha[RS_SHA256_LEN];
    const char *file, *name;
    char what[PATH_MAX + 300];
    struct stat sb;
    int code;

    if (argc != 2)
        return fail(EX_USAGE, "put", -1, NULL, "usage: ringstream put FILE NAME");
    file = argv[0];
    name = argv[1];
    snprintf(what, sizeof(what), "put %s", name);
    p.is_stdin = strcmp(file, "-") == 0;
    p.fd = p.is_stdin ? STDIN_FILENO : open(file, O_RDONLY | O_CLOEXEC);
    if (p.fd < 0)
        return fail(EX_IO, what, -1, NULL, "%s: %s", file, strerror(errno));
    p.buf = malloc(HDR_ROOM + DATA_CHUNK + 16);
    if (p.buf == NULL || rs_sha256_init(&p.h) < 0) {
        code = fail(EX_IO, what, -1, NULL, "out of memory");
        goto out;
    }
    if (!p.is_stdin) {
        if (fstat(p.fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
            code = fail(EX_IO, what, -1, NULL, "%s: %s", file,
                        S_ISDIR(sb.st_mode) ? "is a directory" : strerror(errno));
            goto out;
        }
        p.size = (uint64_t)sb.st_size;
    }
    if (!p.is_stdin && p.size >= opt.resumable_threshold) {
        code = put_resumable(&p, what, name, file, &sb);
    } else if (!p.is_stdin) {
        code = prehash(&p, what, file, sha);
        if (code == 0)
            code = put_stream(&p, what, name, sha);
    } else {
        code = put_stream(&p, what, name, NULL);
    }
out:
    rs_sha256_free(&p.h);
    free(p.buf);
    if (p.fd >= 0 && !p.is_stdin)
        close(p.fd);
    return code;
}

/* --- get ---------------------------------------------------------------------------------- */

struct get {
    int fd;
    bool to_stdout;
    uint64_t next_off;   /* the offset the next chunk must have */
    uint64_t end;        /* one past the last byte asked for */
    struct rs_sha256 *h; /* running hash (sequential Gets), or NULL */
    int io_err;
    char bad[160]; /* why the call was cancelled for integrity */
};

static int on_chunk(void *arg, const uint8_t *m, size_t len)
{
    struct get *g = arg;
    ringstream_v1_Chunk ch = ringstream_v1_Chunk_init_zero;
    struct rs_pb_view data = { 0 };
    pb_istream_t s = pb_istream_from_buffer(m, len);
    int ret;

    rs_pb_view_bind(&ch.data, &data);
    if (!pb_decode(&s, ringstream_v1_Chunk_fields, &ch) ||
        !rs_pb_views_inside(ringstream_v1_Chunk_fields, &ch, m, len)) {
        snprintf(g->bad, sizeof(g->bad), "malformed Chunk message");
        return -1;
    }
    if (ch.offset != g->next_off || data.len > g->end - g->next_off) {
        snprintf(g->bad, sizeof(g->bad),
                 "chunk at offset %" PRIu64 " (%zu bytes) where %" PRIu64 " was due", ch.offset,
                 data.len, g->next_off);
        return -1;
    }
    if (rs_crc32c(0, data.p, data.len) != ch.crc32c) {
        snprintf(g->bad, sizeof(g->bad),
                 "CRC32C mismatch in the chunk at offset %" PRIu64 " (%zu bytes): got %08x, "
                 "computed %08x",
                 ch.offset, data.len, ch.crc32c, rs_crc32c(0, data.p, data.len));
        return -1;
    }
    if (g->to_stdout) {
        size_t off = 0;

        while (off < data.len) {
            ssize_t n = write(g->fd, data.p + off, data.len - off);

            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                g->io_err = -errno;
                return -1;
            }
            off += (size_t)n;
        }
    } else {
        ret = pwrite_full(g->fd, data.p, data.len, ch.offset);
        if (ret < 0) {
            g->io_err = ret;
            return -1;
        }
    }
    if (g->h != NULL && rs_sha256_update(g->h, data.p, data.len) < 0) {
        g->io_err = -EIO;
        return -1;
    }
    g->next_off += data.len;
    progress_add(data.len);
    return 0;
}

/* One ranged Get on |c|. Returns 0, or the exit code after printing the error; |*st| and
 * |*call_ret| let the caller tell FAILED_PRECONDITION apart. */
static int get_range(struct rsc_conn *c, const char *what, const char *name, uint64_t off,
                     uint64_t len, const uint8_t *if_match, struct get *g, struct rsc_status *st,
                     bool quiet_precondition)
{
    ringstream_v1_GetRequest r = ringstream_v1_GetRequest_init_zero;
    struct bytes bn = { name, strlen(name) }, bm = { if_match, if_match ? RS_SHA256_LEN : 0 };
    uint8_t req[SMALL_MSG];
    size_t rlen;
    int ret;

    bind_bytes(&r.name, &bn);
    bind_bytes(&r.if_match_sha256, &bm);
    r.offset = off;
    r.length = len;
    r.chunk_size = GET_CHUNK;
    rlen = encode(ringstream_v1_GetRequest_fields, &r, req, sizeof(req));
    g->next_off = off;
    g->end = len > 0 ? off + len : UINT64_MAX;
    ret = rsc_call_run(c, SVC "Get", req, rlen, NULL, on_chunk, g, st);
    if (g->io_err != 0)
        return fail(EX_IO, what, -1, NULL, "writing: %s", strerror(-g->io_err));
    if (ret == -ECANCELED)
        return fail(EX_INTEGRITY, what, -1, "INTEGRITY", "%s", g->bad);
    if (ret == 0 && st->code == RS_GRPC_FAILED_PRECONDITION && quiet_precondition)
        return -1;
    if (ret < 0 || st->code != 0)
        return fail_call(what, ret, st);
    if (len > 0 && g->next_off != off + len)
        return fail(EX_INTEGRITY, what, -1, "INTEGRITY",
                    "the server sent %" PRIu64 " of %" PRIu64 " bytes", g->next_off - off, len);
    return 0;
}

static int integrity_fail_sha(const char *what, const uint8_t *want, const uint8_t *got)
{
    char a[65], b[65];

    hex(a, want, RS_SHA256_LEN);
    hex(b, got, RS_SHA256_LEN);
    return fail(EX_INTEGRITY, what, -1, "INTEGRITY",
                "SHA-256 mismatch: the server's object is %s, received %s", a, b);
}

static int get_to_stdout(const char *what, const char *name)
{
    ringstream_v1_ObjectInfo oi;
    struct rs_sha256 h;
    struct get g = { .fd = STDOUT_FILENO, .to_stdout = true, .h = &h };
    uint8_t got[RS_SHA256_LEN];
    struct rsc_status st;
    struct rsc_conn *c;
    int code;

    json_out = stderr;
    if (rs_sha256_init(&h) < 0)
        return fail(EX_IO, what, -1, NULL, "out of memory");
    c = connect_or_fail(what, &code);
    if (c == NULL)
        goto out;
    code = do_stat(c, what, name, &oi);
    if (code == 0) {
        progress_begin(oi.size, 0);
        code = get_range(c, what, name, 0, 0, oi.sha256, &g, &st, false);
    }
    rsc_conn_close(c);
    if (code == 0) {
        if (rs_sha256_final(&h, got) < 0) {
            code = fail(EX_IO, what, -1, NULL, "SHA-256 failed");
        } else if (g.next_off != oi.size || memcmp(got, oi.sha256, RS_SHA256_LEN) != 0) {
            code = integrity_fail_sha(what, oi.sha256, got);
        } else {
            progress_end();
            if (opt.json)
                json_info(stderr, "get", &oi, ",\"resumed_from\":0");
        }
    }
out:
    rs_sha256_free(&h);
    return code;
}

struct range_job {
    const char *what, *name;
    const uint8_t *sha;
    uint64_t off, len;
    int fd;
    int code;
    pthread_t tid;
};

static void *range_thread(void *arg)
{
    struct range_job *j = arg;
    struct get g = { .fd = j->fd };
    struct rsc_status st;
    struct rsc_conn *c = connect_or_fail(j->what, &j->code);

    if (c == NULL)
        return NULL;
    j->code = get_range(c, j->what, j->name, j->off, j->len, j->sha, &g, &st, false);
    rsc_conn_close(c);
    return NULL;
}

/* --streams N: N ranged Gets on N connections written in place, then one SHA-256 pass. */
static int get_parallel(const char *what, const char *name, int fd,
                        const ringstream_v1_ObjectInfo *oi)
{
    struct range_job jobs[MAX_STREAMS];
    uint64_t per = (oi->size + opt.streams - 1) / opt.streams;
    unsigned n = 0;
    int code = 0;

    if (ftruncate(fd, (off_t)oi->size) < 0)
        return fail(EX_IO, what, -1, NULL, "%s", strerror(errno));
    if (per < GET_CHUNK)
        per = GET_CHUNK;
    progress_begin(oi->size, 0);
    for (uint64_t off = 0; off < oi->size && n < MAX_STREAMS; off += per, n++) {
        jobs[n] = (struct range_job){ .what = what,
                                      .name = name,
                                      .sha = oi->sha256,
                                      .off = off,
                                      .len = oi->size - off < per ? oi->size - off : per,
                                      .fd = fd };
        if (pthread_create(&jobs[n].tid, NULL, range_thread, &jobs[n]) != 0) {
            code = fail(EX_IO, what, -1, NULL, "cannot start a thread");
            break;
        }
    }
    for (unsigned i = 0; i < n; i++) {
        pthread_join(jobs[i].tid, NULL);
        if (code == 0)
            code = jobs[i].code;
    }
    return code;
}

static int cmd_get(int argc, char **argv)
{
    const char *name, *file;
    char what[300], part[PATH_MAX], spath[PATH_MAX], key[PATH_MAX + 600], text[512];
    char abspart[PATH_MAX], shahex[65];
    ringstream_v1_ObjectInfo oi;
    uint8_t got[RS_SHA256_LEN];
    struct rs_sha256 h = { 0 };
    struct rsc_status st;
    struct rsc_conn *c = NULL;
    uint64_t resume = 0;
    uint8_t *buf = NULL;
    int fd = -1, code, ret;
    bool keep_part = false;

    if (argc != 2)
        return fail(EX_USAGE, "get", -1, NULL, "usage: ringstream get NAME FILE");
    name = argv[0];
    file = argv[1];
    snprintf(what, sizeof(what), "get %s", name);
    if (strcmp(file, "-") == 0)
        return get_to_stdout(what, name);
    if ((size_t)snprintf(part, sizeof(part), "%s.part", file) >= sizeof(part))
        return fail(EX_USAGE, what, -1, NULL, "%s: path too long", file);

    c = connect_or_fail(what, &code);
    if (c == NULL)
        return code;
    code = do_stat(c, what, name, &oi);
    if (code != 0)
        goto out;
    hex(shahex, oi.sha256, RS_SHA256_LEN);
    fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        code = fail(EX_IO, what, -1, NULL, "%s: %s", part, strerror(errno));
        goto out;
    }
    if (realpath(part, abspart) == NULL) {
        code = fail(EX_IO, what, -1, NULL, "%s: %s", part, strerror(errno));
        goto out;
    }
    /* Keyed by file and object name, not server: the recorded SHA-256 (and if_match_sha256)
     * decides whether the bytes already there belong to the object. */
    snprintf(key, sizeof(key), "%s\n%s", abspart, name);
    ret = state_path("downloads", key, strlen(key), spath, sizeof(spath));
    if (ret < 0) {
        code = fail(EX_IO, what, -1, NULL, "cache dir: %s", strerror(-ret));
        goto out;
    }
    buf = malloc(DATA_CHUNK);
    if (buf == NULL || rs_sha256_init(&h) < 0) {
        code = fail(EX_IO, what, -1, NULL, "out of memory");
        goto out;
    }

    if (opt.streams > 1) {
        if (ftruncate(fd, 0) < 0) {
            code = fail(EX_IO, what, -1, NULL, "%s: %s", part, strerror(errno));
            goto out;
        }
        code = get_parallel(what, name, fd, &oi);
        if (code == 0 && hash_fd(fd, oi.size, &h, buf, DATA_CHUNK, "verifying ") < 0)
            code = fail(EX_IO, what, -1, NULL, "re-reading %s: %s", part, strerror(errno));
        if (code == 0)
            resume = 0;
        goto verify;
    }

    /* A download of this very object left in FILE.part by an earlier run resumes where it
     * stopped, if the object is still the version it started with. */
    {
        struct stat sb;
        char want[512];

        snprintf(want, sizeof(want), "%s\n", shahex);
        if (fstat(fd, &sb) == 0 && sb.st_size > 0 && state_read(spath, text, sizeof(text)) == 0 &&
            strcmp(text, want) == 0 && (uint64_t)sb.st_size <= oi.size) {
            resume = (uint64_t)sb.st_size;
            ret = hash_fd(fd, resume, &h, buf, DATA_CHUNK, "re-reading ");
            if (ret < 0) {
                code = fail(EX_IO, what, -1, NULL, "re-reading %s: %s", part, strerror(-ret));
                goto out;
            }
        }
    }
    if (resume == 0) {
        if (ftruncate(fd, 0) < 0) {
            code = fail(EX_IO, what, -1, NULL, "%s: %s", part, strerror(errno));
            goto out;
        }
        snprintf(text, sizeof(text), "%s\n", shahex);
        ret = state_write(spath, text);
        if (ret < 0) {
            code = fail(EX_IO, what, -1, NULL, "cannot save the download state: %s",
                        strerror(-ret));
            goto out;
        }
    }
    for (int attempt = 0;; attempt++) {
        struct get g = { .fd = fd, .h = &h };

        progress_begin(oi.size, resume);
        keep_part = true; /* from here an interruption leaves a resumable FILE.part */
        code = get_range(c, what, name, resume, 0, oi.sha256, &g, &st, attempt == 0);
        if (code != -1)
            break;
        /* FAILED_PRECONDITION: the object changed since the download began; start over. */
        rs_sha256_free(&h);
        if (rs_sha256_init(&h) < 0 || ftruncate(fd, 0) < 0) {
            code = fail(EX_IO, what, -1, NULL, "restarting: %s", strerror(errno));
            goto out;
        }
        code = do_stat(c, what, name, &oi);
        if (code != 0)
            goto out;
        hex(shahex, oi.sha256, RS_SHA256_LEN);
        snprintf(text, sizeof(text), "%s\n", shahex);
        state_write(spath, text);
        resume = 0;
    }
verify:
    if (code != 0) {
        /* An integrity failure leaves nothing behind; anything else a resumable part. */
        if (code == EX_INTEGRITY || !keep_part) {
            unlink(part);
            unlink(spath);
        }
        goto out;
    }
    if (rs_sha256_final(&h, got) < 0) {
        code = fail(EX_IO, what, -1, NULL, "SHA-256 failed");
        goto out;
    }
    if (memcmp(got, oi.sha256, RS_SHA256_LEN) != 0) {
        code = integrity_fail_sha(what, oi.sha256, got);
        unlink(part);
        unlink(spath);
        goto out;
    }
    if (fsync(fd) < 0 || rename(part, file) < 0) {
        code = fail(EX_IO, what, -1, NULL, "%s: %s", file, strerror(errno));
        goto out;
    }
    unlink(spath);
    progress_end();
    if (opt.json) {
        char extra[96];

        snprintf(extra, sizeof(extra), ",\"resumed_from\":%" PRIu64 ",\"streams\":%u", resume,
                 opt.streams > 1 ? opt.streams : 1);
        json_info(stdout, "get", &oi, extra);
    }
out:
    if (code != 0 && fd >= 0 && !keep_part)
        unlink(part); /* failed before any data: no empty FILE.part left behind */
    rs_sha256_free(&h);
    free(buf);
    if (fd >= 0)
        close(fd);
    rsc_conn_close(c);
    return code;
}

/* --- command line ------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: ringstream [OPTIONS] COMMAND ARGS\n"
          "\n"
          "Commands:\n"
          "  put FILE NAME     upload FILE (- for stdin) as object NAME\n"
          "  get NAME FILE     download NAME into FILE (- for stdout); data goes to FILE.part\n"
          "                    and is renamed once its SHA-256 matches the server's\n"
          "  ls [PREFIX]       list objects (size, modification time, name)\n"
          "  stat NAME         show an object's size, SHA-256 and modification time\n"
          "  rm NAME           delete an object\n"
          "  bench KIND        load test: KIND is unary (Stat), get, put or echo; prints calls/s,\n"
          "                    bytes/s and latency percentiles (p50 p90 p99 p999)\n"
          "\n"
          "Options:\n"
          "  --server HOST:PORT         server (default $RINGSTREAM_SERVER or " DEFAULT_SRV ")\n"
          "  --tls                      TLS (ALPN h2), server certificate verified\n"
          "  --ca FILE                  CA bundle for the server certificate (implies --tls)\n"
          "  --cert FILE --key FILE     client certificate and key (implies --tls)\n"
          "  --servername NAME          name expected in the server certificate (and SNI)\n"
          "  --overwrite                put: replace an existing object\n"
          "  --resumable-threshold SIZE put: resumable upload from this size (default 8M)\n"
          "  --streams N                get: N ranged Gets on N connections (1..64);\n"
          "                             bench: calls in flight per connection\n"
          "  --conns N                  bench: connections (one thread each; default 1)\n"
          "  --size SIZE                bench: bytes per call (default 64K)\n"
          "  --duration SECONDS         bench: how long (default 5)\n"
          "  --limit-rate SIZE          at most SIZE bytes per second\n"
          "  --timeout SECONDS          fail when the server is silent this long (default 60)\n"
          "  --json                     one JSON object per result on stdout (stderr for get -)\n"
          "  --no-progress              no progress bar (shown only when stderr is a terminal)\n"
          "  --version                  version and the CRC32C/SHA-256 providers\n"
          "  -h, --help                 this text\n"
          "\n"
          "Interrupted transfers resume when the same command is run again: uploads from the\n"
          "server's persisted size, downloads from FILE.part (state in $XDG_CACHE_HOME/ringstream).\n"
          "\n"
          "Exit codes:\n"
          "  0  success\n"
          "  1  the server answered with a gRPC error (the status is named on stderr;\n"
          "     --json adds grpc_status)\n"
          "  2  usage error\n"
          "  3  local I/O error (reading or writing a file, the cache directory)\n"
          "  4  integrity failure: CRC32C or SHA-256 mismatch, or the server reported DATA_LOSS;\n"
          "     no file is left behind\n"
          "  5  connection failure: cannot connect, TLS handshake, connection lost, timeout,\n"
          "     a response that does not decode\n",
          f);
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || s[0] == '-')
        return -EINVAL;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        v <<= 10;
        end++;
        break;
    case 'm':
    case 'M':
        v <<= 20;
        end++;
        break;
    case 'g':
    case 'G':
        v <<= 30;
        end++;
        break;
    default:
        return -EINVAL;
    }
    if (*end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    enum {
        O_TLS = 256,
        O_CA,
        O_CERT,
        O_KEY,
        O_SNI,
        O_OVERWRITE,
        O_RESUM,
        O_STREAMS,
        O_RATE,
        O_JSON,
        O_NOPROG,
        O_SERVER,
        O_TIMEOUT,
        O_CONNS,
        O_SIZE,
        O_DURATION,
        O_VERSION,
    };
    static const struct option longopts[] = {
        { "server", required_argument, NULL, O_SERVER },
        { "tls", no_argument, NULL, O_TLS },
        { "ca", required_argument, NULL, O_CA },
        { "cert", required_argument, NULL, O_CERT },
        { "key", required_argument, NULL, O_KEY },
        { "servername", required_argument, NULL, O_SNI },
        { "overwrite", no_argument, NULL, O_OVERWRITE },
        { "resumable-threshold", required_argument, NULL, O_RESUM },
        { "streams", required_argument, NULL, O_STREAMS },
        { "limit-rate", required_argument, NULL, O_RATE },
        { "timeout", required_argument, NULL, O_TIMEOUT },
        { "json", no_argument, NULL, O_JSON },
        { "conns", required_argument, NULL, O_CONNS },
        { "size", required_argument, NULL, O_SIZE },
        { "duration", required_argument, NULL, O_DURATION },
        { "no-progress", no_argument, NULL, O_NOPROG },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, O_VERSION },
        { NULL, 0, NULL, 0 },
    };
    const char *env = getenv("RINGSTREAM_SERVER");
    bool no_progress = false;
    uint64_t v;
    int ch;

    /* wolfSSL writes with send() without MSG_NOSIGNAL: a peer gone away is an error, not death. */
    signal(SIGPIPE, SIG_IGN);
    opt.conn.server = env != NULL && env[0] != '\0' ? env : DEFAULT_SRV;
    opt.resumable_threshold = DEFAULT_RESUM;
    opt.streams = 1;
    opt.conns = 1;
    opt.bench_size = 64 * 1024;
    opt.duration_s = 5;
    opt.cmd = "ringstream";
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_SERVER:
            opt.conn.server = optarg;
            break;
        case O_TLS:
            opt.conn.tls.on = true;
            break;
        case O_CA:
            opt.conn.tls.on = true;
            opt.conn.tls.ca = optarg;
            break;
        case O_CERT:
            opt.conn.tls.on = true;
            opt.conn.tls.cert = optarg;
            break;
        case O_KEY:
            opt.conn.tls.on = true;
            opt.conn.tls.key = optarg;
            break;
        case O_SNI:
            opt.conn.tls.servername = optarg;
            break;
        case O_OVERWRITE:
            opt.overwrite = true;
            break;
        case O_RESUM:
            if (parse_size(optarg, &opt.resumable_threshold) < 0)
                return fail(EX_USAGE, "--resumable-threshold", -1, NULL, "bad size \"%s\"", optarg);
            break;
        case O_STREAMS:
            if (parse_size(optarg, &v) < 0 || v < 1 || v > MAX_STREAMS)
                return fail(EX_USAGE, "--streams", -1, NULL, "want 1..%d, not \"%s\"", MAX_STREAMS,
                            optarg);
            opt.streams = (unsigned)v;
            break;
        case O_RATE:
            if (parse_size(optarg, &opt.limit_rate) < 0)
                return fail(EX_USAGE, "--limit-rate", -1, NULL, "bad size \"%s\"", optarg);
            break;
        case O_TIMEOUT:
            if (parse_size(optarg, &v) < 0 || v < 1 || v > 86400)
                return fail(EX_USAGE, "--timeout", -1, NULL, "want 1..86400 s, not \"%s\"", optarg);
            opt.conn.idle_timeout_ms = (int)v * 1000;
            break;
        case O_JSON:
            opt.json = true;
            break;
        case O_CONNS:
            if (parse_size(optarg, &v) < 0 || v < 1 || v > 256)
                return fail(EX_USAGE, "--conns", -1, NULL, "want 1..256, not \"%s\"", optarg);
            opt.conns = (unsigned)v;
            break;
        case O_SIZE:
            if (parse_size(optarg, &opt.bench_size) < 0 || opt.bench_size > (1ull << 34))
                return fail(EX_USAGE, "--size", -1, NULL, "bad size \"%s\"", optarg);
            break;
        case O_DURATION:
            if (parse_size(optarg, &v) < 0 || v < 1 || v > 3600)
                return fail(EX_USAGE, "--duration", -1, NULL, "want 1..3600 s, not \"%s\"", optarg);
            opt.duration_s = (double)v;
            break;
        case O_NOPROG:
            no_progress = true;
            break;
        case 'h':
            usage(stdout);
            return EX_OK;
        case O_VERSION:
            printf("ringstream %s\nCRC32C: %s\nSHA-256: %s\n", RS_VERSION, rs_crc32c_provider(),
                   rs_sha256_provider());
            return EX_OK;
        default:
            usage(stderr);
            return EX_USAGE;
        }
    }
    if ((opt.conn.tls.cert == NULL) != (opt.conn.tls.key == NULL))
        return fail(EX_USAGE, "--cert", -1, NULL, "--cert and --key go together");
    opt.progress = !no_progress && !opt.json && isatty(STDERR_FILENO);
    if (optind >= argc) {
        usage(stderr);
        return EX_USAGE;
    }
    opt.cmd = argv[optind];
    argc -= optind + 1;
    argv += optind + 1;
    if (strcmp(opt.cmd, "put") == 0)
        return cmd_put(argc, argv);
    if (strcmp(opt.cmd, "get") == 0)
        return cmd_get(argc, argv);
    if (strcmp(opt.cmd, "ls") == 0)
        return cmd_ls(argc, argv);
    if (strcmp(opt.cmd, "stat") == 0)
        return cmd_stat(argc, argv);
    if (strcmp(opt.cmd, "rm") == 0)
        return cmd_rm(argc, argv);
    if (strcmp(opt.cmd, "bench") == 0) {
        struct rsc_bench_opts b = { .conn = &opt.conn,
                                    .conns = opt.conns,
                                    .streams = opt.streams,
                                    .size = opt.bench_size,
                                    .duration_s = opt.duration_s,
                                    .json = opt.json };

        if (argc != 1 || rsc_bench_kind_parse(argv[0], &b.kind) < 0)
            return fail(EX_USAGE, "bench", -1, NULL,
                        "usage: ringstream bench unary|get|put|echo [--conns N] [--streams N] "
                        "[--size SIZE] [--duration S]");
        return rsc_bench_run(&b);
    }
    fprintf(stderr, "ringstream: unknown command \"%s\" (see ringstream --help)\n", opt.cmd);
    return EX_USAGE;
}
