/* test_llama.c - forward pass checks: golden logits of the real stories260K model, the
 * vectorised math against its scalar reference, activation quantization, the statistics
 * hook, ternary weights from codes, windowed evaluation, and bad input.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/blas.h"
#include "bn_test.h"
#include "formats/hf.h"
#include "model/llama.h"
#include "quant/pack.h"
#include "formats/safetensors.h"
#include "base/tensor.h"
#include "base/vecmath.h"

static const int32_t golden_tokens[16] = { 1,   403, 407, 261, 378, 432, 383, 286,
                                           261, 376, 298, 315, 421, 395, 317, 426 };

static bn_llama *load_stories(void)
{
    bn_err err = { 0 };
    bn_hf_model *hf;
    ck_assert_msg(bn_hf_open(bn_test_data("stories260K-hf"), &hf, &err) == 0, "%s", err.msg);
    bn_llama *m;
    ck_assert_msg(bn_llama_load(hf, &m, &err) == 0, "%s", err.msg);
    bn_hf_close(hf);
    return m;
}

static float *read_golden(void)
{
    FILE *f = fopen(bn_test_data("stories260K/golden_greedy16_logits.f32"), "rb");
    ck_assert_ptr_nonnull(f);
    float *g = malloc(16 * 512 * sizeof(float));
    ck_assert_int_eq(fread(g, sizeof(float), 16 * 512, f), 16 * 512);
    fclose(f);
    return g;
}

static double golden_diff(int threads, bool two_rows)
{
    bn_llama *m = load_stories();
    bn_llama_set_threads(m, threads);
    bn_err err;
    int32_t tok[32];
    memcpy(tok, golden_tokens, sizeof golden_tokens);
    memcpy(tok + 16, golden_tokens, sizeof golden_tokens);
    int B = two_rows ? 2 : 1;
    ck_assert_int_eq(bn_llama_forward(m, tok, B, 16, &err), 0);
    float *g = read_golden();
    double md = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < 16 * 512; i++)
            md = fmax(md, fabs(g[i] - m->acts.logits[(size_t)b * 16 * 512 + i]));
    free(g);
    bn_llama_free(m);
    return md;
}

START_TEST(golden_logits)
{
    bn_test_require_data("stories260K-hf/model.safetensors");
    double md = golden_diff(1, false);
    ck_assert_msg(md < 1e-4, "max |logit - golden| = %g", md);
    md = golden_diff(2, true); /* batch of two, threaded */
    ck_assert_msg(md < 1e-4, "batched/threaded: max |logit - golden| = %g", md);
}
END_TEST

START_TEST(golden_nll_window)
{
    /* The golden tokens as one window: NLL equals the mean of per-row log-softmax. */
    bn_test_require_data("stories260K-hf/model.safetensors");
    bn_llama *m = load_stories();
    bn_err err;
    bn_llama_eval_result r;
    int32_t ids[17];
    memcpy(ids, golden_tokens, sizeof golden_tokens);
    ids[16] = 338;
    ck_assert_int_eq(bn_llama_eval_windows(m, ids, 17, 16, 1, 1, &r, &err), 0);
    float *g = read_golden();
    double want = 0;
    for (int t = 0; t < 16; t++) want += bn_llama_nll_row(g + t * 512, 512, ids[t + 1]);
    want /= 16;
    ck_assert_uint_eq(r.tokens, 16);
    ck_assert_double_eq_tol(r.mean_nll, want, 1e-5);
    ck_assert_double_eq_tol(r.perplexity, exp(want), 1e-4);
    /* too few tokens for the windows asked */
    ck_assert_int_eq(bn_llama_eval_windows(m, ids, 17, 16, 2, 1, &r, &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "windows"));
    free(g);
    bn_llama_free(m);
}
END_TEST

