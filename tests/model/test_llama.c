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

/* bn_vdot / bn_vaxpy: every level agrees with a double reference to float rounding, for
 * every tail length (the decoder's attention over its KV cache uses them). */
START_TEST(vdot_vaxpy_match_reference)
{
    enum { N = 200 };
    float a[N], b[N], y[N];
    for (int i = 0; i < N; i++) a[i] = sinf((float)i * 0.37f) * 3, b[i] = cosf((float)i * 0.11f) - 0.2f;
    int level = bn_vecmath_level();
    for (int l = 0; l <= level; l++) {
        bn_vecmath_force(l);
        for (int n = 0; n <= N; n += 7) {
            double d = 0, mag = 0;
            for (int i = 0; i < n; i++) d += (double)a[i] * b[i], mag += fabs((double)a[i] * b[i]);
            float got = bn_vdot(a, b, (size_t)n);
            ck_assert_msg(fabs(got - d) <= 1e-6 * mag + 1e-30, "level %d n %d: %g vs %g", l, n, got, d);
            for (int i = 0; i < N; i++) y[i] = (float)i;
            bn_vaxpy(y, -0.75f, a, (size_t)n);
            for (int i = 0; i < N; i++) {
                double want = i < n ? (double)i - 0.75 * a[i] : (double)i; /* nothing past n is written */
                ck_assert_msg(fabs(y[i] - want) <= 1e-6 * (fabs(want) + 1), "level %d n %d i %d", l, n, i);
            }
        }
    }
    bn_vecmath_force(level);
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

typedef struct grid_seen {
    int calls, levels;
    double worst; /* largest distance from the grid, in grid steps */
} grid_seen;

static void grid_cb(void *ctx, bn_role role, int layer, const float *x, int rows, int cols)
{
    (void)layer;
    grid_seen *g = ctx;
    if (role == BN_ROLE_WK || role == BN_ROLE_WV || role == BN_ROLE_W_UP) return; /* same input */
    g->calls++;
    bool seen[255] = {0};
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        double a = 0;
        for (int i = 0; i < cols; i++) a = fmax(a, fabs(xr[i]));
        if (a < 1e-5) a = 1e-5;
        for (int i = 0; i < cols; i++) {
            double k = xr[i] * 127.0 / a, d = fabs(k - nearbyint(k));
            if (d > g->worst) g->worst = d;
            if (fabs(k) > 127.0 + 1e-3) g->worst = fmax(g->worst, fabs(k) - 127.0);
            seen[(int)nearbyint(k) + 127] = true;
        }
    }
    for (int i = 0; i < 255; i++) g->levels += seen[i];
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

    /* W1.58A8: every linear layer's input (the hook sees it after quantization) lies on
     * its row's int8 grid: x = k * a / 127 with integer |k| <= 127 and a = max|x| of the
     * row, and the row's largest element is exactly +-a (k = +-127) */
    float *ref = malloc(32 * 64 * sizeof(float));
    memcpy(ref, m->acts.logits, 32 * 64 * sizeof(float));
    grid_seen gs = {0};
    m->stats_fn = grid_cb;
    m->stats_ctx = &gs;
    m->act_quant = true;
    ck_assert_int_eq(bn_llama_forward(m, tok, 2, 16, &err), 0);
    ck_assert_msg(gs.worst < 1e-3, "an input is %g of a step off the int8 grid", gs.worst);
    ck_assert_int_eq(gs.calls, 2 * 4 + 1); /* wq, wo, w_gate, w_down per layer + head */
    ck_assert(gs.levels > 100); /* a real grid, not a handful of values */
    /* and the logits move by about what 8-bit inputs cost: > 0, < 2% of the largest */
    double md = 0, mref = 0;
    for (int i = 0; i < 32 * 64; i++) {
        md = fmax(md, fabs(ref[i] - m->acts.logits[i]));
        mref = fmax(mref, fabs(ref[i]));
    }
    ck_assert_msg(md > 1e-5 * mref && md < 0.02 * mref, "act quant diff %g (max logit %g)", md, mref);
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

/* ---- an independent forward: the Llama architecture written out naively in double --- */

static void naive_rmsnorm(double *o, const double *x, const float *w, int D, double eps)
{
    double ss = 0;
    for (int i = 0; i < D; i++) ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / D + eps);
    for (int i = 0; i < D; i++) o[i] = x[i] * r * w[i];
}

