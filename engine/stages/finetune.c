/* finetune.c - the finetune stage: STE training with MuGrokfast, budgets, best-weight
 * selection, checkpoints and resume, requantization (see finetune.h for the method).
 *
 * Design: one ft_run holds everything of a run. The numerics run on the backend seam
 * (backend/backend.h), on the CPU or on a GPU (config.device), with one loop: the backend
 * holds the FP32 shadows the optimizer updates and the "materialized" model the forward
 * pass sees, in the CPU engine's flat layout (every tensor has one offset in both, and in
 * the best-weights copy here). Each step: materialize (the quantize stage's quantizer on
 * the shadows of the ternarized tensors, the others copied), forward, loss (+ distillation
 * against the FP teacher, a second forward-only backend), backward, MuGrokfast step on the
 * shadows. Checkpoints hold the shadows and the optimizer state under the CPU optimizer's
 * names whichever device wrote them. Nothing is allocated inside the step loop.
 */
#include "stages/finetune.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/job_models.h"
#include "backend/backend.h"
#include "base/clock.h"
#include "base/fsutil.h"
#include "base/rng.h"
#include "model/optim.h"
#include "quant/quant.h"

bool bn_ft_should_run(bool enabled, double pre_ppl, double post_ppl, double threshold)
{
    if (!enabled || !(pre_ppl > 0) || !isfinite(post_ppl)) return false;
    return (post_ppl - pre_ppl) / pre_ppl > threshold;
}

bool bn_ft_checkpoint_due(long long step, int every, double since_last_s, double last_cost_s)
{
    if (every <= 0 || step % every) return false;
    return last_cost_s < BN_FT_CKPT_SLOW_S || since_last_s >= BN_FT_CKPT_RATIO * last_cost_s;
}

typedef struct ft_tensor {
    char name[256];
    bn_role role;
    int layer;
    int rows, cols;
    size_t off;          /* offset in params_mem / shadow / best */
    bn_qtensor *qt;      /* ternarized: the job's quantized tensor, else NULL */
    const float *xsq;    /* calibration statistics of its input, or NULL */
    bool trainable;
} ft_tensor;

typedef struct ft_run {
    bn_job_ctx *ctx;
    const bn_options *o;
    bn_llama *m, *teacher;
    bn_backend *bk, *tbk;  /* the model (trainer) and the teacher on the job's device */
    bn_device dev;
    float *best;           /* best shadows [n_params] (host) */
    size_t n_params;
    ft_tensor *t;
    int n_t;
    int8_t *codes;
    float *scales;
    float taus[8];
    int n_taus;
    bn_quant_params qp;
    bn_optim_config oc;
    bn_eval_tokens tok;
    int B, T, n_chunks, steps_per_epoch, ctx_eval;
    int32_t *in, *tgt;
    int *perm;
    int perm_epoch;
    bool by_budget;      /* epochs and max_steps unset: the time budget (and patience) decide */
    bool have_select;    /* a selection split exists: best checkpoint and patience use it */
    /* state (checkpointed) */
    int64_t step, total_steps, step_limit;
    bool total_fixed;    /* the schedule was fitted to the time budget */
    int since_best;      /* evaluations since the last new best (patience) */
    double last_eval_s;  /* elapsed() at the last evaluation (spacing in budget mode) */
    bool patience_stop;  /* patience ran out: training ends (after the cool-down, if any) */
    int64_t cool_start, cool_steps; /* the learning-rate cool-down; cool_steps 0: none */
    double cool_from;    /* the schedule's factor at cool_start */
    bool bf16;           /* GPU training products in bf16 (fine_tune.precision) */
    int epoch, pos;
    double elapsed;      /* seconds of training over all runs */
    double best_ppl, start_ppl;
    int64_t best_step;
    cJSON *hist_steps, *hist_evals;
    /* this run */
    double t0;
    int64_t steps_this_run;
    double ckpt_end_s, ckpt_cost_s; /* elapsed() after the last checkpoint, its duration */
} ft_run;

static double elapsed(const ft_run *r) { return r->elapsed + (bn_clock_mono_s() - r->t0); }

static uint64_t ft_seed(const ft_run *r) { return r->o->fine_tune.seed ? r->o->fine_tune.seed : r->o->seed; }

/* The epoch's order of sequences: a permutation seeded by (seed, epoch). */
static void make_perm(ft_run *r, int epoch)
{
    for (int i = 0; i < r->n_chunks; i++) r->perm[i] = i;
    bn_rng_shuffle(r->perm, r->n_chunks, ft_seed(r) * 0x2545F4914F6CDD1Dull + (uint64_t)epoch);
    r->perm_epoch = epoch;
}

/* ---- set-up -------------------------------------------------------------------------- */

static int add_tensor(ft_run *r, bn_role role, int layer, bn_err *err)
{
    bn_llama *m = r->m;
    if (role == BN_ROLE_HEAD && m->cfg.tied_embeddings) return BN_OK;
    int rows, cols;
    float *w = bn_llama_tensor(m, &m->params, role, layer, &rows, &cols);
    if (!w) return BN_OK;
    ft_tensor *t = &r->t[r->n_t++];
    memset(t, 0, sizeof *t);
    bn_hf_name(role, layer, t->name, sizeof t->name);
    t->role = role;
    t->layer = layer;
    t->rows = rows;
    t->cols = cols;
    t->off = (size_t)(w - m->params_mem);
    t->qt = bn_job_qtensor(r->ctx, t->name);
    if (t->qt && (t->qt->rows != rows || t->qt->cols != cols))
        return bn_err_set(err, BN_EFORMAT, "fine-tune: %s is %lld x %lld quantized, %d x %d in the model",
                          t->name, (long long)t->qt->rows, (long long)t->qt->cols, rows, cols);
    if (t->qt && r->o->calibration.refine_scales) {
        const bn_calib_stat *cs = bn_job_calib(r->ctx, t->name);
        if (cs && cs->cols == cols) t->xsq = cs->xsq;
    }
    t->trainable = t->qt != NULL || r->o->fine_tune.train_preserved;
    return BN_OK;
}

static int collect_tensors(ft_run *r, bn_err *err)
{
    const bn_model_config *c = &r->m->cfg;
    static const bn_role lr[] = {BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV,
                                 BN_ROLE_BQ, BN_ROLE_BK, BN_ROLE_BV, BN_ROLE_Q_NORM,
                                 BN_ROLE_K_NORM, BN_ROLE_WO,
                                 BN_ROLE_FFN_NORM, BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN};
    int nl = (int)(sizeof lr / sizeof lr[0]);
    r->t = calloc((size_t)(3 + nl * c->n_layers), sizeof *r->t);
    if (!r->t) return bn_err_set(err, BN_ENOMEM, "fine-tune: out of memory");
    int rc = add_tensor(r, BN_ROLE_EMBED, -1, err);
    for (int l = 0; l < c->n_layers && !rc; l++)
        for (int k = 0; k < nl && !rc; k++) rc = add_tensor(r, lr[k], l, err);
    if (!rc) rc = add_tensor(r, BN_ROLE_FINAL_NORM, -1, err);
    if (!rc) rc = add_tensor(r, BN_ROLE_HEAD, -1, err);
    return rc;
}

