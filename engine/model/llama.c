/* llama.c - Llama forward, loss and backward in FP32 (llm.c style); see llama.h.
 *
 * Layout. N = B*T rows, one per (sequence, position), row-major everywhere: a row of
 * an [N, C] activation is one token's C features, so every linear layer is one sgemm
 * over all tokens (y[N,O] = x[N,C] W[O,C]^T). Per-layer activations are stacked [L, ...]
 * so backward finds them without recomputation. Attention probabilities are kept
 * [L, B, H, T, T] when gradients are reserved, one layer's worth otherwise.
 *
 * Each building block is a forward/backward pair of plain functions over flat
 * arrays. The backward functions ADD into parameter gradients and (where noted)
 * into input gradients, which lets the residual stream gradient live in one [N, D]
 * buffer (dres) that every block adds to.
 *
 * Parallelism: everything heavy runs on bn_parallel_for with OpenBLAS single-threaded
 * inside each task: linears split rows (and dW output rows), attention splits (batch,
 * head) forward and (batch, kv head) backward (a kv head's dk/dv is written by one task
 * only). One pool, so OpenBLAS's spinning helpers never compete with ours. Row-wise ops
 * (norms, RoPE, residual adds) are cheap next to the products and stay serial.
 */
#include "model/llama.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/blas.h"
#include "base/rng.h"
#include "base/parallel.h"
#include "base/tensor.h"
#include "base/vecmath.h"
#include "model/rope.h"

/* Element type: float, or double in the BN_LLAMA_F64 test build (gradient checks). */
typedef bn_llama_float real;
#ifdef BN_LLAMA_F64
#define GEMM cblas_dgemm
#define EXP exp
#define LOG log
#define SQRT sqrt
#define FABS fabs
#define FMAX fmax
#define FMIN fmin
#define NEARBYINT nearbyint
#else
#define GEMM cblas_sgemm
#define EXP expf
#define LOG logf
#define SQRT sqrtf
#define FABS fabsf
#define FMAX fmaxf
#define FMIN fminf
#define NEARBYINT nearbyintf
#endif

/* Private scratch: RoPE tables and backward buffers, sized with the activations. */
typedef struct bn_llama_scratch {
    real *mem;
    int32_t *tokens;            /* [N] the last forward's tokens (embedding backward) */
    real *rope_cos, *rope_sin; /* [max_T, hd/2] */
    real *qbuf;                /* [N, max(D, F)] activation-quantized linear input */
    /* backward only (NULL without grads): */
    real *dres;                /* [N, D] gradient of the residual stream */
    real *dln;                 /* [N, D] gradient of a norm output */
    real *dq, *dk, *dv;        /* [N, H*hd], [N, KV*hd] x 2 */
    real *dq_raw, *dk_raw;     /* [N, H*hd], [N, KV*hd] before the q/k norms (qk_norm only) */
    real *datty;               /* [N, H*hd] */
    real *dgate, *dup, *dffh;  /* [N, F] */
    real *dlnf;                /* [N, D] */
    real *datt;                /* [threads, T, T] per-thread attention score gradients */
    real *cetmp;               /* [threads, V] cross-entropy exp buffer (no dlogits) */
    int threads;               /* the per-thread buffers' thread count */
} bn_llama_scratch;

/* ---- sizes ----------------------------------------------------------------------- */

typedef struct dims {
    size_t V, D, L, H, KV, hd, F, QD, KVD; /* QD = H*hd, KVD = KV*hd */
} dims;

static dims dims_of(const bn_model_config *c)
{
    dims d = { (size_t)c->vocab_size, (size_t)c->dim, (size_t)c->n_layers, (size_t)c->n_heads,
               (size_t)c->n_kv_heads, (size_t)c->head_dim, (size_t)c->hidden_dim, 0, 0 };
    d.QD = d.H * d.hd;
    d.KVD = d.KV * d.hd;
    return d;
}

/* Sizes of the 17 parameter tensors in struct order. */
static void param_sizes(const bn_model_config *c, size_t sz[17])
{
    dims d = dims_of(c);
    size_t bias = c->attention_bias ? 1 : 0, qkn = c->qk_norm ? 1 : 0;
    size_t i = 0;
    sz[i++] = d.V * d.D;               /* tok_emb */
    sz[i++] = d.L * d.D;               /* attn_norm */
    sz[i++] = d.L * d.QD * d.D;        /* wq */
    sz[i++] = d.L * d.KVD * d.D;       /* wk */
    sz[i++] = d.L * d.KVD * d.D;       /* wv */
    sz[i++] = bias * d.L * d.QD;       /* bq */
    sz[i++] = bias * d.L * d.KVD;      /* bk */
    sz[i++] = bias * d.L * d.KVD;      /* bv */
    sz[i++] = qkn * d.L * d.hd;        /* q_norm */
    sz[i++] = qkn * d.L * d.hd;        /* k_norm */
    sz[i++] = d.L * d.D * d.QD;        /* wo */
    sz[i++] = d.L * d.D;               /* ffn_norm */
    sz[i++] = d.L * d.F * d.D;         /* w_gate */
    sz[i++] = d.L * d.F * d.D;         /* w_up */
    sz[i++] = d.L * d.D * d.F;         /* w_down */
    sz[i++] = d.D;                     /* final_norm */
    sz[i++] = c->tied_embeddings ? 0 : d.V * d.D; /* head */
}

static size_t params_point(const bn_model_config *c, real *mem, bn_llama_params *p)
{
    size_t sz[17];
    param_sizes(c, sz);
    real **ptr[17] = { &p->tok_emb, &p->attn_norm, &p->wq, &p->wk, &p->wv, &p->bq, &p->bk,
                        &p->bv, &p->q_norm, &p->k_norm, &p->wo, &p->ffn_norm, &p->w_gate,
                        &p->w_up, &p->w_down, &p->final_norm, &p->head };
    size_t off = 0;
    for (int i = 0; i < 17; i++) {
        *ptr[i] = (sz[i] && mem) ? mem + off : NULL;
        off += sz[i];
    }
    if (c->tied_embeddings) p->head = p->tok_emb;
    return off;
}

static int check_config(const bn_model_config *c, bn_err *err)
{
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->head_dim <= 0 || c->vocab_size <= 0)
        return bn_err_set(err, BN_EINVAL, "llama: config has a non-positive dimension");
    if (c->n_heads % c->n_kv_heads != 0)
        return bn_err_set(err, BN_EINVAL, "llama: n_heads %d not a multiple of n_kv_heads %d",
                          c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return bn_err_set(err, BN_EINVAL, "llama: head_dim %d is odd (RoPE needs pairs)",
                          c->head_dim);
    if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0))
        return bn_err_set(err, BN_EINVAL, "llama: rms_norm_eps and rope_theta must be > 0");
    return 0;
}

int bn_llama_alloc_(const bn_model_config *cfg, bn_llama **out, bn_err *err);
int bn_llama_alloc_(const bn_model_config *cfg, bn_llama **out, bn_err *err)
{
    int rc = check_config(cfg, err);
    if (rc) return rc;
    bn_llama *m = calloc(1, sizeof *m);
    if (!m) return bn_err_set(err, BN_ENOMEM, "llama: out of memory");
    m->cfg = *cfg;
    m->n_params = params_point(cfg, NULL, &m->params);
    m->params_mem = malloc(m->n_params * sizeof(real));
    if (!m->params_mem) {
        size_t n = m->n_params;
        free(m);
        return bn_err_set(err, BN_ENOMEM, "llama: out of memory for %zu parameters", n);
    }
    params_point(cfg, m->params_mem, &m->params);
    m->threads = bn_cpu_count();
    *out = m;
    return 0;
}

