/* options.c - the job configuration: defaults, JSON parsing with validation, JSON output;
 * plus the stage names and metric name lists (bn_engine.h).
 *
 * Plain numeric and boolean fields are described by tables (name, type, offset, range),
 * one table per JSON object; the few fields with their own syntax (threshold "auto",
 * enums, pattern and text lists, the GGUF list) have small parsers. Every key of the
 * input must be known: an unknown key or a wrong type fails with the JSON path of the
 * field ("config.fine_tune.lr: ..."). bn_options_from_json is pure (no I/O), so the API
 * can validate a job's config before queueing it.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/device.h"
#include "bn_engine.h"

/* ---- names ---------------------------------------------------------------------------- */

static const char *const stage_names[BN_STAGE_COUNT] = { "load", "calibrate", "quantize", "evaluate", "finetune", "export" };

const char *bn_stage_name(bn_stage s) { return (unsigned)s < BN_STAGE_COUNT ? stage_names[s] : "?"; }

int bn_stage_parse(const char *name)
{
    for (int i = 0; name && i < BN_STAGE_COUNT; i++)
        if (!strcmp(name, stage_names[i])) return i;
    return -1;
}

const char *const bn_job_metric_names[BN_N_JOB_METRICS] = {
    "compression/original_size_mb", "compression/pre_perplexity", "compression/pre_eval_loss",
    "compression/compressed_size_mb", "compression/ratio", "compression/layers_compressed",
    "compression/sparsity_ratio", "compression/quantized_params", "compression/total_params",
    "compression/layers_quantized",
    "compression/post_perplexity", "compression/perplexity_degradation", "compression/accuracy_preserved",
    "compression/dequantization_accuracy", "compression/gradient_flow_test_passed",
    "compression/post_finetune_perplexity", "compression/perplexity_recovery", "compression/fine_tune_epochs",
    "compression/fine_tune_time_hours",
};

const char *const bn_summary_key_names[BN_N_SUMMARY_KEYS] = {
    "phase/compression_ratio", "phase/original_size_mb", "phase/compressed_size_mb", "phase/final_perplexity",
    "phase/accuracy_preserved", "phase/success", "phase/quantization_method", "phase/sparsity_ratio",
};

/* ---- defaults --------------------------------------------------------------------------- */

static const char *const default_preserve[] = { "embed_tokens", "lm_head", "norm", "bias" };

void bn_options_default(bn_options *o)
{
    memset(o, 0, sizeof *o);
    o->sparsity_threshold = 0.5;
    o->scale = BN_SCALE_PER_CHANNEL;
    for (size_t i = 0; i < sizeof default_preserve / sizeof default_preserve[0]; i++)
        o->preserve[o->n_preserve++] = (char *)default_preserve[i]; /* static: never freed */
    o->seed = 42;
    o->threads = 0;
    o->device = BN_DEVICE_CPU;
    o->calibration.dataset = BN_CALIB_SYNTHETIC;
    o->calibration.enabled = true;
    o->calibration.samples = 256;
    o->calibration.sequence_length = 512;
    o->calibration.batch_size = 4;
    o->calibration.eval_fraction = 0.1;
    o->calibration.selection_fraction = 0.05;
    o->calibration.refine_scales = true;
    o->fine_tune.enabled = true;
    o->fine_tune.threshold = 0.05;
    o->fine_tune.epochs = 0;
    o->fine_tune.max_steps = 0;
    o->fine_tune.max_minutes = 30;
    o->fine_tune.patience = BN_FT_DEFAULT_PATIENCE;
    o->fine_tune.cooldown = BN_FT_DEFAULT_COOLDOWN;
    o->fine_tune.allow_synthetic = false;
    o->fine_tune.batch_size = 4;
    o->fine_tune.sequence_length = 512;
    o->fine_tune.lr = 1e-3;
    o->fine_tune.muon_lr = 0.005; /* STE on stories260K, 100 steps: 0.005 -> ppl 13.1, 0.02 -> 15.8, 0.05 -> 25 */
    o->fine_tune.warmup_steps = 20;
    o->fine_tune.distill = 0;
    o->fine_tune.quant_warmup_steps = 0;
    o->fine_tune.train_preserved = true;
    o->fine_tune.checkpoint_every = 50;
    o->fine_tune.seed = 42;
    o->export.gguf_tq2_0 = true;
    o->export.gguf_tq1_0 = false;
    snprintf(o->export.embedding_dtype, sizeof o->export.embedding_dtype, "f16");
    o->evaluate.windows = 16;
    o->evaluate.act_quant = false;
}

