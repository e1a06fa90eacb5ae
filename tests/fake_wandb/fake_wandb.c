/* fake_wandb.c - see fake_wandb.h.
 *
 * Design: one libmicrohttpd daemon (a thread per connection, so an injected delay
 * stalls only its own request) in front of a state guarded by one mutex. Each request
 * is buffered whole, then handled under the lock: logged, checked for credentials,
 * possibly answered by a fault, otherwise applied to the run it names. "Down" stops the
 * daemon and later starts a new one on the same port; the state lives on.
 */
#include "fake_wandb.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (64u << 20)

typedef struct lines {
    char **v; /* v[i] == NULL: a hole */
    int64_t n, cap;
} lines;

typedef struct run {
    char *entity, *project, *name, *id, *display_name;
    int upserts;
    cJSON *upsert_vars; /* array */
    bool config_is_string, config_wrapped;
    cJSON *config;
    lines history;
    char *summary;
    int gaps, conflicts, rewrites, summary_writes, fs_requests, heartbeats;
    int complete_requests, completes, after_complete, exitcode;
    bool completed;
} run;

typedef struct canned {
    char target[16];
    int status, retry_after_s, n;
    bool apply_first;
    char *body;
} canned;

struct fake_wandb {
    pthread_mutex_t mu;
    struct MHD_Daemon *d;
    uint16_t port;
    char url[64];
    char *api_key;
    fake_wandb_faults faults;
    uint64_t rng;
    run *runs;
    int n_runs;
    canned *queue;
    int n_queue;
    cJSON *log;
    int requests, graphql_requests, fs_requests, faults_injected, fs_before_upsert, key_leaks;
    int64_t t0_ms;
};

typedef struct conn_buf {
    char *p;
    size_t len;
    bool too_big;
} conn_buf;

typedef struct answer {
    int status;           /* 0: drop the connection */
    char *body;           /* malloc'd */
    int retry_after_s;    /* > 0: Retry-After header */
} answer;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t next_rand(fake_wandb *fw)
{
    uint64_t x = fw->rng ? fw->rng : 0x2545f4914f6cdd1dull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return fw->rng = x;
}

/* ---- small helpers -------------------------------------------------------------------- */

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static char *base64(const char *s)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s);
    char *o = malloc(4 * ((n + 2) / 3) + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)s[i] << 16;
        if (i + 1 < n) v |= (uint32_t)(unsigned char)s[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)s[i + 2];
        o[j++] = tbl[(v >> 18) & 63];
        o[j++] = tbl[(v >> 12) & 63];
        o[j++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        o[j++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    o[j] = '\0';
    return o;
}

static char *json_error(const char *msg)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *errs = cJSON_AddArrayToObject(j, "errors");
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddItemToArray(errs, e);
    cJSON_AddNullToObject(j, "data");
    char *t = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return t;
}

static answer make_answer(int status, char *body)
{
    return (answer){ .status = status, .body = body };
}