void bn_llama_free(bn_llama *m)
{
    if (!m) return;
    if (m->scratch) {
        free(m->scratch->mem);
        free(m->scratch->tokens);
    }
    free(m->scratch);
    free(m->params_mem);
    free(m->grads_mem);
    free(m->acts_mem);
    free(m);
}

/* ---- parameter access ------------------------------------------------------------ */

static const char *role_name(bn_role r)
{
    static const char *const names[BN_ROLE_COUNT] = {
        "embed", "attn_norm", "wq", "wk", "wv", "wo", "bq", "bk", "bv", "ffn_norm", "w_gate",
        "w_up", "w_down", "final_norm", "head", "q_norm", "k_norm", "other" };
    return (unsigned)r < BN_ROLE_COUNT ? names[r] : "?";
}

real *bn_llama_tensor(const bn_llama *m, const bn_llama_params *p, bn_role role, int layer,
                       int *rows, int *cols)
{
    dims d = dims_of(&m->cfg);
    real *base = NULL;
    size_t r = 0, c = 1;
    bool per_layer = true;
    switch (role) {
    case BN_ROLE_EMBED: base = p->tok_emb; r = d.V; c = d.D; per_layer = false; break;
    case BN_ROLE_HEAD: base = p->head; r = d.V; c = d.D; per_layer = false; break;
    case BN_ROLE_FINAL_NORM: base = p->final_norm; r = d.D; per_layer = false; break;
    case BN_ROLE_ATTN_NORM: base = p->attn_norm; r = d.D; break;
    case BN_ROLE_FFN_NORM: base = p->ffn_norm; r = d.D; break;
    case BN_ROLE_WQ: base = p->wq; r = d.QD; c = d.D; break;
    case BN_ROLE_WK: base = p->wk; r = d.KVD; c = d.D; break;
    case BN_ROLE_WV: base = p->wv; r = d.KVD; c = d.D; break;
    case BN_ROLE_WO: base = p->wo; r = d.D; c = d.QD; break;
    case BN_ROLE_BQ: base = p->bq; r = d.QD; break;
    case BN_ROLE_BK: base = p->bk; r = d.KVD; break;
    case BN_ROLE_BV: base = p->bv; r = d.KVD; break;
    case BN_ROLE_Q_NORM: base = p->q_norm; r = d.hd; break;
    case BN_ROLE_K_NORM: base = p->k_norm; r = d.hd; break;
    case BN_ROLE_W_GATE: base = p->w_gate; r = d.F; c = d.D; break;
    case BN_ROLE_W_UP: base = p->w_up; r = d.F; c = d.D; break;
    case BN_ROLE_W_DOWN: base = p->w_down; r = d.D; c = d.F; break;
    default: return NULL;
    }
    if (!base) return NULL;
    if (per_layer) {
        if (layer < 0 || (size_t)layer >= d.L) return NULL;
        base += (size_t)layer * r * c;
    }
    if (rows) *rows = (int)r;
    if (cols) *cols = (int)c;
    return base;
}

int bn_llama_set_tensor(bn_llama *m, bn_role role, int layer, const real *src, bn_err *err)
{
    int r, c;
    real *dst = bn_llama_tensor(m, &m->params, role, layer, &r, &c);
    if (!dst)
        return bn_err_set(err, BN_EINVAL, "llama: no tensor %s layer %d", role_name(role),
                          layer);
    memcpy(dst, src, (size_t)r * c * sizeof(real));
    return 0;
}

int bn_llama_set_linear_codes(bn_llama *m, bn_role role, int layer, const int8_t *codes,
                              const real *scales, int n_scales, bn_err *err)
{
    int r, c;
    real *dst = bn_llama_tensor(m, &m->params, role, layer, &r, &c);
    if (!dst || c == 1)
        return bn_err_set(err, BN_EINVAL, "llama: %s layer %d is not a linear tensor",
                          role_name(role), layer);
    if (n_scales != 1 && n_scales != r)
        return bn_err_set(err, BN_EINVAL, "llama: %s layer %d: %d scales for %d rows",
                          role_name(role), layer, n_scales, r);
    for (int i = 0; i < r; i++) {
        real s = scales[n_scales == 1 ? 0 : i];
        const int8_t *q = codes + (size_t)i * c;
        real *w = dst + (size_t)i * c;
        for (int j = 0; j < c; j++) w[j] = s * (real)q[j];
    }
    return 0;
}

/* ---- construction ---------------------------------------------------------------- */

static void fill_normal(real *x, size_t n, real std, uint64_t *s)
{
    for (size_t i = 0; i < n; i += 2) {
        double u1 = bn_rng_uniform01(s), u2 = bn_rng_uniform01(s);
        double rad = sqrt(-2.0 * log(u1));
        x[i] = (real)(std * rad * cos(2 * M_PI * u2));
        if (i + 1 < n) x[i + 1] = (real)(std * rad * sin(2 * M_PI * u2));
    }
}

int bn_llama_new(const bn_model_config *cfg, uint64_t seed, bn_llama **out, bn_err *err)
{
    bn_llama *m;
    int rc = bn_llama_alloc_(cfg, &m, err);
    if (rc) return rc;
    uint64_t s = seed;
    fill_normal(m->params_mem, m->n_params, 0.02f, &s);
    dims d = dims_of(cfg);
    for (size_t i = 0; i < d.L * d.D; i++) m->params.attn_norm[i] = m->params.ffn_norm[i] = 1;
    for (size_t i = 0; i < d.D; i++) m->params.final_norm[i] = 1;
    if (cfg->qk_norm)
        for (size_t i = 0; i < d.L * d.hd; i++) m->params.q_norm[i] = m->params.k_norm[i] = 1;
    *out = m;
    return 0;
}

/* ---- activation buffers ---------------------------------------------------------- */

/* Points acts (and scratch) into mem for capacity (B, T); returns floats needed. */
static size_t acts_point(const bn_model_config *c, size_t B, size_t T, bool grads,
                         real *mem, bn_llama_acts *a)
{
    dims d = dims_of(c);
    size_t N = B * T, att_layers = grads ? d.L : 1, qkn = c->qk_norm ? 1 : 0;
    size_t sz[] = { N * d.D, d.L * N * d.D, d.L * N, d.L * N * d.QD, d.L * N * d.KVD,
                    d.L * N * d.KVD, att_layers * B * d.H * T * T, d.L * N * d.QD,
                    d.L * N * d.D, d.L * N * d.D, d.L * N, d.L * N * d.F, d.L * N * d.F,
                    d.L * N * d.F, d.L * N * d.D, N * d.D, N, N * d.V, grads ? N * d.V : 0,
                    N, qkn * d.L * N * d.QD, qkn * d.L * N * d.KVD, qkn * d.L * N * d.H,
                    qkn * d.L * N * d.KV };
    real **ptr[] = { &a->encoded, &a->ln1, &a->ln1_rstd, &a->q, &a->k, &a->v, &a->att,
                      &a->atty, &a->res_att, &a->ln2, &a->ln2_rstd, &a->gate, &a->up,
                      &a->ffh, &a->res_ffn, &a->lnf, &a->lnf_rstd, &a->logits, &a->dlogits,
                      &a->losses, &a->q_raw, &a->k_raw, &a->q_rstd, &a->k_rstd };
    size_t off = 0;
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        *ptr[i] = (mem && sz[i]) ? mem + off : NULL;
        off += sz[i];
    }
    return off;
}

