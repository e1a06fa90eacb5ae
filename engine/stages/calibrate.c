/* calibrate.c - the calibrate stage: calibration text -> tokens -> FP32 forward with
 * activation statistics per linear input, and the pre-compression perplexity on the
 * held-out split.
 *
 * Outputs:
 *   <work>/calib_tokens.safetensors        train/eval token streams (later stages, resume)
 *   <work>/outputs/calibration_stats.json  per-input summaries (mean, std, min, max, the
 *                                          mean of the per-channel absmax / E[x^2]) and, for
 *                                          models with few channels, the arrays inline
 *   <work>/outputs/calibration_stats.safetensors  per-channel absmax and E[x^2] (F32) of
 *                                          every linear input, always (compact for 1B
 *                                          models: a few MB)
 *   ctx->calib: E[x^2] per linear weight, used by the quantize stage's refinement.
 * Linear layers that share an input (q/k/v, gate/up) share one statistics record.
 */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/calib_text.h"
#include "stages/job_models.h"
#include "base/fsutil.h"
#include "tokenizer/tokenizer.h"

#define CALIB_INLINE_MAX_CHANNELS 50000
#define CALIB_SIDECAR "calibration_stats.safetensors"

/* Input kinds of a layer: 0 attn (q,k,v), 1 attn out (o), 2 ffn (gate, up), 3 down. */
enum { IN_ATTN = 0, IN_ATTN_OUT, IN_FFN, IN_DOWN, IN_PER_LAYER };

typedef struct calib_acc {
    int n_layers;
    bn_llama_act_stats *s; /* [n_layers * IN_PER_LAYER + 1]; last = head input */
    bool failed;
    int bad_layer;     /* INT_MIN, or the layer of the first non-finite activation */
    bn_role bad_role;  /* the weight whose input it was */
} calib_acc;

static const char *const in_names[IN_PER_LAYER] = {"attn_in", "attn_out_in", "ffn_in", "down_in"};

static void on_stats(void *vctx, bn_role role, int layer, const float *x, int rows, int cols)
{
    calib_acc *a = vctx;
    int k;
    switch (role) {
    case BN_ROLE_WQ: k = IN_ATTN; break;
    case BN_ROLE_WO: k = IN_ATTN_OUT; break;
    case BN_ROLE_W_GATE: k = IN_FFN; break;
    case BN_ROLE_W_DOWN: k = IN_DOWN; break;
    case BN_ROLE_HEAD: k = -1; break;
    default: return; /* WK, WV, W_UP: same input as WQ / W_GATE */
    }
    bn_llama_act_stats *s = k < 0 ? &a->s[a->n_layers * IN_PER_LAYER]
                                  : &a->s[layer * IN_PER_LAYER + k];
    if (s->cols != cols) {
        a->failed = true;
        return;
    }
    if (a->bad_layer == INT_MIN)
        for (size_t i = 0; i < (size_t)rows * cols; i++)
            if (!isfinite(x[i])) {
                a->bad_layer = layer;
                a->bad_role = role;
                break;
            }
    bn_llama_act_stats_add(s, x, rows);
}

static void acc_free(calib_acc *a)
{
    if (!a->s) return;
    for (int i = 0; i < a->n_layers * IN_PER_LAYER + 1; i++) bn_llama_act_stats_free(&a->s[i]);
    free(a->s);
    a->s = NULL;
}

static int acc_init(calib_acc *a, const bn_model_config *c, bn_err *err)
{
    memset(a, 0, sizeof *a);
    a->bad_layer = INT_MIN;
    a->n_layers = c->n_layers;
    a->s = calloc((size_t)c->n_layers * IN_PER_LAYER + 1, sizeof *a->s);
    if (!a->s) return bn_err_set(err, BN_ENOMEM, "calibration: out of memory");
    for (int l = 0; l < c->n_layers; l++) {
        int cols[IN_PER_LAYER] = {c->dim, c->n_heads * c->head_dim, c->dim, c->hidden_dim};
        for (int k = 0; k < IN_PER_LAYER; k++) {
            int rc = bn_llama_act_stats_init(&a->s[l * IN_PER_LAYER + k], cols[k], err);
            if (rc) return rc;
        }
    }
    return bn_llama_act_stats_init(&a->s[c->n_layers * IN_PER_LAYER], c->dim, err);
}

