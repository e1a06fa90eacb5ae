/* workers.c - the job worker pool.
 *
 * Each worker thread owns a store connection and loops: claim a job (BEGIN IMMEDIATE in
 * the store), run bn_pipeline_run on it, record the outcome. The engine reports through
 * bn_progress callbacks:
 *   update  -> a progress write (rate-limited to progress_per_s; a stage change is always
 *              written and closes the previous stage's timing); its answer is "stop now"
 *              when the user cancelled, the daemon is shutting down or the lease is lost;
 *   event   -> a job event row, committed at once;
 *   metric  -> a job_metrics row (+ W&B outbox row), committed at once;
 *   source  -> a job_metric_sources row (where a perplexity/loss metric's text came from);
 *   may_write -> the safe point before a durable write: the lease is renewed now and the
 *              write refused when the lease is lost or the job cancelled.
 * Every store write of a job carries the worker's owner name and is refused by the store
 * once another host holds the job (BN_STORE_LOST): the worker then treats the lease as
 * lost, writes nothing more and leaves the job to its new owner.
 * A housekeeping thread renews every running job's lease every lease_ms/4 and copies the
 * job's cancel_requested flag into the worker, so a pipeline that computes for a long
 * time between callbacks keeps its lease and still learns about a cancel. It also puts
 * the jobs of dead hosts (lease expired) back to queued, or fails them at max_attempts.
 *
 * Devices: the pool has n_workers CPU slots and one slot per GPU of cfg.gpus, and as many
 * threads as slots. A thread claims any job, then takes a slot: a "cuda" job one of the
 * GPUs (waiting while all are busy), an "auto" job a GPU when one is free at that moment
 * and else the CPU, every other job a CPU slot (waiting while all are busy). So at most
 * one job runs per GPU and at most n_workers CPU jobs, whatever the queue's order; a
 * waiting job keeps its lease and says why it waits in an event. A "cuda" job on a daemon
 * without GPUs fails with that reason (the API already refuses it on a host without a GPU).
 *
 * Outcomes: success -> succeeded, work folder removed; user cancel -> cancelled, work
 * folder and any <output>.partial removed; shutdown -> back to queued with the work
 * folder kept (the engine resumes from its checkpoints); engine error -> failed with the
 * engine's message.
 */
#include "bn_worker.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/device.h"
#include "base/clock.h"
#include "base/fsutil.h"
#include "base/str.h"
#include "bn_engine.h"
#include "bn_store.h"

#define BN_WORKER_NICE 10

/* Share of the whole job taken by each stage (for the overall progress). */
static const double stage_weight[BN_STAGE_COUNT] = {0.05, 0.15, 0.20, 0.15, 0.35, 0.10};

typedef struct worker {
    struct bn_workers *pool;
    int index;
    pthread_t thread;
    bool started;
    char owner[128];
    atomic_llong heartbeat_ms;
    atomic_bool exited;
    /* the running job (guarded by pool->lock for the housekeeper) */
    char job_id[BN_STORE_ID_LEN];
    atomic_bool busy;
    atomic_bool cancel_user;
    atomic_bool lease_lost;
} worker;

struct bn_workers {
    bn_workers_config cfg;
    char *db_path, *state_dir, *data_dir, *owner_prefix;
    int n;              /* threads: n_cpu + n_gpus */
    int n_cpu, cpu_busy;
    int n_gpus;
    int *gpus;          /* [n_gpus] ordinals */
    bool *gpu_busy;     /* [n_gpus], guarded by lock */
    worker *w;
    atomic_bool stop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t housekeeper;
    bool hk_started;
    atomic_llong hk_heartbeat_ms;
    atomic_bool hk_exited;
};

/* Progress context of one job run. */
typedef struct run {
    worker *w;
    bn_store *st;
    const bn_store_job *job;
    int cur_stage;
    int64_t stage_started_ms;
    int64_t last_write_ms;
    bool retry;             /* PostgreSQL: a write the store did not answer is retried */
} run;

static int64_t now_ms(void)
{
    return bn_store_now_ms();
}

/* A line to the owner's log (bn_workers_config.log). */
#define wlog(p, level, ...) bn_log_send((p)->cfg.log, (p)->cfg.log_ctx, level, __VA_ARGS__)

