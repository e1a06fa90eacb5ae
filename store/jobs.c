/* jobs.c - the job queue: create, read, list, claim, lease, finish, cancel, recover.
 *
 * A job moves queued -> running -> succeeded | failed | cancelled. Claiming runs in a
 * BEGIN IMMEDIATE transaction (SQLite) or locks its row with FOR UPDATE SKIP LOCKED
 * (PostgreSQL), so two workers or two hosts never claim the same job; the claimer holds a lease (owner + expiry) that it renews with
 * each progress write. Every state change is one transaction; the W&B outbox rows that
 * belong to a change are written inside it (see records.c).
 */
#include "store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define JOB_COLUMNS                                                                        \
    "id, status, priority, model, output, config, tracking, wandb_mode, idempotency_key," \
    " attempts, lease_owner, lease_expires, cancel_requested, stage, stage_progress,"     \
    " progress, detail, error, created_at, started_at, finished_at, updated_at,"          \
    " output_dir, stage_timings, rowid"

static void job_from_row(bn_stmt *s, bn_store_job *j)
{
    memset(j, 0, sizeof *j);
    const unsigned char *id = bn_db_col_text(s, 0);
    snprintf(j->id, sizeof j->id, "%s", id ? (const char *)id : "");
    int status = bn_store_status_parse((const char *)bn_db_col_text(s, 1));
    j->status = status < 0 ? BN_JOB_FAILED : (bn_job_status)status;
    j->priority = bn_db_col_int(s, 2);
    j->model = bn_store__col_strdup(s, 3);
    j->output = bn_store__col_strdup(s, 4);
    j->config = bn_store__col_strdup(s, 5);
    j->tracking = bn_store__col_strdup(s, 6);
    j->wandb_mode = bn_store__col_strdup(s, 7);
    j->idempotency_key = bn_store__col_strdup(s, 8);
    j->attempts = bn_db_col_int(s, 9);
    j->lease_owner = bn_store__col_strdup(s, 10);
    j->lease_expires = bn_db_col_int64(s, 11);
    j->cancel_requested = bn_db_col_int(s, 12) != 0;
    j->stage = bn_store__col_strdup(s, 13);
    j->stage_progress = bn_db_col_double(s, 14);
    j->progress = bn_db_col_double(s, 15);
    j->detail = bn_store__col_strdup(s, 16);
    j->error = bn_store__col_strdup(s, 17);
    j->created_at = bn_db_col_int64(s, 18);
    j->started_at = bn_db_col_int64(s, 19);
    j->finished_at = bn_db_col_int64(s, 20);
    j->updated_at = bn_db_col_int64(s, 21);
    j->output_dir = bn_store__col_strdup(s, 22);
    j->stage_timings = bn_store__col_strdup(s, 23);
    j->cursor = bn_db_col_int64(s, 24);
}

void bn_store_job_free(bn_store_job *j)
{
    if (!j) return;
    free(j->model); free(j->output); free(j->config); free(j->tracking);
    free(j->wandb_mode); free(j->idempotency_key); free(j->lease_owner); free(j->stage);
    free(j->detail); free(j->error); free(j->output_dir); free(j->stage_timings);
    memset(j, 0, sizeof *j);
}

void bn_store_jobs_free(bn_store_job *jobs, int n)
{
    for (int i = 0; jobs && i < n; i++) bn_store_job_free(&jobs[i]);
    free(jobs);
}

static void new_job_id(char id[BN_STORE_ID_LEN])
{
    uint8_t r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        uint64_t t = (uint64_t)bn_store_now_ms() ^ (uint64_t)(uintptr_t)id;
        memcpy(r, &t, sizeof r);
    }
    int k = snprintf(id, BN_STORE_ID_LEN, "job_");
    for (int i = 0; i < 8; i++) k += snprintf(id + k, BN_STORE_ID_LEN - (size_t)k, "%02x", r[i]);
}

