/* llama.cu - the Llama model on one GPU: one allocation, upload, forward, loss, backward,
 * AdamW, STE projection (see cuda.h). Mirrors model/llama.c's forward_layers and
 * backward_layers step for step; the layer kernels are in ops.cu and attention.cu. */
#include "cuda/cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/ops.cuh"

#define WORKSPACE_BYTES ((size_t)64 << 20)

struct dims {
    size_t V, D, L, H, KV, hd, F, QD, KVD;
};

static dims dims_of(const bn_model_config *c)
{
    dims d = { (size_t)c->vocab_size, (size_t)c->dim, (size_t)c->n_layers, (size_t)c->n_heads,
               (size_t)c->n_kv_heads, (size_t)c->head_dim, (size_t)c->hidden_dim, 0, 0 };
    d.QD = d.H * d.hd;
    d.KVD = d.KV * d.hd;
    return d;
}

/* Parameter views, the CPU engine's order (model/llama.c params_point; no biases). */
struct params {
    float *tok_emb, *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w_gate, *w_up, *w_down,
        *final_norm, *head;
};

static size_t params_point(const bn_model_config *c, float *mem, params *p)
{
    dims d = dims_of(c);
    size_t off = 0;
#define TAKE(f, n) do { p->f = mem ? mem + off : NULL; off += (n); } while (0)
    TAKE(tok_emb, d.V * d.D);
    TAKE(attn_norm, d.L * d.D);
    TAKE(wq, d.L * d.QD * d.D);
    TAKE(wk, d.L * d.KVD * d.D);
    TAKE(wv, d.L * d.KVD * d.D);
    TAKE(wo, d.L * d.D * d.QD);
    TAKE(ffn_norm, d.L * d.D);
    TAKE(w_gate, d.L * d.F * d.D);
    TAKE(w_up, d.L * d.F * d.D);
    TAKE(w_down, d.L * d.D * d.F);
    TAKE(final_norm, d.D);
    if (c->tied_embeddings) p->head = p->tok_emb;
    else TAKE(head, d.V * d.D);
#undef TAKE
    return off;
}

/* Byte-addressed layout of the one allocation: TAKE places `count` elements of `type` at
 * the next 256-byte boundary (base NULL: counts only). */
#define TAKE(ptr, type, count) do { \
        if (base) (ptr) = (type *)(base + *off); \
        *off += ((size_t)(count) * sizeof(type) + 255) & ~(size_t)255; \
    } while (0)

/* FP32 activations [shapes for N = B*T rows], the FP32 path's. With ls = 1 each layer
 * keeps its own (training: the backward reads them); with ls = 0 every layer reuses layer
 * 0's (forward only), since a layer reads nothing of the one before but its output. */
struct acts {
    size_t ls;                 /* layer stride: 1 stored per layer, 0 reused */
    float *encoded;            /* [N, D] */
    float *ln1, *ln1_rstd;     /* [L, N, D], [L, N] */
    float *q, *k, *v;          /* [L, N, QD], [L, N, KVD] x 2 (q, k after RoPE) */
    float *atty, *lse;         /* [L, N, QD], [L, B, H, T] */
    float *res_att;            /* [L, N, D] */
    float *ln2, *ln2_rstd;     /* [L, N, D], [L, N] */
    float *gate, *up, *ffh;    /* [L, N, F] */
    float *res_ffn;            /* [L, N, D] */
    float *lnf, *lnf_rstd;     /* [N, D], [N] */
    /* shared by both paths (common_point) */
    float *logits;             /* [N, V]; becomes dlogits in bn_cu_loss when training */
    float *losses;             /* [N] */
    float *rope_cos, *rope_sin; /* [max_T, hd/2] */
    /* backward (ls = 1 only) */
    float *dres, *dln;         /* [N, D] */
    float *dq, *dk, *dv;       /* [N, QD], [N, KVD] x 2 */
    float *datty;              /* [N, QD] */
    float *dgate, *dup, *dffh; /* [N, F] */
    float *dsum;               /* [B, H, T] */
};

/* bf16 training path (bf16 mode with a head_dim the tensor-core attention takes):
 * activations in bf16, the residual stream and the norms' statistics in FP32. Per layer
 * (ls = 1 when training) it keeps only what the backward cannot recompute cheaply: the
 * norms' xhat (their products input n = xhat * w is recomputed), q, k, v, the attention
 * output and lse, gate and up (silu(gate) * up is recomputed). */
struct bacts {
    size_t ls;
    float *res;                    /* [N, D] residual stream */
    float *rstd1, *rstd2, *rstdf;  /* [L, N] x 2, [N] */
    float *lse;                    /* [L, B, H, T] */
    bn_bf16 *xhat1, *xhat2;        /* [L, N, D] */
    bn_bf16 *q, *k, *v;            /* [L, N, QD], [L, N, KVD] x 2, after RoPE */
    bn_bf16 *atty;                 /* [L, N, QD] */
    bn_bf16 *gate, *up;            /* [L, N, F] */
    bn_bf16 *xhatf, *nf;           /* [N, D] final norm: xhat and the head's input */
    bn_bf16 *n;                    /* [N, D] scratch: a norm's output (products input) */
    bn_bf16 *ffh;                  /* [N, F] scratch: silu(gate) * up */
    /* backward (training) */
    float *dres, *dln;             /* [N, D] */
    bn_bf16 *dres_h;               /* [N, D] bf16 copy of dres (products operand) */
    bn_bf16 *dffh, *dgate, *dup;   /* [N, F] */
    bn_bf16 *datty, *dq, *dk, *dv; /* [N, QD] x 2, [N, KVD] x 2 */
    bn_bf16 *dlogits;              /* [N, V] */
    float *dsum;                   /* [B, H, T] */
};

static void common_point(const bn_model_config *c, size_t B, size_t T, char *base, size_t *off,
                         acts *a)
{
    dims d = dims_of(c);
    size_t N = B * T;
    TAKE(a->logits, float, N * d.V);
    TAKE(a->losses, float, N);
    TAKE(a->rope_cos, float, T * d.hd / 2);
    TAKE(a->rope_sin, float, T * d.hd / 2);
}

static void acts_point(const bn_model_config *c, size_t B, size_t T, bool per_layer, char *base,
                       size_t *off, acts *a)
{
    dims d = dims_of(c);
    size_t N = B * T, L = per_layer ? d.L : 1;
    a->ls = per_layer ? 1 : 0;
    TAKE(a->encoded, float, N * d.D);
    TAKE(a->ln1, float, L * N * d.D);
    TAKE(a->ln1_rstd, float, L * N);
    TAKE(a->q, float, L * N * d.QD);
    TAKE(a->k, float, L * N * d.KVD);
    TAKE(a->v, float, L * N * d.KVD);
    TAKE(a->atty, float, L * N * d.QD);
    TAKE(a->lse, float, L * N * d.H);
    TAKE(a->res_att, float, L * N * d.D);
    TAKE(a->ln2, float, L * N * d.D);
    TAKE(a->ln2_rstd, float, L * N);
    TAKE(a->gate, float, L * N * d.F);
    TAKE(a->up, float, L * N * d.F);
    TAKE(a->ffh, float, L * N * d.F);
    TAKE(a->res_ffn, float, L * N * d.D);
    TAKE(a->lnf, float, N * d.D);
    TAKE(a->lnf_rstd, float, N);
    if (per_layer) {
        TAKE(a->dres, float, N * d.D);
        TAKE(a->dln, float, N * d.D);
        TAKE(a->dq, float, N * d.QD);
        TAKE(a->dk, float, N * d.KVD);
        TAKE(a->dv, float, N * d.KVD);
        TAKE(a->datty, float, N * d.QD);
        TAKE(a->dgate, float, N * d.F);
        TAKE(a->dup, float, N * d.F);
        TAKE(a->dffh, float, N * d.F);
        TAKE(a->dsum, float, N * d.H);
    }
}

static void bacts_point(const bn_model_config *c, size_t B, size_t T, bool train, char *base,
                        size_t *off, bacts *a)
{
    dims d = dims_of(c);
    size_t N = B * T, L = train ? d.L : 1;
    a->ls = train ? 1 : 0;
    TAKE(a->res, float, N * d.D);
    TAKE(a->rstd1, float, L * N);
    TAKE(a->rstd2, float, L * N);
    TAKE(a->rstdf, float, N);
    TAKE(a->lse, float, L * N * d.H);
    TAKE(a->xhat1, bn_bf16, L * N * d.D);
    TAKE(a->xhat2, bn_bf16, L * N * d.D);
    TAKE(a->q, bn_bf16, L * N * d.QD);
    TAKE(a->k, bn_bf16, L * N * d.KVD);
    TAKE(a->v, bn_bf16, L * N * d.KVD);
    TAKE(a->atty, bn_bf16, L * N * d.QD);
    TAKE(a->gate, bn_bf16, L * N * d.F);
    TAKE(a->up, bn_bf16, L * N * d.F);
    TAKE(a->xhatf, bn_bf16, N * d.D);
    TAKE(a->nf, bn_bf16, N * d.D);
    TAKE(a->n, bn_bf16, N * d.D);
    TAKE(a->ffh, bn_bf16, N * d.F);
    if (train) {
        TAKE(a->dres, float, N * d.D);
        TAKE(a->dln, float, N * d.D);
        TAKE(a->dres_h, bn_bf16, N * d.D);
        TAKE(a->dffh, bn_bf16, N * d.F);
        TAKE(a->dgate, bn_bf16, N * d.F);
        TAKE(a->dup, bn_bf16, N * d.F);
        TAKE(a->datty, bn_bf16, N * d.QD);
        TAKE(a->dq, bn_bf16, N * d.QD);
        TAKE(a->dk, bn_bf16, N * d.KVD);
        TAKE(a->dv, bn_bf16, N * d.KVD);
        TAKE(a->dlogits, bn_bf16, N * d.V);
        TAKE(a->dsum, float, N * d.H);
    }
}

