/* bn_store_wandb.h - the W&B delivery side of the store: the outbox as the tracker
 * thread reads and acknowledges it, and the tracking status the API reports.
 *
 * Design: workers append outbox rows (bn_store_metric_add, bn_store_job_finish); the
 * tracker is the only reader. Delivery is exactly-once by construction:
 *
 *   1. freeze   - in one transaction, every not-yet-frozen 'history' row gets the next
 *                 history offset of its run and its payload is replaced by the exact line
 *                 to send ('summary' rows are rendered too, at offset 0). From then on a
 *                 row's bytes and offset never change, so any re-send (retry, restart after
 *                 kill -9) carries identical lines at identical offsets.
 *   2. pending  - the frozen rows not yet acknowledged, oldest first.
 *   3. delivered - after a 2xx, the rows sent are marked delivered in one transaction.
 *
 * A run's state ('pending' before UpsertBucket, 'active', 'finished' after the complete
 * was acknowledged, 'failed' after a non-retryable answer, 'offline' once spooled) lives
 * in wandb_runs. Same conventions as bn_store.h: plain C types, caller frees.
 */
#ifndef BN_STORE_WANDB_H
#define BN_STORE_WANDB_H

#include "bn_store.h"

/* A job with tracking work to do (undelivered rows, or an active run to keep alive). */
typedef struct bn_store_wandb_job {
    char id[BN_STORE_ID_LEN];
    bn_job_status status;
    char *mode;          /* jobs.wandb_mode */
    char *tracking;      /* jobs.tracking (JSON text) */
    char *config;        /* jobs.config (JSON text) */
    char *output;        /* output name */
    char *output_dir;    /* absolute output folder (may be NULL) */
    int64_t first_row_at;/* created_at of the job's first outbox row (ms) */
    char *run_status;    /* NULL when the run has no wandb_runs row yet */
    char *run_id, *entity, *project, *run_url, *last_error;
    int64_t history_offset; /* next offset to assign */
    int64_t pending_rows;
    char *sources;       /* JSON object {metric: text source}, or NULL when none yet */
} bn_store_wandb_job;
void bn_store_wandb_jobs_free(bn_store_wandb_job *jobs, int n);

/* Jobs whose mode is online/offline, whose run is neither failed, finished nor offline,
 * and that have undelivered rows or an active run while the job runs. Oldest first, at
 * most limit. */
int bn_store_wandb_work(bn_store *st, int limit, bn_store_wandb_job **out, int *n);

/* The run exists on the server: records its names and URL, status 'active'. */
int bn_store_wandb_run_started(bn_store *st, const char *id, const char *mode,
                               const char *run_id, const char *entity, const char *project,
                               const char *run_url);

/* Renders one row into the exact line to send; returns a malloc'd string, or NULL when
 * the payload is unusable (the row is then dropped with a job event). offset: the
 * history offset given to a 'history' row; for a 'summary' row, the number of history
 * offsets handed out so far. */
typedef char *(*bn_store_wandb_render_fn)(void *ctx, const char *kind, const char *payload,
                                          int64_t created_at, int64_t offset);
/* Step 1 above. *n_frozen = rows frozen now. */
int bn_store_wandb_freeze(bn_store *st, const char *id, const char *mode,
                          bn_store_wandb_render_fn render, void *ctx, int *n_frozen);

typedef struct bn_store_outbox_row {
    int64_t id;
    char kind[12];     /* "history" | "summary" | "complete" */
    char *payload;     /* the frozen line (history/summary) or {"exitcode":N} */
    int64_t offset;    /* history offset; 0 for summary; -1 when not frozen yet */
    int64_t created_at;
} bn_store_outbox_row;
void bn_store_outbox_rows_free(bn_store_outbox_row *rows, int n);

/* Step 2: undelivered rows in id order (at most limit). */
int bn_store_wandb_pending(bn_store *st, const char *id, int limit,
                           bn_store_outbox_row **out, int *n);
/* Step 3: rows with id <= last_row_id (frozen or 'complete') are delivered. new_status:
 * NULL keeps the run's status, "finished" after the complete, "offline" once spooled. */
int bn_store_wandb_delivered(bn_store *st, const char *id, int64_t last_row_id,
                             const char *new_status);
/* A failed attempt. Retryable: last_error only. Fatal: the run's status becomes
 * 'failed' and a warn event "W&B tracking failed: <message>" is added to the job. */
int bn_store_wandb_error(bn_store *st, const char *id, const char *mode, const char *message,
                         bool fatal);

/* Whether this handle holds the delivery role: one tracker across all hosts delivers
 * (PostgreSQL session advisory lock, taken again after a reconnect); SQLite: always. */
int bn_store_wandb_leader(bn_store *st, bool *leader);

/* ---- read side for the API --------------------------------------------------------------- */

typedef struct bn_store_wandb_status {
    char mode[16];    /* "online" | "offline" | "disabled" */
    char status[16];  /* "pending" | "active" | "finished" | "failed" | "offline" | "disabled" */
    char *run_id, *entity, *project, *run_url, *last_error; /* may be NULL */
    int64_t delivered_rows, pending_rows;
} bn_store_wandb_status;
/* BN_STORE_NOTFOUND when the job does not exist. */
int bn_store_wandb_status_get(bn_store *st, const char *id, bn_store_wandb_status *out);
void bn_store_wandb_status_free(bn_store_wandb_status *s);

/* Totals for /metrics. backlog: undelivered rows of runs still being delivered. */
typedef struct bn_store_wandb_stats {
    int64_t backlog_rows, delivered_rows;
    int64_t runs_active, runs_finished, runs_failed, runs_offline;
} bn_store_wandb_stats;
int bn_store_wandb_stats_get(bn_store *st, bn_store_wandb_stats *out);

#endif
