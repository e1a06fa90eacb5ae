/* tkernels.c - ternary x int8 GEMV/GEMM: scalar reference, AVX2, AVX-512 VNNI.
 *
 * Layout and arithmetic are described in tkernels.h. Every ISA path computes, for a
 * tile of rows x tokens, the int32 dot sum(u*q) over whole 256-weight blocks, then
 * subtracts the activation row sum and applies the two scales with the same float
 * expression (finish()). The SIMD paths use a 4-row x 4-token micro-tile (weights are
 * unpacked once per tile and reused by 4 tokens) and a 1x1 tile for the edges.
 */
#include "quant/tkernels.h"

#include "base/clock.h"
#include "base/cpu.h"
#include "base/tensor.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "base/parallel.h"

#define TK_ALIGN 64
/* blocks ahead to prefetch in a streamed weight row (GEMV is memory-bound) */
#define TK_PREFETCH 32
/* the micro-tiles' fixed 2/4-trip loops must unroll so accumulators stay in registers */
#define TK_UNROLL _Pragma("GCC unroll 4")

static void *tk_alloc(size_t n)
{
    void *p = NULL;
    if (n >= ((size_t)2 << 20)) return bn_alloc_big(n); /* 2 MB aligned, on huge pages */
    if (n == 0) n = TK_ALIGN;
    if (posix_memalign(&p, TK_ALIGN, (n + TK_ALIGN - 1) / TK_ALIGN * TK_ALIGN) != 0) return NULL;
    return p;
}

/* ---- ISA selection -------------------------------------------------------------- */

int bn_tk_isa_supported(bn_isa isa)
{
    __builtin_cpu_init();
    switch (isa) {
    case BN_ISA_SCALAR: return 1;
    case BN_ISA_AVX2: return __builtin_cpu_supports("avx2");
    case BN_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    case BN_ISA_AUTO: return 1;
    }
    return 0;
}

bn_isa bn_tk_isa_best(void)
{
    if (bn_tk_isa_supported(BN_ISA_AVX512)) return BN_ISA_AVX512;
    if (bn_tk_isa_supported(BN_ISA_AVX2)) return BN_ISA_AVX2;
    return BN_ISA_SCALAR;
}

/* ---- packing -------------------------------------------------------------------- */

size_t bn_tk_matrix_blocks(int rows, int cols)
{
    return rows > 0 && cols > 0 ? (size_t)rows * (size_t)((cols + BN_TK_BLOCK - 1) / BN_TK_BLOCK) : 0;
}

int bn_tk_matrix_pack(bn_tk_matrix *w, const int8_t *codes, const float *scale, int rows,
                      int cols, const char *label, bn_err *err)
{
    return bn_tk_matrix_pack_into(w, NULL, codes, scale, rows, cols, label, err);
}

int bn_tk_matrix_pack_into(bn_tk_matrix *w, bn_tk_block *storage, const int8_t *codes, const float *scale, int rows,
                           int cols, const char *label, bn_err *err)
{
    memset(w, 0, sizeof *w);
    if (rows <= 0 || cols <= 0)
        return bn_err_set(err, BN_EINVAL, "%s: bad shape [%d, %d]", label, rows, cols);
    int nb = (cols + BN_TK_BLOCK - 1) / BN_TK_BLOCK;
    w->borrowed = storage != NULL;
    w->blocks = storage ? storage : tk_alloc((size_t)rows * nb * sizeof(bn_tk_block));
    w->scale = malloc((size_t)rows * sizeof(float));
    if (!w->blocks || !w->scale) {
        bn_tk_matrix_free(w);
        return bn_err_set(err, BN_ENOMEM, "%s: out of memory packing [%d, %d]", label, rows, cols);
    }
    w->rows = rows, w->cols = cols, w->nb = nb;
    /* padding weights get u = 1 (t = 0): 0b01010101 */
    memset(w->blocks, 0x55, (size_t)rows * nb * sizeof(bn_tk_block));
    for (int r = 0; r < rows; r++) {
        const int8_t *c = codes + (size_t)r * cols;
        bn_tk_block *b = w->blocks + (size_t)r * nb;
        for (int k = 0; k < cols; k++) {
            if (c[k] < -1 || c[k] > 1) {
                bn_tk_matrix_free(w);
                return bn_err_set(err, BN_EINVAL, "%s: code %d at [%d, %d] is not ternary",
                                  label, c[k], r, k);
            }
            int i = k % BN_TK_BLOCK, m = i % 64, n = i / 64;
            uint8_t *q = &b[k / BN_TK_BLOCK].qs[m];
            *q = (uint8_t)((*q & ~(3u << (2 * n))) | ((unsigned)(c[k] + 1) << (2 * n)));
        }
        w->scale[r] = scale[r];
    }
    return BN_OK;
}

void bn_tk_matrix_free(bn_tk_matrix *w)
{
    if (!w->borrowed) free(w->blocks);
    free(w->scale);
    memset(w, 0, sizeof *w);
}

int bn_tk_matrix_code(const bn_tk_matrix *w, int r, int c)
{
    const bn_tk_block *b = w->blocks + (size_t)r * w->nb + c / BN_TK_BLOCK;
    int i = c % BN_TK_BLOCK;
    return ((b->qs[i % 64] >> (2 * (i / 64))) & 3) - 1;
}

/* ---- activations ---------------------------------------------------------------- */

