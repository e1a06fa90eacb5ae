/* jobs.c - the job resources: submit, list, get, cancel, delete, events, metrics.
 *
 * Submission validates everything before it writes: JSON shape and types, unknown
 * fields, the engine options (bn_options_from_json, whose messages name the field), the
 * tracking block, model and output paths, the Idempotency-Key. Then one store
 * transaction inserts the job (or finds the earlier one for a repeated key), and only
 * after it commits does the client get 201 and the id.
 */
#include "api_internal.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/fsutil.h"
#include "bn_engine.h"
#include "base/checksum.h"
#include "formats/hf.h"
#include "hub/hub.h"


/* ---- job JSON ------------------------------------------------------------------------ */

static void add_time(cJSON *o, const char *key, int64_t ms)
{
    char buf[32];
    if (ms > 0) cJSON_AddStringToObject(o, key, bn_api_time(ms, buf));
    else cJSON_AddNullToObject(o, key);
}

static void add_str_or_null(cJSON *o, const char *key, const char *v)
{
    if (v) cJSON_AddStringToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

static int stage_index(const char *name)
{
    return name ? bn_stage_parse(name) : -1;
}

static cJSON *stages_json(const bn_store_job *j, const cJSON *timings)
{
    cJSON *arr = cJSON_CreateArray();
    int cur = stage_index(j->stage);
    for (int i = 0; i < BN_STAGE_COUNT; i++) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "name", bn_stage_name((bn_stage)i));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(timings, bn_stage_name((bn_stage)i));
        const char *state = "pending";
        double p = 0;
        if (t || (cur >= 0 && i < cur) || j->status == BN_JOB_SUCCEEDED) {
            state = "done";
            p = 1;
        } else if (i == cur) {
            state = j->status == BN_JOB_RUNNING ? "running" : "interrupted";
            p = j->stage_progress;
        }
        cJSON_AddStringToObject(s, "state", state);
        cJSON_AddNumberToObject(s, "progress", p);
        const cJSON *secs = t ? cJSON_GetObjectItemCaseSensitive(t, "seconds") : NULL;
        if (cJSON_IsNumber(secs)) cJSON_AddNumberToObject(s, "seconds", secs->valuedouble);
        cJSON_AddItemToArray(arr, s);
    }
    return arr;
}

static void add_links(cJSON *o, const char *id)
{
    cJSON *l = cJSON_AddObjectToObject(o, "links");
    static const char *const rel[][2] = {
        {"self", ""}, {"events", "/events"}, {"metrics", "/metrics"},
        {"artifacts", "/artifacts"}, {"cancel", "/cancel"},
    };
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        char url[128];
        snprintf(url, sizeof url, "/v1/jobs/%s%s", id, rel[i][1]);
        cJSON_AddStringToObject(l, rel[i][0], url);
    }
}

/* "metric_sources": {key: "<origin> (<split> split)"} for the perplexity/loss metrics. */
static void add_sources(bn_store *st, const char *id, cJSON *o)
{
    char *text = NULL;
    cJSON *src = bn_store_metric_sources_json(st, id, &text) == BN_STORE_OK ? cJSON_Parse(text) : NULL;
    free(text);
    cJSON_AddItemToObject(o, "metric_sources", src ? src : cJSON_CreateObject());
}

/* ETA (null when unknown): the larger of the projection from the overall progress and
 * the current stage's own remaining time (its elapsed time, started where the finished
 * stages' seconds end, scaled by its progress). The second follows a long stage with a
 * budget of its own, such as fine-tuning for max_minutes, that the fixed stage weights
 * of the overall progress cannot know. */
