/* store.c - connection set-up, schema migrations and transaction helpers of the SQLite
 * store.
 *
 * Every handle runs in WAL mode with a busy timeout, so readers never block the single
 * writer and short write transactions queue up instead of failing. Migrations are a
 * list of SQL scripts; PRAGMA user_version records how many have been applied, and each
 * one runs inside a BEGIN IMMEDIATE transaction so concurrent openers cannot race.
 * Later modules (the W&B tracker) append their migrations to the list.
 */
#include "store_internal.h"

#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BN_STORE_BUSY_TIMEOUT_MS 10000

static const char *const status_names[BN_JOB_STATUS_COUNT] = {
    "queued", "running", "succeeded", "failed", "cancelled",
};

const char *bn_store_status_name(bn_job_status s)
{
    return (s >= 0 && s < BN_JOB_STATUS_COUNT) ? status_names[s] : "unknown";
}

int bn_store_status_parse(const char *name)
{
    for (int i = 0; name && i < BN_JOB_STATUS_COUNT; i++)
        if (strcmp(name, status_names[i]) == 0) return i;
    return -1;
}

bool bn_store_status_final(bn_job_status s)
{
    return s == BN_JOB_SUCCEEDED || s == BN_JOB_FAILED || s == BN_JOB_CANCELLED;
}

int64_t bn_store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- migrations ------------------------------------------------------------------- */

/* Schema v1: jobs, events, metrics, the W&B outbox and run table. */
static const char migration_v1[] =
    "CREATE TABLE jobs ("
    "  id TEXT PRIMARY KEY,"
    "  status TEXT NOT NULL CHECK (status IN"
    "    ('queued','running','succeeded','failed','cancelled')),"
    "  priority INTEGER NOT NULL DEFAULT 0,"
    "  model TEXT NOT NULL,"
    "  output TEXT NOT NULL,"
    "  config TEXT NOT NULL DEFAULT '{}',"
    "  tracking TEXT NOT NULL DEFAULT '{}',"
    "  wandb_mode TEXT NOT NULL DEFAULT 'disabled',"
    "  idempotency_key TEXT UNIQUE,"
    "  request_hash TEXT,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  lease_owner TEXT,"
    "  lease_expires INTEGER,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0,"
    "  stage TEXT,"
    "  stage_progress REAL NOT NULL DEFAULT 0,"
    "  progress REAL NOT NULL DEFAULT 0,"
    "  detail TEXT,"
    "  error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  started_at INTEGER,"
    "  finished_at INTEGER,"
    "  updated_at INTEGER,"
    "  output_dir TEXT,"
    "  stage_timings TEXT NOT NULL DEFAULT '{}'"
    ");"
    "CREATE INDEX jobs_by_status ON jobs (status, priority DESC, created_at);"
    "CREATE INDEX jobs_by_output ON jobs (output, status);"
    "CREATE TABLE job_events ("
    "  job_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  stage TEXT,"
    "  level TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  PRIMARY KEY (job_id, seq)"
    ");"
    "CREATE TABLE job_metrics ("
    "  job_id TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  value REAL NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  UNIQUE (job_id, key, step)"
    ");"
    "CREATE TABLE wandb_outbox ("
    "  id INTEGER PRIMARY KEY,"
    "  job_id TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK (kind IN ('history','summary','complete')),"
    "  payload TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  delivered_at INTEGER,"
    "  \"offset\" INTEGER"
    ");"
    "CREATE INDEX wandb_outbox_pending ON wandb_outbox (job_id, id) WHERE delivered_at IS NULL;"
    "CREATE TABLE wandb_runs ("
    "  job_id TEXT PRIMARY KEY,"
    "  run_id TEXT,"
    "  entity TEXT,"
    "  project TEXT,"
    "  mode TEXT NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'pending',"
    "  history_offset INTEGER NOT NULL DEFAULT 0,"
    "  delivered_rows INTEGER NOT NULL DEFAULT 0,"
    "  pending_rows INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  run_url TEXT"
    ");";

/* v2: where each perplexity/loss metric's text came from (bn_progress.source). */
static const char migration_v2[] =
    "CREATE TABLE job_metric_sources ("
    "  job_id TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  PRIMARY KEY (job_id, key)"
    ");";

