/* pipeline.c - runs the stages of one job and checkpoints each finished stage.
 *
 * bn_pipeline_run owns a bn_job_ctx for the run. For each stage in order it either
 * restores the stage (its checkpoint <work_dir>/stage-<name>.json exists: the recorded
 * metrics come back, and the stage's own restore function reloads its data) or runs it
 * and then writes that checkpoint atomically. So a run killed at any point resumes at
 * the first unfinished stage. The load stage always re-opens the model (an mmap).
 *
 * This file also holds the helpers stage code uses (metrics, events, rate-limited
 * progress, lookups), the load and quantize stages, the quantized checkpoint
 * (quantized.safetensors: 2-bit packed codes + F32 scales + stats in __metadata__).
 * The calibrate, evaluate, finetune and GGUF stages live in their own files
 * (calibrate.c, evaluate.c, finetune.c, export_gguf.c).
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

#include "base/fsutil.h"
#include "quant/pack.h"
#include "stages/job_models.h"
#include "stages/stages.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- helpers for stages ---------------------------------------------------------------- */

void bn_job_event(bn_job_ctx *ctx, const char *level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ctx->progress->event) ctx->progress->event(ctx->progress->ctx, ctx->stage, level, msg);
}

static void metric_store(bn_job_ctx *ctx, const char *key, double value, int stage)
{
    for (size_t i = 0; i < ctx->n_metrics; i++)
        if (!strcmp(ctx->metrics[i].key, key)) {
            ctx->metrics[i].value = value;
            ctx->metrics[i].stage = stage;
            return;
        }
    if (ctx->n_metrics == ctx->cap_metrics) {
        size_t cap = ctx->cap_metrics ? 2 * ctx->cap_metrics : 32;
        bn_metric_kv *m = realloc(ctx->metrics, cap * sizeof *m);
        if (!m) return;
        ctx->metrics = m;
        ctx->cap_metrics = cap;
    }
    bn_metric_kv *m = &ctx->metrics[ctx->n_metrics++];
    snprintf(m->key, sizeof m->key, "%s", key);
    m->value = value;
    m->stage = stage;
}

void bn_job_metric(bn_job_ctx *ctx, const char *key, double value)
{
    if (!isfinite(value)) {
        bn_job_event(ctx, "warn", "metric %s has no finite value; not recorded", key);
        return;
    }
    metric_store(ctx, key, value, (int)ctx->stage);
    bn_job_metric_source(ctx, key);
    if (ctx->progress->metric) ctx->progress->metric(ctx->progress->ctx, key, value, -1);
}

void bn_job_metric_step(bn_job_ctx *ctx, const char *key, double value, int64_t step)
{
    if (isfinite(value) && ctx->progress->metric) ctx->progress->metric(ctx->progress->ctx, key, value, step);
}

bool bn_job_metric_get(const bn_job_ctx *ctx, const char *key, double *out)
{
    for (size_t i = 0; i < ctx->n_metrics; i++)
        if (!strcmp(ctx->metrics[i].key, key)) {
            if (out) *out = ctx->metrics[i].value;
            return true;
        }
    return false;
}

bool bn_job_progress(bn_job_ctx *ctx, double fraction, const char *detail)
{
    if (ctx->cancelled) return true;
    if (!ctx->progress->update) return false;
    double t = now_s();
    bool edge = fraction <= 0.0 || fraction >= 1.0;
    if (!edge && t - ctx->last_update_time < 0.05 && fraction - ctx->last_update_fraction < 0.01) return false;
    ctx->last_update_time = t;
    ctx->last_update_fraction = fraction;
    if (ctx->progress->update(ctx->progress->ctx, ctx->stage, fraction < 0 ? 0 : fraction > 1 ? 1 : fraction, detail))
        ctx->cancelled = true;
    return ctx->cancelled;
}

bn_qtensor *bn_job_qtensor(const bn_job_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->n_qt; i++)
        if (!strcmp(ctx->qt[i].name, name)) return &ctx->qt[i];
    return NULL;
}

