/* core/sha256.h: the one SHA-256 interface of ringstream. The provider (OpenSSL's libcrypto,
 * whose SHA-256 uses SHA-NI where the CPU has it) lives in core/sha256.c alone. */
#ifndef RS_CORE_SHA256_H
#define RS_CORE_SHA256_H
#include <stddef.h>
#include <stdint.h>

#define RS_SHA256_LEN 32

struct rs_sha256 {
    void *impl; /* owned provider context */
};

/* Returns 0, or -ENOMEM. Release with rs_sha256_free() (also after _final). */
int rs_sha256_init(struct rs_sha256 *h);
/* Returns 0, or -EIO when the provider failed. */
int rs_sha256_update(struct rs_sha256 *h, const void *data, size_t len);
/* Writes the digest; the context must be re-initialised before reuse. Returns 0 or -EIO. */
int rs_sha256_final(struct rs_sha256 *h, uint8_t out[RS_SHA256_LEN]);
/* Starts |dst| as a copy of the running |src| (both then go on independently): a digest of
 * what was hashed so far without ending |src|. Returns 0, -ENOMEM or -EIO. Release |dst| with
 * rs_sha256_free(). */
int rs_sha256_copy(struct rs_sha256 *dst, const struct rs_sha256 *src);
/* Accepts a zeroed or already-freed context. */
void rs_sha256_free(struct rs_sha256 *h);
/* One line naming the provider and whether it uses SHA-NI, for the startup log. */
const char *rs_sha256_provider(void);

#endif /* RS_CORE_SHA256_H */
