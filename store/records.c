/* records.c - job events, job metrics and the W&B outbox rows they produce.
 *
 * A metric is upserted on (job, key, step), so a stage that runs again after a crash
 * never doubles a value. The same transaction appends a 'history' outbox row for jobs
 * tracked on W&B, but only the first time that (key, step) is seen: the tracker then
 * delivers each row exactly once. When a job ends, bn_store__enqueue_final appends the
 * 'summary' row (the phase keys and every job-level metric) and the 'complete' row.
 *
 * Writes from a worker carry its lease owner: an event records it as its host, and an
 * event, metric or metric source is refused (BN_STORE_LOST) when the job is no longer
 * running under that lease, so a host whose job was taken over adds nothing (not even a
 * W&B outbox row). The check and the write share one transaction.
 *
 * Outbox payloads: history {"<key>": value, "_step": step} (step -1 for job-level
 * metrics); summary {"<key>": value, ..., "phase/success": 0|1,
 * "phase/quantization_method": "BitNet-1.58"}; complete {"exitcode": 0|1}.
 */
#include "store_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- events ------------------------------------------------------------------------ */

int bn_store_event_add(bn_store *st, const char *id, const char *owner, const char *stage,
                       const char *level, const char *message)
{
    /* Writers number a job's events under the write lock (SQLite BEGIN IMMEDIATE,
     * PostgreSQL the writer lock); the lease check is in the same transaction, and the
     * PostgreSQL NOTIFY is delivered with the commit. */
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    int ret = bn_store__hold_lease(st, id, owner);
    if (ret) goto fail;
    ret = BN_STORE_ERROR;
    bn_stmt *s = bn_store__cached(st,
        "INSERT INTO job_events (job_id, seq, ts, stage, level, message, host)"
        " SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6 FROM job_events"
        " WHERE job_id = ?1");
    if (!s) goto fail;
    bn_store__bind_text(s, 1, id);
    bn_db_bind_int64(s, 2, bn_store_now_ms());
    bn_store__bind_text(s, 3, stage);
    bn_store__bind_text(s, 4, level ? level : "info");
    bn_store__bind_text(s, 5, message ? message : "");
    bn_store__bind_text(s, 6, owner);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store__fail(st, "adding event");
        goto fail;
    }
    if (st->drv->notify && st->drv->notify(st, id)) goto fail;
    return bn_store__commit(st);
fail:
    bn_store__rollback(st);
    return ret;
}

int bn_store_events_list(bn_store *st, const char *id, int64_t after_seq, int limit,
                         bn_store_event **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (limit <= 0) limit = 1000;
    bn_stmt *s = bn_store__cached(st,
        "SELECT seq, ts, stage, level, message, host FROM job_events WHERE job_id = ? AND seq > ?"
        " ORDER BY seq LIMIT ?");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_db_bind_int64(s, 2, after_seq);
    bn_db_bind_int64(s, 3, limit);
    bn_store_event *ev = NULL;
    int k = 0, cap = 0, rc;
    while ((rc = bn_db_step(s)) == BN_DB_ROW) {
        if (k == cap) {
            cap = cap ? cap * 2 : 16;
            bn_store_event *grown = realloc(ev, (size_t)cap * sizeof *ev);
            if (!grown) {
                rc = BN_DB_ERR;
                break;
            }
            ev = grown;
        }
        ev[k].seq = bn_db_col_int64(s, 0);
        ev[k].ts = bn_db_col_int64(s, 1);
        ev[k].stage = bn_store__col_strdup(s, 2);
        ev[k].level = bn_store__col_strdup(s, 3);
        ev[k].message = bn_store__col_strdup(s, 4);
        ev[k].host = bn_store__col_strdup(s, 5);
        k++;
    }
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store_events_free(ev, k);
        return bn_store__fail(st, "listing events");
    }
    *out = ev;
    *n = k;
    return BN_STORE_OK;
}

void bn_store_events_free(bn_store_event *ev, int n)
{
    for (int i = 0; ev && i < n; i++) {
        free(ev[i].stage);
        free(ev[i].level);
        free(ev[i].message);
        free(ev[i].host);
    }
    free(ev);
}

/* ---- outbox ------------------------------------------------------------------------- */

int bn_store__wandb_mode(bn_store *st, const char *id, char *mode, size_t len)
{
    snprintf(mode, len, "disabled");
    bn_stmt *s = bn_store__cached(st, "SELECT wandb_mode FROM jobs WHERE id = ?");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    int rc = bn_db_step(s);
    if (rc == BN_DB_ROW && bn_db_col_text(s, 0))
        snprintf(mode, len, "%s", (const char *)bn_db_col_text(s, 0));
    bn_store__release(st, s);
    return (rc == BN_DB_ROW || rc == BN_DB_DONE) ? BN_STORE_OK
                                                    : bn_store__fail(st, "reading wandb mode");
}

