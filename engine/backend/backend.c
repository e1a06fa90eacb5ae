/* backend.c - the device seam (backend.h): dispatch to the CPU engine (model/llama.c +
 * model/optim.c) or to the CUDA backend (cuda/cuda.h, only when built with it).
 *
 * Invariants: a CPU backend's host->params_mem holds the compute weights (the ternary
 * projection of shadow when ste, what bn_backend_materialize made of shadow when a
 * trainer, else the master weights themselves) and shadow (ste or trainer) the master
 * weights; a CUDA backend never touches host after creation. A trainer's optimizer state
 * has the CPU optimizer's names on both devices (state_name builds them for CUDA in
 * bn_optim_new's order). */
#include "backend/backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/optim.h"
#ifdef BN_HAVE_CUDA
#include "cuda/cuda.h"
#endif

struct bn_backend {
    bn_backend_opts o;
    bn_llama *host;
    float *shadow;          /* CPU + ste: master weights [n_params] */
    bn_optim *opt;          /* CPU: AdamW over the whole flat buffer */
    bn_backend_adamw opt_cfg;
    /* trainer (bn_backend_train_setup) */
    bool trainer;
    bn_backend_tensor *tt;  /* [n_tt], names owned */
    int n_tt;
    bn_backend_train tc;
    bn_optim *mg;           /* CPU: MuGrokfast over the trainable tensors of shadow */
    int8_t *codes;          /* CPU quantizer output [largest ternary tensor] */
    float *scales;          /* [most rows] */
    int n_states;           /* CUDA: trainable tensors' state arrays */
    char **state_names;
#ifdef BN_HAVE_CUDA
    bn_cu_model *cu;
#endif
};

#ifdef BN_HAVE_CUDA
static bn_cu_opts cu_opts(const bn_backend_opts *o)
{
    bn_cu_opts c = { .gpu = o->gpu, .max_B = o->max_B, .max_T = o->max_T, .train = o->train,
                     .bf16 = o->bf16, .ste = o->ste, .tau = o->tau,
                     .trainer = o->trainer };
    return c;
}
#endif

size_t bn_backend_mem_need(const bn_model_config *cfg, const bn_backend_opts *o)
{
#ifdef BN_HAVE_CUDA
    if (o->device == BN_DEVICE_CUDA) {
        bn_cu_opts c = cu_opts(o);
        return bn_cu_mem_need(cfg, &c);
    }
#else
    (void)cfg;
    (void)o;
#endif
    return 0;
}

int bn_backend_gpu_mem(int gpu, size_t *free_b, size_t *total_b, bn_err *err)
{
#ifdef BN_HAVE_CUDA
    return bn_cu_mem_info(gpu, free_b, total_b, err);
#else
    (void)gpu;
    *free_b = *total_b = 0;
    return bn_err_set(err, BN_EUNSUPPORTED, "this build has no CUDA backend");
#endif
}

/* ---- CPU STE projection: out rows = sign(w) * s where |w| >= tau * s, s = mean |w| ---- */

static const bn_role linear_roles[7] = { BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV, BN_ROLE_WO,
                                         BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN };

static void ternarize_rows(float *out, const float *w, int rows, int cols, float tau)
{
    for (int r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * cols;
        double a = 0;
        for (int i = 0; i < cols; i++) a += fabs((double)wr[i]);
        float s = (float)(a / cols);
        if (s < 1e-8f) s = 1e-8f;
        float th = tau * s;
        float *o = out + (size_t)r * cols;
        for (int i = 0; i < cols; i++) o[i] = fabsf(wr[i]) >= th ? (wr[i] > 0 ? s : -s) : 0.0f;
    }
}

static void cpu_project(bn_backend *b)
{
    bn_llama *m = b->host;
    memcpy(m->params_mem, b->shadow, m->n_params * sizeof(float));
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int i = 0; i < 7; i++) {
            int rows, cols;
            float *t = bn_llama_tensor(m, &m->params, linear_roles[i], l, &rows, &cols);
            ternarize_rows(t, b->shadow + (t - m->params_mem), rows, cols, b->o.tau);
        }
}

/* ---- life cycle ---- */