const bn_calib_stat *bn_job_calib(const bn_job_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->n_calib; i++)
        if (!strcmp(ctx->calib[i].name, name)) return &ctx->calib[i];
    return NULL;
}

const char *bn_job_work_path(const bn_job_ctx *ctx, const char *rel, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", ctx->paths.work_dir, rel);
    return buf;
}

bool bn_job_is_preserved(const bn_job_ctx *ctx, const char *name, bn_role role, int ndim)
{
    if (ndim != 2 || !bn_role_is_linear(role)) return true;
    for (int i = 0; i < ctx->opt->n_preserve; i++)
        if (strcasestr(name, ctx->opt->preserve[i])) return true;
    return false;
}

void bn_qtensor_free(bn_qtensor *t)
{
    free(t->name);
    free(t->codes);
    free(t->scales);
    memset(t, 0, sizeof *t);
}

/* ---- load ------------------------------------------------------------------------------- */

int bn_stage_load(bn_job_ctx *ctx, bn_err *err)
{
    bn_job_progress(ctx, 0, "opening model");
    int rc = bn_hf_open(ctx->paths.model_dir, &ctx->model, err);
    if (rc) return rc;
    const bn_hf_model *m = ctx->model;
    ctx->input_bytes = bn_st_set_bytes(m->weights);
    if (ctx->opt->sparsity_auto) {
        ctx->tau = bn_quant_auto_tau(m->n_params, &ctx->size_category);
    } else {
        bn_quant_auto_tau(m->n_params, &ctx->size_category);
        ctx->tau = (float)ctx->opt->sparsity_threshold;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    ctx->threads = ctx->opt->threads > 0 ? ctx->opt->threads : (int)(cores > 0 ? cores : 1);
    bn_job_metric(ctx, "compression/original_size_mb", (double)ctx->input_bytes / (1024.0 * 1024.0));
    bn_job_metric(ctx, "compression/total_params", (double)m->n_params);
    bn_job_event(ctx, "info", "loaded %s model: %llu parameters, %d layers, %zu tensors; tau %.3g (%s%s)",
                 m->cfg.model_type, (unsigned long long)m->n_params, m->cfg.n_layers, bn_st_set_count(m->weights),
                 (double)ctx->tau, ctx->opt->sparsity_auto ? "auto, " : "", ctx->size_category);
    bn_job_progress(ctx, 1, "model opened");
    return 0;
}

/* ---- quantize ------------------------------------------------------------------------------ */

/* Quantizes t, whose bytes are in data (a copy of t->data). */
static int quantize_one(bn_job_ctx *ctx, const bn_st_tensor *t, const void *data, bn_role role, int layer,
                        bn_qtensor *q, bn_err *err)
{
    memset(q, 0, sizeof *q);
    q->role = role;
    q->layer = layer;
    q->rows = t->shape[0];
    q->cols = t->shape[1];
    q->n_scales = ctx->opt->scale == BN_SCALE_PER_TENSOR ? 1 : q->rows;
    q->name = strdup(t->name);
    q->codes = bn_alloc_big((size_t)(q->rows * q->cols));
    q->scales = malloc((size_t)q->rows * sizeof *q->scales);
    if (!q->name || !q->codes || !q->scales) return bn_err_set(err, BN_ENOMEM, "tensor '%s': out of memory", t->name);
    bn_quant_params p;
    bn_quant_params_default(&p);
    p.tau = ctx->tau;
    p.per_tensor = ctx->opt->scale == BN_SCALE_PER_TENSOR;
    p.threads = ctx->threads;
    const bn_calib_stat *cs = ctx->opt->calibration.refine_scales ? bn_job_calib(ctx, t->name) : NULL;
    if (cs && cs->cols == q->cols && cs->xsq) {
        float grid[8];
        int ng = bn_quant_tau_grid(ctx->tau, grid, 8);
        return bn_quant_refine(t->name, data, t->dtype, q->rows, q->cols, cs->xsq, grid, ng, &p, q->codes,
                               q->scales, NULL, &q->stats, err);
    }
    return bn_quant_tensor(t->name, data, t->dtype, q->rows, q->cols, &p, q->codes, q->scales, &q->stats, err);
}

/* Bytes the quantized/ safetensors data section will hold (packed codes, FP16 scales,
 * preserved tensors in FP16, non-float tensors as they are). */
static uint64_t quantized_data_bytes(const bn_job_ctx *ctx)
{
    uint64_t b = 0;
    for (size_t i = 0; i < bn_st_set_count(ctx->model->weights); i++) {
        const bn_st_tensor *t = bn_st_set_at(ctx->model->weights, i);
        const bn_qtensor *q = bn_job_qtensor(ctx, t->name);
        if (q) b += (uint64_t)bn_pack2_rows(q->rows) * (uint64_t)q->cols + 2 * (uint64_t)q->n_scales;
        else b += bn_dtype_is_float(t->dtype) ? t->numel * 2 : t->nbytes;
    }
    return b;
}

/* Metrics that ternarization fixes once and for all (fine-tuning requantizes the same
 * tensors, so these never change): emitted by the quantize stage. */
static void count_metrics(bn_job_ctx *ctx)
{
    int layers = 0, last_layer = -1;
    uint64_t params = 0;
    for (size_t i = 0; i < ctx->n_qt; i++) {
        params += ctx->qt[i].stats.params;
        if (ctx->qt[i].layer >= 0 && ctx->qt[i].layer != last_layer) { layers++; last_layer = ctx->qt[i].layer; }
    }
    bn_job_metric(ctx, "compression/layers_compressed", layers);
    bn_job_metric(ctx, "compression/layers_quantized", (double)ctx->n_qt);
    bn_job_metric(ctx, "compression/quantized_params", (double)params);
    bn_job_metric(ctx, "compression/total_params", (double)ctx->model->n_params);
}

void bn_job_compression_metrics(bn_job_ctx *ctx, uint64_t quantized_bytes)
{
    bn_quant_stats tot = { 0 };
    int64_t nscales = 0;
    for (size_t i = 0; i < ctx->n_qt; i++) {
        bn_quant_stats_merge(&tot, nscales, &ctx->qt[i].stats, ctx->qt[i].n_scales);
        nscales += ctx->qt[i].n_scales;
    }
    count_metrics(ctx);
    bn_job_metric(ctx, "compression/compressed_size_mb", (double)quantized_bytes / (1024.0 * 1024.0));
    if (quantized_bytes) bn_job_metric(ctx, "compression/ratio", (double)ctx->input_bytes / (double)quantized_bytes);
    if (tot.params) bn_job_metric(ctx, "compression/sparsity_ratio", tot.zero_fraction);
}

/* Whether the quantize stage ternarizes t (not preserved); its role and layer too. */
static bool ternarized(const bn_job_ctx *ctx, const bn_st_tensor *t, bn_role *role, int *layer)
{
    int l;
    bn_role r = bn_hf_role_of(t->name, &l);
    if (role) *role = r;
    if (layer) *layer = l;
    return !bn_job_is_preserved(ctx, t->name, r, t->ndim);
}

int bn_stage_quantize(bn_job_ctx *ctx, bn_err *err)
{
    const bn_st_set *w = ctx->model->weights;
    size_t n = bn_st_set_count(w);
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < n; i++) total += bn_st_set_at(w, i)->nbytes;
    for (size_t i = 0; i < ctx->n_qt; i++) bn_qtensor_free(&ctx->qt[i]);
    free(ctx->qt);
    ctx->n_qt = 0;
    ctx->qt = calloc(n ? n : 1, sizeof *ctx->qt);
    if (!ctx->qt) return bn_err_set(err, BN_ENOMEM, "out of memory");
    /* Each tensor is read once: pread into one reused buffer costs less than faulting
     * the input mapping in page by page. */
    size_t biggest = 0;
    for (size_t i = 0; i < n; i++) {
        const bn_st_tensor *t = bn_st_set_at(w, i);
        if (ternarized(ctx, t, NULL, NULL) && t->nbytes > biggest) biggest = t->nbytes;
    }
    void *buf = biggest ? bn_alloc_big(biggest) : NULL;
    if (biggest && !buf) return bn_err_set(err, BN_ENOMEM, "out of memory (a %zu-byte tensor buffer)", biggest);
    int rc = 0, refined = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const bn_st_tensor *t = bn_st_set_at(w, i);
        int layer;
        bn_role role;
        if (ternarized(ctx, t, &role, &layer)) {
            rc = bn_st_tensor_copy(t, buf, err);
            if (!rc) rc = quantize_one(ctx, t, buf, role, layer, &ctx->qt[ctx->n_qt], err);
            ctx->n_qt++;
            if (!rc && ctx->opt->calibration.refine_scales && bn_job_calib(ctx, t->name)) refined++;
        }
        done += t->nbytes;
        if (!rc && bn_job_progress(ctx, total ? (double)done / (double)total : 1, t->name))
            rc = bn_err_set(err, BN_ECANCELLED, "cancelled during quantize (at tensor '%s')", t->name);
    }
    free(buf);
    if (rc) return rc;
    if (ctx->n_qt == 0) bn_job_event(ctx, "warn", "no tensor was ternarized (every tensor matched a preserve pattern)");
    if (ctx->n_calib && ctx->opt->calibration.refine_scales)
        bn_job_event(ctx, "info", "calibration-aware scales for %d of %zu ternarized tensors", refined, ctx->n_qt);
    char path[PATH_MAX];
    rc = bn_qt_save(ctx, bn_job_work_path(ctx, "quantized.safetensors", path, sizeof path), err);
    if (rc) return rc;
    /* Size, ratio and sparsity are reported once, by export, from the final codes and
     * the bytes on disk; a value reported here would go stale after fine-tuning. */
    count_metrics(ctx);
    bn_job_event(ctx, "info", "ternarized %zu tensors: about %.2f MiB packed (final size at export)",
                 ctx->n_qt, (double)quantized_data_bytes(ctx) / (1024.0 * 1024.0));
    return 0;
}

