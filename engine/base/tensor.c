/* tensor.c - element types and conversions (see tensor.h).
 *
 * The scalar conversions are the reference: f16/bf16 -> f32 is exact, f32 -> f16/bf16
 * rounds to nearest even, keeps signed zeros and infinities, and turns NaN into a quiet
 * NaN that keeps the top payload bits (the same answer as the F16C instructions).
 * The array conversions use F16C (AVX2 machines) or AVX-512 when the CPU has them and
 * agree bit for bit with the scalar code (tests/formats/test_io.c checks all 65536
 * half values and a sweep of floats).
 */
#include "base/tensor.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/cpu.h"

static const struct { const char *name; size_t size; int is_float; } dtype_info[BN_DTYPE_COUNT] = {
    [BN_DTYPE_F32] = { "F32", 4, 1 },  [BN_DTYPE_F16] = { "F16", 2, 1 },
    [BN_DTYPE_BF16] = { "BF16", 2, 1 }, [BN_DTYPE_I8] = { "I8", 1, 0 },
    [BN_DTYPE_U8] = { "U8", 1, 0 },    [BN_DTYPE_I16] = { "I16", 2, 0 },
    [BN_DTYPE_I32] = { "I32", 4, 0 },  [BN_DTYPE_I64] = { "I64", 8, 0 },
    [BN_DTYPE_F64] = { "F64", 8, 1 },  [BN_DTYPE_BOOL] = { "BOOL", 1, 0 },
};

size_t bn_dtype_size(bn_dtype t)
{
    return (unsigned)t < BN_DTYPE_COUNT ? dtype_info[t].size : 0;
}

const char *bn_dtype_name(bn_dtype t)
{
    return (unsigned)t < BN_DTYPE_COUNT ? dtype_info[t].name : "?";
}

int bn_dtype_parse(const char *s, bn_dtype *out)
{
    for (int i = 0; i < BN_DTYPE_COUNT; i++) {
        if (s && strcmp(s, dtype_info[i].name) == 0) {
            *out = (bn_dtype)i;
            return 0;
        }
    }
    return -1;
}

int bn_dtype_is_float(bn_dtype t)
{
    return (unsigned)t < BN_DTYPE_COUNT ? dtype_info[t].is_float : 0;
}

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

uint16_t bn_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t mant = x & 0x7fffffu;
    if (exp == 0xff) { /* inf or NaN */
        if (mant == 0) return sign | 0x7c00u;
        return (uint16_t)(sign | 0x7e00u | (mant >> 13));
    }
    int e = (int)exp - 127 + 15;
    if (e >= 31) return sign | 0x7c00u; /* overflow -> inf */
    if (e <= 0) {                        /* subnormal half or zero */
        if (e < -10) return sign;        /* below half the smallest subnormal */
        uint32_t m = mant | 0x800000u;   /* implicit bit */
        int shift = 14 - e;              /* 14..24 */
        uint32_t h = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* may carry into exp: ok */
    return (uint16_t)(sign | h);
}

float bn_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant ? 0x400000u | (mant << 13) : 0));
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign);
        int e = -1; /* normalise the subnormal */
        do { e++; mant <<= 1; } while (!(mant & 0x400u));
        return bits_f32(sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13));
    }
    return bits_f32(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

uint16_t bn_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return (uint16_t)(x >> 16);
}

float bn_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

/* ---- arrays ------------------------------------------------------------------- */

static void f16_to_f32_scalar(const uint8_t *src, float *dst, size_t i, size_t n)
{
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = bn_f16_to_f32(h);
    }
}

__attribute__((target("avx2,f16c")))
static void f16_to_f32_f16c(const uint8_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    f16_to_f32_scalar(src, dst, i, n);
}

__attribute__((target("avx2,f16c")))
static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) dst[i] = bn_f32_to_f16(src[i]);
}

int bn_to_f32(const void *src, bn_dtype t, float *dst, size_t n)
{
    const uint8_t *s = src;
    switch (t) {
    case BN_DTYPE_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case BN_DTYPE_F16:
        if (bn_cpu_has_f16c()) f16_to_f32_f16c(s, dst, n);
        else f16_to_f32_scalar(s, dst, 0, n);
        return 0;
    case BN_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = bn_bf16_to_f32(h);
        }
        return 0;
    default:
        return -1;
    }
}

void bn_f32_to_f16_array(const float *src, uint16_t *dst, size_t n)
{
    if (bn_cpu_has_f16c()) {
        f32_to_f16_f16c(src, dst, n);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = bn_f32_to_f16(src[i]);
}

void bn_to_f16(const void *src, bn_dtype t, uint16_t *dst, size_t n)
{
    const uint8_t *s = src;
    if (t == BN_DTYPE_F16) {
        memcpy(dst, src, n * 2);
        return;
    }
    float buf[256];
    for (size_t i = 0; i < n; i += 256) {
        size_t k = n - i < 256 ? n - i : 256;
        bn_to_f32(s + i * bn_dtype_size(t), t, buf, k);
        bn_f32_to_f16_array(buf, dst + i, k);
    }
}

/* ---- big buffers ---------------------------------------------------------------- */

void *bn_alloc_big(size_t n)
{
    const size_t huge = (size_t)2 << 20;
    if (n < huge) return malloc(n ? n : 1);
    void *p = aligned_alloc(huge, (n + huge - 1) / huge * huge);
    if (p) madvise(p, n, MADV_HUGEPAGE); /* advice only: a kernel without THP ignores it */
    return p;
}

/* Elements are read with memcpy: a tensor inside a safetensors mmap need not be aligned. */
int64_t bn_first_nonfinite(const void *src, bn_dtype t, size_t n)
{
    const unsigned char *b = src;
    switch (t) {
    case BN_DTYPE_F32:
        for (size_t i = 0; i < n; i++) { /* exponent all ones: Inf or NaN */
            uint32_t v;
            memcpy(&v, b + 4 * i, 4);
            if ((v & 0x7f800000u) == 0x7f800000u) return (int64_t)i;
        }
        return -1;
    case BN_DTYPE_F16:
    case BN_DTYPE_BF16: {
        uint16_t mask = t == BN_DTYPE_F16 ? 0x7c00u : 0x7f80u;
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, b + 2 * i, 2);
            if ((v & mask) == mask) return (int64_t)i;
        }
        return -1;
    }
    case BN_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            memcpy(&v, b + 8 * i, 8);
            if ((v & 0x7ff0000000000000ull) == 0x7ff0000000000000ull) return (int64_t)i;
        }
        return -1;
    default:
        return -1;
    }
}
