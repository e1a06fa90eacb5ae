/* optim.c - MuGrokfast optimizer (see optim.h for the update rules).
 *
 * Design: the optimizer holds per-parameter state arrays (Grokfast EMA for every tensor,
 * Nesterov momentum for Muon tensors, first/second moments for AdamW tensors) in one
 * flat allocation, plus scratch for Newton-Schulz sized for the largest Muon tensor, so
 * a step allocates nothing. Newton-Schulz works on the orientation with fewer rows
 * (X X^T is then the small Gram matrix) and runs its products through cblas_sgemm.
 */
#include "model/optim.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NS_A 3.4445f
#define NS_B (-4.7750f)
#define NS_C 2.0315f

typedef struct optim_slot {
    bn_optim_param p;
    char *name;
    size_t n;      /* rows*cols */
    float *ema;    /* Grokfast EMA */
    float *s1;     /* Muon momentum | AdamW m */
    float *s2;     /* AdamW v (NULL for Muon) */
} optim_slot;

typedef struct optim_state_ref {
    char *name;
    float *ptr;
    size_t n;
} optim_state_ref;

struct bn_optim {
    bn_optim_config cfg;
    int n;
    optim_slot *slots;
    float *state;         /* all state arrays */
    float *scratch;       /* Newton-Schulz work space */
    int n_refs;
    optim_state_ref *refs;
    int64_t t;            /* steps taken, skipped ones included (drives the schedule) */
    int64_t applied;      /* steps that updated the weights (bias correction, EMA start) */
};

void bn_optim_config_default(bn_optim_config *c)
{
    memset(c, 0, sizeof *c);
    c->lr = 1e-3;
    c->muon_lr = 0.02;
    c->beta1 = 0.9;
    c->beta2 = 0.95;
    c->eps = 1e-8;
    c->weight_decay = 0.0;
    c->muon_weight_decay = 0.0;
    c->momentum = 0.95;
    c->ns_steps = 5;
    c->grokfast_alpha = 0.98;
    c->grokfast_lambda = 2.0;
    c->max_grad_norm = 1.0;
    c->warmup_steps = 20;
    c->total_steps = 0;
    c->min_lr_ratio = 0.1;
}

double bn_optim_lr_factor(const bn_optim_config *c, int64_t t)
{
    if (t < 0) t = 0;
    if (c->cooldown_steps > 0 && t >= c->cooldown_start) {
        double q = (double)(t - c->cooldown_start) / (double)c->cooldown_steps;
        if (q > 1.0) q = 1.0;
        double lo = c->min_lr_ratio;
        return lo + (c->cooldown_from - lo) * 0.5 * (1.0 + cos(M_PI * q));
    }
    if (c->warmup_steps > 0 && t < c->warmup_steps) return (double)t / c->warmup_steps;
    if (c->total_steps <= c->warmup_steps) return 1.0;
    double p = (double)(t - c->warmup_steps) / (double)(c->total_steps - c->warmup_steps);
    if (p > 1.0) p = 1.0;
    double lo = c->min_lr_ratio;
    return lo + (1.0 - lo) * 0.5 * (1.0 + cos(M_PI * p));
}

void bn_optim_config_cooldown(bn_optim_config *c, int64_t start, int64_t n)
{
    c->cooldown_steps = 0; /* the factor the schedule itself has at start */
    c->cooldown_from = bn_optim_lr_factor(c, start);
    c->cooldown_start = start;
    c->cooldown_steps = n > 0 ? n : 0;
}

/* Newton-Schulz scratch floats for a [rows, cols] matrix: Y, Y2 (m*n each), A, B (m*m). */
static size_t ns_scratch_floats(int rows, int cols)
{
    size_t m = (size_t)(rows < cols ? rows : cols), n = (size_t)(rows < cols ? cols : rows);
    return 2 * m * n + 2 * m * m;
}

static void add_ref(bn_optim *o, const char *pname, const char *suffix, float *ptr, size_t n)
{
    optim_state_ref *r = &o->refs[o->n_refs++];
    size_t len = strlen(pname) + strlen(suffix) + 1;
    r->name = malloc(len);
    if (r->name) {
        strcpy(r->name, pname);
        strcat(r->name, suffix);
    }
    r->ptr = ptr;
    r->n = n;
}

