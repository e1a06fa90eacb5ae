/* tokenizer.h - Hugging Face tokenizer.json (BPE) for bitnetd: encode, decode, and the
 * vocabulary facts the GGUF writer needs.
 *
 * Two BPE families are supported, as Hugging Face `tokenizers` (and transformers.js)
 * run them from tokenizer.json:
 *   - SentencePiece-style ("llama" kind): normalizer Prepend("▁") + Replace(" ", "▁")
 *     (Llama-2, TinyLlama) or the Metaspace pre-tokenizer (Mistral), byte_fallback to
 *     <0xXX> pieces, unk fusing;
 *   - byte-level ("gpt2" kind): the ByteLevel byte-to-unicode alphabet, GPT-2's regex
 *     or a Split pre-tokenizer regex (Llama-3, Qwen2/3), optional NFC normalizer.
 * Added tokens (special or not) are matched in the raw text before anything else,
 * leftmost-longest, honouring lstrip/rstrip/normalized. BOS/EOS come from
 * tokenizer_config.json (add_bos_token/add_eos_token) when it says so, else from the
 * TemplateProcessing post-processor of tokenizer.json.
 *
 * A loaded bn_tok is immutable: encode/decode may run from many threads at once.
 * Text in and out is UTF-8; invalid UTF-8 input is an error naming the byte offset.
 */
#ifndef BN_TOKENIZER_H
#define BN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct bn_tok bn_tok;

/* The tokenizer family, which is also GGUF's tokenizer.ggml.model. */
typedef enum bn_tok_kind {
    BN_TOK_KIND_LLAMA = 0, /* SentencePiece-style BPE: "llama" */
    BN_TOK_KIND_GPT2 = 1,  /* byte-level BPE: "gpt2" */
} bn_tok_kind;

/* Token types, numerically equal to llama.cpp's/GGUF's tokenizer.ggml.token_type. */
typedef enum bn_tok_type {
    BN_TOK_TYPE_NORMAL = 1,
    BN_TOK_TYPE_UNKNOWN = 2,
    BN_TOK_TYPE_CONTROL = 3,      /* special added tokens: <s>, <|begin_of_text|> ...
                                     (also <unk> when it is one, as llama.cpp's converter) */
    BN_TOK_TYPE_USER_DEFINED = 4, /* non-special added tokens */
    BN_TOK_TYPE_UNUSED = 5,       /* ids with no token ("[PAD<id>]" holes) */
    BN_TOK_TYPE_BYTE = 6,         /* <0xXX> byte-fallback pieces */
} bn_tok_type;

/* Encode flags. */
enum {
    BN_TOK_ADD_SPECIAL = 1u << 0,   /* add BOS/EOS as the tokenizer's config says */
    BN_TOK_SPLIT_SPECIAL = 1u << 1, /* special tokens in the text are plain text (HF
                                       split_special_tokens=True); default: matched */
};
/* Decode flags. */
enum {
    BN_TOK_SKIP_SPECIAL = 1u << 0,  /* drop special added tokens (BOS, EOS, ...) */
};

/* A growable id array; encode functions APPEND to it. Free with bn_tok_ids_free. */
typedef struct bn_tok_ids {
    int32_t *ids;
    size_t n, cap;
} bn_tok_ids;
void bn_tok_ids_free(bn_tok_ids *v);

/* Loads `path`: a model folder (reads tokenizer.json and, if present,
 * tokenizer_config.json) or a tokenizer.json file (reads tokenizer_config.json beside
 * it if present). Errors name the file and the JSON field. */
int bn_tok_load(const char *path, bn_tok **out, bn_err *err);
/* Loads from memory; config_json may be NULL. `name` is used in error messages. */
int bn_tok_load_mem(const char *json, size_t json_len, const char *config_json,
                    size_t config_len, const char *name, bn_tok **out, bn_err *err);
void bn_tok_free(bn_tok *tok);

/* Encodes len bytes of UTF-8 text, appending ids to out. */
int bn_tok_encode(const bn_tok *tok, const char *text, size_t len, unsigned flags,
                  bn_tok_ids *out, bn_err *err);

