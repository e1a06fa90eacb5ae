/* tok_internal.h - pieces of the tokenizer shared between its source files (not part
 * of the engine's interface): UTF-8 and Unicode property helpers (tok_unicode.c) and
 * the small backtracking regex engine used by the pre-tokenizers (tok_regex.c).
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
/* Decodes valid UTF-8 into a malloc'd code point array (and, if offs is not NULL, a
 * malloc'd array of n+1 byte offsets). Returns 0 or BN_ENOMEM / BN_EINVAL. */
int bn_tok_utf8_decode_all(const char *s, size_t len, uint32_t **cps, size_t **offs,
                           size_t *n);

/* ---- Unicode properties (ICU) ---- */

/* General-category bit mask of cp (1 << u_charType(cp)), as ICU's U_GET_GC_MASK. */
uint32_t bn_tok_uc_gc_mask(uint32_t cp);
/* Unicode White_Space (what \s means in Oniguruma and HF tokenizers). */
int bn_tok_uc_is_space(uint32_t cp);
/* JavaScript's \s / String.prototype.trim set (White_Space minus U+0085 plus U+FEFF). */
int bn_tok_uc_is_js_space(uint32_t cp);
int bn_tok_uc_is_alphabetic(uint32_t cp);
/* Category mask of a \p{...} name: L, Lu, N, Nd, P, ... (one or two letters, or the long
 * names Letter, Number, Punctuation, Symbol, Mark, Separator, Other). 0 if unknown. */
uint32_t bn_tok_uc_gc_mask_by_name(const char *name);
/* Unicode normalization form "NFC", "NFD", "NFKC" or "NFKD" of valid UTF-8 text into a
 * malloc'd string. */
int bn_tok_uc_normalize(const char *form, const char *s, size_t len, char **out,
                        size_t *out_len, bn_err *err);

/* ---- regex ---- */

typedef struct bn_tok_re bn_tok_re;
/* Compiles a tokenizer.json pattern (Oniguruma syntax as HF uses it): alternation,
 * groups (?:) (?i:) (), lookahead (?=) (?!), classes with ranges, \p{..}, \P{..},
 * \s \S \d \D \w \W \r \n \t \f \v \xHH \x{H..} \uHHHH, '.', quantifiers ? * + {n}
 * {n,} {n,m} (greedy or lazy; a possessive '+' is read as greedy, as transformers.js
 * does). \s is Unicode White_Space, \d is \p{Nd}. Anchors and backreferences are
 * BN_EUNSUPPORTED. */
int bn_tok_re_compile(const char *pattern, bn_tok_re **out, bn_err *err);
void bn_tok_re_free(bn_tok_re *re);
/* Tries to match at code point index start of s[0..n) (leftmost-first, backtracking).
 * Returns 1 and sets *end on a match, 0 when none, -1 when *budget (steps, shared by
 * all the calls of one scan and decremented here) runs out (err set). */
int bn_tok_re_match_at(const bn_tok_re *re, const uint32_t *s, size_t n, size_t start,
                       size_t *end, long *budget, bn_err *err);
/* Step budget for scanning a text of n_chars code points. */
long bn_tok_re_budget(size_t n_chars);

#endif