int bn_tk_act_init(bn_tk_act *a, int cap, int cols)
{
    memset(a, 0, sizeof *a);
    if (cap <= 0 || cols <= 0) return BN_EINVAL;
    a->nb = (cols + BN_TK_BLOCK - 1) / BN_TK_BLOCK;
    a->cols = cols;
    a->cap = cap;
    a->q = tk_alloc((size_t)cap * a->nb * BN_TK_BLOCK);
    a->scale = malloc((size_t)cap * sizeof(float));
    a->sum = malloc((size_t)cap * sizeof(int32_t));
    if (!a->q || !a->scale || !a->sum) {
        bn_tk_act_free(a);
        return BN_ENOMEM;
    }
    memset(a->q, 0, (size_t)cap * a->nb * BN_TK_BLOCK);
    return BN_OK;
}

void bn_tk_act_free(bn_tk_act *a)
{
    free(a->q);
    free(a->scale);
    free(a->sum);
    memset(a, 0, sizeof *a);
}

/* Round to nearest, ties to even, for |v| <= 2^22 (adding 1.5*2^23 leaves no fraction
 * bits). Same result as nearbyintf in the default rounding mode, without a libm call. */
static inline float round_even(float v)
{
    const float b = 0x1.8p23f; /* not folded away: IEEE semantics (no -ffast-math) */
    return (v + b) - b;
}

/* max |x| over a row and whether every element is finite */
static float row_amax(const float *xr, int cols, int *finite)
{
    float amax = 0.0f;
    int fin = 1;
    for (int k = 0; k < cols; k++) {
        float v = fabsf(xr[k]); /* plain compares: fmaxf is a libm call at -O2 */
        amax = v > amax ? v : amax;
        fin &= v <= FLT_MAX; /* false for NaN and Inf */
    }
    *finite = fin;
    return amax;
}

static int32_t row_codes(const float *xr, int cols, float inv, int8_t *q)
{
    int32_t s = 0;
    for (int k = 0; k < cols; k++) {
        float v = xr[k] * inv;
        v = round_even(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
        q[k] = (int8_t)v;
        s += q[k];
    }
    return s;
}

/* The same operations 16 lanes at a time (IEEE multiply, min/max, round to nearest
 * even): the same codes, bit for bit. */
__attribute__((target("avx512f,avx512bw"))) static float row_amax_avx512(const float *xr, int cols, int *finite)
{
    __m512 m = _mm512_setzero_ps();
    __mmask16 bad = 0;
    const __m512 big = _mm512_set1_ps(FLT_MAX);
    int k = 0;
    for (; k + 16 <= cols; k += 16) {
        __m512 v = _mm512_abs_ps(_mm512_loadu_ps(xr + k));
        bad |= _mm512_cmp_ps_mask(v, big, _CMP_NLE_UQ); /* NaN or Inf */
        m = _mm512_max_ps(m, v);
    }
    if (k < cols) {
        __mmask16 t = (__mmask16)((1u << (cols - k)) - 1);
        __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(t, xr + k));
        bad |= _mm512_cmp_ps_mask(v, big, _CMP_NLE_UQ);
        m = _mm512_max_ps(m, v);
    }
    *finite = bad == 0;
    return _mm512_reduce_max_ps(m);
}

__attribute__((target("avx512f,avx512bw"))) static int32_t row_codes_avx512(const float *xr, int cols, float inv, int8_t *q)
{
    const __m512 vi = _mm512_set1_ps(inv), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    __m512i s = _mm512_setzero_si512();
    for (int k = 0; k < cols; k += 16) {
        __mmask16 t = cols - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - k)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(t, xr + k), vi);
        v = _mm512_roundscale_ps(_mm512_max_ps(_mm512_min_ps(v, hi), lo), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512i c = _mm512_cvtps_epi32(v);
        s = _mm512_add_epi32(s, c);
        _mm512_mask_cvtepi32_storeu_epi8(q + k, t, c);
    }
    return _mm512_reduce_add_epi32(s);
}

void bn_tk_act_quantize_isa(bn_tk_act *a, const float *x, int n, bn_isa isa)
{
    if (isa == BN_ISA_AUTO || !bn_tk_isa_supported(isa)) isa = bn_tk_isa_best();
    int simd = isa == BN_ISA_AVX512;
    size_t stride = (size_t)a->nb * BN_TK_BLOCK;
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * a->cols;
        int8_t *q = a->q + (size_t)t * stride;
        int finite;
        float amax = simd ? row_amax_avx512(xr, a->cols, &finite) : row_amax(xr, a->cols, &finite);
        if (!finite) { /* NaN/Inf never becomes a code: the row's outputs are NaN */
            memset(q, 0, stride);
            a->scale[t] = NAN;
            a->sum[t] = 0;
            continue;
        }
        /* the training path's floor (llama.c, actquant_forward): rows with max|x| below
         * BN_TK_ACT_FLOOR quantize against the floor, not their own maximum */
        if (amax < BN_TK_ACT_FLOOR) amax = BN_TK_ACT_FLOOR;
        float inv = 127.0f / amax;
        a->sum[t] = simd ? row_codes_avx512(xr, a->cols, inv, q) : row_codes(xr, a->cols, inv, q);
        memset(q + a->cols, 0, stride - (size_t)a->cols);
        a->scale[t] = amax / 127.0f;
    }
    a->n = n;
}

void bn_tk_act_quantize(bn_tk_act *a, const float *x, int n)
{
    bn_tk_act_quantize_isa(a, x, n, BN_ISA_AUTO);
}

/* ---- the per-ISA tile kernels ----------------------------------------------------- */

/* A work unit: rows [r0, r1) for all tokens. */
typedef struct tk_job {
    const bn_tk_matrix *w;
    const bn_tk_act *x;
    float *y;
    int r0, r1;
    bn_isa isa;
    bn_tk_rows_fn fn; /* set: a caller's product, fn(arg, r0, r1) instead of the above */
    void *arg;
} tk_job;

