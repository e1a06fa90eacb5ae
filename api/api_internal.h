/* api_internal.h - shared between the files of api/ (not a public interface).
 *
 * server.c owns the libmicrohttpd daemon and routes a request to one handler of
 * jobs.c, artifacts.c, sse.c or metrics.c. A handler gets a bn_api_req (the connection,
 * parsed path parameters, the body, this thread's store handle) and answers through the
 * reply helpers of http.c, which also count the request for /metrics.
 */
#ifndef BN_API_INTERNAL_H
#define BN_API_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "bn_api.h"
#include "bn_store.h"

struct cJSON;

/* Routes (also the label of bitnetd_http_requests_total). */
typedef enum {
    R_DASHBOARD = 0, R_HEALTHZ, R_READYZ, R_METRICS, R_OPENAPI,
    R_JOBS, R_JOB, R_JOB_EVENTS, R_JOB_METRICS, R_JOB_ARTIFACTS, R_JOB_ARTIFACT,
    R_JOB_CANCEL, R_UNMATCHED, R_COUNT
} bn_api_route;

#define BN_API_N_CODES 18
extern const int bn_api_codes[BN_API_N_CODES]; /* last slot counts any other code */

struct bn_api {
    bn_api_config cfg;
    char *host, *db_path, *state_dir, *output_root, *host_id;
    char **model_roots;
    struct MHD_Daemon *mhd;
    int port;
    pthread_key_t store_key;     /* per-thread bn_store handle */
    pthread_rwlock_t tokens_lock;
    bn_api_tokens *tokens;
    atomic_bool draining;
    atomic_bool stopping;
    atomic_long http_count[R_COUNT][BN_API_N_CODES];
    atomic_int n_sse;
    /* suspended event streams, resumed by the waker thread */
    pthread_mutex_t sse_lock;
    pthread_cond_t sse_cond;
    struct bn_api_sse *sse_waiting;
    pthread_t waker;
    bool waker_started;
};

typedef struct bn_api_req {
    bn_api *api;
    struct MHD_Connection *conn;
    const char *method, *url;
    bn_api_route route;
    char id[64];          /* {id} path parameter */
    const char *subpath;  /* {path} of an artifact (inside url) */
    char *body;
    size_t body_len;
    bool body_too_large;
    bool replied;
    bn_api_scope scope;   /* granted by the bearer token (ADMIN when auth is off) */
    const char *extra_header; /* one more header for a problem reply (may be NULL) */
    char extra_value[96];
} bn_api_req;

int bn_api_store_key_init(bn_api *api);

/* http.c: replies. Every function queues exactly one response and returns its result. */
enum MHD_Result bn_api_reply(bn_api_req *r, unsigned code, const char *ctype, const char *body,
                             size_t len, bool copy);
enum MHD_Result bn_api_reply_json(bn_api_req *r, unsigned code, struct cJSON *json); /* frees */
/* RFC 9457 problem; field (may be NULL) is a JSON-pointer-ish name ("/config/seed"). */
enum MHD_Result bn_api_problem(bn_api_req *r, unsigned code, const char *field,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));
enum MHD_Result bn_api_queue(bn_api_req *r, unsigned code, struct MHD_Response *resp);
void bn_api_count(bn_api *api, bn_api_route route, unsigned code);
const char *bn_api_route_name(bn_api_route r);
bn_store *bn_api_store(bn_api_req *r); /* NULL after replying 503 */
#define bn_api_log(api, level, ...) bn_log_send((api)->cfg.log, (api)->cfg.log_ctx, level, __VA_ARGS__)
/* ISO 8601 UTC text of a ms timestamp into buf (empty string for 0). */
const char *bn_api_time(int64_t ms, char buf[32]);
/* One job event as JSON (the events list and the SSE stream share it). */
struct cJSON *bn_api_event_json(const bn_store_event *e);

/* paths.c */
int bn_api_check_model(bn_api *api, const char *model, char *resolved, size_t len,
                       unsigned *code, char *why, size_t whylen);
int bn_api_check_output(bn_api *api, const char *output, char *resolved, size_t len,
                        unsigned *code, char *why, size_t whylen);
bool bn_api_rel_path_ok(const char *p);


/* handlers */
enum MHD_Result bn_api_jobs_submit(bn_api_req *r);
enum MHD_Result bn_api_jobs_list(bn_api_req *r);
enum MHD_Result bn_api_job_get(bn_api_req *r);
enum MHD_Result bn_api_job_delete(bn_api_req *r);
enum MHD_Result bn_api_job_cancel(bn_api_req *r);
enum MHD_Result bn_api_job_events(bn_api_req *r);
enum MHD_Result bn_api_job_metrics(bn_api_req *r);
enum MHD_Result bn_api_job_artifacts(bn_api_req *r);
enum MHD_Result bn_api_job_artifact(bn_api_req *r);
enum MHD_Result bn_api_events_stream(bn_api_req *r);
enum MHD_Result bn_api_prometheus(bn_api_req *r);

/* The job's "tracking" field (tracking_view.c: a hook the W&B tracker fills in). */
struct cJSON *bn_api_tracking_view(bn_store *st, const bn_store_job *job);

/* sse.c */
void *bn_api_sse_waker(void *arg);
void bn_api_sse_wake_all(bn_api *api);

#endif
