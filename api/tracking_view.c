/* tracking_view.c - the "tracking" field of GET /v1/jobs/{id}.
 *
 * A hook for the W&B tracker: this version returns the job's tracking request with the
 * effective mode. The tracker's owner replaces the body (run id, URL, delivery state
 * from the store) without touching the rest of the API.
 */
#include "api_internal.h"

#include <cjson/cJSON.h>

cJSON *bn_api_tracking_view(bn_store *st, const bn_store_job *job)
{
    (void)st;
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
    cJSON_DeleteItemFromObjectCaseSensitive(w, "mode");
    cJSON_AddStringToObject(w, "mode", job->wandb_mode ? job->wandb_mode : "disabled");
    return t;
}
