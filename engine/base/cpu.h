/* cpu.h - CPU feature checks that both gcc and clang can answer (clang 14's
 * __builtin_cpu_supports lacks "f16c", so that one comes from CPUID). */
#ifndef BN_CPU_H
#define BN_CPU_H

#include <stdbool.h>

bool bn_cpu_has_f16c(void);   /* AVX2 + F16C */
bool bn_cpu_has_avx512(void); /* AVX-512 F, BW, VL, DQ */

#endif
