/* tracking_view.c - the "tracking" field of GET /v1/jobs/{id} (owner: tracker).
 *
 * The job's tracking request (tracking.wandb: project, entity, tags, ...) with the
 * effective mode, plus the delivery state the tracker keeps in the store:
 *   "status"          pending | active | finished | failed | offline | disabled
 *   "run_id", "entity", "project", "run_url"   once the run exists on W&B
 *   "delivered_rows", "pending_rows"           outbox rows acknowledged / waiting
 *   "last_error"      the last failed attempt (the reason when status is failed)
 *   "spool"           the offline spool file, once written
 * The API key is never part of it.
 */
#include "api_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bn_store_wandb.h"

static void set_str(cJSON *o, const char *k, const char *v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    if (v) cJSON_AddStringToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static void set_num(cJSON *o, const char *k, double v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    cJSON_AddNumberToObject(o, k, v);
}

cJSON *bn_api_tracking_view(bn_store *st, const bn_store_job *job)
{
    cJSON *t = cJSON_Parse(job->tracking ? job->tracking : "{}");
    if (!cJSON_IsObject(t)) {
        cJSON_Delete(t);
        t = cJSON_CreateObject();
    }
    cJSON *w = cJSON_GetObjectItemCaseSensitive(t, "wandb");
    if (!cJSON_IsObject(w)) {
        cJSON_DeleteItemFromObjectCaseSensitive(t, "wandb");
        w = cJSON_AddObjectToObject(t, "wandb");
    }
    set_str(w, "mode", job->wandb_mode ? job->wandb_mode : "disabled");
    bn_store_wandb_status s;
    if (bn_store_wandb_status_get(st, job->id, &s) != BN_STORE_OK) return t;
    set_str(w, "status", s.status);
    if (strcmp(s.mode, "disabled") != 0) {
        set_str(w, "run_id", s.run_id);
        if (s.entity) set_str(w, "entity", s.entity);
        if (s.project) set_str(w, "project", s.project);
        set_str(w, "run_url", s.run_url);
        set_num(w, "delivered_rows", (double)s.delivered_rows);
        set_num(w, "pending_rows", (double)s.pending_rows);
        set_str(w, "last_error", s.last_error);
        if (!strcmp(s.mode, "offline") && job->output_dir) {
            /* inside the output folder, or beside it when the job left none */
            char spool[4200];
            snprintf(spool, sizeof spool, "%s/wandb/offline-run.jsonl", job->output_dir);
            if (access(spool, F_OK) != 0)
                snprintf(spool, sizeof spool, "%s.wandb-offline.jsonl", job->output_dir);
            if (access(spool, F_OK) == 0) set_str(w, "spool", spool);
        }
    }
    bn_store_wandb_status_free(&s);
    return t;
}
