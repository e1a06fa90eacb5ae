/* evaluate.c - the evaluate stage: the compressed model measured on the report split
 * (the held-out documents that neither training nor checkpoint selection sees).
 *
 *   post_perplexity         ternary model (scale x code in FP32; W1.58A8 when
 *                           config.evaluate.act_quant) on the eval stream
 *   perplexity_degradation  (post - pre) / pre; accuracy_preserved = degradation <= 0.10
 *   dequantization_accuracy share of positions where the FP16-dequantized model (what
 *                           export writes: every value rounded to FP16) and the ternary
 *                           model pick the same top-1 token; the max |logit difference|
 *                           is reported beside it
 *   gradient_flow_test_passed  one forward + backward of the FP16-dequantized model on a
 *                           training batch: every trainable tensor's gradient is finite and
 *                           not all zero
 * Without calibration text there is nothing to measure: the stage says so in an event
 * and records no perplexity metric (never a placeholder).
 * The perplexity and the agreement run on the backend seam, on the job's device (a cuda
 * job: the GPU, both models on it); the gradient-flow check runs on the CPU engine.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stages/job_models.h"
#include "backend/backend.h"
#include "base/vecmath.h"
#include "stages/kernel_speedup.h"

#define EVAL_MAX_ACCURACY_DROP 0.10

typedef struct agree_result {
    uint64_t positions, agree;
    double max_diff;
} agree_result;

/* Top-1 agreement of models a and b over the eval windows. */
static int agreement(bn_job_ctx *ctx, bn_backend *a, bn_backend *b, int V, const bn_eval_tokens *t,
                     int T, int windows, agree_result *r, bn_err *err)
{
    memset(r, 0, sizeof *r);
    if ((size_t)T + 1 > t->n_eval) T = (int)t->n_eval - 1;
    int avail = (int)((t->n_eval - 1) / (size_t)T);
    if (windows <= 0 || windows > avail) windows = avail;
    float *la = malloc(sizeof(float) * (size_t)T * V), *lb = malloc(sizeof(float) * (size_t)T * V);
    if (!la || !lb) {
        free(la);
        free(lb);
        return bn_err_set(err, BN_ENOMEM, "evaluate: out of memory");
    }
    int rc = BN_OK;
    for (int w = 0; w < windows && !rc; w++) {
        const int32_t *in = t->eval + (size_t)w * T;
        rc = bn_backend_forward(a, in, 1, T, err);
        if (!rc) rc = bn_backend_logits(a, la, err);
        if (!rc) rc = bn_backend_forward(b, in, 1, T, err);
        if (!rc) rc = bn_backend_logits(b, lb, err);
        if (rc) break;
        for (int p = 0; p < T; p++) {
            const float *x = la + (size_t)p * V, *y = lb + (size_t)p * V;
            r->agree += bn_vargmax(x, V) == bn_vargmax(y, V);
            r->positions++;
            for (int j = 0; j < V; j++) {
                double d = fabs((double)x[j] - y[j]);
                if (d > r->max_diff) r->max_diff = d;
            }
        }
        if (bn_job_progress(ctx, 0.4 + 0.4 * (w + 1) / windows, "dequantization agreement"))
            rc = bn_err_set(err, BN_ECANCELLED, "cancelled during evaluation");
    }
    free(la);
    free(lb);
    return rc;
}

static bool tensor_ok(const float *g, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(g[i])) return false;
        if (g[i] != 0.0f) nonzero = true;
    }
    return nonzero;
}

