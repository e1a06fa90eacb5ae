/* quant.c - absmean ternary quantizer (see quant.h for the math).
 *
 * Layout of the work: a tensor is [rows, cols] (F32, F16 or BF16 in the mmap). Each row
 * is read twice while it is hot in cache:
 *   pass 1  row_abssum: sum |w| in the canonical 16-lane order (lane = col mod 16, lanes
 *           folded 16 -> 8 -> 4 -> 2 -> 1 by halves). Non-finite sums send the row to a
 *           scalar check that names the first NaN/Inf, or to a double-precision sum when
 *           finite values overflowed float.
 *   pass 2  row_ternarize: threshold, write int8 codes, count zeros, and accumulate the
 *           error statistics on w / scale (normalised, so 1e30 or 1e-30 weights neither
 *           overflow nor underflow).
 * The scalar functions are the reference; the AVX2 (+F16C) and AVX-512 versions do the
 * same float operations in the same order (no FMA contraction), so all three give the
 * same bytes (tests/quant/test_quant.c). Rows are split among pthreads in contiguous
 * ranges; per-row results land in arrays reduced in row order afterwards, so the
 * thread count never changes a byte.
 */
#include "quant/qtensor.h"
#include "quant/quant.h"

#include "base/cpu.h"
#include "base/parallel.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* per-row results of pass 2 (sums are of normalised values w / s) */
typedef struct {
    int64_t zeros;
    float err;  /* sum ((w - s q) / s)^2 */
    float w2;   /* sum (w / s)^2 */
} row_acc;

/* ---- scalar reference ------------------------------------------------------------- */

static inline float load_one(const uint8_t *src, bn_dtype t, int64_t j)
{
    uint16_t h;
    float f;
    switch (t) {
    case BN_DTYPE_F16: memcpy(&h, src + 2 * j, 2); return bn_f16_to_f32(h);
    case BN_DTYPE_BF16: memcpy(&h, src + 2 * j, 2); return bn_bf16_to_f32(h);
    default: memcpy(&f, src + 4 * j, 4); return f;
    }
}

static float fold16(const float l[16])
{
    float a[8], b[4], c[2];
    for (int i = 0; i < 8; i++) a[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; i++) b[i] = a[i] + a[i + 4];
    for (int i = 0; i < 2; i++) c[i] = b[i] + b[i + 2];
    return c[0] + c[1];
}

static float abssum_scalar(const uint8_t *src, bn_dtype t, int64_t cols)
{
    float l[16] = { 0 };
    for (int64_t j = 0; j < cols; j++) l[j & 15] += fabsf(load_one(src, t, j));
    return fold16(l);
}

static void ternarize_scalar(const uint8_t *src, bn_dtype t, int64_t cols, float s, float thr, int8_t *codes,
                             row_acc *acc)
{
    float le[16] = { 0 }, lw[16] = { 0 };
    float inv = 1.0f / s;
    int64_t zeros = 0;
    for (int64_t j = 0; j < cols; j++) {
        float w = load_one(src, t, j);
        float a = fabsf(w);
        int q = (a >= thr) ? (w > 0) - (w < 0) : 0;
        float sq = q > 0 ? s : q < 0 ? -s : 0.0f;
        float d = (w - sq) * inv;
        float wn = w * inv;
        float d2 = d * d, w2 = wn * wn;
        le[j & 15] += d2;
        lw[j & 15] += w2;
        zeros += q == 0;
        codes[j] = (int8_t)q;
    }
    acc->zeros = zeros;
    acc->err = fold16(le);
    acc->w2 = fold16(lw);
}

/* Loads the tail (cols % 16 values starting at j) into a zero-padded float[16]. */
static void load_tail(const uint8_t *src, bn_dtype t, int64_t j, int64_t cols, float out[16])
{
    for (int i = 0; i < 16; i++) out[i] = (j + i < cols) ? load_one(src, t, j + i) : 0.0f;
}

/* ---- AVX2 + F16C ------------------------------------------------------------------ */

