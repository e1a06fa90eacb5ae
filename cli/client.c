/* client.c - bitnetctl's daemon client commands (libcurl): submit, status, watch, list,
 * cancel, logs, artifacts, fetch, and `token new`.
 *
 * Every command takes --server URL (default $BITNETD_URL or http://127.0.0.1:8080),
 * a bearer token from $BITNETD_TOKEN or --token-file FILE, and --json (print the
 * server's JSON instead of tables). Problems from the server are printed as
 * "bitnetctl: <status> <title>: <detail> [field]".
 *
 * Exit codes (for scripts):
 *   0 ok (for --wait/watch: the job succeeded)     1 the job failed, or a server error
 *   2 usage error                                   3 cannot reach the daemon
 *   4 not found (404)                               5 request refused (other 4xx)
 *   6 the job was cancelled
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "base/checksum.h"

enum { CX_OK = 0, CX_FAILED = 1, CX_USAGE = 2, CX_CONNECT = 3, CX_NOTFOUND = 4, CX_REFUSED = 5,
       CX_CANCELLED = 6 };

typedef struct opts {
    char server[512];
    char token[1024];
    bool json, wait, follow, purge;
    const char *output, *config, *status, *idem, *out_file, *scope, *tracking;
    int limit, priority;
    bool has_priority;
    const char *pos[4];
    int npos;
} opts;

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char ctype[128];
} resp;

/* ---- options -------------------------------------------------------------------------- */

static int read_token_file(opts *o, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        bn_cli_errorf("--token-file %s: %s", path, strerror(errno));
        return -1;
    }
    if (!fgets(o->token, sizeof o->token, f)) o->token[0] = 0;
    fclose(f);
    o->token[strcspn(o->token, "\r\n")] = 0;
    return 0;
}

static bool takes_value(const char *name)
{
    static const char *const v[] = {"server", "token-file", "output", "config", "status",
        "limit", "priority", "idempotency-key", "o", "scope", "tracking"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (strcmp(name, v[i]) == 0) return true;
    return false;
}

static int parse_opts(int argc, char **argv, opts *o, int min_pos, int max_pos, const char *usage)
{
    memset(o, 0, sizeof *o);
    const char *env = getenv("BITNETD_URL");
    snprintf(o->server, sizeof o->server, "%s", env && *env ? env : "http://127.0.0.1:8080");
    const char *tok = getenv("BITNETD_TOKEN");
    if (tok) snprintf(o->token, sizeof o->token, "%s", tok);
    o->limit = 50;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: bitnetctl %s\n", usage);
            return 1;
        }
        if (a[0] != '-' || a[1] == 0) {
            if (o->npos >= 4) goto bad;
            o->pos[o->npos++] = a;
            continue;
        }
        const char *name = a[1] == '-' ? a + 2 : a + 1;
        const char *val = NULL;
        if (takes_value(name)) {
            if (i + 1 >= argc) {
                bn_cli_errorf("%s needs a value", a);
                return -1;
            }
            val = argv[++i];
        }
        if (!strcmp(name, "json")) o->json = true;
        else if (!strcmp(name, "wait")) o->wait = true;
        else if (!strcmp(name, "follow") || !strcmp(name, "f")) o->follow = true;
        else if (!strcmp(name, "purge")) o->purge = true;
        else if (!strcmp(name, "server")) snprintf(o->server, sizeof o->server, "%s", val);
        else if (!strcmp(name, "token-file")) { if (read_token_file(o, val)) return -1; }
        else if (!strcmp(name, "output")) o->output = val;
        else if (!strcmp(name, "config")) o->config = val;
        else if (!strcmp(name, "tracking")) o->tracking = val;
        else if (!strcmp(name, "status")) o->status = val;
        else if (!strcmp(name, "idempotency-key")) o->idem = val;
        else if (!strcmp(name, "o")) o->out_file = val;
        else if (!strcmp(name, "scope")) o->scope = val;
        else if (!strcmp(name, "limit")) o->limit = atoi(val);
        else if (!strcmp(name, "priority")) {
            o->priority = atoi(val);
            o->has_priority = true;
        } else {
            bn_cli_errorf("unknown option %s", a);
            goto bad;
        }
    }
    size_t n = strlen(o->server);
    while (n && o->server[n - 1] == '/') o->server[--n] = 0;
    if (o->npos >= min_pos && o->npos <= max_pos) return 0;
