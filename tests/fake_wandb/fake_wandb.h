/* fake_wandb.h - a fake Weights & Biases backend for tests (libmicrohttpd, loopback only).
 *
 * It speaks the part of the real protocol bitnetd uses (see the reference's section 5):
 *   POST /graphql            UpsertBucket (creates/updates a run), Viewer
 *   POST /files/E/P/R/file_stream
 *                            lines stored by offset; gaps, conflicting rewrites, same-line
 *                            rewrites (retry duplicates), completes and anything sent after
 *                            a complete are recorded
 * and keeps a JSON state (runs, files, counters, the log of every request) that a test
 * reads with fake_wandb_state() or over HTTP with GET /_state.
 *
 * Faults (per test): the server can be "down" (its port closed until told otherwise), a
 * percentage of requests can be answered 500/502/503 or 429 with Retry-After, file_stream
 * requests can be stored and then answered 500 ("apply then fail"), every request can be
 * refused with 401/403, and canned responses can be queued for the next N requests.
 * Over HTTP: POST /_faults with a JSON object of fake_wandb_faults fields, POST /_down
 * {"seconds":N}. Control paths (/_*) are never logged or faulted.
 *
 * Thread-safe: every entry point takes the server's lock.
 */
#ifndef FAKE_WANDB_H
#define FAKE_WANDB_H

#include <stdbool.h>
#include <stdint.h>

struct cJSON;
typedef struct fake_wandb fake_wandb;

/* Listens on 127.0.0.1:port (0 = any free port). api_key: the key every request must
 * carry as Basic "api:KEY" (401 otherwise); NULL accepts any Basic "api:" credential. */
fake_wandb *fake_wandb_start(uint16_t port, const char *api_key);
void fake_wandb_stop(fake_wandb *fw);
uint16_t fake_wandb_port(const fake_wandb *fw);
/* "http://127.0.0.1:PORT" in a buffer owned by fw. */
const char *fake_wandb_url(const fake_wandb *fw);

/* down: close the listening socket (connections are refused); up: listen again on the
 * same port. Returns 0 on success. */
int fake_wandb_set_down(fake_wandb *fw, bool down);

typedef struct fake_wandb_faults {
    int fail_percent;            /* of /graphql and file_stream requests: 500/502/503/429 */
    int store_then_fail_percent; /* of file_stream requests: applied, then answered 500 */
    int retry_after_s;           /* Retry-After on injected 429s (default 1) */
    int auth_status;             /* 401 or 403: every request refused with auth_message */
    char auth_message[128];
    int delay_ms;                /* before every answer */
    uint64_t seed;               /* deterministic fault choice (0 = fixed default) */
} fake_wandb_faults;
void fake_wandb_set_faults(fake_wandb *fw, const fake_wandb_faults *f);

/* Queues a canned answer for the next n requests to target ("graphql" or "file_stream").
 * status 0 drops the connection without an answer. apply_first: a file_stream request is
 * stored before the canned answer is given. body may be NULL (a generic error body). */
void fake_wandb_queue(fake_wandb *fw, const char *target, int status, const char *body,
                      int retry_after_s, bool apply_first, int n);

/* The whole state as JSON (caller deletes):
 * {"requests":N, "graphql_requests":N, "file_stream_requests":N, "faults_injected":N,
 *  "log":[{"i","t_ms","method","path","status","auth","body"}...],
 *  "runs":[{"entity","project","name","id","display_name","upserts","upsert_variables":[...],
 *           "config_is_string","config_wrapped","config":{...},
 *           "history":[line...], "history_holes":N, "summary":line|null,
 *           "gaps","conflicts","rewrites","summary_writes","file_stream_requests",
 *           "heartbeats","complete_requests","completes","exitcode","after_complete",
 *           "fs_before_upsert"}...]} */
struct cJSON *fake_wandb_state(fake_wandb *fw);
/* Total number of requests received on W&B endpoints (control paths excluded). */
int fake_wandb_request_count(fake_wandb *fw);
/* Forgets every run, request and fault. */
void fake_wandb_reset(fake_wandb *fw);

#endif
