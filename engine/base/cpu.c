/* cpu.c - CPU feature checks (see cpu.h).
 *
 * CPUID is slow inside a virtual machine (every execution traps to the hypervisor), and
 * the dispatchers ask per row, so each answer is computed once and cached. The cache is
 * a relaxed atomic: two threads racing on the first call compute the same value. */
#include "base/cpu.h"

#include <cpuid.h>

static bool cpuid_bit(unsigned leaf, unsigned sub, int reg, int bit)
{
    unsigned r[4] = { 0 };
    if ((unsigned)__get_cpuid_max(0, 0) < leaf) return false;
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    return (r[reg] >> bit) & 1u;
}

static bool detect_f16c(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && cpuid_bit(1, 0, 2, 29);
}

static bool detect_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

/* cache: -1 unknown, else 0/1 */
static bool cached(int *slot, bool (*detect)(void))
{
    int v = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (v < 0) {
        v = detect();
        __atomic_store_n(slot, v, __ATOMIC_RELAXED);
    }
    return v;
}

static int has_f16c = -1, has_avx512 = -1;

bool bn_cpu_has_f16c(void) { return cached(&has_f16c, detect_f16c); }
bool bn_cpu_has_avx512(void) { return cached(&has_avx512, detect_avx512); }

const char *bn_isa_name(bn_isa isa)
{
    static const char *const names[] = { "auto", "scalar", "avx2", "avx512" };
    return (unsigned)isa < sizeof names / sizeof names[0] ? names[isa] : "?";
}
