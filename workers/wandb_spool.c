/* wandb_spool.c - see wandb_spool.h. The spool is built in memory and written in one go
 * (temp file, fsync, rename, fsync of the folder), so a reader sees all of it or none. */
#include "wandb_spool.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/str.h"

struct bn_wandb_spool {
    bn_strbuf b; /* the JSON lines so far, each ending in a newline */
};

static void put(bn_wandb_spool *sp, const char *s)
{
    bn_strbuf_str(&sp->b, s);
    bn_strbuf_put(&sp->b, "\n", 1);
}

static int put_json(bn_wandb_spool *sp, cJSON *line)
{
    char *txt = line ? cJSON_PrintUnformatted(line) : NULL;
    cJSON_Delete(line);
    if (!txt) return -1;
    put(sp, txt);
    free(txt);
    return sp->b.oom ? -1 : 0;
}

void bn_wandb_spool_path(const char *output_dir, char *buf, size_t len)
{
    if (!buf || len == 0) return;
    struct stat sb;
    if (stat(output_dir, &sb) == 0 && S_ISDIR(sb.st_mode))
        snprintf(buf, len, "%s/wandb/offline-run.jsonl", output_dir);
    else
        snprintf(buf, len, "%s.wandb-offline.jsonl", output_dir);
}

int bn_wandb_spool_find(const char *output_dir, char *buf, size_t len)
{
    if (!buf || len == 0) return -1;
    snprintf(buf, len, "%s/wandb/offline-run.jsonl", output_dir);
    if (access(buf, R_OK) == 0) return 0;
    snprintf(buf, len, "%s.wandb-offline.jsonl", output_dir);
    return access(buf, R_OK) == 0 ? 0 : -1;
}

bn_wandb_spool *bn_wandb_spool_new(const char *job_id, const cJSON *vars)
{
    bn_wandb_spool *sp = calloc(1, sizeof *sp);
    if (!sp) return NULL;
    cJSON *l = cJSON_CreateObject();
    cJSON_AddStringToObject(l, "type", "run");
    cJSON_AddNumberToObject(l, "version", 1);
    cJSON_AddStringToObject(l, "job_id", job_id ? job_id : "");
    cJSON_AddItemToObject(l, "variables", cJSON_Duplicate(vars, 1));
    if (put_json(sp, l)) {
        bn_wandb_spool_free(sp);
        return NULL;
    }
    return sp;
}

int bn_wandb_spool_add(bn_wandb_spool *sp, const char *body)
{
    cJSON *b = cJSON_Parse(body);
    if (!cJSON_IsObject(b)) {
        cJSON_Delete(b);
        return -1;
    }
    cJSON *l = cJSON_CreateObject();
    cJSON_AddStringToObject(l, "type", "file_stream");
    cJSON_AddItemToObject(l, "body", b);
    return put_json(sp, l);
}

