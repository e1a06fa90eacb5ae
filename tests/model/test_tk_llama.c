/* test_tk_llama.c - the ternary decoder (int8 kernels, KV cache, one token at a time)
 * against the FP32 engine's W1.58A8 forward (engine/model/llama.h with act_quant, whole
 * sequence at once) on the same ternary weights: an independent implementation of
 * attention, RoPE, GQA and the cache. Also: exact recovery of ternary rows. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "formats/initmodel.h"
#include "model/llama.h"
#include "quant/quant.h"
#include "model/tk_llama.h"
#include "quant/tkernels.h"
#include "base/tensor.h"

START_TEST(recover)
{
    float w[8] = {0.5f, -0.5f, 0, 0.5f, 0, 0, 0, 0};
    int8_t c[8];
    float s[2];
    ck_assert(bn_tk_recover_ternary(w, 2, 4, c, s));
    ck_assert_float_eq(s[0], 0.5f);
    ck_assert_float_eq(s[1], 0.0f);
    ck_assert_int_eq(c[1], -1);
    ck_assert_int_eq(c[2], 0);
    w[3] = 0.25f;
    ck_assert(!bn_tk_recover_ternary(w, 2, 4, c, s));
}
END_TEST

/* The decoder against the FP32 engine for one architecture (qwen2: biases, qwen3: q/k
 * norms) and, with yarn, yarn's rotary frequencies and scaled cos/sin. */
static void matches_fp32(bn_arch arch, bool yarn, bool f16_head)
{
    bn_err err;
    char *tmp = bn_test_tmpdir("tk_llama"), dir[512];
    snprintf(dir, sizeof dir, "%s/m", tmp);
    bn_init_spec s;
    bn_initmodel_shape("tiny", &s);
    s.dim = 96, s.hidden = 160, s.heads = 6, s.kv_heads = 2, s.layers = 2; /* GQA, odd block tails */
    s.vocab = bn_initmodel_tokenizer_size();
    s.dtype = BN_DTYPE_F32;
    s.arch = arch;
    ck_assert_msg(bn_initmodel_write(dir, &s, &err) == 0, "%s", err.msg);
    bn_hf_model *hf;
    ck_assert_int_eq(bn_hf_open(dir, &hf, &err), 0);
    if (yarn) {
        hf->cfg.rope_type = BN_ROPE_YARN;
        hf->cfg.rope_factor = 4, hf->cfg.rope_orig_ctx = 8, hf->cfg.rope_truncate = true;
        hf->cfg.rope_beta_fast = 32, hf->cfg.rope_beta_slow = 1, hf->cfg.rope_attn_factor = 1.25f;
    }
    bn_tk_llama *tk;
    ck_assert_msg(bn_tk_llama_load(hf, 16, 2, &tk, &err) == 0, "%s", err.msg);
    ck_assert(!bn_tk_llama_exact(tk)); /* random weights: ternarized on load */
    if (f16_head) ck_assert_int_eq(bn_tk_llama_use_f16_head(tk, &err), 0);

    /* the reference: the same quantizer's codes in the FP32 model, 8-bit activations */
    bn_llama *ref;
    ck_assert_int_eq(bn_llama_load(hf, &ref, &err), 0);
    const bn_role roles[] = {BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV, BN_ROLE_WO, BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN};
    for (int l = 0; l < s.layers; l++)
        for (int i = 0; i < 7; i++) {
            int r, c;
            float *w = bn_llama_tensor(ref, &ref->params, roles[i], l, &r, &c);
            int8_t *codes = malloc((size_t)r * c);
            float *sc = malloc(sizeof(float) * r);
            bn_quant_params qp;
            bn_quant_params_default(&qp);
            ck_assert_int_eq(bn_quant_tensor("t", w, BN_DTYPE_F32, r, c, &qp, codes, sc, NULL, &err), 0);
            ck_assert_int_eq(bn_llama_set_linear_codes(ref, roles[i], l, codes, sc, r, &err), 0);
            free(codes), free(sc);
        }
    ref->act_quant = true;
    enum { T = 12 };
    int32_t toks[T];
    for (int t = 0; t < T; t++) toks[t] = (t * 37 + 5) % s.vocab;
    ck_assert_int_eq(bn_llama_forward(ref, toks, 1, T, &err), 0);
    bn_tk_q8_matrix head;
    ck_assert_int_eq(bn_tk_q8_pack(&head, ref->params.head, s.vocab, s.dim, "head", &err), 0);
    bn_tk_act16 a16;
    ck_assert_int_eq(bn_tk_act16_init(&a16, s.dim), 0);
    float *lg = malloc(sizeof(float) * s.vocab), *want = malloc(sizeof(float) * s.vocab);
    for (int t = 0; t < T; t++) {
        ck_assert_int_eq(bn_tk_llama_step(tk, toks[t], t, lg, &err), 0);
        /* the FP32 engine also 8-bit-quantizes the LM head's input; bitnetd's decoder
         * keeps the head in int8 blocks against an int16 copy of that input
         * (bn_tk_q8_matrix, bn_tk_act16; tests/quant checks their rounding): recompute
         * the head from the reference's final norm output the same way, in double */
        bn_tk_act16_quantize(&a16, ref->acts.lnf + (size_t)t * s.dim);
        for (int v = 0; v < s.vocab; v++) {
            double acc = 0;
            const float *lnf = ref->acts.lnf + (size_t)t * s.dim;
            for (int k = 0; k < s.dim; k++) {
                const bn_tk_q8_block *b = &head.blocks[(size_t)v * head.nb + k / BN_TK_Q8_BLOCK];
                acc += f16_head ? (double)bn_f16_to_f32(bn_f32_to_f16(ref->params.head[(size_t)v * s.dim + k])) * lnf[k]
                                : (double)b->d * b->qs[k % BN_TK_Q8_BLOCK] * a16.q[k] * a16.scale;
            }
            want[v] = (float)acc;
        }
        double sd = 0, mean = 0, worst = 0;
        for (int v = 0; v < s.vocab; v++) mean += want[v];
        mean /= s.vocab;
        for (int v = 0; v < s.vocab; v++) sd += (want[v] - mean) * (want[v] - mean);
        sd = sqrt(sd / s.vocab);
        for (int v = 0; v < s.vocab; v++) worst = fmax(worst, fabs(lg[v] - want[v]));
        /* same math, float vs integer sums: differences are rounding (a rare .5 tie
         * flips one int8 code); 0.2% of the spread is far below any real bug */
        ck_assert_msg(worst <= 0.002 * sd, "position %d: max |diff| %g, logit sd %g", t, worst, sd);
    }
    ck_assert_int_eq(bn_tk_llama_step(tk, 1, 16, lg, &err), BN_EINVAL); /* beyond the cache */
    ck_assert_int_eq(bn_tk_llama_step(tk, -1, 0, lg, &err), BN_EINVAL);
    free(lg), free(want);
    bn_tk_q8_free(&head);
    bn_tk_act16_free(&a16);
    bn_llama_free(ref);
    bn_tk_llama_free(tk);
    bn_hf_close(hf);
    bn_test_rmtree(tmp);
    free(tmp);
}