START_TEST(vexp_matches_reference)
{
    enum { N = 1000 };
    float x[N], ref[N], v[N];
    for (int i = 0; i < N; i++) x[i] = -100.0f + 190.0f * (float)i / N;
    x[0] = -INFINITY;
    memcpy(ref, x, sizeof x);
    bn_vexp_ref(ref, N);
    for (int i = 0; i < N; i++) {
        double e = exp((double)x[i]);
        if (x[i] < -87.3f) ck_assert_float_eq(ref[i], 0.0f);
        else if (x[i] > 88.3763f) ck_assert(isinf(ref[i]));
        else ck_assert_msg(fabs(ref[i] - e) <= 3e-7 * e, "exp(%g): %g vs %g", x[i], ref[i], e);
    }
    int level = bn_vecmath_level();
    for (int l = 0; l <= level; l++) {
        bn_vecmath_force(l);
        for (int n = 1; n <= N; n += 37) { /* every tail length */
            memcpy(v, x, sizeof x);
            float s = bn_vexp_sub_sum(v, (size_t)n, 0.0f), sr = 0;
            for (int i = 0; i < n; i++) {
                ck_assert_msg(v[i] == ref[i] || fabsf(v[i] - ref[i]) <= 2e-7f * ref[i],
                              "level %d n %d i %d: %g vs %g", l, n, i, v[i], ref[i]);
                sr += ref[i];
            }
            if (!isinf(sr)) ck_assert_float_eq_tol(s, sr, 1e-5f * sr + 1e-30f);
            float mx = bn_vmax(x, (size_t)n), mr = -INFINITY;
            for (int i = 0; i < n; i++) mr = fmaxf(mr, x[i]);
            ck_assert_float_eq(mx, mr);
            int am = bn_vargmax(x, n);
            ck_assert_float_eq(x[am], mr);
            for (int i = 0; i < am; i++) ck_assert(x[i] < mr); /* the first of ties */
        }
    }
    bn_vecmath_force(level);
    const float tie[4] = { 1.0f, 3.0f, -2.0f, 3.0f };
    ck_assert_int_eq(bn_vargmax(tie, 4), 1);
}
END_TEST

static bn_model_config small_config(void)
{
    bn_model_config c = { 0 };
    c.dim = 32;
    c.hidden_dim = 48;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.vocab_size = 64;
    c.max_seq_len = 32;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    return c;
}

typedef struct stats_seen {
    int calls[BN_ROLE_COUNT];
    int rows, cols_wo, cols_down;
    bn_llama_act_stats wq0;
} stats_seen;

static void stats_cb(void *ctx, bn_role role, int layer, const float *x, int rows, int cols)
{
    stats_seen *s = ctx;
    s->calls[role]++;
    s->rows = rows;
    if (role == BN_ROLE_WO) s->cols_wo = cols;
    if (role == BN_ROLE_W_DOWN) s->cols_down = cols;
    if (role == BN_ROLE_WQ && layer == 0) bn_llama_act_stats_add(&s->wq0, x, rows);
}

START_TEST(stats_hook_and_act_quant)
{
    bn_model_config cfg = small_config();
    bn_llama *m;
    bn_err err;
    ck_assert_int_eq(bn_llama_new(&cfg, 1, &m, &err), 0);
    for (int i = 0; i < cfg.vocab_size * cfg.dim; i++) m->params.tok_emb[i] *= 50; /* rms ~1 */
    int32_t tok[2 * 16];
    for (int i = 0; i < 32; i++) tok[i] = (i * 7) % 64;
    stats_seen s = { 0 };
    ck_assert_int_eq(bn_llama_act_stats_init(&s.wq0, cfg.dim, &err), 0);
    m->stats_fn = stats_cb;
    m->stats_ctx = &s;
    ck_assert_int_eq(bn_llama_forward(m, tok, 2, 16, &err), 0);
    ck_assert_int_eq(s.calls[BN_ROLE_WQ], 2);
    ck_assert_int_eq(s.calls[BN_ROLE_WK], 2);
    ck_assert_int_eq(s.calls[BN_ROLE_W_UP], 2);
    ck_assert_int_eq(s.calls[BN_ROLE_W_DOWN], 2);
    ck_assert_int_eq(s.calls[BN_ROLE_HEAD], 1);
    ck_assert_int_eq(s.rows, 32);
    ck_assert_int_eq(s.cols_wo, 32);
    ck_assert_int_eq(s.cols_down, 48);
    /* the wq input of layer 0 is rmsnorm(emb) with unit weights: E[x^2] per row = 1 */
    double tot = 0;
    for (int i = 0; i < cfg.dim; i++) tot += s.wq0.sum_x2[i];
    ck_assert_uint_eq(s.wq0.count, 32);
    ck_assert_double_eq_tol(tot / (32.0 * cfg.dim), 1.0, 1e-3);
    ck_assert(s.wq0.max > 0 && s.wq0.min < 0 && bn_llama_act_stats_std(&s.wq0) > 0.5);
    bn_llama_act_stats_free(&s.wq0);

    /* W1.58A8: logits change a little, not a lot */
    float *ref = malloc(32 * 64 * sizeof(float));
    memcpy(ref, m->acts.logits, 32 * 64 * sizeof(float));
    m->stats_fn = NULL;
    m->act_quant = true;
    ck_assert_int_eq(bn_llama_forward(m, tok, 2, 16, &err), 0);
    double md = 0, mref = 0;
    for (int i = 0; i < 32 * 64; i++) {
        md = fmax(md, fabs(ref[i] - m->acts.logits[i]));
        mref = fmax(mref, fabs(ref[i]));
    }
    ck_assert_msg(md > 0 && md < 0.05 * mref, "act quant diff %g (max logit %g)", md, mref);
    free(ref);
    bn_llama_free(m);
}
END_TEST