static size_t scratch_point(const bn_model_config *c, size_t B, size_t T, bool grads,
                            int threads, real *mem, bn_llama_scratch *s)
{
    dims d = dims_of(c);
    size_t N = B * T, wide = d.D > d.F ? d.D : d.F;
    if (d.QD > wide) wide = d.QD;
    size_t g = grads ? 1 : 0, gq = grads && c->qk_norm ? 1 : 0;
    size_t sz[] = { T * d.hd / 2, T * d.hd / 2, N * wide, g * N * d.D, g * N * d.D,
                    g * N * d.QD, g * N * d.KVD, g * N * d.KVD, g * N * d.QD, g * N * d.F,
                    g * N * d.F, g * N * d.F, g * N * d.D, g * (size_t)threads * T * T,
                    (size_t)threads * d.V, gq * N * d.QD, gq * N * d.KVD };
    real **ptr[] = { &s->rope_cos, &s->rope_sin, &s->qbuf, &s->dres, &s->dln, &s->dq, &s->dk,
                     &s->dv, &s->datty, &s->dgate, &s->dup, &s->dffh, &s->dlnf, &s->datt,
                     &s->cetmp, &s->dq_raw, &s->dk_raw };
    size_t off = 0;
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        *ptr[i] = (mem && sz[i]) ? mem + off : NULL;
        off += sz[i];
    }
    s->threads = threads;
    return off;
}

/* HF rotary tables: angle = pos * inv_freq(i), i < hd/2, times the attention factor
 * (model/rope.h), in double. */
static void rope_tables(const bn_model_config *c, int T, real *cosb, real *sinb)
{
    int half = c->head_dim / 2;
    double mscale = bn_rope_attention_factor(c);
    for (int i = 0; i < half; i++) {
        double inv = bn_rope_inv_freq(c, i);
        for (int p = 0; p < T; p++) {
            double a = p * inv;
            cosb[(size_t)p * half + i] = (real)(mscale * cos(a));
            sinb[(size_t)p * half + i] = (real)(mscale * sin(a));
        }
    }
}

int bn_llama_reserve(bn_llama *m, int max_B, int max_T, bool with_grads, bn_err *err)
{
    if (max_B <= 0 || max_T <= 0)
        return bn_err_set(err, BN_EINVAL, "llama: reserve %d x %d", max_B, max_T);
    bool had_grads = m->grads_mem != NULL;
    with_grads = with_grads || had_grads;
    if (max_B <= m->max_B && max_T <= m->max_T && with_grads == had_grads &&
        m->scratch->threads >= m->threads)
        return 0;
    if (max_B < m->max_B) max_B = m->max_B;
    if (max_T < m->max_T) max_T = m->max_T;
    if (with_grads && !m->grads_mem) {
        m->grads_mem = calloc(m->n_params, sizeof(real));
        if (!m->grads_mem) return bn_err_set(err, BN_ENOMEM, "llama: out of memory for gradients");
        params_point(&m->cfg, m->grads_mem, &m->grads);
    }
    bn_llama_acts a;
    bn_llama_scratch s = { 0 };
    size_t na = acts_point(&m->cfg, max_B, max_T, with_grads, NULL, &a);
    size_t ns = scratch_point(&m->cfg, max_B, max_T, with_grads, m->threads, NULL, &s);
    real *am = malloc(na * sizeof(real));
    real *sm = malloc(ns * sizeof(real));
    int32_t *tk = malloc((size_t)max_B * max_T * sizeof(int32_t));
    bn_llama_scratch *sp = m->scratch ? m->scratch : calloc(1, sizeof *sp);
    if (!am || !sm || !sp || !tk) {
        free(am);
        free(sm);
        free(tk);
        if (!m->scratch) free(sp);
        return bn_err_set(err, BN_ENOMEM, "llama: out of memory for activations %d x %d",
                          max_B, max_T);
    }
    free(m->acts_mem);
    if (m->scratch) {
        free(m->scratch->mem);
        free(m->scratch->tokens);
    }
    m->scratch = sp;
    sp->tokens = tk;
    m->acts_mem = am;
    acts_point(&m->cfg, max_B, max_T, with_grads, am, &m->acts);
    scratch_point(&m->cfg, max_B, max_T, with_grads, m->threads, sm, sp);
    sp->mem = sm;
    rope_tables(&m->cfg, max_T, sp->rope_cos, sp->rope_sin);
    m->max_B = max_B;
    m->max_T = max_T;
    m->B = m->T = 0;
    return 0;
}

void bn_llama_set_threads(bn_llama *m, int threads)
{
    if (threads <= 0) threads = bn_cpu_count();
    m->threads = threads;
    bn_blas_set_threads(threads);
    if (m->scratch && m->scratch->threads < threads) /* grows per-thread buffers */
        bn_llama_reserve(m, m->max_B, m->max_T, m->grads_mem != NULL, NULL);
}

void bn_llama_zero_grad(bn_llama *m)
{
    if (m->grads_mem) memset(m->grads_mem, 0, m->n_params * sizeof(real));
}

/* ---- vector helpers -------------------------------------------------------------- */

/* x[i] = exp(x[i] - m); returns the sum. */
static real exp_sub_sum(real *x, size_t n, real m)
{
#ifdef BN_LLAMA_F64
    real s = 0;
    for (size_t i = 0; i < n; i++) s += (x[i] = exp(x[i] - m));
    return s;
#else
    return bn_vexp_sub_sum(x, n, m);
#endif
}

