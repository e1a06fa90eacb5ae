/* store.c - the backend-neutral front of the store: status names, opening a store from
 * its specification ("sqlite:PATH", a plain path, or "postgresql://..."), and the calls
 * through which jobs.c, records.c and outbox.c reach the chosen driver.
 *
 * Invariant: after bn_store_open succeeds, st->drv and st->impl are set and the schema
 * is at the version this build knows (each driver migrates and refuses a newer one).
 * Connection strings are never copied into error messages (they may carry a password).
 */
#include "store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

bool bn_store_spec_is_pg(const char *spec)
{
    return spec && (strncmp(spec, "postgresql://", 13) == 0 || strncmp(spec, "postgres://", 11) == 0);
}

int bn_store_open(const char *spec, bn_store **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!spec || !*spec) {
        snprintf(err, errlen, "store: no database given");
        return BN_STORE_ERROR;
    }
    bn_store *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "store: out of memory");
        return BN_STORE_ERROR;
    }
    const char *target = spec;
    if (bn_store_spec_is_pg(spec)) {
        st->drv = &bn_store_pg_driver;
        st->pg = true;
    } else {
        st->drv = &bn_store_sqlite_driver;
        if (strncmp(spec, "sqlite:", 7) == 0) target = spec + 7;
    }
    if (st->drv->open(st, target)) {
        if (st->pg) snprintf(err, errlen, "store: postgresql: %s", st->errmsg);
        else snprintf(err, errlen, "store: %s: %s", target, st->errmsg);
        bn_store_close(st);
        return BN_STORE_ERROR;
    }
    *out = st;
    return BN_STORE_OK;
}

void bn_store_close(bn_store *st)
{
    if (!st) return;
    if (st->impl) st->drv->close(st);
    free(st);
}

const char *bn_store_backend(const bn_store *st)
{
    return st ? st->drv->name : "none";
}

const char *bn_store_errmsg(const bn_store *st)
{
    return st ? st->errmsg : "no store";
}

bool bn_store_disk_full(const bn_store *st)
{
    return st && st->disk_full;
}

int bn_store_schema_version(bn_store *st)
{
    int v = -1;
    return st->drv->schema_version(st, &v) ? -1 : v;
}

int bn_store_ping(bn_store *st)
{
    if (bn_store__begin(st, true)) return BN_STORE_ERROR;
    return bn_store__commit(st);
}

int bn_store_wait_event(bn_store *st, int timeout_ms, bool *got)
{
    *got = false;
    if (!st->drv->wait) return BN_STORE_OK;
    return st->drv->wait(st, timeout_ms, got);
}

/* ---- calls of the front ------------------------------------------------------------- */

int bn_store__fail(bn_store *st, const char *what)
{
    return st->drv->fail(st, what);
}

bn_stmt *bn_store__prepare(bn_store *st, const char *sql)
{
    return st->drv->prepare(st, sql, false);
}

bn_stmt *bn_store__cached(bn_store *st, const char *sql)
{
    return st->drv->prepare(st, sql, true);
}

void bn_store__release(bn_store *st, bn_stmt *s)
{
    if (s) st->drv->release(st, s);
}

int bn_store__exec(bn_store *st, const char *sql)
{
    return st->drv->exec(st, sql);
}

int bn_store__begin(bn_store *st, bool immediate)
{
    return st->drv->begin(st, immediate);
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
    if (st->drv->in_tx(st)) {
        char keep[sizeof st->errmsg];
        memcpy(keep, st->errmsg, sizeof keep);
        st->drv->exec(st, "ROLLBACK");
        memcpy(st->errmsg, keep, sizeof keep);
    }
}

char *bn_store__col_strdup(bn_stmt *s, int i)
{
    const unsigned char *t = bn_db_col_text(s, i);
    return t ? strdup((const char *)t) : NULL;
}

int64_t bn_store__changes(bn_store *st)
{
    return st->drv->changes(st);
}
