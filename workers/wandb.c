/* wandb.c - see wandb.h. One HTTP attempt per call; builders are pure functions.
 *
 * The GraphQL text below is written from the operation's documented variables and
 * reply fields (UpsertBucketInput names the project "modelName" and the entity
 * "entityName"). Replies are parsed with cJSON; a file_stream reply is allowed to be
 * empty or malformed (only "stopped" is read from it).
 */
#include "wandb.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/str.h"

#ifndef BN_VERSION
#define BN_VERSION "0"
#endif

#define MAX_REPLY (1 << 20)
#define RETRY_AFTER_CAP_MS (10 * 60 * 1000)

static const char upsert_query[] =
    "mutation UpsertBucket($id: String, $name: String, $project: String, $entity: String, "
    "$groupName: String, $description: String, $displayName: String, $notes: String, "
    "$commit: String, $config: JSONString, $host: String, $debug: Boolean, $program: String, "
    "$repo: String, $jobType: String, $state: String, $sweep: String, $tags: [String!], "
    "$summaryMetrics: JSONString) {\n"
    "  upsertBucket(input: {id: $id, name: $name, groupName: $groupName, modelName: $project, "
    "entityName: $entity, description: $description, displayName: $displayName, notes: $notes, "
    "config: $config, commit: $commit, host: $host, debug: $debug, jobProgram: $program, "
    "jobRepo: $repo, jobType: $jobType, state: $state, sweep: $sweep, tags: $tags, "
    "summaryMetrics: $summaryMetrics}) {\n"
    "    bucket { id name displayName description config sweepName "
    "project { id name entity { id name } } historyLineCount }\n"
    "    inserted\n"
    "  }\n"
    "}\n";

static const char viewer_query[] = "query Viewer { viewer { id entity username } }";

/* ---- modes --------------------------------------------------------------------------- */

int bn_wandb_mode_parse(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "online") || !strcmp(s, "run")) return BN_WANDB_ONLINE;
    if (!strcmp(s, "offline") || !strcmp(s, "dryrun")) return BN_WANDB_OFFLINE;
    if (!strcmp(s, "disabled")) return BN_WANDB_DISABLED;
    return -1;
}

const char *bn_wandb_mode_name(bn_wandb_mode m)
{
    switch (m) {
    case BN_WANDB_ONLINE: return "online";
    case BN_WANDB_OFFLINE: return "offline";
    case BN_WANDB_DISABLED: return "disabled";
    }
    return "?";
}

/* ---- retry policy -------------------------------------------------------------------- */

bn_wandb_outcome bn_wandb_classify(long status, bn_wandb_endpoint ep)
{
    if (status >= 200 && status < 300) return BN_WANDB_OK;
    switch (status) {
    case 400: case 401: case 403: case 404: case 410: case 413: case 422: case 501:
        return BN_WANDB_FATAL;
    case 409:
        return ep == BN_WANDB_EP_UPSERT ? BN_WANDB_RETRY : BN_WANDB_FATAL;
    default:
        return BN_WANDB_RETRY; /* 0 (transport), 429, other 4xx, 5xx, >= 600 */
    }
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

int64_t bn_wandb_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms,
                            int64_t retry_after_ms, uint64_t *rng)
{
    if (base_ms < 1) base_ms = 1;
    if (cap_ms < base_ms) cap_ms = base_ms;
    int64_t d = base_ms;
    for (int i = 0; i < attempt && d < cap_ms; i++) d *= 2;
    if (d > cap_ms) d = cap_ms;
    d += (int64_t)(xorshift(rng) % (uint64_t)(d / 4 + 1)); /* 0-25% jitter */
    if (d > cap_ms) d = cap_ms;
    if (retry_after_ms >= 0) {
        int64_t ra = retry_after_ms > RETRY_AFTER_CAP_MS ? RETRY_AFTER_CAP_MS : retry_after_ms;
        if (ra > d) d = ra;
    }
    return d;
}