static void add_eta(cJSON *o, const bn_store_job *j, const cJSON *timings)
{
    if (j->status == BN_JOB_RUNNING && j->started_at > 0 && j->progress > 0.02 &&
        j->progress < 1) {
        double elapsed = (double)(bn_store_now_ms() - j->started_at) / 1000.0;
        double eta = elapsed * (1 - j->progress) / j->progress;
        double done = 0;
        for (const cJSON *t = timings ? timings->child : NULL; t; t = t->next) {
            const cJSON *sec = cJSON_GetObjectItemCaseSensitive(t, "seconds");
            if (cJSON_IsNumber(sec) && (!j->stage || strcmp(t->string, j->stage))) done += sec->valuedouble;
        }
        double f = j->stage_progress, in_stage = elapsed - done;
        if (f > 0.02 && f < 1 && in_stage > 0 && in_stage * (1 - f) / f > eta) eta = in_stage * (1 - f) / f;
        cJSON_AddNumberToObject(o, "eta_seconds", round(eta));
    } else {
        cJSON_AddNullToObject(o, "eta_seconds");
    }
}

static cJSON *job_json(bn_store *st, const bn_store_job *j, bool full)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "status", bn_store_status_name(j->status));
    cJSON_AddNumberToObject(o, "priority", j->priority);
    cJSON_AddStringToObject(o, "model", j->model ? j->model : "");
    cJSON_AddStringToObject(o, "output", j->output ? j->output : "");
    add_str_or_null(o, "output_dir", j->output_dir);
    add_str_or_null(o, "stage", j->stage);
    cJSON_AddNumberToObject(o, "stage_progress", j->stage_progress);
    cJSON_AddNumberToObject(o, "progress", j->progress);
    add_str_or_null(o, "detail", j->detail);
    add_str_or_null(o, "error", j->error);
    cJSON_AddNumberToObject(o, "attempts", j->attempts);
    add_str_or_null(o, "lease_owner", j->lease_owner); /* "host:pid/wN" while running */
    cJSON_AddBoolToObject(o, "cancel_requested", j->cancel_requested);
    add_time(o, "created_at", j->created_at);
    add_time(o, "started_at", j->started_at);
    add_time(o, "finished_at", j->finished_at);
    cJSON *timings = cJSON_Parse(j->stage_timings ? j->stage_timings : "{}");
    add_eta(o, j, timings);
    cJSON_AddItemToObject(o, "stages", stages_json(j, timings));
    if (full) {
        cJSON_AddItemToObject(o, "timings", timings ? timings : cJSON_CreateObject());
        timings = NULL;
        cJSON *cfg = cJSON_Parse(j->config ? j->config : "{}");
        cJSON_AddItemToObject(o, "config", cfg ? cfg : cJSON_CreateObject());
        cJSON *tv = bn_api_tracking_view(st, j);
        cJSON_AddItemToObject(o, "tracking", tv ? tv : cJSON_CreateNull());
        bn_store_metric *m = NULL;
        int n = 0;
        cJSON *mo = cJSON_AddObjectToObject(o, "metrics");
        if (bn_store_metrics_list(st, j->id, &m, &n) == BN_STORE_OK)
            for (int i = 0; i < n; i++)
                if (m[i].step < 0) cJSON_AddNumberToObject(mo, m[i].key, m[i].value);
        bn_store_metrics_free(m, n);
        add_sources(st, j->id, o);
    }
    cJSON_Delete(timings);
    add_links(o, j->id);
    return o;
}

/* Loads the job named by the path or replies 404. */
static int load_job(bn_api_req *r, bn_store *st, bn_store_job *j)
{
    int rc = bn_store_job_get(st, r->id, j);
    if (rc == BN_STORE_NOTFOUND) bn_api_problem(r, 404, "id", "no job %s", r->id);
    else if (rc) bn_api_problem(r, 500, NULL, "reading job: %s", bn_store_errmsg(st));
    return rc;
}

enum MHD_Result bn_api_job_get(bn_api_req *r)
{
    bn_store *st = bn_api_store(r);
    bn_store_job j;
    if (!st || load_job(r, st, &j)) return MHD_YES;
    enum MHD_Result ret = bn_api_reply_json(r, 200, job_json(st, &j, true));
    bn_store_job_free(&j);
    return ret;
}

