/* export.c - the export stage: one output folder, all or nothing.
 *
 * Everything is written under <output>.partial/ (removed first if a crashed run left
 * one): every file goes through a temporary name and fsync, then the folder is fsynced
 * and renamed to <output>. On any failure or cancel the partial folder is removed, so
 * the final name only ever shows a complete folder. Contents:
 *   model.safetensors        dequantized FP16: scale x code for ternarized tensors, FP16 of
 *                            the rest (non-float tensors copied as they are), every input
 *                            tensor under its own name; config.json (torch_dtype float16)
 *                            and the tokenizer files: a normal HF folder (PRIMARY output)
 *   quantized/               model.safetensors with 2-bit packed codes (HF BitNet layout,
 *                            see pack.h) under the weight's name, FP16 "<module>.weight_scale"
 *                            ([rows] per channel or [1]; W = weight_scale x code), preserved
 *                            tensors in FP16; config.json with quantization_config
 *   *.gguf                   from the GGUF writer (bn_stage_export_gguf)
 *   files of <work_dir>/outputs/ (calibration_stats.json, training_history.json, ...)
 *   compression_metadata.json  written last: config, per-tensor stats, totals, metrics,
 *                            every file's size and sha256, ratios from bytes on disk.
 * Tensors stream one at a time from the input mmap (pages released after each), so
 * memory stays near the codes plus one write buffer.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/fsutil.h"
#include "stages/gguf_model.h"
#include "stages/job_models.h"
#include "quant/pack.h"
#include "base/checksum.h"
#include "stages/stages.h"

enum { CHUNK_BYTES = 1 << 20 };

static const char *const tokenizer_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
};

static const bn_ptensor *find_preserved(const bn_job_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->n_preserved; i++)
        if (!strcmp(ctx->preserved[i].name, name)) return &ctx->preserved[i];
    return NULL;
}

/* ---- tensor data writers ----------------------------------------------------------------- */

/* FP16 (or raw, for non-float tensors) of an input tensor, or of its fine-tuned override. */
static int write_preserved_f16(bn_st_writer *w, const bn_job_ctx *ctx, const bn_st_tensor *t, uint16_t *buf,
                               bn_err *err)
{
    bn_st_tensor_prefetch(t);
    if (!bn_dtype_is_float(t->dtype)) return bn_st_writer_write(w, t->data, t->nbytes, err);
    const bn_ptensor *p = find_preserved(ctx, t->name);
    if (p && p->numel != t->numel)
        return bn_err_set(err, BN_EINVAL, "tensor '%s': trained copy has %llu values, the input %llu", t->name,
                          (unsigned long long)p->numel, (unsigned long long)t->numel);
    size_t per = CHUNK_BYTES / 2, esz = bn_dtype_size(t->dtype);
    for (uint64_t off = 0; off < t->numel; off += per) {
        size_t n = t->numel - off < per ? (size_t)(t->numel - off) : per;
        if (p) bn_f32_to_f16_array(p->data + off, buf, n);
        else if (t->dtype == BN_DTYPE_F64) {
            for (size_t i = 0; i < n; i++) {
                double d;
                memcpy(&d, (const char *)t->data + (off + i) * 8, 8);
                buf[i] = bn_f32_to_f16((float)d);
            }
        } else bn_to_f16((const char *)t->data + off * esz, t->dtype, buf, n);
        int rc = bn_st_writer_write(w, buf, n * 2, err);
        if (rc) return rc;
    }
    return 0;
}

static int write_dequant(bn_st_writer *w, const bn_qtensor *q, uint16_t *buf, bn_err *err)
{
    const int64_t per = CHUNK_BYTES / 2;
    int64_t fill = 0;
    for (int64_t r = 0; r < q->rows; r++) {
        float s = q->scales[q->n_scales == 1 ? 0 : r];
        const int8_t *c = q->codes + (size_t)r * (size_t)q->cols;
        for (int64_t done = 0; done < q->cols;) {
            int64_t k = q->cols - done < per - fill ? q->cols - done : per - fill;
            bn_quant_dequant_row_f16(c + done, s, k, buf + fill);
            fill += k;
            done += k;
            if (fill == per) {
                int rc = bn_st_writer_write(w, buf, (size_t)fill * 2, err);
                if (rc) return rc;
                fill = 0;
            }
        }
    }
    return fill ? bn_st_writer_write(w, buf, (size_t)fill * 2, err) : 0;
}