bad:
    fprintf(stderr, "usage: bitnetctl %s\n", usage);
    return -1;
}

/* ---- HTTP ------------------------------------------------------------------------------ */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    resp *r = ud;
    size_t k = size * n;
    char *g = realloc(r->body, r->len + k + 1);
    if (!g) return 0;
    memcpy(g + r->len, p, k);
    r->body = g;
    r->len += k;
    r->body[r->len] = 0;
    return k;
}

/* Returns 0 with r filled, or CX_CONNECT after printing why. */
static int http(const opts *o, const char *method, const char *path, const char *body,
                const char *idem, resp *r)
{
    memset(r, 0, sizeof *r);
    r->body = calloc(1, 1);
    CURL *c = curl_easy_init();
    if (!c || !r->body) {
        bn_cli_errorf("out of memory");
        return CX_FAILED;
    }
    char url[2048], auth[1100], key[300];
    snprintf(url, sizeof url, "%s%s", o->server, path);
    struct curl_slist *h = NULL;
    if (o->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->token);
        h = curl_slist_append(h, auth);
    }
    if (body) h = curl_slist_append(h, "Content-Type: application/json");
    if (idem) {
        snprintf(key, sizeof key, "Idempotency-Key: %s", idem);
        h = curl_slist_append(h, key);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    else if (!strcmp(method, "POST")) curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    int ret = CX_OK;
    if (cc != CURLE_OK) {
        bn_cli_errorf("cannot reach %s: %s", o->server, curl_easy_strerror(cc));
        ret = CX_CONNECT;
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        if (ct) snprintf(r->ctype, sizeof r->ctype, "%s", ct);
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return ret;
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* Prints a problem (or raw body with --json) and maps the status to an exit code. */
static int fail_status(const opts *o, const resp *r)
{
    if (o->json) {
        printf("%s\n", r->body);
    } else {
        cJSON *p = cJSON_Parse(r->body);
        cJSON *title = cJSON_GetObjectItemCaseSensitive(p, "title");
        cJSON *detail = cJSON_GetObjectItemCaseSensitive(p, "detail");
        cJSON *field = cJSON_GetObjectItemCaseSensitive(p, "field");
        if (cJSON_IsString(detail))
            bn_cli_errorf("%ld %s: %s%s%s%s", r->status,
                          cJSON_IsString(title) ? title->valuestring : "",
                          detail->valuestring, cJSON_IsString(field) ? " [" : "",
                          cJSON_IsString(field) ? field->valuestring : "",
                          cJSON_IsString(field) ? "]" : "");
        else
            bn_cli_errorf("HTTP %ld", r->status);
        cJSON_Delete(p);
    }
    if (r->status == 404) return CX_NOTFOUND;
    if (r->status >= 400 && r->status < 500) return CX_REFUSED;
    return CX_FAILED;
}

/* GET path into a parsed JSON object; returns exit code on failure. */
static int get_json(const opts *o, const char *path, cJSON **out)
{
    resp r;
    *out = NULL;
    int rc = http(o, "GET", path, NULL, NULL, &r);
    if (rc) {
        resp_free(&r);
        return rc;
    }
    if (r.status != 200) {
        rc = fail_status(o, &r);
        resp_free(&r);
        return rc;
    }
    *out = cJSON_Parse(r.body);
    resp_free(&r);
    if (!*out) {
        bn_cli_errorf("the server's answer to %s is not JSON", path);
        return CX_FAILED;
    }
    return CX_OK;
}

static void print_json(const cJSON *j)
{
    char *t = cJSON_Print(j);
    if (t) printf("%s\n", t);
    free(t);
}

static const char *jstr(const cJSON *o, const char *k, const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

static double jnum(const cJSON *o, const char *k, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static int status_exit(const char *status)
{
    if (!strcmp(status, "succeeded")) return CX_OK;
    if (!strcmp(status, "cancelled")) return CX_CANCELLED;
    return CX_FAILED;
}

static bool is_final(const char *s)
{
    return !strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled");
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- watch ------------------------------------------------------------------------------ */

static void draw_stages(const cJSON *job, bool tty, int *drawn, char *last_line, size_t cap)
{
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(job, "stages");
    if (tty && *drawn) fprintf(stderr, "\033[%dA", *drawn);
    int n = 0;
    const cJSON *s;
    char summary[256] = "";
    cJSON_ArrayForEach(s, stages) {
        double p = jnum(s, "progress", 0);
        const char *state = jstr(s, "state", "pending");
        int filled = (int)lround(p * 30);
        char bar[32];
        for (int i = 0; i < 30; i++) bar[i] = i < filled ? '#' : '-';
        bar[30] = 0;
        double secs = jnum(s, "seconds", -1);
        char t[32] = "";
        if (secs >= 0) snprintf(t, sizeof t, "%8.1fs", secs);
        if (tty)
            fprintf(stderr, "\033[2K%-10s [%s] %3.0f%% %-11s %s\n", jstr(s, "name", "?"), bar,
                    p * 100, state, t);
        if (!strcmp(state, "running"))
            snprintf(summary, sizeof summary, "%s %.0f%%", jstr(s, "name", "?"), p * 100);
        n++;
    }
    char line[512];
    const cJSON *eta = cJSON_GetObjectItemCaseSensitive(job, "eta_seconds");
    char etas[32] = "";
    if (cJSON_IsNumber(eta)) snprintf(etas, sizeof etas, ", eta %.0fs", eta->valuedouble);
    snprintf(line, sizeof line, "%s: %s %s (overall %.0f%%%s)", jstr(job, "id", "?"),
             jstr(job, "status", "?"), summary, jnum(job, "progress", 0) * 100, etas);
    if (tty) {
        fprintf(stderr, "\033[2K%s\n", line);
        n++;
        *drawn = n;
    } else if (strcmp(line, last_line) != 0) {
        fprintf(stderr, "%s\n", line);
        snprintf(last_line, cap, "%s", line);
    }
}

static void print_metrics(const opts *o, const char *id)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/metrics", id);
    cJSON *m;
    if (get_json(o, path, &m)) return;
    const cJSON *it;
    printf("%-44s %s\n", "metric", "value");
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(m, "metrics"))
        printf("%-44s %.6g\n", it->string, it->valuedouble);
    cJSON_Delete(m);
}

static int watch(const opts *o, const char *id, bool bars)
{
    char path[256], last[512] = "";
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    bool tty = bars && bn_cli_tty();
    int drawn = 0, fails = 0;
    for (;;) {
        cJSON *job;
        int rc = get_json(o, path, &job);
        if (rc == CX_CONNECT && ++fails < 30) { /* the daemon may be restarting */
            sleep_ms(1000);
            continue;
        }
        if (rc) return rc;
        fails = 0;
        if (!o->json && bars) draw_stages(job, tty, &drawn, last, sizeof last);
        const char *st = jstr(job, "status", "");
        if (is_final(st)) {
            int x = status_exit(st);
            if (o->json) print_json(job);
            else {
                if (x != CX_OK)
                    bn_cli_errorf("job %s %s: %s", id, st, jstr(job, "error", "(no reason)"));
                else
                    printf("job %s succeeded: %s\n", id, jstr(job, "output_dir", ""));
                print_metrics(o, id);
            }
            cJSON_Delete(job);
            return x;
        }
        cJSON_Delete(job);
        sleep_ms(500);
    }
}

/* ---- commands ----------------------------------------------------------------------------- */

static cJSON *load_config(const char *arg)
{
    struct stat sb;
    char *text = NULL;
    if (stat(arg, &sb) == 0 && S_ISREG(sb.st_mode)) {
        FILE *f = fopen(arg, "r");
        if (!f) return NULL;
        text = calloc(1, (size_t)sb.st_size + 1);
        if (text && fread(text, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) text[0] = 0;
        fclose(f);
    }
    cJSON *j = cJSON_Parse(text ? text : arg);
    free(text);
    return j;
}

static void random_key(char *out, size_t len)
{
    uint8_t b[12] = {0};
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) b[0] = (uint8_t)time(NULL);
    size_t k = (size_t)snprintf(out, len, "cli-");
    for (size_t i = 0; i < sizeof b && k + 2 < len; i++)
        k += (size_t)snprintf(out + k, len - k, "%02x", b[i]);
}

int bn_cli_submit(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o, 1, 1, "submit MODEL [--output NAME] [--config FILE|JSON] "
                        "[--tracking JSON] [--priority N] [--idempotency-key K] [--wait] [--json]");
    if (rc) return rc < 0 ? CX_USAGE : CX_OK;
    cJSON *body = cJSON_CreateObject();
    char real[PATH_MAX];
    struct stat sb;
    const char *model = o.pos[0];
    if (stat(model, &sb) == 0 && S_ISDIR(sb.st_mode) && realpath(model, real)) model = real;
    cJSON_AddStringToObject(body, "model", model);
    if (o.output) cJSON_AddStringToObject(body, "output", o.output);
    if (o.has_priority) cJSON_AddNumberToObject(body, "priority", o.priority);
    if (o.config) {
        cJSON *cfg = load_config(o.config);
        if (!cfg) {
            bn_cli_errorf("--config: %s is neither a JSON file nor JSON text", o.config);
            cJSON_Delete(body);
            return CX_USAGE;
        }
        cJSON_AddItemToObject(body, "config", cfg);
    }
    if (o.tracking) {
        cJSON *t = load_config(o.tracking);
        if (!t) {
            bn_cli_errorf("--tracking: not JSON");
            cJSON_Delete(body);
            return CX_USAGE;
        }
        cJSON_AddItemToObject(body, "tracking", t);
    }
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    char key[64];
    if (!o.idem) random_key(key, sizeof key);
    resp r;
    /* one retry with the same Idempotency-Key: safe even if the first one landed */
    rc = http(&o, "POST", "/v1/jobs", text, o.idem ? o.idem : key, &r);
    if (rc == CX_CONNECT) {
        resp_free(&r);
        sleep_ms(1000);
        rc = http(&o, "POST", "/v1/jobs", text, o.idem ? o.idem : key, &r);
    }
    free(text);
    if (rc) {
        resp_free(&r);
        return rc;
    }
    if (r.status != 201 && r.status != 200) {
        rc = fail_status(&o, &r);
        resp_free(&r);
        return rc;
    }
    cJSON *job = cJSON_Parse(r.body);
    resp_free(&r);
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(job, "id", ""));
    if (o.json && !o.wait) print_json(job);
    else if (!o.json) printf("%s\n", id);
    fflush(stdout);
    cJSON_Delete(job);
    return o.wait ? watch(&o, id, bn_cli_tty()) : CX_OK;
}

/* GET path and print the answer: as JSON with --json, else through human(). */
static int show(const opts *o, const char *path, void (*human)(const cJSON *))
{
    cJSON *j;
    int rc = get_json(o, path, &j);
    if (rc) return rc;
    if (o->json) print_json(j);
    else human(j);
    cJSON_Delete(j);
    return CX_OK;
}

static void print_job(const cJSON *job)
{
    printf("id        %s\nstatus    %s\nmodel     %s\noutput    %s\n", jstr(job, "id", ""),
           jstr(job, "status", ""), jstr(job, "model", ""), jstr(job, "output_dir", ""));
    printf("stage     %s (%.0f%%), overall %.0f%%\n", jstr(job, "stage", "-"),
           jnum(job, "stage_progress", 0) * 100, jnum(job, "progress", 0) * 100);
    const cJSON *eta = cJSON_GetObjectItemCaseSensitive(job, "eta_seconds");
    if (cJSON_IsNumber(eta)) printf("eta       %.0f s\n", eta->valuedouble);
    printf("created   %s\n", jstr(job, "created_at", "-"));
    printf("finished  %s\n", jstr(job, "finished_at", "-"));
    if (jstr(job, "error", NULL)) printf("error     %s\n", jstr(job, "error", ""));
}

int bn_cli_status(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o, 1, 1, "status ID [--json]");
    if (rc) return rc < 0 ? CX_USAGE : CX_OK;
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s", o.pos[0]);
    return show(&o, path, print_job);
}