int bn_backend_new(bn_llama *host, const bn_backend_opts *o, bn_backend **out, bn_err *err)
{
    *out = NULL;
    if (o->device != BN_DEVICE_CPU && o->device != BN_DEVICE_CUDA)
        return bn_err_set(err, BN_EINVAL, "backend: resolve device \"%s\" first", bn_device_name(o->device));
    bn_backend *b = calloc(1, sizeof *b);
    if (!b) return bn_err_set(err, BN_ENOMEM, "backend: out of memory");
    b->o = *o;
    b->host = host;
    if (o->device == BN_DEVICE_CUDA) {
#ifdef BN_HAVE_CUDA
        bn_cu_opts c = cu_opts(o);
        if (bn_cu_new(&host->cfg, host->params_mem, host->n_params, &c, &b->cu, err)) goto err;
        *out = b;
        return 0;
#else
        char why[256];
        bn_device_cuda_usable(why, sizeof why);
        bn_err_set(err, BN_EUNSUPPORTED, "%s", why);
        goto err;
#endif
    }
    if (bn_llama_reserve(host, o->max_B, o->max_T, o->train, err)) goto err;
    if (o->ste) {
        b->shadow = malloc(host->n_params * sizeof(float));
        if (!b->shadow) {
            bn_err_set(err, BN_ENOMEM, "backend: shadow weights (%zu floats)", host->n_params);
            goto err;
        }
        memcpy(b->shadow, host->params_mem, host->n_params * sizeof(float));
        cpu_project(b);
    }
    *out = b;
    return 0;
err:
    bn_backend_free(b);
    return err ? err->code : BN_EINVAL;
}

void bn_backend_free(bn_backend *b)
{
    if (!b) return;
#ifdef BN_HAVE_CUDA
    bn_cu_free(b->cu);
#endif
    bn_optim_free(b->opt);
    bn_optim_free(b->mg);
    for (int i = 0; i < b->n_tt; i++) free((char *)b->tt[i].name);
    free(b->tt);
    for (int i = 0; i < b->n_states; i++) free(b->state_names[i]);
    free(b->state_names);
    free(b->codes);
    free(b->scales);
    free(b->shadow);
    free(b);
}

bn_device bn_backend_device(const bn_backend *b) { return b->o.device; }

size_t bn_backend_device_bytes(const bn_backend *b)
{
#ifdef BN_HAVE_CUDA
    if (b->cu) return bn_cu_bytes(b->cu);
#else
    (void)b;
#endif
    return 0;
}
size_t bn_backend_n_params(const bn_backend *b) { return b->host->n_params; }

#ifdef BN_HAVE_CUDA
#define ON_CUDA(b) ((b)->cu != NULL)
#else
#define ON_CUDA(b) false
#endif

/* ---- step ---- */

int bn_backend_forward(bn_backend *b, const int32_t *tokens, int B, int T, bn_err *err)
{
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_forward(b->cu, tokens, B, T, err);
#endif
    return bn_llama_forward(b->host, tokens, B, T, err);
}

int bn_backend_logits(bn_backend *b, float *out, bn_err *err)
{
    bn_llama *m = b->host;
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_get(b->cu, BN_CU_LOGITS, out, bn_cu_logits_count(b->cu), err);
#endif
    memcpy(out, m->acts.logits, (size_t)m->B * m->T * m->cfg.vocab_size * sizeof(float));
    (void)err;
    return 0;
}

int bn_backend_loss(bn_backend *b, const int32_t *targets, const uint8_t *mask, float *loss,
                    int *n_counted, bn_err *err)
{
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_loss(b->cu, targets, mask, loss, n_counted, err);
#endif
    (void)err;
    *loss = bn_llama_loss(b->host, targets, mask, n_counted);
    return 0;
}

int bn_backend_zero_grad(bn_backend *b, bn_err *err)
{
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_zero_grad(b->cu, err);
#endif
    (void)err;
    bn_llama_zero_grad(b->host);
    return 0;
}

int bn_backend_backward(bn_backend *b, bn_err *err)
{
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_backward(b->cu, err);
#endif
    return bn_llama_backward(b->host, err);
}

/* CPU: the optimizer over one flat tensor (master weights, gradients); rebuilt with its
 * state kept when the hyper-parameters change. */
