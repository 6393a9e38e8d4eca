/* proto/grpc.c: the gRPC wire codec (see proto/grpc.h). */
#include "proto/grpc.h"
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- status ------------------------------------------------------------------------------ */

static const char *const status_names[] = {
    [RS_GRPC_OK] = "OK",
    [RS_GRPC_CANCELLED] = "CANCELLED",
    [RS_GRPC_UNKNOWN] = "UNKNOWN",
    [RS_GRPC_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
    [RS_GRPC_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
    [RS_GRPC_NOT_FOUND] = "NOT_FOUND",
    [RS_GRPC_ALREADY_EXISTS] = "ALREADY_EXISTS",
    [RS_GRPC_PERMISSION_DENIED] = "PERMISSION_DENIED",
    [RS_GRPC_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
    [RS_GRPC_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
    [RS_GRPC_ABORTED] = "ABORTED",
    [RS_GRPC_OUT_OF_RANGE] = "OUT_OF_RANGE",
    [RS_GRPC_UNIMPLEMENTED] = "UNIMPLEMENTED",
    [RS_GRPC_INTERNAL] = "INTERNAL",
    [RS_GRPC_UNAVAILABLE] = "UNAVAILABLE",
    [RS_GRPC_DATA_LOSS] = "DATA_LOSS",
    [RS_GRPC_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

const char *rs_grpc_status_name(int status)
{
    if (status < 0 || (size_t)status >= sizeof(status_names) / sizeof(status_names[0]))
        return "UNKNOWN_STATUS";
    return status_names[status];
}

enum rs_grpc_status rs_grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return RS_GRPC_INTERNAL;
    case 401:
        return RS_GRPC_UNAUTHENTICATED;
    case 403:
        return RS_GRPC_PERMISSION_DENIED;
    case 404:
        return RS_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return RS_GRPC_UNAVAILABLE;
    default:
        return RS_GRPC_UNKNOWN;
    }
}

enum rs_grpc_status rs_grpc_status_from_errno(int neg_errno)
{
    switch (neg_errno) {
    case -ENOENT:
        return RS_GRPC_NOT_FOUND;
    case -EEXIST:
        return RS_GRPC_ALREADY_EXISTS;
    case -ENOMEM:
    case -ENOSPC:
    case -EDQUOT:
    case -EMSGSIZE:
        return RS_GRPC_RESOURCE_EXHAUSTED;
    case -EINVAL:
        return RS_GRPC_INVALID_ARGUMENT;
    case -ECANCELED:
        return RS_GRPC_CANCELLED;
    case -ETIMEDOUT:
        return RS_GRPC_DEADLINE_EXCEEDED;
    case -EACCES:
    case -EPERM:
        return RS_GRPC_PERMISSION_DENIED;
    default:
        return RS_GRPC_INTERNAL;
    }
}

/* ---- message prefix ---------------------------------------------------------------------- */

void rs_grpc_prefix_write(uint8_t out[RS_GRPC_PREFIX_LEN], bool compressed, uint32_t len)
{
    out[0] = compressed ? 1 : 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

static uint32_t prefix_len(const uint8_t *p)
{
    return (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | (uint32_t)p[4];
}

/* ---- deframer ---------------------------------------------------------------------------- */

#define DEFRAMER_MIN_CAP     256
#define DEFRAMER_SHRINK_OVER ((size_t)64 * 1024) /* smaller buffers are kept as they are */

void rs_deframer_init(struct rs_deframer *d, size_t max_msg)
{
    d->buf = NULL;
    d->head = 0;
    d->tail = 0;
    d->cap = 0;
    d->max_msg = max_msg;
    d->room = 0;
    d->held = false;
}

/* Bytes of the oldest buffered message with its prefix, when its prefix is known from the
 * buffered bytes followed by |in| (|inlen| bytes about to be pushed) and announces an
 * acceptable size; 0 otherwise. */
static size_t head_msg_size(const struct rs_deframer *d, const uint8_t *in, size_t inlen)
{
    uint8_t p[RS_GRPC_PREFIX_LEN];
    size_t used = d->tail - d->head, n = 0;
    uint32_t len;

    for (; n < RS_GRPC_PREFIX_LEN && n < used; n++)
        p[n] = d->buf[d->head + n];
    for (; in != NULL && n < RS_GRPC_PREFIX_LEN && n - used < inlen; n++)
        p[n] = in[n - used];
    if (n < RS_GRPC_PREFIX_LEN || p[0] > 1)
        return 0;
    len = prefix_len(p);
    return len <= d->max_msg ? RS_GRPC_PREFIX_LEN + (size_t)len : 0;
}

/* Makes |need| bytes available past the buffered ones by compacting, then by growing. Only
 * when nothing is held: both move the bytes. |in| is what will be pushed (NULL when |need|
 * is room reserved for later).
 *
 * Sizing is exact, never a doubling: the buffer grows to what is buffered plus |need|, and
 * when the oldest message's prefix is known, at once to that whole message (at most max_msg
 * plus the prefix), so a message arriving in many DATA frames is reallocated once and a
 * partial 4 MiB message holds 4 MiB, not 8. */
static int deframer_make_room(struct rs_deframer *d, size_t need, const uint8_t *in)
{
    size_t used = d->tail - d->head;
    size_t want, ncap, msg;
    uint8_t *nbuf;

    assert(!d->held);
    if (need > SIZE_MAX - used)
        return -ENOMEM;
    want = used + need;
    if (d->cap - d->tail >= need)
        return 0;
    /* Compact first so realloc copies only live bytes and the new tail space is contiguous. */
    if (d->head > 0) {
        memmove(d->buf, d->buf + d->head, used);
        d->head = 0;
        d->tail = used;
    }
    if (want <= d->cap)
        return 0;
    ncap = want;
    msg = head_msg_size(d, in, in != NULL ? need : 0);
    if (msg > ncap)
        ncap = msg;
    if (ncap < DEFRAMER_MIN_CAP)
        ncap = DEFRAMER_MIN_CAP;
    nbuf = realloc(d->buf, ncap);
    if (nbuf == NULL)
        return -ENOMEM;
    d->buf = nbuf;
    d->cap = ncap;
    return 0;
}

/* After a pop. The remainder moves to the front only when the popped bytes before it are at
 * least four times its size: with a small-message stream, every pop moving the rest of a
 * 16 KiB DATA frame copied it over and over (8 times the data for 1,000-byte messages). A
 * large buffer holding only a small remainder shrinks, but not below the remainder's message
 * plus the room the next rs_deframer_next() will reserve again: shrinking to the message alone
 * made every message of a stream realloc down and back up. */
static void deframer_shrink(struct rs_deframer *d)
{
    size_t used = d->tail - d->head, ncap;
    uint8_t *nbuf;

    if (d->head / 4 >= used) {
        memmove(d->buf, d->buf + d->head, used);
        d->head = 0;
        d->tail = used;
    }
    if (d->cap <= DEFRAMER_SHRINK_OVER || used > d->cap / 4)
        return;
    ncap = head_msg_size(d, NULL, 0);
    if (ncap < used)
        ncap = used;
    if (ncap < DEFRAMER_MIN_CAP)
        ncap = DEFRAMER_MIN_CAP;
    if (d->room >= d->cap / 2 || ncap > d->cap / 2 - d->room)
        return;
    ncap += d->room;
    if (d->head > 0) {
        memmove(d->buf, d->buf + d->head, used);
        d->head = 0;
        d->tail = used;
    }
    nbuf = realloc(d->buf, ncap);
    if (nbuf == NULL)
        return; /* keeping the larger buffer is fine */
    d->buf = nbuf;
    d->cap = ncap;
}

static void deframer_release(struct rs_deframer *d)
{
    free(d->buf);
    d->buf = NULL;
    d->head = 0;
    d->tail = 0;
    d->cap = 0;
}

int rs_deframer_push(struct rs_deframer *d, const void *data, size_t len)
{
    int ret;

    if (len == 0)
        return 0;
    if (d->held) {
        if (d->cap - d->tail < len)
            return -ENOSPC;
    } else {
        ret = deframer_make_room(d, len, data);
        if (ret < 0)
            return ret;
    }
    memcpy(d->buf + d->tail, data, len);
    d->tail += len;
    return 0;
}

/* A second call while a view is held returns the same message again; the buffer cannot move
 * then, so a |room| that no longer fits yields -ENOSPC (as rs_deframer_push() would). */
int rs_deframer_next(struct rs_deframer *d, size_t room, struct rs_grpc_msg *m)
{
    size_t avail = d->tail - d->head;
    uint32_t len;
    int ret;

    if (avail == 0)
        return 0;
    /* The flag byte is decidable on its own: fail as early as possible. */
    if (d->buf[d->head] > 1)
        return -EPROTO;
    if (avail < RS_GRPC_PREFIX_LEN)
        return 0;
    len = prefix_len(d->buf + d->head);
    if (len > d->max_msg) {
        m->data = NULL;
        m->len = len;
        m->compressed = d->buf[d->head] == 1;
        return -EMSGSIZE;
    }
    if (avail - RS_GRPC_PREFIX_LEN < len)
        return 0;
    d->room = room;
    if (d->held) {
        if (d->cap - d->tail < room)
            return -ENOSPC;
    } else {
        ret = deframer_make_room(d, room, NULL);
        if (ret < 0)
            return ret;
    }
    m->data = d->buf + d->head + RS_GRPC_PREFIX_LEN;
    m->len = len;
    m->compressed = d->buf[d->head] == 1;
    d->held = true;
    return 1;
}

void rs_deframer_pop(struct rs_deframer *d)
{
    assert(d->held);
    assert(d->tail - d->head >= RS_GRPC_PREFIX_LEN);
    d->head += RS_GRPC_PREFIX_LEN + prefix_len(d->buf + d->head);
    assert(d->head <= d->tail);
    d->held = false;
    if (d->head == d->tail)
        deframer_release(d);
    else
        deframer_shrink(d);
}

size_t rs_deframer_buffered(const struct rs_deframer *d)
{
    return d->tail - d->head;
}

void rs_deframer_free(struct rs_deframer *d)
{
    deframer_release(d);
    d->held = false;
}

/* ---- grpc-message percent-encoding ------------------------------------------------------- */

static const char hex_upper[] = "0123456789ABCDEF";

static bool pct_unreserved(unsigned char c)
{
    return c >= 0x20 && c <= 0x7e && c != '%';
}

ssize_t rs_grpc_pct_encode(const char *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];

        if (pct_unreserved(c)) {
            if (cap - o < 2)
                return -ENOSPC;
            out[o++] = (char)c;
        } else {
            if (cap - o < 4)
                return -ENOSPC;
            out[o++] = '%';
            out[o++] = hex_upper[c >> 4];
            out[o++] = hex_upper[c & 0xf];
        }
    }
    if (cap - o < 1)
        return -ENOSPC;
    out[o] = '\0';
    return (ssize_t)o;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

ssize_t rs_grpc_pct_decode(const char *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    size_t i = 0;

    while (i < len) {
        unsigned char c = (unsigned char)in[i];
        int hi, lo;

        if (cap - o < 2)
            return -ENOSPC;
        if (c == '%' && len - i >= 3) {
            hi = hex_value((unsigned char)in[i + 1]);
            lo = hex_value((unsigned char)in[i + 2]);
            if (hi >= 0 && lo >= 0) {
                out[o++] = (char)(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        /* Plain byte, or a malformed escape: the '%' goes out literally and the bytes after
         * it are examined on their own. */
        out[o++] = (char)c;
        i++;
    }
    if (cap - o < 1)
        return -ENOSPC;
    out[o] = '\0';
    return (ssize_t)o;
}

/* ---- grpc-timeout ------------------------------------------------------------------------ */

int rs_grpc_timeout_parse(const char *v, size_t len, int64_t *ns)
{
    int64_t value = 0;
    int64_t unit;
    size_t i;

    if (v == NULL || len < 2 || len > 9)
        return -EINVAL;
    for (i = 0; i < len - 1; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -EINVAL;
        value = value * 10 + (v[i] - '0'); /* at most 8 digits: no overflow */
    }
    switch (v[len - 1]) {
    case 'H':
        unit = INT64_C(3600000000000);
        break;
    case 'M':
        unit = INT64_C(60000000000);
        break;
    case 'S':
        unit = INT64_C(1000000000);
        break;
    case 'm':
        unit = INT64_C(1000000);
        break;
    case 'u':
        unit = INT64_C(1000);
        break;
    case 'n':
        unit = 1;
        break;
    default:
        return -EINVAL;
    }
    *ns = value > INT64_MAX / unit ? INT64_MAX : value * unit;
    return 0;
}

/* ---- base64 ------------------------------------------------------------------------------ */

static const char b64_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

ssize_t rs_base64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t groups = len / 3 + (len % 3 != 0);
    size_t olen, i, o = 0;
    uint32_t v;

    if (groups > (SIZE_MAX - 1) / 4 || (ssize_t)(groups * 4) < 0)
        return -ENOSPC;
    olen = groups * 4;
    if (cap < olen + 1)
        return -ENOSPC;
    for (i = 0; i + 3 <= len; i += 3) {
        v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 0x3f];
        out[o++] = b64_alphabet[(v >> 6) & 0x3f];
        out[o++] = b64_alphabet[v & 0x3f];
    }
    if (len - i == 1) {
        v = (uint32_t)in[i] << 16;
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 0x3f];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 0x3f];
        out[o++] = b64_alphabet[(v >> 6) & 0x3f];
        out[o++] = '=';
    }
    out[o] = '\0';
    return (ssize_t)o;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Trailing bits of a final partial group are ignored (not required to be zero), as most
 * decoders do; padding, when present, must complete the last group exactly. */
ssize_t rs_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    size_t olen, i, o = 0;
    uint32_t v = 0;
    int bits = 0;

    if (len % 4 == 0 && len > 0 && in[len - 1] == '=') {
        len--;
        if (in[len - 1] == '=')
            len--;
    }
    if (len % 4 == 1)
        return -EINVAL;
    for (i = 0; i < len; i++) {
        if (b64_value((unsigned char)in[i]) < 0)
            return -EINVAL;
    }
    olen = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
    if ((ssize_t)olen < 0 || cap < olen)
        return -ENOSPC;
    for (i = 0; i < len; i++) {
        v = v << 6 | (uint32_t)b64_value((unsigned char)in[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(v >> bits);
            v &= (1u << bits) - 1;
        }
    }
    assert(o == olen);
    return (ssize_t)o;
}
