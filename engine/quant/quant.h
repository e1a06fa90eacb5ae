/* quant.h - the BitNet b1.58 absmean ternary quantizer.
 *
 * For a weight matrix W [rows, cols] (a 1-D tensor is one row):
 *   scale  s_r = max(mean_j |W_rj|, 1e-8)   per output row (per channel, default), or one
 *          s over the whole tensor (per tensor);
 *   code   q_rj = sign(W_rj) if |W_rj| >= tau * s_r, else 0   (tau = 0.5 is the paper's
 *          RoundClip(W / s, -1, 1));
 *   dequantized value  s_r * q_rj.
 * NaN or Inf weights are rejected with the tensor name. The result is the same bytes at
 * any thread count and on every code path (scalar reference, AVX2, AVX-512): sums run in
 * a fixed 16-lane order (lane = column mod 16, lanes folded by halves) that the SIMD
 * paths reproduce exactly; rows are split among threads but reduced in row order.
 *
 * Calibration-aware refinement (bn_quant_refine): given xsq[cols] = E[x_j^2] of the
 * layer's input, each row (or the tensor) picks, from a grid of tau values, the codes
 * and the scale alpha = sum_j xsq_j w_j q_j / sum_j xsq_j q_j^2 that minimise the
 * output-weighted error sum_j xsq_j (w_j - alpha q_j)^2.
 */
#ifndef BN_QUANT_H
#define BN_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/cpu.h"
#include "base/err.h"
#include "base/tensor.h"

#define BN_QUANT_SCALE_FLOOR 1e-8f


typedef struct bn_quant_params {
    float tau;        /* threshold as a fraction of the scale; default 0.5 */
    bool per_tensor;  /* one scale for the tensor instead of one per row */
    int threads;      /* 0 = all online cores */
    bn_isa isa;       /* BN_ISA_AUTO picks the best the CPU has (tests force the others) */
} bn_quant_params;

typedef struct bn_quant_stats {
    uint64_t params;     /* weights */
    uint64_t zeros;      /* codes equal to 0 */
    double zero_fraction;
    double scale_min, scale_mean, scale_max;
    double sq_err;       /* sum (w - s q)^2 */
    double sq_w;         /* sum w^2 */
    double mse;          /* sq_err / params */
    double rel_err;      /* sqrt(sq_err / sq_w), 0 when W is all zero */
} bn_quant_stats;

void bn_quant_params_default(bn_quant_params *p);
/* true when the CPU (and this build) can run isa */
bool bn_quant_isa_available(bn_isa isa);

/* Quantizes src (F32, F16 or BF16, row-major [rows, cols]) into codes[rows*cols] and
 * scales[rows] (per channel) or scales[1] (per tensor). st may be NULL. */
int bn_quant_tensor(const char *name, const void *src, bn_dtype dtype, int64_t rows, int64_t cols,
                    const bn_quant_params *p, int8_t *codes, float *scales, bn_quant_stats *st, bn_err *err);

/* Calibration-aware version: xsq[cols] >= 0; taus[n_taus] the threshold grid (NULL or
 * n_taus == 0: just p->tau). chosen_tau (may be NULL) receives, per row (or [0] for
 * per-tensor), the tau picked. Stats report the unweighted error of the result. */
int bn_quant_refine(const char *name, const void *src, bn_dtype dtype, int64_t rows, int64_t cols,
                    const float *xsq, const float *taus, int n_taus, const bn_quant_params *p,
                    int8_t *codes, float *scales, float *chosen_tau, bn_quant_stats *st, bn_err *err);

/* The refinement grid: tau itself first (always, whatever its value), then those of its
 * neighbours tau +- 0.1, +- 0.2 that lie in [0.05, 1.5]; tau = 0 (dense codes) alone. */
int bn_quant_tau_grid(float tau, float *out, int cap);

/* Adds b into a (params, zeros, error sums; scale min/max; scale_mean weighted by
 * number of scales given in na, nb). Recomputes the derived fields. */
void bn_quant_stats_merge(bn_quant_stats *a, int64_t na, const bn_quant_stats *b, int64_t nb);

/* Dequantizes one row: dst[j] = f16(scale * code[j]). */
void bn_quant_dequant_row_f16(const int8_t *codes, float scale, int64_t cols, uint16_t *dst);
/* The same on a chosen code path (tests check that the paths agree). */
void bn_quant_dequant_row_f16_isa(const int8_t *codes, float scale, int64_t cols, uint16_t *dst, bn_isa isa);

/* tau for "auto" from the parameter count (size table in quant.c and README). */
float bn_quant_auto_tau(uint64_t n_params, const char **category);

#endif
