/* test_gguf_export.c - a model exported to GGUF reads back to the same codes, scales,
 * norms, embeddings and metadata; Q/K rows carry llama.cpp's permutation; tensors whose
 * rows do not fit a 256-block get the documented fallback types, listed in the report. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "stages/gguf_model.h"
#include "formats/initmodel.h"
#include "tokenizer/tokenizer.h"

#include <cjson/cJSON.h>

static uint64_t rng = 0xD1B54A32D192ED03ull;
static uint64_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

typedef struct fixture {
    char *tmp, model[512];
    bn_hf_model *hf;
    bn_qtensor *qt;
    size_t n_qt;
} fixture;

/* A random model folder and random ternary codes for its projections; every 5th
 * tensor uses one per-tensor scale. */
static void setup_model_arch(fixture *f, int dim, int hidden, int heads, int kv_heads, bn_arch arch)
{
    bn_err err;
    memset(f, 0, sizeof *f);
    f->tmp = bn_test_tmpdir("gguf_export");
    snprintf(f->model, sizeof f->model, "%s/model", f->tmp);
    bn_init_spec s;
    bn_initmodel_shape("tiny", &s);
    s.dim = dim, s.hidden = hidden, s.heads = heads, s.kv_heads = kv_heads, s.layers = 2;
    s.vocab = bn_initmodel_tokenizer_size() + 3; /* 3 ids without a token: [PAD] entries */
    s.dtype = BN_DTYPE_F32;
    s.arch = arch;
    ck_assert_msg(bn_initmodel_write(f->model, &s, &err) == 0, "%s", err.msg);
    ck_assert_msg(bn_hf_open(f->model, &f->hf, &err) == 0, "%s", err.msg);
    static const bn_role roles[] = {BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV, BN_ROLE_WO,
                                    BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN};
    f->qt = calloc(2 * 7, sizeof *f->qt);
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 7; i++) {
            const bn_st_tensor *t = bn_hf_tensor(f->hf, roles[i], l);
            bn_qtensor *q = &f->qt[f->n_qt++];
            q->name = strdup(t->name);
            q->role = roles[i], q->layer = l;
            q->rows = t->shape[0], q->cols = t->shape[1];
            q->codes = malloc((size_t)(q->rows * q->cols));
            for (int64_t k = 0; k < q->rows * q->cols; k++) q->codes[k] = (int8_t)(next() % 3) - 1;
            q->n_scales = f->n_qt % 5 == 0 ? 1 : q->rows;
            q->scales = malloc(sizeof(float) * (size_t)q->n_scales);
            for (int64_t r = 0; r < q->n_scales; r++) q->scales[r] = 0.001f + (float)(next() % 1000) * 1e-5f;
        }
}

static void setup_model(fixture *f, int dim, int hidden, int heads, int kv_heads)
{
    setup_model_arch(f, dim, hidden, heads, kv_heads, BN_ARCH_LLAMA);
}

static void teardown_model(fixture *f)
{
    for (size_t i = 0; i < f->n_qt; i++) free(f->qt[i].name), free(f->qt[i].codes), free(f->qt[i].scales);
    free(f->qt);
    bn_hf_close(f->hf);
    bn_test_rmtree(f->tmp);
    free(f->tmp);
}

static const bn_qtensor *qt_of(const fixture *f, bn_role role, int layer)
{
    for (size_t i = 0; i < f->n_qt; i++)
        if (f->qt[i].role == role && f->qt[i].layer == layer) return &f->qt[i];
    return NULL;
}

static uint32_t kv_u32(const bn_gguf_file *g, const char *key)
{
    const bn_gguf_kv *kv = bn_gguf_find_kv(g, key);
    ck_assert_msg(kv != NULL, "missing %s", key);
    ck_assert_int_eq(kv->type, BN_GGUF_V_U32);
    return (uint32_t)kv->v.u;
}