__attribute__((target("avx2,f16c")))
static inline __m256 load8_avx2(const uint8_t *src, bn_dtype t, int64_t j)
{
    switch (t) {
    case BN_DTYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * j)));
    case BN_DTYPE_BF16: {
        __m256i x = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + 2 * j)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
    }
    default: return _mm256_loadu_ps((const float *)(src + 4 * j));
    }
}

__attribute__((target("avx2,f16c")))
static float fold_avx2(__m256 lo, __m256 hi)
{
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

__attribute__((target("avx2,f16c")))
static float abssum_avx2(const uint8_t *src, bn_dtype t, int64_t cols)
{
    const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16) {
        a0 = _mm256_add_ps(a0, _mm256_and_ps(load8_avx2(src, t, j), mask));
        a1 = _mm256_add_ps(a1, _mm256_and_ps(load8_avx2(src, t, j + 8), mask));
    }
    if (j < cols) {
        float tail[16];
        load_tail(src, t, j, cols, tail);
        a0 = _mm256_add_ps(a0, _mm256_and_ps(_mm256_loadu_ps(tail), mask));
        a1 = _mm256_add_ps(a1, _mm256_and_ps(_mm256_loadu_ps(tail + 8), mask));
    }
    return fold_avx2(a0, a1);
}

/* 8 weights -> 8 codes as int32 (-1, 0, 1); updates the error lanes. Returns nonzero mask bits. */
__attribute__((target("avx2,f16c")))
static inline __m256i tern8_avx2(__m256 w, __m256 s, __m256 thr, __m256 inv, __m256 *le, __m256 *lw, int *nz)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 zero = _mm256_setzero_ps();
    __m256 big = _mm256_cmp_ps(_mm256_and_ps(w, absmask), thr, _CMP_GE_OQ);
    __m256 pos = _mm256_and_ps(big, _mm256_cmp_ps(w, zero, _CMP_GT_OQ));
    __m256 neg = _mm256_and_ps(big, _mm256_cmp_ps(w, zero, _CMP_LT_OQ));
    __m256 sq = _mm256_or_ps(_mm256_and_ps(pos, s), _mm256_and_ps(neg, _mm256_sub_ps(zero, s)));
    __m256 d = _mm256_mul_ps(_mm256_sub_ps(w, sq), inv);
    __m256 wn = _mm256_mul_ps(w, inv);
    *le = _mm256_add_ps(*le, _mm256_mul_ps(d, d));
    *lw = _mm256_add_ps(*lw, _mm256_mul_ps(wn, wn));
    *nz = __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_or_ps(pos, neg)));
    return _mm256_sub_epi32(_mm256_castps_si256(neg), _mm256_castps_si256(pos));
}

__attribute__((target("avx2,f16c")))
static inline __m128i narrow16_avx2(__m256i a, __m256i b)
{
    __m128i a16 = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    __m128i b16 = _mm_packs_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    return _mm_packs_epi16(a16, b16);
}

__attribute__((target("avx2,f16c")))
static void ternarize_avx2(const uint8_t *src, bn_dtype t, int64_t cols, float s, float thr, int8_t *codes,
                           row_acc *acc)
{
    __m256 vs = _mm256_set1_ps(s), vthr = _mm256_set1_ps(thr), vinv = _mm256_set1_ps(1.0f / s);
    __m256 le0 = _mm256_setzero_ps(), le1 = le0, lw0 = le0, lw1 = le0;
    int64_t nonzero = 0;
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16) {
        int n0, n1;
        __m256i q0 = tern8_avx2(load8_avx2(src, t, j), vs, vthr, vinv, &le0, &lw0, &n0);
        __m256i q1 = tern8_avx2(load8_avx2(src, t, j + 8), vs, vthr, vinv, &le1, &lw1, &n1);
        _mm_storeu_si128((__m128i *)(codes + j), narrow16_avx2(q0, q1));
        nonzero += n0 + n1;
    }
    if (j < cols) {
        float tail[16];
        int8_t qt[16];
        int n0, n1;
        load_tail(src, t, j, cols, tail);
        __m256i q0 = tern8_avx2(_mm256_loadu_ps(tail), vs, vthr, vinv, &le0, &lw0, &n0);
        __m256i q1 = tern8_avx2(_mm256_loadu_ps(tail + 8), vs, vthr, vinv, &le1, &lw1, &n1);
        _mm_storeu_si128((__m128i *)qt, narrow16_avx2(q0, q1));
        memcpy(codes + j, qt, (size_t)(cols - j));
        nonzero += n0 + n1; /* padding zeros never pass the threshold unless thr == 0 */
    }
    acc->zeros = cols - nonzero;
    acc->err = fold_avx2(le0, le1);
    acc->w2 = fold_avx2(lw0, lw1);
}

