/* core/tls.h: TLS over caller-owned bytes, with wolfSSL. No sockets: ciphertext comes in as
 * views of buffers the caller received into, plaintext goes out of a callback, and what
 * wolfSSL wants to send (handshake, records, alerts, close_notify) accumulates in an output
 * buffer the caller sends and then releases. wolfSSL's error codes stop in this module.
 * One connection is used by one thread; a context is shared (reference counted, atomically). */
#ifndef RS_CORE_TLS_H
#define RS_CORE_TLS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct rs_tls_ctx;
struct rs_tls;
struct rs_tls_keys;

/* Session ticket keys: a ring of two ChaCha20-Poly1305 keys (32 bytes each, from getrandom())
 * named by 16 random bytes that travel in the ticket. New tickets are sealed with the current
 * key; after |rotate_s| seconds (monotonic clock, checked on every use) it becomes the previous
 * key, which still opens tickets (so a ticket stays valid for at least |rotate_s|), and a fresh
 * current key is made; a key two rotations old is wiped. One ring is shared by every context of
 * a server, so a SIGHUP reload (a new context) keeps the tickets already issued valid.
 * Thread-safety: any thread may seal, open and rotate at once; a rwlock guards the ring (seal
 * and open take it shared; a rotation takes it exclusive, about once a day).
 * Returns owned, reference 1 (rs_tls_keys_unref), or NULL with a reason in |err|. */
struct rs_tls_keys *rs_tls_keys_new(unsigned rotate_s, char *err, size_t errlen);
void rs_tls_keys_ref(struct rs_tls_keys *k);
/* Drops a reference; the last one wipes and frees the keys. Accepts NULL. */
void rs_tls_keys_unref(struct rs_tls_keys *k);
/* Rotates now, whatever the clock says. Returns 0 or -EIO (no randomness: keys unchanged). */
int rs_tls_keys_rotate(struct rs_tls_keys *k);
/* Seals |len| bytes of |buf| in place with the current key: writes the key's name, a random
 * nonce into iv[0..11] and the Poly1305 tag into mac[0..15] (the rest of iv and mac zero).
 * The additional data is name, iv and len. Returns 0 or -EIO. */
int rs_tls_keys_seal(struct rs_tls_keys *k, uint8_t name[16], uint8_t iv[16], uint8_t mac[32],
                     uint8_t *buf, size_t len);
/* Opens what rs_tls_keys_seal() made, in place. Returns 0 (current key), 1 (previous key: the
 * caller should issue a fresh ticket), or -ENOKEY (no kept key has that name) / -EBADMSG (the
 * tag does not verify; |buf| is then garbage). */
int rs_tls_keys_open(struct rs_tls_keys *k, const uint8_t name[16], const uint8_t iv[16],
                     const uint8_t mac[32], uint8_t *buf, size_t len);
/* The rotation interval in seconds, as given to rs_tls_keys_new(). */
unsigned rs_tls_keys_period(const struct rs_tls_keys *k);

/* Loads a PEM certificate chain and its private key (and, when |client_ca| is not NULL, the
 * CAs that client certificates must chain to: a client certificate is then required). TLS 1.3
 * and 1.2 with AEAD suites only, ALPN "h2" (a client offering ALPN without it gets
 * no_application_protocol), session tickets on: sealed with |keys| (the context holds a
 * reference; ticket lifetime hint and session timeout = the rotation interval, at most 7 days)
 * or, when |keys| is NULL, wolfSSL's own per-context keys. Resumption is by ticket only: the
 * server keeps no session cache. With |client_ca| there are no tickets (and no resumption):
 * every client presents its certificate. Returns owned, reference 1 (release with
 * rs_tls_ctx_unref), or NULL with a one-line reason in |err|. */
struct rs_tls_ctx *rs_tls_ctx_new(const char *cert, const char *key, const char *client_ca,
                                  struct rs_tls_keys *keys, char *err, size_t errlen);
void rs_tls_ctx_ref(struct rs_tls_ctx *ctx);
/* Drops a reference; the last one frees the context. Accepts NULL. */
void rs_tls_ctx_unref(struct rs_tls_ctx *ctx);

/* Returns an owned server connection (release with rs_tls_destroy) holding a reference on
 * |ctx|, or NULL (out of memory). */
struct rs_tls *rs_tls_new(struct rs_tls_ctx *ctx);
/* Accepts NULL. */
void rs_tls_destroy(struct rs_tls *t);

/* Receives plaintext: returns 0 to go on or a negative value, which rs_tls_recv() returns. */
typedef int (*rs_tls_plain_cb)(void *arg, const uint8_t *data, size_t len);

/* Feeds |len| bytes of ciphertext (borrowed for the call only; wolfSSL keeps what it needs)
 * and runs the handshake and record layer as far as they go; each piece of plaintext goes to
 * |cb|, which may be called with views of |scratch| (|cap| bytes, borrowed). Output wolfSSL
 * produced meanwhile waits in the output buffer (rs_tls_out_take). Returns 0, or
 *   -EPROTO      handshake or record failure (the reason is in rs_tls_error(); an alert may be
 *                waiting in the output buffer: send it, then close);
 *   -ECONNRESET  the peer sent close_notify;
 *   -ENOBUFS     the output buffer is at its bound;
 *   or what |cb| returned. */
int rs_tls_recv(struct rs_tls *t, const uint8_t *in, size_t len, uint8_t *scratch, size_t cap,
                rs_tls_plain_cb cb, void *arg);