/* The trainer on the backend: every tensor (materialized from its shadow), the trainable
 * ones in MuGrokfast (Muon for the hidden 2-D matrices, AdamW for the rest). */
static int build_optimizer(ft_run *r, bn_err *err)
{
    const bn_options *o = r->o;
    bn_backend_tensor *ts = calloc((size_t)r->n_t, sizeof *ts);
    if (!ts) return bn_err_set(err, BN_ENOMEM, "fine-tune: out of memory");
    for (int i = 0; i < r->n_t; i++) {
        ft_tensor *t = &r->t[i];
        bool hidden2d = t->cols > 1 && t->rows > 1 && t->role != BN_ROLE_EMBED &&
                        t->role != BN_ROLE_HEAD;
        ts[i] = (bn_backend_tensor){ .name = t->name, .off = t->off, .rows = t->rows, .cols = t->cols,
                                     .ternary = t->qt != NULL, .xsq = t->xsq,
                                     .trainable = t->trainable,
                                     .group = hidden2d ? BN_OPTIM_MUON : BN_OPTIM_ADAMW };
    }
    bn_optim_config c;
    bn_optim_config_default(&c);
    if (o->fine_tune.lr > 0) c.lr = o->fine_tune.lr;
    if (o->fine_tune.muon_lr > 0) c.muon_lr = o->fine_tune.muon_lr;
    c.warmup_steps = o->fine_tune.warmup_steps >= 0 ? o->fine_tune.warmup_steps : 0;
    c.total_steps = r->total_steps;
    r->oc = c;
    bn_backend_train tc = { .t = ts, .n_t = r->n_t, .qp = r->qp, .n_taus = r->n_taus, .oc = c };
    memcpy(tc.taus, r->taus, sizeof tc.taus);
    int rc = bn_backend_train_setup(r->bk, &tc, err);
    free(ts);
    return rc;
}

static int setup(ft_run *r, bn_err *err)
{
    bn_job_ctx *ctx = r->ctx;
    const bn_options *o = r->o;
    char path[4096];
    bn_job_work_path(ctx, BN_EVAL_TOKENS_FILE, path, sizeof path);
    int rc = bn_eval_tokens_load(path, &r->tok, err);
    if (rc) return rc;
    int want = o->fine_tune.sequence_length > 0 ? o->fine_tune.sequence_length
                                                : o->calibration.sequence_length;
    r->T = bn_eval_seq_len(ctx, want);
    r->ctx_eval = bn_eval_seq_len(ctx, o->calibration.sequence_length);
    if (r->tok.n_train < 3) return bn_err_set(err, BN_EINVAL, "the training split holds no tokens");
    if ((size_t)r->T + 1 > r->tok.n_train) r->T = (int)r->tok.n_train - 1;
    r->n_chunks = (int)((r->tok.n_train - 1) / (size_t)r->T);
    r->B = o->fine_tune.batch_size > 0 ? o->fine_tune.batch_size : 4;
    if (r->B > r->n_chunks) r->B = r->n_chunks;
    r->steps_per_epoch = r->n_chunks / r->B;

    r->dev = bn_device_resolve(o->device);
    if (r->dev == BN_DEVICE_CUDA && o->evaluate.act_quant)
        return bn_err_set(err, BN_EUNSUPPORTED, "evaluate.act_quant (8-bit activations) is not "
                          "implemented on the GPU; use device \"cpu\" or turn it off");
    rc = bn_eval_load_fp32(ctx, &r->m, err);
    if (rc) return rc;
    r->m->act_quant = o->evaluate.act_quant;
    r->n_params = r->m->n_params;
    r->best = malloc(sizeof(float) * r->n_params);
    r->in = malloc(sizeof(int32_t) * (size_t)r->B * r->T);
    r->tgt = malloc(sizeof(int32_t) * (size_t)r->B * r->T);
    r->perm = malloc(sizeof(int) * (size_t)r->n_chunks);
    if (!r->best || !r->in || !r->tgt || !r->perm)
        return bn_err_set(err, BN_ENOMEM, "fine-tune: out of memory");
    /* the model and, with distillation, its FP teacher on the job's device; the GPU also
     * evaluates (4 windows of ctx_eval per forward), so its capacity covers both */
    bool gpu = r->dev == BN_DEVICE_CUDA;
    int prec = o->fine_tune.precision;
    bool bf16 = gpu && (prec == BN_FT_PRECISION_BF16 ||
                        (prec == BN_FT_PRECISION_AUTO && r->m->cfg.hidden_dim >= BN_FT_BF16_MIN_HIDDEN));
    r->bf16 = bf16;
    bn_backend_opts bo = { .device = r->dev, .gpu = ctx->opt->gpu, .max_B = r->B, .max_T = r->T,
                           .train = true, .bf16 = bf16, .trainer = true };
    if (gpu && bo.max_B < 4) bo.max_B = 4;
    if (gpu && bo.max_T < r->ctx_eval) bo.max_T = r->ctx_eval;
    bn_backend_opts to = { .device = r->dev, .gpu = ctx->opt->gpu, .max_B = r->B, .max_T = r->T,
                           .bf16 = bf16 };
    if (gpu) {
        size_t need = bn_backend_mem_need(&r->m->cfg, &bo), fr = 0, tot = 0;
        if (o->fine_tune.distill > 0) need += bn_backend_mem_need(&r->m->cfg, &to);
        rc = bn_backend_gpu_mem(ctx->opt->gpu, &fr, &tot, err);
        if (rc) return rc;
        if (need > fr)
            return bn_err_set(err, BN_ENOMEM, "fine-tune on GPU %d: needs %.2f GiB of GPU memory "
                              "(batch %d x %d%s), the GPU has %.2f GiB free of %.2f GiB; lower "
                              "fine_tune.batch_size or sequence_length, or use device \"cpu\"",
                              ctx->opt->gpu, need / 1073741824.0, bo.max_B, bo.max_T,
                              o->fine_tune.distill > 0 ? ", with the distillation teacher" : "",
                              fr / 1073741824.0, tot / 1073741824.0);
    }
    rc = bn_backend_new(r->m, &bo, &r->bk, err);
    if (rc) return rc;
    if (gpu)
        bn_job_event(ctx, "info", "fine-tune on GPU %d with %s matrix products (fine_tune.precision "
                     "\"%s\"; evaluation in FP32)", ctx->opt->gpu, bf16 ? "bf16" : "FP32",
                     prec == BN_FT_PRECISION_AUTO ? "auto" : prec == BN_FT_PRECISION_BF16 ? "bf16" : "fp32");
    rc = collect_tensors(r, err);
    if (rc) return rc;
    size_t maxn = 1, maxr = 1;
    for (int i = 0; i < r->n_t; i++) {
        size_t n = (size_t)r->t[i].rows * r->t[i].cols;
        if (n > maxn) maxn = n;
        if ((size_t)r->t[i].rows > maxr) maxr = (size_t)r->t[i].rows;
    }
    r->codes = malloc(maxn);
    r->scales = malloc(sizeof(float) * maxr);
    if (!r->codes || !r->scales) return bn_err_set(err, BN_ENOMEM, "fine-tune: out of memory");
    /* exactly the quantize stage's quantizer: its tau (0 included) and its refinement grid */
    bn_quant_params_default(&r->qp);
    r->qp.tau = ctx->tau;
    r->qp.per_tensor = o->scale == BN_SCALE_PER_TENSOR;
    r->qp.threads = ctx->threads;
    r->n_taus = bn_quant_tau_grid(r->qp.tau, r->taus, 8);

    r->have_select = r->tok.n_select >= 2;
    r->by_budget = o->fine_tune.epochs <= 0 && o->fine_tune.max_steps <= 0;
    if (r->by_budget) {
        /* no step limit: the time budget ends the run; until the first timing fits the
         * schedule to it, the cosine runs over one epoch per budget minute */
        r->step_limit = INT64_MAX / 4;
        double minutes = o->fine_tune.max_minutes > 0 ? o->fine_tune.max_minutes : 1;
        r->total_steps = (int64_t)r->steps_per_epoch * (int64_t)(minutes > 1 ? minutes : 1);
    } else {
        int64_t lim = o->fine_tune.epochs > 0 ? (int64_t)o->fine_tune.epochs * r->steps_per_epoch
                                              : INT64_MAX / 4;
        if (o->fine_tune.max_steps > 0 && o->fine_tune.max_steps < lim) lim = o->fine_tune.max_steps;
        r->step_limit = r->total_steps = lim;
    }
    if (o->fine_tune.distill > 0) {
        rc = bn_eval_load_fp32(ctx, &r->teacher, err);
        if (rc) return rc;
        r->teacher->act_quant = false;
        rc = bn_backend_new(r->teacher, &to, &r->tbk, err);
        if (rc) return rc;
    }
    r->hist_steps = cJSON_CreateArray();
    r->hist_evals = cJSON_CreateArray();
    if (!r->hist_steps || !r->hist_evals) return bn_err_set(err, BN_ENOMEM, "fine-tune: out of memory");
    return BN_OK;
}

