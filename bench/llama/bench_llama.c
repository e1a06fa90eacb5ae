/* bench_llama.c - Llama forward / training-step throughput of bitnetd's engine.
 *
 * Builds a model from a named init-model shape (default "25m": dim 512, hidden 1536,
 * 8 layers, 8 heads, vocab 8192, untied) with random weights, then times
 *   forward: bn_llama_forward over batch x seq tokens (no gradients kept);
 *   train:   forward + masked cross-entropy + backward + optimizer step (AdamW through
 *            the engine's optimizer with Grokfast off, or MuGrokfast, or plain SGD).
 * Prints one JSON line: mode, tokens/s, seconds per step, OpenBLAS core. bench/llama/
 * run.sh runs it beside bench/llama/torch_llama.py (the same model in PyTorch) under
 * several OpenBLAS core types and prints the README table.
 *
 * usage: bench_llama forward|train [--shape 25m | --model HF_DIR] [--threads 2]
 *        [--batch 4] [--seq 256] [--iters 5] [--warmup 2] [--optim adamw|mugrokfast|sgd]
 *        [--no-core-select]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/blas.h"
#include "formats/hf.h"
#include "formats/initmodel.h"
#include "model/llama.h"
#include "model/optim.h"

typedef struct bench_args {
    const char *mode, *shape, *optim, *model;
    int threads, batch, seq, iters, warmup;
    bool core_select;
} bench_args;

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int parse(int argc, char **argv, bench_args *a)
{
    *a = (bench_args){ .shape = "25m", .optim = "adamw", .threads = 2, .batch = 4, .seq = 256,
                       .iters = 5, .warmup = 2, .core_select = true };
    if (argc < 2) return -1;
    a->mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--no-core-select")) { a->core_select = false; continue; }
        if (!v) return -1;
        i++;
        if (!strcmp(o, "--shape")) a->shape = v;
        else if (!strcmp(o, "--optim")) a->optim = v;
        else if (!strcmp(o, "--model")) a->model = v;
        else if (!strcmp(o, "--threads")) a->threads = atoi(v);
        else if (!strcmp(o, "--batch")) a->batch = atoi(v);
        else if (!strcmp(o, "--seq")) a->seq = atoi(v);
        else if (!strcmp(o, "--iters")) a->iters = atoi(v);
        else if (!strcmp(o, "--warmup")) a->warmup = atoi(v);
        else return -1;
    }
    if (strcmp(a->mode, "forward") && strcmp(a->mode, "train")) return -1;
    return a->threads > 0 && a->batch > 0 && a->seq > 0 && a->iters > 0 ? 0 : -1;
}

/* The engine's optimizer over every parameter tensor: AdamW everywhere (Grokfast off,
 * like torch.optim.AdamW + clip_grad_norm_), or MuGrokfast's own grouping. */
static bn_optim *make_optim(bn_llama *m, const char *kind, bn_err *err)
{
    static const bn_role roles[] = { BN_ROLE_EMBED, BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK,
                                     BN_ROLE_WV, BN_ROLE_WO, BN_ROLE_FFN_NORM, BN_ROLE_W_GATE,
                                     BN_ROLE_W_UP, BN_ROLE_W_DOWN, BN_ROLE_FINAL_NORM,
                                     BN_ROLE_HEAD };
    bool muon = !strcmp(kind, "mugrokfast");
    bn_optim_param ps[16 * 64];
    char names[16 * 64][48];
    int n = 0;
    for (size_t r = 0; r < sizeof roles / sizeof *roles; r++) {
        bool global = roles[r] == BN_ROLE_EMBED || roles[r] == BN_ROLE_HEAD ||
                      roles[r] == BN_ROLE_FINAL_NORM;
        if (roles[r] == BN_ROLE_HEAD && m->cfg.tied_embeddings) continue;
        for (int l = 0; l < (global ? 1 : m->cfg.n_layers) && n < 16 * 64; l++) {
            int rows, cols;
            float *w = bn_llama_tensor(m, &m->params, roles[r], l, &rows, &cols);
            float *g = bn_llama_tensor(m, &m->grads, roles[r], l, NULL, NULL);
            snprintf(names[n], sizeof names[n], "%s.%d", bn_role_name(roles[r]), l);
            ps[n] = (bn_optim_param){ .name = names[n], .w = w, .g = g,
                                      .rows = cols == 1 ? 1 : rows,
                                      .cols = cols == 1 ? rows : cols,
                                      .group = muon && bn_role_is_linear(roles[r])
                                                   ? BN_OPTIM_MUON : BN_OPTIM_ADAMW };
            n++;
        }
    }
    bn_optim_config c;
    bn_optim_config_default(&c);
    c.warmup_steps = 0;
    if (!muon) c.grokfast_lambda = 0;
    bn_optim *o;
    return bn_optim_new(&c, ps, n, &o, err) ? NULL : o;
}

