/* test_gpu.c - the CUDA backend against the CPU engine, through the backend seam
 * (backend/backend.h). Runs only where a GPU is usable; exits 77 (skipped) elsewhere.
 *   forward:   FP32 logits on stories260K and a random 25M Llama (GQA), max |gpu - cpu|
 *              <= 1e-4 x max |cpu logit|
 *   gradient:  FP32, every parameter tensor's gradient cosine >= 0.9999
 *   fine-tune: 200 STE + AdamW steps of stories260K, GPU in bf16, CPU in FP32; the mean
 *              loss of the 10 steps ending at 50, 100, 200 within 2%
 *   round trip: 20 GPU steps -> checkpoint -> 10 CPU steps -> checkpoint -> 10 GPU steps
 *              tracks an uninterrupted GPU run within 1% per step; state moves exactly
 * The fine-tune trainer (backend.h training section, what stages/finetune.c runs):
 *   quantizer: GPU materialize vs bn_quant_refine / bn_quant_tensor (per row, per tensor,
 *              quant warm-up): codes agree except at ties, scales within 1e-4
 *   optimizer: MuGrokfast steps on identical random gradients, GPU vs bn_optim_step:
 *              relative error of the weight updates and of every state array <= 2e-3
 *   fine-tune: 200 steps of the stage's loop (materialize with refine, distillation
 *              against the FP teacher, MuGrokfast), GPU bf16 vs CPU: mean loss at 50, 100,
 *              200 within 3% (a trajectory of ternary codes: the FP32 GPU line drifts ~2%)
 *   checkpoint: trainer GPU(20) -> CPU(10) -> GPU(10) by the state names within 1% per step
 *   bf16 path: 60 trainer steps of the random 25M model track the FP32 trainer within 3%;
 *              its FP32 evaluation forward agrees with the bf16 one
 * Kernels:
 *   attention: the bf16 tensor-core attention (cuda/attention.cu) against the FP32 kernels
 *              on bf16-rounded inputs: relative L2 of y, lse, dq, dk, dv <= 2e-2; timings
 * The bf16 training path (random 25M, head_dim 64): logits vs the CPU within 2e-2
 *   relative L2, gradient cosines >= 0.99, its FP32 evaluation forward within 1e-4; 100 STE
 *   steps track the FP32 path within 3%.
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
#include "model/optim.h"
#include "quant/quant.h"
#ifdef BN_HAVE_CUDA
#include "cuda/cuda.h"
#endif

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

/* Cosine of every parameter tensor's gradient, a against b (flat layout of m); each
 * >= limit. Returns the worst. */
static double grad_cosines(bn_llama *m, const float *a, const float *b, double limit, const char *what)
{
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
                dot += (double)a[off + i] * b[off + i];
                na += (double)a[off + i] * a[off + i];
                nb += (double)b[off + i] * b[off + i];
            }
            double cs = dot / (sqrt(na) * sqrt(nb) + 1e-300);
            if (cs < worst) worst = cs;
            ck_assert_msg(cs >= limit, "%s: gradient of %s layer %d: cosine %.6f < %g", what,
                          bn_role_name(roles[r]), l, cs, limit);
        }
    }
    return worst;
}

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
    double worst = grad_cosines(m, g[0], g[1], 0.9999, what);
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

/* The bf16 training path (bf16 activations and compute weights, FP32 residual stream,
 * tensor-core attention) on the random 25M model (head_dim 64) against the CPU in FP32:
 * logits within 2e-2 relative L2, loss within 1%, every gradient tensor's cosine >= 0.99;
 * then the same model's FP32 forward (evaluation) matches the CPU within 1e-4 x max|logit|,
 * and the bf16 path runs again after it. */