static void run_free(ft_run *r)
{
    bn_backend_free(r->bk);
    bn_backend_free(r->tbk);
    bn_llama_free(r->m);
    bn_llama_free(r->teacher);
    bn_eval_tokens_free(&r->tok);
    free(r->best); free(r->t); free(r->codes); free(r->scales);
    free(r->in); free(r->tgt); free(r->perm);
    cJSON_Delete(r->hist_steps);
    cJSON_Delete(r->hist_evals);
}

/* ---- quantization of the shadows ------------------------------------------------------- */

/* codes/scales of tensor t from weights w (the stage's quantizer). */
static int quantize(ft_run *r, const ft_tensor *t, const float *w, bn_quant_stats *st, bn_err *err)
{
    if (t->xsq)
        return bn_quant_refine(t->name, w, BN_DTYPE_F32, t->rows, t->cols, t->xsq, r->taus,
                               r->n_taus, &r->qp, r->codes, r->scales, NULL, st, err);
    return bn_quant_tensor(t->name, w, BN_DTYPE_F32, t->rows, t->cols, &r->qp, r->codes,
                           r->scales, st, err);
}

/* Model parameters from the shadows: lam = 1 fully ternary, < 1 quant warm-up. */
static int materialize(ft_run *r, double lam, bn_err *err)
{
    return bn_backend_materialize(r->bk, lam, err);
}

static double quant_lambda(const ft_run *r, int64_t step)
{
    int q = r->o->fine_tune.quant_warmup_steps;
    if (q <= 0 || step >= q) return 1.0;
    return (double)step / q;
}

/* ---- one step -------------------------------------------------------------------------- */

static void fill_batch(ft_run *r)
{
    if (r->perm_epoch != r->epoch) make_perm(r, r->epoch);
    for (int b = 0; b < r->B; b++) {
        size_t c = (size_t)r->perm[r->pos * r->B + b];
        const int32_t *src = r->tok.train + c * (size_t)r->T;
        memcpy(r->in + (size_t)b * r->T, src, sizeof(int32_t) * r->T);
        memcpy(r->tgt + (size_t)b * r->T, src + 1, sizeof(int32_t) * r->T);
    }
}

static int train_step(ft_run *r, double *loss_out, bn_optim_stats *st, bn_err *err)
{
    int rc = materialize(r, quant_lambda(r, r->step), err);
    if (rc) return rc;
    fill_batch(r);
    rc = bn_backend_forward(r->bk, r->in, r->B, r->T, err);
    if (!rc && r->tbk) rc = bn_backend_forward(r->tbk, r->in, r->B, r->T, err);
    double ce, kl;
    if (!rc) rc = bn_backend_loss_distill(r->bk, r->tbk, r->tgt, r->o->fine_tune.distill, &ce, &kl, err);
    if (rc) return rc;
    double loss = ce;
    if (r->tbk) loss += r->o->fine_tune.distill * kl;
    if (!isfinite(loss))
        return bn_err_set(err, BN_ENUMERIC, "fine-tuning diverged: loss is %g at step %lld", loss,
                          (long long)r->step);
    rc = bn_backend_zero_grad(r->bk, err);
    if (!rc) rc = bn_backend_backward(r->bk, err);
    if (!rc) rc = bn_backend_optim_step(r->bk, st, err);
    if (rc) return rc;
    *loss_out = loss;
    return BN_OK;
}

/* ---- evaluation and best weights -------------------------------------------------------- */

/* Perplexity of the materialized (ternary) model on a stream: the selection split for
 * checkpoints and patience, the report split once at the end. */
static int evaluate_on(ft_run *r, const int32_t *ids, size_t n, bn_llama_eval_result *res,
                       bn_err *err)
{
    int rc = materialize(r, 1.0, err);
    if (rc) return rc;
    /* measured as the CPU engine computes it: FP32 products (training runs bf16 on a GPU) */
    bn_backend_set_bf16(r->bk, false);
    rc = bn_eval_perplexity_bk(r->bk, ids, n, r->ctx_eval, r->o->evaluate.windows, res, err);
    bn_backend_set_bf16(r->bk, r->bf16);
    return rc;
}