int bn_cli_watch(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o, 1, 1, "watch ID [--json]");
    if (rc) return rc < 0 ? CX_USAGE : CX_OK;
    return watch(&o, o.pos[0], true);
}

static void print_jobs(const cJSON *j)
{
    printf("%-21s %-10s %-10s %5s  %-24s %s\n", "ID", "STATUS", "STAGE", "PROG", "CREATED", "OUTPUT");
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "jobs"))
        printf("%-21s %-10s %-10s %4.0f%%  %-24s %s\n", jstr(it, "id", ""), jstr(it, "status", ""),
               jstr(it, "stage", "-"), jnum(it, "progress", 0) * 100, jstr(it, "created_at", ""),
               jstr(it, "output", ""));
}

int bn_cli_list(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o, 0, 0, "list [--status S] [--limit N] [--json]");
    if (rc) return rc < 0 ? CX_USAGE : CX_OK;
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs?limit=%d%s%s", o.limit > 0 ? o.limit : 50,
             o.status ? "&status=" : "", o.status ? o.status : "");
    return show(&o, path, print_jobs);
}

int bn_cli_cancel(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o, 1, 1, "cancel ID [--json]");
    if (rc) return rc < 0 ? CX_USAGE : CX_OK;
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", o.pos[0]);
    resp r;
    if ((rc = http(&o, "POST", path, NULL, NULL, &r))) {
        resp_free(&r);
        return rc;
    }
    if (r.status == 200 || r.status == 202) {
        if (o.json) printf("%s\n", r.body);
        else printf("%s: %s\n", o.pos[0], r.status == 200 ? "cancelled" : "cancel requested");
        rc = CX_OK;
    } else {
        rc = fail_status(&o, &r);
    }
    resp_free(&r);
    return rc;
}

