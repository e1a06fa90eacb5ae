/* test_gpu.c - the CUDA backend against the CPU engine, through the backend seam
 * (backend/backend.h). Runs only where a GPU is usable; exits 77 (skipped) elsewhere.
 *   forward:   FP32 logits on stories260K and a random 25M Llama (GQA), max |gpu - cpu|
 *              <= 1e-4 x max |cpu logit|
 *   gradient:  FP32, every parameter tensor's gradient cosine >= 0.9999
 *   fine-tune: 200 STE + AdamW steps of stories260K, GPU in bf16, CPU in FP32; the mean
 *              loss of the 10 steps ending at 50, 100, 200 within 2%
 *   round trip: 20 GPU steps -> checkpoint -> 10 CPU steps -> checkpoint -> 10 GPU steps
 *              tracks an uninterrupted GPU run within 1% per step; state moves exactly
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "bn_test.h"
#include "formats/hf.h"
#include "model/llama.h"

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

static bn_llama *random_25m(void)
{
    bn_model_config c;
    memset(&c, 0, sizeof c);
    c.arch = BN_ARCH_LLAMA;
    c.dim = 512;
    c.hidden_dim = 1408;
    c.n_layers = 7;
    c.n_heads = 8;
    c.n_kv_heads = 4;
    c.head_dim = 64;
    c.vocab_size = 4096;
    c.max_seq_len = 1024;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.bos_id = 1;
    c.eos_id = 2;
    bn_err err = { 0 };
    bn_llama *m;
    ck_assert_msg(bn_llama_new(&c, 7, &m, &err) == 0, "%s", err.msg);
    return m;
}

/* tokens [n] from the pre-tokenized stories corpus (vocab 512) */
static int32_t *corpus(size_t *n)
{
    FILE *f = fopen(bn_test_data("corpora/tinystories_val.tok512.u16"), "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    size_t bytes = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint16_t *u = malloc(bytes);
    ck_assert_int_eq(fread(u, 1, bytes, f), bytes);
    fclose(f);
    *n = bytes / 2;
    int32_t *t = malloc(*n * sizeof(int32_t));
    for (size_t i = 0; i < *n; i++) t[i] = u[i];
    free(u);
    return t;
}

static void random_tokens(int32_t *t, int n, int V, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)((seed >> 8) % (uint32_t)V);
    }
}

static bn_backend *make(bn_llama *m, bn_device dev, int B, int T, bool train, bool bf16, bool ste)
{
    bn_backend_opts o = { .device = dev, .gpu = 0, .max_B = B, .max_T = T, .train = train,
                          .bf16 = bf16, .ste = ste, .tau = 0.5f };
    bn_backend *b;
    bn_err err = { 0 };
    ck_assert_msg(bn_backend_new(m, &o, &b, &err) == 0, "%s", err.msg);
    return b;
}

static void forward_parity(bn_llama *m, int B, int T, const char *what)
{
    int V = m->cfg.vocab_size;
    int32_t *tok = malloc((size_t)B * T * sizeof(int32_t));
    random_tokens(tok, B * T, V, 11);
    bn_err err = { 0 };
    bn_backend *cpu = make(m, BN_DEVICE_CPU, B, T, false, false, false);
    bn_backend *gpu = make(m, BN_DEVICE_CUDA, B, T, false, false, false);
    size_t n = (size_t)B * T * V;
    float *a = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    ck_assert_msg(bn_backend_forward(cpu, tok, B, T, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(bn_backend_logits(cpu, a, &err), 0);
    ck_assert_msg(bn_backend_forward(gpu, tok, B, T, &err) == 0, "%s", err.msg);
    ck_assert_msg(bn_backend_logits(gpu, g, &err) == 0, "%s", err.msg);
    double mx = 0, md = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(a[i]));
        md = fmax(md, fabs((double)a[i] - g[i]));
    }
    printf("forward %-12s B%d T%d: max|logit| %.4f  max|gpu-cpu| %.3g  ratio %.3g (limit 1e-4)\n",
           what, B, T, mx, md, md / mx);
    ck_assert_msg(md <= 1e-4 * mx, "%s: max diff %g > 1e-4 x %g", what, md, mx);
    bn_backend_free(cpu);
    bn_backend_free(gpu);
    free(a);
    free(g);
    free(tok);
}

