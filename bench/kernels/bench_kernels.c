/* bench_kernels.c - ternary GEMV/GEMM against OpenBLAS FP32, with the memory read
 * bandwidth measured in the same run.
 *
 *   bench_kernels [--quick] [--json FILE]
 *
 * GEMV: shapes 2048x5632, 5632x2048, 4096x4096 (rows x cols = out x in) at 1 and 2
 * threads, ternary (activation quantization included; at 2 threads both with helpers
 * started per call, bn_tk_gemm, and from a pool, bn_tk_gemm_pool, row "2p") vs
 * cblas_sgemv. Weights
 * are COLD: each timed call uses the next of several copies whose total exceeds the
 * last-level cache (256 MB per side), so both kernels stream from DRAM as in token
 * generation of a real model. Bandwidth: a vectorized read of a 1 GB buffer, 1 and 2
 * threads. GEMM: batch 64..512 on the same shapes at 2 threads vs cblas_sgemm.
 *
 * OpenBLAS: Debian's build picks its kernels from the CPU at load time and falls back to
 * slow generic ones on CPUs it does not know. The bench uses OPENBLAS_CORETYPE if set,
 * else the engine's choice (bn_blas_init: SkylakeX with AVX-512, Haswell with AVX2);
 * BN_BENCH_CORETYPE=NAME forces one (re-exec). The table header names the core used.
 */
#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/blas.h"
#include "quant/tkernels.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static float unit(void) { return (float)((next() >> 40) * (1.0 / 8388608.0)) - 1.0f; }

/* ---- memory read bandwidth ------------------------------------------------------ */

typedef struct bw_job {
    const uint8_t *p;
    size_t n;
    long long out;
} bw_job;

__attribute__((target("avx2"))) static void *bw_read(void *arg)
{
    bw_job *j = arg;
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i < j->n; i += 128) {
        a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i *)(j->p + i)));
        b = _mm256_add_epi64(b, _mm256_load_si256((const __m256i *)(j->p + i + 32)));
        c = _mm256_add_epi64(c, _mm256_load_si256((const __m256i *)(j->p + i + 64)));
        d = _mm256_add_epi64(d, _mm256_load_si256((const __m256i *)(j->p + i + 96)));
    }
    a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
    j->out = _mm256_extract_epi64(a, 0);
    return NULL;
}

static double bandwidth(const uint8_t *buf, size_t n, int threads)
{
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        bw_job jobs[2];
        pthread_t tid;
        size_t per = n / threads / 128 * 128;
        double t0 = now_s();
        for (int i = 0; i < threads; i++) jobs[i] = (bw_job){buf + i * per, per, 0};
        if (threads > 1) pthread_create(&tid, NULL, bw_read, &jobs[1]);
        bw_read(&jobs[0]);
        if (threads > 1) pthread_join(tid, NULL);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    return (double)(n / threads / 128 * 128 * threads) / best / 1e9;
}

/* ---- cases ----------------------------------------------------------------------- */

typedef struct shape {
    int rows, cols;
} shape;

typedef struct copies {
    int n;
    bn_tk_matrix *tw; /* [n] */
    float **fw;       /* [n] */
} copies;

static void copies_make(copies *c, shape s, size_t budget_bytes, int fp32)
{
    size_t tbytes = (size_t)s.rows * ((s.cols + 255) / 256) * 64;
    size_t fbytes = (size_t)s.rows * s.cols * 4;
    size_t per = fp32 ? fbytes : tbytes;
    c->n = (int)(budget_bytes / per) + 1;
    if (c->n < 2) c->n = 2;
    c->tw = fp32 ? NULL : calloc((size_t)c->n, sizeof *c->tw);
    c->fw = fp32 ? calloc((size_t)c->n, sizeof *c->fw) : NULL;
    size_t nw = (size_t)s.rows * s.cols;
    int8_t *codes = malloc(nw);
    float *scale = malloc(sizeof(float) * s.rows);
    for (int r = 0; r < s.rows; r++) scale[r] = 0.01f;
    for (int i = 0; i < c->n; i++) {
        if (fp32) {
            c->fw[i] = aligned_alloc(64, fbytes);
            for (size_t k = 0; k < nw; k++) c->fw[i][k] = unit() * 0.02f;
        } else {
            for (size_t k = 0; k < nw; k++) codes[k] = (int8_t)(next() % 3) - 1;
            bn_tk_matrix_pack(&c->tw[i], codes, scale, s.rows, s.cols, "bench", NULL);
        }
    }
    free(codes), free(scale);
}

