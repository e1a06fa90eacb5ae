/* cpu.c - CPU feature checks (see cpu.h). */
#include "cpu.h"

#include <cpuid.h>

static bool cpuid_bit(unsigned leaf, unsigned sub, int reg, int bit)
{
    unsigned r[4] = { 0 };
    if ((unsigned)__get_cpuid_max(0, 0) < leaf) return false;
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    return (r[reg] >> bit) & 1u;
}

bool bn_cpu_has_f16c(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && cpuid_bit(1, 0, 2, 29);
}

bool bn_cpu_has_sha(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.1") && cpuid_bit(7, 0, 1, 29);
}

bool bn_cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
