/* tracker_check.c - see tracker_check.h. */
#include "tracker_check.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wandb.h"

const char *const tc_job_keys[19] = {
    "compression/original_size_mb", "compression/pre_perplexity", "compression/pre_eval_loss",
    "compression/compressed_size_mb", "compression/ratio", "compression/layers_compressed",
    "compression/sparsity_ratio", "compression/quantized_params", "compression/total_params",
    "compression/layers_quantized", "compression/post_perplexity",
    "compression/perplexity_degradation", "compression/accuracy_preserved",
    "compression/dequantization_accuracy", "compression/gradient_flow_test_passed",
    "compression/post_finetune_perplexity", "compression/perplexity_recovery",
    "compression/fine_tune_epochs", "compression/fine_tune_time_hours",
};

const char *const tc_phase_keys[8] = {
    "phase/compression_ratio", "phase/original_size_mb", "phase/compressed_size_mb",
    "phase/final_perplexity", "phase/accuracy_preserved", "phase/success",
    "phase/quantization_method", "phase/sparsity_ratio",
};

static bool fail(tc_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(tc_report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    return false;
}

static int num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

const cJSON *tc_find_run(const cJSON *state, const char *job_id)
{
    const cJSON *found = NULL;
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(state, "runs");
    for (const cJSON *r = runs ? runs->child : NULL; r; r = r->next) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(r, "name");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, job_id)) {
            if (found) return NULL;
            found = r;
        }
    }
    return found;
}

static bool check_history(const cJSON *run, tc_report *rep)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(run, "history");
    int counts[19] = { 0 };
    double last_rt = -1;
    int i = 0;
    for (const cJSON *l = h ? h->child : NULL; l; l = l->next, i++) {
        if (!cJSON_IsString(l)) return fail(rep, "history offset %d is a hole", i);
        cJSON *o = bn_wandb_parse_ext(l->valuestring);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            return fail(rep, "history line %d is not a JSON object", i);
        }
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(o, "_step");
        const cJSON *rt = cJSON_GetObjectItemCaseSensitive(o, "_runtime");
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "_timestamp");
        bool ok = cJSON_IsNumber(step) && step->valueint == i && cJSON_IsNumber(rt) &&
                  rt->valuedouble >= last_rt && cJSON_IsNumber(ts) && ts->valuedouble > 1e9;
        if (ok) last_rt = rt->valuedouble;
        for (int k = 0; k < 19; k++)
            if (cJSON_GetObjectItemCaseSensitive(o, tc_job_keys[k])) counts[k]++;
        if (cJSON_GetObjectItemCaseSensitive(o, "fine_tune/loss")) rep->fine_tune_rows++;
        cJSON_Delete(o);
        if (!ok) return fail(rep, "history line %d: bad _step/_runtime/_timestamp: %.200s", i, l->valuestring);
    }
    rep->n_history = i;
    for (int k = 0; k < 19; k++) rep->key_counts[k] = counts[k];
    return true;
}

static bool check_summary(const cJSON *run, tc_report *rep)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(run, "summary");
    if (!cJSON_IsString(s)) return fail(rep, "no summary");
    cJSON *o = bn_wandb_parse_ext(s->valuestring);
    bool ok = cJSON_IsObject(o);
    for (int k = 0; ok && k < 8; k++)
        if (!cJSON_GetObjectItemCaseSensitive(o, tc_phase_keys[k]))
            ok = fail(rep, "summary lacks %s", tc_phase_keys[k]);
    for (int k = 0; ok && k < 19; k++)
        if (!cJSON_GetObjectItemCaseSensitive(o, tc_job_keys[k]))
            ok = fail(rep, "summary lacks %s", tc_job_keys[k]);
    cJSON_Delete(o);
    return ok;
}

bool tc_check_run(const cJSON *state, const char *job_id, int exitcode, tc_report *rep)
{
    memset(rep, 0, sizeof *rep);
    const cJSON *run = tc_find_run(state, job_id);
    if (!run) return fail(rep, "no single run named %s", job_id);
    if (num(state, "fs_before_upsert") != 0) return fail(rep, "file_stream before UpsertBucket");
    if (num(state, "key_leaks") != 0) return fail(rep, "the API key appeared in a request body");
    if (num(run, "upserts") < 1) return fail(rep, "no UpsertBucket");
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(run, "config_is_string")) ||
        !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(run, "config_wrapped")))
        return fail(rep, "config is not a wrapped JSON string");
    if (num(run, "gaps") || num(run, "conflicts") || num(run, "history_holes"))
        return fail(rep, "gaps %d, conflicts %d, holes %d", num(run, "gaps"),
                    num(run, "conflicts"), num(run, "history_holes"));
    if (num(run, "completes") != 1) return fail(rep, "%d completes", num(run, "completes"));
    if (num(run, "after_complete") != 0)
        return fail(rep, "%d requests after the complete", num(run, "after_complete"));
    if (num(run, "exitcode") != exitcode) return fail(rep, "exitcode %d", num(run, "exitcode"));
    return check_history(run, rep);
}