static int cpu_optim(bn_backend *b, const bn_backend_adamw *c, bn_err *err)
{
    if (b->opt && !memcmp(&b->opt_cfg, c, sizeof *c)) return 0;
    bn_optim_config oc;
    bn_optim_config_default(&oc);
    oc.lr = c->lr;
    oc.beta1 = c->beta1;
    oc.beta2 = c->beta2;
    oc.eps = c->eps;
    oc.weight_decay = c->weight_decay;
    oc.max_grad_norm = c->max_grad_norm;
    oc.grokfast_lambda = 0;
    oc.warmup_steps = 0;
    oc.total_steps = 0;
    bn_llama *m = b->host;
    bn_optim_param p = { .name = "params", .w = b->shadow ? b->shadow : m->params_mem,
                         .g = m->grads_mem, .rows = 1, .cols = (int)m->n_params,
                         .group = BN_OPTIM_ADAMW };
    bn_optim *o = NULL;
    if (bn_optim_new(&oc, &p, 1, &o, err)) return err ? err->code : BN_ENOMEM;
    if (b->opt) { /* keep the moments */
        for (int i = 0; i < bn_optim_state_count(o); i++) {
            size_t n1, n2;
            float *dst = bn_optim_state_at(o, i, NULL, &n1);
            float *src = bn_optim_state_at(b->opt, i, NULL, &n2);
            memcpy(dst, src, (n1 < n2 ? n1 : n2) * sizeof(float));
        }
        bn_optim_free(b->opt);
    }
    b->opt = o;
    b->opt_cfg = *c;
    return 0;
}

static float *cpu_state(bn_backend *b, const char *suffix)
{
    for (int i = 0; b->opt && i < bn_optim_state_count(b->opt); i++) {
        const char *name;
        size_t n;
        float *s = bn_optim_state_at(b->opt, i, &name, &n);
        size_t ln = strlen(name), ls = strlen(suffix);
        if (ln >= ls && !strcmp(name + ln - ls, suffix)) return s;
    }
    return NULL;
}

int bn_backend_adamw_prepare(bn_backend *b, const bn_backend_adamw *c, bn_err *err)
{
    if (ON_CUDA(b)) return 0;
    return cpu_optim(b, c, err);
}

int bn_backend_adamw_step(bn_backend *b, const bn_backend_adamw *c, int64_t t, double *grad_norm,
                          bn_err *err)
{
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) {
        int skipped = 0;
        return bn_cu_adamw(b->cu, c->lr, c->beta1, c->beta2, c->eps, c->weight_decay, t,
                           c->max_grad_norm, grad_norm, &skipped, err);
    }
#endif
    if (!b->o.train) return bn_err_set(err, BN_EINVAL, "backend: optimizer on a model made without train");
    if (cpu_optim(b, c, err)) return err ? err->code : BN_ENOMEM;
    bn_optim_set_steps(b->opt, t);
    bn_optim_stats st;
    bn_optim_step(b->opt, &st);
    if (grad_norm) *grad_norm = st.skipped ? NAN : st.grad_norm;
    if (b->o.ste) cpu_project(b);
    return 0;
}

/* ---- transfers ---- */

int bn_backend_get(bn_backend *b, bn_bk_buf which, float *out, bn_err *err)
{
    size_t n = b->host->n_params;
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b))
        return bn_cu_get(b->cu, which == BN_BK_COMPUTE ? BN_CU_COMPUTE : (bn_cu_buf)which, out, n, err);
#endif
    const float *src = NULL;
    switch (which) {
    case BN_BK_COMPUTE: src = b->host->params_mem; break;
    case BN_BK_PARAMS: src = b->shadow ? b->shadow : b->host->params_mem; break;
    case BN_BK_GRADS: src = b->host->grads_mem; break;
    case BN_BK_ADAM_M: src = cpu_state(b, ".m"); break;
    case BN_BK_ADAM_V: src = cpu_state(b, ".v"); break;
    }
    if (!src) {
        if (which == BN_BK_ADAM_M || which == BN_BK_ADAM_V) {
            memset(out, 0, n * sizeof(float)); /* no step yet: zero moments */
            return 0;
        }
        return bn_err_set(err, BN_EINVAL, "backend: buffer %d absent", (int)which);
    }
    memcpy(out, src, n * sizeof(float));
    return 0;
}

