/* tkernels.h - ternary x int8 matrix kernels (W1.58 A8): packing, GEMV, GEMM, timing.
 *
 * Weights: ternary codes t in {-1,0,+1} with one float scale per output row (the
 * quantizer's per-channel scale), packed 2 bits per weight as the unsigned code u = t+1.
 * Rows are padded with t = 0 to a multiple of BN_TK_BLOCK (256) weights; a row is a run
 * of bn_tk_block structs. Inside a block, byte m (0..63) holds in bits 2n..2n+1 (n = 0..3)
 * the weight n*64 + m. So one 64-byte load, shifted by 0/2/4/6 and masked with 3, gives
 * four vectors of 64 CONSECUTIVE weights (an AVX2 path uses two 32-byte halves the same
 * way), and the activations are read with plain contiguous loads.
 *
 * Activations: per token (row of X) absmax int8: scale = max|x| / 127, q = round(x/scale)
 * in [-127, 127], zero-padded to the packed row length, with the row sum S = sum(q) kept.
 *
 * Product: sum_k t_k q_k = sum_k u_k q_k - S, an exact int32 (|.| <= 2*127*K), then
 * y = dot * wscale[row] * xscale[token]. The scalar reference, the AVX2 path (maddubs:
 * u8 x s8 -> i16 pairs, madd -> i32) and the AVX-512 VNNI path (vpdpbusd: u8 x s8 -> i32)
 * produce the same int32 and the same float expression, so their outputs are bitwise
 * equal; the tests check that.
 *
 * Threads: bn_tk_gemm / bn_tk_gemv split the output rows over `threads` short-lived
 * threads (base/parallel.h, the caller included) and join them before returning.
 * Token-by-token decoding instead keeps a bn_tk_pool: helper threads that persist
 * across calls for as long as the pool's owner (one decoder) lives.
 */
#ifndef BN_TKERNELS_H
#define BN_TKERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "base/cpu.h"
#include "base/err.h"

#define BN_TK_BLOCK 256

/* 256 ternary weights: qs[m] bits 2n..2n+1 = u of weight n*64+m, u = t+1 in {0,1,2}. */
typedef struct bn_tk_block {
    uint8_t qs[BN_TK_BLOCK / 4];
} bn_tk_block;

/* A packed ternary matrix W [rows, cols] (out x in), row-major blocks. */
typedef struct bn_tk_matrix {
    int rows, cols;
    int nb;               /* blocks per row = ceil(cols / 256) */
    bn_tk_block *blocks;  /* [rows * nb], 64-byte aligned */
    float *scale;         /* [rows] */
    int borrowed;         /* blocks belong to the caller (bn_tk_matrix_pack_into) */
} bn_tk_matrix;

/* Quantized activations X [n, cols]: int8 rows padded to nb*256. */
/* Smallest max|x| a row is quantized against, as in the training path's fake quantizer
 * (model/llama.c): a row with max|x| = 1e-7 gets codes round(x * 127 / 1e-5), not +-127. */
#define BN_TK_ACT_FLOOR 1e-5f

typedef struct bn_tk_act {
    int n, cols, nb;
    int8_t *q;        /* [n * nb * 256], 64-byte aligned */
    float *scale;     /* [n] max(max|x|, BN_TK_ACT_FLOOR)/127; NaN for a row holding NaN or
                       * Inf (its codes are 0 and every output of that token is NaN) */
    int32_t *sum;     /* [n] sum of q over the row */
    int cap;          /* tokens allocated */
} bn_tk_act;

/* The best ISA these kernels can use on this CPU, and whether a given one is usable
 * (BN_ISA_AVX512 here needs AVX-512 VNNI: vpdpbusd). */
bn_isa bn_tk_isa_best(void);
int bn_tk_isa_supported(bn_isa isa);

/* Packs codes [rows*cols] (each -1, 0 or +1) and scale [rows]. Fails with BN_EINVAL
 * naming `label` on a code outside {-1,0,1}. */
int bn_tk_matrix_pack(bn_tk_matrix *w, const int8_t *codes, const float *scale, int rows,
                      int cols, const char *label, bn_err *err);
/* The same into caller-owned storage of bn_tk_matrix_blocks(rows, cols) blocks, 64-byte
 * aligned (a model packs all its matrices into one buffer on huge pages); freeing w
 * leaves the storage alone. */
