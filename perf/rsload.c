/* perf/rsload.c: ringstream's own load generator and flow-control probe.
 *
 * One thread, one poll() loop, nghttp2 client sessions over plain TCP (h2c). Data is a
 * deterministic pattern generated on the fly from its offset (never held whole); every
 * transfer is checked by the client with SHA-256 (libcrypto) and byte by byte against the
 * pattern, and every Chunk of a Get or Echo must carry the CRC32C of its data (Chunk.crc32c;
 * --no-crc skips that check, for benchmarks of the server's CRC). The client's receive side never
 * lets nghttp2 send WINDOW_UPDATEs by itself: a stream's window is given back only when this
 * program "reads" the bytes, so a stall here is a real HTTP/2 reader that stopped reading (or, with
 * --stall-mode socket, a TCP reader that stopped reading the socket).
 *
 * Modes:
 *   put NAME BYTES             upload BYTES (64 KiB messages), check the ObjectInfo
 *   get NAME                   Stat, then Get; size and SHA-256 checked against the Stat
 *   echo BYTES                 Echo BYTES both ways at once; everything must come back
 *   stall-get NAME             --streams N Gets over --conns C; nothing is read for
 *                              --stall-seconds S, then everything is read and verified
 *   msg-limit                  a message of exactly --max-msg bytes (Put and Echo) succeeds;
 *                              one announcing --max-msg + 1 bytes gets RESOURCE_EXHAUSTED
 *                              after only a few KiB of it were sent
 * Output: human-readable lines, plus machine-readable "RESULT key=value ..." lines (one per
 * check), "PROGRESS ..." lines with --progress-ms, and "STALL"/"PROBE" lines in stall-get.
 * Exit status: 0 when every check passed, 1 when one failed, 2 on a usage error. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include "core/crc32c.h"
#include "proto/pbview.h"
#include <unistd.h>

#define KiB              1024u
#define MiB              (1024u * 1024u)
#define OUTBUF           (256 * KiB) /* per connection: frames gathered into one send() */
#define INBUF            (256 * KiB) /* one recv() */
#define MAX_CONNS        256
#define MAX_STREAMS      100000
#define PREFIX           5
#define LOOP_TICK_MS     10
#define SHA_LEN          32
#define STATUS_UNKNOWN   (-1)
#define GRPC_OK          0
#define GRPC_RESOURCE_EX 8

/* ---- options ---------------------------------------------------------------------------- */

static struct {
    char host[64];
    char port[16];
    char authority[96];
    size_t chunk;       /* data bytes per Put/Echo message */
    uint32_t get_chunk; /* GetRequest.chunk_size; 0: the server's default */
    uint32_t window;    /* SETTINGS_INITIAL_WINDOW_SIZE we advertise; 0: the mode's default */
    uint32_t conn_window;
    uint64_t seed;
    unsigned streams;
    unsigned conns;
    double stall_seconds;
    bool socket_stall;
    bool unary_probe;
    double probe_at; /* seconds into the stall; < 0: min(1, stall / 2) */
    unsigned active;
    double read_rate; /* bytes/s during the slow-read phase; 0: none */
    double read_seconds;
    unsigned progress_ms;
    double timeout;
    size_t max_msg;
    bool header_sha;
    bool check_pattern;
    bool check_crc;
    bool quiet;
} opt = {
    .host = "127.0.0.1",
    .port = "50051",
    .chunk = 64 * KiB,
    .conn_window = (1u << 30),
    .seed = 1,
    .streams = 1000,
    .conns = 10,
    .stall_seconds = 10,
    .probe_at = -1,
    .timeout = 900,
    .max_msg = 4 * MiB,
    .check_pattern = true,
    .check_crc = true,
};

static double t_origin;
static double deadline;
static int failures;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static __attribute__((format(printf, 1, 2))) void say(const char *fmt, ...)
{
    va_list ap;

    if (opt.quiet)
        return;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static __attribute__((format(printf, 1, 2), noreturn)) void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "rsload: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* "123", "64K", "4M", "10G" (binary multiples). */
static uint64_t parse_size(const char *s)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        die("bad size \"%s\"", s);
    switch (*end) {
    case '\0':
        return v;
    case 'k':
    case 'K':
        v <<= 10;
        break;
    case 'm':
    case 'M':
        v <<= 20;
        break;
    case 'g':
    case 'G':
        v <<= 30;
        break;
    default:
        die("bad size suffix in \"%s\"", s);
    }
    if (end[1] != '\0' && strcmp(end + 1, "i") != 0 && strcmp(end + 1, "iB") != 0 &&
        strcmp(end + 1, "B") != 0)
        die("bad size suffix in \"%s\"", s);
    return v;
}

/* ---- the data pattern ------------------------------------------------------------------- */

/* Byte |off| of the stream is byte (off % 8) of mix(off / 8): any range can be regenerated. */
static inline uint64_t mix(uint64_t i)
{
    uint64_t z = opt.seed * 0xd1b54a32d192ed03ull + (i + 1) * 0x9e3779b97f4a7c15ull;

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void pattern_fill(uint8_t *dst, uint64_t off, size_t len)
{
    while (len > 0 && (off & 7) != 0) {
        uint64_t w = mix(off >> 3);

        *dst++ = (uint8_t)(w >> (8 * (off & 7)));
        off++;
        len--;
    }
    while (len >= 8) {
        uint64_t w = mix(off >> 3);

        memcpy(dst, &w, 8); /* little-endian host: byte k of w is byte off + k */
        dst += 8;
        off += 8;
        len -= 8;
    }
    while (len > 0) {
        uint64_t w = mix(off >> 3);

        *dst++ = (uint8_t)(w >> (8 * (off & 7)));
        off++;
        len--;
    }
}

static uint8_t *scratch; /* pattern bytes to compare received data with */
static size_t scratch_len;

/* Offset of the first byte of |p| that differs from the pattern at |off|, or -1. */
static int64_t pattern_check(const uint8_t *p, uint64_t off, size_t len)
{
    size_t done = 0;

    while (done < len) {
        size_t n = len - done < scratch_len ? len - done : scratch_len;

        pattern_fill(scratch, off + done, n);
        if (memcmp(scratch, p + done, n) != 0) {
            for (size_t i = 0; i < n; i++)
                if (scratch[i] != p[done + i])
                    return (int64_t)(off + done + i);
        }
        done += n;
    }
    return -1;
}

/* ---- protobuf bits ---------------------------------------------------------------------- */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    unsigned shift = 0;

    while (*p < end && shift < 64) {
        uint8_t b = *(*p)++;

        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return true;
        }
        shift += 7;
    }
    return false;
}

struct field {
    uint32_t num;
    unsigned wt;
    uint64_t v;       /* varint value (wt 0), or the fixed32/fixed64 value (wt 5/1); else 0 */
    const uint8_t *p; /* length-delimited payload; NULL unless wt is 2 */
    size_t len;       /* 0 unless wt is 2 */
};

/* Next field of a message; false at the end or on a malformed/unsupported field (|*bad|).
 * Every member of |*f| is defined after a call, whatever the wire type: callers test num and
 * wt before reading v or p, and the compiler cannot prove that (GCC 12 -O3 flags it). */
