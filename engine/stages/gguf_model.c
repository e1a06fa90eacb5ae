/* gguf_model.c - write a compressed model as GGUF (llama / qwen2 architecture).
 *
 * Order of work: open the tokenizer, plan every tensor (GGUF name, type, shape, where
 * its values come from), write key/values and declare the tensors, then stream each
 * tensor's data one row block at a time (a row at most 256 KB of floats), so memory
 * stays at one tensor's staging buffer whatever the model size. Type choices and the
 * fallback rules are in gguf_model.h.
 */
#include "stages/gguf_model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/rope.h"
#include "tokenizer/tokenizer.h"

void bn_gguf_report_free(bn_gguf_report *r)
{
    if (!r) return;
    free(r->fallback);
    memset(r, 0, sizeof *r);
}

const char *bn_gguf_tensor_name(bn_role role, int layer, char *buf, size_t len)
{
    static const char *const blk[BN_ROLE_COUNT] = {
        [BN_ROLE_ATTN_NORM] = "attn_norm.weight", [BN_ROLE_WQ] = "attn_q.weight",
        [BN_ROLE_WK] = "attn_k.weight",           [BN_ROLE_WV] = "attn_v.weight",
        [BN_ROLE_WO] = "attn_output.weight",      [BN_ROLE_BQ] = "attn_q.bias",
        [BN_ROLE_BK] = "attn_k.bias",             [BN_ROLE_BV] = "attn_v.bias",
        [BN_ROLE_FFN_NORM] = "ffn_norm.weight",   [BN_ROLE_W_GATE] = "ffn_gate.weight",
        [BN_ROLE_W_UP] = "ffn_up.weight",         [BN_ROLE_W_DOWN] = "ffn_down.weight",
        [BN_ROLE_Q_NORM] = "attn_q_norm.weight",  [BN_ROLE_K_NORM] = "attn_k_norm.weight",
    };
    switch (role) {
    case BN_ROLE_EMBED: snprintf(buf, len, "token_embd.weight"); return buf;
    case BN_ROLE_FINAL_NORM: snprintf(buf, len, "output_norm.weight"); return buf;
    case BN_ROLE_HEAD: snprintf(buf, len, "output.weight"); return buf;
    default:
        if ((unsigned)role >= BN_ROLE_COUNT || !blk[role] || layer < 0) return NULL;
        snprintf(buf, len, "blk.%d.%s", layer, blk[role]);
        return buf;
    }
}

bool bn_gguf_yarn_default(const bn_model_config *c)
{
    return c->rope_factor > 1 && c->rope_truncate && c->rope_beta_fast == 32 && c->rope_beta_slow == 1 &&
           fabs(c->rope_attn_factor - (0.1 * log(c->rope_factor) + 1.0)) < 1e-6;
}

int64_t bn_gguf_qk_source_row(int64_t r, int head_dim)
{
    int64_t h = r / head_dim, w = r % head_dim;
    return h * head_dim + (w % 2) * (head_dim / 2) + w / 2;
}

/* ---- planning --------------------------------------------------------------------- */

typedef enum { SRC_TERNARY, SRC_PRESERVED, SRC_HF } src_kind;

typedef struct plan {
    char name[96];
    bn_role role;
    int layer;
    int64_t rows, cols;       /* HF [out, in]; a vector is [1, n] */
    bn_gguf_type type;
    bool permute;             /* Q/K row permutation */
    src_kind src;
    const bn_qtensor *q;
    const bn_ptensor *p;
    const bn_st_tensor *st;
} plan;

typedef struct exporter {
    const bn_hf_model *m;
    bool llama_arch;          /* permute Q/K */
    bn_gguf_type type;
    bool emb_q8;
    plan *plans;
    size_t n_plans;
    bn_gguf_report rep;
} exporter;

static int add_fallback(exporter *x, const char *tensor, bn_gguf_type t, const char *reason, bn_err *err)
{
    bn_gguf_fallback *f = realloc(x->rep.fallback, (x->rep.n_fallback + 1) * sizeof *f);
    if (!f) return bn_err_set(err, BN_ENOMEM, "gguf export: out of memory");
    x->rep.fallback = f;
    f += x->rep.n_fallback++;
    snprintf(f->tensor, sizeof f->tensor, "%s", tensor);
    f->type = t;
    snprintf(f->reason, sizeof f->reason, "%s", reason);
    return BN_OK;
}