/* ---- tokenization ------------------------------------------------------------------ */

static int append_docs(const bn_tok *tok, const bn_calib_set *set, const int *idx, int n,
                       int vocab, bn_tok_ids *out, bn_err *err)
{
    for (int i = 0; i < n; i++) {
        const char *t = set->docs.text[idx[i]];
        size_t before = out->n;
        int rc = bn_tok_encode(tok, t, strlen(t), BN_TOK_ADD_SPECIAL, out, err);
        if (rc) return bn_err_prefix(err, "tokenizing calibration text %d: ", idx[i]);
        for (size_t j = before; j < out->n; j++)
            if (out->ids[j] < 0 || out->ids[j] >= vocab)
                return bn_err_set(err, BN_EFORMAT,
                                  "tokenizer produced id %d outside the model's vocabulary (%d)",
                                  out->ids[j], vocab);
    }
    return BN_OK;
}

static int tokenize(bn_job_ctx *ctx, const bn_calib_set *set, bn_eval_tokens *t, bn_err *err)
{
    bn_tok *tok;
    int rc = bn_tok_load(ctx->paths.model_dir, &tok, err);
    if (rc) return bn_err_prefix(err, "calibration needs the model's tokenizer: ");
    bn_tok_ids tr = {0}, sl = {0}, ev = {0};
    int V = ctx->model->cfg.vocab_size;
    const bn_calib_parts *p = &set->parts;
    rc = append_docs(tok, set, p->train, p->n_train, V, &tr, err);
    if (!rc) rc = append_docs(tok, set, p->select, p->n_select, V, &sl, err);
    if (!rc) rc = append_docs(tok, set, p->eval, p->n_eval, V, &ev, err);
    bn_tok_free(tok);
    if (rc) {
        bn_tok_ids_free(&tr);
        bn_tok_ids_free(&sl);
        bn_tok_ids_free(&ev);
        return rc;
    }
    t->train = tr.ids; t->n_train = tr.n;
    t->select = sl.ids; t->n_select = sl.n;
    t->eval = ev.ids; t->n_eval = ev.n;
    return BN_OK;
}

/* ---- statistics pass ----------------------------------------------------------------- */

static int stats_pass(bn_job_ctx *ctx, bn_llama *m, const bn_eval_tokens *t, calib_acc *acc,
                      int *n_seq_out, int *T_out, bn_err *err)
{
    const bn_options *o = ctx->opt;
    int T = bn_eval_seq_len(ctx, o->calibration.sequence_length);
    if ((size_t)T > t->n_train) T = (int)t->n_train;
    if (T < 1) return bn_err_set(err, BN_EINVAL, "calibration: the training split holds no tokens");
    int n_chunks = (int)(t->n_train / (size_t)T);
    int n_seq = o->calibration.samples > 0 ? o->calibration.samples : 256;
    if (n_seq > n_chunks) n_seq = n_chunks;
    int B = o->calibration.batch_size > 0 ? o->calibration.batch_size : 4;
    int32_t *batch = malloc(sizeof(int32_t) * (size_t)B * T);
    if (!batch) return bn_err_set(err, BN_ENOMEM, "calibration: out of memory");
    m->stats_fn = on_stats;
    m->stats_ctx = acc;
    int rc = BN_OK;
    for (int s = 0; s < n_seq && !rc; s += B) {
        int b = n_seq - s < B ? n_seq - s : B;
        for (int i = 0; i < b; i++) {
            /* evenly spaced chunks over the whole split */
            size_t c = (size_t)(s + i) * (size_t)n_chunks / (size_t)n_seq;
            memcpy(batch + (size_t)i * T, t->train + c * T, sizeof(int32_t) * T);
        }
        rc = bn_llama_forward(m, batch, b, T, err);
        if (!rc && acc->failed) rc = bn_err_set(err, BN_EINVAL, "calibration: statistics shape mismatch");
        if (!rc && acc->bad_layer != INT_MIN) {
            char name[256];
            bn_hf_name(acc->bad_role, acc->bad_layer, name, sizeof name);
            rc = bn_err_set(err, BN_ENUMERIC, "calibration: non-finite activations (NaN or Inf) "
                            "at the input of %s on calibration sequences %d-%d: the model's "
                            "forward pass overflows", name, s + 1, s + b);
        }
        if (!rc && bn_job_progress(ctx, 0.8 * (s + b) / n_seq, "activation statistics"))
            rc = bn_err_set(err, BN_ECANCELLED, "cancelled during calibration");
    }
    m->stats_fn = NULL;
    m->stats_ctx = NULL;
    free(batch);
    *n_seq_out = n_seq;
    *T_out = T;
    return rc;
}