/* Reads one job by id inside the current transaction (or autocommit). */
static int get_job(bn_store *st, const char *id, bn_store_job *out)
{
    bn_stmt *s = bn_store__cached(st, "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    int rc = bn_db_step(s), ret;
    if (rc == BN_DB_ROW) {
        job_from_row(s, out);
        ret = BN_STORE_OK;
    } else if (rc == BN_DB_DONE) {
        ret = BN_STORE_NOTFOUND;
    } else {
        ret = bn_store__fail(st, "reading job");
    }
    bn_store__release(st, s);
    return ret;
}

int bn_store_job_get(bn_store *st, const char *id, bn_store_job *out)
{
    memset(out, 0, sizeof *out);
    return get_job(st, id, out);
}

/* Finds the job holding an idempotency key; compares request hashes. */
static int find_idempotent(bn_store *st, const bn_store_new_job *nj, bn_store_job *out,
                           bool *existed)
{
    bn_stmt *s = bn_store__cached(st,
        "SELECT id, request_hash FROM jobs WHERE idempotency_key = ?");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, nj->idempotency_key);
    int rc = bn_db_step(s);
    if (rc == BN_DB_DONE) {
        bn_store__release(st, s);
        return BN_STORE_NOTFOUND;
    }
    if (rc != BN_DB_ROW) {
        bn_store__release(st, s);
        return bn_store__fail(st, "reading idempotency key");
    }
    char id[BN_STORE_ID_LEN];
    snprintf(id, sizeof id, "%s", (const char *)bn_db_col_text(s, 0));
    const char *h = (const char *)bn_db_col_text(s, 1);
    bool same = (!h && !nj->request_hash) ||
                (h && nj->request_hash && strcmp(h, nj->request_hash) == 0);
    bn_store__release(st, s);
    if (get_job(st, id, out)) return BN_STORE_ERROR;
    *existed = true;
    if (!same) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "Idempotency-Key was used for a different request (job %s)", id);
        return BN_STORE_CONFLICT;
    }
    return BN_STORE_OK;
}

static int count_queued(bn_store *st, int64_t *n)
{
    bn_stmt *s = bn_store__cached(st, "SELECT count(*) FROM jobs WHERE status = 'queued'");
    if (!s) return BN_STORE_ERROR;
    int rc = bn_db_step(s);
    *n = bn_db_col_int64(s, 0);
    bn_store__release(st, s);
    return rc == BN_DB_ROW ? BN_STORE_OK : bn_store__fail(st, "counting queue");
}

static int insert_job(bn_store *st, const bn_store_new_job *nj, const char *id, int64_t now)
{
    bn_stmt *s = bn_store__cached(st,
        "INSERT INTO jobs (id, status, priority, model, output, output_dir, config, tracking,"
        " wandb_mode, idempotency_key, request_hash, created_at, updated_at)"
        " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_db_bind_int64(s, 2, nj->priority);
    bn_store__bind_text(s, 3, nj->model);
    bn_store__bind_text(s, 4, nj->output);
    bn_store__bind_text(s, 5, nj->output_dir);
    bn_store__bind_text(s, 6, nj->config ? nj->config : "{}");
    bn_store__bind_text(s, 7, nj->tracking ? nj->tracking : "{}");
    bn_store__bind_text(s, 8, nj->wandb_mode ? nj->wandb_mode : "disabled");
    bn_store__bind_text(s, 9, nj->idempotency_key);
    bn_store__bind_text(s, 10, nj->request_hash);
    bn_db_bind_int64(s, 11, now);
    bn_db_bind_int64(s, 12, now);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) return bn_store__fail(st, "inserting job");
    if (nj->wandb_mode && strcmp(nj->wandb_mode, "disabled") != 0) {
        s = bn_store__cached(st,
            "INSERT INTO wandb_runs (job_id, entity, project, mode) VALUES (?, ?, ?, ?)");
        if (!s) return BN_STORE_ERROR;
        bn_store__bind_text(s, 1, id);
        bn_store__bind_text(s, 2, nj->wandb_entity);
        bn_store__bind_text(s, 3, nj->wandb_project);
        bn_store__bind_text(s, 4, nj->wandb_mode);
        rc = bn_db_step(s);
        bn_store__release(st, s);
        if (rc != BN_DB_DONE) return bn_store__fail(st, "inserting wandb run");
    }
    return BN_STORE_OK;
}