static bool next_field(const uint8_t **p, const uint8_t *end, struct field *f, bool *bad)
{
    uint64_t key, n;

    *f = (struct field){ 0 };
    *bad = false;
    if (*p >= end)
        return false;
    if (!get_varint(p, end, &key))
        goto bad;
    f->num = (uint32_t)(key >> 3);
    f->wt = (unsigned)(key & 7);
    switch (f->wt) {
    case 0:
        if (!get_varint(p, end, &f->v))
            goto bad;
        return true;
    case 2:
        if (!get_varint(p, end, &n) || n > (uint64_t)(end - *p))
            goto bad;
        f->p = *p;
        f->len = (size_t)n;
        *p += n;
        return true;
    case 5:
    case 1:
        n = f->wt == 5 ? 4 : 8;
        if (n > (uint64_t)(end - *p))
            goto bad;
        for (unsigned i = 0; i < n; i++)
            f->v |= (uint64_t)(*p)[i] << (8 * i); /* little-endian */
        *p += n;
        return true;
    default:
        goto bad;
    }
bad:
    *bad = true;
    return false;
}

static void hex(char *out, const uint8_t *in, size_t n)
{
    static const char d[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* ---- streams and connections -------------------------------------------------------------- */

enum kind {
    K_PUT,
    K_GET,
    K_ECHO,
    K_STAT,
    K_RAW,
};

enum read_policy {
    READ_ALL,  /* read (and give the window back for) everything at once */
    READ_NONE, /* stalled: read nothing */
    READ_RATE, /* read at most opt.read_rate bytes per second */
};

struct conn;

struct stream {
    struct conn *c;
    enum kind kind;
    int32_t id;
    char path[64];
    char name[256];
    /* request side */
    uint64_t total; /* data bytes to send (Put, Echo) */
    uint64_t gen;   /* data bytes generated so far */
    uint8_t *obuf;  /* the message being handed to nghttp2 */
    size_t olen, ooff, ocap;
    bool hdr_sent;     /* Put: the header message was generated */
    bool tx_eof;       /* nothing more to generate */
    bool hold_open;    /* never END_STREAM (raw: an announced message never completes) */
    bool send_crc;     /* Echo: each Chunk also carries its crc32c (5 bytes), as sent by a
                        * client that checksums what it sends */
    uint64_t accepted; /* request bytes nghttp2 took: what the server's flow control allowed */
    EVP_MD_CTX *tx_sha;
    uint8_t tx_digest[SHA_LEN];
    /* response side: rbuf[rhead, rread) read by us, [rread, rlen) received but unread */
    uint8_t *rbuf;
    size_t rhead, rread, rlen, rcap;
    uint64_t received; /* DATA payload bytes received */
    uint64_t consumed; /* of them, read by us (window given back) */
    uint64_t max_unread;
    uint64_t next_off; /* Chunk.offset expected next */
    uint64_t data_bytes;
    uint64_t msgs;
    EVP_MD_CTX *rx_sha;
    uint8_t rx_digest[SHA_LEN];
    bool check_pattern;
    /* ObjectInfo answered by Put and Stat */
    bool have_info;
    uint64_t info_size;
    uint8_t info_sha[SHA_LEN];
    /* outcome */
    int http_status;
    int grpc_status;
    char grpc_message[256];
    uint32_t rst_code;
    bool headers_seen;
    bool closed;
    bool bad;
    char err[256];
    double t_start, t_done;
    /* read policy */
    enum read_policy policy;
    double budget, budget_t;
    uint64_t mark; /* stall-get: bytes received when the stall ended */
};

struct conn {
    int fd;
    nghttp2_session *h2;
    uint8_t *out;
    size_t outlen, outoff;
    bool sock_stalled; /* --stall-mode socket: the socket is not read at all */
    bool dead;
    char err[160];
};

static struct conn *conns[MAX_CONNS];
static unsigned nconns;
static struct stream **streams;
static unsigned nstreams;
static uint8_t inbuf[INBUF];

static __attribute__((format(printf, 2, 3))) void stream_fail(struct stream *st, const char *fmt,
                                                              ...)
{
    va_list ap;

    if (st->bad)
        return;
    st->bad = true;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof(st->err), fmt, ap);
    va_end(ap);
}

static EVP_MD_CTX *sha_new(void)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        die("EVP SHA-256 init failed");
    return ctx;
}

static void sha_final(EVP_MD_CTX *ctx, uint8_t out[SHA_LEN])
{
    unsigned n = SHA_LEN;

    if (EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != SHA_LEN)
        die("EVP SHA-256 final failed");
}

static struct stream *stream_new(struct conn *c, enum kind kind, const char *method)
{
    struct stream *st = calloc(1, sizeof(*st));

    if (st == NULL || nstreams == MAX_STREAMS)
        die("out of memory (streams)");
    st->c = c;
    st->kind = kind;
    st->grpc_status = STATUS_UNKNOWN;
    st->check_pattern = opt.check_pattern;
    st->rx_sha = sha_new();
    st->tx_sha = sha_new();
    snprintf(st->path, sizeof(st->path), "/ringstream.v1.Bulk/%s", method);
    streams[nstreams++] = st;
    return st;
}

/* Room for |n| more bytes at the end of rbuf: compact first, grow only when that is not
 * enough, so the buffer stays about (window + one message) large. */
static void rbuf_reserve(struct stream *st, size_t n)
{
    size_t ncap;
    uint8_t *nb;

    if (st->rcap - st->rlen >= n)
        return;
    if (st->rhead > 0) {
        memmove(st->rbuf, st->rbuf + st->rhead, st->rlen - st->rhead);
        st->rread -= st->rhead;
        st->rlen -= st->rhead;
        st->rhead = 0;
        if (st->rcap - st->rlen >= n)
            return;
    }
    ncap = st->rcap < 64 * KiB ? 64 * KiB : st->rcap;
    while (ncap - st->rlen < n)
        ncap *= 2;
    nb = realloc(st->rbuf, ncap);
    if (nb == NULL)
        die("out of memory (receive buffer of %zu bytes)", ncap);
    st->rbuf = nb;
    st->rcap = ncap;
}

/* ---- request generation (the nghttp2 data provider) --------------------------------------- */

static void obuf_reserve(struct stream *st, size_t n)
{
    if (st->ocap >= n)
        return;
    free(st->obuf);
    st->obuf = malloc(n);
    if (st->obuf == NULL)
        die("out of memory (message buffer)");
    st->ocap = n;
}

static void prefix_write(uint8_t *p, uint32_t len)
{
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
}

/* One message of pattern data: PutRequest.data (field 2) or Chunk.data (field 1), then with
 * |send_crc| Chunk.crc32c (field 3, fixed32). */
static void gen_data_message(struct stream *st, unsigned field)
{
    uint64_t left = st->total - st->gen;
    size_t n = left < opt.chunk ? (size_t)left : opt.chunk;
    size_t hl = 1 + varint_len(n), tl = st->send_crc ? 5 : 0;
    uint8_t *p;

    obuf_reserve(st, PREFIX + hl + n + tl);
    p = st->obuf;
    prefix_write(p, (uint32_t)(hl + n + tl));
    p[PREFIX] = (uint8_t)(field << 3 | 2);
    rs_pb_put_varint(p + PREFIX + 1, n);
    pattern_fill(p + PREFIX + hl, st->gen, n);
    EVP_DigestUpdate(st->tx_sha, p + PREFIX + hl, n);
    if (tl > 0) {
        uint32_t crc = rs_crc32c(0, p + PREFIX + hl, n);
        uint8_t *t = p + PREFIX + hl + n;

        t[0] = 3 << 3 | 5;
        for (int i = 0; i < 4; i++)
            t[1 + i] = (uint8_t)(crc >> (8 * i));
    }
    st->gen += n;
    st->olen = PREFIX + hl + n + tl;
    st->ooff = 0;
    if (st->gen == st->total) {
        st->tx_eof = true;
        sha_final(st->tx_sha, st->tx_digest);
    }
}

/* A whole framed message PutRequest { header { name, size, sha256?, overwrite: true } } into
 * |out| (at least 400 bytes). Returns its length. */