/* Trainable tensors contiguous in the flat layout with one optimizer group (and, for
 * Muon, one shape: the same projection of consecutive layers): one launch per elementwise
 * op, Newton-Schulz batched over the run's matrices. */
struct opt_run {
    size_t off, n;   /* floats */
    int rows, cols, count; /* Muon: count matrices [rows, cols] */
    bool muon;
};

struct bn_cu_model {
    bn_model_config cfg;
    bn_cu_opts o;
    size_t n_params;
    params p;          /* master weights (FP32) */
    params w;          /* compute weights: == p, or the STE projection */
    params g;          /* gradients (train) */
    params pw;         /* FP32 weights the bf16 path reads (norms, embedding): w, else p */
    float *pmem, *wmem, *gmem, *mmem, *vmem; /* wmem: NULL on the bf16 STE path (wh only) */
    bn_bf16 *wh;       /* bf16 compute weights, flat layout (bf16 path) */
    bool bf;           /* the bf16 training path is built (bf16 mode, head_dim 16..128) */
    bool last_bf;      /* the last forward ran it (the backward follows the same path) */
    acts a;            /* FP32 path; its logits, losses and RoPE tables serve both */
    bacts h;           /* bf16 path */
    int32_t *tokens, *targets; /* [N] */
    uint8_t *mask;             /* [N] */
    double *normsq;            /* [8]: [0] gradient norm^2 */
    void *base;                /* the one allocation */
    size_t bytes;
    void *workspace;
    cublasHandle_t blas;
    cudaStream_t s;
    int B, T;
    /* fine-tune trainer (o.trainer): MuGrokfast state beside mmem (Muon momentum | AdamW m)
     * and vmem (AdamW v), all in the flat layout */
    float *ema;                /* [n_params] Grokfast EMA */
    float *ns;                 /* [ns_cap] Newton-Schulz scratch: Y2, Y3 [m*n], A, B [m*m] */
    float *xsqmem;             /* [xsq_cap] the tensors' calibration statistics */
    size_t ns_cap, xsq_cap;
    bn_cu_tensor *tt;          /* [n_tt], xsq pointing into xsqmem */
    int n_tt;
    struct opt_run *runs;      /* trainable tensors merged into contiguous runs */
    int n_runs;
    bn_cu_train tc;
    int64_t t, applied;        /* steps (schedule), applied steps (bias correction, EMA) */
};

/* ---- errors ---- */

static int cuda_fail(bn_err *err, cudaError_t e, const char *what)
{
    return bn_err_set(err, e == cudaErrorMemoryAllocation ? BN_ENOMEM : BN_EIO, "cuda: %s: %s",
                      what, cudaGetErrorString(e));
}

#define CU(call, what) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return cuda_fail(err, e_, what); } while (0)
#define BL(call, what) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) \
    return bn_err_set(err, BN_EIO, "cublas: %s: status %d", what, (int)s_); } while (0)

int bn_cu_device_count(char *why, size_t why_len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why) snprintf(why, why_len, "no usable CUDA device (%s)", cudaGetErrorString(e));
        cudaGetLastError();
        return 0;
    }
    if (n == 0 && why) snprintf(why, why_len, "no CUDA device on this host");
    return n;
}

int bn_cu_mem_info(int gpu, size_t *free_b, size_t *total_b, bn_err *err)
{
    CU(cudaSetDevice(gpu), "cudaSetDevice");
    CU(cudaMemGetInfo(free_b, total_b), "cudaMemGetInfo");
    return 0;
}

int bn_cu_check_config(const bn_model_config *c, bn_err *err)
{
    if (c->attention_bias)
        return bn_err_set(err, BN_EUNSUPPORTED, "cuda backend: attention_bias (q/k/v biases) is not implemented on the GPU; use device \"cpu\"");
    if (c->qk_norm)
        return bn_err_set(err, BN_EUNSUPPORTED, "cuda backend: qk_norm (qwen3 q/k head RMSNorm) is not implemented on the GPU; use device \"cpu\"");
    if (c->rope_type == BN_ROPE_YARN)
        return bn_err_set(err, BN_EUNSUPPORTED, "cuda backend: rope_scaling.rope_type \"yarn\" is not implemented on the GPU; use device \"cpu\"");
    int hd = c->head_dim;
    if (hd != 8 && hd != 16 && hd != 32 && hd != 64 && hd != 128)
        return bn_err_set(err, BN_EUNSUPPORTED, "cuda backend: head_dim %d is not supported on the GPU (8, 16, 32, 64 or 128)", hd);
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
        return bn_err_set(err, BN_EUNSUPPORTED, "cuda backend: n_heads %d not a multiple of n_kv_heads %d", c->n_heads, c->n_kv_heads);
    return 0;
}

/* Newton-Schulz scratch per matrix [m, n] (m <= n): Y2, Y3 [m*n], A, B [m*m], two double
 * sums and eight float factors; a batch takes up to NS_BATCH_FLOATS (or one matrix). */
#define NS_BATCH_FLOATS ((size_t)64 << 20)
static size_t ns_per_matrix(size_t m, size_t n) { return 2 * m * n + 2 * m * m + 4 + 8; }

/* Trainer scratch: Newton-Schulz for the largest hidden matrix (Y2, Y3 [m*n] + A, B [m*m],
 * m = the smaller side) and room for every linear's calibration statistics. */
static void trainer_sizes(const bn_model_config *c, size_t *ns, size_t *xsq)
{
    dims d = dims_of(c);
    size_t sh[5][2] = { { d.QD, d.D }, { d.KVD, d.D }, { d.D, d.QD }, { d.F, d.D }, { d.D, d.F } };
    *ns = 0;
    for (int i = 0; i < 5; i++) {
        size_t m = sh[i][0] < sh[i][1] ? sh[i][0] : sh[i][1], n = sh[i][0] + sh[i][1] - m;
        size_t pm = ns_per_matrix(m, n), batch = NS_BATCH_FLOATS / pm;
        if (batch < 1) batch = 1;
        if (batch > d.L) batch = d.L;
        if (batch * pm > *ns) *ns = batch * pm;
    }
    *ns += 8; /* alignment of the sums */
    *xsq = d.L * (5 * d.D + d.QD + d.F) + 64;
}

/* The bf16 training path: bf16 mode and a head_dim the tensor-core attention takes. */
static bool bf_path(const bn_model_config *c, const bn_cu_opts *o)
{
    int hd = c->head_dim;
    return o->bf16 && (hd == 16 || hd == 32 || hd == 64 || hd == 128);
}

/* Lays out the one allocation (base NULL: counts only) and returns its bytes:
 *   masters p | FP32 compute weights w (apart from p: FP32 path with ste or trainer; bf16
 *   path with trainer) | bf16 compute weights wh (bf16 path) | grads, moments (train) |
 *   Grokfast EMA, Newton-Schulz and calibration scratch (trainer) | norm, tokens |
 *   logits, losses, RoPE | activations.
 * On the bf16 path the FP32 activation view (ls = 0, the FP32 evaluation forward) shares
 * its bytes with the bf16 activations: the two are never live together. */
static size_t plan(bn_cu_model *m, const bn_model_config *c, const bn_cu_opts *o, char *base)
{
    size_t off0 = 0, *off = &off0, np = params_point(c, NULL, &m->p);
    size_t B = (size_t)o->max_B, T = (size_t)o->max_T, N = B * T;
    bool bf = bf_path(c, o), tstate = o->trainer && o->train;
    bool sep = bf ? o->trainer : (o->ste || o->trainer);
    m->bf = bf;
    TAKE(m->pmem, float, np);
    if (sep) TAKE(m->wmem, float, np);
    else m->wmem = bf && o->ste ? NULL : m->pmem;
    if (bf) TAKE(m->wh, bn_bf16, np);
    if (o->train) {
        TAKE(m->gmem, float, np);
        TAKE(m->mmem, float, np);
        TAKE(m->vmem, float, np);
    }
    if (tstate) {
        trainer_sizes(c, &m->ns_cap, &m->xsq_cap);
        TAKE(m->ema, float, np);
        TAKE(m->ns, float, m->ns_cap);
        TAKE(m->xsqmem, float, m->xsq_cap);
    }
    TAKE(m->normsq, double, 8);
    TAKE(m->tokens, int32_t, N);
    TAKE(m->targets, int32_t, N);
    TAKE(m->mask, uint8_t, N);
    common_point(c, B, T, base, off, &m->a);
    size_t start = *off, f32_end, bf_end;
    acts_point(c, B, T, o->train && !bf, base, off, &m->a);
    f32_end = *off;
    if (bf) {
        *off = start;
        bacts_point(c, B, T, o->train, base, off, &m->h);
        bf_end = *off;
        *off = bf_end > f32_end ? bf_end : f32_end;
    }
    return *off;
}
#undef TAKE

