/* tk_llama.c - single-token decode with ternary projections and a KV cache.
 *
 * Buffers are sized once at load (scratch vectors, activation quantization scratch for
 * the three input widths D, H*hd and F, the KV cache [L, max_ctx, KV*hd]); a step
 * allocates nothing. Attention over the cache runs on the calling thread (one token:
 * O(pos * H * hd), small beside the projections), the projections on the model's
 * bn_tk_pool helper threads, and the LM head on the same pool, kept in int8 blocks of 32
 * with an FP32 scale each (bn_tk_q8_matrix: 0.56x the bytes of F16, 0.28x FP32) against
 * an int16 copy of its input. Weights of 2 MB and more lie on transparent huge pages
 * (bn_alloc_big): a token streams all of them, and 4 KB pages cost a TLB miss (a
 * two-level page walk in a VM) every 4 KB.
 */
#include "model/tk_llama.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/blas.h"
#include "base/tensor.h"
#include "base/vecmath.h"
#include "model/llama.h"
#include "model/rope.h"
#include "quant/quant.h"
#include "quant/tkernels.h"

/* Projections sharing an input run as one product: their rows are stacked in one packed
 * matrix (q|k|v, gate|up), so a step makes 4 pool rounds per layer instead of 7. */
/* Prompt tokens per forward pass: enough to reuse each weight load many times, few
 * enough that a chunk's activations stay in cache (64 x 5632 int8 = 360 KB). */
#define TK_BATCH 64

enum { G_QKV, G_O, G_GU, G_DOWN, G_COUNT };
static const bn_role group_roles[G_COUNT][3] = {
    {BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV}, {BN_ROLE_WO, 0, 0}, {BN_ROLE_W_GATE, BN_ROLE_W_UP, 0}, {BN_ROLE_W_DOWN, 0, 0}};
static const int group_len[G_COUNT] = {3, 1, 2, 1};

struct bn_tk_llama {
    bn_llama *fp;                /* embeddings, norms, biases, head (FP32) */
    bn_model_config cfg;
    int threads, max_ctx;
    int batch;                   /* tokens one forward pass takes (prompt chunks) */
    bool exact;
    bn_tk_matrix *w[G_COUNT];    /* [L] each, their blocks in `packed` */
    bn_tk_block *packed;         /* every projection's blocks, one buffer (huge pages) */
    bn_tk_q8_matrix head;        /* [vocab, D] the LM head in int8 blocks (36 bytes per 32
                                    weights: 0.28x FP32, 0.56x F16) */
    bn_tk_act16 a_head;          /* its input (the final norm's output) in int16 */
    uint16_t *head16;            /* [vocab, D] the head in F16 instead (bn_tk_llama_use_f16_head) */
    float *kc, *vc;              /* [L, max_ctx, KV*hd] */
    /* per token of a chunk [batch, .]: x, n, o [D], qkv [QD+2KVD], att [QD], gu [2F], h [F] */
    float *x, *n, *qkv, *att, *o, *gu, *h, *scores, *inv_freq;
    float *rot;        /* [batch, hd]: per token, mscale*cos (i < hd/2) and mscale*sin of its angles */
    float rope_mscale; /* cos and sin times this (yarn's attention factor, else 1) */
    bn_tk_act a_dim, a_qd, a_ff; /* quantized inputs of width D, H*hd, F, batch tokens */
    bn_tk_pool *pool;            /* threads - 1 helpers for the projections, kept for
                                    the model's lifetime (one GEMV is too short to
                                    start threads for) */
};

bool bn_tk_recover_ternary(const float *w, int64_t rows, int64_t cols, int8_t *codes, float *scale)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *wr = w + r * cols;
        float s = 0;
        for (int64_t k = 0; k < cols; k++) s = fabsf(wr[k]) > s ? fabsf(wr[k]) : s;
        scale[r] = s;
        for (int64_t k = 0; k < cols; k++) {
            float v = wr[k];
            if (v == 0.0f)
                codes[r * cols + k] = 0;
            else if (v == s)
                codes[r * cols + k] = 1;
            else if (v == -s)
                codes[r * cols + k] = -1;
            else
                return false;
        }
    }
    return true;
}