START_TEST(linear_codes)
{
    bn_model_config cfg = small_config();
    bn_llama *m;
    bn_err err;
    ck_assert_int_eq(bn_llama_new(&cfg, 1, &m, &err), 0);
    int r, c;
    float *w = bn_llama_tensor(m, &m->params, BN_ROLE_W_DOWN, 1, &r, &c);
    ck_assert_int_eq(r, 32);
    ck_assert_int_eq(c, 48);
    int8_t *codes = malloc((size_t)r * c);
    float scales[32];
    for (int i = 0; i < r * c; i++) codes[i] = (int8_t)(i % 3 - 1);
    for (int i = 0; i < r; i++) scales[i] = 0.5f + i;
    ck_assert_int_eq(bn_llama_set_linear_codes(m, BN_ROLE_W_DOWN, 1, codes, scales, r, &err), 0);
    ck_assert_float_eq(w[5 * c + 4], scales[5] * codes[5 * c + 4]);
    ck_assert_ptr_eq(w, m->params.w_down + (size_t)r * c);
    ck_assert_int_eq(bn_llama_set_linear_codes(m, BN_ROLE_W_DOWN, 1, codes, scales, 1, &err), 0);
    ck_assert_float_eq(w[7 * c + 1], scales[0] * codes[7 * c + 1]);
    ck_assert_int_eq(bn_llama_set_linear_codes(m, BN_ROLE_W_DOWN, 1, codes, scales, 3, &err),
                     BN_EINVAL);
    ck_assert_int_eq(bn_llama_set_linear_codes(m, BN_ROLE_ATTN_NORM, 0, codes, scales, 1, &err),
                     BN_EINVAL);
    ck_assert_ptr_null(bn_llama_tensor(m, &m->params, BN_ROLE_BQ, 0, &r, &c));
    ck_assert_ptr_eq(bn_llama_tensor(m, &m->params, BN_ROLE_HEAD, -1, &r, &c), m->params.head);
    free(codes);
    bn_llama_free(m);
}
END_TEST

/* Distinct absolute values in a row (ternary rows have at most one besides 0). */
static int row_levels(const float *w, int n)
{
    float seen[4];
    int k = 0;
    for (int i = 0; i < n; i++) {
        float a = fabsf(w[i]);
        int j = 0;
        while (j < k && seen[j] != a) j++;
        if (j == k) {
            if (k == 4) return 5;
            seen[k++] = a;
        }
    }
    return k;
}