/* ---- list ----------------------------------------------------------------------------- */

static bool parse_int(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s) return false;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

enum MHD_Result bn_api_jobs_list(bn_api_req *r)
{
    const char *qs = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "status");
    const char *ql = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "limit");
    const char *qc = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "cursor");
    int status = -1;
    long limit = 50, cursor = 0;
    if (qs && (status = bn_store_status_parse(qs)) < 0)
        return bn_api_problem(r, 400, "query.status", "status must be one of queued, running, "
                              "succeeded, failed, cancelled");
    if (ql && !parse_int(ql, 1, 500, &limit))
        return bn_api_problem(r, 400, "query.limit", "limit must be an integer in 1..500");
    if (qc && !parse_int(qc, 1, LONG_MAX, &cursor))
        return bn_api_problem(r, 400, "query.cursor", "cursor is not one this server issued");
    bn_store *st = bn_api_store(r);
    if (!st) return MHD_YES;
    bn_store_job *jobs;
    int n;
    int64_t next;
    if (bn_store_job_list(st, status, (int)limit, cursor, &jobs, &n, &next))
        return bn_api_problem(r, 500, NULL, "listing jobs: %s", bn_store_errmsg(st));
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "jobs");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, job_json(st, &jobs[i], false));
    bn_store_jobs_free(jobs, n);
    if (next) {
        char c[32];
        snprintf(c, sizeof c, "%lld", (long long)next);
        cJSON_AddStringToObject(o, "next_cursor", c);
    } else {
        cJSON_AddNullToObject(o, "next_cursor");
    }
    return bn_api_reply_json(r, 200, o);
}

/* ---- submit --------------------------------------------------------------------------- */

/* Raw JSON literal of a top-level string member, to see escapes cJSON decodes away. */
static bool raw_has_nul(const char *body, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(body, pat);
    if (!p) return false;
    p = strchr(p + strlen(pat), '"');
    if (!p) return false;
    for (p++; *p && *p != '"'; p++) {
        if (*p == '\\') {
            if (strncmp(p, "\\u0000", 6) == 0) return true;
            if (p[1]) p++;
        }
    }
    return false;
}

typedef struct submit {
    const char *model, *output, *idem;
    cJSON *config, *tracking;
    int priority;
    char mode[16];
    const char *project, *entity;
} submit;

static enum MHD_Result check_tracking(bn_api_req *r, cJSON *tracking, submit *s)
{
    const char *dflt = r->api->cfg.wandb_default_mode; /* the daemon's one decision */
    snprintf(s->mode, sizeof s->mode, "%s", dflt ? dflt : "disabled");
    s->project = r->api->cfg.wandb_project;
    s->entity = r->api->cfg.wandb_entity;
    if (!tracking) return MHD_YES;
    if (!cJSON_IsObject(tracking))
        return bn_api_problem(r, 400, "/tracking", "tracking must be an object");
    cJSON *it;
    cJSON_ArrayForEach(it, tracking) {
        if (strcmp(it->string, "wandb") != 0)
            return bn_api_problem(r, 400, "/tracking", "unknown field tracking.%s", it->string);
    }
    cJSON *w = cJSON_GetObjectItemCaseSensitive(tracking, "wandb");
    if (!w) return MHD_YES;
    if (!cJSON_IsObject(w))
        return bn_api_problem(r, 400, "/tracking/wandb", "tracking.wandb must be an object");
    static const char *const str_keys[] = {"mode", "project", "entity", "name", "group",
                                           "notes", "job_type"};
    cJSON_ArrayForEach(it, w) {
        bool known = strcmp(it->string, "tags") == 0;
        for (size_t i = 0; i < sizeof str_keys / sizeof str_keys[0]; i++)
            if (strcmp(it->string, str_keys[i]) == 0) {
                known = true;
                if (!cJSON_IsString(it))
                    return bn_api_problem(r, 400, "/tracking/wandb", "tracking.wandb.%s must "
                                          "be a string", it->string);
            }
        if (!known)
            return bn_api_problem(r, 400, "/tracking/wandb", "unknown field tracking.wandb.%s",
                                  it->string);
        if (strcmp(it->string, "tags") == 0) {
            cJSON *t;
            if (!cJSON_IsArray(it))
                return bn_api_problem(r, 400, "/tracking/wandb/tags", "tags must be an array");
            cJSON_ArrayForEach(t, it) if (!cJSON_IsString(t))
                return bn_api_problem(r, 400, "/tracking/wandb/tags", "tags must be strings");
        }
    }
    cJSON *mode = cJSON_GetObjectItemCaseSensitive(w, "mode");
    if (mode) {
        const char *m = mode->valuestring;
        if (strcmp(m, "online") && strcmp(m, "offline") && strcmp(m, "disabled"))
            return bn_api_problem(r, 400, "/tracking/wandb/mode",
                                  "mode must be online, offline or disabled");
        snprintf(s->mode, sizeof s->mode, "%s", m);
    }
    cJSON *p = cJSON_GetObjectItemCaseSensitive(w, "project");
    cJSON *e = cJSON_GetObjectItemCaseSensitive(w, "entity");
    if (p) s->project = p->valuestring;
    if (e) s->entity = e->valuestring;
    return MHD_YES;
}

