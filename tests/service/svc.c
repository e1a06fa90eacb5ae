/* svc.c - see svc.h. */
#include "svc.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bn_test.h"

double svc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

char *svc_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    b[got] = 0;
    fclose(f);
    return b;
}

void svc_model(svc *s, const char *name, const char *config_json)
{
    char dir[4200], file[4300];
    snprintf(dir, sizeof dir, "%s/%s", s->models, name);
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/config.json", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs(config_json, f);
    fclose(f);
}

void svc_init(svc *s, const char *binary)
{
    memset(s, 0, sizeof *s);
    s->root = bn_test_tmpdir("svc");
    ck_assert_ptr_nonnull(s->root);
    snprintf(s->state, sizeof s->state, "%s/state", s->root);
    snprintf(s->models, sizeof s->models, "%s/models", s->root);
    snprintf(s->outputs, sizeof s->outputs, "%s/outputs", s->root);
    snprintf(s->log, sizeof s->log, "%s/bitnetd.log", s->root);
    mkdir(s->models, 0755);
    mkdir(s->outputs, 0755);
    snprintf(s->binary, sizeof s->binary, "%s", binary);
    svc_model(s, "tiny", "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, "
                         "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100}\n");
}

void svc_flag(svc *s, const char *flag)
{
    ck_assert_int_lt(s->n_extra, 16);
    snprintf(s->extra[s->n_extra++], sizeof s->extra[0], "%s", flag);
}

void svc_setenv(svc *s, const char *kv)
{
    ck_assert_int_lt(s->n_env, 4);
    snprintf(s->env[s->n_env++], sizeof s->env[0], "%s", kv);
}

/* The last `max` bytes of a daemon log read by svc_read_file (NULL: not there). */
static const char *log_tail(const char *log, size_t max)
{
    if (!log) return "(no log)";
    size_t n = strlen(log);
    return log + (n > max ? n - max : 0);
}

void svc_start(svc *s)
{
    char url_file[4200];
    snprintf(url_file, sizeof url_file, "%s/bitnetd.url", s->state);
    unlink(url_file);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        FILE *lf = freopen(s->log, "a", stderr);
        (void)lf;
        if (!freopen("/dev/null", "w", stdout)) _exit(126);
        for (int i = 0; i < s->n_env; i++) putenv(s->env[i]);
        char *argv[48];
        int k = 0;
        argv[k++] = (char *)s->binary;
        argv[k++] = "--listen";
        argv[k++] = "127.0.0.1:0";
        argv[k++] = "--state-dir";
        argv[k++] = s->state;
        argv[k++] = "--model-root";
        argv[k++] = s->models;
        argv[k++] = "--output-root";
        argv[k++] = s->outputs;
        argv[k++] = "--log-format";
        argv[k++] = "text";
        for (int i = 0; i < s->n_extra; i++) argv[k++] = s->extra[i];
        argv[k] = NULL;
        execv(s->binary, argv);
        _exit(127);
    }
    s->pid = pid;
    double t0 = svc_now();
    while (svc_now() - t0 < 20) {
        char *u = svc_read_file(url_file);
        if (u) {
            u[strcspn(u, "\n")] = 0;
            snprintf(s->url, sizeof s->url, "%s", u);
            free(u);
            return;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            char *log = svc_read_file(s->log);
            ck_abort_msg("bitnetd exited during start-up (status %d): %s", st, log_tail(log, 600));
        }
        sleep_ms(20);
    }
    ck_abort_msg("bitnetd did not write %s in time", url_file);
}

int svc_stop(svc *s, int sig)
{
    if (!s->pid) return -1;
    kill(s->pid, sig);
    int st = 0;
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (code != 0 && sig != SIGKILL) { /* show why, e.g. a sanitizer's report */
        char *log = svc_read_file(s->log);
        fprintf(stderr, "bitnetd exited with %d; end of its log:\n%s\n", code, log_tail(log, 4000));
        free(log);
    }
    return code;
}

