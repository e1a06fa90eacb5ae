/* test_optim_ref.c - the optimizer against reference trajectories computed here in double
 * precision from the published algorithms: AdamW (Loshchilov & Hutter, decoupled decay,
 * bias correction), Muon (Nesterov momentum, quintic Newton-Schulz with the scaling that
 * optim.h documents, max(1, rows/cols)^0.5 scale, decoupled weight decay) and Grokfast-EMA
 * (Lee et al., EMA started at the first gradient, g + lambda*ema), with global-norm
 * clipping. Each run takes 5 steps on the quadratic loss 0.5*||W - W*||^2 (gradient
 * W - W* at the optimizer's weights, given to both sides), compares every weight after every
 * step at a tight tolerance and asserts that each update points downhill: <dW, G> < 0.
 * These tests are meant to fail on a flipped sign, a missing momentum or Nesterov term,
 * a Grokfast EMA without its memory, or AdamW's eps inside the square root. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "model/optim.h"

#define STEPS 5

static uint64_t rng_state;
static double drand(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
}

/* ---- the reference, in double ------------------------------------------------------ */

typedef struct ref_param {
    int rows, cols, muon;
    double *w, *target, *g, *ema, *m, *v; /* m: Muon momentum | AdamW first moment */
} ref_param;

/* y [m, n] (m <= n) <- NS(y): normalise, scale by ||(y y^T)^4||_F^(1/16) (an upper bound
 * of the largest singular value), then y <- a y + (b A + c A^2) y with A = y y^T. */
static void ref_ns_core(double *y, int m, int n, int steps)
{
    double *a = calloc((size_t)m * m, sizeof(double)), *b = calloc((size_t)m * m, sizeof(double));
    double *y2 = calloc((size_t)m * n, sizeof(double));
    double fro = 0;
    for (int i = 0; i < m * n; i++) fro += y[i] * y[i];
    fro = sqrt(fro);
    for (int i = 0; i < m * n; i++) y[i] /= fro;
    for (int k = -1; k < steps; k++) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                double s = 0;
                for (int l = 0; l < n; l++) s += y[i * n + l] * y[j * n + l];
                a[i * m + j] = s;
            }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                double s = 0;
                for (int l = 0; l < m; l++) s += a[i * m + l] * a[l * m + j];
                b[i * m + j] = s; /* A^2 */
            }
        if (k < 0) { /* the scaling: ||A^4||_F = ||(A^2)^2||_F */
            double f4 = 0;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < m; j++) {
                    double s = 0;
                    for (int l = 0; l < m; l++) s += b[i * m + l] * b[l * m + j];
                    f4 += s * s;
                }
            double sig = pow(f4, 1.0 / 16.0);
            for (int i = 0; i < m * n; i++) y[i] /= sig;
            continue;
        }
        for (int i = 0; i < m * m; i++) b[i] = -4.7750 * a[i] + 2.0315 * b[i];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = 3.4445 * y[i * n + j];
                for (int l = 0; l < m; l++) s += b[i * m + l] * y[l * n + j];
                y2[i * n + j] = s;
            }
        memcpy(y, y2, sizeof(double) * m * n);
    }
    free(a); free(b); free(y2);
}

static void ref_ns(double *x, int rows, int cols, int steps)
{
    if (rows <= cols) { ref_ns_core(x, rows, cols, steps); return; }
    double *t = malloc(sizeof(double) * rows * cols);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) t[j * rows + i] = x[i * cols + j];
    ref_ns_core(t, cols, rows, steps);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) x[i * cols + j] = t[j * rows + i];
    free(t);
}

/* One step of the reference on gradients already in p[i].g; `k` = applied steps before. */
static void ref_step(const bn_optim_config *c, ref_param *p, int np, int k)
{
    double ss = 0;
    for (int i = 0; i < np; i++)
        for (int j = 0; j < p[i].rows * p[i].cols; j++) ss += p[i].g[j] * p[i].g[j];
    double norm = sqrt(ss);
    for (int i = 0; i < np; i++) {
        ref_param *q = &p[i];
        int n = q->rows * q->cols;
        if (c->max_grad_norm > 0 && norm > c->max_grad_norm)
            for (int j = 0; j < n; j++) q->g[j] *= c->max_grad_norm / norm;
        if (c->grokfast_lambda != 0)
            for (int j = 0; j < n; j++) {
                if (k == 0) q->ema[j] = q->g[j];
                q->ema[j] = c->grokfast_alpha * q->ema[j] + (1 - c->grokfast_alpha) * q->g[j];
                q->g[j] += c->grokfast_lambda * q->ema[j];
            }
        if (q->muon) {
            double *u = malloc(sizeof(double) * n);
            for (int j = 0; j < n; j++) {
                q->m[j] = c->momentum * q->m[j] + q->g[j];
                u[j] = q->g[j] + c->momentum * q->m[j];
            }
            ref_ns(u, q->rows, q->cols, c->ns_steps);
            double scale = sqrt(fmax(1.0, (double)q->rows / q->cols));
            for (int j = 0; j < n; j++)
                q->w[j] = q->w[j] * (1 - c->muon_lr * c->muon_weight_decay) - c->muon_lr * scale * u[j];
            free(u);
        } else {
            double bc1 = 1 - pow(c->beta1, k + 1), bc2 = 1 - pow(c->beta2, k + 1);
            for (int j = 0; j < n; j++) {
                q->m[j] = c->beta1 * q->m[j] + (1 - c->beta1) * q->g[j];
                q->v[j] = c->beta2 * q->v[j] + (1 - c->beta2) * q->g[j] * q->g[j];
                q->w[j] = q->w[j] * (1 - c->lr * c->weight_decay) -
                          c->lr * (q->m[j] / bc1) / (sqrt(q->v[j] / bc2) + c->eps);
            }
        }
    }
}

