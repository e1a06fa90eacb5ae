/* tracker.c - the tracker thread (see tracker.h for the design).
 *
 * Per-job scheduling state (next attempt time, attempt count, last request time) lives
 * in memory only: after a restart every job is simply due at once, and the durable
 * outbox (frozen offsets and lines) makes the re-sends identical. History lines carry
 * _runtime (seconds since the job's first tracked row) and _timestamp (the row's commit
 * time), both fixed when the row is frozen.
 */
#include "tracker.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "bn_store_wandb.h"
#include "wandb.h"
#include "wandb_spool.h"

#define MAX_TAGS 64

typedef struct job_sched {
    char id[BN_STORE_ID_LEN];
    int64_t next_at, last_sent;
    int attempt;
    bool seen; /* in this pass's work list */
} job_sched;

struct bn_tracker {
    bn_tracker_config cfg;
    char *base_url, *api_key, *app_url, *entity, *project, *db_path;
    bn_store *st;
    bn_wandb_client *cl;
    job_sched *sched;
    int n_sched;
    uint64_t rng;
    pthread_t th;
    bool running;
    int64_t started_at;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool woken;
    atomic_bool stop;
    atomic_llong last_pass;
    atomic_llong c_requests, c_ok, c_retries, c_fatal, c_heartbeats, c_spooled;
};

int64_t bn_tracker_monotonic_ms(void)
{
    return bn_clock_mono_ms();
}

/* A line to the owner's log (bn_tracker_config.log). */
#define logf_(t, level, ...) bn_log_send((t)->cfg.log, (t)->cfg.log_ctx, level, __VA_ARGS__)

/* ---- configuration ------------------------------------------------------------------- */

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

void bn_tracker_config_from_env(bn_tracker_config *cfg)
{
    if (!cfg->base_url) cfg->base_url = env_nonempty("WANDB_BASE_URL");
    if (!cfg->api_key) cfg->api_key = env_nonempty("WANDB_API_KEY");
    if (!cfg->default_entity) cfg->default_entity = env_nonempty("WANDB_ENTITY");
    if (!cfg->default_project) cfg->default_project = env_nonempty("WANDB_PROJECT");
    if (!cfg->app_url) cfg->app_url = env_nonempty("WANDB_APP_URL");
}

const char *bn_tracker_default_mode(bool *invalid)
{
    *invalid = false;
    const char *v = env_nonempty("WANDB_MODE");
    if (!v) return NULL;
    int m = bn_wandb_mode_parse(v);
    if (m < 0) {
        *invalid = true;
        return NULL;
    }
    return bn_wandb_mode_name((bn_wandb_mode)m);
}

char *bn_tracker_read_key_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "W&B key file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[512];
    char *line = fgets(buf, sizeof buf, f);
    fclose(f);
    if (!line) {
        snprintf(err, errlen, "W&B key file %s: empty", path);
        return NULL;
    }
    char *s = buf;
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strcspn(s, "\r\n");
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    s[n] = '\0';
    char *key = n ? strdup(s) : NULL;
    if (!n) snprintf(err, errlen, "W&B key file %s: empty", path);
    memset(buf, 0, sizeof buf);
    return key;
}

/* "https://api.wandb.ai" -> "https://wandb.ai"; other hosts unchanged. */
static char *derive_app_url(const char *base)
{
    const char *p = strstr(base, "://api.");
    if (!p) return strdup(base);
    size_t head = (size_t)(p - base) + 3;
    char *o = malloc(strlen(base) + 1);
    if (!o) return NULL;
    memcpy(o, base, head);
    strcpy(o + head, p + 7);
    return o;
}

static char *xdup(const char *s) { return s ? strdup(s) : NULL; }

