/* wandb.h - the Weights & Biases REST client of bitnetd (libcurl).
 *
 * Design: a small, blocking, single-connection client that knows the two W&B endpoints
 * bitnetd needs (POST /graphql for Viewer and UpsertBucket, POST /files/E/P/R/file_stream
 * for history, summary and completion) plus the pure helpers every sender shares:
 *
 *   - the retry classifier and the backoff schedule (exponential with 0-25% jitter,
 *     Retry-After honoured), so the tracker thread and `bitnetctl wandb-sync` retry alike;
 *   - deterministic builders for history lines, the wrapped run config and file_stream
 *     bodies: the same input always gives the same bytes, so a retry (even after a crash)
 *     re-sends identical lines at identical offsets.
 *
 * The client never schedules or sleeps: a call makes one HTTP attempt and returns a
 * bn_wandb_result saying OK, RETRY (with any Retry-After) or FATAL (with the server's
 * message). The API key is handed to libcurl only (HTTP Basic "api:KEY"); it is never
 * copied into a message, a log line or a body.
 *
 * Ownership: strings returned by bn_wandb_* builders are malloc'd; callers free them.
 * A bn_wandb_client belongs to one thread at a time.
 */
#ifndef BN_WANDB_H
#define BN_WANDB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

#define BN_WANDB_DEFAULT_BASE_URL "https://api.wandb.ai"
#define BN_WANDB_HISTORY_FILE "wandb-history.jsonl"
#define BN_WANDB_SUMMARY_FILE "wandb-summary.json"

typedef enum bn_wandb_mode {
    BN_WANDB_ONLINE = 0,
    BN_WANDB_OFFLINE,
    BN_WANDB_DISABLED,
} bn_wandb_mode;

/* "online" | "run" -> ONLINE, "offline" | "dryrun" -> OFFLINE, "disabled" -> DISABLED;
 * -1 for anything else (including NULL). */
int bn_wandb_mode_parse(const char *s);
const char *bn_wandb_mode_name(bn_wandb_mode m);

/* ---- one HTTP attempt and its outcome ----------------------------------------------- */

typedef enum bn_wandb_outcome {
    BN_WANDB_OK = 0,
    BN_WANDB_RETRY, /* 429, 5xx (not 501), other 4xx, connection errors, timeouts */
    BN_WANDB_FATAL, /* 400/401/403/404/410/413/422/501 (409 too, except for UpsertBucket) */
} bn_wandb_outcome;

typedef struct bn_wandb_result {
    bn_wandb_outcome outcome;
    long http_status;       /* 0 when no HTTP response arrived */
    int64_t retry_after_ms; /* from Retry-After, -1 if absent */
    bool stopped;           /* file_stream reply said {"stopped": true} */
    char message[512];      /* the server's message or the transport error */
} bn_wandb_result;

typedef enum bn_wandb_endpoint { BN_WANDB_EP_GRAPHQL = 0, BN_WANDB_EP_UPSERT, BN_WANDB_EP_FILE_STREAM } bn_wandb_endpoint;

/* Classifies an HTTP status (0 = transport error) for an endpoint. */
bn_wandb_outcome bn_wandb_classify(long status, bn_wandb_endpoint ep);
/* Delay before retry number attempt (0-based): base * 2^attempt plus 0-25% jitter, capped
 * at cap_ms; a Retry-After (>= 0) wins when longer (itself capped at 10 minutes).
 * *rng is a xorshift state (never 0). */
int64_t bn_wandb_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms,
                            int64_t retry_after_ms, uint64_t *rng);
/* Retry-After header value: delta seconds or an HTTP date. Milliseconds from now_s, or -1. */
int64_t bn_wandb_parse_retry_after(const char *value, int64_t now_s);

/* ---- the client ---------------------------------------------------------------------- */

typedef struct bn_wandb_client bn_wandb_client;