/* Without a selection split there is nothing to select on: the last weights are kept and
 * the evaluations are skipped (never the report split: it must stay unseen). */
static int evaluate(ft_run *r, double *ppl, bn_err *err)
{
    bn_llama_eval_result res;
    int rc = evaluate_on(r, r->tok.select, r->tok.n_select, &res, err);
    if (rc) return rc;
    *ppl = res.perplexity;
    return BN_OK;
}

static int eval_point(ft_run *r, const char *what, bn_err *err)
{
    r->last_eval_s = elapsed(r);
    if (!r->have_select) { /* keep the latest weights as "best" */
        r->best_step = r->step;
        return bn_backend_get(r->bk, BN_BK_PARAMS, r->best, err);
    }
    double ppl;
    int rc = evaluate(r, &ppl, err);
    if (rc) return rc;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "step", (double)r->step);
    cJSON_AddNumberToObject(e, "epoch", r->epoch);
    cJSON_AddStringToObject(e, "at", what);
    cJSON_AddNumberToObject(e, "eval_perplexity", ppl);
    cJSON_AddItemToArray(r->hist_evals, e);
    bn_job_metric_step(r->ctx, "fine_tune/eval_perplexity", ppl, r->step);
    bool better = ppl < r->best_ppl;
    if (better) {
        r->best_ppl = ppl;
        r->best_step = r->step;
        r->since_best = 0;
        rc = bn_backend_get(r->bk, BN_BK_PARAMS, r->best, err);
        if (rc) return rc;
    } else {
        r->since_best++;
    }
    bn_job_event(r->ctx, "info", "fine-tune %s (step %lld, %.1f min): selection perplexity %.4f%s",
                 what, (long long)r->step, elapsed(r) / 60.0, ppl,
                 better ? " (best so far)" : "");
    return BN_OK;
}

/* ---- checkpoints --------------------------------------------------------------------- */

/* The shadows, the best weights and the optimizer state (by the CPU optimizer's names),
 * copied from the backend through one host buffer of n_params floats. */
static int write_ckpt_tensors(ft_run *r, const char *path, bn_err *err)
{
    float *buf = malloc(sizeof(float) * r->n_params);
    if (!buf) return bn_err_set(err, BN_ENOMEM, "fine-tune checkpoint: out of memory");
    bn_st_writer *w;
    int rc = bn_st_writer_new(path, &w, err);
    if (rc) {
        free(buf);
        return rc;
    }
    int64_t shape[1] = {(int64_t)r->n_params};
    rc = bn_st_writer_declare(w, "shadow", BN_DTYPE_F32, 1, shape, err);
    if (!rc) rc = bn_st_writer_declare(w, "best", BN_DTYPE_F32, 1, shape, err);
    int ns = bn_backend_optim_state_count(r->bk);
    char key[400];
    for (int i = 0; i < ns && !rc; i++) {
        size_t n;
        const char *name = bn_backend_optim_state_name(r->bk, i, &n);
        snprintf(key, sizeof key, "optim.%s", name);
        int64_t s[1] = {(int64_t)n};
        rc = bn_st_writer_declare(w, key, BN_DTYPE_F32, 1, s, err);
    }
    if (!rc) rc = bn_backend_get(r->bk, BN_BK_PARAMS, buf, err);
    if (!rc) rc = bn_st_writer_write(w, buf, sizeof(float) * r->n_params, err);
    if (!rc) rc = bn_st_writer_write(w, r->best, sizeof(float) * r->n_params, err);
    for (int i = 0; i < ns && !rc; i++) {
        size_t n;
        bn_backend_optim_state_name(r->bk, i, &n);
        rc = bn_backend_optim_state_get(r->bk, i, buf, err);
        if (!rc) rc = bn_st_writer_write(w, buf, sizeof(float) * n, err);
    }
    free(buf);
    if (rc) {
        bn_st_writer_abort(w);
        return rc;
    }
    return bn_st_writer_finish(w, err);
}

static int save_checkpoint(ft_run *r, bn_err *err)
{
    char dir[4096], rel[128], path[4096 + 512], old[256] = "";
    bn_job_work_path(r->ctx, BN_FT_DIR, dir, sizeof dir);
    int rc = bn_job_may_write(r->ctx, "fine-tune checkpoint", err);
    if (!rc) rc = bn_fs_mkdir_p(dir, err);
    if (rc) return rc;
    /* the previous checkpoint's tensor file, removed once the new JSON is in place */
    char jpath[4096];
    bn_job_work_path(r->ctx, BN_FT_STATE, jpath, sizeof jpath);
    char *prev = NULL;
    size_t plen;
    if (bn_fs_read_file(jpath, 1u << 26, &prev, &plen, NULL) == BN_OK) {
        cJSON *pj = cJSON_Parse(prev);
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(pj, "file");
        if (cJSON_IsString(f)) snprintf(old, sizeof old, "%s", f->valuestring);
        cJSON_Delete(pj);
        free(prev);
    }
    snprintf(rel, sizeof rel, "ckpt-%08lld.safetensors", (long long)r->step);
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    rc = write_ckpt_tensors(r, path, err);
    if (rc) return rc;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "file", rel);
    cJSON_AddNumberToObject(j, "n_params", (double)r->n_params);
    cJSON_AddNumberToObject(j, "step", (double)r->step);
    cJSON_AddNumberToObject(j, "optim_applied_steps", (double)bn_backend_optim_applied_steps(r->bk));
    cJSON_AddNumberToObject(j, "epoch", r->epoch);
    cJSON_AddNumberToObject(j, "pos", r->pos);
    cJSON_AddNumberToObject(j, "total_steps", (double)r->total_steps);
    cJSON_AddBoolToObject(j, "total_fixed", r->total_fixed);
    cJSON_AddNumberToObject(j, "since_best", r->since_best);
    cJSON_AddBoolToObject(j, "patience_stop", r->patience_stop);
    cJSON_AddNumberToObject(j, "cooldown_start", (double)r->cool_start);
    cJSON_AddNumberToObject(j, "cooldown_steps", (double)r->cool_steps);
    cJSON_AddNumberToObject(j, "cooldown_from", r->cool_from);
    cJSON_AddNumberToObject(j, "elapsed_s", elapsed(r));
    cJSON_AddNumberToObject(j, "best_ppl", r->best_ppl);
    cJSON_AddNumberToObject(j, "start_ppl", r->start_ppl);
    cJSON_AddNumberToObject(j, "best_step", (double)r->best_step);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)ft_seed(r));
    cJSON_AddStringToObject(j, "data_seed", seed); /* the RNG: permutation of epoch e = f(seed, e) */
    cJSON_AddNumberToObject(j, "batch_size", r->B);
    cJSON_AddNumberToObject(j, "sequence_length", r->T);
    cJSON_AddItemReferenceToObject(j, "steps", r->hist_steps);
    cJSON_AddItemReferenceToObject(j, "evals", r->hist_evals);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return bn_err_set(err, BN_ENOMEM, "fine-tune checkpoint: out of memory");
    rc = bn_fs_write_atomic(jpath, text, strlen(text), err);
    free(text);
    if (!rc && old[0] && strcmp(old, rel) != 0) {
        snprintf(path, sizeof path, "%s/%s", dir, old);
        remove(path);
    }
    return rc;
}