/* y[O] = W[O, C] x[C] (+ b) */
static void naive_linear(double *y, const float *W, const float *b, const double *x, int O, int C)
{
    for (int o = 0; o < O; o++) {
        double s = b ? b[o] : 0;
        for (int c = 0; c < C; c++) s += (double)W[(size_t)o * C + c] * x[c];
        y[o] = s;
    }
}

/* HF rotate_half RoPE on one head vector v[hd] at position pos. */
static void naive_rope(double *v, int hd, int pos, double theta)
{
    for (int i = 0; i < hd / 2; i++) {
        double a = pos * pow(theta, -2.0 * i / hd), x0 = v[i], x1 = v[i + hd / 2];
        v[i] = x0 * cos(a) - x1 * sin(a);
        v[i + hd / 2] = x1 * cos(a) + x0 * sin(a);
    }
}

/* logits [T, V] of one sequence. */
static void naive_forward(const bn_llama *m, const int32_t *tok, int T, double *logits)
{
    const bn_model_config *c = &m->cfg;
    const bn_llama_params *p = &m->params;
    int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, F = c->hidden_dim;
    int QD = H * hd, KVD = KV * hd, V = c->vocab_size;
    double *x = malloc(sizeof(double) * T * D), *h = malloc(sizeof(double) * D);
    double *q = malloc(sizeof(double) * T * QD), *k = malloc(sizeof(double) * T * KVD);
    double *v = malloc(sizeof(double) * T * KVD), *y = malloc(sizeof(double) * QD);
    double *o = malloc(sizeof(double) * D), *g = malloc(sizeof(double) * F);
    double *u = malloc(sizeof(double) * F), *att = malloc(sizeof(double) * T);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) x[t * D + i] = p->tok_emb[(size_t)tok[t] * D + i];
    for (int l = 0; l < c->n_layers; l++) {
        for (int t = 0; t < T; t++) {
            naive_rmsnorm(h, x + t * D, p->attn_norm + l * D, D, c->rms_norm_eps);
            naive_linear(q + t * QD, p->wq + (size_t)l * QD * D, p->bq ? p->bq + l * QD : NULL, h, QD, D);
            naive_linear(k + t * KVD, p->wk + (size_t)l * KVD * D, p->bk ? p->bk + l * KVD : NULL, h, KVD, D);
            naive_linear(v + t * KVD, p->wv + (size_t)l * KVD * D, p->bv ? p->bv + l * KVD : NULL, h, KVD, D);
            for (int hh = 0; hh < H; hh++) naive_rope(q + t * QD + hh * hd, hd, t, c->rope_theta);
            for (int hh = 0; hh < KV; hh++) naive_rope(k + t * KVD + hh * hd, hd, t, c->rope_theta);
        }
        for (int t = 0; t < T; t++) {
            for (int hh = 0; hh < H; hh++) {
                int kh = hh / (H / KV);
                double mx = -1e300, z = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += q[t * QD + hh * hd + i] * k[j * KVD + kh * hd + i];
                    att[j] = s / sqrt((double)hd);
                    if (att[j] > mx) mx = att[j];
                }
                for (int j = 0; j <= t; j++) z += att[j] = exp(att[j] - mx);
                for (int i = 0; i < hd; i++) {
                    double s = 0;
                    for (int j = 0; j <= t; j++) s += att[j] / z * v[j * KVD + kh * hd + i];
                    y[hh * hd + i] = s;
                }
            }
            naive_linear(o, p->wo + (size_t)l * D * QD, NULL, y, D, QD);
            for (int i = 0; i < D; i++) x[t * D + i] += o[i];
        }
        for (int t = 0; t < T; t++) {
            naive_rmsnorm(h, x + t * D, p->ffn_norm + l * D, D, c->rms_norm_eps);
            naive_linear(g, p->w_gate + (size_t)l * F * D, NULL, h, F, D);
            naive_linear(u, p->w_up + (size_t)l * F * D, NULL, h, F, D);
            for (int i = 0; i < F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            naive_linear(o, p->w_down + (size_t)l * D * F, NULL, g, D, F);
            for (int i = 0; i < D; i++) x[t * D + i] += o[i];
        }
    }
    for (int t = 0; t < T; t++) {
        naive_rmsnorm(h, x + t * D, p->final_norm, D, c->rms_norm_eps);
        naive_linear(logits + (size_t)t * V, p->head, NULL, h, V, D);
    }
    free(x), free(h), free(q), free(k), free(v), free(y), free(o), free(g), free(u), free(att);
}

