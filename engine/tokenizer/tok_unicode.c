/* tok_unicode.c - UTF-8 coding and the Unicode facts the tokenizer needs.
 *
 * UTF-8 is decoded strictly by hand (the tokenizer must reject what Rust's &str would
 * reject). White_Space and the normalization forms come from the system's ICU (libicu,
 * Debian's icu-uc), so they follow the Unicode version of the installed ICU (15.0 on
 * Debian 12). The pre-tokenizer regexes run on Oniguruma (tokenizer.c), which carries
 * its own Unicode tables, as in HF tokenizers.
 */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

int bn_tok_utf8_next(const char *s, size_t len, size_t *i, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)s + *i;
    size_t left = len - *i;
    if (left == 0) return -1;
    uint32_t c = p[0];
    size_t n;
    uint32_t min;
    if (c < 0x80) { *cp = c; *i += 1; return 0; }
    else if ((c & 0xE0) == 0xC0) { n = 2; c &= 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { n = 3; c &= 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { n = 4; c &= 0x07; min = 0x10000; }
    else return -1;
    if (left < n) return -1;
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80) return -1;
        c = (c << 6) | (p[k] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return -1;
    *cp = c;
    *i += n;
    return 0;
}

size_t bn_tok_utf8_check(const char *s, size_t len)
{
    size_t i = 0;
    uint32_t cp;
    while (i < len) {
        if ((unsigned char)s[i] < 0x80) { i++; continue; }
        if (bn_tok_utf8_next(s, len, &i, &cp) != 0) return i;
    }
    return len;
}

size_t bn_tok_utf8_put(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- properties ---- */

/* JavaScript's \s (String.prototype.trim): Unicode White_Space, minus U+0085, plus U+FEFF. */
int bn_tok_uc_is_js_space(uint32_t cp)
{
    if (cp == 0xFEFF) return 1;
    if (cp == 0x85) return 0;
    if (cp < 128) return cp == ' ' || (cp >= '\t' && cp <= '\r');
    return u_isUWhiteSpace((UChar32)cp) != 0;
}

int bn_tok_uc_normalize(const char *form, const char *s, size_t len, char **out,
                        size_t *out_len, bn_err *err)
{
    /* ASCII is invariant under every normalization form. */
    size_t k = 0;
    while (k < len && (unsigned char)s[k] < 0x80) k++;
    if (k == len) {
        char *copy = malloc(len + 1);
        if (!copy) return bn_err_set(err, BN_ENOMEM, "normalizer: out of memory");
        memcpy(copy, s, len);
        copy[len] = 0;
        *out = copy;
        *out_len = len;
        return 0;
    }
    UErrorCode st = U_ZERO_ERROR;
    const UNormalizer2 *nz = NULL;
    if (strcmp(form, "NFC") == 0) nz = unorm2_getNFCInstance(&st);
    else if (strcmp(form, "NFD") == 0) nz = unorm2_getNFDInstance(&st);
    else if (strcmp(form, "NFKC") == 0) nz = unorm2_getNFKCInstance(&st);
    else if (strcmp(form, "NFKD") == 0) nz = unorm2_getNFKDInstance(&st);
    else return bn_err_set(err, BN_EUNSUPPORTED, "normalizer: unknown form %s", form);
    if (U_FAILURE(st) || len > (size_t)INT32_MAX / 4)
        return bn_err_set(err, BN_EUNSUPPORTED, "normalizer %s: ICU: %s", form, u_errorName(st));
    int32_t n16 = 0;
    UChar *in16 = malloc((len + 1) * sizeof *in16);
    /* NFKC/NFKD may grow the text up to 18x; start at 3x and retry if needed. */
    int32_t cap = (int32_t)(len * 3 + 16);
    UChar *o16 = malloc((size_t)cap * sizeof *o16);
    char *o8 = NULL;
    int rc = 0;
    if (!in16 || !o16) { rc = bn_err_set(err, BN_ENOMEM, "normalizer: out of memory"); goto done; }
    u_strFromUTF8(in16, (int32_t)len + 1, &n16, s, (int32_t)len, &st);
    if (U_FAILURE(st)) { rc = bn_err_set(err, BN_EINVAL, "normalizer: bad UTF-8"); goto done; }
    int32_t m = unorm2_normalize(nz, in16, n16, o16, cap, &st);
    if (st == U_BUFFER_OVERFLOW_ERROR) {
        st = U_ZERO_ERROR;
        free(o16);
        cap = m + 1;
        o16 = malloc((size_t)cap * sizeof *o16);
        if (!o16) { rc = bn_err_set(err, BN_ENOMEM, "normalizer: out of memory"); goto done; }
        m = unorm2_normalize(nz, in16, n16, o16, cap, &st);
    }
    if (U_FAILURE(st)) { rc = bn_err_set(err, BN_EINVAL, "normalizer %s: ICU: %s", form, u_errorName(st)); goto done; }
    int32_t n8 = 0;
    o8 = malloc((size_t)m * 3 + 1);
    if (!o8) { rc = bn_err_set(err, BN_ENOMEM, "normalizer: out of memory"); goto done; }
    u_strToUTF8(o8, m * 3 + 1, &n8, o16, m, &st);
    if (U_FAILURE(st)) { rc = bn_err_set(err, BN_EINVAL, "normalizer %s: ICU: %s", form, u_errorName(st)); goto done; }
    o8[n8] = 0;
    *out = o8;
    *out_len = (size_t)n8;
    o8 = NULL;
done:
    free(in16);
    free(o16);
    free(o8);
    return rc;
}
