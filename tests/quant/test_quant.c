/* test_quant.c - the absmean ternary quantizer, calibration-aware refinement and the
 * packers (codes, scales, edge shapes, extreme values, NaN/Inf,
 * tau monotonicity, Gaussian sparsity, ISA and thread-count bit-exactness, round trips). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "quant/pack.h"
#include "quant/quant.h"
#include "base/tensor.h"

static uint64_t rng_state = 1;
static double uniform(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(rng_state >> 11) + 0.5) * 0x1.0p-53;
}
static float gauss(void)
{
    return (float)(sqrt(-2 * log(uniform())) * cos(2 * M_PI * uniform()));
}
static float *gauss_matrix(int64_t n, float std, uint64_t seed)
{
    rng_state = seed;
    float *w = malloc((size_t)n * sizeof *w);
    for (int64_t i = 0; i < n; i++) w[i] = gauss() * std;
    return w;
}

typedef struct { int8_t *codes; float *scales; bn_quant_stats st; int rc; bn_err err; } qres;

static qres quantize(const void *src, bn_dtype t, int64_t rows, int64_t cols, float tau, bool per_tensor,
                     int threads, bn_isa isa)
{
    qres r = { 0 };
    r.codes = malloc((size_t)(rows * cols));
    r.scales = malloc((size_t)rows * sizeof(float));
    bn_quant_params p;
    bn_quant_params_default(&p);
    p.tau = tau;
    p.per_tensor = per_tensor;
    p.threads = threads;
    p.isa = isa;
    r.rc = bn_quant_tensor("test.weight", src, t, rows, cols, &p, r.codes, r.scales, &r.st, &r.err);
    return r;
}
static void qfree(qres *r) { free(r->codes); free(r->scales); }

static void assert_valid(const qres *r, int64_t rows, int64_t cols, bool per_tensor)
{
    ck_assert_int_eq(r->rc, 0);
    int64_t bad = 0; /* count, then assert once: ck_assert per element is slow */
    for (int64_t i = 0; i < rows * cols; i++) bad += r->codes[i] < -1 || r->codes[i] > 1;
    for (int64_t i = 0; i < (per_tensor ? 1 : rows); i++) bad += !(r->scales[i] > 0) || !isfinite(r->scales[i]);
    ck_assert_int_eq(bad, 0);
    ck_assert(isfinite(r->st.mse) && isfinite(r->st.rel_err) && isfinite(r->st.zero_fraction));
    ck_assert_uint_eq(r->st.params, (uint64_t)(rows * cols));
}

START_TEST(codes_and_scales_match_definition)
{
    int64_t rows = 37, cols = 203;
    float *w = gauss_matrix(rows * cols, 0.02f, 7);
    qres r = quantize(w, BN_DTYPE_F32, rows, cols, 0.5f, false, 1, BN_ISA_SCALAR);
    assert_valid(&r, rows, cols, false);
    for (int64_t i = 0; i < rows; i++) {
        double sum = 0;
        for (int64_t j = 0; j < cols; j++) sum += fabs(w[i * cols + j]);
        ck_assert_double_eq_tol(r.scales[i], sum / cols, 1e-6 * sum / cols);
        for (int64_t j = 0; j < cols; j++) {
            float x = w[i * cols + j];
            int want = fabsf(x) >= 0.5f * r.scales[i] ? (x > 0 ? 1 : -1) : 0;
            ck_assert_int_eq(r.codes[i * cols + j], want);
        }
    }
    /* the error statistics are those of scale x code */
    double e = 0, w2 = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        double d = w[i] - (double)r.scales[i / cols] * r.codes[i];
        e += d * d;
        w2 += (double)w[i] * w[i];
    }
    ck_assert_double_eq_tol(r.st.sq_err, e, 1e-4 * e);
    ck_assert_double_eq_tol(r.st.rel_err, sqrt(e / w2), 1e-4);
    ck_assert_double_eq_tol(r.st.mse, e / (rows * cols), 1e-4 * e / (rows * cols));
    qfree(&r);
    free(w);
}
END_TEST