size_t bn_tk_matrix_blocks(int rows, int cols);
int bn_tk_matrix_pack_into(bn_tk_matrix *w, bn_tk_block *storage, const int8_t *codes, const float *scale, int rows,
                           int cols, const char *label, bn_err *err);
void bn_tk_matrix_free(bn_tk_matrix *w);
/* The ternary code of W[r, c] (-1, 0, +1). */
int bn_tk_matrix_code(const bn_tk_matrix *w, int r, int c);

int bn_tk_act_init(bn_tk_act *a, int cap, int cols);
void bn_tk_act_free(bn_tk_act *a);
/* Quantizes x [n, cols] (n <= cap) into a: per row, q = round_even(x * 127 / m) with
 * m = max(max|x|, BN_TK_ACT_FLOOR). A non-finite input makes the row's outputs NaN
 * (never a code: casting NaN to int8 is undefined). */
void bn_tk_act_quantize(bn_tk_act *a, const float *x, int n);
/* The same with a given ISA (the AVX-512 path gives the scalar reference's codes, scales
 * and sums bit for bit; tests). */
void bn_tk_act_quantize_isa(bn_tk_act *a, const float *x, int n, bn_isa isa);

/* y [n, rows] = X W^T: y[t*rows + r] = dot(x_t, w_r) * wscale[r] * xscale[t].
 * gemv is gemm with n = 1. threads <= 0 means 1. */
void bn_tk_gemm(const bn_tk_matrix *w, const bn_tk_act *x, float *y, int threads, bn_isa isa);
void bn_tk_gemv(const bn_tk_matrix *w, const bn_tk_act *x, float *y, int threads, bn_isa isa);

/* Helper threads kept for a run of short products (token-by-token decoding): one GEMV
 * takes 100-300 µs, less than starting and joining a thread costs in a VM, so a decoder
 * keeps threads - 1 helpers for its lifetime. Between products a helper spins for a few
 * tens of microseconds, then sleeps on a condition variable. Jobs are claimed, so a
 * helper that is not running costs the caller nothing but its share; one preempted while
 * holding a job stalls the round, and then the next products run on the caller alone for
 * a while (a core taken by another process: one thread instead of stalls). Owned by its
 * creator, used by one caller thread at a time; results are identical to bn_tk_gemm's. */
typedef struct bn_tk_pool bn_tk_pool;
/* threads counts the caller; with threads <= 1 (or if no helper can start) the pool runs
 * everything on the caller's thread. BN_ENOMEM on allocation failure. */
int bn_tk_pool_new(int threads, bn_tk_pool **out);
void bn_tk_pool_free(bn_tk_pool *p);
int bn_tk_pool_threads(const bn_tk_pool *p);
void bn_tk_gemm_pool(const bn_tk_matrix *w, const bn_tk_act *x, float *y, bn_tk_pool *pool, bn_isa isa);

/* A caller-defined row-parallel product run on the pool: fn(arg, r0, r1) for disjoint row
 * ranges covering [0, rows), each a multiple of 16 rows but the last. */
typedef void (*bn_tk_rows_fn)(void *arg, int r0, int r1);
void bn_tk_pool_rows(bn_tk_pool *pool, int rows, bn_tk_rows_fn fn, void *arg);

/* F16 matrix x FP32 vector, rows [r0, r1): y[r] = sum_k f32(w[r*cols + k]) * x[k]
 * (w row-major [rows, cols] IEEE half). For an LM head: half the bytes of FP32 per token.
 * The scalar reference accumulates in double; the AVX2 (F16C+FMA) and AVX-512 paths in
 * FP32 lanes, so they agree with it to float rounding (|err| <~ 1e-6 * sum|w*x|). */
void bn_tk_f16_gemv_rows(const uint16_t *w, int cols, const float *x, float *y, int r0, int r1, bn_isa isa);

/* ---- int8 weights x int16 activations (LM head) ------------------------------------ */

/* 32 weights of one row: w = d * qs[i], d = max|w| / 127, qs in [-127, 127] (ggml's Q8_0
 * with an FP32 scale: 36 bytes per 32 weights against F16's 64; the FP32 scale is read
 * by a broadcast load, where an F16 one would cost conversions in the inner loop). */
#define BN_TK_Q8_BLOCK 32
typedef struct bn_tk_q8_block {
    float d;
    int8_t qs[BN_TK_Q8_BLOCK];
} bn_tk_q8_block;
_Static_assert(sizeof(bn_tk_q8_block) == 4 + BN_TK_Q8_BLOCK, "bn_tk_q8_block: no padding");

