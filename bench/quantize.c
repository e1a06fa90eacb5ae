/* bench/quantize.c - quantize + pack + export throughput against memory bandwidth.
 *
 * usage: bench-quantize MODEL_DIR [--threads 1,2] [--json FILE] [--out DIR]
 *        bench-quantize --kernel-only      (steps 1 and 1b only)
 *
 * 1. Memory read bandwidth of this machine, measured here: a 1 GiB buffer summed with
 *    AVX2 loads, best of 3, at 1 and 2 threads.
 * 1b. The quantizer alone on a resident F16 tensor, per code path: what the kernel does
 *    when the input is in memory (no page faults, no file I/O).
 * 2. For each thread count, a child process runs the pipeline (calibration, evaluation,
 *    fine-tuning and GGUF off: load -> quantize -> export) on MODEL_DIR; the progress
 *    callback timestamps the stages. The input is read once through the page cache
 *    (a warm-up pass reads it first, so the disk is not measured). Peak RSS comes from
 *    the child's rusage.
 * 3. A table: weights/s and GB/s of input read in the quantize stage, their ratio to
 *    the measured bandwidth, quantize+pack+export seconds, compression ratio by bytes
 *    on disk (vs FP32 = 4 bytes/param, vs the input), peak RSS. --json writes the same.
 */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bn_engine.h"
#include "base/fsutil.h"
#include "quant/quant.h"

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- bandwidth -------------------------------------------------------------------- */

typedef struct { const uint8_t *p; size_t n; double sum; } bw_arg;

__attribute__((target("avx2")))
static void *bw_read(void *a)
{
    bw_arg *b = a;
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (size_t i = 0; i + 128 <= b->n; i += 128) {
        acc0 = _mm256_add_epi64(acc0, _mm256_loadu_si256((const __m256i *)(b->p + i)));
        acc1 = _mm256_add_epi64(acc1, _mm256_loadu_si256((const __m256i *)(b->p + i + 32)));
        acc2 = _mm256_add_epi64(acc2, _mm256_loadu_si256((const __m256i *)(b->p + i + 64)));
        acc3 = _mm256_add_epi64(acc3, _mm256_loadu_si256((const __m256i *)(b->p + i + 96)));
    }
    acc0 = _mm256_add_epi64(_mm256_add_epi64(acc0, acc1), _mm256_add_epi64(acc2, acc3));
    int64_t v[4];
    _mm256_storeu_si256((__m256i *)v, acc0);
    b->sum = (double)(v[0] + v[1] + v[2] + v[3]);
    return NULL;
}

static double bandwidth(int threads)
{
    size_t n = (size_t)1 << 30;
    uint8_t *buf = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) return 0;
    for (size_t i = 0; i < n; i += 4096) buf[i] = (uint8_t)i;
    memset(buf, 1, n);
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        pthread_t t[8];
        bw_arg a[8];
        double t0 = mono();
        for (int k = 0; k < threads; k++) {
            a[k] = (bw_arg){ buf + n / (size_t)threads * (size_t)k, n / (size_t)threads, 0 };
            if (k) pthread_create(&t[k], NULL, bw_read, &a[k]);
        }
        bw_read(&a[0]);
        for (int k = 1; k < threads; k++) pthread_join(t[k], NULL);
        double gbs = (double)n / (mono() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    munmap(buf, n);
    return best;
}

/* ---- the quantizer alone on a resident buffer (no page faults, no I/O) ---------------- */

static double kernel_rate(int threads, bn_isa isa)
{
    int64_t rows = 5632, cols = 2048, n = rows * cols;
    uint16_t *h = malloc((size_t)n * 2);
    int8_t *codes = malloc((size_t)n);
    float *scales = malloc((size_t)rows * 4);
    uint32_t x = 1;
    for (int64_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        h[i] = bn_f32_to_f16(((float)(x >> 8) / 16777216.0f - 0.5f) * 0.04f);
    }
    bn_quant_params p;
    bn_quant_params_default(&p);
    p.threads = threads;
    p.isa = isa;
    bn_quant_stats st;
    bn_err err;
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = mono();
        bn_quant_tensor("bench", h, BN_DTYPE_F16, rows, cols, &p, codes, scales, &st, &err);
        double t = mono() - t0;
        if (t < best) best = t;
    }
    free(h); free(codes); free(scales);
    return (double)n / best;
}

/* ---- one pipeline run in a child ----------------------------------------------------- */

typedef struct {
    double t_stage[BN_STAGE_COUNT][2]; /* first and last update time */
    double t_quant_loop_end;           /* last tensor ternarized (before the checkpoint) */
    double ratio_input, ratio_fp32, quantized_params, total_params, input_bytes, qbytes, seconds;
    long max_rss_kb;
    int ok;
    char err[1024];
} run_result;

