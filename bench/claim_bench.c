/* claim_bench.c - claim latency of the store, SQLite against PostgreSQL, with several
 * claimers at once (each its own connection: a host's worker).
 *
 * For each backend: fill the queue with J jobs, then W threads claim until it is empty,
 * each claim followed by one progress write (lease renewal) and a finish, as a worker
 * does. Reports claims/s and p50/p90/p99/max claim latency, prints a table and writes
 * JSON. PostgreSQL: --pg URL, or a throw-away server started with
 * tests/common/pgtest.sh (BN_SOURCE_ROOT or the current folder).
 *
 *   claim_bench [--jobs J] [--workers W] [--pg URL] [--json FILE]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bn_store.h"

typedef struct run {
    const char *spec;
    int index;
    double *lat; /* seconds per claim */
    int n;
    int cap;
} run;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *claimer(void *arg)
{
    run *r = arg;
    bn_store *st;
    char err[512], owner[64];
    if (bn_store_open(r->spec, &st, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return NULL;
    }
    snprintf(owner, sizeof owner, "bench%d/w0", r->index);
    for (;;) {
        bn_store_job j;
        double t0 = now_s();
        int rc = bn_store_job_claim(st, owner, 60000, &j);
        double dt = now_s() - t0;
        if (rc != BN_STORE_OK) break;
        if (r->n < r->cap) r->lat[r->n++] = dt;
        bool cancel;
        bn_store_job_progress(st, j.id, owner, 60000, "load", 0.5, 0.1, "bench", &cancel);
        bn_store_job_finish(st, j.id, owner, BN_JOB_SUCCEEDED, NULL);
        bn_store_job_free(&j);
    }
    bn_store_close(st);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    const char *name;
    int claims;
    double seconds, p50, p90, p99, max;
} result;

static int bench(const char *name, const char *spec, int jobs, int workers, result *res)
{
    bn_store *st;
    char err[512];
    if (bn_store_open(spec, &st, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    for (int i = 0; i < jobs; i++) {
        char out[32];
        snprintf(out, sizeof out, "b%d", i);
        bn_store_new_job nj = {.priority = i % 3, .model = "/m", .output = out,
                               .output_dir = "/o", .config = "{}", .tracking = "{}",
                               .wandb_mode = "disabled"};
        bn_store_job j;
        bool existed;
        if (bn_store_job_create(st, &nj, &j, &existed)) {
            fprintf(stderr, "create: %s\n", bn_store_errmsg(st));
            return -1;
        }
        bn_store_job_free(&j);
    }
    run *runs = calloc((size_t)workers, sizeof *runs);
    pthread_t *th = calloc((size_t)workers, sizeof *th);
    double t0 = now_s();
    for (int w = 0; w < workers; w++) {
        runs[w] = (run){.spec = spec, .index = w, .cap = jobs};
        runs[w].lat = calloc((size_t)jobs, sizeof(double));
        pthread_create(&th[w], NULL, claimer, &runs[w]);
    }
    for (int w = 0; w < workers; w++) pthread_join(th[w], NULL);
    double elapsed = now_s() - t0;
    double *all = calloc((size_t)jobs, sizeof *all);
    int n = 0;
    for (int w = 0; w < workers; w++) {
        for (int i = 0; i < runs[w].n && n < jobs; i++) all[n++] = runs[w].lat[i];
        free(runs[w].lat);
    }
    qsort(all, (size_t)n, sizeof *all, cmp);
    int64_t counts[BN_JOB_STATUS_COUNT];
    bn_store_job_counts(st, counts);
    bn_store_close(st);
    *res = (result){.name = name, .claims = n, .seconds = elapsed,
                    .p50 = n ? all[n / 2] : 0, .p90 = n ? all[n * 9 / 10] : 0,
                    .p99 = n ? all[n * 99 / 100] : 0, .max = n ? all[n - 1] : 0};
    free(all);
    free(runs);
    free(th);
    if (n != jobs || counts[BN_JOB_SUCCEEDED] != jobs) {
        fprintf(stderr, "%s: %d claims for %d jobs (%lld succeeded): not exactly once\n", name,
                n, jobs, (long long)counts[BN_JOB_SUCCEEDED]);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int jobs = 2000, workers = 4;
    const char *pg = NULL, *json = NULL;
    for (int i = 1; i < argc; i++) {
        bool has = i + 1 < argc;
        if (!strcmp(argv[i], "--jobs") && has) jobs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workers") && has) workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pg") && has) pg = argv[++i];
        else if (!strcmp(argv[i], "--json") && has) json = argv[++i];
        else {
            fprintf(stderr, "usage: claim_bench [--jobs J] [--workers W] [--pg URL] [--json FILE]\n");
            return 2;
        }
    }
    char tmp[] = "/tmp/claim_bench.XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    char sqlite[256], url[1024] = "", cmd[2048];
    snprintf(sqlite, sizeof sqlite, "sqlite:%s/bench.db", tmp);
    const char *root = getenv("BN_SOURCE_ROOT") ? getenv("BN_SOURCE_ROOT") : ".";
    bool started = false;
    if (!pg) {
        snprintf(cmd, sizeof cmd, "bash '%s/tests/common/pgtest.sh' start '%s/pg' %d", root, tmp,
                 30000 + (int)(getpid() % 20000));
        FILE *p = popen(cmd, "r");
        if (!p || !fgets(url, sizeof url, p) || pclose(p) != 0) {
            fprintf(stderr, "cannot start PostgreSQL (%s)\n", cmd);
            return 1;
        }
        url[strcspn(url, "\n")] = 0;
        pg = url;
        started = true;
    }
    result res[2];
    int rc = bench("sqlite", sqlite, jobs, workers, &res[0]) ||
             bench("postgresql", pg, jobs, workers, &res[1]);
    if (started) {
        snprintf(cmd, sizeof cmd, "bash '%s/tests/common/pgtest.sh' stop '%s/pg'", root, tmp);
        if (system(cmd)) fprintf(stderr, "stopping PostgreSQL failed\n");
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) fprintf(stderr, "cleanup failed\n");
    if (rc) return 1;
    printf("claim + renew + finish, %d jobs, %d concurrent claimers (own connections)\n", jobs,
           workers);
    printf("| store | claims/s | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < 2; i++)
        printf("| %s | %.0f | %.2f | %.2f | %.2f | %.2f |\n", res[i].name,
               res[i].claims / res[i].seconds, res[i].p50 * 1e3, res[i].p90 * 1e3,
               res[i].p99 * 1e3, res[i].max * 1e3);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) return 1;
        fprintf(f, "{\"jobs\":%d,\"workers\":%d,\"results\":[", jobs, workers);
        for (int i = 0; i < 2; i++)
            fprintf(f, "%s{\"store\":\"%s\",\"claims_per_s\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
                    "\"p99_ms\":%.3f,\"max_ms\":%.3f}", i ? "," : "", res[i].name,
                    res[i].claims / res[i].seconds, res[i].p50 * 1e3, res[i].p90 * 1e3,
                    res[i].p99 * 1e3, res[i].max * 1e3);
        fprintf(f, "]}\n");
        fclose(f);
    }
    return 0;
}
