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
 * Texts shorter than BN_CALIB_MIN_CHARS (after trimming) are skipped, and a text equal to
 * an earlier one is dropped (so no held-out text is also training text). The distinct
 * documents are then split once, deterministically by seed, into three disjoint parts:
 *   report     eval_fraction (default 0.1): every reported figure (pre/post/post-finetune
 *              perplexity, agreement); never used for statistics, training or selection;
 *   selection  selection_fraction (default 0.05): fine-tuning's best checkpoint and
 *              patience; never used for statistics or training;
 *   train      the rest: calibration statistics and fine-tuning.
 * The set's label names the origin for every metric measured on it: "file:<path>",
 * "dataset:<name>", "inline:<n> texts" or "synthetic".
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
    int duplicates; /* texts dropped as equal to an earlier one (bn_calib_docs_dedup) */
} bn_calib_docs;

/* Indices into a bn_calib_docs list, sorted, pairwise disjoint. eval = the report split. */
typedef struct bn_calib_parts {
    int *train, *select, *eval;
    int n_train, n_select, n_eval;
} bn_calib_parts;
void bn_calib_parts_free(bn_calib_parts *p);

typedef struct bn_calib_set {
    char source[512];   /* what was used: "wikitext (<dir>)", "custom (<path>)", ... */
    char label[480];    /* "file:<path>" | "dataset:<name>" | "inline:<n> texts" | "synthetic" */
    bool synthetic;
    bn_calib_docs docs; /* every usable, distinct document */
    bn_calib_parts parts;
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
/* Drops every text equal to an earlier one (first occurrence kept, order kept). */
int bn_calib_docs_dedup(bn_calib_docs *d, bn_err *err);
/* Deterministic three-way split: n_eval = round(eval_fraction * n), then n_select =
 * round(select_fraction * n), each >= 1 when its fraction is positive and room is left,
 * training keeping at least one document; the chosen indices depend only on n, the
 * fractions and seed. */
int bn_calib_split(int n, double eval_fraction, double select_fraction, uint64_t seed,
                   bn_calib_parts *out, bn_err *err);

#endif