static bool on_update(void *ctx, bn_stage s, double f, const char *d)
{
    (void)d;
    run_result *r = ctx;
    double t = mono();
    if (r->t_stage[s][0] == 0) r->t_stage[s][0] = t;
    r->t_stage[s][1] = t;
    if (s == BN_STAGE_QUANTIZE && f >= 1 && r->t_quant_loop_end == 0) r->t_quant_loop_end = t;
    return false;
}

static void on_metric(void *ctx, const char *k, double v, int64_t step)
{
    (void)step;
    run_result *r = ctx;
    if (!strcmp(k, "compression/quantized_params")) r->quantized_params = v;
    if (!strcmp(k, "compression/total_params")) r->total_params = v;
}

static void warm_cache(const char *model)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", model);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return;
    char *buf = malloc(1 << 20);
    while (read(fd, buf, 1 << 20) > 0) {}
    free(buf);
    close(fd);
}

static void child_run(const char *model, const char *out_root, int threads, int fd)
{
    run_result r = { 0 };
    char out[4096], work[4096];
    snprintf(out, sizeof out, "%s/bench-out-%d", out_root, threads);
    snprintf(work, sizeof work, "%s/bench-work-%d", out_root, threads);
    bn_fs_rm_rf(out, NULL);
    bn_fs_rm_rf(work, NULL);
    bn_options o;
    bn_options_default(&o);
    o.threads = threads;
    o.calibration.enabled = false;
    o.fine_tune.enabled = false;
    o.export.gguf_tq2_0 = o.export.gguf_tq1_0 = false;
    o.export.gguf_explicit = true;
    bn_pipeline_paths paths = { model, out, work, NULL, NULL };
    bn_progress pr = { &r, on_update, NULL, on_metric, NULL, NULL };
    bn_err err = { 0 };
    double t0 = mono();
    r.ok = bn_pipeline_run(&paths, &o, &pr, &err) == 0;
    r.seconds = mono() - t0;
    snprintf(r.err, sizeof r.err, "%s", err.msg);
    char md[4200], *text;
    size_t len;
    snprintf(md, sizeof md, "%s/compression_metadata.json", out);
    if (r.ok && bn_fs_read_file(md, 64 << 20, &text, &len, &err) == 0) {
        cJSON *j = cJSON_Parse(text);
        free(text);
        cJSON *sz = cJSON_GetObjectItem(j, "sizes");
        r.ratio_input = cJSON_GetObjectItem(j, "compression_ratio")->valuedouble;
        r.ratio_fp32 = cJSON_GetObjectItem(j, "compression_ratio_vs_fp32")->valuedouble;
        r.input_bytes = cJSON_GetObjectItem(sz, "input_weight_bytes")->valuedouble;
        r.qbytes = cJSON_GetObjectItem(sz, "quantized_weight_bytes")->valuedouble;
        cJSON_Delete(j);
    }
    bn_fs_rm_rf(out, NULL);
    bn_fs_rm_rf(work, NULL);
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
    _exit(0);
}