static bool cancelled_at(bn_job_ctx *ctx, double frac, const char *name, bn_err *err, int *rc)
{
    if (!bn_job_progress(ctx, frac, name)) return false;
    *rc = bn_err_set(err, BN_ECANCELLED, "cancelled during export (at tensor '%s')", name);
    return true;
}

/* A safetensors writer for path with the metadata every model file of ours carries
 * ("format": "pt") and one entry (key: value) saying what the file holds. */
static int model_writer(const char *path, const char *key, const char *value, bn_st_writer **w, bn_err *err)
{
    int rc = bn_st_writer_new(path, w, err);
    if (rc) return rc;
    bn_st_writer_metadata(*w, "format", "pt");
    bn_st_writer_metadata(*w, key, value);
    return BN_OK;
}

static int write_fp16_model(bn_job_ctx *ctx, const char *path, char sha[65], bn_err *err)
{
    const bn_st_set *set = ctx->model->weights;
    size_t n = bn_st_set_count(set);
    bn_st_writer *w;
    int rc = model_writer(path, "bitnetd", "dequantized BitNet b1.58 (FP16 scale x ternary code)", &w, err);
    if (rc) return rc;
    for (size_t i = 0; !rc && i < n; i++) {
        const bn_st_tensor *t = bn_st_set_at(set, i);
        rc = bn_st_writer_declare(w, t->name, bn_dtype_is_float(t->dtype) ? BN_DTYPE_F16 : t->dtype, t->ndim, t->shape, err);
    }
    uint16_t *buf = malloc(CHUNK_BYTES);
    if (!rc && !buf) rc = bn_err_set(err, BN_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        const bn_st_tensor *t = bn_st_set_at(set, i);
        const bn_qtensor *q = bn_job_qtensor(ctx, t->name);
        rc = q ? write_dequant(w, q, buf, err) : write_preserved_f16(w, ctx, t, buf, err);
        bn_st_tensor_release(t);
        if (!rc) cancelled_at(ctx, 0.6 * (double)(i + 1) / (double)n, t->name, err, &rc);
    }
    free(buf);
    if (rc) { bn_st_writer_abort(w); return rc; }
    return bn_st_writer_finish_sha256(w, sha, err);
}

/* "<module>.weight_scale" for "<module>.weight" */
static void scale_name(const char *name, char *buf, size_t len)
{
    size_t n = strlen(name);
    if (n > 7 && !strcmp(name + n - 7, ".weight")) snprintf(buf, len, "%.*s.weight_scale", (int)(n - 7), name);
    else snprintf(buf, len, "%s_scale", name);
}

static int write_quantized_model(bn_job_ctx *ctx, const char *path, char sha[65], bn_err *err)
{
    const bn_st_set *set = ctx->model->weights;
    size_t n = bn_st_set_count(set);
    bn_st_writer *w;
    int rc = model_writer(path, "bitnetd.packing",
                          "hf-bitnet-2bit: uint8 [ceil(out/4), in], bits 2i..2i+1 of [r, c] = "
                          "code(W[i*ceil(out/4) + r, c]) + 1", &w, err);
    if (rc) return rc;
    char sname[512];
    for (size_t i = 0; !rc && i < n; i++) {
        const bn_st_tensor *t = bn_st_set_at(set, i);
        const bn_qtensor *q = bn_job_qtensor(ctx, t->name);
        if (q) {
            int64_t ps[2] = { bn_pack2_rows(q->rows), q->cols }, ss[1] = { q->n_scales };
            rc = bn_st_writer_declare(w, t->name, BN_DTYPE_U8, 2, ps, err);
            scale_name(t->name, sname, sizeof sname);
            if (!rc) rc = bn_st_writer_declare(w, sname, BN_DTYPE_F16, 1, ss, err);
        } else {
            rc = bn_st_writer_declare(w, t->name, bn_dtype_is_float(t->dtype) ? BN_DTYPE_F16 : t->dtype, t->ndim,
                                      t->shape, err);
        }
    }
    uint16_t *buf = malloc(CHUNK_BYTES);
    if (!rc && !buf) rc = bn_err_set(err, BN_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        const bn_st_tensor *t = bn_st_set_at(set, i);
        const bn_qtensor *q = bn_job_qtensor(ctx, t->name);
        if (q) {
            size_t pb = (size_t)bn_pack2_rows(q->rows) * (size_t)q->cols;
            uint8_t *packed = malloc(pb);
            uint16_t *hs = malloc((size_t)q->n_scales * 2);
            if (!packed || !hs) rc = bn_err_set(err, BN_ENOMEM, "out of memory");
            if (!rc) {
                bn_pack2_hf(q->codes, q->rows, q->cols, packed);
                bn_f32_to_f16_array(q->scales, hs, (size_t)q->n_scales);
                rc = bn_st_writer_write(w, packed, pb, err);
            }
            if (!rc) rc = bn_st_writer_write(w, hs, (size_t)q->n_scales * 2, err);
            free(packed);
            free(hs);
        } else {
            rc = write_preserved_f16(w, ctx, t, buf, err);
            bn_st_tensor_release(t);
        }
        if (!rc) cancelled_at(ctx, 0.6 + 0.2 * (double)(i + 1) / (double)n, t->name, err, &rc);
    }
    free(buf);
    if (rc) { bn_st_writer_abort(w); return rc; }
    return bn_st_writer_finish_sha256(w, sha, err);
}