static int64_t print_events(const opts *o, const cJSON *j)
{
    int64_t last = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "events")) {
        if (o->json) {
            char *t = cJSON_PrintUnformatted(e);
            printf("%s\n", t ? t : "{}");
            free(t);
        } else {
            printf("%s %-5s %-10s %-16s %s\n", jstr(e, "ts", ""), jstr(e, "level", ""),
                   jstr(e, "stage", "-"), jstr(e, "host", "-"), jstr(e, "message", ""));
        }
        last = (int64_t)jnum(e, "seq", (double)last);
    }
    fflush(stdout);
    return last;
}

int bn_cli_logs(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o, 1, 1, "logs ID [--follow] [--json]");
    if (rc) return rc < 0 ? CX_USAGE : CX_OK;
    int64_t after = 0;
    for (;;) {
        char path[256];
        snprintf(path, sizeof path, "/v1/jobs/%s/events?after=%lld", o.pos[0], (long long)after);
        cJSON *j;
        if ((rc = get_json(&o, path, &j))) return rc;
        int64_t last = print_events(&o, j);
        cJSON_Delete(j);
        if (last > after) after = last;
        if (!o.follow) return CX_OK;
        snprintf(path, sizeof path, "/v1/jobs/%s", o.pos[0]);
        cJSON *job;
        if ((rc = get_json(&o, path, &job))) return rc;
        bool done = is_final(jstr(job, "status", ""));
        cJSON_Delete(job);
        if (done && last < 0) return CX_OK;
        if (!done) sleep_ms(1000);
    }
}

