/* pg.c - the PostgreSQL driver of the store (libpq): several hosts share one queue.
 *
 * The connection string is a libpq URI (postgresql://user@host:port/db?sslmode=...);
 * the password comes from the URI, a passfile= parameter or PGPASSFILE, all handled by
 * libpq. It is kept only to reconnect and is never written into a message.
 *
 * Statements are written with SQLite placeholders by the front; this driver rewrites
 * ? and ?N into $N once per statement literal (cached by address) and sends every
 * parameter as text with its type (text, int8, float8). A cached statement is prepared
 * on the server once per session (PQprepare) and then only executed; a reset session
 * (new generation number) prepares again. A statement runs at its first
 * step and its whole result is held, so a caller may run other statements while it
 * walks the rows.
 *
 * Write transactions that SQLite serializes with BEGIN IMMEDIATE take one transaction
 * advisory lock here, which gives the same single-writer order across hosts; a claim
 * instead locks its row with FOR UPDATE SKIP LOCKED. A connection lost while idle (a
 * PostgreSQL restart) is reset and the statement retried once; inside a transaction
 * the failure goes back to the caller, whose transaction PostgreSQL has rolled back.
 *
 * Migrations: table bitnetd_schema holds the applied version; opening a database whose
 * version is newer than this build knows is refused.
 */
#include "store_internal.h"

#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_STMT_CACHE 64
#define PG_MAX_PARAMS 16
#define PG_CHANNEL "bitnetd_events"

enum { T_TEXT = 25, T_INT8 = 20, T_FLOAT8 = 701 };

typedef struct pg_stmt {
    bn_stmt base;
    const char *key;   /* the front's literal (cache key); NULL when one-shot */
    char *sql;         /* rewritten with $N */
    int nparams;
    bool in_use;
    char *vals[PG_MAX_PARAMS];
    Oid types[PG_MAX_PARAMS];
    PGresult *res;
    int row;
    bn_store *st;
    /* a cached statement is prepared once per session (PQprepare, name "bn<slot>") */
    int slot;
    unsigned prepared_gen;        /* the session it was prepared in (0: never) */
    Oid prepared_types[PG_MAX_PARAMS];
} pg_stmt;

typedef struct pg_conn {
    PGconn *c;
    char *conninfo;
    int64_t changes;
    char sqlstate[6];
    bool listening, leader;
    unsigned gen; /* session number: a reset starts a new one (prepared statements die) */
    pg_stmt cache[PG_STMT_CACHE];
} pg_conn;

#define CONN(st) ((pg_conn *)(st)->impl)

/* v1: the same tables as the SQLite schema, with explicit types and an
 * explicit rowid (list order and claim order). */
static const char migration_v1[] =
    "CREATE TABLE jobs ("
    "  rowid BIGSERIAL UNIQUE,"
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
    "  lease_expires BIGINT,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0,"
    "  stage TEXT,"
    "  stage_progress DOUBLE PRECISION NOT NULL DEFAULT 0,"
    "  progress DOUBLE PRECISION NOT NULL DEFAULT 0,"
    "  detail TEXT,"
    "  error TEXT,"
    "  created_at BIGINT NOT NULL,"
    "  started_at BIGINT,"
    "  finished_at BIGINT,"
    "  updated_at BIGINT,"
    "  output_dir TEXT,"
    "  stage_timings TEXT NOT NULL DEFAULT '{}'"
    ");"
    "CREATE INDEX jobs_by_status ON jobs (status, priority DESC, rowid);"
    "CREATE INDEX jobs_by_output ON jobs (output, status);"
    "CREATE TABLE job_events ("
    "  job_id TEXT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  ts BIGINT NOT NULL,"
    "  stage TEXT,"
    "  level TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  PRIMARY KEY (job_id, seq)"
    ");"
    "CREATE TABLE job_metrics ("
    "  job_id TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  step BIGINT NOT NULL,"
    "  value DOUBLE PRECISION NOT NULL,"
    "  ts BIGINT NOT NULL,"
    "  UNIQUE (job_id, key, step)"
    ");"
    "CREATE TABLE wandb_outbox ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  job_id TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK (kind IN ('history','summary','complete')),"
    "  payload TEXT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  delivered_at BIGINT,"
    "  \"offset\" BIGINT"
    ");"
    "CREATE INDEX wandb_outbox_pending ON wandb_outbox (job_id, id) WHERE delivered_at IS NULL;"
    "CREATE TABLE wandb_runs ("
    "  job_id TEXT PRIMARY KEY,"
    "  run_id TEXT,"
    "  entity TEXT,"
    "  project TEXT,"
    "  mode TEXT NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'pending',"
    "  history_offset BIGINT NOT NULL DEFAULT 0,"
    "  delivered_rows BIGINT NOT NULL DEFAULT 0,"
    "  pending_rows BIGINT NOT NULL DEFAULT 0,"
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