/* ---- outputs ------------------------------------------------------------------------- */

static char *float_array(const float *v, int n, bool sq_double, const double *d, uint64_t count)
{
    size_t cap = (size_t)n * 16 + 8, len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[len++] = '[';
    for (int i = 0; i < n; i++) {
        double x = sq_double ? (count ? d[i] / (double)count : 0.0) : v[i];
        len += (size_t)snprintf(s + len, cap - len, "%s%.6g", i ? "," : "", x);
    }
    s[len++] = ']';
    s[len] = 0;
    return s;
}

static void input_tensor_names(int k, int layer, char names[3][256], int *n)
{
    static const bn_role roles[IN_PER_LAYER][3] = {
        {BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV}, {BN_ROLE_WO}, {BN_ROLE_W_GATE, BN_ROLE_W_UP},
        {BN_ROLE_W_DOWN}};
    static const int counts[IN_PER_LAYER] = {3, 1, 2, 1};
    *n = counts[k];
    for (int i = 0; i < *n; i++) bn_hf_name(roles[k][i], layer, names[i], 256);
}

static int write_outputs(bn_job_ctx *ctx, const calib_acc *a, const bn_calib_set *set,
                         int n_seq, int T, bn_err *err)
{
    char dir[4096], path[4200];
    bn_job_work_path(ctx, "outputs", dir, sizeof dir);
    int rc = bn_fs_mkdir_p(dir, err);
    if (rc) return rc;
    int n_in = a->n_layers * IN_PER_LAYER + 1;
    long total = 0;
    for (int i = 0; i < n_in; i++) total += a->s[i].cols;
    bool inline_arrays = total <= CALIB_INLINE_MAX_CHANNELS;

    /* sidecar: per-channel arrays */
    snprintf(path, sizeof path, "%s/%s", dir, CALIB_SIDECAR);
    bn_st_writer *w;
    rc = bn_st_writer_new(path, &w, err);
    if (rc) return rc;
    char key[300];
    for (int i = 0; i < n_in && !rc; i++) {
        int64_t shape[1] = {a->s[i].cols};
        int layer = i / IN_PER_LAYER;
        const char *in = i == n_in - 1 ? "head_in" : in_names[i % IN_PER_LAYER];
        if (i == n_in - 1) snprintf(key, sizeof key, "%s.absmax", in);
        else snprintf(key, sizeof key, "layers.%d.%s.absmax", layer, in);
        rc = bn_st_writer_declare(w, key, BN_DTYPE_F32, 1, shape, err);
        key[strlen(key) - 6] = 0;
        strcat(key, "xsq");
        if (!rc) rc = bn_st_writer_declare(w, key, BN_DTYPE_F32, 1, shape, err);
    }
    float *tmp = malloc(sizeof(float) * (size_t)(ctx->model->cfg.hidden_dim > ctx->model->cfg.dim
                                                 ? ctx->model->cfg.hidden_dim : ctx->model->cfg.dim) * 2 + 64);
    if (!tmp && !rc) rc = bn_err_set(err, BN_ENOMEM, "calibration: out of memory");
    for (int i = 0; i < n_in && !rc; i++) {
        const bn_llama_act_stats *s = &a->s[i];
        rc = bn_st_writer_write(w, s->absmax, sizeof(float) * s->cols, err);
        for (int j = 0; j < s->cols; j++) tmp[j] = s->count ? (float)(s->sum_x2[j] / s->count) : 0.f;
        if (!rc) rc = bn_st_writer_write(w, tmp, sizeof(float) * s->cols, err);
    }
    free(tmp);
    if (rc) {
        bn_st_writer_abort(w);
        return rc;
    }
    rc = bn_st_writer_finish(w, err);
    if (rc) return rc;

    cJSON *root = cJSON_CreateObject(), *inputs = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "source", set->source);
    cJSON_AddStringToObject(root, "label", set->label);
    cJSON_AddBoolToObject(root, "synthetic", set->synthetic);
    cJSON_AddNumberToObject(root, "documents", set->docs.n);
    cJSON_AddNumberToObject(root, "skipped_short_texts", set->docs.skipped);
    cJSON_AddNumberToObject(root, "duplicate_texts", set->docs.duplicates);
    cJSON_AddItemToObject(root, "splits", bn_text_splits_json(ctx));
    cJSON_AddNumberToObject(root, "sequences", n_seq);
    cJSON_AddNumberToObject(root, "sequence_length", T);
    cJSON_AddStringToObject(root, "per_channel", inline_arrays ? "inline and " CALIB_SIDECAR
                                                               : CALIB_SIDECAR);
    for (int i = 0; i < n_in; i++) {
        const bn_llama_act_stats *s = &a->s[i];
        cJSON *e = cJSON_CreateObject();
        int layer = i == n_in - 1 ? -1 : i / IN_PER_LAYER;
        cJSON_AddStringToObject(e, "input", i == n_in - 1 ? "head_in" : in_names[i % IN_PER_LAYER]);
        cJSON_AddNumberToObject(e, "layer", layer);
        cJSON *tn = cJSON_CreateArray();
        if (layer >= 0) {
            char names[3][256];
            int nn;
            input_tensor_names(i % IN_PER_LAYER, layer, names, &nn);
            for (int k = 0; k < nn; k++) cJSON_AddItemToArray(tn, cJSON_CreateString(names[k]));
        } else {
            char nm[256];
            bn_hf_name(BN_ROLE_HEAD, -1, nm, sizeof nm);
            cJSON_AddItemToArray(tn, cJSON_CreateString(nm));
        }
        cJSON_AddItemToObject(e, "tensors", tn);
        cJSON_AddNumberToObject(e, "channels", s->cols);
        cJSON_AddNumberToObject(e, "tokens", (double)s->count);
        cJSON_AddNumberToObject(e, "mean", bn_llama_act_stats_mean(s));
        cJSON_AddNumberToObject(e, "std", bn_llama_act_stats_std(s));
        cJSON_AddNumberToObject(e, "min", s->min);
        cJSON_AddNumberToObject(e, "max", s->max);
        double am = 0, xs = 0, xmax = 0;
        for (int j = 0; j < s->cols; j++) {
            am += s->absmax[j];
            double v = s->count ? s->sum_x2[j] / s->count : 0;
            xs += v;
            if (v > xmax) xmax = v;
        }
        cJSON_AddNumberToObject(e, "absmax_mean", am / s->cols);
        cJSON_AddNumberToObject(e, "xsq_mean", xs / s->cols);
        cJSON_AddNumberToObject(e, "xsq_max", xmax);
        if (inline_arrays) {
            char *arr = float_array(s->absmax, s->cols, false, NULL, 0);
            if (arr) cJSON_AddRawToObject(e, "absmax", arr);
            free(arr);
            arr = float_array(NULL, s->cols, true, s->sum_x2, s->count);
            if (arr) cJSON_AddRawToObject(e, "xsq", arr);
            free(arr);
        }
        cJSON_AddItemToArray(inputs, e);
    }
    cJSON_AddItemToObject(root, "inputs", inputs);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return bn_err_set(err, BN_ENOMEM, "calibration_stats.json: out of memory");
    snprintf(path, sizeof path, "%s/calibration_stats.json", dir);
    rc = bn_fs_write_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

