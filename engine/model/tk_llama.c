/* tk_llama.c - single-token decode with ternary projections and a KV cache.
 *
 * Buffers are sized once at load (scratch vectors, activation quantization scratch for
 * the three input widths D, H*hd and F, the KV cache [L, max_ctx, KV*hd]); a step
 * allocates nothing. Attention over the cache runs on the calling thread (one token:
 * O(pos * H * hd), small beside the projections), the projections on the model's
 * bn_tk_pool helper threads and the LM head on OpenBLAS.
 */
#include "model/tk_llama.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/blas.h"
#include "model/llama.h"
#include "model/rope.h"
#include "quant/quant.h"
#include "quant/tkernels.h"

enum { P_WQ, P_WK, P_WV, P_WO, P_GATE, P_UP, P_DOWN, P_COUNT };
static const bn_role proj_role[P_COUNT] = {BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV, BN_ROLE_WO,
                                           BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN};

struct bn_tk_llama {
    bn_llama *fp;                /* embeddings, norms, biases, head (FP32) */
    bn_model_config cfg;
    int threads, max_ctx;
    bool exact;
    bn_tk_matrix *w[P_COUNT];    /* [L] each */
    float *kc, *vc;              /* [L, max_ctx, KV*hd] */
    float *x, *n, *q, *k, *v, *att, *o, *g, *u, *h, *scores, *inv_freq;
    float rope_mscale; /* cos and sin times this (yarn's attention factor, else 1) */
    bn_tk_act a_dim, a_qd, a_ff; /* quantized inputs of width D, H*hd, F */
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

static int build_proj(bn_tk_llama *m, int p, int layer, bn_err *err)
{
    int rows, cols;
    bn_llama_float *w = bn_llama_tensor(m->fp, &m->fp->params, proj_role[p], layer, &rows, &cols);
    char name[160];
    bn_hf_name(proj_role[p], layer, name, sizeof name);
    if (!w) return bn_err_set(err, BN_EFORMAT, "ternary model: missing %s", name);
    int8_t *codes = malloc((size_t)rows * cols);
    float *scale = malloc((size_t)rows * sizeof(float));
    int rc = BN_OK;
    if (!codes || !scale) rc = bn_err_set(err, BN_ENOMEM, "ternary model: out of memory for %s", name);
    if (!rc && !bn_tk_recover_ternary(w, rows, cols, codes, scale)) {
        m->exact = false;
        rc = ternarize(name, w, rows, cols, m->threads, codes, scale, err);
    }
    if (!rc) rc = bn_tk_matrix_pack(&m->w[p][layer], codes, scale, rows, cols, name, err);
    free(codes), free(scale);
    return rc;
}

void bn_tk_llama_free(bn_tk_llama *m)
{
    if (!m) return;
    for (int p = 0; p < P_COUNT; p++) {
        if (m->w[p])
            for (int l = 0; l < m->cfg.n_layers; l++) bn_tk_matrix_free(&m->w[p][l]);
        free(m->w[p]);
    }
    float *bufs[] = {m->kc, m->vc, m->x, m->n, m->q, m->k, m->v, m->att, m->o, m->g, m->u, m->h,
                     m->scores, m->inv_freq};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    bn_tk_act_free(&m->a_dim), bn_tk_act_free(&m->a_qd), bn_tk_act_free(&m->a_ff);
    bn_tk_pool_free(m->pool);
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
    m->x = malloc(sizeof(float) * D), m->n = malloc(sizeof(float) * D), m->o = malloc(sizeof(float) * D);
    m->q = malloc(sizeof(float) * QD), m->att = malloc(sizeof(float) * QD);
    m->k = malloc(sizeof(float) * KVD), m->v = malloc(sizeof(float) * KVD);
    m->g = malloc(sizeof(float) * F), m->u = malloc(sizeof(float) * F), m->h = malloc(sizeof(float) * F);
    m->scores = malloc(sizeof(float) * max_ctx);
    m->inv_freq = malloc(sizeof(float) * (hd / 2 + 1));
    if (!m->kc || !m->vc || !m->x || !m->n || !m->o || !m->q || !m->att || !m->k || !m->v || !m->g || !m->u ||
        !m->h || !m->scores || !m->inv_freq || bn_tk_act_init(&m->a_dim, 1, D) || bn_tk_act_init(&m->a_qd, 1, QD) ||
        bn_tk_act_init(&m->a_ff, 1, F) || bn_tk_pool_new(m->threads, &m->pool))
        rc = bn_err_set(err, BN_ENOMEM, "ternary model: out of memory (context %d)", max_ctx);
    for (int i = 0; !rc && i < hd / 2; i++)
        m->inv_freq[i] = (float)bn_rope_inv_freq(c, i);
    m->rope_mscale = (float)bn_rope_attention_factor(c);
    for (int p = 0; !rc && p < P_COUNT; p++) {
        m->w[p] = calloc((size_t)c->n_layers, sizeof(bn_tk_matrix));
        if (!m->w[p]) rc = bn_err_set(err, BN_ENOMEM, "ternary model: out of memory");
        for (int l = 0; !rc && l < c->n_layers; l++) rc = build_proj(m, p, l, err);
    }
    if (rc) {
        bn_tk_llama_free(m);
        return rc;
    }
    *out = m;
    return BN_OK;
}

bool bn_tk_llama_exact(const bn_tk_llama *m) { return m->exact; }

/* out = x / rms(x) * w, sums in double */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* HF rotate_half: (v_i, v_{i+hd/2}) rotated by pos * inv_freq[i] and scaled by mscale,
 * for each head */
static void rope(float *v, int n_heads, int hd, int pos, const float *inv_freq, float mscale)
{
    for (int h = 0; h < n_heads; h++) {
        float *vh = v + h * hd;
        for (int i = 0; i < hd / 2; i++) {
            float a = (float)pos * inv_freq[i], cs = mscale * cosf(a), sn = mscale * sinf(a);
            float x0 = vh[i], x1 = vh[i + hd / 2];
            vh[i] = x0 * cs - x1 * sn;
            vh[i + hd / 2] = x1 * cs + x0 * sn;
        }
    }
}

static void add_bias(float *y, const float *b, int n)
{
    if (b)
        for (int i = 0; i < n; i++) y[i] += b[i];
}

static void attention(bn_tk_llama *m, int layer, int pos)
{
    const bn_model_config *c = &m->cfg;
    int hd = c->head_dim, KVD = c->n_kv_heads * hd, grp = c->n_heads / c->n_kv_heads;
    const float *kc = m->kc + (size_t)layer * m->max_ctx * KVD, *vc = m->vc + (size_t)layer * m->max_ctx * KVD;
    float inv = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < c->n_heads; h++) {
        const float *qh = m->q + h * hd;
        int kvh = h / grp;
        float mx = -INFINITY;
        for (int j = 0; j <= pos; j++) {
            const float *kj = kc + (size_t)j * KVD + kvh * hd;
            float s = 0;
            for (int i = 0; i < hd; i++) s += qh[i] * kj[i];
            m->scores[j] = s * inv;
            mx = m->scores[j] > mx ? m->scores[j] : mx;
        }
        float sum = 0;
        for (int j = 0; j <= pos; j++) sum += (m->scores[j] = expf(m->scores[j] - mx));
        float *oh = m->att + h * hd;
        memset(oh, 0, sizeof(float) * hd);
        for (int j = 0; j <= pos; j++) {
            const float *vj = vc + (size_t)j * KVD + kvh * hd;
            float p = m->scores[j] / sum;
            for (int i = 0; i < hd; i++) oh[i] += p * vj[i];
        }
    }
}

