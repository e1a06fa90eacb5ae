/* wandb_spool.h - the offline spool: the requests a run would have sent, kept as JSONL
 * so that `bitnetctl wandb-sync` can replay them later with the same protocol.
 *
 * Format (one JSON object per line, written once, atomically):
 *   {"type":"run","version":1,"job_id":"job_...","variables":{...UpsertBucket variables...}}
 *   {"type":"file_stream","body":{...the exact file_stream request body...}}   (in order)
 * The bodies carry fixed offsets and frozen lines, so a replay (or a replay repeated after
 * an interruption) gives the server exactly the state an online run would have. The API
 * key is never written. A finished replay leaves <spool>.synced holding the run URL.
 */
#ifndef BN_WANDB_SPOOL_H
#define BN_WANDB_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wandb.h"

struct cJSON;
typedef struct bn_wandb_spool bn_wandb_spool;

/* Where a job's spool lives: <output_dir>/wandb/offline-run.jsonl when the output folder
 * exists (the job succeeded), else beside it, <output_dir>.wandb-offline.jsonl, so that a
 * failed job leaves no output folder behind. */
void bn_wandb_spool_path(const char *output_dir, char *buf, size_t len);
/* The existing spool of an output folder (either place); -1 when there is none. */
int bn_wandb_spool_find(const char *output_dir, char *buf, size_t len);

bn_wandb_spool *bn_wandb_spool_new(const char *job_id, const struct cJSON *upsert_variables);
/* Appends one file_stream body (JSON text). */
int bn_wandb_spool_add(bn_wandb_spool *sp, const char *body);
/* Creates the parent folder, writes path.tmp, fsyncs, renames to path. */
int bn_wandb_spool_write(bn_wandb_spool *sp, const char *path, char *err, size_t errlen);
void bn_wandb_spool_free(bn_wandb_spool *sp);

typedef struct bn_wandb_sync_opts {
    const char *entity, *project;                 /* override the spool's values */
    const char *default_entity, *default_project; /* used when the spool has none */
    const char *app_url;        /* for the run URL; NULL: the client's base URL without "api." */
    int max_attempts;           /* per request; 0 -> 20 */
    int64_t backoff_base_ms;    /* 0 -> 2000 */
    int64_t backoff_cap_ms;     /* 0 -> 60000 */
    bool force;                 /* replay even when <spool>.synced exists */
} bn_wandb_sync_opts;

typedef struct bn_wandb_sync_report {
    char run_url[1024];
    int requests, retries;
    bool already_synced;
} bn_wandb_sync_report;

/* Replays the spool at path: UpsertBucket, then every file_stream body in order, each
 * retried per the W&B policy. 0 on success; -1 with a message in err. */
int bn_wandb_sync_spool(bn_wandb_client *c, const char *path, const bn_wandb_sync_opts *o,
                        bn_wandb_sync_report *rep, char *err, size_t errlen);

#endif