int bn_tracker_open(const bn_tracker_config *cfg, bn_tracker **out, char *err, size_t errlen)
{
    *out = NULL;
    bn_tracker *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    t->cfg = *cfg;
    t->db_path = xdup(cfg->db_path);
    t->base_url = xdup(cfg->base_url ? cfg->base_url : BN_WANDB_DEFAULT_BASE_URL);
    t->api_key = xdup(cfg->api_key);
    t->entity = xdup(cfg->default_entity);
    t->project = xdup(cfg->default_project ? cfg->default_project : "bitnetd");
    t->app_url = cfg->app_url ? xdup(cfg->app_url) : derive_app_url(t->base_url);
    t->cfg.db_path = t->cfg.base_url = t->cfg.api_key = NULL; /* only the copies are used */
    t->cfg.app_url = t->cfg.default_entity = t->cfg.default_project = NULL;
#define DEF(f, v) if (t->cfg.f <= 0) t->cfg.f = (v)
    DEF(poll_ms, 500);
    DEF(heartbeat_ms, 30000);
    DEF(min_interval_ms, 1000);
    DEF(backoff_base_ms, 2000);
    DEF(backoff_cap_ms, 60000);
    DEF(timeout_ms, 60000);
    DEF(max_batch_lines, 1000);
    if (t->cfg.max_body_bytes == 0) t->cfg.max_body_bytes = 8u << 20;
#undef DEF
    t->rng = (uint64_t)bn_tracker_monotonic_ms() * 0x9e3779b97f4a7c15ull | 1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    atomic_init(&t->stop, false);
    bn_wandb_client_opts o = { .base_url = t->base_url, .api_key = t->api_key,
                               .timeout_ms = t->cfg.timeout_ms, .abort_flag = &t->stop };
    t->cl = bn_wandb_client_new(&o);
    if (!t->db_path || !t->base_url || !t->project || !t->app_url || !t->cl) {
        snprintf(err, errlen, "tracker: %s", t->cl ? "missing store path" : "cannot initialise libcurl");
        bn_tracker_close(t);
        return -1;
    }
    if (bn_store_open(t->db_path, &t->st, err, errlen) != BN_STORE_OK) {
        bn_tracker_close(t);
        return -1;
    }
    *out = t;
    return 0;
}

