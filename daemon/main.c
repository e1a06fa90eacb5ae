/* main.c - bitnetd: start, serve, stop.
 *
 * Start-up: configuration (defaults < file < BITNETD_* < flags), folders, tokens (a
 * non-loopback address without a tokens file is refused), the store (migrations, then
 * recovery of jobs a crash left running), the worker pool, the W&B tracker, the API. The real listening
 * URL is printed and written to <state_dir>/bitnetd.url, then systemd hears READY=1.
 *
 * The main thread then only waits for signals (blocked in every thread, taken here with
 * sigtimedwait): SIGHUP reloads the tokens file and the log level; SIGTERM/SIGINT drain
 * (new jobs get 503, running stages stop at a checkpoint and their jobs go back to
 * queued) and stop within the grace period. Between signals it sends WATCHDOG=1, but
 * only while the API answers its own /healthz, the workers heartbeat and the store
 * takes a write.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "backend/device.h"
#include "base/blas.h"
#include "base/fsutil.h"
#include "bn_api.h"
#include "bn_store.h"
#include "bn_worker.h"
#include "daemon.h"
#include "hub/hub.h"
#include "tracker.h"
#include "wandb.h"

typedef struct daemon_state {
    bn_daemon_config cfg;
    bn_logger log;
    char work_base[PATH_MAX + 16]; /* work folders live in <work_base>/work/<job id> */
    char host_id[300];          /* lease owner prefix "hostname:pid" */
    char db_path[PATH_MAX + 32]; /* the store spec: a SQLite path or a PostgreSQL URL */
    char url_path[PATH_MAX + 32];
    char host[256];
    int port;
    int listen_fd;              /* > 0 when systemd passed the listening socket */
    char *roots[BN_DAEMON_MAX_ROOTS];
    char output_root[PATH_MAX];
    bn_store *st;
    bn_workers *workers;
    bn_api *api;
    bn_tracker *tracker;      /* W&B delivery (tracker.h) */
    char wandb_mode[16];      /* default tracking mode for new jobs */
    char url[400];            /* the URL served, for STATUS= */
    char status[512];         /* the last STATUS= sent (sent again only when it changes) */
    bn_hub_config hub;        /* hf:// sources: the [hub] keys, read once at start */
    char *hub_allow[64];
    char hub_token[1024];
} daemon_state;

/* "host:port", "[v6]:port" or ":port". */
static int parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (!e || e[1] != ':') return -1;
        snprintf(host, hostlen, "%.*s", (int)(e - s - 1), s + 1);
        colon = e + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return -1;
        snprintf(host, hostlen, "%.*s", (int)(colon - s), s);
        if (!*host) snprintf(host, hostlen, "127.0.0.1");
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535) return -1;
    *port = (int)p;
    return 0;
}

static bool is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0;
}

/* systemd socket activation: one inherited listening TCP socket replaces "listen";
 * its real address decides the loopback check and the announced URL. */
static int inherited_socket(daemon_state *d)
{
    int n = sd_listen_fds(1);
    if (n <= 0) return 0;
    int fd = SD_LISTEN_FDS_START;
    if (n > 1 || sd_is_socket_inet(fd, 0, SOCK_STREAM, 1, 0) <= 0) {
        bn_log(&d->log, BN_LOG_ERR, "socket activation: expected one listening TCP socket, "
               "got %d file descriptors", n);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        bn_log(&d->log, BN_LOG_ERR, "socket activation: getsockname: %s", strerror(errno));
        return -1;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, d->host, sizeof d->host);
        d->port = ntohs(a->sin6_port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, d->host, sizeof d->host);
        d->port = ntohs(a->sin_port);
    }
    d->listen_fd = fd;
    bn_log(&d->log, BN_LOG_INFO, "socket activation: serving the inherited socket %s:%d "
           "(the listen setting is ignored)", d->host, d->port);
    return 0;
}