/* One backward step; *passed = every trainable tensor has finite, non-zero gradients. */
static int gradient_flow(bn_job_ctx *ctx, bn_llama *m, const bn_eval_tokens *t, bool *passed,
                         char *bad, size_t bad_len, bn_err *err)
{
    *passed = false;
    const int32_t *src = t->n_train > 2 ? t->train : t->eval;
    size_t n = t->n_train > 2 ? t->n_train : t->n_eval;
    if (n < 3) return bn_err_set(err, BN_EINVAL, "no tokens for the gradient-flow check");
    int T = bn_eval_seq_len(ctx, ctx->opt->fine_tune.sequence_length);
    if ((size_t)T + 1 > n) T = (int)n - 1;
    int rc = bn_llama_reserve(m, 1, T, true, err);
    if (rc) return rc;
    rc = bn_llama_forward(m, src, 1, T, err);
    if (rc) return rc;
    bn_llama_loss(m, src + 1, NULL, NULL);
    bn_llama_zero_grad(m);
    rc = bn_llama_backward(m, err);
    if (rc) return rc;
    const bn_model_config *c = &m->cfg;
    static const bn_role layer_roles[] = {BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV,
                                          BN_ROLE_WO, BN_ROLE_BQ, BN_ROLE_BK, BN_ROLE_BV,
                                          BN_ROLE_Q_NORM, BN_ROLE_K_NORM,
                                          BN_ROLE_FFN_NORM, BN_ROLE_W_GATE, BN_ROLE_W_UP,
                                          BN_ROLE_W_DOWN};
    int checked = 0;
    for (int l = -1; l < c->n_layers; l++) {
        int nr = l < 0 ? 3 : (int)(sizeof layer_roles / sizeof layer_roles[0]);
        for (int k = 0; k < nr; k++) {
            bn_role r = l < 0 ? (k == 0 ? BN_ROLE_EMBED : k == 1 ? BN_ROLE_FINAL_NORM : BN_ROLE_HEAD)
                              : layer_roles[k];
            if (r == BN_ROLE_HEAD && c->tied_embeddings) continue;
            int rows, cols;
            float *g = bn_llama_tensor(m, &m->grads, r, l, &rows, &cols);
            if (!g) continue;
            checked++;
            if (!tensor_ok(g, (size_t)rows * cols)) {
                bn_hf_name(r, l, bad, bad_len);
                return BN_OK;
            }
        }
    }
    *passed = checked > 0;
    return BN_OK;
}

