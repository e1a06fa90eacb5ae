/* sse.c - GET /v1/jobs/{id}/events as a Server-Sent Events stream.
 *
 * A stream must not hold a pool thread while it waits for the next event. So the
 * content callback sends what the store has, and when there is nothing new it suspends
 * its connection and parks it on a list; one waker thread resumes every parked stream
 * four times a second (PostgreSQL: also as soon as any host NOTIFYs a new event) and
 * the callback looks again. Each event is sent as
 * "id: <seq>", "event: job-event", "data: <json>"; a client that reconnects with
 * Last-Event-ID continues after that event. When the job is final and every event has
 * been sent, an "end" event carries the final status and the stream closes.
 */
#include "api_internal.h"

#include "base/clock.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SSE_KEEPALIVE_MS 15000
#define SSE_WAKE_MS 250

typedef struct bn_api_sse {
    bn_api *api;
    struct MHD_Connection *conn;
    char id[64];
    int64_t last_seq;
    char *buf;
    size_t len, off;
    bool ended;
    int64_t last_send_ms;
    struct bn_api_sse *next;
    bool parked;
} sse_stream;

static bn_store *thread_store(bn_api *api)
{
    bn_store *st = pthread_getspecific(api->store_key);
    if (st) return st;
    char err[256];
    if (bn_store_open(api->db_path, &st, err, sizeof err)) return NULL;
    pthread_setspecific(api->store_key, st);
    return st;
}

static void append(sse_stream *s, const char *text)
{
    size_t n = strlen(text);
    char *g = realloc(s->buf, s->len + n + 1);
    if (!g) return;
    memcpy(g + s->len, text, n + 1);
    s->buf = g;
    s->len += n;
}

/* Formats new events (or the end marker / a keep-alive) into s->buf. */
static void fill(sse_stream *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->off = 0;
    bn_store *st = thread_store(s->api);
    if (!st) return;
    bn_store_event *ev;
    int n;
    if (bn_store_events_list(st, s->id, s->last_seq, 64, &ev, &n) == BN_STORE_OK) {
        for (int i = 0; i < n; i++) {
            cJSON *o = bn_api_event_json(&ev[i]);
            char *data = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
            char head[64];
            snprintf(head, sizeof head, "id: %lld\nevent: job-event\ndata: ",
                     (long long)ev[i].seq);
            append(s, head);
            append(s, data ? data : "{}");
            append(s, "\n\n");
            free(data);
            s->last_seq = ev[i].seq;
        }
        bn_store_events_free(ev, n);
        if (n > 0) return;
    }
    bn_store_job j;
    int rc = bn_store_job_get(st, s->id, &j);
    if (rc == BN_STORE_NOTFOUND || (rc == BN_STORE_OK && bn_store_status_final(j.status))) {
        char end[160];
        snprintf(end, sizeof end, "event: end\ndata: {\"status\":\"%s\"}\n\n",
                 rc ? "deleted" : bn_store_status_name(j.status));
        append(s, end);
        s->ended = true;
    } else if (bn_store_now_ms() - s->last_send_ms > SSE_KEEPALIVE_MS) {
        append(s, ": keep-alive\n\n");
    }
    if (rc == BN_STORE_OK) bn_store_job_free(&j);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    sse_stream *s = cls;
    bn_api *api = s->api;
    if (s->off >= s->len) {
        if (s->ended || atomic_load(&api->stopping)) return MHD_CONTENT_READER_END_OF_STREAM;
        fill(s);
    }
    if (s->off < s->len) {
        size_t n = s->len - s->off < max ? s->len - s->off : max;
        memcpy(out, s->buf + s->off, n);
        s->off += n;
        s->last_send_ms = bn_store_now_ms();
        return (ssize_t)n;
    }
    pthread_mutex_lock(&api->sse_lock);
    if (atomic_load(&api->stopping)) {
        pthread_mutex_unlock(&api->sse_lock);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    MHD_suspend_connection(s->conn);
    s->parked = true;
    s->next = api->sse_waiting;
    api->sse_waiting = s;
    pthread_mutex_unlock(&api->sse_lock);
    return 0;
}

static void sse_free(void *cls)
{
    sse_stream *s = cls;
    bn_api *api = s->api;
    pthread_mutex_lock(&api->sse_lock);
    for (sse_stream **p = &api->sse_waiting; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    pthread_mutex_unlock(&api->sse_lock);
    atomic_fetch_sub(&api->n_sse, 1);
    free(s->buf);
    free(s);
}

/* Resumes every parked stream; the caller holds sse_lock. */
static void resume_parked(bn_api *api)
{
    sse_stream *s = api->sse_waiting;
    api->sse_waiting = NULL;
    for (; s; s = s->next) {
        s->parked = false;
        MHD_resume_connection(s->conn);
    }
}

/* Resumes every parked stream (caller must not hold sse_lock). */
void bn_api_sse_wake_all(bn_api *api)
{
    pthread_mutex_lock(&api->sse_lock);
    resume_parked(api);
    pthread_mutex_unlock(&api->sse_lock);
}

void *bn_api_sse_waker(void *arg)
{
    bn_api *api = arg;
    /* PostgreSQL: events may be written by another host; LISTEN wakes the streams as
     * soon as one is committed (each stream then catches up from the store). */
    bn_store *listen = NULL;
    if (bn_store_spec_is_pg(api->db_path)) {
        char err[256];
        if (bn_store_open(api->db_path, &listen, err, sizeof err)) listen = NULL;
    }
    pthread_mutex_lock(&api->sse_lock);
    while (!atomic_load(&api->stopping)) {
        bool got = false;
        if (listen) {
            pthread_mutex_unlock(&api->sse_lock);
            if (bn_store_wait_event(listen, SSE_WAKE_MS, &got)) {
                struct timespec pause = {0, SSE_WAKE_MS * 1000000L};
                nanosleep(&pause, NULL); /* database away: poll until it is back */
            }
            pthread_mutex_lock(&api->sse_lock);
        } else {
            struct timespec ts = bn_clock_deadline(SSE_WAKE_MS);
            pthread_cond_timedwait(&api->sse_cond, &api->sse_lock, &ts);
        }
        resume_parked(api);
    }
    pthread_mutex_unlock(&api->sse_lock);
    bn_store_close(listen);
    return NULL;
}

enum MHD_Result bn_api_events_stream(bn_api_req *r)
{
    bn_api *api = r->api;
    bn_store *st = bn_api_store(r);
    if (!st) return MHD_YES;
    bn_store_job j;
    int rc = bn_store_job_get(st, r->id, &j);
    if (rc == BN_STORE_NOTFOUND) return bn_api_problem(r, 404, "id", "no job %s", r->id);
    if (rc) return bn_api_problem(r, 500, NULL, "events: %s", bn_store_errmsg(st));
    bn_store_job_free(&j);
    if (atomic_fetch_add(&api->n_sse, 1) >= api->cfg.max_sse) {
        atomic_fetch_sub(&api->n_sse, 1);
        return bn_api_problem(r, 503, NULL, "too many event streams (limit %d)",
                              api->cfg.max_sse);
    }
    sse_stream *s = calloc(1, sizeof *s);
    if (!s) {
        atomic_fetch_sub(&api->n_sse, 1);
        return MHD_NO;
    }
    s->api = api;
    s->conn = r->conn;
    snprintf(s->id, sizeof s->id, "%s", r->id);
    s->last_send_ms = bn_store_now_ms();
    const char *last = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    if (last) s->last_seq = strtoll(last, NULL, 10);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, s, sse_free);
    if (!resp) {
        sse_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    return bn_api_queue(r, 200, resp);
}