static const bn_qtensor *find_q(const bn_qtensor *qt, size_t n, bn_role r, int layer)
{
    for (size_t i = 0; i < n; i++)
        if (qt[i].role == r && qt[i].layer == layer) return &qt[i];
    return NULL;
}

static const bn_ptensor *find_p(const bn_ptensor *pt, size_t n, const char *hf_name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(pt[i].name, hf_name) == 0) return &pt[i];
    return NULL;
}

/* Chooses the type of one tensor; records fallbacks. */
static int choose_type(exporter *x, plan *p, bn_err *err)
{
    char why[160];
    if (p->rows == 1 || p->role == BN_ROLE_BQ || p->role == BN_ROLE_BK || p->role == BN_ROLE_BV ||
        p->role == BN_ROLE_Q_NORM || p->role == BN_ROLE_K_NORM) {
        p->type = BN_GGUF_F32; /* norms and biases */
        return BN_OK;
    }
    if (p->src == SRC_TERNARY) {
        if (p->cols % BN_GGUF_QK_K == 0) {
            p->type = x->type;
            x->rep.n_ternary++;
            return BN_OK;
        }
        p->type = p->cols % BN_GGUF_QK8_0 == 0 ? BN_GGUF_Q8_0 : BN_GGUF_F16;
        snprintf(why, sizeof why, "row length %lld is not a multiple of 256 (%s block): dequantized ternary values stored as %s",
                 (long long)p->cols, bn_gguf_type_name(x->type), bn_gguf_type_name(p->type));
        return add_fallback(x, p->name, p->type, why, err);
    }
    if ((p->role == BN_ROLE_EMBED || p->role == BN_ROLE_HEAD) && x->emb_q8) {
        if (p->cols % BN_GGUF_QK8_0 == 0) {
            p->type = BN_GGUF_Q8_0;
            return BN_OK;
        }
        p->type = BN_GGUF_F16;
        snprintf(why, sizeof why, "row length %lld is not a multiple of 32: stored as f16 instead of q8_0",
                 (long long)p->cols);
        return add_fallback(x, p->name, p->type, why, err);
    }
    p->type = BN_GGUF_F16;
    return BN_OK;
}

static int make_plans(exporter *x, const bn_qtensor *qt, size_t n_qt, const bn_ptensor *pt, size_t n_pt,
                      bn_err *err)
{
    const bn_model_config *c = &x->m->cfg;
    size_t cap = 3 + (size_t)c->n_layers * 12;
    x->plans = calloc(cap, sizeof *x->plans);
    if (!x->plans) return bn_err_set(err, BN_ENOMEM, "gguf export: out of memory");
    for (int layer = -1; layer < c->n_layers; layer++)
        for (int r = 0; r < BN_ROLE_COUNT; r++) {
            bn_role role = (bn_role)r;
            bool global = role == BN_ROLE_EMBED || role == BN_ROLE_FINAL_NORM || role == BN_ROLE_HEAD;
            if (global != (layer < 0) || role == BN_ROLE_OTHER) continue;
            const bn_st_tensor *st = bn_hf_tensor(x->m, role, layer);
            const bn_qtensor *q = find_q(qt, n_qt, role, layer);
            if (!st && !q) continue; /* tied head, no biases */
            plan *p = &x->plans[x->n_plans];
            if (!bn_gguf_tensor_name(role, layer, p->name, sizeof p->name)) continue;
            p->role = role, p->layer = layer, p->st = st, p->q = q;
            char hf_name[160];
            bn_hf_name(role, layer, hf_name, sizeof hf_name);
            p->p = find_p(pt, n_pt, hf_name);
            p->src = q ? SRC_TERNARY : p->p ? SRC_PRESERVED : SRC_HF;
            if (q) {
                p->rows = q->rows, p->cols = q->cols;
            } else {
                p->rows = st->ndim == 2 ? st->shape[0] : 1;
                p->cols = st->ndim == 2 ? st->shape[1] : st->shape[0];
                if (st->ndim < 1 || st->ndim > 2)
                    return bn_err_set(err, BN_EUNSUPPORTED, "gguf export: tensor %s has %d dimensions", hf_name, st->ndim);
                if (p->p && p->p->numel != (uint64_t)(p->rows * p->cols))
                    return bn_err_set(err, BN_EINVAL, "gguf export: fine-tuned %s has %llu values, expected %lld",
                                      hf_name, (unsigned long long)p->p->numel, (long long)(p->rows * p->cols));
            }
            p->permute = x->llama_arch && (role == BN_ROLE_WQ || role == BN_ROLE_WK || role == BN_ROLE_BQ ||
                                           role == BN_ROLE_BK);
            if (p->permute && (p->rows * p->cols) % c->head_dim != 0)
                return bn_err_set(err, BN_EINVAL, "gguf export: %s rows are not whole heads of %d", hf_name, c->head_dim);
            int rc = choose_type(x, p, err);
            if (rc) return rc;
            x->n_plans++;
        }
    return BN_OK;
}

