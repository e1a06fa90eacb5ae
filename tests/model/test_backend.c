/* test_backend.c - the backend seam on the CPU (backend/backend.h) and the device probe
 * (backend/device.h): the CPU backend computes what bn_llama computes, its STE projection
 * is ternary per row, AdamW through the seam lowers the loss, state round-trips through
 * get/set, and a "cuda" backend is refused with a reason on a host without a GPU. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "bn_test.h"
#include "model/llama.h"

static bn_llama *tiny(uint64_t seed)
{
    bn_model_config c;
    memset(&c, 0, sizeof c);
    c.arch = BN_ARCH_LLAMA;
    c.dim = 32; c.hidden_dim = 64; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2;
    c.head_dim = 8; c.vocab_size = 50; c.max_seq_len = 64; c.rms_norm_eps = 1e-5f;
    c.rope_theta = 10000.0f; c.bos_id = -1; c.eos_id = -1;
    bn_llama *m;
    bn_err err = { 0 };
    ck_assert_msg(bn_llama_new(&c, seed, &m, &err) == 0, "%s", err.msg);
    return m;
}

START_TEST(test_device_names)
{
    ck_assert_int_eq(bn_device_parse("cpu"), BN_DEVICE_CPU);
    ck_assert_int_eq(bn_device_parse("cuda"), BN_DEVICE_CUDA);
    ck_assert_int_eq(bn_device_parse("auto"), BN_DEVICE_AUTO);
    ck_assert_int_eq(bn_device_parse("gpu"), -1);
    ck_assert_int_eq(bn_device_parse(NULL), -1);
    ck_assert_str_eq(bn_device_name(BN_DEVICE_CUDA), "cuda");
    ck_assert_int_eq(bn_device_resolve(BN_DEVICE_CPU), BN_DEVICE_CPU);
    bn_device r = bn_device_resolve(BN_DEVICE_AUTO);
    ck_assert_int_eq(r, bn_device_cuda_usable(NULL, 0) ? BN_DEVICE_CUDA : BN_DEVICE_CPU);
}
END_TEST

START_TEST(test_cuda_refused_without_gpu)
{
    char why[512] = "";
    if (bn_device_cuda_usable(why, sizeof why)) return; /* a GPU host: tests/gpu covers it */
    ck_assert_int_eq(bn_device_cuda_count(), 0);
    ck_assert_ptr_nonnull(strstr(why, "device \"cuda\" needs"));
    ck_assert_ptr_nonnull(strstr(why, bn_device_cuda_built() ? "GPU" : "built with CUDA"));
    bn_llama *m = tiny(1);
    bn_backend_opts o = { .device = BN_DEVICE_CUDA, .max_B = 1, .max_T = 8, .tau = 0.5f };
    bn_backend *b = (bn_backend *)1;
    bn_err err = { 0 };
    ck_assert_int_ne(bn_backend_new(m, &o, &b, &err), 0);
    ck_assert_ptr_null(b);
    ck_assert_ptr_nonnull(strstr(err.msg, "cuda"));
    o.device = BN_DEVICE_AUTO; /* unresolved */
    ck_assert_int_eq(bn_backend_new(m, &o, &b, &err), BN_EINVAL);
    bn_llama_free(m);
}
END_TEST