/* ---- AVX-512 ---------------------------------------------------------------------- */

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static inline __m512 load16_avx512(const uint8_t *src, bn_dtype t, int64_t j)
{
    switch (t) {
    case BN_DTYPE_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + 2 * j)));
    case BN_DTYPE_BF16: {
        __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + 2 * j)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
    }
    default: return _mm512_loadu_ps((const float *)(src + 4 * j));
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static float fold_avx512(__m512 v)
{
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static float abssum_avx512(const uint8_t *src, bn_dtype t, int64_t cols)
{
    __m512 a = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16) a = _mm512_add_ps(a, _mm512_abs_ps(load16_avx512(src, t, j)));
    if (j < cols) {
        float tail[16];
        load_tail(src, t, j, cols, tail);
        a = _mm512_add_ps(a, _mm512_abs_ps(_mm512_loadu_ps(tail)));
    }
    return fold_avx512(a);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static inline __m128i tern16_avx512(__m512 w, __m512 s, __m512 thr, __m512 inv, __m512 *le, __m512 *lw, int *nz)
{
    const __m512 zero = _mm512_setzero_ps();
    __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(w), thr, _CMP_GE_OQ);
    __mmask16 pos = big & _mm512_cmp_ps_mask(w, zero, _CMP_GT_OQ);
    __mmask16 neg = big & _mm512_cmp_ps_mask(w, zero, _CMP_LT_OQ);
    __m512 sq = _mm512_mask_blend_ps(pos, _mm512_mask_blend_ps(neg, zero, _mm512_sub_ps(zero, s)), s);
    __m512 d = _mm512_mul_ps(_mm512_sub_ps(w, sq), inv);
    __m512 wn = _mm512_mul_ps(w, inv);
    *le = _mm512_add_ps(*le, _mm512_mul_ps(d, d));
    *lw = _mm512_add_ps(*lw, _mm512_mul_ps(wn, wn));
    *nz = __builtin_popcount((unsigned)(pos | neg));
    __m128i one = _mm_set1_epi8(1);
    __m128i q = _mm_mask_mov_epi8(_mm_setzero_si128(), pos, one);
    return _mm_mask_mov_epi8(q, neg, _mm_set1_epi8(-1));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static void ternarize_avx512(const uint8_t *src, bn_dtype t, int64_t cols, float s, float thr, int8_t *codes,
                             row_acc *acc)
{
    __m512 vs = _mm512_set1_ps(s), vthr = _mm512_set1_ps(thr), vinv = _mm512_set1_ps(1.0f / s);
    __m512 le = _mm512_setzero_ps(), lw = le;
    int64_t nonzero = 0;
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16) {
        int n;
        _mm_storeu_si128((__m128i *)(codes + j), tern16_avx512(load16_avx512(src, t, j), vs, vthr, vinv, &le, &lw, &n));
        nonzero += n;
    }
    if (j < cols) {
        float tail[16];
        int8_t qt[16];
        int n;
        load_tail(src, t, j, cols, tail);
        _mm_storeu_si128((__m128i *)qt, tern16_avx512(_mm512_loadu_ps(tail), vs, vthr, vinv, &le, &lw, &n));
        memcpy(codes + j, qt, (size_t)(cols - j));
        nonzero += n;
    }
    acc->zeros = cols - nonzero;
    acc->err = fold_avx512(le);
    acc->w2 = fold_avx512(lw);
}

/* ---- dispatch ---------------------------------------------------------------------- */

typedef struct {
    float (*abssum)(const uint8_t *, bn_dtype, int64_t);
    void (*ternarize)(const uint8_t *, bn_dtype, int64_t, float, float, int8_t *, row_acc *);
} kernels;