/* ---- metadata ------------------------------------------------------------------- */

static int write_hparams(bn_gguf_writer *w, const exporter *x, const char *arch)
{
    const bn_model_config *c = &x->m->cfg;
    char k[96];
    int rc = 0;
    const char *base = strrchr(x->m->dir, '/');
    base = base && base[1] ? base + 1 : x->m->dir;
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    rc |= bn_gguf_kv_str(w, "general.architecture", arch);
    rc |= bn_gguf_kv_str(w, "general.name", base);
    rc |= bn_gguf_kv_u32(w, "general.file_type", x->type == BN_GGUF_TQ1_0 ? BN_GGUF_FTYPE_TQ1_0 : BN_GGUF_FTYPE_TQ2_0);
    rc |= bn_gguf_kv_u32(w, "general.quantization_version", 2);
    rc |= bn_gguf_kv_u32(w, KEY("context_length"), (uint32_t)c->max_seq_len);
    rc |= bn_gguf_kv_u32(w, KEY("embedding_length"), (uint32_t)c->dim);
    rc |= bn_gguf_kv_u32(w, KEY("block_count"), (uint32_t)c->n_layers);
    rc |= bn_gguf_kv_u32(w, KEY("feed_forward_length"), (uint32_t)c->hidden_dim);
    rc |= bn_gguf_kv_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads);
    rc |= bn_gguf_kv_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    rc |= bn_gguf_kv_u32(w, KEY("attention.key_length"), (uint32_t)c->head_dim);
    rc |= bn_gguf_kv_u32(w, KEY("attention.value_length"), (uint32_t)c->head_dim);
    rc |= bn_gguf_kv_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->rms_norm_eps);
    rc |= bn_gguf_kv_f32(w, KEY("rope.freq_base"), c->rope_theta);
    rc |= bn_gguf_kv_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim);
    if (c->rope_type == BN_ROPE_LINEAR) {
        rc |= bn_gguf_kv_str(w, KEY("rope.scaling.type"), "linear");
        rc |= bn_gguf_kv_f32(w, KEY("rope.scaling.factor"), c->rope_factor);
    }
    if (c->rope_type == BN_ROPE_YARN) {
        /* llama.cpp computes yarn's ramp itself (floor/ceil of the correction range, as
         * truncate: true, betas 32/1) and multiplies cos/sin by 1 + 0.1 ln(factor):
         * transformers' defaults, the only yarn written (bn_gguf_yarn_default) */
        rc |= bn_gguf_kv_str(w, KEY("rope.scaling.type"), "yarn");
        rc |= bn_gguf_kv_f32(w, KEY("rope.scaling.factor"), c->rope_factor);
        rc |= bn_gguf_kv_u32(w, KEY("rope.scaling.original_context_length"), (uint32_t)c->rope_orig_ctx);
    }
    rc |= bn_gguf_kv_u32(w, KEY("vocab_size"), (uint32_t)c->vocab_size);
#undef KEY
    return rc;
}

