/* llama.h - Llama-family decoder in FP32: forward, loss and backward over a batch.
 *
 * llm.c style. All parameters live in one flat FP32 buffer, all gradients in a second
 * buffer with the same layout, and every activation the backward pass needs in a third
 * buffer sized once for (B, T) (bn_llama_reserve). Nothing is allocated in forward,
 * loss or backward. Every layer is a *_forward / *_backward pair in llama.c; matrix
 * products go through cblas_sgemm (OpenBLAS); attention runs in parallel over
 * (batch x head) on the engine's own threads (inside the call only).
 *
 * Conventions (HF LlamaForCausalLM, also mistral/qwen2):
 *   h = emb[tok];  per layer: h += Wo attn(rope(Wq n1 + bq), rope(Wk n1 + bk), Wv n1 + bv)
 *   (qwen3: rope(qn(Wq n1)), rope(kn(Wk n1)), qn/kn an RMSNorm over each head's hd values)
 *   with n1 = rmsnorm(h) * attn_norm;  h += Wdown (silu(Wg n2) * (Wu n2)), n2 = rmsnorm(h)
 *   * ffn_norm;  logits = head rmsnorm(h) * final_norm.  RoPE is HF's rotate_half: head
 *   dims (i, i + hd/2) form a pair rotated by angle pos * theta^(-2i/hd). GQA: query head
 *   h uses kv head h / (H / KV). Causal mask. Linear weights are [out, in] row-major,
 *   y = x W^T, exactly as stored in safetensors.
 *
 * Typical use:
 *   bn_llama *m; bn_llama_load(hf, &m, &err);      // or bn_llama_new(&cfg, seed, ...)
 *   bn_llama_reserve(m, B, T, true, &err);          // true: also gradients / backward
 *   bn_llama_forward(m, tokens, B, T, &err);        // logits in bn_llama_logits(m)
 *   float loss = bn_llama_loss(m, targets, NULL, NULL); // also writes d(loss)/d(logits)
 *   bn_llama_zero_grad(m); bn_llama_backward(m, &err); // grads in m->grads
 *
 * Thread safety: a bn_llama is used by one thread at a time. The engine's own threads
 * and OpenBLAS's threads run only inside forward/backward.
 */
#ifndef BN_LLAMA_H
#define BN_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "formats/hf.h"

/* The element type: float. A test-only build with BN_LLAMA_F64 defined makes it double
 * (same code, for finite-difference gradient checks). */
#ifdef BN_LLAMA_F64
typedef double bn_llama_float;
#else
typedef float bn_llama_float;
#endif

/* Named views into one flat FP32 buffer. L layers, D dim, H heads, KV kv heads, hd head
 * dim, F hidden (intermediate) dim, V vocab. Biases are NULL unless cfg.attention_bias,
 * q/k norms unless cfg.qk_norm.
 * head == tok_emb when cfg.tied_embeddings (one tensor; its gradient is the sum). */
typedef struct bn_llama_params {
    bn_llama_float *tok_emb;    /* [V, D] */
    bn_llama_float *attn_norm;  /* [L, D] */
    bn_llama_float *wq;         /* [L, H*hd, D] */
    bn_llama_float *wk;         /* [L, KV*hd, D] */
    bn_llama_float *wv;         /* [L, KV*hd, D] */
    bn_llama_float *bq;         /* [L, H*hd] or NULL */
    bn_llama_float *bk;         /* [L, KV*hd] or NULL */
    bn_llama_float *bv;         /* [L, KV*hd] or NULL */
    bn_llama_float *q_norm;     /* [L, hd] or NULL (cfg.qk_norm) */
    bn_llama_float *k_norm;     /* [L, hd] or NULL */
    bn_llama_float *wo;         /* [L, D, H*hd] */
    bn_llama_float *ffn_norm;   /* [L, D] */
    bn_llama_float *w_gate;     /* [L, F, D] */
    bn_llama_float *w_up;       /* [L, F, D] */
    bn_llama_float *w_down;     /* [L, D, F] */
    bn_llama_float *final_norm; /* [D] */
    bn_llama_float *head;       /* [V, D]; == tok_emb when tied */
} bn_llama_params;

/* Activations kept for backward, sized for N = B*T rows (see llama.c for the layout).
 * Read-only for callers except logits / dlogits. */