START_TEST(ternarize_packed_and_on_the_fly)
{
    bn_model_config cfg = small_config();
    bn_llama *m;
    bn_err err = { 0 };
    ck_assert_int_eq(bn_llama_new(&cfg, 3, &m, &err), 0);
    char *dir = bn_test_tmpdir("tern");
    bool packed = true;
    /* no quantized/: the engine quantizer runs */
    ck_assert_msg(bn_llama_ternarize(m, dir, &packed, &err) == 0, "%s", err.msg);
    ck_assert(!packed);
    for (int r = 0; r < cfg.n_heads * cfg.head_dim; r++)
        ck_assert_int_le(row_levels(m->params.wq + (size_t)r * cfg.dim, cfg.dim), 2);
    ck_assert_int_gt(row_levels(m->params.tok_emb, cfg.dim), 2); /* embeddings stay */

    /* an output folder's quantized/model.safetensors: codes + F16 scales per linear */
    char qdir[1024], path[1100];
    snprintf(qdir, sizeof qdir, "%s/quantized", dir);
    ck_assert_int_eq(mkdir(qdir, 0755), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", qdir);
    bn_st_writer *w;
    ck_assert_int_eq(bn_st_writer_new(path, &w, &err), 0);
    static const bn_role lin[] = { BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV, BN_ROLE_WO,
                                   BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN };
    for (int pass = 0; pass < 2; pass++)
        for (int l = 0; l < cfg.n_layers; l++)
            for (int i = 0; i < 7; i++) {
                int rows, cols;
                bn_llama_tensor(m, &m->params, lin[i], l, &rows, &cols);
                char name[256], sname[300];
                bn_hf_name(lin[i], l, name, sizeof name);
                snprintf(sname, sizeof sname, "%.*s.weight_scale", (int)strlen(name) - 7, name);
                int64_t ps[2] = { bn_pack2_rows(rows), cols }, ss[1] = { rows };
                if (pass == 0) {
                    ck_assert_int_eq(bn_st_writer_declare(w, name, BN_DTYPE_U8, 2, ps, &err), 0);
                    ck_assert_int_eq(bn_st_writer_declare(w, sname, BN_DTYPE_F16, 1, ss, &err), 0);
                    continue;
                }
                int8_t *codes = malloc((size_t)rows * cols);
                uint8_t *pk = malloc((size_t)ps[0] * cols);
                uint16_t *hs = malloc((size_t)rows * 2);
                for (int k = 0; k < rows * cols; k++) codes[k] = (int8_t)((k * 7 + l + i) % 3 - 1);
                for (int k = 0; k < rows; k++)
                    hs[k] = bn_f32_to_f16(0.25f + 0.125f * (float)(k % 5));
                bn_pack2_hf(codes, rows, cols, pk);
                ck_assert_int_eq(bn_st_writer_write(w, pk, (size_t)ps[0] * cols, &err), 0);
                ck_assert_int_eq(bn_st_writer_write(w, hs, (size_t)rows * 2, &err), 0);
                free(codes);
                free(pk);
                free(hs);
            }
    ck_assert_int_eq(bn_st_writer_finish(w, &err), 0);
    ck_assert_msg(bn_llama_ternarize(m, dir, &packed, &err) == 0, "%s", err.msg);
    ck_assert(packed);
    int rows, cols;
    float *wd = bn_llama_tensor(m, &m->params, BN_ROLE_W_DOWN, 1, &rows, &cols);
    int k = 3 * cols + 5; /* row 3 */
    float want = (float)((k * 7 + 1 + 6) % 3 - 1) * (0.25f + 0.125f * 3);
    ck_assert_float_eq(wd[k], want);
    /* a corrupt packed file is named in the error */
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_SET);
    fputc(0xff, f); /* header length byte: now invalid */
    fclose(f);
    ck_assert_int_ne(bn_llama_ternarize(m, dir, &packed, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "model.safetensors"));
    bn_test_rmtree(dir);
    free(dir);
    bn_llama_free(m);
}
END_TEST

START_TEST(bad_input)
{
    bn_model_config cfg = small_config();
    bn_llama *m;
    bn_err err;
    cfg.n_kv_heads = 3;
    ck_assert_int_eq(bn_llama_new(&cfg, 1, &m, &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "n_kv_heads"));
    cfg = small_config();
    ck_assert_int_eq(bn_llama_new(&cfg, 1, &m, &err), 0);
    int32_t tok[4] = { 1, 2, 64, 3 };
    ck_assert_int_eq(bn_llama_forward(m, tok, 1, 4, &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "token 64"));
    ck_assert_int_eq(bn_llama_backward(m, &err), BN_EINVAL);
    bn_llama_free(m);
}
END_TEST

START_TEST(blas_core)
{
    /* A choice exists for this CPU class and OpenBLAS names its core. */
    const char *want = bn_blas_wanted_core();
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) ck_assert_str_eq(want, "SkylakeX");
    ck_assert(strlen(bn_blas_core_name()) > 0);
    bn_blas_set_threads(1);
    ck_assert_int_eq(bn_blas_get_threads(), 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("llama");
    TCase *tc = tcase_create("forward");
    tcase_set_timeout(tc, 0); /* meson enforces the timeout (x4 under sanitizers) */
    tcase_add_test(tc, golden_logits);
    tcase_add_test(tc, golden_nll_window);
    tcase_add_test(tc, vexp_matches_reference);
    tcase_add_test(tc, stats_hook_and_act_quant);
    tcase_add_test(tc, linear_codes);
    tcase_add_test(tc, ternarize_packed_and_on_the_fly);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, blas_core);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