static int write_tokenizer(bn_gguf_writer *w, const bn_hf_model *m, bn_err *err)
{
    bn_tok *tok;
    int rc = bn_tok_load(m->dir, &tok, err);
    if (rc) return bn_err_prefix(err, "gguf export: ");
    size_t V = (size_t)m->cfg.vocab_size, tv = bn_tok_vocab_size(tok);
    if (tv > V) {
        bn_tok_free(tok);
        return bn_err_set(err, BN_EINVAL, "gguf export: tokenizer.json has %zu tokens but config.json vocab_size is %zu",
                          tv, V);
    }
    const char **tokens = calloc(V, sizeof *tokens);
    char *pads = calloc(V, 32);
    float *scores = calloc(V, sizeof *scores);
    int32_t *types = calloc(V, sizeof *types);
    const char **merges = NULL;
    if (!tokens || !pads || !scores || !types) rc = bn_err_set(err, BN_ENOMEM, "gguf export: out of memory");
    bool llama = bn_tok_get_kind(tok) == BN_TOK_KIND_LLAMA;
    for (size_t i = 0; !rc && i < V; i++) {
        if (i < tv) {
            tokens[i] = bn_tok_token(tok, (int32_t)i);
            types[i] = (int32_t)bn_tok_get_type(tok, (int32_t)i);
            scores[i] = bn_tok_score(tok, (int32_t)i);
        } else {
            snprintf(pads + 32 * i, 32, "[PAD%zu]", i);
            tokens[i] = pads + 32 * i;
            types[i] = BN_TOK_TYPE_UNUSED;
            scores[i] = llama ? -1000.0f : 0.0f;
        }
    }
    if (!rc) {
        rc |= bn_gguf_kv_str(w, "tokenizer.ggml.model", bn_tok_model_name(tok));
        rc |= bn_gguf_kv_str(w, "tokenizer.ggml.pre", bn_tok_pre_name(tok));
        rc |= bn_gguf_kv_arr_str(w, "tokenizer.ggml.tokens", tokens, V);
        if (llama) rc |= bn_gguf_kv_arr_f32(w, "tokenizer.ggml.scores", scores, V);
        rc |= bn_gguf_kv_arr_i32(w, "tokenizer.ggml.token_type", types, V);
        size_t nm = bn_tok_n_merges(tok);
        if (!llama && nm > 0) {
            merges = calloc(nm, sizeof *merges);
            if (!merges) rc = BN_ENOMEM;
            for (size_t i = 0; merges && i < nm; i++) merges[i] = bn_tok_merge(tok, i);
            if (merges) rc |= bn_gguf_kv_arr_str(w, "tokenizer.ggml.merges", merges, nm);
        }
        struct { const char *key; int32_t id; } ids[] = {
            {"tokenizer.ggml.bos_token_id", bn_tok_bos_id(tok)}, {"tokenizer.ggml.eos_token_id", bn_tok_eos_id(tok)},
            {"tokenizer.ggml.unknown_token_id", bn_tok_unk_id(tok)}, {"tokenizer.ggml.padding_token_id", bn_tok_pad_id(tok)}};
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
            if (ids[i].id >= 0) rc |= bn_gguf_kv_u32(w, ids[i].key, (uint32_t)ids[i].id);
        rc |= bn_gguf_kv_bool(w, "tokenizer.ggml.add_bos_token", bn_tok_add_bos(tok) != 0);
        rc |= bn_gguf_kv_bool(w, "tokenizer.ggml.add_eos_token", bn_tok_add_eos(tok) != 0);
        if (rc) rc = bn_err_set(err, BN_ENOMEM, "gguf export: tokenizer metadata: out of memory");
    }
    free(merges), free(tokens), free(pads), free(scores), free(types);
    bn_tok_free(tok);
    return rc;
}

/* ---- tensor data ------------------------------------------------------------------ */

/* Row r of the tensor as floats (HF order; the caller handles the permutation). */
static int row_f32(const plan *p, int64_t r, float *out, bn_err *err)
{
    if (p->src == SRC_TERNARY) {
        const bn_qtensor *q = p->q;
        float s = q->scales[q->n_scales == 1 ? 0 : r];
        const int8_t *c = q->codes + r * q->cols;
        for (int64_t k = 0; k < q->cols; k++) out[k] = (float)c[k] * s;
        return BN_OK;
    }
    if (p->src == SRC_PRESERVED) {
        memcpy(out, p->p->data + r * p->cols, (size_t)p->cols * sizeof(float));
        return BN_OK;
    }
    size_t es = bn_dtype_size(p->st->dtype);
    if (bn_to_f32((const uint8_t *)p->st->data + (size_t)(r * p->cols) * es, p->st->dtype, out, (size_t)p->cols))
        return bn_err_set(err, BN_EUNSUPPORTED, "gguf export: tensor %s has dtype %s", p->st->name,
                          bn_dtype_name(p->st->dtype));
    return BN_OK;
}