/* The handshake is complete: plaintext may be written. */
bool rs_tls_ready(const struct rs_tls *t);
/* Encrypts the bytes of |iov| into the output buffer, in records of up to 16 KiB. TLS 1.3 with
 * AES-GCM (rs_tls_sealing()): every record holds 16 KiB of the byte stream, cut wherever that
 * ends, except the last, and is sealed straight from the pieces into the output buffer (no copy
 * of plaintext or ciphertext). Otherwise (TLS 1.2, ChaCha20-Poly1305) wolfSSL builds them: a
 * piece of 4 KiB or more is encrypted from where it lies, smaller pieces are gathered into one
 * record, not sent as many tiny ones. |iov| is borrowed for the call only: the caller may reuse
 * or release the plaintext at once. Returns 0, -EPROTO, -ENOBUFS (output bound: the connection
 * is unusable) or -ENOMEM. */
int rs_tls_write(struct rs_tls *t, const struct iovec *iov, int iovcnt);
/* Queues close_notify (once). */
void rs_tls_shutdown(struct rs_tls *t);
/* Bytes of ciphertext waiting to be taken. */
size_t rs_tls_out_pending(const struct rs_tls *t);
/* A view of every waiting byte of ciphertext, valid until rs_tls_out_done(); output produced
 * meanwhile goes to a second buffer. One take at a time. Returns its length (0: none). */
size_t rs_tls_out_take(struct rs_tls *t, const uint8_t **data);
/* The taken bytes were sent (or will never be): the view ends. */
void rs_tls_out_done(struct rs_tls *t);
/* Frees the buffers that hold nothing (the two output buffers keep their size between sends,
 * so a bulk transfer does not reallocate and fault in a fresh buffer for every flush). For a
 * connection that went quiet. */
void rs_tls_trim(struct rs_tls *t);
/* Bytes this connection holds in its own buffers, plus an estimate of wolfSSL's state. */
size_t rs_tls_mem(const struct rs_tls *t);
/* The verified client certificate (mutual TLS), once the handshake is done, as
 * "subject=<one-line X.509 subject>; san=<name>,<name>"; NULL without --tls-client-ca or
 * before the handshake. View valid until rs_tls_destroy(). */
const char *rs_tls_peer(const struct rs_tls *t);
/* The last failure's reason (static or in |t|), or "" when none. */
const char *rs_tls_error(const struct rs_tls *t);
/* Negotiated protocol version and cipher suite, for logs; static strings. */
const char *rs_tls_version(const struct rs_tls *t);
const char *rs_tls_cipher(const struct rs_tls *t);
/* ringstream seals this connection's application records itself (TLS 1.3, AES-GCM; see
 * rs_tls_write()). False before the handshake is done. */
bool rs_tls_sealing(const struct rs_tls *t);
/* rs_tls_write() seals TLS 1.3 AES-GCM records itself in this process: wolfSSL is the Debian
 * source build with its internal header and streaming AES-GCM, the header's structures match
 * the library's, and RS_TLS_SEAL (environment) is not "off". */
bool rs_tls_seal_built(void);
/* Who seals TLS 1.3 AES-GCM records, for the startup log: "wolfSSL" (and why), "ringstream,
 * AES-GCM by wolfSSL" or "ringstream, AES-GCM by intel-ipsec-mb 1.3.0 (VAES, AVX-512)" (a CPU
 * with VAES and VPCLMULQDQ, unless RS_TLS_SEAL=wolfssl). Static string. */
const char *rs_tls_sealer(void);
/* Tests only: sets the write sequence number of a sealing connection (to reach the AES-GCM
 * record limit without writing 2^24.5 records). Returns 0, or -ENOTSUP when not sealing. */
int rs_tls_set_write_seq(struct rs_tls *t, uint64_t seq);
/* Opening TLS 1.3 AES-GCM application records without wolfSSL's copies, for a wolfSSL
 * connection of either side that reads its ciphertext from a buffer of its own (the command
 * line client): rs_tls_open() decrypts a whole record straight from that buffer into the
 * caller's, with wolfSSL's read key, IV and sequence number (advanced as wolfSSL would), with
 * intel-ipsec-mb where rs_tls_write() seals with it. Everything else (handshake messages such
 * as KeyUpdate and NewSessionTicket, alerts, a record that does not verify, a connection that
 * is not TLS 1.3 with AES-GCM, wolfSSL holding part of a record) is left to wolfSSL_read(). */
struct rs_tls_opener;
struct WOLFSSL;
/* Returns an owned opener (rs_tls_opener_free), or NULL when this build cannot open records
 * itself (see rs_tls_seal_built()) or out of memory: then wolfSSL_read() does it all. */
struct rs_tls_opener *rs_tls_opener_new(void);
/* Accepts NULL. Wipes the expanded key. */
void rs_tls_opener_free(struct rs_tls_opener *o);
/* Opens the record at the head of the |len| bytes of ciphertext at |in| into |out| (|cap|
 * bytes; 16 KiB + 256 always suffice). Returns the plaintext length with *used = the record's
 * size (0 and *used > 0: a record of padding only); 0 with *used = 0 when |in| holds no whole
 * record yet; -EAGAIN when wolfSSL_read() must take the next record (it is still at |in|). */
ssize_t rs_tls_open(struct rs_tls_opener *o, struct WOLFSSL *ssl, const uint8_t *in, size_t len,
                    uint8_t *out, size_t cap, size_t *used);
/* The handshake resumed a session (a ticket was accepted). */
bool rs_tls_resumed(const struct rs_tls *t);

#endif /* RS_CORE_TLS_H */
