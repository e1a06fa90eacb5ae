/* tensor.h - element types and conversions between them.
 *
 * bitnetd computes in FP32 and stores in FP16/BF16/packed ternary. Conversions are
 * exact where the format allows (f16/bf16 -> f32) and round-to-nearest-even otherwise.
 */
#ifndef BN_TENSOR_H
#define BN_TENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum bn_dtype {
    BN_DTYPE_F32 = 0,
    BN_DTYPE_F16,
    BN_DTYPE_BF16,
    BN_DTYPE_I8,
    BN_DTYPE_U8,
    BN_DTYPE_I16,
    BN_DTYPE_I32,
    BN_DTYPE_I64,
    BN_DTYPE_F64,
    BN_DTYPE_BOOL,
    BN_DTYPE_COUNT
} bn_dtype;

size_t bn_dtype_size(bn_dtype t);
const char *bn_dtype_name(bn_dtype t);          /* safetensors spelling: "F32", "BF16", ... */
int bn_dtype_parse(const char *s, bn_dtype *out); /* 0 on success, -1 if unknown */
int bn_dtype_is_float(bn_dtype t);

uint16_t bn_f32_to_f16(float f);
float bn_f16_to_f32(uint16_t h);
uint16_t bn_f32_to_bf16(float f);
float bn_bf16_to_f32(uint16_t h);

/* dst[0..n) = src converted to f32; src is F32, F16 or BF16. Returns -1 for other types. */
int bn_to_f32(const void *src, bn_dtype t, float *dst, size_t n);
void bn_f32_to_f16_array(const float *src, uint16_t *dst, size_t n);
/* dst[0..n) = src (F32, F16 or BF16) rounded to F16 (F16 is copied unchanged). */
void bn_to_f16(const void *src, bn_dtype t, uint16_t *dst, size_t n);

/* Index of the first NaN or Inf among n values of a float type (F32, F16, BF16, F64),
 * from the exponent bits; -1 when all are finite or the type is not a float type. */
int64_t bn_first_nonfinite(const void *src, bn_dtype t, size_t n);

/* A large buffer that is filled once and kept (ternary codes): at 2 MiB or more it is
 * 2 MiB-aligned and asks for transparent huge pages, so filling it costs one page fault
 * per 2 MiB instead of 512 (page faults are what filling fresh memory costs, most of all
 * in a virtual machine). Release with free(); NULL when out of memory. */
void *bn_alloc_big(size_t n);

#endif