/* Shape and types of the request object; fills s. Replies on error. */
static enum MHD_Result check_shape(bn_api_req *r, cJSON *root, submit *s)
{
    cJSON *it;
    cJSON_ArrayForEach(it, root) {
        const char *k = it->string;
        if (strcmp(k, "model") && strcmp(k, "output") && strcmp(k, "config") &&
            strcmp(k, "tracking") && strcmp(k, "priority")) {
            char f[160];
            snprintf(f, sizeof f, "/%.150s", k);
            return bn_api_problem(r, 400, f, "unknown field \"%.150s\"", k);
        }
    }
    cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    cJSON *output = cJSON_GetObjectItemCaseSensitive(root, "output");
    cJSON *prio = cJSON_GetObjectItemCaseSensitive(root, "priority");
    s->config = cJSON_GetObjectItemCaseSensitive(root, "config");
    s->tracking = cJSON_GetObjectItemCaseSensitive(root, "tracking");
    if (!model) return bn_api_problem(r, 400, "/model", "model is required");
    if (!cJSON_IsString(model) || !*model->valuestring)
        return bn_api_problem(r, 400, "/model", "model must be a non-empty string");
    if (output && !cJSON_IsString(output))
        return bn_api_problem(r, 400, "/output", "output must be a string");
    if (prio && (!cJSON_IsNumber(prio) || prio->valuedouble != floor(prio->valuedouble) ||
                 fabs(prio->valuedouble) > 1000))
        return bn_api_problem(r, 400, "/priority", "priority must be an integer in "
                              "-1000..1000");
    if (s->config && !cJSON_IsObject(s->config))
        return bn_api_problem(r, 400, "/config", "config must be an object");
    if (raw_has_nul(r->body, "model"))
        return bn_api_problem(r, 403, "/model", "model path must not contain NUL");
    if (raw_has_nul(r->body, "output"))
        return bn_api_problem(r, 403, "/output", "output must not contain NUL");
    s->model = model->valuestring;
    s->output = output ? output->valuestring : NULL;
    s->priority = prio ? prio->valueint : 0;
    return MHD_YES;
}

/* The model's config.json is read as the engine will read it, so that a model the engine
 * would compute differently from transformers (an unsupported rope type, activation, ...)
 * is refused now, naming the key, instead of failing later in its load stage. An hf://
 * source is not fetched here: its load stage reads the config after the download. */
