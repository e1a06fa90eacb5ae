/* bn_store.h - the durable job queue of bitnetd (the only public header of store/).
 *
 * Design: the store is the queue. Jobs, their events, their metrics and the W&B outbox
 * live in one database; every state change is one short transaction that is committed
 * before the caller announces it. The interface speaks plain C types only (no SQLite
 * types leak out), so that a PostgreSQL backend can implement the same functions and let
 * several hosts share one queue.
 *
 * Threading: a bn_store handle is one connection and belongs to one thread at a time.
 * Every thread (API pool thread, worker, tracker) opens its own handle on the same path.
 *
 * Ownership: functions that fill a bn_store_job / event / metric array allocate their
 * strings; release them with the matching *_free function. Timestamps are milliseconds
 * since the Unix epoch.
 */
#ifndef BN_STORE_H
#define BN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    BN_STORE_OK = 0,
    BN_STORE_NOTFOUND,  /* no such job / nothing to claim */
    BN_STORE_CONFLICT,  /* state does not allow it (idempotency key reuse, job not finished) */
    BN_STORE_FULL,      /* queue limit reached */
    BN_STORE_LOST,      /* the caller no longer holds the job's lease */
    BN_STORE_ERROR,     /* database error: bn_store_errmsg() says which */
};

typedef enum bn_job_status {
    BN_JOB_QUEUED = 0,
    BN_JOB_RUNNING,
    BN_JOB_SUCCEEDED,
    BN_JOB_FAILED,
    BN_JOB_CANCELLED,
    BN_JOB_STATUS_COUNT
} bn_job_status;

const char *bn_store_status_name(bn_job_status s); /* "queued", ... */
int bn_store_status_parse(const char *name);       /* -1 if unknown */
bool bn_store_status_final(bn_job_status s);

#define BN_STORE_ID_LEN 24 /* "job_" + 16 hex digits + NUL, rounded up */

typedef struct bn_store bn_store;

typedef struct bn_store_job {
    char id[BN_STORE_ID_LEN];
    bn_job_status status;
    int priority;
    char *model;           /* resolved model folder */
    char *output;          /* output name (relative to the output root) */
    char *config;          /* JSON text of the job's engine options */
    char *tracking;        /* JSON text of the tracking object */
    char *wandb_mode;      /* "online" | "offline" | "disabled" */
    char *idempotency_key; /* may be NULL */
    int attempts;          /* restarts after a crash */
    char *lease_owner;     /* NULL when not running */
    int64_t lease_expires;
    bool cancel_requested;
    char *stage;           /* current or last stage name, NULL before the first */
    double stage_progress; /* [0,1] of the current stage */
    double progress;       /* [0,1] of the whole job */
    char *detail;          /* last progress detail text */
    char *error;           /* reason for failed/cancelled */
    int64_t created_at, started_at, finished_at, updated_at;
    char *output_dir;      /* absolute output folder */
    char *stage_timings;   /* JSON object: stage -> {"started_at","finished_at","seconds"} */
    int64_t cursor;        /* ordering key for list pagination */
} bn_store_job;

void bn_store_job_free(bn_store_job *j);
void bn_store_jobs_free(bn_store_job *jobs, int n);

/* A new job as validated by the API. */
typedef struct bn_store_new_job {
    int priority;
    const char *model, *output, *output_dir;
    const char *config, *tracking; /* JSON text */
    const char *wandb_mode;        /* "online" | "offline" | "disabled" */
    const char *wandb_entity, *wandb_project; /* may be NULL */
    const char *idempotency_key;   /* may be NULL */
    const char *request_hash;      /* digest of the request body, for key reuse checks */
    int max_queued;                /* 0 = unlimited */
} bn_store_new_job;
/* bn_store_job_create also refuses (BN_STORE_CONFLICT) a job whose output name is the
 * target of a queued or running job. */

typedef struct bn_store_event {
    int64_t seq, ts;
    char *stage, *level, *message;
    char *host; /* the lease owner that wrote it ("host:pid/wN"); NULL when not a worker */
} bn_store_event;
void bn_store_events_free(bn_store_event *ev, int n);