/* ---- job context: xsq per linear weight ---------------------------------------------- */

static void free_calib(bn_job_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_calib; i++) {
        free(ctx->calib[i].name);
        free(ctx->calib[i].xsq);
    }
    free(ctx->calib);
    ctx->calib = NULL;
    ctx->n_calib = 0;
}

static int add_calib(bn_job_ctx *ctx, const char *name, const float *xsq, int cols,
                     uint64_t n_tokens, bn_err *err)
{
    bn_calib_stat *c = realloc(ctx->calib, (ctx->n_calib + 1) * sizeof *c);
    if (!c) return bn_err_set(err, BN_ENOMEM, "calibration: out of memory");
    ctx->calib = c;
    bn_calib_stat *s = &c[ctx->n_calib];
    s->name = strdup(name);
    s->xsq = malloc(sizeof(float) * (size_t)cols);
    if (!s->name || !s->xsq) {
        free(s->name);
        free(s->xsq);
        return bn_err_set(err, BN_ENOMEM, "calibration: out of memory");
    }
    memcpy(s->xsq, xsq, sizeof(float) * (size_t)cols);
    s->cols = cols;
    s->n_tokens = n_tokens;
    ctx->n_calib++;
    return BN_OK;
}

/* Fills ctx->calib from the sidecar file (used after the stage and on resume). */
static int load_xsq(bn_job_ctx *ctx, bn_err *err)
{
    char rel[256], path[4096];
    snprintf(rel, sizeof rel, "outputs/%s", CALIB_SIDECAR);
    bn_job_work_path(ctx, rel, path, sizeof path);
    bn_st_file *f;
    int rc = bn_st_open(path, &f, err);
    if (rc) return rc;
    free_calib(ctx);
    const bn_model_config *c = &ctx->model->cfg;
    char key[300], nm[3][256];
    for (int l = 0; l < c->n_layers && !rc; l++)
        for (int k = 0; k < IN_PER_LAYER && !rc; k++) {
            snprintf(key, sizeof key, "layers.%d.%s.xsq", l, in_names[k]);
            const bn_st_tensor *t = bn_st_find(f, key);
            if (!t || t->dtype != BN_DTYPE_F32) {
                rc = bn_err_set(err, BN_EFORMAT, "%s: missing tensor %s", path, key);
                break;
            }
            int nn;
            input_tensor_names(k, l, nm, &nn);
            for (int i = 0; i < nn && !rc; i++)
                rc = add_calib(ctx, nm[i], t->data, (int)t->numel, 0, err);
        }
    if (!rc && !c->tied_embeddings) {
        const bn_st_tensor *t = bn_st_find(f, "head_in.xsq");
        bn_hf_name(BN_ROLE_HEAD, -1, nm[0], sizeof nm[0]);
        if (t && t->dtype == BN_DTYPE_F32) rc = add_calib(ctx, nm[0], t->data, (int)t->numel, 0, err);
    }
    bn_st_close(f);
    if (rc) free_calib(ctx);
    return rc;
}

