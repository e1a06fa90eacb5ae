/* sha256.h - SHA-256 (FIPS 180-4), streaming, for output file checksums. */
#ifndef BN_SHA256_H
#define BN_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct bn_sha256 {
    uint32_t h[8];
    uint64_t len;      /* bytes hashed so far */
    uint8_t buf[64];
    size_t nbuf;
} bn_sha256;

void bn_sha256_init(bn_sha256 *s);
void bn_sha256_update(bn_sha256 *s, const void *data, size_t n);
void bn_sha256_final(bn_sha256 *s, uint8_t out[32]);
/* hex digest (64 chars + NUL) of data */
void bn_sha256_hex(const void *data, size_t n, char hex[65]);
/* hex digest of a file's contents */
int bn_sha256_file(const char *path, char hex[65], bn_err *err);
/* Tests: true = always the portable C block function; false = back to auto-detection. */
void bn_sha256_force_portable(bool on);

#endif