static size_t encode_put_header(uint8_t *out, const char *name, uint64_t size, const uint8_t *sha)
{
    uint8_t hdr[340];
    size_t hn = 0, nl = strlen(name), n;

    hdr[hn++] = 1 << 3 | 2; /* PutHeader.name */
    hn += rs_pb_put_varint(hdr + hn, nl);
    memcpy(hdr + hn, name, nl);
    hn += nl;
    hdr[hn++] = 2 << 3 | 0; /* size */
    hn += rs_pb_put_varint(hdr + hn, size);
    if (sha != NULL) {
        hdr[hn++] = 3 << 3 | 2; /* sha256 */
        hdr[hn++] = SHA_LEN;
        memcpy(hdr + hn, sha, SHA_LEN);
        hn += SHA_LEN;
    }
    hdr[hn++] = 4 << 3 | 0; /* overwrite */
    hdr[hn++] = 1;
    out[PREFIX] = 1 << 3 | 2; /* PutRequest.header */
    n = PREFIX + 1 + rs_pb_put_varint(out + PREFIX + 1, hn);
    memcpy(out + n, hdr, hn);
    n += hn;
    prefix_write(out, (uint32_t)(n - PREFIX));
    return n;
}

static void gen_put_header(struct stream *st)
{
    obuf_reserve(st, 400);
    st->olen =
            encode_put_header(st->obuf, st->name, st->total, opt.header_sha ? st->tx_digest : NULL);
    st->ooff = 0;
    st->hdr_sent = true;
    if (st->total == 0) {
        st->tx_eof = true;
        sha_final(st->tx_sha, st->tx_digest);
    }
}

/* Puts the next request message into obuf. False when there is none. */
static bool next_message(struct stream *st)
{
    if (st->tx_eof)
        return false;
    switch (st->kind) {
    case K_PUT:
        if (!st->hdr_sent)
            gen_put_header(st);
        else
            gen_data_message(st, 2);
        return true;
    case K_ECHO:
        if (st->total == 0) {
            st->tx_eof = true;
            sha_final(st->tx_sha, st->tx_digest);
            return false;
        }
        gen_data_message(st, 1);
        return true;
    default:
        return false; /* unary requests and raw bytes are put into obuf when created */
    }
}

static ssize_t data_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    struct stream *st = source->ptr;
    size_t done = 0;

    while (done < length) {
        size_t n;

        if (st->ooff == st->olen && !next_message(st))
            break;
        n = st->olen - st->ooff;
        if (n > length - done)
            n = length - done;
        memcpy(buf + done, st->obuf + st->ooff, n);
        st->ooff += n;
        done += n;
    }
    st->accepted += done;
    if (st->ooff == st->olen && st->tx_eof) {
        if (!st->hold_open) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return (ssize_t)done;
        }
    }
    if (done == 0)
        return NGHTTP2_ERR_DEFERRED; /* raw, held open: never resumed */
    return (ssize_t)done;
}

/* ---- response handling -------------------------------------------------------------------- */

static void on_object_info(struct stream *st, const uint8_t *m, size_t len)
{
    const uint8_t *p = m, *end = m + len;
    struct field f;
    bool bad;

    st->have_info = true;
    while (next_field(&p, end, &f, &bad)) {
        if (f.num == 2 && f.wt == 0)
            st->info_size = f.v;
        else if (f.num == 3 && f.wt == 2 && f.len == SHA_LEN)
            memcpy(st->info_sha, f.p, SHA_LEN);
    }
    if (bad)
        stream_fail(st, "malformed ObjectInfo");
}

static void on_chunk(struct stream *st, const uint8_t *m, size_t len)
{
    const uint8_t *p = m, *end = m + len, *data = NULL;
    size_t dlen = 0;
    uint64_t off = 0;
    uint32_t crc = 0;
    bool has_crc = false;
    struct field f;
    bool bad;

    while (next_field(&p, end, &f, &bad)) {
        if (f.num == 1 && f.wt == 2) {
            data = f.p;
            dlen = f.len;
        } else if (f.num == 2 && f.wt == 0) {
            off = f.v;
        } else if (f.num == 3 && f.wt == 5) {
            crc = (uint32_t)f.v;
            has_crc = true;
        }
    }
    if (bad) {
        stream_fail(st, "malformed Chunk (message %" PRIu64 ")", st->msgs);
        return;
    }
    if (off != st->next_off) {
        stream_fail(st, "Chunk.offset %" PRIu64 ", want %" PRIu64, off, st->next_off);
        return;
    }
    if (opt.check_crc && (!has_crc || crc != rs_crc32c(0, data, dlen))) {
        stream_fail(st, "Chunk at offset %" PRIu64 ": crc32c %s", off,
                    has_crc ? "differs from its data's" : "missing");
        return;
    }
    if (dlen > 0) {
        if (st->check_pattern) {
            int64_t at = pattern_check(data, off, dlen);

            if (at >= 0) {
                stream_fail(st, "data differs from the pattern at offset %" PRId64, at);
                return;
            }
        }
        EVP_DigestUpdate(st->rx_sha, data, dlen);
    }
    st->next_off += dlen;
    st->data_bytes += dlen;
}

static void on_message(struct stream *st, const uint8_t *m, size_t len)
{
    st->msgs++;
    switch (st->kind) {
    case K_PUT:
    case K_STAT:
        on_object_info(st, m, len);
        break;
    case K_GET:
    case K_ECHO:
        on_chunk(st, m, len);
        break;
    case K_RAW:
        break;
    }
}

/* The bytes we have read: hand whole messages over. */
static void deframe(struct stream *st)
{
    while (st->rread - st->rhead >= PREFIX) {
        const uint8_t *p = st->rbuf + st->rhead;
        size_t len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];

        if (p[0] != 0) {
            stream_fail(st, "compressed response message (flag %u)", p[0]);
            st->rhead = st->rread = st->rlen = 0;
            return;
        }
        if (st->rread - st->rhead - PREFIX < len)
            break;
        on_message(st, p + PREFIX, len);
        st->rhead += PREFIX + len;
    }
    if (st->rhead == st->rlen)
        st->rhead = st->rread = st->rlen = 0;
}

/* Reads up to |n| received bytes: gives their window back and processes them. */
static void stream_read(struct stream *st, size_t n)
{
    if (n == 0)
        return;
    st->rread += n;
    st->consumed += n;
    if (!st->c->dead)
        nghttp2_session_consume(st->c->h2, st->id, n); /* stream and connection window */
    deframe(st);
}

static void apply_read_policy(struct stream *st, double t)
{
    size_t unread = st->rlen - st->rread;

    if (unread == 0)
        return;
    switch (st->policy) {
    case READ_ALL:
        stream_read(st, unread);
        break;
    case READ_NONE:
        break;
    case READ_RATE:
        st->budget += (t - st->budget_t) * opt.read_rate;
        st->budget_t = t;
        if (st->budget > opt.read_rate) /* at most one second of credit */
            st->budget = opt.read_rate;
        if (st->budget >= 1) {
            size_t n = st->budget < (double)unread ? (size_t)st->budget : unread;

            st->budget -= (double)n;
            stream_read(st, n);
        }
        break;
    }
}

static void set_policy(struct stream *st, enum read_policy p)
{
    st->policy = p;
    st->budget = 0;
    st->budget_t = now_s();
}

/* ---- nghttp2 callbacks -------------------------------------------------------------------- */