int bn_workers_threads_for(int cores, int n_workers, int configured, int requested)
{
    if (n_workers < 1) n_workers = 1;
    int t = configured > 0 ? configured : cores / n_workers;
    if (t < 1) t = 1;
    if (requested > 0 && requested < t) t = requested;
    return t;
}

/* ---- progress callbacks -------------------------------------------------------------- */

static bool should_stop(const run *r)
{
    return atomic_load(&r->w->pool->stop) || atomic_load(&r->w->cancel_user) ||
           atomic_load(&r->w->lease_lost);
}

/* A guarded write was refused: another host holds the job now. */
static void lost(run *r, int rc)
{
    if (rc == BN_STORE_LOST) atomic_store(&r->w->lease_lost, true);
}

/* After a store error (BN_STORE_ERROR) on a job write: true to try again in 200 ms.
 * PostgreSQL only (a server restart or a network cut is expected there; the connection
 * is reset on the next try): retried until the lease this worker held would have run
 * out (lease_ms from the first failure), then the job is given up as lost, so a write
 * is either made or the job stops before its next checkpoint and runs again elsewhere;
 * nothing is silently dropped. SQLite: no retry (its busy timeout already waited). */
static bool keep_trying(run *r, int64_t *until, const char *what)
{
    worker *w = r->w;
    if (!r->retry || atomic_load(&w->lease_lost)) return false;
    int64_t t = bn_clock_mono_ms();
    if (!*until) *until = t + w->pool->cfg.lease_ms;
    if (t >= *until) {
        wlog(w->pool, 4, "job %s: store unreachable for the lease period (%s: %s); giving the job up",
             r->job->id, what, bn_store_errmsg(r->st));
        atomic_store(&w->lease_lost, true);
        return false;
    }
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    return true;
}

static void close_stage(run *r)
{
    if (r->cur_stage < 0) return;
    int rc;
    int64_t until = 0;
    do rc = bn_store_job_stage_timing(r->st, r->job->id, r->w->owner,
                                      bn_stage_name((bn_stage)r->cur_stage),
                                      r->stage_started_ms, now_ms());
    while (rc == BN_STORE_ERROR && keep_trying(r, &until, "stage timing"));
    lost(r, rc);
}

static bool on_update(void *ctx, bn_stage stage, double fraction, const char *detail)
{
    run *r = ctx;
    worker *w = r->w;
    atomic_store(&w->heartbeat_ms, bn_clock_mono_ms());
    if (fraction < 0) fraction = 0;
    if (fraction > 1) fraction = 1;
    bool changed = (int)stage != r->cur_stage;
    int64_t t = bn_clock_mono_ms();
    int per_s = w->pool->cfg.progress_per_s > 0 ? w->pool->cfg.progress_per_s : 4;
    if (!changed && t - r->last_write_ms < 1000 / per_s) return should_stop(r);
    if (changed) {
        close_stage(r);
        r->cur_stage = (int)stage;
        r->stage_started_ms = now_ms();
    }
    double overall = 0;
    for (int s = 0; s < (int)stage && s < BN_STAGE_COUNT; s++) overall += stage_weight[s];
    if ((int)stage < BN_STAGE_COUNT) overall += stage_weight[stage] * fraction;
    bool cancel = false;
    int rc = bn_store_job_progress(r->st, r->job->id, w->owner, w->pool->cfg.lease_ms,
                                   bn_stage_name(stage), fraction, overall, detail, &cancel);
    r->last_write_ms = t;
    lost(r, rc);
    if (cancel) atomic_store(&w->cancel_user, true);
    return should_stop(r);
}

static void on_event(void *ctx, bn_stage stage, const char *level, const char *message)
{
    run *r = ctx;
    const char *sn = (int)stage >= 0 && stage < BN_STAGE_COUNT ? bn_stage_name(stage) : NULL;
    int rc;
    int64_t until = 0;
    do rc = bn_store_event_add(r->st, r->job->id, r->w->owner, sn, level, message);
    while (rc == BN_STORE_ERROR && keep_trying(r, &until, "event"));
    lost(r, rc);
    if (rc) wlog(r->w->pool, 4, "job %s: event lost: %s", r->job->id, bn_store_errmsg(r->st));
}

