/* kernel_speedup.h - the evaluate stage's measured kernel speedup (kernel_speedup.c). */
#ifndef BN_TK_STAGE_H
#define BN_TK_STAGE_H

#include "stages/job.h"

/* Times the model's projection shapes with the ternary kernel vs FP32 OpenBLAS and
 * records compression/measured_speedup_gemv and compression/measured_speedup_gemm (or
 * an event saying why not). Returns 0 or the error code. */
int bn_tk_job_speedup(bn_job_ctx *ctx);

#endif