/* Weights that are not ternary yet: the engine quantizer's defaults (quant.h). */
static int ternarize(const char *name, const float *w, int rows, int cols, int threads, int8_t *codes,
                     float *scale, bn_err *err)
{
    bn_quant_params qp;
    bn_quant_params_default(&qp);
    qp.threads = threads;
    return bn_quant_tensor(name, w, BN_DTYPE_F32, rows, cols, &qp, codes, scale, NULL, err);
}

/* Packs group g of a layer into storage, sized for [want_rows, want_cols] (the config's
 * shape; a tensor of another shape is refused, never written past the storage). */
static int build_group(bn_tk_llama *m, int g, int layer, bn_tk_block *storage, int want_rows, int want_cols, bn_err *err)
{
    bn_llama_float *w[3];
    int rows[3], cols = 0, total = 0;
    char name[160];
    for (int i = 0; i < group_len[g]; i++) {
        int c;
        w[i] = bn_llama_tensor(m->fp, &m->fp->params, group_roles[g][i], layer, &rows[i], &c);
        bn_hf_name(group_roles[g][i], layer, name, sizeof name);
        if (!w[i]) return bn_err_set(err, BN_EFORMAT, "ternary model: missing %s", name);
        if (i && c != cols) return bn_err_set(err, BN_EFORMAT, "ternary model: %s has %d columns, not %d", name, c, cols);
        cols = c, total += rows[i];
    }
    if (total != want_rows || cols != want_cols)
        return bn_err_set(err, BN_EFORMAT, "ternary model: %s and its group are [%d, %d], the config says [%d, %d]", name,
                          total, cols, want_rows, want_cols);
    int8_t *codes = malloc((size_t)total * cols);
    float *scale = malloc((size_t)total * sizeof(float));
    int rc = BN_OK;
    if (!codes || !scale) rc = bn_err_set(err, BN_ENOMEM, "ternary model: out of memory for %s", name);
    for (int i = 0, r0 = 0; !rc && i < group_len[g]; r0 += rows[i], i++) {
        bn_hf_name(group_roles[g][i], layer, name, sizeof name);
        int8_t *ci = codes + (size_t)r0 * cols;
        if (!bn_tk_recover_ternary(w[i], rows[i], cols, ci, scale + r0)) {
            m->exact = false;
            rc = ternarize(name, w[i], rows[i], cols, m->threads, ci, scale + r0, err);
        }
    }
    if (!rc) rc = bn_tk_matrix_pack_into(&m->w[g][layer], storage, codes, scale, total, cols, name, err);
    free(codes), free(scale);
    return rc;
}

void bn_tk_llama_free(bn_tk_llama *m)
{
    if (!m) return;
    for (int p = 0; p < G_COUNT; p++) {
        if (m->w[p])
            for (int l = 0; l < m->cfg.n_layers; l++) bn_tk_matrix_free(&m->w[p][l]);
        free(m->w[p]);
    }
    free(m->packed);
    float *bufs[] = {m->kc, m->vc, m->x, m->n, m->qkv, m->att, m->o, m->gu, m->h, m->scores, m->inv_freq, m->rot};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    bn_tk_act_free(&m->a_dim), bn_tk_act_free(&m->a_qd), bn_tk_act_free(&m->a_ff);
    bn_tk_pool_free(m->pool);
    bn_tk_q8_free(&m->head);
    bn_tk_act16_free(&m->a_head);
    free(m->head16);
    bn_llama_free(m->fp);
    free(m);
}