/* ---- config.json and copies ------------------------------------------------------------------ */

static int write_json_file(const char *path, cJSON *o, bn_err *err)
{
    char *text = cJSON_Print(o);
    if (!text) return bn_err_set(err, BN_ENOMEM, "out of memory");
    size_t n = strlen(text);
    char *t2 = realloc(text, n + 2);
    if (t2) { text = t2; text[n++] = '\n'; text[n] = 0; }
    int rc = bn_fs_write_atomic(path, text, n, err);
    free(text);
    return rc;
}

static int write_config(bn_job_ctx *ctx, const char *dst, bool quantized, bn_err *err)
{
    char src[PATH_MAX], *text;
    size_t len;
    bn_fs_join(src, sizeof src, ctx->paths.model_dir, "config.json");
    int rc = bn_fs_read_file(src, 16u << 20, &text, &len, err);
    if (rc) return rc;
    cJSON *c = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return bn_err_set(err, BN_EFORMAT, "%s: not a JSON object", src);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(c, "torch_dtype");
    cJSON_AddStringToObject(c, "torch_dtype", "float16");
    if (cJSON_GetObjectItemCaseSensitive(c, "dtype")) { /* transformers 5.x's name for it */
        cJSON_DeleteItemFromObjectCaseSensitive(c, "dtype");
        cJSON_AddStringToObject(c, "dtype", "float16");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(c, "quantization_config");
    if (quantized) {
        cJSON *q = cJSON_AddObjectToObject(c, "quantization_config");
        cJSON_AddStringToObject(q, "quant_method", "bitnet");
        cJSON_AddStringToObject(q, "linear_class", "autobitlinear");
        cJSON_AddStringToObject(q, "quantization_mode", "offline");
        cJSON_AddNumberToObject(q, "bits", 1.58);
        cJSON_AddStringToObject(q, "scale_granularity",
                                ctx->opt->scale == BN_SCALE_PER_TENSOR ? "per_tensor" : "per_channel");
        cJSON_AddStringToObject(q, "scale_convention", "W = weight_scale * code (weight_scale is the absmean, not its inverse)");
        cJSON_AddStringToObject(q, "packing", "hf-bitnet-2bit");
        cJSON_AddNumberToObject(q, "sparsity_threshold", round((double)ctx->tau * 1e6) / 1e6);
        cJSON *m = cJSON_AddArrayToObject(q, "modules_to_not_convert");
        for (int i = 0; i < ctx->opt->n_preserve; i++) cJSON_AddItemToArray(m, cJSON_CreateString(ctx->opt->preserve[i]));
        cJSON_AddBoolToObject(q, "use_rms_norm", false);
    }
    rc = write_json_file(dst, c, err);
    cJSON_Delete(c);
    return rc;
}

static int copy_tokenizer(bn_job_ctx *ctx, const char *dst_dir, bn_err *err)
{
    char s[PATH_MAX], d[PATH_MAX];
    for (size_t i = 0; i < sizeof tokenizer_files / sizeof tokenizer_files[0]; i++) {
        bn_fs_join(s, sizeof s, ctx->paths.model_dir, tokenizer_files[i]);
        if (!bn_fs_exists(s)) continue;
        bn_fs_join(d, sizeof d, dst_dir, tokenizer_files[i]);
        int rc = bn_fs_copy_file(s, d, err);
        if (rc) return rc;
    }
    return 0;
}

static int copy_extra_outputs(bn_job_ctx *ctx, const char *dst_dir, bn_err *err)
{
    char src_dir[PATH_MAX];
    bn_job_work_path(ctx, "outputs", src_dir, sizeof src_dir);
    DIR *d = opendir(src_dir);
    if (!d) return 0;
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char s[PATH_MAX], t[PATH_MAX];
        bn_fs_join(s, sizeof s, src_dir, e->d_name);
        bn_fs_join(t, sizeof t, dst_dir, e->d_name);
        if (!bn_fs_is_dir(s)) rc = bn_fs_copy_file(s, t, err);
    }
    closedir(d);
    return rc;
}

