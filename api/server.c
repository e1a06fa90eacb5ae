/* server.c - the libmicrohttpd daemon: listening, routing, auth, request bodies.
 *
 * libmicrohttpd runs its own pool of threads, each with an epoll loop, so a slow client
 * holds one connection slot (bounded by max_connections and a per-connection timeout)
 * but never a thread. A request is handled in three calls of on_request: the first
 * routes it and checks method, token and declared body size (so a refused upload is
 * answered before its body is read), the middle ones collect the body, the last runs
 * the handler. Each pool thread opens its own store handle on first use (http.c).
 */
#include "api_internal.h"

#include "base/checksum.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/str.h"

/* ---- routing ------------------------------------------------------------------------ */

static bool take_id(bn_api_req *r, const char *s, size_t n)
{
    if (n == 0 || n >= sizeof r->id) return false;
    memcpy(r->id, s, n);
    r->id[n] = 0;
    return true;
}

static bn_api_route match(bn_api_req *r, const char *url)
{
    static const struct { const char *path; bn_api_route route; } fixed[] = {
        {"/", R_DASHBOARD}, {"/healthz", R_HEALTHZ}, {"/readyz", R_READYZ},
        {"/metrics", R_METRICS}, {"/v1/openapi.json", R_OPENAPI}, {"/v1/jobs", R_JOBS},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(url, fixed[i].path) == 0) return fixed[i].route;
    if (strncmp(url, "/v1/jobs/", 9) != 0) return R_UNMATCHED;
    const char *id = url + 9, *slash = strchr(id, '/');
    if (!slash) return take_id(r, id, strlen(id)) ? R_JOB : R_UNMATCHED;
    if (!take_id(r, id, (size_t)(slash - id))) return R_UNMATCHED;
    const char *rest = slash + 1;
    if (strcmp(rest, "events") == 0) return R_JOB_EVENTS;
    if (strcmp(rest, "metrics") == 0) return R_JOB_METRICS;
    if (strcmp(rest, "artifacts") == 0) return R_JOB_ARTIFACTS;
    if (strcmp(rest, "cancel") == 0) return R_JOB_CANCEL;
    if (strncmp(rest, "artifacts/", 10) == 0 && rest[10]) {
        r->subpath = rest + 10;
        return R_JOB_ARTIFACT;
    }
    return R_UNMATCHED;
}

static const char *allowed_methods(bn_api_route route)
{
    switch (route) {
    case R_JOBS: return "GET, POST";
    case R_JOB: return "GET, DELETE";
    case R_JOB_CANCEL: return "POST";
    default: return "GET, HEAD";
    }
}

static bool method_allowed(bn_api_route route, const char *m)
{
    bool get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
    switch (route) {
    case R_JOBS: return get || strcmp(m, "POST") == 0;
    case R_JOB: return get || strcmp(m, "DELETE") == 0;
    case R_JOB_CANCEL: return strcmp(m, "POST") == 0;
    default: return get;
    }
}

static bn_api_scope needed_scope(bn_api_route route, const char *m)
{
    switch (route) {
    case R_DASHBOARD: case R_HEALTHZ: case R_READYZ: case R_OPENAPI: return BN_SCOPE_NONE;
    case R_JOB_CANCEL: return BN_SCOPE_SUBMIT;
    case R_JOBS: return strcmp(m, "POST") == 0 ? BN_SCOPE_SUBMIT : BN_SCOPE_READ;
    case R_JOB: return strcmp(m, "DELETE") == 0 ? BN_SCOPE_ADMIN : BN_SCOPE_READ;
    default: return BN_SCOPE_READ;
    }
}

