/* ops.cuh - launchers of the CUDA layer kernels (ops.cu, attention.cu), private to cuda/.
 * llm.c layout: one kernel per op, *_forward / *_backward pairs, shapes in comments.
 * N = B*T rows; every pointer is device memory; every launcher runs on stream s. */
#ifndef BN_CUDA_OPS_CUH
#define BN_CUDA_OPS_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

typedef __nv_bfloat16 bn_bf16;

/* out[N, D] = emb[tok[n], :] */
void bn_cu_embedding_forward(float *out, const int32_t *tok, const float *emb, int N, int D,
                             cudaStream_t s);
/* demb[tok[n], :] += dout[n, :] */
void bn_cu_embedding_backward(float *demb, const float *dout, const int32_t *tok, int N, int D,
                              cudaStream_t s);
/* out[N, D] = x * rstd * w, rstd[N] = 1 / sqrt(mean(x^2) + eps) */
void bn_cu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                           float eps, cudaStream_t s);
/* dx[N, D] += d/dx, dw[D] += d/dw of out = x * rstd * w */
void bn_cu_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x,
                            const float *w, const float *rstd, int N, int D, cudaStream_t s);
/* In place on x[B*T, nh*hd]: HF rotate_half with tables cos/sin [T, hd/2];
 * sign +1 forward, -1 backward (the transpose rotation). */
void bn_cu_rope(float *x, const float *cosb, const float *sinb, int B, int T, int nh, int hd,
                float sign, cudaStream_t s);
/* out[n] = silu(gate[n]) * up[n] */
void bn_cu_swiglu_forward(float *out, const float *gate, const float *up, size_t n, cudaStream_t s);
/* dgate, dup [n] (overwritten) from dout [n] */
void bn_cu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                           const float *up, size_t n, cudaStream_t s);
/* out[n] = a[n] + b[n] */
void bn_cu_add(float *out, const float *a, const float *b, size_t n, cudaStream_t s);
/* Per row of logits [N, V]: losses[n] = NLL of targets[n] (0 when the row does not count:
 * targets < 0 or mask[n] == 0); when grad, logits row <- (softmax - onehot) * inv_count
 * (zeros for rows that do not count). mask may be NULL. */
void bn_cu_crossentropy(float *logits, float *losses, const int32_t *targets, const uint8_t *mask,
                        int N, int V, float inv_count, int grad, cudaStream_t s);
/* acc[0] += sum x^2 over n (double accumulator) */
void bn_cu_sumsq(double *acc, const float *x, size_t n, cudaStream_t s);
/* AdamW with gradients scaled by gscale first: m, v, w [n] */
void bn_cu_adamw_update(float *w, const float *g, float *m, float *v, size_t n, float lr,
                        float b1, float b2, float bc1, float bc2, float eps, float decay,
                        float gscale, cudaStream_t s);
/* Ternary STE projection per row of w [rows, cols]: s = max(mean|w|, 1e-8);
 * out = sign(w) * s where |w| >= tau * s, else 0. */
void bn_cu_ternarize(float *out, const float *w, int rows, int cols, float tau, cudaStream_t s);

/* ---- bf16 storage (llama.cu's bf16 training path): activations and compute weights in
 * bf16, residual stream, statistics, gradients of the weights and accumulation in FP32 ---- */
/* out[n] = bf16(in[n]) (round to nearest even) */
void bn_cu_to_bf16(bn_bf16 *out, const float *in, size_t n, cudaStream_t s);
/* rstd[N] = 1 / sqrt(mean(x^2) + eps); xhat[N, D] = bf16(x * rstd); n = bf16(xhat * w) */
void bn_cu_rmsnorm_forward_bf16(bn_bf16 *n, bn_bf16 *xhat, float *rstd, const float *x,
                                const float *w, int N, int D, float eps, cudaStream_t s);
/* n[N, D] = bf16(xhat * w): the forward's n again, bit for bit */
void bn_cu_rmsnorm_apply_bf16(bn_bf16 *n, const bn_bf16 *xhat, const float *w, int N, int D,
                              cudaStream_t s);
/* dx[N, D] += d/dx of n = xhat * w (FP32) and dx_h = bf16(dx); dw[D] += sum dout * xhat */
void bn_cu_rmsnorm_backward_bf16(float *dx, bn_bf16 *dx_h, float *dw, const float *dout,
                                 const bn_bf16 *xhat, const float *w, const float *rstd, int N,
                                 int D, cudaStream_t s);
void bn_cu_rope_bf16(bn_bf16 *x, const float *cosb, const float *sinb, int B, int T, int nh, int hd,
                     float sign, cudaStream_t s);
void bn_cu_swiglu_forward_bf16(bn_bf16 *out, const bn_bf16 *gate, const bn_bf16 *up, size_t n,
                               cudaStream_t s);
void bn_cu_swiglu_backward_bf16(bn_bf16 *dgate, bn_bf16 *dup, const bn_bf16 *dout,
                                const bn_bf16 *gate, const bn_bf16 *up, size_t n, cudaStream_t s);
/* bn_cu_ternarize with bf16 output */
void bn_cu_ternarize_bf16(bn_bf16 *out, const float *w, int rows, int cols, float tau, cudaStream_t s);