void bn_wandb_spool_free(bn_wandb_spool *sp)
{
    if (!sp) return;
    free(sp->b.p);
    free(sp);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes data to path atomically (temp + fsync + rename + fsync of the folder). */
static int write_atomic(const char *path, const char *data, size_t len, char *err, size_t errlen)
{
    char *dcopy = strdup(path);
    if (!dcopy) return -1;
    char *dir = dirname(dcopy);
    if (bn_fs_mkdir_p(dir, NULL)) {
        snprintf(err, errlen, "creating %s: %s", dir, strerror(errno));
        free(dcopy);
        return -1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = fd < 0 || write_all(fd, data, len) || fsync(fd);
    if (fd >= 0 && close(fd)) rc = 1;
    if (!rc && rename(tmp, path)) rc = 1;
    if (rc) {
        snprintf(err, errlen, "writing %s: %s", path, strerror(errno));
        unlink(tmp);
        free(dcopy);
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dcopy);
    return 0;
}

int bn_wandb_spool_write(bn_wandb_spool *sp, const char *path, char *err, size_t errlen)
{
    if (sp->b.oom) {
        snprintf(err, errlen, "out of memory building %s", path);
        return -1;
    }
    return write_atomic(path, sp->b.p, sp->b.len, err, errlen);
}

/* ---- replay -------------------------------------------------------------------------------- */

static void sleep_ms(int64_t ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

typedef struct sync_ctx {
    bn_wandb_client *c;
    const bn_wandb_sync_opts *o;
    bn_wandb_sync_report *rep;
    uint64_t rng;
    char *entity, *project, *run;
} sync_ctx;

/* One request with retries; body NULL = UpsertBucket with vars. */
static int with_retry(sync_ctx *x, const cJSON *vars, const char *body, char *err, size_t errlen)
{
    int max = x->o->max_attempts > 0 ? x->o->max_attempts : 20;
    int64_t base = x->o->backoff_base_ms > 0 ? x->o->backoff_base_ms : 2000;
    int64_t cap = x->o->backoff_cap_ms > 0 ? x->o->backoff_cap_ms : 60000;
    for (int attempt = 0;; attempt++) {
        bn_wandb_result res;
        x->rep->requests++;
        if (body) {
            if (!bn_wandb_file_stream(x->c, x->entity, x->project, x->run, body, &res)) return 0;
        } else {
            bn_wandb_run run;
            if (!bn_wandb_upsert_bucket(x->c, vars, &run, &res)) {
                x->entity = strdup(run.entity);
                x->project = strdup(run.project);
                x->run = strdup(run.name);
                bn_wandb_run_free(&run);
                return (x->entity && x->project && x->run) ? 0 : -1;
            }
        }
        if (res.outcome == BN_WANDB_FATAL || attempt + 1 >= max) {
            snprintf(err, errlen, "%s%s: %s", body ? "file_stream" : "UpsertBucket",
                     res.outcome == BN_WANDB_FATAL ? "" : " (giving up after retries)", res.message);
            return -1;
        }
        x->rep->retries++;
        sleep_ms(bn_wandb_backoff_ms(attempt, base, cap, res.retry_after_ms, &x->rng));
    }
}

static void override(cJSON *vars, const char *key, const char *over, const char *def)
{
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(vars, key);
    const char *v = over ? over : (cJSON_IsString(cur) ? NULL : def);
    if (!v) return;
    cJSON_DeleteItemFromObjectCaseSensitive(vars, key);
    cJSON_AddStringToObject(vars, key, v);
}

static int replay(sync_ctx *x, FILE *f, const char *path, char *err, size_t errlen)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len <= 1) continue;
        cJSON *j = cJSON_Parse(line);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
        bool is_run = cJSON_IsString(type) && !strcmp(type->valuestring, "run");
        bool is_fs = cJSON_IsString(type) && !strcmp(type->valuestring, "file_stream");
        cJSON *payload = cJSON_GetObjectItemCaseSensitive(j, is_run ? "variables" : "body");
        if ((!is_run && !is_fs) || !cJSON_IsObject(payload) || (is_run != (lineno == 1))) {
            snprintf(err, errlen, "%s:%d: not a bitnetd W&B spool record", path, lineno);
            rc = -1;
        } else if (is_run) {
            override(payload, "entity", x->o->entity, x->o->default_entity);
            override(payload, "project", x->o->project, x->o->default_project);
            rc = with_retry(x, payload, NULL, err, errlen);
        } else {
            char *body = cJSON_PrintUnformatted(payload);
            rc = body ? with_retry(x, NULL, body, err, errlen) : -1;
            free(body);
        }
        cJSON_Delete(j);
    }
    free(line);
    if (!rc && lineno == 0) {
        snprintf(err, errlen, "%s: empty spool", path);
        rc = -1;
    }
    return rc;
}

int bn_wandb_sync_spool(bn_wandb_client *c, const char *path, const bn_wandb_sync_opts *o,
                        bn_wandb_sync_report *rep, char *err, size_t errlen)
{
    memset(rep, 0, sizeof *rep);
    char marker[4200];
    snprintf(marker, sizeof marker, "%s.synced", path);
    if (!o->force && access(marker, F_OK) == 0) {
        rep->already_synced = true;
        FILE *m = fopen(marker, "r");
        if (m) {
            if (fgets(rep->run_url, sizeof rep->run_url, m))
                rep->run_url[strcspn(rep->run_url, "\r\n")] = '\0';
            fclose(m);
        }
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    sync_ctx x = { .c = c, .o = o, .rep = rep, .rng = (uint64_t)time(NULL) | 1 };
    int rc = replay(&x, f, path, err, errlen);
    fclose(f);
    if (!rc) {
        const char *base = o->app_url ? o->app_url : bn_wandb_client_base_url(c);
        const char *api = strstr(base, "://api.");
        if (api && !o->app_url)
            snprintf(rep->run_url, sizeof rep->run_url, "%.*s://%s/%s/%s/runs/%s",
                     (int)(api - base), base, api + 7, x.entity, x.project, x.run);
        else
            snprintf(rep->run_url, sizeof rep->run_url, "%s/%s/%s/runs/%s", base, x.entity,
                     x.project, x.run);
        char content[1100];
        snprintf(content, sizeof content, "%s\n", rep->run_url);
        rc = write_atomic(marker, content, strlen(content), err, errlen);
    }
    free(x.entity);
    free(x.project);
    free(x.run);
    return rc;
}