static void sgd_step(bn_llama *m, float lr)
{
    for (size_t i = 0; i < m->n_params; i++) m->params_mem[i] -= lr * m->grads_mem[i];
}

int main(int argc, char **argv)
{
    bench_args a;
    if (argc == 2 && !strcmp(argv[1], "--print-wanted-core")) {
        const char *w = bn_blas_wanted_core();
        printf("%s\n", w ? w : bn_blas_core_name());
        return 0;
    }
    if (parse(argc, argv, &a)) {
        fprintf(stderr, "usage: bench_llama forward|train [--shape 25m] [--threads N] [--batch N]"
                        " [--seq N] [--iters N] [--warmup N] [--optim adamw|mugrokfast|sgd]"
                        " [--no-core-select]\n");
        return 2;
    }
    if (a.core_select) bn_blas_init(argc, argv, 0);
    bn_err err = { 0 };
    bn_llama *m = NULL;
    bool train = !strcmp(a.mode, "train");
    if (a.model) { /* a real HF folder instead of a random shape */
        bn_hf_model *hf;
        if (bn_hf_open(a.model, &hf, &err) || bn_llama_load(hf, &m, &err)) {
            fprintf(stderr, "bench_llama: %s\n", err.msg);
            return 1;
        }
        bn_hf_close(hf);
        a.shape = a.model;
    } else {
        bn_init_spec s;
        if (bn_initmodel_shape(a.shape, &s)) {
            fprintf(stderr, "bench_llama: unknown shape %s\n", a.shape);
            return 2;
        }
        bn_model_config c = { .arch = BN_ARCH_LLAMA, .dim = s.dim, .hidden_dim = s.hidden,
                              .n_layers = s.layers, .n_heads = s.heads,
                              .n_kv_heads = s.kv_heads, .head_dim = s.dim / s.heads,
                              .vocab_size = s.vocab, .max_seq_len = s.ctx,
                              .rms_norm_eps = 1e-5f, .rope_theta = 10000.0f,
                              .tied_embeddings = s.tied, .bos_id = 1, .eos_id = 2 };
        if (bn_llama_new(&c, 42, &m, &err)) {
            fprintf(stderr, "bench_llama: %s\n", err.msg);
            return 1;
        }
    }
    const bn_model_config c = m->cfg;
    bn_llama_set_threads(m, a.threads);
    if (bn_llama_reserve(m, a.batch, a.seq, train, &err)) {
        fprintf(stderr, "bench_llama: %s\n", err.msg);
        return 1;
    }
    bn_optim *opt = NULL;
    if (train && strcmp(a.optim, "sgd") && !(opt = make_optim(m, a.optim, &err))) {
        fprintf(stderr, "bench_llama: optimizer: %s\n", err.msg);
        return 1;
    }
    size_t N = (size_t)a.batch * a.seq;
    int32_t *tok = malloc((N + 1) * sizeof *tok);
    uint64_t r = 7;
    for (size_t i = 0; i <= N; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((r >> 33) % (uint64_t)c.vocab_size);
    }
    double t0 = 0, c0 = 0, loss = 0;
    for (int it = 0; it < a.warmup + a.iters; it++) {
        if (it == a.warmup) {
            t0 = clock_s(CLOCK_MONOTONIC);
            c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        }
        if (bn_llama_forward(m, tok, a.batch, a.seq, &err)) {
            fprintf(stderr, "bench_llama: %s\n", err.msg);
            return 1;
        }
        if (!train) continue;
        loss = bn_llama_loss(m, tok + 1, NULL, NULL);
        bn_llama_zero_grad(m);
        bn_llama_backward(m, &err);
        if (opt) bn_optim_step(opt, NULL);
        else sgd_step(m, 1e-3f);
    }
    double dt = (clock_s(CLOCK_MONOTONIC) - t0) / a.iters;
    double cpu = (clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0) / a.iters;
    printf("{\"engine\": \"bitnetd\", \"mode\": \"%s\", \"shape\": \"%s\", \"threads\": %d, "
           "\"batch\": %d, \"seq\": %d, \"optim\": \"%s\", \"core\": \"%s\", "
           "\"seconds_per_step\": %.4f, \"cpu_seconds_per_step\": %.4f, "
           "\"tokens_per_s\": %.1f, \"loss\": %.4f}\n",
           a.mode, a.shape, a.threads, a.batch, a.seq, train ? a.optim : "-",
           bn_blas_core_name(), dt, cpu, (double)N / dt, loss);
    bn_optim_free(opt);
    free(tok);
    bn_llama_free(m);
    return 0;
}