/* ---- the comparison ---------------------------------------------------------------- */

typedef struct spec {
    int rows, cols;
    bn_optim_group group;
    double gmag; /* scale of W - W* */
} spec;

/* Runs the optimizer and the reference side by side for STEPS steps; checks every weight
 * and that each step goes downhill. `tol` is relative to the step's largest update. */
static void run_case(const bn_optim_config *c, const spec *sp, int np, uint64_t seed, double tol)
{
    rng_state = seed;
    bn_optim_param *pp = calloc((size_t)np, sizeof *pp);
    ref_param *rp = calloc((size_t)np, sizeof *rp);
    float **prev = calloc((size_t)np, sizeof *prev);
    float **graw = calloc((size_t)np, sizeof *graw);
    char names[8][8];
    for (int i = 0; i < np; i++) {
        int n = sp[i].rows * sp[i].cols;
        snprintf(names[i], sizeof names[i], "p%d", i);
        pp[i] = (bn_optim_param){names[i], malloc(sizeof(float) * n), malloc(sizeof(float) * n),
                                 sp[i].rows, sp[i].cols, sp[i].group};
        prev[i] = malloc(sizeof(float) * n);
        graw[i] = malloc(sizeof(float) * n);
        rp[i] = (ref_param){sp[i].rows, sp[i].cols, sp[i].group == BN_OPTIM_MUON,
                            calloc(n, sizeof(double)), calloc(n, sizeof(double)),
                            calloc(n, sizeof(double)), calloc(n, sizeof(double)),
                            calloc(n, sizeof(double)), calloc(n, sizeof(double))};
        for (int j = 0; j < n; j++) {
            float w = (float)drand();
            /* mixed magnitudes: every 4th entry's distance to the target is 1e5 x smaller */
            double d = sp[i].gmag * drand() * (j % 4 == 0 ? 1e-5 : 1.0);
            pp[i].w[j] = w;
            rp[i].w[j] = w;
            rp[i].target[j] = (double)w - d;
        }
    }
    bn_optim *o;
    ck_assert_int_eq(bn_optim_new(c, pp, np, &o, NULL), 0);
    for (int t = 0; t < STEPS; t++) {
        for (int i = 0; i < np; i++)
            for (int j = 0; j < sp[i].rows * sp[i].cols; j++) {
                /* both sides get the same gradient: the one at the optimizer's weights */
                pp[i].g[j] = (float)((double)pp[i].w[j] - rp[i].target[j]);
                graw[i][j] = pp[i].g[j];
                prev[i][j] = pp[i].w[j];
                rp[i].g[j] = pp[i].g[j];
            }
        bn_optim_stats st;
        bn_optim_step(o, &st);
        ck_assert_int_eq(st.skipped, 0);
        ref_step(c, rp, np, t);
        for (int i = 0; i < np; i++) {
            int n = sp[i].rows * sp[i].cols;
            double dot = 0, umax = 0, emax = 0;
            int at = 0;
            for (int j = 0; j < n; j++) {
                double dw = (double)pp[i].w[j] - prev[i][j];
                dot += dw * graw[i][j];
                double du = fabs(rp[i].w[j] - prev[i][j]);
                if (du > umax) umax = du;
                double e = fabs((double)pp[i].w[j] - rp[i].w[j]);
                if (e > emax) { emax = e; at = j; }
            }
            ck_assert_msg(dot < 0, "step %d, %s: update goes uphill (<dW, G> = %g)", t + 1,
                          names[i], dot);
            ck_assert_msg(emax <= tol * umax + 1e-7, "step %d, %s[%d]: %.9g vs reference %.9g "
                          "(error %.3g, largest update %.3g)", t + 1, names[i], at,
                          (double)pp[i].w[at], rp[i].w[at], emax, umax);
        }
    }
    bn_optim_free(o);
    for (int i = 0; i < np; i++) {
        free(pp[i].w); free(pp[i].g); free(prev[i]); free(graw[i]);
        free(rp[i].w); free(rp[i].target); free(rp[i].g); free(rp[i].ema); free(rp[i].m);
        free(rp[i].v);
    }
    free(pp); free(rp); free(prev); free(graw);
}

