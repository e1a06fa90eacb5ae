/* test_gguf_data.c - bitnetd's GGUF of a real model against the F32 GGUF that
 * llama.cpp's own converter made of it (../shared/data/stories260K/stories260K-f32.gguf):
 * same hyperparameters, same tokenizer metadata (tokens, scores, types, special ids,
 * model and pre), and llama.cpp's Q/K rows equal to the HF rows under
 * bn_gguf_qk_source_row. The model's rows (64, 172) do not fit TQ blocks: every
 * projection must be a reported fallback. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "stages/gguf_model.h"

static const bn_gguf_kv *kv(const bn_gguf_file *f, const char *key)
{
    const bn_gguf_kv *k = bn_gguf_find_kv(f, key);
    ck_assert_msg(k != NULL, "missing %s", key);
    return k;
}

START_TEST(matches_llama_cpp_converter)
{
    bn_err err;
    bn_gguf_file *ref;
    ck_assert_msg(bn_gguf_open(bn_test_data("stories260K/stories260K-f32.gguf"), &ref, &err) == 0, "%s", err.msg);
    bn_hf_model *hf;
    ck_assert_msg(bn_hf_open(bn_test_data("stories260K-hf"), &hf, &err) == 0, "%s", err.msg);
    const bn_model_config *c = &hf->cfg;

    /* llama.cpp's Q/K permutation */
    for (int l = 0; l < c->n_layers; l++)
        for (int qk = 0; qk < 2; qk++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.attn_%c.weight", l, qk ? 'k' : 'q');
            const bn_gguf_tensor *t = bn_gguf_find_tensor(ref, name);
            const bn_st_tensor *h = bn_hf_tensor(hf, qk ? BN_ROLE_WK : BN_ROLE_WQ, l);
            ck_assert_int_eq(t->type, BN_GGUF_F32);
            ck_assert_int_eq(h->dtype, BN_DTYPE_F32);
            for (int64_t r = 0; r < t->ne[1]; r++) {
                const float *a = (const float *)t->data + r * t->ne[0];
                const float *b = (const float *)h->data + bn_gguf_qk_source_row(r, c->head_dim) * h->shape[1];
                ck_assert_msg(memcmp(a, b, sizeof(float) * (size_t)t->ne[0]) == 0, "%s row %lld", name, (long long)r);
            }
        }

    /* our export (codes: sign of the weight, scale 0.01 — only the container matters) */
    static const bn_role roles[] = {BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV, BN_ROLE_WO,
                                    BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN};
    bn_qtensor *qt = calloc((size_t)c->n_layers * 7, sizeof *qt);
    size_t nq = 0;
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < 7; i++) {
            const bn_st_tensor *h = bn_hf_tensor(hf, roles[i], l);
            bn_qtensor *q = &qt[nq++];
            q->role = roles[i], q->layer = l, q->rows = h->shape[0], q->cols = h->shape[1];
            q->codes = malloc((size_t)h->numel);
            for (uint64_t k = 0; k < h->numel; k++) q->codes[k] = ((const float *)h->data)[k] > 0 ? 1 : -1;
            q->n_scales = 1;
            q->scales = malloc(sizeof(float));
            q->scales[0] = 0.01f;
        }
    char *tmp = bn_test_tmpdir("gguf_data"), path[512];
    snprintf(path, sizeof path, "%s/s.gguf", tmp);
    bn_gguf_report rep;
    ck_assert_msg(bn_gguf_export(hf, qt, nq, NULL, 0, path, BN_GGUF_TQ2_0, "f16", &rep, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(rep.n_fallback, nq);
    ck_assert_uint_eq(rep.n_ternary, 0);
    bn_gguf_file *ours;
    ck_assert_int_eq(bn_gguf_open(path, &ours, &err), 0);
    static const char *const u32_keys[] = {
        "llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
        "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count",
        "llama.vocab_size", "llama.attention.key_length", "llama.attention.value_length",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"};
    for (size_t i = 0; i < sizeof u32_keys / sizeof u32_keys[0]; i++)
        ck_assert_msg(kv(ours, u32_keys[i])->v.u == kv(ref, u32_keys[i])->v.u, "%s", u32_keys[i]);
    ck_assert_double_eq_tol(kv(ours, "llama.attention.layer_norm_rms_epsilon")->v.f,
                            kv(ref, "llama.attention.layer_norm_rms_epsilon")->v.f, 1e-12);
    ck_assert_double_eq(kv(ours, "llama.rope.freq_base")->v.f, kv(ref, "llama.rope.freq_base")->v.f);
    ck_assert_str_eq(kv(ours, "tokenizer.ggml.model")->str, kv(ref, "tokenizer.ggml.model")->str);
    ck_assert_str_eq(kv(ours, "tokenizer.ggml.pre")->str, kv(ref, "tokenizer.ggml.pre")->str);
    ck_assert_int_eq(kv(ours, "tokenizer.ggml.add_bos_token")->v.b, kv(ref, "tokenizer.ggml.add_bos_token")->v.b);
    ck_assert_int_eq(kv(ours, "tokenizer.ggml.add_eos_token")->v.b, kv(ref, "tokenizer.ggml.add_eos_token")->v.b);
    const bn_gguf_kv *ta = kv(ours, "tokenizer.ggml.tokens"), *tb = kv(ref, "tokenizer.ggml.tokens");
    ck_assert_uint_eq(ta->n, tb->n);
    for (uint64_t i = 0; i < ta->n; i++) {
        ck_assert_msg(strcmp(ta->arr_str[i], tb->arr_str[i]) == 0, "token %llu: %s vs %s", (unsigned long long)i,
                      ta->arr_str[i], tb->arr_str[i]);
        ck_assert_msg(bn_gguf_kv_arr_i64(kv(ours, "tokenizer.ggml.token_type"), i) ==
                          bn_gguf_kv_arr_i64(kv(ref, "tokenizer.ggml.token_type"), i),
                      "token_type %llu", (unsigned long long)i);
    }
    /* scores: llama.cpp's SPM tokenizer only compares them, so they must order the
     * vocabulary exactly as the converter's (bitnetd derives them from tokenizer.json's
     * merge ranks; the converter copies tokenizer.model's: equal up to an offset) */
    const bn_gguf_kv *sa = kv(ours, "tokenizer.ggml.scores"), *sb = kv(ref, "tokenizer.ggml.scores");
    for (uint64_t i = 0; i < sa->n; i++)
        for (uint64_t j = 0; j < i; j++) {
            double a = bn_gguf_kv_arr_f64(sa, i) - bn_gguf_kv_arr_f64(sa, j);
            double b = bn_gguf_kv_arr_f64(sb, i) - bn_gguf_kv_arr_f64(sb, j);
            ck_assert_msg((a > 0) == (b > 0) && (a < 0) == (b < 0), "scores of tokens %llu and %llu order differently",
                          (unsigned long long)i, (unsigned long long)j);
        }
    /* the same tensor set (tied head: no output.weight in either) and shapes */
    ck_assert_uint_eq(bn_gguf_n_tensors(ours), bn_gguf_n_tensors(ref));
    for (size_t i = 0; i < bn_gguf_n_tensors(ref); i++) {
        const bn_gguf_tensor *t = bn_gguf_tensor_at(ref, i), *o = bn_gguf_find_tensor(ours, t->name);
        ck_assert_msg(o != NULL, "missing %s", t->name);
        ck_assert_int_eq(o->ne[0], t->ne[0]);
        ck_assert_int_eq(o->ne[1], t->ne[1]);
    }
    bn_gguf_close(ours);
    bn_gguf_report_free(&rep);
    for (size_t i = 0; i < nq; i++) free(qt[i].codes), free(qt[i].scales);
    free(qt);
    bn_test_rmtree(tmp);
    free(tmp);
    bn_hf_close(hf);
    bn_gguf_close(ref);
}
END_TEST

int main(void)
{
    bn_test_require_data("stories260K/stories260K-f32.gguf");
    bn_test_require_data("stories260K-hf");
    Suite *s = suite_create("gguf_data");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, matches_llama_cpp_converter);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