int bn_tk_llama_load(const bn_hf_model *hf, int max_ctx, int threads, bn_tk_llama **out, bn_err *err)
{
    *out = NULL;
    if (max_ctx < 1) return bn_err_set(err, BN_EINVAL, "ternary model: context length %d", max_ctx);
    bn_tk_llama *m = calloc(1, sizeof *m);
    if (!m) return bn_err_set(err, BN_ENOMEM, "ternary model: out of memory");
    m->threads = threads < 1 ? 1 : threads;
    m->max_ctx = max_ctx;
    m->exact = true;
    int rc = bn_llama_load(hf, &m->fp, err);
    if (rc) {
        free(m);
        return rc;
    }
    m->cfg = m->fp->cfg;
    bn_llama_set_threads(m->fp, m->threads);
    const bn_model_config *c = &m->cfg;
    int D = c->dim, F = c->hidden_dim, hd = c->head_dim, QD = c->n_heads * hd, KVD = c->n_kv_heads * hd;
    size_t cache = (size_t)c->n_layers * max_ctx * KVD;
    m->kc = malloc(cache * sizeof(float));
    m->vc = malloc(cache * sizeof(float));
    size_t B = (size_t)(m->batch = max_ctx < TK_BATCH ? max_ctx : TK_BATCH);
    m->x = malloc(sizeof(float) * D * B), m->n = malloc(sizeof(float) * D * B), m->o = malloc(sizeof(float) * D * B);
    m->qkv = malloc(sizeof(float) * (QD + 2 * KVD) * B), m->att = malloc(sizeof(float) * QD * B);
    m->gu = malloc(sizeof(float) * 2 * F * B), m->h = malloc(sizeof(float) * F * B);
    m->scores = malloc(sizeof(float) * max_ctx);
    m->inv_freq = malloc(sizeof(float) * (hd / 2 + 1));
    m->rot = malloc(sizeof(float) * (hd + 1) * B);
    if (!m->kc || !m->vc || !m->x || !m->n || !m->o || !m->qkv || !m->att || !m->gu || !m->h ||
        !m->scores || !m->inv_freq || !m->rot || bn_tk_act_init(&m->a_dim, m->batch, D) ||
        bn_tk_act_init(&m->a_qd, m->batch, QD) || bn_tk_act_init(&m->a_ff, m->batch, F) || bn_tk_act16_init(&m->a_head, D) ||
        bn_tk_pool_new(m->threads, &m->pool))
        rc = bn_err_set(err, BN_ENOMEM, "ternary model: out of memory (context %d)", max_ctx);
    for (int i = 0; !rc && i < hd / 2; i++)
        m->inv_freq[i] = (float)bn_rope_inv_freq(c, i);
    m->rope_mscale = (float)bn_rope_attention_factor(c);
    /* [rows, cols] of each group: q|k|v, o, gate|up, down */
    const int shape[G_COUNT][2] = {{QD + 2 * KVD, D}, {D, QD}, {2 * F, D}, {D, F}};
    size_t nblocks = 0;
    for (int p = 0; p < G_COUNT; p++) nblocks += bn_tk_matrix_blocks(shape[p][0], shape[p][1]) * (size_t)c->n_layers;
    if (!rc && !(m->packed = bn_alloc_big(nblocks * sizeof(bn_tk_block))))
        rc = bn_err_set(err, BN_ENOMEM, "ternary model: out of memory for %zu packed blocks", nblocks);
    bn_tk_block *at = m->packed;
    for (int p = 0; !rc && p < G_COUNT; p++) {
        m->w[p] = calloc((size_t)c->n_layers, sizeof(bn_tk_matrix));
        if (!m->w[p]) rc = bn_err_set(err, BN_ENOMEM, "ternary model: out of memory");
        for (int l = 0; !rc && l < c->n_layers; l++, at += bn_tk_matrix_blocks(shape[p][0], shape[p][1]))
            rc = build_group(m, p, l, at, shape[p][0], shape[p][1], err);
    }
    if (!rc) rc = bn_tk_q8_pack(&m->head, m->fp->params.head, c->vocab_size, D, "lm_head.weight", err);
    if (rc) {
        bn_tk_llama_free(m);
        return rc;
    }
    *out = m;
    return BN_OK;
}

bool bn_tk_llama_exact(const bn_tk_llama *m) { return m->exact; }

int bn_tk_llama_use_f16_head(bn_tk_llama *m, bn_err *err)
{
    size_t n = (size_t)m->cfg.vocab_size * m->cfg.dim;
    uint16_t *h = bn_alloc_big(n * sizeof(uint16_t));
    if (!h) return bn_err_set(err, BN_ENOMEM, "ternary model: out of memory for an F16 head");
    bn_f32_to_f16_array(m->fp->params.head, h, n);
    free(m->head16);
    m->head16 = h;
    return BN_OK;
}