START_TEST(all_zero_single_and_1d)
{
    float z[64] = { 0 };
    qres r = quantize(z, BN_DTYPE_F32, 4, 16, 0.5f, false, 1, BN_ISA_AUTO);
    assert_valid(&r, 4, 16, false);
    for (int i = 0; i < 4; i++) ck_assert_float_eq(r.scales[i], BN_QUANT_SCALE_FLOOR);
    for (int i = 0; i < 64; i++) ck_assert_int_eq(r.codes[i], 0);
    ck_assert_double_eq(r.st.zero_fraction, 1.0);
    ck_assert_double_eq(r.st.rel_err, 0.0);
    qfree(&r);
    /* tau 0 on zeros still gives zero codes (sign(0) = 0) */
    r = quantize(z, BN_DTYPE_F32, 1, 64, 0.0f, true, 1, BN_ISA_AUTO);
    for (int i = 0; i < 64; i++) ck_assert_int_eq(r.codes[i], 0);
    qfree(&r);
    float one = -3.5f;
    r = quantize(&one, BN_DTYPE_F32, 1, 1, 0.5f, false, 1, BN_ISA_AUTO);
    assert_valid(&r, 1, 1, false);
    ck_assert_float_eq(r.scales[0], 3.5f);
    ck_assert_int_eq(r.codes[0], -1);
    ck_assert_double_eq(r.st.sq_err, 0.0);
    qfree(&r);
    float v[5] = { 1, -2, 0.1f, 4, 0 }; /* 1-D: one row; mean 1.42, threshold 0.71 */
    r = quantize(v, BN_DTYPE_F32, 1, 5, 0.5f, false, 2, BN_ISA_AUTO);
    assert_valid(&r, 1, 5, false);
    int8_t want[5] = { 1, -1, 0, 1, 0 };
    ck_assert_mem_eq(r.codes, want, 5);
    qfree(&r);
}
END_TEST

START_TEST(large_4096)
{
    int64_t n = 4096;
    float *w = gauss_matrix(n * n, 0.02f, 11);
    qres r = quantize(w, BN_DTYPE_F32, n, n, 0.5f, false, 2, BN_ISA_AUTO);
    assert_valid(&r, n, n, false);
    ck_assert(r.st.zero_fraction > 0.25 && r.st.zero_fraction < 0.45);
    qfree(&r);
    free(w);
}
END_TEST

START_TEST(extreme_values)
{
    enum { C = 48 };
    float w[3 * C];
    for (int j = 0; j < C; j++) {
        w[j] = (j % 3 == 0 ? 1e30f : j % 3 == 1 ? -1e30f : 1e29f);
        w[C + j] = (j % 2 ? 1e-30f : -1e-30f) * (float)(j + 1);
        w[2 * C + j] = (j % 2 ? 1 : -1) * ldexpf(1.0f, -140) * (float)(j + 1); /* subnormals */
    }
    for (bn_isa isa = BN_ISA_SCALAR; isa <= BN_ISA_AVX512; isa++) {
        if (!bn_quant_isa_available(isa)) continue;
        qres r = quantize(w, BN_DTYPE_F32, 3, C, 0.5f, false, 1, isa);
        assert_valid(&r, 3, C, false);
        ck_assert(r.scales[0] > 1e29f && r.scales[0] < 1e30f);
        ck_assert_int_eq(r.codes[0], 1);
        ck_assert_int_eq(r.codes[1], -1);
        ck_assert(r.scales[1] > 0 && r.scales[1] < 1e-8f * 1.0001f); /* absmean 2.4e-29 -> floor */
        ck_assert_float_eq(r.scales[2], BN_QUANT_SCALE_FLOOR);
        ck_assert(isfinite(r.st.sq_err) && r.st.sq_err > 0);
        qfree(&r);
    }
    /* a row whose |w| sum overflows float: 1e38 x 48 */
    float big[C];
    for (int j = 0; j < C; j++) big[j] = (j % 2 ? 3e38f : -3e38f);
    qres r = quantize(big, BN_DTYPE_F32, 1, C, 0.5f, false, 1, BN_ISA_AUTO);
    assert_valid(&r, 1, C, false);
    ck_assert_float_eq_tol(r.scales[0], 3e38f, 1e32f);
    qfree(&r);
    r = quantize(big, BN_DTYPE_F32, 1, C, 0.5f, true, 1, BN_ISA_SCALAR);
    assert_valid(&r, 1, C, true);
    qfree(&r);
}
END_TEST