static int run_one(const char *model, const char *out_root, int threads, run_result *r)
{
    int p[2];
    if (pipe(p)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        child_run(model, out_root, threads, p[1]);
    }
    close(p[1]);
    ssize_t got = read(p[0], r, sizeof *r);
    close(p[0]);
    int st;
    struct rusage ru;
    wait4(pid, &st, 0, &ru);
    r->max_rss_kb = ru.ru_maxrss;
    return got == (ssize_t)sizeof *r && r->ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *json_path = NULL, *out_root = "/tmp";
    int threads[8] = { 1, 2 }, nt = 2, rc = 0;
    bool kernel_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
        else if (!strcmp(argv[i], "--kernel-only")) kernel_only = true;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_root = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            nt = 0;
            for (char *s = strtok(argv[++i], ","); s && nt < 8; s = strtok(NULL, ",")) threads[nt++] = atoi(s);
        } else if (!model) model = argv[i];
        else { fprintf(stderr, "usage: bench-quantize MODEL_DIR [--threads 1,2] [--json FILE] [--out DIR]\n"); return 2; }
    }
    if (!model && !kernel_only) { fprintf(stderr, "usage: bench-quantize MODEL_DIR [--threads 1,2] [--json FILE] [--out DIR]\n"); return 2; }
    cJSON *js = cJSON_CreateObject();
    cJSON_AddStringToObject(js, "model", model ? model : "");
    cJSON *runs = cJSON_AddArrayToObject(js, "runs");
    printf("memory read bandwidth: ");
    fflush(stdout);
    double bw[9] = { 0 };
    for (int i = 0; i < nt; i++) {
        if (threads[i] < 1 || threads[i] > 8) continue;
        bw[threads[i]] = bandwidth(threads[i]);
        printf("%d thread%s %.2f GB/s  ", threads[i], threads[i] > 1 ? "s" : "", bw[threads[i]]);
    }
    printf("\n");
    printf("quantizer alone (F16 [5632, 2048] resident in memory, best of 5):\n");
    cJSON *kern = cJSON_AddArrayToObject(js, "kernel");
    for (int i = 0; i < nt; i++)
        for (bn_isa isa = BN_ISA_SCALAR; isa <= BN_ISA_AVX512; isa++) {
            if (!bn_quant_isa_available(isa) || threads[i] < 1 || threads[i] > 8) continue;
            double r = kernel_rate(threads[i], isa);
            printf("  %d thread%s %-6s %8.1f Mweights/s %6.2f GB/s (%.0f%% of read bandwidth)\n", threads[i],
                   threads[i] > 1 ? "s" : " ", bn_isa_name(isa), r / 1e6, 2 * r / 1e9,
                   bw[threads[i]] > 0 ? 100 * 2 * r / 1e9 / bw[threads[i]] : 0);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "threads", threads[i]);
            cJSON_AddStringToObject(o, "isa", bn_isa_name(isa));
            cJSON_AddNumberToObject(o, "weights_per_second", r);
            cJSON_AddNumberToObject(o, "input_gbs", 2 * r / 1e9);
            cJSON_AddItemToArray(kern, o);
        }
    if (kernel_only) goto done;
    warm_cache(model);
    printf("%-7s %10s %8s %7s %8s %7s %9s %8s %11s %9s %10s\n", "threads", "Mweights/s", "GB/s in", "%bw",
           "quant s", "ckpt s", "export s", "total s", "ratio fp32", "ratio in", "peak RSS");
    for (int i = 0; i < nt; i++) {
        run_result r;
        if (run_one(model, out_root, threads[i], &r)) {
            fprintf(stderr, "run at %d threads failed: %s\n", threads[i], r.err);
            rc = 1;
            continue;
        }
        double tq = r.t_quant_loop_end - r.t_stage[BN_STAGE_QUANTIZE][0];
        double tck = r.t_stage[BN_STAGE_QUANTIZE][1] - r.t_quant_loop_end;
        double te = r.t_stage[BN_STAGE_EXPORT][1] - r.t_stage[BN_STAGE_EXPORT][0];
        double ws = r.quantized_params / tq, gbs = r.input_bytes / tq / 1e9;
        double pct = bw[threads[i]] > 0 ? 100 * gbs / bw[threads[i]] : 0;
        printf("%-7d %10.1f %8.2f %6.1f%% %8.2f %7.2f %9.2f %8.2f %10.2fx %8.2fx %7.0f MB\n", threads[i], ws / 1e6, gbs,
               pct, tq, tck, te, r.seconds, r.ratio_fp32, r.ratio_input, (double)r.max_rss_kb / 1024);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "threads", threads[i]);
        cJSON_AddNumberToObject(o, "read_bandwidth_gbs", bw[threads[i]]);
        cJSON_AddNumberToObject(o, "quantized_params", r.quantized_params);
        cJSON_AddNumberToObject(o, "total_params", r.total_params);
        cJSON_AddNumberToObject(o, "quantize_seconds", tq);
        cJSON_AddNumberToObject(o, "checkpoint_seconds", tck);
        cJSON_AddNumberToObject(o, "export_seconds", te);
        cJSON_AddNumberToObject(o, "total_seconds", r.seconds);
        cJSON_AddNumberToObject(o, "weights_per_second", ws);
        cJSON_AddNumberToObject(o, "input_gbs", gbs);
        cJSON_AddNumberToObject(o, "fraction_of_bandwidth", pct / 100);
        cJSON_AddNumberToObject(o, "input_bytes", r.input_bytes);
        cJSON_AddNumberToObject(o, "quantized_bytes", r.qbytes);
        cJSON_AddNumberToObject(o, "ratio_vs_fp32", r.ratio_fp32);
        cJSON_AddNumberToObject(o, "ratio_vs_input", r.ratio_input);
        cJSON_AddNumberToObject(o, "peak_rss_mb", (double)r.max_rss_kb / 1024);
        cJSON_AddItemToArray(runs, o);
    }
done:
    if (json_path) {
        char *t = cJSON_Print(js);
        bn_err err;
        if (bn_fs_write_atomic(json_path, t, strlen(t), &err)) fprintf(stderr, "%s\n", err.msg);
        free(t);
    }
    cJSON_Delete(js);
    return rc;
}