static void on_metric(void *ctx, const char *key, double value, int64_t step)
{
    run *r = ctx;
    int rc;
    int64_t until = 0;
    do rc = bn_store_metric_add(r->st, r->job->id, r->w->owner, key, step, value);
    while (rc == BN_STORE_ERROR && keep_trying(r, &until, "metric"));
    lost(r, rc);
    if (rc) wlog(r->w->pool, 4, "job %s: metric %s not recorded: %s", r->job->id, key,
                 bn_store_errmsg(r->st));
}

static void on_source(void *ctx, const char *key, const char *source)
{
    run *r = ctx;
    int rc;
    int64_t until = 0;
    do rc = bn_store_metric_source_set(r->st, r->job->id, r->w->owner, key, source);
    while (rc == BN_STORE_ERROR && keep_trying(r, &until, "metric source"));
    lost(r, rc);
    if (rc) wlog(r->w->pool, 4, "job %s: source of %s not recorded: %s", r->job->id, key,
                 bn_store_errmsg(r->st));
}

/* The safe point before a durable write: the lease is renewed now (one round trip), so
 * no other host can take the job over until lease_ms from here. Refused when the lease
 * is lost or the user cancelled (a shutdown still lets the engine checkpoint). A store
 * that does not answer (a PostgreSQL restart) is retried until the lease this worker
 * last confirmed would run out; after that the job is treated as lost. */
static bool on_may_write(void *ctx, bn_stage stage, const char *what)
{
    run *r = ctx;
    worker *w = r->w;
    struct bn_workers *p = w->pool;
    int64_t until = 0;
    while (!atomic_load(&w->lease_lost) && !atomic_load(&w->cancel_user)) {
        bool cancel = false;
        int rc = bn_store_job_progress(r->st, r->job->id, w->owner, p->cfg.lease_ms, NULL, 0,
                                       0, NULL, &cancel);
        lost(r, rc);
        if (cancel) atomic_store(&w->cancel_user, true);
        if (rc == BN_STORE_ERROR && !r->retry) {
            /* SQLite (one host): nobody else can hold the job; write */
            wlog(p, 4, "job %s: lease not renewed before writing %s: %s", r->job->id, what,
                 bn_store_errmsg(r->st));
            break;
        }
        if (rc != BN_STORE_ERROR || !keep_trying(r, &until, "lease renewal")) break;
    }
    if (atomic_load(&w->lease_lost) || atomic_load(&w->cancel_user)) {
        wlog(p, atomic_load(&w->lease_lost) ? 4 : 6, "job %s: %s; not writing %s (%s)",
             r->job->id, atomic_load(&w->lease_lost) ? "lease lost" : "cancelled", what,
             bn_stage_name(stage));
        return false;
    }
    return true;
}

/* ---- running one job ------------------------------------------------------------------ */

static int parse_options(const bn_store_job *job, bn_options *opt, bn_err *err)
{
    cJSON *cfg = cJSON_Parse(job->config ? job->config : "{}");
    if (!cfg) return bn_err_set(err, BN_EINVAL, "config: stored config is not JSON");
    int rc = bn_options_from_json(cfg, opt, err);
    cJSON_Delete(cfg);
    return rc;
}

static int finish(run *r, bn_job_status status, const char *error)
{
    worker *w = r->w;
    int rc;
    int64_t until = 0;
    do rc = bn_store_job_finish(r->st, r->job->id, w->owner, status, error);
    while (rc == BN_STORE_ERROR && keep_trying(r, &until, "finish"));
    lost(r, rc);
    if (rc) wlog(w->pool, 3, "job %s: cannot record %s: %s", r->job->id,
                 bn_store_status_name(status), bn_store_errmsg(r->st));
    return rc;
}

static void remove_partial(const bn_store_job *job)
{
    if (!job->output_dir) return;
    char partial[PATH_MAX + 16];
    snprintf(partial, sizeof partial, "%s.partial", job->output_dir);
    bn_fs_rm_rf(partial, NULL);
}

/* Takes the job's device slot (see the top of the file): the GPU index in p->gpus, -1 for
 * a CPU slot, -2 when the worker must stop (shutdown, cancel, lease lost) while waiting. */
