/* metrics.c - GET /metrics in the Prometheus text format (version 0.0.4).
 *
 * Job gauges and stage-duration histograms are computed from the store at scrape time
 * (so they survive restarts and count every host sharing the queue); request counters
 * are this process's atomic counters kept by bn_api_queue.
 */
#include "api_internal.h"
#include "bn_engine.h"
#include "bn_store_wandb.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double buckets[] = {0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

typedef struct hist {
    uint64_t bucket[BN_STAGE_COUNT][N_BUCKETS], count[BN_STAGE_COUNT];
    double sum[BN_STAGE_COUNT];
} hist;

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void out(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 8192) + (size_t)n;
        char *g = realloc(b->p, cap);
        if (!g) return;
        b->p = g;
        b->cap = cap;
    }
}

static void add_duration(void *ctx, const char *stage, double seconds)
{
    hist *h = ctx;
    for (int s = 0; s < BN_STAGE_COUNT; s++) {
        if (strcmp(stage, bn_stage_name((bn_stage)s)) != 0) continue;
        for (size_t k = 0; k < N_BUCKETS; k++)
            if (seconds <= buckets[k]) h->bucket[s][k]++;
        h->count[s]++;
        h->sum[s] += seconds;
    }
}

static void jobs_section(buf *b, bn_store *st)
{
    int64_t counts[BN_JOB_STATUS_COUNT];
    if (bn_store_job_counts(st, counts)) return;
    out(b, "# HELP bitnetd_jobs Jobs in the store by status.\n# TYPE bitnetd_jobs gauge\n");
    for (int i = 0; i < BN_JOB_STATUS_COUNT; i++)
        out(b, "bitnetd_jobs{status=\"%s\"} %lld\n", bn_store_status_name((bn_job_status)i),
            (long long)counts[i]);
    out(b, "# HELP bitnetd_queue_depth Jobs waiting for a worker.\n"
           "# TYPE bitnetd_queue_depth gauge\nbitnetd_queue_depth %lld\n",
        (long long)counts[BN_JOB_QUEUED]);
}

/* Per host: jobs each host's workers hold (owner "host:pid/wN" grouped by "host:pid"). */
typedef struct owners_ctx {
    buf *b;
    const char *self;
    int64_t self_jobs;
} owners_ctx;

static void add_owner(void *ctx, const char *owner, int64_t jobs, int64_t lease_expires)
{
    owners_ctx *o = ctx;
    const char *slash = strrchr(owner, '/');
    int len = slash ? (int)(slash - owner) : (int)strlen(owner);
    out(o->b, "bitnetd_host_running_jobs{host=\"%.*s\",worker=\"%s\"} %lld\n", len, owner,
        slash ? slash + 1 : "", (long long)jobs);
    out(o->b, "bitnetd_host_lease_expires_seconds{host=\"%.*s\",worker=\"%s\"} %.3f\n", len,
        owner, slash ? slash + 1 : "", lease_expires / 1000.0);
    if (o->self && (int)strlen(o->self) == len && strncmp(owner, o->self, (size_t)len) == 0)
        o->self_jobs += jobs;
}

static void hosts_section(buf *b, bn_store *st, const char *self)
{
    out(b, "# HELP bitnetd_host_running_jobs Running jobs by the host and worker holding the lease.\n"
           "# TYPE bitnetd_host_running_jobs gauge\n"
           "# HELP bitnetd_host_lease_expires_seconds Latest lease expiry (Unix time) per worker.\n"
           "# TYPE bitnetd_host_lease_expires_seconds gauge\n");
    owners_ctx o = {.b = b, .self = self};
    if (bn_store_running_owners(st, add_owner, &o)) return;
    out(b, "# HELP bitnetd_this_host_running_jobs Running jobs leased by this daemon.\n"
           "# TYPE bitnetd_this_host_running_jobs gauge\nbitnetd_this_host_running_jobs %lld\n",
        (long long)o.self_jobs);
}