static void lines_set(lines *l, int64_t off, const char *line)
{
    if (off >= l->cap) {
        int64_t cap = l->cap ? l->cap : 64;
        while (cap <= off) cap *= 2;
        char **nv = realloc(l->v, (size_t)cap * sizeof *nv);
        if (!nv) return;
        memset(nv + l->cap, 0, (size_t)(cap - l->cap) * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    free(l->v[off]);
    l->v[off] = strdup(line);
    if (off + 1 > l->n) l->n = off + 1;
}

static void run_free(run *r)
{
    free(r->entity);
    free(r->project);
    free(r->name);
    free(r->id);
    free(r->display_name);
    cJSON_Delete(r->upsert_vars);
    cJSON_Delete(r->config);
    for (int64_t i = 0; i < r->history.n; i++) free(r->history.v[i]);
    free(r->history.v);
    free(r->summary);
}

static run *find_run(fake_wandb *fw, const char *e, const char *p, const char *n)
{
    for (int i = 0; i < fw->n_runs; i++) {
        run *r = &fw->runs[i];
        if (!strcmp(r->entity, e) && !strcmp(r->project, p) && !strcmp(r->name, n)) return r;
    }
    return NULL;
}

/* ---- GraphQL ---------------------------------------------------------------------------- */

static void check_config(run *r, const cJSON *cfg)
{
    cJSON_Delete(r->config);
    r->config = NULL;
    r->config_is_string = cJSON_IsString(cfg);
    r->config_wrapped = false;
    if (!r->config_is_string) return;
    r->config = cJSON_Parse(cfg->valuestring);
    if (!cJSON_IsObject(r->config)) return;
    r->config_wrapped = true;
    for (cJSON *it = r->config->child; it; it = it->next)
        if (!cJSON_IsObject(it) || !cJSON_GetObjectItemCaseSensitive(it, "value"))
            r->config_wrapped = false;
}

static answer upsert_bucket(fake_wandb *fw, const cJSON *vars)
{
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(vars, "name");
    const cJSON *je = cJSON_GetObjectItemCaseSensitive(vars, "entity");
    const cJSON *jp = cJSON_GetObjectItemCaseSensitive(vars, "project");
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(vars, "displayName");
    char gen[16];
    snprintf(gen, sizeof gen, "r%07llx", (unsigned long long)(next_rand(fw) & 0xfffffff));
    const char *name = cJSON_IsString(jn) ? jn->valuestring : gen;
    const char *entity = cJSON_IsString(je) ? je->valuestring : "fake-entity";
    const char *project = cJSON_IsString(jp) ? jp->valuestring : "uncategorized";
    run *r = find_run(fw, entity, project, name);
    bool inserted = !r;
    if (!r) {
        run *nr = realloc(fw->runs, (size_t)(fw->n_runs + 1) * sizeof *nr);
        if (!nr) return make_answer(500, json_error("fake: out of memory"));
        fw->runs = nr;
        r = &fw->runs[fw->n_runs++];
        memset(r, 0, sizeof *r);
        r->entity = strdup(entity);
        r->project = strdup(project);
        r->name = strdup(name);
        char raw[512];
        snprintf(raw, sizeof raw, "Run:v1:%s:%s:%s", name, project, entity);
        r->id = base64(raw);
        r->upsert_vars = cJSON_CreateArray();
        r->exitcode = -1;
    }
    r->upserts++;
    cJSON_AddItemToArray(r->upsert_vars, cJSON_Duplicate(vars, 1));
    if (cJSON_IsString(jd)) {
        free(r->display_name);
        r->display_name = strdup(jd->valuestring);
    } else if (!r->display_name) {
        char dn[32];
        snprintf(dn, sizeof dn, "fake-run-%d", fw->n_runs);
        r->display_name = strdup(dn);
    }
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(vars, "config");
    if (cfg && !cJSON_IsNull(cfg)) check_config(r, cfg);

    cJSON *rep = cJSON_CreateObject();
    cJSON *ub = cJSON_AddObjectToObject(cJSON_AddObjectToObject(rep, "data"), "upsertBucket");
    cJSON_AddBoolToObject(ub, "inserted", inserted);
    cJSON *b = cJSON_AddObjectToObject(ub, "bucket");
    cJSON_AddStringToObject(b, "id", r->id);
    cJSON_AddStringToObject(b, "name", r->name);
    cJSON_AddStringToObject(b, "displayName", r->display_name);
    cJSON_AddNullToObject(b, "description");
    if (cJSON_IsString(cfg)) cJSON_AddStringToObject(b, "config", cfg->valuestring);
    else cJSON_AddStringToObject(b, "config", "{}");
    cJSON_AddNullToObject(b, "sweepName");
    cJSON_AddNumberToObject(b, "historyLineCount", (double)r->history.n);
    cJSON *p = cJSON_AddObjectToObject(b, "project");
    char raw[512];
    snprintf(raw, sizeof raw, "Project:v1:%s:%s", project, entity);
    char *pid = base64(raw);
    cJSON_AddStringToObject(p, "id", pid ? pid : "");
    free(pid);
    cJSON_AddStringToObject(p, "name", r->project);
    cJSON *e = cJSON_AddObjectToObject(p, "entity");
    cJSON_AddStringToObject(e, "id", "RW50aXR5OjE=");
    cJSON_AddStringToObject(e, "name", r->entity);
    char *t = cJSON_PrintUnformatted(rep);
    cJSON_Delete(rep);
    return make_answer(200, t);
}

static answer graphql(fake_wandb *fw, const char *body)
{
    cJSON *j = cJSON_Parse(body);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return make_answer(400, json_error("fake: body is not a JSON object"));
    }
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "operationName");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "query");
    const char *ops = cJSON_IsString(op) ? op->valuestring : "";
    const char *qs = cJSON_IsString(q) ? q->valuestring : "";
    answer a;
    if (!strcmp(ops, "UpsertBucket") || strstr(qs, "mutation UpsertBucket")) {
        const cJSON *vars = cJSON_GetObjectItemCaseSensitive(j, "variables");
        if (cJSON_IsObject(vars)) a = upsert_bucket(fw, vars);
        else a = make_answer(400, json_error("fake: UpsertBucket without variables"));
    } else if (!strcmp(ops, "Viewer") || strstr(qs, "query Viewer")) {
        a = make_answer(200, strdup("{\"data\":{\"viewer\":{\"id\":\"VXNlcjox\","
                                    "\"entity\":\"fake-entity\",\"username\":\"fake-user\"}}}"));
    } else {
        a = make_answer(200, json_error("fake: unsupported op"));
    }
    cJSON_Delete(j);
    return a;
}