void svc_cleanup(svc *s)
{
    if (s->pid) svc_stop(s, SIGKILL);
    bn_test_rmtree(s->root);
    free(s->root);
    s->root = NULL;
}

typedef struct sink {
    svc_resp *r;
} sink;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    svc_resp *r = ud;
    size_t k = size * n;
    char *g = realloc(r->body, r->len + k + 1);
    if (!g) return 0;
    memcpy(g + r->len, p, k);
    r->body = g;
    r->len += k;
    r->body[r->len] = 0;
    return k;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    svc_resp *r = ud;
    size_t k = size * n, have = strlen(r->headers);
    if (have + k < sizeof r->headers) {
        memcpy(r->headers + have, p, k);
        r->headers[have + k] = 0;
    }
    return k;
}

void svc_req(const svc *s, const char *method, const char *path, const char *body,
             const char *const *headers, svc_resp *r)
{
    memset(r, 0, sizeof *r);
    r->body = calloc(1, 1);
    CURL *c = curl_easy_init();
    char url[4096];
    snprintf(url, sizeof url, "%s%s", s->url, path);
    struct curl_slist *h = NULL;
    for (int i = 0; headers && headers[i]; i++) h = curl_slist_append(h, headers[i]);
    if (body && !(headers && strstr(headers[0] ? headers[0] : "", "Content-Type")))
        h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (strcmp(method, "HEAD") == 0) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    else r->status = -1;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

void svc_resp_free(svc_resp *r)
{
    free(r->body);
    r->body = NULL;
}

const char *svc_header(const svc_resp *r, const char *name)
{
    static char v[1024];
    size_t n = strlen(name);
    for (const char *p = r->headers; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *s = p + n + 1;
            while (*s == ' ') s++;
            size_t k = strcspn(s, "\r\n");
            snprintf(v, sizeof v, "%.*s", (int)k, s);
            return v;
        }
    }
    return NULL;
}

long svc_submit(const svc *s, const char *body, const char *idem_key, char id[64])
{
    char kh[300];
    const char *hdrs[3] = {"Content-Type: application/json", NULL, NULL};
    if (idem_key) {
        snprintf(kh, sizeof kh, "Idempotency-Key: %s", idem_key);
        hdrs[1] = kh;
    }
    svc_resp r;
    svc_req(s, "POST", "/v1/jobs", body, hdrs, &r);
    id[0] = 0;
    cJSON *j = cJSON_Parse(r.body);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "id");
    if (cJSON_IsString(v)) snprintf(id, 64, "%s", v->valuestring);
    cJSON_Delete(j);
    long st = r.status;
    svc_resp_free(&r);
    return st;
}

const char *svc_job_field(const svc *s, const char *id, const char *field)
{
    static char out[1024];
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    svc_resp r;
    svc_req(s, "GET", path, NULL, NULL, &r);
    out[0] = 0;
    cJSON *j = cJSON_Parse(r.body);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, field);
    if (cJSON_IsString(v)) snprintf(out, sizeof out, "%s", v->valuestring);
    else if (cJSON_IsNumber(v)) snprintf(out, sizeof out, "%g", v->valuedouble);
    cJSON_Delete(j);
    svc_resp_free(&r);
    return out;
}

const char *svc_wait(const svc *s, const char *id, double timeout_s)
{
    static char st[64];
    double t0 = svc_now();
    do {
        snprintf(st, sizeof st, "%s", svc_job_field(s, id, "status"));
        if (!strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "cancelled"))
            return st;
        sleep_ms(25);
    } while (svc_now() - t0 < timeout_s);
    return st;
}

bool svc_wait_stage(const svc *s, const char *id, const char *stage, double timeout_s)
{
    double t0 = svc_now();
    do {
        if (!strcmp(svc_job_field(s, id, "stage"), stage) &&
            !strcmp(svc_job_field(s, id, "status"), "running"))
            return true;
        sleep_ms(10);
    } while (svc_now() - t0 < timeout_s);
    return false;
}
