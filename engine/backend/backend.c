/* backend.c - the device seam (backend.h): dispatch to the CPU engine (model/llama.c +
 * model/optim.c) or to the CUDA backend (cuda/cuda.h, only when built with it).
 *
 * Invariants: a CPU backend's host->params_mem holds the compute weights (the ternary
 * projection of shadow when ste, else the master weights themselves) and shadow (ste only)
 * the master weights; a CUDA backend never touches host after creation. */
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
#ifdef BN_HAVE_CUDA
    bn_cu_model *cu;
#endif
};

#ifdef BN_HAVE_CUDA
static bn_cu_opts cu_opts(const bn_backend_opts *o)
{
    bn_cu_opts c = { .gpu = o->gpu, .max_B = o->max_B, .max_T = o->max_T, .train = o->train,
                     .bf16 = o->bf16, .ste = o->ste, .tau = o->tau };
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
    if (b->shadow) cpu_project(b);
    return 0;
}

/* ---- transfers ---- */

int bn_backend_get(bn_backend *b, bn_bk_buf which, float *out, bn_err *err)
{
    size_t n = b->host->n_params;
#ifdef BN_HAVE_CUDA
    if (ON_CUDA(b)) return bn_cu_get(b->cu, (bn_cu_buf)which, out, n, err);
#endif
    const float *src = NULL;
    switch (which) {
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
    }
    if (!dst) return bn_err_set(err, BN_EINVAL, "backend: buffer %d absent", (int)which);
    memcpy(dst, in, n * sizeof(float));
    if (which == BN_BK_PARAMS && b->shadow) cpu_project(b);
    return 0;
}