bool bn_quant_isa_available(bn_isa isa)
{
    switch (isa) {
    case BN_ISA_AUTO: case BN_ISA_SCALAR: return true;
    case BN_ISA_AVX2: return bn_cpu_has_f16c();
    case BN_ISA_AVX512: return bn_cpu_has_avx512() && bn_cpu_has_f16c();
    }
    return false;
}

static bn_isa resolve_isa(bn_isa want)
{
    if (want != BN_ISA_AUTO) return bn_quant_isa_available(want) ? want : BN_ISA_SCALAR;
    if (bn_quant_isa_available(BN_ISA_AVX512)) return BN_ISA_AVX512;
    if (bn_quant_isa_available(BN_ISA_AVX2)) return BN_ISA_AVX2;
    return BN_ISA_SCALAR;
}

static kernels pick_kernels(bn_isa isa)
{
    switch (resolve_isa(isa)) {
    case BN_ISA_AVX512: return (kernels){ abssum_avx512, ternarize_avx512 };
    case BN_ISA_AVX2: return (kernels){ abssum_avx2, ternarize_avx2 };
    default: return (kernels){ abssum_scalar, ternarize_scalar };
    }
}

/* ---- threads ------------------------------------------------------------------------ */

typedef struct job job;
typedef void (*row_fn)(job *, int64_t r0, int64_t r1);

struct job {
    const char *name;
    const uint8_t *src;
    bn_dtype dtype;
    int64_t rows, cols;
    size_t row_bytes;
    kernels k;
    float tau;
    bool per_tensor;
    float tensor_scale;
    /* per-row outputs */
    float *rowsum;     /* pass 1 (float canonical sum, or the double fallback rounded) */
    double *rowsum_d;  /* exact-ish double sum used for the mean */
    int64_t *bad_col;  /* first non-finite column or -1 */
    float *scales;     /* [rows] or [1] */
    int8_t *codes;
    row_acc *acc;
    /* refinement */
    const float *xsq;
    const float *taus;
    int n_taus;
    double *abc;       /* [rows][n_taus][3] */
    float *chosen_tau;
    row_fn fn;
};

typedef struct { job *j; int n; } slices; /* the rows in n contiguous slices */

static void slice_task(void *ctx, int task, int thread)
{
    (void)thread;
    const slices *s = ctx;
    s->j->fn(s->j, s->j->rows * task / s->n, s->j->rows * (task + 1) / s->n);
}

static int n_threads(int want, int64_t rows, int64_t cols)
{
    int n = want > 0 ? want : bn_cpu_count();
    int64_t work = rows * cols;
    if (work < (1 << 16)) n = 1; /* not worth a thread */
    if (n > rows) n = (int)rows;
    if (n > 64) n = 64;
    return n < 1 ? 1 : n;
}

static void run_rows(job *j, row_fn fn, int threads)
{
    j->fn = fn;
    int n = n_threads(threads, j->rows, j->cols);
    if (n == 1) {
        fn(j, 0, j->rows);
        return;
    }
    slices s = { j, n };
    bn_parallel_for(n, n, slice_task, &s);
}

/* ---- pass 1: row sums ---------------------------------------------------------------- */

static void pass_sums(job *j, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = j->src + (size_t)r * j->row_bytes;
        float s = j->k.abssum(row, j->dtype, j->cols);
        j->bad_col[r] = -1;
        j->rowsum[r] = s;
        j->rowsum_d[r] = s;
        if (isfinite(s)) continue;
        double d = 0;
        for (int64_t c = 0; c < j->cols; c++) {
            float w = load_one(row, j->dtype, c);
            if (!isfinite(w)) { j->bad_col[r] = c; break; }
            d += fabs((double)w);
        }
        j->rowsum_d[r] = d;
    }
}

static int check_finite(const job *j, bn_err *err)
{
    for (int64_t r = 0; r < j->rows; r++)
        if (j->bad_col[r] >= 0) {
            float w = load_one(j->src + (size_t)r * j->row_bytes, j->dtype, j->bad_col[r]);
            return bn_err_set(err, BN_ENUMERIC, "tensor '%s': %s weight at [%lld, %lld]", j->name,
                              isnan(w) ? "NaN" : "Inf", (long long)r, (long long)j->bad_col[r]);
        }
    return 0;
}