/* Checks the bearer token; replies 401/403 and returns false when refused. */
static bool authorize(bn_api_req *r)
{
    bn_api_scope need = needed_scope(r->route, r->method);
    bn_api *api = r->api;
    pthread_rwlock_rdlock(&api->tokens_lock);
    if (!api->tokens) {
        pthread_rwlock_unlock(&api->tokens_lock);
        r->scope = BN_SCOPE_ADMIN;
        return true;
    }
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    char name[64] = "";
    bn_api_scope got = BN_SCOPE_NONE;
    if (h && strncasecmp(h, "Bearer ", 7) == 0)
        got = bn_api_tokens_check(api->tokens, h + 7, name, sizeof name);
    pthread_rwlock_unlock(&api->tokens_lock);
    r->scope = got;
    if (need == BN_SCOPE_NONE) return true;
    if (got == BN_SCOPE_NONE) {
        bn_api_problem(r, 401, "header.Authorization",
                       h ? "invalid bearer token" : "a bearer token is required");
        return false;
    }
    if (got < need) {
        bn_api_problem(r, 403, "header.Authorization", "token \"%s\" has scope %s; %s %s "
                       "needs %s", name, bn_api_scope_name(got), r->method,
                       bn_api_route_name(r->route), bn_api_scope_name(need));
        return false;
    }
    return true;
}

/* ---- simple handlers ---------------------------------------------------------------- */

static enum MHD_Result health(bn_api_req *r)
{
    return bn_api_reply(r, 200, "application/json", "{\"status\":\"ok\"}", 15, false);
}

static enum MHD_Result ready(bn_api_req *r)
{
    bn_api *api = r->api;
    bn_store *st = bn_api_store(r);
    if (!st) return MHD_YES;
    const char *why = NULL;
    char db[700];
    if (bn_store_ping(st)) {
        snprintf(db, sizeof db, "store (%s) is not writable: %s", bn_store_backend(st),
                 bn_store_errmsg(st));
        why = db;
    }
    else if (api->cfg.workers_alive && !api->cfg.workers_alive(api->cfg.workers_ctx))
        why = "workers are not running";
    else if (atomic_load(&api->draining)) why = "shutting down";
    if (why) return bn_api_problem(r, 503, NULL, "not ready: %s", why);
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"ready\",\"store\":\"%s\",\"schema\":%d}",
                     bn_store_backend(st), bn_store_schema_version(st));
    return bn_api_reply(r, 200, "application/json", body, (size_t)n, true);
}

static enum MHD_Result dispatch(bn_api_req *r)
{
    bool post = strcmp(r->method, "POST") == 0, del = strcmp(r->method, "DELETE") == 0;
    switch (r->route) {
    case R_DASHBOARD: {
        const char *page = bn_api_dashboard_page();
        return bn_api_reply(r, 200, "text/html; charset=utf-8", page, strlen(page), false);
    }
    case R_HEALTHZ: return health(r);
    case R_READYZ: return ready(r);
    case R_METRICS: return bn_api_prometheus(r);
    case R_OPENAPI: {
        const char *doc = bn_api_openapi_json();
        return bn_api_reply(r, 200, "application/json", doc, strlen(doc), false);
    }
    case R_JOBS: return post ? bn_api_jobs_submit(r) : bn_api_jobs_list(r);
    case R_JOB: return del ? bn_api_job_delete(r) : bn_api_job_get(r);
    case R_JOB_EVENTS: { /* JSON list, or a Server-Sent Events stream (sse.c) */
        const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept");
        return accept && strstr(accept, "text/event-stream") ? bn_api_events_stream(r) : bn_api_job_events(r);
    }
    case R_JOB_METRICS: return bn_api_job_metrics(r);
    case R_JOB_ARTIFACTS: return bn_api_job_artifacts(r);
    case R_JOB_ARTIFACT: return bn_api_job_artifact(r);
    case R_JOB_CANCEL: return bn_api_job_cancel(r);
    default: return bn_api_problem(r, 404, NULL, "no route %s", r->url);
    }
}