typedef struct bn_store_metric {
    char *key;
    int64_t step; /* -1 for job-level metrics */
    double value;
    int64_t ts;
} bn_store_metric;
void bn_store_metrics_free(bn_store_metric *m, int n);

/* ---- connection ------------------------------------------------------------------ */

/* Opens (creating and migrating if needed) the store named by spec: "sqlite:PATH", a
 * plain PATH (SQLite), or a libpq URI "postgresql://..." (several hosts may share it).
 * A schema newer than this build is refused. On failure returns BN_STORE_ERROR with a
 * message in err (never the connection string). */
int bn_store_open(const char *spec, bn_store **out, char *err, size_t errlen);
/* True when spec names a PostgreSQL database. */
bool bn_store_spec_is_pg(const char *spec);
/* "sqlite" or "postgresql". */
const char *bn_store_backend(const bn_store *st);
/* Waits up to timeout_ms for an event written by any host (PostgreSQL LISTEN/NOTIFY);
 * *got tells whether one came (or may have been missed: read to catch up). SQLite:
 * returns at once with *got false (one host; the caller polls). */
int bn_store_wait_event(bn_store *st, int timeout_ms, bool *got);
void bn_store_close(bn_store *st);
/* True when the last failure recorded on this handle was a full disk. */
bool bn_store_disk_full(const bn_store *st);
const char *bn_store_errmsg(const bn_store *st);
int bn_store_schema_version(bn_store *st);
/* A write transaction that changes nothing: proves the database is writable. */
int bn_store_ping(bn_store *st);
int64_t bn_store_now_ms(void);

/* ---- jobs ------------------------------------------------------------------------ */

/* Inserts a queued job. With an idempotency key already used: BN_STORE_OK with *existed
 * set and *out the earlier job (BN_STORE_CONFLICT if its request hash differs). */
int bn_store_job_create(bn_store *st, const bn_store_new_job *nj, bn_store_job *out,
                        bool *existed);
int bn_store_job_get(bn_store *st, const char *id, bn_store_job *out);
/* Jobs newest first; status < 0 = any; cursor 0 = from the newest. *next_cursor is 0
 * when there are no more. */
int bn_store_job_list(bn_store *st, int status, int limit, int64_t cursor,
                      bn_store_job **out, int *n, int64_t *next_cursor);
/* True when a queued or running job already targets this output name. */
int bn_store_output_in_use(bn_store *st, const char *output, bool *in_use);
/* Claims the highest-priority oldest queued job (SQLite: BEGIN IMMEDIATE; PostgreSQL:
 * FOR UPDATE SKIP LOCKED, and a running job whose lease expired is taken over with one
 * more attempt). BN_STORE_NOTFOUND if the queue is empty. */
int bn_store_job_claim(bn_store *st, const char *owner, int64_t lease_ms, bn_store_job *out);
/* The same for a host that may run only CPU jobs (cuda_ok false): on PostgreSQL, jobs whose
 * config asks for device "cuda" are left to hosts with GPUs. SQLite has one host, which
 * claims them anyway and fails them with the reason rather than keep them queued forever. */
int bn_store_job_claim_for(bn_store *st, const char *owner, int64_t lease_ms, bool cuda_ok,
                           bn_store_job *out);
/* Progress write + lease renewal in one transaction; reports a pending cancel request.
 * stage may be NULL (lease renewal only). BN_STORE_LOST if the lease is gone. */
int bn_store_job_progress(bn_store *st, const char *id, const char *owner, int64_t lease_ms,
                          const char *stage, double stage_progress, double progress,
                          const char *detail, bool *cancel_requested);
/* Records one stage's timing into stage_timings (merge by stage name). */
int bn_store_job_stage_timing(bn_store *st, const char *id, const char *owner,
                              const char *stage, int64_t started_at, int64_t finished_at);
/* Ends a running job (succeeded / failed / cancelled) and, for tracked jobs, enqueues the
 * W&B summary and complete rows in the same transaction. */