static ssize_t on_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    struct conn *c = user_data;
    size_t room = OUTBUF - c->outlen;

    if (room == 0)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (len > room)
        len = room;
    memcpy(c->out + c->outlen, data, len);
    c->outlen += len;
    return (ssize_t)len;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct stream *st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    char v[256];
    size_t n = valuelen < sizeof(v) - 1 ? valuelen : sizeof(v) - 1;

    if (st == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    st->headers_seen = true;
    memcpy(v, value, n);
    v[n] = '\0';
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        st->http_status = atoi(v);
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        st->grpc_status = atoi(v);
    else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0)
        snprintf(st->grpc_message, sizeof(st->grpc_message), "%s", v);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *user_data)
{
    struct stream *st = nghttp2_session_get_stream_user_data(h2, id);
    uint64_t unread;

    if (st == NULL) {
        nghttp2_session_consume(h2, id, len);
        return 0;
    }
    rbuf_reserve(st, len);
    memcpy(st->rbuf + st->rlen, data, len);
    st->rlen += len;
    st->received += len;
    unread = st->received - st->consumed;
    if (unread > st->max_unread)
        st->max_unread = unread;
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *user_data)
{
    struct stream *st = nghttp2_session_get_stream_user_data(h2, id);

    if (st == NULL)
        return 0;
    st->closed = true;
    st->rst_code = error_code;
    st->t_done = now_s();
    return 0;
}

/* ---- connections -------------------------------------------------------------------------- */

static void conn_kill(struct conn *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = true;
    snprintf(c->err, sizeof(c->err), "%s", why);
    for (unsigned i = 0; i < nstreams; i++) {
        struct stream *st = streams[i];

        if (st->c == c && !st->closed) {
            st->closed = true;
            st->t_done = now_s();
            stream_fail(st, "connection lost: %s", why);
        }
    }
}

static struct conn *conn_open(uint32_t window)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *o;
    struct conn *c;
    int one = 1, rv;
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window },
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100 },
    };

    if (nconns == MAX_CONNS)
        die("too many connections");
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->out = malloc(OUTBUF)) == NULL)
        die("out of memory (connection)");
    rv = getaddrinfo(opt.host, opt.port, &hints, &ai);
    if (rv != 0)
        die("%s:%s: %s", opt.host, opt.port, gai_strerror(rv));
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0)
        die("connecting to %s:%s: %s", opt.host, opt.port, strerror(errno));
    freeaddrinfo(ai);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&o) != 0)
        die("nghttp2: out of memory");
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    /* Windows are given back only for bytes this program has read (stream_read). */
    nghttp2_option_set_no_auto_window_update(o, 1);
    rv = nghttp2_session_client_new2(&c->h2, cbs, c, o);
    nghttp2_option_del(o);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        die("nghttp2_session_client_new2: %s", nghttp2_strerror(rv));
    rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    if (rv == 0)
        rv = nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0,
                                                   (int32_t)opt.conn_window);
    if (rv != 0)
        die("nghttp2 settings: %s", nghttp2_strerror(rv));
    conns[nconns++] = c;
    return c;
}

static void stream_submit(struct stream *st)
{
    nghttp2_nv nva[7];
    nghttp2_data_provider prd = { .source.ptr = st, .read_callback = data_read };
    size_t n = 0;

#define NV(nm, val)                                                                      \
    nva[n++] = (nghttp2_nv){ (uint8_t *)(nm), (uint8_t *)(val), strlen(nm), strlen(val), \
                             NGHTTP2_NV_FLAG_NONE }
    NV(":method", "POST");
    NV(":scheme", "http");
    NV(":authority", opt.authority);
    NV(":path", st->path);
    NV("content-type", "application/grpc");
    NV("te", "trailers");
    NV("user-agent", "rsload");
#undef NV
    st->t_start = now_s();
    st->id = nghttp2_submit_request(st->c->h2, NULL, nva, n, &prd, st);
    if (st->id < 0)
        die("nghttp2_submit_request: %s", nghttp2_strerror(st->id));
}

/* A one-message request (GetRequest, StatRequest) whose fields are already encoded. */
static void stream_set_request(struct stream *st, const uint8_t *msg, size_t len)
{
    obuf_reserve(st, PREFIX + len);
    prefix_write(st->obuf, (uint32_t)len);
    memcpy(st->obuf + PREFIX, msg, len);
    st->olen = PREFIX + len;
    st->ooff = 0;
    st->tx_eof = true;
}

static struct stream *submit_stat(struct conn *c, const char *name)
{
    struct stream *st = stream_new(c, K_STAT, "Stat");
    uint8_t m[300];
    size_t n = 0, nl = strlen(name);

    m[n++] = 1 << 3 | 2;
    n += rs_pb_put_varint(m + n, nl);
    memcpy(m + n, name, nl);
    n += nl;
    snprintf(st->name, sizeof(st->name), "%s", name);
    stream_set_request(st, m, n);
    stream_submit(st);
    return st;
}

static struct stream *submit_get(struct conn *c, const char *name)
{
    struct stream *st = stream_new(c, K_GET, "Get");
    uint8_t m[320];
    size_t n = 0, nl = strlen(name);

    m[n++] = 1 << 3 | 2;
    n += rs_pb_put_varint(m + n, nl);
    memcpy(m + n, name, nl);
    n += nl;
    if (opt.get_chunk > 0) {
        m[n++] = 4 << 3 | 0;
        n += rs_pb_put_varint(m + n, opt.get_chunk);
    }
    snprintf(st->name, sizeof(st->name), "%s", name);
    stream_set_request(st, m, n);
    stream_submit(st);
    return st;
}

/* Flushes the gathered frames; asks nghttp2 for more while the socket takes them. */
static void conn_send(struct conn *c)
{
    for (int rounds = 0; rounds < 64 && !c->dead; rounds++) {
        if (c->outoff < c->outlen) {
            ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
                             MSG_DONTWAIT | MSG_NOSIGNAL);

            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    conn_kill(c, strerror(errno));
                return;
            }
            c->outoff += (size_t)n;
            if (c->outoff < c->outlen)
                return; /* POLLOUT */
            c->outoff = c->outlen = 0;
        }
        if (!nghttp2_session_want_write(c->h2))
            return;
        int rv = nghttp2_session_send(c->h2);
        if (rv != 0) {
            conn_kill(c, nghttp2_strerror(rv));
            return;
        }
        if (c->outlen == 0)
            return;
    }
}

static void conn_recv(struct conn *c)
{
    for (int rounds = 0; rounds < 8 && !c->dead; rounds++) {
        ssize_t n = recv(c->fd, inbuf, sizeof(inbuf), MSG_DONTWAIT);
        ssize_t rv;

        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                conn_kill(c, strerror(errno));
            return;
        }
        if (n == 0) {
            conn_kill(c, "closed by the server");
            return;
        }
        rv = nghttp2_session_mem_recv(c->h2, inbuf, (size_t)n);
        if (rv < 0) {
            conn_kill(c, nghttp2_strerror((int)rv));
            return;
        }
        if ((size_t)n < sizeof(inbuf))
            return;
    }
}

/* ---- the loop ----------------------------------------------------------------------------- */

static unsigned next_progress_ms;

/* Sums over the streams that are not probes. */
struct totals {
    uint64_t accepted, received, consumed, data;
    uint64_t max_unread;
    unsigned open, closed;
};

static bool is_probe(const struct stream *st);

static struct totals totals(void)
{
    struct totals t = { 0 };

    for (unsigned i = 0; i < nstreams; i++) {
        const struct stream *st = streams[i];

        if (is_probe(st))
            continue;
        t.accepted += st->accepted;
        t.received += st->received;
        t.consumed += st->consumed;
        t.data += st->data_bytes;
        if (st->max_unread > t.max_unread)
            t.max_unread = st->max_unread;
        if (st->closed)
            t.closed++;
        else
            t.open++;
    }
    return t;
}