int bn_tk_llama_set_threads(bn_tk_llama *m, int threads)
{
    m->threads = threads < 1 ? 1 : threads;
    bn_tk_pool_free(m->pool);
    int rc = bn_tk_pool_new(m->threads, &m->pool);
    if (rc) m->threads = 1;
    return rc;
}

size_t bn_tk_llama_bytes_per_token(const bn_tk_llama *m)
{
    const bn_model_config *c = &m->cfg;
    size_t head = m->head16 ? (size_t)c->vocab_size * c->dim * sizeof(uint16_t)
                            : (size_t)m->head.rows * m->head.nb * sizeof(bn_tk_q8_block);
    size_t n = (size_t)c->dim * sizeof(float) + head; /* embedding row, head */
    for (int p = 0; p < G_COUNT; p++)
        for (int l = 0; l < c->n_layers; l++) {
            const bn_tk_matrix *w = &m->w[p][l];
            n += (size_t)w->rows * ((size_t)w->nb * sizeof(bn_tk_block) + sizeof(float));
        }
    return n;
}

/* out = x / rms(x) * w, sums in double */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* cos and sin (times mscale) of pos * inv_freq[i], i < hd/2, into rot [hd]: once per
 * token, for every head of every layer */
static void rope_angles(float *rot, int hd, int pos, const float *inv_freq, float mscale)
{
    for (int i = 0; i < hd / 2; i++) {
        float a = (float)pos * inv_freq[i];
        rot[i] = mscale * cosf(a);
        rot[hd / 2 + i] = mscale * sinf(a);
    }
}

/* HF rotate_half: (v_i, v_{i+hd/2}) rotated by the angles of rot, for each head */
static void rope(float *v, int n_heads, int hd, const float *rot)
{
    const float *cs = rot, *sn = rot + hd / 2;
    for (int h = 0; h < n_heads; h++) {
        float *vh = v + h * hd;
        for (int i = 0; i < hd / 2; i++) {
            float x0 = vh[i], x1 = vh[i + hd / 2];
            vh[i] = x0 * cs[i] - x1 * sn[i];
            vh[i + hd / 2] = x1 * cs[i] + x0 * sn[i];
        }
    }
}

static void add_bias(float *y, const float *b, int n)
{
    if (b)
        for (int i = 0; i < n; i++) y[i] += b[i];
}

/* out [QD] = attention of q [QD] (one token at pos) over the cache rows 0..pos */
static void attention(bn_tk_llama *m, int layer, int pos, const float *q, float *out)
{
    const bn_model_config *c = &m->cfg;
    int hd = c->head_dim, KVD = c->n_kv_heads * hd, grp = c->n_heads / c->n_kv_heads;
    const float *kc = m->kc + (size_t)layer * m->max_ctx * KVD, *vc = m->vc + (size_t)layer * m->max_ctx * KVD;
    float inv = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < c->n_heads; h++) {
        const float *qh = q + h * hd;
        int kvh = h / grp;
        for (int j = 0; j <= pos; j++) m->scores[j] = bn_vdot(qh, kc + (size_t)j * KVD + kvh * hd, (size_t)hd) * inv;
        float mx = bn_vmax(m->scores, (size_t)pos + 1);
        float sum = bn_vexp_sub_sum(m->scores, (size_t)pos + 1, mx);
        float *oh = out + h * hd;
        memset(oh, 0, sizeof(float) * hd);
        for (int j = 0; j <= pos; j++) bn_vaxpy(oh, m->scores[j] / sum, vc + (size_t)j * KVD + kvh * hd, (size_t)hd);
    }
}

static void gemm(bn_tk_llama *m, int p, int layer, bn_tk_act *a, float *y)
{
    bn_tk_gemm_pool(&m->w[p][layer], a, y, m->pool, BN_ISA_AUTO);
}

typedef struct head_job {
    const bn_tk_q8_matrix *w;
    const bn_tk_act16 *x;
    float *y;
    const uint16_t *w16; /* set: the F16 head against xf */
    const float *xf;
} head_job;