START_TEST(test_forward_stories)
{
    bn_llama *m = load_stories();
    forward_parity(m, 4, 96, "stories260K");
    bn_llama_free(m);
}
END_TEST

START_TEST(test_forward_25m)
{
    bn_llama *m = random_25m();
    forward_parity(m, 2, 160, "random25M");
    bn_llama_free(m);
}
END_TEST

static const bn_role roles[] = { BN_ROLE_EMBED, BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK,
                                 BN_ROLE_WV, BN_ROLE_WO, BN_ROLE_FFN_NORM, BN_ROLE_W_GATE,
                                 BN_ROLE_W_UP, BN_ROLE_W_DOWN, BN_ROLE_FINAL_NORM, BN_ROLE_HEAD };

static void grad_parity(bn_llama *m, int B, int T, const char *what)
{
    int V = m->cfg.vocab_size, N = B * T;
    int32_t *tok = malloc((size_t)N * sizeof(int32_t)), *tgt = malloc((size_t)N * sizeof(int32_t));
    random_tokens(tok, N, V, 5);
    random_tokens(tgt, N, V, 9);
    tgt[3] = -1; /* a masked position */
    bn_err err = { 0 };
    float lc, lg;
    int nc, ng;
    bn_backend *cpu = make(m, BN_DEVICE_CPU, B, T, true, false, false);
    bn_backend *gpu = make(m, BN_DEVICE_CUDA, B, T, true, false, false);
    bn_backend *bk[2] = { cpu, gpu };
    float *g[2];
    size_t np = m->n_params;
    float loss[2];
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(bn_backend_forward(bk[i], tok, B, T, &err) == 0, "%s", err.msg);
        ck_assert_msg(bn_backend_loss(bk[i], tgt, NULL, &loss[i], i ? &ng : &nc, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(bn_backend_zero_grad(bk[i], &err), 0);
        ck_assert_msg(bn_backend_backward(bk[i], &err) == 0, "%s", err.msg);
        g[i] = malloc(np * sizeof(float));
        ck_assert_msg(bn_backend_get(bk[i], BN_BK_GRADS, g[i], &err) == 0, "%s", err.msg);
    }
    lc = loss[0];
    lg = loss[1];
    ck_assert_int_eq(nc, ng);
    printf("grad %-12s loss cpu %.6f gpu %.6f\n", what, lc, lg);
    ck_assert(fabs(lc - lg) <= 1e-4 * fabs(lc));
    double worst = 1;
    for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++) {
        bool global = roles[r] == BN_ROLE_EMBED || roles[r] == BN_ROLE_FINAL_NORM || roles[r] == BN_ROLE_HEAD;
        for (int l = 0; l < (global ? 1 : m->cfg.n_layers); l++) {
            int rows, cols;
            float *t = bn_llama_tensor(m, &m->grads, roles[r], l, &rows, &cols);
            ck_assert_ptr_nonnull(t);
            size_t off = (size_t)(t - m->grads_mem), n = (size_t)rows * cols;
            double dot = 0, na = 0, nb = 0;
            for (size_t i = 0; i < n; i++) {
                dot += (double)g[0][off + i] * g[1][off + i];
                na += (double)g[0][off + i] * g[0][off + i];
                nb += (double)g[1][off + i] * g[1][off + i];
            }
            double cs = dot / (sqrt(na) * sqrt(nb) + 1e-300);
            if (cs < worst) worst = cs;
            ck_assert_msg(cs >= 0.9999, "%s: gradient of %s layer %d: cosine %.6f < 0.9999", what,
                          bn_role_name(roles[r]), l, cs);
        }
    }
    printf("grad %-12s worst per-tensor cosine %.7f (limit 0.9999)\n", what, worst);
    for (int i = 0; i < 2; i++) {
        free(g[i]);
        bn_backend_free(bk[i]);
    }
    free(tok);
    free(tgt);
}