START_TEST(nan_inf_rejected)
{
    float w[4 * 20];
    for (int i = 0; i < 80; i++) w[i] = 0.01f * (float)i;
    w[2 * 20 + 7] = NAN;
    qres r = quantize(w, BN_DTYPE_F32, 4, 20, 0.5f, false, 1, BN_ISA_AUTO);
    ck_assert_int_eq(r.rc, BN_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(r.err.msg, "tensor 'test.weight'"));
    ck_assert_ptr_nonnull(strstr(r.err.msg, "NaN weight at [2, 7]"));
    qfree(&r);
    w[2 * 20 + 7] = 0;
    w[3 * 20 + 19] = -INFINITY;
    r = quantize(w, BN_DTYPE_F32, 4, 20, 0.5f, true, 2, BN_ISA_SCALAR);
    ck_assert_int_eq(r.rc, BN_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(r.err.msg, "Inf weight at [3, 19]"));
    qfree(&r);
    uint16_t h[16];
    for (int i = 0; i < 16; i++) h[i] = bn_f32_to_f16(0.5f);
    h[9] = 0x7e00;
    r = quantize(h, BN_DTYPE_F16, 1, 16, 0.5f, false, 1, BN_ISA_AUTO);
    ck_assert_int_eq(r.rc, BN_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(r.err.msg, "test.weight"));
    qfree(&r);
}
END_TEST

START_TEST(tau_monotone_and_gaussian_sparsity)
{
    int64_t rows = 256, cols = 512;
    float *w = gauss_matrix(rows * cols, 1.0f, 3);
    double prev = -1;
    for (float tau = 0.0f; tau <= 1.21f; tau += 0.2f) {
        qres r = quantize(w, BN_DTYPE_F32, rows, cols, tau, false, 1, BN_ISA_AUTO);
        assert_valid(&r, rows, cols, false);
        ck_assert(r.st.zero_fraction > prev);
        prev = r.st.zero_fraction;
        /* Gaussian rows: s ~ E|w| = sigma*sqrt(2/pi), so P(|w| < tau*s) = erf(tau/sqrt(pi));
         * tau = 0 keeps every weight (no exact zeros in a Gaussian sample) */
        double want = erf(tau / sqrt(M_PI));
        if (tau == 0.0f) ck_assert(r.st.zero_fraction == 0.0);
        ck_assert_msg(fabs(r.st.zero_fraction - want) < 0.01, "tau %.1f: zeros %f, expected %f",
                      (double)tau, r.st.zero_fraction, want);
        qfree(&r);
    }
    qres r = quantize(w, BN_DTYPE_F32, rows, cols, 0.5f, false, 1, BN_ISA_AUTO);
    ck_assert_msg(r.st.zero_fraction >= 0.25 && r.st.zero_fraction <= 0.45, "zeros %f", r.st.zero_fraction);
    qfree(&r);
    r = quantize(w, BN_DTYPE_F32, rows, cols, 0.5f, true, 1, BN_ISA_AUTO);
    ck_assert_msg(r.st.zero_fraction >= 0.25 && r.st.zero_fraction <= 0.45, "zeros %f", r.st.zero_fraction);
    qfree(&r);
    free(w);
}
END_TEST

/* Scalar, AVX2 and AVX-512 give the same bytes for every dtype and awkward widths. */
START_TEST(isa_paths_agree)
{
    static const int64_t widths[] = { 1, 7, 15, 16, 17, 31, 33, 100, 255, 1000 };
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
        int64_t rows = 9, cols = widths[wi], n = rows * cols;
        float *w = gauss_matrix(n, 0.05f, 100 + wi);
        w[0] = 0; /* exact zeros and ties */
        if (n > 3) w[3] = -w[2];
        uint16_t *h = malloc((size_t)n * 2), *b = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) { h[i] = bn_f32_to_f16(w[i]); b[i] = bn_f32_to_bf16(w[i]); }
        const void *srcs[3] = { w, h, b };
        bn_dtype types[3] = { BN_DTYPE_F32, BN_DTYPE_F16, BN_DTYPE_BF16 };
        for (int t = 0; t < 3; t++)
            for (int pt = 0; pt < 2; pt++)
                for (float tau = 0.0f; tau < 1.0f; tau += 0.45f) {
                    qres ref = quantize(srcs[t], types[t], rows, cols, tau, pt, 1, BN_ISA_SCALAR);
                    ck_assert_int_eq(ref.rc, 0);
                    for (bn_isa isa = BN_ISA_AVX2; isa <= BN_ISA_AVX512; isa++) {
                        if (!bn_quant_isa_available(isa)) continue;
                        qres o = quantize(srcs[t], types[t], rows, cols, tau, pt, 1, isa);
                        ck_assert_mem_eq(o.codes, ref.codes, (size_t)n);
                        ck_assert_mem_eq(o.scales, ref.scales, (size_t)(pt ? 1 : rows) * sizeof(float));
                        ck_assert_uint_eq(o.st.zeros, ref.st.zeros);
                        ck_assert_mem_eq(&o.st.sq_err, &ref.st.sq_err, sizeof(double));
                        ck_assert_mem_eq(&o.st.sq_w, &ref.st.sq_w, sizeof(double));
                        qfree(&o);
                    }
                    qfree(&ref);
                }
        free(w); free(h); free(b);
    }
}
END_TEST