int64_t bn_wandb_parse_retry_after(const char *value, int64_t now_s)
{
    if (!value) return -1;
    while (isspace((unsigned char)*value)) value++;
    if (!*value) return -1;
    if (isdigit((unsigned char)*value)) {
        char *end;
        double s = strtod(value, &end);
        while (isspace((unsigned char)*end)) end++;
        if (*end || s < 0 || s > 1e7) return -1;
        return (int64_t)(s * 1000.0);
    }
    time_t t = curl_getdate(value, NULL);
    if (t == (time_t)-1) return -1;
    int64_t d = ((int64_t)t - now_s) * 1000;
    return d < 0 ? 0 : d;
}

/* ---- client -------------------------------------------------------------------------- */

struct bn_wandb_client {
    CURL *curl;
    char *base_url;
    char *api_key;
    long timeout_ms, connect_timeout_ms;
    const atomic_bool *abort_flag;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

bn_wandb_client *bn_wandb_client_new(const bn_wandb_client_opts *o)
{
    pthread_once(&curl_once, curl_init_once);
    bn_wandb_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    const char *base = (o && o->base_url && *o->base_url) ? o->base_url : BN_WANDB_DEFAULT_BASE_URL;
    c->base_url = strdup(base);
    if (c->base_url) {
        size_t n = strlen(c->base_url);
        while (n > 0 && c->base_url[n - 1] == '/') c->base_url[--n] = '\0';
    }
    c->api_key = (o && o->api_key) ? strdup(o->api_key) : NULL;
    c->timeout_ms = (o && o->timeout_ms > 0) ? o->timeout_ms : 60000;
    c->connect_timeout_ms = (o && o->connect_timeout_ms > 0) ? o->connect_timeout_ms : 10000;
    c->abort_flag = o ? o->abort_flag : NULL;
    c->curl = curl_easy_init();
    if (!c->curl || !c->base_url || (o && o->api_key && !c->api_key)) {
        bn_wandb_client_free(c);
        return NULL;
    }
    return c;
}

void bn_wandb_client_free(bn_wandb_client *c)
{
    if (!c) return;
    if (c->curl) curl_easy_cleanup(c->curl);
    if (c->api_key) {
        memset(c->api_key, 0, strlen(c->api_key));
        free(c->api_key);
    }
    free(c->base_url);
    free(c);
}

const char *bn_wandb_client_base_url(const bn_wandb_client *c) { return c->base_url; }

typedef struct reply {
    char *buf;
    size_t len;
    int64_t retry_after_ms;
} reply;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    reply *r = ud;
    size_t n = size * nmemb;
    if (r->len + n > MAX_REPLY) return n; /* keep the head only */
    char *nb = realloc(r->buf, r->len + n + 1);
    if (!nb) return 0;
    memcpy(nb + r->len, data, n);
    r->buf = nb;
    r->len += n;
    r->buf[r->len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    reply *r = ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
        char v[128];
        size_t vl = n - (sizeof name - 1);
        if (vl >= sizeof v) vl = sizeof v - 1;
        memcpy(v, data + sizeof name - 1, vl);
        v[vl] = '\0';
        for (char *e = v + strlen(v); e > v && isspace((unsigned char)e[-1]);) *--e = '\0';
        r->retry_after_ms = bn_wandb_parse_retry_after(v, (int64_t)time(NULL));
    }
    return n;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a; (void)b; (void)c; (void)d;
    const atomic_bool *flag = ud;
    return (flag && atomic_load(flag)) ? 1 : 0;
}

/* The server's message from a reply body: errors[0].message, "error", or the text. */
static void reply_message(const char *body, long status, char *out, size_t len)
{
    cJSON *j = body ? cJSON_Parse(body) : NULL;
    const char *msg = NULL;
    if (j) {
        cJSON *errs = cJSON_GetObjectItemCaseSensitive(j, "errors");
        cJSON *e0 = cJSON_IsArray(errs) ? cJSON_GetArrayItem(errs, 0) : NULL;
        cJSON *m = e0 ? cJSON_GetObjectItemCaseSensitive(e0, "message") : NULL;
        if (cJSON_IsString(m)) msg = m->valuestring;
        cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        if (!msg && cJSON_IsString(e)) msg = e->valuestring;
        cJSON *em = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : NULL;
        if (!msg && cJSON_IsString(em)) msg = em->valuestring;
    }
    if (msg)
        snprintf(out, len, "HTTP %ld: %s", status, msg);
    else if (body && *body)
        snprintf(out, len, "HTTP %ld: %.200s", status, body);
    else
        snprintf(out, len, "HTTP %ld", status);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    cJSON_Delete(j);
}