static uint64_t socket_queued(void)
{
    uint64_t sum = 0;

    for (unsigned i = 0; i < nconns; i++) {
        int q = 0;

        if (!conns[i]->dead && ioctl(conns[i]->fd, FIONREAD, &q) == 0)
            sum += (uint64_t)q;
    }
    return sum;
}

static void progress(double t)
{
    unsigned ms = (unsigned)((t - t_origin) * 1000);
    struct totals s;

    if (opt.progress_ms == 0 || ms < next_progress_ms)
        return;
    next_progress_ms = ms + opt.progress_ms;
    s = totals();
    printf("PROGRESS t_ms=%u accepted=%" PRIu64 " received=%" PRIu64 " consumed=%" PRIu64
           " unread=%" PRIu64 " sockq=%" PRIu64 "\n",
           ms, s.accepted, s.received, s.consumed, s.received - s.consumed, socket_queued());
    fflush(stdout);
}

static void loop_once(void)
{
    struct pollfd pfd[MAX_CONNS];
    double t = now_s();
    int timeout = 100;

    for (unsigned i = 0; i < nstreams; i++) {
        apply_read_policy(streams[i], t);
        if (streams[i]->policy == READ_RATE)
            timeout = LOOP_TICK_MS;
    }
    if (opt.progress_ms > 0 && timeout > LOOP_TICK_MS)
        timeout = LOOP_TICK_MS;
    for (unsigned i = 0; i < nconns; i++) {
        struct conn *c = conns[i];

        pfd[i].fd = -1;
        pfd[i].events = 0;
        pfd[i].revents = 0;
        if (c->dead)
            continue;
        conn_send(c);
        if (c->dead)
            continue;
        pfd[i].fd = c->fd;
        if (!c->sock_stalled)
            pfd[i].events |= POLLIN;
        if (c->outoff < c->outlen)
            pfd[i].events |= POLLOUT;
    }
    if (poll(pfd, nconns, timeout) < 0 && errno != EINTR)
        die("poll: %s", strerror(errno));
    for (unsigned i = 0; i < nconns; i++) {
        struct conn *c = conns[i];

        if (c->dead || pfd[i].fd < 0)
            continue;
        if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (!c->sock_stalled)
                conn_recv(c);
            else if (pfd[i].revents & POLLERR)
                conn_kill(c, "socket error");
        }
        if (!c->dead && (pfd[i].revents & POLLOUT))
            conn_send(c);
    }
    progress(now_s());
}

typedef bool (*pred_fn)(void *arg);

/* Runs the loop until pred(arg) or |until| (seconds, monotonic); false on the global timeout. */
static bool run_until(pred_fn pred, void *arg, double until)
{
    while (pred == NULL || !pred(arg)) {
        double t = now_s();

        if (t >= deadline)
            return false;
        if (t >= until)
            return true;
        loop_once();
    }
    return true;
}

/* Closed, and every byte received was read (a stalled stream is not done). */
static bool stream_done(const struct stream *st)
{
    return st->closed && st->rread == st->rlen;
}

static bool stream_closed(void *arg)
{
    return stream_done(arg);
}

struct stream_set {
    struct stream **v;
    unsigned n;
};

static bool all_closed(void *arg)
{
    const struct stream_set *s = arg;

    for (unsigned i = 0; i < s->n; i++)
        if (!stream_done(s->v[i]))
            return false;
    return true;
}

static struct stream *probe_stream;

static bool is_probe(const struct stream *st)
{
    return st == probe_stream;
}

/* ---- checks and reports ----------------------------------------------------------------- */

static void report_stream_failure(const char *what, const struct stream *st)
{
    printf("FAIL %s (stream %d): %s%sgrpc-status %d%s%s, rst %u\n", what, st->id, st->err,
           st->err[0] ? "; " : "", st->grpc_status, st->grpc_message[0] ? " " : "",
           st->grpc_message, st->rst_code);
}

/* A stream finished with grpc-status |want| and nothing looked wrong. */
static bool stream_ok(const char *what, const struct stream *st, int want)
{
    if (!st->closed || st->bad || st->grpc_status != want) {
        report_stream_failure(what, st);
        return false;
    }
    return true;
}

static double mbps(uint64_t bytes, double secs)
{
    return secs > 0 ? (double)bytes / secs / 1e6 : 0;
}

static void finish_rx(struct stream *st)
{
    sha_final(st->rx_sha, st->rx_digest);
}

/* ---- modes -------------------------------------------------------------------------------- */

static uint32_t window_or(uint32_t dflt)
{
    return opt.window > 0 ? opt.window : dflt;
}

static int mode_put(const char *name, uint64_t bytes)
{
    struct conn *c = conn_open(window_or(4 * MiB));
    struct stream *st = stream_new(c, K_PUT, "Put");
    char want[2 * SHA_LEN + 1], got[2 * SHA_LEN + 1];
    bool ok;
    double secs;

    snprintf(st->name, sizeof(st->name), "%s", name);
    st->total = bytes;
    if (opt.header_sha) { /* a first pass over the pattern, so the server checks it too */
        uint64_t off = 0;
        EVP_MD_CTX *h = sha_new();

        while (off < bytes) {
            size_t n = bytes - off < scratch_len ? (size_t)(bytes - off) : scratch_len;

            pattern_fill(scratch, off, n);
            EVP_DigestUpdate(h, scratch, n);
            off += n;
        }
        sha_final(h, st->tx_digest);
        EVP_MD_CTX_free(h);
    }
    stream_submit(st);
    if (!run_until(stream_closed, st, deadline))
        stream_fail(st, "timed out after %.0f s", opt.timeout);
    secs = (st->closed ? st->t_done : now_s()) - st->t_start;
    ok = stream_ok("put", st, GRPC_OK);
    if (ok && (!st->have_info || st->info_size != bytes)) {
        printf("FAIL put: ObjectInfo.size %" PRIu64 ", want %" PRIu64 "\n", st->info_size, bytes);
        ok = false;
    }
    hex(want, st->tx_digest, SHA_LEN);
    hex(got, st->info_sha, SHA_LEN);
    if (ok && memcmp(st->tx_digest, st->info_sha, SHA_LEN) != 0) {
        printf("FAIL put: server SHA-256 %s, client %s\n", got, want);
        ok = false;
    }
    say("put %s: %" PRIu64 " bytes in %.2f s, %.1f MB/s, sha256 %s\n", name, bytes, secs,
        mbps(bytes, secs), want);
    printf("RESULT mode=put ok=%d bytes=%" PRIu64 " seconds=%.3f MBps=%.1f accepted=%" PRIu64
           " status=%d sha256=%s\n",
           ok, bytes, secs, mbps(bytes, secs), st->accepted, st->grpc_status, want);
    return ok ? 0 : 1;
}

/* Stat |name| on |c|; false (reported) when it failed. */
static bool stat_object(struct conn *c, const char *name, uint64_t *size, uint8_t sha[SHA_LEN])
{
    struct stream *st = submit_stat(c, name);

    if (!run_until(stream_closed, st, deadline))
        stream_fail(st, "timed out");
    if (!stream_ok("stat", st, GRPC_OK) || !st->have_info)
        return false;
    *size = st->info_size;
    memcpy(sha, st->info_sha, SHA_LEN);
    return true;
}