/* ---- file_stream -------------------------------------------------------------------------- */

static bool apply_history(run *r, const cJSON *f)
{
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(f, "offset");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(f, "content");
    if (!cJSON_IsNumber(off) || !cJSON_IsArray(content)) return false;
    int64_t o = (int64_t)off->valuedouble;
    bool new_data = false;
    if (o > r->history.n) r->gaps++;
    int i = 0;
    for (const cJSON *c = content->child; c; c = c->next, i++) {
        if (!cJSON_IsString(c)) continue;
        int64_t at = o + i;
        const char *old = at < r->history.n ? r->history.v[at] : NULL;
        if (old && !strcmp(old, c->valuestring)) {
            r->rewrites++;
            continue;
        }
        if (old) r->conflicts++;
        new_data = true;
        lines_set(&r->history, at, c->valuestring);
    }
    return new_data;
}

static bool apply_summary(run *r, const cJSON *f)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(f, "content");
    const cJSON *last = NULL;
    for (const cJSON *c = cJSON_IsArray(content) ? content->child : NULL; c; c = c->next)
        if (cJSON_IsString(c)) last = c;
    if (!last) return false;
    r->summary_writes++;
    if (r->summary && !strcmp(r->summary, last->valuestring)) return false;
    free(r->summary);
    r->summary = strdup(last->valuestring);
    return true;
}

/* Applies a file_stream body to its run (the caller has checked that the run exists). */
static void apply_file_stream(run *r, const cJSON *j)
{
    r->fs_requests++;
    bool new_data = false, any_file = false;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(j, "files");
    for (const cJSON *f = cJSON_IsObject(files) ? files->child : NULL; f; f = f->next) {
        any_file = true;
        if (!strcmp(f->string, "wandb-history.jsonl")) new_data |= apply_history(r, f);
        else if (!strcmp(f->string, "wandb-summary.json")) new_data |= apply_summary(r, f);
        else new_data = true; /* other files: accepted, not modelled */
    }
    bool complete = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "complete"));
    const cJSON *ec = cJSON_GetObjectItemCaseSensitive(j, "exitcode");
    int exitcode = cJSON_IsNumber(ec) ? ec->valueint : 0;
    if (r->completed) {
        if (complete && !new_data && exitcode == r->exitcode) r->complete_requests++;
        else r->after_complete++;
        return;
    }
    if (!any_file && !complete) r->heartbeats++;
    if (complete) {
        r->completed = true;
        r->completes++;
        r->complete_requests++;
        r->exitcode = exitcode;
    }
}