/* ---- quantized checkpoint --------------------------------------------------------------------- */

static cJSON *stats_json(const bn_qtensor *q)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", q->name);
    cJSON_AddStringToObject(o, "role", bn_role_name(q->role));
    cJSON_AddNumberToObject(o, "layer", q->layer);
    cJSON_AddNumberToObject(o, "rows", (double)q->rows);
    cJSON_AddNumberToObject(o, "cols", (double)q->cols);
    cJSON_AddNumberToObject(o, "n_scales", (double)q->n_scales);
    cJSON_AddNumberToObject(o, "params", (double)q->stats.params);
    cJSON_AddNumberToObject(o, "zeros", (double)q->stats.zeros);
    cJSON_AddNumberToObject(o, "zero_fraction", q->stats.zero_fraction);
    cJSON_AddNumberToObject(o, "scale_min", q->stats.scale_min);
    cJSON_AddNumberToObject(o, "scale_mean", q->stats.scale_mean);
    cJSON_AddNumberToObject(o, "scale_max", q->stats.scale_max);
    cJSON_AddNumberToObject(o, "sq_err", q->stats.sq_err);
    cJSON_AddNumberToObject(o, "sq_w", q->stats.sq_w);
    cJSON_AddNumberToObject(o, "mse", q->stats.mse);
    cJSON_AddNumberToObject(o, "rel_err", q->stats.rel_err);
    return o;
}

