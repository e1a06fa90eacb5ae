/* tk_llama.h - W1.58A8 token-by-token decoding with the ternary kernels and a KV cache.
 *
 * The FP32 model (engine/model/llama.h) provides embeddings, norms and biases, and the LM
 * head's weights, which are quantized at load to int8 blocks of 32 with an FP32 scale each
 * (bn_tk_q8_matrix; its input goes in as int16: the head's logits differ from FP32 by the
 * weights' 8-bit rounding only); every linear projection (q, k, v, o, gate, up, down) runs as int8 activations (per
 * token absmax) x packed ternary weights (engine/quant/tkernels.h). Weights come from the HF
 * folder: when every row of a projection holds only {-s, 0, +s} (a bitnetd output folder,
 * dequantized) the codes and the row scale s are recovered exactly; otherwise the
 * projection is ternarized on load with the engine quantizer (absmean per channel,
 * tau 0.5), and bn_tk_llama_exact() says so.
 *
 * Per layer, as HF LlamaForCausalLM: h += Wo attn(rope(Wq n1), rope(Wk n1), Wv n1);
 * h += Wdown(silu(Wgate n2) * Wup n2); RoPE pairs (i, i + hd/2); GQA.
 */
#ifndef BN_TK_LLAMA_H
#define BN_TK_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "formats/hf.h"
#include "model/llama.h"

typedef struct bn_tk_llama bn_tk_llama;

/* max_ctx: KV cache length (tokens); threads: kernel and OpenBLAS threads. */
int bn_tk_llama_load(const bn_hf_model *hf, int max_ctx, int threads, bn_tk_llama **out, bn_err *err);
void bn_tk_llama_free(bn_tk_llama *m);
/* Changes the number of threads (caller included) of the helper pool; BN_ENOMEM leaves
 * the model running on the caller's thread alone. */
int bn_tk_llama_set_threads(bn_tk_llama *m, int threads);
/* Switches the LM head to F16 x FP32 (the head of llama.cpp's TQ2_0/TQ1_0 GGUF files;
 * 1.8x the int8 head's bytes), so an agreement check against llama.cpp sees only the
 * engines' float rounding. BN_ENOMEM leaves the int8 head. */
int bn_tk_llama_use_f16_head(bn_tk_llama *m, bn_err *err);
/* true when all projections were already ternary (codes recovered exactly). */
bool bn_tk_llama_exact(const bn_tk_llama *m);
/* Feeds `token` at position pos (0, 1, 2, ... in order; pos < max_ctx) and writes the
 * next-token logits [vocab] to logits (may be NULL to skip the head). */
int bn_tk_llama_step(bn_tk_llama *m, int32_t token, int pos, float *logits, bn_err *err);

/* Feeds n tokens at positions pos0 .. pos0+n-1 (pos0 + n <= max_ctx) and writes the
 * logits after the last one (logits may be NULL). Same results as n steps. */
int bn_tk_llama_prefill(bn_tk_llama *m, const int32_t *tokens, int n, int pos0, float *logits, bn_err *err);

/* Mean NLL of ids as bn_llama_eval_windows scores it (windows of ctx tokens from position
 * 0, each predicting its next ctx tokens; windows <= 0: every full window), computed by
 * this decoder token by token: the numbers `generate --ternary` produces. ctx <= the
 * model's max_ctx. */
int bn_tk_llama_eval_windows(bn_tk_llama *m, const int32_t *ids, size_t n_ids, int ctx, int windows,
                             bn_llama_eval_result *out, bn_err *err);

/* Bytes of weights one step reads: the packed projections with their row scales, the
 * embedding row and the LM head (the KV cache not counted). */
size_t bn_tk_llama_bytes_per_token(const bn_tk_llama *m);

/* Recovers ternary codes from a float row-major matrix whose rows each take values in
 * {-s, 0, +s}: codes[rows*cols], scale[rows]. Returns false (outputs undefined) if any
 * row is not of that form. An all-zero row gets scale 0. */
bool bn_tk_recover_ternary(const float *w, int64_t rows, int64_t cols, int8_t *codes, float *scale);

#endif