static int load_config(daemon_state *d, int argc, char **argv)
{
    bn_daemon_config *c = &d->cfg;
    char err[1024];
    bn_daemon_config_default(c);
    const char *file = getenv("BITNETD_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) file = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0) file = argv[i] + 9;
    }
    if (file) {
        snprintf(c->config_file, sizeof c->config_file, "%s", file);
        if (bn_daemon_config_file(c, file, err, sizeof err)) {
            fprintf(stderr, "bitnetd: %s\n", err);
            return -1;
        }
    }
    int bad;
    bn_daemon_config_env(c, err, sizeof err, &bad);
    if (bad) {
        fprintf(stderr, "bitnetd: %s\n", err);
        return -1;
    }
    int rc = bn_daemon_config_args(c, argc, argv, err, sizeof err);
    if (rc) {
        if (rc < 0) fprintf(stderr, "bitnetd: %s (see --help)\n", err);
        return rc < 0 ? -1 : 1;
    }
    return 0;
}

/* Creates and canonicalizes the folders; checks the listen address and tokens. */
static int prepare(daemon_state *d, bn_api_tokens **tokens)
{
    bn_daemon_config *c = &d->cfg;
    bn_logger *l = &d->log;
    if (parse_listen(c->listen, d->host, sizeof d->host, &d->port)) {
        bn_log(l, BN_LOG_ERR, "listen: \"%s\" is not ADDR:PORT", c->listen);
        return -1;
    }
    if (inherited_socket(d)) return -1;
    char real[PATH_MAX], work[PATH_MAX + 8];
    if (bn_fs_mkdir_p(c->state_dir, NULL) || !realpath(c->state_dir, real) ||
        strlen(real) + 16 >= sizeof c->state_dir) {
        bn_log(l, BN_LOG_ERR, "state_dir %s: %s", c->state_dir, strerror(errno));
        return -1;
    }
    memcpy(c->state_dir, real, strlen(real) + 1);
    snprintf(work, sizeof work, "%s/work", real);
    bn_fs_mkdir_p(work, NULL);
    if (!c->store[0]) {
        snprintf(d->db_path, sizeof d->db_path, "%s/bitnetd.db", real);
    } else if (strncmp(c->store, "sqlite:", 7) == 0 || bn_store_spec_is_pg(c->store)) {
        snprintf(d->db_path, sizeof d->db_path, "%s", c->store);
    } else {
        /* the value may be a connection string with a password: never echo it */
        bn_log(l, BN_LOG_ERR, "store: expected sqlite:PATH or postgresql://...");
        return -1;
    }
    snprintf(d->url_path, sizeof d->url_path, "%s/bitnetd.url", real);
    if (!c->output_root[0]) snprintf(c->output_root, sizeof c->output_root, "%.4000s/outputs", real);
    if (bn_fs_mkdir_p(c->output_root, NULL) || !realpath(c->output_root, d->output_root)) {
        bn_log(l, BN_LOG_ERR, "output_root %s: %s", c->output_root, strerror(errno));
        return -1;
    }
    /* Several hosts on one PostgreSQL queue: a job's checkpoints must be where the host
     * that takes it over can read them, so work folders move under the shared output
     * root (<output_root>/.bitnetd/work/<job id>). */
    if (bn_store_spec_is_pg(d->db_path)) {
        snprintf(d->work_base, sizeof d->work_base, "%.4000s/.bitnetd", d->output_root);
        snprintf(work, sizeof work, "%.4000s/work", d->work_base);
        if (bn_fs_mkdir_p(work, NULL)) {
            bn_log(l, BN_LOG_ERR, "work folder %s: %s", work, strerror(errno));
            return -1;
        }
    } else {
        snprintf(d->work_base, sizeof d->work_base, "%s", c->state_dir);
    }
    for (int i = 0; i < c->n_model_roots; i++) {
        if (!realpath(c->model_roots[i], real)) {
            bn_log(l, BN_LOG_ERR, "model_root %s: %s", c->model_roots[i], strerror(errno));
            return -1;
        }
        d->roots[i] = strdup(real);
    }
    if (c->n_model_roots == 0)
        bn_log(l, BN_LOG_WARNING, "no model_root configured: every submission will be refused");
    *tokens = NULL;
    if (c->tokens_file[0]) {
        char err[1024];
        if (bn_api_tokens_load(c->tokens_file, tokens, err, sizeof err)) {
            bn_log(l, BN_LOG_ERR, "%s", err);
            return -1;
        }
        bn_log(l, BN_LOG_INFO, "auth: %d tokens from %s", bn_api_tokens_count(*tokens),
               c->tokens_file);
    } else if (!is_loopback(d->host)) {
        bn_log(l, BN_LOG_ERR, "refusing to listen on non-loopback address %s without a "
               "tokens file (set tokens_file)", d->host);
        return -1;
    } else {
        bn_log(l, BN_LOG_WARNING, "auth disabled: no tokens file (loopback only)");
    }
    return 0;
}