int bn_store__outbox_add(bn_store *st, const char *id, const char *kind, const char *payload)
{
    bn_stmt *s = bn_store__cached(st,
        "INSERT INTO wandb_outbox (job_id, kind, payload, created_at) VALUES (?, ?, ?, ?)");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, kind);
    bn_store__bind_text(s, 3, payload);
    bn_db_bind_int64(s, 4, bn_store_now_ms());
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) return bn_store__fail(st, "adding outbox row");
    s = bn_store__cached(st,
        "UPDATE wandb_runs SET pending_rows = pending_rows + 1 WHERE job_id = ?");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    rc = bn_db_step(s);
    bn_store__release(st, s);
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "counting outbox row");
}

/* Builds the summary payload with SQLite's JSON functions (one statement). */
static int summary_payload(bn_store *st, const char *id, bn_job_status status, char **out)
{
    *out = NULL;
    bn_stmt *s = bn_store__cached(st, BN_SQL(st,
        "SELECT json_set(coalesce((SELECT json_group_object(key, value) FROM job_metrics"
        "   WHERE job_id = ?1 AND step < 0), '{}'),"
        " '$.\"phase/success\"', ?2, '$.\"phase/quantization_method\"', 'BitNet-1.58',"
        " '$.metric_sources', json(coalesce((SELECT json_group_object(key, source)"
        "   FROM job_metric_sources WHERE job_id = ?1), '{}')))",
        "SELECT (coalesce((SELECT jsonb_object_agg(key, value) FROM job_metrics"
        "   WHERE job_id = ?1 AND step < 0), '{}'::jsonb)"
        " || jsonb_build_object('phase/success', ?2, 'phase/quantization_method',"
        " 'BitNet-1.58', 'metric_sources', coalesce((SELECT jsonb_object_agg(key, source)"
        "   FROM job_metric_sources WHERE job_id = ?1), '{}'::jsonb)))::text"));
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_db_bind_int64(s, 2, status == BN_JOB_SUCCEEDED ? 1 : 0);
    int rc = bn_db_step(s);
    if (rc == BN_DB_ROW) *out = bn_store__col_strdup(s, 0);
    bn_store__release(st, s);
    if (rc != BN_DB_ROW || !*out) return bn_store__fail(st, "building summary");
    return BN_STORE_OK;
}

int bn_store__enqueue_final(bn_store *st, const char *id, bn_job_status status)
{
    char mode[16];
    if (bn_store__wandb_mode(st, id, mode, sizeof mode)) return BN_STORE_ERROR;
    if (strcmp(mode, "disabled") == 0) return BN_STORE_OK;
    char *summary;
    if (summary_payload(st, id, status, &summary)) return BN_STORE_ERROR;
    int rc = bn_store__outbox_add(st, id, "summary", summary);
    free(summary);
    if (rc) return rc;
    return bn_store__outbox_add(st, id, "complete",
                                status == BN_JOB_SUCCEEDED ? "{\"exitcode\":0}"
                                                           : "{\"exitcode\":1}");
}

/* ---- metrics ------------------------------------------------------------------------ */

int bn_store_metric_source_set(bn_store *st, const char *id, const char *owner, const char *key,
                               const char *source)
{
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    int ret = bn_store__hold_lease(st, id, owner);
    if (ret) {
        bn_store__rollback(st);
        return ret;
    }
    bn_stmt *s = bn_store__cached(st,
        "INSERT INTO job_metric_sources (job_id, key, source) VALUES (?, ?, ?)"
        " ON CONFLICT (job_id, key) DO UPDATE SET source = excluded.source");
    if (!s) {
        bn_store__rollback(st);
        return BN_STORE_ERROR;
    }
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, key);
    bn_store__bind_text(s, 3, source);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store__fail(st, "writing metric source");
        bn_store__rollback(st);
        return BN_STORE_ERROR;
    }
    return bn_store__commit(st);
}

int bn_store_metric_sources_json(bn_store *st, const char *id, char **out)
{
    *out = NULL;
    bn_stmt *s = bn_store__cached(st,
        BN_SQL(st, "SELECT coalesce(json_group_object(key, source), '{}') FROM job_metric_sources"
        " WHERE job_id = ?",
        "SELECT coalesce(json_object_agg(key, source)::text, '{}') FROM job_metric_sources"
        " WHERE job_id = ?1"));
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    int rc = bn_db_step(s);
    if (rc == BN_DB_ROW) *out = bn_store__col_strdup(s, 0);
    bn_store__release(st, s);
    if (rc != BN_DB_ROW || !*out) return bn_store__fail(st, "reading metric sources");
    return BN_STORE_OK;
}