int bn_store_job_create(bn_store *st, const bn_store_new_job *nj, bn_store_job *out,
                        bool *existed)
{
    memset(out, 0, sizeof *out);
    *existed = false;
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    int rc;
    if (nj->idempotency_key) {
        rc = find_idempotent(st, nj, out, existed);
        if (rc != BN_STORE_NOTFOUND) {
            bn_store__rollback(st);
            return rc;
        }
    }
    bool busy = false;
    if ((rc = bn_store_output_in_use(st, nj->output, &busy))) goto fail;
    if (busy) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "output \"%s\" is the target of another queued or running job", nj->output);
        bn_store__rollback(st);
        return BN_STORE_CONFLICT;
    }
    if (nj->max_queued > 0) {
        int64_t q;
        if ((rc = count_queued(st, &q))) goto fail;
        if (q >= nj->max_queued) {
            snprintf(st->errmsg, sizeof st->errmsg, "queue is full (%lld queued jobs)",
                     (long long)q);
            bn_store__rollback(st);
            return BN_STORE_FULL;
        }
    }
    char id[BN_STORE_ID_LEN];
    new_job_id(id);
    if ((rc = insert_job(st, nj, id, bn_store_now_ms()))) goto fail;
    if ((rc = get_job(st, id, out))) goto fail;
    if ((rc = bn_store__commit(st))) {
        bn_store_job_free(out);
        return rc;
    }
    return BN_STORE_OK;
fail:
    bn_store__rollback(st);
    return BN_STORE_ERROR;
}

int bn_store_job_list(bn_store *st, int status, int limit, int64_t cursor,
                      bn_store_job **out, int *n, int64_t *next_cursor)
{
    *out = NULL;
    *n = 0;
    *next_cursor = 0;
    if (limit <= 0) limit = 50;
    bn_stmt *s = bn_store__cached(st,
        "SELECT " JOB_COLUMNS " FROM jobs WHERE (?1 IS NULL OR status = ?1)"
        " AND (?2 = 0 OR rowid < ?2) ORDER BY rowid DESC LIMIT ?3");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, status >= 0 ? bn_store_status_name((bn_job_status)status) : NULL);
    bn_db_bind_int64(s, 2, cursor);
    bn_db_bind_int64(s, 3, limit + 1);
    bn_store_job *jobs = calloc((size_t)limit + 1, sizeof *jobs);
    if (!jobs) {
        bn_store__release(st, s);
        snprintf(st->errmsg, sizeof st->errmsg, "out of memory");
        return BN_STORE_ERROR;
    }
    int k = 0, rc;
    while ((rc = bn_db_step(s)) == BN_DB_ROW) job_from_row(s, &jobs[k++]);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store_jobs_free(jobs, k);
        return bn_store__fail(st, "listing jobs");
    }
    if (k > limit) {
        bn_store_job_free(&jobs[limit]);
        k = limit;
        *next_cursor = jobs[limit - 1].cursor;
    }
    *out = jobs;
    *n = k;
    return BN_STORE_OK;
}

int bn_store_output_in_use(bn_store *st, const char *output, bool *in_use)
{
    bn_stmt *s = bn_store__cached(st,
        "SELECT 1 FROM jobs WHERE output = ? AND status IN ('queued','running') LIMIT 1");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, output);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_ROW && rc != BN_DB_DONE) return bn_store__fail(st, "checking output");
    *in_use = rc == BN_DB_ROW;
    return BN_STORE_OK;
}

int bn_store_job_claim(bn_store *st, const char *owner, int64_t lease_ms, bn_store_job *out)
{
    return bn_store_job_claim_for(st, owner, lease_ms, true, out);
}