/* The [hub] keys as a bn_hub_config: the allow-list split at commas, the token read
 * from its file (never logged). */
static int setup_hub(daemon_state *d)
{
    bn_daemon_config *c = &d->cfg;
    bn_hub_config *h = &d->hub;
    h->offline = c->hub_offline;
    h->max_bytes = (uint64_t)c->hub_max_bytes;
    h->endpoint = c->hub_endpoint[0] ? c->hub_endpoint : NULL;
    h->cache_dir = c->hub_cache_dir[0] ? c->hub_cache_dir : NULL;
    h->allow = (const char *const *)d->hub_allow;
    for (char *save = NULL, *t = strtok_r(c->hub_allow, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        if (h->n_allow >= 64) {
            bn_log(&d->log, BN_LOG_ERR, "hub.allow: at most 64 entries");
            return -1;
        }
        d->hub_allow[h->n_allow++] = t; /* points into cfg, which lives as long as d */
    }
    if (c->hub_token_file[0]) {
        FILE *f = fopen(c->hub_token_file, "r");
        if (!f || !fgets(d->hub_token, sizeof d->hub_token, f)) {
            bn_log(&d->log, BN_LOG_ERR, "hub.token_file %s: %s", c->hub_token_file,
                   f ? "empty" : strerror(errno));
            if (f) fclose(f);
            return -1;
        }
        fclose(f);
        d->hub_token[strcspn(d->hub_token, "\r\n")] = 0;
        h->token = d->hub_token;
    }
    bn_log(&d->log, BN_LOG_INFO, "hub: %d allowed repository patterns%s%s", h->n_allow,
           h->max_bytes ? ", size limit set" : "", h->token ? ", token from hub.token_file" : "");
    return 0;
}

static int open_store(daemon_state *d)
{
    char err[1024];
    if (bn_store_open(d->db_path, &d->st, err, sizeof err)) {
        bn_log(&d->log, BN_LOG_ERR, "%s", err);
        return -1;
    }
    int requeued, failed;
    if (bn_store_recover(d->st, d->cfg.max_attempts, &requeued, &failed)) {
        bn_log(&d->log, BN_LOG_ERR, "recovery: %s", bn_store_errmsg(d->st));
        return -1;
    }
    if (requeued || failed)
        bn_log(&d->log, BN_LOG_WARNING, "recovered interrupted jobs: %d requeued, %d failed "
               "after %d attempts", requeued, failed, d->cfg.max_attempts);
    return 0;
}

static int start_workers(daemon_state *d)
{
    char hostname[256] = "localhost", err[512];
    gethostname(hostname, sizeof hostname - 1);
    snprintf(d->host_id, sizeof d->host_id, "%s:%d", hostname, (int)getpid());
    const char *owner = d->host_id;
    int gpus[64];
    int n_gpus = bn_daemon_gpus(d->cfg.gpus, bn_device_cuda_built(), bn_device_cuda_count(), gpus,
                                64, err, sizeof err);
    if (n_gpus < 0) {
        bn_log(&d->log, BN_LOG_ERR, "%s", err);
        return -1;
    }
    if (n_gpus > 0 && d->cfg.workers > 0) {
        char list[256] = "";
        for (int i = 0, k = 0; i < n_gpus && k < (int)sizeof list - 8; i++)
            k += snprintf(list + k, sizeof list - (size_t)k, "%s%d", i ? "," : "", gpus[i]);
        bn_log(&d->log, BN_LOG_INFO, "GPU jobs: one at a time on each of GPU %s, beside %d CPU "
               "worker(s)", list, d->cfg.workers);
    }
    bn_workers_config wc = {
        .db_path = d->db_path, .state_dir = d->work_base,
        .data_dir = d->cfg.data_dir[0] ? d->cfg.data_dir : NULL, .owner_prefix = owner,
        .n_workers = d->cfg.workers, .threads_per_job = d->cfg.threads,
        .gpus = gpus, .n_gpus = n_gpus,
        .lease_ms = (int64_t)d->cfg.lease_seconds * 1000, .max_attempts = d->cfg.max_attempts,
        .progress_per_s = 4,
        .log = bn_log_cb, .log_ctx = &d->log, .hub = &d->hub,
    };
    if (bn_workers_start(&wc, &d->workers, err, sizeof err)) {
        bn_log(&d->log, BN_LOG_ERR, "%s", err);
        return -1;
    }
    return 0;
}

/* ---- W&B tracker (owner: tracker) ------------------------------------------------------
 * Default mode: WANDB_MODE, else wandb.mode, else online when a key exists, else disabled.
 * Key: WANDB_API_KEY, else wandb.api_key_file. Endpoint and names: WANDB_BASE_URL,
 * WANDB_ENTITY, WANDB_PROJECT win over the [wandb] settings. The key is never logged. */
static int start_tracker(daemon_state *d)
{
    bn_daemon_config *c = &d->cfg;
    bool invalid;
    const char *mode = bn_tracker_default_mode(&invalid);
    if (invalid) {
        bn_log(&d->log, BN_LOG_ERR, "WANDB_MODE: expected online, offline or disabled");
        return -1;
    }
    if (!mode && c->wandb_mode[0]) {
        int m = bn_wandb_mode_parse(c->wandb_mode);
        if (m < 0) {
            bn_log(&d->log, BN_LOG_ERR, "wandb.mode: expected online, offline or disabled");
            return -1;
        }
        mode = bn_wandb_mode_name((bn_wandb_mode)m);
    }
    char err[512] = "", *key = NULL;
    const char *env_key = getenv("WANDB_API_KEY");
    if (env_key && *env_key) key = strdup(env_key);
    else if (c->wandb_api_key_file[0]) key = bn_tracker_read_key_file(c->wandb_api_key_file, err, sizeof err);
    if (err[0]) bn_log(&d->log, BN_LOG_WARNING, "%s: online W&B tracking will fail", err);
    snprintf(d->wandb_mode, sizeof d->wandb_mode, "%s", mode ? mode : key ? "online" : "disabled");
    bn_tracker_config tc = {
        .db_path = d->db_path, .api_key = key,
        .default_entity = c->wandb_entity[0] ? c->wandb_entity : NULL,
        .default_project = c->wandb_project[0] ? c->wandb_project : NULL,
        .heartbeat_ms = (int64_t)c->wandb_heartbeat_seconds * 1000,
        .timeout_ms = (long)c->wandb_timeout_seconds * 1000,
        .backoff_base_ms = c->wandb_backoff_base_ms, .backoff_cap_ms = c->wandb_backoff_cap_ms,
        .min_interval_ms = c->wandb_min_interval_ms, .log = bn_log_cb, .log_ctx = &d->log,
    };
    bn_tracker_config_from_env(&tc); /* WANDB_BASE_URL / ENTITY / PROJECT / APP_URL */
    if (!getenv("WANDB_BASE_URL") && c->wandb_base_url[0]) tc.base_url = c->wandb_base_url;
    int rc = bn_tracker_open(&tc, &d->tracker, err, sizeof err);
    if (key) memset(key, 0, strlen(key));
    free(key);
    if (rc || bn_tracker_start(d->tracker)) {
        bn_log(&d->log, BN_LOG_ERR, "W&B tracker: %s", rc ? err : "cannot start its thread");
        return -1;
    }
    bn_log(&d->log, BN_LOG_INFO, "W&B tracker: default mode %s, endpoint %s", d->wandb_mode,
           tc.base_url ? tc.base_url : "https://api.wandb.ai");
    return 0;
}

static int start_api(daemon_state *d, bn_api_tokens *tokens)
{
    bn_daemon_config *c = &d->cfg;
    bn_api_config ac = {
        .listen_host = d->host, .port = d->port, .listen_fd = d->listen_fd,
        .db_path = d->db_path, .host_id = d->host_id,
        .state_dir = d->work_base, .model_roots = (const char *const *)d->roots,
        .n_model_roots = c->n_model_roots, .output_root = d->output_root,
        .max_body = (size_t)c->max_body, .threads = c->http_threads,
        .max_connections = c->max_connections, .connection_timeout_s = c->connection_timeout,
        .max_queued = c->max_queued, .max_sse = c->max_sse,
        .wandb_default_mode = d->wandb_mode[0] ? d->wandb_mode : NULL,
        .wandb_project = c->wandb_project[0] ? c->wandb_project : NULL,
        .wandb_entity = c->wandb_entity[0] ? c->wandb_entity : NULL,
        .workers_alive = bn_workers_alive, .workers_ctx = d->workers,
        .log = bn_log_cb, .log_ctx = &d->log,
        .hub_allow = d->hub.allow, .n_hub_allow = d->hub.n_allow,
    };
    char err[512];
    if (bn_api_start(&ac, tokens, &d->api, err, sizeof err)) {
        bn_log(&d->log, BN_LOG_ERR, "%s", err);
        return -1;
    }
    return 0;
}

static void notify_status(daemon_state *d);

/* Prints the URL and writes <state_dir>/bitnetd.url atomically. */
static void announce(daemon_state *d)
{
    char *url = d->url;
    bool v6 = strchr(d->host, ':') != NULL;
    snprintf(url, sizeof d->url, "http://%s%s%s:%d", v6 ? "[" : "", d->host, v6 ? "]" : "",
             bn_api_port(d->api));
    printf("bitnetd listening on %s\n", url);
    fflush(stdout);
    bn_log(&d->log, BN_LOG_INFO, "listening on %s (state %s, %d workers)", url,
           d->cfg.state_dir, d->cfg.workers);
    char tmp[PATH_MAX + 48];
    snprintf(tmp, sizeof tmp, "%s.tmp", d->url_path);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "%s\n", url);
        fflush(f);
        fsync(fileno(f));
        fclose(f);
        rename(tmp, d->url_path);
    }
    sd_notify(0, "READY=1");
    notify_status(d);
}