static inline float finish(int32_t usum, const bn_tk_matrix *w, const bn_tk_act *x, int r, int t)
{
    return (float)(usum - x->sum[t]) * w->scale[r] * x->scale[t];
}

/* Scalar reference: sum(u*q) over a row's blocks. */
static int32_t dot_scalar(const bn_tk_block *b, const int8_t *q, int nb)
{
    int32_t s = 0;
    for (int j = 0; j < nb; j++, q += BN_TK_BLOCK)
        for (int m = 0; m < 64; m++)
            for (int n = 0; n < 4; n++) s += ((b[j].qs[m] >> (2 * n)) & 3) * q[n * 64 + m];
    return s;
}

static void tile_scalar(const tk_job *jb)
{
    const bn_tk_matrix *w = jb->w;
    const bn_tk_act *x = jb->x;
    size_t qs = (size_t)x->nb * BN_TK_BLOCK;
    for (int t = 0; t < x->n; t++)
        for (int r = jb->r0; r < jb->r1; r++)
            jb->y[(size_t)t * w->rows + r] =
                finish(dot_scalar(w->blocks + (size_t)r * w->nb, x->q + t * qs, w->nb), w, x, r, t);
}

/* AVX2 ---------------------------------------------------------------------------- */

__attribute__((target("avx2"))) static inline int32_t hsum8_avx2(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* acc (i32 x8) += sum over one block of u*q. */
__attribute__((target("avx2"))) static inline __m256i block_avx2(__m256i acc, const uint8_t *wq,
                                                                  const int8_t *q)
{
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    TK_UNROLL
    for (int h = 0; h < 2; h++) {
        __m256i p = _mm256_loadu_si256((const __m256i *)(wq + 32 * h));
        __m256i s16 = _mm256_setzero_si256();
        TK_UNROLL
        for (int n = 0; n < 4; n++) {
            __m256i u = _mm256_and_si256(_mm256_srli_epi16(p, 2 * n), m3);
            __m256i a = _mm256_load_si256((const __m256i *)(q + n * 64 + 32 * h));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u, a));
        }
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(s16, one));
    }
    return acc;
}

/* One row against one token, streaming the row with prefetch. */
__attribute__((target("avx2"))) static int32_t row_avx2(const bn_tk_block *b, const int8_t *q, int nb)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    int j = 0;
    for (; j + 2 <= nb; j += 2) {
        _mm_prefetch((const char *)(b + j + TK_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + j + 1 + TK_PREFETCH), _MM_HINT_T0);
        a0 = block_avx2(a0, b[j].qs, q + (size_t)j * BN_TK_BLOCK);
        a1 = block_avx2(a1, b[j + 1].qs, q + (size_t)(j + 1) * BN_TK_BLOCK);
    }
    if (j < nb) a0 = block_avx2(a0, b[j].qs, q + (size_t)j * BN_TK_BLOCK);
    return hsum8_avx2(_mm256_add_epi32(a0, a1));
}

__attribute__((target("avx2"))) static void tile_avx2(const tk_job *jb)
{
    const bn_tk_matrix *w = jb->w;
    const bn_tk_act *x = jb->x;
    const int nb = w->nb;
    const size_t qs = (size_t)nb * BN_TK_BLOCK;
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    int r = jb->r0;
    /* 2 rows x 2 tokens: each unpacked weight vector feeds 2 maddubs; 4 i16 partial and
     * 4 i32 accumulators stay in the 16 ymm registers */
    for (; r + 2 <= jb->r1; r += 2) {
        int t = 0;
        for (; t + 2 <= x->n; t += 2) {
            __m256i acc[2][2];
            TK_UNROLL
            for (int i = 0; i < 2; i++)
                TK_UNROLL
                for (int k = 0; k < 2; k++) acc[i][k] = _mm256_setzero_si256();
            const uint8_t *w0 = w->blocks[(size_t)r * nb].qs;
            const uint8_t *w1 = w->blocks[(size_t)(r + 1) * nb].qs;
            const int8_t *q0 = x->q + (size_t)t * qs;
            for (int j = 0; j < nb; j++) {
                TK_UNROLL
                for (int h = 0; h < 2; h++) {
                    __m256i p0 = _mm256_loadu_si256((const __m256i *)(w0 + 64 * j + 32 * h));
                    __m256i p1 = _mm256_loadu_si256((const __m256i *)(w1 + 64 * j + 32 * h));
                    __m256i s[2][2];
                    TK_UNROLL
                    for (int k = 0; k < 2; k++) s[0][k] = s[1][k] = _mm256_setzero_si256();
                    TK_UNROLL
                    for (int n = 0; n < 4; n++) {
                        __m256i u0 = _mm256_and_si256(_mm256_srli_epi16(p0, 2 * n), m3);
                        __m256i u1 = _mm256_and_si256(_mm256_srli_epi16(p1, 2 * n), m3);
                        TK_UNROLL
                        for (int k = 0; k < 2; k++) {
                            __m256i a = _mm256_load_si256(
                                (const __m256i *)(q0 + k * qs + (size_t)j * BN_TK_BLOCK + n * 64 + 32 * h));
                            s[0][k] = _mm256_add_epi16(s[0][k], _mm256_maddubs_epi16(u0, a));
                            s[1][k] = _mm256_add_epi16(s[1][k], _mm256_maddubs_epi16(u1, a));
                        }
                    }
                    TK_UNROLL
                    for (int i = 0; i < 2; i++)
                        TK_UNROLL
                        for (int k = 0; k < 2; k++)
                            acc[i][k] = _mm256_add_epi32(acc[i][k], _mm256_madd_epi16(s[i][k], one));
                }
            }
            TK_UNROLL
            for (int i = 0; i < 2; i++)
                TK_UNROLL
                for (int k = 0; k < 2; k++)
                    jb->y[(size_t)(t + k) * w->rows + r + i] = finish(hsum8_avx2(acc[i][k]), w, x, r + i, t + k);
        }
        for (; t < x->n; t++)
            TK_UNROLL
            for (int i = 0; i < 2; i++)
                jb->y[(size_t)t * w->rows + r + i] =
                    finish(row_avx2(w->blocks + (size_t)(r + i) * nb, x->q + (size_t)t * qs, nb), w, x, r + i, t);
    }
    for (; r < jb->r1; r++)
        for (int t = 0; t < x->n; t++)
            jb->y[(size_t)t * w->rows + r] =
                finish(row_avx2(w->blocks + (size_t)r * nb, x->q + (size_t)t * qs, nb), w, x, r, t);
}

