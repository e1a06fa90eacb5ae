/* pipeline.c - runs the stages of one job and checkpoints each finished stage.
 *
 * bn_pipeline_run owns a bn_job_ctx for the run. For each stage in order it either
 * restores the stage (its checkpoint <work_dir>/stage-<name>.json exists: the recorded
 * metrics come back, and the stage's own restore function reloads its data) or runs it
 * and then writes that checkpoint atomically. So a run killed at any point resumes at
 * the first unfinished stage. Every durable write first passes the caller's safe point
 * (bn_job_may_write), which can refuse it: the run then stops with BN_ECANCELLED. The load stage always re-opens the model (an mmap).
 * This file only runs stages; what they share is in job.c, each stage in its own file.
 */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fsutil.h"
#include "stages/stages.h"

/* ---- the run ---------------------------------------------------------------------------------- */

static const char *stage_file(const char *work_dir, bn_stage s, char *buf, size_t len)
{
    snprintf(buf, len, "%s/stage-%s.json", work_dir, bn_stage_name(s));
    return buf;
}

bn_stage bn_pipeline_resume_stage(const char *work_dir)
{
    char p[PATH_MAX];
    for (int s = 0; s < BN_STAGE_COUNT; s++)
        if (!bn_fs_exists(stage_file(work_dir, (bn_stage)s, p, sizeof p))) return (bn_stage)s;
    return BN_STAGE_COUNT;
}

static int write_stage_done(bn_job_ctx *ctx, bn_stage s, double seconds, bn_err *err)
{
    /* Export's checkpoint follows its rename at once, which already passed the safe
     * point (the lease renewed then covers this write): asking again could stop the run
     * between the rename and its record, leaving an output no owner would accept. */
    char what[64];
    snprintf(what, sizeof what, "checkpoint %s", bn_stage_name(s));
    int safe = s == BN_STAGE_EXPORT ? 0 : bn_job_may_write(ctx, what, err);
    if (safe) return safe;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "stage", bn_stage_name(s));
    cJSON_AddNumberToObject(o, "seconds", seconds);
    cJSON *m = cJSON_AddObjectToObject(o, "metrics");
    for (size_t i = 0; i < ctx->n_metrics; i++)
        if (ctx->metrics[i].stage == (int)s) cJSON_AddNumberToObject(m, ctx->metrics[i].key, ctx->metrics[i].value);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return bn_err_set(err, BN_ENOMEM, "out of memory");
    char p[PATH_MAX];
    int rc = bn_fs_write_atomic(stage_file(ctx->paths.work_dir, s, p, sizeof p), text, strlen(text), err);
    free(text);
    return rc;
}

static int restore_stage_metrics(bn_job_ctx *ctx, bn_stage s, bn_err *err)
{
    char p[PATH_MAX], *text;
    size_t len;
    int rc = bn_fs_read_file(stage_file(ctx->paths.work_dir, s, p, sizeof p), 1 << 20, &text, &len, err);
    if (rc) return rc;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "metrics");
    if (!cJSON_IsObject(m)) {
        cJSON_Delete(o);
        return bn_err_set(err, BN_EFORMAT, "%s: not a stage checkpoint", p);
    }
    for (const cJSON *v = m->child; v; v = v->next)
        if (cJSON_IsNumber(v)) bn_job_metric_restore(ctx, v->string, v->valuedouble, (int)s);
    cJSON_Delete(o);
    return 0;
}

static int restore_stage(bn_job_ctx *ctx, bn_stage s, bn_err *err)
{
    int rc = restore_stage_metrics(ctx, s, err);
    if (rc) return rc;
    char p[PATH_MAX];
    switch (s) {
    case BN_STAGE_CALIBRATE: return bn_stage_calibrate_restore(ctx, err);
    case BN_STAGE_QUANTIZE: return bn_qt_load(ctx, bn_job_work_path(ctx, "quantized.safetensors", p, sizeof p), err);
    case BN_STAGE_EVALUATE: return bn_stage_evaluate_restore(ctx, err);
    case BN_STAGE_FINETUNE: return bn_stage_finetune_restore(ctx, err);
    default: return 0;
    }
}