static void print_artifacts(const cJSON *j)
{
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(j, "artifacts"))
        printf("%14.0f  %s\n", jnum(a, "size", 0), jstr(a, "path", ""));
}

int bn_cli_artifacts(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o, 1, 1, "artifacts ID [--json]");
    if (rc) return rc < 0 ? CX_USAGE : CX_OK;
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifacts", o.pos[0]);
    return show(&o, path, print_artifacts);
}

static size_t on_file(char *p, size_t size, size_t n, void *ud)
{
    return fwrite(p, size, n, ud) * size;
}

int bn_cli_fetch(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o, 2, 2, "fetch ID PATH [-o FILE]");
    if (rc) return rc < 0 ? CX_USAGE : CX_OK;
    const char *base = strrchr(o.pos[1], '/');
    const char *dest = o.out_file ? o.out_file : base ? base + 1 : o.pos[1];
    char tmp[PATH_MAX], url[2048], auth[1100];
    snprintf(tmp, sizeof tmp, "%s.download", dest);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        bn_cli_errorf("%s: %s", tmp, strerror(errno));
        return CX_FAILED;
    }
    snprintf(url, sizeof url, "%s/v1/jobs/%s/artifacts/%s", o.server, o.pos[0], o.pos[1]);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    if (o.token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", o.token);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_file);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    bool ok = fclose(f) == 0 && cc == CURLE_OK && status == 200;
    if (!ok) {
        if (cc != CURLE_OK) {
            bn_cli_errorf("cannot reach %s: %s", o.server, curl_easy_strerror(cc));
            unlink(tmp);
            return CX_CONNECT;
        }
        resp r = {.status = status};
        FILE *ef = fopen(tmp, "r");
        char buf[4096] = "";
        if (ef) {
            size_t n = fread(buf, 1, sizeof buf - 1, ef);
            buf[n] = 0;
            fclose(ef);
        }
        unlink(tmp);
        r.body = buf;
        return status ? fail_status(&o, &r) : CX_FAILED;
    }
    if (rename(tmp, dest) != 0) {
        bn_cli_errorf("rename %s: %s", dest, strerror(errno));
        return CX_FAILED;
    }
    if (!o.json) fprintf(stderr, "saved %s\n", dest);
    else printf("{\"path\":\"%s\"}\n", dest);
    return CX_OK;
}