static real vmax(const real *x, size_t n)
{
#ifdef BN_LLAMA_F64
    real m = -INFINITY;
    for (size_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
#else
    return bn_vmax(x, n);
#endif
}

/* ---- layers: forward/backward pairs ---------------------------------------------- */

/* out[N, D] = emb[tok[n]] */
static void embedding_forward(real *out, const int32_t *tok, const real *emb, size_t N,
                              size_t D)
{
    for (size_t n = 0; n < N; n++)
        memcpy(out + n * D, emb + (size_t)tok[n] * D, D * sizeof(real));
}

/* demb[tok[n]] += dout[n] */
static void embedding_backward(real *demb, const real *dout, const int32_t *tok, size_t N,
                               size_t D)
{
    for (size_t n = 0; n < N; n++) {
        real *g = demb + (size_t)tok[n] * D;
        const real *d = dout + n * D;
        for (size_t i = 0; i < D; i++) g[i] += d[i];
    }
}

/* out = x * rstd * w per row; rstd[N] kept for backward. */
static void rmsnorm_forward(real *out, real *rstd, const real *x, const real *w, size_t N,
                            size_t D, real eps)
{
    for (size_t n = 0; n < N; n++) {
        const real *xr = x + n * D;
        real ss = 0;
        for (size_t i = 0; i < D; i++) ss += xr[i] * xr[i];
        real r = 1.0f / SQRT(ss / (real)D + eps);
        rstd[n] = r;
        real *o = out + n * D;
        for (size_t i = 0; i < D; i++) o[i] = xr[i] * r * w[i];
    }
}

/* dx += d/dx, dw += d/dw of out = x * rstd * w. */
static void rmsnorm_backward(real *dx, real *dw, const real *dout, const real *x,
                             const real *w, const real *rstd, size_t N, size_t D)
{
    for (size_t n = 0; n < N; n++) {
        const real *xr = x + n * D, *dy = dout + n * D;
        real r = rstd[n], dot = 0;
        for (size_t i = 0; i < D; i++) dot += dy[i] * w[i] * xr[i];
        real c = dot * r * r * r / (real)D;
        real *dxr = dx + n * D;
        for (size_t i = 0; i < D; i++) {
            dxr[i] += dy[i] * w[i] * r - xr[i] * c;
            dw[i] += dy[i] * xr[i] * r;
        }
    }
}

/* Linear layers. Up to three linears that share one input x[N, C] (q/k/v, gate/up)
 * run as one parallel region: forward tasks are (linear, row chunk) pairs; backward
 * tasks are row chunks of dx (summing every linear's dout W) and output-row chunks of
 * each dW (dW[o0:o1] += dout[:, o0:o1]^T x), so no two tasks write the same memory.
 * OpenBLAS runs single-threaded inside each task (see bn_llama_forward). */
typedef struct lin {
    const real *W, *b; /* [O, C], [O] or NULL */
    real *out;         /* forward: [N, O] */
    const real *dout;  /* backward: [N, O] */
    real *dW, *db;     /* backward: += */
    size_t O;
} lin;

typedef struct mm_ctx {
    const real *x; /* [N, C] */
    real *dx;      /* [N, C] backward (NULL: not needed) */
    real beta_dx;  /* 0 overwrite, 1 add */
    size_t N, C;
    int n, P;      /* linears, chunks */
    lin l[3];
} mm_ctx;

static void chunk(size_t n, int parts, int i, size_t *a, size_t *b)
{
    size_t step = (n + (size_t)parts - 1) / (size_t)parts;
    *a = step * (size_t)i;
    *b = *a + step < n ? *a + step : n;
    if (*a > n) *a = n;
}

static void mm_forward_task(void *vctx, int task, int thread)
{
    (void)thread;
    mm_ctx *c = vctx;
    const lin *L = &c->l[task / c->P];
    size_t n0, n1;
    chunk(c->N, c->P, task % c->P, &n0, &n1);
    if (n0 >= n1) return;
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(n1 - n0), (int)L->O, (int)c->C, 1.0f,
         c->x + n0 * c->C, (int)c->C, L->W, (int)c->C, 0.0f, L->out + n0 * L->O, (int)L->O);
    if (L->b)
        for (size_t n = n0; n < n1; n++)
            for (size_t o = 0; o < L->O; o++) L->out[n * L->O + o] += L->b[o];
}

static void mm_backward_task(void *vctx, int task, int thread)
{
    (void)thread;
    mm_ctx *c = vctx;
    size_t a, b;
    if (task < c->P) { /* dx rows */
        chunk(c->N, c->P, task, &a, &b);
        if (a >= b || !c->dx) return;
        for (int i = 0; i < c->n; i++) {
            const lin *L = &c->l[i];
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(b - a), (int)c->C, (int)L->O,
                 1.0f, L->dout + a * L->O, (int)L->O, L->W, (int)c->C,
                 i == 0 ? c->beta_dx : 1.0f, c->dx + a * c->C, (int)c->C);
        }
        return;
    }
    task -= c->P;
    const lin *L = &c->l[task / c->P];
    chunk(L->O, c->P, task % c->P, &a, &b);
    if (a >= b) return;
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(b - a), (int)c->C, (int)c->N, 1.0f,
         L->dout + a, (int)L->O, c->x, (int)c->C, 1.0f, L->dW + a * c->C, (int)c->C);
    if (L->db)
        for (size_t n = 0; n < c->N; n++)
            for (size_t o = a; o < b; o++) L->db[o] += L->dout[n * L->O + o];
}

static int mm_parts(int threads, size_t N)
{
    int P = threads > 1 ? threads : 1;
    if ((size_t)P > N) P = (int)N;
    return P;
}

static void matmul_forward(int threads, mm_ctx *c)
{
    c->P = mm_parts(threads, c->N);
    bn_parallel_for(threads, c->n * c->P, mm_forward_task, c);
}

static void matmul_backward(int threads, mm_ctx *c)
{
    c->P = mm_parts(threads, c->N);
    bn_parallel_for(threads, (c->n + 1) * c->P, mm_backward_task, c);
}

/* One linear without bias: out[N, O] = x W^T. */
static void linear1_forward(int threads, real *out, const real *x, const real *W, size_t N,
                            size_t C, size_t O)
{
    mm_ctx c = { .x = x, .N = N, .C = C, .n = 1 };
    c.l[0] = (lin){ .W = W, .out = out, .O = O };
    matmul_forward(threads, &c);
}

/* dx = dout W (overwrites), dW += dout^T x. */
static void linear1_backward(int threads, real *dx, real *dW, const real *dout, const real *x,
                             const real *W, size_t N, size_t C, size_t O)
{
    mm_ctx c = { .x = x, .dx = dx, .N = N, .C = C, .n = 1 };
    c.l[0] = (lin){ .W = W, .dout = dout, .dW = dW, .O = O };
    matmul_backward(threads, &c);
}

/* In place on x[B*T, nh*hd]: HF rotate_half, pair (i, i + hd/2) rotated by pos t.
 * sign = +1 forward, -1 backward (the transpose rotation). */
static void rope_apply(real *x, const real *cosb, const real *sinb, size_t B, size_t T,
                       size_t nh, size_t hd, real sign)
{
    size_t half = hd / 2;
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++) {
            const real *c = cosb + t * half, *s = sinb + t * half;
            real *row = x + (b * T + t) * nh * hd;
            for (size_t h = 0; h < nh; h++) {
                real *v = row + h * hd;
                for (size_t i = 0; i < half; i++) {
                    real x0 = v[i], x1 = v[i + half], si = sign * s[i];
                    v[i] = x0 * c[i] - x1 * si;
                    v[i + half] = x1 * c[i] + x0 * si;
                }
            }
        }
}

/* ffh = silu(gate) * up, in blocks: e = exp(-gate) vectorised, then the rational part. */
#define SWIGLU_BLOCK 256
static void swiglu_forward(real *out, const real *gate, const real *up, size_t n)
{
    real e[SWIGLU_BLOCK];
    for (size_t i0 = 0; i0 < n; i0 += SWIGLU_BLOCK) {
        size_t m = n - i0 < SWIGLU_BLOCK ? n - i0 : SWIGLU_BLOCK;
        for (size_t i = 0; i < m; i++) e[i] = -gate[i0 + i];
        exp_sub_sum(e, m, 0);
        for (size_t i = 0; i < m; i++) out[i0 + i] = gate[i0 + i] / (1.0f + e[i]) * up[i0 + i];
    }
}

