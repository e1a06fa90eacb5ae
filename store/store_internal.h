/* store_internal.h - helpers shared by the SQLite implementation files of store/.
 * Not part of the public interface (see bn_store.h). */
#ifndef BN_STORE_INTERNAL_H
#define BN_STORE_INTERNAL_H

#include <sqlite3.h>

#include "bn_store.h"

#define BN_STORE_STMT_CACHE 48

/* A prepared statement kept for reuse, keyed by its SQL text's address (every
 * statement is a string literal). in_use guards against re-entrant use. */
typedef struct bn_store_stmt {
    const char *sql;
    sqlite3_stmt *stmt;
    bool in_use;
} bn_store_stmt;

struct bn_store {
    sqlite3 *db;
    char errmsg[512];
    bool disk_full; /* the last recorded failure was SQLITE_FULL (or ENOSPC I/O) */
    bn_store_stmt cache[BN_STORE_STMT_CACHE];
};

/* Records sqlite's message for the failed operation what; returns BN_STORE_ERROR. */
int bn_store__fail(bn_store *st, const char *what);
/* Prepares sql; on failure records the error and returns NULL. The caller finalizes it
 * (sqlite3_finalize or bn_store__release). */
sqlite3_stmt *bn_store__prepare(bn_store *st, const char *sql);
/* Like bn_store__prepare, but reuses a statement kept per connection: sql must be a
 * string literal (the cache is keyed by its address) and the statement must be given
 * back with bn_store__release, never finalized. */
sqlite3_stmt *bn_store__cached(bn_store *st, const char *sql);
void bn_store__release(bn_store *st, sqlite3_stmt *s);
int bn_store__exec(bn_store *st, const char *sql);
int bn_store__begin(bn_store *st, bool immediate);
int bn_store__commit(bn_store *st);
void bn_store__rollback(bn_store *st);
/* Binds text or NULL. */
int bn_store__bind_text(sqlite3_stmt *s, int i, const char *v);
char *bn_store__col_strdup(sqlite3_stmt *s, int i);
/* Enqueues the summary + complete outbox rows of a finished job (inside a transaction). */
int bn_store__enqueue_final(bn_store *st, const char *id, bn_job_status status);
/* The job's wandb mode (inside a transaction); "disabled" when the job is unknown. */
int bn_store__wandb_mode(bn_store *st, const char *id, char *mode, size_t len);
int bn_store__outbox_add(bn_store *st, const char *id, const char *kind, const char *payload);

#endif
