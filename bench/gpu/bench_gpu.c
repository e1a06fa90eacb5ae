/* bench_gpu.c - STE fine-tuning throughput of the CUDA backend: a random Llama of a named
 * shape, batch B x T, bf16 tensor-core products, ternary STE linears, AdamW; warm-up
 * steps, then timed steps. Prints one JSON object (tokens/s, step ms, device bytes, MFU)
 * that bench/gpu/run.sh tabulates beside PyTorch (torch_ste.py).
 *   bench_gpu SHAPE [B T STEPS]     SHAPE: tinyllama-1.1b | 25m
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "base/clock.h"

#include "model/llama.h"


static int shape(const char *name, bn_model_config *c)
{
    memset(c, 0, sizeof *c);
    c->arch = BN_ARCH_LLAMA;
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->max_seq_len = 2048;
    c->bos_id = 1;
    c->eos_id = 2;
    if (!strcmp(name, "tinyllama-1.1b")) {
        c->dim = 2048; c->hidden_dim = 5632; c->n_layers = 22; c->n_heads = 32;
        c->n_kv_heads = 4; c->head_dim = 64; c->vocab_size = 32000;
        return 0;
    }
    if (!strcmp(name, "25m")) {
        c->dim = 512; c->hidden_dim = 1408; c->n_layers = 7; c->n_heads = 8;
        c->n_kv_heads = 4; c->head_dim = 64; c->vocab_size = 4096;
        return 0;
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_gpu tinyllama-1.1b|25m [B T STEPS]\n");
        return 2;
    }
    bn_model_config c;
    if (shape(argv[1], &c)) {
        fprintf(stderr, "unknown shape %s\n", argv[1]);
        return 2;
    }
    int B = argc > 2 ? atoi(argv[2]) : 8, T = argc > 3 ? atoi(argv[3]) : 512;
    int steps = argc > 4 ? atoi(argv[4]) : 10, warm = 3;
    char why[512];
    if (!bn_device_cuda_usable(why, sizeof why)) {
        fprintf(stderr, "%s\n", why);
        return 77;
    }
    bn_err err = { 0 };
    bn_llama *m;
    if (bn_llama_new(&c, 1, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    bn_backend_opts o = { .device = BN_DEVICE_CUDA, .gpu = 0, .max_B = B, .max_T = T,
                          .train = true, .bf16 = true, .ste = true, .tau = 0.5f };
    bn_backend *b;
    if (bn_backend_new(m, &o, &b, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int N = B * T;
    int32_t *tok = malloc((size_t)(N + 1) * sizeof(int32_t));
    uint32_t s = 1;
    for (int i = 0; i <= N; i++) {
        s = s * 1664525u + 1013904223u;
        tok[i] = (int32_t)((s >> 8) % (uint32_t)c.vocab_size);
    }
    bn_backend_adamw a = { 1e-4f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f };
    double t0 = 0;
    float loss = 0;
    for (int i = 0; i < warm + steps; i++) {
        if (i == warm) t0 = bn_clock_mono_s();
        double gn;
        if (bn_backend_forward(b, tok, B, T, &err) || bn_backend_loss(b, tok + 1, NULL, &loss, NULL, &err) ||
            bn_backend_zero_grad(b, &err) || bn_backend_backward(b, &err) ||
            bn_backend_adamw_step(b, &a, i, &gn, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    }
    double dt = bn_clock_mono_s() - t0; /* the optimizer step synchronises (global norm read back) */
    double P = (double)m->n_params;
    double flops_tok = 6.0 * (P - (double)c.vocab_size * c.dim) /* embedding lookup is free */
                     + 6.0 * c.n_layers * T * c.n_heads * c.head_dim; /* causal attention */
    double tps = (double)N * steps / dt;
    printf("{\"impl\": \"bitnetd-cuda\", \"shape\": \"%s\", \"B\": %d, \"T\": %d, \"params\": %.0f, "
           "\"tokens_per_s\": %.1f, \"step_ms\": %.2f, \"peak_bytes\": %zu, \"mfu\": %.4f, \"loss\": %.4f}\n",
           argv[1], B, T, P, tps, 1000 * dt / steps, bn_backend_device_bytes(b),
           tps * flops_tok / 989e12, loss);
    bn_backend_free(b);
    bn_llama_free(m);
    free(tok);
    return 0;
}
