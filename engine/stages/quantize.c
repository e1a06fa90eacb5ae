/* quantize.c - the load and quantize stages.
 *
 * load fetches an hf:// source into the Hub cache first (hub/hub.h; the snapshot folder
 * then stands for the model in every later stage), opens the model folder (an mmap;
 * re-opened on every resumed run), refuses a model with a NaN/Inf weight (naming the
 * tensor) and fixes the job's effective threshold and thread count. quantize
 * ternarizes every tensor that is
 * not preserved, in model order, using the calibration statistics when the calibrate
 * stage left them, and checkpoints the result (job.c, bn_qt_save).
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

#include "backend/device.h"
#include "base/parallel.h"
#include "base/tensor.h"
#include "hub/hub.h"
#include "quant/pack.h"
#include "stages/stages.h"

/* ---- load ------------------------------------------------------------------------------- */

/* Every float tensor is scanned for NaN/Inf (in parallel, one tensor per task): a model
 * with a non-finite weight is refused here, with the tensor's name, instead of turning
 * into NaN activations later. */
typedef struct finite_scan {
    const bn_st_set *set;
    int64_t *bad; /* [tensors] first non-finite index, -1 if none */
} finite_scan;

static void scan_task(void *vctx, int task, int thread)
{
    (void)thread;
    finite_scan *s = vctx;
    const bn_st_tensor *t = bn_st_set_at(s->set, (size_t)task);
    s->bad[task] = bn_first_nonfinite(t->data, t->dtype, (size_t)t->numel);
}

static int check_finite(const bn_st_set *set, int threads, bn_err *err)
{
    size_t n = bn_st_set_count(set);
    if (n == 0) return BN_OK;
    finite_scan s = {set, malloc(n * sizeof(int64_t))};
    if (!s.bad) return bn_err_set(err, BN_ENOMEM, "load: out of memory");
    bn_parallel_for(threads, (int)n, scan_task, &s);
    int rc = BN_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        if (s.bad[i] < 0) continue;
        const bn_st_tensor *t = bn_st_set_at(set, i);
        int64_t cols = t->ndim >= 2 ? t->shape[t->ndim - 1] : t->numel > 0 ? (int64_t)t->numel : 1;
        double v = 0;
        if (t->dtype == BN_DTYPE_F64) memcpy(&v, (const char *)t->data + 8 * s.bad[i], 8);
        else {
            float f;
            bn_to_f32((const char *)t->data + bn_dtype_size(t->dtype) * (size_t)s.bad[i], t->dtype, &f, 1);
            v = f;
        }
        rc = bn_err_set(err, BN_ENUMERIC, "tensor '%s' holds %s at element %lld (row %lld, column "
                        "%lld): the model's weights must be finite", t->name, isnan(v) ? "NaN" : "Inf",
                        (long long)s.bad[i], (long long)(s.bad[i] / cols), (long long)(s.bad[i] % cols));
    }
    free(s.bad);
    return rc;
}

/* hf:// download progress as the load stage's progress: bytes, rate and ETA. */
static bool hub_update(void *p, uint64_t done, uint64_t total, double rate, const char *file, bool waiting)
{
    bn_job_ctx *ctx = p;
    char detail[256];
    if (waiting) {
        snprintf(detail, sizeof detail, "waiting for another job's download of %s", file ? file : "the model");
    } else {
        double left = rate > 0 ? (double)(total - done) / rate : -1;
        int k = snprintf(detail, sizeof detail, "downloading %s: %.1f of %.1f MB", file ? file : "", (double)done / 1e6,
                         (double)total / 1e6);
        if (rate > 0)
            snprintf(detail + k, sizeof detail - (size_t)k, ", %.2f MB/s, ETA %.0f s", rate / 1e6, left);
    }
    return bn_job_progress(ctx, total ? 0.95 * (double)done / (double)total : 0, detail);
}

static void hub_event(void *p, const char *level, const char *message)
{
    bn_job_event(p, level, "%s", message);
}

int bn_stage_load(bn_job_ctx *ctx, bn_err *err)
{
    int rc;
    if (ctx->opt->device != BN_DEVICE_CPU) {
        bn_device d = bn_device_resolve(ctx->opt->device);
        if (d == BN_DEVICE_CUDA)
            bn_job_event(ctx, "info", "config.device \"%s\": evaluate and fine-tune run on GPU %d; load, "
                         "calibrate, quantize and export on the CPU (docs/GPU.md)",
                         bn_device_name(ctx->opt->device), ctx->opt->gpu);
        else
            bn_job_event(ctx, "info", "config.device \"auto\": no usable GPU here, every stage runs on the CPU");
    }
    if (!ctx->source) ctx->source = ctx->paths.model_dir;
    if (bn_hub_is_source(ctx->source)) { /* fetch into the Hub cache, then load the snapshot */
        bn_hub_progress hp = { ctx, hub_update, hub_event };
        bn_job_progress(ctx, 0, "resolving the Hugging Face Hub source");
        if ((rc = bn_hub_fetch(ctx->source, ctx->paths.hub, &hp, ctx->hub_dir, sizeof ctx->hub_dir, err)))
            return rc;
        ctx->paths.model_dir = ctx->hub_dir;
    }
    bn_job_progress(ctx, ctx->paths.model_dir == ctx->hub_dir ? 0.95 : 0, "opening model");
    rc = bn_hf_open(ctx->paths.model_dir, &ctx->model, err);
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
    bn_job_progress(ctx, ctx->paths.model_dir == ctx->hub_dir ? 0.97 : 0.5, "checking the weights are finite");
    rc = check_finite(m->weights, ctx->threads, err);
    if (rc) return rc;
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
    bn_job_count_metrics(ctx);
    bn_job_event(ctx, "info", "ternarized %zu tensors: about %.2f MiB packed (final size at export)",
                 ctx->n_qt, (double)quantized_data_bytes(ctx) / (1024.0 * 1024.0));
    return 0;
}

