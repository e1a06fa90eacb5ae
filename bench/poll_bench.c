/* poll_bench.c - status polling benchmark of bitnetd.
 *
 * N keep-alive connections (default 50, libcurl multi, one thread) poll GET
 * /v1/jobs/{id} and GET /v1/jobs?limit=20 alternately for a fixed time while a job
 * computes, and report requests/s, p50/p90/p99/max latency and errors.
 *
 * Without --server it starts a daemon itself (--bitnetd PATH, default the build's
 * daemon/bitnetd, else tests/service/bitnetd-fake) on a random loopback port with
 * temporary state and a copy-free model root (--model DIR, default
 * ../shared/data/stories260K-hf), submits one job so that work is running during the
 * measurement, and stops the daemon afterwards.
 *
 *   poll_bench [--server URL --job ID] [--bitnetd PATH] [--model DIR] [--connections N]
 *              [--seconds S] [--json FILE]
 */
#include <curl/curl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct bench {
    char server[256], job[64], model[PATH_MAX], bitnetd[PATH_MAX], json[PATH_MAX];
    int conns;
    double seconds;
    pid_t pid;
    char tmp[PATH_MAX];
} bench;

typedef struct conn {
    CURL *c;
    int n;           /* requests sent on this connection */
    size_t bytes;
} conn;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    ((conn *)ud)->bytes += size * n;
    return size * n;
}

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
    char *buf = ud;
    size_t have = strlen(buf), k = size * n;
    if (have + k < 4096) {
        memcpy(buf + have, p, k);
        buf[have + k] = 0;
    }
    return k;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- daemon set-up -------------------------------------------------------------------- */

static int start_daemon(bench *b)
{
    snprintf(b->tmp, sizeof b->tmp, "/tmp/bn-bench-XXXXXX");
    if (!mkdtemp(b->tmp)) return -1;
    char state[PATH_MAX + 16], url_file[PATH_MAX + 32], log[PATH_MAX + 16];
    snprintf(state, sizeof state, "%s/state", b->tmp);
    snprintf(url_file, sizeof url_file, "%s/bitnetd.url", state);
    snprintf(log, sizeof log, "%s/bitnetd.log", b->tmp);
    char root[PATH_MAX];
    snprintf(root, sizeof root, "%s", b->model);
    char *slash = strrchr(root, '/');
    if (slash) *slash = 0;
    b->pid = fork();
    if (b->pid == 0) {
        if (!freopen(log, "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(126);
        execl(b->bitnetd, b->bitnetd, "--listen", "127.0.0.1:0", "--state-dir", state,
              "--model-root", root, "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(url_file, "r");
        if (f) {
            if (fgets(b->server, sizeof b->server, f)) b->server[strcspn(b->server, "\n")] = 0;
            fclose(f);
            return 0;
        }
        usleep(20000);
    }
    fprintf(stderr, "poll_bench: %s did not start (see %s)\n", b->bitnetd, log);
    return -1;
}

static int submit_job(bench *b)
{
    CURL *c = curl_easy_init();
    char url[512], body[PATH_MAX + 128], resp[4096] = "";
    snprintf(url, sizeof url, "%s/v1/jobs", b->server);
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"output\":\"bench-%d\"}", b->model,
             (int)getpid());
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, (void *)resp);
    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    const char *id = strstr(resp, "\"id\":\"");
    if (cc != CURLE_OK || !id) {
        fprintf(stderr, "poll_bench: submit failed: %s\n", resp);
        return -1;
    }
    snprintf(b->job, sizeof b->job, "%.20s", id + 6);
    return 0;
}

/* ---- measurement ------------------------------------------------------------------------ */

static void set_url(bench *b, conn *k)
{
    char url[512];
    if (k->n++ % 2 == 0) snprintf(url, sizeof url, "%s/v1/jobs/%s", b->server, b->job);
    else snprintf(url, sizeof url, "%s/v1/jobs?limit=20", b->server);
    curl_easy_setopt(k->c, CURLOPT_URL, url);
}

static int run(bench *b)
{
    CURLM *m = curl_multi_init();
    conn *cs = calloc((size_t)b->conns, sizeof *cs);
    size_t cap = 1 << 20, n = 0;
    double *lat = malloc(cap * sizeof *lat);
    long errors = 0;
    for (int i = 0; i < b->conns; i++) {
        cs[i].c = curl_easy_init();
        curl_easy_setopt(cs[i].c, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(cs[i].c, CURLOPT_WRITEDATA, &cs[i]);
        curl_easy_setopt(cs[i].c, CURLOPT_PRIVATE, &cs[i]);
        curl_easy_setopt(cs[i].c, CURLOPT_TIMEOUT, 10L);
        set_url(b, &cs[i]);
        curl_multi_add_handle(m, cs[i].c);
    }
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)b->conns);
    double t0 = now_s(), end = t0 + b->seconds;
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            conn *k;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&k);
            long code = 0;
            curl_off_t us = 0;
            curl_easy_getinfo(k->c, CURLINFO_RESPONSE_CODE, &code);
            curl_easy_getinfo(k->c, CURLINFO_TOTAL_TIME_T, &us);
            if (msg->data.result != CURLE_OK || code != 200) errors++;
            else if (n < cap) lat[n++] = (double)us / 1000.0;
            curl_multi_remove_handle(m, k->c);
            if (now_s() < end) {
                set_url(b, k);
                curl_multi_add_handle(m, k->c);
                running = 1;
            }
        }
        if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double elapsed = now_s() - t0;
    qsort(lat, n, sizeof *lat, cmp_double);
    double p50 = n ? lat[n / 2] : 0, p90 = n ? lat[n * 9 / 10] : 0;
    double p99 = n ? lat[n * 99 / 100] : 0, mx = n ? lat[n - 1] : 0;
    double rps = (double)n / elapsed;
    printf("| connections | seconds | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    printf("| %d | %.1f | %zu | %.0f | %.2f | %.2f | %.2f | %.2f | %ld |\n", b->conns, elapsed, n,
           rps, p50, p90, p99, mx, errors);
    if (b->json[0]) {
        FILE *f = fopen(b->json, "w");
        if (f) {
            fprintf(f, "{\"benchmark\":\"status_polling\",\"connections\":%d,\"seconds\":%.3f,"
                       "\"requests\":%zu,\"requests_per_s\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
                       "\"p99_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%ld}\n",
                    b->conns, elapsed, n, rps, p50, p90, p99, mx, errors);
            fclose(f);
        }
    }
    for (int i = 0; i < b->conns; i++) curl_easy_cleanup(cs[i].c);
    curl_multi_cleanup(m);
    free(cs);
    free(lat);
    return errors ? 1 : 0;
}

