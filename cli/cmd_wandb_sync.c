/* cmd_wandb_sync.c - `bitnetctl wandb-sync OUTPUT_DIR|JOB_ID`: uploads an offline run.
 *
 * A job tracked in offline mode leaves <output_dir>/wandb/offline-run.jsonl (or, when it
 * left no output folder, <output_dir>.wandb-offline.jsonl): the requests it would have
 * sent. This command replays it to W&B with the same protocol and retry policy as the
 * daemon's tracker (bn_wandb_sync_spool), then leaves
 * offline-run.jsonl.synced beside it. Given a job id, it asks the daemon for the job's
 * output folder first (GET /v1/jobs/{id}).
 *
 * W&B settings come from WANDB_BASE_URL, WANDB_API_KEY (or --key-file), WANDB_ENTITY and
 * WANDB_PROJECT (used when the spool names none; --entity/--project override).
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "wandb.h"
#include "wandb_spool.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: bitnetctl wandb-sync OUTPUT_DIR|SPOOL_FILE|JOB_ID [options]\n"
        "  Uploads the offline W&B spool of a job (OUTPUT_DIR/wandb/offline-run.jsonl).\n"
        "  --key-file PATH   file holding the W&B API key (default: $WANDB_API_KEY)\n"
        "  --entity NAME     W&B entity (default: the spool's, then $WANDB_ENTITY)\n"
        "  --project NAME    W&B project (default: the spool's, then $WANDB_PROJECT)\n"
        "  --force           upload again even if already synced\n"
        "  --url URL         daemon URL for a JOB_ID (default: $BITNETD_URL or http://127.0.0.1:8080)\n"
        "  --token TOKEN     daemon bearer token (default: $BITNETD_TOKEN)\n");
}

static const char *env(const char *n)
{
    const char *v = getenv(n);
    return (v && *v) ? v : NULL;
}

static size_t collect(char *d, size_t s, size_t n, void *ud)
{
    char **buf = ud;
    size_t len = *buf ? strlen(*buf) : 0, add = s * n;
    if (len + add > (8u << 20)) return 0;
    char *nb = realloc(*buf, len + add + 1);
    if (!nb) return 0;
    memcpy(nb + len, d, add);
    nb[len + add] = '\0';
    *buf = nb;
    return add;
}

/* Asks the daemon for the job's output folder; malloc'd path or NULL. */
static char *job_output_dir(const char *url, const char *token, const char *id)
{
    for (const char *p = id; *p; p++)
        if (!(*p == '_' || *p == '-' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
              (*p >= 'A' && *p <= 'Z'))) {
            bn_cli_errorf("'%s' is neither a folder nor a job id", id);
            return NULL;
        }
    char full[2048], auth[1100];
    snprintf(full, sizeof full, "%s/v1/jobs/%s", url, id);
    CURL *h = curl_easy_init();
    if (!h) return NULL;
    char *body = NULL;
    struct curl_slist *hdr = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdr = curl_slist_append(hdr, auth);
    }
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    char *out = NULL;
    cJSON *j = body ? cJSON_Parse(body) : NULL;
    const cJSON *od = cJSON_GetObjectItemCaseSensitive(j, "output_dir");
    if (rc != CURLE_OK)
        bn_cli_errorf("daemon at %s: %s", url, curl_easy_strerror(rc));
    else if (status != 200)
        bn_cli_errorf("GET /v1/jobs/%s: HTTP %ld", id, status);
    else if (!cJSON_IsString(od))
        bn_cli_errorf("job %s has no output folder yet", id);
    else
        out = strdup(od->valuestring);
    cJSON_Delete(j);
    free(body);
    return out;
}

int bn_cli_wandb_sync(int argc, char **argv)
{
    const char *target = NULL, *key_file = NULL, *entity = NULL, *project = NULL;
    const char *url = env("BITNETD_URL"), *token = env("BITNETD_TOKEN");
    bool force = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 0;
        else if (!strcmp(a, "--force")) force = true;
        else if (!strcmp(a, "--key-file") && has) key_file = argv[++i];
        else if (!strcmp(a, "--entity") && has) entity = argv[++i];
        else if (!strcmp(a, "--project") && has) project = argv[++i];
        else if (!strcmp(a, "--url") && has) url = argv[++i];
        else if (!strcmp(a, "--token") && has) token = argv[++i];
        else if (a[0] != '-' && !target) target = a;
        else {
            bn_cli_errorf("wandb-sync: unexpected argument '%s'", a);
            usage(stderr);
            return 2;
        }
    }
    if (!target) {
        usage(stderr);
        return 2;
    }
    struct stat sb;
    char spool[4200];
    if (stat(target, &sb) == 0 && S_ISREG(sb.st_mode)) {
        snprintf(spool, sizeof spool, "%s", target);
    } else {
        char *dir = stat(target, &sb) == 0 && S_ISDIR(sb.st_mode)
                        ? strdup(target)
                        : job_output_dir(url ? url : "http://127.0.0.1:8080", token, target);
        if (!dir) return 1;
        int found = bn_wandb_spool_find(dir, spool, sizeof spool);
        if (found) bn_cli_errorf("no offline W&B spool for %s (was the job tracked in offline mode?)", dir);
        free(dir);
        if (found) return 1;
    }
    char *key = NULL, err[1024] = "";
    if (key_file) {
        FILE *f = fopen(key_file, "r");
        char line[512] = "";
        if (!f || !fgets(line, sizeof line, f)) {
            bn_cli_errorf("cannot read the W&B key file %s", key_file);
            if (f) fclose(f);
            return 1;
        }
        fclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        key = strdup(line);
        memset(line, 0, sizeof line);
    } else if (env("WANDB_API_KEY")) {
        key = strdup(env("WANDB_API_KEY"));
    } else {
        bn_cli_errorf("no W&B API key: set WANDB_API_KEY or pass --key-file");
        return 1;
    }
    bn_wandb_client_opts co = { .base_url = env("WANDB_BASE_URL"), .api_key = key };
    bn_wandb_client *c = bn_wandb_client_new(&co);
    memset(key, 0, strlen(key));
    free(key);
    if (!c) {
        bn_cli_errorf("cannot initialise libcurl");
        return 1;
    }
    bn_wandb_sync_opts so = { .entity = entity, .project = project,
                              .default_entity = env("WANDB_ENTITY"),
                              .default_project = env("WANDB_PROJECT"),
                              .app_url = env("WANDB_APP_URL"), .force = force };
    bn_wandb_sync_report rep;
    int rc = bn_wandb_sync_spool(c, spool, &so, &rep, err, sizeof err);
    bn_wandb_client_free(c);
    if (rc) {
        bn_cli_errorf("wandb-sync: %s", err);
        return 1;
    }
    if (rep.already_synced)
        printf("already synced: %s (use --force to upload again)\n", rep.run_url);
    else
        printf("synced %s: %d requests (%d retries)\n%s\n", spool, rep.requests, rep.retries,
               rep.run_url);
    return 0;
}