START_TEST(matches_fp32_actquant) { matches_fp32(BN_ARCH_LLAMA, false, false); }
END_TEST
START_TEST(f16_head_matches_fp32) { matches_fp32(BN_ARCH_LLAMA, false, true); }
END_TEST
START_TEST(qwen2_biases) { matches_fp32(BN_ARCH_QWEN2, false, false); }
END_TEST
START_TEST(qwen3_qk_norm_yarn) { matches_fp32(BN_ARCH_QWEN3, true, false); }
END_TEST

/* A prompt through bn_tk_llama_prefill (GEMM over chunks of tokens, split again inside
 * beyond its batch of 64) gives bit for bit the logits of feeding it token by token. */
START_TEST(prefill_equals_steps)
{
    bn_err err;
    char *tmp = bn_test_tmpdir("tk_prefill"), dir[512];
    snprintf(dir, sizeof dir, "%s/m", tmp);
    bn_init_spec s;
    bn_initmodel_shape("tiny", &s);
    s.dim = 96, s.hidden = 160, s.heads = 6, s.kv_heads = 2, s.layers = 2;
    s.vocab = bn_initmodel_tokenizer_size();
    s.dtype = BN_DTYPE_F32;
    ck_assert_msg(bn_initmodel_write(dir, &s, &err) == 0, "%s", err.msg);
    bn_hf_model *hf;
    ck_assert_int_eq(bn_hf_open(dir, &hf, &err), 0);
    enum { T = 80 };
    bn_tk_llama *a, *b;
    ck_assert_msg(bn_tk_llama_load(hf, T, 2, &a, &err) == 0, "%s", err.msg);
    ck_assert_msg(bn_tk_llama_load(hf, T, 1, &b, &err) == 0, "%s", err.msg);
    int32_t toks[T];
    for (int t = 0; t < T; t++) toks[t] = (t * 53 + 11) % s.vocab;
    float *la = malloc(sizeof(float) * s.vocab), *lb = malloc(sizeof(float) * s.vocab);
    for (int t = 0; t < T; t++) ck_assert_int_eq(bn_tk_llama_step(a, toks[t], t, t == T - 1 ? la : NULL, &err), 0);
    ck_assert_int_eq(bn_tk_llama_prefill(b, toks, 9, 0, NULL, &err), 0);
    ck_assert_int_eq(bn_tk_llama_prefill(b, toks + 9, T - 9, 9, lb, &err), 0);
    ck_assert(memcmp(la, lb, sizeof(float) * s.vocab) == 0);
    ck_assert_int_eq(bn_tk_llama_prefill(b, toks, 2, T - 1, lb, &err), BN_EINVAL); /* past the cache */
    int32_t bad[2] = {1, s.vocab};
    ck_assert_int_eq(bn_tk_llama_prefill(b, bad, 2, 0, lb, &err), BN_EINVAL);
    ck_assert_int_eq(bn_tk_llama_prefill(b, toks, 0, 0, lb, &err), BN_EINVAL);
    free(la), free(lb);
    bn_tk_llama_free(a);
    bn_tk_llama_free(b);
    bn_hf_close(hf);
    bn_test_rmtree(tmp);
    free(tmp);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("tk_llama");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, recover);
    tcase_add_test(tc, matches_fp32_actquant);
    tcase_add_test(tc, f16_head_matches_fp32);
    tcase_add_test(tc, qwen2_biases);
    tcase_add_test(tc, qwen3_qk_norm_yarn);
    tcase_add_test(tc, prefill_equals_steps);
    suite_add_tcase(su, tc);
    return bn_test_run(su);
}
