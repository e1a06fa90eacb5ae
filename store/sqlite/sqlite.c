/* sqlite.c - the SQLite driver of the store: one file on disk, one connection per handle.
 *
 * Every handle runs in WAL mode with a busy timeout, so readers never block the single
 * writer and short write transactions queue up instead of failing. Migrations are a
 * list of SQL scripts; PRAGMA user_version records how many have been applied, and each
 * one runs inside a BEGIN IMMEDIATE transaction so concurrent openers cannot race. A
 * database whose version is newer than the list is refused. Prepared statements are
 * cached per connection, keyed by the address of their SQL literal.
 */
#include "store_internal.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BN_STORE_BUSY_TIMEOUT_MS 10000
#define BN_STORE_STMT_CACHE 48

typedef struct sq_stmt {
    bn_stmt base;
    sqlite3_stmt *s;
    const char *sql; /* cache key; NULL for a one-shot statement */
    bool in_use;
} sq_stmt;

typedef struct sq_conn {
    sqlite3 *db;
    sq_stmt cache[BN_STORE_STMT_CACHE];
} sq_conn;

#define DB(st) (((sq_conn *)(st)->impl)->db)
#define SQ(s) (((sq_stmt *)(s))->s)

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

/* v3: the lease owner ("host:pid/wN") that wrote each event (NULL: not a worker). */
static const char migration_v3[] = "ALTER TABLE job_events ADD COLUMN host TEXT;";

static const char *const migrations[] = {
    migration_v1,
    migration_v2,
    migration_v3,
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))


static int sq_user_version(bn_store *st, int *v)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(DB(st), "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
        return bn_store__fail(st, "reading user_version");
    int rc = sqlite3_step(s);
    *v = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? BN_STORE_OK : bn_store__fail(st, "reading user_version");
}

static int sq_migrate(bn_store *st)
{
    for (;;) {
        if (bn_store__begin(st, true)) return BN_STORE_ERROR;
        int v;
        if (sq_user_version(st, &v)) goto fail;
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

static int sq_open(bn_store *st, const char *path)
{
    sq_conn *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(st->errmsg, sizeof st->errmsg, "out of memory");
        return BN_STORE_ERROR;
    }
    st->impl = c;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &c->db, flags, NULL) != SQLITE_OK) {
        snprintf(st->errmsg, sizeof st->errmsg, "%s",
                 c->db ? sqlite3_errmsg(c->db) : "out of memory");
        return BN_STORE_ERROR;
    }
    sqlite3_busy_timeout(c->db, BN_STORE_BUSY_TIMEOUT_MS);
    if (bn_store__exec(st, "PRAGMA journal_mode = WAL") ||
        bn_store__exec(st, "PRAGMA synchronous = NORMAL") ||
        bn_store__exec(st, "PRAGMA foreign_keys = ON") || sq_migrate(st))
        return BN_STORE_ERROR;
    return BN_STORE_OK;
}

static void sq_close(bn_store *st)
{
    sq_conn *c = st->impl;
    for (int i = 0; i < BN_STORE_STMT_CACHE; i++) sqlite3_finalize(c->cache[i].s);
    sqlite3_close_v2(c->db);
    free(c);
    st->impl = NULL;
}

static bool code_is_disk_full(sqlite3 *db)
{
    int ext = sqlite3_extended_errcode(db);
    return (ext & 0xff) == SQLITE_FULL || (ext == SQLITE_IOERR_WRITE && sqlite3_system_errno(db) == ENOSPC);
}

static int sq_fail(bn_store *st, const char *what)
{
    st->disk_full = code_is_disk_full(DB(st));
    snprintf(st->errmsg, sizeof st->errmsg, "%s: %s", what, sqlite3_errmsg(DB(st)));
    return BN_STORE_ERROR;
}