static int acquire_slot(worker *w, run *r, bn_options *opt)
{
    struct bn_workers *p = w->pool;
    pthread_mutex_lock(&p->lock);
    if (opt->device == BN_DEVICE_AUTO) {
        bool free_gpu = false;
        for (int i = 0; i < p->n_gpus; i++) free_gpu |= !p->gpu_busy[i];
        opt->device = free_gpu ? BN_DEVICE_CUDA : BN_DEVICE_CPU;
    }
    bool gpu = opt->device == BN_DEVICE_CUDA, told = false;
    for (;;) {
        if (atomic_load(&p->stop) || atomic_load(&w->cancel_user) || atomic_load(&w->lease_lost)) {
            pthread_mutex_unlock(&p->lock);
            return -2;
        }
        if (gpu) {
            for (int i = 0; i < p->n_gpus; i++)
                if (!p->gpu_busy[i]) {
                    p->gpu_busy[i] = true;
                    opt->gpu = p->gpus[i];
                    pthread_mutex_unlock(&p->lock);
                    return i;
                }
        } else if (p->cpu_busy < p->n_cpu) {
            p->cpu_busy++;
            pthread_mutex_unlock(&p->lock);
            return -1;
        }
        if (!told) {
            told = true;
            char msg[160];
            if (gpu)
                snprintf(msg, sizeof msg, "waiting for a free GPU (all %d of this daemon's --gpus are busy)", p->n_gpus);
            else
                snprintf(msg, sizeof msg, "waiting for a free CPU worker (all %d are busy)", p->n_cpu);
            pthread_mutex_unlock(&p->lock);
            on_event(r, BN_STAGE_COUNT, "info", msg);
            pthread_mutex_lock(&p->lock);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 500 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cond, &p->lock, &ts);
    }
}