static void swiglu_backward(real *dgate, real *dup, const real *dout, const real *gate,
                            const real *up, size_t n)
{
    real e[SWIGLU_BLOCK];
    for (size_t i0 = 0; i0 < n; i0 += SWIGLU_BLOCK) {
        size_t m = n - i0 < SWIGLU_BLOCK ? n - i0 : SWIGLU_BLOCK;
        for (size_t i = 0; i < m; i++) e[i] = -gate[i0 + i];
        exp_sub_sum(e, m, 0);
        for (size_t i = 0; i < m; i++) {
            size_t k = i0 + i;
            real g = gate[k], sg = 1.0f / (1.0f + e[i]);
            dup[k] = dout[k] * g * sg;
            dgate[k] = dout[k] * up[k] * sg * (1.0f + g * (1.0f - sg));
        }
    }
}

/* Per-token absmax 8-bit fake quantization (BitNet W1.58A8): x -> round(x*127/a)*a/127. */
static void actquant_forward(real *out, const real *x, size_t N, size_t C)
{
    for (size_t n = 0; n < N; n++) {
        const real *xr = x + n * C;
        real *o = out + n * C, a = 0;
        for (size_t i = 0; i < C; i++) a = FMAX(a, FABS(xr[i]));
        if (a < 1e-5f) a = 1e-5f; /* = BN_TK_ACT_FLOOR: the int8 kernel floors alike */
        real s = 127.0f / a, inv = a / 127.0f;
        for (size_t i = 0; i < C; i++) {
            real q = NEARBYINT(xr[i] * s);
            q = q > 127 ? 127 : (q < -128 ? -128 : q);
            o[i] = q * inv;
        }
    }
}

/* ---- attention ------------------------------------------------------------------- */

#define ATT_BLOCK 64 /* causal row blocks: rows [r0, r0+blk) only need keys [0, r0+blk) */

typedef struct att_ctx {
    size_t B, T, H, KV, hd, QD, KVD;
    real scale;
    const real *q, *k, *v; /* layer slices */
    real *att, *atty;
    /* backward */
    const real *datty;
    real *dq, *dk, *dv, *datt;
} att_ctx;

/* One (b, h): P = softmax(scale Q K^T + causal), Y = P V. */
static void attention_forward_task(void *vctx, int task, int thread)
{
    (void)thread;
    att_ctx *a = vctx;
    size_t b = (size_t)task / a->H, h = (size_t)task % a->H, T = a->T;
    size_t kvh = h / (a->H / a->KV);
    const real *Q = a->q + b * T * a->QD + h * a->hd;
    const real *K = a->k + b * T * a->KVD + kvh * a->hd;
    const real *V = a->v + b * T * a->KVD + kvh * a->hd;
    real *P = a->att + (b * a->H + h) * T * T;
    real *Y = a->atty + b * T * a->QD + h * a->hd;
    for (size_t r0 = 0; r0 < T; r0 += ATT_BLOCK) {
        size_t nr = T - r0 < ATT_BLOCK ? T - r0 : ATT_BLOCK, nk = r0 + nr;
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)nk, (int)a->hd,
                    a->scale, Q + r0 * a->QD, (int)a->QD, K, (int)a->KVD, 0.0f, P + r0 * T,
                    (int)T);
    }
    for (size_t t = 0; t < T; t++) {
        real *p = P + t * T;
        real sum = exp_sub_sum(p, t + 1, vmax(p, t + 1));
        real inv = 1.0f / sum;
        for (size_t j = 0; j <= t; j++) p[j] *= inv;
        /* zero to the end of the row's causal block only: nothing reads further */
        size_t end = (t / ATT_BLOCK + 1) * ATT_BLOCK;
        if (end > T) end = T;
        if (end > t + 1) memset(p + t + 1, 0, (end - t - 1) * sizeof(real));
    }
    for (size_t r0 = 0; r0 < T; r0 += ATT_BLOCK) {
        size_t nr = T - r0 < ATT_BLOCK ? T - r0 : ATT_BLOCK, nk = r0 + nr;
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)a->hd, (int)nk,
                    1.0f, P + r0 * T, (int)T, V, (int)a->KVD, 0.0f, Y + r0 * a->QD,
                    (int)a->QD);
    }
}

/* One (b, kv head): every query head of the group; overwrites dq rows of those heads
 * and dk, dv of the kv head. */
static void attention_backward_task(void *vctx, int task, int thread)
{
    att_ctx *a = vctx;
    size_t b = (size_t)task / a->KV, kvh = (size_t)task % a->KV, T = a->T;
    size_t grp = a->H / a->KV;
    const real *K = a->k + b * T * a->KVD + kvh * a->hd;
    const real *V = a->v + b * T * a->KVD + kvh * a->hd;
    real *dK = a->dk + b * T * a->KVD + kvh * a->hd;
    real *dV = a->dv + b * T * a->KVD + kvh * a->hd;
    real *dS = a->datt + (size_t)thread * T * T;
    for (size_t h = kvh * grp; h < (kvh + 1) * grp; h++) {
        real beta = h == kvh * grp ? 0.0f : 1.0f;
        const real *Q = a->q + b * T * a->QD + h * a->hd;
        const real *P = a->att + (b * a->H + h) * T * T;
        const real *dY = a->datty + b * T * a->QD + h * a->hd;
        real *dQ = a->dq + b * T * a->QD + h * a->hd;
        /* dV (+)= P^T dY: key block [c0, c0+blk) gets rows t >= c0 only (P is causal) */
        for (size_t c0 = 0; c0 < T; c0 += ATT_BLOCK) {
            size_t nc = T - c0 < ATT_BLOCK ? T - c0 : ATT_BLOCK, nr = T - c0;
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nc, (int)a->hd, (int)nr,
                        1.0f, P + c0 * T + c0, (int)T, dY + c0 * a->QD, (int)a->QD, beta,
                        dV + c0 * a->KVD, (int)a->KVD);
        }
        /* dP = dY V^T, causal blocks */
        for (size_t r0 = 0; r0 < T; r0 += ATT_BLOCK) {
            size_t nr = T - r0 < ATT_BLOCK ? T - r0 : ATT_BLOCK, nk = r0 + nr;
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)nk, (int)a->hd,
                        1.0f, dY + r0 * a->QD, (int)a->QD, V, (int)a->KVD, 0.0f, dS + r0 * T,
                        (int)T);
        }
        /* dS = P * (dP - sum_j P dP), scaled; zero above the diagonal */
        for (size_t t = 0; t < T; t++) {
            const real *p = P + t * T;
            real *d = dS + t * T, dot = 0;
            for (size_t j = 0; j <= t; j++) dot += p[j] * d[j];
            for (size_t j = 0; j <= t; j++) d[j] = p[j] * (d[j] - dot) * a->scale;
            size_t end = ((t / ATT_BLOCK) + 1) * ATT_BLOCK;
            if (end > T) end = T;
            if (end > t + 1) memset(d + t + 1, 0, (end - t - 1) * sizeof(real));
        }
        /* dQ = dS K, causal blocks */
        for (size_t r0 = 0; r0 < T; r0 += ATT_BLOCK) {
            size_t nr = T - r0 < ATT_BLOCK ? T - r0 : ATT_BLOCK, nk = r0 + nr;
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)a->hd,
                        (int)nk, 1.0f, dS + r0 * T, (int)T, K, (int)a->KVD, 0.0f,
                        dQ + r0 * a->QD, (int)a->QD);
        }
        /* dK (+)= dS^T Q: key block [c0, c0+blk) gets rows t >= c0 only */
        for (size_t c0 = 0; c0 < T; c0 += ATT_BLOCK) {
            size_t nc = T - c0 < ATT_BLOCK ? T - c0 : ATT_BLOCK, nr = T - c0;
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nc, (int)a->hd, (int)nr,
                        1.0f, dS + c0 * T + c0, (int)T, Q + c0 * a->QD, (int)a->QD, beta,
                        dK + c0 * a->KVD, (int)a->KVD);
        }
    }
}

