/* bn_api.h - the REST API of bitnetd (libmicrohttpd + cJSON).
 *
 * The API only reads and writes the store: a handler runs a few short transactions on
 * its thread's own store connection and answers. It never calls engine compute; the
 * one engine function it uses is the pure option validator bn_options_from_json.
 *
 * Life cycle (driven by the daemon): bn_api_tokens_load -> bn_api_start -> (requests)
 * -> bn_api_set_draining (shutdown begins: new jobs get 503) -> bn_api_stop.
 */
#ifndef BN_API_H
#define BN_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log_sink.h"

/* ---- tokens (auth.c) ---------------------------------------------------------------- */

typedef enum { BN_SCOPE_NONE = 0, BN_SCOPE_READ, BN_SCOPE_SUBMIT, BN_SCOPE_ADMIN } bn_api_scope;

typedef struct bn_api_tokens bn_api_tokens;
/* Reads a tokens file: one "name scope sha256hex" per line, '#' comments. */
int bn_api_tokens_load(const char *path, bn_api_tokens **out, char *err, size_t errlen);
void bn_api_tokens_free(bn_api_tokens *t);
int bn_api_tokens_count(const bn_api_tokens *t);
/* Scope granted to a bearer token (constant-time comparison over every entry);
 * BN_SCOPE_NONE if unknown. name (may be NULL) receives the token's name. */
bn_api_scope bn_api_tokens_check(const bn_api_tokens *t, const char *token, char *name,
                                 size_t namelen);
const char *bn_api_scope_name(bn_api_scope s);
int bn_api_scope_parse(const char *s); /* -1 if unknown */

/* ---- server ------------------------------------------------------------------------- */

typedef struct bn_api bn_api;


typedef struct bn_api_config {
    const char *listen_host;     /* numeric IPv4/IPv6 address, e.g. "127.0.0.1" */
    int port;                    /* 0 = any free port (see bn_api_port) */
    int listen_fd;               /* > 0: an already listening socket (systemd socket
                                  * activation); listen_host/port then only describe it */
    const char *db_path;         /* store spec (SQLite path or postgresql:// URL); every API
                                  * thread opens its own handle */
    const char *host_id;         /* this daemon's lease owner prefix ("host:pid"), for /metrics */
    const char *state_dir;       /* work folders are <state_dir>/work/<job id> */
    const char *const *model_roots; /* realpath'd folders models must live in */
    int n_model_roots;
    const char *output_root;     /* realpath'd folder outputs are written under */
    size_t max_body;             /* request body limit in bytes (default 1 MiB) */
    int threads;                 /* libmicrohttpd pool size (default 4) */
    int max_connections;         /* default 256 */
    int connection_timeout_s;    /* idle/slow client timeout, default 30 */
    int max_queued;              /* queued jobs before 429 (0 = unlimited) */
    int max_sse;                 /* concurrent event streams (default 64) */
    const char *wandb_default_mode; /* "online" | "offline" | "disabled", as the daemon
                                       decided it (start_tracker); NULL: "disabled" */
    const char *wandb_project;   /* default W&B project (may be NULL) */
    const char *wandb_entity;    /* default W&B entity (may be NULL) */
    /* Health of the other subsystems for /readyz (NULL = always alive). */
    bool (*workers_alive)(void *ctx);
    void *workers_ctx;
    bn_log_fn log;               /* may be NULL */
    void *log_ctx;
    const char *const *hub_allow; /* hf:// repositories jobs may name (engine/hub); */
    int n_hub_allow;              /* none: hf:// sources are refused */
} bn_api_config;

/* Starts listening. tokens may be NULL (no auth: the caller allows that only on a
 * loopback address); the API takes ownership. */
int bn_api_start(const bn_api_config *cfg, bn_api_tokens *tokens, bn_api **out, char *err,
                 size_t errlen);
int bn_api_port(const bn_api *api);
/* Swaps the token table (SIGHUP); takes ownership of tokens. */
void bn_api_set_tokens(bn_api *api, bn_api_tokens *tokens);
/* While draining, POST /v1/jobs answers 503 and /readyz is not ready. */
void bn_api_set_draining(bn_api *api, bool draining);
/* Whether the API answers: connects to its own socket and asks GET /healthz (the
 * daemon sends the systemd watchdog only while this holds). */
bool bn_api_alive(bn_api *api);
void bn_api_stop(bn_api *api);

/* The dashboard page served at "/" (api/dashboard.c). */
const char *bn_api_dashboard_page(void);
/* The OpenAPI 3.1 document served at /v1/openapi.json (api/openapi.c). */
const char *bn_api_openapi_json(void);

#endif
