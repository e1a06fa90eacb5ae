/* backend.h - the device seam: one interface for the Llama forward/backward, the STE
 * ternary projection, the loss and AdamW, implemented by the CPU engine (model/llama.c,
 * model/optim.c) and by the CUDA backend (cuda/, built with -Dcuda=enabled|auto).
 *
 * A bn_backend wraps one model on one device. The CPU implementation borrows the caller's
 * bn_llama and keeps a shadow copy of the linears for STE; the CUDA one uploads the
 * bn_llama's parameters once and keeps master weights, gradients, optimizer state and
 * activations on the GPU. Parameters move between the two in the CPU engine's flat layout
 * (bn_llama.params_mem), so a checkpoint taken from either resumes on either.
 *
 * Step (both devices):  forward -> loss (d loss/d logits) -> zero_grad + backward ->
 * adamw (clip, update master weights, re-project the ternary compute weights).
 *
 * Device selection for jobs: bn_device_resolve turns "auto" into cuda when a GPU is
 * usable and cpu otherwise; a "cuda" request on a build without CUDA or a host without a
 * GPU is refused by bn_backend_cuda_usable with a sentence saying which.
 */
#ifndef BN_BACKEND_H
#define BN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/device.h"
#include "base/err.h"
#include "model/llama.h"
#include "model/optim.h"
#include "quant/quant.h"

typedef struct bn_backend_opts {
    bn_device device;   /* CPU or CUDA (resolve AUTO first) */
    int gpu;            /* CUDA device ordinal */
    int max_B, max_T;   /* batch capacity */
    bool train;         /* gradients and optimizer state */
    bool bf16;          /* CUDA: bf16 tensor-core matrix products (FP32 master/accumulate) */
    bool ste;           /* forward on the ternary projection of the linears */
    float tau;          /* STE threshold (absmean per output row), 0.5 */
    bool trainer;       /* bn_backend_train_setup will follow (train on, ste off): CUDA
                         * sizes the compute weights and MuGrokfast state in */
} bn_backend_opts;

typedef struct bn_backend bn_backend;

/* host: the model (borrowed, must outlive the backend). CUDA refuses configs it does not
 * compute (with the key's name) and a job whose memory need exceeds the GPU's free memory
 * (with both numbers). */
int bn_backend_new(bn_llama *host, const bn_backend_opts *o, bn_backend **out, bn_err *err);
void bn_backend_free(bn_backend *b);
bn_device bn_backend_device(const bn_backend *b);
/* Bytes of device memory the model takes on the GPU (0 on CPU) and what it would take. */
size_t bn_backend_mem_need(const bn_model_config *cfg, const bn_backend_opts *o);

/* Free and total memory of GPU gpu (BN_EUNSUPPORTED on a build without CUDA). */
int bn_backend_gpu_mem(int gpu, size_t *free_b, size_t *total_b, bn_err *err);

/* Device memory the backend took (the CUDA model's allocation and cuBLAS workspace; 0 on CPU). */
size_t bn_backend_device_bytes(const bn_backend *b);

int bn_backend_forward(bn_backend *b, const int32_t *tokens, int B, int T, bn_err *err);
/* Copies the last forward's logits [B*T, V] to host (call before bn_backend_loss). */
int bn_backend_logits(bn_backend *b, float *out, bn_err *err);
int bn_backend_loss(bn_backend *b, const int32_t *targets, const uint8_t *mask, float *loss,
                    int *n_counted, bn_err *err);
int bn_backend_zero_grad(bn_backend *b, bn_err *err);
int bn_backend_backward(bn_backend *b, bn_err *err);

typedef struct bn_backend_adamw {
    float lr, beta1, beta2, eps, weight_decay, max_grad_norm;
} bn_backend_adamw;
/* Creates the optimizer state (zero moments) so bn_backend_set can restore it. */
int bn_backend_adamw_prepare(bn_backend *b, const bn_backend_adamw *c, bn_err *err);
/* One AdamW step on every parameter; t = steps applied before this one (0-based; the bias
 * correction uses t + 1, as model/optim.c counts applied steps). */
int bn_backend_adamw_step(bn_backend *b, const bn_backend_adamw *c, int64_t t,
                          double *grad_norm, bn_err *err);

/* Master parameters / gradients / AdamW moments in the CPU flat layout (n_params floats). */
typedef enum { BN_BK_PARAMS = 0, BN_BK_GRADS, BN_BK_ADAM_M, BN_BK_ADAM_V,
               BN_BK_COMPUTE /* the weights the forward uses (get only) */ } bn_bk_buf;