static void free_pattern(char *p)
{
    for (size_t i = 0; i < sizeof default_preserve / sizeof default_preserve[0]; i++)
        if (p == default_preserve[i]) return;
    free(p);
}

void bn_options_free(bn_options *o)
{
    for (int i = 0; i < o->n_preserve; i++) free_pattern(o->preserve[i]);
    o->n_preserve = 0;
    for (int i = 0; i < o->calibration.n_texts; i++) free(o->calibration.texts[i]);
    free(o->calibration.texts);
    o->calibration.texts = NULL;
    o->calibration.n_texts = 0;
    free(o->calibration.path);
    o->calibration.path = NULL;
}

/* ---- field tables --------------------------------------------------------------------------- */

typedef enum { F_INT, F_DOUBLE, F_BOOL, F_U64 } ftype;
typedef struct {
    const char *name;
    ftype type;
    size_t off;
    double lo, hi;      /* inclusive range for numbers */
    bool lo_open;       /* lo is exclusive */
} field;

#define OFF(m) offsetof(bn_options, m)
static const field top_fields[] = {
    { "seed", F_U64, OFF(seed), 0, 9007199254740991.0, false },
    { "threads", F_INT, OFF(threads), 0, 1024, false },
};
static const field calib_fields[] = {
    { "enabled", F_BOOL, OFF(calibration.enabled), 0, 0, false },
    { "samples", F_INT, OFF(calibration.samples), 1, 1000000, false },
    { "sequence_length", F_INT, OFF(calibration.sequence_length), 8, 65536, false },
    { "batch_size", F_INT, OFF(calibration.batch_size), 1, 1024, false },
    { "eval_fraction", F_DOUBLE, OFF(calibration.eval_fraction), 0, 0.9, true },
    { "selection_fraction", F_DOUBLE, OFF(calibration.selection_fraction), 0, 0.5, false },
    { "refine_scales", F_BOOL, OFF(calibration.refine_scales), 0, 0, false },
};
static const field ft_fields[] = {
    { "enabled", F_BOOL, OFF(fine_tune.enabled), 0, 0, false },
    { "threshold", F_DOUBLE, OFF(fine_tune.threshold), -1, 100, false }, /* < 0: even when not worse */
    { "epochs", F_INT, OFF(fine_tune.epochs), 0, 1000000, false },
    { "max_steps", F_INT, OFF(fine_tune.max_steps), 0, 100000000, false },
    { "max_minutes", F_DOUBLE, OFF(fine_tune.max_minutes), 0, 100000, true },
    { "patience", F_INT, OFF(fine_tune.patience), 0, 1000000, false },
    { "cooldown", F_DOUBLE, OFF(fine_tune.cooldown), 0, 1, false },
    { "allow_synthetic", F_BOOL, OFF(fine_tune.allow_synthetic), 0, 0, false },
    { "batch_size", F_INT, OFF(fine_tune.batch_size), 1, 1024, false },
    { "sequence_length", F_INT, OFF(fine_tune.sequence_length), 8, 65536, false },
    { "lr", F_DOUBLE, OFF(fine_tune.lr), 0, 10, true },
    { "muon_lr", F_DOUBLE, OFF(fine_tune.muon_lr), 0, 10, true },
    { "warmup_steps", F_INT, OFF(fine_tune.warmup_steps), 0, 100000000, false },
    { "distill", F_DOUBLE, OFF(fine_tune.distill), 0, 1000, false },
    { "quant_warmup_steps", F_INT, OFF(fine_tune.quant_warmup_steps), 0, 100000000, false },
    { "train_preserved", F_BOOL, OFF(fine_tune.train_preserved), 0, 0, false },
    { "checkpoint_every", F_INT, OFF(fine_tune.checkpoint_every), 1, 100000000, false },
    { "seed", F_U64, OFF(fine_tune.seed), 0, 9007199254740991.0, false },
};
static const field eval_fields[] = {
    { "windows", F_INT, OFF(evaluate.windows), 1, 100000, false },
    { "act_quant", F_BOOL, OFF(evaluate.act_quant), 0, 0, false },
};
#define N(a) (sizeof a / sizeof a[0])