/* AVX-512 VNNI -------------------------------------------------------------------- */

#define TK_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* One row against one token, the GEMV case, in 3 instructions per 64 weights instead of
 * 4: the 2-bit field n of each byte is masked in place (no shift), so dpbusd sums
 * 4^n * u * q into accumulator n, and the accumulators are shifted back at the end.
 * Exact: every lane of accumulator n holds a multiple of 4^n (|.| <= 4^n * 2 * 127 * 4
 * per block, no overflow below 2^31 / 2^16 blocks), so the result equals the scalar
 * reference's int32 bit for bit. Two blocks per step: 8 independent dpbusd chains. */
TK_VNNI static int32_t row_vnni(const bn_tk_block *b, const int8_t *q, int nb)
{
    __m512i m[4], a[2][4];
    TK_UNROLL
    for (int n = 0; n < 4; n++) {
        m[n] = _mm512_set1_epi8((char)(3u << (2 * n)));
        a[0][n] = a[1][n] = _mm512_setzero_si512();
    }
    int j = 0;
    for (; j + 2 <= nb; j += 2) {
        _mm_prefetch((const char *)(b + j + TK_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + j + 1 + TK_PREFETCH), _MM_HINT_T0);
        TK_UNROLL
        for (int h = 0; h < 2; h++) {
            __m512i p = _mm512_loadu_si512((const void *)b[j + h].qs);
            const int8_t *qj = q + (size_t)(j + h) * BN_TK_BLOCK;
            TK_UNROLL
            for (int n = 0; n < 4; n++)
                a[h][n] = _mm512_dpbusd_epi32(a[h][n], _mm512_and_si512(p, m[n]), _mm512_load_si512((const void *)(qj + 64 * n)));
        }
    }
    if (j < nb) {
        __m512i p = _mm512_loadu_si512((const void *)b[j].qs);
        const int8_t *qj = q + (size_t)j * BN_TK_BLOCK;
        TK_UNROLL
        for (int n = 0; n < 4; n++)
            a[0][n] = _mm512_dpbusd_epi32(a[0][n], _mm512_and_si512(p, m[n]), _mm512_load_si512((const void *)(qj + 64 * n)));
    }
    __m512i s = _mm512_add_epi32(a[0][0], a[1][0]);
    s = _mm512_add_epi32(s, _mm512_srai_epi32(_mm512_add_epi32(a[0][1], a[1][1]), 2));
    s = _mm512_add_epi32(s, _mm512_srai_epi32(_mm512_add_epi32(a[0][2], a[1][2]), 4));
    s = _mm512_add_epi32(s, _mm512_srai_epi32(_mm512_add_epi32(a[0][3], a[1][3]), 6));
    return _mm512_reduce_add_epi32(s);
}

TK_VNNI static void tile_vnni(const tk_job *jb)
{
    const bn_tk_matrix *w = jb->w;
    const bn_tk_act *x = jb->x;
    const int nb = w->nb;
    const size_t qs = (size_t)nb * BN_TK_BLOCK;
    const __m512i m3 = _mm512_set1_epi8(3);
    int r = jb->r0;
    /* 4 rows x 4 tokens: 16 accumulators, 4 unpacked weights, 4 activations live */
    for (; r + 4 <= jb->r1; r += 4) {
        int t = 0;
        for (; t + 4 <= x->n; t += 4) {
            __m512i acc[4][4];
            TK_UNROLL
            for (int i = 0; i < 4; i++)
                TK_UNROLL
                for (int k = 0; k < 4; k++) acc[i][k] = _mm512_setzero_si512();
            const int8_t *q0 = x->q + (size_t)t * qs;
            for (int j = 0; j < nb; j++) {
                __m512i p[4];
                TK_UNROLL
                for (int i = 0; i < 4; i++)
                    p[i] = _mm512_loadu_si512((const void *)w->blocks[(size_t)(r + i) * nb + j].qs);
                TK_UNROLL
                for (int n = 0; n < 4; n++) {
                    __m512i a[4];
                    TK_UNROLL
                    for (int k = 0; k < 4; k++)
                        a[k] = _mm512_load_si512((const void *)(q0 + k * qs + (size_t)j * BN_TK_BLOCK + n * 64));
                    TK_UNROLL
                    for (int i = 0; i < 4; i++) {
                        __m512i u = _mm512_and_si512(_mm512_srli_epi16(p[i], 2 * n), m3);
                        TK_UNROLL
                        for (int k = 0; k < 4; k++) acc[i][k] = _mm512_dpbusd_epi32(acc[i][k], u, a[k]);
                    }
                }
            }
            TK_UNROLL
            for (int i = 0; i < 4; i++)
                TK_UNROLL
                for (int k = 0; k < 4; k++)
                    jb->y[(size_t)(t + k) * w->rows + r + i] =
                        finish(_mm512_reduce_add_epi32(acc[i][k]), w, x, r + i, t + k);
        }
        for (; t < x->n; t++) {
            /* one token (the GEMV case): rows one after the other, so the weights are
             * read as one sequential stream */
            const int8_t *q = x->q + (size_t)t * qs;
            TK_UNROLL
            for (int i = 0; i < 4; i++)
                jb->y[(size_t)t * w->rows + r + i] = finish(row_vnni(w->blocks + (size_t)(r + i) * nb, q, nb), w, x, r + i, t);
        }
    }
    for (; r < jb->r1; r++)
        for (int t = 0; t < x->n; t++)
            jb->y[(size_t)t * w->rows + r] = finish(row_vnni(w->blocks + (size_t)r * nb, x->q + (size_t)t * qs, nb), w, x, r, t);
}