START_TEST(test_bf16_path_25m)
{
    bn_llama *m = random_25m();
    enum { B = 2, T = 160 };
    int V = m->cfg.vocab_size, N = B * T;
    int32_t tok[B * T], tgt[B * T];
    random_tokens(tok, N, V, 5);
    random_tokens(tgt, N, V, 9);
    bn_err err = { 0 };
    bn_backend *cpu = make(m, BN_DEVICE_CPU, B, T, true, false, false);
    bn_backend *gpu = make(m, BN_DEVICE_CUDA, B, T, true, true, false);
    bn_backend *bk[2] = { cpu, gpu };
    size_t nl = (size_t)N * V, np = m->n_params;
    float *lg[2], *g[2], loss[2];
    for (int i = 0; i < 2; i++) {
        lg[i] = malloc(nl * sizeof(float));
        g[i] = malloc(np * sizeof(float));
        ck_assert_msg(bn_backend_forward(bk[i], tok, B, T, &err) == 0, "%s", err.msg);
        ck_assert_msg(bn_backend_logits(bk[i], lg[i], &err) == 0, "%s", err.msg);
        ck_assert_msg(bn_backend_loss(bk[i], tgt, NULL, &loss[i], NULL, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(bn_backend_zero_grad(bk[i], &err), 0);
        ck_assert_msg(bn_backend_backward(bk[i], &err) == 0, "%s", err.msg);
        ck_assert_msg(bn_backend_get(bk[i], BN_BK_GRADS, g[i], &err) == 0, "%s", err.msg);
    }
    double e2 = 0, r2 = 0;
    for (size_t i = 0; i < nl; i++) {
        ck_assert(isfinite(lg[1][i]));
        e2 += ((double)lg[1][i] - lg[0][i]) * ((double)lg[1][i] - lg[0][i]);
        r2 += (double)lg[0][i] * lg[0][i];
    }
    double rel = sqrt(e2 / r2);
    printf("bf16 path random25M: logits rel L2 %.3g (limit 2e-2), loss cpu %.5f gpu %.5f\n", rel, loss[0], loss[1]);
    ck_assert_msg(rel <= 2e-2, "logits rel L2 %g", rel);
    ck_assert(fabs(loss[1] - loss[0]) <= 0.01 * loss[0]);
    double worst = grad_cosines(m, g[0], g[1], 0.99, "bf16 path");
    printf("bf16 path random25M: worst per-tensor gradient cosine %.5f (limit 0.99)\n", worst);
    /* the FP32 evaluation forward of the same model */
    bn_backend_set_bf16(gpu, false);
    ck_assert_msg(bn_backend_forward(gpu, tok, B, T, &err) == 0, "%s", err.msg);
    ck_assert_msg(bn_backend_logits(gpu, lg[1], &err) == 0, "%s", err.msg);
    double mx = 0, md = 0;
    for (size_t i = 0; i < nl; i++) {
        mx = fmax(mx, fabs(lg[0][i]));
        md = fmax(md, fabs((double)lg[0][i] - lg[1][i]));
    }
    printf("bf16 path random25M: FP32 forward max|gpu-cpu| %.3g x max|logit| (limit 1e-4)\n", md / mx);
    ck_assert_msg(md <= 1e-4 * mx, "FP32 forward of a bf16 model: %g > 1e-4 x %g", md, mx);
    ck_assert_int_ne(bn_backend_backward(gpu, &err), 0); /* its FP32 forward kept nothing */
    bn_backend_set_bf16(gpu, true);
    ck_assert_msg(bn_backend_forward(gpu, tok, B, T, &err) == 0, "%s", err.msg);
    ck_assert_msg(bn_backend_loss(gpu, tgt, NULL, &loss[1], NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(bn_backend_backward(gpu, &err) == 0, "%s", err.msg);
    ck_assert(fabs(loss[1] - loss[0]) <= 0.01 * loss[0]);
    for (int i = 0; i < 2; i++) {
        free(lg[i]);
        free(g[i]);
        bn_backend_free(bk[i]);
    }
    bn_llama_free(m);
}
END_TEST

/* 100 STE + AdamW steps (lr 1e-3) of the random 25M model on the stories corpus: the bf16
 * path tracks the GPU's FP32 path (itself checked against the CPU above) within 3% at steps
 * 50 and 100 (two trajectories of ternary codes at this rate part by ~2% from rounding
 * alone), and lowers the loss. */
START_TEST(test_bf16_finetune_25m)
{
    size_t n;
    int32_t *ids = corpus(&n);
    enum { STEPS = 100, B = 4, T = 128 };
    float lf[STEPS], lb[STEPS];
    bn_llama *mf = random_25m(), *mb = random_25m();
    bn_backend *f32 = make(mf, BN_DEVICE_CUDA, B, T, true, false, true);
    bn_backend *b16 = make(mb, BN_DEVICE_CUDA, B, T, true, true, true);
    train(f32, ids, n, B, T, 0, STEPS, lf);
    train(b16, ids, n, B, T, 0, STEPS, lb);
    const int at[2] = { 50, 100 };
    for (int i = 0; i < 2; i++) {
        double a = mean10(lf, at[i]), g = mean10(lb, at[i]);
        printf("finetune random25M STE step %3d: loss fp32 %.4f bf16 path %.4f  rel %.2f%% (limit 3%%)\n",
               at[i], a, g, 100 * fabs(g - a) / a);
        ck_assert_msg(fabs(g - a) <= 0.03 * a, "step %d: fp32 %g bf16 %g", at[i], a, g);
    }
    ck_assert_msg(mean10(lb, STEPS) < 0.8 * lb[0], "bf16 training did not lower the loss: %g -> %g", lb[0], mean10(lb, STEPS));
    bn_backend_free(f32);
    bn_backend_free(b16);
    bn_llama_free(mf);
    bn_llama_free(mb);
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

/* ---- the fine-tune trainer ---- */

typedef struct trainer_set {
    bn_backend_tensor t[128];
    float *xsq[128];
    int n;
} trainer_set;

/* Every tensor as the finetune stage lists them: the linears ternary (with random
 * calibration statistics when xsq), all trainable, Muon for the hidden matrices. */
static void trainer_tensors(bn_llama *m, bool xsq, trainer_set *ts)
{
    static const bn_role lr[] = { BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV, BN_ROLE_WO,
                                  BN_ROLE_FFN_NORM, BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN };
    memset(ts, 0, sizeof *ts);
    uint32_t seed = 5;
    for (int l = -1; l <= m->cfg.n_layers; l++) {
        int nr = (l < 0 || l == m->cfg.n_layers) ? 1 : 9;
        for (int k = 0; k < nr; k++) {
            bn_role r = l < 0 ? BN_ROLE_EMBED : l == m->cfg.n_layers ? BN_ROLE_FINAL_NORM : lr[k];
            int rows, cols;
            float *w = bn_llama_tensor(m, &m->params, r, l < 0 || l == m->cfg.n_layers ? -1 : l, &rows, &cols);
            if (!w) continue;
            bool lin = r != BN_ROLE_EMBED && r != BN_ROLE_FINAL_NORM && r != BN_ROLE_ATTN_NORM &&
                       r != BN_ROLE_FFN_NORM;
            bn_backend_tensor *t = &ts->t[ts->n];
            char *name = malloc(64);
            snprintf(name, 64, "%s.%d", bn_role_name(r), l);
            *t = (bn_backend_tensor){ .name = name, .off = (size_t)(w - m->params_mem), .rows = rows,
                                      .cols = cols, .ternary = lin, .trainable = true,
                                      .group = lin ? BN_OPTIM_MUON : BN_OPTIM_ADAMW };
            if (lin && xsq) {
                ts->xsq[ts->n] = malloc((size_t)cols * sizeof(float));
                for (int j = 0; j < cols; j++) {
                    seed = seed * 1664525u + 1013904223u;
                    ts->xsq[ts->n][j] = 0.05f + (float)(seed >> 8) / 16777216.0f;
                }
                t->xsq = ts->xsq[ts->n];
            }
            ts->n++;
        }
    }
}

static void trainer_free(trainer_set *ts)
{
    for (int i = 0; i < ts->n; i++) {
        free((char *)ts->t[i].name);
        free(ts->xsq[i]);
    }
}

static bn_backend *make_trainer(bn_llama *m, bn_device dev, int B, int T, bool bf16,
                                const trainer_set *ts, bool per_tensor, int64_t total)
{
    bn_backend_opts o = { .device = dev, .gpu = 0, .max_B = B, .max_T = T, .train = true,
                          .bf16 = bf16, .trainer = true };
    bn_backend *b;
    bn_err err = { 0 };
    ck_assert_msg(bn_backend_new(m, &o, &b, &err) == 0, "%s", err.msg);
    bn_backend_train tc = { .t = ts->t, .n_t = ts->n };
    bn_quant_params_default(&tc.qp);
    tc.qp.tau = 0.5f;
    tc.qp.per_tensor = per_tensor;
    tc.n_taus = bn_quant_tau_grid(tc.qp.tau, tc.taus, 8);
    bn_optim_config_default(&tc.oc);
    tc.oc.total_steps = total;
    ck_assert_msg(bn_backend_train_setup(b, &tc, &err) == 0, "%s", err.msg);
    return b;
}

/* codes agree except at ties; per-row scales within 1e-4 */
static void compare_materialized(const float *c, const float *g, const trainer_set *ts, double lam,
                                 const char *what)
{
    size_t codes = 0, differ = 0;
    double worst = 0, worst_v = 0;
    for (int i = 0; i < ts->n; i++) {
        const bn_backend_tensor *t = &ts->t[i];
        for (int r = 0; r < t->rows; r++) {
            const float *a = c + t->off + (size_t)r * t->cols, *b = g + t->off + (size_t)r * t->cols;
            float sa = 0, sb = 0;
            for (int j = 0; j < t->cols; j++) {
                if (t->ternary && lam >= 1) {
                    int qa = (a[j] > 0) - (a[j] < 0), qb = (b[j] > 0) - (b[j] < 0);
                    codes++;
                    differ += qa != qb;
                    sa = fmaxf(sa, fabsf(a[j]));
                    sb = fmaxf(sb, fabsf(b[j]));
                } else {
                    worst_v = fmax(worst_v, fabs((double)a[j] - b[j]) / (fabs(a[j]) + 1e-3));
                }
            }
            if (sa > 0 && sb > 0) worst = fmax(worst, fabs(sa - sb) / sa);
        }
    }
    printf("materialize %-22s: %zu of %zu codes differ (%.4f%%), max scale rel diff %.3g, max value rel diff %.3g\n",
           what, differ, codes, codes ? 100.0 * differ / codes : 0.0, worst, worst_v);
    ck_assert_msg(differ <= codes / 1000 + 2, "%s: %zu codes differ", what, differ);
    ck_assert_msg(worst <= 1e-4, "%s: scales differ by %g", what, worst);
    ck_assert_msg(worst_v <= 1e-3, "%s: values differ by %g", what, worst_v);
}

START_TEST(test_trainer_quantizer)
{
    bn_err err = { 0 };
    float *c = NULL, *g = NULL;
    for (int mode = 0; mode < 3; mode++) {
        /* fresh models: a CPU trainer writes its compute weights into the host model */
        bn_llama *mc = load_stories(), *mg = load_stories();
        size_t np = mc->n_params;
        if (!c) {
            c = malloc(np * 4);
            g = malloc(np * 4);
        }
        trainer_set ts;
        trainer_tensors(mc, mode != 1, &ts);
        bool per_tensor = mode == 2;
        bn_backend *bc = make_trainer(mc, BN_DEVICE_CPU, 2, 32, false, &ts, per_tensor, 100);
        bn_backend *bg = make_trainer(mg, BN_DEVICE_CUDA, 2, 32, false, &ts, per_tensor, 100);
        const double lams[2] = { 1.0, 0.5 };
        for (int li = 0; li < 2; li++) {
            ck_assert_msg(bn_backend_materialize(bc, lams[li], &err) == 0, "%s", err.msg);
            ck_assert_msg(bn_backend_materialize(bg, lams[li], &err) == 0, "%s", err.msg);
            ck_assert_int_eq(bn_backend_get(bc, BN_BK_COMPUTE, c, &err), 0);
            ck_assert_msg(bn_backend_get(bg, BN_BK_COMPUTE, g, &err) == 0, "%s", err.msg);
            char what[64];
            snprintf(what, sizeof what, "%s lam %.1f", mode == 0 ? "refine/row" : mode == 1 ? "absmean/row" : "refine/tensor", lams[li]);
            compare_materialized(c, g, &ts, lams[li], what);
        }
        bn_backend_free(bc);
        bn_backend_free(bg);
        trainer_free(&ts);
        bn_llama_free(mc);
        bn_llama_free(mg);
    }
    free(c);
    free(g);
}
END_TEST

static double rel_l2(const float *a, const float *b, const float *base, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)a[i] - (base ? base[i] : 0), y = (double)b[i] - (base ? base[i] : 0);
        d += (x - y) * (x - y);
        r += x * x;
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

START_TEST(test_trainer_optimizer)
{
    bn_llama *mc = load_stories(), *mg = load_stories();
    size_t np = mc->n_params;
    trainer_set ts;
    trainer_tensors(mc, false, &ts);
    bn_backend *bc = make_trainer(mc, BN_DEVICE_CPU, 2, 32, false, &ts, false, 50);
    bn_backend *bg = make_trainer(mg, BN_DEVICE_CUDA, 2, 32, false, &ts, false, 50);
    bn_backend_optim_set_steps(bc, 25, 25); /* past the warm-up: lr > 0 */
    bn_backend_optim_set_steps(bg, 25, 25);
    float *w0 = malloc(np * 4), *grad = malloc(np * 4), *a = malloc(np * 4), *b = malloc(np * 4);
    bn_err err = { 0 };
    ck_assert_int_eq(bn_backend_get(bc, BN_BK_PARAMS, w0, &err), 0);
    uint32_t seed = 9;
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < np; i++) {
            seed = seed * 1664525u + 1013904223u;
            grad[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 0.02f;
        }
        ck_assert_int_eq(bn_backend_set(bc, BN_BK_GRADS, grad, &err), 0);
        ck_assert_msg(bn_backend_set(bg, BN_BK_GRADS, grad, &err) == 0, "%s", err.msg);
        bn_optim_stats sc, sg;
        ck_assert_int_eq(bn_backend_optim_step(bc, &sc, &err), 0);
        ck_assert_msg(bn_backend_optim_step(bg, &sg, &err) == 0, "%s", err.msg);
        ck_assert(fabs(sc.grad_norm - sg.grad_norm) <= 1e-5 * sc.grad_norm);
        ck_assert(sc.lr == sg.lr && sc.muon_lr == sg.muon_lr);
    }
    ck_assert_int_eq(bn_backend_get(bc, BN_BK_PARAMS, a, &err), 0);
    ck_assert_int_eq(bn_backend_get(bg, BN_BK_PARAMS, b, &err), 0);
    double e = rel_l2(a, b, w0, np);
    printf("optimizer MuGrokfast 3 steps: weight update rel L2 gpu vs cpu %.3g (limit 2e-3)\n", e);
    ck_assert_msg(e <= 2e-3, "update differs by %g", e);
    int ns = bn_backend_optim_state_count(bc);
    ck_assert_int_eq(ns, bn_backend_optim_state_count(bg));
    double worst = 0;
    for (int i = 0; i < ns; i++) {
        size_t n1, n2;
        const char *n_c = bn_backend_optim_state_name(bc, i, &n1), *n_g = bn_backend_optim_state_name(bg, i, &n2);
        ck_assert_str_eq(n_c, n_g);
        ck_assert_uint_eq(n1, n2);
        ck_assert_int_eq(bn_backend_optim_state_get(bc, i, a, &err), 0);
        ck_assert_msg(bn_backend_optim_state_get(bg, i, b, &err) == 0, "%s", err.msg);
        worst = fmax(worst, rel_l2(a, b, NULL, n1));
    }
    printf("optimizer state: %d arrays, names equal, max rel L2 %.3g\n", ns, worst);
    ck_assert_msg(worst <= 2e-3, "state differs by %g", worst);
    bn_backend_free(bc);
    bn_backend_free(bg);
    trainer_free(&ts);
    free(w0); free(grad); free(a); free(b);
    bn_llama_free(mc);
    bn_llama_free(mg);
}
END_TEST

/* The stage's step (stages/finetune.c train_step): materialize (quant warm-up over the first
 * 10 steps), forward, teacher forward, loss + distillation, backward, MuGrokfast. */
static void stage_steps(bn_backend *b, bn_backend *teacher, const int32_t *ids, size_t n_ids,
                        int B, int T, int s0, int s1, float *losses)
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
        ck_assert_msg(bn_backend_materialize(b, s < 10 ? s / 10.0 : 1.0, &err) == 0, "%s", err.msg);
        ck_assert_msg(bn_backend_forward(b, tok, B, T, &err) == 0, "%s", err.msg);
        if (teacher) ck_assert_msg(bn_backend_forward(teacher, tok, B, T, &err) == 0, "%s", err.msg);
        double ce, kl;
        ck_assert_msg(bn_backend_loss_distill(b, teacher, tgt, 0.5, &ce, &kl, &err) == 0, "%s", err.msg);
        losses[s] = (float)(ce + (teacher ? 0.5 * kl : 0));
        ck_assert_int_eq(bn_backend_zero_grad(b, &err), 0);
        ck_assert_msg(bn_backend_backward(b, &err) == 0, "%s", err.msg);
        bn_optim_stats st;
        ck_assert_msg(bn_backend_optim_step(b, &st, &err) == 0, "%s", err.msg);
        ck_assert(!st.skipped);
    }
    free(tok);
    free(tgt);
}

/* The fine-tune trainer on the bf16 path (random 25M, head_dim 64: materialize into the
 * FP32 compute weights and their bf16 copy, the teacher's bf16 forward, MuGrokfast): 60
 * steps track the trainer in FP32 within 3% at steps 30 and 60 and lower the loss; then
 * the FP32 evaluation forward of the bf16-trained model agrees with its bf16 forward
 * (loss within 1%). */
START_TEST(test_trainer_bf16_25m)
{
    size_t n;
    int32_t *ids = corpus(&n);
    enum { STEPS = 60, B = 4, T = 128 };
    float lg[2][STEPS];
    bn_llama *m0 = random_25m();
    trainer_set ts;
    trainer_tensors(m0, true, &ts);
    bn_err err = { 0 };
    for (int bf = 0; bf < 2; bf++) {
        bn_llama *mg = random_25m(), *tg = random_25m();
        bn_backend *gpu = make_trainer(mg, BN_DEVICE_CUDA, B, T, bf, &ts, false, STEPS);
        bn_backend *tgpu = make(tg, BN_DEVICE_CUDA, B, T, false, bf, false);
        stage_steps(gpu, tgpu, ids, n, B, T, 0, STEPS, lg[bf]);
        if (bf) {
            int32_t *tok = malloc((size_t)B * T * sizeof(int32_t)), *tgt = malloc((size_t)B * T * sizeof(int32_t));
            memcpy(tok, ids, (size_t)B * T * sizeof(int32_t));
            memcpy(tgt, ids + 1, (size_t)B * T * sizeof(int32_t));
            float l16, l32;
            ck_assert_msg(bn_backend_forward(gpu, tok, B, T, &err) == 0, "%s", err.msg);
            ck_assert_msg(bn_backend_loss(gpu, tgt, NULL, &l16, NULL, &err) == 0, "%s", err.msg);
            bn_backend_set_bf16(gpu, false);
            ck_assert_msg(bn_backend_forward(gpu, tok, B, T, &err) == 0, "%s", err.msg);
            ck_assert_msg(bn_backend_loss(gpu, tgt, NULL, &l32, NULL, &err) == 0, "%s", err.msg);
            printf("trainer random25M bf16 path: loss bf16 forward %.5f, FP32 forward %.5f\n", l16, l32);
            ck_assert_msg(isfinite(l32) && fabs(l16 - l32) <= 0.01 * l32, "bf16 %g vs FP32 %g", l16, l32);
            free(tok);
            free(tgt);
        }
        bn_backend_free(gpu);
        bn_backend_free(tgpu);
        bn_llama_free(mg);
        bn_llama_free(tg);
    }
    const int at[2] = { 30, 60 };
    for (int i = 0; i < 2; i++) {
        double a = mean10(lg[0], at[i]), g = mean10(lg[1], at[i]);
        printf("trainer random25M step %3d: loss fp32 %.4f bf16 path %.4f  rel %.2f%% (limit 3%%)\n",
               at[i], a, g, 100 * fabs(g - a) / a);
        ck_assert_msg(fabs(g - a) <= 0.03 * a, "step %d: fp32 %g bf16 %g", at[i], a, g);
    }
    ck_assert_msg(mean10(lg[1], STEPS) < mean10(lg[1], 10), "bf16 trainer did not lower the loss");
    trainer_free(&ts);
    bn_llama_free(m0);
    free(ids);
}
END_TEST

START_TEST(test_trainer_finetune)
{
    size_t n;
    int32_t *ids = corpus(&n);
    enum { STEPS = 200, B = 8, T = 64 };
    float lc[STEPS], lg[2][STEPS];
    bn_llama *mc = load_stories(), *tc = load_stories(), *tg = load_stories();
    trainer_set ts;
    trainer_tensors(mc, true, &ts);
    bn_backend *cpu = make_trainer(mc, BN_DEVICE_CPU, B, T, false, &ts, false, STEPS);
    bn_backend *tcpu = make(tc, BN_DEVICE_CPU, B, T, false, false, false);
    stage_steps(cpu, tcpu, ids, n, B, T, 0, STEPS, lc);
    /* GPU in FP32 (the same math: tight) and in bf16 (the stage's mode) */
    for (int bf = 0; bf < 2; bf++) {
        bn_llama *mg = load_stories();
        bn_backend *gpu = make_trainer(mg, BN_DEVICE_CUDA, B, T, bf, &ts, false, STEPS);
        bn_backend *tgpu = make(tg, BN_DEVICE_CUDA, B, T, false, bf, false);
        stage_steps(gpu, tgpu, ids, n, B, T, 0, STEPS, lg[bf]);
        bn_backend_free(gpu);
        bn_backend_free(tgpu);
        bn_llama_free(mg);
    }
    const int at[3] = { 50, 100, 200 };
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        double a = mean10(lc, at[i]), f = mean10(lg[0], at[i]), g = mean10(lg[1], at[i]);
        printf("trainer stories260K (refine, warm-up, distill 0.5, MuGrokfast) step %3d: loss cpu %.4f "
               "gpu fp32 %.4f (rel %.3f%%) gpu bf16 %.4f (rel %.2f%%, limit 3%%)\n",
               at[i], a, f, 100 * fabs(f - a) / a, g, 100 * fabs(g - a) / a);
        bad += fabs(g - a) > 0.03 * a;
    }
    /* the limit is on the stage's mode (bf16); the FP32 line shows how far a trajectory of
     * ternary codes drifts from rounding alone (the round-trip tests check FP32 steps): up
     * to 1.3% at step 100, where the loss climbs out of the warm-up, so bf16 gets 3% */
    ck_assert_msg(!bad, "GPU bf16 losses outside 3%% of the CPU's (table above)");
    ck_assert_msg(mean10(lg[1], 200) < mean10(lg[1], 20), "GPU training did not lower the loss");
    bn_backend_free(cpu);
    bn_backend_free(tcpu);
    trainer_free(&ts);
    bn_llama_free(mc);
    bn_llama_free(tc);
    bn_llama_free(tg);
    free(ids);
}
END_TEST

/* checkpoint as the stage writes it: shadows + named state + applied steps */
typedef struct tckpt {
    float *p;
    float *st[512];
    int ns;
    int64_t applied;
} tckpt;

static void tsave(bn_backend *b, size_t np, tckpt *c)
{
    bn_err err = { 0 };
    c->p = malloc(np * 4);
    ck_assert_int_eq(bn_backend_get(b, BN_BK_PARAMS, c->p, &err), 0);
    c->ns = bn_backend_optim_state_count(b);
    ck_assert_int_le(c->ns, 512);
    for (int i = 0; i < c->ns; i++) {
        size_t n;
        bn_backend_optim_state_name(b, i, &n);
        c->st[i] = malloc(n * 4);
        ck_assert_int_eq(bn_backend_optim_state_get(b, i, c->st[i], &err), 0);
    }
    c->applied = bn_backend_optim_applied_steps(b);
}

static void trestore(bn_backend *b, const tckpt *c, int64_t step)
{
    bn_err err = { 0 };
    ck_assert_int_eq(bn_backend_set(b, BN_BK_PARAMS, c->p, &err), 0);
    ck_assert_int_eq(bn_backend_optim_state_count(b), c->ns);
    for (int i = 0; i < c->ns; i++) ck_assert_int_eq(bn_backend_optim_state_set(b, i, c->st[i], &err), 0);
    bn_backend_optim_set_steps(b, step, c->applied);
}

static void tfree(tckpt *c)
{
    free(c->p);
    for (int i = 0; i < c->ns; i++) free(c->st[i]);
}

START_TEST(test_trainer_checkpoint)
{
    size_t n;
    int32_t *ids = corpus(&n);
    enum { B = 8, T = 64 };
    float ref[40], got[40];
    bn_llama *m = load_stories();
    trainer_set ts;
    trainer_tensors(m, true, &ts);
    bn_backend *g0 = make_trainer(m, BN_DEVICE_CUDA, B, T, false, &ts, false, 40);
    stage_steps(g0, NULL, ids, n, B, T, 0, 40, ref);
    bn_backend_free(g0);
    bn_backend *g1 = make_trainer(m, BN_DEVICE_CUDA, B, T, false, &ts, false, 40);
    stage_steps(g1, NULL, ids, n, B, T, 0, 20, got);
    tckpt c1, c2;
    tsave(g1, m->n_params, &c1);
    bn_backend_free(g1);
    bn_backend *c = make_trainer(m, BN_DEVICE_CPU, B, T, false, &ts, false, 40);
    trestore(c, &c1, 20);
    stage_steps(c, NULL, ids, n, B, T, 20, 30, got);
    tsave(c, m->n_params, &c2);
    bn_backend_free(c);
    bn_backend *g2 = make_trainer(m, BN_DEVICE_CUDA, B, T, false, &ts, false, 40);
    trestore(g2, &c2, 30);
    stage_steps(g2, NULL, ids, n, B, T, 30, 40, got);
    bn_backend_free(g2);
    for (int s = 0; s < 40; s++)
        ck_assert_msg(fabs(got[s] - ref[s]) <= 0.01 * ref[s], "step %d: resumed %g, uninterrupted %g", s, got[s], ref[s]);
    printf("trainer round trip GPU(20)->CPU(10)->GPU(10): step 39 loss %.5f, uninterrupted %.5f\n", got[39], ref[39]);
    tfree(&c1);
    tfree(&c2);
    trainer_free(&ts);
    bn_llama_free(m);
    free(ids);
}
END_TEST

#ifdef BN_HAVE_CUDA
START_TEST(test_attention_tc)
{
    static const int shapes[][5] = { /* B, T, H, KV, hd */
        { 2, 128, 4, 2, 64 }, { 1, 200, 4, 1, 32 }, { 1, 96, 2, 2, 128 }, { 2, 64, 4, 4, 16 },
        { 8, 512, 32, 4, 64 } /* TinyLlama-1.1B */
    };
    for (size_t n = 0; n < sizeof shapes / sizeof shapes[0]; n++) {
        const int *d = shapes[n];
        bn_cu_attn_check c;
        bn_err err = { 0 };
        ck_assert_msg(bn_cu_attention_check(d[0], d[1], d[2], d[3], d[4], 17u + (unsigned)n, &c, &err) == 0,
                      "%s", err.msg);
        printf("attention tc B=%d T=%d H=%d KV=%d hd=%d: rel err y %.2e lse %.2e dq %.2e dk %.2e "
               "dv %.2e; ms fwd %.3f (fp32) %.3f (tc), bwd %.3f (fp32) %.3f (tc)\n",
               d[0], d[1], d[2], d[3], d[4], c.err_y, c.err_lse, c.err_dq, c.err_dk, c.err_dv,
               c.ms_fwd_ref, c.ms_fwd_tc, c.ms_bwd_ref, c.ms_bwd_tc);
        const double e[5] = { c.err_y, c.err_lse, c.err_dq, c.err_dk, c.err_dv };
        const char *what[5] = { "y", "lse", "dq", "dk", "dv" };
        for (int x = 0; x < 5; x++)
            ck_assert_msg(isfinite(e[x]) && e[x] <= 2e-2, "B=%d T=%d H=%d KV=%d hd=%d: %s rel err %g",
                          d[0], d[1], d[2], d[3], d[4], what[x], e[x]);
    }
}
END_TEST
#endif

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
    tcase_add_test(tc, test_bf16_path_25m);
    tcase_add_test(tc, test_bf16_finetune_25m);
    tcase_add_test(tc, test_checkpoint_round_trip);
    tcase_add_test(tc, test_trainer_quantizer);
    tcase_add_test(tc, test_trainer_optimizer);
    tcase_add_test(tc, test_trainer_finetune);
    tcase_add_test(tc, test_trainer_bf16_25m);
    tcase_add_test(tc, test_trainer_checkpoint);
#ifdef BN_HAVE_CUDA
    tcase_add_test(tc, test_attention_tc);
#endif
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