static float floor_scale(double mean)
{
    float s = (float)mean;
    return s >= BN_QUANT_SCALE_FLOOR ? s : BN_QUANT_SCALE_FLOOR;
}

/* row r's scale: float canonical sum / cols when finite, else the double fallback */
static float row_scale(const job *j, int64_t r)
{
    double sum = isfinite(j->rowsum[r]) ? (double)j->rowsum[r] : j->rowsum_d[r];
    return floor_scale(sum / (double)j->cols);
}

/* ---- pass 2: ternarize ----------------------------------------------------------------- */

static void pass_ternarize(job *j, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        float s = j->per_tensor ? j->tensor_scale : j->scales[r];
        float thr = j->tau * s;
        const uint8_t *row = j->src + (size_t)r * j->row_bytes;
        row_acc *a = &j->acc[r];
        j->k.ternarize(row, j->dtype, j->cols, s, thr, j->codes + (size_t)r * (size_t)j->cols, a);
        if (isfinite(a->err) && isfinite(a->w2)) continue;
        /* normalised squares overflowed float (extreme spread inside a row): redo in double */
        double e = 0, w2 = 0, inv = 1.0 / s;
        const int8_t *q = j->codes + (size_t)r * (size_t)j->cols;
        for (int64_t c = 0; c < j->cols; c++) {
            double w = load_one(row, j->dtype, c);
            double d = (w - (double)s * q[c]) * inv;
            e += d * d;
            w2 += (w * inv) * (w * inv);
        }
        a->err = (float)e;
        a->w2 = (float)w2;
    }
}

static void finish_stats(const job *j, bn_quant_stats *st)
{
    memset(st, 0, sizeof *st);
    int64_t ns = j->per_tensor ? 1 : j->rows;
    st->params = (uint64_t)(j->rows * j->cols);
    st->scale_min = INFINITY;
    st->scale_max = 0;
    double ssum = 0;
    for (int64_t i = 0; i < ns; i++) {
        double s = j->scales[i];
        ssum += s;
        if (s < st->scale_min) st->scale_min = s;
        if (s > st->scale_max) st->scale_max = s;
    }
    st->scale_mean = ssum / (double)ns;
    for (int64_t r = 0; r < j->rows; r++) {
        double s = j->per_tensor ? j->scales[0] : j->scales[r];
        st->zeros += (uint64_t)j->acc[r].zeros;
        st->sq_err += (double)j->acc[r].err * s * s;
        st->sq_w += (double)j->acc[r].w2 * s * s;
    }
    bn_quant_stats_merge(st, 0, NULL, 0);
}

void bn_quant_stats_merge(bn_quant_stats *a, int64_t na, const bn_quant_stats *b, int64_t nb)
{
    if (b && b->params) {
        if (!a->params) {
            *a = *b;
        } else {
            a->scale_mean = (a->scale_mean * (double)na + b->scale_mean * (double)nb) / (double)(na + nb);
            if (b->scale_min < a->scale_min) a->scale_min = b->scale_min;
            if (b->scale_max > a->scale_max) a->scale_max = b->scale_max;
            a->params += b->params;
            a->zeros += b->zeros;
            a->sq_err += b->sq_err;
            a->sq_w += b->sq_w;
        }
    }
    a->zero_fraction = a->params ? (double)a->zeros / (double)a->params : 0;
    a->mse = a->params ? a->sq_err / (double)a->params : 0;
    a->rel_err = a->sq_w > 0 ? sqrt(a->sq_err / a->sq_w) : 0;
}

/* ---- entry points ---------------------------------------------------------------------- */

void bn_quant_params_default(bn_quant_params *p)
{
    p->tau = 0.5f;
    p->per_tensor = false;
    p->threads = 0;
    p->isa = BN_ISA_AUTO;
}

