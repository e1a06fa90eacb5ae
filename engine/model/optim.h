/* optim.h - MuGrokfast: Grokfast gradient filter + Muon (2-D hidden matrices) + AdamW
 * (everything else), with warm-up + cosine learning-rate schedule and global-norm
 * clipping.
 *
 * One step, for every parameter tensor p with gradient g (after the caller's backward):
 *   1. clip:      g <- g * min(1, max_grad_norm / ||g_all||)   (global norm over all p)
 *   2. Grokfast:  ema <- alpha*ema + (1-alpha)*g ;  g <- g + lambda*ema   (slow component
 *                 amplified; alpha 0.98, lambda 2.0 by default). The EMA starts at the
 *                 first applied gradient (Lee et al. 2024's gradfilter_ema), so the first
 *                 step is (1 + lambda) g.
 *   3a. Muon (group BN_OPTIM_MUON, 2-D [rows, cols]):
 *                 buf <- mu*buf + g ;  u <- g + mu*buf (Nesterov, mu 0.95)
 *                 O = NS5(u): quintic Newton-Schulz (3.4445, -4.7750, 2.0315), 5 steps, on
 *                 the orientation with fewer rows, after scaling u to spectral norm <= 1;
 *                 p <- p*(1 - lr*wd) - lr * max(1, rows/cols)^0.5 * O
 *   3b. AdamW (group BN_OPTIM_ADAMW): bias-corrected moments, decoupled weight decay;
 *                 the correction 1 - beta^k counts applied steps k only (a skipped,
 *                 non-finite step changes neither moments nor k).
 * The learning rates used at step t are base * bn_optim_lr_factor(t): linear warm-up from
 * 0 (step 0 has lr 0) then cosine decay to min_lr_ratio at total_steps.
 *
 * Parameters are views into the caller's buffers (flat model param/grad arrays); the
 * optimizer owns only its state. State is exposed as named float arrays so a checkpoint
 * can save and restore it (bn_optim_state_*), together with the step counter.
 */
#ifndef BN_OPTIM_H
#define BN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef enum { BN_OPTIM_ADAMW = 0, BN_OPTIM_MUON = 1 } bn_optim_group;

typedef struct bn_optim_param {
    const char *name;  /* tensor name (state names derive from it); copied */
    float *w;          /* weights [rows*cols] (caller's buffer) */
    float *g;          /* gradient, same shape; modified in place (clip + filter) */
    int rows, cols;    /* 1-D tensors: rows = 1 */
    bn_optim_group group;
} bn_optim_param;

typedef struct bn_optim_config {
    double lr;              /* AdamW base lr (default 1e-3) */
    double muon_lr;         /* Muon base lr (default 0.02) */
    double beta1, beta2, eps; /* AdamW (0.9, 0.95, 1e-8) */
    double weight_decay;    /* AdamW decoupled decay (0.0) */
    double muon_weight_decay; /* (0.0) */
    double momentum;        /* Muon Nesterov momentum (0.95) */
    int ns_steps;           /* 5 */
    double grokfast_alpha;  /* 0.98 */
    double grokfast_lambda; /* 2.0; 0 disables the filter */
    double max_grad_norm;   /* 1.0; <= 0 disables clipping */
    int warmup_steps;       /* 20 */
    int64_t total_steps;    /* cosine length incl. warm-up; <= 0: constant after warm-up */
    double min_lr_ratio;    /* floor of the cosine (0.1) */
    /* Cool-down (fine-tune patience): from step cooldown_start the factor falls from
     * cooldown_from to min_lr_ratio along a half cosine over cooldown_steps steps, then
     * stays there. cooldown_steps 0: none (the default). */
    int64_t cooldown_start, cooldown_steps;
    double cooldown_from;
} bn_optim_config;

typedef struct bn_optim bn_optim;

void bn_optim_config_default(bn_optim_config *c);
int bn_optim_new(const bn_optim_config *c, const bn_optim_param *params, int n_params,
                 bn_optim **out, bn_err *err);
void bn_optim_free(bn_optim *o);

/* Schedule multiplier for step t (0-based): warm-up t/warmup, then cosine; from
 * cooldown_start on, the cool-down. */
double bn_optim_lr_factor(const bn_optim_config *c, int64_t t);
/* Starts a cool-down at step start over n steps from the factor the schedule has there. */
void bn_optim_config_cooldown(bn_optim_config *c, int64_t start, int64_t n);

typedef struct bn_optim_stats {
    double grad_norm; /* global norm of the raw gradients, before clipping (0 if skipped) */
    int skipped;      /* 1: a gradient was NaN/Inf; nothing was updated (the schedule step counts, the applied count does not) */
    double lr;        /* AdamW lr used */
    double muon_lr;   /* Muon lr used */
} bn_optim_stats;

/* One step with the current gradients; advances the step counter. A non-finite gradient
 * norm skips the update (weights, state and applied-step count untouched; the schedule's step
 * counter advances) and sets st->skipped. */
void bn_optim_step(bn_optim *o, bn_optim_stats *st);
int64_t bn_optim_steps(const bn_optim *o);
/* Sets the step counter; the applied-step counter is set to the same value (call
 * bn_optim_set_applied_steps after it to restore a different one). */
void bn_optim_set_steps(bn_optim *o, int64_t t);
/* Steps that updated the weights (skipped steps excluded): AdamW bias correction and the
 * Grokfast EMA start use it. Save it with the state in checkpoints. */
int64_t bn_optim_applied_steps(const bn_optim *o);
void bn_optim_set_applied_steps(bn_optim *o, int64_t n);
void bn_optim_set_total_steps(bn_optim *o, int64_t total);
/* Sets the cool-down fields of the schedule (bn_optim_config). */
void bn_optim_set_cooldown(bn_optim *o, int64_t start, int64_t n, double from);

/* Named state arrays (e.g. "<param>.ema", ".m", ".v", ".mom"); for checkpoints. */
int bn_optim_state_count(const bn_optim *o);
float *bn_optim_state_at(bn_optim *o, int i, const char **name, size_t *n);

/* X [rows, cols] <- NS5(X) in place; scratch is allocated inside. Exposed for tests. */
int bn_optim_newton_schulz(float *x, int rows, int cols, int steps);

#endif
