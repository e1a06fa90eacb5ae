/* job_models.c - token streams, models built from the job context, held-out perplexity
 * (see job_models.h). */
#include "stages/job_models.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "base/tensor.h"

static int save_stream(bn_st_writer *w, const int32_t *ids, size_t n, bn_err *err)
{
    if (n == 0) return BN_OK;
    return bn_st_writer_write(w, ids, n * sizeof(int32_t), err);
}

int bn_eval_tokens_save(const char *path, const bn_eval_tokens *t, bn_err *err)
{
    bn_st_writer *w;
    int rc = bn_st_writer_new(path, &w, err);
    if (rc) return rc;
    int64_t s1[1] = {(int64_t)t->n_train}, s2[1] = {(int64_t)t->n_eval},
            s3[1] = {(int64_t)t->n_select};
    rc = bn_st_writer_declare(w, "train", BN_DTYPE_I32, 1, s1, err);
    if (!rc) rc = bn_st_writer_declare(w, "eval", BN_DTYPE_I32, 1, s2, err);
    if (!rc) rc = bn_st_writer_declare(w, "select", BN_DTYPE_I32, 1, s3, err);
    if (!rc) rc = save_stream(w, t->train, t->n_train, err);
    if (!rc) rc = save_stream(w, t->eval, t->n_eval, err);
    if (!rc) rc = save_stream(w, t->select, t->n_select, err);
    if (rc) {
        bn_st_writer_abort(w);
        return rc;
    }
    return bn_st_writer_finish(w, err);
}

static int load_stream(const bn_st_file *f, const char *name, const char *path, int32_t **out,
                       size_t *n, bn_err *err)
{
    const bn_st_tensor *t = bn_st_find(f, name);
    if (!t || t->dtype != BN_DTYPE_I32 || t->ndim != 1)
        return bn_err_set(err, BN_EFORMAT, "%s: missing I32 tensor \"%s\"", path, name);
    *n = t->numel;
    *out = malloc((t->numel ? t->numel : 1) * sizeof(int32_t));
    if (!*out) return bn_err_set(err, BN_ENOMEM, "%s: out of memory", path);
    if (t->numel) memcpy(*out, t->data, t->numel * sizeof(int32_t));
    return BN_OK;
}

int bn_eval_tokens_load(const char *path, bn_eval_tokens *t, bn_err *err)
{
    memset(t, 0, sizeof *t);
    bn_st_file *f;
    int rc = bn_st_open(path, &f, err);
    if (rc) return rc;
    rc = load_stream(f, "train", path, &t->train, &t->n_train, err);
    if (!rc) rc = load_stream(f, "eval", path, &t->eval, &t->n_eval, err);
    if (!rc && bn_st_find(f, "select")) rc = load_stream(f, "select", path, &t->select, &t->n_select, err);
    bn_st_close(f);
    if (rc) bn_eval_tokens_free(t);
    return rc;
}

void bn_eval_tokens_free(bn_eval_tokens *t)
{
    free(t->train);
    free(t->select);
    free(t->eval);
    memset(t, 0, sizeof *t);
}

int bn_eval_seq_len(const bn_job_ctx *ctx, int want)
{
    int max = ctx->model->cfg.max_seq_len > 0 ? ctx->model->cfg.max_seq_len : 2048;
    if (want <= 0) want = 512;
    return want < max ? want : max;
}

int bn_eval_load_fp32(const bn_job_ctx *ctx, bn_llama **out, bn_err *err)
{
    int rc = bn_llama_load(ctx->model, out, err);
    if (rc) return rc;
    bn_llama_set_threads(*out, ctx->threads > 0 ? ctx->threads : 1);
    (*out)->act_quant = false;
    return BN_OK;
}

void bn_eval_round_fp16(bn_llama *m)
{
    for (size_t i = 0; i < m->n_params; i++)
        m->params_mem[i] = bn_f16_to_f32(bn_f32_to_f16(m->params_mem[i]));
}

int bn_eval_apply_quantized(const bn_job_ctx *ctx, bn_llama *m, bool fp16, bn_err *err)
{
    for (size_t i = 0; i < ctx->n_preserved; i++) {
        const bn_ptensor *p = &ctx->preserved[i];
        int layer = -1;
        bn_role r = bn_hf_role_of(p->name, &layer);
        int rows = 0, cols = 0;
        if (r == BN_ROLE_OTHER || !bn_llama_tensor(m, &m->params, r, layer, &rows, &cols))
            continue;
        if ((uint64_t)rows * (uint64_t)cols != p->numel)
            return bn_err_set(err, BN_EFORMAT, "fine-tuned tensor %s: %llu values, model has %d x %d",
                              p->name, (unsigned long long)p->numel, rows, cols);
        int rc = bn_llama_set_tensor(m, r, layer, p->data, err);
        if (rc) return rc;
    }
    for (size_t i = 0; i < ctx->n_qt; i++) {
        const bn_qtensor *q = &ctx->qt[i];
        int rc = bn_llama_set_linear_codes(m, q->role, q->layer, q->codes, q->scales,
                                           (int)q->n_scales, err);
        if (rc) return bn_err_prefix(err, "%s: ", q->name);
    }
    if (fp16) bn_eval_round_fp16(m);
    return BN_OK;
}

/* The evaluation windows that fit a split of n tokens: ctx shrinks to n - 1 at most, and
 * windows (<= 0: all) to the full windows available. */
static int fit_windows(size_t n, int *ctx, int *windows, bn_llama_eval_result *out, bn_err *err)
{
    memset(out, 0, sizeof *out);
    if (n < 2) return bn_err_set(err, BN_EINVAL, "evaluation split holds no tokens");
    if ((size_t)*ctx + 1 > n) *ctx = (int)(n - 1);
    size_t avail = (n - 1) / (size_t)*ctx;
    if (*windows <= 0 || (size_t)*windows > avail) *windows = (int)avail;
    return BN_OK;
}

int bn_eval_perplexity(bn_llama *m, const int32_t *ids, size_t n, int ctx, int windows,
                       bn_llama_eval_result *out, bn_err *err)
{
    int rc = fit_windows(n, &ctx, &windows, out, err);
    if (rc) return rc;
    return bn_llama_eval_windows(m, ids, n, ctx, windows, 4, out, err);
}

int bn_eval_perplexity_bk(bn_backend *b, const int32_t *ids, size_t n, int ctx, int windows,
                          bn_llama_eval_result *out, bn_err *err)
{
    int rc = fit_windows(n, &ctx, &windows, out, err);
    if (rc) return rc;
    return bn_backend_eval_windows(b, ids, n, ctx, windows, 4, out, err);
}