/* One POST of a JSON body. Fills res (outcome per ep) and returns the reply body. */
static char *post_json(bn_wandb_client *c, const char *path, const char *body,
                       bn_wandb_endpoint ep, bn_wandb_result *res)
{
    memset(res, 0, sizeof *res);
    res->retry_after_ms = -1;
    char url[2048];
    if ((size_t)snprintf(url, sizeof url, "%s%s", c->base_url, path) >= sizeof url) {
        res->outcome = BN_WANDB_FATAL;
        snprintf(res->message, sizeof res->message, "request URL too long");
        return NULL;
    }
    CURL *h = c->curl;
    curl_easy_reset(h);
    reply r = { .retry_after_ms = -1 };
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(h, CURLOPT_USERAGENT, "bitnetd-wandb-c/" BN_VERSION);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (c->abort_flag) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)c->abort_flag);
    }
    if (c->api_key) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, "api");
        curl_easy_setopt(h, CURLOPT_PASSWORD, c->api_key);
    }
    CURLcode cc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    curl_easy_setopt(h, CURLOPT_PASSWORD, ""); /* do not keep the key in the handle */
    if (cc != CURLE_OK) {
        res->outcome = (cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL ||
                        cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_TOO_MANY_REDIRECTS)
                           ? BN_WANDB_FATAL : BN_WANDB_RETRY;
        snprintf(res->message, sizeof res->message, "%s: %s", curl_easy_strerror(cc),
                 errbuf[0] ? errbuf : "no detail");
        for (char *p = res->message; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
        free(r.buf);
        return NULL;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &res->http_status);
    res->retry_after_ms = r.retry_after_ms;
    res->outcome = bn_wandb_classify(res->http_status, ep);
    if (res->outcome != BN_WANDB_OK) reply_message(r.buf, res->http_status, res->message, sizeof res->message);
    return r.buf;
}

void bn_wandb_run_free(bn_wandb_run *r)
{
    if (!r) return;
    free(r->id);
    free(r->name);
    free(r->entity);
    free(r->project);
    free(r->display_name);
    memset(r, 0, sizeof *r);
}

static void add_opt_string(cJSON *o, const char *key, const char *v)
{
    if (v && *v) cJSON_AddStringToObject(o, key, v);
}

cJSON *bn_wandb_upsert_variables(const bn_wandb_run_spec *s)
{
    cJSON *v = cJSON_CreateObject();
    if (!v) return NULL;
    add_opt_string(v, "name", s->name);
    add_opt_string(v, "project", s->project);
    add_opt_string(v, "entity", s->entity);
    add_opt_string(v, "displayName", s->display_name);
    add_opt_string(v, "groupName", s->group);
    add_opt_string(v, "jobType", s->job_type);
    add_opt_string(v, "notes", s->notes);
    if (s->n_tags > 0) {
        cJSON *t = cJSON_AddArrayToObject(v, "tags");
        for (int i = 0; t && i < s->n_tags; i++)
            cJSON_AddItemToArray(t, cJSON_CreateString(s->tags[i]));
    }
    add_opt_string(v, "config", s->config);
    return v;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

/* A GraphQL 2xx reply: the data member, or FATAL with the errors' message. */
static cJSON *graphql_data(cJSON *root, const char *field, bn_wandb_result *res)
{
    cJSON *errs = cJSON_GetObjectItemCaseSensitive(root, "errors");
    if (cJSON_IsArray(errs) && cJSON_GetArraySize(errs) > 0) {
        char *txt = cJSON_PrintUnformatted(root);
        reply_message(txt, res->http_status, res->message, sizeof res->message);
        free(txt);
        res->outcome = BN_WANDB_FATAL;
        return NULL;
    }
    cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    cJSON *f = cJSON_IsObject(data) ? cJSON_GetObjectItemCaseSensitive(data, field) : NULL;
    if (!cJSON_IsObject(f)) {
        res->outcome = BN_WANDB_FATAL;
        snprintf(res->message, sizeof res->message, "HTTP %ld: reply has no data.%s",
                 res->http_status, field);
        return NULL;
    }
    return f;
}

static char *graphql_body(const char *op, const char *query, const cJSON *variables)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "operationName", op);
    cJSON_AddStringToObject(b, "query", query);
    cJSON_AddItemToObject(b, "variables",
                          variables ? cJSON_Duplicate(variables, 1) : cJSON_CreateObject());
    char *txt = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return txt;
}