/* ---- the stage ----------------------------------------------------------------------- */

int bn_stage_calibrate(bn_job_ctx *ctx, bn_err *err)
{
    const bn_options *o = ctx->opt;
    if (!o->calibration.enabled || o->calibration.dataset == BN_CALIB_NONE) {
        bn_job_event(ctx, "info", "calibration disabled: no activation statistics and no "
                                  "pre-compression perplexity");
        return BN_OK;
    }
    bn_calib_set set;
    int rc = bn_calib_load(o, ctx->paths.data_dir, ctx->progress, &set, err);
    if (rc) return rc;
    bn_eval_tokens t = {0};
    bn_llama *m = NULL;
    calib_acc acc = {0};
    rc = tokenize(ctx, &set, &t, err);
    if (!rc) {
        snprintf(ctx->text_label, sizeof ctx->text_label, "%s", set.label);
        ctx->text_synthetic = set.synthetic;
        const int docs[3] = {set.parts.n_train, set.parts.n_select, set.parts.n_eval};
        const size_t toks[3] = {t.n_train, t.n_select, t.n_eval};
        for (int i = 0; i < 3; i++) {
            ctx->text_docs[i] = docs[i];
            ctx->text_tokens[i] = (int64_t)toks[i];
        }
    }
    char path[4096];
    if (!rc) {
        bn_job_work_path(ctx, BN_EVAL_TOKENS_FILE, path, sizeof path);
        rc = bn_job_may_write(ctx, "evaluation token splits", err);
        if (!rc) rc = bn_eval_tokens_save(path, &t, err);
    }
    if (!rc) rc = bn_eval_load_fp32(ctx, &m, err);
    if (!rc) rc = acc_init(&acc, &ctx->model->cfg, err);
    int n_seq = 0, T = 0;
    if (!rc) rc = stats_pass(ctx, m, &t, &acc, &n_seq, &T, err);
    if (!rc) rc = bn_job_may_write(ctx, "calibration statistics", err);
    if (!rc) rc = write_outputs(ctx, &acc, &set, n_seq, T, err);
    if (!rc) rc = load_xsq(ctx, err);
    if (!rc) {
        bn_job_event(ctx, "info", "activation statistics from %d sequences of %d tokens (%s)",
                     n_seq, T, set.source);
        bn_llama_eval_result r;
        int ctxlen = bn_eval_seq_len(ctx, o->calibration.sequence_length);
        rc = bn_eval_perplexity(m, t.eval, t.n_eval, ctxlen, o->evaluate.windows, &r, err);
        if (!rc) {
            bn_job_metric(ctx, "compression/pre_perplexity", r.perplexity);
            bn_job_metric(ctx, "compression/pre_eval_loss", r.mean_nll);
            bn_job_event(ctx, "info", "pre-compression perplexity %.4f (mean NLL %.5f over %llu "
                         "tokens of the report split, %d windows; text: %s)", r.perplexity,
                         r.mean_nll, (unsigned long long)r.tokens, r.windows, ctx->text_label);
        } else if (rc == BN_EINVAL) {
            bn_job_event(ctx, "warn", "no pre-compression perplexity: %s", err->msg);
            rc = BN_OK;
        }
        bn_job_progress(ctx, 1.0, "calibration done");
    }
    acc_free(&acc);
    bn_llama_free(m);
    bn_eval_tokens_free(&t);
    bn_calib_free(&set);
    return rc;
}