/* SIGHUP: new tokens file and log level from the config file (and environment). */
static void reload(daemon_state *d)
{
    bn_daemon_config fresh;
    bn_daemon_config_default(&fresh);
    char err[1024];
    if (d->cfg.config_file[0] && bn_daemon_config_file(&fresh, d->cfg.config_file, err,
                                                       sizeof err)) {
        bn_log(&d->log, BN_LOG_ERR, "reload: %s; keeping the old settings", err);
        return;
    }
    const char *lv = getenv("BITNETD_LOG_LEVEL");
    int level = bn_log_level_parse(lv ? lv : d->cfg.config_file[0] ? fresh.log_level
                                                                   : d->cfg.log_level);
    if (level > 0) {
        pthread_mutex_lock(&d->log.lock);
        d->log.level = level;
        pthread_mutex_unlock(&d->log.lock);
    }
    if (d->cfg.tokens_file[0]) {
        bn_api_tokens *t;
        if (bn_api_tokens_load(d->cfg.tokens_file, &t, err, sizeof err)) {
            bn_log(&d->log, BN_LOG_ERR, "reload: %s; keeping the old tokens", err);
            return;
        }
        int n = bn_api_tokens_count(t);
        bn_api_set_tokens(d->api, t);
        bn_log(&d->log, BN_LOG_INFO, "reload: %d tokens", n);
    }
}