static int job_init(job *j, const char *name, const void *src, bn_dtype dtype, int64_t rows, int64_t cols,
                    const bn_quant_params *p, int8_t *codes, float *scales, bn_err *err)
{
    memset(j, 0, sizeof *j);
    if (dtype != BN_DTYPE_F32 && dtype != BN_DTYPE_F16 && dtype != BN_DTYPE_BF16)
        return bn_err_set(err, BN_EUNSUPPORTED, "tensor '%s': dtype %s cannot be quantized", name, bn_dtype_name(dtype));
    if (rows < 1 || cols < 1)
        return bn_err_set(err, BN_EINVAL, "tensor '%s': empty shape [%lld, %lld]", name, (long long)rows, (long long)cols);
    if (!(p->tau >= 0) || !isfinite(p->tau))
        return bn_err_set(err, BN_EINVAL, "tensor '%s': threshold %g must be a finite number >= 0", name, (double)p->tau);
    j->name = name;
    j->src = src;
    j->dtype = dtype;
    j->rows = rows;
    j->cols = cols;
    j->row_bytes = (size_t)cols * bn_dtype_size(dtype);
    j->k = pick_kernels(p->isa);
    j->tau = p->tau;
    j->per_tensor = p->per_tensor;
    j->codes = codes;
    j->scales = scales;
    j->rowsum = malloc((size_t)rows * sizeof *j->rowsum);
    j->rowsum_d = malloc((size_t)rows * sizeof *j->rowsum_d);
    j->bad_col = malloc((size_t)rows * sizeof *j->bad_col);
    j->acc = calloc((size_t)rows, sizeof *j->acc);
    if (!j->rowsum || !j->rowsum_d || !j->bad_col || !j->acc)
        return bn_err_set(err, BN_ENOMEM, "tensor '%s': out of memory", name);
    return 0;
}

static void job_free(job *j)
{
    free(j->rowsum);
    free(j->rowsum_d);
    free(j->bad_col);
    free(j->acc);
    free(j->abc);
}

/* pass 1 + scales (shared by quantize and refine) */
static int compute_scales(job *j, int threads, bn_err *err)
{
    run_rows(j, pass_sums, threads);
    int rc = check_finite(j, err);
    if (rc) return rc;
    if (j->per_tensor) {
        double total = 0;
        for (int64_t r = 0; r < j->rows; r++) total += isfinite(j->rowsum[r]) ? (double)j->rowsum[r] : j->rowsum_d[r];
        j->tensor_scale = floor_scale(total / ((double)j->rows * (double)j->cols));
        j->scales[0] = j->tensor_scale;
    } else {
        for (int64_t r = 0; r < j->rows; r++) j->scales[r] = row_scale(j, r);
    }
    return 0;
}

int bn_quant_tensor(const char *name, const void *src, bn_dtype dtype, int64_t rows, int64_t cols,
                    const bn_quant_params *p, int8_t *codes, float *scales, bn_quant_stats *st, bn_err *err)
{
    job j;
    int rc = job_init(&j, name, src, dtype, rows, cols, p, codes, scales, err);
    if (!rc) rc = compute_scales(&j, p->threads, err);
    if (!rc) {
        run_rows(&j, pass_ternarize, p->threads);
        if (st) finish_stats(&j, st);
    }
    job_free(&j);
    return rc;
}

/* ---- calibration-aware refinement -------------------------------------------------------- */

/* For every tau of the grid: A = sum xsq w^2, B = sum xsq |w| [|w| >= thr], C = sum xsq [|w| >= thr].
 * The weighted error of scale alpha is A - 2 alpha B + alpha^2 C, smallest at alpha = B / C. */
static void pass_abc(job *j, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = j->src + (size_t)r * j->row_bytes;
        float s0 = j->per_tensor ? j->tensor_scale : j->scales[r];
        double *abc = j->abc + (size_t)r * (size_t)j->n_taus * 3;
        memset(abc, 0, (size_t)j->n_taus * 3 * sizeof *abc);
        for (int64_t c = 0; c < j->cols; c++) {
            double w = load_one(row, j->dtype, c), x = j->xsq[c], aw = fabs(w);
            double xw2 = x * w * w, xaw = x * aw;
            for (int k = 0; k < j->n_taus; k++) {
                abc[3 * k] += xw2;
                if ((float)aw >= j->taus[k] * s0 && aw > 0) { abc[3 * k + 1] += xaw; abc[3 * k + 2] += x; }
            }
        }
    }
}