static att_ctx att_setup(const bn_llama *m, size_t l, size_t B, size_t T)
{
    dims d = dims_of(&m->cfg);
    size_t N = B * T;
    att_ctx a = { .B = B, .T = T, .H = d.H, .KV = d.KV, .hd = d.hd, .QD = d.QD,
                  .KVD = d.KVD, .scale = 1.0f / SQRT((real)d.hd) };
    a.q = m->acts.q + l * N * d.QD;
    a.k = m->acts.k + l * N * d.KVD;
    a.v = m->acts.v + l * N * d.KVD;
    a.att = m->acts.att + (m->grads_mem ? l : 0) * B * d.H * T * T;
    a.atty = m->acts.atty + l * N * d.QD;
    return a;
}

/* ---- forward --------------------------------------------------------------------- */

/* Linear input: optionally activation-quantized copy; reported to the stats hook. */
static const real *linear_input(bn_llama *m, const real *x, size_t N, size_t C, bn_role r,
                                 int layer)
{
    const real *in = x;
    if (m->act_quant) {
        actquant_forward(m->scratch->qbuf, x, N, C);
        in = m->scratch->qbuf;
    }
    if (m->stats_fn) {
        if (r == BN_ROLE_WQ) {
            m->stats_fn(m->stats_ctx, BN_ROLE_WQ, layer, in, (int)N, (int)C);
            m->stats_fn(m->stats_ctx, BN_ROLE_WK, layer, in, (int)N, (int)C);
            m->stats_fn(m->stats_ctx, BN_ROLE_WV, layer, in, (int)N, (int)C);
        } else if (r == BN_ROLE_W_GATE) {
            m->stats_fn(m->stats_ctx, BN_ROLE_W_GATE, layer, in, (int)N, (int)C);
            m->stats_fn(m->stats_ctx, BN_ROLE_W_UP, layer, in, (int)N, (int)C);
        } else {
            m->stats_fn(m->stats_ctx, r, layer, in, (int)N, (int)C);
        }
    }
    return in;
}

static void forward_layers(bn_llama *m, const int32_t *tokens, int B, int T);

/* OpenBLAS runs single-threaded inside forward/backward: the engine's own threads split
 * every product, so the two thread pools never compete for the cores. */
int bn_llama_forward(bn_llama *m, const int32_t *tokens, int B, int T, bn_err *err)
{
    if (B <= 0 || T <= 0) return bn_err_set(err, BN_EINVAL, "llama: forward %d x %d", B, T);
    if (B > m->max_B || T > m->max_T) {
        int rc = bn_llama_reserve(m, B, T, m->grads_mem != NULL, err);
        if (rc) return rc;
    }
    size_t N = (size_t)B * T, V = (size_t)m->cfg.vocab_size;
    for (size_t n = 0; n < N; n++)
        if (tokens[n] < 0 || (size_t)tokens[n] >= V)
            return bn_err_set(err, BN_EINVAL, "llama: token %d at %zu outside vocab %zu",
                              tokens[n], n, V);
    int blas = bn_blas_get_threads();
    bn_blas_set_threads(1);
    forward_layers(m, tokens, B, T);
    bn_blas_set_threads(blas);
    return 0;
}

static void forward_layers(bn_llama *m, const int32_t *tokens, int B, int T)
{
    dims d = dims_of(&m->cfg);
    size_t N = (size_t)B * T;
    m->B = B;
    m->T = T;
    memcpy(m->scratch->tokens, tokens, N * sizeof(int32_t));
    const bn_llama_params *p = &m->params;
    bn_llama_acts *a = &m->acts;
    bn_llama_scratch *s = m->scratch;
    real eps = m->cfg.rms_norm_eps;
    embedding_forward(a->encoded, tokens, p->tok_emb, N, d.D);
    for (size_t l = 0; l < d.L; l++) {
        const real *x = l == 0 ? a->encoded : a->res_ffn + (l - 1) * N * d.D;
        real *ln1 = a->ln1 + l * N * d.D, *q = a->q + l * N * d.QD;
        real *k = a->k + l * N * d.KVD, *v = a->v + l * N * d.KVD;
        rmsnorm_forward(ln1, a->ln1_rstd + l * N, x, p->attn_norm + l * d.D, N, d.D, eps);
        const real *in = linear_input(m, ln1, N, d.D, BN_ROLE_WQ, (int)l);
        /* qwen3: the projections land in q_raw/k_raw, each head RMS-normed into q/k */
        real *qp = p->q_norm ? a->q_raw + l * N * d.QD : q;
        real *kp = p->k_norm ? a->k_raw + l * N * d.KVD : k;
        mm_ctx qkv = { .x = in, .N = N, .C = d.D, .n = 3 };
        qkv.l[0] = (lin){ .W = p->wq + l * d.QD * d.D, .b = p->bq ? p->bq + l * d.QD : NULL,
                          .out = qp, .O = d.QD };
        qkv.l[1] = (lin){ .W = p->wk + l * d.KVD * d.D, .b = p->bk ? p->bk + l * d.KVD : NULL,
                          .out = kp, .O = d.KVD };
        qkv.l[2] = (lin){ .W = p->wv + l * d.KVD * d.D, .b = p->bv ? p->bv + l * d.KVD : NULL,
                          .out = v, .O = d.KVD };
        matmul_forward(m->threads, &qkv);
        if (p->q_norm) {
            rmsnorm_forward(q, a->q_rstd + l * N * d.H, qp, p->q_norm + l * d.hd, N * d.H, d.hd, eps);
            rmsnorm_forward(k, a->k_rstd + l * N * d.KV, kp, p->k_norm + l * d.hd, N * d.KV, d.hd, eps);
        }
        rope_apply(q, s->rope_cos, s->rope_sin, B, T, d.H, d.hd, 1.0f);
        rope_apply(k, s->rope_cos, s->rope_sin, B, T, d.KV, d.hd, 1.0f);
        att_ctx ac = att_setup(m, l, B, T);
        bn_parallel_for(m->threads, (int)(B * d.H), attention_forward_task, &ac);
        real *atty = a->atty + l * N * d.QD, *ra = a->res_att + l * N * d.D;
        in = linear_input(m, atty, N, d.QD, BN_ROLE_WO, (int)l);
        linear1_forward(m->threads, ra, in, p->wo + l * d.D * d.QD, N, d.QD, d.D);
        for (size_t i = 0; i < N * d.D; i++) ra[i] += x[i];
        real *ln2 = a->ln2 + l * N * d.D;
        rmsnorm_forward(ln2, a->ln2_rstd + l * N, ra, p->ffn_norm + l * d.D, N, d.D, eps);
        in = linear_input(m, ln2, N, d.D, BN_ROLE_W_GATE, (int)l);
        real *g = a->gate + l * N * d.F, *u = a->up + l * N * d.F, *f = a->ffh + l * N * d.F;
        mm_ctx gu = { .x = in, .N = N, .C = d.D, .n = 2 };
        gu.l[0] = (lin){ .W = p->w_gate + l * d.F * d.D, .out = g, .O = d.F };
        gu.l[1] = (lin){ .W = p->w_up + l * d.F * d.D, .out = u, .O = d.F };
        matmul_forward(m->threads, &gu);
        swiglu_forward(f, g, u, N * d.F);
        in = linear_input(m, f, N, d.F, BN_ROLE_W_DOWN, (int)l);
        real *rf = a->res_ffn + l * N * d.D;
        linear1_forward(m->threads, rf, in, p->w_down + l * d.D * d.F, N, d.F, d.D);
        for (size_t i = 0; i < N * d.D; i++) rf[i] += ra[i];
    }
    rmsnorm_forward(a->lnf, a->lnf_rstd, a->res_ffn + (d.L - 1) * N * d.D, p->final_norm, N,
                    d.D, eps);
    const real *in = linear_input(m, a->lnf, N, d.D, BN_ROLE_HEAD, -1);
    linear1_forward(m->threads, a->logits, in, p->head, N, d.D, d.V);
}