/* Checks a finished Get against the Stat answer. */
static bool get_ok(struct stream *st, uint64_t size, const uint8_t sha[SHA_LEN])
{
    if (!stream_ok("get", st, GRPC_OK))
        return false;
    finish_rx(st);
    if (st->data_bytes != size) {
        printf("FAIL get (stream %d): %" PRIu64 " bytes, want %" PRIu64 "\n", st->id,
               st->data_bytes, size);
        return false;
    }
    if (memcmp(st->rx_digest, sha, SHA_LEN) != 0) {
        printf("FAIL get (stream %d): SHA-256 of the data differs from the Stat's\n", st->id);
        return false;
    }
    return true;
}

static int mode_get(const char *name)
{
    struct conn *c = conn_open(window_or(4 * MiB));
    struct stream *st;
    uint64_t size;
    uint8_t sha[SHA_LEN];
    char shahex[2 * SHA_LEN + 1];
    double secs;
    bool ok;

    if (!stat_object(c, name, &size, sha))
        return 1;
    st = submit_get(c, name);
    if (opt.read_rate > 0 && opt.read_seconds > 0)
        set_policy(st, READ_RATE);
    while (!stream_done(st)) {
        double until = st->policy == READ_RATE ? st->t_start + opt.read_seconds : deadline;

        if (!run_until(stream_closed, st, until)) {
            stream_fail(st, "timed out after %.0f s", opt.timeout);
            break;
        }
        if (st->policy == READ_RATE && now_s() >= until) {
            say("slow read over after %.1f s: received %" PRIu64 ", read %" PRIu64
                ", max unread %" PRIu64 "\n",
                now_s() - st->t_start, st->received, st->consumed, st->max_unread);
            printf("SLOWREAD seconds=%.3f received=%" PRIu64 " consumed=%" PRIu64
                   " max_unread=%" PRIu64 " window=%u\n",
                   now_s() - st->t_start, st->received, st->consumed, st->max_unread,
                   window_or(4 * MiB));
            set_policy(st, READ_ALL);
        }
    }
    secs = st->t_done - st->t_start;
    ok = get_ok(st, size, sha);
    hex(shahex, sha, SHA_LEN);
    say("get %s: %" PRIu64 " bytes in %.2f s, %.1f MB/s, %" PRIu64 " messages, sha256 %s\n", name,
        st->data_bytes, secs, mbps(st->data_bytes, secs), st->msgs, shahex);
    printf("RESULT mode=get ok=%d bytes=%" PRIu64 " seconds=%.3f MBps=%.1f messages=%" PRIu64
           " max_unread=%" PRIu64 " window=%u status=%d sha256=%s\n",
           ok, st->data_bytes, secs, mbps(st->data_bytes, secs), st->msgs, st->max_unread,
           window_or(4 * MiB), st->grpc_status, shahex);
    return ok ? 0 : 1;
}

static int mode_echo(uint64_t bytes)
{
    uint32_t win = window_or(4 * MiB);
    struct conn *c = conn_open(win);
    struct stream *st = stream_new(c, K_ECHO, "Echo");
    uint64_t stall_accepted = 0, stall_received = 0, mid_accepted = 0;
    char shahex[2 * SHA_LEN + 1];
    double secs;
    bool ok;

    st->total = bytes;
    if (opt.stall_seconds > 0)
        set_policy(st, READ_NONE);
    stream_submit(st);
    if (opt.stall_seconds > 0) {
        run_until(stream_closed, st, st->t_start + opt.stall_seconds / 2);
        mid_accepted = st->accepted;
        run_until(stream_closed, st, st->t_start + opt.stall_seconds);
        stall_accepted = st->accepted;
        stall_received = st->received;
        say("echo: after %.1f s without reading: sent %" PRIu64 " bytes (%" PRIu64
            " at half time), received %" PRIu64 " unread\n",
            opt.stall_seconds, stall_accepted, mid_accepted, stall_received);
        printf("STALL mode=echo seconds=%.3f accepted_mid=%" PRIu64 " accepted=%" PRIu64
               " received=%" PRIu64 " window=%u total=%" PRIu64 "\n",
               opt.stall_seconds, mid_accepted, stall_accepted, stall_received, win, bytes);
        fflush(stdout);
        set_policy(st, READ_ALL);
    }
    if (!run_until(stream_closed, st, deadline))
        stream_fail(st, "timed out after %.0f s", opt.timeout);
    secs = (st->closed ? st->t_done : now_s()) - st->t_start;
    ok = stream_ok("echo", st, GRPC_OK);
    finish_rx(st);
    if (ok && st->data_bytes != bytes) {
        printf("FAIL echo: %" PRIu64 " bytes came back, want %" PRIu64 "\n", st->data_bytes, bytes);
        ok = false;
    }
    if (ok && memcmp(st->rx_digest, st->tx_digest, SHA_LEN) != 0) {
        printf("FAIL echo: SHA-256 of what came back differs from what was sent\n");
        ok = false;
    }
    hex(shahex, st->rx_digest, SHA_LEN);
    say("echo: %" PRIu64 " bytes each way in %.2f s, %.1f MB/s, sha256 %s\n", st->data_bytes, secs,
        mbps(bytes, secs), shahex);
    printf("RESULT mode=echo ok=%d bytes=%" PRIu64 " seconds=%.3f MBps=%.1f stall_accepted=%" PRIu64
           " max_unread=%" PRIu64 " status=%d sha256=%s\n",
           ok, st->data_bytes, secs, mbps(bytes, secs), stall_accepted, st->max_unread,
           st->grpc_status, shahex);
    return ok ? 0 : 1;
}