/* ---- errors and reconnection ---------------------------------------------------------- */

static int pg_record(bn_store *st, const char *what, const PGresult *r)
{
    pg_conn *pc = CONN(st);
    const char *msg = r ? PQresultErrorMessage(r) : NULL;
    if (!msg || !*msg) msg = PQerrorMessage(pc->c);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(pc->sqlstate, sizeof pc->sqlstate, "%s", state ? state : "");
    st->disk_full = strcmp(pc->sqlstate, "53100") == 0;
    int n = snprintf(st->errmsg, sizeof st->errmsg, "%s: %s", what, msg);
    while (n > 0 && (size_t)n < sizeof st->errmsg && (st->errmsg[n - 1] == '\n' || st->errmsg[n - 1] == ' '))
        st->errmsg[--n] = 0;
    return BN_STORE_ERROR;
}

static int pg_fail(bn_store *st, const char *what)
{
    return pg_record(st, what, NULL);
}

/* Resets a broken connection when no transaction was open; true when usable. */
static bool pg_revive(bn_store *st)
{
    pg_conn *pc = CONN(st);
    if (PQstatus(pc->c) == CONNECTION_OK) return true;
    PQreset(pc->c);
    if (PQstatus(pc->c) != CONNECTION_OK) return false;
    pc->listening = false; /* LISTEN, session locks and prepared statements died with */
    pc->leader = false;    /* the old session */
    pc->gen++;
    return true;
}

/* Runs a cached statement as a named prepared statement: prepared on its first run in
 * this session, then only executed (no parse, no plan). A run whose parameter types
 * differ from the prepared ones goes through PQexecParams instead. */
static PGresult *pg_exec_prepared(pg_conn *pc, pg_stmt *ps, int n, const Oid *types,
                                  char *const *vals)
{
    char name[16];
    snprintf(name, sizeof name, "bn%d", ps->slot);
    if (ps->prepared_gen != pc->gen) {
        PGresult *r = PQprepare(pc->c, name, ps->sql, n, types);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) return r;
        PQclear(r);
        ps->prepared_gen = pc->gen;
        if (n) memcpy(ps->prepared_types, types, (size_t)n * sizeof *types);
    } else if (n && memcmp(ps->prepared_types, types, (size_t)n * sizeof *types) != 0) {
        return PQexecParams(pc->c, ps->sql, n, types, (const char *const *)vals, NULL, NULL, 0);
    }
    return PQexecPrepared(pc->c, name, n, (const char *const *)vals, NULL, NULL, 0);
}

/* Runs one command (ps: a cached statement, run prepared); retries once on a fresh
 * connection when the old one broke while idle. Returns a result (caller clears it) or
 * NULL after recording the error. */
static PGresult *pg_run_stmt(bn_store *st, const char *what, const char *sql, int n,
                             const Oid *types, char *const *vals, pg_stmt *ps)
{
    pg_conn *pc = CONN(st);
    for (int attempt = 0; attempt < 2; attempt++) {
        bool idle = PQtransactionStatus(pc->c) == PQTRANS_IDLE ||
                    PQstatus(pc->c) != CONNECTION_OK;
        if (idle && !pg_revive(st)) {
            pg_fail(st, what);
            return NULL;
        }
        PGresult *r = ps ? pg_exec_prepared(pc, ps, n, types, vals)
                    : n || types ? PQexecParams(pc->c, sql, n, types, (const char *const *)vals, NULL, NULL, 0)
                                 : PQexec(pc->c, sql);
        ExecStatusType es = PQresultStatus(r);
        if (es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK) {
            const char *ct = PQcmdTuples(r);
            pc->changes = ct && *ct ? strtoll(ct, NULL, 10) : 0;
            return r;
        }
        pg_record(st, what, r);
        PQclear(r);
        if (!(idle && PQstatus(pc->c) != CONNECTION_OK)) return NULL;
    }
    return NULL;
}