/* ---- dispatch and threads -------------------------------------------------------- */

static void run_job(const tk_job *jb)
{
    if (jb->fn) {
        if (jb->r1 > jb->r0) jb->fn(jb->arg, jb->r0, jb->r1);
        return;
    }
    switch (jb->isa) {
    case BN_ISA_AVX512: tile_vnni(jb); break;
    case BN_ISA_AVX2: tile_avx2(jb); break;
    default: tile_scalar(jb); break;
    }
}

/* One share of a bn_tk_gemm call, as a bn_parallel_for task. */
static void job_task(void *ctx, int task, int thread)
{
    (void)thread;
    run_job(&((const tk_job *)ctx)[task]);
}

#define TK_MAX_THREADS 64
#define TK_MIN_THREAD_WORK (4.0 * 1024 * 1024)
/* A pool job claims work with one atomic operation instead of starting a thread: it
 * pays from 256K products (~10 us), so a 2048x2048 GEMV splits 8 ways, not 1. */
#define TK_MIN_POOL_WORK (256.0 * 1024)
/* Jobs per pool thread: small ones even out a helper that starts late or gets preempted
 * (a claim costs ~100 ns) */
#define TK_POOL_JOBS 4

/* Splits the rows of one product into at most `jobs` jobs (fewer when the product is
 * small: at least 16 rows and min_work products per job, on multiples of 4 rows).
 * Returns the number of jobs. */
static int split_jobs(const bn_tk_matrix *w, const bn_tk_act *x, float *y, int jobs, double min_work, bn_isa isa,
                      tk_job *out)
{
    if (jobs < 1) jobs = 1;
    if (jobs > TK_MAX_THREADS) jobs = TK_MAX_THREADS;
    int max_t = w->rows / 16;
    double work = (double)w->rows * w->nb * BN_TK_BLOCK * (x->n > 0 ? x->n : 1);
    if (work / min_work < max_t) max_t = (int)(work / min_work);
    if (jobs > max_t) jobs = max_t > 0 ? max_t : 1;
    int per = (w->rows / 4 + jobs - 1) / jobs * 4;
    for (int i = 0; i < jobs; i++) {
        int r0 = i * per, r1 = r0 + per;
        if (r1 > w->rows || i == jobs - 1) r1 = w->rows;
        if (r0 > r1) r0 = r1;
        out[i] = (tk_job){w, x, y, r0, r1, isa, NULL, NULL};
    }
    return jobs;
}

void bn_tk_gemm(const bn_tk_matrix *w, const bn_tk_act *x, float *y, int threads, bn_isa isa)
{
    if (isa == BN_ISA_AUTO || !bn_tk_isa_supported(isa)) isa = bn_tk_isa_best();
    tk_job jobs[TK_MAX_THREADS];
    int n = split_jobs(w, x, y, threads, TK_MIN_THREAD_WORK, isa, jobs);
    bn_parallel_for(n, n, job_task, jobs);
}

/* ---- the pool ------------------------------------------------------------------------ */

/* Pause instructions a waiting thread spins before it gives way (a pause is 10-140
 * cycles depending on the core: a few to a few tens of microseconds in all). Past it a
 * helper sleeps and the caller yields, so a busy machine does not lose a core to
 * spinning. */
#define TK_SPIN 2000
/* products run on the caller alone after a round stalled on a preempted helper */
#define TK_SOLO_ROUNDS 64

typedef struct pool_helper { bn_tk_pool *pool; int index; } pool_helper;

/* Jobs are claimed, not assigned: whoever comes first (the caller included) takes the
 * next unclaimed job of the round, so a helper the OS has not scheduled yet costs the
 * caller nothing but doing that job itself: on busy cores the pool degrades to one
 * thread instead of waiting for a helper. The claim counter carries the round's number,
 * so a helper waking late can never claim a job of a later round by mistake. */
struct bn_tk_pool {
    int threads;                    /* the caller plus the helpers that started */
    int solo;                       /* caller only: rounds to run alone (a helper was preempted) */
    pthread_t tid[TK_MAX_THREADS];
    pool_helper helper[TK_MAX_THREADS];
    tk_job jobs[TK_MAX_THREADS];    /* this round's; written before round is published */
    unsigned round;                 /* atomic: bumped to publish a round */
    uint64_t ticket;                /* atomic: round << 32 | n_jobs << 16 | next unclaimed job */
    int done;                       /* atomic: jobs of this round finished */
    int stop;                       /* atomic */
    pthread_mutex_t mu;             /* guards sleeping on cv */
    pthread_cond_t cv;
};