static const char *const migrations[] = {
    migration_v1,
    migration_v2,
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

static int user_version(bn_store *st, int *v)
{
    sqlite3_stmt *s = bn_store__prepare(st, "PRAGMA user_version");
    if (!s) return BN_STORE_ERROR;
    int rc = sqlite3_step(s);
    *v = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    bn_store__release(st, s);
    return rc == SQLITE_ROW ? BN_STORE_OK : bn_store__fail(st, "reading user_version");
}

static int migrate(bn_store *st)
{
    for (;;) {
        if (bn_store__begin(st, true)) return BN_STORE_ERROR;
        int v;
        if (user_version(st, &v)) goto fail;
        if (v > N_MIGRATIONS) {
            snprintf(st->errmsg, sizeof st->errmsg,
                     "database schema v%d is newer than this bitnetd (v%d)", v, N_MIGRATIONS);
            bn_store__rollback(st);
            return BN_STORE_ERROR;
        }
        if (v == N_MIGRATIONS) return bn_store__commit(st);
        if (bn_store__exec(st, migrations[v])) goto fail;
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
        if (bn_store__exec(st, sql) || bn_store__commit(st)) goto fail;
    }
fail:
    bn_store__rollback(st);
    return BN_STORE_ERROR;
}

int bn_store_open(const char *path, bn_store **out, char *err, size_t errlen)
{
    *out = NULL;
    bn_store *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "store: out of memory");
        return BN_STORE_ERROR;
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &st->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: opening %s: %s", path,
                 st->db ? sqlite3_errmsg(st->db) : "out of memory");
        bn_store_close(st);
        return BN_STORE_ERROR;
    }
    sqlite3_busy_timeout(st->db, BN_STORE_BUSY_TIMEOUT_MS);
    if (bn_store__exec(st, "PRAGMA journal_mode = WAL") ||
        bn_store__exec(st, "PRAGMA synchronous = NORMAL") ||
        bn_store__exec(st, "PRAGMA foreign_keys = ON") || migrate(st)) {
        snprintf(err, errlen, "store: %s: %s", path, st->errmsg);
        bn_store_close(st);
        return BN_STORE_ERROR;
    }
    *out = st;
    return BN_STORE_OK;
}

void bn_store_close(bn_store *st)
{
    if (!st) return;
    for (int i = 0; i < BN_STORE_STMT_CACHE; i++) sqlite3_finalize(st->cache[i].stmt);
    sqlite3_close_v2(st->db);
    free(st);
}

const char *bn_store_errmsg(const bn_store *st)
{
    return st ? st->errmsg : "no store";
}

int bn_store_schema_version(bn_store *st)
{
    int v = -1;
    return user_version(st, &v) ? -1 : v;
}

int bn_store_ping(bn_store *st)
{
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    return bn_store__commit(st);
}

/* ---- helpers ------------------------------------------------------------------------ */

static bool code_is_disk_full(sqlite3 *db)
{
    int ext = sqlite3_extended_errcode(db);
    return (ext & 0xff) == SQLITE_FULL || (ext == SQLITE_IOERR_WRITE && sqlite3_system_errno(db) == ENOSPC);
}

int bn_store__fail(bn_store *st, const char *what)
{
    st->disk_full = code_is_disk_full(st->db);
    snprintf(st->errmsg, sizeof st->errmsg, "%s: %s", what, sqlite3_errmsg(st->db));
    return BN_STORE_ERROR;
}

bool bn_store_disk_full(const bn_store *st)
{
    return st && st->disk_full;
}

sqlite3_stmt *bn_store__prepare(bn_store *st, const char *sql)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
        bn_store__fail(st, "prepare");
        return NULL;
    }
    return s;
}

sqlite3_stmt *bn_store__cached(bn_store *st, const char *sql)
{
    bn_store_stmt *slot = NULL;
    for (int i = 0; i < BN_STORE_STMT_CACHE; i++) {
        bn_store_stmt *c = &st->cache[i];
        if (c->sql == sql && !c->in_use) {
            c->in_use = true;
            return c->stmt;
        }
        if (!c->sql && !slot) slot = c;
    }
    sqlite3_stmt *s = NULL;
    unsigned flags = slot ? SQLITE_PREPARE_PERSISTENT : 0;
    if (sqlite3_prepare_v3(st->db, sql, -1, flags, &s, NULL) != SQLITE_OK) {
        bn_store__fail(st, "prepare");
        return NULL;
    }
    if (slot) *slot = (bn_store_stmt){.sql = sql, .stmt = s, .in_use = true};
    return s;
}

void bn_store__release(bn_store *st, sqlite3_stmt *s)
{
    if (!s) return;
    for (int i = 0; i < BN_STORE_STMT_CACHE; i++) {
        bn_store_stmt *c = &st->cache[i];
        if (c->stmt == s && c->in_use) {
            sqlite3_reset(s);
            sqlite3_clear_bindings(s);
            c->in_use = false;
            return;
        }
    }
    sqlite3_finalize(s);
}

int bn_store__exec(bn_store *st, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        st->disk_full = code_is_disk_full(st->db);
        snprintf(st->errmsg, sizeof st->errmsg, "%s", msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return BN_STORE_ERROR;
    }
    return BN_STORE_OK;
}

int bn_store__begin(bn_store *st, bool immediate)
{
    return bn_store__exec(st, immediate ? "BEGIN IMMEDIATE" : "BEGIN");
}

int bn_store__commit(bn_store *st)
{
    if (bn_store__exec(st, "COMMIT")) {
        bn_store__rollback(st);
        return BN_STORE_ERROR;
    }
    return BN_STORE_OK;
}

void bn_store__rollback(bn_store *st)
{
    if (!sqlite3_get_autocommit(st->db)) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

int bn_store__bind_text(sqlite3_stmt *s, int i, const char *v)
{
    return v ? sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(s, i);
}

char *bn_store__col_strdup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? strdup((const char *)t) : NULL;
}