int bn_wandb_upsert_bucket(bn_wandb_client *c, const cJSON *variables, bn_wandb_run *out,
                           bn_wandb_result *res)
{
    memset(out, 0, sizeof *out);
    char *body = graphql_body("UpsertBucket", upsert_query, variables);
    if (!body) {
        memset(res, 0, sizeof *res);
        res->outcome = BN_WANDB_FATAL;
        snprintf(res->message, sizeof res->message, "out of memory");
        return -1;
    }
    char *rep = post_json(c, "/graphql", body, BN_WANDB_EP_UPSERT, res);
    free(body);
    if (res->outcome != BN_WANDB_OK) {
        free(rep);
        return -1;
    }
    cJSON *root = rep ? cJSON_Parse(rep) : NULL;
    free(rep);
    if (!root) {
        res->outcome = BN_WANDB_FATAL;
        snprintf(res->message, sizeof res->message, "HTTP %ld: UpsertBucket reply is not JSON",
                 res->http_status);
        return -1;
    }
    cJSON *ub = graphql_data(root, "upsertBucket", res);
    cJSON *bucket = ub ? cJSON_GetObjectItemCaseSensitive(ub, "bucket") : NULL;
    cJSON *proj = bucket ? cJSON_GetObjectItemCaseSensitive(bucket, "project") : NULL;
    cJSON *ent = proj ? cJSON_GetObjectItemCaseSensitive(proj, "entity") : NULL;
    const char *name = bucket ? jstr(bucket, "name") : NULL;
    const char *pname = proj ? jstr(proj, "name") : NULL;
    const char *ename = ent ? jstr(ent, "name") : NULL;
    if (ub && (!name || !pname || !ename)) {
        res->outcome = BN_WANDB_FATAL;
        snprintf(res->message, sizeof res->message,
                 "HTTP %ld: UpsertBucket reply lacks bucket name, project or entity",
                 res->http_status);
    }
    if (res->outcome == BN_WANDB_OK) {
        out->id = dup_or_null(jstr(bucket, "id"));
        out->name = strdup(name);
        out->project = strdup(pname);
        out->entity = strdup(ename);
        out->display_name = dup_or_null(jstr(bucket, "displayName"));
        cJSON *hlc = cJSON_GetObjectItemCaseSensitive(bucket, "historyLineCount");
        out->history_line_count = cJSON_IsNumber(hlc) ? (int64_t)hlc->valuedouble : 0;
        out->inserted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ub, "inserted"));
    }
    cJSON_Delete(root);
    return res->outcome == BN_WANDB_OK ? 0 : -1;
}

int bn_wandb_viewer(bn_wandb_client *c, char **entity, bn_wandb_result *res)
{
    *entity = NULL;
    char *body = graphql_body("Viewer", viewer_query, NULL);
    char *rep = body ? post_json(c, "/graphql", body, BN_WANDB_EP_GRAPHQL, res) : NULL;
    free(body);
    if (!body || res->outcome != BN_WANDB_OK) {
        free(rep);
        return -1;
    }
    cJSON *root = rep ? cJSON_Parse(rep) : NULL;
    free(rep);
    cJSON *v = root ? graphql_data(root, "viewer", res) : NULL;
    if (!root) {
        res->outcome = BN_WANDB_FATAL;
        snprintf(res->message, sizeof res->message, "HTTP %ld: Viewer reply is not JSON",
                 res->http_status);
    } else if (!v && res->outcome == BN_WANDB_FATAL && !strstr(res->message, "errors")) {
        snprintf(res->message, sizeof res->message, "HTTP %ld: invalid credentials (viewer is null)",
                 res->http_status);
    }
    if (v) *entity = dup_or_null(jstr(v, "entity"));
    cJSON_Delete(root);
    return res->outcome == BN_WANDB_OK ? 0 : -1;
}