static char *url_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n) {
            char hex[3] = { s[i + 1], s[i + 2], 0 };
            o[j++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            o[j++] = s[i];
        }
    }
    o[j] = '\0';
    return o;
}

/* "/files/E/P/R/file_stream" -> E, P, R (malloc'd). */
static bool parse_fs_path(const char *url, char *seg[3])
{
    if (strncmp(url, "/files/", 7)) return false;
    const char *p = url + 7;
    for (int i = 0; i < 3; i++) {
        const char *s = strchr(p, '/');
        if (!s || s == p) {
            for (int k = 0; k < i; k++) free(seg[k]);
            return false;
        }
        seg[i] = url_decode(p, (size_t)(s - p));
        p = s + 1;
    }
    if (strcmp(p, "file_stream")) {
        for (int k = 0; k < 3; k++) free(seg[k]);
        return false;
    }
    return true;
}

/* ---- faults ---------------------------------------------------------------------------- */

static answer fault_status(fake_wandb *fw, int status)
{
    char msg[64];
    snprintf(msg, sizeof msg, "fake: injected %d", status);
    answer a = make_answer(status, json_error(msg));
    if (status == 429) a.retry_after_s = fw->faults.retry_after_s > 0 ? fw->faults.retry_after_s : 1;
    fw->faults_injected++;
    return a;
}

static bool pop_canned(fake_wandb *fw, const char *target, canned *out)
{
    for (int i = 0; i < fw->n_queue; i++) {
        canned *c = &fw->queue[i];
        if (strcmp(c->target, target)) continue;
        *out = *c;
        out->body = xstrdup(c->body);
        if (--c->n <= 0) {
            free(c->body);
            memmove(c, c + 1, (size_t)(fw->n_queue - i - 1) * sizeof *c);
            fw->n_queue--;
        }
        return true;
    }
    return false;
}

/* ---- request handling ----------------------------------------------------------------- */

/* Applies a file_stream request; returns the normal answer. */
static answer file_stream(fake_wandb *fw, const char *url, const cJSON *j)
{
    char *seg[3];
    if (!parse_fs_path(url, seg)) return make_answer(404, json_error("fake: bad file_stream path"));
    run *r = find_run(fw, seg[0], seg[1], seg[2]);
    for (int i = 0; i < 3; i++) free(seg[i]);
    if (!r) {
        fw->fs_before_upsert++;
        return make_answer(404, strdup("{\"error\":\"run not found\"}"));
    }
    apply_file_stream(r, j);
    return make_answer(200, strdup("{\"exitcode\":null,\"limits\":{}}"));
}

static bool auth_ok(fake_wandb *fw, struct MHD_Connection *c)
{
    char *pass = NULL;
    char *user = MHD_basic_auth_get_username_password(c, &pass);
    bool ok = user && !strcmp(user, "api") && pass &&
              (!fw->api_key || !strcmp(pass, fw->api_key));
    if (user) MHD_free(user);
    if (pass) MHD_free(pass);
    return ok;
}