START_TEST(threads_identical)
{
    int64_t rows = 300, cols = 700;
    float *w = gauss_matrix(rows * cols, 0.02f, 5);
    uint16_t *h = malloc((size_t)(rows * cols) * 2);
    bn_f32_to_f16_array(w, h, (size_t)(rows * cols));
    for (int pt = 0; pt < 2; pt++) {
        qres a = quantize(h, BN_DTYPE_F16, rows, cols, 0.5f, pt, 1, BN_ISA_AUTO);
        qres b = quantize(h, BN_DTYPE_F16, rows, cols, 0.5f, pt, 2, BN_ISA_AUTO);
        qres c = quantize(h, BN_DTYPE_F16, rows, cols, 0.5f, pt, 7, BN_ISA_AUTO);
        ck_assert_mem_eq(a.codes, b.codes, (size_t)(rows * cols));
        ck_assert_mem_eq(a.codes, c.codes, (size_t)(rows * cols));
        ck_assert_mem_eq(a.scales, b.scales, (size_t)(pt ? 1 : rows) * 4);
        ck_assert_mem_eq(a.scales, c.scales, (size_t)(pt ? 1 : rows) * 4);
        ck_assert_mem_eq(&a.st, &b.st, sizeof a.st);
        ck_assert_mem_eq(&a.st, &c.st, sizeof a.st);
        qfree(&a); qfree(&b); qfree(&c);
    }
    free(w);
    free(h);
}
END_TEST

static double weighted_err(const float *w, const int8_t *q, const float *s, const float *xsq, int64_t rows,
                           int64_t cols, bool pt)
{
    double e = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            double d = w[i * cols + j] - (double)s[pt ? 0 : i] * q[i * cols + j];
            e += xsq[j] * d * d;
        }
    return e;
}

