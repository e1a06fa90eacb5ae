/* blas.h - make OpenBLAS use the right kernels for this CPU, and size its threads.
 *
 * Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not recognise some recent CPUs and falls
 * back to its generic "Prescott" kernels (sgemm 4-5x slower). The core type is fixed by
 * OpenBLAS's constructor, which runs when the library is loaded, before main(). So
 * bn_blas_init() is called first thing in main(): if OPENBLAS_CORETYPE is unset it
 * detects the CPU features (AVX-512 -> SkylakeX, AVX2 -> Haswell, else leave OpenBLAS's
 * choice), sets the variable and re-executes the program (/proc/self/exe, same argv),
 * once (a marker variable prevents loops). A user-set OPENBLAS_CORETYPE is respected.
 * OpenBLAS's own pick is kept when it is as strong as ours (e.g. Cooperlake). Tests can
 * set BN_BLAS_SIMULATE_CORE=Prescott to exercise the re-exec on any machine.
 */
#ifndef BN_BLAS_H
#define BN_BLAS_H

/* Call first in main(). May not return (re-exec). Never fails: if re-exec is impossible
 * it continues with OpenBLAS's own choice. Logs one line to stderr when verbose. */
void bn_blas_init(int argc, char **argv, int verbose);
/* The core type we would choose for this CPU ("SkylakeX", "Haswell" or NULL). */
const char *bn_blas_wanted_core(void);
/* SIMD class of an OpenBLAS core name: 3 AVX-512, 2 AVX2, 1 AVX, 0 older/unknown. */
int bn_blas_core_rank(const char *name);
/* openblas_get_corename() */
const char *bn_blas_core_name(void);
/* OpenBLAS threads (n <= 0: all cores). */
void bn_blas_set_threads(int n);
int bn_blas_get_threads(void);

#endif
