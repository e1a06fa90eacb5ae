/* checksum.h - SHA-256 through OpenSSL's EVP interface: one-shot, streaming and of a file.
 * The one SHA-256 helper of the project (output checksums, Hub downloads, token digests). */
#ifndef BN_CHECKSUM_H
#define BN_CHECKSUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

struct evp_md_ctx_st; /* OpenSSL's EVP_MD_CTX */

/* A streaming digest: init, any number of updates, then final (or free to drop it). */
typedef struct bn_sha256 {
    struct evp_md_ctx_st *ctx;
    bool failed; /* an EVP call failed; final reports it */
} bn_sha256;

/* Returns 0, or BN_ENOMEM (err set) when OpenSSL cannot allocate a context. */
int bn_sha256_init(bn_sha256 *s, bn_err *err);
void bn_sha256_update(bn_sha256 *s, const void *data, size_t n);
/* Writes the hex digest (64 chars + NUL) and frees the context. Returns 0 or BN_EIO. */
int bn_sha256_final_hex(bn_sha256 *s, char hex[65], bn_err *err);
/* Frees the context without a result; safe on a zeroed or finished bn_sha256. */
void bn_sha256_free(bn_sha256 *s);

/* One-shot digest of data, raw (32 bytes) or hex. Returns 0, or -1 if OpenSSL failed. */
int bn_sha256_digest(const void *data, size_t n, uint8_t out[32]);
int bn_sha256_hex(const void *data, size_t n, char hex[65]);
/* Hex digest of a file's contents (read in 1 MiB blocks). */
int bn_sha256_file(const char *path, char hex[65], bn_err *err);
/* Initializes OpenSSL in the calling thread. Call it from main() before starting threads
 * that hash: OpenSSL's first use loads its configuration and leaves per-thread state in
 * the thread that happened to call first, which a short-lived thread (one per HTTP
 * connection) would lose. Later calls do nothing. Returns 0, or -1 if OpenSSL failed. */
int bn_sha256_library_init(void);
/* The hex spelling of a raw digest. */
void bn_sha256_to_hex(const uint8_t d[32], char hex[65]);

#endif