static int metric_exists(bn_store *st, const char *id, const char *key, int64_t step,
                         bool *exists)
{
    bn_stmt *s = bn_store__cached(st,
        "SELECT 1 FROM job_metrics WHERE job_id = ? AND key = ? AND step = ?");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, key);
    bn_db_bind_int64(s, 3, step);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_ROW && rc != BN_DB_DONE) return bn_store__fail(st, "reading metric");
    *exists = rc == BN_DB_ROW;
    return BN_STORE_OK;
}

static int upsert_metric(bn_store *st, const char *id, const char *key, int64_t step,
                         double value)
{
    bn_stmt *s = bn_store__cached(st,
        "INSERT INTO job_metrics (job_id, key, step, value, ts) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (job_id, key, step) DO UPDATE SET value = excluded.value,"
        " ts = excluded.ts");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, key);
    bn_db_bind_int64(s, 3, step);
    bn_db_bind_double(s, 4, value);
    bn_db_bind_int64(s, 5, bn_store_now_ms());
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "writing metric");
}

static int history_payload(bn_store *st, const char *key, int64_t step, double value,
                           char **out)
{
    *out = NULL;
    bn_stmt *s = bn_store__cached(st, BN_SQL(st,
        "SELECT json_object(?, ?, '_step', ?)",
        "SELECT json_build_object(?1, ?2, '_step', ?3)::text"));
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, key);
    bn_db_bind_double(s, 2, value);
    bn_db_bind_int64(s, 3, step);
    int rc = bn_db_step(s);
    if (rc == BN_DB_ROW) *out = bn_store__col_strdup(s, 0);
    bn_store__release(st, s);
    return *out ? BN_STORE_OK : bn_store__fail(st, "building history row");
}

int bn_store_metric_add(bn_store *st, const char *id, const char *owner, const char *key,
                        int64_t step, double value)
{
    if (!isfinite(value)) {
        snprintf(st->errmsg, sizeof st->errmsg, "metric %s: value is not finite", key);
        return BN_STORE_ERROR;
    }
    if (step < 0) step = -1;
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    bool exists = false;
    char mode[16];
    int rc = bn_store__hold_lease(st, id, owner);
    if (!rc) rc = metric_exists(st, id, key, step, &exists);
    if (!rc) rc = upsert_metric(st, id, key, step, value);
    if (!rc) rc = bn_store__wandb_mode(st, id, mode, sizeof mode);
    if (!rc && !exists && strcmp(mode, "disabled") != 0) {
        char *payload;
        rc = history_payload(st, key, step, value, &payload);
        if (!rc) rc = bn_store__outbox_add(st, id, "history", payload);
        free(payload);
    }
    if (rc) {
        bn_store__rollback(st);
        return rc;
    }
    return bn_store__commit(st);
}

int bn_store_metrics_list(bn_store *st, const char *id, bn_store_metric **out, int *n)
{
    *out = NULL;
    *n = 0;
    bn_stmt *s = bn_store__cached(st,
        "SELECT key, step, value, ts FROM job_metrics WHERE job_id = ? ORDER BY key, step");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store_metric *m = NULL;
    int k = 0, cap = 0, rc;
    while ((rc = bn_db_step(s)) == BN_DB_ROW) {
        if (k == cap) {
            cap = cap ? cap * 2 : 32;
            bn_store_metric *grown = realloc(m, (size_t)cap * sizeof *m);
            if (!grown) {
                rc = BN_DB_ERR;
                break;
            }
            m = grown;
        }
        m[k].key = bn_store__col_strdup(s, 0);
        m[k].step = bn_db_col_int64(s, 1);
        m[k].value = bn_db_col_double(s, 2);
        m[k].ts = bn_db_col_int64(s, 3);
        k++;
    }
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store_metrics_free(m, k);
        return bn_store__fail(st, "listing metrics");
    }
    *out = m;
    *n = k;
    return BN_STORE_OK;
}

void bn_store_metrics_free(bn_store_metric *m, int n)
{
    for (int i = 0; m && i < n; i++) free(m[i].key);
    free(m);
}

int bn_store_outbox_count(bn_store *st, const char *id, const char *kind, int64_t *n)
{
    bn_stmt *s = bn_store__cached(st,
        "SELECT count(*) FROM wandb_outbox WHERE job_id = ? AND (?2 IS NULL OR kind = ?2)");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, kind);
    int rc = bn_db_step(s);
    *n = rc == BN_DB_ROW ? bn_db_col_int64(s, 0) : 0;
    bn_store__release(st, s);
    return rc == BN_DB_ROW ? BN_STORE_OK : bn_store__fail(st, "counting outbox");
}