static int check_model_config(bn_api_req *r, const char *model_dir)
{
    if (bn_hub_is_source(model_dir)) return 0;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    bn_model_config cfg;
    bn_err err = {0};
    if (bn_hf_config_load(path, &cfg, &err) == 0) return 0;
    bn_api_problem(r, 400, "/model", "%s", err.msg);
    return -1;
}

static enum MHD_Result check_config(bn_api_req *r, cJSON *config)
{
    bn_options opt;
    bn_err err = {0};
    if (bn_options_from_json(config, &opt, &err) != 0) {
        return bn_api_problem(r, 400, err.field[0] ? err.field : "/config", "%s",
                              err.msg[0] ? err.msg : "invalid config");
    }
    bn_options_free(&opt);
    return MHD_YES;
}

static void default_output(const char *model, char *out, size_t len)
{
    const char *base = strrchr(model, '/');
    base = base ? base + 1 : model;
    uint8_t rnd[4] = {0};
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) rnd[0] = (uint8_t)clock();
    char clean[64];
    size_t k = 0;
    for (const char *p = base; *p && k < sizeof clean - 1; p++)
        clean[k++] = (strchr("._-", *p) || (*p >= '0' && *p <= '9') ||
                      (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) ? *p : '_';
    clean[k] = 0;
    if (!k || clean[0] == '.') snprintf(clean, sizeof clean, "model");
    snprintf(out, len, "%s-bitnet-%02x%02x%02x%02x", clean, rnd[0], rnd[1], rnd[2], rnd[3]);
}

static enum MHD_Result create_job(bn_api_req *r, bn_store *st, submit *s,
                                  const char *model_real, const char *output,
                                  const char *output_dir)
{
    char hash[65];
    if (bn_sha256_hex(r->body, r->body_len, hash))
        return bn_api_problem(r, 500, NULL, "creating job: SHA-256 of the request failed");
    char *config = s->config ? cJSON_PrintUnformatted(s->config) : strdup("{}");
    char *tracking = s->tracking ? cJSON_PrintUnformatted(s->tracking) : strdup("{}");
    bn_store_new_job nj = {
        .priority = s->priority, .model = model_real, .output = output,
        .output_dir = output_dir, .config = config, .tracking = tracking,
        .wandb_mode = s->mode, .wandb_entity = s->entity, .wandb_project = s->project,
        .idempotency_key = s->idem, .request_hash = hash, .max_queued = r->api->cfg.max_queued,
    };
    bn_store_job j;
    bool existed = false;
    int rc = bn_store_job_create(st, &nj, &j, &existed);
    free(config);
    free(tracking);
    if (rc == BN_STORE_FULL) return bn_api_problem(r, 429, NULL, "%s", bn_store_errmsg(st));
    if (rc == BN_STORE_CONFLICT) {
        bn_store_job_free(&j);
        return bn_api_problem(r, 409, existed ? "header.Idempotency-Key" : "/output", "%s",
                              bn_store_errmsg(st));
    }
    if (rc && bn_store_disk_full(st))
        return bn_api_problem(r, 507, NULL, "the state folder is full; free space and retry: %s",
                              bn_store_errmsg(st));
    if (rc) return bn_api_problem(r, 500, NULL, "creating job: %s", bn_store_errmsg(st));
    if (!existed)
        bn_api_log(r->api, 6, "job %s queued: model %s -> %s", j.id, model_real, output);
    cJSON *o = job_json(st, &j, true);
    char loc[128];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", j.id);
    bn_store_job_free(&j);
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!body) return bn_api_problem(r, 500, NULL, "out of memory");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, loc);
    if (existed) MHD_add_response_header(resp, "Idempotent-Replayed", "true");
    return bn_api_queue(r, existed ? 200 : 201, resp);
}

static bool content_type_json(const char *ct)
{
    if (!ct) return false;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == 0 || ct[n] == ';' ||
                                                           ct[n] == ' ');
}

