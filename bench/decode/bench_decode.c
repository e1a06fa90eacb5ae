/* bench_decode.c - whole-model ternary decode and prompt throughput of bitnetd, measured
 * the way llama-bench measures llama.cpp (bench/decode/run.sh runs both, alternating).
 *
 *   pp: a prompt of --pp tokens from an empty cache, logits for the last one only
 *       (llama-bench -p N -n 0);
 *   tg: --tg tokens one by one from an empty cache, logits every step and a greedy pick
 *       (llama-bench -p 0 -n N).
 * Each is repeated --reps times (best kept). The model loads once (a minute for 1.1B);
 * for each thread count of --threads and each of --rounds rounds it measures, and runs
 * the --peer command (with "THREADS ROUND" appended) after it in odd rounds and before it
 * in even ones: the engines alternate. Also measures the memory read bandwidth (one pass
 * over 512 MiB) and prints, per measurement, one JSON line with tok/s, the bytes of
 * weights read per token and bytes/token / bandwidth (the bandwidth limit on tok/s).
 *
 * usage: bench_decode OUTPUT_DIR [--threads 1,2] [--rounds 1] [--peer CMD] [--pp 128] [--tg 64] [--reps 2]
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats/hf.h"
#include "model/tk_llama.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct bw_job {
    const uint8_t *p;
    size_t n;
    long long out;
} bw_job;

__attribute__((target("avx2"))) static void *bw_read(void *arg)
{
    bw_job *j = arg;
    __m256i a = _mm256_setzero_si256(), b = a;
    for (size_t i = 0; i < j->n; i += 64) {
        a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i *)(j->p + i)));
        b = _mm256_add_epi64(b, _mm256_load_si256((const __m256i *)(j->p + i + 32)));
    }
    j->out = _mm256_extract_epi64(_mm256_add_epi64(a, b), 0);
    return NULL;
}

/* GB/s reading n bytes with `threads` threads (best of 3). */
static double bandwidth(const uint8_t *buf, size_t n, int threads)
{
    double best = 1e30;
    size_t per = n / (size_t)threads / 64 * 64;
    for (int rep = 0; rep < 3; rep++) {
        bw_job jobs[2];
        pthread_t tid;
        double t0 = now_s();
        for (int i = 0; i < threads; i++) jobs[i] = (bw_job){buf + (size_t)i * per, per, 0};
        if (threads > 1 && pthread_create(&tid, NULL, bw_read, &jobs[1]) != 0) return 0;
        bw_read(&jobs[0]);
        if (threads > 1) pthread_join(tid, NULL);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    return (double)(per * (size_t)threads) / best / 1e9;
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* One measurement at the model's current thread count: JSON line on stdout. */
static int measure(bn_tk_llama *m, const int32_t *ids, int pp, int tg, int reps, int V, float *logits, int threads,
                   int round, bn_err *err)
{
    size_t bwn = (size_t)512 << 20;
    uint8_t *bwbuf = aligned_alloc(64, bwn);
    if (!bwbuf) return bn_err_set(err, BN_ENOMEM, "out of memory");
    memset(bwbuf, 1, bwn);
    double bw = bandwidth(bwbuf, bwn, threads);
    free(bwbuf);
    double best_pp = 1e30, best_tg = 1e30;
    int rc = bn_tk_llama_step(m, ids[0], 0, logits, err); /* warm-up */
    for (int r = 0; r < reps && !rc; r++) {
        double t0 = now_s();
        rc = bn_tk_llama_prefill(m, ids, pp, 0, logits, err);
        double t = now_s() - t0;
        if (t < best_pp) best_pp = t;
        t0 = now_s();
        int32_t tok = ids[0];
        for (int i = 0; i < tg && !rc; i++) {
            rc = bn_tk_llama_step(m, tok, i, logits, err);
            tok = argmax(logits, V);
        }
        t = now_s() - t0;
        if (t < best_tg) best_tg = t;
    }
    if (rc) return rc;
    double bpt = (double)bn_tk_llama_bytes_per_token(m);
    printf("{\"engine\":\"bitnetd\",\"threads\":%d,\"round\":%d,\"pp\":%d,\"tg\":%d,\"pp_tok_s\":%.3f,\"tg_tok_s\":%.3f,"
           "\"bytes_per_token\":%.0f,\"read_gb_s\":%.2f,\"bandwidth_limit_tok_s\":%.2f}\n",
           threads, round, pp, tg, pp / best_pp, tg / best_tg, bpt, bw, bw * 1e9 / bpt);
    fflush(stdout);
    return BN_OK;
}

/* Runs the peer command with "THREADS ROUND" appended (it writes its own results). */
static void peer(const char *cmd, int threads, int round)
{
    if (!cmd) return;
    char line[4096];
    snprintf(line, sizeof line, "%s %d %d", cmd, threads, round);
    if (system(line) != 0) fprintf(stderr, "bench_decode: peer command failed: %s\n", line);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_decode OUTPUT_DIR [--threads 1,2] [--rounds 1] [--peer CMD] [--pp 128] [--tg 64] "
                        "[--reps 2]\n");
        return 2;
    }
    int pp = 128, tg = 64, reps = 2, rounds = 1, nt = 0, tlist[8];
    const char *peer_cmd = NULL, *threads = "1";
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--threads")) threads = argv[i + 1];
        else if (!strcmp(argv[i], "--pp")) pp = v;
        else if (!strcmp(argv[i], "--tg")) tg = v;
        else if (!strcmp(argv[i], "--reps")) reps = v;
        else if (!strcmp(argv[i], "--rounds")) rounds = v;
        else if (!strcmp(argv[i], "--peer")) peer_cmd = argv[i + 1];
        else {
            fprintf(stderr, "bench_decode: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    for (const char *p = threads; *p && nt < 8; p += strspn(p, ","))
        tlist[nt++] = (int)strtol(p, (char **)&p, 10);
    for (int i = 0; i < nt; i++)
        if (tlist[i] < 1 || tlist[i] > 2) nt = 0;
    if (nt == 0 || pp < 1 || tg < 1 || reps < 1 || rounds < 1) {
        fprintf(stderr, "bench_decode: --threads a list of 1 or 2, --pp, --tg, --reps, --rounds >= 1\n");
        return 2;
    }
    bn_err err = {0};
    bn_hf_model *hf = NULL;
    bn_tk_llama *m = NULL;
    if (bn_hf_open(argv[1], &hf, &err) || bn_tk_llama_load(hf, pp > tg ? pp : tg, tlist[0], &m, &err)) {
        fprintf(stderr, "bench_decode: %s: %s\n", argv[1], err.msg);
        bn_hf_close(hf);
        return 1;
    }
    int V = hf->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)V);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)pp);
    if (!logits || !ids) return 1;
    for (int i = 0; i < pp; i++) ids[i] = (int32_t)((1 + 7919u * (unsigned)i) % (unsigned)V);
    int rc = 0;
    /* alternating: odd rounds bitnetd first, even rounds the peer first */
    for (int t = 0; t < nt && !rc; t++) {
        if (bn_tk_llama_set_threads(m, tlist[t])) fprintf(stderr, "bench_decode: no helper threads\n");
        for (int r = 1; r <= rounds && !rc; r++) {
            if (r % 2 == 0) peer(peer_cmd, tlist[t], r);
            rc = measure(m, ids, pp, tg, reps, V, logits, tlist[t], r, &err);
            if (r % 2 == 1) peer(peer_cmd, tlist[t], r);
        }
    }
    if (rc) fprintf(stderr, "bench_decode: %s\n", err.msg);
    free(logits), free(ids);
    bn_tk_llama_free(m);
    bn_hf_close(hf);
    return rc ? 1 : 0;
}