static void head_rows(void *arg, int r0, int r1)
{
    const head_job *j = arg;
    if (j->w16) bn_tk_f16_gemv_rows(j->w16, j->w->cols, j->xf, j->y, r0, r1, BN_ISA_AUTO);
    else bn_tk_q8_gemv_rows(j->w, j->x, j->y, r0, r1, BN_ISA_AUTO);
}

/* Tokens [n] at positions pos0.. (n <= m->batch): every projection is one GEMM over the n
 * tokens (weights read once for all), the rest runs per token in order. A token's
 * activations are quantized on their own, and the kernels' GEMM equals their GEMV bit for
 * bit, so any split of a prompt into chunks gives the same numbers as steps. */
static void forward(bn_tk_llama *m, const int32_t *tokens, int n, int pos0, float *logits)
{
    const bn_model_config *c = &m->cfg;
    const bn_llama_params *P = &m->fp->params;
    int D = c->dim, F = c->hidden_dim, hd = c->head_dim, QD = c->n_heads * hd, KVD = c->n_kv_heads * hd;
    int QKV = QD + 2 * KVD;
    for (int t = 0; t < n; t++) {
        memcpy(m->x + (size_t)t * D, P->tok_emb + (size_t)tokens[t] * D, sizeof(float) * D);
        rope_angles(m->rot + (size_t)t * hd, hd, pos0 + t, m->inv_freq, m->rope_mscale);
    }
    for (int l = 0; l < c->n_layers; l++) {
        for (int t = 0; t < n; t++)
            rmsnorm(m->n + (size_t)t * D, m->x + (size_t)t * D, P->attn_norm + (size_t)l * D, D, c->rms_norm_eps);
        bn_tk_act_quantize(&m->a_dim, m->n, n);
        gemm(m, G_QKV, l, &m->a_dim, m->qkv);
        for (int t = 0; t < n; t++) {
            float *q = m->qkv + (size_t)t * QKV, *k = q + QD, *v = k + KVD;
            int pos = pos0 + t;
            add_bias(q, P->bq ? P->bq + (size_t)l * QD : NULL, QD);
            add_bias(k, P->bk ? P->bk + (size_t)l * KVD : NULL, KVD);
            add_bias(v, P->bv ? P->bv + (size_t)l * KVD : NULL, KVD);
            for (int h = 0; P->q_norm && h < c->n_heads; h++) /* qwen3: RMSNorm per q/k head */
                rmsnorm(q + h * hd, q + h * hd, P->q_norm + (size_t)l * hd, hd, c->rms_norm_eps);
            for (int h = 0; P->k_norm && h < c->n_kv_heads; h++)
                rmsnorm(k + h * hd, k + h * hd, P->k_norm + (size_t)l * hd, hd, c->rms_norm_eps);
            rope(q, c->n_heads, hd, m->rot + (size_t)t * hd);
            rope(k, c->n_kv_heads, hd, m->rot + (size_t)t * hd);
            size_t at = ((size_t)l * m->max_ctx + pos) * KVD;
            memcpy(m->kc + at, k, sizeof(float) * KVD);
            memcpy(m->vc + at, v, sizeof(float) * KVD);
        }
        for (int t = 0; t < n; t++) attention(m, l, pos0 + t, m->qkv + (size_t)t * QKV, m->att + (size_t)t * QD);
        bn_tk_act_quantize(&m->a_qd, m->att, n);
        gemm(m, G_O, l, &m->a_qd, m->o);
        for (size_t i = 0; i < (size_t)n * D; i++) m->x[i] += m->o[i];

        for (int t = 0; t < n; t++)
            rmsnorm(m->n + (size_t)t * D, m->x + (size_t)t * D, P->ffn_norm + (size_t)l * D, D, c->rms_norm_eps);
        bn_tk_act_quantize(&m->a_dim, m->n, n);
        gemm(m, G_GU, l, &m->a_dim, m->gu);
        for (int t = 0; t < n; t++) {
            const float *g = m->gu + (size_t)t * 2 * F, *u = g + F;
            float *h = m->h + (size_t)t * F;
            for (int i = 0; i < F; i++) h[i] = -g[i];
            bn_vexp(h, (size_t)F);
            for (int i = 0; i < F; i++) h[i] = g[i] / (1.0f + h[i]) * u[i];
        }
        bn_tk_act_quantize(&m->a_ff, m->h, n);
        gemm(m, G_DOWN, l, &m->a_ff, m->o);
        for (size_t i = 0; i < (size_t)n * D; i++) m->x[i] += m->o[i];
    }
    if (logits) {
        rmsnorm(m->n, m->x + (size_t)(n - 1) * D, P->final_norm, D, c->rms_norm_eps);
        if (!m->head16) bn_tk_act16_quantize(&m->a_head, m->n);
        head_job hj = {&m->head, &m->a_head, logits, m->head16, m->n};
        bn_tk_pool_rows(m->pool, c->vocab_size, head_rows, &hj);
    }
}