static answer handle_api(fake_wandb *fw, struct MHD_Connection *c, const char *method,
                         const char *url, const char *body, int64_t *log_i)
{
    bool is_graphql = !strcmp(url, "/graphql");
    bool is_fs = !strncmp(url, "/files/", 7);
    fw->requests++;
    if (is_graphql) fw->graphql_requests++;
    if (is_fs) fw->fs_requests++;
    if (fw->api_key && *fw->api_key && strstr(body, fw->api_key)) fw->key_leaks++;
    cJSON *entry = cJSON_CreateObject();
    cJSON_AddNumberToObject(entry, "i", cJSON_GetArraySize(fw->log));
    cJSON_AddNumberToObject(entry, "t_ms", (double)(now_ms() - fw->t0_ms));
    cJSON_AddStringToObject(entry, "method", method);
    cJSON_AddStringToObject(entry, "path", url);
    cJSON_AddBoolToObject(entry, "auth",
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization") != NULL);
    cJSON_AddStringToObject(entry, "body", body);
    *log_i = cJSON_GetArraySize(fw->log);
    cJSON_AddItemToArray(fw->log, entry);

    if (strcmp(method, "POST") || (!is_graphql && !is_fs))
        return make_answer(404, json_error("fake: no such endpoint"));
    if (!auth_ok(fw, c)) return make_answer(401, json_error("fake: invalid API key"));
    if (fw->faults.auth_status) {
        fw->faults_injected++;
        return make_answer(fw->faults.auth_status,
                           json_error(fw->faults.auth_message[0] ? fw->faults.auth_message
                                                                 : "permission denied"));
    }
    const char *enc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Encoding");
    if (enc && strcmp(enc, "identity"))
        return make_answer(400, json_error("fake: only identity encoding is supported"));

    canned cn;
    bool have_canned = pop_canned(fw, is_graphql ? "graphql" : "file_stream", &cn);
    cJSON *j = is_fs ? cJSON_Parse(body) : NULL;
    if (is_fs && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        if (have_canned) free(cn.body);
        return make_answer(400, json_error("fake: file_stream body is not a JSON object"));
    }
    answer a;
    if (have_canned) {
        if (is_fs && cn.apply_first) {
            answer n = file_stream(fw, url, j);
            free(n.body);
        }
        fw->faults_injected++;
        a = make_answer(cn.status, cn.body ? cn.body : json_error("fake: canned answer"));
        a.retry_after_s = cn.retry_after_s;
    } else if (fw->faults.fail_percent > 0 &&
               (int)(next_rand(fw) % 100) < fw->faults.fail_percent) {
        static const int st[4] = { 500, 502, 503, 429 };
        a = fault_status(fw, st[next_rand(fw) % 4]);
    } else if (is_fs && fw->faults.store_then_fail_percent > 0 &&
               (int)(next_rand(fw) % 100) < fw->faults.store_then_fail_percent) {
        answer n = file_stream(fw, url, j);
        free(n.body);
        a = fault_status(fw, 500);
    } else {
        a = is_graphql ? graphql(fw, body) : file_stream(fw, url, j);
    }
    cJSON_Delete(j);
    return a;
}

/* ---- control endpoints ----------------------------------------------------------------- */

static void *down_thread(void *arg);

typedef struct down_req {
    fake_wandb *fw;
    int seconds;
} down_req;

static void faults_from_json(fake_wandb_faults *f, const cJSON *j)
{
    const cJSON *v;
#define NUM(field)                                                          \
    if ((v = cJSON_GetObjectItemCaseSensitive(j, #field)) && cJSON_IsNumber(v)) \
        f->field = v->valueint;
    NUM(fail_percent) NUM(store_then_fail_percent) NUM(retry_after_s) NUM(auth_status) NUM(delay_ms)
#undef NUM
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "seed")) && cJSON_IsNumber(v))
        f->seed = (uint64_t)v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "auth_message")) && cJSON_IsString(v))
        snprintf(f->auth_message, sizeof f->auth_message, "%s", v->valuestring);
}