/* ---- compression_metadata.json ---------------------------------------------------------------- */

typedef struct { char **paths; size_t n, cap; } file_list;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void list_files(const char *root, const char *rel, file_list *fl)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char r[PATH_MAX], full[PATH_MAX];
        if (snprintf(r, sizeof r, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name) >= (int)sizeof r) continue;
        if (!bn_fs_join(full, sizeof full, root, r)) continue;
        if (bn_fs_is_dir(full)) { list_files(root, r, fl); continue; }
        if (fl->n == fl->cap) {
            size_t cap = fl->cap ? fl->cap * 2 : 32;
            char **p = realloc(fl->paths, cap * sizeof *p);
            if (!p) break;
            fl->paths = p;
            fl->cap = cap;
        }
        fl->paths[fl->n++] = strdup(r);
    }
    closedir(d);
}

static cJSON *totals_json(const bn_job_ctx *ctx)
{
    bn_quant_stats tot = { 0 };
    int64_t ns = 0;
    for (size_t i = 0; i < ctx->n_qt; i++) {
        bn_quant_stats_merge(&tot, ns, &ctx->qt[i].stats, ctx->qt[i].n_scales);
        ns += ctx->qt[i].n_scales;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "params", (double)ctx->model->n_params);
    cJSON_AddNumberToObject(o, "quantized_params", (double)tot.params);
    cJSON_AddNumberToObject(o, "preserved_params", (double)(ctx->model->n_params - tot.params));
    cJSON_AddNumberToObject(o, "quantized_tensors", (double)ctx->n_qt);
    cJSON_AddNumberToObject(o, "preserved_tensors", (double)(bn_st_set_count(ctx->model->weights) - ctx->n_qt));
    cJSON_AddNumberToObject(o, "zeros", (double)tot.zeros);
    cJSON_AddNumberToObject(o, "zero_fraction", tot.zero_fraction);
    if (tot.params) {
        cJSON_AddNumberToObject(o, "scale_min", tot.scale_min);
        cJSON_AddNumberToObject(o, "scale_mean", tot.scale_mean);
        cJSON_AddNumberToObject(o, "scale_max", tot.scale_max);
    }
    cJSON_AddNumberToObject(o, "mse", tot.mse);
    cJSON_AddNumberToObject(o, "rel_err", tot.rel_err);
    return o;
}

