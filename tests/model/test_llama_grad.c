/* test_llama_grad.c - the Llama backward pass against central finite differences.
 *
 * A tiny random model (GQA, biases, tied and untied head) is run forward + masked
 * cross-entropy; for every parameter tensor we perturb its largest-gradient element and
 * a few random ones, and compare d(loss)/d(p) with (L(p+e) - L(p-e)) / 2e. The loss is
 * re-summed in double from the per-position losses to keep rounding below the check.
 * Since every layer's gradient flows into some parameter tensor (embedding, rmsnorm
 * weights, q/k through RoPE and attention, gate/up through SwiGLU, head through the
 * masked cross-entropy), this checks each *_backward. Relative error is measured against
 * the tensor's largest gradient magnitude (elements near zero have no meaningful ratio).
 *
 * Built twice: with BN_LLAMA_F64 (the same numerics in double: the real check, relative
 * error < 1e-5 with a small step, typically 1e-9) and in float as a smoke test (float
 * rounding limits a finite difference to about 1e-3, so the bound there is 1e-2).
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "model/llama.h"

#ifdef BN_LLAMA_F64
#define FD_STEP 1e-5
#define FD_TOL 1e-5
#else
#define FD_STEP 3e-3
#define FD_TOL 1e-2
#endif

static bn_model_config tiny_config(bool tied, bool bias, int kv)
{
    bn_model_config c = { 0 };
    c.arch = BN_ARCH_LLAMA;
    c.dim = 8;
    c.hidden_dim = 12;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = kv;
    c.head_dim = 4; /* H*hd = 16 != dim: exercises the general shapes */
    c.vocab_size = 11;
    c.max_seq_len = 16;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_embeddings = tied;
    c.attention_bias = bias;
    return c;
}

enum { TB = 2, TT_MAX = 140 };
static int TT = 7; /* sequence length of the current check */

static double eval_loss(bn_llama *m, const int32_t *tok, const int32_t *tgt, const uint8_t *mask)
{
    bn_err err;
    ck_assert_int_eq(bn_llama_forward(m, tok, TB, TT, &err), 0);
    int cnt = 0;
    bn_llama_loss(m, tgt, mask, &cnt);
    double s = 0;
    for (int i = 0; i < TB * TT; i++) s += m->acts.losses[i];
    return s / cnt;
}

static void make_batch(int32_t *tok, int32_t *tgt, uint8_t *mask, int V)
{
    uint32_t s = 12345;
    for (int i = 0; i < TB * TT; i++) {
        s = s * 1664525u + 1013904223u;
        tok[i] = (int32_t)((s >> 8) % (uint32_t)V);
        s = s * 1664525u + 1013904223u;
        tgt[i] = (int32_t)((s >> 8) % (uint32_t)V);
        mask[i] = 1;
    }
    mask[3] = 0;          /* masked position */
    tgt[TT + 2] = -1;     /* ignored target */
}

/* Scales every parameter up so gradients are well away from rounding noise. */
static void scale_params(bn_llama *m, float f)
{
    for (size_t i = 0; i < m->n_params; i++) m->params_mem[i] *= (bn_llama_float)f;
    int L = m->cfg.n_layers, D = m->cfg.dim;
    uint32_t s = 7;
    for (int i = 0; i < L * D; i++) { /* norms near 1 but not all equal */
        s = s * 1664525u + 1013904223u;
        m->params.attn_norm[i] = 0.8f + 0.4f * (float)(s >> 8) / 16777216.0f;
        m->params.ffn_norm[i] = 1.2f - 0.4f * (float)(s >> 8) / 16777216.0f;
    }
    for (int i = 0; m->params.q_norm && i < L * m->cfg.head_dim; i++) {
        s = s * 1664525u + 1013904223u;
        m->params.q_norm[i] = 0.7f + 0.6f * (float)(s >> 8) / 16777216.0f;
        m->params.k_norm[i] = 1.3f - 0.6f * (float)(s >> 8) / 16777216.0f;
    }
}

