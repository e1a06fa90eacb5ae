/* test_tkernels.c - ternary kernels: packing round trip, SIMD == scalar bit for bit,
 * agreement with a float reference, thread splits, activation quantization. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_test.h"
#include "formats/hf.h"
#include "base/tensor.h"
#include "quant/tkernels.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static float unit(void) { return (float)((next() >> 40) * (1.0 / 8388608.0)) - 1.0f; }

typedef struct fixture {
    int rows, cols, n;
    int8_t *codes;
    float *scale, *x;
    bn_tk_matrix w;
    bn_tk_act a;
} fixture;

static void make(fixture *f, int rows, int cols, int n)
{
    f->rows = rows, f->cols = cols, f->n = n;
    f->codes = malloc((size_t)rows * cols);
    f->scale = malloc(sizeof(float) * rows);
    f->x = malloc(sizeof(float) * n * cols);
    for (int i = 0; i < rows * cols; i++) f->codes[i] = (int8_t)(next() % 3) - 1;
    for (int r = 0; r < rows; r++) f->scale[r] = 0.001f + 0.1f * fabsf(unit());
    for (int i = 0; i < n * cols; i++) f->x[i] = unit() * (1 + (i % 7));
    if (n > 1) /* an all-zero token exercises the zero scale */
        for (int k = 0; k < cols; k++) f->x[(size_t)(n - 1) * cols + k] = 0;
    bn_err err;
    ck_assert_int_eq(bn_tk_matrix_pack(&f->w, f->codes, f->scale, rows, cols, "t", &err), 0);
    ck_assert_int_eq(bn_tk_act_init(&f->a, n, cols), 0);
    bn_tk_act_quantize(&f->a, f->x, n);
}

static void drop(fixture *f)
{
    bn_tk_matrix_free(&f->w);
    bn_tk_act_free(&f->a);
    free(f->codes), free(f->scale), free(f->x);
}