static int write_tensor(bn_gguf_writer *w, const exporter *x, const plan *p, float *fbuf, uint8_t *obuf, bn_err *err)
{
    int hd = x->m->cfg.head_dim;
    size_t rb = bn_gguf_row_bytes(p->type, p->cols);
    /* a bias is one "row" of the permuted vector: permute its elements instead */
    bool vec = p->rows == 1;
    for (int64_t r = 0; r < p->rows; r++) {
        int64_t src = p->permute && !vec ? bn_gguf_qk_source_row(r, hd) : r;
        int rc;
        if (p->type == BN_GGUF_TQ2_0 || p->type == BN_GGUF_TQ1_0) {
            const bn_qtensor *q = p->q;
            float s = q->scales[q->n_scales == 1 ? 0 : src];
            const int8_t *c = q->codes + src * q->cols;
            if (p->type == BN_GGUF_TQ2_0)
                bn_gguf_tq2_0_pack(c, s, p->cols, (bn_gguf_block_tq2_0 *)obuf);
            else
                bn_gguf_tq1_0_pack(c, s, p->cols, (bn_gguf_block_tq1_0 *)obuf);
        } else {
            if ((rc = row_f32(p, src, fbuf, err))) return rc;
            if (p->permute && vec) {
                float *tmp = fbuf + p->cols;
                for (int64_t k = 0; k < p->cols; k++) tmp[k] = fbuf[bn_gguf_qk_source_row(k, hd)];
                memcpy(fbuf, tmp, (size_t)p->cols * sizeof(float));
            }
            if (p->type == BN_GGUF_F32)
                memcpy(obuf, fbuf, rb);
            else if (p->type == BN_GGUF_F16)
                bn_f32_to_f16_array(fbuf, (uint16_t *)obuf, (size_t)p->cols);
            else
                bn_gguf_q8_0_quantize(fbuf, p->cols, (bn_gguf_block_q8_0 *)obuf);
        }
        if ((rc = bn_gguf_writer_write(w, obuf, rb, err))) return rc;
    }
    return BN_OK;
}