int bn_backend_set(bn_backend *b, bn_bk_buf which, const float *in, bn_err *err)
{
    size_t n = b->host->n_params;
    if (which == BN_BK_COMPUTE) return bn_err_set(err, BN_EINVAL, "backend: the compute weights are derived, not set");
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_set(b->cu, (bn_cu_buf)which, in, n, err);
#endif
    float *dst = NULL;
    if ((which == BN_BK_ADAM_M || which == BN_BK_ADAM_V) && !b->opt)
        return bn_err_set(err, BN_EINVAL, "backend: call bn_backend_adamw_prepare before setting its state");
    switch (which) {
    case BN_BK_PARAMS: dst = b->shadow ? b->shadow : b->host->params_mem; break;
    case BN_BK_GRADS: dst = b->host->grads_mem; break;
    case BN_BK_ADAM_M: dst = cpu_state(b, ".m"); break;
    case BN_BK_ADAM_V: dst = cpu_state(b, ".v"); break;
    case BN_BK_COMPUTE: break;
    }
    if (!dst) return bn_err_set(err, BN_EINVAL, "backend: buffer %d absent", (int)which);
    memcpy(dst, in, n * sizeof(float));
    if (which == BN_BK_PARAMS && b->o.ste) cpu_project(b);
    return 0;
}

/* ---- trainer ---- */

int bn_backend_train_setup(bn_backend *b, const bn_backend_train *tc, bn_err *err)
{
    if (!b->o.train || b->o.ste || !b->o.trainer || b->trainer)
        return bn_err_set(err, BN_EINVAL, "backend: a trainer needs a fresh backend made with train and trainer, without ste");
    size_t np = b->host->n_params;
    b->tc = *tc;
    b->tt = calloc((size_t)tc->n_t + 1, sizeof *b->tt);
    if (!b->tt) return bn_err_set(err, BN_ENOMEM, "backend: out of memory");
    size_t maxn = 1, maxr = 1;
    int n_train = 0, n_states = 0;
    for (int i = 0; i < tc->n_t; i++) {
        const bn_backend_tensor *t = &tc->t[i];
        if (t->rows <= 0 || t->cols <= 0 || t->off + (size_t)t->rows * t->cols > np)
            return bn_err_set(err, BN_EINVAL, "backend: tensor %s outside the parameters", t->name);
        b->tt[i] = *t;
        b->tt[i].name = strdup(t->name);
        b->n_tt = i + 1;
        if (!b->tt[i].name) return bn_err_set(err, BN_ENOMEM, "backend: out of memory");
        size_t n = (size_t)t->rows * t->cols;
        if (n > maxn) maxn = n;
        if ((size_t)t->rows > maxr) maxr = (size_t)t->rows;
        if (t->trainable) {
            n_train++;
            n_states += t->group == BN_OPTIM_MUON ? 2 : 3;
        }
    }
    b->tc.t = b->tt;
    (void)n_states; /* sizes the CUDA state names; unused on a build without CUDA */
    if (!n_train) return bn_err_set(err, BN_EINVAL, "backend: no trainable tensor");
    b->trainer = true;
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) {
        /* the CPU optimizer's state names, in bn_optim_new's order */
        b->state_names = calloc((size_t)n_states, sizeof *b->state_names);
        if (!b->state_names) return bn_err_set(err, BN_ENOMEM, "backend: out of memory");
        for (int i = 0; i < b->n_tt; i++) {
            const bn_backend_tensor *t = &b->tt[i];
            if (!t->trainable) continue;
            const char *sfx[3] = { ".ema", t->group == BN_OPTIM_MUON ? ".mom" : ".m", ".v" };
            for (int k = 0; k < (t->group == BN_OPTIM_MUON ? 2 : 3); k++) {
                size_t len = strlen(t->name) + 8;
                char *nm = malloc(len);
                if (!nm) return bn_err_set(err, BN_ENOMEM, "backend: out of memory");
                snprintf(nm, len, "%s%s", t->name, sfx[k]);
                b->state_names[b->n_states++] = nm;
            }
        }
        bn_cu_tensor *ct = calloc((size_t)b->n_tt, sizeof *ct);
        if (!ct) return bn_err_set(err, BN_ENOMEM, "backend: out of memory");
        for (int i = 0; i < b->n_tt; i++)
            ct[i] = (bn_cu_tensor){ .off = b->tt[i].off, .rows = b->tt[i].rows, .cols = b->tt[i].cols,
                                    .ternary = b->tt[i].ternary, .xsq = b->tt[i].xsq,
                                    .trainable = b->tt[i].trainable,
                                    .muon = b->tt[i].group == BN_OPTIM_MUON };
        bn_cu_train ctr = { .t = ct, .n_t = b->n_tt, .tau = tc->qp.tau,
                            .per_tensor = tc->qp.per_tensor, .n_taus = tc->n_taus, .oc = tc->oc };
        memcpy(ctr.taus, tc->taus, sizeof ctr.taus);
        int rc = bn_cu_train_setup(b->cu, &ctr, err);
        free(ct);
        return rc;
    }