static const field *find_field(const field *f, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(f[i].name, name)) return &f[i];
    return NULL;
}

static int set_field(bn_options *o, const field *f, const cJSON *v, const char *path, bn_err *err)
{
    char *base = (char *)o + f->off;
    char at[160];
    snprintf(at, sizeof at, "%s.%s", path, f->name);
    if (f->type == F_BOOL) {
        if (!cJSON_IsBool(v)) return bn_err_set_at(err, BN_EINVAL, at, "must be true or false");
        *(bool *)base = cJSON_IsTrue(v);
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return bn_err_set_at(err, BN_EINVAL, at, "must be a number");
    double d = v->valuedouble;
    if ((f->type != F_DOUBLE) && floor(d) != d)
        return bn_err_set_at(err, BN_EINVAL, at, "must be an integer");
    if (d > f->hi || d < f->lo || (f->lo_open && d == f->lo))
        return bn_err_set_at(err, BN_EINVAL, at, "%g is out of range (%s%g .. %g)", d,
                          f->lo_open ? "> " : "", f->lo, f->hi);
    switch (f->type) {
    case F_INT: *(int *)base = (int)d; break;
    case F_U64: *(uint64_t *)base = (uint64_t)d; break;
    default: *(double *)base = d; break;
    }
    return 0;
}

/* ---- special fields ------------------------------------------------------------------------- */

static int parse_threshold(bn_options *o, const cJSON *v, bn_err *err)
{
    if (cJSON_IsString(v) && !strcmp(v->valuestring, "auto")) {
        o->sparsity_auto = true;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 2)
        return bn_err_set_at(err, BN_EINVAL, "config.sparsity_threshold", "must be a number in [0, 2] or \"auto\"");
    o->sparsity_auto = false;
    o->sparsity_threshold = v->valuedouble;
    return 0;
}

static int parse_strings(const cJSON *v, const char *path, int max, size_t maxlen, char ***out, int *n, bn_err *err)
{
    if (!cJSON_IsArray(v)) return bn_err_set_at(err, BN_EINVAL, path, "must be an array of strings");
    int cnt = cJSON_GetArraySize(v);
    if (cnt > max) return bn_err_set_at(err, BN_EINVAL, path, "%d entries, at most %d allowed", cnt, max);
    char **list = calloc((size_t)cnt + 1, sizeof *list);
    if (!list) return bn_err_set(err, BN_ENOMEM, "out of memory");
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strlen(e->valuestring) > maxlen) {
            for (int k = 0; k < i; k++) free(list[k]);
            free(list);
            char at[160];
            snprintf(at, sizeof at, "%s[%d]", path, i);
            return bn_err_set_at(err, BN_EINVAL, at, "must be a non-empty string of at most %zu bytes", maxlen);
        }
        list[i] = strdup(e->valuestring);
    }
    *out = list;
    *n = cnt;
    return 0;
}