int bn_optim_new(const bn_optim_config *c, const bn_optim_param *params, int n_params,
                 bn_optim **out, bn_err *err)
{
    *out = NULL;
    if (n_params <= 0) return bn_err_set(err, BN_EINVAL, "optimizer: no parameters");
    size_t total = 0, scratch = 0;
    for (int i = 0; i < n_params; i++) {
        const bn_optim_param *p = &params[i];
        if (!p->w || !p->g || p->rows <= 0 || p->cols <= 0)
            return bn_err_set(err, BN_EINVAL, "optimizer: parameter %s has no buffer or shape",
                              p->name ? p->name : "?");
        size_t n = (size_t)p->rows * (size_t)p->cols;
        total += 3 * n;
        if (p->group == BN_OPTIM_MUON) {
            size_t s = ns_scratch_floats(p->rows, p->cols);
            if (s > scratch) scratch = s;
        }
    }
    bn_optim *o = calloc(1, sizeof *o);
    if (!o) return bn_err_set(err, BN_ENOMEM, "optimizer: out of memory");
    o->cfg = *c;
    o->n = n_params;
    o->slots = calloc((size_t)n_params, sizeof *o->slots);
    o->refs = calloc((size_t)n_params * 3, sizeof *o->refs);
    o->state = calloc(total, sizeof(float));
    o->scratch = scratch ? malloc(scratch * sizeof(float)) : NULL;
    if (!o->slots || !o->refs || !o->state || (scratch && !o->scratch)) {
        bn_optim_free(o);
        return bn_err_set(err, BN_ENOMEM, "optimizer: out of memory for state (%zu floats)", total);
    }
    float *s = o->state;
    for (int i = 0; i < n_params; i++) {
        optim_slot *sl = &o->slots[i];
        sl->p = params[i];
        sl->name = strdup(params[i].name ? params[i].name : "param");
        sl->p.name = sl->name;
        sl->n = (size_t)params[i].rows * (size_t)params[i].cols;
        sl->ema = s; s += sl->n;
        sl->s1 = s; s += sl->n;
        add_ref(o, sl->name, ".ema", sl->ema, sl->n);
        if (sl->p.group == BN_OPTIM_MUON) {
            add_ref(o, sl->name, ".mom", sl->s1, sl->n);
        } else {
            sl->s2 = s; s += sl->n;
            add_ref(o, sl->name, ".m", sl->s1, sl->n);
            add_ref(o, sl->name, ".v", sl->s2, sl->n);
        }
    }
    int ok = 1;
    for (int i = 0; i < o->n_refs; i++) ok &= o->refs[i].name != NULL;
    for (int i = 0; i < n_params; i++) ok &= o->slots[i].name != NULL;
    if (!ok) {
        bn_optim_free(o);
        return bn_err_set(err, BN_ENOMEM, "optimizer: out of memory");
    }
    *out = o;
    return BN_OK;
}

void bn_optim_free(bn_optim *o)
{
    if (!o) return;
    if (o->slots)
        for (int i = 0; i < o->n; i++) free(o->slots[i].name);
    if (o->refs)
        for (int i = 0; i < o->n_refs; i++) free(o->refs[i].name);
    free(o->slots);
    free(o->refs);
    free(o->state);
    free(o->scratch);
    free(o);
}

int64_t bn_optim_steps(const bn_optim *o) { return o->t; }
void bn_optim_set_steps(bn_optim *o, int64_t t) { o->t = t; o->applied = t; }
int64_t bn_optim_applied_steps(const bn_optim *o) { return o->applied; }
void bn_optim_set_applied_steps(bn_optim *o, int64_t n) { o->applied = n; }
void bn_optim_set_total_steps(bn_optim *o, int64_t total) { o->cfg.total_steps = total; }
void bn_optim_set_cooldown(bn_optim *o, int64_t start, int64_t n, double from)
{
    o->cfg.cooldown_start = start;
    o->cfg.cooldown_steps = n;
    o->cfg.cooldown_from = from;
}

int bn_optim_state_count(const bn_optim *o) { return o->n_refs; }

