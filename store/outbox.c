/* outbox.c - the W&B outbox as the tracker reads and acknowledges it (bn_store_wandb.h).
 *
 * Every function is one short transaction on the caller's connection. freeze is the
 * heart of exactly-once delivery: offsets and line bytes are fixed durably before any
 * request carries them, and a row's offset is never reassigned. wandb_runs.history_offset
 * is the next offset to hand out; delivered_rows/pending_rows are kept in step with the
 * outbox on every acknowledgement (the API recounts from the outbox anyway).
 */
#include "bn_store_wandb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

static int64_t col_i64(bn_stmt *s, int i)
{
    return bn_db_col_null(s, i) ? -1 : bn_db_col_int64(s, i);
}

void bn_store_wandb_jobs_free(bn_store_wandb_job *jobs, int n)
{
    for (int i = 0; jobs && i < n; i++) {
        bn_store_wandb_job *j = &jobs[i];
        free(j->mode);
        free(j->tracking);
        free(j->config);
        free(j->output);
        free(j->output_dir);
        free(j->run_status);
        free(j->run_id);
        free(j->entity);
        free(j->project);
        free(j->run_url);
        free(j->last_error);
        free(j->sources);
    }
    free(jobs);
}

void bn_store_outbox_rows_free(bn_store_outbox_row *rows, int n)
{
    for (int i = 0; rows && i < n; i++) free(rows[i].payload);
    free(rows);
}

void bn_store_wandb_status_free(bn_store_wandb_status *s)
{
    if (!s) return;
    free(s->run_id);
    free(s->entity);
    free(s->project);
    free(s->run_url);
    free(s->last_error);
    memset(s, 0, sizeof *s);
}

/* ---- work list ---------------------------------------------------------------------- */

/* The work list in either dialect: only the JSON aggregate of the metric sources differs. */
#define WORK_SQL(sources_agg)                                                                     \
    "WITH w(job_id) AS ("                                                                         \
    "  SELECT DISTINCT job_id FROM wandb_outbox WHERE delivered_at IS NULL"                       \
    "  UNION"                                                                                     \
    "  SELECT r.job_id FROM wandb_runs r JOIN jobs j2 ON j2.id = r.job_id"                        \
    "   WHERE r.status = 'active' AND j2.status = 'running')"                                     \
    " SELECT j.id, j.status, j.wandb_mode, j.tracking, j.config, j.output, j.output_dir,"         \
    "  (SELECT MIN(created_at) FROM wandb_outbox o WHERE o.job_id = j.id),"                       \
    "  r.status, r.run_id, r.entity, r.project, r.run_url, r.last_error,"                         \
    "  COALESCE(r.history_offset, 0),"                                                            \
    "  (SELECT COUNT(*) FROM wandb_outbox o WHERE o.job_id = j.id AND o.delivered_at IS NULL),"   \
    "  (SELECT CASE WHEN COUNT(*) > 0 THEN " sources_agg " END"                                   \
    "    FROM job_metric_sources m WHERE m.job_id = j.id)"                                        \
    " FROM w JOIN jobs j ON j.id = w.job_id LEFT JOIN wandb_runs r ON r.job_id = j.id"            \
    " WHERE j.wandb_mode IN ('online', 'offline')"                                                \
    "  AND COALESCE(r.status, 'pending') IN ('pending', 'active')"                                \
    " ORDER BY j.created_at, j.id LIMIT ?"
static const char work_sql_sqlite[] = WORK_SQL("json_group_object(key, source)");
static const char work_sql_pg[] = WORK_SQL("json_object_agg(key, source)::text");
#undef WORK_SQL