static bool healthy(daemon_state *d)
{
    return bn_workers_alive(d->workers) && bn_store_ping(d->st) == BN_STORE_OK &&
           bn_api_alive(d->api) && bn_tracker_alive(d->tracker);
}

/* Set by on_async_signal, taken by serve(). The handler may run on a thread that was
 * created before main() blocked the signals (OpenBLAS starts its pool in a library
 * constructor), so this is a lock-free atomic rather than a plain sig_atomic_t. */
static atomic_int async_signal;
static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal handler needs a lock-free atomic");

static void on_async_signal(int sig)
{
    atomic_store(&async_signal, sig);
}

/* STATUS= for systemctl status: the URL, queue depth and running jobs, sent when it
 * changes. */
static void notify_status(daemon_state *d)
{
    int64_t n[BN_JOB_STATUS_COUNT] = {0};
    if (bn_store_job_counts(d->st, n) != BN_STORE_OK) return;
    char status[sizeof d->status];
    snprintf(status, sizeof status, "STATUS=serving on %s; %lld queued, %lld running", d->url,
             (long long)n[BN_JOB_QUEUED], (long long)n[BN_JOB_RUNNING]);
    if (strcmp(status, d->status) == 0) return;
    memcpy(d->status, status, sizeof status);
    sd_notify(0, status);
}

