#include "proto/compress.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define GZIP_WBITS (15 + 16) /* zlib: a gzip header and trailer, not a zlib one */

int rs_gzip_inflate(const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *outlen)
{
    z_stream z;
    uint8_t *buf = NULL, *nbuf;
    size_t cap = 0, have = 0;
    int zr, ret;

    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, GZIP_WBITS) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    for (;;) {
        if (have == cap) {
            /* Grow geometrically, but never past max + 1: one byte more proves the bomb. */
            size_t ncap = cap == 0 ? (len * 4 > 4096 ? len * 4 : 4096) : cap * 2;

            if (cap == max + 1) {
                ret = -EMSGSIZE;
                goto out;
            }
            if (ncap > max + 1)
                ncap = max + 1;
            nbuf = realloc(buf, ncap);
            if (nbuf == NULL) {
                ret = -ENOMEM;
                goto out;
            }
            buf = nbuf;
            cap = ncap;
        }
        z.next_out = buf + have;
        z.avail_out = (uInt)(cap - have);
        zr = inflate(&z, Z_NO_FLUSH);
        have = cap - z.avail_out;
        if (have > max) {
            ret = -EMSGSIZE;
            goto out;
        }
        if (zr == Z_STREAM_END) {
            ret = z.avail_in == 0 ? 0 : -EINVAL;
            break;
        }
        if (zr == Z_BUF_ERROR && z.avail_in == 0) {
            ret = -EINVAL; /* truncated */
            break;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            ret = zr == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
            break;
        }
    }
out:
    inflateEnd(&z);
    if (ret < 0) {
        free(buf);
        return ret;
    }
    if (have == 0) {
        free(buf);
        buf = NULL;
    }
    *out = buf;
    *outlen = have;
    return 0;
}

int rs_gzip_deflate(const struct iovec *iov, int iovcnt, uint8_t **out, size_t *outlen)
{
    z_stream z;
    size_t total = 0, cap;
    uint8_t *buf;
    int i, zr;

    for (i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, GZIP_WBITS, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return -ENOMEM;
    cap = deflateBound(&z, (uLong)total) + 32;
    buf = malloc(cap);
    if (buf == NULL) {
        deflateEnd(&z);
        return -ENOMEM;
    }
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    for (i = 0; i < iovcnt; i++) {
        z.next_in = iov[i].iov_base;
        z.avail_in = (uInt)iov[i].iov_len;
        zr = deflate(&z, i + 1 == iovcnt ? Z_FINISH : Z_NO_FLUSH);
        if (zr == Z_STREAM_ERROR)
            goto err;
    }
    if (iovcnt == 0 && deflate(&z, Z_FINISH) == Z_STREAM_ERROR)
        goto err;
    *outlen = cap - z.avail_out;
    *out = buf;
    deflateEnd(&z);
    return 0;
err:
    deflateEnd(&z);
    free(buf);
    return -ENOMEM;
}
