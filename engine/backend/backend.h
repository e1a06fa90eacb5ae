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

typedef struct bn_backend_opts {
    bn_device device;   /* CPU or CUDA (resolve AUTO first) */
    int gpu;            /* CUDA device ordinal */
    int max_B, max_T;   /* batch capacity */
    bool train;         /* gradients and optimizer state */
    bool bf16;          /* CUDA: bf16 tensor-core matrix products (FP32 master/accumulate) */
    bool ste;           /* forward on the ternary projection of the linears */
    float tau;          /* STE threshold (absmean per output row), 0.5 */
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
typedef enum { BN_BK_PARAMS = 0, BN_BK_GRADS, BN_BK_ADAM_M, BN_BK_ADAM_V } bn_bk_buf;
int bn_backend_get(bn_backend *b, bn_bk_buf which, float *out, bn_err *err);
int bn_backend_set(bn_backend *b, bn_bk_buf which, const float *in, bn_err *err);
size_t bn_backend_n_params(const bn_backend *b);

#endif