#endif
    bn_llama *m = b->host;
    b->shadow = malloc(np * sizeof(float));
    b->codes = malloc(maxn);
    b->scales = malloc(maxr * sizeof(float));
    bn_optim_param *ps = calloc((size_t)n_train, sizeof *ps);
    if (!b->shadow || !b->codes || !b->scales || !ps) {
        free(ps);
        return bn_err_set(err, BN_ENOMEM, "backend: out of memory for the trainer");
    }
    memcpy(b->shadow, m->params_mem, np * sizeof(float)); /* FP32 originals */
    int n = 0;
    for (int i = 0; i < b->n_tt; i++) {
        const bn_backend_tensor *t = &b->tt[i];
        if (t->trainable)
            ps[n++] = (bn_optim_param){ t->name, b->shadow + t->off, m->grads_mem + t->off,
                                        t->rows, t->cols, t->group };
    }
    int rc = bn_optim_new(&tc->oc, ps, n, &b->mg, err);
    free(ps);
    return rc;
}

/* codes/scales of tensor t from weights w: the quantize stage's quantizer. */
static int cpu_quantize(bn_backend *b, const bn_backend_tensor *t, const float *w, bn_err *err)
{
    const bn_backend_train *c = &b->tc;
    if (t->xsq)
        return bn_quant_refine(t->name, w, BN_DTYPE_F32, t->rows, t->cols, t->xsq, c->taus,
                               c->n_taus, &c->qp, b->codes, b->scales, NULL, NULL, err);
    return bn_quant_tensor(t->name, w, BN_DTYPE_F32, t->rows, t->cols, &c->qp, b->codes,
                           b->scales, NULL, err);
}

int bn_backend_materialize(bn_backend *b, double lam, bn_err *err)
{
    if (!b->trainer) return bn_err_set(err, BN_EINVAL, "backend: materialize before bn_backend_train_setup");
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_materialize(b->cu, (float)lam, err);
#endif
    float *p = b->host->params_mem;
    float l = (float)lam;
    for (int i = 0; i < b->n_tt; i++) {
        const bn_backend_tensor *t = &b->tt[i];
        const float *w = b->shadow + t->off;
        float *dst = p + t->off;
        size_t n = (size_t)t->rows * t->cols;
        if (!t->ternary) {
            memcpy(dst, w, sizeof(float) * n);
            continue;
        }
        int rc = cpu_quantize(b, t, w, err);
        if (rc) return rc;
        for (int row = 0; row < t->rows; row++) {
            float s = b->scales[b->tc.qp.per_tensor ? 0 : row];
            const int8_t *c = b->codes + (size_t)row * t->cols;
            const float *wr = w + (size_t)row * t->cols;
            float *d = dst + (size_t)row * t->cols;
            if (l >= 1.0f)
                for (int j = 0; j < t->cols; j++) d[j] = s * (float)c[j];
            else
                for (int j = 0; j < t->cols; j++) d[j] = wr[j] + l * (s * (float)c[j] - wr[j]);
        }
    }
    return BN_OK;
}