int bn_store_job_finish(bn_store *st, const char *id, const char *owner,
                        bn_job_status status, const char *error);
/* Gives a running job back to the queue (shutdown): lease dropped, attempts unchanged. */
int bn_store_job_requeue(bn_store *st, const char *id, const char *owner);
/* A user's cancel: a queued job becomes cancelled at once (*now_final = true); a running
 * job gets cancel_requested (its worker stops it). BN_STORE_CONFLICT if already final. */
int bn_store_job_cancel(bn_store *st, const char *id, bool *now_final);
/* Deletes a finished job with its events and metrics. BN_STORE_CONFLICT if not final. */
int bn_store_job_delete(bn_store *st, const char *id);
/* Start-up recovery: jobs left running go back to queued with attempts+1, or fail when
 * attempts reach max_attempts. PostgreSQL: only running jobs whose lease expired (other
 * hosts hold the rest). */
int bn_store_recover(bn_store *st, int max_attempts, int *requeued, int *failed);
/* The same for running jobs whose lease expired (their host died), on either backend;
 * run periodically by every host, so max_attempts holds across hosts and an orphaned job
 * shows as queued even while every worker is busy. */
int bn_store_reap_expired(bn_store *st, int max_attempts, int *requeued, int *failed);
/* Number of jobs per status (counts[BN_JOB_STATUS_COUNT]). */
int bn_store_job_counts(bn_store *st, int64_t counts[BN_JOB_STATUS_COUNT]);

/* Calls fn once per worker holding a lease on a running job (owner as given to claim,
 * e.g. "host:pid/w0"), with the number of jobs it holds and the latest lease expiry. */
int bn_store_running_owners(bn_store *st, void (*fn)(void *ctx, const char *owner, int64_t jobs,
                                                     int64_t lease_expires), void *ctx);

/* Calls fn for every recorded stage duration of every job (for histograms). */
int bn_store_stage_durations(bn_store *st, void (*fn)(void *ctx, const char *stage,
                                                      double seconds), void *ctx);

/* ---- events and metrics ------------------------------------------------------------ */

/* Owner guard: the writes below that take an owner (a worker's lease owner name) are
 * made only while the job is running under that owner's lease; otherwise nothing is
 * written and BN_STORE_LOST is returned (another host took the job over, or it ended).
 * owner NULL writes unguarded (the tracker, tests). The check and the write are one
 * transaction, and on PostgreSQL the job row is share-locked, so a concurrent takeover
 * either commits first (the write is refused) or waits for the write. */

/* Appends an event; its host is owner. */
int bn_store_event_add(bn_store *st, const char *id, const char *owner, const char *stage,
                       const char *level, const char *message);
/* Events with seq > after_seq, oldest first, at most limit. */
int bn_store_events_list(bn_store *st, const char *id, int64_t after_seq, int limit,
                         bn_store_event **out, int *n);
/* Records a metric (upsert on job, key, step) and, for tracked jobs, a W&B 'history'
 * outbox row in the same transaction (only the first time that key/step is seen). */
int bn_store_metric_add(bn_store *st, const char *id, const char *owner, const char *key,
                        int64_t step, double value);
/* All metrics of a job ordered by key, step. */
int bn_store_metrics_list(bn_store *st, const char *id, bn_store_metric **out, int *n);
/* Records (replaces) where metric `key`'s text came from ("file:x.txt (report split)"). */
int bn_store_metric_source_set(bn_store *st, const char *id, const char *owner, const char *key,
                               const char *source);
/* The job's metric sources as JSON object text {"key": "source", ...} ("{}" when none);
 * caller frees. */
int bn_store_metric_sources_json(bn_store *st, const char *id, char **out);

/* ---- W&B outbox (read side for tests and the tracker) ------------------------------ */

/* Counts outbox rows of a job by kind ("history", "summary", "complete"; NULL = all). */
int bn_store_outbox_count(bn_store *st, const char *id, const char *kind, int64_t *n);

#endif