int bn_store_job_claim_for(bn_store *st, const char *owner, int64_t lease_ms, bool cuda_ok,
                           bn_store_job *out)
{
    memset(out, 0, sizeof *out);
    /* SQLite: one writer at a time (BEGIN IMMEDIATE). PostgreSQL: the candidate row is
     * locked and rows other hosts are claiming are skipped; a running job whose lease
     * expired (its host died) is taken over, counting one more attempt. */
    if (bn_store__begin(st, !st->pg)) return BN_STORE_ERROR;
    int64_t now = bn_store_now_ms();
    bn_stmt *s = bn_store__cached(st, BN_SQL(st,
        "SELECT id FROM jobs WHERE status = 'queued' ORDER BY priority DESC, rowid LIMIT 1",
        cuda_ok
        ? "SELECT id FROM jobs WHERE (status = 'queued'"
          " OR (status = 'running' AND lease_expires < ?1))"
          " ORDER BY priority DESC, rowid LIMIT 1 FOR UPDATE SKIP LOCKED"
        : "SELECT id FROM jobs WHERE (status = 'queued'"
          " OR (status = 'running' AND lease_expires < ?1))"
          " AND (config::jsonb ->> 'device') IS DISTINCT FROM 'cuda'"
          " ORDER BY priority DESC, rowid LIMIT 1 FOR UPDATE SKIP LOCKED"));
    if (!s) goto fail;
    if (st->pg) bn_db_bind_int64(s, 1, now);
    int rc = bn_db_step(s);
    if (rc == BN_DB_DONE) {
        bn_store__release(st, s);
        bn_store__rollback(st);
        return BN_STORE_NOTFOUND;
    }
    if (rc != BN_DB_ROW) {
        bn_store__release(st, s);
        bn_store__fail(st, "claiming");
        goto fail;
    }
    char id[BN_STORE_ID_LEN];
    snprintf(id, sizeof id, "%s", (const char *)bn_db_col_text(s, 0));
    bn_store__release(st, s);
    s = bn_store__cached(st,
        "UPDATE jobs SET attempts = attempts + CASE WHEN status = 'running' THEN 1 ELSE 0 END,"
        " status = 'running', lease_owner = ?2, lease_expires = ?3,"
        " started_at = coalesce(started_at, ?4), updated_at = ?4 WHERE id = ?1");
    if (!s) goto fail;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, owner);
    bn_db_bind_int64(s, 3, now + lease_ms);
    bn_db_bind_int64(s, 4, now);
    rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store__fail(st, "claiming");
        goto fail;
    }
    if (get_job(st, id, out)) goto fail;
    if (bn_store__commit(st)) {
        bn_store_job_free(out);
        return BN_STORE_ERROR;
    }
    return BN_STORE_OK;
fail:
    bn_store__rollback(st);
    return BN_STORE_ERROR;
}

int bn_store_job_progress(bn_store *st, const char *id, const char *owner, int64_t lease_ms,
                          const char *stage, double stage_progress, double progress,
                          const char *detail, bool *cancel_requested)
{
    int64_t now = bn_store_now_ms();
    bn_stmt *s = bn_store__cached(st,
        "UPDATE jobs SET lease_expires = ?3, updated_at = ?4,"
        " stage = coalesce(?5, stage),"
        " stage_progress = CASE WHEN ?5 IS NULL THEN stage_progress ELSE ?6 END,"
        " progress = CASE WHEN ?5 IS NULL THEN progress ELSE ?7 END,"
        " detail = CASE WHEN ?5 IS NULL THEN detail ELSE ?8 END"
        " WHERE id = ?1 AND status = 'running' AND lease_owner = ?2"
        " RETURNING cancel_requested");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, owner);
    bn_db_bind_int64(s, 3, now + lease_ms);
    bn_db_bind_int64(s, 4, now);
    bn_store__bind_text(s, 5, stage);
    bn_db_bind_double(s, 6, stage_progress);
    bn_db_bind_double(s, 7, progress);
    bn_store__bind_text(s, 8, detail);
    int rc = bn_db_step(s), ret = BN_STORE_OK;
    if (rc == BN_DB_ROW) {
        if (cancel_requested) *cancel_requested = bn_db_col_int(s, 0) != 0;
        rc = bn_db_step(s);
    } else if (rc == BN_DB_DONE) {
        snprintf(st->errmsg, sizeof st->errmsg, "job %s: lease lost", id);
        ret = BN_STORE_LOST;
    }
    if (rc != BN_DB_DONE) ret = bn_store__fail(st, "writing progress");
    bn_store__release(st, s);
    return ret;
}