static void release_slot(struct bn_workers *p, int slot)
{
    pthread_mutex_lock(&p->lock);
    if (slot >= 0) p->gpu_busy[slot] = false;
    else if (slot == -1) p->cpu_busy--;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static void run_job(worker *w, bn_store *st, bn_store_job *job)
{
    struct bn_workers *p = w->pool;
    run r = {.w = w, .st = st, .job = job, .cur_stage = -1,
             .retry = strcmp(bn_store_backend(st), "postgresql") == 0};
    char wd[PATH_MAX];
    snprintf(wd, sizeof wd, "%s/work/%s", p->state_dir, job->id);
    bn_options opt;
    bn_err err = {0};
    int64_t t0 = bn_clock_mono_ms();
    if (parse_options(job, &opt, &err)) {
        on_event(&r, BN_STAGE_COUNT, "error", err.msg);
        finish(&r, BN_JOB_FAILED, err.msg);
        return;
    }
    if (opt.device == BN_DEVICE_CUDA && p->n_gpus == 0) {
        bn_err_set(&err, BN_EUNSUPPORTED, "device \"cuda\": this daemon runs no GPU jobs (started "
                   "with --gpus none, or it sees no GPU); use \"cpu\" or \"auto\"");
        on_event(&r, BN_STAGE_COUNT, "error", err.msg);
        finish(&r, BN_JOB_FAILED, err.msg);
        bn_options_free(&opt);
        return;
    }
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    opt.threads = bn_workers_threads_for(cores, p->n_cpu, p->cfg.threads_per_job, opt.threads);
    if (bn_fs_mkdir_p(wd, NULL)) {
        bn_err_set(&err, BN_EIO, "cannot create work folder %.900s: %s", wd, strerror(errno));
        finish(&r, BN_JOB_FAILED, err.msg);
        bn_options_free(&opt);
        return;
    }
    int slot = acquire_slot(w, &r, &opt);
    bn_stage resume = bn_pipeline_resume_stage(wd);
    char msg[256], on_gpu[32] = "";
    if (slot >= 0) snprintf(on_gpu, sizeof on_gpu, ", GPU %d", opt.gpu);
    snprintf(msg, sizeof msg, "started on %s (attempt %d, %d threads%s)%s%s", w->owner,
             job->attempts + 1, opt.threads, on_gpu, resume > 0 ? "; resuming at " : "",
             resume > 0 && resume < BN_STAGE_COUNT ? bn_stage_name(resume) : "");
    on_event(&r, BN_STAGE_COUNT, "info", msg);
    wlog(p, 6, "job %s: %s", job->id, msg);
    bn_progress prog = {.ctx = &r, .update = on_update, .event = on_event, .metric = on_metric,
                        .source = on_source, .may_write = on_may_write};
    bn_pipeline_paths paths = {.model_dir = job->model, .output_dir = job->output_dir,
                               .work_dir = wd, .data_dir = p->data_dir, .hub = p->cfg.hub};
    int rc = slot == -2 ? bn_err_set(&err, BN_ECANCELLED, "stopped while waiting for a device slot")
                        : bn_pipeline_run(&paths, &opt, &prog, &err);
    release_slot(p, slot);
    bn_options_free(&opt);
    close_stage(&r);
    double secs = (double)(bn_clock_mono_ms() - t0) / 1000.0;
    if (atomic_load(&w->lease_lost)) {
        wlog(p, 4, "job %s: lease lost; leaving the job to its new owner", job->id);
    } else if (rc == BN_OK) {
        /* the work folder goes only once the job is recorded succeeded: a job left
         * running (lease lost, store gone) is finished by its next owner from it */
        if (finish(&r, BN_JOB_SUCCEEDED, NULL) == BN_STORE_OK) {
            bn_fs_rm_rf(wd, NULL);
            wlog(p, 6, "job %s: succeeded in %.1f s -> %s", job->id, secs, job->output_dir);
        } else {
            wlog(p, 4, "job %s: output complete but not recorded; left to the job's next owner",
                 job->id);
        }
    } else if (rc == BN_ECANCELLED && atomic_load(&w->cancel_user)) {
        /* Clean up first: whoever sees "cancelled" must not find the work folder. A crash
         * in between leaves the job running with cancel_requested set: it is cancelled
         * again on restart. */
        bn_fs_rm_rf(wd, NULL);
        remove_partial(job);
        on_event(&r, BN_STAGE_COUNT, "warn", "cancelled by request");
        finish(&r, BN_JOB_CANCELLED, "cancelled by request");
        wlog(p, 6, "job %s: cancelled after %.1f s", job->id, secs);
    } else if (rc == BN_ECANCELLED && atomic_load(&p->stop)) {
        on_event(&r, BN_STAGE_COUNT, "info", "interrupted by shutdown; will resume");
        if (bn_store_job_requeue(st, job->id, w->owner))
            wlog(p, 3, "job %s: requeue failed: %s", job->id, bn_store_errmsg(st));
        wlog(p, 6, "job %s: back to queued (shutdown), work kept in %s", job->id, wd);
    } else {
        const char *why = err.msg[0] ? err.msg : bn_err_code_name(rc);
        bn_fs_rm_rf(wd, NULL);
        remove_partial(job);
        on_event(&r, BN_STAGE_COUNT, "error", why);
        finish(&r, BN_JOB_FAILED, why);
        wlog(p, 4, "job %s: failed after %.1f s: %s", job->id, secs, why);
    }
}

/* ---- threads -------------------------------------------------------------------------- */

static void idle_wait(struct bn_workers *p, int ms)
{
    struct timespec ts = bn_clock_deadline(ms);
    pthread_mutex_lock(&p->lock);
    if (!atomic_load(&p->stop)) pthread_cond_timedwait(&p->cond, &p->lock, &ts);
    pthread_mutex_unlock(&p->lock);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    struct bn_workers *p = w->pool;
    bn_store *st = NULL;
    char err[512];
    /* Compute yields to the API: this thread (and the engine threads it starts, which
     * inherit the value) runs at a lower priority, so status requests keep low latency
     * while a job saturates the cores. */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), BN_WORKER_NICE) != 0)
        wlog(p, 7, "worker %d: setpriority: %s", w->index, strerror(errno));
    while (!atomic_load(&p->stop) && bn_store_open(p->db_path, &st, err, sizeof err)) {
        wlog(p, 3, "worker %d: %s", w->index, err);
        idle_wait(p, 2000);
    }
    while (st && !atomic_load(&p->stop)) {
        atomic_store(&w->heartbeat_ms, bn_clock_mono_ms());
        bn_store_job job;
        int rc = bn_store_job_claim_for(st, w->owner, p->cfg.lease_ms, p->n_gpus > 0, &job);
        if (rc == BN_STORE_NOTFOUND) {
            idle_wait(p, p->cfg.poll_ms);
            continue;
        }
        if (rc) {
            wlog(p, 3, "worker %d: claim failed: %s", w->index, bn_store_errmsg(st));
            idle_wait(p, 1000);
            continue;
        }
        pthread_mutex_lock(&p->lock);
        snprintf(w->job_id, sizeof w->job_id, "%s", job.id);
        atomic_store(&w->cancel_user, job.cancel_requested);
        atomic_store(&w->lease_lost, false);
        atomic_store(&w->busy, true);
        pthread_mutex_unlock(&p->lock);
        run_job(w, st, &job);
        pthread_mutex_lock(&p->lock);
        atomic_store(&w->busy, false);
        w->job_id[0] = 0;
        pthread_mutex_unlock(&p->lock);
        bn_store_job_free(&job);
    }
    bn_store_close(st);
    atomic_store(&w->exited, true);
    pthread_mutex_lock(&p->lock);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Renews the leases of running jobs and reads their cancel flags. */