static void defaults(bench *b, const char *argv0)
{
    memset(b, 0, sizeof *b);
    b->conns = 50;
    b->seconds = 10;
    char self[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    self[k > 0 ? k : 0] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0; /* <build>/bench */
    snprintf(b->bitnetd, sizeof b->bitnetd, "%.4000s/../daemon/bitnetd", self);
    if (access(b->bitnetd, X_OK) != 0)
        snprintf(b->bitnetd, sizeof b->bitnetd, "%.4000s/../tests/service/bitnetd-fake", self);
    const char *data = getenv("BN_DATA_DIR");
    snprintf(b->model, sizeof b->model, "%.4000s/stories260K-hf", data ? data : "../shared/data");
    (void)argv0;
}

int main(int argc, char **argv)
{
    bench b;
    defaults(&b, argv[0]);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            printf("usage: poll_bench [--server URL --job ID] [--bitnetd PATH] [--model DIR]\n"
                   "                  [--connections N] [--seconds S] [--json FILE]\n");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "poll_bench: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--server")) snprintf(b.server, sizeof b.server, "%s", v);
        else if (!strcmp(a, "--job")) snprintf(b.job, sizeof b.job, "%s", v);
        else if (!strcmp(a, "--bitnetd")) snprintf(b.bitnetd, sizeof b.bitnetd, "%s", v);
        else if (!strcmp(a, "--model")) snprintf(b.model, sizeof b.model, "%s", v);
        else if (!strcmp(a, "--connections")) b.conns = atoi(v);
        else if (!strcmp(a, "--seconds")) b.seconds = atof(v);
        else if (!strcmp(a, "--json")) snprintf(b.json, sizeof b.json, "%s", v);
        else {
            fprintf(stderr, "poll_bench: unknown option %s\n", a);
            return 2;
        }
    }
    if (b.conns < 1 || b.seconds <= 0) return 2;
    char real[PATH_MAX];
    if (realpath(b.model, real)) snprintf(b.model, sizeof b.model, "%s", real);
    curl_global_init(CURL_GLOBAL_ALL);
    int rc = 1;
    if (!b.server[0] && start_daemon(&b)) goto out;
    if (!b.job[0] && submit_job(&b)) goto out;
    fprintf(stderr, "poll_bench: %s, job %s, %d connections, %.0f s\n", b.server, b.job,
            b.conns, b.seconds);
    rc = run(&b);
out:
    if (b.pid > 0) {
        kill(b.pid, SIGTERM);
        waitpid(b.pid, NULL, 0);
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf %s", b.tmp);
        if (system(cmd) != 0) fprintf(stderr, "poll_bench: could not remove %s\n", b.tmp);
    }
    curl_global_cleanup();
    return rc;
}