static answer handle_control(fake_wandb *fw, const char *method, const char *url, const char *body)
{
    if (!strcmp(url, "/_state") && !strcmp(method, "GET")) {
        pthread_mutex_unlock(&fw->mu);
        cJSON *s = fake_wandb_state(fw);
        pthread_mutex_lock(&fw->mu);
        char *t = cJSON_PrintUnformatted(s);
        cJSON_Delete(s);
        return make_answer(200, t);
    }
    cJSON *j = cJSON_Parse(body);
    answer a = make_answer(200, strdup("{\"ok\":true}"));
    if (!strcmp(url, "/_faults") && cJSON_IsObject(j)) {
        fake_wandb_faults f = fw->faults;
        faults_from_json(&f, j);
        fw->faults = f;
        if (f.seed) fw->rng = f.seed;
    } else if (!strcmp(url, "/_queue") && cJSON_IsObject(j)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "target");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "body");
        const cJSON *ra = cJSON_GetObjectItemCaseSensitive(j, "retry_after_s");
        const cJSON *af = cJSON_GetObjectItemCaseSensitive(j, "apply_first");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "n");
        pthread_mutex_unlock(&fw->mu);
        fake_wandb_queue(fw, cJSON_IsString(t) ? t->valuestring : "file_stream",
                         cJSON_IsNumber(st) ? st->valueint : 500,
                         cJSON_IsString(b) ? b->valuestring : NULL,
                         cJSON_IsNumber(ra) ? ra->valueint : 0, cJSON_IsTrue(af),
                         cJSON_IsNumber(n) ? n->valueint : 1);
        pthread_mutex_lock(&fw->mu);
    } else if (!strcmp(url, "/_down")) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "seconds");
        down_req *dr = malloc(sizeof *dr);
        pthread_t th;
        if (dr) {
            dr->fw = fw;
            dr->seconds = cJSON_IsNumber(s) ? s->valueint : 5;
            if (pthread_create(&th, NULL, down_thread, dr) == 0) pthread_detach(th);
            else free(dr);
        }
    } else if (!strcmp(url, "/_reset")) {
        pthread_mutex_unlock(&fw->mu);
        fake_wandb_reset(fw);
        pthread_mutex_lock(&fw->mu);
    } else {
        free(a.body);
        a = make_answer(404, json_error("fake: unknown control request"));
    }
    cJSON_Delete(j);
    return a;
}