/* best tau index and alpha from sums; fallback alpha when C == 0 or B == 0 */
static int pick_tau(const double *abc, int n_taus, float s0, float *alpha)
{
    int best = 0;
    double best_err = INFINITY;
    for (int k = 0; k < n_taus; k++) {
        double A = abc[3 * k], B = abc[3 * k + 1], C = abc[3 * k + 2];
        double e = (C > 0) ? A - B * B / C : A;
        if (e < best_err) { best_err = e; best = k; }
    }
    double B = abc[3 * best + 1], C = abc[3 * best + 2];
    *alpha = (C > 0 && B > 0) ? floor_scale(B / C) : s0;
    return best;
}

static void pass_refine_codes(job *j, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = j->src + (size_t)r * j->row_bytes;
        float s0 = j->per_tensor ? j->tensor_scale : j->rowsum[r]; /* rowsum holds s0 here */
        float tau = j->per_tensor ? j->chosen_tau[0] : j->chosen_tau[r];
        float thr = tau * s0;
        float s = j->per_tensor ? j->scales[0] : j->scales[r];
        int8_t *q = j->codes + (size_t)r * (size_t)j->cols;
        double e = 0, w2 = 0, inv = 1.0 / s;
        int64_t zeros = 0;
        for (int64_t c = 0; c < j->cols; c++) {
            float w = load_one(row, j->dtype, c);
            int code = (fabsf(w) >= thr) ? (w > 0) - (w < 0) : 0;
            q[c] = (int8_t)code;
            zeros += code == 0;
            double d = ((double)w - (double)s * code) * inv;
            e += d * d;
            w2 += ((double)w * inv) * ((double)w * inv);
        }
        j->acc[r] = (row_acc){ zeros, (float)e, (float)w2 };
    }
}

int bn_quant_tau_grid(float tau, float *out, int cap)
{
    /* The requested tau always; its neighbours tau +- 0.1, +- 0.2 only inside [0.05, 1.5].
     * tau = 0 asks for dense codes (no zero at all): it is the only entry then. */
    static const float d[] = { -0.1f, 0.1f, -0.2f, 0.2f };
    int n = 0;
    if (cap <= 0) return 0;
    out[n++] = tau;
    if (tau == 0.0f) return n;
    for (int i = 0; i < 4 && n < cap; i++) {
        float t = tau + d[i];
        if (t < 0.05f || t > 1.5f) continue;
        out[n++] = t;
    }
    return n;
}

