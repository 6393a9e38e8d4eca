/* client/cli.c: the helpers the client's commands share (cli.h): output and errors, the
 * progress bar and rate limit, protobuf glue, files and the state kept in the cache dir. */
#include "client/cli.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "core/crc32c.h"
#include "proto/grpc.h"
#include "proto/pbview.h"

struct rsc_cli rsc_cli;

/* --- output ------------------------------------------------------------------------------ */

void rsc_hex(char *out, const uint8_t *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void rsc_json_str(FILE *f, const char *s)
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
FILE *rsc_json_out = NULL;

FILE *rsc_jout(void)
{
    return rsc_json_out != NULL ? rsc_json_out : stdout;
}

void rsc_json_info(FILE *f, const char *cmd, const ringstream_v1_ObjectInfo *oi, const char *extra)
{
    char h[2 * RS_SHA256_LEN + 1];

    rsc_hex(h, oi->sha256, RS_SHA256_LEN);
    fprintf(f, "{\"ok\":true,\"command\":\"%s\",\"name\":", cmd);
    rsc_json_str(f, oi->name);
    fprintf(f, ",\"size\":%" PRIu64 ",\"sha256\":\"%s\",\"modified_unix_ms\":%" PRId64 "%s}\n",
            oi->size, h, oi->modified_unix_ms, extra != NULL ? extra : "");
    fflush(f);
}

/* One line on stderr for every failure ("ringstream: get big.bin: NOT_FOUND: ..."), and with
 * --json one object on the result stream. Returns |code| for `return rsc_fail(...)`. */
__attribute__((format(printf, 5, 6))) int rsc_fail(int code, const char *what, int grpc,
                                                   const char *status, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (rsc_cli.progress)
        fputs("\r\033[K", stderr);
    if (status != NULL)
        fprintf(stderr, "ringstream: %s: %s: %s\n", what, status, msg);
    else
        fprintf(stderr, "ringstream: %s: %s\n", what, msg);
    if (rsc_cli.json) {
        FILE *f = rsc_jout();

        fprintf(f, "{\"ok\":false,\"command\":\"%s\",\"exit\":%d,\"error\":", rsc_cli.cmd, code);
        /* every failure has a name for scripts: the status, or what kind of local failure */
        rsc_json_str(f, status != NULL         ? status
                        : code == RSC_EX_USAGE ? "USAGE"
                        : code == RSC_EX_IO    ? "LOCAL_IO"
                                               : "ERROR");
        if (grpc >= 0)
            fprintf(f, ",\"grpc_status\":%d", grpc);
        fputs(",\"message\":", f);
        rsc_json_str(f, msg);
        fputs(",\"what\":", f);
        rsc_json_str(f, what);
        fputs("}\n", f);
        fflush(f);
    }
    return code;
}

/* Turns the outcome of rsc_call_run() that was not an OK status into an exit code. */
int rsc_fail_call(const char *what, int ret, const struct rsc_status *st)
{
    if (ret == -ECANCELED)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "cancelled: %s", st->msg);
    if (ret < 0)
        return rsc_fail(RSC_EX_CONN, what, -1, "UNAVAILABLE", "%s", st->msg);
    return rsc_fail(st->code == RS_GRPC_DATA_LOSS ? RSC_EX_INTEGRITY : RSC_EX_GRPC, what, st->code,
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

double rsc_now_s(void)
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

void rsc_progress_begin(uint64_t total, uint64_t already)
{
    prog.total = total;
    prog.base = already;
    prog.label = "";
    atomic_store(&prog.done, already);
    prog.start = rsc_now_s();
    prog.last = 0;
    prog.drawn = false;
}

void rsc_progress_draw(bool final)
{
    uint64_t done = atomic_load(&prog.done);
    double t = rsc_now_s(), el = t - prog.start;
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
void rsc_progress_add(uint64_t n)
{
    uint64_t done = atomic_fetch_add(&prog.done, n) + n;

    if (rsc_cli.limit_rate > 0) {
        double ahead = (double)(done - prog.base) / (double)rsc_cli.limit_rate -
                       (rsc_now_s() - prog.start);

        if (ahead > 0) {
            struct timespec ts = { .tv_sec = (time_t)ahead,
                                   .tv_nsec = (long)((ahead - (double)(time_t)ahead) * 1e9) };

            nanosleep(&ts, NULL);
        }
    }
    if (rsc_cli.progress && !atomic_flag_test_and_set(&prog.printing)) {
        double t = rsc_now_s();

        if (t - prog.last >= 0.2) {
            prog.last = t;
            rsc_progress_draw(false);
        }
        atomic_flag_clear(&prog.printing);
    }
}

void rsc_progress_end(void)
{
    if (rsc_cli.progress)
        rsc_progress_draw(true);
}

/* --- protobuf helpers --------------------------------------------------------------------- */

static bool enc_bytes(pb_ostream_t *s, const pb_field_t *f, void *const *arg)
{
    const struct rsc_bytes *b = *arg;

    if (b == NULL || b->n == 0)
        return true;
    return pb_encode_tag_for_field(s, f) && pb_encode_string(s, b->p, b->n);
}

void rsc_bind_bytes(pb_callback_t *cb, struct rsc_bytes *b)
{
    cb->funcs.encode = enc_bytes;
    cb->arg = b;
}

size_t rsc_encode(const pb_msgdesc_t *fields, const void *msg, uint8_t *buf, size_t cap)
{
    pb_ostream_t s = pb_ostream_from_buffer(buf, cap);

    return pb_encode(&s, fields, msg) ? s.bytes_written : 0;
}

bool rsc_decode_info(const uint8_t *m, size_t len, ringstream_v1_ObjectInfo *oi)
{
    pb_istream_t s = pb_istream_from_buffer(m, len);

    memset(oi, 0, sizeof(*oi));
    return pb_decode(&s, ringstream_v1_ObjectInfo_fields, oi);
}

int rsc_on_unary(void *arg, const uint8_t *m, size_t len)
{
    struct rsc_unary *u = arg;
    pb_istream_t s = pb_istream_from_buffer(m, len);

    if (++u->n > 1 || !pb_decode(&s, u->fields, u->out))
        return -1;
    return 0;
}

/* Runs a rsc_unary call. Returns 0 with |out| filled, or the exit code after printing the error. */
int rsc_unary(struct rsc_conn *c, const char *what, const char *method, const uint8_t *req,
              size_t reqlen, const pb_msgdesc_t *fields, void *out, struct rsc_status *st)
{
    struct rsc_unary u = { fields, out, 0 };
    int ret = rsc_call_run(c, method, req, reqlen, NULL, rsc_on_unary, &u, st);

    if (ret == -ECANCELED)
        return rsc_fail(RSC_EX_CONN, what, -1, "INTERNAL", "malformed response from the server");
    if (ret < 0 || st->code != 0)
        return rsc_fail_call(what, ret, st);
    if (u.n != 1)
        return rsc_fail(RSC_EX_CONN, what, -1, "INTERNAL", "no response message from the server");
    return 0;
}

size_t rsc_name_request(const pb_msgdesc_t *fields, const char *name, uint8_t *buf)
{
    /* StatRequest, DeleteRequest, ListRequest and UploadRef: one string field, number 1. */
    ringstream_v1_StatRequest r = ringstream_v1_StatRequest_init_zero;
    struct rsc_bytes b = { name, strlen(name) };

    rsc_bind_bytes(&r.name, &b);
    return rsc_encode(fields, &r, buf, RSC_SMALL_MSG);
}

/* Writes a protobuf varint just before |end|. Returns the new start. */
uint8_t *rsc_put_varint_before(uint8_t *end, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = rs_pb_put_varint(tmp, v);

    memcpy(end - n, tmp, n);
    return end - n;
}

/* Builds ChecksummedData around |n| data bytes that already sit at |data| (with RSC_HDR_ROOM
 * bytes free before and 5 after), wrapped as field |outer| (PutRequest.checked_data = 3,
 * UploadRequest.checked_data = 4). Returns the start of the field; |*end| past the CRC. */
uint8_t *rsc_wrap_checked(uint8_t *data, size_t n, unsigned outer, uint8_t **end)
{
    uint32_t crc = rs_crc32c(0, data, n);
    uint8_t *p = data, *e = data + n;
    size_t inner;

    *e++ = (2 << 3) | PB_WT_32BIT; /* ChecksummedData.crc32c, fixed32 little-endian */
    for (int i = 0; i < 4; i++)
        *e++ = (uint8_t)(crc >> (8 * i));
    p = rsc_put_varint_before(p, n);
    *--p = (1 << 3) | PB_WT_STRING; /* ChecksummedData.data */
    inner = (size_t)(e - p);
    p = rsc_put_varint_before(p, inner);
    *--p = (uint8_t)((outer << 3) | PB_WT_STRING);
    *end = e;
    return p;
}

/* --- files and the cache dir ------------------------------------------------------------- */

/* Reads up to |len| bytes, retrying short reads. Returns bytes read (< len only at EOF) or
 * -errno. */
ssize_t rsc_read_full(int fd, uint8_t *buf, size_t len)
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

int rsc_pwrite_full(int fd, const uint8_t *p, size_t len, uint64_t off)
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
int rsc_hash_fd(int fd, uint64_t len, struct rs_sha256 *h, uint8_t *buf, size_t cap,
                const char *label)
{
    uint64_t off = 0;
    double last = 0;

    if (rsc_cli.progress && len >= RSC_DATA_CHUNK) {
        rsc_progress_begin(len, 0);
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
        if (rsc_cli.progress && len >= RSC_DATA_CHUNK && rsc_now_s() - last >= 0.2) {
            atomic_store(&prog.done, off);
            last = rsc_now_s();
            rsc_progress_draw(false);
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
int rsc_state_path(const char *kind, const char *key, size_t keylen, char *out, size_t len)
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
    rsc_hex(h, d, 16);
    if ((size_t)snprintf(out, len, "%s/%s", dir, h) >= len)
        return -ENAMETOOLONG;
    return 0;
}

/* Writes |text| to |path| atomically (temp file, fsync, rename). Returns 0 or -errno. */
int rsc_state_write(const char *path, const char *text)
{
    char tmp[PATH_MAX + 8];
    size_t len = strlen(text);
    int fd, ret = 0;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (rsc_pwrite_full(fd, (const uint8_t *)text, len, 0) < 0 || fsync(fd) < 0)
        ret = -errno;
    close(fd);
    if (ret == 0 && rename(tmp, path) < 0)
        ret = -errno;
    if (ret < 0)
        unlink(tmp);
    return ret;
}

/* Reads a state file into |buf| (NUL-terminated). Returns 0, -ENOENT or -errno. */
int rsc_state_read(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    n = rsc_read_full(fd, (uint8_t *)buf, len - 1);
    close(fd);
    if (n < 0)
        return (int)n;
    buf[n] = '\0';
    return 0;
}

/* --- connection --------------------------------------------------------------------------- */

struct rsc_conn *rsc_connect_or_fail(const char *what, int *code)
{
    char err[512];
    struct rsc_conn *c = rsc_conn_open(&rsc_cli.conn, err, sizeof(err));

    if (c == NULL)
        *code = rsc_fail(RSC_EX_CONN, what, -1, "UNAVAILABLE", "%s", err);
    return c;
}

/* Stat of |name|. Returns 0 or the exit code (error printed). */
int rsc_do_stat(struct rsc_conn *c, const char *what, const char *name,
                ringstream_v1_ObjectInfo *oi)
{
    uint8_t req[RSC_SMALL_MSG];
    size_t len = rsc_name_request(ringstream_v1_StatRequest_fields, name, req);
    struct rsc_status st;

    return rsc_unary(c, what, RSC_SVC "Stat", req, len, ringstream_v1_ObjectInfo_fields, oi, &st);
}