static void gemv(bn_tk_llama *m, int p, int layer, bn_tk_act *a, float *y)
{
    bn_tk_gemm_pool(&m->w[p][layer], a, y, m->pool, BN_ISA_AUTO); /* a holds one token */
}

int bn_tk_llama_step(bn_tk_llama *m, int32_t token, int pos, float *logits, bn_err *err)
{
    const bn_model_config *c = &m->cfg;
    const bn_llama_params *P = &m->fp->params;
    int D = c->dim, F = c->hidden_dim, hd = c->head_dim, QD = c->n_heads * hd, KVD = c->n_kv_heads * hd;
    if (token < 0 || token >= c->vocab_size)
        return bn_err_set(err, BN_EINVAL, "ternary model: token id %d outside the vocabulary (%d)", token, c->vocab_size);
    if (pos < 0 || pos >= m->max_ctx)
        return bn_err_set(err, BN_EINVAL, "ternary model: position %d beyond the context (%d)", pos, m->max_ctx);
    memcpy(m->x, P->tok_emb + (size_t)token * D, sizeof(float) * D);
    for (int l = 0; l < c->n_layers; l++) {
        rmsnorm(m->n, m->x, P->attn_norm + (size_t)l * D, D, c->rms_norm_eps);
        bn_tk_act_quantize(&m->a_dim, m->n, 1);
        gemv(m, P_WQ, l, &m->a_dim, m->q);
        gemv(m, P_WK, l, &m->a_dim, m->k);
        gemv(m, P_WV, l, &m->a_dim, m->v);
        add_bias(m->q, P->bq ? P->bq + (size_t)l * QD : NULL, QD);
        add_bias(m->k, P->bk ? P->bk + (size_t)l * KVD : NULL, KVD);
        add_bias(m->v, P->bv ? P->bv + (size_t)l * KVD : NULL, KVD);
        for (int h = 0; P->q_norm && h < c->n_heads; h++) /* qwen3: RMSNorm per q/k head */
            rmsnorm(m->q + h * hd, m->q + h * hd, P->q_norm + (size_t)l * hd, hd, c->rms_norm_eps);
        for (int h = 0; P->k_norm && h < c->n_kv_heads; h++)
            rmsnorm(m->k + h * hd, m->k + h * hd, P->k_norm + (size_t)l * hd, hd, c->rms_norm_eps);
        rope(m->q, c->n_heads, hd, pos, m->inv_freq, m->rope_mscale);
        rope(m->k, c->n_kv_heads, hd, pos, m->inv_freq, m->rope_mscale);
        size_t at = ((size_t)l * m->max_ctx + pos) * KVD;
        memcpy(m->kc + at, m->k, sizeof(float) * KVD);
        memcpy(m->vc + at, m->v, sizeof(float) * KVD);
        attention(m, l, pos);
        bn_tk_act_quantize(&m->a_qd, m->att, 1);
        gemv(m, P_WO, l, &m->a_qd, m->o);
        for (int i = 0; i < D; i++) m->x[i] += m->o[i];

        rmsnorm(m->n, m->x, P->ffn_norm + (size_t)l * D, D, c->rms_norm_eps);
        bn_tk_act_quantize(&m->a_dim, m->n, 1);
        gemv(m, P_GATE, l, &m->a_dim, m->g);
        gemv(m, P_UP, l, &m->a_dim, m->u);
        for (int i = 0; i < F; i++) m->h[i] = m->g[i] / (1.0f + expf(-m->g[i])) * m->u[i];
        bn_tk_act_quantize(&m->a_ff, m->h, 1);
        gemv(m, P_DOWN, l, &m->a_ff, m->o);
        for (int i = 0; i < D; i++) m->x[i] += m->o[i];
    }
    if (logits) {
        rmsnorm(m->n, m->x, P->final_norm, D, c->rms_norm_eps);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, c->vocab_size, D, 1.0f, P->head, D, m->n, 1, 0.0f, logits, 1);
    }
    return BN_OK;
}
