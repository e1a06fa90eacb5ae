/* blas.c - OpenBLAS core type selection and thread count; see blas.h.
 *
 * Why a re-exec: OpenBLAS (DYNAMIC_ARCH) picks its kernels in the library constructor,
 * which runs before main(), reading OPENBLAS_CORETYPE from the environment. Setting the
 * variable later has no effect, and there is no API to switch cores. Re-executing the
 * same binary with the variable set is the one reliable way; it costs a few ms at start.
 * BN_BLAS_REEXEC marks the child so a failed choice never loops.
 */
#include "base/blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/parallel.h"

const char *bn_blas_wanted_core(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

/* How much SIMD an OpenBLAS core name's kernels use: 3 AVX-512, 2 AVX2, 1 AVX, 0 older
 * or unknown (e.g. "Prescott", the generic fallback). */
int bn_blas_core_rank(const char *name)
{
    static const char *const avx512[] = { "SkylakeX", "Cooperlake", "SapphireRapids" };
    static const char *const avx2[] = { "Haswell", "Zen" };
    static const char *const avx[] = { "Sandybridge", "Bulldozer", "Piledriver", "Steamroller",
                                        "Excavator" };
    for (size_t i = 0; i < sizeof avx512 / sizeof *avx512; i++)
        if (!strcasecmp(name, avx512[i])) return 3;
    for (size_t i = 0; i < sizeof avx2 / sizeof *avx2; i++)
        if (!strcasecmp(name, avx2[i])) return 2;
    for (size_t i = 0; i < sizeof avx / sizeof *avx; i++)
        if (!strcasecmp(name, avx[i])) return 1;
    return 0;
}

const char *bn_blas_core_name(void)
{
    const char *n = openblas_get_corename();
    return n ? n : "unknown";
}

void bn_blas_init(int argc, char **argv, int verbose)
{
    (void)argc;
    const char *user = getenv("OPENBLAS_CORETYPE");
    const char *marker = getenv("BN_BLAS_REEXEC");
    if (marker) {
        if (verbose)
            fprintf(stderr, "bitnetd: OpenBLAS core %s (OPENBLAS_CORETYPE=%s for this CPU)\n",
                    bn_blas_core_name(), user ? user : "?");
        unsetenv("BN_BLAS_REEXEC"); /* children we spawn decide for themselves */
        return;
    }
    if (user && *user) {
        if (verbose)
            fprintf(stderr, "bitnetd: OpenBLAS core %s (OPENBLAS_CORETYPE=%s set by the user)\n",
                    bn_blas_core_name(), user);
        return;
    }
    const char *want = bn_blas_wanted_core();
    const char *have = bn_blas_core_name();
    const char *sim = getenv("BN_BLAS_SIMULATE_CORE"); /* tests: pretend OpenBLAS chose this */
    if (sim && *sim) have = sim;
    /* keep OpenBLAS's own pick when it is as strong as ours */
    if (!want || bn_blas_core_rank(have) >= bn_blas_core_rank(want)) {
        if (verbose) fprintf(stderr, "bitnetd: OpenBLAS core %s\n", have);
        return;
    }
    if (setenv("OPENBLAS_CORETYPE", want, 1) != 0 || setenv("BN_BLAS_REEXEC", "1", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    /* exec failed: keep running with OpenBLAS's own choice */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("BN_BLAS_REEXEC");
    if (verbose)
        fprintf(stderr, "bitnetd: OpenBLAS core %s (re-exec for %s failed)\n", have, want);
}

void bn_blas_set_threads(int n)
{
    if (n <= 0) n = bn_cpu_count();
    openblas_set_num_threads(n);
}

int bn_blas_get_threads(void)
{
    return openblas_get_num_threads();
}