static enum MHD_Result send_answer(struct MHD_Connection *c, answer *a)
{
    if (a->status == 0) {
        free(a->body);
        return MHD_NO; /* drop the connection */
    }
    const char *b = a->body ? a->body : "";
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(b), (void *)b,
                                                             MHD_RESPMEM_MUST_COPY);
    free(a->body);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (a->retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", a->retry_after_s);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)a->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    fake_wandb *fw = cls;
    conn_buf *cb = *con_cls;
    if (!cb) {
        cb = calloc(1, sizeof *cb);
        if (!cb) return MHD_NO;
        *con_cls = cb;
        return MHD_YES;
    }
    if (*upload_size) {
        if (cb->len + *upload_size > MAX_BODY) {
            cb->too_big = true;
        } else {
            char *np = realloc(cb->p, cb->len + *upload_size + 1);
            if (!np) return MHD_NO;
            memcpy(np + cb->len, upload, *upload_size);
            cb->p = np;
            cb->len += *upload_size;
            cb->p[cb->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    const char *body = cb->p ? cb->p : "";
    answer a;
    int delay = 0;
    pthread_mutex_lock(&fw->mu);
    int64_t log_i = -1;
    if (!strncmp(url, "/_", 2)) {
        a = handle_control(fw, method, url, body);
    } else if (cb->too_big) {
        a = make_answer(413, json_error("fake: request too large"));
    } else {
        a = handle_api(fw, c, method, url, body, &log_i);
        delay = fw->faults.delay_ms;
    }
    if (log_i >= 0) {
        cJSON *e = cJSON_GetArrayItem(fw->log, (int)log_i);
        if (e) cJSON_AddNumberToObject(e, "status", a.status);
    }
    pthread_mutex_unlock(&fw->mu);
    if (delay > 0) usleep((useconds_t)delay * 1000);
    return send_answer(c, &a);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls; (void)c; (void)toe;
    conn_buf *cb = *con_cls;
    if (cb) {
        free(cb->p);
        free(cb);
    }
    *con_cls = NULL;
}

/* ---- life cycle ------------------------------------------------------------------------ */

static struct MHD_Daemon *listen_on(fake_wandb *fw, uint16_t port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                            port, NULL, NULL, on_request, fw,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, fw,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                            MHD_OPTION_END);
}

fake_wandb *fake_wandb_start(uint16_t port, const char *api_key)
{
    fake_wandb *fw = calloc(1, sizeof *fw);
    if (!fw) return NULL;
    pthread_mutex_init(&fw->mu, NULL);
    fw->api_key = xstrdup(api_key);
    fw->log = cJSON_CreateArray();
    fw->t0_ms = now_ms();
    fw->d = listen_on(fw, port);
    if (!fw->d) {
        fake_wandb_stop(fw);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(fw->d, MHD_DAEMON_INFO_BIND_PORT);
    fw->port = info ? info->port : port;
    snprintf(fw->url, sizeof fw->url, "http://127.0.0.1:%u", (unsigned)fw->port);
    return fw;
}

static void clear_state(fake_wandb *fw)
{
    for (int i = 0; i < fw->n_runs; i++) run_free(&fw->runs[i]);
    free(fw->runs);
    fw->runs = NULL;
    fw->n_runs = 0;
    for (int i = 0; i < fw->n_queue; i++) free(fw->queue[i].body);
    free(fw->queue);
    fw->queue = NULL;
    fw->n_queue = 0;
    cJSON_Delete(fw->log);
    fw->log = cJSON_CreateArray();
    fw->requests = fw->graphql_requests = fw->fs_requests = 0;
    fw->faults_injected = fw->fs_before_upsert = fw->key_leaks = 0;
    memset(&fw->faults, 0, sizeof fw->faults);
}

void fake_wandb_stop(fake_wandb *fw)
{
    if (!fw) return;
    if (fw->d) MHD_stop_daemon(fw->d);
    clear_state(fw);
    cJSON_Delete(fw->log);
    free(fw->api_key);
    pthread_mutex_destroy(&fw->mu);
    free(fw);
}

uint16_t fake_wandb_port(const fake_wandb *fw) { return fw->port; }
const char *fake_wandb_url(const fake_wandb *fw) { return fw->url; }

int fake_wandb_set_down(fake_wandb *fw, bool down)
{
    pthread_mutex_lock(&fw->mu);
    struct MHD_Daemon *d = fw->d;
    if (down) fw->d = NULL;
    pthread_mutex_unlock(&fw->mu);
    if (down) {
        if (d) MHD_stop_daemon(d); /* outside the lock: handlers need it to finish */
        return 0;
    }
    if (d) return 0;
    struct MHD_Daemon *nd = NULL;
    for (int i = 0; i < 50 && !nd; i++) {
        nd = listen_on(fw, fw->port);
        if (!nd) usleep(100 * 1000);
    }
    pthread_mutex_lock(&fw->mu);
    fw->d = nd;
    pthread_mutex_unlock(&fw->mu);
    return nd ? 0 : -1;
}

static void *down_thread(void *arg)
{
    down_req *dr = arg;
    usleep(100 * 1000); /* let the control request's answer go out first */
    fake_wandb_set_down(dr->fw, true);
    sleep((unsigned)dr->seconds);
    fake_wandb_set_down(dr->fw, false);
    free(dr);
    return NULL;
}

void fake_wandb_set_faults(fake_wandb *fw, const fake_wandb_faults *f)
{
    pthread_mutex_lock(&fw->mu);
    fw->faults = *f;
    fw->rng = f->seed ? f->seed : 0x2545f4914f6cdd1dull;
    pthread_mutex_unlock(&fw->mu);
}

void fake_wandb_queue(fake_wandb *fw, const char *target, int status, const char *body,
                      int retry_after_s, bool apply_first, int n)
{
    pthread_mutex_lock(&fw->mu);
    canned *nq = realloc(fw->queue, (size_t)(fw->n_queue + 1) * sizeof *nq);
    if (nq) {
        fw->queue = nq;
        canned *c = &fw->queue[fw->n_queue++];
        memset(c, 0, sizeof *c);
        snprintf(c->target, sizeof c->target, "%s", target);
        c->status = status;
        c->body = xstrdup(body);
        c->retry_after_s = retry_after_s;
        c->apply_first = apply_first;
        c->n = n > 0 ? n : 1;
    }
    pthread_mutex_unlock(&fw->mu);
}

void fake_wandb_reset(fake_wandb *fw)
{
    pthread_mutex_lock(&fw->mu);
    clear_state(fw);
    pthread_mutex_unlock(&fw->mu);
}

int fake_wandb_request_count(fake_wandb *fw)
{
    pthread_mutex_lock(&fw->mu);
    int n = fw->requests;
    pthread_mutex_unlock(&fw->mu);
    return n;
}

static cJSON *run_json(const run *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "entity", r->entity);
    cJSON_AddStringToObject(o, "project", r->project);
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "id", r->id ? r->id : "");
    cJSON_AddStringToObject(o, "display_name", r->display_name ? r->display_name : "");
    cJSON_AddNumberToObject(o, "upserts", r->upserts);
    cJSON_AddItemToObject(o, "upsert_variables", cJSON_Duplicate(r->upsert_vars, 1));
    cJSON_AddBoolToObject(o, "config_is_string", r->config_is_string);
    cJSON_AddBoolToObject(o, "config_wrapped", r->config_wrapped);
    cJSON_AddItemToObject(o, "config", r->config ? cJSON_Duplicate(r->config, 1) : cJSON_CreateNull());
    cJSON *h = cJSON_AddArrayToObject(o, "history");
    int holes = 0;
    for (int64_t i = 0; i < r->history.n; i++) {
        if (r->history.v[i]) cJSON_AddItemToArray(h, cJSON_CreateString(r->history.v[i]));
        else cJSON_AddItemToArray(h, cJSON_CreateNull()), holes++;
    }
    cJSON_AddNumberToObject(o, "history_holes", holes);
    if (r->summary) cJSON_AddStringToObject(o, "summary", r->summary);
    else cJSON_AddNullToObject(o, "summary");
#define NUM(f) cJSON_AddNumberToObject(o, #f, r->f)
    NUM(gaps); NUM(conflicts); NUM(rewrites); NUM(summary_writes);
    cJSON_AddNumberToObject(o, "file_stream_requests", r->fs_requests);
    NUM(heartbeats); NUM(complete_requests); NUM(completes); NUM(after_complete);
#undef NUM
    cJSON_AddBoolToObject(o, "completed", r->completed);
    if (r->completed) cJSON_AddNumberToObject(o, "exitcode", r->exitcode);
    else cJSON_AddNullToObject(o, "exitcode");
    return o;
}

cJSON *fake_wandb_state(fake_wandb *fw)
{
    pthread_mutex_lock(&fw->mu);
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "requests", fw->requests);
    cJSON_AddNumberToObject(s, "graphql_requests", fw->graphql_requests);
    cJSON_AddNumberToObject(s, "file_stream_requests", fw->fs_requests);
    cJSON_AddNumberToObject(s, "faults_injected", fw->faults_injected);
    cJSON_AddNumberToObject(s, "fs_before_upsert", fw->fs_before_upsert);
    cJSON_AddNumberToObject(s, "key_leaks", fw->key_leaks);
    cJSON_AddItemToObject(s, "log", cJSON_Duplicate(fw->log, 1));
    cJSON *runs = cJSON_AddArrayToObject(s, "runs");
    for (int i = 0; i < fw->n_runs; i++) cJSON_AddItemToArray(runs, run_json(&fw->runs[i]));
    pthread_mutex_unlock(&fw->mu);
    return s;
}