static void stage_section(buf *b, bn_store *st)
{
    hist *h = calloc(1, sizeof *h);
    if (!h) return;
    bn_store_stage_durations(st, add_duration, h);
    out(b, "# HELP bitnetd_stage_duration_seconds Wall time of each pipeline stage.\n"
           "# TYPE bitnetd_stage_duration_seconds histogram\n");
    for (int s = 0; s < BN_STAGE_COUNT; s++) {
        for (size_t k = 0; k < N_BUCKETS; k++)
            out(b, "bitnetd_stage_duration_seconds_bucket{stage=\"%s\",le=\"%g\"} %llu\n",
                bn_stage_name((bn_stage)s), buckets[k], (unsigned long long)h->bucket[s][k]);
        out(b, "bitnetd_stage_duration_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %llu\n"
               "bitnetd_stage_duration_seconds_sum{stage=\"%s\"} %g\n"
               "bitnetd_stage_duration_seconds_count{stage=\"%s\"} %llu\n",
            bn_stage_name((bn_stage)s), (unsigned long long)h->count[s], bn_stage_name((bn_stage)s), h->sum[s], bn_stage_name((bn_stage)s),
            (unsigned long long)h->count[s]);
    }
    free(h);
}

static void http_section(buf *b, bn_api *api)
{
    out(b, "# HELP bitnetd_http_requests_total HTTP requests by route and status code.\n"
           "# TYPE bitnetd_http_requests_total counter\n");
    for (int r = 0; r < R_COUNT; r++)
        for (int c = 0; c < BN_API_N_CODES; c++) {
            long n = atomic_load_explicit(&api->http_count[r][c], memory_order_relaxed);
            if (!n) continue;
            char code[16];
            if (bn_api_codes[c]) snprintf(code, sizeof code, "%d", bn_api_codes[c]);
            else snprintf(code, sizeof code, "other");
            out(b, "bitnetd_http_requests_total{route=\"%s\",code=\"%s\"} %ld\n",
                bn_api_route_name((bn_api_route)r), code, n);
        }
    out(b, "# HELP bitnetd_event_streams Open Server-Sent Events streams.\n"
           "# TYPE bitnetd_event_streams gauge\nbitnetd_event_streams %d\n",
        atomic_load(&api->n_sse));
}

/* ---- W&B delivery (owner: tracker), from the store ---- */
static void wandb_section(buf *b, bn_store *st)
{
    bn_store_wandb_stats w;
    if (bn_store_wandb_stats_get(st, &w)) return;
    out(b, "# HELP bitnetd_wandb_backlog_rows W&B outbox rows waiting for delivery.\n"
           "# TYPE bitnetd_wandb_backlog_rows gauge\nbitnetd_wandb_backlog_rows %lld\n",
        (long long)w.backlog_rows);
    out(b, "# HELP bitnetd_wandb_delivered_rows_total W&B outbox rows delivered (or spooled).\n"
           "# TYPE bitnetd_wandb_delivered_rows_total counter\n"
           "bitnetd_wandb_delivered_rows_total %lld\n", (long long)w.delivered_rows);
    out(b, "# HELP bitnetd_wandb_failures_total Runs whose W&B tracking failed.\n"
           "# TYPE bitnetd_wandb_failures_total counter\nbitnetd_wandb_failures_total %lld\n",
        (long long)w.runs_failed);
    out(b, "# HELP bitnetd_wandb_runs W&B runs by delivery status.\n"
           "# TYPE bitnetd_wandb_runs gauge\n"
           "bitnetd_wandb_runs{status=\"active\"} %lld\n"
           "bitnetd_wandb_runs{status=\"finished\"} %lld\n"
           "bitnetd_wandb_runs{status=\"failed\"} %lld\n"
           "bitnetd_wandb_runs{status=\"offline\"} %lld\n",
        (long long)w.runs_active, (long long)w.runs_finished, (long long)w.runs_failed,
        (long long)w.runs_offline);
}

enum MHD_Result bn_api_prometheus(bn_api_req *r)
{
    bn_store *st = bn_api_store(r);
    if (!st) return MHD_YES;
    buf b = {0};
    jobs_section(&b, st);
    hosts_section(&b, st, r->api->cfg.host_id);
    stage_section(&b, st);
    http_section(&b, r->api);
    wandb_section(&b, st);
    if (!b.p) return bn_api_problem(r, 500, NULL, "out of memory");
    struct MHD_Response *resp = MHD_create_response_from_buffer(b.len, b.p,
                                                                MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(b.p);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    return bn_api_queue(r, 200, resp);
}