static enum MHD_Result submit_parsed(bn_api_req *r, cJSON *root)
{
    submit s = {0};
    if (!r->replied) check_shape(r, root, &s);
    if (!r->replied) check_tracking(r, s.tracking, &s);
    if (!r->replied) check_config(r, s.config);
    if (r->replied) return MHD_YES;
    s.idem = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Idempotency-Key");
    if (s.idem && (!*s.idem || strlen(s.idem) > 255))
        return bn_api_problem(r, 400, "header.Idempotency-Key",
                              "Idempotency-Key must be 1..255 characters");
    char model_real[PATH_MAX], output_dir[PATH_MAX], why[256], defname[128];
    unsigned code;
    if (bn_api_check_model(r->api, s.model, model_real, sizeof model_real, &code, why,
                           sizeof why))
        return bn_api_problem(r, code, "/model", "%s", why);
    if (check_model_config(r, model_real)) return MHD_YES;
    const char *output = s.output;
    if (!output) {
        default_output(model_real, defname, sizeof defname);
        output = defname;
    }
    bn_store *st = bn_api_store(r);
    if (!st) return MHD_YES;
    if (bn_api_check_output(r->api, output, output_dir, sizeof output_dir, &code, why,
                            sizeof why)) {
        /* a repeated request whose job already produced the folder is still a replay */
        if (!(code == 409 && s.idem))
            return bn_api_problem(r, code, "/output", "%s", why);
        snprintf(output_dir, sizeof output_dir, "%s/%s", r->api->output_root, output);
    }
    return create_job(r, st, &s, model_real, output, output_dir);
}

enum MHD_Result bn_api_jobs_submit(bn_api_req *r)
{
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
    if (!content_type_json(ct))
        return bn_api_problem(r, 415, "header.Content-Type",
                              "Content-Type must be application/json (got %s)",
                              ct ? ct : "none");
    if (atomic_load(&r->api->draining))
        return bn_api_problem(r, 503, NULL, "bitnetd is shutting down; retry later");
    if (!r->body || !r->body_len)
        return bn_api_problem(r, 400, "body", "request body is empty");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(r->body, r->body_len, &end, false);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at ? (long)(at - r->body) : 0;
        if (off < 0 || (size_t)off > r->body_len) off = 0;
        return bn_api_problem(r, 400, "body", "malformed JSON near byte %ld", off);
    }
    enum MHD_Result ret;
    if (!cJSON_IsObject(root))
        ret = bn_api_problem(r, 400, "body", "the request body must be a JSON object");
    else
        ret = submit_parsed(r, root);
    cJSON_Delete(root);
    return ret;
}

/* ---- cancel / delete ------------------------------------------------------------------ */

static void work_dir(bn_api *api, const char *id, char *out, size_t len)
{
    snprintf(out, len, "%s/work/%s", api->state_dir, id);
}

enum MHD_Result bn_api_job_cancel(bn_api_req *r)
{
    bn_store *st = bn_api_store(r);
    if (!st) return MHD_YES;
    bool final = false;
    int rc = bn_store_job_cancel(st, r->id, &final);
    if (rc == BN_STORE_NOTFOUND) return bn_api_problem(r, 404, "id", "no job %s", r->id);
    if (rc == BN_STORE_CONFLICT) return bn_api_problem(r, 409, "id", "%s", bn_store_errmsg(st));
    if (rc) return bn_api_problem(r, 500, NULL, "cancel: %s", bn_store_errmsg(st));
    if (final) { /* a queued job may hold a work folder from an interrupted run */
        char wd[PATH_MAX];
        work_dir(r->api, r->id, wd, sizeof wd);
        bn_fs_rm_rf(wd, NULL);
    }
    bn_api_log(r->api, 6, "job %s: cancel %s", r->id, final ? "done" : "requested");
    bn_store_job j;
    if (load_job(r, st, &j)) return MHD_YES;
    enum MHD_Result ret = bn_api_reply_json(r, final ? 200 : 202, job_json(st, &j, true));
    bn_store_job_free(&j);
    return ret;
}