static int mode_stall_get(const char *name)
{
    uint32_t win = window_or(65535);
    struct conn *first = conn_open(win);
    struct stream **gets;
    struct stream_set all, active;
    uint64_t size, sum_stall = 0, max_stall = 0, sockq, drained = 0;
    uint8_t sha[SHA_LEN];
    unsigned opened = 0, nbad = 0, active_done = 0;
    double t_stall, t_probe, t_end, t_drain, probe_ms = -1;
    bool probe_in_stall = false, ok = true;

    if (opt.streams == 0 || opt.conns == 0 || opt.conns > MAX_CONNS - 2)
        die("stall-get: --streams and --conns must be positive");
    if (opt.socket_stall && opt.active > 0)
        die("stall-get: --active needs --stall-mode window (a socket stall stops every stream)");
    if (!stat_object(first, name, &size, sha))
        return 1;
    gets = calloc(opt.streams, sizeof(*gets));
    active.v = calloc(opt.streams, sizeof(*gets));
    if (gets == NULL || active.v == NULL)
        die("out of memory");
    active.n = 0;
    for (unsigned i = 1; i < opt.conns; i++)
        conn_open(win);
    for (unsigned i = 0; i < opt.streams; i++) {
        struct conn *c = conns[i % opt.conns];

        gets[i] = submit_get(c, name);
        /* The first --active streams of the first connection are read all along. */
        if (i % opt.conns == 0 && active.n < opt.active) {
            active.v[active.n++] = gets[i];
            set_policy(gets[i], READ_ALL);
        } else {
            set_policy(gets[i], READ_NONE);
        }
    }
    all.v = gets;
    all.n = opt.streams;
    for (unsigned i = 0; i < opt.conns && opt.socket_stall; i++) {
        conn_send(conns[i]); /* the requests go out; then nothing is read any more */
        conns[i]->sock_stalled = true;
    }
    t_stall = now_s();
    say("stall-get: %u Gets of %s (%" PRIu64 " bytes) over %u connections, window %u, %s stall "
        "for %.1f s\n",
        opt.streams, name, size, opt.conns, win, opt.socket_stall ? "socket" : "window",
        opt.stall_seconds);
    t_end = t_stall + opt.stall_seconds;
    t_probe = t_stall + (opt.probe_at >= 0             ? opt.probe_at
                         : opt.stall_seconds / 2 < 1.0 ? opt.stall_seconds / 2
                                                       : 1.0);
    if (opt.unary_probe) {
        struct conn *pc;

        run_until(NULL, NULL, t_probe);
        pc = conn_open(65535);
        probe_stream = submit_stat(pc, name);
        run_until(stream_closed, probe_stream, t_end);
        if (probe_stream->closed) {
            probe_ms = (probe_stream->t_done - probe_stream->t_start) * 1000;
            probe_in_stall = stream_ok("unary probe", probe_stream, GRPC_OK);
        }
    }
    /* The stall lasts --stall-seconds, and at least until the active streams are done. */
    run_until(NULL, NULL, t_end);
    if (active.n > 0 && !run_until(all_closed, &active, deadline))
        printf("FAIL stall-get: active streams did not finish while the others were stalled\n");
    for (unsigned i = 0; i < opt.streams; i++) {
        struct stream *st = gets[i];
        bool is_active = false;

        for (unsigned j = 0; j < active.n; j++)
            is_active |= active.v[j] == st;
        if (is_active) {
            active_done += st->closed && !st->bad && st->grpc_status == GRPC_OK;
            continue;
        }
        opened += st->headers_seen;
        st->mark = st->received;
        sum_stall += st->received;
        if (st->received > max_stall)
            max_stall = st->received;
    }
    sockq = socket_queued();
    printf("STALL mode=stall-get seconds=%.3f streams=%u conns=%u window=%u opened=%u "
           "received_sum=%" PRIu64 " received_max=%" PRIu64 " sockq=%" PRIu64
           " active=%u active_done=%u\n",
           now_s() - t_stall, opt.streams, opt.conns, win, opened, sum_stall, max_stall, sockq,
           active.n, active_done);
    if (opt.unary_probe) {
        printf("PROBE answered_in_stall=%d latency_ms=%.1f status=%d\n", probe_in_stall, probe_ms,
               probe_stream->grpc_status);
        say("unary probe (Stat on a separate connection) during the stall: %s, %.1f ms\n",
            probe_in_stall ? "answered" : "NOT answered", probe_ms);
        if (!probe_in_stall)
            ok = false;
    }
    if (active_done < active.n)
        ok = false;
    fflush(stdout);
    /* Read everything. */
    t_drain = now_s();
    for (unsigned i = 0; i < nconns; i++)
        conns[i]->sock_stalled = false;
    for (unsigned i = 0; i < opt.streams; i++)
        set_policy(gets[i], READ_ALL);
    if (!run_until(all_closed, &all, deadline))
        printf("FAIL stall-get: timed out after %.0f s while reading\n", opt.timeout);
    for (unsigned i = 0; i < opt.streams; i++) {
        drained += gets[i]->data_bytes;
        if (!get_ok(gets[i], size, sha)) {
            if (++nbad >= 5) {
                printf("(more failures not shown)\n");
                break;
            }
        }
    }
    if (nbad > 0)
        ok = false;
    say("stall-get: read %" PRIu64 " bytes after the stall in %.2f s, %.1f MB/s; %u/%u streams "
        "verified\n",
        drained, now_s() - t_drain, mbps(drained, now_s() - t_drain), opt.streams - nbad,
        opt.streams);
    printf("RESULT mode=stall-get ok=%d streams=%u bad=%u bytes=%" PRIu64
           " seconds=%.3f MBps=%.1f probe_ms=%.1f\n",
           ok, opt.streams, nbad, drained, now_s() - t_drain, mbps(drained, now_s() - t_drain),
           probe_ms);
    free(gets);
    free(active.v);
    return ok ? 0 : 1;
}

/* The data length that makes a one-field message (tag + varint + data) exactly |m| bytes. */
static size_t data_len_for(size_t m)
{
    for (size_t vl = 1; vl <= 5; vl++)
        if (m > 1 + vl && varint_len(m - 1 - vl) == vl)
            return m - 1 - vl;
    die("no data length makes a %zu-byte message", m);
}

/* A raw stream: |pre| (a whole message, may be NULL) then a prefix announcing |announce| bytes
 * and |send| bytes of them; the stream is never ended. */
static struct stream *submit_oversize(struct conn *c, const char *method, const uint8_t *pre,
                                      size_t prelen, size_t announce, size_t send)
{
    struct stream *st = stream_new(c, K_RAW, method);

    obuf_reserve(st, prelen + PREFIX + send);
    if (prelen > 0)
        memcpy(st->obuf, pre, prelen);
    prefix_write(st->obuf + prelen, (uint32_t)announce);
    pattern_fill(st->obuf + prelen + PREFIX, 0, send);
    st->olen = prelen + PREFIX + send;
    st->tx_eof = true;
    st->hold_open = true;
    stream_submit(st);
    return st;
}

static int mode_msg_limit(void)
{
    struct conn *c = conn_open(window_or(16 * MiB));
    size_t d = data_len_for(opt.max_msg);
    struct stream *put, *echo, *bad_echo, *bad_put;
    struct stream_set set;
    struct stream *v[4];
    uint8_t hdr[400];
    size_t hn;
    bool ok = true;
    const size_t sent = 4 * KiB;

    /* Exactly max: a Put whose one data message and an Echo whose one Chunk are max_msg bytes.
     * The Echo's Chunk carries a crc32c field, as the server's answer always does, so the answer
     * (offset 0 is left out) is exactly max_msg bytes too. */
    put = stream_new(c, K_PUT, "Put");
    snprintf(put->name, sizeof(put->name), "msg-limit/exact");
    put->total = d;
    opt.chunk = d;
    echo = stream_new(c, K_ECHO, "Echo");
    echo->send_crc = true;
    echo->total = data_len_for(opt.max_msg - 5);
    stream_submit(put);
    stream_submit(echo);
    /* One byte more: the prefix announces max + 1, only |sent| bytes follow. */
    hn = encode_put_header(hdr, "msg-limit/oversize", 0, NULL);
    bad_echo = submit_oversize(c, "Echo", NULL, 0, opt.max_msg + 1, sent);
    bad_put = submit_oversize(c, "Put", hdr, hn, opt.max_msg + 1, sent);
    v[0] = put;
    v[1] = echo;
    v[2] = bad_echo;
    v[3] = bad_put;
    set.v = v;
    set.n = 4;
    if (!run_until(all_closed, &set, deadline))
        printf("FAIL msg-limit: timed out\n");
    if (!stream_ok("Put of a max-size message", put, GRPC_OK) || put->info_size != d ||
        memcmp(put->info_sha, put->tx_digest, SHA_LEN) != 0) {
        printf("FAIL msg-limit: Put of one %zu-byte message (data %zu): size %" PRIu64 "\n",
               opt.max_msg, d, put->info_size);
        ok = false;
    }
    finish_rx(echo);
    if (!stream_ok("Echo of a max-size message", echo, GRPC_OK) ||
        echo->data_bytes != echo->total || memcmp(echo->rx_digest, echo->tx_digest, SHA_LEN) != 0) {
        printf("FAIL msg-limit: Echo of one %zu-byte message did not come back intact\n",
               opt.max_msg);
        ok = false;
    }
    printf("RESULT mode=msg-limit case=exact-put ok=%d msg=%zu status=%d\n",
           put->grpc_status == GRPC_OK, opt.max_msg, put->grpc_status);
    printf("RESULT mode=msg-limit case=exact-echo ok=%d msg=%zu status=%d echoed=%" PRIu64 "\n",
           echo->grpc_status == GRPC_OK && echo->data_bytes == echo->total, opt.max_msg,
           echo->grpc_status, echo->data_bytes);
    for (int i = 0; i < 2; i++) {
        struct stream *st = i == 0 ? bad_echo : bad_put;
        const char *what = i == 0 ? "oversize-echo" : "oversize-put";
        bool good = st->closed && st->grpc_status == GRPC_RESOURCE_EX &&
                    st->accepted <= (i == 0 ? 0 : hn) + PREFIX + sent;

        if (!good) {
            report_stream_failure(what, st);
            ok = false;
        }
        printf("RESULT mode=msg-limit case=%s ok=%d announced=%zu accepted=%" PRIu64
               " status=%d rst=%u message=\"%s\"\n",
               what, good, opt.max_msg + 1, st->accepted, st->grpc_status, st->rst_code,
               st->grpc_message);
    }
    return ok ? 0 : 1;
}