static double num(const cJSON *j, const char *k, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* Restores a checkpoint if there is one; *resumed tells. */
static int load_checkpoint(ft_run *r, bool *resumed, bn_err *err)
{
    *resumed = false;
    char jpath[4096], path[4400], dir[4096];
    bn_job_work_path(r->ctx, BN_FT_STATE, jpath, sizeof jpath);
    if (!bn_fs_exists(jpath)) return BN_OK;
    char *text;
    size_t len;
    int rc = bn_fs_read_file(jpath, 1u << 28, &text, &len, err);
    if (rc) return rc;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "file");
    if (!j || !cJSON_IsString(f) || (size_t)num(j, "n_params", 0) != r->n_params ||
        (int)num(j, "batch_size", 0) != r->B || (int)num(j, "sequence_length", 0) != r->T) {
        cJSON_Delete(j);
        return bn_err_set(err, BN_EFORMAT, "%s: checkpoint does not match this job's model or "
                          "batch shape", jpath);
    }
    bn_job_work_path(r->ctx, BN_FT_DIR, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/%s", dir, f->valuestring);
    bn_st_file *sf;
    rc = bn_st_open(path, &sf, err);
    if (rc) {
        cJSON_Delete(j);
        return rc;
    }
    const bn_st_tensor *ts = bn_st_find(sf, "shadow"), *tb = bn_st_find(sf, "best");
    if (!ts || !tb || ts->numel != r->n_params || tb->numel != r->n_params || ts->dtype != BN_DTYPE_F32) {
        rc = bn_err_set(err, BN_EFORMAT, "%s: shadow/best tensors missing or wrong size", path);
    } else {
        rc = bn_backend_set(r->bk, BN_BK_PARAMS, ts->data, err);
        memcpy(r->best, tb->data, sizeof(float) * r->n_params);
    }
    char key[400];
    for (int i = 0; i < bn_backend_optim_state_count(r->bk) && !rc; i++) {
        size_t n;
        const char *name = bn_backend_optim_state_name(r->bk, i, &n);
        snprintf(key, sizeof key, "optim.%s", name);
        const bn_st_tensor *t = bn_st_find(sf, key);
        if (!t || t->numel != n || t->dtype != BN_DTYPE_F32)
            rc = bn_err_set(err, BN_EFORMAT, "%s: optimizer state %s missing or wrong size", path, key);
        else
            rc = bn_backend_optim_state_set(r->bk, i, t->data, err);
    }
    bn_st_close(sf);
    if (!rc) {
        r->step = (int64_t)num(j, "step", 0);
        r->epoch = (int)num(j, "epoch", 0);
        r->pos = (int)num(j, "pos", 0);
        r->total_steps = (int64_t)num(j, "total_steps", (double)r->total_steps);
        r->total_fixed = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "total_fixed"));
        r->since_best = (int)num(j, "since_best", 0);
        r->patience_stop = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "patience_stop"));
        r->cool_start = (int64_t)num(j, "cooldown_start", 0);
        r->cool_steps = (int64_t)num(j, "cooldown_steps", 0);
        r->cool_from = num(j, "cooldown_from", 1.0);
        r->elapsed = num(j, "elapsed_s", 0);
        r->best_ppl = num(j, "best_ppl", INFINITY);
        r->start_ppl = num(j, "start_ppl", 0);
        r->best_step = (int64_t)num(j, "best_step", 0);
        cJSON *s = cJSON_DetachItemFromObject(j, "steps"), *e = cJSON_DetachItemFromObject(j, "evals");
        if (cJSON_IsArray(s) && cJSON_IsArray(e)) {
            cJSON_Delete(r->hist_steps);
            cJSON_Delete(r->hist_evals);
            r->hist_steps = s;
            r->hist_evals = e;
        } else {
            cJSON_Delete(s);
            cJSON_Delete(e);
        }
        bn_backend_optim_set_steps(r->bk, r->step, (int64_t)num(j, "optim_applied_steps", (double)r->step));
        bn_backend_optim_set_total_steps(r->bk, r->total_steps);
        bn_backend_optim_set_cooldown(r->bk, r->cool_start, r->cool_steps, r->cool_from);
        r->perm_epoch = -1;
        r->last_eval_s = r->elapsed;
        *resumed = true;
    }
    cJSON_Delete(j);
    return rc;
}

/* ---- results ------------------------------------------------------------------------- */

static int write_history(ft_run *r, bn_err *err)
{
    char dir[4096], path[4200];
    bn_job_work_path(r->ctx, "outputs", dir, sizeof dir);
    int rc = bn_job_may_write(r->ctx, "fine-tune history", err);
    if (!rc) rc = bn_fs_mkdir_p(dir, err);
    if (rc) return rc;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "steps_per_epoch", r->steps_per_epoch);
    cJSON_AddNumberToObject(j, "batch_size", r->B);
    cJSON_AddNumberToObject(j, "sequence_length", r->T);
    cJSON_AddNumberToObject(j, "total_steps", (double)r->step);
    cJSON_AddNumberToObject(j, "best_step", (double)r->best_step);
    cJSON_AddNumberToObject(j, "best_selection_perplexity", r->best_ppl);
    cJSON_AddBoolToObject(j, "budget_mode", r->by_budget);
    cJSON_AddNumberToObject(j, "max_minutes", r->o->fine_tune.max_minutes);
    cJSON_AddNumberToObject(j, "patience", r->o->fine_tune.patience);
    if (r->cool_steps > 0) { /* patience ran out and the learning rate was annealed */
        cJSON_AddNumberToObject(j, "cooldown_start", (double)r->cool_start);
        cJSON_AddNumberToObject(j, "cooldown_steps", (double)r->cool_steps);
    }
    cJSON_AddStringToObject(j, "stopped_on", r->patience_stop ? "patience"
                            : r->step >= r->total_steps ? (r->by_budget ? "budget" : "step limit")
                            : "budget");
    cJSON_AddNumberToObject(j, "time_s", elapsed(r));
    cJSON_AddItemReferenceToObject(j, "steps", r->hist_steps);
    cJSON_AddItemReferenceToObject(j, "evals", r->hist_evals);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return bn_err_set(err, BN_ENOMEM, "training_history.json: out of memory");
    snprintf(path, sizeof path, "%s/training_history.json", dir);
    rc = bn_fs_write_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