int bn_store__hold_lease(bn_store *st, const char *id, const char *owner)
{
    if (!owner) return BN_STORE_OK;
    bn_stmt *s = bn_store__cached(st, BN_SQL(st,
        "SELECT 1 FROM jobs WHERE id = ?1 AND status = 'running' AND lease_owner = ?2",
        "SELECT 1 FROM jobs WHERE id = ?1 AND status = 'running' AND lease_owner = ?2"
        " FOR SHARE"));
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, owner);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc == BN_DB_ROW) return BN_STORE_OK;
    if (rc != BN_DB_DONE) return bn_store__fail(st, "checking the lease");
    snprintf(st->errmsg, sizeof st->errmsg, "job %s: lease lost (not held by %s)", id, owner);
    return BN_STORE_LOST;
}

int bn_store_job_stage_timing(bn_store *st, const char *id, const char *owner,
                              const char *stage, int64_t started_at, int64_t finished_at)
{
    bn_stmt *s = bn_store__cached(st, BN_SQL(st,
        "UPDATE jobs SET stage_timings = json_set(stage_timings, '$.' || ?2,"
        " json_object('started_at', ?3, 'finished_at', ?4, 'seconds', (?4 - ?3) / 1000.0))"
        " WHERE id = ?1 AND (?5 IS NULL OR lease_owner = ?5)",
        "UPDATE jobs SET stage_timings = jsonb_set(stage_timings::jsonb, ARRAY[?2],"
        " jsonb_build_object('started_at', ?3, 'finished_at', ?4, 'seconds',"
        " (?4 - ?3) / 1000.0))::text WHERE id = ?1 AND (?5 IS NULL OR lease_owner = ?5)"));
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, stage);
    bn_db_bind_int64(s, 3, started_at);
    bn_db_bind_int64(s, 4, finished_at);
    bn_store__bind_text(s, 5, owner);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) return bn_store__fail(st, "recording stage timing");
    if (owner && bn_store__changes(st) == 0) {
        snprintf(st->errmsg, sizeof st->errmsg, "job %s: lease lost (not held by %s)", id, owner);
        return BN_STORE_LOST;
    }
    return BN_STORE_OK;
}

/* Sets a final status on a job in the current transaction. owner NULL = any. */
static int set_final(bn_store *st, const char *id, const char *owner, bn_job_status status,
                     const char *error, const char *from_status)
{
    int64_t now = bn_store_now_ms();
    bn_stmt *s = bn_store__cached(st,
        "UPDATE jobs SET status = ?3, error = ?4, finished_at = ?5, updated_at = ?5,"
        " lease_owner = NULL, lease_expires = NULL,"
        " progress = CASE WHEN ?3 = 'succeeded' THEN 1.0 ELSE progress END,"
        " stage_progress = CASE WHEN ?3 = 'succeeded' THEN 1.0 ELSE stage_progress END"
        " WHERE id = ?1 AND status = ?6 AND (?2 IS NULL OR lease_owner = ?2)");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, owner);
    bn_store__bind_text(s, 3, bn_store_status_name(status));
    bn_store__bind_text(s, 4, error);
    bn_db_bind_int64(s, 5, now);
    bn_store__bind_text(s, 6, from_status);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) return bn_store__fail(st, "finishing job");
    if (bn_store__changes(st) == 0) {
        snprintf(st->errmsg, sizeof st->errmsg, "job %s is not %s%s", id, from_status,
                 owner ? " under this lease" : "");
        return BN_STORE_LOST;
    }
    return bn_store__enqueue_final(st, id, status);
}

int bn_store_job_finish(bn_store *st, const char *id, const char *owner,
                        bn_job_status status, const char *error)
{
    if (!bn_store_status_final(status)) {
        snprintf(st->errmsg, sizeof st->errmsg, "finish: %s is not a final status",
                 bn_store_status_name(status));
        return BN_STORE_ERROR;
    }
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    int rc = set_final(st, id, owner, status, error, "running");
    if (rc) {
        bn_store__rollback(st);
        return rc;
    }
    return bn_store__commit(st);
}