/* Path segments come from the UpsertBucket reply; escape anything unusual. */
static int append_segment(char *buf, size_t len, size_t *pos, const char *seg)
{
    for (const unsigned char *p = (const unsigned char *)seg; *p; p++) {
        int n;
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~')
            n = snprintf(buf + *pos, len - *pos, "%c", *p);
        else
            n = snprintf(buf + *pos, len - *pos, "%%%02X", *p);
        if (n < 0 || (size_t)n >= len - *pos) return -1;
        *pos += (size_t)n;
    }
    return 0;
}

int bn_wandb_file_stream(bn_wandb_client *c, const char *entity, const char *project,
                         const char *run, const char *body, bn_wandb_result *res)
{
    char path[1024];
    size_t pos = 0;
    const char *segs[3] = { entity, project, run };
    int bad = 0;
    pos = (size_t)snprintf(path, sizeof path, "/files/");
    for (int i = 0; i < 3 && !bad; i++) {
        bad = append_segment(path, sizeof path, &pos, segs[i] ? segs[i] : "");
        if (!bad && pos + 1 < sizeof path) path[pos++] = '/', path[pos] = '\0';
    }
    if (bad || pos + sizeof "file_stream" > sizeof path) {
        memset(res, 0, sizeof *res);
        res->outcome = BN_WANDB_FATAL;
        snprintf(res->message, sizeof res->message, "file_stream path too long");
        return -1;
    }
    memcpy(path + pos, "file_stream", sizeof "file_stream");
    char *rep = post_json(c, path, body, BN_WANDB_EP_FILE_STREAM, res);
    if (res->outcome == BN_WANDB_OK && rep) {
        cJSON *j = cJSON_Parse(rep); /* tolerate anything: only "stopped" matters */
        if (cJSON_IsObject(j)) res->stopped = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stopped"));
        cJSON_Delete(j);
    }
    free(rep);
    return res->outcome == BN_WANDB_OK ? 0 : -1;
}

/* ---- builders ------------------------------------------------------------------------ */

int bn_wandb_format_number(char *buf, size_t len, double v)
{
    if (isnan(v)) return snprintf(buf, len, "NaN");
    if (isinf(v)) return snprintf(buf, len, v > 0 ? "Infinity" : "-Infinity");
    if (v == 0) return snprintf(buf, len, "0");
    if (v == trunc(v) && fabs(v) < 1e15) return snprintf(buf, len, "%.0f", v);
    for (int prec = 15; prec <= 17; prec++) {
        int n = snprintf(buf, len, "%.*g", prec, v);
        if (prec == 17 || strtod(buf, NULL) == v) return n;
    }
    return 0;
}

#define NAN_MARK "\x01NaN"

static void restore_nan(cJSON *j)
{
    for (cJSON *c = j ? j->child : NULL; c; c = c->next) {
        if (cJSON_IsString(c) && !strcmp(c->valuestring, NAN_MARK)) {
            cJSON *n = cJSON_CreateNumber(NAN);
            if (n && c->string && !(n->string = strdup(c->string))) {
                cJSON_Delete(n);
                n = NULL;
            }
            if (n) cJSON_ReplaceItemViaPointer(j, c, n), c = n;
        } else {
            restore_nan(c);
        }
    }
}

cJSON *bn_wandb_parse_ext(const char *text)
{
    if (!text) return NULL;
    size_t n = strlen(text);
    char *buf = malloc(n * 2 + 16);
    if (!buf) return NULL;
    size_t o = 0;
    bool in_str = false, marks = false;
    for (size_t i = 0; i < n; i++) {
        char ch = text[i];
        if (in_str) {
            buf[o++] = ch;
            if (ch == '\\' && i + 1 < n) buf[o++] = text[++i];
            else if (ch == '"') in_str = false;
        } else if (ch == '"') {
            in_str = true;
            buf[o++] = ch;
        } else if (!strncmp(text + i, "NaN", 3)) {
            memcpy(buf + o, "\"\\u0001NaN\"", 11), o += 11, i += 2, marks = true;
        } else if (!strncmp(text + i, "-Infinity", 9)) {
            memcpy(buf + o, "-1e999", 6), o += 6, i += 8;
        } else if (!strncmp(text + i, "Infinity", 8)) {
            memcpy(buf + o, "1e999", 5), o += 5, i += 7;
        } else {
            buf[o++] = ch;
        }
    }
    buf[o] = '\0';
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (j && marks) restore_nan(j);
    return j;
}