static PGresult *pg_run(bn_store *st, const char *what, const char *sql, int n,
                        const Oid *types, char *const *vals)
{
    return pg_run_stmt(st, what, sql, n, types, vals, NULL);
}

/* ---- statements ------------------------------------------------------------------------ */

/* ? and ?N become $N (outside quotes); *n = the highest parameter number. */
static char *rewrite(const char *sql, int *n)
{
    size_t len = strlen(sql);
    char *out = malloc(len * 2 + 1);
    if (!out) return NULL;
    char *o = out;
    int maxp = 0;
    char quote = 0;
    for (const char *p = sql; *p; p++) {
        if (quote) {
            if (*p == quote) quote = 0;
            *o++ = *p;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
            *o++ = *p;
        } else if (*p == '?') {
            int k;
            if (p[1] >= '0' && p[1] <= '9') {
                k = (int)strtol(p + 1, (char **)&p, 10);
                p--;
            } else {
                k = maxp + 1;
            }
            if (k > maxp) maxp = k;
            o += sprintf(o, "$%d", k);
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    *n = maxp;
    return out;
}

static bn_stmt *pg_prepare(bn_store *st, const char *sql, bool cached)
{
    pg_conn *pc = CONN(st);
    pg_stmt *slot = NULL;
    if (cached) {
        for (int i = 0; i < PG_STMT_CACHE; i++) {
            pg_stmt *e = &pc->cache[i];
            if (e->key == sql && !e->in_use) {
                e->in_use = true;
                return &e->base;
            }
            if (!e->key && !slot) slot = e;
        }
    }
    pg_stmt *s = slot ? slot : calloc(1, sizeof *s);
    int n = 0;
    char *text = s ? rewrite(sql, &n) : NULL;
    if (!text || n > PG_MAX_PARAMS) {
        free(text);
        if (s && !slot) free(s);
        snprintf(st->errmsg, sizeof st->errmsg, "prepare: %s", text ? "too many parameters" : "out of memory");
        return NULL;
    }
    *s = (pg_stmt){.base = {&bn_store_pg_driver}, .key = slot ? sql : NULL, .sql = text,
                   .nparams = n, .in_use = true, .st = st,
                   .slot = slot ? (int)(slot - pc->cache) : -1};
    for (int i = 0; i < n; i++) s->types[i] = T_TEXT;
    return &s->base;
}

static void pg_reset_stmt(pg_stmt *s)
{
    for (int i = 0; i < s->nparams; i++) {
        free(s->vals[i]);
        s->vals[i] = NULL;
        s->types[i] = T_TEXT;
    }
    PQclear(s->res);
    s->res = NULL;
    s->row = 0;
}

static void pg_release(bn_store *st, bn_stmt *b)
{
    pg_conn *pc = CONN(st);
    pg_stmt *s = (pg_stmt *)b;
    pg_reset_stmt(s);
    if (s >= pc->cache && s < pc->cache + PG_STMT_CACHE) {
        s->in_use = false;
        return;
    }
    free(s->sql);
    free(s);
}

static void pg_bind(bn_stmt *b, int i, char *v, Oid type)
{
    pg_stmt *s = (pg_stmt *)b;
    if (i < 1 || i > s->nparams) {
        free(v);
        return;
    }
    free(s->vals[i - 1]);
    s->vals[i - 1] = v;
    s->types[i - 1] = type;
}

static void pg_bind_text(bn_stmt *b, int i, const char *v) { pg_bind(b, i, v ? strdup(v) : NULL, T_TEXT); }

static void pg_bind_int64(bn_stmt *b, int i, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    pg_bind(b, i, strdup(buf), T_INT8);
}

static void pg_bind_double(bn_stmt *b, int i, double v)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    pg_bind(b, i, strdup(buf), T_FLOAT8);
}

static int pg_step(bn_stmt *b)
{
    pg_stmt *s = (pg_stmt *)b;
    if (!s->res) {
        s->res = pg_run_stmt(s->st, "query", s->sql, s->nparams, s->nparams ? s->types : NULL,
                             s->vals, s->key ? s : NULL);
        if (!s->res) return BN_DB_ERR;
        s->row = 0;
    } else {
        s->row++;
    }
    return s->row < PQntuples(s->res) ? BN_DB_ROW : BN_DB_DONE;
}

static const unsigned char *pg_col_text(bn_stmt *b, int i)
{
    pg_stmt *s = (pg_stmt *)b;
    if (!s->res || s->row >= PQntuples(s->res) || i >= PQnfields(s->res) ||
        PQgetisnull(s->res, s->row, i))
        return NULL;
    return (const unsigned char *)PQgetvalue(s->res, s->row, i);
}

static bool pg_col_null(bn_stmt *b, int i) { return pg_col_text(b, i) == NULL; }

static int64_t pg_col_int64(bn_stmt *b, int i)
{
    const unsigned char *t = pg_col_text(b, i);
    if (!t) return 0;
    if (t[0] == 't' && !t[1]) return 1;
    return strtoll((const char *)t, NULL, 10);
}

static double pg_col_double(bn_stmt *b, int i)
{
    const unsigned char *t = pg_col_text(b, i);
    return t ? strtod((const char *)t, NULL) : 0.0;
}

static int64_t pg_changes(bn_store *st) { return CONN(st)->changes; }

static int pg_exec(bn_store *st, const char *sql)
{
    PGresult *r = pg_run(st, "exec", sql, 0, NULL, NULL);
    PQclear(r);
    return r ? BN_STORE_OK : BN_STORE_ERROR;
}

/* 1651340388 = "bntd": the single-writer lock; 1651340407 = "bntw": the tracker role. */
static int pg_begin(bn_store *st, bool immediate)
{
    if (pg_exec(st, "BEGIN")) return BN_STORE_ERROR;
    if (immediate && pg_exec(st, "SELECT pg_advisory_xact_lock(1651340388)")) {
        bn_store__rollback(st);
        return BN_STORE_ERROR;
    }
    return BN_STORE_OK;
}

static bool pg_in_tx(bn_store *st)
{
    PGTransactionStatusType t = PQtransactionStatus(CONN(st)->c);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

static int pg_schema_version(bn_store *st, int *v)
{
    *v = 0;
    PGresult *r = pg_run(st, "reading the schema version",
                         "SELECT coalesce(max(version), 0) FROM bitnetd_schema", 0, NULL, NULL);
    if (!r) return BN_STORE_ERROR;
    *v = PQntuples(r) ? atoi(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return BN_STORE_OK;
}

/* ---- connection ------------------------------------------------------------------------ */

static int pg_migrate(bn_store *st)
{
    for (;;) {
        if (pg_exec(st, "BEGIN") || pg_exec(st, "SELECT pg_advisory_xact_lock(1651340388)") ||
            pg_exec(st, "CREATE TABLE IF NOT EXISTS bitnetd_schema (version INTEGER NOT NULL)"))
            goto fail;
        int v;
        if (pg_schema_version(st, &v)) goto fail;
        if (v > N_MIGRATIONS) {
            snprintf(st->errmsg, sizeof st->errmsg,
                     "database schema v%d is newer than this bitnetd (v%d)", v, N_MIGRATIONS);
            bn_store__rollback(st);
            return BN_STORE_ERROR;
        }
        if (v == N_MIGRATIONS) return bn_store__commit(st);
        char sql[80];
        snprintf(sql, sizeof sql, "INSERT INTO bitnetd_schema (version) VALUES (%d)", v + 1);
        if (pg_exec(st, migrations[v]) || pg_exec(st, sql) || bn_store__commit(st)) goto fail;
    }
fail:
    bn_store__rollback(st);
    return BN_STORE_ERROR;
}

static void pg_notice(void *arg, const char *msg)
{
    (void)arg; /* NOTICEs (IF NOT EXISTS) are expected; errors come back as results */
    (void)msg;
}

static int pg_open(bn_store *st, const char *conninfo)
{
    pg_conn *pc = calloc(1, sizeof *pc);
    if (!pc) {
        snprintf(st->errmsg, sizeof st->errmsg, "out of memory");
        return BN_STORE_ERROR;
    }
    st->impl = pc;
    pc->gen = 1;
    pc->conninfo = strdup(conninfo);
    pc->c = PQconnectdb(conninfo);
    if (!pc->conninfo || !pc->c || PQstatus(pc->c) != CONNECTION_OK) {
        /* libpq's message names host and port, never the password */
        return pg_fail(st, "connecting");
    }
    PQsetNoticeProcessor(pc->c, pg_notice, NULL);
    return pg_migrate(st);
}

static void pg_close(bn_store *st)
{
    pg_conn *pc = CONN(st);
    for (int i = 0; i < PG_STMT_CACHE; i++) {
        pg_reset_stmt(&pc->cache[i]);
        free(pc->cache[i].sql);
    }
    if (pc->c) PQfinish(pc->c);
    free(pc->conninfo);
    free(pc);
    st->impl = NULL;
}

/* ---- events across hosts and the tracker role ------------------------------------------- */

static int pg_notify(bn_store *st, const char *id)
{
    char *vals[1] = {(char *)id};
    Oid types[1] = {T_TEXT};
    PGresult *r = pg_run(st, "notifying", "SELECT pg_notify('" PG_CHANNEL "', $1)", 1, types, vals);
    PQclear(r);
    return r ? BN_STORE_OK : BN_STORE_ERROR;
}

static int pg_wait(bn_store *st, int timeout_ms, bool *got)
{
    pg_conn *pc = CONN(st);
    *got = false;
    if (!pc->listening) {
        if (pg_exec(st, "LISTEN " PG_CHANNEL)) return BN_STORE_ERROR;
        pc->listening = true;
        *got = true; /* anything may have happened while not listening: catch up */
        return BN_STORE_OK;
    }
    for (int pass = 0; pass < 2; pass++) {
        if (!PQconsumeInput(pc->c)) {
            pg_fail(st, "listening");
            pc->listening = false;
            return BN_STORE_ERROR;
        }
        PGnotify *n;
        while ((n = PQnotifies(pc->c))) {
            *got = true;
            PQfreemem(n);
        }
        if (*got || pass) break;
        struct pollfd p = {.fd = PQsocket(pc->c), .events = POLLIN};
        if (p.fd < 0 || poll(&p, 1, timeout_ms) <= 0) break;
    }
    return BN_STORE_OK;
}

static int pg_leader(bn_store *st, bool *leader)
{
    pg_conn *pc = CONN(st);
    if (!pc->leader || PQstatus(pc->c) != CONNECTION_OK) {
        pc->leader = false;
        PGresult *r = pg_run(st, "taking the tracker role",
                             "SELECT pg_try_advisory_lock(1651340407)", 0, NULL, NULL);
        if (!r) return BN_STORE_ERROR;
        pc->leader = PQntuples(r) && PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
    }
    *leader = pc->leader;
    return BN_STORE_OK;
}

const bn_store_driver bn_store_pg_driver = {
    .name = "postgresql", .open = pg_open, .close = pg_close, .prepare = pg_prepare,
    .release = pg_release, .bind_text = pg_bind_text, .bind_int64 = pg_bind_int64,
    .bind_double = pg_bind_double, .step = pg_step, .col_text = pg_col_text,
    .col_null = pg_col_null, .col_int64 = pg_col_int64, .col_double = pg_col_double,
    .changes = pg_changes, .exec = pg_exec, .begin = pg_begin, .in_tx = pg_in_tx,
    .schema_version = pg_schema_version, .fail = pg_fail, .notify = pg_notify,
    .wait = pg_wait, .leader = pg_leader,
};