float *bn_optim_state_at(bn_optim *o, int i, const char **name, size_t *n)
{
    if (i < 0 || i >= o->n_refs) return NULL;
    if (name) *name = o->refs[i].name;
    if (n) *n = o->refs[i].n;
    return o->refs[i].ptr;
}

/* Runs NS on y [m, n] (m <= n) in place; s = scratch (y2 m*n, a m*m, b m*m).
 *
 * Scaling: the quintic maps singular values in (0, ~1.2] into [0.6, 1.2] but diverges
 * beyond ~1.4, so y must first be scaled by an UPPER bound of its spectral norm. With
 * A = y y^T (eigenvalues s_i^2), sum_i s_i^16 = ||A^4||_F^2 gives
 * s_max <= ||A^4||_F^(1/8), at most m^(1/16) above s_max (1.3x for m = 64), far tighter
 * than the Frobenius norm (m^(1/2)). An estimate (power iteration) is not enough: an
 * underestimate lets one direction blow up within the 5 steps. */
static void ns_core(float *y, int m, int n, int steps, float *s)
{
    float *y2 = s, *a = y2 + (size_t)m * n, *b = a + (size_t)m * m;
    size_t mn = (size_t)m * n, mm = (size_t)m * m;
    double fro = 0;
    for (size_t i = 0; i < mn; i++) fro += (double)y[i] * y[i];
    fro = sqrt(fro);
    if (!(fro > 1e-30) || !isfinite(fro)) return;
    float inv = (float)(1.0 / fro);
    for (size_t i = 0; i < mn; i++) y[i] *= inv; /* now s_max <= 1: no overflow below */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, m, n, 1.0f, y, n, y, n, 0.0f, a, m);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, m, m, 1.0f, a, m, a, m, 0.0f, b, m);
    /* A^4 = (A^2)^2 into y2 (m*m <= m*n floats) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, m, m, 1.0f, b, m, b, m, 0.0f, y2, m);
    double f4 = 0;
    for (size_t i = 0; i < mm; i++) f4 += (double)y2[i] * y2[i];
    double sig = pow(f4, 1.0 / 16.0); /* ||A^4||_F^(1/8) >= s_max */
    if (!(sig > 1e-30)) return;
    float sc = (float)(1.0 / sig), sc2 = sc * sc;
    for (size_t i = 0; i < mn; i++) y[i] *= sc;
    for (size_t i = 0; i < mm; i++) {
        a[i] *= sc2;
        b[i] *= sc2 * sc2;
    }
    for (int k = 0; k < steps; k++) {
        if (k > 0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, m, n, 1.0f, y, n, y, n,
                        0.0f, a, m);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, m, m, 1.0f, a, m, a, m,
                        0.0f, b, m);
        }
        /* b = B*a + C*a*a */
        for (size_t i = 0; i < mm; i++) b[i] = NS_C * b[i] + NS_B * a[i];
        /* y2 = A*y + b*y */
        memcpy(y2, y, mn * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, m, 1.0f, b, m, y, n,
                    NS_A, y2, n);
        memcpy(y, y2, mn * sizeof(float));
    }
}

static void transpose(const float *src, float *dst, int rows, int cols)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) dst[(size_t)j * rows + i] = src[(size_t)i * cols + j];
}

/* x [rows, cols] in place; s = scratch of ns_scratch_floats(rows, cols). */
static void newton_schulz(float *x, int rows, int cols, int steps, float *s)
{
    if (rows <= cols) {
        ns_core(x, rows, cols, steps, s);
        return;
    }
    size_t mn = (size_t)rows * cols;
    float *y = s, *rest = s + mn;
    transpose(x, y, rows, cols);     /* y [cols, rows] */
    ns_core(y, cols, rows, steps, rest);
    transpose(y, x, cols, rows);
}

int bn_optim_newton_schulz(float *x, int rows, int cols, int steps)
{
    float *s = malloc(ns_scratch_floats(rows, cols) * sizeof(float));
    if (!s) return BN_ENOMEM;
    newton_schulz(x, rows, cols, steps, s);
    free(s);
    return BN_OK;
}