/* ctx->text_* from calibration_stats.json (resume). */
static int load_text_info(bn_job_ctx *ctx, bn_err *err)
{
    char path[4096];
    bn_job_work_path(ctx, "outputs/calibration_stats.json", path, sizeof path);
    char *text;
    size_t len;
    int rc = bn_fs_read_file(path, 1u << 28, &text, &len, err);
    if (rc) return rc;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *label = cJSON_GetObjectItemCaseSensitive(j, "label");
    const cJSON *splits = cJSON_GetObjectItemCaseSensitive(j, "splits");
    if (!cJSON_IsString(label) || !cJSON_IsObject(splits)) {
        cJSON_Delete(j);
        return bn_err_set(err, BN_EFORMAT, "%s: no text label or splits (written by an older "
                          "version; remove the work folder to start over)", path);
    }
    snprintf(ctx->text_label, sizeof ctx->text_label, "%s", label->valuestring);
    ctx->text_synthetic = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "synthetic"));
    static const char *const names[3] = {"train", "selection", "report"};
    for (int i = 0; i < 3; i++) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(splits, names[i]);
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(s, "documents");
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(s, "tokens");
        ctx->text_docs[i] = cJSON_IsNumber(d) ? (int64_t)d->valuedouble : 0;
        ctx->text_tokens[i] = cJSON_IsNumber(k) ? (int64_t)k->valuedouble : 0;
    }
    cJSON_Delete(j);
    return BN_OK;
}

int bn_stage_calibrate_restore(bn_job_ctx *ctx, bn_err *err)
{
    const bn_options *o = ctx->opt;
    if (!o->calibration.enabled || o->calibration.dataset == BN_CALIB_NONE) return BN_OK;
    int rc = load_xsq(ctx, err);
    return rc ? rc : load_text_info(ctx, err);
}