/* The index of an unclaimed job of round gen, or -1. */
static int claim(bn_tk_pool *p, unsigned gen)
{
    uint64_t t = __atomic_load_n(&p->ticket, __ATOMIC_ACQUIRE);
    for (;;) {
        int n = (int)((t >> 16) & 0xffff), i = (int)(t & 0xffff);
        if ((unsigned)(t >> 32) != gen || i >= n) return -1;
        if (__atomic_compare_exchange_n(&p->ticket, &t, t + 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return i;
    }
}

static void run_claims(bn_tk_pool *p, unsigned gen)
{
    for (int i; (i = claim(p, gen)) >= 0;) {
        run_job(&p->jobs[i]);
        __atomic_fetch_add(&p->done, 1, __ATOMIC_RELEASE);
    }
}

static unsigned wait_round(bn_tk_pool *p, unsigned seen)
{
    for (int i = 0; i < TK_SPIN; i++) {
        unsigned r = __atomic_load_n(&p->round, __ATOMIC_ACQUIRE);
        if (r != seen) return r;
        _mm_pause();
    }
    pthread_mutex_lock(&p->mu);
    unsigned r;
    while ((r = __atomic_load_n(&p->round, __ATOMIC_ACQUIRE)) == seen) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return r;
}

static void *pool_thread(void *arg)
{
    pool_helper *h = arg;
    bn_tk_pool *p = h->pool;
    unsigned seen = 0;
    for (;;) {
        seen = wait_round(p, seen);
        if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) return NULL;
        run_claims(p, seen);
    }
}

/* Publishes a round of n jobs (already written) and wakes sleeping helpers; returns its
 * number. */
static unsigned start_round(bn_tk_pool *p, int n)
{
    unsigned gen = __atomic_load_n(&p->round, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(&p->done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&p->ticket, (uint64_t)gen << 32 | (uint64_t)n << 16, __ATOMIC_RELEASE);
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->round, gen, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return gen;
}

/* The caller's part of a round: claims jobs until none is left, then waits for the ones
 * helpers are running. */
static void finish_round(bn_tk_pool *p, unsigned gen, int n)
{
    double t0 = bn_clock_mono_s();
    run_claims(p, gen);
    double t1 = bn_clock_mono_s();
    int waited = 0;
    for (int i = 0; __atomic_load_n(&p->done, __ATOMIC_ACQUIRE) < n; i++) {
        if (i < TK_SPIN) _mm_pause();
        else sched_yield();
        waited = 1;
    }
    /* A helper that holds one job for longer than the caller took for all of its own
     * (and 100 us) was preempted: another process has its core. Rounds then stall for
     * a time slice each, so the next TK_SOLO_ROUNDS products run on the caller alone
     * (a token is ~90 rounds for a 22-layer model), then the helpers are tried again. */
    if (waited && bn_clock_mono_s() - t1 > 2 * (t1 - t0) + 100e-6) p->solo = TK_SOLO_ROUNDS;
}

/* true (and one fewer solo round left) when this product runs on the caller alone */
static int pool_solo(bn_tk_pool *p)
{
    if (p->solo <= 0) return 0;
    p->solo--;
    return 1;
}

int bn_tk_pool_new(int threads, bn_tk_pool **out)
{
    *out = NULL;
    bn_tk_pool *p = calloc(1, sizeof *p);
    if (!p) return BN_ENOMEM;
    if (threads < 1) threads = 1;
    if (threads > TK_MAX_THREADS) threads = TK_MAX_THREADS;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = 1;
    for (int i = 1; i < threads; i++) {
        p->helper[i] = (pool_helper){ p, i };
        if (pthread_create(&p->tid[i], NULL, pool_thread, &p->helper[i]) != 0) break;
        p->threads++;
    }
    *out = p;
    return BN_OK;
}

void bn_tk_pool_free(bn_tk_pool *p)
{
    if (!p) return;
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
    start_round(p, 0);
    for (int i = 1; i < p->threads; i++) pthread_join(p->tid[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int bn_tk_pool_threads(const bn_tk_pool *p) { return p ? p->threads : 1; }

void bn_tk_gemm_pool(const bn_tk_matrix *w, const bn_tk_act *x, float *y, bn_tk_pool *p, bn_isa isa)
{
    if (isa == BN_ISA_AUTO || !bn_tk_isa_supported(isa)) isa = bn_tk_isa_best();
    tk_job alone;
    int threads = bn_tk_pool_threads(p);
    tk_job *jobs = threads > 1 ? p->jobs : &alone;
    /* more jobs than threads: a helper that starts late still takes a share, and the
     * last job to finish is short */
    if (threads > 1 && pool_solo(p)) threads = 1, jobs = &alone;
    int n = split_jobs(w, x, y, threads > 1 ? TK_POOL_JOBS * threads : 1, TK_MIN_POOL_WORK, isa, jobs);
    if (n == 1) { /* no helpers, or too small to share: the helpers keep waiting */
        run_job(&jobs[0]);
        return;
    }
    finish_round(p, start_round(p, n), n);
}

void bn_tk_gemv(const bn_tk_matrix *w, const bn_tk_act *x, float *y, int threads, bn_isa isa)
{
    bn_tk_act one = *x;
    one.n = 1;
    bn_tk_gemm(w, &one, y, threads, isa);
}

int bn_tk_linear(const bn_tk_matrix *w, bn_tk_act *a, const float *x, int n, float *y, int threads)
{
    if (!a->q || a->cap < n || a->cols != w->cols) {
        bn_tk_act_free(a);
        int rc = bn_tk_act_init(a, n, w->cols);
        if (rc) return rc;
    }
    bn_tk_act_quantize(a, x, n);
    bn_tk_gemm(w, a, y, threads, BN_ISA_AUTO);
    return BN_OK;
}

void bn_tk_pool_rows(bn_tk_pool *p, int rows, bn_tk_rows_fn fn, void *arg)
{
    int threads = bn_tk_pool_threads(p);
    if (threads == 1 || rows < 32 || pool_solo(p)) {
        fn(arg, 0, rows);
        return;
    }
    int n = TK_POOL_JOBS * threads < TK_MAX_THREADS ? TK_POOL_JOBS * threads : TK_MAX_THREADS;
    if (n > rows / 16) n = rows / 16;
    int per = (rows / 16 + n - 1) / n * 16;
    for (int i = 0; i < n; i++) {
        int r0 = i * per, r1 = r0 + per;
        if (r1 > rows || i == n - 1) r1 = rows;
        if (r0 > r1) r0 = r1;
        p->jobs[i] = (tk_job){NULL, NULL, NULL, r0, r1, BN_ISA_AUTO, fn, arg};
    }
    finish_round(p, start_round(p, n), n);
}

/* ---- F16 x FP32 GEMV (LM head) ------------------------------------------------------ */

static void f16_rows_scalar(const uint16_t *w, int cols, const float *x, float *y, int r0, int r1)
{
    for (int r = r0; r < r1; r++) {
        const uint16_t *wr = w + (size_t)r * cols;
        double s = 0;
        for (int k = 0; k < cols; k++) s += (double)bn_f16_to_f32(wr[k]) * x[k];
        y[r] = (float)s;
    }
}

__attribute__((target("avx2,f16c,fma"))) static void f16_rows_avx2(const uint16_t *w, int cols, const float *x,
                                                                   float *y, int r0, int r1)
{
    for (int r = r0; r < r1; r++) {
        const uint16_t *wr = w + (size_t)r * cols;
        __m256 a = _mm256_setzero_ps(), b = a;
        int k = 0;
        for (; k + 16 <= cols; k += 16) {
            a = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + k))), _mm256_loadu_ps(x + k), a);
            b = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + k + 8))),
                                _mm256_loadu_ps(x + k + 8), b);
        }
        a = _mm256_add_ps(a, b);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        float s = _mm_cvtss_f32(h);
        for (; k < cols; k++) s += bn_f16_to_f32(wr[k]) * x[k];
        y[r] = s;
    }
}