int bn_store_job_requeue(bn_store *st, const char *id, const char *owner)
{
    bn_stmt *s = bn_store__cached(st,
        "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires = NULL,"
        " updated_at = ?3 WHERE id = ?1 AND status = 'running' AND lease_owner = ?2");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, owner);
    bn_db_bind_int64(s, 3, bn_store_now_ms());
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) return bn_store__fail(st, "requeueing job");
    return bn_store__changes(st) ? BN_STORE_OK : BN_STORE_LOST;
}

int bn_store_job_cancel(bn_store *st, const char *id, bool *now_final)
{
    *now_final = false;
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    bn_store_job j;
    int rc = get_job(st, id, &j);
    if (rc) goto out;
    if (bn_store_status_final(j.status)) {
        snprintf(st->errmsg, sizeof st->errmsg, "job %s is already %s", id,
                 bn_store_status_name(j.status));
        rc = BN_STORE_CONFLICT;
    } else if (j.status == BN_JOB_QUEUED) {
        rc = set_final(st, id, NULL, BN_JOB_CANCELLED, "cancelled by request", "queued");
        *now_final = rc == BN_STORE_OK;
    } else {
        bn_stmt *s = bn_store__cached(st,
            "UPDATE jobs SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1");
        if (!s) {
            rc = BN_STORE_ERROR;
        } else {
            bn_store__bind_text(s, 1, id);
            bn_db_bind_int64(s, 2, bn_store_now_ms());
            rc = bn_db_step(s) == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "cancel");
            bn_store__release(st, s);
        }
    }
    bn_store_job_free(&j);
out:
    if (rc) {
        bn_store__rollback(st);
        return rc;
    }
    return bn_store__commit(st);
}

int bn_store_job_delete(bn_store *st, const char *id)
{
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    bn_store_job j;
    int rc = get_job(st, id, &j);
    if (rc) goto out;
    bool final = bn_store_status_final(j.status);
    bn_store_job_free(&j);
    if (!final) {
        snprintf(st->errmsg, sizeof st->errmsg, "job %s is not finished", id);
        rc = BN_STORE_CONFLICT;
        goto out;
    }
    static const char *const del[] = {
        "DELETE FROM job_events WHERE job_id = ?",
        "DELETE FROM job_metrics WHERE job_id = ?",
        "DELETE FROM jobs WHERE id = ?",
    };
    for (size_t i = 0; i < sizeof del / sizeof del[0] && !rc; i++) {
        bn_stmt *s = bn_store__cached(st, del[i]);
        if (!s) {
            rc = BN_STORE_ERROR;
            break;
        }
        bn_store__bind_text(s, 1, id);
        if (bn_db_step(s) != BN_DB_DONE) rc = bn_store__fail(st, "deleting job");
        bn_store__release(st, s);
    }
out:
    if (rc) {
        bn_store__rollback(st);
        return rc;
    }
    return bn_store__commit(st);
}

/* Running jobs back to queued with attempts+1, or failed at max_attempts: all of them
 * (every_running) or only those whose lease expired. */