static void free_preserved(bn_job_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_preserved; i++) {
        free(ctx->preserved[i].name);
        free(ctx->preserved[i].data);
    }
    free(ctx->preserved);
    ctx->preserved = NULL;
    ctx->n_preserved = 0;
}

static int add_preserved(bn_job_ctx *ctx, const char *name, const float *data, size_t n, bn_err *err)
{
    bn_ptensor *p = realloc(ctx->preserved, (ctx->n_preserved + 1) * sizeof *p);
    if (!p) return bn_err_set(err, BN_ENOMEM, "fine-tune: out of memory");
    ctx->preserved = p;
    bn_ptensor *e = &p[ctx->n_preserved];
    e->name = strdup(name);
    e->data = malloc(sizeof(float) * (n ? n : 1));
    e->numel = n;
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return bn_err_set(err, BN_ENOMEM, "fine-tune: out of memory");
    }
    memcpy(e->data, data, sizeof(float) * n);
    ctx->n_preserved++;
    return BN_OK;
}

static int save_preserved(bn_job_ctx *ctx, bn_err *err)
{
    char path[4096];
    bn_job_work_path(ctx, BN_FT_DIR, path, sizeof path);
    int rc = bn_job_may_write(ctx, "fine-tuned preserved tensors", err);
    if (!rc) rc = bn_fs_mkdir_p(path, err);
    if (rc) return rc;
    bn_job_work_path(ctx, BN_FT_PRESERVED, path, sizeof path);
    bn_st_writer *w;
    rc = bn_st_writer_new(path, &w, err);
    if (rc) return rc;
    for (size_t i = 0; i < ctx->n_preserved && !rc; i++) {
        int64_t s[1] = {(int64_t)ctx->preserved[i].numel};
        rc = bn_st_writer_declare(w, ctx->preserved[i].name, BN_DTYPE_F32, 1, s, err);
    }
    for (size_t i = 0; i < ctx->n_preserved && !rc; i++)
        rc = bn_st_writer_write(w, ctx->preserved[i].data, sizeof(float) * ctx->preserved[i].numel, err);
    if (rc) {
        bn_st_writer_abort(w);
        return rc;
    }
    return bn_st_writer_finish(w, err);
}

/* The best shadows -> ctx->qt (same quantizer) and ctx->preserved (trained ones). */
static int requantize(ft_run *r, bn_err *err)
{
    bn_job_ctx *ctx = r->ctx;
    free_preserved(ctx);
    for (int i = 0; i < r->n_t; i++) {
        const ft_tensor *t = &r->t[i];
        const float *w = r->best + t->off;
        size_t n = (size_t)t->rows * t->cols;
        if (t->qt) {
            bn_quant_stats st;
            int rc = quantize(r, t, w, &st, err);
            if (rc) return rc;
            memcpy(t->qt->codes, r->codes, n);
            memcpy(t->qt->scales, r->scales, sizeof(float) * (size_t)t->qt->n_scales);
            t->qt->stats = st;
        } else if (t->trainable) {
            int rc = add_preserved(ctx, t->name, w, n, err);
            if (rc) return rc;
        }
    }
    ctx->qt_dirty = true;
    return save_preserved(ctx, err);
}

/* ---- the stage ----------------------------------------------------------------------- */

static void report_skip(bn_job_ctx *ctx, const char *level, const char *why)
{
    bn_job_event(ctx, level, "fine-tuning skipped: %s", why);
    double post;
    if (bn_job_metric_get(ctx, "compression/post_perplexity", &post))
        bn_job_metric(ctx, "compression/post_finetune_perplexity", post);
    bn_job_metric(ctx, "compression/perplexity_recovery", 0.0);
    bn_job_metric(ctx, "compression/fine_tune_epochs", 0.0);
    bn_job_metric(ctx, "compression/fine_tune_time_hours", 0.0);
}

/* Fits the schedule (cosine length) to the time budget: after 5, 10, 20, 40, ... steps of
 * this run (and, when the budget alone bounds the run, every 25 steps after 40, so that a
 * machine that slows down or speeds up still ends its cosine on time), the measured time
 * per step projects how many steps the budget allows; the length follows (never beyond
 * the epochs/max_steps limit, never below the next step). */
static void fit_total_to_time(ft_run *r)
{
    double budget = r->o->fine_tune.max_minutes * 60.0;
    int64_t n = r->steps_this_run;
    bool pow2 = n >= 5 && (n % 5) == 0 && ((n / 5) & (n / 5 - 1)) == 0;
    bool regular = r->by_budget && n > 40 && n % 25 == 0;
    if (budget <= 0 || !(pow2 || regular)) return;
    if (r->step >= r->step_limit || r->patience_stop) return; /* cooling down: its end is set */
    double per = (bn_clock_mono_s() - r->t0) / (double)n;
    double left = budget - elapsed(r);
    /* keep room for the evaluations still to come (one per epoch and a final one) */
    int64_t want = r->step + (int64_t)(left * 0.95 / per);
    if (want > r->step_limit) want = r->step_limit;
    if (want < r->step + 1) want = r->step + 1;
    int64_t tol = regular && !pow2 ? 50 : 20; /* 2% / 5% */
    if (want == r->total_steps || (r->total_fixed && llabs(want - r->total_steps) * tol < r->total_steps))
        return;
    r->total_steps = want;
    r->total_fixed = true;
    bn_backend_optim_set_total_steps(r->bk, r->total_steps);
    if (pow2)
        bn_job_event(r->ctx, "info", "fine-tune: %.3f s per step, the %.1f-minute budget allows "
                     "%lld steps", per, r->o->fine_tune.max_minutes, (long long)r->total_steps);
}

/* Patience ran out. While the learning rate is still well above the schedule's floor, the
 * weights sit on a high-rate plateau whose noise an annealing phase removes; so rather than
 * stopping there, the rate falls to the floor over fine_tune.cooldown x the steps done (cut
 * to what the budget's schedule has left) and training stops after that. Returns false
 * when there is nothing to anneal: stop now. */