START_TEST(pack_roundtrip)
{
    fixture f;
    make(&f, 7, 300, 1);
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            ck_assert_int_eq(bn_tk_matrix_code(&f.w, r, c), f.codes[r * f.cols + c]);
    drop(&f);
    int8_t bad[4] = {0, 1, 2, -1};
    float s = 1;
    bn_tk_matrix w;
    bn_err err;
    ck_assert_int_eq(bn_tk_matrix_pack(&w, bad, &s, 1, 4, "blk.0.attn_q", &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.0.attn_q"));
}
END_TEST

START_TEST(act_quantize)
{
    float x[5] = {0.5f, -2.0f, 1.0f, 0.0f, 0.01f};
    bn_tk_act a;
    ck_assert_int_eq(bn_tk_act_init(&a, 1, 5), 0);
    bn_tk_act_quantize(&a, x, 1);
    ck_assert_float_eq(a.scale[0], 2.0f / 127.0f);
    ck_assert_int_eq(a.q[1], -127);
    ck_assert_int_eq(a.q[0], 32); /* 31.75 rounds to 32 */
    ck_assert_int_eq(a.q[2], 64); /* 63.5 */
    int32_t s = 0;
    for (int k = 0; k < 256; k++) s += a.q[k];
    ck_assert_int_eq(a.sum[0], s);
    for (int k = 5; k < 256; k++) ck_assert_int_eq(a.q[k], 0);
    bn_tk_act_free(&a);
}
END_TEST

/* Ties round to even, not away from zero: with max|x| = 127 the scale is exactly 1, so
 * 62.5 -> 62 (away from zero gives 63), -62.5 -> -62, 63.5 -> 64, 0.5 -> 0, 1.5 -> 2. */
START_TEST(act_quantize_ties_to_even)
{
    float x[6] = {62.5f, -62.5f, 63.5f, 0.5f, 1.5f, 127.0f};
    const int8_t want[6] = {62, -62, 64, 0, 2, 127};
    bn_tk_act a;
    ck_assert_int_eq(bn_tk_act_init(&a, 1, 6), 0);
    bn_tk_act_quantize(&a, x, 1);
    ck_assert_float_eq(a.scale[0], 1.0f);
    for (int k = 0; k < 6; k++) ck_assert_msg(a.q[k] == want[k], "x=%g: %d, want %d", x[k], a.q[k], want[k]);
    bn_tk_act_free(&a);
}
END_TEST

/* A row holding NaN or Inf gives NaN outputs for that token (never codes from a NaN
 * cast); the other tokens are exact as before. */
START_TEST(act_quantize_non_finite_rows)
{
    enum { R = 9, C = 300, N = 4 };
    fixture f;
    make(&f, R, C, N);
    float *x = malloc(sizeof(float) * N * C), *y = malloc(sizeof(float) * N * R);
    float *ref = malloc(sizeof(float) * N * R);
    memcpy(x, f.x, sizeof(float) * N * C);
    bn_tk_gemm(&f.w, &f.a, ref, 1, BN_ISA_SCALAR);
    x[1 * C + 7] = NAN;
    x[2 * C + C - 1] = -INFINITY;
    bn_tk_act_quantize(&f.a, x, N);
    for (int t = 1; t <= 2; t++) {
        ck_assert(isnan(f.a.scale[t]));
        ck_assert_int_eq(f.a.sum[t], 0);
        for (int k = 0; k < f.a.nb * BN_TK_BLOCK; k++) ck_assert_int_eq(f.a.q[(size_t)t * f.a.nb * BN_TK_BLOCK + k], 0);
    }
    const bn_isa isas[] = {BN_ISA_SCALAR, BN_ISA_AVX2, BN_ISA_AVX512};
    for (int i = 0; i < 3; i++) {
        if (!bn_tk_isa_supported(isas[i])) continue;
        bn_tk_gemm(&f.w, &f.a, y, 2, isas[i]);
        for (int t = 0; t < N; t++)
            for (int r = 0; r < R; r++) {
                float v = y[t * R + r];
                if (t == 1 || t == 2) ck_assert_msg(isnan(v), "isa %d t %d r %d: %g, want NaN", i, t, r, v);
                else ck_assert_float_eq(v, ref[t * R + r]);
            }
    }
    free(x), free(y), free(ref);
    drop(&f);
}
END_TEST

/* The AVX-512 activation quantizer gives the scalar reference's codes, scales and sums
 * bit for bit: rows of every tail length, ties (x = k + 0.5 with scale 1), a row below
 * the floor, a NaN row and an Inf row. */
START_TEST(act_quantize_simd_equals_scalar)
{
    if (!bn_tk_isa_supported(BN_ISA_AVX512)) return;
    static const int cols[] = {1, 15, 16, 17, 31, 300, 2048, 5632};
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) {
        enum { N = 5 };
        int C = cols[c];
        float *x = malloc(sizeof(float) * N * C);
        for (int k = 0; k < N * C; k++) x[k] = unit() * (float)(1 + k % 11);
        for (int k = 0; k < C; k++) x[k] = (float)(k % 254 - 127) + (k % 3 ? 0.5f : 0.0f); /* ties */
        x[0] = 127.0f;                                      /* max|x| = 127: scale 1 */
        for (int k = 0; k < C; k++) x[C + k] *= 1e-7f;      /* below the floor */
        x[2 * C + C / 2] = NAN;
        x[3 * C + C - 1] = INFINITY;
        bn_tk_act a, b;
        ck_assert_int_eq(bn_tk_act_init(&a, N, C), 0);
        ck_assert_int_eq(bn_tk_act_init(&b, N, C), 0);
        memset(b.q, 0x5a, (size_t)N * b.nb * BN_TK_BLOCK); /* padding must be written too */
        bn_tk_act_quantize_isa(&a, x, N, BN_ISA_SCALAR);
        bn_tk_act_quantize_isa(&b, x, N, BN_ISA_AVX512);
        ck_assert_int_eq(memcmp(a.q, b.q, (size_t)N * a.nb * BN_TK_BLOCK), 0);
        ck_assert_int_eq(memcmp(a.scale, b.scale, sizeof(float) * N), 0);
        ck_assert_int_eq(memcmp(a.sum, b.sum, sizeof(int32_t) * N), 0);
        ck_assert(isnan(b.scale[2]) && isnan(b.scale[3]));
        bn_tk_act_free(&a), bn_tk_act_free(&b);
        free(x);
    }
}
END_TEST

/* Rows with max|x| below 1e-5 are quantized as the training path does (model/llama.c,
 * actquant_forward: the max is floored at 1e-5): dequantized values equal
 * nearbyint(x * 127 / 1e-5) * 1e-5 / 127, not a full-resolution int8 copy of the row. */
START_TEST(act_quantize_tiny_rows_match_training)
{
    enum { C = 40 };
    float x[2 * C];
    for (int k = 0; k < C; k++) {
        x[k] = 3e-6f * sinf(0.7f * k);        /* max|x| ~3e-6 < 1e-5 */
        x[C + k] = 1e-12f * (float)(k - 20);  /* far below */
    }
    bn_tk_act a;
    ck_assert_int_eq(bn_tk_act_init(&a, 2, C), 0);
    bn_tk_act_quantize(&a, x, 2);
    size_t qs = (size_t)a.nb * BN_TK_BLOCK;
    int coarse = 0;
    for (int t = 0; t < 2; t++) {
        ck_assert_float_eq(a.scale[t], 1e-5f / 127.0f);
        for (int k = 0; k < C; k++) {
            float m = 1e-5f, xv = x[t * C + k];
            float want = nearbyintf(xv * (127.0f / m)) * (m / 127.0f);
            float got = (float)a.q[t * qs + k] * a.scale[t];
            ck_assert_msg(fabsf(got - want) <= 1e-6f * m, "t %d k %d: %g vs training %g", t, k, got, want);
            coarse += abs(a.q[t * qs + k]) < 127;
        }
    }
    ck_assert_int_eq(coarse, 2 * C); /* no row was stretched to +-127 */
    bn_tk_act_free(&a);
}
END_TEST

/* Every supported ISA equals the scalar reference exactly, for shapes with tails. */
START_TEST(simd_equals_scalar)
{
    static const int shapes[][3] = {{1, 1, 1},    {3, 17, 1},   {5, 255, 2},  {8, 256, 4},
                                    {9, 257, 5},  {13, 511, 7}, {64, 768, 1}, {66, 1000, 9},
                                    {4, 2048, 3}, {37, 129, 16}, {130, 300, 6},
                                    /* big enough to be split over threads (>= 4M products each) */
                                    {1002, 2048, 5}, {2054, 4097, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        fixture f;
        make(&f, shapes[s][0], shapes[s][1], shapes[s][2]);
        size_t ny = (size_t)f.rows * f.n;
        float *ref = malloc(ny * sizeof(float)), *got = malloc(ny * sizeof(float));
        bn_tk_gemm(&f.w, &f.a, ref, 1, BN_ISA_SCALAR);
        bn_isa isas[] = {BN_ISA_AVX2, BN_ISA_AVX512};
        for (int i = 0; i < 2; i++) {
            if (!bn_tk_isa_supported(isas[i])) continue;
            for (int th = 1; th <= 3; th += 2) {
                memset(got, 0xff, ny * sizeof(float));
                bn_tk_gemm(&f.w, &f.a, got, th, isas[i]);
                for (size_t k = 0; k < ny; k++)
                    ck_assert_msg(memcmp(&ref[k], &got[k], sizeof(float)) == 0,
                                  "%s shape %dx%d n=%d threads %d: y[%zu] %.9g != %.9g",
                                  bn_isa_name(isas[i]), f.rows, f.cols, f.n, th, k, got[k], ref[k]);
            }
            /* gemv = first token of gemm */
            bn_tk_gemv(&f.w, &f.a, got, 2, isas[i]);
            ck_assert_int_eq(memcmp(got, ref, f.rows * sizeof(float)), 0);
        }
        free(ref), free(got);
        drop(&f);
    }
}
END_TEST

/* The pool gives the same bytes as the scalar reference, over many rounds in a row (the
 * helpers must see every round exactly once), with shapes that split and shapes too
 * small to share, and a pool of one thread runs alone. */
START_TEST(pool_equals_scalar)
{
    enum { NS = 3, ROUNDS = 40 };
    static const int shapes[NS][3] = {{1002, 2048, 2}, {9, 257, 1}, {2048, 2048, 1}};
    fixture f[NS];
    float *ref[NS], *got[NS];
    for (int s = 0; s < NS; s++) {
        make(&f[s], shapes[s][0], shapes[s][1], shapes[s][2]);
        size_t ny = (size_t)f[s].rows * f[s].n;
        ref[s] = malloc(ny * sizeof(float));
        got[s] = malloc(ny * sizeof(float));
        bn_tk_gemm(&f[s].w, &f[s].a, ref[s], 1, BN_ISA_SCALAR);
    }
    bn_tk_pool *pool, *single;
    ck_assert_int_eq(bn_tk_pool_new(3, &pool), 0);
    ck_assert_int_eq(bn_tk_pool_threads(pool), 3);
    ck_assert_int_eq(bn_tk_pool_new(1, &single), 0);
    ck_assert_int_eq(bn_tk_pool_threads(single), 1);
    for (int round = 0; round < ROUNDS; round++) {
        for (int s = 0; s < NS; s++) {
            size_t ny = (size_t)f[s].rows * f[s].n;
            for (int i = 0; i < 2; i++) {
                memset(got[s], 0xff, ny * sizeof(float));
                bn_tk_gemm_pool(&f[s].w, &f[s].a, got[s], i ? single : pool, BN_ISA_AUTO);
                ck_assert_msg(memcmp(got[s], ref[s], ny * sizeof(float)) == 0, "round %d shape %dx%d n=%d pool of %d",
                              round, f[s].rows, f[s].cols, f[s].n, i ? 1 : 3);
            }
        }
        if (round == ROUNDS / 2) usleep(20000); /* let the helpers fall asleep: waking must work too */
    }
    bn_tk_pool_free(pool);
    bn_tk_pool_free(single);
    bn_tk_pool_free(NULL);
    for (int s = 0; s < NS; s++) {
        free(ref[s]), free(got[s]);
        drop(&f[s]);
    }
}
END_TEST

/* F16 GEMV: every ISA path equals the double-accumulating scalar reference to float
 * rounding, on odd shapes (row tails, an odd last row); the pool's row split covers every
 * row exactly once (rows it skipped would keep the NaN fill). */
static void f16_rows_job(void *arg, int r0, int r1)
{
    void **a = arg;
    bn_tk_f16_gemv_rows(a[0], *(int *)a[1], a[2], a[3], r0, r1, BN_ISA_AUTO);
}

START_TEST(f16_gemv_agrees)
{
    static const int shapes[][2] = {{1, 16}, {7, 33}, {1001, 2048}, {64, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        uint16_t *w = malloc(sizeof(uint16_t) * (size_t)rows * cols);
        float *x = malloc(sizeof(float) * cols), *ref = malloc(sizeof(float) * rows), *got = malloc(sizeof(float) * rows);
        double *mag = calloc((size_t)rows, sizeof(double));
        for (int i = 0; i < cols; i++) x[i] = unit() * 3;
        for (size_t i = 0; i < (size_t)rows * cols; i++) w[i] = bn_f32_to_f16(unit() * 0.1f);
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) mag[r] += fabs(bn_f16_to_f32(w[(size_t)r * cols + k]) * x[k]);
        bn_tk_f16_gemv_rows(w, cols, x, ref, 0, rows, BN_ISA_SCALAR);
        for (int r = 0; r < rows; r++) {
            double d = 0;
            for (int k = 0; k < cols; k++) d += (double)bn_f16_to_f32(w[(size_t)r * cols + k]) * x[k];
            ck_assert_float_eq_tol(ref[r], d, 1e-6 * mag[r] + 1e-30);
        }
        bn_isa isas[] = {BN_ISA_AVX2, BN_ISA_AVX512};
        for (int i = 0; i < 2; i++) {
            if (!bn_tk_isa_supported(isas[i])) continue;
            memset(got, 0xff, sizeof(float) * rows);
            bn_tk_f16_gemv_rows(w, cols, x, got, 0, rows, isas[i]);
            for (int r = 0; r < rows; r++)
                ck_assert_msg(fabs(got[r] - ref[r]) <= 1e-5 * mag[r] + 1e-30, "%s row %d: %g vs %g",
                              bn_isa_name(isas[i]), r, got[r], ref[r]);
        }
        bn_tk_pool *pool;
        ck_assert_int_eq(bn_tk_pool_new(2, &pool), 0);
        memset(got, 0xff, sizeof(float) * rows);
        void *args[] = {w, &cols, x, got};
        bn_tk_pool_rows(pool, rows, f16_rows_job, args);
        bn_tk_pool_free(pool);
        for (int r = 0; r < rows; r++) ck_assert_msg(fabs(got[r] - ref[r]) <= 1e-5 * mag[r] + 1e-30, "pool row %d", r);
        free(w), free(x), free(ref), free(got), free(mag);
    }
}
END_TEST


/* Q8 (int8 blocks of 32) LM head x int16 activations: each SIMD path agrees with the
 * scalar reference to float rounding; the scalar reference is the dequantized product;
 * and the result stays within the rounding of weights (d/2 each) and activations of the
 * exact FP32 product and of the F16 head it replaces. */
START_TEST(q8_gemv_agrees)
{
    static const int shapes[][2] = {{1, 16}, {7, 33}, {1001, 2048}, {64, 5}, {3, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        float *w = malloc(sizeof(float) * (size_t)rows * cols), *x = malloc(sizeof(float) * cols);
        float *ref = malloc(sizeof(float) * rows), *got = malloc(sizeof(float) * rows), *h = malloc(sizeof(float) * rows);
        uint16_t *w16 = malloc(sizeof(uint16_t) * (size_t)rows * cols);
        for (int i = 0; i < cols; i++) x[i] = unit() * 3;
        for (size_t i = 0; i < (size_t)rows * cols; i++) { /* magnitudes vary per block; one block all zero */
            size_t blk = i / 32;
            w[i] = blk == 1 ? 0.0f : unit() * 0.1f * (float)(1 + blk % 5);
            w16[i] = bn_f32_to_f16(w[i]);
        }
        bn_tk_q8_matrix q;
        bn_tk_act16 a;
        bn_err err;
        ck_assert_int_eq(bn_tk_q8_pack(&q, w, rows, cols, "head", &err), 0);
        ck_assert_int_eq(q.nb, (cols + 31) / 32);
        ck_assert_int_eq(bn_tk_act16_init(&a, cols), 0);
        bn_tk_act16_quantize(&a, x);
        float xmax = 0;
        for (int k = 0; k < cols; k++) {
            xmax = fmaxf(xmax, fabsf(x[k]));
            ck_assert(fabsf(a.q[k] * a.scale - x[k]) <= 0.5001f * a.scale); /* round to nearest */
        }
        ck_assert_float_eq_tol(a.scale, xmax / 32767, 1e-6f * xmax);
        bn_tk_q8_gemv_rows(&q, &a, ref, 0, rows, BN_ISA_SCALAR);
        bn_tk_f16_gemv_rows(w16, cols, x, h, 0, rows, BN_ISA_SCALAR);
        for (int r = 0; r < rows; r++) {
            double deq = 0, exact = 0, mag = 0, bound = 0;
            for (int k = 0; k < cols; k++) {
                const bn_tk_q8_block *b = &q.blocks[(size_t)r * q.nb + k / 32];
                double wq = (double)b->d * b->qs[k % 32];
                deq += wq * a.q[k] * a.scale;
                exact += (double)w[(size_t)r * cols + k] * x[k];
                mag += fabs(wq * x[k]);
                bound += fabs(x[k]) * 0.5 * b->d + fabs(wq) * 0.5 * a.scale;
            }
            ck_assert_msg(fabs(ref[r] - deq) <= 1e-6 * mag + 1e-30, "scalar row %d: %g vs %g", r, ref[r], deq);
            ck_assert_msg(fabs(ref[r] - exact) <= bound * 1.001 + 1e-6 * mag + 1e-30, "row %d: q8 %g vs exact %g", r,
                          ref[r], exact);
            ck_assert_msg(fabs(ref[r] - h[r]) <= bound * 1.001 + 1e-3 * mag + 1e-30, "row %d: q8 %g vs f16 %g", r, ref[r],
                          h[r]);
        }
        bn_isa isas[] = {BN_ISA_AVX2, BN_ISA_AVX512};
        for (int i = 0; i < 2; i++) {
            if (!bn_tk_isa_supported(isas[i])) continue;
            memset(got, 0xff, sizeof(float) * rows);
            bn_tk_q8_gemv_rows(&q, &a, got, 0, rows, isas[i]);
            for (int r = 0; r < rows; r++) {
                double mag = 0;
                for (int k = 0; k < cols; k++) {
                    const bn_tk_q8_block *b = &q.blocks[(size_t)r * q.nb + k / 32];
                    mag += fabs((double)b->d * b->qs[k % 32] * a.q[k] * a.scale);
                }
                ck_assert_msg(fabs(got[r] - ref[r]) <= 1e-6 * mag + 1e-30, "%s row %d: %g vs %g", bn_isa_name(isas[i]), r,
                              got[r], ref[r]);
            }
        }
        /* a non-finite input makes every output NaN; an all-zero one, zeros */
        x[cols / 2] = INFINITY;
        bn_tk_act16_quantize(&a, x);
        bn_tk_q8_gemv_rows(&q, &a, got, 0, rows, BN_ISA_AUTO);
        for (int r = 0; r < rows; r++) ck_assert(isnan(got[r]));
        memset(x, 0, sizeof(float) * cols);
        bn_tk_act16_quantize(&a, x);
        bn_tk_q8_gemv_rows(&q, &a, got, 0, rows, BN_ISA_AUTO);
        for (int r = 0; r < rows; r++) ck_assert_float_eq(got[r], 0.0f);
        bn_tk_q8_free(&q);
        bn_tk_act16_free(&a);
        free(w), free(x), free(ref), free(got), free(h), free(w16);
    }
    /* a non-finite weight is refused with its place */
    float bad[40] = {0};
    bad[37] = NAN;
    bn_tk_q8_matrix q;
    bn_err err;
    ck_assert_int_eq(bn_tk_q8_pack(&q, bad, 1, 40, "lm_head.weight", &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "[0, 37]"));
    ck_assert_ptr_null(q.blocks);
}
END_TEST

/* The kernel equals dequant(W) . dequant(x) computed in double, to float rounding. */
START_TEST(matches_float_reference)
{
    fixture f;
    make(&f, 45, 700, 6);
    float *y = malloc(sizeof(float) * f.rows * f.n);
    bn_tk_gemm(&f.w, &f.a, y, 2, BN_ISA_AUTO);
    size_t qs = (size_t)f.a.nb * BN_TK_BLOCK;
    for (int t = 0; t < f.n; t++)
        for (int r = 0; r < f.rows; r++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < f.cols; k++) {
                double wv = (double)f.codes[r * f.cols + k] * f.scale[r];
                double xv = (double)f.a.q[t * qs + k] * f.a.scale[t];
                ref += wv * xv, mag += fabs(wv * xv);
            }
            ck_assert_msg(fabs(y[t * f.rows + r] - ref) <= 1e-6 * mag + 1e-30, "t %d r %d: %g vs %g", t,
                          r, y[t * f.rows + r], ref);
            /* and close to the unquantized product: per-token int8 error bound */
            double exact = 0, bound = 0;
            for (int k = 0; k < f.cols; k++) {
                double wv = (double)f.codes[r * f.cols + k] * f.scale[r];
                exact += wv * f.x[t * f.cols + k];
                bound += fabs(wv) * 0.5 * f.a.scale[t];
            }
            ck_assert(fabs(y[t * f.rows + r] - exact) <= bound * 1.0001 + 1e-6 * mag);
        }
    free(y);
    drop(&f);
}
END_TEST

START_TEST(linear_grows_scratch)
{
    fixture f;
    make(&f, 20, 100, 3);
    bn_tk_act a = {0};
    float *y = malloc(sizeof(float) * 20 * 3), *ref = malloc(sizeof(float) * 20 * 3);
    ck_assert_int_eq(bn_tk_linear(&f.w, &a, f.x, 1, y, 1), 0);
    ck_assert_int_eq(bn_tk_linear(&f.w, &a, f.x, 3, y, 2), 0);
    bn_tk_gemm(&f.w, &f.a, ref, 1, BN_ISA_SCALAR);
    ck_assert_int_eq(memcmp(y, ref, sizeof(float) * 60), 0);
    bn_tk_act_free(&a);
    free(y), free(ref);
    drop(&f);
}
END_TEST

START_TEST(speedup_runs)
{
    bn_tk_shape sh[2] = {{256, 256, 2}, {512, 256, 1}};
    bn_tk_speed gv, gm;
    bn_err err;
    ck_assert_int_eq(bn_tk_measure_speedup(sh, 2, 8, 2, 40, &gv, &gm, &err), 0);
    const bn_tk_speed *both[2] = {&gv, &gm};
    for (int i = 0; i < 2; i++) {
        const bn_tk_speed *s = both[i];
        ck_assert(s->ternary_s > 0 && s->blas_s > 0);
        ck_assert(s->ternary_threads == 1 || s->ternary_threads == 2);
        ck_assert(s->blas_threads == 1 || s->blas_threads == 2);
        ck_assert_double_eq_tol(s->blas_product_s, s->blas_s / 3, 1e-12);
        /* the rule: a ratio exactly when the FP32 products are long enough to time */
        ck_assert_int_eq(s->timed, s->blas_product_s >= BN_TK_MIN_PRODUCT_S);
        if (s->timed) ck_assert_double_eq_tol(s->speedup, s->blas_s / s->ternary_s, 1e-9);
        else ck_assert(s->speedup == 0);
    }
    /* a 16x16 product is far too small: no ratio */
    bn_tk_shape tiny = {16, 16, 1};
    ck_assert_int_eq(bn_tk_measure_speedup(&tiny, 1, 1, 2, 20, &gv, &gm, &err), 0);
    ck_assert_msg(!gv.timed && gv.speedup == 0, "16x16 sgemv timed at %g us", gv.blas_product_s * 1e6);
    ck_assert(!gm.timed);
    bn_model_config c = {.dim = 256, .hidden_dim = 768, .n_layers = 3, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64};
    bn_tk_shape ms[5];
    ck_assert_int_eq(bn_tk_model_shapes(&c, ms), 5);
    ck_assert_int_eq(ms[1].rows, 128);
    ck_assert_int_eq(ms[1].count, 6);
    ck_assert_int_eq(ms[4].cols, 768);
    int64_t total = 0;
    for (int i = 0; i < 5; i++) total += (int64_t)ms[i].rows * ms[i].cols * ms[i].count;
    ck_assert_int_eq(total, 3 * (256 * 256 * 2 + 2 * 128 * 256 + 3 * 768 * 256));
    sh[0].rows = 0;
    ck_assert_int_eq(bn_tk_measure_speedup(sh, 2, 8, 1, 40, &gv, &gm, &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad shape 0"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tkernels");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pack_roundtrip);
    tcase_add_test(tc, act_quantize);
    tcase_add_test(tc, act_quantize_ties_to_even);
    tcase_add_test(tc, act_quantize_non_finite_rows);
    tcase_add_test(tc, act_quantize_simd_equals_scalar);
    tcase_add_test(tc, act_quantize_tiny_rows_match_training);
    tcase_add_test(tc, simd_equals_scalar);
    tcase_add_test(tc, pool_equals_scalar);
    tcase_add_test(tc, f16_gemv_agrees);
    tcase_add_test(tc, q8_gemv_agrees);
    tcase_add_test(tc, matches_float_reference);
    tcase_add_test(tc, linear_grows_scratch);
    tcase_add_test(tc, speedup_runs);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
