/* cuda.h - the CUDA implementation of the backend seam (backend/backend.h calls it; nothing
 * else should). Built only with -Dcuda=enabled (or auto with nvcc + cuBLAS found).
 *
 * A bn_cu_model holds on one GPU, in ONE cudaMalloc: FP32 master parameters in the CPU
 * engine's flat layout (model/llama.c params_point order), FP32 gradients, AdamW moments,
 * the compute weights (the STE ternary projection of the linears when ste is on), and
 * the activations the backward pass needs for (max_B, max_T) (a model made without train
 * keeps one layer's). Two paths compute the same model:
 *   - FP32 path: FP32 activations, cuBLAS GEMMs in plain FP32 (the parity mode of the GPU
 *     tests, and evaluation) or, with bf16 on and a head_dim the bf16 path does not take,
 *     bf16 tensor cores on FP32 operands; CUDA-core attention.
 *   - bf16 path (bf16 on, head_dim 16..128): bf16 activations and compute weights, FP32
 *     residual stream, norm statistics, logits and accumulation; tensor-core attention;
 *     the backward recomputes the norms' outputs and silu(gate) * up. About half the
 *     activation memory; what training runs in bf16 mode. Its FP32 forward (evaluation,
 *     bn_cu_set_bf16 false) needs FP32 compute weights: the trainer keeps them, a plain
 *     STE model does not.
 * Attention is fused on both (online softmax; only a log-sum-exp per row is stored, never
 * a T x T matrix); its backward recomputes the probabilities.
 *
 * Supported: Llama/mistral/qwen2 without attention biases, without qk_norm, rope types
 * default, linear and llama3, head_dim in {8, 16, 32, 64, 128}, tied or
 * untied head. Anything else is refused by bn_cu_check_config with its name.
 * A model is used by one thread at a time. Errors name the CUDA / cuBLAS call.
 */
#ifndef BN_CUDA_H
#define BN_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the engine's C headers, and this module's C API */
#endif

#include "base/err.h"
#include "formats/hf.h"
#include "model/optim.h"
#include "model/rope.h"

typedef struct bn_cu_model bn_cu_model;

typedef struct bn_cu_opts {
    int gpu;          /* device ordinal */
    int max_B, max_T; /* activation capacity */
    bool train;       /* gradients, optimizer state, backward buffers */
    bool bf16;        /* bf16 tensor-core GEMMs (FP32 master weights and accumulation) */
    bool ste;         /* forward uses ternary q(W) of the linears (absmean per row, tau) */
    float tau;        /* STE threshold (0.5) */
    bool trainer;     /* fine-tune trainer (bn_cu_train_setup follows): compute weights
                       * apart from the master weights, Grokfast EMA, Newton-Schulz scratch */
} bn_cu_opts;

/* One tensor of the fine-tune trainer (backend.h bn_backend_tensor). */
typedef struct bn_cu_tensor {
    size_t off;
    int rows, cols;
    bool ternary, trainable, muon;
    const float *xsq; /* host [cols] or NULL; uploaded by bn_cu_train_setup */
} bn_cu_tensor;

typedef struct bn_cu_train {
    const bn_cu_tensor *t;
    int n_t;
    float tau;        /* quantize-stage tau (without xsq) */
    bool per_tensor;  /* one scale per tensor */
    float taus[8];    /* refinement grid (with xsq) */
    int n_taus;
    bn_optim_config oc;
} bn_cu_train;

/* What bn_cu_get / bn_cu_set move; each is n_params floats except LOGITS ([B*T, V] of
 * the last forward, before bn_cu_loss turns them into d(loss)/d(logits)). */
typedef enum { BN_CU_PARAMS = 0, BN_CU_GRADS, BN_CU_ADAM_M, BN_CU_ADAM_V, BN_CU_LOGITS,
               BN_CU_COMPUTE /* compute weights (n_params) */ } bn_cu_buf;

/* Number of usable GPUs (0 with the reason in why: no driver, no device). */
int bn_cu_device_count(char *why, size_t why_len);
/* Free and total memory of one GPU. */
int bn_cu_mem_info(int gpu, size_t *free_b, size_t *total_b, bn_err *err);
/* 0 when the CUDA backend computes this model exactly; else BN_EUNSUPPORTED naming the key. */
int bn_cu_check_config(const bn_model_config *cfg, bn_err *err);
/* Bytes of device memory bn_cu_new will take for these options (the one allocation plus
 * cuBLAS workspace). */
size_t bn_cu_mem_need(const bn_model_config *cfg, const bn_cu_opts *o);

/* Uploads params (n_params floats, CPU engine layout); fails with the numbers when the
 * GPU has less free memory than bn_cu_mem_need. */
int bn_cu_new(const bn_model_config *cfg, const float *params, size_t n_params,
              const bn_cu_opts *o, bn_cu_model **out, bn_err *err);