static bool start_cooldown(ft_run *r)
{
    bn_optim_config c = r->oc;
    c.total_steps = r->total_steps;
    double f = bn_optim_lr_factor(&c, r->step);
    int64_t n = (int64_t)ceil(r->o->fine_tune.cooldown * (double)r->step);
    if (r->total_steps - r->step < n) n = r->total_steps - r->step;
    if (n < 1 || f < 1.5 * c.min_lr_ratio) return false;
    bn_optim_config_cooldown(&c, r->step, n);
    r->cool_start = c.cooldown_start;
    r->cool_steps = c.cooldown_steps;
    r->cool_from = c.cooldown_from;
    r->total_steps = r->step + n;
    bn_backend_optim_set_cooldown(r->bk, r->cool_start, r->cool_steps, r->cool_from);
    return true;
}

static int train_loop(ft_run *r, bn_err *err)
{
    bn_job_ctx *ctx = r->ctx;
    const bn_options *o = r->o;
    int every = o->fine_tune.checkpoint_every > 0 ? o->fine_tune.checkpoint_every : 0;
    double budget = o->fine_tune.max_minutes > 0 ? o->fine_tune.max_minutes * 60.0 : 0;
    int rc = BN_OK, bad_steps = 0;
    while (r->step < r->total_steps) {
        if (budget > 0 && elapsed(r) >= budget) {
            bn_job_event(ctx, "info", "fine-tune: time budget of %.1f minutes reached at step %lld",
                         o->fine_tune.max_minutes, (long long)r->step);
            break;
        }
        double loss = 0;
        bn_optim_stats st = {0};
        rc = train_step(r, &loss, &st, err);
        if (rc) return rc;
        if (st.skipped) {
            if (++bad_steps >= 20)
                return bn_err_set(err, BN_ENUMERIC, "fine-tuning diverged: non-finite gradients "
                                  "for %d steps in a row (step %lld)", bad_steps, (long long)r->step);
            bn_job_event(ctx, "warn", "fine-tune step %lld: non-finite gradient, update skipped",
                         (long long)r->step + 1);
        } else {
            bad_steps = 0;
        }
        r->step++;
        r->steps_this_run++;
        r->pos++;
        cJSON *h = cJSON_CreateObject();
        cJSON_AddNumberToObject(h, "step", (double)r->step);
        cJSON_AddNumberToObject(h, "loss", loss);
        cJSON_AddNumberToObject(h, "lr", st.lr);
        cJSON_AddNumberToObject(h, "muon_lr", st.muon_lr);
        cJSON_AddNumberToObject(h, "grad_norm", st.grad_norm);
        cJSON_AddItemToArray(r->hist_steps, h);
        bn_job_metric_step(ctx, "fine_tune/loss", loss, r->step);
        bn_job_metric_step(ctx, "fine_tune/learning_rate", st.lr, r->step);
        bn_job_metric_step(ctx, "fine_tune/muon_learning_rate", st.muon_lr, r->step);
        bn_job_metric_step(ctx, "fine_tune/grad_norm", st.grad_norm, r->step);
        fit_total_to_time(r);
        /* An evaluation at every epoch end; under the budget rule at most one per 2% of
         * the budget, so that patience spans a similar share of the run whether epochs
         * are long or a few steps (measured: docs/BENCHMARKS.md). */
        bool epoch_end = r->pos >= r->steps_per_epoch;
        if (epoch_end) {
            r->epoch++;
            r->pos = 0;
        }
        if (epoch_end && (!r->by_budget || budget <= 0 || elapsed(r) - r->last_eval_s >= 0.02 * budget)) {
            char what[64];
            snprintf(what, sizeof what, "epoch %d end", r->epoch);
            rc = eval_point(r, what, err);
            if (rc) return rc;
            int patience = o->fine_tune.patience;
            if (patience > 0 && r->have_select && !r->patience_stop && r->since_best >= patience) {
                r->patience_stop = true;
                if (start_cooldown(r)) {
                    bn_job_event(ctx, "info", "fine-tune: patience ran out: the selection "
                                 "perplexity has not improved for %d evaluations (best %.4f at "
                                 "step %lld); at step %lld (%.1f of %.1f minutes) the learning "
                                 "rate is at %.0f%% of its peak: annealing it to its floor over "
                                 "%lld steps, then stopping (fine_tune.cooldown)",
                                 r->since_best, r->best_ppl, (long long)r->best_step,
                                 (long long)r->step, elapsed(r) / 60.0, o->fine_tune.max_minutes,
                                 100 * r->cool_from, (long long)r->cool_steps);
                } else {
                    bn_job_event(ctx, "info", "fine-tune stopped early on patience at step %lld "
                                 "(%.1f of %.1f minutes): the selection perplexity has not improved "
                                 "for %d evaluations (best %.4f at step %lld)", (long long)r->step,
                                 elapsed(r) / 60.0, o->fine_tune.max_minutes, r->since_best,
                                 r->best_ppl, (long long)r->best_step);
                    break;
                }
            }
        }
        /* progress follows whichever bound ends the run first: steps or the time budget */
        double f = (double)r->step / (double)r->total_steps;
        if (budget > 0 && elapsed(r) / budget > f) f = elapsed(r) / budget;
        char detail[160];
        const char *cooling = r->cool_steps > 0 ? ", cooling down" : "";
        if (r->by_budget)
            snprintf(detail, sizeof detail, "step %lld (epoch %d) loss %.4f, %.1f/%.0f min%s",
                     (long long)r->step, r->epoch + 1, loss, elapsed(r) / 60.0,
                     o->fine_tune.max_minutes, cooling);
        else
            snprintf(detail, sizeof detail, "step %lld/%lld loss %.4f%s", (long long)r->step,
                     (long long)r->total_steps, loss, cooling);
        bool stop = bn_job_progress(ctx, f > 1 ? 1 : f, detail);
        if (stop || bn_ft_checkpoint_due(r->step, every, elapsed(r) - r->ckpt_end_s, r->ckpt_cost_s)) {
            double t = elapsed(r);
            rc = save_checkpoint(r, err);
            if (rc) return rc;
            double cost = elapsed(r) - t;
            if (cost >= BN_FT_CKPT_SLOW_S && r->ckpt_cost_s < BN_FT_CKPT_SLOW_S && !stop)
                bn_job_event(ctx, "info", "fine-tune: a checkpoint took %.1f s; from here on one "
                             "every %d steps but at most once per %.1f minutes of training, so "
                             "that checkpoints take at most a tenth of the time", cost, every,
                             BN_FT_CKPT_RATIO * cost / 60.0);
            r->ckpt_cost_s = cost;
            r->ckpt_end_s = elapsed(r);
        }
        if (stop) return bn_err_set(err, BN_ECANCELLED, "fine-tuning stopped at step %lld "
                                    "(checkpoint saved)", (long long)r->step);
    }
    return BN_OK;
}

/* The best weights (chosen on the selection split) measured once on the report split,
 * where pre and post were measured: the reported figures are comparable and unselected. */