static int parse_preserve(bn_options *o, const cJSON *v, bn_err *err)
{
    char **list;
    int n;
    int rc = parse_strings(v, "config.preserve", BN_MAX_PATTERNS, 128, &list, &n, err);
    if (rc) return rc;
    for (int i = 0; i < o->n_preserve; i++) free_pattern(o->preserve[i]);
    for (int i = 0; i < n; i++) o->preserve[i] = list[i];
    o->n_preserve = n;
    free(list);
    return 0;
}

static int parse_dataset(bn_options *o, const cJSON *v, bn_err *err)
{
    static const char *const names[] = { "synthetic", "openwebtext", "c4", "wikitext", "custom", "none" };
    for (int i = 0; cJSON_IsString(v) && i < 6; i++)
        if (!strcmp(v->valuestring, names[i])) {
            o->calibration.dataset = (bn_calib_dataset)i;
            if (i == BN_CALIB_NONE) o->calibration.enabled = false;
            return 0;
        }
    return bn_err_set_at(err, BN_EINVAL, "config.calibration.dataset", "must be one of synthetic, openwebtext, c4, wikitext, custom, none");
}

static int parse_object(bn_options *o, const cJSON *obj, const char *path, const field *tab, size_t n,
                        int (*special)(bn_options *, const cJSON *, bn_err *), bn_err *err)
{
    if (!cJSON_IsObject(obj)) return bn_err_set_at(err, BN_EINVAL, path, "must be a JSON object");
    for (const cJSON *v = obj->child; v; v = v->next) {
        const field *f = find_field(tab, n, v->string);
        int rc;
        if (f) {
            rc = set_field(o, f, v, path, err);
        } else {
            rc = special ? special(o, v, err) : -1;
            if (rc == -1) {
                char at[160];
                snprintf(at, sizeof at, "%s.%s", path, v->string);
                rc = bn_err_set_at(err, BN_EINVAL, at, "unknown key");
            }
        }
        if (rc) return rc;
    }
    return 0;
}

/* special handlers return -1 for "not mine" */
static int special_calib(bn_options *o, const cJSON *v, bn_err *err)
{
    if (!strcmp(v->string, "dataset")) return parse_dataset(o, v, err);
    if (!strcmp(v->string, "path")) {
        if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) > 4096)
            return bn_err_set_at(err, BN_EINVAL, "config.calibration.path", "must be a non-empty path");
        free(o->calibration.path);
        o->calibration.path = strdup(v->valuestring);
        return 0;
    }
    if (!strcmp(v->string, "texts")) {
        for (int i = 0; i < o->calibration.n_texts; i++) free(o->calibration.texts[i]);
        free(o->calibration.texts);
        o->calibration.texts = NULL;
        o->calibration.n_texts = 0;
        return parse_strings(v, "config.calibration.texts", BN_MAX_TEXTS, 1 << 20, &o->calibration.texts,
                             &o->calibration.n_texts, err);
    }
    return -1;
}

static const char *const ft_precision_names[] = {"auto", "bf16", "fp32"};

static int special_ft(bn_options *o, const cJSON *v, bn_err *err)
{
    if (strcmp(v->string, "precision")) return -1;
    for (int i = 0; cJSON_IsString(v) && i < (int)N(ft_precision_names); i++)
        if (!strcmp(v->valuestring, ft_precision_names[i])) {
            o->fine_tune.precision = i;
            return 0;
        }
    return bn_err_set_at(err, BN_EINVAL, "config.fine_tune.precision",
                         "must be \"auto\", \"bf16\" or \"fp32\"");
}