bool tc_check_19(const cJSON *state, const char *job_id, tc_report *rep)
{
    const cJSON *run = tc_find_run(state, job_id);
    if (!run) return fail(rep, "no single run named %s", job_id);
    for (int k = 0; k < 19; k++)
        if (rep->key_counts[k] != 1)
            return fail(rep, "key %s arrived %d times", tc_job_keys[k], rep->key_counts[k]);
    return check_summary(run, rep);
}

static bool close_to(double a, double b)
{
    double d = fabs(a - b), m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return d <= 1e-12 * (m > 1 ? m : 1);
}

/* Finds the value of (key, step) among the lines; counts matches. */
static int count_in_history(const cJSON *lines, const char *key, int step, double value,
                            bool *value_ok)
{
    int n = 0;
    *value_ok = true;
    char group_step[192];
    const char *slash = strchr(key, '/');
    if (slash) snprintf(group_step, sizeof group_step, "%.*s/step", (int)(slash - key), key);
    else snprintf(group_step, sizeof group_step, "step");
    for (const cJSON *l = lines->child; l; l = l->next) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(l, key);
        if (!v) continue;
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(l, group_step);
        int line_step = cJSON_IsNumber(st) ? st->valueint : -1;
        if (line_step != step) continue;
        n++;
        if (!cJSON_IsNumber(v) || !close_to(v->valuedouble, value)) *value_ok = false;
    }
    return n;
}

bool tc_check_values(const cJSON *state, const char *job_id, const cJSON *api_metrics,
                     tc_report *rep)
{
    const cJSON *run = tc_find_run(state, job_id);
    if (!run) return fail(rep, "no single run named %s", job_id);
    cJSON *lines = cJSON_CreateArray();
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(run, "history");
    int n_values = 0;
    for (const cJSON *l = h ? h->child : NULL; l; l = l->next) {
        cJSON *o = cJSON_IsString(l) ? bn_wandb_parse_ext(l->valuestring) : NULL;
        for (const cJSON *it = o ? o->child : NULL; it; it = it->next)
            if (it->string[0] != '_' && !strstr(it->string, "/step") && strcmp(it->string, "step"))
                n_values++;
        cJSON_AddItemToArray(lines, o ? o : cJSON_CreateNull());
    }
    bool ok = true;
    int expected = 0;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(api_metrics, "metrics");
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(run, "summary");
    cJSON *summary = cJSON_IsString(sl) ? bn_wandb_parse_ext(sl->valuestring) : NULL;
    for (const cJSON *it = m ? m->child : NULL; ok && it; it = it->next, expected++) {
        bool vok;
        int c = count_in_history(lines, it->string, -1, it->valuedouble, &vok);
        /* A job-level value the engine re-measured later (the store keeps the first in
         * the history, W&B's behaviour for a logged step): the summary has the final. */
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(summary, it->string);
        if (c == 1 && !vok && cJSON_IsNumber(sv) && close_to(sv->valuedouble, it->valuedouble)) {
            vok = true;
            rep->updated_keys++;
        }
        if (c != 1 || !vok) ok = fail(rep, "%s: %d lines, value %s", it->string, c, vok ? "ok" : "differs");
    }
    cJSON_Delete(summary);
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(api_metrics, "history");
    for (const cJSON *series = hist ? hist->child : NULL; ok && series; series = series->next)
        for (const cJSON *pt = series->child; ok && pt; pt = pt->next, expected++) {
            bool vok;
            int step = cJSON_GetArrayItem(pt, 0)->valueint;
            double v = cJSON_GetArrayItem(pt, 1)->valuedouble;
            int c = count_in_history(lines, series->string, step, v, &vok);
            if (c != 1 || !vok)
                ok = fail(rep, "%s step %d: %d lines, value %s", series->string, step, c, vok ? "ok" : "differs");
        }
    if (ok && expected != n_values)
        ok = fail(rep, "the run holds %d values, the daemon recorded %d", n_values, expected);
    cJSON_Delete(lines);
    return ok;
}

static void strip_volatile(cJSON *o)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, "_runtime");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "_timestamp");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "_wandb");
}

char *tc_canonical_run(const cJSON *run)
{
    cJSON *out = cJSON_CreateObject();
    cJSON *hist = cJSON_AddArrayToObject(out, "history");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(run, "history");
    for (const cJSON *l = h ? h->child : NULL; l; l = l->next) {
        cJSON *o = cJSON_IsString(l) ? bn_wandb_parse_ext(l->valuestring) : cJSON_CreateNull();
        strip_volatile(o);
        cJSON_AddItemToArray(hist, o);
    }
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(run, "summary");
    cJSON *so = cJSON_IsString(s) ? bn_wandb_parse_ext(s->valuestring) : cJSON_CreateNull();
    strip_volatile(so);
    cJSON_AddItemToObject(out, "summary", so);
    cJSON_AddItemToObject(out, "exitcode",
        cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(run, "exitcode"), 1));
    cJSON_AddItemToObject(out, "config",
        cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(run, "config"), 1));
    char *t = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    return t;
}