typedef struct bn_wandb_client_opts {
    const char *base_url;          /* NULL or "" -> BN_WANDB_DEFAULT_BASE_URL; trailing '/' dropped */
    const char *api_key;           /* NULL: requests go without credentials */
    long timeout_ms;               /* per attempt; 0 -> 60000 */
    long connect_timeout_ms;       /* 0 -> 10000 */
    const atomic_bool *abort_flag; /* optional: true aborts a transfer in progress */
} bn_wandb_client_opts;

/* NULL when libcurl cannot be initialised. */
bn_wandb_client *bn_wandb_client_new(const bn_wandb_client_opts *o);
void bn_wandb_client_free(bn_wandb_client *c);
const char *bn_wandb_client_base_url(const bn_wandb_client *c);

/* What the server says a run is (from the UpsertBucket reply). */
typedef struct bn_wandb_run {
    char *id, *name, *entity, *project, *display_name;
    int64_t history_line_count;
    bool inserted;
} bn_wandb_run;
void bn_wandb_run_free(bn_wandb_run *r);

/* Run identity and metadata for UpsertBucket. NULL fields are left out. */
typedef struct bn_wandb_run_spec {
    const char *name;         /* the run id */
    const char *entity, *project, *display_name, *group, *job_type, *notes;
    const char *const *tags;
    int n_tags;
    const char *config;       /* the JSON *string* (see bn_wandb_config_string) */
} bn_wandb_run_spec;

/* UpsertBucket's variables object (also what the offline spool records). */
struct cJSON *bn_wandb_upsert_variables(const bn_wandb_run_spec *spec);
/* POST /graphql UpsertBucket. On OK, *out holds the reply's names (caller frees). */
int bn_wandb_upsert_bucket(bn_wandb_client *c, const struct cJSON *variables,
                           bn_wandb_run *out, bn_wandb_result *res);
/* POST /graphql Viewer: checks the key; *entity = the default entity (caller frees). */
int bn_wandb_viewer(bn_wandb_client *c, char **entity, bn_wandb_result *res);
/* POST /files/{entity}/{project}/{run}/file_stream with a prepared body. */
int bn_wandb_file_stream(bn_wandb_client *c, const char *entity, const char *project,
                         const char *run, const char *body, bn_wandb_result *res);

/* ---- deterministic builders ------------------------------------------------------------ */

/* JSON text of a number: integers exactly, others with the shortest round-trip form,
 * NaN/Infinity/-Infinity as W&B's extended tokens. Returns the length written. */
int bn_wandb_format_number(char *buf, size_t len, double v);
/* Parses JSON that may hold the bare tokens NaN, Infinity, -Infinity (outside strings).
 * Infinities become +-inf numbers; NaN becomes a number holding NaN. NULL if invalid. */
struct cJSON *bn_wandb_parse_ext(const char *text);
/* A history or summary line: the payload object's members in order (numbers through
 * bn_wandb_format_number; nulls left out) followed by the extra members that the payload
 * does not already have. extra may be NULL. Returns NULL if payload is not an object. */
char *bn_wandb_render_line(const char *payload, const struct cJSON *extra);
/* The same for an already parsed object. */
char *bn_wandb_render_object(const struct cJSON *obj, const struct cJSON *extra);
/* A job config object wrapped the W&B way ({"k":{"value":v},...}) and printed: the
 * JSON *string* for UpsertBucket's config. "{}" for NULL/empty; NULL if not an object. */
char *bn_wandb_config_string(const char *config_json);

/* One file_stream request. */
typedef struct bn_wandb_fs_batch {
    int64_t history_offset;
    const char *const *history; /* lines, without newline */
    int n_history;
    const char *summary;        /* whole summary line, or NULL */
    bool complete;
    int exitcode;
} bn_wandb_fs_batch;
/* The request body; "{}" (a heartbeat) when the batch is empty. */
char *bn_wandb_fs_body(const bn_wandb_fs_batch *b);

#endif
