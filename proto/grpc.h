/* proto/grpc.h: the gRPC wire codec: status codes, the 5-byte message prefix, the receive
 * deframer, percent-encoding of grpc-message, grpc-timeout and base64 for -bin metadata.
 * Pure functions and caller-owned state; no sockets, no threads. */
#ifndef RS_PROTO_GRPC_H
#define RS_PROTO_GRPC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A gRPC status is data carried on a call, not an error code. Values are the wire values. */
enum rs_grpc_status {
    RS_GRPC_OK = 0,
    RS_GRPC_CANCELLED = 1,
    RS_GRPC_UNKNOWN = 2,
    RS_GRPC_INVALID_ARGUMENT = 3,
    RS_GRPC_DEADLINE_EXCEEDED = 4,
    RS_GRPC_NOT_FOUND = 5,
    RS_GRPC_ALREADY_EXISTS = 6,
    RS_GRPC_PERMISSION_DENIED = 7,
    RS_GRPC_RESOURCE_EXHAUSTED = 8,
    RS_GRPC_FAILED_PRECONDITION = 9,
    RS_GRPC_ABORTED = 10,
    RS_GRPC_OUT_OF_RANGE = 11,
    RS_GRPC_UNIMPLEMENTED = 12,
    RS_GRPC_INTERNAL = 13,
    RS_GRPC_UNAVAILABLE = 14,
    RS_GRPC_DATA_LOSS = 15,
    RS_GRPC_UNAUTHENTICATED = 16,
};

#define RS_GRPC_PREFIX_LEN 5

/* "OK", "CANCELLED", ...; "UNKNOWN_STATUS" for a value outside 0..16. */
const char *rs_grpc_status_name(int status);
/* The status a gRPC client derives from a non-200 HTTP :status (gRPC's http-grpc-status
 * mapping: 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED,
 * 429/502/503/504 UNAVAILABLE, anything else UNKNOWN). */
enum rs_grpc_status rs_grpc_status_from_http(int http_status);
/* Converts a negative errno from the server's own operations into the status a client sees:
 * -ENOENT NOT_FOUND, -EEXIST ALREADY_EXISTS, -ENOMEM/-ENOSPC/-EDQUOT RESOURCE_EXHAUSTED,
 * -EMSGSIZE RESOURCE_EXHAUSTED, -EINVAL INVALID_ARGUMENT, -ECANCELED CANCELLED,
 * -ETIMEDOUT DEADLINE_EXCEEDED, -EACCES/-EPERM PERMISSION_DENIED, anything else INTERNAL. */
enum rs_grpc_status rs_grpc_status_from_errno(int neg_errno);

/* Writes the 5-byte prefix (flag byte, then big-endian length). */
void rs_grpc_prefix_write(uint8_t out[RS_GRPC_PREFIX_LEN], bool compressed, uint32_t len);

struct rs_grpc_msg {
    const uint8_t *data; /* view; see rs_deframer_next() for how long it stays valid */
    size_t len;
    bool compressed;
};

/* Receive side of one stream: bytes arrive in arbitrary pieces (DATA frames split messages
 * anywhere); whole messages come out, one at a time, contiguous. The buffer is heap memory
 * that exists only while bytes are buffered: an idle stream holds none. It is sized exactly:
 * once a message's prefix is known it grows once to that message (at most max_msg plus the
 * prefix) plus any room reserved by rs_deframer_next(), never by doubling, and shrinks again
 * after a large message when only a small remainder is left (to that remainder's message plus
 * the room the last rs_deframer_next() reserved, which the next one will want again). Popped
 * bytes are reclaimed by moving the remainder to the front only once they are at least four
 * times the remainder, so a stream of small messages is not copied again at every pop. */
struct rs_deframer {
    uint8_t *buf;   /* owned; NULL when nothing is buffered */
    size_t head;    /* first unparsed byte */
    size_t tail;    /* one past the last buffered byte; head <= tail <= cap */
    size_t cap;     /* allocated bytes of buf */
    size_t max_msg; /* largest accepted message payload, fixed at init */
    size_t room;    /* what the last rs_deframer_next() reserved */
    bool held;      /* a view from rs_deframer_next() is outstanding: buf must not move */
};

/* Allocates nothing. */
void rs_deframer_init(struct rs_deframer *d, size_t max_msg);
/* Copies |len| bytes in. While a view is held the bytes never move: the caller guarantees
 * (by flow control) that no more than rs_deframer_reserve()'s |room| arrives meanwhile.
 * Returns 0, -ENOMEM (nothing taken), or -ENOSPC when a held view leaves no room. */
int rs_deframer_push(struct rs_deframer *d, const void *data, size_t len);
/* Looks at the oldest buffered message. Returns
 *   1          a whole message: |*m| is a view valid until rs_deframer_pop(), and the view is
 *              held (pushes will not move it) until then;
 *   0          not yet complete;
 *   -EMSGSIZE  the prefix announces more than max_msg bytes (known from the 5-byte prefix
 *              alone, before any payload is buffered); |m->len| holds the announced size;
 *   -EPROTO    the flag byte is neither 0 nor 1.
 * Before returning 1 it makes sure |room| more bytes can be pushed without moving the
 * buffer (so it may reallocate, which is safe because no view is held yet); -ENOMEM if not. */
int rs_deframer_next(struct rs_deframer *d, size_t room, struct rs_grpc_msg *m);
/* Drops the message last returned by rs_deframer_next() and releases the hold; frees the
 * buffer when nothing is left. */
void rs_deframer_pop(struct rs_deframer *d);
/* Bytes buffered and not yet popped. */
size_t rs_deframer_buffered(const struct rs_deframer *d);
/* Frees the buffer; accepts an initialised empty deframer. */
void rs_deframer_free(struct rs_deframer *d);

/* Percent-encodes a grpc-message value (gRPC spec: bytes outside 0x20..0x7e and '%' become
 * %XX, upper-case hex). Writes at most |cap| bytes including a NUL. Returns the encoded length
 * without the NUL, or -ENOSPC when |cap| is too small (out is then undefined). */
ssize_t rs_grpc_pct_encode(const char *in, size_t len, char *out, size_t cap);
/* Decodes %XX sequences; a malformed sequence is copied literally (as the spec asks).
 * Same return convention as rs_grpc_pct_encode(). */
ssize_t rs_grpc_pct_decode(const char *in, size_t len, char *out, size_t cap);

/* Parses a grpc-timeout value: 1..8 ASCII digits followed by one unit of H M S m u n.
 * Returns 0 and the timeout in nanoseconds (saturated at INT64_MAX), or -EINVAL. */
int rs_grpc_timeout_parse(const char *v, size_t len, int64_t *ns);

/* Base64 for -bin metadata. Encode writes padded standard base64 and a NUL; returns the length
 * or -ENOSPC. Decode accepts padded and unpadded input, rejects anything else with -EINVAL,
 * returns the decoded length or -ENOSPC. */
ssize_t rs_base64_encode(const uint8_t *in, size_t len, char *out, size_t cap);
ssize_t rs_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

#endif /* RS_PROTO_GRPC_H */