static bn_stmt *sq_prepare(bn_store *st, const char *sql, bool cached)
{
    sq_conn *c = st->impl;
    sq_stmt *slot = NULL;
    if (cached) {
        for (int i = 0; i < BN_STORE_STMT_CACHE; i++) {
            sq_stmt *e = &c->cache[i];
            if (e->sql == sql && !e->in_use) {
                e->in_use = true;
                return &e->base;
            }
            if (!e->sql && !slot) slot = e;
        }
    }
    sqlite3_stmt *s = NULL;
    unsigned flags = slot ? SQLITE_PREPARE_PERSISTENT : 0;
    if (sqlite3_prepare_v3(c->db, sql, -1, flags, &s, NULL) != SQLITE_OK) {
        sq_fail(st, "prepare");
        return NULL;
    }
    if (slot) {
        *slot = (sq_stmt){.base = {&bn_store_sqlite_driver}, .s = s, .sql = sql, .in_use = true};
        return &slot->base;
    }
    sq_stmt *one = calloc(1, sizeof *one);
    if (!one) {
        sqlite3_finalize(s);
        snprintf(st->errmsg, sizeof st->errmsg, "out of memory");
        return NULL;
    }
    *one = (sq_stmt){.base = {&bn_store_sqlite_driver}, .s = s};
    return &one->base;
}

static void sq_release(bn_store *st, bn_stmt *b)
{
    sq_conn *c = st->impl;
    sq_stmt *s = (sq_stmt *)b;
    if (s >= c->cache && s < c->cache + BN_STORE_STMT_CACHE) {
        sqlite3_reset(s->s);
        sqlite3_clear_bindings(s->s);
        s->in_use = false;
        return;
    }
    sqlite3_finalize(s->s);
    free(s);
}

static void sq_bind_text(bn_stmt *s, int i, const char *v)
{
    if (v) sqlite3_bind_text(SQ(s), i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(SQ(s), i);
}
static void sq_bind_int64(bn_stmt *s, int i, int64_t v) { sqlite3_bind_int64(SQ(s), i, v); }
static void sq_bind_double(bn_stmt *s, int i, double v) { sqlite3_bind_double(SQ(s), i, v); }

static int sq_step(bn_stmt *s)
{
    int rc = sqlite3_step(SQ(s));
    return rc == SQLITE_ROW ? BN_DB_ROW : rc == SQLITE_DONE ? BN_DB_DONE : BN_DB_ERR;
}

static const unsigned char *sq_col_text(bn_stmt *s, int i) { return sqlite3_column_text(SQ(s), i); }
static bool sq_col_null(bn_stmt *s, int i) { return sqlite3_column_type(SQ(s), i) == SQLITE_NULL; }
static int64_t sq_col_int64(bn_stmt *s, int i) { return sqlite3_column_int64(SQ(s), i); }
static double sq_col_double(bn_stmt *s, int i) { return sqlite3_column_double(SQ(s), i); }
static int64_t sq_changes(bn_store *st) { return sqlite3_changes(DB(st)); }

static int sq_exec(bn_store *st, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(DB(st), sql, NULL, NULL, &msg) != SQLITE_OK) {
        st->disk_full = code_is_disk_full(DB(st));
        snprintf(st->errmsg, sizeof st->errmsg, "%s", msg ? msg : sqlite3_errmsg(DB(st)));
        sqlite3_free(msg);
        return BN_STORE_ERROR;
    }
    return BN_STORE_OK;
}

static int sq_begin(bn_store *st, bool immediate)
{
    return sq_exec(st, immediate ? "BEGIN IMMEDIATE" : "BEGIN");
}

static bool sq_in_tx(bn_store *st) { return !sqlite3_get_autocommit(DB(st)); }

const bn_store_driver bn_store_sqlite_driver = {
    .name = "sqlite", .open = sq_open, .close = sq_close, .prepare = sq_prepare,
    .release = sq_release, .bind_text = sq_bind_text, .bind_int64 = sq_bind_int64,
    .bind_double = sq_bind_double, .step = sq_step, .col_text = sq_col_text,
    .col_null = sq_col_null, .col_int64 = sq_col_int64, .col_double = sq_col_double,
    .changes = sq_changes, .exec = sq_exec, .begin = sq_begin, .in_tx = sq_in_tx,
    .schema_version = sq_user_version, .fail = sq_fail,
};
