/* tk_speed.c - measured speedup of the ternary kernels over FP32 OpenBLAS.
 *
 * For each linear-layer shape of a model, random ternary weights (packed) and random
 * FP32 weights of the same shape are timed: bn_tk_gemv vs cblas_sgemv for one token, and
 * bn_tk_gemm vs cblas_sgemm for a batch. The ternary time includes quantizing the
 * activations (the kernel's real per-call cost). Shapes are weighted by how many times
 * one forward pass uses them. Both sides run at 1 thread and at the requested count and
 * keep the faster total (a tiny product is slower with threads: OpenBLAS would otherwise
 * be timed starting threads). Each timing repeats a loop sized to the budget until its
 * best is stable. A ratio is given only when the FP32 products are long enough to time
 * arithmetic (BN_TK_MIN_PRODUCT_S).
 */
#include "quant/tkernels.h"

#include "base/clock.h"
#include "base/rng.h"
#include "formats/hf.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

static float rng_unit(uint64_t *s) /* [-1, 1) */
{
    return (float)((bn_rng_next(s) >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

typedef struct speed_case {
    bn_tk_matrix tw;
    bn_tk_act act;
    float *fw, *x, *y;
    int rows, cols, batch, threads;
} speed_case;

static double time_ternary(speed_case *c, int n, int iters)
{
    double t0 = bn_clock_mono_s();
    for (int i = 0; i < iters; i++) {
        bn_tk_act_quantize(&c->act, c->x, n);
        bn_tk_gemm(&c->tw, &c->act, c->y, c->threads, BN_ISA_AUTO);
    }
    return (bn_clock_mono_s() - t0) / iters;
}

static double time_blas(speed_case *c, int n, int iters)
{
    double t0 = bn_clock_mono_s();
    for (int i = 0; i < iters; i++) {
        if (n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, c->rows, c->cols, 1.0f, c->fw, c->cols, c->x, 1,
                        0.0f, c->y, 1);
        else /* Y [n, rows] = X [n, cols] W^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, c->rows, c->cols, 1.0f, c->x,
                        c->cols, c->fw, c->cols, 0.0f, c->y, c->rows);
    }
    return (bn_clock_mono_s() - t0) / iters;
}

/* Best per-call time of a loop lasting about `slice` seconds, run until stable: at least
 * 3 runs, stop when the last two runs did not improve the best by 2%, at most 12 runs. */
static double best_time(double (*fn)(speed_case *, int, int), speed_case *c, int n, double slice)
{
    double one = fn(c, n, 1); /* warm-up and estimate */
    int iters = one > 0 ? (int)(slice / one) : 1;
    if (iters < 1) iters = 1;
    if (iters > 10000) iters = 10000;
    double best = 1e30;
    int since = 0; /* runs since the best improved by >= 2% */
    for (int rep = 0; rep < 12; rep++) {
        double t = fn(c, n, iters);
        since = t < best * 0.98 ? 0 : since + 1;
        if (t < best) best = t;
        if (rep >= 2 && since >= 2) break;
    }
    return best;
}

static void case_free(speed_case *c)
{
    bn_tk_matrix_free(&c->tw);
    bn_tk_act_free(&c->act);
    free(c->fw);
    free(c->x);
    free(c->y);
}

static int case_init(speed_case *c, int rows, int cols, int batch, int threads, uint64_t seed,
                     bn_err *err)
{
    memset(c, 0, sizeof *c);
    c->rows = rows, c->cols = cols, c->batch = batch, c->threads = threads;
    size_t nw = (size_t)rows * cols;
    int8_t *codes = malloc(nw);
    float *scale = malloc((size_t)rows * sizeof(float));
    c->fw = malloc(nw * sizeof(float));
    c->x = malloc((size_t)batch * cols * sizeof(float));
    c->y = malloc((size_t)batch * rows * sizeof(float));
    if (!codes || !scale || !c->fw || !c->x || !c->y) {
        free(codes), free(scale), case_free(c);
        return bn_err_set(err, BN_ENOMEM, "speedup: out of memory for shape [%d, %d]", rows, cols);
    }
    uint64_t s = seed;
    for (size_t i = 0; i < nw; i++) {
        c->fw[i] = rng_unit(&s) * 0.02f;
        codes[i] = (int8_t)(bn_rng_next(&s) % 3) - 1;
    }
    for (int r = 0; r < rows; r++) scale[r] = 0.01f;
    for (size_t i = 0; i < (size_t)batch * cols; i++) c->x[i] = rng_unit(&s);
    int rc = bn_tk_matrix_pack(&c->tw, codes, scale, rows, cols, "speedup", err);
    free(codes), free(scale);
    if (rc == 0 && bn_tk_act_init(&c->act, batch, cols) != 0)
        rc = bn_err_set(err, BN_ENOMEM, "speedup: out of memory for activations");
    if (rc) case_free(c);
    return rc;
}

/* Totals per thread option: [0] 1 thread, [1] `threads`. */
typedef struct speed_acc {
    double tern[2], blas[2];
} speed_acc;

static void speed_finish(const speed_acc *a, int n_opt, int threads, double products, bn_tk_speed *out)
{
    int bt = 0, bb = 0;
    for (int i = 1; i < n_opt; i++) {
        if (a->tern[i] < a->tern[bt]) bt = i;
        if (a->blas[i] < a->blas[bb]) bb = i;
    }
    out->ternary_s = a->tern[bt];
    out->blas_s = a->blas[bb];
    out->ternary_threads = bt ? threads : 1;
    out->blas_threads = bb ? threads : 1;
    out->blas_product_s = out->blas_s / products;
    out->timed = out->blas_product_s >= BN_TK_MIN_PRODUCT_S && out->ternary_s > 0;
    out->speedup = out->timed ? out->blas_s / out->ternary_s : 0;
}

int bn_tk_measure_speedup(const bn_tk_shape *shapes, int n_shapes, int batch, int threads,
                          double budget_ms, bn_tk_speed *gemv, bn_tk_speed *gemm, bn_err *err)
{
    memset(gemv, 0, sizeof *gemv);
    memset(gemm, 0, sizeof *gemm);
    if (n_shapes <= 0 || batch < 1)
        return bn_err_set(err, BN_EINVAL, "speedup: need at least one shape and batch >= 1");
    for (int i = 0; i < n_shapes; i++)
        if (shapes[i].rows <= 0 || shapes[i].cols <= 0 || shapes[i].count <= 0)
            return bn_err_set(err, BN_EINVAL, "speedup: bad shape %d: [%d, %d] x %d", i,
                              shapes[i].rows, shapes[i].cols, shapes[i].count);
    if (threads < 1) threads = 1;
    if (budget_ms <= 0) budget_ms = 1500;
    int n_opt = threads > 1 ? 2 : 1;
    /* 4 timings (tern/blas x gemv/gemm) per shape and thread option, ~5 runs each */
    double slice = budget_ms / 1000.0 / (4.0 * n_shapes * n_opt * 5.0);
    int saved = openblas_get_num_threads();
    speed_acc v = {{0, 0}, {0, 0}}, m = {{0, 0}, {0, 0}};
    double products = 0;
    int rc = BN_OK;
    for (int i = 0; i < n_shapes && rc == BN_OK; i++) {
        const bn_tk_shape *sh = &shapes[i];
        speed_case c;
        rc = case_init(&c, sh->rows, sh->cols, batch, threads, 0x9e3779b97f4a7c15ull + (uint64_t)i, err);
        if (rc) break;
        products += sh->count;
        for (int o = 0; o < n_opt; o++) {
            int th = o ? threads : 1;
            c.threads = th;
            openblas_set_num_threads(th);
            v.tern[o] += sh->count * best_time(time_ternary, &c, 1, slice);
            v.blas[o] += sh->count * best_time(time_blas, &c, 1, slice);
            m.tern[o] += sh->count * best_time(time_ternary, &c, batch, slice);
            m.blas[o] += sh->count * best_time(time_blas, &c, batch, slice);
        }
        case_free(&c);
    }
    openblas_set_num_threads(saved);
    if (rc) return rc;
    speed_finish(&v, n_opt, threads, products, gemv);
    speed_finish(&m, n_opt, threads, products, gemm);
    return BN_OK;
}

int bn_tk_model_shapes(const struct bn_model_config *c, bn_tk_shape shapes[5])
{
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim, L = c->n_layers;
    shapes[0] = (bn_tk_shape){qd, c->dim, L};                 /* wq */
    shapes[1] = (bn_tk_shape){kvd, c->dim, 2 * L};            /* wk, wv */
    shapes[2] = (bn_tk_shape){c->dim, qd, L};                 /* wo */
    shapes[3] = (bn_tk_shape){c->hidden_dim, c->dim, 2 * L};  /* w_gate, w_up */
    shapes[4] = (bn_tk_shape){c->dim, c->hidden_dim, L};      /* w_down */
    return 5;
}
