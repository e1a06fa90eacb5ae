/* job.c - the context of one job, as every stage sees it (see job.h).
 *
 * Metrics, events and rate-limited progress go to the caller's callbacks; lookups of a
 * job's ternarized tensors and calibration statistics; the compression metrics; and the
 * quantized checkpoint (<work_dir>/quantized.safetensors: 2-bit packed codes + F32
 * scales + per-tensor statistics in __metadata__), which the quantize stage writes and
 * the finetune stage rewrites after requantizing.
 *
 * Invariant: ctx->metrics holds at most one value per key, always finite.
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
#include "quant/pack.h"
#include "stages/job.h"

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

void bn_job_metric_restore(bn_job_ctx *ctx, const char *key, double value, int stage)
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
    bn_job_metric_restore(ctx, key, value, (int)ctx->stage);
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
    double t = bn_clock_mono_s();
    bool edge = fraction <= 0.0 || fraction >= 1.0;
    if (!edge && t - ctx->last_update_time < 0.05 && fraction - ctx->last_update_fraction < 0.01) return false;
    ctx->last_update_time = t;
    ctx->last_update_fraction = fraction;
    if (ctx->progress->update(ctx->progress->ctx, ctx->stage, fraction < 0 ? 0 : fraction > 1 ? 1 : fraction, detail))
        ctx->cancelled = true;
    return ctx->cancelled;
}

int bn_job_may_write(const bn_job_ctx *ctx, const char *what, bn_err *err)
{
    if (!ctx->progress->may_write || ctx->progress->may_write(ctx->progress->ctx, ctx->stage, what))
        return BN_OK;
    return bn_err_set(err, BN_ECANCELLED, "stopped before writing %s (lease lost or job cancelled)", what);
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


/* ---- compression metrics ------------------------------------------------------------------ */

/* Metrics that ternarization fixes once and for all (fine-tuning requantizes the same
 * tensors, so these never change): emitted by the quantize stage. */
void bn_job_count_metrics(bn_job_ctx *ctx)
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
    bn_job_count_metrics(ctx);
    bn_job_metric(ctx, "compression/compressed_size_mb", (double)quantized_bytes / (1024.0 * 1024.0));
    if (quantized_bytes) bn_job_metric(ctx, "compression/ratio", (double)ctx->input_bytes / (double)quantized_bytes);
    if (tot.params) bn_job_metric(ctx, "compression/sparsity_ratio", tot.zero_fraction);
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
    int rc = bn_job_may_write(ctx, "quantized tensors", err);
    if (!rc) rc = bn_st_writer_new(path, &w, err);
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

/* ---- where each metric's text came from --------------------------------------------- */

static const struct { const char *key, *split; } text_metrics[] = {
    {"compression/pre_perplexity", "report"},
    {"compression/pre_eval_loss", "report"},
    {"compression/post_perplexity", "report"},
    {"compression/post_eval_loss", "report"},
    {"compression/perplexity_degradation", "report"},
    {"compression/accuracy_preserved", "report"},
    {"compression/dequantization_accuracy", "report"},
    {"compression/dequantization_max_logit_diff", "report"},
    {"compression/post_finetune_perplexity", "report"},
    {"compression/post_finetune_eval_loss", "report"},
    {"compression/perplexity_recovery", "report"},
    {"phase/final_perplexity", "report"},
    {"compression/gradient_flow_test_passed", "train"},
    {"fine_tune/loss", "train"},
    {"fine_tune/eval_perplexity", "selection"},
    {"compression/fine_tune_best_selection_perplexity", "selection"},
};

const char *bn_text_metric_split(const char *key)
{
    for (size_t i = 0; i < sizeof text_metrics / sizeof text_metrics[0]; i++)
        if (!strcmp(text_metrics[i].key, key)) return text_metrics[i].split;
    return NULL;
}

const char *bn_text_metric_source(const bn_job_ctx *ctx, const char *key, char *buf, size_t len)
{
    const char *split = bn_text_metric_split(key);
    if (!split || !ctx->text_label[0]) return NULL;
    snprintf(buf, len, "%s (%s split)", ctx->text_label, split);
    return buf;
}

void bn_job_metric_source(bn_job_ctx *ctx, const char *key)
{
    char buf[600];
    if (ctx->progress->source && bn_text_metric_source(ctx, key, buf, sizeof buf))
        ctx->progress->source(ctx->progress->ctx, key, buf);
}

cJSON *bn_text_splits_json(const bn_job_ctx *ctx)
{
    static const char *const names[3] = {"train", "selection", "report"};
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < 3; i++) {
        cJSON *s = cJSON_AddObjectToObject(o, names[i]);
        cJSON_AddNumberToObject(s, "documents", (double)ctx->text_docs[i]);
        cJSON_AddNumberToObject(s, "tokens", (double)ctx->text_tokens[i]);
    }
    return o;
}