int bn_backend_get(bn_backend *b, bn_bk_buf which, float *out, bn_err *err);
int bn_backend_set(bn_backend *b, bn_bk_buf which, const float *in, bn_err *err);
size_t bn_backend_n_params(const bn_backend *b);

/* ---- training with the fine-tune stage's math (stages/finetune.c) ----------------------
 *
 * bn_backend_train_setup turns a backend made with train (and ste off) into the stage's
 * trainer: BN_BK_PARAMS are then the FP32 shadows (master weights) the optimizer updates,
 * and the model computes with weights that bn_backend_materialize derives from them, per
 * tensor: ternary tensors with the quantize stage's quantizer (bn_quant_refine with the tau
 * grid when xsq is given, else bn_quant_tensor; per row or per tensor), interpolated
 * w + lam (s q - w) during the quant warm-up (lam < 1); every other tensor copied. The
 * optimizer is MuGrokfast (model/optim.h) over the trainable tensors, the same on both
 * devices; its state is named as the CPU optimizer names it (bn_optim_state_at), so a
 * checkpoint holds the same arrays whichever device wrote it. */
typedef struct bn_backend_tensor {
    const char *name;     /* HF name; the optimizer's state names derive from it */
    size_t off;           /* offset in the flat layout (bn_llama.params_mem) */
    int rows, cols;
    bool ternary;         /* materialized by the quantizer, else copied */
    const float *xsq;     /* [cols] calibration statistics of its input (refine) or NULL */
    bool trainable;       /* updated by the optimizer */
    bn_optim_group group; /* MUON or ADAMW */
} bn_backend_tensor;

typedef struct bn_backend_train {
    const bn_backend_tensor *t; /* copied */
    int n_t;
    bn_quant_params qp;   /* tau, per_tensor, threads of the quantize stage */
    float taus[8];        /* the refinement grid (bn_quant_tau_grid) */
    int n_taus;
    bn_optim_config oc;
} bn_backend_train;

int bn_backend_train_setup(bn_backend *b, const bn_backend_train *tc, bn_err *err);
/* Compute weights from the shadows: lam = 1 fully ternary, < 1 quant warm-up. */
int bn_backend_materialize(bn_backend *b, double lam, bn_err *err);
/* Distillation: after bn_backend_forward of b and of teacher (same tokens; a backend made
 * without train, ste off), the mean NLL in *ce and, when distill > 0, the mean
 * KL(p_teacher || p_student) in *kl; d(ce + distill * kl)/d logits is left for
 * bn_backend_backward. teacher NULL or distill 0: plain loss (*kl = 0). */
int bn_backend_loss_distill(bn_backend *b, bn_backend *teacher, const int32_t *targets,
                            double distill, double *ce, double *kl, bn_err *err);
/* One MuGrokfast step on the current gradients (bn_optim_step's contract, stats alike). */
int bn_backend_optim_step(bn_backend *b, bn_optim_stats *st, bn_err *err);
void bn_backend_optim_set_steps(bn_backend *b, int64_t t, int64_t applied);
int64_t bn_backend_optim_applied_steps(const bn_backend *b);
void bn_backend_optim_set_total_steps(bn_backend *b, int64_t total);
/* The schedule's cool-down (bn_optim_config: cooldown_start, cooldown_steps, cooldown_from). */
void bn_backend_optim_set_cooldown(bn_backend *b, int64_t start, int64_t n, double from);
/* The optimizer's named state arrays (bn_optim_state_at's names and sizes). */
int bn_backend_optim_state_count(const bn_backend *b);
const char *bn_backend_optim_state_name(const bn_backend *b, int i, size_t *n);
int bn_backend_optim_state_get(bn_backend *b, int i, float *out, bn_err *err);
int bn_backend_optim_state_set(bn_backend *b, int i, const float *in, bn_err *err);

/* Matrix products in bf16 (CUDA tensor cores) or FP32; the CPU computes FP32 always. */
void bn_backend_set_bf16(bn_backend *b, bool on);

/* Held-out perplexity of the current compute weights: `windows` contiguous windows of ctx
 * tokens from ids, batch windows per forward (bn_llama_eval_windows' contract). The
 * backend must have been made with max_B >= batch and max_T >= ctx (CPU: any). */
int bn_backend_eval_windows(bn_backend *b, const int32_t *ids, size_t n_ids, int ctx,
                            int windows, int batch, bn_llama_eval_result *out, bn_err *err);

#endif
