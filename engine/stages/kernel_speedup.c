/* kernel_speedup.c - the measured kernel speedup of a job (metrics
 * compression/measured_speedup_gemv and compression/measured_speedup_gemm).
 *
 * Times the job model's own projection shapes with the ternary kernel against FP32
 * OpenBLAS at the job's thread count: one token (GEMV) and a batch of BN_TK_STAGE_BATCH
 * tokens (GEMM). Called by the evaluate stage; a failure to measure is an event, never
 * a made-up number.
 */
#include "stages/kernel_speedup.h"
#include "quant/tkernels.h"

#define BN_TK_STAGE_BATCH 128
#define BN_TK_STAGE_BUDGET_MS 1500

int bn_tk_job_speedup(bn_job_ctx *ctx)
{
    bn_tk_shape shapes[5];
    int n = bn_tk_model_shapes(&ctx->model->cfg, shapes);
    double gv = 0, gm = 0;
    bn_err err = {0};
    if (bn_tk_measure_speedup(shapes, n, BN_TK_STAGE_BATCH, ctx->threads, BN_TK_STAGE_BUDGET_MS, &gv, &gm, &err)) {
        bn_job_event(ctx, "warn", "kernel speedup not measured: %s", err.msg);
        return err.code;
    }
    bn_job_metric(ctx, "compression/measured_speedup_gemv", gv);
    bn_job_metric(ctx, "compression/measured_speedup_gemm", gm);
    bn_job_event(ctx, "info", "measured ternary kernel speedup over FP32 OpenBLAS (%s, %d thread%s) on this "
                 "model's projection shapes: %.2fx for one token, %.2fx for %d tokens", bn_isa_name(bn_tk_isa_best()),
                 ctx->threads, ctx->threads == 1 ? "" : "s", gv, gm, BN_TK_STAGE_BATCH);
    return BN_OK;
}
