/* job.h - the context of one job, which every stage reads and writes (internal to
 * the engine).
 *
 * bn_pipeline_run (pipeline.c) owns one bn_job_ctx for the run and calls the stage
 * functions in order: load -> calibrate -> quantize -> evaluate -> finetune -> export.
 * After a stage returns 0 the pipeline writes <work_dir>/stage-<name>.json (the stage's
 * metrics and the time it took); a resumed run restores every finished stage with its
 * `*_restore` function (and the recorded metrics) instead of running it again.
 *
 * Who writes what in the context:
 *   load       model, n_params, tau (effective threshold), threads
 *   calibrate  calib[] (xsq per linear input), text_* (where the text came from, split
 *              sizes), the pre-compression metrics; saves its own checkpoint files in
 *              work_dir and reloads them in bn_stage_calibrate_restore
 *   quantize   qt[] (codes, scales, stats), the compression metrics; checkpoint is
 *              <work_dir>/quantized.safetensors (2-bit packed codes + F32 scales)
 *   evaluate   the post-compression metrics
 *   finetune   may replace qt[] codes/scales (requantized) and add preserved[] (trained
 *              preserved tensors); it then sets qt_dirty so the pipeline rewrites the
 *              quantized checkpoint before marking finetune done; fine-tune metrics
 *   export     reads all of the above; writes the output folder
 * Extra output files: a stage may write files into <work_dir>/outputs/ (for example
 * calibration_stats.json, training_history.json); export copies each of them into the
 * output folder.
 *
 */
#ifndef BN_JOB_H
#define BN_JOB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "bn_engine.h"
#include "quant/qtensor.h"

typedef struct bn_metric_kv {
    char key[64];
    double value;
    int stage;           /* stage that recorded it (for the stage checkpoint) */
} bn_metric_kv;

typedef struct bn_job_ctx {
    bn_pipeline_paths paths;      /* borrowed from the caller */
    const bn_options *opt;
    const bn_progress *progress;  /* never NULL inside the pipeline (may have NULL members) */
    bn_hf_model *model;           /* opened by load */
    const char *source;           /* the model as given (paths.model_dir may become the
                                     local snapshot of an hf:// source) */
    char hub_dir[4096];           /* that snapshot folder */
    float tau;                    /* effective threshold (options or the auto table) */
    const char *size_category;    /* "tiny" | "small" | "medium" | "large" */
    int threads;                  /* effective thread count (>= 1) */

    bn_qtensor *qt;               /* quantized tensors, in model order */
    size_t n_qt;
    bool qt_dirty;

    bn_calib_stat *calib;
    size_t n_calib;

    char text_label[480];         /* origin of the calibration text, "" when none (calib_text.h) */
    bool text_synthetic;          /* the five templates: no fine-tuning unless allowed */
    int64_t text_docs[3];         /* documents per split: train, selection, report */
    int64_t text_tokens[3];       /* tokens per split */

    bn_ptensor *preserved;
    size_t n_preserved;

    bn_metric_kv *metrics;        /* use bn_job_metric / bn_job_metric_get */
    size_t n_metrics, cap_metrics;

    uint64_t input_bytes;         /* tensor data bytes of the input on disk */
    bn_stage stage;               /* stage being run */
    double last_update_time;      /* progress rate limiting (internal) */
    double last_update_fraction;
    bool cancelled;
} bn_job_ctx;

/* ---- helpers for stage code (job.c) ---------------------------------------- */

/* Records (or replaces) a job metric and sends it to progress->metric (step -1). A
 * non-finite value is not recorded; an event says so. */
void bn_job_metric(bn_job_ctx *ctx, const char *key, double value);
/* Per-step history value (fine_tune/loss ...): sent to progress->metric, not recorded. */
void bn_job_metric_step(bn_job_ctx *ctx, const char *key, double value, int64_t step);
bool bn_job_metric_get(const bn_job_ctx *ctx, const char *key, double *out);
/* Records a metric read back from stage `stage`'s checkpoint, without announcing it. */
void bn_job_metric_restore(bn_job_ctx *ctx, const char *key, double value, int stage);
void bn_job_event(bn_job_ctx *ctx, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reports progress of the current stage; returns true when the run must stop (then
 * the stage returns BN_ECANCELLED). Rate-limited: calls progress->update at most every
 * 50 ms or 1% (and always for 0 and 1). */
bool bn_job_progress(bn_job_ctx *ctx, double fraction, const char *detail);
/* The safe point before a durable write (bn_progress.may_write): BN_OK to write, or
 * BN_ECANCELLED with err naming the write that was refused; the caller then returns
 * without writing. */
int bn_job_may_write(const bn_job_ctx *ctx, const char *what, bn_err *err);
/* The ternarized tensor / calibration stats for an HF name, or NULL. */
bn_qtensor *bn_job_qtensor(const bn_job_ctx *ctx, const char *name);
const bn_calib_stat *bn_job_calib(const bn_job_ctx *ctx, const char *name);
/* "<work_dir>/<rel>" into buf. */
const char *bn_job_work_path(const bn_job_ctx *ctx, const char *rel, char *buf, size_t len);
/* true when tensor `name` is preserved by the options' patterns or its role. */
bool bn_job_is_preserved(const bn_job_ctx *ctx, const char *name, bn_role role, int ndim);

/* Records the compression metrics from ctx->qt; quantized_bytes = bytes of the
 * quantized weights (export passes the size of quantized/model.safetensors on disk). */
void bn_job_compression_metrics(bn_job_ctx *ctx, uint64_t quantized_bytes);
/* The metrics that ternarization fixes once: layers and parameters quantized, totals. */
void bn_job_count_metrics(bn_job_ctx *ctx);
struct cJSON;

/* ---- where each perplexity/loss metric's text came from ------------------------------ */

/* The split a metric is measured on ("report", "selection", "train"), or NULL when the
 * key is not a perplexity/loss metric. */
const char *bn_text_metric_split(const char *key);
/* "<ctx->text_label> (<split> split)" into buf; NULL when key is not a text metric or
 * the job has no text. */
const char *bn_text_metric_source(const bn_job_ctx *ctx, const char *key, char *buf, size_t len);
/* Sends bn_text_metric_source through progress->source (nothing for other keys);
 * bn_job_metric calls it for every value. */
void bn_job_metric_source(bn_job_ctx *ctx, const char *key);
/* {"train": {"documents": n, "tokens": n}, "selection": {...}, "report": {...}} from
 * ctx->text_docs / text_tokens (caller owns). */
struct cJSON *bn_text_splits_json(const bn_job_ctx *ctx);
/* Per-tensor statistics as a JSON object (caller owns). */
struct cJSON *bn_qtensor_stats_json(const bn_qtensor *q);

/* quantized checkpoint I/O (quantize stage; finetune may call save after requantizing) */
int bn_qt_save(const bn_job_ctx *ctx, const char *path, bn_err *err);
int bn_qt_load(bn_job_ctx *ctx, const char *path, bn_err *err);

#endif