static void plain_config(bn_optim_config *c)
{
    bn_optim_config_default(c);
    c->warmup_steps = 0; /* constant lr: the schedule has its own test */
    c->max_grad_norm = 0;
    c->grokfast_lambda = 0;
}

START_TEST(adamw_trajectory)
{
    bn_optim_config c;
    plain_config(&c);
    c.lr = 0.01;
    c.weight_decay = 0.1;
    /* every 4th gradient is below 5e-6: eps = 1e-8 is then >= 0.2% of sqrt(v) */
    const spec sp[2] = {{1, 37, BN_OPTIM_ADAMW, 0.5}, {6, 5, BN_OPTIM_ADAMW, 0.5}};
    run_case(&c, sp, 2, 11, 2e-4);
    c.eps = 1e-4; /* and eps of the size of sqrt(v) */
    run_case(&c, sp, 2, 12, 2e-4);
}
END_TEST

START_TEST(muon_trajectory)
{
    bn_optim_config c;
    plain_config(&c);
    c.muon_lr = 0.02;
    c.muon_weight_decay = 0.1;
    /* wide, tall (scale sqrt(12/5)) and square */
    const spec sp[3] = {{5, 12, BN_OPTIM_MUON, 0.5}, {12, 5, BN_OPTIM_MUON, 0.5},
                        {7, 7, BN_OPTIM_MUON, 0.5}};
    run_case(&c, sp, 3, 21, 2e-4);
}
END_TEST

START_TEST(grokfast_trajectory)
{
    bn_optim_config c;
    plain_config(&c);
    c.grokfast_alpha = 0.9; /* a short memory: the EMA's history shows within 5 steps */
    c.grokfast_lambda = 2.0;
    c.max_grad_norm = 1.0; /* global-norm clipping is active: W - W* has norm ~3 */
    c.lr = 0.01;
    c.muon_lr = 0.02;
    const spec sp[2] = {{6, 10, BN_OPTIM_MUON, 0.5}, {1, 23, BN_OPTIM_ADAMW, 0.5}};
    run_case(&c, sp, 2, 31, 2e-4);
    c.grokfast_alpha = 0.98; /* the default */
    run_case(&c, sp, 2, 32, 2e-4);
}
END_TEST

/* A skipped (non-finite) step leaves AdamW's bias correction where it was: the next
 * update equals the first update of an optimizer that never saw the bad step. */
START_TEST(skipped_step_does_not_count_for_bias_correction)
{
    bn_optim_config c;
    plain_config(&c);
    c.grokfast_lambda = 2.0;
    float wa[4] = {1, 2, 3, 4}, ga[4], wb[4] = {1, 2, 3, 4}, gb[4];
    bn_optim_param pa = {"w", wa, ga, 1, 4, BN_OPTIM_ADAMW}, pb = {"w", wb, gb, 1, 4, BN_OPTIM_ADAMW};
    bn_optim *a, *b;
    ck_assert_int_eq(bn_optim_new(&c, &pa, 1, &a, NULL), 0);
    ck_assert_int_eq(bn_optim_new(&c, &pb, 1, &b, NULL), 0);
    const float g[4] = {0.1f, -0.2f, 0.3f, 0.05f};
    memcpy(ga, g, sizeof g);
    ga[2] = INFINITY;
    bn_optim_stats st;
    bn_optim_step(a, &st);
    ck_assert_int_eq(st.skipped, 1);
    ck_assert_int_eq(bn_optim_steps(a), 1);
    ck_assert_int_eq(bn_optim_applied_steps(a), 0);
    memcpy(ga, g, sizeof g);
    memcpy(gb, g, sizeof g);
    bn_optim_step(a, &st);
    ck_assert_int_eq(st.skipped, 0);
    bn_optim_step(b, NULL);
    ck_assert_int_eq(bn_optim_applied_steps(a), 1);
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(wa[i] == wb[i], "w[%d]: %.9g after a skipped step, %.9g without", i,
                      (double)wa[i], (double)wb[i]);
        ck_assert(fabsf(wa[i] - (i + 1.0f)) > 0.9f * (float)c.lr); /* a full-size step */
    }
    bn_optim_free(a);
    bn_optim_free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optim_ref");
    TCase *tc = tcase_create("reference");
    tcase_add_test(tc, adamw_trajectory);
    tcase_add_test(tc, muon_trajectory);
    tcase_add_test(tc, grokfast_trajectory);
    tcase_add_test(tc, skipped_step_does_not_count_for_bias_correction);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
