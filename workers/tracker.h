/* tracker.h - the tracker thread: the only code that talks to Weights & Biases.
 *
 * Design: one thread with its own store connection and its own libcurl handle. Each
 * pass asks the store which tracked jobs have work (bn_store_wandb_work) and handles every
 * job whose retry time has come:
 *
 *   online   UpsertBucket once (run id = job id; entity/project/tags/group/name/notes from
 *            the job's tracking.wandb, else the daemon defaults; config = the job config
 *            wrapped {"key":{"value":...}} as a JSON string), then freeze -> send ->
 *            acknowledge batches on file_stream: history at contiguous offsets, the whole
 *            summary at offset 0, and the complete/exitcode only in the request that
 *            carries everything else. A heartbeat "{}" goes out when a running job's run
 *            has been idle for heartbeat_ms.
 *   offline  once the job is final, every request it would have sent is written to
 *            <output_dir>/wandb/offline-run.jsonl (beside the folder when the job left
 *            none: bn_wandb_spool_path) with temp file, fsync, rename; no network.
 *            `bitnetctl wandb-sync` replays it (bn_wandb_sync_spool).
 *
 * Failures: 429/5xx/connection errors are retried with exponential backoff plus jitter
 * (Retry-After wins when longer), per job, forever: rows wait durably in the outbox.
 * Non-retryable answers mark the job's tracking failed with the server's message (a job
 * event); the job itself is never touched. A job in backoff never delays other jobs.
 */
#ifndef BN_TRACKER_H
#define BN_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log_sink.h"

typedef struct bn_tracker bn_tracker;

typedef struct bn_tracker_config {
    const char *db_path;          /* the store the daemon uses */
    const char *base_url;         /* NULL: WANDB_BASE_URL or https://api.wandb.ai */
    const char *api_key;          /* NULL: online jobs fail ("no W&B API key") */
    const char *app_url;          /* run URLs; NULL: base_url without "api." */
    const char *default_entity;   /* NULL: the server picks the key's default entity */
    const char *default_project;  /* NULL: "bitnetd" */
    int64_t poll_ms;              /* idle wake-up; 0 -> 500 */
    int64_t heartbeat_ms;         /* 0 -> 30000 */
    int64_t min_interval_ms;      /* between two requests of one run; 0 -> 1000 */
    int64_t backoff_base_ms;      /* 0 -> 2000 */
    int64_t backoff_cap_ms;       /* 0 -> 60000 */
    long timeout_ms;              /* per HTTP attempt; 0 -> 60000 */
    int max_batch_lines;          /* history lines per request; 0 -> 1000 */
    size_t max_body_bytes;        /* 0 -> 8 MiB */
    /* Optional log sink (level: 0 error, 1 warn, 2 info, 3 debug). Never given the key. */
    bn_log_fn log;             /* may be NULL */
    void *log_ctx;
} bn_tracker_config;

/* Fills the W&B fields from WANDB_BASE_URL, WANDB_API_KEY, WANDB_ENTITY, WANDB_PROJECT
 * and WANDB_APP_URL (pointers into the environment; fields already set are kept). */
void bn_tracker_config_from_env(bn_tracker_config *cfg);
/* The daemon's default mode from WANDB_MODE (aliases accepted): "online" | "offline" |
 * "disabled", or NULL when WANDB_MODE is unset or invalid (*invalid set). */
const char *bn_tracker_default_mode(bool *invalid);
/* Reads an API key file (first line, surrounding space trimmed). malloc'd or NULL. */
char *bn_tracker_read_key_file(const char *path, char *err, size_t errlen);

/* Opens the tracker (store connection, HTTP client) without a thread. */
int bn_tracker_open(const bn_tracker_config *cfg, bn_tracker **out, char *err, size_t errlen);
/* One pass over the due jobs at time now_ms (monotonic). *next_ms = when the next pass is
 * due. Returns the number of HTTP requests or spool writes made, -1 on a store error. */
int bn_tracker_step(bn_tracker *t, int64_t now_ms, int64_t *next_ms);
void bn_tracker_close(bn_tracker *t);

/* Thread control: start runs bn_tracker_step in a loop; wake cuts a wait short (call it
 * after committing outbox rows); stop aborts any transfer in flight and joins. */
int bn_tracker_start(bn_tracker *t);
void bn_tracker_wake(bn_tracker *t);
void bn_tracker_stop(bn_tracker *t);
/* Monotonic ms of the loop's last pass (for the watchdog); 0 before the first. */
int64_t bn_tracker_last_pass_ms(bn_tracker *t);
/* For the watchdog: the thread runs and has made a pass within one request timeout plus
 * 30 s (a pass may legitimately wait for one slow request). */
bool bn_tracker_alive(bn_tracker *t);

/* Process-lifetime counters. */
typedef struct bn_tracker_counters {
    int64_t requests, ok, retries, fatal, heartbeats, spooled_runs;
} bn_tracker_counters;
void bn_tracker_get_counters(bn_tracker *t, bn_tracker_counters *out);

int64_t bn_tracker_monotonic_ms(void);

#endif