static int requeue_running(bn_store *st, bool every_running, int max_attempts, int *requeued,
                           int *failed)
{
    *requeued = *failed = 0;
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    bn_stmt *s = bn_store__cached(st, every_running
        ? "SELECT id, attempts FROM jobs WHERE status = 'running' ORDER BY rowid"
        : BN_SQL(st,
            "SELECT id, attempts FROM jobs WHERE status = 'running' AND lease_expires < ?1"
            " ORDER BY rowid",
            "SELECT id, attempts FROM jobs WHERE status = 'running' AND lease_expires < ?1"
            " ORDER BY rowid FOR UPDATE SKIP LOCKED"));
    if (!s) goto fail;
    if (!every_running) bn_db_bind_int64(s, 1, bn_store_now_ms());
    int rc;
    while ((rc = bn_db_step(s)) == BN_DB_ROW) {
        char id[BN_STORE_ID_LEN];
        snprintf(id, sizeof id, "%s", (const char *)bn_db_col_text(s, 0));
        int attempts = bn_db_col_int(s, 1) + 1;
        bn_stmt *u = bn_store__cached(st,
            "UPDATE jobs SET status = 'queued', attempts = ?2, lease_owner = NULL,"
            " lease_expires = NULL, updated_at = ?3 WHERE id = ?1");
        if (!u) break;
        bn_store__bind_text(u, 1, id);
        bn_db_bind_int64(u, 2, attempts);
        bn_db_bind_int64(u, 3, bn_store_now_ms());
        int urc = bn_db_step(u);
        bn_store__release(st, u);
        if (urc != BN_DB_DONE) {
            bn_store__fail(st, "recovering job");
            break;
        }
        if (attempts >= max_attempts) {
            char why[160];
            snprintf(why, sizeof why, "interrupted %d times (max_attempts %d); giving up",
                     attempts, max_attempts);
            if (set_final(st, id, NULL, BN_JOB_FAILED, why, "queued")) break;
            (*failed)++;
        } else {
            (*requeued)++;
        }
    }
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) goto fail;
    return bn_store__commit(st);
fail:
    bn_store__rollback(st);
    return BN_STORE_ERROR;
}

int bn_store_recover(bn_store *st, int max_attempts, int *requeued, int *failed)
{
    /* SQLite has one host: whatever it left running was interrupted. PostgreSQL: other
     * hosts run jobs too; only those whose lease expired are ours to recover. */
    return requeue_running(st, !st->pg, max_attempts, requeued, failed);
}

int bn_store_reap_expired(bn_store *st, int max_attempts, int *requeued, int *failed)
{
    return requeue_running(st, false, max_attempts, requeued, failed);
}

int bn_store_job_counts(bn_store *st, int64_t counts[BN_JOB_STATUS_COUNT])
{
    for (int i = 0; i < BN_JOB_STATUS_COUNT; i++) counts[i] = 0;
    bn_stmt *s = bn_store__cached(st, "SELECT status, count(*) FROM jobs GROUP BY status");
    if (!s) return BN_STORE_ERROR;
    int rc;
    while ((rc = bn_db_step(s)) == BN_DB_ROW) {
        int k = bn_store_status_parse((const char *)bn_db_col_text(s, 0));
        if (k >= 0) counts[k] = bn_db_col_int64(s, 1);
    }
    bn_store__release(st, s);
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "counting jobs");
}

int bn_store_stage_durations(bn_store *st, void (*fn)(void *ctx, const char *stage,
                                                      double seconds), void *ctx)
{
    bn_stmt *s = bn_store__cached(st, BN_SQL(st,
        "SELECT t.key, json_extract(t.value, '$.seconds') FROM jobs, json_each(jobs.stage_timings) AS t"
        " WHERE jobs.stage_timings != '{}'",
        "SELECT t.key, (t.value ->> 'seconds')::float8 FROM jobs,"
        " jsonb_each(jobs.stage_timings::jsonb) AS t WHERE jobs.stage_timings <> '{}'"));
    if (!s) return BN_STORE_ERROR;
    int rc;
    while ((rc = bn_db_step(s)) == BN_DB_ROW)
        if (!bn_db_col_null(s, 1))
            fn(ctx, (const char *)bn_db_col_text(s, 0), bn_db_col_double(s, 1));
    bn_store__release(st, s);
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "reading stage timings");
}

int bn_store_running_owners(bn_store *st, void (*fn)(void *ctx, const char *owner, int64_t jobs,
                                                     int64_t lease_expires), void *ctx)
{
    bn_stmt *s = bn_store__cached(st,
        "SELECT lease_owner, count(*), max(lease_expires) FROM jobs WHERE status = 'running'"
        " AND lease_owner IS NOT NULL GROUP BY lease_owner ORDER BY lease_owner");
    if (!s) return BN_STORE_ERROR;
    int rc;
    while ((rc = bn_db_step(s)) == BN_DB_ROW)
        fn(ctx, (const char *)bn_db_col_text(s, 0), bn_db_col_int64(s, 1), bn_db_col_int64(s, 2));
    bn_store__release(st, s);
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "reading lease owners");
}
