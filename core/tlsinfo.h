/* core/tlsinfo.h: one line describing the crypto under TLS and hashing, for the startup log. */
#ifndef RS_CORE_TLSINFO_H
#define RS_CORE_TLSINFO_H

/* Names the wolfSSL version (run-time library and headers), how it was built (Debian source
 * build or system library; AES-NI, AVX2 and SP x86-64 assembly compiled in or not), the CPU's
 * crypto features and the SHA-256 provider line (rs_sha256_provider()), e.g.
 *   "wolfSSL 5.5.4 (source build: AES-NI yes, AVX2 asm yes, SP x86_64 asm yes; CPU: aes
 *    pclmul avx avx2 bmi2 adx sha-ni); SHA-256: OpenSSL 3.0.22 libcrypto SHA-256 (SHA-NI: yes)"
 * The string is built once; the view is valid for the life of the process. Thread-safe. */
const char *rs_tls_describe(void);

#endif /* RS_CORE_TLSINFO_H */