static void work_row(bn_stmt *s, bn_store_wandb_job *j)
{
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", (const char *)bn_db_col_text(s, 0));
    int st = bn_store_status_parse((const char *)bn_db_col_text(s, 1));
    j->status = st < 0 ? BN_JOB_QUEUED : (bn_job_status)st;
    j->mode = bn_store__col_strdup(s, 2);
    j->tracking = bn_store__col_strdup(s, 3);
    j->config = bn_store__col_strdup(s, 4);
    j->output = bn_store__col_strdup(s, 5);
    j->output_dir = bn_store__col_strdup(s, 6);
    j->first_row_at = col_i64(s, 7);
    j->run_status = bn_store__col_strdup(s, 8);
    j->run_id = bn_store__col_strdup(s, 9);
    j->entity = bn_store__col_strdup(s, 10);
    j->project = bn_store__col_strdup(s, 11);
    j->run_url = bn_store__col_strdup(s, 12);
    j->last_error = bn_store__col_strdup(s, 13);
    j->history_offset = bn_db_col_int64(s, 14);
    j->pending_rows = bn_db_col_int64(s, 15);
    j->sources = bn_store__col_strdup(s, 16);
}

int bn_store_wandb_work(bn_store *st, int limit, bn_store_wandb_job **out, int *n)
{
    *out = NULL;
    *n = 0;
    bn_stmt *s = bn_store__prepare(st, BN_SQL(st, work_sql_sqlite, work_sql_pg));
    if (!s) return BN_STORE_ERROR;
    bn_db_bind_int64(s, 1, limit > 0 ? limit : 256);
    bn_store_wandb_job *jobs = NULL;
    int cnt = 0, rc;
    while ((rc = bn_db_step(s)) == BN_DB_ROW) {
        bn_store_wandb_job *nj = realloc(jobs, (size_t)(cnt + 1) * sizeof *nj);
        if (!nj) break;
        jobs = nj;
        work_row(s, &jobs[cnt++]);
    }
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store_wandb_jobs_free(jobs, cnt);
        return bn_store__fail(st, "listing W&B work");
    }
    *out = jobs;
    *n = cnt;
    return BN_STORE_OK;
}

/* ---- run state ------------------------------------------------------------------------ */

/* Makes sure the job's wandb_runs row exists (inside a transaction). */
static int ensure_run(bn_store *st, const char *id, const char *mode)
{
    bn_stmt *s = bn_store__prepare(st,
        "INSERT INTO wandb_runs (job_id, mode) VALUES (?, ?) ON CONFLICT (job_id) DO NOTHING");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_store__bind_text(s, 2, mode ? mode : "online");
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "creating the W&B run row");
}

/* Recounts delivered/pending rows of a run (inside a transaction). */
static int recount(bn_store *st, const char *id)
{
    bn_stmt *s = bn_store__prepare(st,
        "UPDATE wandb_runs SET"
        " delivered_rows = (SELECT COUNT(*) FROM wandb_outbox WHERE job_id = ?1 AND delivered_at IS NOT NULL),"
        " pending_rows = (SELECT COUNT(*) FROM wandb_outbox WHERE job_id = ?1 AND delivered_at IS NULL)"
        " WHERE job_id = ?1");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "counting W&B rows");
}

int bn_store_wandb_run_started(bn_store *st, const char *id, const char *mode, const char *run_id,
                               const char *entity, const char *project, const char *run_url)
{
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    if (ensure_run(st, id, mode)) goto fail;
    bn_stmt *s = bn_store__prepare(st,
        "UPDATE wandb_runs SET run_id = ?, entity = ?, project = ?, run_url = ?,"
        " status = 'active', last_error = NULL WHERE job_id = ?");
    if (!s) goto fail;
    bn_store__bind_text(s, 1, run_id);
    bn_store__bind_text(s, 2, entity);
    bn_store__bind_text(s, 3, project);
    bn_store__bind_text(s, 4, run_url);
    bn_store__bind_text(s, 5, id);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store__fail(st, "recording the W&B run");
        goto fail;
    }
    return bn_store__commit(st);
fail:
    bn_store__rollback(st);
    return BN_STORE_ERROR;
}

/* ---- freeze ---------------------------------------------------------------------------- */

typedef struct unfrozen {
    int64_t id, created_at;
    char kind[12];
    char *payload;
} unfrozen;