static int run_stage(bn_job_ctx *ctx, bn_stage s, bn_err *err)
{
    switch (s) {
    case BN_STAGE_LOAD: return bn_stage_load(ctx, err);
    case BN_STAGE_CALIBRATE:
        if (!ctx->opt->calibration.enabled) {
            bn_job_event(ctx, "info", "calibration disabled by the configuration: no pre-compression perplexity, "
                                      "plain absmean scales");
            return 0;
        }
        return bn_stage_calibrate(ctx, err);
    case BN_STAGE_QUANTIZE: return bn_stage_quantize(ctx, err);
    case BN_STAGE_EVALUATE: return bn_stage_evaluate(ctx, err);
    case BN_STAGE_FINETUNE: return bn_stage_finetune(ctx, err);
    case BN_STAGE_EXPORT: return bn_stage_export(ctx, err);
    default: return bn_err_set(err, BN_EINVAL, "unknown stage %d", (int)s);
    }
}

static void ctx_free(bn_job_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_qt; i++) bn_qtensor_free(&ctx->qt[i]);
    free(ctx->qt);
    for (size_t i = 0; i < ctx->n_calib; i++) { free(ctx->calib[i].name); free(ctx->calib[i].xsq); }
    free(ctx->calib);
    for (size_t i = 0; i < ctx->n_preserved; i++) { free(ctx->preserved[i].name); free(ctx->preserved[i].data); }
    free(ctx->preserved);
    free(ctx->metrics);
    bn_hf_close(ctx->model);
}

static const bn_progress no_progress = { 0 };

int bn_pipeline_run(const bn_pipeline_paths *paths, const bn_options *opt, const bn_progress *progress, bn_err *err)
{
    if (!paths || !paths->model_dir || !paths->output_dir || !paths->work_dir || !opt)
        return bn_err_set(err, BN_EINVAL, "pipeline: model_dir, output_dir, work_dir and options are required");
    bn_job_ctx ctx = { 0 };
    ctx.paths = *paths;
    ctx.opt = opt;
    ctx.progress = progress ? progress : &no_progress;
    int rc = bn_fs_mkdir_p(paths->work_dir, err);
    bn_stage first = rc ? BN_STAGE_LOAD : bn_pipeline_resume_stage(paths->work_dir);
    if (!rc && first == BN_STAGE_COUNT) {
        if (bn_fs_is_dir(paths->output_dir)) return 0; /* already complete */
        first = BN_STAGE_EXPORT;                         /* output removed since: write it again */
    }
    char meta[PATH_MAX];
    if (!rc && first == BN_STAGE_EXPORT &&
        bn_fs_exists(bn_fs_join(meta, sizeof meta, paths->output_dir, "compression_metadata.json"))) {
        /* an earlier attempt renamed the output into place and stopped (killed, or its
         * lease lost) before recording the export checkpoint; the API never queues a job
         * whose output folder exists, so this one is that attempt's */
        ctx.stage = BN_STAGE_EXPORT;
        bn_job_event(&ctx, "info", "export: the output folder is already complete (an earlier attempt renamed it into place)");
        return 0;
    }
    if (!rc && first < BN_STAGE_COUNT && bn_fs_exists(paths->output_dir))
        rc = bn_err_set(err, BN_EINVAL, "output folder %s already exists", paths->output_dir);
    for (int s = 0; !rc && s < BN_STAGE_COUNT; s++) {
        ctx.stage = (bn_stage)s;
        ctx.last_update_time = 0;
        ctx.last_update_fraction = -1;
        if (s != BN_STAGE_LOAD && s < (int)first) {
            rc = restore_stage(&ctx, (bn_stage)s, err);
            if (rc) bn_err_prefix(err, "resuming after %s: ", bn_stage_name((bn_stage)s));
            continue;
        }
        if (s == BN_STAGE_LOAD && first > BN_STAGE_LOAD) { /* re-open, keep recorded metrics */
            rc = bn_stage_load(&ctx, err);
            if (rc) bn_err_prefix(err, "load: ");
            continue;
        }
        double t0 = bn_clock_mono_s();
        bn_job_progress(&ctx, 0, "start");
        if (!rc) rc = run_stage(&ctx, (bn_stage)s, err);
        if (!rc && ctx.cancelled) rc = bn_err_set(err, BN_ECANCELLED, "cancelled after %s", bn_stage_name((bn_stage)s));
        if (!rc && ctx.qt_dirty) {
            char p[PATH_MAX];
            rc = bn_qt_save(&ctx, bn_job_work_path(&ctx, "quantized.safetensors", p, sizeof p), err);
            ctx.qt_dirty = false;
        }
        if (!rc) rc = write_stage_done(&ctx, (bn_stage)s, bn_clock_mono_s() - t0, err);
        if (!rc) bn_job_progress(&ctx, 1, "done");
        if (rc && rc != BN_ECANCELLED) bn_err_prefix(err, "%s: ", bn_stage_name((bn_stage)s));
    }
    ctx_free(&ctx);
    return rc;
}