/* A JSON string literal through cJSON's escaper. */
static void sb_json_string(bn_strbuf *b, const char *s)
{
    cJSON *t = cJSON_CreateString(s);
    char *txt = t ? cJSON_PrintUnformatted(t) : NULL;
    if (txt) bn_strbuf_str(b, txt);
    else b->oom = true;
    free(txt);
    cJSON_Delete(t);
}

static void sb_member(bn_strbuf *b, const cJSON *item, bool *first)
{
    if (cJSON_IsNull(item)) return; /* "left out" */
    if (!*first) bn_strbuf_str(b, ",");
    *first = false;
    sb_json_string(b, item->string);
    bn_strbuf_str(b, ":");
    if (cJSON_IsNumber(item)) {
        char num[64];
        bn_wandb_format_number(num, sizeof num, item->valuedouble);
        bn_strbuf_str(b, num);
    } else {
        char *txt = cJSON_PrintUnformatted(item);
        if (txt) bn_strbuf_str(b, txt);
        else b->oom = true;
        free(txt);
    }
}

char *bn_wandb_render_line(const char *payload, const cJSON *extra)
{
    cJSON *p = bn_wandb_parse_ext(payload);
    char *line = cJSON_IsObject(p) ? bn_wandb_render_object(p, extra) : NULL;
    cJSON_Delete(p);
    return line;
}

char *bn_wandb_render_object(const cJSON *p, const cJSON *extra)
{
    if (!cJSON_IsObject(p)) return NULL;
    bn_strbuf b = { 0 };
    bool first = true;
    bn_strbuf_str(&b, "{");
    for (const cJSON *it = p->child; it; it = it->next) sb_member(&b, it, &first);
    for (const cJSON *it = extra ? extra->child : NULL; it; it = it->next)
        if (!cJSON_GetObjectItemCaseSensitive(p, it->string)) sb_member(&b, it, &first);
    bn_strbuf_str(&b, "}");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *bn_wandb_config_string(const char *config_json)
{
    cJSON *cfg = (config_json && *config_json) ? cJSON_Parse(config_json) : cJSON_CreateObject();
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return NULL;
    }
    cJSON *w = cJSON_CreateObject();
    while (cfg->child) {
        cJSON *it = cJSON_DetachItemViaPointer(cfg, cfg->child);
        cJSON *wrap = cJSON_CreateObject();
        char *key = it->string;
        it->string = NULL;
        cJSON_AddItemToObject(wrap, "value", it);
        cJSON_AddItemToObject(w, key, wrap);
        free(key);
    }
    char *txt = cJSON_PrintUnformatted(w);
    cJSON_Delete(w);
    cJSON_Delete(cfg);
    return txt;
}

char *bn_wandb_fs_body(const bn_wandb_fs_batch *bt)
{
    cJSON *b = cJSON_CreateObject();
    if (!b) return NULL;
    if (bt->n_history > 0 || bt->summary) {
        cJSON *files = cJSON_AddObjectToObject(b, "files");
        if (bt->n_history > 0) {
            cJSON *h = cJSON_AddObjectToObject(files, BN_WANDB_HISTORY_FILE);
            cJSON_AddNumberToObject(h, "offset", (double)bt->history_offset);
            cJSON *content = cJSON_AddArrayToObject(h, "content");
            for (int i = 0; i < bt->n_history; i++)
                cJSON_AddItemToArray(content, cJSON_CreateString(bt->history[i]));
        }
        if (bt->summary) {
            cJSON *s = cJSON_AddObjectToObject(files, BN_WANDB_SUMMARY_FILE);
            cJSON_AddNumberToObject(s, "offset", 0);
            cJSON *content = cJSON_AddArrayToObject(s, "content");
            cJSON_AddItemToArray(content, cJSON_CreateString(bt->summary));
        }
    }
    if (bt->complete) {
        cJSON_AddTrueToObject(b, "complete");
        cJSON_AddNumberToObject(b, "exitcode", bt->exitcode);
    }
    char *txt = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return txt;
}