/* T = 150 crosses the attention's 64-row blocks twice; B = 2 with different sequences;
 * GQA and q/k/v biases on; weights scaled so every part of the network matters. */
START_TEST(forward_matches_naive_double_long)
{
    bn_model_config cfg = small_config();
    cfg.max_seq_len = 160;
    cfg.attention_bias = true;
    bn_llama *m;
    bn_err err;
    ck_assert_int_eq(bn_llama_new(&cfg, 1, &m, &err), 0);
    bn_llama_set_threads(m, 2);
    uint64_t r = 99;
    for (size_t i = 0; i < m->n_params; i++) { /* uniform, std ~ 1/sqrt(fan-in) scale */
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        m->params_mem[i] = (float)((double)(r >> 11) / 9007199254740992.0 - 0.5) * 0.6f;
    }
    for (int i = 0; i < cfg.vocab_size * cfg.dim; i++) m->params.tok_emb[i] *= 3;
    for (int i = 0; i < cfg.n_layers * cfg.dim; i++) { /* norm weights around 1 */
        m->params.attn_norm[i] += 1.0f;
        m->params.ffn_norm[i] += 1.0f;
    }
    for (int i = 0; i < cfg.dim; i++) m->params.final_norm[i] += 1.0f;
    enum { T = 150, B = 2 };
    int32_t tok[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)((i * 37 + (i / T) * 11 + i * i) % cfg.vocab_size);
    ck_assert_int_eq(bn_llama_reserve(m, B, T, false, &err), 0);
    ck_assert_int_eq(bn_llama_forward(m, tok, B, T, &err), 0);
    double *want = malloc(sizeof(double) * T * cfg.vocab_size);
    for (int b = 0; b < B; b++) {
        naive_forward(m, tok + b * T, T, want);
        double worst = 0, mag = 0;
        int at = 0;
        for (int i = 0; i < T * cfg.vocab_size; i++) {
            double d = fabs(want[i] - m->acts.logits[(size_t)b * T * cfg.vocab_size + i]);
            if (d > worst) { worst = d; at = i; }
            mag = fmax(mag, fabs(want[i]));
        }
        ck_assert_msg(mag > 1.0, "logits too small to test (max %g)", mag);
        ck_assert_msg(worst <= 2e-5 * mag, "b %d position %d token %d: %g vs naive %g (max logit %g)",
                      b, at / cfg.vocab_size, at % cfg.vocab_size,
                      m->acts.logits[(size_t)b * T * cfg.vocab_size + at], want[at], mag);
    }
    free(want);
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
    tcase_add_test(tc, vdot_vaxpy_match_reference);
    tcase_add_test(tc, stats_hook_and_act_quant);
    tcase_add_test(tc, linear_codes);
    tcase_add_test(tc, ternarize_packed_and_on_the_fly);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, forward_matches_naive_double_long);
    tcase_add_test(tc, blas_core);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