cJSON *bn_qtensor_stats_json(const bn_qtensor *q) { return stats_json(q); }

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int bn_qt_save(const bn_job_ctx *ctx, const char *path, bn_err *err)
{
    bn_st_writer *w;
    int rc = bn_st_writer_new(path, &w, err);
    if (rc) return rc;
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < ctx->n_qt; i++) cJSON_AddItemToArray(arr, stats_json(&ctx->qt[i]));
    char *meta = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    if (!meta) { bn_st_writer_abort(w); return bn_err_set(err, BN_ENOMEM, "out of memory"); }
    bn_st_writer_metadata(w, "bitnetd.qtensors", meta);
    free(meta);
    char name[512];
    for (size_t i = 0; !rc && i < ctx->n_qt; i++) {
        const bn_qtensor *q = &ctx->qt[i];
        int64_t ps[2] = { bn_pack2_rows(q->rows), q->cols }, ss[1] = { q->n_scales };
        snprintf(name, sizeof name, "%s.codes", q->name);
        rc = bn_st_writer_declare(w, name, BN_DTYPE_U8, 2, ps, err);
        snprintf(name, sizeof name, "%s.scales", q->name);
        if (!rc) rc = bn_st_writer_declare(w, name, BN_DTYPE_F32, 1, ss, err);
    }
    for (size_t i = 0; !rc && i < ctx->n_preserved; i++) {
        int64_t s[1] = { (int64_t)ctx->preserved[i].numel };
        snprintf(name, sizeof name, "preserved/%s", ctx->preserved[i].name);
        rc = bn_st_writer_declare(w, name, BN_DTYPE_F32, 1, s, err);
    }
    for (size_t i = 0; !rc && i < ctx->n_qt; i++) {
        const bn_qtensor *q = &ctx->qt[i];
        size_t pb = (size_t)bn_pack2_rows(q->rows) * (size_t)q->cols;
        uint8_t *packed = malloc(pb ? pb : 1);
        if (!packed) { rc = bn_err_set(err, BN_ENOMEM, "out of memory"); break; }
        bn_pack2_hf(q->codes, q->rows, q->cols, packed);
        rc = bn_st_writer_write(w, packed, pb, err);
        free(packed);
        if (!rc) rc = bn_st_writer_write(w, q->scales, (size_t)q->n_scales * sizeof(float), err);
    }
    for (size_t i = 0; !rc && i < ctx->n_preserved; i++)
        rc = bn_st_writer_write(w, ctx->preserved[i].data, ctx->preserved[i].numel * sizeof(float), err);
    if (rc) { bn_st_writer_abort(w); return rc; }
    return bn_st_writer_finish(w, err);
}

