/* proto/compress.h: gzip (RFC 1952) for gRPC message compression, via zlib. */
#ifndef RS_PROTO_COMPRESS_H
#define RS_PROTO_COMPRESS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Inflates one gzip member |in| into a new buffer of at most |max| bytes. Returns 0 with
 * |*out| owned (release with free(); NULL when *outlen is 0), or
 *   -EMSGSIZE  the output would exceed |max|: inflation stopped there, never ran in full;
 *   -EINVAL    corrupt or truncated input, or bytes after the gzip member;
 *   -ENOMEM. */
int rs_gzip_inflate(const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *outlen);
/* Deflates the concatenation of |iov| into a new gzip member. Returns 0 with |*out| owned
 * (release with free()), or -ENOMEM. */
int rs_gzip_deflate(const struct iovec *iov, int iovcnt, uint8_t **out, size_t *outlen);

#endif /* RS_PROTO_COMPRESS_H */
