/* tok_unicode.c - UTF-8 coding and the Unicode facts the tokenizer needs.
 *
 * UTF-8 is decoded strictly by hand (the tokenizer must reject what Rust's &str would
 * reject). Character properties (general category, White_Space, Alphabetic) and the
 * normalization forms come from the system's ICU (libicu, Debian's icu-uc), so the
 * tables follow the Unicode version of the installed ICU (15.0 on Debian 12). ASCII
 * properties are cached in a small table because the pre-tokenizer regex asks for them
 * on almost every character.
 */
#include "tokenizer/tok_internal.h"

#include <pthread.h>
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

int bn_tok_utf8_decode_all(const char *s, size_t len, uint32_t **cps, size_t **offs,
                           size_t *n)
{
    uint32_t *c = malloc((len + 1) * sizeof *c);
    size_t *o = offs ? malloc((len + 1) * sizeof *o) : NULL;
    if (!c || (offs && !o)) { free(c); free(o); return BN_ENOMEM; }
    size_t i = 0, k = 0;
    while (i < len) {
        if (o) o[k] = i;
        if (bn_tok_utf8_next(s, len, &i, &c[k]) != 0) { free(c); free(o); return BN_EINVAL; }
        k++;
    }
    if (o) { o[k] = len; *offs = o; }
    *cps = c;
    *n = k;
    return 0;
}

/* ---- properties ---- */

enum { ASCII_SPACE = 1, ASCII_ALPHA = 2 };
static uint32_t ascii_gc[128];
static unsigned char ascii_flags[128];
static pthread_once_t ascii_once = PTHREAD_ONCE_INIT;

static void ascii_fill(void)
{
    for (int c = 0; c < 128; c++) {
        ascii_gc[c] = (uint32_t)U_GET_GC_MASK(c);
        ascii_flags[c] = (unsigned char)((u_isUWhiteSpace(c) ? ASCII_SPACE : 0) |
                                         (u_isUAlphabetic(c) ? ASCII_ALPHA : 0));
    }
}

static void ascii_init(void) { pthread_once(&ascii_once, ascii_fill); }

uint32_t bn_tok_uc_gc_mask(uint32_t cp)
{
    if (cp < 128) { ascii_init(); return ascii_gc[cp]; }
    return (uint32_t)U_GET_GC_MASK((UChar32)cp);
}

int bn_tok_uc_is_space(uint32_t cp)
{
    if (cp < 128) { ascii_init(); return ascii_flags[cp] & ASCII_SPACE; }
    return u_isUWhiteSpace((UChar32)cp) != 0;
}

int bn_tok_uc_is_js_space(uint32_t cp)
{
    if (cp == 0xFEFF) return 1;
    if (cp == 0x85) return 0;
    return bn_tok_uc_is_space(cp);
}

int bn_tok_uc_is_alphabetic(uint32_t cp)
{
    if (cp < 128) { ascii_init(); return (ascii_flags[cp] & ASCII_ALPHA) != 0; }
    return u_isUAlphabetic((UChar32)cp) != 0;
}

uint32_t bn_tok_uc_gc_mask_by_name(const char *name)
{
    static const struct { const char *name; uint32_t mask; } t[] = {
        {"L", U_GC_L_MASK}, {"Letter", U_GC_L_MASK}, {"Lu", U_GC_LU_MASK},
        {"Ll", U_GC_LL_MASK}, {"Lt", U_GC_LT_MASK}, {"Lm", U_GC_LM_MASK},
        {"Lo", U_GC_LO_MASK}, {"M", U_GC_M_MASK}, {"Mark", U_GC_M_MASK},
        {"Mn", U_GC_MN_MASK}, {"Mc", U_GC_MC_MASK}, {"Me", U_GC_ME_MASK},
        {"N", U_GC_N_MASK}, {"Number", U_GC_N_MASK}, {"Nd", U_GC_ND_MASK},
        {"Nl", U_GC_NL_MASK}, {"No", U_GC_NO_MASK}, {"P", U_GC_P_MASK},
        {"Punctuation", U_GC_P_MASK}, {"Pc", U_GC_PC_MASK}, {"Pd", U_GC_PD_MASK},
        {"Ps", U_GC_PS_MASK}, {"Pe", U_GC_PE_MASK}, {"Pi", U_GC_PI_MASK},
        {"Pf", U_GC_PF_MASK}, {"Po", U_GC_PO_MASK}, {"S", U_GC_S_MASK},
        {"Symbol", U_GC_S_MASK}, {"Sm", U_GC_SM_MASK}, {"Sc", U_GC_SC_MASK},
        {"Sk", U_GC_SK_MASK}, {"So", U_GC_SO_MASK}, {"Z", U_GC_Z_MASK},
        {"Separator", U_GC_Z_MASK}, {"Zs", U_GC_ZS_MASK}, {"Zl", U_GC_ZL_MASK},
        {"Zp", U_GC_ZP_MASK}, {"C", U_GC_C_MASK}, {"Other", U_GC_C_MASK},
        {"Cc", U_GC_CC_MASK}, {"Cf", U_GC_CF_MASK}, {"Cs", U_GC_CS_MASK},
        {"Co", U_GC_CO_MASK}, {"Cn", U_GC_CN_MASK},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(t[i].name, name) == 0) return t[i].mask;
    return 0;
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