int bn_cli_token(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o, 2, 2, "token new NAME [--scope read|submit|admin]");
    if (rc) return rc < 0 ? CX_USAGE : CX_OK;
    const char *scope = o.scope ? o.scope : "read";
    if (strcmp(o.pos[0], "new") != 0) {
        bn_cli_errorf("token: unknown subcommand '%s' (new)", o.pos[0]);
        return CX_USAGE;
    }
    if (strcmp(scope, "read") && strcmp(scope, "submit") && strcmp(scope, "admin")) {
        bn_cli_errorf("token: --scope must be read, submit or admin");
        return CX_USAGE;
    }
    for (const char *p = o.pos[1]; *p; p++)
        if (*p <= ' ' || *p == '#') {
            bn_cli_errorf("token: NAME must not contain spaces or '#'");
            return CX_USAGE;
        }
    uint8_t b[32];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        bn_cli_errorf("token: no randomness available");
        return CX_FAILED;
    }
    char token[80], hex[65];
    size_t k = (size_t)snprintf(token, sizeof token, "bnt_");
    for (size_t i = 0; i < sizeof b; i++) k += (size_t)snprintf(token + k, sizeof token - k, "%02x", b[i]);
    if (bn_sha256_hex(token, strlen(token), hex)) {
        bn_cli_errorf("token: SHA-256 failed");
        return CX_FAILED;
    }
    if (o.json) printf("{\"token\":\"%s\",\"line\":\"%s %s %s\"}\n", token, o.pos[1], scope, hex);
    else printf("%s\n%s %s %s\n", token, o.pos[1], scope, hex);
    return CX_OK;
}