static void renew_all(struct bn_workers *p, bn_store *st)
{
    for (int i = 0; i < p->n; i++) {
        worker *w = &p->w[i];
        char id[BN_STORE_ID_LEN];
        pthread_mutex_lock(&p->lock);
        snprintf(id, sizeof id, "%s", atomic_load(&w->busy) ? w->job_id : "");
        pthread_mutex_unlock(&p->lock);
        if (!id[0]) continue;
        bool cancel = false;
        int rc = bn_store_job_progress(st, id, w->owner, p->cfg.lease_ms, NULL, 0, 0, NULL,
                                       &cancel);
        if (rc == BN_STORE_OK && cancel) atomic_store(&w->cancel_user, true);
        if (rc == BN_STORE_LOST) {
            /* the job may just have finished; only a still-busy worker lost it */
            pthread_mutex_lock(&p->lock);
            if (atomic_load(&w->busy) && strcmp(w->job_id, id) == 0)
                atomic_store(&w->lease_lost, true);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

/* Jobs whose host died (lease expired) go back to the queue or fail at max_attempts. */
static void reap_expired(struct bn_workers *p, bn_store *st)
{
    int requeued = 0, failed = 0;
    int max = p->cfg.max_attempts > 0 ? p->cfg.max_attempts : 3;
    if (bn_store_reap_expired(st, max, &requeued, &failed))
        wlog(p, 4, "housekeeper: reaping expired leases: %s", bn_store_errmsg(st));
    else if (requeued || failed)
        wlog(p, 5, "housekeeper: %d job(s) of a dead host requeued, %d failed (max_attempts %d)",
             requeued, failed, max);
}

static void *housekeeper_main(void *arg)
{
    struct bn_workers *p = arg;
    bn_store *st = NULL;
    char err[512];
    int64_t interval = p->cfg.lease_ms / 4;
    if (interval > 5000) interval = 5000;
    if (interval < 100) interval = 100;
    while (!atomic_load(&p->stop)) {
        atomic_store(&p->hk_heartbeat_ms, bn_clock_mono_ms());
        if (!st && bn_store_open(p->db_path, &st, err, sizeof err))
            wlog(p, 3, "housekeeper: %s", err);
        if (st) renew_all(p, st);
        if (st) reap_expired(p, st);
        idle_wait(p, (int)interval);
    }
    bn_store_close(st);
    atomic_store(&p->hk_exited, true);
    return NULL;
}

static void pool_free(struct bn_workers *p)
{
    free(p->db_path);
    free(p->state_dir);
    free(p->data_dir);
    free(p->owner_prefix);
    free(p->w);
    free(p->gpus);
    free(p->gpu_busy);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

int bn_workers_start(const bn_workers_config *cfg, bn_workers **out, char *err, size_t errlen)
{
    *out = NULL;
    struct bn_workers *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "workers: out of memory");
        return -1;
    }
    p->cfg = *cfg;
    p->db_path = bn_str_dup(cfg->db_path);
    p->state_dir = bn_str_dup(cfg->state_dir);
    p->data_dir = bn_str_dup(cfg->data_dir);
    p->owner_prefix = bn_str_dup(cfg->owner_prefix ? cfg->owner_prefix : "bitnetd");
    if (p->cfg.lease_ms <= 0) p->cfg.lease_ms = 60000;
    if (p->cfg.poll_ms <= 0) p->cfg.poll_ms = 500;
    p->n_cpu = cfg->n_workers > 0 ? cfg->n_workers : 0;
    p->n_gpus = p->n_cpu > 0 && cfg->n_gpus > 0 ? cfg->n_gpus : 0; /* API-only: no jobs at all */
    p->n = p->n_cpu + p->n_gpus;
    p->w = calloc((size_t)p->n + 1, sizeof *p->w);
    p->gpus = calloc((size_t)p->n_gpus + 1, sizeof *p->gpus);
    p->gpu_busy = calloc((size_t)p->n_gpus + 1, sizeof *p->gpu_busy);
    for (int i = 0; p->gpus && i < p->n_gpus; i++) p->gpus[i] = cfg->gpus[i];
    p->cfg.gpus = NULL; /* copied */
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if (!p->w || !p->gpus || !p->gpu_busy) {
        pool_free(p);
        snprintf(err, errlen, "workers: out of memory");
        return -1;
    }
    atomic_store(&p->hk_heartbeat_ms, bn_clock_mono_ms());
    for (int i = 0; i < p->n; i++) {
        worker *w = &p->w[i];
        w->pool = p;
        w->index = i;
        snprintf(w->owner, sizeof w->owner, "%s/w%d", p->owner_prefix, i);
        atomic_store(&w->heartbeat_ms, bn_clock_mono_ms());
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "workers: cannot start thread %d", i);
            bn_workers_stop(p, 0);
            return -1;
        }
        w->started = true;
    }
    if (pthread_create(&p->housekeeper, NULL, housekeeper_main, p) != 0) {
        snprintf(err, errlen, "workers: cannot start the lease thread");
        bn_workers_stop(p, 0);
        return -1;
    }
    p->hk_started = true;
    *out = p;
    return 0;
}