START_TEST(test_cpu_matches_llama_and_trains)
{
    bn_llama *ref = tiny(3), *m = tiny(3);
    int B = 2, T = 16, N = B * T, V = 50;
    int32_t tok[32], tgt[32];
    for (int i = 0; i < N; i++) {
        tok[i] = (i * 7 + 3) % V;
        tgt[i] = (i * 7 + 10) % V;
    }
    bn_err err = { 0 };
    ck_assert_int_eq(bn_llama_forward(ref, tok, B, T, &err), 0);
    bn_backend_opts o = { .device = BN_DEVICE_CPU, .max_B = B, .max_T = T, .train = true,
                          .ste = false, .tau = 0.5f };
    bn_backend *b;
    ck_assert_int_eq(bn_backend_new(m, &o, &b, &err), 0);
    ck_assert_int_eq(bn_backend_forward(b, tok, B, T, &err), 0);
    float *lg = malloc((size_t)N * V * sizeof(float));
    ck_assert_int_eq(bn_backend_logits(b, lg, &err), 0);
    ck_assert(!memcmp(lg, ref->acts.logits, (size_t)N * V * sizeof(float)));
    free(lg);
    bn_backend_free(b);

    /* STE: compute weights ternary per row, master weights untouched */
    o.ste = true;
    ck_assert_int_eq(bn_backend_new(m, &o, &b, &err), 0);
    int rows, cols;
    float *w = bn_llama_tensor(m, &m->params, BN_ROLE_WQ, 1, &rows, &cols);
    for (int r = 0; r < rows; r++) {
        float s = 0;
        for (int j = 0; j < cols; j++) {
            float x = fabsf(w[r * cols + j]);
            if (x == 0) continue;
            if (s == 0) s = x;
            ck_assert_float_eq(x, s);
        }
        ck_assert_float_gt(s, 0);
    }
    size_t np = bn_backend_n_params(b);
    float *p = malloc(np * sizeof(float));
    ck_assert_int_eq(bn_backend_get(b, BN_BK_PARAMS, p, &err), 0);
    ck_assert(!memcmp(p, ref->params_mem, np * sizeof(float)));

    /* AdamW through the seam lowers the loss on a fixed batch */
    bn_backend_adamw a = { 3e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f };
    float first = 0, loss = 0;
    for (int s = 0; s < 30; s++) {
        double gn;
        ck_assert_int_eq(bn_backend_forward(b, tok, B, T, &err), 0);
        ck_assert_int_eq(bn_backend_loss(b, tgt, NULL, &loss, NULL, &err), 0);
        if (s == 0) first = loss;
        ck_assert_int_eq(bn_backend_zero_grad(b, &err), 0);
        ck_assert_int_eq(bn_backend_backward(b, &err), 0);
        ck_assert_int_eq(bn_backend_adamw_step(b, &a, s, &gn, &err), 0);
        ck_assert(gn > 0 && isfinite(gn));
    }
    ck_assert_msg(loss < 0.8 * first, "loss %g from %g", loss, first);

    /* optimizer state and weights move out and back exactly */
    float *mm = malloc(np * sizeof(float)), *vv = malloc(np * sizeof(float));
    ck_assert_int_eq(bn_backend_get(b, BN_BK_ADAM_M, mm, &err), 0);
    ck_assert_int_eq(bn_backend_get(b, BN_BK_ADAM_V, vv, &err), 0);
    ck_assert_int_eq(bn_backend_get(b, BN_BK_PARAMS, p, &err), 0);
    bn_llama *m2 = tiny(9);
    memcpy(m2->params_mem, p, np * sizeof(float));
    bn_backend *b2;
    ck_assert_int_eq(bn_backend_new(m2, &o, &b2, &err), 0);
    ck_assert_int_ne(bn_backend_set(b2, BN_BK_ADAM_M, mm, &err), 0); /* before prepare */
    ck_assert_int_eq(bn_backend_adamw_prepare(b2, &a, &err), 0);
    ck_assert_int_eq(bn_backend_set(b2, BN_BK_ADAM_M, mm, &err), 0);
    ck_assert_int_eq(bn_backend_set(b2, BN_BK_ADAM_V, vv, &err), 0);
    /* one more step on both: identical weights */
    bn_backend *both[2] = { b, b2 };
    float *after[2];
    for (int i = 0; i < 2; i++) {
        double gn;
        ck_assert_int_eq(bn_backend_forward(both[i], tok, B, T, &err), 0);
        ck_assert_int_eq(bn_backend_loss(both[i], tgt, NULL, &loss, NULL, &err), 0);
        ck_assert_int_eq(bn_backend_zero_grad(both[i], &err), 0);
        ck_assert_int_eq(bn_backend_backward(both[i], &err), 0);
        ck_assert_int_eq(bn_backend_adamw_step(both[i], &a, 30, &gn, &err), 0);
        after[i] = malloc(np * sizeof(float));
        ck_assert_int_eq(bn_backend_get(both[i], BN_BK_PARAMS, after[i], &err), 0);
    }
    ck_assert(!memcmp(after[0], after[1], np * sizeof(float)));
    for (int i = 0; i < 2; i++) free(after[i]);
    free(mm);
    free(vv);
    free(p);
    bn_backend_free(b);
    bn_backend_free(b2);
    bn_llama_free(m);
    bn_llama_free(m2);
    bn_llama_free(ref);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("backend");
    TCase *tc = tcase_create("cpu");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_device_names);
    tcase_add_test(tc, test_cuda_refused_without_gpu);
    tcase_add_test(tc, test_cpu_matches_llama_and_trains);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