/* W [rows, cols] as rows of nb = ceil(cols / 32) blocks (the last block of a row
 * zero-padded). */
typedef struct bn_tk_q8_matrix {
    int rows, cols, nb;
    bn_tk_q8_block *blocks; /* [rows * nb] */
} bn_tk_q8_matrix;

/* One FP32 vector x [cols] as int16: q = round_even(x * 32767 / m), m = max|x| (scale =
 * m / 32767; an all-zero x gets scale 0), zero-padded to a multiple of 32. The head's
 * input keeps ~15 bits, far below the weights' 8-bit rounding. A non-finite x gives
 * scale NaN and codes 0 (every output NaN). */
typedef struct bn_tk_act16 {
    int cols;
    int16_t *q;   /* [ceil(cols / 32) * 32], 64-byte aligned */
    float scale;
} bn_tk_act16;

int bn_tk_act16_init(bn_tk_act16 *a, int cols); /* BN_EINVAL, BN_ENOMEM */
void bn_tk_act16_free(bn_tk_act16 *a);
void bn_tk_act16_quantize(bn_tk_act16 *a, const float *x);

/* Quantizes w [rows, cols] (FP32, row-major). BN_EINVAL naming `label` on a bad shape or
 * a non-finite weight, BN_ENOMEM. */
int bn_tk_q8_pack(bn_tk_q8_matrix *q, const float *w, int rows, int cols, const char *label, bn_err *err);
void bn_tk_q8_free(bn_tk_q8_matrix *q);
/* y[r] = x.scale * sum_b d_b * (sum_i qs_b[i] * x.q[32b + i]) for rows [r0, r1) (x.cols
 * == q->cols). The scalar reference sums each block exactly in int32; the AVX2 and
 * AVX-512 paths (madd: pairs of int16 products, exact in int32 and in float) sum the
 * lanes in float, so they agree with it to float rounding. */
void bn_tk_q8_gemv_rows(const bn_tk_q8_matrix *q, const bn_tk_act16 *x, float *y, int r0, int r1, bn_isa isa);

/* Convenience: quantize x [n, cols] into scratch a (grown as needed), then gemm. */
int bn_tk_linear(const bn_tk_matrix *w, bn_tk_act *a, const float *x, int n, float *y,
                 int threads);

/* ---- measured speedup (DESIGN: numbers are measured, never estimated) ------------- */

/* One linear-layer shape of a model: rows = out_features, cols = in_features; count =
 * how many such matrices one forward pass uses (e.g. n_layers for wq). */
typedef struct bn_tk_shape {
    int rows, cols, count;
} bn_tk_shape;

/* The FP32 products of a measurement must take at least this long on average (per
 * product, at the faster thread count) for a ratio to mean anything: below it the time
 * is call and thread start-up overhead, not arithmetic (a 64x172 sgemv takes ~2 us). */
#define BN_TK_MIN_PRODUCT_S 20e-6

/* One mode's measurement (one token or a batch), per forward pass (every shape times its
 * count). Each side is timed at 1 thread and at `threads` threads and keeps the faster
 * (the FP32 baseline at its best); each timing repeats until stable (the best of the
 * runs so far improved by < 2% over the last two runs; at least 3, at most 12 runs). */
typedef struct bn_tk_speed {
    double ternary_s, blas_s;        /* seconds per forward pass, each at its best */
    int ternary_threads, blas_threads; /* the thread counts that gave them */
    double blas_product_s;           /* blas_s / products: mean FP32 product time */
    int timed;                       /* 1: blas_product_s >= BN_TK_MIN_PRODUCT_S */
    double speedup;                  /* blas_s / ternary_s when timed, else 0 */
} bn_tk_speed;

/* Times the given shapes with the ternary kernel (activation quantization included)
 * against FP32 OpenBLAS: sgemv for one token (*gemv), sgemm for `batch` tokens (*gemm),
 * on random data of those shapes. Takes roughly budget_ms in total (0 = 1500). */
int bn_tk_measure_speedup(const bn_tk_shape *shapes, int n_shapes, int batch, int threads,
                          double budget_ms, bn_tk_speed *gemv, bn_tk_speed *gemm, bn_err *err);

/* The linear-layer shapes of a Llama-family model (q, k+v, o, gate+up, down with their
 * per-forward counts) into shapes[5]; returns how many were filled. */
struct bn_model_config;
int bn_tk_model_shapes(const struct bn_model_config *cfg, bn_tk_shape shapes[5]);

#endif