int bn_qt_load(bn_job_ctx *ctx, const char *path, bn_err *err)
{
    bn_st_file *f;
    int rc = bn_st_open(path, &f, err);
    if (rc) return rc;
    const char *meta = bn_st_metadata(f, "bitnetd.qtensors");
    cJSON *arr = meta ? cJSON_Parse(meta) : NULL;
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        bn_st_close(f);
        return bn_err_set(err, BN_EFORMAT, "%s: missing bitnetd.qtensors metadata", path);
    }
    size_t n = (size_t)cJSON_GetArraySize(arr);
    bn_qtensor *qt = calloc(n ? n : 1, sizeof *qt);
    size_t k = 0;
    char name[512];
    if (!qt) rc = bn_err_set(err, BN_ENOMEM, "out of memory");
    for (const cJSON *o = arr ? arr->child : NULL; o && !rc; o = o->next, k++) {
        bn_qtensor *q = &qt[k];
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(o, "name");
        q->name = strdup(cJSON_IsString(nm) ? nm->valuestring : "");
        q->role = bn_hf_role_of(q->name, &q->layer);
        q->rows = (int64_t)num(o, "rows");
        q->cols = (int64_t)num(o, "cols");
        q->n_scales = (int64_t)num(o, "n_scales");
        q->stats = (bn_quant_stats){ (uint64_t)num(o, "params"), (uint64_t)num(o, "zeros"), num(o, "zero_fraction"),
                                     num(o, "scale_min"), num(o, "scale_mean"), num(o, "scale_max"), num(o, "sq_err"),
                                     num(o, "sq_w"), num(o, "mse"), num(o, "rel_err") };
        snprintf(name, sizeof name, "%s.codes", q->name);
        const bn_st_tensor *c = bn_st_find(f, name);
        snprintf(name, sizeof name, "%s.scales", q->name);
        const bn_st_tensor *s = bn_st_find(f, name);
        if (!c || !s || q->rows < 1 || q->cols < 1 || c->nbytes != (size_t)(bn_pack2_rows(q->rows) * q->cols) ||
            s->dtype != BN_DTYPE_F32 || s->numel != (uint64_t)q->n_scales) {
            rc = bn_err_set(err, BN_EFORMAT, "%s: tensor '%s' is missing or inconsistent", path, q->name);
            break;
        }
        q->codes = bn_alloc_big((size_t)(q->rows * q->cols));
        q->scales = malloc((size_t)q->rows * sizeof(float));
        if (!q->codes || !q->scales) { rc = bn_err_set(err, BN_ENOMEM, "out of memory"); break; }
        if (bn_unpack2_hf(c->data, q->rows, q->cols, q->codes) != 0)
            rc = bn_err_set(err, BN_EFORMAT, "%s: tensor '%s' holds an invalid 2-bit code", path, q->name);
        memcpy(q->scales, s->data, s->nbytes);
    }
    size_t np = 0;
    for (size_t i = 0; !rc && i < bn_st_count(f); i++) np += !strncmp(bn_st_at(f, i)->name, "preserved/", 10);
    bn_ptensor *pt = np ? calloc(np, sizeof *pt) : NULL;
    size_t kp = 0;
    for (size_t i = 0; !rc && i < bn_st_count(f); i++) {
        const bn_st_tensor *t = bn_st_at(f, i);
        if (strncmp(t->name, "preserved/", 10)) continue;
        pt[kp].name = strdup(t->name + 10);
        pt[kp].numel = t->numel;
        pt[kp].data = malloc(t->nbytes ? t->nbytes : 1);
        if (pt[kp].data) memcpy(pt[kp].data, t->data, t->nbytes);
        kp++;
    }
    cJSON_Delete(arr);
    bn_st_close(f);
    if (rc) {
        for (size_t i = 0; i < n; i++) bn_qtensor_free(&qt[i]);
        free(qt);
        for (size_t i = 0; i < kp; i++) { free(pt[i].name); free(pt[i].data); }
        free(pt);
        return rc;
    }
    for (size_t i = 0; i < ctx->n_qt; i++) bn_qtensor_free(&ctx->qt[i]);
    free(ctx->qt);
    ctx->qt = qt;
    ctx->n_qt = k;
    for (size_t i = 0; i < ctx->n_preserved; i++) { free(ctx->preserved[i].name); free(ctx->preserved[i].data); }
    free(ctx->preserved);
    ctx->preserved = pt;
    ctx->n_preserved = kp;
    return 0;
}

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
        if (cJSON_IsNumber(v)) metric_store(ctx, v->string, v->valuedouble, (int)s);
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
        double t0 = now_s();
        bn_job_progress(&ctx, 0, "start");
        if (!rc) rc = run_stage(&ctx, (bn_stage)s, err);
        if (!rc && ctx.cancelled) rc = bn_err_set(err, BN_ECANCELLED, "cancelled after %s", bn_stage_name((bn_stage)s));
        if (!rc && ctx.qt_dirty) {
            char p[PATH_MAX];
            rc = bn_qt_save(&ctx, bn_job_work_path(&ctx, "quantized.safetensors", p, sizeof p), err);
            ctx.qt_dirty = false;
        }
        if (!rc) rc = write_stage_done(&ctx, (bn_stage)s, now_s() - t0, err);
        if (!rc) bn_job_progress(&ctx, 1, "done");
        if (rc && rc != BN_ECANCELLED) bn_err_prefix(err, "%s: ", bn_stage_name((bn_stage)s));
    }
    ctx_free(&ctx);
    return rc;
}