START_TEST(refine_lowers_weighted_error)
{
    int64_t rows = 64, cols = 96;
    float *w = gauss_matrix(rows * cols, 0.02f, 9);
    float *xsq = malloc((size_t)cols * sizeof *xsq);
    for (int64_t j = 0; j < cols; j++) xsq[j] = (float)(0.1 + 10.0 * uniform() * uniform()); /* skewed */
    bn_quant_params p;
    bn_quant_params_default(&p);
    for (int pt = 0; pt < 2; pt++) {
        p.per_tensor = pt;
        qres base = quantize(w, BN_DTYPE_F32, rows, cols, 0.5f, pt, 1, BN_ISA_AUTO);
        int8_t *codes = malloc((size_t)(rows * cols)), *codes2 = malloc((size_t)(rows * cols));
        float *sc = malloc((size_t)rows * 4), *sc2 = malloc((size_t)rows * 4), *taus_out = malloc((size_t)rows * 4);
        bn_quant_stats st;
        bn_err err;
        /* single tau: same codes, better scale */
        ck_assert_int_eq(bn_quant_refine("t", w, BN_DTYPE_F32, rows, cols, xsq, NULL, 0, &p, codes, sc, NULL, &st, &err), 0);
        ck_assert_mem_eq(codes, base.codes, (size_t)(rows * cols));
        double e0 = weighted_err(w, base.codes, base.scales, xsq, rows, cols, pt);
        double e1 = weighted_err(w, codes, sc, xsq, rows, cols, pt);
        ck_assert(e1 <= e0 * (1 + 1e-9));
        /* the alpha is the closed form for one row */
        if (!pt) {
            double num = 0, den = 0;
            for (int64_t j = 0; j < cols; j++) { num += xsq[j] * w[j] * codes[j]; den += xsq[j] * codes[j] * codes[j]; }
            ck_assert_double_eq_tol(sc[0], num / den, 1e-6 * num / den);
        }
        /* a tau grid never does worse than the single tau */
        float grid[8];
        int ng = bn_quant_tau_grid(0.5f, grid, 8);
        ck_assert_int_eq(ng, 5);
        ck_assert_int_eq(bn_quant_refine("t", w, BN_DTYPE_F32, rows, cols, xsq, grid, ng, &p, codes2, sc2, taus_out,
                                         &st, &err), 0);
        double e2 = weighted_err(w, codes2, sc2, xsq, rows, cols, pt);
        ck_assert(e2 <= e1 * (1 + 1e-9));
        for (int64_t i = 0; i < rows * cols; i++) ck_assert(codes2[i] >= -1 && codes2[i] <= 1);
        for (int64_t i = 0; i < (pt ? 1 : rows); i++) ck_assert(sc2[i] > 0);
        /* deterministic across threads */
        p.threads = 2;
        ck_assert_int_eq(bn_quant_refine("t", w, BN_DTYPE_F32, rows, cols, xsq, grid, ng, &p, codes, sc, NULL, &st, &err), 0);
        ck_assert_mem_eq(codes, codes2, (size_t)(rows * cols));
        ck_assert_mem_eq(sc, sc2, (size_t)(pt ? 1 : rows) * 4);
        p.threads = 0;
        qfree(&base);
        free(codes); free(codes2); free(sc); free(sc2); free(taus_out);
    }
    bn_err err;
    bn_quant_stats st;
    xsq[5] = NAN;
    int8_t c[64 * 96];
    float s[64];
    ck_assert_int_eq(bn_quant_refine("bad.weight", w, BN_DTYPE_F32, rows, cols, xsq, NULL, 0, &p, c, s, NULL, &st, &err),
                     BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad.weight"));
    free(xsq);
    free(w);
}
END_TEST

START_TEST(pack_round_trips)
{
    static const int64_t outs[] = { 1, 2, 3, 4, 5, 7, 8, 64, 172 };
    for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
        int64_t out = outs[k], in = 13, n = out * in;
        float *w = gauss_matrix(n, 1.0f, 40 + k);
        qres r = quantize(w, BN_DTYPE_F32, out, in, 0.5f, false, 1, BN_ISA_AUTO);
        int64_t Q = bn_pack2_rows(out);
        uint8_t *packed = malloc((size_t)(Q * in));
        int8_t *back = malloc((size_t)n);
        bn_pack2_hf(r.codes, out, in, packed);
        ck_assert_int_eq(bn_unpack2_hf(packed, out, in, back), 0);
        ck_assert_mem_eq(back, r.codes, (size_t)n);
        /* layout: bits 2i..2i+1 of packed[r, c] = W[i*Q + r, c] + 1 */
        for (int64_t row = 0; row < out; row++)
            for (int64_t c = 0; c < in; c++) {
                int i = (int)(row / Q);
                int q = (packed[(row % Q) * in + c] >> (2 * i)) & 3;
                ck_assert_int_eq(q - 1, r.codes[row * in + c]);
            }
        /* dequantize from the unpacked codes equals dequantize from the originals, bit for bit */
        uint16_t *d1 = malloc((size_t)in * 2), *d2 = malloc((size_t)in * 2);
        for (int64_t row = 0; row < out; row++) {
            bn_quant_dequant_row_f16(r.codes + row * in, r.scales[row], in, d1);
            bn_quant_dequant_row_f16(back + row * in, r.scales[row], in, d2);
            ck_assert_mem_eq(d1, d2, (size_t)in * 2);
            for (int64_t c = 0; c < in; c++)
                ck_assert_uint_eq(d1[c], bn_f32_to_f16(r.scales[row] * (float)r.codes[row * in + c]));
        }
        uint8_t *p3 = malloc(bn_pack3_bytes((size_t)n));
        bn_pack3(r.codes, (size_t)n, p3);
        memset(back, 9, (size_t)n);
        ck_assert_int_eq(bn_unpack3(p3, (size_t)n, back), 0);
        ck_assert_mem_eq(back, r.codes, (size_t)n);
        for (size_t b = 0; b < bn_pack3_bytes((size_t)n); b++) ck_assert_uint_le(p3[b], 242);
        free(p3); free(d1); free(d2); free(packed); free(back); free(w);
        qfree(&r);
    }
    uint8_t bad2[2] = { 0xff, 0x55 };
    int8_t out[8];
    ck_assert_int_eq(bn_unpack2_hf(bad2, 4, 2, out), -1);
    uint8_t bad3[1] = { 243 };
    ck_assert_int_eq(bn_unpack3(bad3, 5, out), -1);
    ck_assert_int_eq(bn_pack3_bytes(10), 2);
    ck_assert_int_eq(bn_pack3_bytes(11), 3);
}
END_TEST