static void summary_metrics(bn_job_ctx *ctx, cJSON *summary)
{
    double v, epochs = 0;
    static const struct { const char *phase, *metric; } same[] = {
        { "phase/compression_ratio", "compression/ratio" },
        { "phase/original_size_mb", "compression/original_size_mb" },
        { "phase/compressed_size_mb", "compression/compressed_size_mb" },
        { "phase/accuracy_preserved", "compression/accuracy_preserved" },
        { "phase/sparsity_ratio", "compression/sparsity_ratio" },
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        if (bn_job_metric_get(ctx, same[i].metric, &v)) bn_job_metric(ctx, same[i].phase, v);
    bn_job_metric_get(ctx, "compression/fine_tune_epochs", &epochs);
    if ((epochs > 0 && bn_job_metric_get(ctx, "compression/post_finetune_perplexity", &v)) ||
        bn_job_metric_get(ctx, "compression/post_perplexity", &v))
        bn_job_metric(ctx, "phase/final_perplexity", v);
    bn_job_metric(ctx, "phase/success", 1);
    for (size_t i = 0; i < ctx->n_metrics; i++)
        if (!strncmp(ctx->metrics[i].key, "phase/", 6))
            cJSON_AddNumberToObject(summary, ctx->metrics[i].key, ctx->metrics[i].value);
    cJSON_AddStringToObject(summary, "phase/quantization_method", "BitNet-1.58");
}

/* "text": where the calibration text came from, the three splits' sizes, and for every
 * perplexity/loss metric recorded the text it was measured on ("metric_sources"). */
static void add_text_sources(const bn_job_ctx *ctx, cJSON *o)
{
    cJSON *t = cJSON_AddObjectToObject(o, "text");
    if (!ctx->text_label[0]) {
        cJSON_AddNullToObject(t, "source");
        return;
    }
    cJSON_AddStringToObject(t, "source", ctx->text_label);
    cJSON_AddBoolToObject(t, "synthetic", ctx->text_synthetic);
    cJSON_AddItemToObject(t, "splits", bn_text_splits_json(ctx));
    cJSON *ms = cJSON_AddObjectToObject(o, "metric_sources");
    char buf[600];
    for (size_t i = 0; i < ctx->n_metrics; i++)
        if (bn_text_metric_source(ctx, ctx->metrics[i].key, buf, sizeof buf))
            cJSON_AddStringToObject(ms, ctx->metrics[i].key, buf);
    double epochs = 0;
    if (bn_job_metric_get(ctx, "compression/fine_tune_epochs", &epochs) && epochs > 0) {
        static const char *const steps[] = {"fine_tune/loss", "fine_tune/eval_perplexity"};
        for (int i = 0; i < 2; i++)
            if (bn_text_metric_source(ctx, steps[i], buf, sizeof buf))
                cJSON_AddStringToObject(ms, steps[i], buf);
    }
}

/* kern: the GGUF step's report (export_gguf.c, gguf_model.h) becomes "gguf" here and
 * the separate file is removed: every fallback type is in the metadata, never silent. */
static void add_gguf_report(cJSON *o, const char *dir)
{
    char path[PATH_MAX], *text = NULL;
    size_t len;
    bn_fs_join(path, sizeof path, dir, BN_GGUF_REPORT_FILE);
    if (!bn_fs_exists(path) || bn_fs_read_file(path, 1 << 24, &text, &len, NULL) != 0) return;
    cJSON *g = cJSON_Parse(text);
    free(text);
    if (!g) return;
    cJSON_AddItemToObject(o, "gguf", g);
    remove(path);
}

/* Checksums the writers computed on the way out, by path relative to the folder: those
 * files are not read back. */
typedef struct { const char *rel; char sha[65]; } known_sha;
enum { N_KNOWN_SHA = 2 };

static const char *known(const known_sha *k, const char *rel)
{
    for (int i = 0; i < N_KNOWN_SHA; i++)
        if (k[i].rel && !strcmp(k[i].rel, rel)) return k[i].sha;
    return NULL;
}

static int write_metadata(bn_job_ctx *ctx, const char *dir, uint64_t qbytes, const known_sha *ks, bn_err *err)
{
    const bn_model_config *c = &ctx->model->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "compression_method", "BitNet-1.58");
    cJSON_AddNumberToObject(o, "quantization_bits", 1.58);
    cJSON_AddStringToObject(o, "bitnetd_version", BN_VERSION);
    char ts[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(o, "created_at", ts);
    cJSON_AddStringToObject(o, "source_model", ctx->source ? ctx->source : ctx->paths.model_dir);
    if (ctx->source && strcmp(ctx->source, ctx->paths.model_dir) != 0) /* hf://: the snapshot */
        cJSON_AddStringToObject(o, "source_snapshot", ctx->paths.model_dir);
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(m, "model_type", c->model_type);
    cJSON_AddNumberToObject(m, "hidden_size", c->dim);
    cJSON_AddNumberToObject(m, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(m, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(m, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(m, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(m, "vocab_size", c->vocab_size);
    cJSON_AddBoolToObject(m, "tie_word_embeddings", c->tied_embeddings);
    cJSON_AddNumberToObject(m, "params", (double)ctx->model->n_params);
    cJSON *cfg = bn_options_to_json(ctx->opt);
    cJSON_AddNumberToObject(cfg, "effective_sparsity_threshold", round((double)ctx->tau * 1e6) / 1e6);
    cJSON_AddStringToObject(cfg, "size_category", ctx->size_category ? ctx->size_category : "");
    cJSON_AddItemToObject(o, "config", cfg);
    cJSON *q = cJSON_AddObjectToObject(o, "quantization");
    cJSON_AddStringToObject(q, "scale", "absmean (mean |W|, floored at 1e-8)");
    cJSON_AddStringToObject(q, "scale_granularity", ctx->opt->scale == BN_SCALE_PER_TENSOR ? "per_tensor" : "per_channel");
    cJSON_AddStringToObject(q, "code_rule", "sign(W) where |W| >= tau * scale, else 0");
    cJSON_AddNumberToObject(q, "tau", round((double)ctx->tau * 1e6) / 1e6);
    cJSON_AddBoolToObject(q, "calibration_refined_scales", ctx->n_calib > 0 && ctx->opt->calibration.refine_scales);
    cJSON_AddStringToObject(q, "packing", "hf-bitnet-2bit (quantized/model.safetensors)");
    cJSON *tensors = cJSON_AddArrayToObject(o, "tensors");
    for (size_t i = 0; i < ctx->n_qt; i++) cJSON_AddItemToArray(tensors, bn_qtensor_stats_json(&ctx->qt[i]));
    cJSON *pres = cJSON_AddArrayToObject(o, "preserved_tensors");
    for (size_t i = 0; i < bn_st_set_count(ctx->model->weights); i++) {
        const bn_st_tensor *t = bn_st_set_at(ctx->model->weights, i);
        if (bn_job_qtensor(ctx, t->name)) continue;
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "name", t->name);
        cJSON_AddStringToObject(p, "input_dtype", bn_dtype_name(t->dtype));
        cJSON_AddStringToObject(p, "output_dtype", bn_dtype_is_float(t->dtype) ? "F16" : bn_dtype_name(t->dtype));
        cJSON_AddNumberToObject(p, "params", (double)t->numel);
        cJSON_AddBoolToObject(p, "trained", find_preserved(ctx, t->name) != NULL);
        cJSON_AddItemToArray(pres, p);
    }
    cJSON_AddItemToObject(o, "totals", totals_json(ctx));
    add_gguf_report(o, dir); /* kern: GGUF files, their types and fallbacks */
    double n = (double)ctx->model->n_params;
    cJSON *sz = cJSON_AddObjectToObject(o, "sizes");
    cJSON_AddNumberToObject(sz, "input_weight_bytes", (double)ctx->input_bytes);
    cJSON_AddNumberToObject(sz, "quantized_weight_bytes", (double)qbytes);
    cJSON_AddNumberToObject(sz, "fp16_baseline_bytes", 2 * n);
    cJSON_AddNumberToObject(sz, "fp32_baseline_bytes", 4 * n);
    cJSON_AddNumberToObject(o, "compression_ratio", (double)ctx->input_bytes / (double)qbytes);
    cJSON_AddNumberToObject(o, "compression_ratio_vs_fp16", 2 * n / (double)qbytes);
    cJSON_AddNumberToObject(o, "compression_ratio_vs_fp32", 4 * n / (double)qbytes);
    cJSON *summary = cJSON_CreateObject();
    summary_metrics(ctx, summary);
    cJSON *mj = cJSON_AddObjectToObject(o, "metrics");
    for (size_t i = 0; i < ctx->n_metrics; i++)
        if (strncmp(ctx->metrics[i].key, "phase/", 6)) cJSON_AddNumberToObject(mj, ctx->metrics[i].key, ctx->metrics[i].value);
    cJSON_AddItemToObject(o, "summary", summary);
    add_text_sources(ctx, o);
    cJSON *files = cJSON_AddArrayToObject(o, "files");
    file_list fl = { 0 };
    list_files(dir, "", &fl);
    qsort(fl.paths, fl.n, sizeof *fl.paths, cmp_str);
    int rc = 0;
    for (size_t i = 0; i < fl.n; i++) {
        char full[PATH_MAX], hex[65];
        bn_fs_join(full, sizeof full, dir, fl.paths[i]);
        const char *k = known(ks, fl.paths[i]);
        if (k) memcpy(hex, k, 65);
        else if (!rc) rc = bn_sha256_file(full, hex, err);
        if (!rc) {
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "path", fl.paths[i]);
            cJSON_AddNumberToObject(f, "bytes", (double)bn_fs_file_size(full));
            cJSON_AddStringToObject(f, "sha256", hex);
            cJSON_AddItemToArray(files, f);
        }
        bn_job_progress(ctx, 0.8 + 0.2 * (double)(i + 1) / (double)fl.n, fl.paths[i]);
        free(fl.paths[i]);
    }
    free(fl.paths);
    char path[PATH_MAX];
    bn_fs_join(path, sizeof path, dir, "compression_metadata.json");
    if (!rc) rc = write_json_file(path, o, err);
    cJSON_Delete(o);
    return rc;
}

/* ---- the stage ----------------------------------------------------------------------------------- */

static int export_into(bn_job_ctx *ctx, const char *dir, bn_err *err)
{
    char p[PATH_MAX], qdir[PATH_MAX];
    known_sha ks[N_KNOWN_SHA] = { { "model.safetensors", "" }, { "quantized/model.safetensors", "" } };
    bn_fs_join(qdir, sizeof qdir, dir, "quantized");
    int rc = bn_fs_mkdir_p(qdir, err);
    if (!rc) rc = write_fp16_model(ctx, bn_fs_join(p, sizeof p, dir, "model.safetensors"), ks[0].sha, err);
    if (!rc) rc = write_config(ctx, bn_fs_join(p, sizeof p, dir, "config.json"), false, err);
    if (!rc) rc = copy_tokenizer(ctx, dir, err);
    if (!rc) rc = write_quantized_model(ctx, bn_fs_join(p, sizeof p, qdir, "model.safetensors"), ks[1].sha, err);
    if (!rc) rc = write_config(ctx, bn_fs_join(p, sizeof p, qdir, "config.json"), true, err);
    if (!rc) rc = copy_tokenizer(ctx, qdir, err);
    if (!rc) rc = bn_stage_export_gguf(ctx, dir, err);
    if (!rc) rc = copy_extra_outputs(ctx, dir, err);
    if (rc) return rc;
    int64_t qbytes = bn_fs_file_size(bn_fs_join(p, sizeof p, qdir, "model.safetensors"));
    if (qbytes <= 0) return bn_err_set(err, BN_EIO, "%s: cannot read its size", p);
    bn_job_compression_metrics(ctx, (uint64_t)qbytes);
    rc = write_metadata(ctx, dir, (uint64_t)qbytes, ks, err);
    if (!rc) rc = bn_fs_fsync_dir(qdir, err);
    if (!rc) rc = bn_fs_fsync_dir(dir, err);
    return rc;
}

int bn_stage_export(bn_job_ctx *ctx, bn_err *err)
{
    char partial[PATH_MAX];
    if (snprintf(partial, sizeof partial, "%s.partial", ctx->paths.output_dir) >= (int)sizeof partial)
        return bn_err_set(err, BN_EINVAL, "%s: path too long", ctx->paths.output_dir);
    if (bn_fs_exists(ctx->paths.output_dir))
        return bn_err_set(err, BN_EINVAL, "output folder %s already exists", ctx->paths.output_dir);
    /* Safe points: before the partial folder is touched and before it is renamed into
     * place. A refusal leaves the folder as it is (another host may own it now). */
    int rc = bn_job_may_write(ctx, "<output>.partial", err);
    if (rc) return rc;
    rc = bn_fs_rm_rf(partial, err);
    if (!rc) rc = bn_fs_mkdir_p(partial, err);
    if (!rc) rc = export_into(ctx, partial, err);
    if (!rc && (rc = bn_job_may_write(ctx, "the output folder (rename)", err))) return rc;
    if (!rc) rc = bn_fs_rename(partial, ctx->paths.output_dir, err);
    if (rc) bn_fs_rm_rf(partial, NULL);
    return rc;
}
