/* daemon.h - configuration and logging of bitnetd (internal to daemon/).
 *
 * Configuration comes from four layers, each overriding the one before: built-in
 * defaults, the config file (`key = value`, `[section]` headers prefix keys with
 * "section."), BITNETD_* environment variables (BITNETD_ + key upper-cased with '.'
 * as '_', e.g. BITNETD_API_MAX_BODY), then command-line flags.
 */
#ifndef BN_DAEMON_H
#define BN_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define BN_DAEMON_MAX_ROOTS 16

typedef struct bn_daemon_config {
    char config_file[4096];
    char listen[256];           /* host:port; port 0 = any free port */
    char state_dir[4096];
    char store[4096];           /* "" = sqlite:<state_dir>/bitnetd.db; or postgresql://... */
    int n_model_roots;
    char model_roots[BN_DAEMON_MAX_ROOTS][4096];
    char output_root[4096];
    char data_dir[4096];
    char tokens_file[4096];
    int workers;
    int threads;                /* engine threads per job; 0 = cores / workers */
    char gpus[256];             /* "" / "all" | "none" | "0,1": GPUs that run one cuda job each */
    char log_format[16];        /* auto | text | json | journal */
    char log_level[16];         /* error | warn | info | debug */
    /* [api] */
    long max_body;
    int http_threads, max_connections, connection_timeout, max_queued, max_sse;
    /* [jobs] */
    int max_attempts, lease_seconds, grace_seconds;
    /* [wandb] */
    char wandb_api_key_file[4096];
    char wandb_project[256];
    char wandb_entity[256];
    /* [wandb] delivery (tracker) */
    char wandb_mode[16];        /* default mode; WANDB_MODE wins when set */
    char wandb_base_url[1024];  /* WANDB_BASE_URL wins when set */
    int wandb_heartbeat_seconds, wandb_timeout_seconds;
    int wandb_backoff_base_ms, wandb_backoff_cap_ms, wandb_min_interval_ms;
    /* [hub] hf:// model sources (engine/hub) */
    char hub_allow[4096];       /* comma-separated ORG/NAME, ORG/<star>, <star>; empty = none */
    long hub_max_bytes;         /* 0 = no limit */
    char hub_token_file[4096];
    char hub_cache_dir[4096];
    char hub_endpoint[1024];
    int hub_offline;            /* -1: HF_HUB_OFFLINE decides */
} bn_daemon_config;

void bn_daemon_config_default(bn_daemon_config *c);
/* Applies one key (file/env/flag spelling "section.key" or "key"). */
int bn_daemon_config_set(bn_daemon_config *c, const char *key, const char *value, char *err,
                         size_t errlen);
int bn_daemon_config_file(bn_daemon_config *c, const char *path, char *err, size_t errlen);
void bn_daemon_config_env(bn_daemon_config *c, char *err, size_t errlen, int *bad);
/* Parses argv (flags); returns 0, 1 for --help/--version printed, -1 on error. */
int bn_daemon_config_args(bn_daemon_config *c, int argc, char **argv, char *err,
                          size_t errlen);
void bn_daemon_usage(FILE *f);
/* The gpus option as CUDA ordinals: "" or "all" = every visible GPU (none on a build
 * without CUDA), "none" = none, else a comma-separated list of distinct visible ordinals.
 * cuda_built / visible: what this build and host have (backend/device.h). Returns the
 * count written to out (at most cap), or -1 with a sentence in err. */
int bn_daemon_gpus(const char *spec, bool cuda_built, int visible, int *out, int cap, char *err,
                   size_t errlen);

/* ---- logging ---- */

enum { BN_LOG_ERR = 3, BN_LOG_WARNING = 4, BN_LOG_INFO = 6, BN_LOG_DEBUG = 7 };

typedef struct bn_logger {
    pthread_mutex_t lock;
    int level;                  /* messages above this are dropped */
    enum { BN_LOGFMT_TEXT, BN_LOGFMT_JSON, BN_LOGFMT_JOURNAL } format;
    FILE *out;
} bn_logger;

int bn_logger_init(bn_logger *l, const char *format, const char *level, char *err,
                   size_t errlen);
int bn_log_level_parse(const char *s); /* -1 if unknown */
void bn_log(bn_logger *l, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Callback shape used by api/ and workers/ (ctx = the logger). */
void bn_log_cb(void *ctx, int level, const char *msg);
void bn_logger_destroy(bn_logger *l);

#endif
