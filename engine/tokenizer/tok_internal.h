/* tok_internal.h - pieces of the tokenizer shared between its source files (not part
 * of the engine's interface): UTF-8 and Unicode property helpers (tok_unicode.c).
 */
#ifndef BN_TOK_INTERNAL_H
#define BN_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* ---- UTF-8 ---- */

/* Decodes one code point at s[*i] (strict: no overlongs, surrogates or > U+10FFFF),
 * advances *i. Returns 0, or -1 on invalid input (then *i is unchanged). */
int bn_tok_utf8_next(const char *s, size_t len, size_t *i, uint32_t *cp);
/* Returns the offset of the first invalid byte, or len when s is valid UTF-8. */
size_t bn_tok_utf8_check(const char *s, size_t len);
/* Writes cp as UTF-8 into out (>= 4 bytes); returns the byte count. */
size_t bn_tok_utf8_put(uint32_t cp, char *out);

/* ---- Unicode properties (ICU) ---- */

/* JavaScript's \s / String.prototype.trim set (White_Space minus U+0085 plus U+FEFF). */
int bn_tok_uc_is_js_space(uint32_t cp);
/* Unicode normalization form "NFC", "NFD", "NFKC" or "NFKD" of valid UTF-8 text into a
 * malloc'd string. */
int bn_tok_uc_normalize(const char *form, const char *s, size_t len, char **out,
                        size_t *out_len, bn_err *err);

#endif