bool bn_workers_alive(void *arg)
{
    struct bn_workers *p = arg;
    if (!p || atomic_load(&p->stop)) return false;
    int64_t t = bn_clock_mono_ms();
    if (t - atomic_load(&p->hk_heartbeat_ms) > 30000 || atomic_load(&p->hk_exited))
        return false;
    for (int i = 0; i < p->n; i++) {
        worker *w = &p->w[i];
        if (atomic_load(&w->exited)) return false;
        /* a busy worker computes inside the engine; the housekeeper keeps its lease */
        if (!atomic_load(&w->busy) && t - atomic_load(&w->heartbeat_ms) > 30000) return false;
    }
    return true;
}

int bn_workers_stop(bn_workers *p, int grace_ms)
{
    if (!p) return 0;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    int64_t deadline = bn_clock_mono_ms() + grace_ms;
    for (;;) {
        bool all = true;
        for (int i = 0; i < p->n; i++)
            if (p->w[i].started && !atomic_load(&p->w[i].exited)) all = false;
        if (all || bn_clock_mono_ms() >= deadline) break;
        idle_wait(p, 50);
    }
    int stuck = 0;
    bn_store *st = NULL;
    char err[256];
    for (int i = 0; i < p->n; i++) {
        worker *w = &p->w[i];
        if (!w->started) continue;
        if (atomic_load(&w->exited)) {
            pthread_join(w->thread, NULL);
            continue;
        }
        stuck++;
        pthread_detach(w->thread);
        if (!st && bn_store_open(p->db_path, &st, err, sizeof err)) continue;
        pthread_mutex_lock(&p->lock);
        char id[BN_STORE_ID_LEN];
        snprintf(id, sizeof id, "%s", w->job_id);
        pthread_mutex_unlock(&p->lock);
        if (id[0] && bn_store_job_requeue(st, id, w->owner) == BN_STORE_OK)
            wlog(p, 4, "job %s: did not stop within the grace period; requeued", id);
    }
    bn_store_close(st);
    if (p->hk_started) pthread_join(p->housekeeper, NULL);
    if (stuck == 0) pool_free(p); /* stuck threads still use the pool: leave it */
    return stuck;
}
