/* calib_text.h - calibration / fine-tuning text: where it comes from and how it is split.
 *
 * config.calibration.dataset chooses the source:
 *   openwebtext | c4 | wikitext  local files <data_dir>/datasets/<name>/ (files .txt and .jsonl)
 *                                (JSONL: one object per line with a string "text" field;
 *                                .txt: documents separated by blank lines). Missing or empty
 *                                sources fall back openwebtext -> c4 -> wikitext ->
 *                                synthetic, each step reported as a "warn" job event.
 *   custom                       inline texts, or a path to a .txt / .jsonl file (the API
 *                                checks the path against the model roots; here the file must
 *                                be a regular file with valid UTF-8).
 *   synthetic                    the original's five fixed templates, always announced with
 *                                a "warn" event (its perplexities mean little).
 * Texts shorter than BN_CALIB_MIN_CHARS (after trimming) are skipped. The documents are
 * then split once, deterministically by seed, into an evaluation part (eval_fraction,
 * default 0.1) and a training part; the evaluation part is never used for calibration
 * statistics or fine-tuning.
 *
 * Bad input fails with BN_EINVAL / BN_EFORMAT naming the field or file: empty custom
 * list, non-regular file, invalid UTF-8 (with byte offset), JSONL line without "text".
 */
#ifndef BN_CALIB_H
#define BN_CALIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bn_engine.h"

#define BN_CALIB_MIN_CHARS 24
#define BN_CALIB_MAX_DOCS 200000
#define BN_CALIB_MAX_BYTES (256u * 1024u * 1024u)

typedef struct bn_calib_docs {
    int n, cap;
    char **text;   /* owned, NUL-terminated, valid UTF-8 */
    size_t bytes;  /* sum of lengths */
    int skipped;   /* texts dropped as too short */
} bn_calib_docs;

typedef struct bn_calib_set {
    char source[512];   /* what was used: "wikitext (<dir>)", "custom (<path>)", ... */
    bool synthetic;
    bn_calib_docs docs; /* every usable document */
    int n_train, n_eval;
    int *train;         /* indices into docs, in file order */
    int *eval;
} bn_calib_set;

/* Loads and splits the calibration text chosen by opt->calibration. Events through pr
 * (may be NULL). data_dir may be NULL (named datasets then fall back). */
int bn_calib_load(const bn_options *opt, const char *data_dir, const bn_progress *pr,
                  bn_calib_set *out, bn_err *err);
void bn_calib_free(bn_calib_set *s);

/* Building blocks, exposed for tests. */
void bn_calib_docs_free(bn_calib_docs *d);
/* Appends one text (copied) if it is long enough after trimming; checks UTF-8. */
int bn_calib_docs_add(bn_calib_docs *d, const char *s, size_t len, const char *label,
                      bn_err *err);
/* Plain text: documents separated by one or more blank lines. */
int bn_calib_parse_text(bn_calib_docs *d, const char *buf, size_t len, const char *label,
                        bn_err *err);
/* JSONL with a "text" field per line (blank lines ignored). */
int bn_calib_parse_jsonl(bn_calib_docs *d, const char *buf, size_t len, const char *label,
                         bn_err *err);
/* Reads a .txt or .jsonl file (must be a regular file). */
int bn_calib_read_file(bn_calib_docs *d, const char *path, bn_err *err);
/* n synthetic samples from the five templates. */
int bn_calib_synthetic(bn_calib_docs *d, int n, bn_err *err);
/* true if s[0..len) is valid UTF-8; else *bad = offset of the first bad byte. */
bool bn_calib_utf8_valid(const char *s, size_t len, size_t *bad);
/* Deterministic split: n_eval = round(fraction * n) (>= 1 when n >= 2 and fraction > 0,
 * <= n - 1); the chosen indices depend only on n, fraction and seed. */
int bn_calib_split(int n, double fraction, uint64_t seed, int **train, int *n_train,
                   int **eval, int *n_eval, bn_err *err);

#endif