typedef struct bn_llama_acts {
    bn_llama_float *encoded;   /* [N, D] embedding output = residual input of layer 0 */
    bn_llama_float *ln1;       /* [L, N, D] attention rmsnorm output (input of wq/wk/wv) */
    bn_llama_float *ln1_rstd;  /* [L, N] */
    bn_llama_float *q;         /* [L, N, H*hd] after bias and RoPE */
    bn_llama_float *k;         /* [L, N, KV*hd] after bias and RoPE */
    bn_llama_float *v;         /* [L, N, KV*hd] */
    bn_llama_float *q_raw;     /* [L, N, H*hd] before the q norm (NULL without cfg.qk_norm) */
    bn_llama_float *k_raw;     /* [L, N, KV*hd] before the k norm */
    bn_llama_float *q_rstd;    /* [L, N*H] */
    bn_llama_float *k_rstd;    /* [L, N*KV] */
    bn_llama_float *att;       /* [L, B, H, T, T] softmax probabilities; only j <= t
                                * (and zeros to the end of t's 64-block) are valid */
    bn_llama_float *atty;      /* [L, N, H*hd] attention output (input of wo) */
    bn_llama_float *res_att;   /* [L, N, D] residual after attention */
    bn_llama_float *ln2;       /* [L, N, D] ffn rmsnorm output (input of w_gate/w_up) */
    bn_llama_float *ln2_rstd;  /* [L, N] */
    bn_llama_float *gate;      /* [L, N, F] pre-activation */
    bn_llama_float *up;        /* [L, N, F] */
    bn_llama_float *ffh;       /* [L, N, F] silu(gate) * up (input of w_down) */
    bn_llama_float *res_ffn;   /* [L, N, D] residual after the ffn = output of the layer */
    bn_llama_float *lnf;       /* [N, D] final rmsnorm output (input of head) */
    bn_llama_float *lnf_rstd;  /* [N] */
    bn_llama_float *logits;    /* [N, V] */
    bn_llama_float *dlogits;   /* [N, V] d(loss)/d(logits): bn_llama_loss writes, backward reads */
    bn_llama_float *losses;    /* [N] per-position NLL (0 where masked) */
} bn_llama_acts;

/* Activation statistics hook: called once per linear layer per forward with that layer's
 * INPUT x [rows, cols] (rows = B*T, cols = the layer's in-features), after activation
 * quantization if enabled. Roles WQ, WK, WV receive the same pointer (and W_GATE, W_UP);
 * role BN_ROLE_HEAD (layer -1) receives the final-norm output. */
typedef void (*bn_llama_stats_fn)(void *ctx, bn_role role, int layer,
                                  const bn_llama_float *x, int rows, int cols);

/* A ready-made accumulator for the hook (one per linear input). */
typedef struct bn_llama_act_stats {
    int cols;
    uint64_t count;   /* rows seen */
    double *sum_x2;   /* [cols] sum of x^2 per channel (E[x^2] = sum_x2 / count) */
    bn_llama_float *absmax;    /* [cols] max |x| per channel */
    double sum, sum_sq; /* over all elements: mean, std */
    bn_llama_float min, max;
} bn_llama_act_stats;
int bn_llama_act_stats_init(bn_llama_act_stats *s, int cols, bn_err *err);
void bn_llama_act_stats_free(bn_llama_act_stats *s);
void bn_llama_act_stats_add(bn_llama_act_stats *s, const bn_llama_float *x, int rows);
double bn_llama_act_stats_mean(const bn_llama_act_stats *s);
double bn_llama_act_stats_std(const bn_llama_act_stats *s);

typedef struct bn_llama {
    bn_model_config cfg;
    bn_llama_params params;   /* views into params_mem */
    bn_llama_float *params_mem;
    size_t n_params;          /* floats in params_mem (tied head counted once) */
    bn_llama_params grads;    /* views into grads_mem (NULL until reserved with backward) */
    bn_llama_float *grads_mem;
    bn_llama_acts acts;       /* views into acts_mem */
    bn_llama_float *acts_mem;
    int B, T;                 /* shape of the last forward */
    int max_B, max_T;         /* reserved capacity */
    bool act_quant;           /* W1.58A8: 8-bit per-token absmax quantization of every
                               * linear input, forward only (backward: straight-through) */
    int threads;              /* engine threads for attention etc. (>= 1) */
    bn_llama_stats_fn stats_fn; /* NULL = off */
    void *stats_ctx;
    struct bn_llama_scratch *scratch; /* private: rope tables, backward buffers */
} bn_llama;