size_t bn_cu_mem_need(const bn_model_config *cfg, const bn_cu_opts *o)
{
    bn_cu_model m;
    memset(&m, 0, sizeof m);
    return plan(&m, cfg, o, NULL) + 4096 + WORKSPACE_BYTES;
}

/* ---- set-up ---- */

static void rope_tables(const bn_model_config *c, int T, float *cosb, float *sinb)
{
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double inv = bn_rope_inv_freq(c, i); /* every rope type (model/rope.c) */
        for (int t = 0; t < T; t++) {
            double ang = t * inv;
            cosb[(size_t)t * half + i] = (float)cos(ang);
            sinb[(size_t)t * half + i] = (float)sin(ang);
        }
    }
}

static int setup(bn_cu_model *m, const float *host, bn_err *err)
{
    const bn_model_config *c = &m->cfg;
    const bn_cu_opts *o = &m->o;
    CU(cudaSetDevice(o->gpu), "cudaSetDevice");
    size_t need = bn_cu_mem_need(c, o), fr = 0, tot = 0;
    CU(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
    if (need > fr)
        return bn_err_set(err, BN_ENOMEM, "cuda: the job needs %.2f GiB of GPU memory (B %d x T %d%s), GPU %d has %.2f GiB free of %.2f GiB",
                          need / 1073741824.0, o->max_B, o->max_T, o->train ? ", training" : "",
                          o->gpu, fr / 1073741824.0, tot / 1073741824.0);
    CU(cudaStreamCreate(&m->s), "cudaStreamCreate");
    BL(cublasCreate(&m->blas), "cublasCreate");
    BL(cublasSetStream(m->blas, m->s), "cublasSetStream");
    CU(cudaMalloc(&m->workspace, WORKSPACE_BYTES), "cudaMalloc workspace");
    BL(cublasSetWorkspace(m->blas, m->workspace, WORKSPACE_BYTES), "cublasSetWorkspace");
    size_t np = m->n_params;
    m->bytes = plan(m, c, o, NULL);
    CU(cudaMalloc(&m->base, m->bytes), "cudaMalloc model");
    plan(m, c, o, (char *)m->base);
    params_point(c, m->pmem, &m->p);
    params_point(c, m->wmem, &m->w);
    params_point(c, m->wmem ? m->wmem : m->pmem, &m->pw);
    if (o->train) params_point(c, m->gmem, &m->g);
    CU(cudaMemcpy(m->pmem, host, np * sizeof(float), cudaMemcpyHostToDevice), "upload params");
    if (o->train) {
        CU(cudaMemset(m->gmem, 0, np * sizeof(float)), "zero grads");
        CU(cudaMemset(m->mmem, 0, np * sizeof(float)), "zero moments");
        CU(cudaMemset(m->vmem, 0, np * sizeof(float)), "zero moments");
        if (m->ema) CU(cudaMemset(m->ema, 0, np * sizeof(float)), "zero EMA");
    }
    size_t half = (size_t)o->max_T * c->head_dim / 2;
    float *tab = (float *)malloc(2 * half * sizeof(float));
    if (!tab) return bn_err_set(err, BN_ENOMEM, "cuda: rope tables");
    rope_tables(c, o->max_T, tab, tab + half);
    cudaError_t e1 = cudaMemcpy(m->a.rope_cos, tab, half * sizeof(float), cudaMemcpyHostToDevice);
    cudaError_t e2 = cudaMemcpy(m->a.rope_sin, tab + half, half * sizeof(float), cudaMemcpyHostToDevice);
    free(tab);
    CU(e1, "upload rope");
    CU(e2, "upload rope");
    return bn_cu_refresh(m, err);
}

int bn_cu_new(const bn_model_config *cfg, const float *host, size_t n_params, const bn_cu_opts *o,
              bn_cu_model **out, bn_err *err)
{
    *out = NULL;
    if (bn_cu_check_config(cfg, err)) return err ? err->code : BN_EUNSUPPORTED;
    params p;
    size_t np = params_point(cfg, NULL, &p);
    if (np != n_params)
        return bn_err_set(err, BN_EINVAL, "cuda: %zu parameters given, the config has %zu", n_params, np);
    if (o->max_B < 1 || o->max_T < 1) return bn_err_set(err, BN_EINVAL, "cuda: empty batch");
    bn_cu_model *m = (bn_cu_model *)calloc(1, sizeof *m);
    if (!m) return bn_err_set(err, BN_ENOMEM, "cuda: model");
    m->cfg = *cfg;
    m->o = *o;
    m->n_params = np;
    int rc = setup(m, host, err);
    if (rc) {
        bn_cu_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void bn_cu_free(bn_cu_model *m)
{
    if (!m) return;
    cudaSetDevice(m->o.gpu);
    if (m->s) cudaStreamSynchronize(m->s);
    if (m->blas) cublasDestroy(m->blas);
    cudaFree(m->base);
    cudaFree(m->workspace);
    if (m->s) cudaStreamDestroy(m->s);
    free(m->tt);
    free(m->runs);
    free(m);
}

void bn_cu_set_bf16(bn_cu_model *m, bool on) { m->o.bf16 = on; }

size_t bn_cu_bytes(const bn_cu_model *m) { return m->bytes + WORKSPACE_BYTES; }
size_t bn_cu_logits_count(const bn_cu_model *m) { return (size_t)m->B * m->T * m->cfg.vocab_size; }

/* ---- matrix products (row-major views through column-major cuBLAS) ---- */

static cublasComputeType_t compute_type(const bn_cu_model *m)
{
    return m->o.bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
}

static cublasStatus_t gemm(const bn_cu_model *m, cublasOperation_t ta, cublasOperation_t tb,
                           int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                           float beta, float *C, int ldc)
{
    float one = 1.0f;
    return cublasGemmEx(m->blas, ta, tb, M, N, K, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb,
                        &beta, C, CUDA_R_32F, ldc, compute_type(m), CUBLAS_GEMM_DEFAULT);
}

/* out[N, O] = x[N, C] W[O, C]^T */
static cublasStatus_t mm_forward(const bn_cu_model *m, float *out, const float *x, const float *W,
                                 int N, int C, int O)
{
    return gemm(m, CUBLAS_OP_T, CUBLAS_OP_N, O, N, C, W, C, x, C, 0.0f, out, O);
}

/* dx[N, C] (beta 0: =, 1: +=) dout[N, O] W[O, C] */
static cublasStatus_t mm_backward_dx(const bn_cu_model *m, float *dx, const float *dout,
                                     const float *W, int N, int C, int O, float beta)
{
    return gemm(m, CUBLAS_OP_N, CUBLAS_OP_N, C, N, O, W, C, dout, O, beta, dx, C);
}

/* dW[O, C] += dout[N, O]^T x[N, C] */
static cublasStatus_t mm_backward_dw(const bn_cu_model *m, float *dW, const float *dout,
                                     const float *x, int N, int C, int O)
{
    return gemm(m, CUBLAS_OP_N, CUBLAS_OP_T, C, O, N, x, C, dout, O, 1.0f, dW, C);
}

/* bf16 path: C (FP32 or bf16) = op(A) op(B) (+ beta C), bf16 operands, FP32 accumulation */
static cublasStatus_t gemm_bf16(const bn_cu_model *m, cublasOperation_t ta, cublasOperation_t tb,
                                int M, int N, int K, const bn_bf16 *A, int lda, const bn_bf16 *B,
                                int ldb, float beta, void *C, cudaDataType ct, int ldc)
{
    float one = 1.0f;
    return cublasGemmEx(m->blas, ta, tb, M, N, K, &one, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb,
                        &beta, C, ct, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

/* out[N, O] (beta 0: =, 1: +=) x[N, C] W[O, C]^T */
static cublasStatus_t bmm_forward(const bn_cu_model *m, void *out, cudaDataType ot, const bn_bf16 *x,
                                  const bn_bf16 *W, int N, int C, int O, float beta)
{
    return gemm_bf16(m, CUBLAS_OP_T, CUBLAS_OP_N, O, N, C, W, C, x, C, beta, out, ot, O);
}

/* dx[N, C] (beta 0: =, 1: +=) dout[N, O] W[O, C] */
static cublasStatus_t bmm_backward_dx(const bn_cu_model *m, void *dx, cudaDataType dt,
                                      const bn_bf16 *dout, const bn_bf16 *W, int N, int C, int O,
                                      float beta)
{
    return gemm_bf16(m, CUBLAS_OP_N, CUBLAS_OP_N, C, N, O, W, C, dout, O, beta, dx, dt, C);
}

/* dW[O, C] (FP32) += dout[N, O]^T x[N, C] */
static cublasStatus_t bmm_backward_dw(const bn_cu_model *m, float *dW, const bn_bf16 *dout,
                                      const bn_bf16 *x, int N, int C, int O)
{
    return gemm_bf16(m, CUBLAS_OP_N, CUBLAS_OP_T, C, O, N, x, C, dout, O, 1.0f, dW, CUDA_R_32F, C);
}

#define MM(call) BL(call, #call)
#define F32 CUDA_R_32F
#define BF16 CUDA_R_16BF
/* a tensor's bf16 compute weights: the same flat offset as its FP32 master */
#define WH(f) (m->wh + (m->p.f - m->pmem))

/* ---- forward ---- */

/* FP32 activations; products FP32 or (bf16 mode without the bf16 path) bf16 tensor cores
 * on FP32 operands. */
static int forward_fp32(bn_cu_model *m, int B, int T, bn_err *err)
{
    dims d = dims_of(&m->cfg);
    int N = B * T;
    size_t n = (size_t)N;
    cudaStream_t s = m->s;
    const params *p = &m->w;
    acts *a = &m->a;
    float eps = m->cfg.rms_norm_eps;
    bn_cu_embedding_forward(a->encoded, m->tokens, p->tok_emb, N, (int)d.D, s);
    for (size_t l = 0; l < d.L; l++) {
        size_t lo = l * a->ls; /* this layer's activations */
        const float *x = l == 0 ? a->encoded : a->res_ffn + (l - 1) * a->ls * n * d.D;
        float *ln1 = a->ln1 + lo * n * d.D, *q = a->q + lo * n * d.QD;
        float *k = a->k + lo * n * d.KVD, *v = a->v + lo * n * d.KVD;
        bn_cu_rmsnorm_forward(ln1, a->ln1_rstd + lo * n, x, p->attn_norm + l * d.D, N, (int)d.D, eps, s);
        MM(mm_forward(m, q, ln1, p->wq + l * d.QD * d.D, N, (int)d.D, (int)d.QD));
        MM(mm_forward(m, k, ln1, p->wk + l * d.KVD * d.D, N, (int)d.D, (int)d.KVD));
        MM(mm_forward(m, v, ln1, p->wv + l * d.KVD * d.D, N, (int)d.D, (int)d.KVD));
        bn_cu_rope(q, a->rope_cos, a->rope_sin, B, T, (int)d.H, (int)d.hd, 1.0f, s);
        bn_cu_rope(k, a->rope_cos, a->rope_sin, B, T, (int)d.KV, (int)d.hd, 1.0f, s);
        float *atty = a->atty + lo * n * d.QD, *ra = a->res_att + lo * n * d.D;
        if (bn_cu_attention_forward(atty, a->lse + lo * n * d.H, q, k, v, B, T, (int)d.H,
                                    (int)d.KV, (int)d.hd, s))
            return bn_err_set(err, BN_EUNSUPPORTED, "cuda: head_dim %zu", d.hd);
        MM(mm_forward(m, ra, atty, p->wo + l * d.D * d.QD, N, (int)d.QD, (int)d.D));
        bn_cu_add(ra, ra, x, n * d.D, s);
        float *ln2 = a->ln2 + lo * n * d.D;
        bn_cu_rmsnorm_forward(ln2, a->ln2_rstd + lo * n, ra, p->ffn_norm + l * d.D, N, (int)d.D, eps, s);
        float *g = a->gate + lo * n * d.F, *u = a->up + lo * n * d.F, *f = a->ffh + lo * n * d.F;
        MM(mm_forward(m, g, ln2, p->w_gate + l * d.F * d.D, N, (int)d.D, (int)d.F));
        MM(mm_forward(m, u, ln2, p->w_up + l * d.F * d.D, N, (int)d.D, (int)d.F));
        bn_cu_swiglu_forward(f, g, u, n * d.F, s);
        float *rf = a->res_ffn + lo * n * d.D; /* with ls 0 this is x: read above, before */
        MM(mm_forward(m, rf, f, p->w_down + l * d.D * d.F, N, (int)d.F, (int)d.D));
        bn_cu_add(rf, rf, ra, n * d.D, s);
    }
    bn_cu_rmsnorm_forward(a->lnf, a->lnf_rstd, a->res_ffn + (d.L - 1) * a->ls * n * d.D,
                          p->final_norm, N, (int)d.D, eps, s);
    MM(mm_forward(m, a->logits, a->lnf, p->head, N, (int)d.D, (int)d.V));
    return 0;
}

/* bf16 activations and compute weights, FP32 residual stream and logits (struct bacts);
 * the residual adds ride on the products (beta 1 into the FP32 stream). */
static int forward_bf16(bn_cu_model *m, int B, int T, bn_err *err)
{
    dims d = dims_of(&m->cfg);
    int N = B * T, D = (int)d.D, QD = (int)d.QD, KVD = (int)d.KVD, F = (int)d.F;
    size_t n = (size_t)N;
    cudaStream_t s = m->s;
    const params *pw = &m->pw; /* FP32: embedding and norm weights */
    bacts *a = &m->h;
    float eps = m->cfg.rms_norm_eps;
    bn_cu_embedding_forward(a->res, m->tokens, pw->tok_emb, N, D, s);
    for (size_t l = 0; l < d.L; l++) {
        size_t lo = l * a->ls;
        bn_bf16 *xh1 = a->xhat1 + lo * n * d.D, *xh2 = a->xhat2 + lo * n * d.D;
        bn_bf16 *q = a->q + lo * n * d.QD, *k = a->k + lo * n * d.KVD, *v = a->v + lo * n * d.KVD;
        bn_bf16 *atty = a->atty + lo * n * d.QD, *g = a->gate + lo * n * d.F, *u = a->up + lo * n * d.F;
        bn_cu_rmsnorm_forward_bf16(a->n, xh1, a->rstd1 + lo * n, a->res, pw->attn_norm + l * d.D, N, D, eps, s);
        MM(bmm_forward(m, q, BF16, a->n, WH(wq) + l * d.QD * d.D, N, D, QD, 0.0f));
        MM(bmm_forward(m, k, BF16, a->n, WH(wk) + l * d.KVD * d.D, N, D, KVD, 0.0f));
        MM(bmm_forward(m, v, BF16, a->n, WH(wv) + l * d.KVD * d.D, N, D, KVD, 0.0f));
        bn_cu_rope_bf16(q, m->a.rope_cos, m->a.rope_sin, B, T, (int)d.H, (int)d.hd, 1.0f, s);
        bn_cu_rope_bf16(k, m->a.rope_cos, m->a.rope_sin, B, T, (int)d.KV, (int)d.hd, 1.0f, s);
        if (bn_cu_attention_forward_bf16(atty, a->lse + lo * n * d.H, q, k, v, B, T, (int)d.H,
                                         (int)d.KV, (int)d.hd, s))
            return bn_err_set(err, BN_EUNSUPPORTED, "cuda: head_dim %zu", d.hd);
        MM(bmm_forward(m, a->res, F32, atty, WH(wo) + l * d.D * d.QD, N, QD, D, 1.0f));
        bn_cu_rmsnorm_forward_bf16(a->n, xh2, a->rstd2 + lo * n, a->res, pw->ffn_norm + l * d.D, N, D, eps, s);
        MM(bmm_forward(m, g, BF16, a->n, WH(w_gate) + l * d.F * d.D, N, D, F, 0.0f));
        MM(bmm_forward(m, u, BF16, a->n, WH(w_up) + l * d.F * d.D, N, D, F, 0.0f));
        bn_cu_swiglu_forward_bf16(a->ffh, g, u, n * d.F, s);
        MM(bmm_forward(m, a->res, F32, a->ffh, WH(w_down) + l * d.D * d.F, N, F, D, 1.0f));
    }
    bn_cu_rmsnorm_forward_bf16(a->nf, a->xhatf, a->rstdf, a->res, pw->final_norm, N, D, eps, s);
    MM(bmm_forward(m, m->a.logits, F32, a->nf, WH(head), N, D, (int)d.V, 0.0f));
    return 0;
}

int bn_cu_forward(bn_cu_model *m, const int32_t *tokens, int B, int T, bn_err *err)
{
    if (B > m->o.max_B || T > m->o.max_T || B < 1 || T < 1)
        return bn_err_set(err, BN_EINVAL, "cuda: batch %dx%d beyond the reserved %dx%d", B, T,
                          m->o.max_B, m->o.max_T);
    dims d = dims_of(&m->cfg);
    for (int i = 0; i < B * T; i++)
        if (tokens[i] < 0 || (size_t)tokens[i] >= d.V)
            return bn_err_set(err, BN_EINVAL, "cuda: token %d at %d outside the vocabulary", tokens[i], i);
    bool bf = m->bf && m->o.bf16;
    if (!bf && !m->wmem)
        return bn_err_set(err, BN_EINVAL, "cuda: an FP32 forward needs FP32 compute weights; this STE model keeps bf16 ones only");
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    m->B = B;
    m->T = T;
    m->last_bf = bf;
    CU(cudaMemcpyAsync(m->tokens, tokens, (size_t)B * T * sizeof(int32_t), cudaMemcpyHostToDevice, m->s), "upload tokens");
    int rc = bf ? forward_bf16(m, B, T, err) : forward_fp32(m, B, T, err);
    if (rc) return rc;
    CU(cudaGetLastError(), "forward kernels");
    return 0;
}

int bn_cu_loss(bn_cu_model *m, const int32_t *targets, const uint8_t *mask, float *loss,
               int *n_counted, bn_err *err)
{
    int N = m->B * m->T, V = m->cfg.vocab_size, count = 0;
    for (int i = 0; i < N; i++) count += targets[i] >= 0 && targets[i] < V && (!mask || mask[i]);
    if (n_counted) *n_counted = count;
    cudaStream_t s = m->s;
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    CU(cudaMemcpyAsync(m->targets, targets, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice, s), "upload targets");
    if (mask) CU(cudaMemcpyAsync(m->mask, mask, (size_t)N, cudaMemcpyHostToDevice, s), "upload mask");
    bn_cu_crossentropy(m->a.logits, m->a.losses, m->targets, mask ? m->mask : NULL, N, V,
                       count ? 1.0f / (float)count : 0.0f, m->o.train ? 1 : 0, s);
    float *h = (float *)malloc((size_t)N * sizeof(float));
    if (!h) return bn_err_set(err, BN_ENOMEM, "cuda: losses");
    cudaError_t e = cudaMemcpyAsync(h, m->a.losses, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    double sum = 0;
    for (int i = 0; i < N; i++) sum += h[i];
    free(h);
    CU(e, "loss");
    *loss = count ? (float)(sum / count) : 0.0f;
    return 0;
}

/* ---- backward ---- */

static int backward_fp32(bn_cu_model *m, bn_err *err)
{
    dims d = dims_of(&m->cfg);
    int B = m->B, T = m->T, N = B * T;
    size_t n = (size_t)N;
    cudaStream_t s = m->s;
    const params *p = &m->w;
    const params *g = &m->g;
    acts *a = &m->a;
    /* head and final norm */
    float *dlnf = a->dln;
    MM(mm_backward_dx(m, dlnf, a->logits, p->head, N, (int)d.D, (int)d.V, 0.0f));
    MM(mm_backward_dw(m, g->head, a->logits, a->lnf, N, (int)d.D, (int)d.V));
    CU(cudaMemsetAsync(a->dres, 0, n * d.D * sizeof(float), s), "memset");
    bn_cu_rmsnorm_backward(a->dres, g->final_norm, dlnf, a->res_ffn + (d.L - 1) * n * d.D,
                           p->final_norm, a->lnf_rstd, N, (int)d.D, s);
    for (size_t li = d.L; li-- > 0;) {
        size_t l = li;
        const float *x = l == 0 ? a->encoded : a->res_ffn + (l - 1) * n * d.D;
        const float *ra = a->res_att + l * n * d.D;
        const float *ln2 = a->ln2 + l * n * d.D, *ln1 = a->ln1 + l * n * d.D;
        const float *gt = a->gate + l * n * d.F, *up = a->up + l * n * d.F, *ffh = a->ffh + l * n * d.F;
        /* ffn: res_ffn = ra + w_down(ffh) */
        MM(mm_backward_dx(m, a->dffh, a->dres, p->w_down + l * d.D * d.F, N, (int)d.F, (int)d.D, 0.0f));
        MM(mm_backward_dw(m, g->w_down + l * d.D * d.F, a->dres, ffh, N, (int)d.F, (int)d.D));
        bn_cu_swiglu_backward(a->dgate, a->dup, a->dffh, gt, up, n * d.F, s);
        MM(mm_backward_dx(m, a->dln, a->dgate, p->w_gate + l * d.F * d.D, N, (int)d.D, (int)d.F, 0.0f));
        MM(mm_backward_dx(m, a->dln, a->dup, p->w_up + l * d.F * d.D, N, (int)d.D, (int)d.F, 1.0f));
        MM(mm_backward_dw(m, g->w_gate + l * d.F * d.D, a->dgate, ln2, N, (int)d.D, (int)d.F));
        MM(mm_backward_dw(m, g->w_up + l * d.F * d.D, a->dup, ln2, N, (int)d.D, (int)d.F));
        bn_cu_rmsnorm_backward(a->dres, g->ffn_norm + l * d.D, a->dln, ra, p->ffn_norm + l * d.D,
                               a->ln2_rstd + l * n, N, (int)d.D, s);
        /* attention: ra = x + wo(atty) */
        const float *atty = a->atty + l * n * d.QD;
        MM(mm_backward_dx(m, a->datty, a->dres, p->wo + l * d.D * d.QD, N, (int)d.QD, (int)d.D, 0.0f));
        MM(mm_backward_dw(m, g->wo + l * d.D * d.QD, a->dres, atty, N, (int)d.QD, (int)d.D));
        const float *q = a->q + l * n * d.QD, *k = a->k + l * n * d.KVD, *v = a->v + l * n * d.KVD;
        if (bn_cu_attention_backward(a->dq, a->dk, a->dv, a->dsum, a->datty, atty,
                                     a->lse + l * n * d.H, q, k, v, B, T, (int)d.H, (int)d.KV,
                                     (int)d.hd, s))
            return bn_err_set(err, BN_EUNSUPPORTED, "cuda: head_dim %zu", d.hd);
        bn_cu_rope(a->dq, a->rope_cos, a->rope_sin, B, T, (int)d.H, (int)d.hd, -1.0f, s);
        bn_cu_rope(a->dk, a->rope_cos, a->rope_sin, B, T, (int)d.KV, (int)d.hd, -1.0f, s);
        MM(mm_backward_dx(m, a->dln, a->dq, p->wq + l * d.QD * d.D, N, (int)d.D, (int)d.QD, 0.0f));
        MM(mm_backward_dx(m, a->dln, a->dk, p->wk + l * d.KVD * d.D, N, (int)d.D, (int)d.KVD, 1.0f));
        MM(mm_backward_dx(m, a->dln, a->dv, p->wv + l * d.KVD * d.D, N, (int)d.D, (int)d.KVD, 1.0f));
        MM(mm_backward_dw(m, g->wq + l * d.QD * d.D, a->dq, ln1, N, (int)d.D, (int)d.QD));
        MM(mm_backward_dw(m, g->wk + l * d.KVD * d.D, a->dk, ln1, N, (int)d.D, (int)d.KVD));
        MM(mm_backward_dw(m, g->wv + l * d.KVD * d.D, a->dv, ln1, N, (int)d.D, (int)d.KVD));
        bn_cu_rmsnorm_backward(a->dres, g->attn_norm + l * d.D, a->dln, x, p->attn_norm + l * d.D,
                               a->ln1_rstd + l * n, N, (int)d.D, s);
    }
    bn_cu_embedding_backward(g->tok_emb, a->dres, m->tokens, N, (int)d.D, s);
    return 0;
}

/* The bf16 path's backward (forward_bf16 in reverse); recomputes each norm's products
 * input from xhat and silu(gate) * up from gate and up. Weight gradients accumulate in
 * FP32 (beta 1). */
static int backward_bf16(bn_cu_model *m, bn_err *err)
{
    dims d = dims_of(&m->cfg);
    int B = m->B, T = m->T, N = B * T, D = (int)d.D, QD = (int)d.QD, KVD = (int)d.KVD, F = (int)d.F;
    size_t n = (size_t)N;
    cudaStream_t s = m->s;
    const params *pw = &m->pw;
    const params *g = &m->g;
    bacts *a = &m->h;
    const float *cs = m->a.rope_cos, *sn = m->a.rope_sin;
    /* head and final norm */
    bn_cu_to_bf16(a->dlogits, m->a.logits, n * d.V, s);
    MM(bmm_backward_dx(m, a->dln, F32, a->dlogits, WH(head), N, D, (int)d.V, 0.0f));
    MM(bmm_backward_dw(m, g->head, a->dlogits, a->nf, N, D, (int)d.V));
    CU(cudaMemsetAsync(a->dres, 0, n * d.D * sizeof(float), s), "memset");
    bn_cu_rmsnorm_backward_bf16(a->dres, a->dres_h, g->final_norm, a->dln, a->xhatf,
                                pw->final_norm, a->rstdf, N, D, s);
    for (size_t l = d.L; l-- > 0;) {
        size_t lo = l * a->ls;
        const bn_bf16 *xh1 = a->xhat1 + lo * n * d.D, *xh2 = a->xhat2 + lo * n * d.D;
        const bn_bf16 *q = a->q + lo * n * d.QD, *k = a->k + lo * n * d.KVD, *v = a->v + lo * n * d.KVD;
        const bn_bf16 *atty = a->atty + lo * n * d.QD;
        const bn_bf16 *gt = a->gate + lo * n * d.F, *up = a->up + lo * n * d.F;
        /* ffn: res += w_down(silu(gate) * up) */
        bn_cu_swiglu_forward_bf16(a->ffh, gt, up, n * d.F, s);
        MM(bmm_backward_dx(m, a->dffh, BF16, a->dres_h, WH(w_down) + l * d.D * d.F, N, F, D, 0.0f));
        MM(bmm_backward_dw(m, g->w_down + l * d.D * d.F, a->dres_h, a->ffh, N, F, D));
        bn_cu_swiglu_backward_bf16(a->dgate, a->dup, a->dffh, gt, up, n * d.F, s);
        bn_cu_rmsnorm_apply_bf16(a->n, xh2, pw->ffn_norm + l * d.D, N, D, s);
        MM(bmm_backward_dx(m, a->dln, F32, a->dgate, WH(w_gate) + l * d.F * d.D, N, D, F, 0.0f));
        MM(bmm_backward_dx(m, a->dln, F32, a->dup, WH(w_up) + l * d.F * d.D, N, D, F, 1.0f));
        MM(bmm_backward_dw(m, g->w_gate + l * d.F * d.D, a->dgate, a->n, N, D, F));
        MM(bmm_backward_dw(m, g->w_up + l * d.F * d.D, a->dup, a->n, N, D, F));
        bn_cu_rmsnorm_backward_bf16(a->dres, a->dres_h, g->ffn_norm + l * d.D, a->dln, xh2,
                                    pw->ffn_norm + l * d.D, a->rstd2 + lo * n, N, D, s);
        /* attention: res += wo(atty) */
        MM(bmm_backward_dx(m, a->datty, BF16, a->dres_h, WH(wo) + l * d.D * d.QD, N, QD, D, 0.0f));
        MM(bmm_backward_dw(m, g->wo + l * d.D * d.QD, a->dres_h, atty, N, QD, D));
        if (bn_cu_attention_backward_bf16(a->dq, a->dk, a->dv, a->dsum, a->datty, atty,
                                          a->lse + lo * n * d.H, q, k, v, B, T, (int)d.H,
                                          (int)d.KV, (int)d.hd, s))
            return bn_err_set(err, BN_EUNSUPPORTED, "cuda: head_dim %zu", d.hd);
        bn_cu_rope_bf16(a->dq, cs, sn, B, T, (int)d.H, (int)d.hd, -1.0f, s);
        bn_cu_rope_bf16(a->dk, cs, sn, B, T, (int)d.KV, (int)d.hd, -1.0f, s);
        bn_cu_rmsnorm_apply_bf16(a->n, xh1, pw->attn_norm + l * d.D, N, D, s);
        MM(bmm_backward_dx(m, a->dln, F32, a->dq, WH(wq) + l * d.QD * d.D, N, D, QD, 0.0f));
        MM(bmm_backward_dx(m, a->dln, F32, a->dk, WH(wk) + l * d.KVD * d.D, N, D, KVD, 1.0f));
        MM(bmm_backward_dx(m, a->dln, F32, a->dv, WH(wv) + l * d.KVD * d.D, N, D, KVD, 1.0f));
        MM(bmm_backward_dw(m, g->wq + l * d.QD * d.D, a->dq, a->n, N, D, QD));
        MM(bmm_backward_dw(m, g->wk + l * d.KVD * d.D, a->dk, a->n, N, D, KVD));
        MM(bmm_backward_dw(m, g->wv + l * d.KVD * d.D, a->dv, a->n, N, D, KVD));
        bn_cu_rmsnorm_backward_bf16(a->dres, a->dres_h, g->attn_norm + l * d.D, a->dln, xh1,
                                    pw->attn_norm + l * d.D, a->rstd1 + lo * n, N, D, s);
    }
    bn_cu_embedding_backward(g->tok_emb, a->dres, m->tokens, N, D, s);
    return 0;
}

int bn_cu_backward(bn_cu_model *m, bn_err *err)
{
    if (!m->o.train) return bn_err_set(err, BN_EINVAL, "cuda: backward on a model made without train");
    if (m->bf && !m->last_bf)
        return bn_err_set(err, BN_EINVAL, "cuda: backward after an FP32 forward of a bf16 model (its FP32 forward keeps no activations)");
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    int rc = m->last_bf ? backward_bf16(m, err) : backward_fp32(m, err);
    if (rc) return rc;
    CU(cudaGetLastError(), "backward kernels");
    return 0;
}

int bn_cu_zero_grad(bn_cu_model *m, bn_err *err)
{
    if (!m->o.train) return 0;
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    CU(cudaMemsetAsync(m->gmem, 0, m->n_params * sizeof(float), m->s), "zero grads");
    return 0;
}

/* ---- optimizer and STE ---- */

/* Compute weights from the master weights: the linears' ternary projection when ste, else
 * the master weights themselves (same buffer; the trainer's own copy until
 * bn_cu_materialize). The bf16 path then takes its bf16 copy (STE: projected straight to
 * bf16, without an FP32 copy). */
int bn_cu_refresh(bn_cu_model *m, bn_err *err)
{
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    size_t np = m->n_params;
    if (!m->o.ste) {
        if (m->wmem != m->pmem)
            CU(cudaMemcpyAsync(m->wmem, m->pmem, np * sizeof(float), cudaMemcpyDeviceToDevice, m->s), "copy weights");
        if (m->bf) bn_cu_to_bf16(m->wh, m->wmem, np, m->s);
        CU(cudaGetLastError(), "refresh");
        return 0;
    }
    dims d = dims_of(&m->cfg);
    if (m->wmem) CU(cudaMemcpyAsync(m->wmem, m->pmem, np * sizeof(float), cudaMemcpyDeviceToDevice, m->s), "copy weights");
    if (m->bf) { /* the tensors that stay as they are: embedding, norms, head */
        const float *seg[3][2] = { { m->p.tok_emb, m->p.wq }, { m->p.ffn_norm, m->p.w_gate },
                                   { m->p.final_norm, m->pmem + np } };
        for (int i = 0; i < 3; i++)
            bn_cu_to_bf16(m->wh + (seg[i][0] - m->pmem), seg[i][0], (size_t)(seg[i][1] - seg[i][0]), m->s);
    }
    struct { float *w; const float *p; size_t rows, cols; } lin[7] = {
        { m->w.wq, m->p.wq, d.L * d.QD, d.D }, { m->w.wk, m->p.wk, d.L * d.KVD, d.D },
        { m->w.wv, m->p.wv, d.L * d.KVD, d.D }, { m->w.wo, m->p.wo, d.L * d.D, d.QD },
        { m->w.w_gate, m->p.w_gate, d.L * d.F, d.D }, { m->w.w_up, m->p.w_up, d.L * d.F, d.D },
        { m->w.w_down, m->p.w_down, d.L * d.D, d.F },
    };
    for (int i = 0; i < 7; i++) {
        if (m->wmem) bn_cu_ternarize(lin[i].w, lin[i].p, (int)lin[i].rows, (int)lin[i].cols, m->o.tau, m->s);
        if (m->bf)
            bn_cu_ternarize_bf16(m->wh + (lin[i].p - m->pmem), lin[i].p, (int)lin[i].rows,
                                 (int)lin[i].cols, m->o.tau, m->s);
    }
    CU(cudaGetLastError(), "ternarize");
    return 0;
}

int bn_cu_adamw(bn_cu_model *m, float lr, float beta1, float beta2, float eps, float wd, int64_t t,
                float max_grad_norm, double *grad_norm, int *skipped, bn_err *err)
{
    if (!m->o.train) return bn_err_set(err, BN_EINVAL, "cuda: optimizer on a model made without train");
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    double ss = 0;
    CU(cudaMemsetAsync(m->normsq, 0, sizeof(double), m->s), "memset");
    bn_cu_sumsq(m->normsq, m->gmem, m->n_params, m->s);
    CU(cudaMemcpyAsync(&ss, m->normsq, sizeof(double), cudaMemcpyDeviceToHost, m->s), "grad norm");
    CU(cudaStreamSynchronize(m->s), "grad norm");
    double norm = sqrt(ss);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm)) {
        if (skipped) *skipped = 1;
        return 0;
    }
    if (skipped) *skipped = 0;
    float k = 1.0f;
    if (max_grad_norm > 0 && norm > max_grad_norm) k = (float)(max_grad_norm / (norm + 1e-12));
    double tt = (double)(t + 1);
    float bc1 = (float)(1.0 - pow(beta1, tt)), bc2 = (float)(1.0 - pow(beta2, tt));
    bn_cu_adamw_update(m->pmem, m->gmem, m->mmem, m->vmem, m->n_params, lr, beta1, beta2, bc1,
                       bc2, eps, 1.0f - lr * wd, k, m->s);
    CU(cudaGetLastError(), "adamw");
    return bn_cu_refresh(m, err);
}

/* ---- transfers ---- */

static int buffer(bn_cu_model *m, bn_cu_buf which, size_t n, float **out, bn_err *err)
{
    size_t want = m->n_params;
    float *b = NULL;
    switch (which) {
    case BN_CU_PARAMS: b = m->pmem; break;
    case BN_CU_GRADS: b = m->gmem; break;
    case BN_CU_ADAM_M: b = m->mmem; break;
    case BN_CU_ADAM_V: b = m->vmem; break;
    case BN_CU_LOGITS: b = m->a.logits; want = (size_t)m->B * m->T * m->cfg.vocab_size; break;
    case BN_CU_COMPUTE: b = m->wmem; break;
    }
    if (!b) return bn_err_set(err, BN_EINVAL, "cuda: buffer %d absent on this model (made without train, or bf16 STE weights only)", (int)which);
    if (n != want) return bn_err_set(err, BN_EINVAL, "cuda: buffer %d holds %zu floats, %zu asked", (int)which, want, n);
    *out = b;
    return 0;
}

int bn_cu_get(bn_cu_model *m, bn_cu_buf which, float *host, size_t n, bn_err *err)
{
    float *b;
    if (buffer(m, which, n, &b, err)) return err ? err->code : BN_EINVAL;
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    CU(cudaMemcpyAsync(host, b, n * sizeof(float), cudaMemcpyDeviceToHost, m->s), "download");
    CU(cudaStreamSynchronize(m->s), "download");
    return 0;
}

int bn_cu_set(bn_cu_model *m, bn_cu_buf which, const float *host, size_t n, bn_err *err)
{
    float *b;
    if (buffer(m, which, n, &b, err)) return err ? err->code : BN_EINVAL;
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    CU(cudaMemcpyAsync(b, host, n * sizeof(float), cudaMemcpyHostToDevice, m->s), "upload");
    CU(cudaStreamSynchronize(m->s), "upload");
    if (which == BN_CU_PARAMS) return bn_cu_refresh(m, err);
    if (which == BN_CU_COMPUTE && m->bf) {
        bn_cu_to_bf16(m->wh, m->wmem, m->n_params, m->s);
        CU(cudaGetLastError(), "compute weights");
    }
    return 0;
}

/* ---- the fine-tune trainer: materialize, distillation, MuGrokfast ---- */

int bn_cu_train_setup(bn_cu_model *m, const bn_cu_train *tc, bn_err *err)
{
    if (!m->o.trainer || !m->o.train || !m->ema)
        return bn_err_set(err, BN_EINVAL, "cuda: a trainer needs a model made with train and trainer");
    if (tc->n_taus < 1 || tc->n_taus > 8) return bn_err_set(err, BN_EINVAL, "cuda: %d taus", tc->n_taus);
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    free(m->tt);
    m->tt = (bn_cu_tensor *)calloc((size_t)tc->n_t, sizeof *m->tt);
    if (!m->tt) return bn_err_set(err, BN_ENOMEM, "cuda: trainer tensors");
    m->n_tt = tc->n_t;
    m->tc = *tc;
    m->tc.t = m->tt;
    size_t xoff = 0;
    for (int i = 0; i < tc->n_t; i++) {
        bn_cu_tensor t = tc->t[i];
        if (t.off + (size_t)t.rows * t.cols > m->n_params)
            return bn_err_set(err, BN_EINVAL, "cuda: trainer tensor %d outside the parameters", i);
        if (t.muon) {
            size_t a = t.rows < t.cols ? t.rows : t.cols, b = (size_t)t.rows + t.cols - a;
            if (ns_per_matrix(a, b) > m->ns_cap)
                return bn_err_set(err, BN_EINVAL, "cuda: Muon tensor %d x %d beyond the Newton-Schulz scratch", t.rows, t.cols);
        }
        if (t.xsq) {
            if (xoff + (size_t)t.cols > m->xsq_cap)
                return bn_err_set(err, BN_EINVAL, "cuda: calibration statistics beyond their room");
            CU(cudaMemcpyAsync(m->xsqmem + xoff, t.xsq, (size_t)t.cols * sizeof(float), cudaMemcpyHostToDevice, m->s), "upload xsq");
            t.xsq = m->xsqmem + xoff;
            xoff += (size_t)t.cols;
        }
        m->tt[i] = t;
    }
    /* runs: trainable tensors by offset, merged while contiguous with one group/shape */
    free(m->runs);
    m->runs = (opt_run *)calloc((size_t)tc->n_t, sizeof *m->runs);
    int *idx = (int *)malloc((size_t)tc->n_t * sizeof(int));
    if (!m->runs || !idx) {
        free(idx);
        return bn_err_set(err, BN_ENOMEM, "cuda: trainer runs");
    }
    int ni = 0;
    for (int i = 0; i < tc->n_t; i++)
        if (m->tt[i].trainable) idx[ni++] = i;
    for (int i = 1; i < ni; i++) /* insertion sort by offset (a few hundred tensors) */
        for (int j = i; j > 0 && m->tt[idx[j]].off < m->tt[idx[j - 1]].off; j--) {
            int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t;
        }
    m->n_runs = 0;
    for (int k = 0; k < ni; k++) {
        const bn_cu_tensor *t = &m->tt[idx[k]];
        size_t n = (size_t)t->rows * t->cols;
        opt_run *r = m->n_runs ? &m->runs[m->n_runs - 1] : NULL;
        if (r && r->muon == t->muon && r->off + r->n == t->off &&
            (!t->muon || (r->rows == t->rows && r->cols == t->cols))) {
            r->n += n;
            r->count++;
            continue;
        }
        m->runs[m->n_runs++] = (opt_run){ t->off, n, t->rows, t->cols, 1, t->muon };
    }
    free(idx);
    m->t = m->applied = 0;
    CU(cudaStreamSynchronize(m->s), "upload xsq");
    return 0;
}

int bn_cu_materialize(bn_cu_model *m, float lam, bn_err *err)
{
    if (!m->tt) return bn_err_set(err, BN_EINVAL, "cuda: materialize before bn_cu_train_setup");
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    bn_cu_taus taus;
    for (int k = 0; k < 8; k++) taus.v[k] = m->tc.taus[k];
    bn_cu_taus one = { { m->tc.tau } };
    for (int i = 0; i < m->n_tt; i++) {
        const bn_cu_tensor *t = &m->tt[i];
        size_t n = (size_t)t->rows * t->cols;
        if (!t->ternary)
            CU(cudaMemcpyAsync(m->wmem + t->off, m->pmem + t->off, n * sizeof(float), cudaMemcpyDeviceToDevice, m->s), "copy weights");
        else if (t->xsq)
            bn_cu_quant_materialize(m->wmem + t->off, m->pmem + t->off, t->xsq, t->rows, t->cols,
                                    m->tc.per_tensor, taus, m->tc.n_taus, lam, m->s);
        else
            bn_cu_quant_materialize(m->wmem + t->off, m->pmem + t->off, NULL, t->rows, t->cols,
                                    m->tc.per_tensor, one, 1, lam, m->s);
    }
    if (m->bf) bn_cu_to_bf16(m->wh, m->wmem, m->n_params, m->s);
    CU(cudaGetLastError(), "materialize");
    return 0;
}

int bn_cu_loss_distill(bn_cu_model *m, bn_cu_model *teacher, const int32_t *targets, double distill,
                       double *ce, double *kl, bn_err *err)
{
    int N = m->B * m->T, V = m->cfg.vocab_size;
    *kl = 0;
    if (teacher) {
        if (teacher->B != m->B || teacher->T != m->T || teacher->cfg.vocab_size != V || teacher->o.gpu != m->o.gpu)
            return bn_err_set(err, BN_EINVAL, "cuda: the teacher's last forward does not match the student's");
        CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
        CU(cudaStreamSynchronize(teacher->s), "teacher forward");
        /* the teacher's logits become distill * d KL / d student logits */
        bn_cu_distill(teacher->a.logits, teacher->a.losses, m->a.logits, N, V, (float)(distill / N), m->s);
        float *h = (float *)malloc((size_t)N * sizeof(float));
        if (!h) return bn_err_set(err, BN_ENOMEM, "cuda: kl");
        cudaError_t e = cudaMemcpyAsync(h, teacher->a.losses, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost, m->s);
        if (e == cudaSuccess) e = cudaStreamSynchronize(m->s);
        double sum = 0;
        for (int i = 0; i < N; i++) sum += h[i];
        free(h);
        CU(e, "distillation");
        *kl = sum / N;
    }
    float loss;
    if (bn_cu_loss(m, targets, NULL, &loss, NULL, err)) return err ? err->code : BN_EIO;
    *ce = loss;
    if (teacher && m->o.train) {
        bn_cu_add(m->a.logits, m->a.logits, teacher->a.logits, (size_t)N * V, m->s);
        CU(cudaGetLastError(), "distillation");
    }
    return 0;
}

/* Newton-Schulz on x [rows, cols] in place (model/optim.c ns_core, with its spectral-norm
 * bound), on the orientation with fewer rows, cuBLAS FP32. Row-major x read as
 * column-major is x^T: with rows <= cols Y = x is [m, n] = Yc^T (Yc: n x m, ld n); with
 * rows > cols Y = x^T is exactly the column-major [m, n] (ld m). */
#define NS_A 3.4445f
#define NS_B (-4.7750f)
#define NS_C 2.0315f

/* x: count matrices [rows, cols] back to back. Per matrix of the batch the scratch holds
 * Y2, Y3 [m*n] (ping-pong; x stays the input until the end), A, B [m*m], then the batch's
 * sums (2 doubles each) and factors (8 floats each). */
/* C_i = A_i B_i (+ beta C_i) over a batch, FP32 storage; bf16 mode runs it on TF32 tensor
 * cores (Newton-Schulz is an approximate orthogonalisation; the FP32 mode of the parity
 * tests keeps plain FP32). */
static cublasStatus_t ns_gemm(const bn_cu_model *m, cublasOperation_t ta, cublasOperation_t tb,
                              int M, int N, int K, const float *A, int lda, long long sa,
                              const float *B, int ldb, long long sb, float beta, float *C, int ldc,
                              long long sc, int count)
{
    float one = 1.0f;
    return cublasGemmStridedBatchedEx(m->blas, ta, tb, M, N, K, &one, A, CUDA_R_32F, lda, sa, B,
                                      CUDA_R_32F, ldb, sb, &beta, C, CUDA_R_32F, ldc, sc, count,
                                      m->o.bf16 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT);
}

static int newton_schulz(bn_cu_model *m, float *x, int rows, int cols, int count, int steps, bn_err *err)
{
    bool wide = rows <= cols;
    int mm_ = wide ? rows : cols, nn = wide ? cols : rows;
    size_t mn = (size_t)mm_ * nn, m2 = (size_t)mm_ * mm_;
    int cap = (int)(m->ns_cap / ns_per_matrix((size_t)mm_, (size_t)nn));
    if (cap < 1) return bn_err_set(err, BN_EINVAL, "cuda: Muon tensor %d x %d beyond the scratch", rows, cols);
    cudaStream_t s = m->s;
    for (int c0 = 0; c0 < count; c0 += cap) {
        int c = count - c0 < cap ? count - c0 : cap;
        float *xc = x + (size_t)c0 * mn;
        float *y = m->ns, *y3 = y + c * mn, *a = y3 + c * mn, *b = a + c * m2;
        double *acc = (double *)(((uintptr_t)(b + c * m2) + 7) & ~(uintptr_t)7);
        float *f = (float *)(acc + 2 * c);
        long long smn = (long long)mn, sm2 = (long long)m2;
        CU(cudaMemsetAsync(acc, 0, 2 * (size_t)c * sizeof(double), s), "memset");
        bn_cu_sumsq_batched(acc, 0, xc, mn, c, s);
        bn_cu_ns_scalars(acc, f, c, 0, s);
        bn_cu_scale_dev(y, xc, mn, c, f, 0, s); /* y = x / fro */
/* A [m, m] = Y Y^T per matrix */
#define GRAM(Y) (wide ? ns_gemm(m, CUBLAS_OP_T, CUBLAS_OP_N, mm_, mm_, nn, Y, nn, smn, Y, nn, smn, 0.0f, a, mm_, sm2, c) \
                      : ns_gemm(m, CUBLAS_OP_N, CUBLAS_OP_T, mm_, mm_, nn, Y, mm_, smn, Y, mm_, smn, 0.0f, a, mm_, sm2, c))
#define SQUARE(OUT, IN) ns_gemm(m, CUBLAS_OP_N, CUBLAS_OP_N, mm_, mm_, mm_, IN, mm_, sm2, IN, mm_, sm2, 0.0f, OUT, mm_, sm2, c)
        BL(GRAM(y), "ns gram");
        BL(SQUARE(b, a), "ns A^2");
        BL(SQUARE(y3, b), "ns A^4"); /* [m*m] per matrix at stride m*m inside Y3 */
        bn_cu_sumsq_batched(acc, 1, y3, m2, c, s);
        bn_cu_ns_scalars(acc, f, c, 1, s); /* sc = 1 / ||A^4||_F^(1/8) >= 1 / s_max */
        bn_cu_scale_dev(y, y, mn, c, f, 1, s);
        bn_cu_scale_dev(a, a, m2, c, f, 2, s);
        bn_cu_scale_dev(b, b, m2, c, f, 3, s);
        float *cur = y, *nxt = y3;
        for (int k = 0; k < steps; k++) {
            if (k > 0) {
                BL(GRAM(cur), "ns gram");
                BL(SQUARE(b, a), "ns A^2");
            }
            bn_cu_ns_poly(b, a, (size_t)c * m2, NS_C, NS_B, s); /* b = B a + C a a */
            /* nxt = NS_A cur + b cur */
            CU(cudaMemcpyAsync(nxt, cur, (size_t)c * mn * sizeof(float), cudaMemcpyDeviceToDevice, s), "ns copy");
            if (wide)
                BL(ns_gemm(m, CUBLAS_OP_N, CUBLAS_OP_N, nn, mm_, mm_, cur, nn, smn, b, mm_, sm2, NS_A, nxt, nn, smn, c),
                   "ns update");
            else
                BL(ns_gemm(m, CUBLAS_OP_N, CUBLAS_OP_N, mm_, nn, mm_, b, mm_, sm2, cur, mm_, smn, NS_A, nxt, mm_, smn, c),
                   "ns update");
            float *t = cur; cur = nxt; nxt = t;
        }
#undef GRAM
#undef SQUARE
        bn_cu_ns_finish(xc, cur, mn, c, f, s);
    }
    return 0;
}

int bn_cu_optim_step(bn_cu_model *m, bn_optim_stats *st, bn_err *err)
{
    if (!m->tt) return bn_err_set(err, BN_EINVAL, "cuda: optimizer step before bn_cu_train_setup");
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    const bn_optim_config *c = &m->tc.oc;
    cudaStream_t s = m->s;
    double ss = 0;
    CU(cudaMemsetAsync(m->normsq, 0, sizeof(double), s), "memset");
    for (int i = 0; i < m->n_runs; i++) bn_cu_sumsq(m->normsq, m->gmem + m->runs[i].off, m->runs[i].n, s);
    CU(cudaMemcpyAsync(&ss, m->normsq, sizeof(double), cudaMemcpyDeviceToHost, s), "grad norm");
    CU(cudaStreamSynchronize(s), "grad norm");
    double norm = sqrt(ss);
    double f = bn_optim_lr_factor(c, m->t);
    if (!isfinite(norm)) {
        m->t++;
        if (st) {
            st->grad_norm = 0;
            st->skipped = 1;
            st->lr = c->lr * f;
            st->muon_lr = c->muon_lr * f;
        }
        return 0;
    }
    float k = 1.0f;
    if (c->max_grad_norm > 0 && norm > c->max_grad_norm) k = (float)(c->max_grad_norm / (norm + 1e-12));
    float lr = (float)(c->lr * f), mlr = (float)(c->muon_lr * f);
    double tt = (double)(m->applied + 1);
    float b1 = (float)c->beta1, b2 = (float)c->beta2, eps = (float)c->eps;
    float bc1 = (float)(1.0 - pow(c->beta1, tt)), bc2 = (float)(1.0 - pow(c->beta2, tt));
    int on = c->grokfast_lambda != 0.0, first = m->applied == 0;
    for (int i = 0; i < m->n_runs; i++) {
        const opt_run *t = &m->runs[i];
        size_t n = t->n;
        float *g = m->gmem + t->off, *w = m->pmem + t->off;
        bn_cu_grokfast(g, m->ema + t->off, n, k, (float)c->grokfast_alpha, (float)c->grokfast_lambda,
                       on, first, s);
        if (t->muon) {
            bn_cu_muon_momentum(g, m->mmem + t->off, n, (float)c->momentum, s);
            if (newton_schulz(m, g, t->rows, t->cols, t->count, c->ns_steps, err)) return err ? err->code : BN_EIO;
            double ratio = (double)t->rows / (double)t->cols;
            float scale = (float)sqrt(ratio > 1.0 ? ratio : 1.0);
            bn_cu_muon_apply(w, g, n, 1.0f - mlr * (float)c->muon_weight_decay, mlr * scale, s);
        } else {
            bn_cu_adamw_update(w, g, m->mmem + t->off, m->vmem + t->off, n, lr, b1, b2, bc1, bc2,
                               eps, 1.0f - lr * (float)c->weight_decay, 1.0f, s);
        }
    }
    CU(cudaGetLastError(), "optimizer");
    m->t++;
    m->applied++;
    if (st) {
        st->grad_norm = norm;
        st->skipped = 0;
        st->lr = lr;
        st->muon_lr = mlr;
    }
    return 0;
}

void bn_cu_optim_set_steps(bn_cu_model *m, int64_t t, int64_t applied)
{
    m->t = t;
    m->applied = applied;
}
int64_t bn_cu_optim_applied_steps(const bn_cu_model *m) { return m->applied; }
void bn_cu_optim_set_total_steps(bn_cu_model *m, int64_t total) { m->tc.oc.total_steps = total; }
void bn_cu_optim_set_cooldown(bn_cu_model *m, int64_t start, int64_t n, double from)
{
    m->tc.oc.cooldown_start = start;
    m->tc.oc.cooldown_steps = n;
    m->tc.oc.cooldown_from = from;
}

int bn_cu_state_io(bn_cu_model *m, int kind, size_t off, size_t n, float *out, const float *in,
                   bn_err *err)
{
    float *base = kind == 0 ? m->ema : kind == 1 ? m->mmem : m->vmem;
    if (!base || kind < 0 || kind > 2 || off + n > m->n_params)
        return bn_err_set(err, BN_EINVAL, "cuda: optimizer state %d at %zu absent", kind, off);
    CU(cudaSetDevice(m->o.gpu), "cudaSetDevice");
    if (out) CU(cudaMemcpyAsync(out, base + off, n * sizeof(float), cudaMemcpyDeviceToHost, m->s), "download state");
    else CU(cudaMemcpyAsync(base + off, in, n * sizeof(float), cudaMemcpyHostToDevice, m->s), "upload state");
    CU(cudaStreamSynchronize(m->s), "state");
    return 0;
}