static void copies_free(copies *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->tw) bn_tk_matrix_free(&c->tw[i]);
        if (c->fw) free(c->fw[i]);
    }
    free(c->tw), free(c->fw);
}

/* Seconds per call, best of 5 passes over all copies. */
static double time_tern(copies *c, bn_tk_act *a, const float *x, int n, float *y, int threads, bn_tk_pool *pool)
{
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        for (int i = 0; i < c->n; i++) {
            bn_tk_act_quantize(a, x, n);
            if (pool) bn_tk_gemm_pool(&c->tw[i], a, y, pool, BN_ISA_AUTO);
            else bn_tk_gemm(&c->tw[i], a, y, threads, BN_ISA_AUTO);
        }
        double t = (now_s() - t0) / c->n;
        if (t < best) best = t;
    }
    return best;
}

static double time_blas(copies *c, shape s, const float *x, int n, float *y)
{
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        for (int i = 0; i < c->n; i++) {
            if (n == 1)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, s.rows, s.cols, 1.0f, c->fw[i], s.cols, x, 1,
                            0.0f, y, 1);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, s.rows, s.cols, 1.0f, x, s.cols,
                            c->fw[i], s.cols, 0.0f, y, s.rows);
        }
        double t = (now_s() - t0) / c->n;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv)
{
    const char *json_path = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json_path = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else {
            fprintf(stderr, "usage: %s [--quick] [--json FILE]\n", argv[0]);
            return 2;
        }
    }
    const char *want = getenv("BN_BENCH_CORETYPE"), *cur = getenv("OPENBLAS_CORETYPE");
    if (want && *want && (!cur || strcmp(cur, want) != 0)) {
        setenv("OPENBLAS_CORETYPE", want, 1);
        execv("/proc/self/exe", argv);
        perror("re-exec with OPENBLAS_CORETYPE");
        return 1;
    }
    bn_blas_init(argc, argv, 0); /* unset: the engine's choice for this CPU (blas.h) */
    size_t cold = (quick ? 64u : 256u) << 20;
    size_t bwn = (quick ? 256u : 1024u) << 20;
    uint8_t *bwbuf = aligned_alloc(64, bwn);
    memset(bwbuf, 1, bwn);
    double bw1 = bandwidth(bwbuf, bwn, 1), bw2 = bandwidth(bwbuf, bwn, 2);
    free(bwbuf);

    const shape shapes[3] = {{2048, 5632}, {5632, 2048}, {4096, 4096}};
    const int batches[4] = {64, 128, 256, 512};
    FILE *js = json_path ? fopen(json_path, "w") : NULL;
    if (json_path && !js) {
        perror(json_path);
        return 1;
    }
    printf("kernel ISA: %s; OpenBLAS core: %s (OPENBLAS_CORETYPE=%s)\n", bn_isa_name(bn_tk_isa_best()),
           openblas_get_corename(), getenv("OPENBLAS_CORETYPE"));
    printf("memory read bandwidth: %.1f GB/s (1 thread), %.1f GB/s (2 threads)\n\n", bw1, bw2);
    if (js)
        fprintf(js, "{\n  \"isa\": \"%s\",\n  \"openblas_core\": \"%s\",\n  \"bandwidth_gbs\": {\"1\": %.2f, \"2\": %.2f},\n  \"gemv\": [",
                bn_isa_name(bn_tk_isa_best()), openblas_get_corename(), bw1, bw2);

    printf("GEMV (1 token, cold weights)\n");
    printf("%-11s %3s %11s %11s %8s %10s %8s\n", "shape", "thr", "tern us", "sgemv us", "speedup",
           "tern GB/s", "% of bw");
    int first = 1;
    for (int si = 0; si < 3; si++) {
        shape s = shapes[si];
        copies ct, cf;
        copies_make(&ct, s, cold, 0);
        copies_make(&cf, s, cold, 1);
        float *x = malloc(sizeof(float) * 512 * (size_t)s.cols), *y = malloc(sizeof(float) * 512 * (size_t)s.rows);
        for (size_t k = 0; k < 512 * (size_t)s.cols; k++) x[k] = unit();
        bn_tk_act a;
        bn_tk_act_init(&a, 512, s.cols);
        double tbytes = (double)s.rows * ct.tw[0].nb * 64 + 4.0 * s.rows;
        /* 1 thread; 2 threads started per call (bn_tk_gemm); 2 threads from a pool
         * (bn_tk_gemm_pool, as token generation runs them) */
        for (int mode = 0; mode < 3; mode++) {
            int th = mode == 0 ? 1 : 2;
            bn_tk_pool *pool = NULL;
            if (mode == 2 && bn_tk_pool_new(2, &pool) != 0) break;
            openblas_set_num_threads(th);
            double tt = time_tern(&ct, &a, x, 1, y, th, pool), tb = time_blas(&cf, s, x, 1, y);
            bn_tk_pool_free(pool);
            double gbs = tbytes / tt / 1e9, bw = th == 1 ? bw1 : bw2;
            printf("%5dx%-5d %3s %11.1f %11.1f %7.2fx %10.1f %7.0f%%\n", s.rows, s.cols,
                   mode == 0 ? "1" : mode == 1 ? "2" : "2p", tt * 1e6, tb * 1e6, tb / tt, gbs, 100 * gbs / bw);
            if (js)
                fprintf(js, "%s\n    {\"rows\": %d, \"cols\": %d, \"threads\": %d, \"pool\": %s, \"ternary_us\": %.2f, \"sgemv_us\": %.2f, \"speedup\": %.3f, \"ternary_gbs\": %.2f, \"bandwidth_fraction\": %.3f}",
                        first ? "" : ",", s.rows, s.cols, th, mode == 2 ? "true" : "false", tt * 1e6, tb * 1e6,
                        tb / tt, gbs, gbs / bw);
            first = 0;
        }
        bn_tk_act_free(&a);
        free(x), free(y);
        copies_free(&ct), copies_free(&cf);
    }

    if (js) fprintf(js, "\n  ],\n  \"gemm\": [");
    printf("\nGEMM (batch of tokens, 2 threads)\n");
    printf("%-11s %5s %11s %11s %8s %10s\n", "shape", "batch", "tern ms", "sgemm ms", "speedup", "tern GOP/s");
    first = 1;
    openblas_set_num_threads(2);
    for (int si = 0; si < 3; si++) {
        shape s = shapes[si];
        copies ct, cf;
        copies_make(&ct, s, 0, 0);
        copies_make(&cf, s, 0, 1);
        float *x = malloc(sizeof(float) * 512 * (size_t)s.cols), *y = malloc(sizeof(float) * 512 * (size_t)s.rows);
        for (size_t k = 0; k < 512 * (size_t)s.cols; k++) x[k] = unit();
        bn_tk_act a;
        bn_tk_act_init(&a, 512, s.cols);
        for (int bi = 0; bi < 4; bi++) {
            int n = batches[bi];
            if (quick && n > 128) break;
            double tt = time_tern(&ct, &a, x, n, y, 2, NULL), tb = time_blas(&cf, s, x, n, y);
            double gops = 2.0 * s.rows * s.cols * n / tt / 1e9;
            printf("%5dx%-5d %5d %11.2f %11.2f %7.2fx %10.1f\n", s.rows, s.cols, n, tt * 1e3, tb * 1e3,
                   tb / tt, gops);
            if (js)
                fprintf(js, "%s\n    {\"rows\": %d, \"cols\": %d, \"batch\": %d, \"threads\": 2, \"ternary_ms\": %.3f, \"sgemm_ms\": %.3f, \"speedup\": %.3f}",
                        first ? "" : ",", s.rows, s.cols, n, tt * 1e3, tb * 1e3, tb / tt);
            first = 0;
        }
        bn_tk_act_free(&a);
        free(x), free(y);
        copies_free(&ct), copies_free(&cf);
    }
    if (js) {
        fprintf(js, "\n  ]\n}\n");
        fclose(js);
    }
    return 0;
}