int bn_gguf_export(const bn_hf_model *m, const bn_qtensor *qt, size_t n_qt, const bn_ptensor *pt, size_t n_pt,
                   const char *path, bn_gguf_type type, const char *embedding_dtype, bn_gguf_report *rep,
                   bn_err *err)
{
    if (rep) memset(rep, 0, sizeof *rep);
    if (type != BN_GGUF_TQ2_0 && type != BN_GGUF_TQ1_0)
        return bn_err_set(err, BN_EINVAL, "gguf export: type must be tq2_0 or tq1_0");
    if (embedding_dtype && strcmp(embedding_dtype, "f16") != 0 && strcmp(embedding_dtype, "q8_0") != 0)
        return bn_err_set(err, BN_EINVAL, "config.export.embedding_dtype: \"%s\" is not f16 or q8_0", embedding_dtype);
    /* llama.cpp's names; mistral runs as llama. qwen2/qwen3 rotate halves (NEOX) as HF
     * does, llama rotates pairs, hence its Q/K rows are permuted. */
    const char *arch = m->cfg.arch == BN_ARCH_QWEN2 ? "qwen2" : m->cfg.arch == BN_ARCH_QWEN3 ? "qwen3" : "llama";
    bool llama_arch = m->cfg.arch == BN_ARCH_LLAMA || m->cfg.arch == BN_ARCH_MISTRAL;
    if (m->cfg.rope_type == BN_ROPE_LLAMA3 && !llama_arch)
        return bn_err_set(err, BN_EUNSUPPORTED, "gguf export: llama.cpp's %s reads no rope_freqs for llama3 "
                                                "rope scaling", arch);
    if (m->cfg.rope_type == BN_ROPE_YARN && !bn_gguf_yarn_default(&m->cfg))
        return bn_err_set(err, BN_EUNSUPPORTED, "gguf export: yarn with other than transformers' default "
                                                "beta_fast/beta_slow/attention_factor/truncate is not written "
                                                "(llama.cpp computed a different model from those keys)");
    exporter x = {.m = m, .llama_arch = llama_arch, .type = type,
                  .emb_q8 = embedding_dtype && strcmp(embedding_dtype, "q8_0") == 0};
    x.rep.type = type;
    bn_gguf_writer *w = NULL;
    float *fbuf = NULL;
    uint8_t *obuf = NULL;
    int rc = make_plans(&x, qt, n_qt, pt, n_pt, err);
    if (!rc) rc = bn_gguf_writer_new(path, &w, err);
    if (!rc && write_hparams(w, &x, arch))
        rc = bn_err_set(err, BN_ENOMEM, "gguf export: metadata: out of memory");
    if (!rc) rc = write_tokenizer(w, m, err);
    int64_t maxc = 1;
    for (size_t i = 0; !rc && i < x.n_plans; i++) {
        plan *p = &x.plans[i];
        int64_t ne[2] = {p->cols, p->rows};
        rc = bn_gguf_writer_declare(w, p->name, p->type, p->rows == 1 ? 1 : 2, ne, err);
        if (p->cols > maxc) maxc = p->cols;
    }
    /* llama3 rope scaling: llama.cpp divides each rotary frequency by rope_freqs[i] */
    int64_t half = m->cfg.head_dim / 2;
    bool rope_freqs = m->cfg.rope_type == BN_ROPE_LLAMA3;
    if (!rc && rope_freqs) rc = bn_gguf_writer_declare(w, "rope_freqs.weight", BN_GGUF_F32, 1, &half, err);
    if (!rc) {
        fbuf = malloc((size_t)maxc * 2 * sizeof(float));
        obuf = malloc((size_t)maxc * 4 + 64);
        if (!fbuf || !obuf) rc = bn_err_set(err, BN_ENOMEM, "gguf export: out of memory");
    }
    if (!rc) rc = bn_gguf_writer_begin_data(w, err);
    for (size_t i = 0; !rc && i < x.n_plans; i++) rc = write_tensor(w, &x, &x.plans[i], fbuf, obuf, err);
    if (!rc && rope_freqs) {
        bn_model_config plain = m->cfg;
        plain.rope_type = BN_ROPE_DEFAULT;
        for (int64_t i = 0; i < half; i++)
            fbuf[i] = (float)(bn_rope_inv_freq(&plain, (int)i) / bn_rope_inv_freq(&m->cfg, (int)i));
        rc = bn_gguf_writer_write(w, fbuf, (size_t)half * sizeof(float), err);
    }
    if (w) {
        if (!rc)
            rc = bn_gguf_writer_finish(w, err);
        else
            bn_gguf_writer_abort(w);
    }
    free(fbuf), free(obuf), free(x.plans);
    struct stat st;
    if (!rc && stat(path, &st) == 0) x.rep.file_bytes = (uint64_t)st.st_size;
    x.rep.n_tensors = x.n_plans;
    if (rc || !rep)
        bn_gguf_report_free(&x.rep);
    else
        *rep = x.rep;
    return rc;
}

struct cJSON *bn_gguf_report_json(const bn_gguf_report *r, const char *file)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", file);
    cJSON_AddStringToObject(o, "type", bn_gguf_type_name(r->type));
    cJSON_AddNumberToObject(o, "tensors", (double)r->n_tensors);
    cJSON_AddNumberToObject(o, "ternary_tensors", (double)r->n_ternary);
    cJSON_AddNumberToObject(o, "bytes", (double)r->file_bytes);
    cJSON *fa = cJSON_AddArrayToObject(o, "fallbacks");
    for (size_t i = 0; i < r->n_fallback; i++) {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "tensor", r->fallback[i].tensor);
        cJSON_AddStringToObject(f, "type", bn_gguf_type_name(r->fallback[i].type));
        cJSON_AddStringToObject(f, "reason", r->fallback[i].reason);
        cJSON_AddItemToArray(fa, f);
    }
    return o;
}
