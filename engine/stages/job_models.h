/* job_models.h - what the calibrate, evaluate and finetune stages share: the tokenized
 * text of the job, FP32 / ternary / FP16-dequantized models built from the job context,
 * and held-out perplexity.
 *
 * The calibrate stage tokenizes the calibration text once and checkpoints its three
 * streams in <work_dir>/calib_tokens.safetensors ("train", "select" and "eval", I32):
 * documents concatenated, each encoded with the tokenizer's special tokens (BOS + ids for
 * Llama tokenizers). Later stages (and resumed runs) read them back with
 * bn_eval_tokens_load. The three come from disjoint documents (calib_text.h): "eval" is
 * the report split (every reported perplexity), "select" chooses fine-tuning's best
 * checkpoint, "train" feeds statistics and training.
 */
#ifndef BN_EVALCORE_H
#define BN_EVALCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/llama.h"
#include "stages/job.h"

#define BN_EVAL_TOKENS_FILE "calib_tokens.safetensors"

typedef struct bn_eval_tokens {
    int32_t *train;
    size_t n_train;
    int32_t *select;   /* may be empty (selection_fraction 0, or an older checkpoint) */
    size_t n_select;
    int32_t *eval;     /* the report split */
    size_t n_eval;
} bn_eval_tokens;

int bn_eval_tokens_save(const char *path, const bn_eval_tokens *t, bn_err *err);
/* Missing file: BN_EIO with the path in the message. */
int bn_eval_tokens_load(const char *path, bn_eval_tokens *t, bn_err *err);
void bn_eval_tokens_free(bn_eval_tokens *t);

/* Effective sequence length for evaluation/training: want (<= 0: 512) clamped to the
 * model's context. */
int bn_eval_seq_len(const bn_job_ctx *ctx, int want);

/* FP32 model from the job's HF folder, threads set. */
int bn_eval_load_fp32(const bn_job_ctx *ctx, bn_llama **out, bn_err *err);

/* Replaces every ternarized linear tensor of m with scale x code from ctx->qt. With
 * fp16 = true every value (linear and preserved tensors) is rounded to FP16 first: the
 * dequantized FP16 model that export writes. Tensors in ctx->preserved (fine-tuned)
 * replace the originals. */
int bn_eval_apply_quantized(const bn_job_ctx *ctx, bn_llama *m, bool fp16, bn_err *err);

/* Rounds every parameter of m to FP16 precision (in place). */
void bn_eval_round_fp16(bn_llama *m);

/* Held-out perplexity on a token stream (t->eval or t->select): up to `windows` windows
 * of ctx tokens (each predicting its next ctx tokens from position 0); ctx is shortened
 * when the stream holds less than one window. */
int bn_eval_perplexity(bn_llama *m, const int32_t *ids, size_t n, int ctx, int windows,
                       bn_llama_eval_result *out, bn_err *err);

/* The same on a backend (its current compute weights; CPU or GPU). */
int bn_eval_perplexity_bk(bn_backend *b, const int32_t *ids, size_t n, int ctx, int windows,
                          bn_llama_eval_result *out, bn_err *err);

#endif