/* Decodes ids to UTF-8 text (malloc'd, NUL-terminated, *out_len without the NUL) by
 * running tokenizer.json's decoder chain (ByteFallback, "▁"->" ", Strip of the first
 * space, ByteLevel). Bytes are returned as decoded: an id sequence cut inside a UTF-8
 * character yields the raw partial bytes, never U+FFFD. No clean-up of spaces before
 * punctuation is done. Unknown ids are an error. */
int bn_tok_decode(const bn_tok *tok, const int32_t *ids, size_t n, unsigned flags,
                  char **out, size_t *out_len, bn_err *err);

/* Decodes ids that continue prefix (a prompt's ids and its generated continuation):
 * the text ids add to decode(prefix), so that decode(prefix) + result ==
 * decode(prefix + ids). Keeps the continuation's leading space, which decoding ids on
 * their own would strip (SentencePiece's Strip decoder). */
int bn_tok_decode_continuation(const bn_tok *tok, const int32_t *prefix, size_t n_prefix,
                               const int32_t *ids, size_t n, unsigned flags, char **out,
                               size_t *out_len, bn_err *err);

/* Calibration/evaluation helper: reads a UTF-8 text file, splits it into paragraphs at
 * every "\n\n" (a blank line), strips each paragraph's leading and trailing whitespace,
 * skips empty ones, and appends for each paragraph encode(paragraph, flags) to out
 * (with BN_TOK_ADD_SPECIAL that is BOS + ids for Llama-style tokenizers). This is how
 * ../shared/data/corpora/tinystories_val.tok512.u16 was made from its text. If
 * doc_starts is not NULL it receives the index in out->ids where each paragraph
 * starts (appended, same growth rules). A file that is not UTF-8 fails with the path
 * and line. */
int bn_tok_encode_file(const bn_tok *tok, const char *path, unsigned flags,
                       bn_tok_ids *out, bn_tok_ids *doc_starts, bn_err *err);

/* ---- vocabulary facts (for the GGUF writer and the CLI) ---- */

bn_tok_kind bn_tok_get_kind(const bn_tok *tok);
/* "llama" or "gpt2" (GGUF tokenizer.ggml.model). */
const char *bn_tok_model_name(const bn_tok *tok);
/* GGUF tokenizer.ggml.pre guess: "llama-bpe" (Llama-3 regex), "qwen2" (Qwen2 regex),
 * "gpt-2" (ByteLevel's own regex), "default" (SentencePiece-style or anything else). */
const char *bn_tok_pre_name(const bn_tok *tok);

/* 1 + the largest id of the vocab and the added tokens. */
size_t bn_tok_vocab_size(const bn_tok *tok);
/* The token's string as written in tokenizer.json (byte-level tokens in the ByteLevel
 * alphabet, e.g. "Ġthe"); ids without a token give "[PAD<id>]"; NULL if out of range. */
const char *bn_tok_token(const bn_tok *tok, int32_t id);
/* Id of a token string (vocab or added token), or -1. */
int32_t bn_tok_token_id(const bn_tok *tok, const char *token);
bn_tok_type bn_tok_get_type(const bn_tok *tok, int32_t id);
/* Score for GGUF tokenizer.ggml.scores. llama kind: a piece that a merge produces
 * scores -(rank of the first merge producing it), so that llama.cpp's SPM tokenizer
 * (highest score merges first) replays the HF merge order; normal pieces no merge
 * produces (single characters) score -(n_merges + id); byte pieces 0; control and
 * unknown tokens -1000; user-defined 0. gpt2 kind: 0 for all (llama.cpp ignores them).
 * See tokenizer.c for the derivation and how it matches llama.cpp's own converter. */
float bn_tok_score(const bn_tok *tok, int32_t id);

/* Merges in rank order, each as "left right" in tokenizer.json's alphabet (GGUF
 * tokenizer.ggml.merges). */
size_t bn_tok_n_merges(const bn_tok *tok);
const char *bn_tok_merge(const bn_tok *tok, size_t rank);

/* Special token ids, -1 when the tokenizer has none. */
int32_t bn_tok_bos_id(const bn_tok *tok);
int32_t bn_tok_eos_id(const bn_tok *tok);
int32_t bn_tok_unk_id(const bn_tok *tok);
int32_t bn_tok_pad_id(const bn_tok *tok);
/* Whether BN_TOK_ADD_SPECIAL adds BOS / EOS. */
int bn_tok_add_bos(const bn_tok *tok);
int bn_tok_add_eos(const bn_tok *tok);

#endif