/* Two rows at a time so each x load feeds two FMAs. */
__attribute__((target("avx512f"))) static void f16_rows_avx512(const uint16_t *w, int cols, const float *x,
                                                               float *y, int r0, int r1)
{
    int r = r0;
    for (; r + 2 <= r1; r += 2) {
        const uint16_t *w0 = w + (size_t)r * cols, *w1 = w0 + cols;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        int k = 0;
        for (; k + 16 <= cols; k += 16) {
            __m512 xv = _mm512_loadu_ps(x + k);
            _mm_prefetch((const char *)(w0 + k + 512), _MM_HINT_T0);
            _mm_prefetch((const char *)(w1 + k + 512), _MM_HINT_T0);
            a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w0 + k))), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w1 + k))), xv, a1);
        }
        float s0 = _mm512_reduce_add_ps(a0), s1 = _mm512_reduce_add_ps(a1);
        for (; k < cols; k++) s0 += bn_f16_to_f32(w0[k]) * x[k], s1 += bn_f16_to_f32(w1[k]) * x[k];
        y[r] = s0, y[r + 1] = s1;
    }
    if (r < r1) f16_rows_avx2(w, cols, x, y, r, r1);
}

void bn_tk_f16_gemv_rows(const uint16_t *w, int cols, const float *x, float *y, int r0, int r1, bn_isa isa)
{
    if (isa == BN_ISA_AUTO || !bn_tk_isa_supported(isa)) isa = bn_tk_isa_best();
    switch (isa) {
    case BN_ISA_AVX512: f16_rows_avx512(w, cols, x, y, r0, r1); break;
    case BN_ISA_AVX2:
        if (bn_cpu_has_f16c() && __builtin_cpu_supports("fma")) {
            f16_rows_avx2(w, cols, x, y, r0, r1);
            break;
        }
        /* fall through */
    default: f16_rows_scalar(w, cols, x, y, r0, r1); break;
    }
}

/* ---- int8 (Q8, blocks of 32) x int16 GEMV (LM head) ------------------------------------ */

int bn_tk_act16_init(bn_tk_act16 *a, int cols)
{
    memset(a, 0, sizeof *a);
    if (cols <= 0) return BN_EINVAL;
    size_t n = (size_t)(cols + BN_TK_Q8_BLOCK - 1) / BN_TK_Q8_BLOCK * BN_TK_Q8_BLOCK;
    a->q = tk_alloc(n * sizeof(int16_t));
    if (!a->q) return BN_ENOMEM;
    memset(a->q, 0, n * sizeof(int16_t));
    a->cols = cols;
    return BN_OK;
}

void bn_tk_act16_free(bn_tk_act16 *a)
{
    free(a->q);
    memset(a, 0, sizeof *a);
}

void bn_tk_act16_quantize(bn_tk_act16 *a, const float *x)
{
    float amax = 0;
    int finite = 1;
    for (int k = 0; k < a->cols; k++) {
        float v = fabsf(x[k]);
        amax = v > amax ? v : amax;
        finite &= v <= FLT_MAX;
    }
    if (!finite || amax == 0) {
        memset(a->q, 0, sizeof(int16_t) * (size_t)a->cols);
        a->scale = finite ? 0.0f : NAN;
        return;
    }
    float inv = 32767.0f / amax;
    for (int k = 0; k < a->cols; k++) {
        float v = x[k] * inv;
        a->q[k] = (int16_t)round_even(v > 32767.0f ? 32767.0f : v < -32767.0f ? -32767.0f : v);
    }
    a->scale = amax / 32767.0f;
}