/* ---- main --------------------------------------------------------------------------------- */

static __attribute__((noreturn)) void usage(void)
{
    fprintf(stderr,
            "Usage: rsload [options] put NAME BYTES | get NAME | echo BYTES |\n"
            "              stall-get NAME | msg-limit\n"
            "  --addr HOST:PORT       server (default 127.0.0.1:50051)\n"
            "  --chunk BYTES          data bytes per Put/Echo message (default 64K)\n"
            "  --get-chunk BYTES      GetRequest.chunk_size (default: the server's, 64K)\n"
            "  --window BYTES         our SETTINGS_INITIAL_WINDOW_SIZE (default 4M; 65535 in\n"
            "                         stall-get)\n"
            "  --conn-window BYTES    our connection window (default 1G)\n"
            "  --seed N               pattern seed (default 1)\n"
            "  --streams N --conns C  stall-get: Gets and connections (default 1000, 10)\n"
            "  --stall-seconds S      stall-get, echo: read nothing for S seconds (default 10\n"
            "                         in stall-get, 0 in echo)\n"
            "  --stall-mode window|socket  stop giving windows back (default), or stop reading\n"
            "                         the socket\n"
            "  --unary-probe          stall-get: one Stat on a separate connection mid-stall\n"
            "  --probe-at S           when, in seconds into the stall (default min(1, S/2))\n"
            "  --active K             stall-get: K streams of the first connection read all along\n"
            "  --read-rate BYTES/S --read-seconds S  get: read slowly at first\n"
            "  --progress-ms MS       print PROGRESS lines\n"
            "  --max-msg BYTES        the server's --max-msg (default 4M), for msg-limit\n"
            "  --header-sha           put: hash the data first and send it in PutHeader\n"
            "  --no-pattern           get: check SHA-256 only, not the pattern\n"
            "  --no-crc               get, echo: do not check Chunk.crc32c (benchmarks only)\n"
            "  --timeout S            give up after S seconds (default 900)\n"
            "  --quiet                RESULT lines only\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "addr", required_argument, NULL, 'a' },
        { "chunk", required_argument, NULL, 'c' },
        { "get-chunk", required_argument, NULL, 'g' },
        { "window", required_argument, NULL, 'w' },
        { "conn-window", required_argument, NULL, 'W' },
        { "seed", required_argument, NULL, 's' },
        { "streams", required_argument, NULL, 'n' },
        { "conns", required_argument, NULL, 'C' },
        { "stall-seconds", required_argument, NULL, 'S' },
        { "stall-mode", required_argument, NULL, 'M' },
        { "unary-probe", no_argument, NULL, 'u' },
        { "probe-at", required_argument, NULL, 'T' },
        { "active", required_argument, NULL, 'A' },
        { "read-rate", required_argument, NULL, 'r' },
        { "read-seconds", required_argument, NULL, 'R' },
        { "progress-ms", required_argument, NULL, 'p' },
        { "max-msg", required_argument, NULL, 'm' },
        { "header-sha", no_argument, NULL, 'H' },
        { "no-pattern", no_argument, NULL, 'P' },
        { "no-crc", no_argument, NULL, 'K' },
        { "timeout", required_argument, NULL, 't' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    bool stall_given = false;
    const char *mode;
    char *colon;
    int ch, rc;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'a':
            colon = strrchr(optarg, ':');
            if (colon == NULL || (size_t)(colon - optarg) >= sizeof(opt.host) ||
                strlen(colon + 1) >= sizeof(opt.port))
                die("--addr wants HOST:PORT");
            memcpy(opt.host, optarg, (size_t)(colon - optarg));
            opt.host[colon - optarg] = '\0';
            snprintf(opt.port, sizeof(opt.port), "%s", colon + 1);
            break;
        case 'c':
            opt.chunk = (size_t)parse_size(optarg);
            break;
        case 'g':
            opt.get_chunk = (uint32_t)parse_size(optarg);
            break;
        case 'w':
            opt.window = (uint32_t)parse_size(optarg);
            break;
        case 'W':
            opt.conn_window = (uint32_t)parse_size(optarg);
            break;
        case 's':
            opt.seed = strtoull(optarg, NULL, 0);
            break;
        case 'n':
            opt.streams = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'C':
            opt.conns = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'S':
            opt.stall_seconds = strtod(optarg, NULL);
            stall_given = true;
            break;
        case 'M':
            if (strcmp(optarg, "socket") == 0)
                opt.socket_stall = true;
            else if (strcmp(optarg, "window") != 0)
                die("--stall-mode is window or socket");
            break;
        case 'u':
            opt.unary_probe = true;
            break;
        case 'T':
            opt.probe_at = strtod(optarg, NULL);
            break;
        case 'A':
            opt.active = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            opt.read_rate = (double)parse_size(optarg);
            break;
        case 'R':
            opt.read_seconds = strtod(optarg, NULL);
            break;
        case 'p':
            opt.progress_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'm':
            opt.max_msg = (size_t)parse_size(optarg);
            break;
        case 'H':
            opt.header_sha = true;
            break;
        case 'P':
            opt.check_pattern = false;
            break;
        case 'K':
            opt.check_crc = false;
            break;
        case 't':
            opt.timeout = strtod(optarg, NULL);
            break;
        case 'q':
            opt.quiet = true;
            break;
        default:
            usage();
        }
    }
    if (optind >= argc)
        usage();
    if (opt.chunk == 0 || opt.chunk > 64 * MiB || opt.conn_window < 65535 ||
        opt.conn_window > 0x7fffffffu || opt.window > 0x7fffffffu)
        die("bad --chunk, --window or --conn-window");
    mode = argv[optind++];
    snprintf(opt.authority, sizeof(opt.authority), "%s:%s", opt.host, opt.port);
    signal(SIGPIPE, SIG_IGN);
    t_origin = now_s();
    deadline = t_origin + opt.timeout;
    scratch_len = opt.chunk > 4 * MiB ? opt.chunk : 4 * MiB;
    scratch = malloc(scratch_len);
    streams = calloc(MAX_STREAMS, sizeof(*streams));
    if (scratch == NULL || streams == NULL)
        die("out of memory");
    if (strcmp(mode, "put") == 0 && argc - optind == 2) {
        rc = mode_put(argv[optind], parse_size(argv[optind + 1]));
    } else if (strcmp(mode, "get") == 0 && argc - optind == 1) {
        rc = mode_get(argv[optind]);
    } else if (strcmp(mode, "echo") == 0 && argc - optind == 1) {
        if (!stall_given)
            opt.stall_seconds = 0;
        rc = mode_echo(parse_size(argv[optind]));
    } else if (strcmp(mode, "stall-get") == 0 && argc - optind == 1) {
        rc = mode_stall_get(argv[optind]);
    } else if (strcmp(mode, "msg-limit") == 0 && argc - optind == 0) {
        rc = mode_msg_limit();
    } else {
        usage();
    }
    failures += rc;
    return failures > 0 ? 1 : 0;
}