/* ---- fine-tune trainer (llama.cu bn_cu_materialize / bn_cu_optim_step / distillation) ---- */
typedef struct bn_cu_taus { float v[8]; } bn_cu_taus;
/* Materialized ternary weights out [rows, cols] from masters w, the quantize stage's
 * quantizer (quant/quant.c): per row (or per tensor) s0 = max(mean |w|, 1e-8); with xsq
 * [cols] the tau of taus[n_taus] with the least xsq-weighted error and alpha =
 * sum xsq |w| q / sum xsq q^2 (s0 when either sum is 0), else taus[0] and s0; code =
 * sign(w) where |w| >= tau s0; out = alpha code (lam >= 1) or w + lam (alpha code - w). */
void bn_cu_quant_materialize(float *out, const float *w, const float *xsq, int rows, int cols,
                             int per_tensor, bn_cu_taus taus, int n_taus, float lam, cudaStream_t s);
/* g [n] *= k, then (on) the Grokfast EMA filter: ema = first ? g : ema;
 * ema = alpha ema + (1 - alpha) g; g += lambda ema */
void bn_cu_grokfast(float *g, float *ema, size_t n, float k, float alpha, float lambda, int on,
                    int first, cudaStream_t s);
/* Muon Nesterov: buf = mu buf + g; g = g + mu buf  [n] */
void bn_cu_muon_momentum(float *g, float *buf, size_t n, float mu, cudaStream_t s);
/* w = w decay - step u  [n] */
void bn_cu_muon_apply(float *w, const float *u, size_t n, float decay, float step, cudaStream_t s);
/* x [n] *= a */
void bn_cu_scale(float *x, size_t n, float a, cudaStream_t s);
/* b = c b + bb a  [n] (Newton-Schulz polynomial) */
void bn_cu_ns_poly(float *b, const float *a, size_t n, float c, float bb, cudaStream_t s);
/* Newton-Schulz on `count` matrices of n_each floats (per-matrix scalars on the device):
 * acc[2 i + k] += sum x_i^2 */
void bn_cu_sumsq_batched(double *acc, int k, const float *x, size_t n_each, int count, cudaStream_t s);
/* f[8 i ..] from acc[2 i ..]: stage 0 f0 = 1/fro, f4 = valid; stage 1 f1..3 = sc, sc^2, sc^4
 * (sc = 1 / ||A^4||_F^(1/8)), f5 = valid */
void bn_cu_ns_scalars(const double *acc, float *f, int count, int stage, cudaStream_t s);
/* out = in * f[8 i + k] per matrix i */
void bn_cu_scale_dev(float *out, const float *in, size_t n_each, int count, const float *f, int k,
                     cudaStream_t s);
/* x_i <- y_i, or x_i unchanged (f4 == 0), or x_i * f0 (f5 == 0) */
void bn_cu_ns_finish(float *x, const float *y, size_t n_each, int count, const float *f, cudaStream_t s);
/* Per row of logits [N, V]: kl[n] = KL(softmax(teacher) || softmax(student)); the teacher's
 * row becomes w * (softmax(student) - softmax(teacher)). */
void bn_cu_distill(float *teacher_logits, float *kl, const float *student_logits, int N, int V,
                   float w, cudaStream_t s);

/* Fused causal GQA attention. q [B*T, H*hd], k, v [B*T, KV*hd] (after RoPE);
 * out y [B*T, H*hd], lse [B, H, T] (log-sum-exp of each row's scaled scores). */
int bn_cu_attention_forward(float *y, float *lse, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KV, int hd, cudaStream_t s);
/* From dy [B*T, H*hd]: dq [B*T, H*hd], dk, dv [B*T, KV*hd] (overwritten); dsum [B, H, T]
 * scratch. Recomputes the probabilities from q, k and lse. */
int bn_cu_attention_backward(float *dq, float *dk, float *dv, float *dsum, const float *dy,
                             const float *y, const float *lse, const float *q, const float *k,
                             const float *v, int B, int T, int H, int KV, int hd, cudaStream_t s);

/* Tensor-core fused causal GQA attention, bf16 storage, FP32 softmax and accumulation;
 * hd in {16, 32, 64, 128} (else returns -1). Same layouts and meaning as the FP32 pair:
 * q, y, dy, dq [B*T, H*hd]; k, v, dk, dv [B*T, KV*hd]; lse, dsum [B, H, T] (FP32).
 * Query head h reads kv head h / (H / KV); scores scale 1/sqrt(hd); causal j <= i.
 * Pointers 16-byte aligned. Launch errors surface through cudaGetLastError. */
int bn_cu_attention_forward_bf16(bn_bf16 *y, float *lse, const bn_bf16 *q, const bn_bf16 *k,
                                 const bn_bf16 *v, int B, int T, int H, int KV, int hd, cudaStream_t s);
/* dq, dk, dv overwritten; dsum scratch (written first, read by the dk/dv kernel). */
int bn_cu_attention_backward_bf16(bn_bf16 *dq, bn_bf16 *dk, bn_bf16 *dv, float *dsum,
                                  const bn_bf16 *dy, const bn_bf16 *y, const float *lse,
                                  const bn_bf16 *q, const bn_bf16 *k, const bn_bf16 *v,
                                  int B, int T, int H, int KV, int hd, cudaStream_t s);

#endif