int bn_tk_llama_prefill(bn_tk_llama *m, const int32_t *tokens, int n, int pos0, float *logits, bn_err *err)
{
    const bn_model_config *c = &m->cfg;
    if (n < 1 || pos0 < 0 || pos0 > m->max_ctx - n)
        return bn_err_set(err, BN_EINVAL, "ternary model: positions %d..%d beyond the context (%d)", pos0, pos0 + n - 1,
                          m->max_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return bn_err_set(err, BN_EINVAL, "ternary model: token id %d outside the vocabulary (%d)", tokens[i],
                              c->vocab_size);
    for (int i = 0; i < n; i += m->batch) {
        int k = n - i < m->batch ? n - i : m->batch;
        forward(m, tokens + i, k, pos0 + i, i + k == n ? logits : NULL);
    }
    return BN_OK;
}

int bn_tk_llama_step(bn_tk_llama *m, int32_t token, int pos, float *logits, bn_err *err)
{
    if (pos < 0 || pos >= m->max_ctx)
        return bn_err_set(err, BN_EINVAL, "ternary model: position %d beyond the context (%d)", pos, m->max_ctx);
    return bn_tk_llama_prefill(m, &token, 1, pos, logits, err);
}

int bn_tk_llama_eval_windows(bn_tk_llama *m, const int32_t *ids, size_t n_ids, int ctx, int windows,
                             bn_llama_eval_result *out, bn_err *err)
{
    if (ctx <= 0 || ctx > m->max_ctx)
        return bn_err_set(err, BN_EINVAL, "eval: ctx %d outside 1..%d", ctx, m->max_ctx);
    size_t avail = n_ids > 0 ? (n_ids - 1) / (size_t)ctx : 0;
    if (windows <= 0) windows = (int)(avail > 1000000 ? 1000000 : avail);
    if (windows <= 0 || (size_t)windows > avail)
        return bn_err_set(err, BN_EINVAL, "eval: %d windows of %d tokens need %zu tokens, have %zu", windows, ctx,
                          (size_t)windows * ctx + 1, n_ids);
    int V = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)V);
    if (!logits) return bn_err_set(err, BN_ENOMEM, "eval: out of memory");
    double total = 0;
    int rc = BN_OK;
    for (int w = 0; !rc && w < windows; w++)
        for (int t = 0; !rc && t < ctx; t++) {
            const int32_t *in = ids + (size_t)w * ctx + t;
            rc = bn_tk_llama_step(m, in[0], t, logits, err);
            if (rc) break;
            float mx = bn_vmax(logits, (size_t)V);
            double se = 0;
            for (int i = 0; i < V; i++) se += exp((double)logits[i] - mx);
            total += log(se) + mx - logits[in[1]];
            if (!isfinite(total))
                rc = bn_err_set(err, BN_ENUMERIC, "eval: non-finite logits in window %d of %d", w + 1, windows);
        }
    free(logits);
    if (rc) return rc;
    out->tokens = (uint64_t)windows * ctx;
    out->windows = windows;
    out->mean_nll = total / (double)out->tokens;
    out->perplexity = exp(out->mean_nll);
    return BN_OK;
}
