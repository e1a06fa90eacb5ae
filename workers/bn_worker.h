/* bn_worker.h - the job worker pool of bitnetd.
 *
 * N worker threads claim queued jobs from the store and run the engine pipeline on
 * them; one housekeeping thread renews the leases of running jobs and picks up cancel
 * requests. A worker talks to the engine only through bn_pipeline_run and its
 * bn_progress callbacks, and to the rest of the daemon only through the store.
 *
 * Stop: bn_workers_stop asks every running pipeline to stop at its next safe point
 * (the engine checkpoints, the job goes back to queued with its work folder kept, so the
 * next start resumes it) and waits up to a grace period.
 */
#ifndef BN_WORKER_H
#define BN_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log_sink.h"

typedef struct bn_workers bn_workers;


typedef struct bn_workers_config {
    const char *db_path;
    const char *state_dir;     /* work folders: <state_dir>/work/<job id> */
    const char *data_dir;      /* calibration datasets (may be NULL) */
    const char *owner_prefix;  /* lease owner names: "<prefix>/w<i>" (host:pid) */
    int n_workers;             /* CPU job slots; 0 = none (an API-only host: no GPU jobs either) */
    const int *gpus;           /* CUDA ordinals that take one job each beside the CPU slots */
    int n_gpus;
    int threads_per_job;       /* engine threads per job; 0 = cores / n_workers */
    int64_t lease_ms;          /* default 60000 */
    int max_attempts;          /* a job whose host died this often fails (default 3) */
    int poll_ms;               /* idle claim interval, default 500 */
    int progress_per_s;        /* progress writes per second per job, default 4 */
    bn_log_fn log;             /* may be NULL */
    void *log_ctx;
    const struct bn_hub_config *hub; /* hf:// model sources (NULL: environment) */
} bn_workers_config;

int bn_workers_start(const bn_workers_config *cfg, bn_workers **out, char *err, size_t errlen);
/* True while every worker and the housekeeper show a recent heartbeat. */
bool bn_workers_alive(void *workers);
/* Stops claiming, asks running jobs to checkpoint and waits up to grace_ms. Jobs still
 * running after that are put back to queued. Returns the number of threads that did not
 * stop in time (they are detached; the process should exit). */
int bn_workers_stop(bn_workers *w, int grace_ms);

/* The engine thread count for a job: cores / workers (at least 1), capped by the
 * job's own request when that is smaller and non-zero. */
int bn_workers_threads_for(int cores, int n_workers, int configured, int requested);

#endif