static void check_model_T(bn_model_config cfg, int threads, int T, int per_tensor)
{
    TT = T;
    bn_err err;
    bn_llama *m;
    ck_assert_int_eq(bn_llama_new(&cfg, 99, &m, &err), 0);
    bn_llama_set_threads(m, threads);
    ck_assert_int_eq(bn_llama_reserve(m, TB, TT, true, &err), 0);
    scale_params(m, 10.0f); /* std 0.2 */
    int32_t tok[TB * TT_MAX], tgt[TB * TT_MAX];
    uint8_t mask[TB * TT_MAX];
    make_batch(tok, tgt, mask, cfg.vocab_size);

    eval_loss(m, tok, tgt, mask);
    bn_llama_zero_grad(m);
    ck_assert_int_eq(bn_llama_backward(m, &err), 0);
    bn_llama_float *grad = malloc(m->n_params * sizeof *grad);
    memcpy(grad, m->grads_mem, m->n_params * sizeof *grad);

    static const bn_role roles[] = { BN_ROLE_EMBED, BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK,
                                     BN_ROLE_WV, BN_ROLE_BQ, BN_ROLE_BK, BN_ROLE_BV,
                                     BN_ROLE_Q_NORM, BN_ROLE_K_NORM, BN_ROLE_WO, BN_ROLE_FFN_NORM, BN_ROLE_W_GATE,
                                     BN_ROLE_W_UP, BN_ROLE_W_DOWN, BN_ROLE_FINAL_NORM,
                                     BN_ROLE_HEAD };
    uint32_t s = 4242;
    for (size_t ri = 0; ri < sizeof roles / sizeof roles[0]; ri++) {
        for (int l = 0; l < cfg.n_layers; l++) {
            int r, c;
            bn_llama_float *p = bn_llama_tensor(m, &m->params, roles[ri], l, &r, &c);
            if (!p) continue;
            const bn_llama_float *g = grad + (p - m->params_mem);
            size_t n = (size_t)r * c, imax = 0;
            double gmax = 0;
            for (size_t i = 0; i < n; i++)
                if (fabs(g[i]) > gmax) gmax = fabs(g[i]), imax = i;
            ck_assert_msg(gmax > 1e-4, "role %d layer %d: gradient is zero", roles[ri], l);
            double worst = 0;
            for (int k = 0; k < per_tensor; k++) {
                size_t i = imax;
                if (k > 0) {
                    s = s * 1664525u + 1013904223u;
                    i = (s >> 8) % n;
                }
                bn_llama_float save = p[i];
                double e = FD_STEP * fmax(1.0, fabs(save));
                p[i] = (bn_llama_float)(save + e);
                double lp = eval_loss(m, tok, tgt, mask);
                p[i] = (bn_llama_float)(save - e);
                double lm = eval_loss(m, tok, tgt, mask);
                p[i] = save;
                double fd = (lp - lm) / (2 * e);
                double rel = fabs(fd - g[i]) / gmax;
                if (rel > worst) worst = rel;
            }
            ck_assert_msg(worst < FD_TOL, "role %d layer %d: relative error %.3g (gmax %.3g)",
                          roles[ri], l, worst, gmax);
            if (getenv("BN_GRAD_VERBOSE"))
                fprintf(stderr, "role %2d layer %d: rel err %.3g\n", roles[ri], l, worst);
            if (roles[ri] == BN_ROLE_EMBED || roles[ri] == BN_ROLE_HEAD ||
                roles[ri] == BN_ROLE_FINAL_NORM)
                break; /* global tensors: once */
        }
    }
    free(grad);
    bn_llama_free(m);
}

static void check_model(bn_model_config cfg, int threads)
{
    check_model_T(cfg, threads, 7, 6);
}