START_TEST(test_grad_stories)
{
    bn_llama *m = load_stories();
    grad_parity(m, 4, 96, "stories260K");
    bn_llama_free(m);
}
END_TEST

START_TEST(test_grad_25m)
{
    bn_llama *m = random_25m();
    grad_parity(m, 2, 160, "random25M");
    bn_llama_free(m);
}
END_TEST

static const bn_backend_adamw adamw = { .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f,
                                        .eps = 1e-8f, .weight_decay = 0.0f, .max_grad_norm = 1.0f };

/* Runs steps [s0, s1) of STE training; losses[s] recorded. Batch s takes windows from
 * the corpus in order. */
static void train(bn_backend *b, const int32_t *ids, size_t n_ids, int B, int T, int s0, int s1,
                  float *losses)
{
    bn_err err = { 0 };
    int N = B * T;
    int32_t *tok = malloc((size_t)N * sizeof(int32_t)), *tgt = malloc((size_t)N * sizeof(int32_t));
    for (int s = s0; s < s1; s++) {
        for (int r = 0; r < B; r++) {
            size_t start = ((size_t)s * B + r) * T % (n_ids - T - 1);
            memcpy(tok + r * T, ids + start, T * sizeof(int32_t));
            memcpy(tgt + r * T, ids + start + 1, T * sizeof(int32_t));
        }
        ck_assert_msg(bn_backend_forward(b, tok, B, T, &err) == 0, "%s", err.msg);
        ck_assert_msg(bn_backend_loss(b, tgt, NULL, &losses[s], NULL, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(bn_backend_zero_grad(b, &err), 0);
        ck_assert_msg(bn_backend_backward(b, &err) == 0, "%s", err.msg);
        double gn;
        ck_assert_msg(bn_backend_adamw_step(b, &adamw, s, &gn, &err) == 0, "%s", err.msg);
    }
    free(tok);
    free(tgt);
}

static double mean10(const float *l, int end)
{
    double s = 0;
    for (int i = end - 10; i < end; i++) s += l[i];
    return s / 10;
}

START_TEST(test_finetune_stories)
{
    size_t n;
    int32_t *ids = corpus(&n);
    enum { STEPS = 200, B = 8, T = 64 };
    float lc[STEPS], lg[STEPS];
    bn_llama *mc = load_stories(), *mg = load_stories();
    bn_backend *cpu = make(mc, BN_DEVICE_CPU, B, T, true, false, true);
    bn_backend *gpu = make(mg, BN_DEVICE_CUDA, B, T, true, true, true);
    train(cpu, ids, n, B, T, 0, STEPS, lc);
    train(gpu, ids, n, B, T, 0, STEPS, lg);
    const int at[3] = { 50, 100, 200 };
    for (int i = 0; i < 3; i++) {
        double a = mean10(lc, at[i]), g = mean10(lg, at[i]);
        printf("finetune stories260K STE step %3d: loss cpu %.4f gpu(bf16) %.4f  rel %.2f%% (limit 2%%)\n",
               at[i], a, g, 100 * fabs(g - a) / a);
        ck_assert_msg(fabs(g - a) <= 0.02 * a, "step %d: cpu %g gpu %g", at[i], a, g);
    }
    ck_assert_msg(mean10(lg, 200) < lg[0], "GPU training did not lower the loss");
    bn_backend_free(cpu);
    bn_backend_free(gpu);
    bn_llama_free(mc);
    bn_llama_free(mg);
    free(ids);
}
END_TEST

/* checkpoint: master weights and AdamW moments, in the CPU flat layout */
typedef struct ckpt {
    float *p, *m, *v;
} ckpt;

static ckpt save(bn_backend *b, size_t np)
{
    ckpt c = { malloc(np * 4), malloc(np * 4), malloc(np * 4) };
    bn_err err = { 0 };
    ck_assert_msg(bn_backend_get(b, BN_BK_PARAMS, c.p, &err) == 0, "%s", err.msg);
    ck_assert_msg(bn_backend_get(b, BN_BK_ADAM_M, c.m, &err) == 0, "%s", err.msg);
    ck_assert_msg(bn_backend_get(b, BN_BK_ADAM_V, c.v, &err) == 0, "%s", err.msg);
    return c;
}

static bn_backend *restore(bn_llama *m, bn_device dev, int B, int T, const ckpt *c)
{
    memcpy(m->params_mem, c->p, m->n_params * 4);
    bn_backend *b = make(m, dev, B, T, true, false, true);
    bn_err err = { 0 };
    ck_assert_int_eq(bn_backend_adamw_prepare(b, &adamw, &err), 0);
    ck_assert_msg(bn_backend_set(b, BN_BK_ADAM_M, c->m, &err) == 0, "%s", err.msg);
    ck_assert_msg(bn_backend_set(b, BN_BK_ADAM_V, c->v, &err) == 0, "%s", err.msg);
    /* the state reads back exactly */
    ckpt r = save(b, m->n_params);
    ck_assert(!memcmp(r.p, c->p, m->n_params * 4));
    ck_assert(!memcmp(r.m, c->m, m->n_params * 4));
    ck_assert(!memcmp(r.v, c->v, m->n_params * 4));
    free(r.p); free(r.m); free(r.v);
    return b;
}

START_TEST(test_checkpoint_round_trip)
{
    size_t n;
    int32_t *ids = corpus(&n);
    enum { B = 8, T = 64 };
    float ref[40], got[40];
    bn_llama *m0 = load_stories();
    bn_backend *g0 = make(m0, BN_DEVICE_CUDA, B, T, true, false, true);
    train(g0, ids, n, B, T, 0, 40, ref);
    bn_backend_free(g0);
    bn_llama_free(m0);

    bn_llama *m = load_stories();
    size_t np = m->n_params;
    bn_backend *g1 = make(m, BN_DEVICE_CUDA, B, T, true, false, true);
    train(g1, ids, n, B, T, 0, 20, got);
    ckpt c1 = save(g1, np);
    bn_backend_free(g1);
    bn_backend *c = restore(m, BN_DEVICE_CPU, B, T, &c1);
    train(c, ids, n, B, T, 20, 30, got);
    ckpt c2 = save(c, np);
    bn_backend_free(c);
    bn_backend *g2 = restore(m, BN_DEVICE_CUDA, B, T, &c2);
    train(g2, ids, n, B, T, 30, 40, got);
    bn_backend_free(g2);
    for (int s = 0; s < 40; s++)
        ck_assert_msg(fabs(got[s] - ref[s]) <= 0.01 * ref[s], "step %d: resumed %g, uninterrupted %g", s, got[s], ref[s]);
    printf("round trip GPU(20)->CPU(10)->GPU(10): step 39 loss %.5f, uninterrupted %.5f\n", got[39], ref[39]);
    free(c1.p); free(c1.m); free(c1.v);
    free(c2.p); free(c2.m); free(c2.v);
    bn_llama_free(m);
    free(ids);
}
END_TEST

int main(void)
{
    char why[512];
    if (!bn_device_cuda_usable(why, sizeof why)) {
        printf("skipped: %s\n", why);
        return 77;
    }
    /* CUDA cannot be used in a child forked after the probe above initialised it: run the
     * checks in this process */
    setenv("CK_FORK", "no", 1);
    bn_test_require_data("stories260K-hf");
    bn_test_require_data("corpora/tinystories_val.tok512.u16");
    Suite *s = suite_create("gpu");
    TCase *tc = tcase_create("parity");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_forward_stories);
    tcase_add_test(tc, test_forward_25m);
    tcase_add_test(tc, test_grad_stories);
    tcase_add_test(tc, test_grad_25m);
    tcase_add_test(tc, test_finetune_stories);
    tcase_add_test(tc, test_checkpoint_round_trip);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