/* First call: route, method, auth and declared size. Replies on refusal. */
static void admit(bn_api_req *r)
{
    r->route = match(r, r->url);
    if (r->route == R_UNMATCHED) {
        bn_api_problem(r, 404, NULL, "no route %s %s", r->method, r->url);
        return;
    }
    if (!method_allowed(r->route, r->method)) {
        char detail[128];
        snprintf(detail, sizeof detail, "%s is not allowed on %s", r->method,
                 bn_api_route_name(r->route));
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "https://bitnetd.dev/problems/405");
        cJSON_AddStringToObject(p, "title", "Method Not Allowed");
        cJSON_AddNumberToObject(p, "status", 405);
        cJSON_AddStringToObject(p, "detail", detail);
        cJSON_AddStringToObject(p, "field", "method");
        cJSON_AddStringToObject(p, "instance", r->url);
        char *text = cJSON_PrintUnformatted(p);
        cJSON_Delete(p);
        struct MHD_Response *resp = text ? MHD_create_response_from_buffer(
            strlen(text), text, MHD_RESPMEM_MUST_FREE) : NULL;
        if (!resp) {
            free(text);
            return;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/problem+json");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allowed_methods(r->route));
        bn_api_queue(r, 405, resp);
        return;
    }
    if (!authorize(r)) return;
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > r->api->cfg.max_body)
        bn_api_problem(r, 413, "body", "request body of %s bytes exceeds the limit of %zu", cl,
                       r->api->cfg.max_body);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    bn_api_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->api = cls;
        r->conn = conn;
        r->method = method;
        r->url = url;
        *con_cls = r;
        admit(r);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!r->replied && !r->body_too_large) {
            size_t n = *upload_data_size;
            if (r->body_len + n > r->api->cfg.max_body) {
                r->body_too_large = true;
            } else {
                char *g = realloc(r->body, r->body_len + n + 1);
                if (!g) return MHD_NO;
                memcpy(g + r->body_len, upload_data, n);
                r->body = g;
                r->body_len += n;
                r->body[r->body_len] = 0;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->replied) return MHD_YES;
    if (r->body_too_large)
        return bn_api_problem(r, 413, "body", "request body exceeds the limit of %zu bytes",
                              r->api->cfg.max_body);
    enum MHD_Result ret = dispatch(r);
    if (!r->replied) return bn_api_problem(r, 500, NULL, "handler gave no answer");
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls; (void)conn; (void)toe;
    bn_api_req *r = *con_cls;
    if (!r) return;
    free(r->body);
    free(r);
    *con_cls = NULL;
}

/* ---- start / stop -------------------------------------------------------------------- */

static int make_addr(const char *host, int port, struct sockaddr_storage *ss, bool *v6)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *v6 = false;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *v6 = true;
        return 0;
    }
    return -1;
}

static void api_free(bn_api *api)
{
    free(api->host);
    free(api->db_path);
    free(api->host_id);
    free(api->state_dir);
    free(api->output_root);
    for (int i = 0; api->model_roots && i < api->cfg.n_model_roots; i++)
        free(api->model_roots[i]);
    free(api->model_roots);
    bn_api_tokens_free(api->tokens);
    free(api);
}

static void copy_config(bn_api *api, const bn_api_config *cfg)
{
    api->cfg = *cfg;
    api->host = bn_str_dup(cfg->listen_host ? cfg->listen_host : "127.0.0.1");
    api->db_path = bn_str_dup(cfg->db_path);
    api->host_id = cfg->host_id ? bn_str_dup(cfg->host_id) : NULL;
    api->state_dir = bn_str_dup(cfg->state_dir);
    api->output_root = bn_str_dup(cfg->output_root);
    api->model_roots = calloc((size_t)cfg->n_model_roots + 1, sizeof *api->model_roots);
    for (int i = 0; i < cfg->n_model_roots; i++)
        api->model_roots[i] = bn_str_dup(cfg->model_roots[i]);
    api->cfg.listen_host = api->host;
    api->cfg.db_path = api->db_path;
    api->cfg.host_id = api->host_id;
    api->cfg.state_dir = api->state_dir;
    api->cfg.output_root = api->output_root;
    api->cfg.model_roots = (const char *const *)api->model_roots;
    if (!api->cfg.max_body) api->cfg.max_body = 1u << 20;
    if (api->cfg.threads <= 0) api->cfg.threads = 4;
    if (api->cfg.max_connections <= 0) api->cfg.max_connections = 256;
    if (api->cfg.connection_timeout_s <= 0) api->cfg.connection_timeout_s = 30;
    if (api->cfg.max_sse <= 0) api->cfg.max_sse = 64;
}