START_TEST(dequant_paths_agree)
{
    int8_t codes[1003];
    for (int i = 0; i < 1003; i++) codes[i] = (int8_t)(i % 3 - 1);
    uint16_t a[1003], b[1003];
    for (int n = 0; n <= 1003; n += 17) {
        bn_quant_dequant_row_f16_isa(codes, 0.0123f, n, a, BN_ISA_SCALAR);
        bn_quant_dequant_row_f16_isa(codes, 0.0123f, n, b, BN_ISA_AVX2);
        ck_assert_mem_eq(a, b, (size_t)n * 2);
        for (int i = 0; i < n; i++) ck_assert_uint_eq(a[i], bn_f32_to_f16(0.0123f * (float)codes[i]));
    }
}
END_TEST

START_TEST(auto_tau_table)
{
    const char *c;
    ck_assert_float_eq(bn_quant_auto_tau(260032, &c), 0.40f);
    ck_assert_str_eq(c, "tiny");
    ck_assert_float_eq(bn_quant_auto_tau(100000000, &c), 0.45f);
    ck_assert_str_eq(c, "small");
    ck_assert_float_eq(bn_quant_auto_tau(1100000000, &c), 0.50f);
    ck_assert_str_eq(c, "medium");
    ck_assert_float_eq(bn_quant_auto_tau(7000000000ull, &c), 0.55f);
    ck_assert_str_eq(c, "large");
}
END_TEST

/* issue 19: the grid always holds the requested tau (first), only neighbours are
 * clamped to [0.05, 1.5], and tau = 0 (dense codes) stays alone; refinement at tau = 0
 * leaves no zero code. */
START_TEST(tau_grid_honours_the_request)
{
    static const struct { float tau; int n; float want[5]; } cases[] = {
        { 0.0f, 1, { 0.0f } },
        { 0.02f, 3, { 0.02f, 0.12f, 0.22f } },
        { 0.1f, 3, { 0.1f, 0.2f, 0.3f } },
        { 0.5f, 5, { 0.5f, 0.4f, 0.6f, 0.3f, 0.7f } },
        { 1.5f, 3, { 1.5f, 1.4f, 1.3f } },
        { 2.0f, 1, { 2.0f } },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        float g[8];
        int n = bn_quant_tau_grid(cases[k].tau, g, 8);
        ck_assert_int_eq(n, cases[k].n);
        ck_assert(g[0] == cases[k].tau);
        for (int i = 1; i < n; i++) ck_assert(g[i] >= 0.05f - 1e-6f && g[i] <= 1.5f + 1e-6f);
        if (cases[k].tau == 0.5f)
            for (int i = 0; i < n; i++) ck_assert_float_eq_tol(g[i], cases[k].want[i], 1e-6f);
    }
    enum { R = 16, C = 64 };
    float w[R * C], xsq[C], sc[R];
    int8_t codes[R * C];
    uint64_t s = 99;
    for (int i = 0; i < R * C; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
    for (int j = 0; j < C; j++) xsq[j] = 0.1f + (float)(j % 7);
    bn_quant_params p;
    bn_quant_params_default(&p);
    p.tau = 0.0f;
    float g[8];
    int n = bn_quant_tau_grid(p.tau, g, 8);
    bn_quant_stats st;
    bn_err err;
    ck_assert_int_eq(bn_quant_refine("t", w, BN_DTYPE_F32, R, C, xsq, g, n, &p, codes, sc, NULL, &st, &err), 0);
    for (int i = 0; i < R * C; i++) ck_assert_int_ne(codes[i], 0);
    ck_assert(st.zero_fraction == 0.0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine-quant");
    TCase *tc = tcase_create("quant");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, codes_and_scales_match_definition);
    tcase_add_test(tc, all_zero_single_and_1d);
    tcase_add_test(tc, large_4096);
    tcase_add_test(tc, extreme_values);
    tcase_add_test(tc, nan_inf_rejected);
    tcase_add_test(tc, tau_monotone_and_gaussian_sparsity);
    tcase_add_test(tc, isa_paths_agree);
    tcase_add_test(tc, threads_identical);
    tcase_add_test(tc, refine_lowers_weighted_error);
    tcase_add_test(tc, pack_round_trips);
    tcase_add_test(tc, dequant_paths_agree);
    tcase_add_test(tc, auto_tau_table);
    tcase_add_test(tc, tau_grid_honours_the_request);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
