/* http.c - reply helpers of the API: JSON bodies, RFC 9457 problems, request counting,
 * and the per-thread store handle.
 *
 * Every reply goes through bn_api_queue, which counts (route, status code) for /metrics
 * and marks the request answered, so a handler cannot answer twice. Problems carry a
 * JSON-pointer-ish "field" naming the offending input ("/config/fine_tune/lr",
 * "query.limit", "header.Content-Type").
 */
#include "api_internal.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const int bn_api_codes[BN_API_N_CODES] = {
    200, 201, 202, 204, 206, 400, 401, 403, 404, 405, 409, 413, 415, 416, 429, 500, 503, 0,
};

static const char *const route_names[R_COUNT] = {
    "/", "/healthz", "/readyz", "/metrics", "/v1/openapi.json",
    "/v1/jobs", "/v1/jobs/{id}", "/v1/jobs/{id}/events", "/v1/jobs/{id}/metrics",
    "/v1/jobs/{id}/artifacts", "/v1/jobs/{id}/artifacts/{path}", "/v1/jobs/{id}/cancel",
    "unmatched",
};

const char *bn_api_route_name(bn_api_route r)
{
    return (r >= 0 && r < R_COUNT) ? route_names[r] : "unmatched";
}

void bn_api_count(bn_api *api, bn_api_route route, unsigned code)
{
    int k = BN_API_N_CODES - 1;
    for (int i = 0; i < BN_API_N_CODES - 1; i++)
        if ((unsigned)bn_api_codes[i] == code) k = i;
    atomic_fetch_add_explicit(&api->http_count[route][k], 1, memory_order_relaxed);
}

const char *bn_api_time(int64_t ms, char buf[32])
{
    buf[0] = 0;
    if (ms <= 0) return buf;
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, 32, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u,
             (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u,
             (unsigned)tm.tm_sec % 100u, (unsigned)(ms % 1000));
    return buf;
}

enum MHD_Result bn_api_queue(bn_api_req *r, unsigned code, struct MHD_Response *resp)
{
    if (!resp) return MHD_NO;
    r->replied = true;
    bn_api_count(r->api, r->route, code);
    enum MHD_Result ret = MHD_queue_response(r->conn, code, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result bn_api_reply(bn_api_req *r, unsigned code, const char *ctype, const char *body,
                             size_t len, bool copy)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, (void *)body, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    return bn_api_queue(r, code, resp);
}

enum MHD_Result bn_api_reply_json(bn_api_req *r, unsigned code, cJSON *json)
{
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!text) return bn_api_problem(r, 500, NULL, "out of memory building the response");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    return bn_api_queue(r, code, resp);
}

static const char *status_title(unsigned code)
{
    switch (code) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Internal Server Error";
    }
}

enum MHD_Result bn_api_problem(bn_api_req *r, unsigned code, const char *field,
                               const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    cJSON *p = cJSON_CreateObject();
    char type[64];
    snprintf(type, sizeof type, "https://bitnetd.dev/problems/%u", code);
    cJSON_AddStringToObject(p, "type", type);
    cJSON_AddStringToObject(p, "title", status_title(code));
    cJSON_AddNumberToObject(p, "status", code);
    cJSON_AddStringToObject(p, "detail", detail);
    if (field) cJSON_AddStringToObject(p, "field", field);
    cJSON_AddStringToObject(p, "instance", r->url ? r->url : "/");
    char *text = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    if (!text) return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/problem+json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (code == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"bitnetd\"");
    if (code == 429 || code == 503) MHD_add_response_header(resp, "Retry-After", "5");
    if (r->extra_header) MHD_add_response_header(resp, r->extra_header, r->extra_value);
    if (code == 500) bn_api_log(r->api, 3, "%s %s: 500: %s", r->method, r->url, detail);
    return bn_api_queue(r, code, resp);
}

static void close_store(void *p)
{
    bn_store_close(p);
}

/* Called once from bn_api_start. */
int bn_api_store_key_init(bn_api *api)
{
    return pthread_key_create(&api->store_key, close_store);
}

bn_store *bn_api_store(bn_api_req *r)
{
    bn_store *st = pthread_getspecific(r->api->store_key);
    if (st) return st;
    char err[512];
    if (bn_store_open(r->api->db_path, &st, err, sizeof err)) {
        bn_api_problem(r, 503, NULL, "store unavailable: %s", err);
        return NULL;
    }
    pthread_setspecific(r->api->store_key, st);
    return st;
}

cJSON *bn_api_event_json(const bn_store_event *e)
{
    cJSON *o = cJSON_CreateObject();
    char buf[32];
    cJSON_AddNumberToObject(o, "seq", (double)e->seq);
    cJSON_AddStringToObject(o, "ts", bn_api_time(e->ts, buf));
    if (e->stage) cJSON_AddStringToObject(o, "stage", e->stage);
    else cJSON_AddNullToObject(o, "stage");
    cJSON_AddStringToObject(o, "level", e->level ? e->level : "info");
    cJSON_AddStringToObject(o, "message", e->message ? e->message : "");
    if (e->host) cJSON_AddStringToObject(o, "host", e->host);
    else cJSON_AddNullToObject(o, "host");
    return o;
}
