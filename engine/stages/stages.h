/* stages.h - the pipeline's stages (internal to the engine).
 *
 * bn_pipeline_run (pipeline.c) calls them in order: load -> calibrate -> quantize ->
 * evaluate -> finetune -> export, each on the job context (job.h, which says who writes
 * what in it). Stage functions return 0 or a BN_E* code with err set. They call
 * bn_job_progress between units of work and return BN_ECANCELLED when it answers true.
 */
#ifndef BN_STAGES_H
#define BN_STAGES_H

#include "stages/job.h"

/* ---- the stages ------------------------------------------------------------------ */

int bn_stage_load(bn_job_ctx *ctx, bn_err *err);
int bn_stage_quantize(bn_job_ctx *ctx, bn_err *err);
int bn_stage_export(bn_job_ctx *ctx, bn_err *err);

int bn_stage_calibrate(bn_job_ctx *ctx, bn_err *err);
int bn_stage_evaluate(bn_job_ctx *ctx, bn_err *err);
int bn_stage_finetune(bn_job_ctx *ctx, bn_err *err);
/* Re-create the stage's in-memory results from its checkpoint in work_dir on resume. */
int bn_stage_calibrate_restore(bn_job_ctx *ctx, bn_err *err);
int bn_stage_evaluate_restore(bn_job_ctx *ctx, bn_err *err);
int bn_stage_finetune_restore(bn_job_ctx *ctx, bn_err *err);
/* GGUF files into the export folder out_dir (export_gguf.c, called by export). */
int bn_stage_export_gguf(bn_job_ctx *ctx, const char *out_dir, bn_err *err);

#endif