void bn_tracker_close(bn_tracker *t)
{
    if (!t) return;
    if (t->running) bn_tracker_stop(t);
    if (t->st) bn_store_close(t->st);
    bn_wandb_client_free(t->cl);
    if (t->api_key) memset(t->api_key, 0, strlen(t->api_key));
    free(t->api_key);
    free(t->base_url);
    free(t->app_url);
    free(t->entity);
    free(t->project);
    free(t->db_path);
    free(t->sched);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

/* ---- per-job schedule ------------------------------------------------------------------ */

static job_sched *sched_get(bn_tracker *t, const char *id)
{
    for (int i = 0; i < t->n_sched; i++)
        if (!strcmp(t->sched[i].id, id)) return &t->sched[i];
    job_sched *ns = realloc(t->sched, (size_t)(t->n_sched + 1) * sizeof *ns);
    if (!ns) return NULL;
    t->sched = ns;
    job_sched *s = &t->sched[t->n_sched++];
    memset(s, 0, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", id);
    return s;
}

static void sched_prune(bn_tracker *t)
{
    int k = 0;
    for (int i = 0; i < t->n_sched; i++)
        if (t->sched[i].seen) {
            t->sched[i].seen = false;
            t->sched[k++] = t->sched[i];
        }
    t->n_sched = k;
}

/* ---- run identity ---------------------------------------------------------------------- */

/* tracking.wandb.<k>, else tracking.<k> (a string), else NULL. */
static const char *tracking_str(const cJSON *tr, const char *k)
{
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(tr, "wandb");
    const cJSON *v = cJSON_IsObject(w) ? cJSON_GetObjectItemCaseSensitive(w, k) : NULL;
    if (!cJSON_IsString(v)) v = cJSON_GetObjectItemCaseSensitive(tr, k);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

static const cJSON *tracking_item(const cJSON *tr, const char *k)
{
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(tr, "wandb");
    const cJSON *v = cJSON_IsObject(w) ? cJSON_GetObjectItemCaseSensitive(w, k) : NULL;
    return v ? v : cJSON_GetObjectItemCaseSensitive(tr, k);
}

/* The run config: the job's config plus "metric_sources" (where each perplexity/loss
 * metric's text came from) once the job has recorded them. */
static char *config_with_sources(const bn_store_wandb_job *j)
{
    cJSON *src = j->sources ? cJSON_Parse(j->sources) : NULL;
    if (!cJSON_IsObject(src) || !src->child) {
        cJSON_Delete(src);
        return bn_wandb_config_string(j->config);
    }
    cJSON *cfg = cJSON_Parse(j->config && *j->config ? j->config : "{}");
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        cJSON_Delete(src);
        return NULL;
    }
    cJSON_AddItemToObject(cfg, "metric_sources", src);
    char *text = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    char *out = text ? bn_wandb_config_string(text) : NULL;
    free(text);
    return out;
}

/* UpsertBucket variables for a job (NULL on a bad config). */
static cJSON *run_variables(bn_tracker *t, const bn_store_wandb_job *j)
{
    cJSON *tr = j->tracking ? cJSON_Parse(j->tracking) : NULL;
    const char *tags[MAX_TAGS];
    int n_tags = 0;
    const cJSON *jt = tracking_item(tr, "tags");
    if (cJSON_IsString(jt)) tags[n_tags++] = jt->valuestring;
    for (const cJSON *x = cJSON_IsArray(jt) ? jt->child : NULL; x && n_tags < MAX_TAGS; x = x->next)
        if (cJSON_IsString(x)) tags[n_tags++] = x->valuestring;
    char *config = config_with_sources(j);
    const char *entity = tracking_str(tr, "entity");
    const char *project = tracking_str(tr, "project");
    const char *group = tracking_str(tr, "group");
    if (!group) group = tracking_str(tr, "run_group");
    const char *display = tracking_str(tr, "name");
    if (!display) display = tracking_str(tr, "display_name");
    const char *job_type = tracking_str(tr, "job_type");
    bn_wandb_run_spec spec = {
        .name = j->id,
        .entity = entity ? entity : (j->entity ? j->entity : t->entity),
        .project = project ? project : (j->project ? j->project : t->project),
        .display_name = display ? display : j->output,
        .group = group,
        .job_type = job_type ? job_type : "compress",
        .notes = tracking_str(tr, "notes"),
        .tags = tags,
        .n_tags = n_tags,
        .config = config,
    };
    cJSON *v = config ? bn_wandb_upsert_variables(&spec) : NULL;
    free(config);
    cJSON_Delete(tr);
    return v;
}

/* ---- rendering (called inside the freeze transaction) ------------------------------------ */

typedef struct render_ctx {
    int64_t start_ms;
} render_ctx;

/* The producer's step (-1 for job-level metrics, >= 0 for per-step history such as
 * fine_tune/loss) is not W&B's _step: W&B needs one strictly increasing _step per line,
 * so _step is the line's history offset, and a per-step row keeps its own step as
 * "<group>/step" (group = the first key's prefix before '/', e.g. fine_tune/step). */
static cJSON *history_payload(const char *payload, int64_t offset)
{
    cJSON *p = bn_wandb_parse_ext(payload);
    if (!cJSON_IsObject(p)) {
        cJSON_Delete(p);
        return NULL;
    }
    cJSON *st = cJSON_DetachItemFromObjectCaseSensitive(p, "_step");
    int64_t step = cJSON_IsNumber(st) ? (int64_t)st->valuedouble : -1;
    cJSON_Delete(st);
    if (step >= 0) {
        const char *first = NULL;
        for (cJSON *it = p->child; it && !first; it = it->next)
            if (it->string[0] != '_') first = it->string;
        const char *slash = first ? strchr(first, '/') : NULL;
        char key[160];
        if (slash) snprintf(key, sizeof key, "%.*s/step", (int)(slash - first), first);
        else snprintf(key, sizeof key, "step");
        if (!cJSON_GetObjectItemCaseSensitive(p, key)) cJSON_AddNumberToObject(p, key, (double)step);
    }
    cJSON *front = cJSON_CreateNumber((double)offset);
    if (!front || !(front->string = strdup("_step"))) {
        cJSON_Delete(front);
        cJSON_Delete(p);
        return NULL;
    }
    cJSON_InsertItemInArray(p, 0, front); /* _step first, as W&B writes it */
    return p;
}

static char *render_row(void *ctx, const char *kind, const char *payload, int64_t created_at,
                        int64_t offset)
{
    const render_ctx *rc = ctx;
    double runtime = (double)(created_at - rc->start_ms) / 1000.0;
    if (runtime < 0) runtime = 0;
    cJSON *extra = cJSON_CreateObject();
    bool summary = !strcmp(kind, "summary");
    if (summary && offset > 0) cJSON_AddNumberToObject(extra, "_step", (double)(offset - 1));
    cJSON_AddNumberToObject(extra, "_runtime", runtime);
    cJSON_AddNumberToObject(extra, "_timestamp", (double)created_at / 1000.0);
    if (summary) {
        cJSON *w = cJSON_AddObjectToObject(extra, "_wandb");
        cJSON_AddNumberToObject(w, "runtime", (double)(int64_t)runtime);
    }
    char *line = NULL;
    if (summary) {
        line = bn_wandb_render_line(payload, extra);
    } else {
        cJSON *hp = history_payload(payload, offset);
        if (hp) line = bn_wandb_render_object(hp, extra);
        cJSON_Delete(hp);
    }
    cJSON_Delete(extra);
    return line;
}

/* ---- batches ----------------------------------------------------------------------------- */

typedef struct batch {
    char *body;
    int64_t last_id;   /* last row included; -1 when none */
    int next;          /* index of the first row not included */
    bool complete;
    int n_lines;
} batch;

static int exitcode_of(const char *payload)
{
    cJSON *j = payload ? cJSON_Parse(payload) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "exitcode");
    int code = cJSON_IsNumber(e) ? e->valueint : 1;
    cJSON_Delete(j);
    return code;
}

/* Takes rows[start..] in id order while they are frozen, contiguous and within limits.
 * A complete row ends the batch (it is always the job's last row). */
static int build_batch(const bn_tracker *t, const bn_store_outbox_row *rows, int n, int start, batch *b)
{
    memset(b, 0, sizeof *b);
    b->last_id = -1;
    const char **hist = malloc((size_t)(n > 0 ? n : 1) * sizeof *hist);
    if (!hist) return -1;
    int64_t off0 = -1;
    size_t bytes = 0;
    const char *summary = NULL;
    int exitcode = 0, i = start;
    for (; i < n; i++) {
        const bn_store_outbox_row *r = &rows[i];
        if (!strcmp(r->kind, "complete")) {
            b->complete = true;
            exitcode = exitcode_of(r->payload);
            b->last_id = r->id;
            i++;
            break;
        }
        if (r->offset < 0 || !r->payload) break; /* not frozen yet: next pass */
        size_t len = strlen(r->payload) + 8;
        if (!strcmp(r->kind, "history")) {
            if (off0 >= 0 && r->offset != off0 + b->n_lines) break;
            if (b->n_lines > 0 && (b->n_lines >= t->cfg.max_batch_lines ||
                                   bytes + len > t->cfg.max_body_bytes))
                break;
            if (off0 < 0) off0 = r->offset;
            hist[b->n_lines++] = r->payload;
        } else {
            summary = r->payload; /* the latest whole summary wins */
        }
        bytes += len;
        b->last_id = r->id;
    }
    b->next = i;
    bn_wandb_fs_batch fb = { .history_offset = off0 < 0 ? 0 : off0, .history = hist,
                             .n_history = b->n_lines, .summary = summary,
                             .complete = b->complete, .exitcode = exitcode };
    b->body = b->last_id >= 0 ? bn_wandb_fs_body(&fb) : NULL;
    free(hist);
    return (b->last_id >= 0 && !b->body) ? -1 : 0;
}

/* ---- online delivery ---------------------------------------------------------------------- */

static void schedule_retry(bn_tracker *t, job_sched *s, int64_t now, const bn_wandb_result *res)
{
    int64_t d = bn_wandb_backoff_ms(s->attempt, t->cfg.backoff_base_ms, t->cfg.backoff_cap_ms,
                                    res->retry_after_ms, &t->rng);
    s->attempt++;
    s->next_at = now + d;
    atomic_fetch_add(&t->c_retries, 1);
}

/* Handles a failed attempt; returns 0 (the pass goes on) or -1 on a store error. */
static int on_failure(bn_tracker *t, const bn_store_wandb_job *j, job_sched *s, int64_t now,
                      const bn_wandb_result *res, const char *what)
{
    char msg[600];
    snprintf(msg, sizeof msg, "%s: %s", what, res->message);
    if (res->outcome == BN_WANDB_FATAL) {
        atomic_fetch_add(&t->c_fatal, 1);
        logf_(t, 1, "W&B tracking of %s failed: %s", j->id, msg);
        return bn_store_wandb_error(t->st, j->id, j->mode, msg, true) ? -1 : 0;
    }
    schedule_retry(t, s, now, res);
    if (atomic_load(&t->stop)) return 0; /* aborted by shutdown: not a server error */
    logf_(t, 3, "W&B %s for %s: retry %d in %lld ms", msg, j->id, s->attempt,
          (long long)(s->next_at - now));
    bool changed = !j->last_error || strcmp(j->last_error, msg);
    return (changed && bn_store_wandb_error(t->st, j->id, j->mode, msg, false)) ? -1 : 0;
}

static int ensure_run_online(bn_tracker *t, bn_store_wandb_job *j, job_sched *s, int64_t now, bool *ready)
{
    *ready = j->run_status && !strcmp(j->run_status, "active");
    if (*ready) return 0;
    if (!t->api_key) {
        bn_wandb_result r = { .outcome = BN_WANDB_FATAL };
        snprintf(r.message, sizeof r.message,
                 "no W&B API key configured (set WANDB_API_KEY or the daemon's W&B key file)");
        return on_failure(t, j, s, now, &r, "UpsertBucket");
    }
    cJSON *vars = run_variables(t, j);
    if (!vars) {
        bn_wandb_result r = { .outcome = BN_WANDB_FATAL };
        snprintf(r.message, sizeof r.message, "the job config is not a JSON object");
        return on_failure(t, j, s, now, &r, "UpsertBucket");
    }
    bn_wandb_run run;
    bn_wandb_result res;
    atomic_fetch_add(&t->c_requests, 1);
    int rc = bn_wandb_upsert_bucket(t->cl, vars, &run, &res);
    cJSON_Delete(vars);
    s->last_sent = now;
    if (rc) return on_failure(t, j, s, now, &res, "UpsertBucket");
    atomic_fetch_add(&t->c_ok, 1);
    char url[2048];
    snprintf(url, sizeof url, "%s/%s/%s/runs/%s", t->app_url, run.entity, run.project, run.name);
    int src = bn_store_wandb_run_started(t->st, j->id, j->mode, run.name, run.entity, run.project, url);
    if (!src) {
        char ev[2200];
        snprintf(ev, sizeof ev, "W&B run %s", url);
        bn_store_event_add(t->st, j->id, NULL, NULL, "info", ev);
        logf_(t, 2, "W&B run for %s: %s", j->id, url);
        free(j->entity), j->entity = xdup(run.entity);
        free(j->project), j->project = xdup(run.project);
        free(j->run_id), j->run_id = xdup(run.name);
        s->attempt = 0;
        *ready = true;
    }
    bn_wandb_run_free(&run);
    return src ? -1 : 0;
}

/* Sends one file_stream request for the job (data, or a heartbeat when due). */
static int send_online(bn_tracker *t, bn_store_wandb_job *j, job_sched *s, int64_t now)
{
    bn_store_outbox_row *rows = NULL;
    int n = 0;
    if (bn_store_wandb_pending(t->st, j->id, t->cfg.max_batch_lines + 2, &rows, &n)) return -1;
    batch b;
    if (build_batch(t, rows, n, 0, &b)) {
        bn_store_outbox_rows_free(rows, n);
        return -1;
    }
    bool more = b.next < n || n == t->cfg.max_batch_lines + 2;
    bn_store_outbox_rows_free(rows, n);
    if (b.complete && j->sources) {
        /* the run's config gains the metric sources the job recorded (an upsert of the
         * same run updates its config) before the last batch closes the run */
        cJSON *vars = run_variables(t, j);
        bn_wandb_run run;
        bn_wandb_result res;
        int urc = vars ? 0 : -1;
        if (vars) {
            atomic_fetch_add(&t->c_requests, 1);
            urc = bn_wandb_upsert_bucket(t->cl, vars, &run, &res);
            cJSON_Delete(vars);
            if (!urc) bn_wandb_run_free(&run);
        }
        if (urc) {
            free(b.body);
            if (!vars) return 0;
            s->last_sent = now;
            return on_failure(t, j, s, now, &res, "UpsertBucket");
        }
        atomic_fetch_add(&t->c_ok, 1);
    }
    bool heartbeat = false;
    if (!b.body) {
        if (j->status != BN_JOB_RUNNING || now - s->last_sent < t->cfg.heartbeat_ms) {
            /* idle: look again next pass (new rows must not wait for the heartbeat) */
            s->next_at = now + t->cfg.poll_ms;
            return 0;
        }
        b.body = strdup("{}");
        heartbeat = true;
        if (!b.body) return -1;
    }
    bn_wandb_result res;
    atomic_fetch_add(&t->c_requests, 1);
    int rc = bn_wandb_file_stream(t->cl, j->entity, j->project, j->run_id, b.body, &res);
    free(b.body);
    s->last_sent = now;
    if (rc) return on_failure(t, j, s, now, &res, "file_stream");
    atomic_fetch_add(&t->c_ok, 1);
    if (heartbeat) atomic_fetch_add(&t->c_heartbeats, 1);
    if (res.stopped) logf_(t, 2, "W&B asked to stop run %s (ignored: the job decides)", j->id);
    s->attempt = 0;
    s->next_at = more ? now : now + t->cfg.min_interval_ms;
    if (heartbeat) return 0;
    return bn_store_wandb_delivered(t->st, j->id, b.last_id, b.complete ? "finished" : NULL) ? -1 : 0;
}

static int handle_online(bn_tracker *t, bn_store_wandb_job *j, job_sched *s, int64_t now)
{
    bool ready;
    if (ensure_run_online(t, j, s, now, &ready)) return -1;
    if (!ready) return 0;
    render_ctx rc = { .start_ms = j->first_row_at };
    int frozen;
    if (bn_store_wandb_freeze(t->st, j->id, j->mode, render_row, &rc, &frozen)) return -1;
    return send_online(t, j, s, now);
}

/* ---- offline spool -------------------------------------------------------------------------- */

static int handle_offline(bn_tracker *t, bn_store_wandb_job *j, job_sched *s, int64_t now)
{
    if (!bn_store_status_final(j->status)) { /* spooled once, when the job has ended */
        s->next_at = now + t->cfg.poll_ms;
        return 0;
    }
    char err[512] = "";
    if (!j->output_dir || !*j->output_dir) {
        bn_wandb_result r = { .outcome = BN_WANDB_FATAL };
        snprintf(r.message, sizeof r.message, "the job has no output folder for the offline spool");
        return on_failure(t, j, s, now, &r, "offline");
    }
    render_ctx rc = { .start_ms = j->first_row_at };
    int frozen;
    if (bn_store_wandb_freeze(t->st, j->id, j->mode, render_row, &rc, &frozen)) return -1;
    bn_store_outbox_row *rows = NULL;
    int n = 0;
    if (bn_store_wandb_pending(t->st, j->id, 10000000, &rows, &n)) return -1;
    cJSON *vars = run_variables(t, j);
    bn_wandb_spool *sp = vars ? bn_wandb_spool_new(j->id, vars) : NULL;
    cJSON_Delete(vars);
    int64_t last_id = -1;
    int i = 0, rcode = 0;
    while (sp && i < n) {
        batch b;
        if (build_batch(t, rows, n, i, &b) || !b.body) break;
        rcode = bn_wandb_spool_add(sp, b.body);
        free(b.body);
        if (rcode) break;
        last_id = b.last_id;
        i = b.next;
    }
    bn_store_outbox_rows_free(rows, n);
    char path[4096];
    bn_wandb_spool_path(j->output_dir, path, sizeof path);
    int wrc = (sp && !rcode) ? bn_wandb_spool_write(sp, path, err, sizeof err) : -1;
    bn_wandb_spool_free(sp);
    if (wrc) {
        bn_wandb_result r = { .outcome = BN_WANDB_RETRY, .retry_after_ms = -1 };
        snprintf(r.message, sizeof r.message, "%s", err[0] ? err : "cannot build the spool");
        return on_failure(t, j, s, now, &r, "offline spool");
    }
    atomic_fetch_add(&t->c_spooled, 1);
    if (bn_store_wandb_delivered(t->st, j->id, last_id, "offline")) return -1;
    char ev[4200];
    snprintf(ev, sizeof ev, "W&B offline spool written: %s (upload with `bitnetctl wandb-sync %s`)",
             path, j->id);
    bn_store_event_add(t->st, j->id, NULL, NULL, "info", ev);
    logf_(t, 2, "%s", ev);
    return 0;
}

/* ---- the pass and the thread ----------------------------------------------------------------- */

int bn_tracker_step(bn_tracker *t, int64_t now, int64_t *next_ms)
{
    *next_ms = now + t->cfg.poll_ms;
    bn_store_wandb_job *jobs = NULL;
    int n = 0, rc = 0;
    int64_t work0 = atomic_load(&t->c_requests) + atomic_load(&t->c_spooled);
    /* Several hosts on one PostgreSQL store: only the holder of the delivery role sends,
     * so each outbox row leaves once; the others take over when its session ends. */
    bool leader = true;
    if (bn_store_wandb_leader(t->st, &leader)) {
        logf_(t, 0, "tracker: %s", bn_store_errmsg(t->st));
        return -1;
    }
    if (!leader) return 0;
    if (bn_store_wandb_work(t->st, 256, &jobs, &n)) {
        logf_(t, 0, "tracker: %s", bn_store_errmsg(t->st));
        return -1;
    }
    for (int i = 0; i < n && !atomic_load(&t->stop); i++) {
        bn_store_wandb_job *j = &jobs[i];
        job_sched *s = sched_get(t, j->id);
        if (!s) break;
        s->seen = true;
        if (now < s->next_at) {
            if (s->next_at < *next_ms) *next_ms = s->next_at;
            continue;
        }
        int mode = bn_wandb_mode_parse(j->mode);
        if (mode == BN_WANDB_OFFLINE) rc = handle_offline(t, j, s, now);
        else rc = handle_online(t, j, s, now);
        if (rc) {
            logf_(t, 0, "tracker: job %s: %s", j->id, bn_store_errmsg(t->st));
            s->next_at = now + t->cfg.poll_ms;
        }
        if (s->next_at < *next_ms) *next_ms = s->next_at;
    }
    bn_store_wandb_jobs_free(jobs, n);
    sched_prune(t);
    atomic_store(&t->last_pass, now);
    return rc ? -1 : (int)(atomic_load(&t->c_requests) + atomic_load(&t->c_spooled) - work0);
}

static void *tracker_main(void *arg)
{
    bn_tracker *t = arg;
    while (!atomic_load(&t->stop)) {
        int64_t now = bn_tracker_monotonic_ms(), next;
        bn_tracker_step(t, now, &next);
        now = bn_tracker_monotonic_ms();
        int64_t wait = next - now;
        if (wait > t->cfg.poll_ms) wait = t->cfg.poll_ms;
        if (wait <= 0) continue;
        struct timespec ts = bn_clock_deadline(wait);
        pthread_mutex_lock(&t->mu);
        while (!t->woken && !atomic_load(&t->stop))
            if (pthread_cond_timedwait(&t->cv, &t->mu, &ts) == ETIMEDOUT) break;
        t->woken = false;
        pthread_mutex_unlock(&t->mu);
    }
    return NULL;
}

int bn_tracker_start(bn_tracker *t)
{
    atomic_store(&t->stop, false);
    t->started_at = bn_tracker_monotonic_ms();
    if (pthread_create(&t->th, NULL, tracker_main, t)) return -1;
    t->running = true;
    return 0;
}

void bn_tracker_wake(bn_tracker *t)
{
    pthread_mutex_lock(&t->mu);
    t->woken = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void bn_tracker_stop(bn_tracker *t)
{
    if (!t->running) return;
    atomic_store(&t->stop, true);
    bn_tracker_wake(t);
    pthread_join(t->th, NULL);
    t->running = false;
}

int64_t bn_tracker_last_pass_ms(bn_tracker *t) { return atomic_load(&t->last_pass); }

bool bn_tracker_alive(bn_tracker *t)
{
    if (!t || !t->running) return false;
    int64_t last = atomic_load(&t->last_pass);
    if (last == 0) last = t->started_at;
    return bn_tracker_monotonic_ms() - last < t->cfg.timeout_ms + t->cfg.poll_ms + 30000;
}

void bn_tracker_get_counters(bn_tracker *t, bn_tracker_counters *out)
{
    out->requests = atomic_load(&t->c_requests);
    out->ok = atomic_load(&t->c_ok);
    out->retries = atomic_load(&t->c_retries);
    out->fatal = atomic_load(&t->c_fatal);
    out->heartbeats = atomic_load(&t->c_heartbeats);
    out->spooled_runs = atomic_load(&t->c_spooled);
}