void bn_cu_free(bn_cu_model *m);

/* tokens int32 [B, T] on the host. Logits [B*T, V] stay on the device. */
int bn_cu_forward(bn_cu_model *m, const int32_t *tokens, int B, int T, bn_err *err);
/* Mean NLL over counted positions (targets >= 0 and mask[i] != 0 when mask). When train,
 * the logits buffer becomes d(mean NLL)/d(logits). */
int bn_cu_loss(bn_cu_model *m, const int32_t *targets, const uint8_t *mask, float *loss,
               int *n_counted, bn_err *err);
/* Adds the gradient of the last loss to the gradient buffer. */
int bn_cu_backward(bn_cu_model *m, bn_err *err);
int bn_cu_zero_grad(bn_cu_model *m, bn_err *err);
/* AdamW on every parameter (decoupled decay; bias correction with step t + 1), after
 * global-norm clipping to max_grad_norm (<= 0: off). *grad_norm: the norm before clipping;
 * a non-finite norm skips the update (*skipped = 1). Then re-projects the compute weights. */
int bn_cu_adamw(bn_cu_model *m, float lr, float beta1, float beta2, float eps, float wd,
                int64_t t, float max_grad_norm, double *grad_norm, int *skipped, bn_err *err);
/* Re-derives the compute weights from the master parameters (after bn_cu_set PARAMS). */
int bn_cu_refresh(bn_cu_model *m, bn_err *err);
int bn_cu_get(bn_cu_model *m, bn_cu_buf which, float *host, size_t n, bn_err *err);
int bn_cu_set(bn_cu_model *m, bn_cu_buf which, const float *host, size_t n, bn_err *err);
/* ---- the fine-tune trainer (backend.h's training section; model made with trainer) ---- */
int bn_cu_train_setup(bn_cu_model *m, const bn_cu_train *tc, bn_err *err);
/* Compute weights from the master weights: ternary tensors with the quantize stage's
 * quantizer (refine over the tau grid when xsq, per row or per tensor), interpolated by lam
 * < 1; the others copied. */
int bn_cu_materialize(bn_cu_model *m, float lam, bn_err *err);
/* Cross-entropy of the last forward (*ce, mean NLL) and, with teacher (its forward done on
 * the same tokens), *kl = mean KL(p_teacher || p_student); the logits become
 * d(ce + distill * kl)/d logits. */
int bn_cu_loss_distill(bn_cu_model *m, bn_cu_model *teacher, const int32_t *targets, double distill,
                       double *ce, double *kl, bn_err *err);
/* One MuGrokfast step (model/optim.h) over the trainable tensors. */
int bn_cu_optim_step(bn_cu_model *m, bn_optim_stats *st, bn_err *err);
void bn_cu_optim_set_steps(bn_cu_model *m, int64_t t, int64_t applied);
int64_t bn_cu_optim_applied_steps(const bn_cu_model *m);
void bn_cu_optim_set_total_steps(bn_cu_model *m, int64_t total);
void bn_cu_optim_set_cooldown(bn_cu_model *m, int64_t start, int64_t n, double from);
/* Optimizer state of one tensor: kind 0 Grokfast EMA, 1 Muon momentum or AdamW m, 2 AdamW
 * v; n floats at flat offset off. Copies to out (host) or from in (host). */
int bn_cu_state_io(bn_cu_model *m, int kind, size_t off, size_t n, float *out, const float *in,
                   bn_err *err);

/* Switches the matrix products between bf16 tensor cores and plain FP32 (evaluation runs
 * in FP32, as the CPU engine computes it). */
void bn_cu_set_bf16(bn_cu_model *m, bool on);

/* Self-check of the bf16 tensor-core attention (cuda/attention.cu) against the FP32 kernels. */
typedef struct bn_cu_attn_check {
    double err_y, err_lse, err_dq, err_dk, err_dv; /* ||tc - ref|| / ||ref|| (relative L2) */
    double ms_fwd_ref, ms_bwd_ref, ms_fwd_tc, ms_bwd_tc; /* median of 5 timed runs, CUDA events */
} bn_cu_attn_check;
/* Random q, k, v, dy (seeded), rounded to bf16; runs the FP32 kernels on the rounded values
 * (upcast) and the bf16 tensor-core kernels on the current device; compares and times both.
 * An output element left unwritten (or non-finite) makes its error NaN. 0 or an error. */
int bn_cu_attention_check(int B, int T, int H, int KV, int hd, unsigned seed, bn_cu_attn_check *out,
                          bn_err *err);

/* Bytes of the model's device allocation (+ cuBLAS workspace). */
size_t bn_cu_bytes(const bn_cu_model *m);
/* Floats of the last forward's logits (B*T*V). */
size_t bn_cu_logits_count(const bn_cu_model *m);

#ifdef __cplusplus
}
#endif

#endif