/* Every ternary tensor: unpack, undo the Q/K permutation, compare codes and d. */
static void check_ternary(const fixture *f, const bn_gguf_file *g, bn_gguf_type type)
{
    int hd = f->hf->cfg.head_dim;
    for (size_t i = 0; i < f->n_qt; i++) {
        const bn_qtensor *q = &f->qt[i];
        char name[96];
        bn_gguf_tensor_name(q->role, q->layer, name, sizeof name);
        const bn_gguf_tensor *t = bn_gguf_find_tensor(g, name);
        ck_assert_msg(t != NULL, "missing %s", name);
        ck_assert_int_eq(t->type, type);
        ck_assert_int_eq(t->ne[0], q->cols);
        ck_assert_int_eq(t->ne[1], q->rows);
        bool perm = q->role == BN_ROLE_WQ || q->role == BN_ROLE_WK;
        size_t rb = bn_gguf_row_bytes(type, q->cols), nb = (size_t)q->cols / 256;
        int8_t *codes = malloc((size_t)q->cols);
        uint16_t *d = malloc(nb * sizeof(uint16_t));
        for (int64_t r = 0; r < q->rows; r++) {
            const void *row = (const uint8_t *)t->data + (size_t)r * rb;
            if (type == BN_GGUF_TQ2_0)
                bn_gguf_tq2_0_unpack(row, q->cols, codes, d);
            else
                bn_gguf_tq1_0_unpack(row, q->cols, codes, d);
            int64_t src = perm ? bn_gguf_qk_source_row(r, hd) : r;
            ck_assert_msg(memcmp(codes, q->codes + src * q->cols, (size_t)q->cols) == 0, "%s row %lld", name,
                          (long long)r);
            float s = q->scales[q->n_scales == 1 ? 0 : src];
            for (size_t b = 0; b < nb; b++) ck_assert_uint_eq(d[b], bn_f32_to_f16(s));
        }
        free(codes), free(d);
    }
}

/* qwen3: llama.cpp's qwen3 architecture with its q/k norm tensors in F32 and no Q/K
 * permutation; yarn with transformers' defaults as rope.scaling keys, other yarn refused. */