/* Adds distill * d KL(p_teacher || p_student) / d logits to dlogits; returns mean KL. */
static double cpu_distill(bn_llama *m, bn_llama *teacher, double distill, int N)
{
    int V = m->cfg.vocab_size;
    float *ls = m->acts.logits, *lt = teacher->acts.logits, *d = m->acts.dlogits;
    double w = distill, kl_sum = 0;
    for (int i = 0; i < N; i++) {
        float *s = ls + (size_t)i * V, *t = lt + (size_t)i * V, *g = d + (size_t)i * V;
        float ms = s[0], mt = t[0];
        for (int j = 1; j < V; j++) { if (s[j] > ms) ms = s[j]; if (t[j] > mt) mt = t[j]; }
        double zs = 0, zt = 0;
        for (int j = 0; j < V; j++) { zs += exp(s[j] - ms); zt += exp(t[j] - mt); }
        double lzs = log(zs), lzt = log(zt), kl = 0;
        for (int j = 0; j < V; j++) {
            double lps = s[j] - ms - lzs, lpt = t[j] - mt - lzt, pt = exp(lpt);
            kl += pt * (lpt - lps);
            g[j] += (float)(w * (exp(lps) - pt) / N);
        }
        kl_sum += kl;
    }
    return kl_sum / N;
}

int bn_backend_loss_distill(bn_backend *b, bn_backend *teacher, const int32_t *targets,
                            double distill, double *ce, double *kl, bn_err *err)
{
    *kl = 0;
    bool kd = teacher && distill > 0;
    if (kd && (bn_backend_device(teacher) != bn_backend_device(b)))
        return bn_err_set(err, BN_EINVAL, "backend: the teacher is on another device");
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_loss_distill(b->cu, kd ? teacher->cu : NULL, targets, distill, ce, kl, err);
#endif
    (void)err;
    *ce = bn_llama_loss(b->host, targets, NULL, NULL);
    if (kd) *kl = cpu_distill(b->host, teacher->host, distill, b->host->B * b->host->T);
    return BN_OK;
}

int bn_backend_optim_step(bn_backend *b, bn_optim_stats *st, bn_err *err)
{
    if (!b->trainer) return bn_err_set(err, BN_EINVAL, "backend: optimizer step before bn_backend_train_setup");
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_optim_step(b->cu, st, err);
#endif
    bn_optim_step(b->mg, st);
    return BN_OK;
}

void bn_backend_optim_set_steps(bn_backend *b, int64_t t, int64_t applied)
{
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) {
        bn_cu_optim_set_steps(b->cu, t, applied);
        return;
    }
#endif
    if (!b->mg) return;
    bn_optim_set_steps(b->mg, t);
    bn_optim_set_applied_steps(b->mg, applied);
}

int64_t bn_backend_optim_applied_steps(const bn_backend *b)
{
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_optim_applied_steps(b->cu);
#endif
    return b->mg ? bn_optim_applied_steps(b->mg) : 0;
}

void bn_backend_optim_set_total_steps(bn_backend *b, int64_t total)
{
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) {
        bn_cu_optim_set_total_steps(b->cu, total);
        return;
    }
#endif
    if (b->mg) bn_optim_set_total_steps(b->mg, total);
}

void bn_backend_optim_set_cooldown(bn_backend *b, int64_t start, int64_t n, double from)
{
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) {
        bn_cu_optim_set_cooldown(b->cu, start, n, from);
        return;
    }
#endif
    if (b->mg) bn_optim_set_cooldown(b->mg, start, n, from);
}

int bn_backend_optim_state_count(const bn_backend *b)
{
    if (ON_CUDA(b)) return b->n_states;
    return b->mg ? bn_optim_state_count(b->mg) : 0;
}

const char *bn_backend_optim_state_name(const bn_backend *b, int i, size_t *n)
{
    if (i < 0 || i >= bn_backend_optim_state_count(b)) return NULL;
    if (ON_CUDA(b)) {
        /* state i belongs to the k-th trainable tensor: walk the list */
        int k = 0;
        for (int j = 0; j < b->n_tt; j++) {
            const bn_backend_tensor *t = &b->tt[j];
            if (!t->trainable) continue;
            int ns = t->group == BN_OPTIM_MUON ? 2 : 3;
            if (i < k + ns) {
                if (n) *n = (size_t)t->rows * t->cols;
                return b->state_names[i];
            }
            k += ns;
        }
        return NULL;
    }
    const char *name;
    bn_optim_state_at(b->mg, i, &name, n);
    return name;
}