static int finish(ft_run *r, double pre, double post, bn_err *err)
{
    bn_job_ctx *ctx = r->ctx;
    cJSON *last = cJSON_GetArrayItem(r->hist_evals, cJSON_GetArraySize(r->hist_evals) - 1);
    if (!r->have_select || !last || num(last, "step", -1) != (double)r->step) {
        int rc = eval_point(r, "end", err);
        if (rc) return rc;
    }
    bn_llama_eval_result rep;
    int rc = bn_backend_set(r->bk, BN_BK_PARAMS, r->best, err);
    if (!rc) rc = evaluate_on(r, r->tok.eval, r->tok.n_eval, &rep, err);
    if (!rc) rc = requantize(r, err);
    if (!rc) rc = write_history(r, err);
    if (rc) return rc;
    double ft = rep.perplexity;
    double denom = post - pre;
    double recovery = denom > 1e-12 ? (post - ft) / denom : 0.0;
    double epochs = r->steps_per_epoch > 0 ? (double)r->step / r->steps_per_epoch : 0.0;
    bn_job_metric(ctx, "compression/post_finetune_perplexity", ft);
    bn_job_metric(ctx, "compression/post_finetune_eval_loss", rep.mean_nll);
    if (r->have_select) bn_job_metric(ctx, "compression/fine_tune_best_selection_perplexity", r->best_ppl);
    bn_job_metric(ctx, "compression/perplexity_recovery", recovery);
    bn_job_metric(ctx, "compression/fine_tune_epochs", epochs);
    bn_job_metric(ctx, "compression/fine_tune_time_hours", elapsed(r) / 3600.0);
    bn_job_metric(ctx, "compression/fine_tune_stopped_on_patience", r->patience_stop ? 1.0 : 0.0);
    bn_job_event(ctx, "info", "fine-tuned %lld steps (%.2f epochs, %.1f of %.1f min%s): report-split "
                 "perplexity %.4f -> %.4f (before compression %.4f), recovery %.1f%%; best weights "
                 "at step %lld (selection perplexity %.4f)",
                 (long long)r->step, epochs, elapsed(r) / 60.0, r->o->fine_tune.max_minutes,
                 r->patience_stop ? ", stopped on patience" : "", post, ft, pre, 100 * recovery,
                 (long long)r->best_step, r->best_ppl);
    return BN_OK;
}

int bn_stage_finetune(bn_job_ctx *ctx, bn_err *err)
{
    const bn_options *o = ctx->opt;
    double pre = 0, post = 0;
    bool have_pre = bn_job_metric_get(ctx, "compression/pre_perplexity", &pre);
    bool have_post = bn_job_metric_get(ctx, "compression/post_perplexity", &post);
    char why[256];
    if (!o->fine_tune.enabled) {
        report_skip(ctx, "info", "disabled (config.fine_tune.enabled = false)");
        return BN_OK;
    }
    if (!have_pre || !have_post) {
        report_skip(ctx, "info", "no pre/post-compression perplexity was measured (no calibration text)");
        return BN_OK;
    }
    if (ctx->text_synthetic && !o->fine_tune.allow_synthetic) {
        report_skip(ctx, "warn", "the calibration text is the synthetic templates (no dataset or "
                    "file was given); training on them teaches five sentences and their "
                    "perplexities mean nothing. Give real text (config.calibration, bitnetctl "
                    "--calibration FILE) or set config.fine_tune.allow_synthetic = true");
        return BN_OK;
    }
    if (!bn_ft_should_run(true, pre, post, o->fine_tune.threshold)) {
        snprintf(why, sizeof why, "perplexity degradation %.2f%% (%.4f -> %.4f) is within the "
                 "threshold %.2f%%", 100 * (post - pre) / pre, pre, post, 100 * o->fine_tune.threshold);
        report_skip(ctx, "info", why);
        return BN_OK;
    }
    ft_run r;
    memset(&r, 0, sizeof r);
    r.ctx = ctx;
    r.o = o;
    r.best_ppl = INFINITY;
    r.perm_epoch = -1;
    int rc = setup(&r, err);
    if (!rc) rc = build_optimizer(&r, err);
    bool resumed = false;
    if (!rc) rc = load_checkpoint(&r, &resumed, err);
    r.t0 = bn_clock_mono_s();
    if (!rc && resumed) {
        bn_job_event(ctx, "info", "fine-tune resumed from its checkpoint at step %lld (epoch %d)",
                     (long long)r.step, r.epoch);
    } else if (!rc) {
        char limit[160];
        if (r.by_budget)
            snprintf(limit, sizeof limit, "epochs until the %.1f-minute budget ends or %d "
                     "evaluations bring no new best (patience)", o->fine_tune.max_minutes,
                     o->fine_tune.patience);
        else
            snprintf(limit, sizeof limit, "up to %lld steps or %.1f minutes", (long long)r.step_limit,
                     o->fine_tune.max_minutes);
        bn_job_event(ctx, "info", "fine-tuning: degradation %.2f%% > threshold %.2f%%; %d sequences "
                     "of %d tokens, batch %d, %d steps per epoch; %s",
                     100 * (post - pre) / pre, 100 * o->fine_tune.threshold, r.n_chunks, r.T, r.B,
                     r.steps_per_epoch, limit);
        if (!r.have_select)
            bn_job_event(ctx, "warn", "fine-tune: no selection split (too little text or "
                         "calibration.selection_fraction 0): the last weights are kept, no patience");
        bn_job_metric_source(ctx, "fine_tune/loss");
        bn_job_metric_source(ctx, "fine_tune/eval_perplexity");
        rc = eval_point(&r, "start", err);
        if (!rc) r.start_ppl = r.best_ppl;
    }
    if (!rc) rc = train_loop(&r, err);
    if (!rc) rc = finish(&r, pre, post, err);
    if (!rc) bn_job_progress(ctx, 1.0, "fine-tuning done");
    run_free(&r);
    return rc;
}

int bn_stage_finetune_restore(bn_job_ctx *ctx, bn_err *err)
{
    char path[4096];
    bn_job_work_path(ctx, BN_FT_PRESERVED, path, sizeof path);
    if (!bn_fs_exists(path)) return BN_OK;
    bn_st_file *f;
    int rc = bn_st_open(path, &f, err);
    if (rc) return rc;
    free_preserved(ctx);
    for (size_t i = 0; i < bn_st_count(f) && !rc; i++) {
        const bn_st_tensor *t = bn_st_at(f, i);
        if (t->dtype != BN_DTYPE_F32) {
            rc = bn_err_set(err, BN_EFORMAT, "%s: tensor %s is not F32", path, t->name);
            break;
        }
        rc = add_preserved(ctx, t->name, t->data, t->numel, err);
    }
    bn_st_close(f);
    return rc;
}