static int special_export(bn_options *o, const cJSON *v, bn_err *err)
{
    if (!strcmp(v->string, "gguf")) {
        if (!cJSON_IsArray(v)) return bn_err_set_at(err, BN_EINVAL, "config.export.gguf", "must be an array like [\"tq2_0\"]");
        o->export.gguf_tq2_0 = o->export.gguf_tq1_0 = false;
        o->export.gguf_explicit = true;
        int i = 0;
        for (const cJSON *e = v->child; e; e = e->next, i++) {
            if (cJSON_IsString(e) && !strcmp(e->valuestring, "tq2_0")) o->export.gguf_tq2_0 = true;
            else if (cJSON_IsString(e) && !strcmp(e->valuestring, "tq1_0")) o->export.gguf_tq1_0 = true;
            else {
                char at[64];
                snprintf(at, sizeof at, "config.export.gguf[%d]", i);
                return bn_err_set_at(err, BN_EINVAL, at, "must be \"tq2_0\" or \"tq1_0\"");
            }
        }
        return 0;
    }
    if (!strcmp(v->string, "embedding_dtype")) {
        if (!cJSON_IsString(v) || (strcmp(v->valuestring, "f16") && strcmp(v->valuestring, "q8_0")))
            return bn_err_set_at(err, BN_EINVAL, "config.export.embedding_dtype", "must be \"f16\" or \"q8_0\"");
        snprintf(o->export.embedding_dtype, sizeof o->export.embedding_dtype, "%s", v->valuestring);
        return 0;
    }
    return -1;
}

static int special_top(bn_options *o, const cJSON *v, bn_err *err)
{
    const char *k = v->string;
    if (!strcmp(k, "sparsity_threshold")) return parse_threshold(o, v, err);
    if (!strcmp(k, "preserve")) return parse_preserve(o, v, err);
    if (!strcmp(k, "device")) {
        int d = cJSON_IsString(v) ? bn_device_parse(v->valuestring) : -1;
        if (d < 0) return bn_err_set_at(err, BN_EINVAL, "config.device", "must be \"cpu\", \"cuda\" or \"auto\"");
        o->device = d;
        return 0;
    }
    if (!strcmp(k, "scale")) {
        if (cJSON_IsString(v) && !strcmp(v->valuestring, "per_channel")) o->scale = BN_SCALE_PER_CHANNEL;
        else if (cJSON_IsString(v) && !strcmp(v->valuestring, "per_tensor")) o->scale = BN_SCALE_PER_TENSOR;
        else return bn_err_set_at(err, BN_EINVAL, "config.scale", "must be \"per_channel\" or \"per_tensor\"");
        return 0;
    }
    if (!strcmp(k, "calibration"))
        return parse_object(o, v, "config.calibration", calib_fields, N(calib_fields), special_calib, err);
    if (!strcmp(k, "fine_tune")) return parse_object(o, v, "config.fine_tune", ft_fields, N(ft_fields), special_ft, err);
    if (!strcmp(k, "export")) return parse_object(o, v, "config.export", NULL, 0, special_export, err);
    if (!strcmp(k, "evaluate")) return parse_object(o, v, "config.evaluate", eval_fields, N(eval_fields), NULL, err);
    return -1;
}

static bool has_key(const cJSON *obj, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, a);
    return x && (!b || cJSON_GetObjectItemCaseSensitive(x, b));
}

int bn_options_from_json(const cJSON *json, bn_options *o, bn_err *err)
{
    bn_options_default(o);
    if (!json || cJSON_IsNull(json)) return 0;
    int rc = parse_object(o, json, "config", top_fields, N(top_fields), special_top, err);
    if (!rc) {
        /* defaults that follow other fields */
        if (!has_key(json, "fine_tune", "sequence_length")) o->fine_tune.sequence_length = o->calibration.sequence_length;
        if (!has_key(json, "fine_tune", "seed")) o->fine_tune.seed = o->seed;
        if (o->calibration.eval_fraction + o->calibration.selection_fraction >= 0.95)
            rc = bn_err_set_at(err, BN_EINVAL, "config.calibration.selection_fraction", "with eval_fraction "
                               "%g it leaves under 5%% of the text for training", o->calibration.eval_fraction);
        else if (o->calibration.dataset == BN_CALIB_CUSTOM && !o->calibration.path && !o->calibration.n_texts)
            rc = bn_err_set_at(err, BN_EINVAL, "config.calibration.dataset", "\"custom\" needs calibration.path or calibration.texts");
        else if (o->fine_tune.precision == BN_FT_PRECISION_BF16 && o->device == BN_DEVICE_CPU)
            rc = bn_err_set_at(err, BN_EINVAL, "config.fine_tune.precision", "\"bf16\" needs device "
                               "\"cuda\" or \"auto\" (the CPU trains in FP32)");
        else if (o->calibration.dataset != BN_CALIB_CUSTOM && (o->calibration.path || o->calibration.n_texts))
            rc = bn_err_set_at(err, BN_EINVAL, o->calibration.path ? "config.calibration.path" : "config.calibration.texts",
                               "only allowed with dataset \"custom\"");
    }
    if (rc) {
        bn_options_free(o);
        bn_options_default(o);
    }
    return rc;
}