#ifdef BN_HAVE_CUDA
/* CUDA: state i -> (which array, offset, floats) */
static int cu_state_at(const bn_backend *b, int i, int *kind, size_t *off, size_t *n)
{
    int k = 0;
    for (int j = 0; j < b->n_tt; j++) {
        const bn_backend_tensor *t = &b->tt[j];
        if (!t->trainable) continue;
        int ns = t->group == BN_OPTIM_MUON ? 2 : 3;
        if (i < k + ns) {
            *kind = i - k; /* 0 ema, 1 mom | m, 2 v */
            *off = t->off;
            *n = (size_t)t->rows * t->cols;
            return 0;
        }
        k += ns;
    }
    return -1;
}
#endif

static int state_io(bn_backend *b, int i, float *out, const float *in, bn_err *err)
{
    if (i < 0 || i >= bn_backend_optim_state_count(b))
        return bn_err_set(err, BN_EINVAL, "backend: optimizer state %d absent", i);
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) {
        int kind;
        size_t off, n;
        if (cu_state_at(b, i, &kind, &off, &n)) return bn_err_set(err, BN_EINVAL, "backend: state %d", i);
        return bn_cu_state_io(b->cu, kind, off, n, out, in, err);
    }
#endif
    size_t n;
    float *p = bn_optim_state_at(b->mg, i, NULL, &n);
    const float *src = out ? p : in;
    float *dst = out ? out : p;
    if (src && dst) memcpy(dst, src, n * sizeof(float));
    return BN_OK;
}

int bn_backend_optim_state_get(bn_backend *b, int i, float *out, bn_err *err)
{
    return state_io(b, i, out, NULL, err);
}

int bn_backend_optim_state_set(bn_backend *b, int i, const float *in, bn_err *err)
{
    return state_io(b, i, NULL, in, err);
}

/* ---- evaluation ---- */

void bn_backend_set_bf16(bn_backend *b, bool on)
{
    b->o.bf16 = on;
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) bn_cu_set_bf16(b->cu, on);
#endif
}

int bn_backend_eval_windows(bn_backend *b, const int32_t *ids, size_t n_ids, int ctx,
                            int windows, int batch, bn_llama_eval_result *out, bn_err *err)
{
    if (!ON_CUDA(b)) return bn_llama_eval_windows(b->host, ids, n_ids, ctx, windows, batch, out, err);
    /* the CPU contract (model/llama.c bn_llama_eval_windows), batches bounded by the
     * capacity the backend was made with */
    if (ctx <= 0) return bn_err_set(err, BN_EINVAL, "eval: ctx %d must be > 0", ctx);
    if (ctx > b->o.max_T)
        return bn_err_set(err, BN_EINVAL, "eval: ctx %d beyond the backend's %d", ctx, b->o.max_T);
    size_t avail = n_ids > 0 ? (n_ids - 1) / (size_t)ctx : 0;
    if (windows <= 0) windows = (int)(avail > 1000000 ? 1000000 : avail);
    if (windows <= 0 || (size_t)windows > avail)
        return bn_err_set(err, BN_EINVAL, "eval: %d windows of %d tokens need %zu tokens, have %zu",
                          windows, ctx, (size_t)windows * ctx + 1, n_ids);
    if (batch <= 0) batch = 4;
    if (batch > b->o.max_B) batch = b->o.max_B;
    if (batch > windows) batch = windows;
    double total = 0;
    uint64_t count = 0;
    for (int w0 = 0; w0 < windows; w0 += batch) {
        int nb = windows - w0 < batch ? windows - w0 : batch;
        const int32_t *in = ids + (size_t)w0 * ctx;
        int rc = bn_backend_forward(b, in, nb, ctx, err);
        float loss;
        int cnt;
        if (!rc) rc = bn_backend_loss(b, in + 1, NULL, &loss, &cnt, err);
        if (rc) return rc;
        total += (double)loss * cnt;
        count += (uint64_t)cnt;
        if (!isfinite(total))
            return bn_err_set(err, BN_ENUMERIC, "eval: non-finite activations (the loss of window "
                              "%d of %d is NaN or Inf): the model's forward pass overflows", w0 + 1,
                              windows);
    }
    out->tokens = count;
    out->windows = windows;
    out->mean_nll = count ? total / (double)count : 0;
    out->perplexity = exp(out->mean_nll);
    return BN_OK;
}