int bn_api_start(const bn_api_config *cfg, bn_api_tokens *tokens, bn_api **out, char *err,
                 size_t errlen)
{
    *out = NULL;
    bn_api *api = calloc(1, sizeof *api);
    if (!api || bn_sha256_library_init() != 0) { /* OpenSSL set up here, not in a connection thread */
        free(api);
        bn_api_tokens_free(tokens);
        snprintf(err, errlen, "api: out of memory");
        return -1;
    }
    copy_config(api, cfg);
    api->tokens = tokens;
    pthread_rwlock_init(&api->tokens_lock, NULL);
    pthread_mutex_init(&api->sse_lock, NULL);
    pthread_cond_init(&api->sse_cond, NULL);
    bn_api_store_key_init(api);
    struct sockaddr_storage ss;
    bool v6;
    if (make_addr(api->host, cfg->port, &ss, &v6)) {
        snprintf(err, errlen, "listen address \"%s\" is not a numeric IPv4/IPv6 address",
                 api->host);
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_ALLOW_SUSPEND_RESUME | (v6 ? MHD_USE_IPv6 : 0);
    api->mhd = cfg->listen_fd > 0
        ? MHD_start_daemon(flags, 0, NULL, NULL, on_request, api,
              MHD_OPTION_LISTEN_SOCKET, (MHD_socket)cfg->listen_fd,
              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)api->cfg.threads,
              MHD_OPTION_CONNECTION_LIMIT, (unsigned)api->cfg.max_connections,
              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)api->cfg.connection_timeout_s,
              MHD_OPTION_NOTIFY_COMPLETED, on_completed, api, MHD_OPTION_END)
        : MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, api,
              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)api->cfg.threads,
              MHD_OPTION_CONNECTION_LIMIT, (unsigned)api->cfg.max_connections,
              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)api->cfg.connection_timeout_s,
              MHD_OPTION_LISTEN_BACKLOG_SIZE, 256u,
              MHD_OPTION_NOTIFY_COMPLETED, on_completed, api, MHD_OPTION_END);
    if (!api->mhd) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", api->host, cfg->port,
                 strerror(errno ? errno : EADDRINUSE));
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(api->mhd, MHD_DAEMON_INFO_BIND_PORT);
    api->port = info ? info->port : cfg->port;
    if (pthread_create(&api->waker, NULL, bn_api_sse_waker, api) != 0) {
        snprintf(err, errlen, "api: cannot start the event-stream thread");
        MHD_stop_daemon(api->mhd);
        goto fail;
    }
    api->waker_started = true;
    *out = api;
    return 0;
fail:
    pthread_key_delete(api->store_key);
    api_free(api);
    return -1;
}

int bn_api_port(const bn_api *api)
{
    return api->port;
}

void bn_api_set_tokens(bn_api *api, bn_api_tokens *tokens)
{
    pthread_rwlock_wrlock(&api->tokens_lock);
    bn_api_tokens *old = api->tokens;
    api->tokens = tokens;
    pthread_rwlock_unlock(&api->tokens_lock);
    bn_api_tokens_free(old);
}

void bn_api_set_draining(bn_api *api, bool draining)
{
    atomic_store(&api->draining, draining);
}

/* Liveness probe: a real GET /healthz over the socket, answered by the pool. */
bool bn_api_alive(bn_api *api)
{
    struct sockaddr_storage ss;
    bool v6;
    const char *host = api->host;
    if (strcmp(host, "0.0.0.0") == 0) host = "127.0.0.1";
    if (strcmp(host, "::") == 0) host = "::1";
    if (make_addr(host, api->port, &ss, &v6)) return false;
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    bool ok = false;
    socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (connect(fd, (struct sockaddr *)&ss, len) == 0) {
        const char req[] = "GET /healthz HTTP/1.0\r\n\r\n";
        if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            char buf[64] = "";
            if (poll(&p, 1, 2000) == 1 && read(fd, buf, sizeof buf - 1) > 12)
                ok = strncmp(buf + 9, "200", 3) == 0;
        }
    }
    close(fd);
    return ok;
}

void bn_api_stop(bn_api *api)
{
    if (!api) return;
    atomic_store(&api->stopping, true);
    if (api->waker_started) {
        pthread_mutex_lock(&api->sse_lock);
        pthread_cond_broadcast(&api->sse_cond);
        pthread_mutex_unlock(&api->sse_lock);
        pthread_join(api->waker, NULL);
    }
    bn_api_sse_wake_all(api);
    MHD_stop_daemon(api->mhd);
    pthread_key_delete(api->store_key);
    pthread_rwlock_destroy(&api->tokens_lock);
    pthread_mutex_destroy(&api->sse_lock);
    pthread_cond_destroy(&api->sse_cond);
    api_free(api);
}