/* ---- output ---------------------------------------------------------------------------------- */

static void add_fields(cJSON *obj, const bn_options *o, const field *tab, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *base = (const char *)o + tab[i].off;
        switch (tab[i].type) {
        case F_BOOL: cJSON_AddBoolToObject(obj, tab[i].name, *(const bool *)base); break;
        case F_INT: cJSON_AddNumberToObject(obj, tab[i].name, *(const int *)base); break;
        case F_U64: cJSON_AddNumberToObject(obj, tab[i].name, (double)*(const uint64_t *)base); break;
        default: cJSON_AddNumberToObject(obj, tab[i].name, *(const double *)base); break;
        }
    }
}

cJSON *bn_options_to_json(const bn_options *o)
{
    static const char *const ds[] = { "synthetic", "openwebtext", "c4", "wikitext", "custom", "none" };
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    if (o->sparsity_auto) cJSON_AddStringToObject(j, "sparsity_threshold", "auto");
    else cJSON_AddNumberToObject(j, "sparsity_threshold", o->sparsity_threshold);
    cJSON_AddStringToObject(j, "device", bn_device_name((bn_device)o->device));
    cJSON_AddStringToObject(j, "scale", o->scale == BN_SCALE_PER_TENSOR ? "per_tensor" : "per_channel");
    cJSON *p = cJSON_AddArrayToObject(j, "preserve");
    for (int i = 0; i < o->n_preserve; i++) cJSON_AddItemToArray(p, cJSON_CreateString(o->preserve[i]));
    add_fields(j, o, top_fields, N(top_fields));
    cJSON *c = cJSON_AddObjectToObject(j, "calibration");
    cJSON_AddStringToObject(c, "dataset", ds[o->calibration.dataset]);
    add_fields(c, o, calib_fields, N(calib_fields));
    if (o->calibration.path) cJSON_AddStringToObject(c, "path", o->calibration.path);
    if (o->calibration.n_texts) {
        cJSON *t = cJSON_AddArrayToObject(c, "texts");
        for (int i = 0; i < o->calibration.n_texts; i++) cJSON_AddItemToArray(t, cJSON_CreateString(o->calibration.texts[i]));
    }
    cJSON *ft = cJSON_AddObjectToObject(j, "fine_tune");
    add_fields(ft, o, ft_fields, N(ft_fields));
    cJSON_AddStringToObject(ft, "precision", ft_precision_names[o->fine_tune.precision]);
    cJSON *e = cJSON_AddObjectToObject(j, "export");
    cJSON *g = cJSON_AddArrayToObject(e, "gguf");
    if (o->export.gguf_tq2_0) cJSON_AddItemToArray(g, cJSON_CreateString("tq2_0"));
    if (o->export.gguf_tq1_0) cJSON_AddItemToArray(g, cJSON_CreateString("tq1_0"));
    cJSON_AddStringToObject(e, "embedding_dtype", o->export.embedding_dtype);
    add_fields(cJSON_AddObjectToObject(j, "evaluate"), o, eval_fields, N(eval_fields));
    return j;
}