/* ---- loss ------------------------------------------------------------------------ */

real bn_llama_nll_row(const real *logits, int V, int target)
{
    real mx = vmax(logits, (size_t)V);
    double sum = 0;
    for (int i = 0; i < V; i++) sum += EXP(logits[i] - mx);
    return (real)(log(sum) + mx - logits[target]);
}

typedef struct ce_ctx {
    const real *logits;
    real *dlogits, *losses;
    const int32_t *targets;
    const uint8_t *mask;
    real *tmp; /* [threads, V] exp buffer when dlogits is absent */
    size_t V, rows_per_task, N;
    real inv_count;
} ce_ctx;

static bool ce_counts(const ce_ctx *c, size_t n)
{
    return c->targets[n] >= 0 && (size_t)c->targets[n] < c->V && (!c->mask || c->mask[n]);
}

/* Cross-entropy with mask over a block of rows: losses, and dlogits = (softmax - 1hot)/count. */
static void crossentropy_task(void *vctx, int task, int thread)
{
    ce_ctx *c = vctx;
    size_t n0 = (size_t)task * c->rows_per_task, n1 = n0 + c->rows_per_task;
    if (n1 > c->N) n1 = c->N;
    for (size_t n = n0; n < n1; n++) {
        const real *lg = c->logits + n * c->V;
        real *dl = c->dlogits ? c->dlogits + n * c->V : NULL;
        if (!ce_counts(c, n)) {
            c->losses[n] = 0;
            if (dl) memset(dl, 0, c->V * sizeof(real));
            continue;
        }
        real mx = vmax(lg, c->V);
        real *e = dl ? dl : c->tmp + (size_t)thread * c->V;
        memcpy(e, lg, c->V * sizeof(real));
        real sum = exp_sub_sum(e, c->V, mx);
        size_t t = (size_t)c->targets[n];
        c->losses[n] = LOG(sum) + mx - lg[t];
        if (dl) {
            real sc = c->inv_count / sum;
            for (size_t i = 0; i < c->V; i++) dl[i] *= sc;
            dl[t] -= c->inv_count;
        }
    }
}

real bn_llama_loss(bn_llama *m, const int32_t *targets, const uint8_t *mask, int *n_counted)
{
    size_t N = (size_t)m->B * m->T;
    ce_ctx c = { .logits = m->acts.logits, .dlogits = m->acts.dlogits, .losses = m->acts.losses,
                 .targets = targets, .mask = mask, .V = (size_t)m->cfg.vocab_size, .N = N,
                 .tmp = m->scratch->cetmp };
    int count = 0;
    for (size_t n = 0; n < N; n++) count += ce_counts(&c, n);
    if (n_counted) *n_counted = count;
    c.inv_count = count ? 1.0f / (real)count : 0.0f;
    int tasks = m->threads > 1 ? 4 * m->threads : 1;
    c.rows_per_task = (N + tasks - 1) / tasks;
    if (c.rows_per_task == 0) c.rows_per_task = 1;
    tasks = (int)((N + c.rows_per_task - 1) / c.rows_per_task);
    bn_parallel_for(m->threads, tasks, crossentropy_task, &c);
    double sum = 0;
    for (size_t n = 0; n < N; n++) sum += m->acts.losses[n];
    return count ? (real)(sum / count) : 0.0f;
}

/* ---- backward -------------------------------------------------------------------- */

static void backward_layers(bn_llama *m);

int bn_llama_backward(bn_llama *m, bn_err *err)
{
    if (!m->grads_mem)
        return bn_err_set(err, BN_EINVAL, "llama: backward without gradients reserved");
    if (m->B == 0) return bn_err_set(err, BN_EINVAL, "llama: backward before forward");
    int blas = bn_blas_get_threads();
    bn_blas_set_threads(1);
    backward_layers(m);
    bn_blas_set_threads(blas);
    return 0;
}