int bn_stage_evaluate(bn_job_ctx *ctx, bn_err *err)
{
    const bn_options *o = ctx->opt;
    char path[4096];
    bn_job_work_path(ctx, BN_EVAL_TOKENS_FILE, path, sizeof path);
    bn_eval_tokens t;
    bn_err e2 = {0};
    bn_tk_job_speedup(ctx); /* kern: measured kernel speedup (needs no text) */
    if (bn_eval_tokens_load(path, &t, &e2) != BN_OK) {
        bn_job_event(ctx, "warn", "no evaluation text (calibration disabled or failed): post-"
                     "compression perplexity, dequantization accuracy and gradient flow not measured");
        return BN_OK;
    }
    bn_llama *tern = NULL, *deq = NULL;
    int rc = bn_eval_load_fp32(ctx, &tern, err);
    if (!rc) rc = bn_eval_load_fp32(ctx, &deq, err);
    if (!rc) rc = bn_eval_apply_quantized(ctx, tern, false, err);
    if (!rc) rc = bn_eval_apply_quantized(ctx, deq, true, err);
    int T = bn_eval_seq_len(ctx, o->calibration.sequence_length);
    bn_backend *btern = NULL, *bdeq = NULL;
    bn_device dev = bn_device_resolve(o->device);
    if (!rc && dev == BN_DEVICE_CUDA && o->evaluate.act_quant)
        rc = bn_err_set(err, BN_EUNSUPPORTED, "evaluate.act_quant (8-bit activations) is not "
                        "implemented on the GPU; use device \"cpu\" or turn it off");
    if (!rc && t.n_eval >= 2) {
        /* both models on the job's device (4 windows per forward for the perplexity), FP32
         * products as on the CPU */
        bn_backend_opts bo = { .device = dev, .gpu = ctx->opt->gpu, .max_B = 4, .max_T = T };
        bn_backend_opts bo1 = bo; /* the dequantized model: one window at a time (agreement) */
        bo1.max_B = 1;
        if (dev == BN_DEVICE_CUDA) {
            size_t need = bn_backend_mem_need(&tern->cfg, &bo) + bn_backend_mem_need(&tern->cfg, &bo1);
            size_t fr = 0, tot = 0;
            rc = bn_backend_gpu_mem(ctx->opt->gpu, &fr, &tot, err);
            if (!rc && need > fr)
                rc = bn_err_set(err, BN_ENOMEM, "evaluate on GPU %d: needs %.2f GiB of GPU memory "
                                "(two models, 4 x %d tokens), the GPU has %.2f GiB free of %.2f GiB",
                                ctx->opt->gpu, need / 1073741824.0, T, fr / 1073741824.0, tot / 1073741824.0);
        }
        tern->act_quant = o->evaluate.act_quant;
        if (!rc) rc = bn_backend_new(tern, &bo, &btern, err);
        if (!rc) rc = bn_backend_new(deq, &bo1, &bdeq, err);
    }
    if (!rc && t.n_eval >= 2) {
        bn_llama_eval_result r;
        rc = bn_eval_perplexity_bk(btern, t.eval, t.n_eval, T, o->evaluate.windows, &r, err);
        if (!rc) {
            bn_job_metric(ctx, "compression/post_perplexity", r.perplexity);
            bn_job_metric(ctx, "compression/post_eval_loss", r.mean_nll);
            double pre;
            if (bn_job_metric_get(ctx, "compression/pre_perplexity", &pre) && pre > 0) {
                double deg = (r.perplexity - pre) / pre;
                bn_job_metric(ctx, "compression/perplexity_degradation", deg);
                bn_job_metric(ctx, "compression/accuracy_preserved", deg <= EVAL_MAX_ACCURACY_DROP);
                bn_job_event(ctx, "info", "ternary perplexity %.4f vs %.4f before compression: "
                             "degradation %+.2f%% (limit %.0f%%)%s", r.perplexity, pre, 100 * deg,
                             100 * EVAL_MAX_ACCURACY_DROP,
                             o->evaluate.act_quant ? ", 8-bit activations" : "");
            }
        }
        bn_job_progress(ctx, 0.4, "post-compression perplexity");
        agree_result ag;
        if (!rc) rc = agreement(ctx, btern, bdeq, tern->cfg.vocab_size, &t, T, o->evaluate.windows, &ag, err);
        if (!rc && ag.positions) {
            double acc = (double)ag.agree / (double)ag.positions;
            bn_job_metric(ctx, "compression/dequantization_accuracy", acc);
            bn_job_metric(ctx, "compression/dequantization_max_logit_diff", ag.max_diff);
            bn_job_event(ctx, "info", "FP16-dequantized vs ternary model: top-1 agreement %.4f%% "
                         "over %llu positions, max logit difference %.3g%s", 100 * acc,
                         (unsigned long long)ag.positions, ag.max_diff,
                         acc < 0.995 ? " (below the 99.5% target)" : "");
        }
    } else if (!rc) {
        bn_job_event(ctx, "warn", "the evaluation split is empty: no post-compression perplexity");
    }
    if (!rc) {
        bool passed;
        char bad[256] = "";
        rc = gradient_flow(ctx, deq, &t, &passed, bad, sizeof bad, err);
        if (!rc) {
            bn_job_metric(ctx, "compression/gradient_flow_test_passed", passed ? 1.0 : 0.0);
            if (!passed)
                bn_job_event(ctx, "warn", "gradient-flow check failed: tensor %s has a zero or "
                             "non-finite gradient", bad[0] ? bad : "?");
        } else if (rc == BN_EINVAL) {
            bn_job_event(ctx, "warn", "gradient-flow check not run: %s", err->msg);
            rc = BN_OK;
        }
    }
    if (!rc) bn_job_progress(ctx, 1.0, "evaluation done");
    bn_backend_free(btern);
    bn_backend_free(bdeq);
    bn_llama_free(tern);
    bn_llama_free(deq);
    bn_eval_tokens_free(&t);
    return rc;
}

int bn_stage_evaluate_restore(bn_job_ctx *ctx, bn_err *err)
{
    (void)ctx;
    (void)err;
    return BN_OK; /* its results are metrics, which the pipeline restores */
}