static int load_unfrozen(bn_store *st, const char *id, unfrozen **out, int *n)
{
    *out = NULL;
    *n = 0;
    bn_stmt *s = bn_store__prepare(st,
        "SELECT id, kind, payload, created_at FROM wandb_outbox"
        " WHERE job_id = ? AND delivered_at IS NULL AND \"offset\" IS NULL"
        "  AND kind IN ('history', 'summary') ORDER BY id");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    int rc, cnt = 0;
    unfrozen *rows = NULL;
    while ((rc = bn_db_step(s)) == BN_DB_ROW) {
        unfrozen *nr = realloc(rows, (size_t)(cnt + 1) * sizeof *nr);
        if (!nr) break;
        rows = nr;
        unfrozen *u = &rows[cnt++];
        u->id = bn_db_col_int64(s, 0);
        snprintf(u->kind, sizeof u->kind, "%s", (const char *)bn_db_col_text(s, 1));
        u->payload = bn_store__col_strdup(s, 2);
        u->created_at = bn_db_col_int64(s, 3);
    }
    bn_store__release(st, s);
    *out = rows;
    *n = cnt;
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "reading unfrozen W&B rows");
}

static int next_offset(bn_store *st, const char *id, int64_t *off)
{
    bn_stmt *s = bn_store__prepare(st, "SELECT history_offset FROM wandb_runs WHERE job_id = ?");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    int rc = bn_db_step(s);
    *off = rc == BN_DB_ROW ? bn_db_col_int64(s, 0) : 0;
    bn_store__release(st, s);
    return (rc == BN_DB_ROW || rc == BN_DB_DONE) ? BN_STORE_OK : bn_store__fail(st, "reading the history offset");
}

/* Fixes one row: offset + line, or (line == NULL) dropped as delivered. */
static int freeze_row(bn_store *st, int64_t row_id, int64_t offset, const char *line, int64_t now)
{
    bn_stmt *s = line
        ? bn_store__prepare(st, "UPDATE wandb_outbox SET \"offset\" = ?, payload = ? WHERE id = ?")
        : bn_store__prepare(st, "UPDATE wandb_outbox SET delivered_at = ? WHERE id = ?");
    if (!s) return BN_STORE_ERROR;
    if (line) {
        bn_db_bind_int64(s, 1, offset);
        bn_store__bind_text(s, 2, line);
        bn_db_bind_int64(s, 3, row_id);
    } else {
        bn_db_bind_int64(s, 1, now);
        bn_db_bind_int64(s, 2, row_id);
    }
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "freezing a W&B row");
}

static int set_offset(bn_store *st, const char *id, int64_t off)
{
    bn_stmt *s = bn_store__prepare(st, "UPDATE wandb_runs SET history_offset = ? WHERE job_id = ?");
    if (!s) return BN_STORE_ERROR;
    bn_db_bind_int64(s, 1, off);
    bn_store__bind_text(s, 2, id);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    return rc == BN_DB_DONE ? BN_STORE_OK : bn_store__fail(st, "advancing the history offset");
}

int bn_store_wandb_freeze(bn_store *st, const char *id, const char *mode,
                          bn_store_wandb_render_fn render, void *ctx, int *n_frozen)
{
    *n_frozen = 0;
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    unfrozen *rows = NULL;
    int n = 0, dropped = 0;
    int64_t off = 0, now = bn_store_now_ms();
    if (ensure_run(st, id, mode) || next_offset(st, id, &off) || load_unfrozen(st, id, &rows, &n))
        goto fail;
    for (int i = 0; i < n; i++) {
        bool hist = !strcmp(rows[i].kind, "history");
        char *line = rows[i].payload ? render(ctx, rows[i].kind, rows[i].payload, rows[i].created_at, off) : NULL;
        bool kept = line != NULL;
        int rc = freeze_row(st, rows[i].id, hist ? off : 0, line, now);
        free(line);
        if (rc) goto fail;
        if (!kept) dropped++;
        else if (hist) off++;
    }
    if (set_offset(st, id, off) || recount(st, id) || bn_store__commit(st)) goto fail;
    *n_frozen = n - dropped;
    for (int i = 0; i < n; i++) free(rows[i].payload);
    free(rows);
    if (dropped) {
        char msg[128];
        snprintf(msg, sizeof msg, "W&B: %d outbox row(s) with an unusable payload were skipped", dropped);
        bn_store_event_add(st, id, NULL, NULL, "warn", msg);
    }
    return BN_STORE_OK;
fail:
    bn_store__rollback(st);
    for (int i = 0; i < n; i++) free(rows[i].payload);
    free(rows);
    return BN_STORE_ERROR;
}

