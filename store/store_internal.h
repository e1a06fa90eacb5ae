/* store_internal.h - the backend-neutral SQL layer shared by the files of store/.
 * Not part of the public interface (see bn_store.h).
 *
 * The front (store.c, jobs.c, records.c, outbox.c) writes SQL once, with SQLite-style
 * placeholders (? and ?N), and runs it through a driver: store/sqlite/sqlite.c or
 * store/pg/pg.c. The PostgreSQL driver rewrites placeholders to $N and binds every
 * parameter with its type (text, int8, float8). Where the two dialects differ (JSON
 * functions, row locks) the front picks the statement with BN_SQL(st, sqlite, pg).
 * Every statement is a string literal: drivers key their prepared-statement cache on
 * its address.
 */
#ifndef BN_STORE_INTERNAL_H
#define BN_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bn_store.h"

enum { BN_DB_ROW = 100, BN_DB_DONE = 101, BN_DB_ERR = 1 };

typedef struct bn_stmt bn_stmt;
typedef struct bn_store_driver bn_store_driver;

/* Every driver's statement begins with this header. */
struct bn_stmt {
    const bn_store_driver *drv;
};

struct bn_store_driver {
    const char *name; /* "sqlite" | "postgresql" */
    int (*open)(bn_store *st, const char *target);
    void (*close)(bn_store *st);
    bn_stmt *(*prepare)(bn_store *st, const char *sql, bool cached);
    void (*release)(bn_store *st, bn_stmt *s);
    void (*bind_text)(bn_stmt *s, int i, const char *v);
    void (*bind_int64)(bn_stmt *s, int i, int64_t v);
    void (*bind_double)(bn_stmt *s, int i, double v);
    int (*step)(bn_stmt *s);
    const unsigned char *(*col_text)(bn_stmt *s, int i);
    bool (*col_null)(bn_stmt *s, int i);
    int64_t (*col_int64)(bn_stmt *s, int i);
    double (*col_double)(bn_stmt *s, int i);
    int64_t (*changes)(bn_store *st);
    int (*exec)(bn_store *st, const char *sql);
    int (*begin)(bn_store *st, bool immediate);
    bool (*in_tx)(bn_store *st);
    int (*schema_version)(bn_store *st, int *v);
    /* Records the driver's last error for operation what; returns BN_STORE_ERROR. */
    int (*fail)(bn_store *st, const char *what);
    /* Announces a new event of job id to other hosts (PostgreSQL NOTIFY); may be NULL. */
    int (*notify)(bn_store *st, const char *id);
    /* Waits up to timeout_ms for an announcement; *got true if one came. May be NULL. */
    int (*wait)(bn_store *st, int timeout_ms, bool *got);
    /* Exclusive delivery role for the W&B tracker (one host at a time). May be NULL. */
    int (*leader)(bn_store *st, bool *leader);
};

extern const bn_store_driver bn_store_sqlite_driver;
extern const bn_store_driver bn_store_pg_driver;

struct bn_store {
    const bn_store_driver *drv;
    void *impl;      /* the driver's connection state */
    bool pg;         /* dialect switch for BN_SQL */
    char errmsg[512];
    bool disk_full;  /* the last recorded failure was a full disk */
};

#define BN_SQL(st, sqlite_sql, pg_sql) ((st)->pg ? (pg_sql) : (sqlite_sql))

/* ---- the front's calls (store.c) ---------------------------------------------------- */

int bn_store__fail(bn_store *st, const char *what);
/* A statement used once (released with bn_store__release). */
bn_stmt *bn_store__prepare(bn_store *st, const char *sql);
/* A statement kept per connection (sql must be a string literal). */
bn_stmt *bn_store__cached(bn_store *st, const char *sql);
void bn_store__release(bn_store *st, bn_stmt *s);
int bn_store__exec(bn_store *st, const char *sql);
/* immediate: takes the write lock at once (SQLite BEGIN IMMEDIATE). */
int bn_store__begin(bn_store *st, bool immediate);
int bn_store__commit(bn_store *st);
void bn_store__rollback(bn_store *st);

static inline void bn_db_bind_text(bn_stmt *s, int i, const char *v) { s->drv->bind_text(s, i, v); }
static inline void bn_db_bind_int64(bn_stmt *s, int i, int64_t v) { s->drv->bind_int64(s, i, v); }
static inline void bn_db_bind_double(bn_stmt *s, int i, double v) { s->drv->bind_double(s, i, v); }
static inline int bn_db_step(bn_stmt *s) { return s->drv->step(s); }
static inline const unsigned char *bn_db_col_text(bn_stmt *s, int i) { return s->drv->col_text(s, i); }
static inline bool bn_db_col_null(bn_stmt *s, int i) { return s->drv->col_null(s, i); }
static inline int64_t bn_db_col_int64(bn_stmt *s, int i) { return s->drv->col_int64(s, i); }
static inline int bn_db_col_int(bn_stmt *s, int i) { return (int)s->drv->col_int64(s, i); }
static inline double bn_db_col_double(bn_stmt *s, int i) { return s->drv->col_double(s, i); }
char *bn_store__col_strdup(bn_stmt *s, int i);
int64_t bn_store__changes(bn_store *st);
/* Binds text or NULL. */
static inline int bn_store__bind_text(bn_stmt *s, int i, const char *v)
{
    bn_db_bind_text(s, i, v);
    return 0;
}

/* Inside a write transaction: BN_STORE_OK when job id is running under owner's lease
 * (owner NULL: always), BN_STORE_LOST otherwise. PostgreSQL share-locks the row. */
int bn_store__hold_lease(bn_store *st, const char *id, const char *owner);
/* Enqueues the summary + complete outbox rows of a finished job (inside a transaction). */
int bn_store__enqueue_final(bn_store *st, const char *id, bn_job_status status);
/* The job's wandb mode (inside a transaction); "disabled" when the job is unknown. */
int bn_store__wandb_mode(bn_store *st, const char *id, char *mode, size_t len);
int bn_store__outbox_add(bn_store *st, const char *id, const char *kind, const char *payload);

#endif
