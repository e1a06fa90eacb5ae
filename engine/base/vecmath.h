/* vecmath.h - vectorised elementwise math for the FP32 numerics.
 *
 * bn_vexp computes exp over an array with a Cephes-style range reduction (x = n ln2 + r,
 * |r| <= ln2/2) and a degree-6 polynomial: within 2 ulp of expf for x >= -87.3, exactly 0
 * below (softmax underflow), +inf above 88.37 (expf is finite up to 88.72, but no
 * caller gets there: softmax arguments are <= 0, sigmoid saturates). One scalar
 * reference and AVX2 / AVX-512 versions of the same algorithm, picked at run time;
 * tests check they agree.
 * bn_vmax returns the largest element (n >= 1).
 * bn_vdot / bn_vaxpy: FP32 dot product and y += a*x for the decoder's attention over its
 * KV cache; the SIMD paths sum in 16 (8) lanes with FMA, so they agree with the scalar
 * reference to float rounding, not bit for bit.
 */
#ifndef BN_VECMATH_H
#define BN_VECMATH_H

#include <stddef.h>

void bn_vexp(float *x, size_t n);                /* x[i] = exp(x[i]) */
float bn_vexp_sub_sum(float *x, size_t n, float m); /* x[i] = exp(x[i] - m); returns sum */
float bn_vmax(const float *x, size_t n);
/* Index of the largest element, the first one on ties (n >= 1): greedy decoding, agreement. */
int bn_vargmax(const float *x, int n);

float bn_vdot(const float *a, const float *b, size_t n);  /* sum a[i]*b[i] */
void bn_vaxpy(float *y, float a, const float *x, size_t n); /* y[i] += a*x[i] */

/* The scalar reference (tests). */
void bn_vexp_ref(float *x, size_t n);
/* 0 = scalar, 1 = AVX2, 2 = AVX-512: the path in use; bn_vecmath_force sets it (tests). */
int bn_vecmath_level(void);
void bn_vecmath_force(int level);

#endif