/* Loads weights from an opened HF folder (F32/F16/BF16 converted per tensor). */
int bn_llama_load(const bn_hf_model *hf, bn_llama **out, bn_err *err);
/* A model with random weights (N(0, 0.02) linears/embeddings, norms 1), deterministic
 * for a seed. For tests and benchmarks. */
int bn_llama_new(const bn_model_config *cfg, uint64_t seed, bn_llama **out, bn_err *err);
void bn_llama_free(bn_llama *m);

/* Allocates activations for up to max_B x max_T (T <= cfg.max_seq_len is not required:
 * RoPE tables are sized for max_T) and, if with_grads, the gradient buffer and backward
 * scratch. May be called again to grow; forward with B, T beyond capacity reserves
 * automatically (an allocation outside the hot loop). */
int bn_llama_reserve(bn_llama *m, int max_B, int max_T, bool with_grads, bn_err *err);
void bn_llama_set_threads(bn_llama *m, int threads); /* engine + OpenBLAS threads */

/* Parameter access by role: pointer to the tensor of (role, layer) in p (params or
 * grads), and its shape [rows, cols] (cols = 1 for vectors). layer is ignored for global
 * roles. NULL if absent (biases without attention_bias; HEAD when tied returns tok_emb). */
bn_llama_float *bn_llama_tensor(const bn_llama *m, const bn_llama_params *p, bn_role role,
                                int layer, int *rows, int *cols);
/* Copies src [rows*cols] floats into the (role, layer) tensor. */
int bn_llama_set_tensor(bn_llama *m, bn_role role, int layer, const bn_llama_float *src,
                        bn_err *err);
/* Fills a linear tensor [rows, cols] with codes[r*cols + c] * scales[r] (per-row scales;
 * pass n_scales = 1 for one per-tensor scale). codes are -1/0/+1 (any int8 accepted). */
int bn_llama_set_linear_codes(bn_llama *m, bn_role role, int layer, const int8_t *codes,
                              const bn_llama_float *scales, int n_scales, bn_err *err);

/* The ternary model: every linear projection (wq wk wv wo w_gate w_up w_down) becomes
 * scale x code. Codes and scales come from <dir>/quantized/model.safetensors (an output
 * folder; *from_packed = true) or, when absent, from the engine quantizer (absmean, per
 * channel, tau 0.5) applied to m's current weights. Embeddings, norms and head stay. */
int bn_llama_ternarize(bn_llama *m, const char *dir, bool *from_packed, bn_err *err);

/* Forward: tokens int32 [B, T] (each in [0, V)). Logits [B, T, V] in m->acts.logits. */
int bn_llama_forward(bn_llama *m, const int32_t *tokens, int B, int T, bn_err *err);
static inline bn_llama_float *bn_llama_logits(const bn_llama *m) { return m->acts.logits; }
/* Mean NLL of the last forward against targets int32 [B, T]; a position counts when
 * targets >= 0 and (mask == NULL or mask[i] != 0). Writes acts.losses and (if grads are
 * reserved) acts.dlogits = d(mean NLL)/d(logits). Returns 0 when nothing counts.
 * *n_counted (may be NULL) receives the number of counted positions. */
bn_llama_float bn_llama_loss(bn_llama *m, const int32_t *targets, const uint8_t *mask,
                             int *n_counted);
/* Backward from acts.dlogits (the caller may add to it first, e.g. a distillation term).
 * ADDS to m->grads (call bn_llama_zero_grad first for a fresh gradient). */
int bn_llama_backward(bn_llama *m, bn_err *err);
void bn_llama_zero_grad(bn_llama *m);

/* Log-softmax helper for evaluation: NLL of target given a logits row [V]. */
bn_llama_float bn_llama_nll_row(const bn_llama_float *logits, int V, int target);

/* Perplexity over windows: window w takes inputs ids[w*ctx, w*ctx + ctx) and predicts
 * ids[w*ctx + 1, w*ctx + ctx + 1), from position 0 (no carried state). windows = 0 means
 * every full window. Runs batch windows per forward (batch <= 0: 4). */
typedef struct bn_llama_eval_result {
    double mean_nll;   /* nats per predicted token */
    double perplexity; /* exp(mean_nll) */
    uint64_t tokens;   /* predicted tokens */
    int windows;
} bn_llama_eval_result;
int bn_llama_eval_windows(bn_llama *m, const int32_t *ids, size_t n_ids, int ctx, int windows,
                          int batch, bn_llama_eval_result *out, bn_err *err);

#endif