static double global_norm(const bn_optim *o)
{
    double ss = 0;
    for (int i = 0; i < o->n; i++) {
        const optim_slot *sl = &o->slots[i];
        for (size_t j = 0; j < sl->n; j++) ss += (double)sl->p.g[j] * sl->p.g[j];
    }
    return sqrt(ss);
}

/* The EMA starts at the first applied gradient (as in the reference gradfilter_ema), so
 * the first filtered gradient is (1 + lambda) g. */
static void grokfast(optim_slot *sl, float alpha, float lambda, int first)
{
    float *g = sl->p.g, *e = sl->ema;
    if (first) memcpy(e, g, sl->n * sizeof(float));
    for (size_t j = 0; j < sl->n; j++) {
        e[j] = alpha * e[j] + (1.0f - alpha) * g[j];
        g[j] += lambda * e[j];
    }
}

static void muon_update(bn_optim *o, optim_slot *sl, float lr)
{
    const bn_optim_config *c = &o->cfg;
    float mu = (float)c->momentum;
    float *g = sl->p.g, *buf = sl->s1, *w = sl->p.w;
    for (size_t j = 0; j < sl->n; j++) {
        buf[j] = mu * buf[j] + g[j];
        g[j] = g[j] + mu * buf[j]; /* Nesterov; g is now the update direction */
    }
    newton_schulz(g, sl->p.rows, sl->p.cols, c->ns_steps, o->scratch);
    double ratio = (double)sl->p.rows / (double)sl->p.cols;
    float scale = (float)sqrt(ratio > 1.0 ? ratio : 1.0);
    float decay = 1.0f - lr * (float)c->muon_weight_decay;
    for (size_t j = 0; j < sl->n; j++) w[j] = w[j] * decay - lr * scale * g[j];
}

static void adamw_update(const bn_optim *o, optim_slot *sl, float lr)
{
    const bn_optim_config *c = &o->cfg;
    double t = (double)(o->applied + 1); /* skipped steps do not count */
    float b1 = (float)c->beta1, b2 = (float)c->beta2, eps = (float)c->eps;
    float bc1 = (float)(1.0 - pow(c->beta1, t)), bc2 = (float)(1.0 - pow(c->beta2, t));
    float decay = 1.0f - lr * (float)c->weight_decay;
    float *g = sl->p.g, *m = sl->s1, *v = sl->s2, *w = sl->p.w;
    for (size_t j = 0; j < sl->n; j++) {
        m[j] = b1 * m[j] + (1.0f - b1) * g[j];
        v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
        float mh = m[j] / bc1, vh = v[j] / bc2;
        w[j] = w[j] * decay - lr * mh / (sqrtf(vh) + eps);
    }
}

void bn_optim_step(bn_optim *o, bn_optim_stats *st)
{
    const bn_optim_config *c = &o->cfg;
    double norm = global_norm(o);
    double f = bn_optim_lr_factor(c, o->t);
    if (!isfinite(norm)) {
        o->t++;
        if (st) {
            st->grad_norm = 0;
            st->skipped = 1;
            st->lr = c->lr * f;
            st->muon_lr = c->muon_lr * f;
        }
        return;
    }
    if (c->max_grad_norm > 0 && norm > c->max_grad_norm) {
        float k = (float)(c->max_grad_norm / (norm + 1e-12));
        for (int i = 0; i < o->n; i++)
            for (size_t j = 0; j < o->slots[i].n; j++) o->slots[i].p.g[j] *= k;
    }
    float lr = (float)(c->lr * f), mlr = (float)(c->muon_lr * f);
    for (int i = 0; i < o->n; i++) {
        optim_slot *sl = &o->slots[i];
        if (c->grokfast_lambda != 0.0)
            grokfast(sl, (float)c->grokfast_alpha, (float)c->grokfast_lambda, o->applied == 0);
        if (sl->p.group == BN_OPTIM_MUON) muon_update(o, sl, mlr);
        else adamw_update(o, sl, lr);
    }
    o->t++;
    o->applied++;
    if (st) {
        st->grad_norm = norm;
        st->skipped = 0;
        st->lr = lr;
        st->muon_lr = mlr;
    }
}