static void backward_layers(bn_llama *m)
{
    dims d = dims_of(&m->cfg);
    size_t B = (size_t)m->B, T = (size_t)m->T, N = B * T;
    const bn_llama_params *p = &m->params;
    bn_llama_params *g = &m->grads;
    const bn_llama_acts *a = &m->acts;
    bn_llama_scratch *s = m->scratch;

    int th = m->threads;
    /* head and final norm */
    const real *last = a->res_ffn + (d.L - 1) * N * d.D;
    linear1_backward(th, s->dlnf, g->head, a->dlogits, a->lnf, p->head, N, d.D, d.V);
    memset(s->dres, 0, N * d.D * sizeof(real));
    rmsnorm_backward(s->dres, g->final_norm, s->dlnf, last, p->final_norm, a->lnf_rstd, N, d.D);

    for (size_t l = d.L; l-- > 0;) {
        const real *x = l == 0 ? a->encoded : a->res_ffn + (l - 1) * N * d.D;
        const real *ra = a->res_att + l * N * d.D;
        /* ffn: res_ffn = ra + Wdown swiglu(Wg ln2, Wu ln2) */
        const real *f = a->ffh + l * N * d.F, *ln2 = a->ln2 + l * N * d.D;
        linear1_backward(th, s->dffh, g->w_down + l * d.D * d.F, s->dres, f,
                         p->w_down + l * d.D * d.F, N, d.F, d.D);
        swiglu_backward(s->dgate, s->dup, s->dffh, a->gate + l * N * d.F, a->up + l * N * d.F,
                        N * d.F);
        mm_ctx gu = { .x = ln2, .dx = s->dln, .beta_dx = 0.0f, .N = N, .C = d.D, .n = 2 };
        gu.l[0] = (lin){ .W = p->w_gate + l * d.F * d.D, .dout = s->dgate,
                         .dW = g->w_gate + l * d.F * d.D, .O = d.F };
        gu.l[1] = (lin){ .W = p->w_up + l * d.F * d.D, .dout = s->dup,
                         .dW = g->w_up + l * d.F * d.D, .O = d.F };
        matmul_backward(th, &gu);
        rmsnorm_backward(s->dres, g->ffn_norm + l * d.D, s->dln, ra, p->ffn_norm + l * d.D,
                         a->ln2_rstd + l * N, N, d.D);
        /* attention: res_att = x + Wo attn(...) */
        linear1_backward(th, s->datty, g->wo + l * d.D * d.QD, s->dres, a->atty + l * N * d.QD,
                         p->wo + l * d.D * d.QD, N, d.QD, d.D);
        att_ctx ac = att_setup(m, l, B, T);
        ac.datty = s->datty;
        ac.dq = s->dq;
        ac.dk = s->dk;
        ac.dv = s->dv;
        ac.datt = s->datt;
        bn_parallel_for(th, (int)(B * d.KV), attention_backward_task, &ac);
        rope_apply(s->dq, s->rope_cos, s->rope_sin, B, T, d.H, d.hd, -1.0f);
        rope_apply(s->dk, s->rope_cos, s->rope_sin, B, T, d.KV, d.hd, -1.0f);
        real *dqp = s->dq, *dkp = s->dk;
        if (p->q_norm) { /* through the per-head q/k norms */
            dqp = s->dq_raw;
            dkp = s->dk_raw;
            memset(dqp, 0, N * d.QD * sizeof(real));
            memset(dkp, 0, N * d.KVD * sizeof(real));
            rmsnorm_backward(dqp, g->q_norm + l * d.hd, s->dq, a->q_raw + l * N * d.QD,
                             p->q_norm + l * d.hd, a->q_rstd + l * N * d.H, N * d.H, d.hd);
            rmsnorm_backward(dkp, g->k_norm + l * d.hd, s->dk, a->k_raw + l * N * d.KVD,
                             p->k_norm + l * d.hd, a->k_rstd + l * N * d.KV, N * d.KV, d.hd);
        }
        mm_ctx qkv = { .x = a->ln1 + l * N * d.D, .dx = s->dln, .beta_dx = 0.0f, .N = N,
                       .C = d.D, .n = 3 };
        qkv.l[0] = (lin){ .W = p->wq + l * d.QD * d.D, .dout = dqp,
                          .dW = g->wq + l * d.QD * d.D, .db = g->bq ? g->bq + l * d.QD : NULL,
                          .O = d.QD };
        qkv.l[1] = (lin){ .W = p->wk + l * d.KVD * d.D, .dout = dkp,
                          .dW = g->wk + l * d.KVD * d.D,
                          .db = g->bk ? g->bk + l * d.KVD : NULL, .O = d.KVD };
        qkv.l[2] = (lin){ .W = p->wv + l * d.KVD * d.D, .dout = s->dv,
                          .dW = g->wv + l * d.KVD * d.D,
                          .db = g->bv ? g->bv + l * d.KVD : NULL, .O = d.KVD };
        matmul_backward(th, &qkv);
        rmsnorm_backward(s->dres, g->attn_norm + l * d.D, s->dln, x, p->attn_norm + l * d.D,
                         a->ln1_rstd + l * N, N, d.D);
    }
    embedding_backward(g->tok_emb, s->dres, s->tokens, N, d.D);
}

/* ---- activation statistics ------------------------------------------------------- */

int bn_llama_act_stats_init(bn_llama_act_stats *s, int cols, bn_err *err)
{
    memset(s, 0, sizeof *s);
    s->cols = cols;
    s->sum_x2 = calloc((size_t)cols, sizeof(double));
    s->absmax = calloc((size_t)cols, sizeof(real));
    if (!s->sum_x2 || !s->absmax) {
        bn_llama_act_stats_free(s);
        return bn_err_set(err, BN_ENOMEM, "llama: out of memory for statistics");
    }
    s->min = INFINITY;
    s->max = -INFINITY;
    return 0;
}

void bn_llama_act_stats_free(bn_llama_act_stats *s)
{
    free(s->sum_x2);
    free(s->absmax);
    s->sum_x2 = NULL;
    s->absmax = NULL;
}

void bn_llama_act_stats_add(bn_llama_act_stats *s, const real *x, int rows)
{
    size_t C = (size_t)s->cols;
    for (int r = 0; r < rows; r++) {
        const real *xr = x + (size_t)r * C;
        real mn = s->min, mx = s->max, sum = 0, sq = 0;
        for (size_t i = 0; i < C; i++) {
            real v = xr[i];
            s->sum_x2[i] += (double)v * v;
            s->absmax[i] = FMAX(s->absmax[i], FABS(v));
            mn = FMIN(mn, v);
            mx = FMAX(mx, v);
            sum += v;
            sq += v * v;
        }
        s->min = mn;
        s->max = mx;
        s->sum += sum;
        s->sum_sq += sq;
    }
    s->count += (uint64_t)rows;
}

double bn_llama_act_stats_mean(const bn_llama_act_stats *s)
{
    double n = (double)s->count * s->cols;
    return n > 0 ? s->sum / n : 0;
}

double bn_llama_act_stats_std(const bn_llama_act_stats *s)
{
    double n = (double)s->count * s->cols;
    if (n <= 0) return 0;
    double mean = s->sum / n, var = s->sum_sq / n - mean * mean;
    return var > 0 ? sqrt(var) : 0;
}

/* ---- evaluation ------------------------------------------------------------------ */

int bn_llama_eval_windows(bn_llama *m, const int32_t *ids, size_t n_ids, int ctx, int windows,
                          int batch, bn_llama_eval_result *out, bn_err *err)
{
    if (ctx <= 0) return bn_err_set(err, BN_EINVAL, "eval: ctx %d must be > 0", ctx);
    size_t avail = n_ids > 0 ? (n_ids - 1) / (size_t)ctx : 0;
    if (windows <= 0) windows = (int)(avail > 1000000 ? 1000000 : avail);
    if (windows <= 0 || (size_t)windows > avail)
        return bn_err_set(err, BN_EINVAL,
                          "eval: %d windows of %d tokens need %zu tokens, have %zu", windows,
                          ctx, (size_t)windows * ctx + 1, n_ids);
    if (batch <= 0) batch = 4;
    if (batch > windows) batch = windows;
    int rc = bn_llama_reserve(m, batch, ctx, false, err);
    if (rc) return rc;
    double total = 0;
    uint64_t count = 0;
    for (int w0 = 0; w0 < windows; w0 += batch) {
        int nb = windows - w0 < batch ? windows - w0 : batch;
        /* windows are contiguous, so the targets are the inputs shifted by one */
        const int32_t *in = ids + (size_t)w0 * ctx;
        rc = bn_llama_forward(m, in, nb, ctx, err);
        if (rc) break;
        int cnt;
        bn_llama_loss(m, in + 1, NULL, &cnt);
        for (size_t i = 0; i < (size_t)nb * ctx; i++) total += m->acts.losses[i];
        count += (uint64_t)cnt;
        if (!isfinite(total)) { /* never a NaN perplexity: say where it came from */
            rc = bn_err_set(err, BN_ENUMERIC, "eval: non-finite activations (the loss of window "
                            "%d of %d is NaN or Inf): the model's forward pass overflows", w0 + 1,
                            windows);
            break;
        }
    }
    if (rc) return rc;
    out->tokens = count;
    out->windows = windows;
    out->mean_nll = count ? total / (double)count : 0;
    out->perplexity = exp(out->mean_nll);
    return 0;
}