START_TEST(grad_untied_bias_gqa) { check_model(tiny_config(false, true, 2), 1); }
END_TEST
START_TEST(grad_tied_mha_threads) { check_model(tiny_config(true, false, 4), 2); }
END_TEST
START_TEST(grad_mqa) { check_model(tiny_config(false, false, 1), 2); }
END_TEST
/* qwen3: RMSNorm on every q and k head (their weights get gradients too), with yarn's
 * scaled cos/sin in the rotary embedding. */
START_TEST(grad_qk_norm_yarn)
{
    bn_model_config c = tiny_config(false, false, 2);
    c.arch = BN_ARCH_QWEN3;
    c.qk_norm = true;
    c.rope_type = BN_ROPE_YARN;
    c.rope_factor = 4;
    c.rope_orig_ctx = 8;
    c.rope_beta_fast = 32;
    c.rope_beta_slow = 1;
    c.rope_attn_factor = 1.3f;
    c.rope_truncate = true;
    check_model(c, 2);
}
END_TEST
/* T = 137 crosses the 64-row causal blocks of the attention kernels. */
START_TEST(grad_long_blocks)
{
    bn_model_config c = tiny_config(false, false, 2);
    c.max_seq_len = 140;
    check_model_T(c, 2, 137, 2);
}
END_TEST

/* Gradients accumulate across backward calls (gradient accumulation). */
START_TEST(grad_accumulates)
{
    TT = 7;
    bn_model_config cfg = tiny_config(false, false, 2);
    bn_err err;
    bn_llama *m;
    ck_assert_int_eq(bn_llama_new(&cfg, 3, &m, &err), 0);
    ck_assert_int_eq(bn_llama_reserve(m, TB, TT, true, &err), 0);
    int32_t tok[TB * TT_MAX], tgt[TB * TT_MAX];
    uint8_t mask[TB * TT_MAX];
    make_batch(tok, tgt, mask, cfg.vocab_size);
    eval_loss(m, tok, tgt, mask);
    bn_llama_zero_grad(m);
    ck_assert_int_eq(bn_llama_backward(m, &err), 0);
    double g0 = m->grads.wq[5];
    ck_assert_int_eq(bn_llama_backward(m, &err), 0);
    ck_assert_double_eq_tol(m->grads.wq[5], 2 * g0, 1e-6 + 1e-5 * fabs(g0));
    bn_llama_free(m);
}
END_TEST

/* Masked positions contribute neither loss nor gradient. */
START_TEST(mask_excludes)
{
    TT = 7;
    bn_model_config cfg = tiny_config(false, false, 2);
    bn_err err;
    bn_llama *m;
    ck_assert_int_eq(bn_llama_new(&cfg, 5, &m, &err), 0);
    ck_assert_int_eq(bn_llama_reserve(m, TB, TT, true, &err), 0);
    int32_t tok[TB * TT_MAX], tgt[TB * TT_MAX];
    uint8_t mask[TB * TT_MAX];
    make_batch(tok, tgt, mask, cfg.vocab_size);
    eval_loss(m, tok, tgt, mask);
    int cnt;
    bn_llama_loss(m, tgt, mask, &cnt);
    ck_assert_int_eq(cnt, TB * TT - 2);
    ck_assert_double_eq(m->acts.losses[3], 0.0);
    for (int v = 0; v < cfg.vocab_size; v++) {
        ck_assert_double_eq(m->acts.dlogits[3 * cfg.vocab_size + v], 0.0);
        ck_assert_double_eq(m->acts.dlogits[(TT + 2) * cfg.vocab_size + v], 0.0);
    }
    bn_llama_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("llama_grad");
    TCase *tc = tcase_create("grad");
    tcase_set_timeout(tc, 0); /* meson enforces the timeout (x4 under sanitizers) */
    tcase_add_test(tc, grad_untied_bias_gqa);
    tcase_add_test(tc, grad_tied_mha_threads);
    tcase_add_test(tc, grad_mqa);
    tcase_add_test(tc, grad_qk_norm_yarn);
    tcase_add_test(tc, grad_long_blocks);
    tcase_add_test(tc, grad_accumulates);
    tcase_add_test(tc, mask_excludes);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