/* ---- pending / delivered ---------------------------------------------------------------- */

int bn_store_wandb_pending(bn_store *st, const char *id, int limit, bn_store_outbox_row **out, int *n)
{
    *out = NULL;
    *n = 0;
    bn_stmt *s = bn_store__prepare(st,
        "SELECT id, kind, payload, \"offset\", created_at FROM wandb_outbox"
        " WHERE job_id = ? AND delivered_at IS NULL ORDER BY id LIMIT ?");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    bn_db_bind_int64(s, 2, limit > 0 ? limit : 1000);
    int rc, cnt = 0;
    bn_store_outbox_row *rows = NULL;
    while ((rc = bn_db_step(s)) == BN_DB_ROW) {
        bn_store_outbox_row *nr = realloc(rows, (size_t)(cnt + 1) * sizeof *nr);
        if (!nr) break;
        rows = nr;
        bn_store_outbox_row *r = &rows[cnt++];
        r->id = bn_db_col_int64(s, 0);
        snprintf(r->kind, sizeof r->kind, "%s", (const char *)bn_db_col_text(s, 1));
        r->payload = bn_store__col_strdup(s, 2);
        r->offset = col_i64(s, 3);
        r->created_at = bn_db_col_int64(s, 4);
    }
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store_outbox_rows_free(rows, cnt);
        return bn_store__fail(st, "reading pending W&B rows");
    }
    *out = rows;
    *n = cnt;
    return BN_STORE_OK;
}

int bn_store_wandb_delivered(bn_store *st, const char *id, int64_t last_row_id, const char *new_status)
{
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    bn_stmt *s = bn_store__prepare(st,
        "UPDATE wandb_outbox SET delivered_at = ? WHERE job_id = ? AND id <= ?"
        " AND delivered_at IS NULL AND (\"offset\" IS NOT NULL OR kind = 'complete')");
    if (!s) goto fail;
    bn_db_bind_int64(s, 1, bn_store_now_ms());
    bn_store__bind_text(s, 2, id);
    bn_db_bind_int64(s, 3, last_row_id);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store__fail(st, "acknowledging W&B rows");
        goto fail;
    }
    s = bn_store__prepare(st,
        "UPDATE wandb_runs SET last_error = NULL, status = COALESCE(?, status) WHERE job_id = ?");
    if (!s) goto fail;
    bn_store__bind_text(s, 1, new_status);
    bn_store__bind_text(s, 2, id);
    rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store__fail(st, "updating the W&B run");
        goto fail;
    }
    if (recount(st, id) || bn_store__commit(st)) goto fail;
    return BN_STORE_OK;
fail:
    bn_store__rollback(st);
    return BN_STORE_ERROR;
}

int bn_store_wandb_error(bn_store *st, const char *id, const char *mode, const char *message,
                         bool fatal)
{
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    if (ensure_run(st, id, mode)) goto fail;
    bn_stmt *s = bn_store__prepare(st,
        fatal ? "UPDATE wandb_runs SET last_error = ?, status = 'failed' WHERE job_id = ?"
              : "UPDATE wandb_runs SET last_error = ? WHERE job_id = ?");
    if (!s) goto fail;
    bn_store__bind_text(s, 1, message);
    bn_store__bind_text(s, 2, id);
    int rc = bn_db_step(s);
    bn_store__release(st, s);
    if (rc != BN_DB_DONE) {
        bn_store__fail(st, "recording a W&B error");
        goto fail;
    }
    if (recount(st, id) || bn_store__commit(st)) goto fail;
    if (fatal) {
        char msg[640];
        snprintf(msg, sizeof msg, "W&B tracking failed: %s", message ? message : "unknown error");
        return bn_store_event_add(st, id, NULL, NULL, "warn", msg);
    }
    return BN_STORE_OK;
fail:
    bn_store__rollback(st);
    return BN_STORE_ERROR;
}

