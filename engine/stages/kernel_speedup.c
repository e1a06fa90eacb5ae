/* kernel_speedup.c - the measured kernel speedup of a job (metrics
 * compression/measured_speedup_gemv and compression/measured_speedup_gemm).
 *
 * Times the job model's own projection shapes with the ternary kernel against FP32
 * OpenBLAS, each at its best of 1 thread and the job's thread count: one token (GEMV)
 * and a batch of BN_TK_STAGE_BATCH tokens (GEMM). The event gives the shapes, both
 * times and thread counts. When the FP32 products are too small to time arithmetic
 * (tk_speed.c, BN_TK_MIN_PRODUCT_S) the event says so and that metric is not recorded.
 * Called by the evaluate stage; a failure to measure is an event, never a made-up number.
 */
#include "stages/kernel_speedup.h"
#include "quant/tkernels.h"

#include <stdio.h>

#define BN_TK_STAGE_BATCH 128
#define BN_TK_STAGE_BUDGET_MS 1500

/* "one token: 2.31x (FP32 1.2 ms at 1 thread, ternary 0.52 ms at 2 threads per forward)" */
static void describe(const char *what, const bn_tk_speed *s, char *out, size_t len)
{
    if (s->timed)
        snprintf(out, len, "%s: %.2fx (FP32 %.3g ms at %d thread%s, ternary %.3g ms at %d thread%s "
                 "per forward)", what, s->speedup, s->blas_s * 1e3, s->blas_threads,
                 s->blas_threads == 1 ? "" : "s", s->ternary_s * 1e3, s->ternary_threads,
                 s->ternary_threads == 1 ? "" : "s");
    else
        snprintf(out, len, "%s: no ratio, the FP32 products are too small to time (%.2g us each "
                 "on average, below %.0f us; FP32 %.3g ms, ternary %.3g ms per forward)", what,
                 s->blas_product_s * 1e6, BN_TK_MIN_PRODUCT_S * 1e6, s->blas_s * 1e3,
                 s->ternary_s * 1e3);
}

int bn_tk_job_speedup(bn_job_ctx *ctx)
{
    bn_tk_shape shapes[5];
    int n = bn_tk_model_shapes(&ctx->model->cfg, shapes);
    bn_tk_speed gv, gm;
    bn_err err = {0};
    if (bn_tk_measure_speedup(shapes, n, BN_TK_STAGE_BATCH, ctx->threads, BN_TK_STAGE_BUDGET_MS, &gv, &gm, &err)) {
        bn_job_event(ctx, "warn", "kernel speedup not measured: %s", err.msg);
        return err.code;
    }
    if (gv.timed) bn_job_metric(ctx, "compression/measured_speedup_gemv", gv.speedup);
    if (gm.timed) bn_job_metric(ctx, "compression/measured_speedup_gemm", gm.speedup);
    char sh[256] = "", one[320], many[320], what[64];
    size_t l = 0;
    for (int i = 0; i < n && l < sizeof sh; i++)
        l += (size_t)snprintf(sh + l, sizeof sh - l, "%s%dx%d x%d", i ? ", " : "", shapes[i].rows,
                              shapes[i].cols, shapes[i].count);
    describe("one token", &gv, one, sizeof one);
    snprintf(what, sizeof what, "%d tokens", BN_TK_STAGE_BATCH);
    describe(what, &gm, many, sizeof many);
    bn_job_event(ctx, "info", "ternary kernel (%s) vs FP32 OpenBLAS on this model's projection shapes "
                 "[%s]: %s; %s", bn_isa_name(bn_tk_isa_best()), sh, one, many);
    return BN_OK;
}