int bn_quant_refine(const char *name, const void *src, bn_dtype dtype, int64_t rows, int64_t cols,
                    const float *xsq, const float *taus, int n_taus, const bn_quant_params *p,
                    int8_t *codes, float *scales, float *chosen_tau, bn_quant_stats *st, bn_err *err)
{
    float one_tau = p->tau;
    if (!taus || n_taus <= 0) { taus = &one_tau; n_taus = 1; }
    for (int64_t c = 0; c < cols; c++)
        if (!(xsq[c] >= 0) || !isfinite(xsq[c]))
            return bn_err_set(err, BN_EINVAL, "tensor '%s': calibration statistic xsq[%lld] = %g is not a finite "
                              "number >= 0", name, (long long)c, (double)xsq[c]);
    job j;
    int rc = job_init(&j, name, src, dtype, rows, cols, p, codes, scales, err);
    float *tau_row = NULL;
    if (!rc) rc = compute_scales(&j, p->threads, err);
    if (!rc) {
        j.xsq = xsq;
        j.taus = taus;
        j.n_taus = n_taus;
        j.abc = malloc((size_t)rows * (size_t)n_taus * 3 * sizeof *j.abc);
        tau_row = malloc((size_t)(p->per_tensor ? 1 : rows) * sizeof *tau_row);
        if (!j.abc || !tau_row) rc = bn_err_set(err, BN_ENOMEM, "tensor '%s': out of memory", name);
    }
    if (!rc) {
        run_rows(&j, pass_abc, p->threads);
        if (p->per_tensor) {
            double *tot = calloc((size_t)n_taus * 3, sizeof *tot);
            if (!tot) rc = bn_err_set(err, BN_ENOMEM, "out of memory");
            for (int64_t r = 0; !rc && r < rows; r++)
                for (int k = 0; k < 3 * n_taus; k++) tot[k] += j.abc[(size_t)r * (size_t)n_taus * 3 + (size_t)k];
            if (!rc) {
                float alpha;
                int best = pick_tau(tot, n_taus, j.tensor_scale, &alpha);
                tau_row[0] = taus[best];
                scales[0] = alpha;
            }
            free(tot);
        } else {
            for (int64_t r = 0; r < rows; r++) {
                float alpha;
                int best = pick_tau(j.abc + (size_t)r * (size_t)n_taus * 3, n_taus, scales[r], &alpha);
                j.rowsum[r] = scales[r]; /* keep s0 for the threshold */
                tau_row[r] = taus[best];
                scales[r] = alpha;
            }
        }
    }
    if (!rc) {
        j.chosen_tau = tau_row;
        run_rows(&j, pass_refine_codes, p->threads);
        if (st) finish_stats(&j, st);
        if (chosen_tau) memcpy(chosen_tau, tau_row, (size_t)(p->per_tensor ? 1 : rows) * sizeof *tau_row);
    }
    free(tau_row);
    job_free(&j);
    return rc;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static void dequant_scalar(const int8_t *codes, uint16_t h, int64_t cols, uint16_t *dst)
{
    uint16_t nh = (uint16_t)(h ^ 0x8000u);
    for (int64_t c = 0; c < cols; c++) dst[c] = codes[c] > 0 ? h : codes[c] < 0 ? nh : 0;
}

__attribute__((target("avx2")))
static void dequant_avx2(const int8_t *codes, uint16_t h, int64_t cols, uint16_t *dst)
{
    const __m256i vh = _mm256_set1_epi16((short)h), vnh = _mm256_set1_epi16((short)(h ^ 0x8000u));
    const __m256i zero = _mm256_setzero_si256();
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        __m256i q = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(codes + c)));
        __m256i pos = _mm256_cmpgt_epi16(q, zero), neg = _mm256_cmpgt_epi16(zero, q);
        __m256i v = _mm256_or_si256(_mm256_and_si256(pos, vh), _mm256_and_si256(neg, vnh));
        _mm256_storeu_si256((__m256i *)(dst + c), v);
    }
    dequant_scalar(codes + c, h, cols - c, dst + c);
}

void bn_quant_dequant_row_f16_isa(const int8_t *codes, float scale, int64_t cols, uint16_t *dst, bn_isa isa)
{
    uint16_t h = bn_f32_to_f16(scale);
    if (resolve_isa(isa) != BN_ISA_SCALAR) dequant_avx2(codes, h, cols, dst); /* AVX-512 machines have AVX2 */
    else dequant_scalar(codes, h, cols, dst);
}

void bn_quant_dequant_row_f16(const int8_t *codes, float scale, int64_t cols, uint16_t *dst)
{
    bn_quant_dequant_row_f16_isa(codes, scale, cols, dst, BN_ISA_AUTO);
}

/* "auto" size table. Smaller models have less redundancy, so they keep more non-zero
 * codes (lower tau); larger ones tolerate more zeros. tau = 0.5 is the paper's rounding.
 *   tiny   < 50M params   tau 0.40
 *   small  < 500M         tau 0.45
 *   medium < 2B           tau 0.50
 *   large  >= 2B          tau 0.55 */
float bn_quant_auto_tau(uint64_t n, const char **category)
{
    const char *c;
    float t;
    if (n < 50000000ull) { c = "tiny"; t = 0.40f; }
    else if (n < 500000000ull) { c = "small"; t = 0.45f; }
    else if (n < 2000000000ull) { c = "medium"; t = 0.50f; }
    else { c = "large"; t = 0.55f; }
    if (category) *category = c;
    return t;
}

void bn_qtensor_free(bn_qtensor *t)
{
    free(t->name);
    free(t->codes);
    free(t->scales);
    memset(t, 0, sizeof *t);
}
