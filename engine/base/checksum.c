/* checksum.c - SHA-256 over OpenSSL's EVP interface (see checksum.h).
 *
 * OpenSSL picks the fastest block function for the CPU (SHA-NI, AVX2, plain C), so the
 * streamed checksums of export (gigabytes for a 1B model) cost little beside the write.
 * Invariant: a bn_sha256 owns its EVP_MD_CTX from init until final or free, and ctx is
 * NULL outside that window, so free is always safe.
 */
#include "base/checksum.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void bn_sha256_to_hex(const uint8_t d[32], char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = 0;
}

int bn_sha256_library_init(void)
{
    return OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG | OPENSSL_INIT_ADD_ALL_DIGESTS, NULL) == 1 ? 0 : -1;
}

int bn_sha256_init(bn_sha256 *s, bn_err *err)
{
    s->failed = false;
    s->ctx = EVP_MD_CTX_new();
    if (!s->ctx) return bn_err_set(err, BN_ENOMEM, "sha256: out of memory");
    if (EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1) s->failed = true;
    return 0;
}

void bn_sha256_update(bn_sha256 *s, const void *data, size_t n)
{
    if (s->ctx && !s->failed && n && EVP_DigestUpdate(s->ctx, data, n) != 1) s->failed = true;
}

int bn_sha256_final_hex(bn_sha256 *s, char hex[65], bn_err *err)
{
    uint8_t d[32];
    unsigned int n = 0;
    int ok = s->ctx && !s->failed && EVP_DigestFinal_ex(s->ctx, d, &n) == 1 && n == 32;
    bn_sha256_free(s);
    if (!ok) return bn_err_set(err, BN_EIO, "sha256: OpenSSL digest failed");
    bn_sha256_to_hex(d, hex);
    return 0;
}

void bn_sha256_free(bn_sha256 *s)
{
    EVP_MD_CTX_free(s->ctx);
    s->ctx = NULL;
}

int bn_sha256_digest(const void *data, size_t n, uint8_t out[32])
{
    unsigned int len = 0;
    return EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32 ? 0 : -1;
}

int bn_sha256_hex(const void *data, size_t n, char hex[65])
{
    uint8_t d[32];
    if (bn_sha256_digest(data, n, d)) return -1;
    bn_sha256_to_hex(d, hex);
    return 0;
}

int bn_sha256_file(const char *path, char hex[65], bn_err *err)
{
    enum { BUFSZ = 1 << 20 };
    bn_sha256 s = { 0 };
    uint8_t *buf = NULL;
    int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bn_err_set(err, bn_err_from_errno(errno), "%s: %s", path, strerror(errno));
    if (!(buf = malloc(BUFSZ))) { rc = bn_err_set(err, BN_ENOMEM, "%s: out of memory", path); goto err; }
    if ((rc = bn_sha256_init(&s, err))) goto err;
    for (;;) {
        ssize_t r = read(fd, buf, BUFSZ);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            rc = bn_err_set(err, bn_err_from_errno(e), "%s: read: %s", path, strerror(e));
            goto err;
        }
        if (r == 0) break;
        bn_sha256_update(&s, buf, (size_t)r);
    }
    rc = bn_sha256_final_hex(&s, hex, err);
err:
    bn_sha256_free(&s);
    free(buf);
    close(fd);
    return rc;
}