START_TEST(qwen3_yarn_metadata)
{
    fixture f;
    setup_model_arch(&f, 256, 256, 4, 2, BN_ARCH_QWEN3);
    bn_err err;
    bn_model_config *c = &f.hf->cfg;
    c->rope_type = BN_ROPE_YARN, c->rope_factor = 4, c->rope_orig_ctx = 64, c->rope_truncate = true;
    c->rope_beta_fast = 32, c->rope_beta_slow = 1, c->rope_attn_factor = (float)(0.1 * log(4.0) + 1.0);
    char path[600];
    snprintf(path, sizeof path, "%s/q3.gguf", f.tmp);
    ck_assert_msg(bn_gguf_export(f.hf, f.qt, f.n_qt, NULL, 0, path, BN_GGUF_TQ2_0, "f16", NULL, &err) == 0, "%s",
                  err.msg);
    bn_gguf_file *g;
    ck_assert_msg(bn_gguf_open(path, &g, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(bn_gguf_find_kv(g, "general.architecture")->str, "qwen3");
    ck_assert_str_eq(bn_gguf_find_kv(g, "qwen3.rope.scaling.type")->str, "yarn");
    ck_assert_double_eq_tol(bn_gguf_find_kv(g, "qwen3.rope.scaling.factor")->v.f, 4.0, 1e-6);
    ck_assert_uint_eq(kv_u32(g, "qwen3.rope.scaling.original_context_length"), 64);
    for (int l = 0; l < 2; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_k_norm.weight", l);
        const bn_gguf_tensor *t = bn_gguf_find_tensor(g, name);
        ck_assert_msg(t != NULL, "%s missing", name);
        ck_assert_int_eq(t->type, BN_GGUF_F32);
        ck_assert_uint_eq(t->ne[0], 64);
    }
    bn_gguf_close(g);
    c->rope_beta_fast = 16; /* llama.cpp would not compute this one */
    ck_assert_int_eq(bn_gguf_export(f.hf, f.qt, f.n_qt, NULL, 0, path, BN_GGUF_TQ2_0, "f16", NULL, &err),
                     BN_EUNSUPPORTED);
    ck_assert_msg(strstr(err.msg, "yarn") && strstr(err.msg, "beta_fast"), "%s", err.msg);
    teardown_model(&f);
}
END_TEST

START_TEST(export_roundtrip)
{
    fixture f;
    setup_model(&f, 256, 512, 4, 2);
    bn_err err;
    bn_gguf_type types[2] = {BN_GGUF_TQ2_0, BN_GGUF_TQ1_0};
    for (int ti = 0; ti < 2; ti++) {
        char path[600];
        snprintf(path, sizeof path, "%s/model-%s.gguf", f.tmp, bn_gguf_type_name(types[ti]));
        bn_gguf_report rep;
        ck_assert_msg(bn_gguf_export(f.hf, f.qt, f.n_qt, NULL, 0, path, types[ti], ti ? "q8_0" : "f16", &rep, &err) == 0,
                      "%s", err.msg);
        ck_assert_uint_eq(rep.n_fallback, 0);
        ck_assert_uint_eq(rep.n_ternary, 14);
        bn_gguf_file *g;
        ck_assert_msg(bn_gguf_open(path, &g, &err) == 0, "%s", err.msg);
        ck_assert_uint_eq(rep.n_tensors, bn_gguf_n_tensors(g));
        ck_assert_str_eq(bn_gguf_find_kv(g, "general.architecture")->str, "llama");
        ck_assert_uint_eq(kv_u32(g, "general.file_type"), ti ? 36 : 37);
        ck_assert_uint_eq(kv_u32(g, "general.quantization_version"), 2);
        ck_assert_uint_eq(kv_u32(g, "llama.embedding_length"), 256);
        ck_assert_uint_eq(kv_u32(g, "llama.feed_forward_length"), 512);
        ck_assert_uint_eq(kv_u32(g, "llama.block_count"), 2);
        ck_assert_uint_eq(kv_u32(g, "llama.attention.head_count"), 4);
        ck_assert_uint_eq(kv_u32(g, "llama.attention.head_count_kv"), 2);
        ck_assert_uint_eq(kv_u32(g, "llama.rope.dimension_count"), 64);
        ck_assert_uint_eq(kv_u32(g, "llama.vocab_size"), (uint32_t)f.hf->cfg.vocab_size);
        ck_assert_double_eq_tol(bn_gguf_find_kv(g, "llama.attention.layer_norm_rms_epsilon")->v.f,
                                f.hf->cfg.rms_norm_eps, 1e-12);
        ck_assert_double_eq(bn_gguf_find_kv(g, "llama.rope.freq_base")->v.f, f.hf->cfg.rope_theta);
        /* tokenizer: byte-level BPE -> gpt2 with merges; PAD entries fill the vocab */
        bn_tok *tok;
        ck_assert_int_eq(bn_tok_load(f.model, &tok, &err), 0);
        ck_assert_str_eq(bn_gguf_find_kv(g, "tokenizer.ggml.model")->str, "gpt2");
        ck_assert_str_eq(bn_gguf_find_kv(g, "tokenizer.ggml.pre")->str, bn_tok_pre_name(tok));
        const bn_gguf_kv *toks = bn_gguf_find_kv(g, "tokenizer.ggml.tokens");
        ck_assert_uint_eq(toks->n, (uint64_t)f.hf->cfg.vocab_size);
        ck_assert_str_eq(toks->arr_str[5], bn_tok_token(tok, 5));
        ck_assert_ptr_nonnull(strstr(toks->arr_str[toks->n - 1], "[PAD"));
        ck_assert_int_eq(bn_gguf_kv_arr_i64(bn_gguf_find_kv(g, "tokenizer.ggml.token_type"), toks->n - 1), 5);
        ck_assert_uint_eq(bn_gguf_find_kv(g, "tokenizer.ggml.merges")->n, bn_tok_n_merges(tok));
        if (bn_tok_bos_id(tok) >= 0)
            ck_assert_uint_eq(kv_u32(g, "tokenizer.ggml.bos_token_id"), (uint32_t)bn_tok_bos_id(tok));
        bn_tok_free(tok);
        check_ternary(&f, g, types[ti]);
        /* norms F32 exactly; embeddings F16 (or Q8_0 within its step) */
        const bn_gguf_tensor *n = bn_gguf_find_tensor(g, "blk.1.ffn_norm.weight");
        ck_assert_int_eq(n->type, BN_GGUF_F32);
        ck_assert_int_eq(memcmp(n->data, bn_hf_tensor(f.hf, BN_ROLE_FFN_NORM, 1)->data, 256 * 4), 0);
        const bn_gguf_tensor *e = bn_gguf_find_tensor(g, "token_embd.weight");
        ck_assert_int_eq(e->type, ti ? BN_GGUF_Q8_0 : BN_GGUF_F16);
        int64_t ne = e->ne[0] * e->ne[1];
        float *y = malloc(sizeof(float) * (size_t)ne);
        ck_assert_int_eq(bn_gguf_dequantize(e->type, e->data, ne, y), 0);
        const float *src = bn_hf_tensor(f.hf, BN_ROLE_EMBED, -1)->data;
        for (int64_t k = 0; k < ne; k++)
            ck_assert(fabsf(y[k] - src[k]) <= (ti ? 0.12f / 127 : 1e-3f * fabsf(src[k]) + 1e-7f));
        free(y);
        ck_assert_ptr_nonnull(bn_gguf_find_tensor(g, "output.weight"));
        bn_gguf_close(g);
        bn_gguf_report_free(&rep);
    }
    teardown_model(&f);
}
END_TEST

/* Shapes that do not fit: Q8_0 when the row is a multiple of 32, else F16; reported. */
START_TEST(export_fallbacks)
{
    fixture f;
    setup_model(&f, 64, 100, 4, 4);
    bn_err err;
    char path[600];
    snprintf(path, sizeof path, "%s/fb.gguf", f.tmp);
    bn_gguf_report rep;
    ck_assert_msg(bn_gguf_export(f.hf, f.qt, f.n_qt, NULL, 0, path, BN_GGUF_TQ2_0, "f16", &rep, &err) == 0, "%s",
                  err.msg);
    ck_assert_uint_eq(rep.n_fallback, 14);
    ck_assert_uint_eq(rep.n_ternary, 0);
    bn_gguf_file *g;
    ck_assert_int_eq(bn_gguf_open(path, &g, &err), 0);
    ck_assert_int_eq(bn_gguf_find_tensor(g, "blk.0.attn_q.weight")->type, BN_GGUF_Q8_0);
    ck_assert_int_eq(bn_gguf_find_tensor(g, "blk.0.ffn_down.weight")->type, BN_GGUF_F16);
    /* the fallback holds the dequantized values, permuted like the ternary ones */
    const bn_gguf_tensor *t = bn_gguf_find_tensor(g, "blk.1.ffn_down.weight");
    const bn_qtensor *q = qt_of(&f, BN_ROLE_W_DOWN, 1);
    float *y = malloc(sizeof(float) * 64 * 100);
    ck_assert_int_eq(bn_gguf_dequantize(t->type, t->data, 64 * 100, y), 0);
    for (int k = 0; k < 64 * 100; k++) {
        float want = q->codes[k] * q->scales[q->n_scales == 1 ? 0 : k / 100];
        ck_assert(fabsf(y[k] - want) <= 1e-3f * fabsf(want));
    }
    free(y);
    bool found = false;
    for (size_t i = 0; i < rep.n_fallback; i++)
        if (!strcmp(rep.fallback[i].tensor, "blk.0.ffn_down.weight")) {
            found = true;
            ck_assert_int_eq(rep.fallback[i].type, BN_GGUF_F16);
            ck_assert_ptr_nonnull(strstr(rep.fallback[i].reason, "not a multiple of 256"));
        }
    ck_assert(found);
    struct cJSON *j = bn_gguf_report_json(&rep, "fb.gguf");
    ck_assert_ptr_nonnull(j);
    cJSON_Delete(j);
    bn_gguf_close(g);
    bn_gguf_report_free(&rep);
    ck_assert_int_eq(bn_gguf_export(f.hf, f.qt, f.n_qt, NULL, 0, path, BN_GGUF_TQ2_0, "q4_k", NULL, &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "embedding_dtype"));
    teardown_model(&f);
}
END_TEST

START_TEST(qk_permutation)
{
    /* head_dim 8: new rows 0..7 take HF rows 0,4,1,5,2,6,3,7 (pairs (i, i+hd/2) interleaved) */
    const int want[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    for (int r = 0; r < 16; r++) ck_assert_int_eq(bn_gguf_qk_source_row(r, 8), want[r % 8] + 8 * (r / 8));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gguf_export");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, qk_permutation);
    tcase_add_test(tc, export_roundtrip);
    tcase_add_test(tc, export_fallbacks);
    tcase_add_test(tc, qwen3_yarn_metadata);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