/* ---- read side --------------------------------------------------------------------------- */

int bn_store_wandb_status_get(bn_store *st, const char *id, bn_store_wandb_status *out)
{
    memset(out, 0, sizeof *out);
    bn_stmt *s = bn_store__prepare(st,
        "SELECT j.wandb_mode, r.status, r.run_id, r.entity, r.project, r.run_url, r.last_error,"
        "  (SELECT COUNT(*) FROM wandb_outbox o WHERE o.job_id = j.id AND o.delivered_at IS NOT NULL),"
        "  (SELECT COUNT(*) FROM wandb_outbox o WHERE o.job_id = j.id AND o.delivered_at IS NULL)"
        " FROM jobs j LEFT JOIN wandb_runs r ON r.job_id = j.id WHERE j.id = ?");
    if (!s) return BN_STORE_ERROR;
    bn_store__bind_text(s, 1, id);
    int rc = bn_db_step(s);
    if (rc == BN_DB_ROW) {
        const char *mode = (const char *)bn_db_col_text(s, 0);
        const char *status = (const char *)bn_db_col_text(s, 1);
        snprintf(out->mode, sizeof out->mode, "%s", mode ? mode : "disabled");
        if (!strcmp(out->mode, "disabled")) status = "disabled";
        snprintf(out->status, sizeof out->status, "%s", status ? status : "pending");
        out->run_id = bn_store__col_strdup(s, 2);
        out->entity = bn_store__col_strdup(s, 3);
        out->project = bn_store__col_strdup(s, 4);
        out->run_url = bn_store__col_strdup(s, 5);
        out->last_error = bn_store__col_strdup(s, 6);
        out->delivered_rows = bn_db_col_int64(s, 7);
        out->pending_rows = bn_db_col_int64(s, 8);
    }
    bn_store__release(st, s);
    if (rc == BN_DB_DONE) return BN_STORE_NOTFOUND;
    return rc == BN_DB_ROW ? BN_STORE_OK : bn_store__fail(st, "reading the W&B status");
}

int bn_store_wandb_stats_get(bn_store *st, bn_store_wandb_stats *out)
{
    memset(out, 0, sizeof *out);
    bn_stmt *s = bn_store__prepare(st,
        "SELECT"
        " (SELECT COUNT(*) FROM wandb_outbox o JOIN jobs j ON j.id = o.job_id"
        "   LEFT JOIN wandb_runs r ON r.job_id = o.job_id WHERE o.delivered_at IS NULL"
        "   AND j.wandb_mode IN ('online', 'offline')"
        "   AND COALESCE(r.status, 'pending') IN ('pending', 'active')),"
        " (SELECT COUNT(*) FROM wandb_outbox WHERE delivered_at IS NOT NULL),"
        " (SELECT COUNT(*) FROM wandb_runs WHERE status = 'active'),"
        " (SELECT COUNT(*) FROM wandb_runs WHERE status = 'finished'),"
        " (SELECT COUNT(*) FROM wandb_runs WHERE status = 'failed'),"
        " (SELECT COUNT(*) FROM wandb_runs WHERE status = 'offline')");
    if (!s) return BN_STORE_ERROR;
    int rc = bn_db_step(s);
    if (rc == BN_DB_ROW) {
        out->backlog_rows = bn_db_col_int64(s, 0);
        out->delivered_rows = bn_db_col_int64(s, 1);
        out->runs_active = bn_db_col_int64(s, 2);
        out->runs_finished = bn_db_col_int64(s, 3);
        out->runs_failed = bn_db_col_int64(s, 4);
        out->runs_offline = bn_db_col_int64(s, 5);
    }
    bn_store__release(st, s);
    return rc == BN_DB_ROW ? BN_STORE_OK : bn_store__fail(st, "reading W&B totals");
}

int bn_store_wandb_leader(bn_store *st, bool *leader)
{
    *leader = true;
    return st->drv->leader ? st->drv->leader(st, leader) : BN_STORE_OK;
}