int bn_tk_q8_pack(bn_tk_q8_matrix *q, const float *w, int rows, int cols, const char *label, bn_err *err)
{
    memset(q, 0, sizeof *q);
    if (rows <= 0 || cols <= 0) return bn_err_set(err, BN_EINVAL, "%s: bad shape [%d, %d]", label, rows, cols);
    int nb = (cols + BN_TK_Q8_BLOCK - 1) / BN_TK_Q8_BLOCK;
    q->blocks = tk_alloc((size_t)rows * nb * sizeof(bn_tk_q8_block));
    if (!q->blocks) return bn_err_set(err, BN_ENOMEM, "%s: out of memory packing [%d, %d]", label, rows, cols);
    q->rows = rows, q->cols = cols, q->nb = nb;
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nb; b++) {
            const float *src = w + (size_t)r * cols + (size_t)b * BN_TK_Q8_BLOCK;
            int n = cols - b * BN_TK_Q8_BLOCK < BN_TK_Q8_BLOCK ? cols - b * BN_TK_Q8_BLOCK : BN_TK_Q8_BLOCK;
            bn_tk_q8_block *blk = &q->blocks[(size_t)r * nb + b];
            float amax = 0;
            for (int i = 0; i < n; i++) {
                float v = fabsf(src[i]);
                if (!(v <= FLT_MAX)) {
                    bn_tk_q8_free(q);
                    return bn_err_set(err, BN_EINVAL, "%s: non-finite weight at [%d, %d]", label, r,
                                      b * BN_TK_Q8_BLOCK + i);
                }
                amax = v > amax ? v : amax;
            }
            blk->d = amax / 127.0f;
            float inv = amax > 0 ? 127.0f / amax : 0.0f;
            memset(blk->qs, 0, sizeof blk->qs);
            for (int i = 0; i < n; i++) {
                float v = src[i] * inv;
                blk->qs[i] = (int8_t)round_even(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
            }
        }
    return BN_OK;
}

void bn_tk_q8_free(bn_tk_q8_matrix *q)
{
    free(q->blocks);
    memset(q, 0, sizeof *q);
}

static void q8_rows_scalar(const bn_tk_q8_matrix *q, const bn_tk_act16 *x, float *y, int r0, int r1)
{
    for (int r = r0; r < r1; r++) {
        const bn_tk_q8_block *b = q->blocks + (size_t)r * q->nb;
        float s = 0;
        for (int j = 0; j < q->nb; j++) {
            const int16_t *xb = x->q + (size_t)j * BN_TK_Q8_BLOCK;
            int32_t t = 0;
            for (int i = 0; i < BN_TK_Q8_BLOCK; i++) t += b[j].qs[i] * xb[i];
            s += b[j].d * (float)t;
        }
        y[r] = s * x->scale;
    }
}

__attribute__((target("avx2,fma"))) static void q8_rows_avx2(const bn_tk_q8_matrix *q, const bn_tk_act16 *x, float *y,
                                                             int r0, int r1)
{
    for (int r = r0; r < r1; r++) {
        const bn_tk_q8_block *b = q->blocks + (size_t)r * q->nb;
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < q->nb; j++) {
            const int16_t *xb = x->q + (size_t)j * BN_TK_Q8_BLOCK;
            __m256i p0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b[j].qs)),
                                           _mm256_load_si256((const __m256i *)xb));
            __m256i p1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b[j].qs + 16))),
                                           _mm256_load_si256((const __m256i *)(xb + 16)));
            /* |lane| <= 4 * 127 * 32767 < 2^24: exact in int32 and as a float */
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(p0, p1)), _mm256_broadcast_ss(&b[j].d), acc);
        }
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        y[r] = _mm_cvtss_f32(h) * x->scale;
    }
}

/* One row at a time: the rows are contiguous, so the weights are one sequential stream
 * and the prefetch (~2 KB ahead) runs on into the next row; the activations (2 bytes a
 * column) stay in L1. Two accumulators hide the FMA latency. */
#define TK_Q8_PREFETCH 56
__attribute__((target("avx512f,avx512bw"))) static void q8_rows_avx512(const bn_tk_q8_matrix *q, const bn_tk_act16 *x,
                                                                      float *y, int r0, int r1)
{
    for (int r = r0; r < r1; r++) {
        const bn_tk_q8_block *b = q->blocks + (size_t)r * q->nb;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        int j = 0;
        for (; j + 2 <= q->nb; j += 2) {
            _mm_prefetch((const char *)(b + j + TK_Q8_PREFETCH), _MM_HINT_T0);
            _mm_prefetch((const char *)(b + j + TK_Q8_PREFETCH) + 64, _MM_HINT_T0);
            __m512i p0 = _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)b[j].qs)),
                                           _mm512_load_si512((const void *)(x->q + (size_t)j * BN_TK_Q8_BLOCK)));
            __m512i p1 = _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)b[j + 1].qs)),
                                           _mm512_load_si512((const void *)(x->q + (size_t)(j + 1) * BN_TK_Q8_BLOCK)));
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), _mm512_set1_ps(b[j].d), a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), _mm512_set1_ps(b[j + 1].d), a1);
        }
        if (j < q->nb) {
            __m512i p0 = _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)b[j].qs)),
                                           _mm512_load_si512((const void *)(x->q + (size_t)j * BN_TK_Q8_BLOCK)));
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), _mm512_set1_ps(b[j].d), a0);
        }
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) * x->scale;
    }
}

void bn_tk_q8_gemv_rows(const bn_tk_q8_matrix *q, const bn_tk_act16 *x, float *y, int r0, int r1, bn_isa isa)
{
    if (isa == BN_ISA_AUTO || !bn_tk_isa_supported(isa)) isa = bn_tk_isa_best();
    if (isa == BN_ISA_AVX512) q8_rows_avx512(q, x, y, r0, r1);
    else if (isa == BN_ISA_AVX2 && __builtin_cpu_supports("fma")) q8_rows_avx2(q, x, y, r0, r1);
    else q8_rows_scalar(q, x, y, r0, r1);
}