enum MHD_Result bn_api_job_delete(bn_api_req *r)
{
    const char *purge = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "purge");
    if (purge && strcmp(purge, "true") && strcmp(purge, "false"))
        return bn_api_problem(r, 400, "query.purge", "purge must be true or false");
    bn_store *st = bn_api_store(r);
    bn_store_job j;
    if (!st || load_job(r, st, &j)) return MHD_YES;
    int rc = bn_store_job_delete(st, r->id);
    if (rc == BN_STORE_CONFLICT) {
        bn_store_job_free(&j);
        return bn_api_problem(r, 409, "id", "job %s is %s; cancel it first", r->id,
                              bn_store_status_name(j.status));
    }
    if (rc == BN_STORE_NOTFOUND) {
        bn_store_job_free(&j);
        return bn_api_problem(r, 404, "id", "no job %s", r->id);
    }
    if (rc) {
        bn_store_job_free(&j);
        return bn_api_problem(r, 500, NULL, "delete: %s", bn_store_errmsg(st));
    }
    char wd[PATH_MAX];
    work_dir(r->api, r->id, wd, sizeof wd);
    bn_fs_rm_rf(wd, NULL);
    if (purge && strcmp(purge, "true") == 0 && j.output_dir) bn_fs_rm_rf(j.output_dir, NULL);
    bn_store_job_free(&j);
    return bn_api_reply(r, 204, NULL, "", 0, false);
}

/* ---- events and metrics ----------------------------------------------------------------- */

enum MHD_Result bn_api_job_events(bn_api_req *r)
{
    const char *qa = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "after");
    const char *ql = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "limit");
    long after = 0, limit = 1000;
    if (qa && !parse_int(qa, 0, LONG_MAX, &after))
        return bn_api_problem(r, 400, "query.after", "after must be a non-negative integer");
    if (ql && !parse_int(ql, 1, 10000, &limit))
        return bn_api_problem(r, 400, "query.limit", "limit must be an integer in 1..10000");
    bn_store *st = bn_api_store(r);
    bn_store_job j;
    if (!st || load_job(r, st, &j)) return MHD_YES;
    bn_store_job_free(&j);
    bn_store_event *ev;
    int n;
    if (bn_store_events_list(st, r->id, after, (int)limit, &ev, &n))
        return bn_api_problem(r, 500, NULL, "events: %s", bn_store_errmsg(st));
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "events");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, bn_api_event_json(&ev[i]));
    bn_store_events_free(ev, n);
    return bn_api_reply_json(r, 200, o);
}

enum MHD_Result bn_api_job_metrics(bn_api_req *r)
{
    bn_store *st = bn_api_store(r);
    bn_store_job j;
    if (!st || load_job(r, st, &j)) return MHD_YES;
    bn_store_job_free(&j);
    bn_store_metric *m;
    int n;
    if (bn_store_metrics_list(st, r->id, &m, &n))
        return bn_api_problem(r, 500, NULL, "metrics: %s", bn_store_errmsg(st));
    cJSON *o = cJSON_CreateObject();
    cJSON *summary = cJSON_AddObjectToObject(o, "metrics");
    cJSON *history = cJSON_AddObjectToObject(o, "history");
    for (int i = 0; i < n; i++) {
        if (m[i].step < 0) {
            cJSON_AddNumberToObject(summary, m[i].key, m[i].value);
            continue;
        }
        cJSON *series = cJSON_GetObjectItemCaseSensitive(history, m[i].key);
        if (!series) series = cJSON_AddArrayToObject(history, m[i].key);
        cJSON *pt = cJSON_CreateArray();
        cJSON_AddItemToArray(pt, cJSON_CreateNumber((double)m[i].step));
        cJSON_AddItemToArray(pt, cJSON_CreateNumber(m[i].value));
        cJSON_AddItemToArray(series, pt);
    }
    bn_store_metrics_free(m, n);
    add_sources(st, r->id, o);
    return bn_api_reply_json(r, 200, o);
}