/* Waits for signals; returns when asked to stop. */
static void serve(daemon_state *d, const sigset_t *sigs)
{
    uint64_t wd_usec = 0;
    bool watchdog = sd_watchdog_enabled(0, &wd_usec) > 0;
    long tick_ms = watchdog ? (long)(wd_usec / 2000) : 1000;
    if (tick_ms < 100) tick_ms = 100;
    if (tick_ms > 1000) tick_ms = 1000;
    for (;;) {
        struct timespec ts = {.tv_sec = tick_ms / 1000, .tv_nsec = (tick_ms % 1000) * 1000000L};
        int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig < 0) {
            int pending = atomic_exchange(&async_signal, 0);
            if (pending) sig = pending;
        }
        if (sig == SIGHUP) {
            reload(d);
        } else if (sig == SIGTERM || sig == SIGINT) {
            bn_log(&d->log, BN_LOG_INFO, "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            return;
        }
        if (watchdog && healthy(d)) sd_notify(0, "WATCHDOG=1");
        notify_status(d);
    }
}

static void shutdown_all(daemon_state *d)
{
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
    if (d->api) bn_api_set_draining(d->api, true);
    int grace = d->cfg.grace_seconds * 1000;
    int stuck = d->workers ? bn_workers_stop(d->workers, grace) : 0;
    if (stuck) bn_log(&d->log, BN_LOG_WARNING, "%d workers did not stop within %d s", stuck,
                      d->cfg.grace_seconds);
    bn_api_stop(d->api);
    bn_tracker_close(d->tracker); /* stops its thread; undelivered rows stay in the outbox */
    bn_store_close(d->st);
    unlink(d->url_path);
    for (int i = 0; i < BN_DAEMON_MAX_ROOTS; i++) free(d->roots[i]);
    bn_log(&d->log, BN_LOG_INFO, "stopped");
    if (stuck) _exit(0); /* detached threads still hold resources */
}

int main(int argc, char **argv)
{
    /* first: may re-exec so that OpenBLAS starts with the right kernels (engine/base/blas.h) */
    bn_blas_init(argc, argv, 1);
    static daemon_state d; /* large; lives for the whole process */
    int rc = load_config(&d, argc, argv);
    if (rc) return rc < 0 ? 2 : 0;
    char err[512];
    if (bn_logger_init(&d.log, d.cfg.log_format, d.cfg.log_level, err, sizeof err)) {
        fprintf(stderr, "bitnetd: %s\n", err);
        return 2;
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by every thread */
    /* Should one of these still reach a thread that has it unblocked (a sanitizer's or a
     * library's own thread), the handler records it for serve() instead of the default
     * action killing the daemon mid-write. */
    struct sigaction sa = {.sa_handler = on_async_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    bn_api_tokens *tokens = NULL;
    bool started = prepare(&d, &tokens) == 0 && setup_hub(&d) == 0 && open_store(&d) == 0 &&
                   start_workers(&d) == 0 &&
                   start_tracker(&d) == 0;
    if (!started) bn_api_tokens_free(tokens); /* start_api owns them from here on */
    if (!started || start_api(&d, tokens)) {
        sd_notify(0, "STATUS=start-up failed");
        shutdown_all(&d);
        bn_logger_destroy(&d.log);
        return 1;
    }
    announce(&d);
    serve(&d, &sigs);
    shutdown_all(&d);
    bn_logger_destroy(&d.log);
    return 0;
}
