/* cpu.h - CPU feature checks that both gcc and clang can answer (clang 14's
 * __builtin_cpu_supports lacks "f16c", so that one comes from CPUID). */
#ifndef BN_CPU_H
#define BN_CPU_H

#include <stdbool.h>

/* The SIMD paths a kernel module can take. Each module says which CPU features its
 * BN_ISA_AVX512 path needs (quant: F/BW/VL/DQ + F16C; tkernels: VNNI too). */
typedef enum bn_isa { BN_ISA_AUTO = 0, BN_ISA_SCALAR, BN_ISA_AVX2, BN_ISA_AVX512 } bn_isa;

/* "auto", "scalar", "avx2", "avx512". */
const char *bn_isa_name(bn_isa isa);

bool bn_cpu_has_f16c(void);   /* AVX2 + F16C */
bool bn_cpu_has_avx512(void); /* AVX-512 F, BW, VL, DQ */

#endif
