/* config.c - bitnetd configuration: defaults, config file, BITNETD_* environment, flags.
 *
 * One table lists every key with its type and place in bn_daemon_config; the file
 * parser, the environment scan and the flag parser all go through
 * bn_daemon_config_set, so every spelling of an option is validated the same way and
 * errors name the key (and the file line).
 */
#include "daemon.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_STR, T_INT, T_LONG, T_ROOTS } kind;

typedef struct key_def {
    const char *key;   /* "section.key" or "key" */
    kind type;
    size_t off;
    size_t size;       /* string capacity */
    long lo, hi;       /* integer range */
    const char *help;
} key_def;

#define S(k, f, h) {k, T_STR, offsetof(bn_daemon_config, f), sizeof(((bn_daemon_config *)0)->f), 0, 0, h}
#define I(k, f, lo, hi, h) {k, T_INT, offsetof(bn_daemon_config, f), 0, lo, hi, h}

static const key_def keys[] = {
    S("listen", listen, "ADDR:PORT to listen on (default 127.0.0.1:8080; port 0 = any)"),
    S("state_dir", state_dir, "database, work folders, bitnetd.url (default ./bitnetd-state)"),
    S("store", store, "sqlite:PATH (default <state_dir>/bitnetd.db) or postgresql://... (hosts share it)"),
    {"model_root", T_ROOTS, 0, 0, 0, 0, "folder models must live in (repeatable)"},
    S("output_root", output_root, "folder outputs are written under"),
    S("data_dir", data_dir, "calibration datasets folder"),
    S("tokens_file", tokens_file, "bearer tokens file (name scope sha256hex per line)"),
    I("workers", workers, 0, 64, "job worker threads (default 1; 0 = API only)"),
    I("threads", threads, 0, 1024, "engine threads per job (0 = cores / workers)"),
    S("gpus", gpus, "GPUs that each run one device \"cuda\" job beside the CPU workers: all (default: every visible GPU) | none | 0,1,..."),
    S("log_format", log_format, "auto | text | json | journal (auto: journal under systemd)"),
    S("log_level", log_level, "error | warn | info | debug"),
    {"api.max_body", T_LONG, offsetof(bn_daemon_config, max_body), 0, 1024, 1L << 30,
     "request body limit in bytes (default 1048576)"},
    I("api.threads", http_threads, 1, 256, "HTTP thread pool size (default 4)"),
    I("api.max_connections", max_connections, 1, 100000, "connection limit (default 256)"),
    I("api.connection_timeout", connection_timeout, 1, 3600, "idle client timeout, s (30)"),
    I("api.max_queued", max_queued, 0, 10000000, "queued jobs before 429 (0 = no limit)"),
    I("api.max_sse", max_sse, 1, 10000, "concurrent event streams (default 64)"),
    I("jobs.max_attempts", max_attempts, 1, 100, "restarts before a job fails (default 3)"),
    I("jobs.lease_seconds", lease_seconds, 2, 86400, "job lease length (default 60)"),
    I("jobs.grace_seconds", grace_seconds, 0, 3600, "shutdown grace period (default 30)"),
    S("wandb.api_key_file", wandb_api_key_file, "file holding the W&B API key"),
    S("wandb.project", wandb_project, "default W&B project"),
    S("wandb.entity", wandb_entity, "default W&B entity"),
    S("wandb.mode", wandb_mode, "default tracking mode: online | offline | disabled (WANDB_MODE wins)"),
    S("wandb.base_url", wandb_base_url, "W&B API root (WANDB_BASE_URL wins; default https://api.wandb.ai)"),
    I("wandb.heartbeat_seconds", wandb_heartbeat_seconds, 1, 3600, "idle heartbeat of a running job's run (30)"),
    I("wandb.timeout_seconds", wandb_timeout_seconds, 1, 3600, "per W&B request (60)"),
    I("wandb.backoff_base_ms", wandb_backoff_base_ms, 1, 600000, "first retry delay (2000; doubles, +0-25% jitter)"),
    I("wandb.backoff_cap_ms", wandb_backoff_cap_ms, 1, 3600000, "longest retry delay (60000)"),
    I("wandb.min_interval_ms", wandb_min_interval_ms, 1, 600000, "between two requests of a run (1000)"),
    S("hub.allow", hub_allow, "hf:// repositories jobs may name: ORG/NAME, ORG/*, * (comma-separated; empty = none)"),
    {"hub.max_bytes", T_LONG, offsetof(bn_daemon_config, hub_max_bytes), 0, 0, LONG_MAX,
     "largest hf:// model (its needed files) in bytes (0 = no limit)"},
    S("hub.token_file", hub_token_file, "file holding the Hugging Face token (else HF_TOKEN)"),
    S("hub.cache_dir", hub_cache_dir, "Hub cache (default HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)"),
    S("hub.endpoint", hub_endpoint, "Hub URL (default HF_ENDPOINT or https://huggingface.co)"),
    I("hub.offline", hub_offline, -1, 1, "1 = cache only, 0 = online, -1 = as HF_HUB_OFFLINE (default)"),
};
#define N_KEYS (sizeof keys / sizeof keys[0])

void bn_daemon_config_default(bn_daemon_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:8080");
    snprintf(c->state_dir, sizeof c->state_dir, "bitnetd-state");
    snprintf(c->log_format, sizeof c->log_format, "auto");
    snprintf(c->log_level, sizeof c->log_level, "info");
    c->workers = 1;
    c->max_body = 1L << 20;
    c->http_threads = 4;
    c->max_connections = 256;
    c->connection_timeout = 30;
    c->max_sse = 64;
    c->max_attempts = 3;
    c->lease_seconds = 60;
    c->grace_seconds = 30;
    c->hub_offline = -1;
}

static const key_def *find_key(const char *key)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].key, key) == 0) return &keys[i];
    /* accept the bare name of a sectioned key ("max_body" for "api.max_body") */
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *dot = strchr(keys[i].key, '.');
        if (dot && strcmp(dot + 1, key) == 0) return &keys[i];
    }
    return NULL;
}

int bn_daemon_config_set(bn_daemon_config *c, const char *key, const char *value, char *err,
                         size_t errlen)
{
    const key_def *k = find_key(key);
    if (!k) {
        snprintf(err, errlen, "unknown option \"%s\"", key);
        return -1;
    }
    char *base = (char *)c;
    if (k->type == T_STR) {
        if (strlen(value) >= k->size) {
            snprintf(err, errlen, "%s: value longer than %zu characters", key, k->size - 1);
            return -1;
        }
        snprintf(base + k->off, k->size, "%s", value);
        return 0;
    }
    if (k->type == T_ROOTS) {
        if (c->n_model_roots >= BN_DAEMON_MAX_ROOTS) {
            snprintf(err, errlen, "model_root: at most %d roots", BN_DAEMON_MAX_ROOTS);
            return -1;
        }
        if (!*value || strlen(value) >= sizeof c->model_roots[0]) {
            snprintf(err, errlen, "model_root: empty or too long");
            return -1;
        }
        snprintf(c->model_roots[c->n_model_roots++], sizeof c->model_roots[0], "%s", value);
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < k->lo || v > k->hi) {
        snprintf(err, errlen, "%s: \"%s\" is not an integer in %ld..%ld", key, value, k->lo,
                 k->hi);
        return -1;
    }
    if (k->type == T_INT) *(int *)(base + k->off) = (int)v;
    else *(long *)(base + k->off) = v;
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

int bn_daemon_config_file(bn_daemon_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[2048], section[64] = "", why[512];
    int lineno = 0, rc = 0;
    bool file_roots = false;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || e[1] || e - s - 1 >= (long)sizeof section) {
                snprintf(err, errlen, "%s:%d: bad section header", path, lineno);
                rc = -1;
                break;
            }
            *e = 0;
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected key = value", path, lineno);
            rc = -1;
            break;
        }
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1), full[192];
        size_t vl = strlen(v);
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
            v[vl - 1] = 0;
            v++;
        }
        snprintf(full, sizeof full, "%s%s%s", section, *section ? "." : "", k);
        if (strcmp(k, "model_root") == 0 && !file_roots) {
            c->n_model_roots = 0; /* the file's list replaces the defaults */
            file_roots = true;
        }
        if (bn_daemon_config_set(c, full, v, why, sizeof why)) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

void bn_daemon_config_env(bn_daemon_config *c, char *err, size_t errlen, int *bad)
{
    *bad = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        char name[128] = "BITNETD_";
        size_t n = strlen(name);
        for (const char *p = keys[i].key; *p && n < sizeof name - 1; p++)
            name[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
        name[n] = 0;
        const char *v = getenv(name);
        if (!v) continue;
        if (keys[i].type == T_ROOTS) { /* colon-separated list */
            c->n_model_roots = 0;
            char buf[4096];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save, *tok = strtok_r(buf, ":", &save); tok;
                 tok = strtok_r(NULL, ":", &save))
                if (bn_daemon_config_set(c, "model_root", tok, err, errlen)) *bad = 1;
            continue;
        }
        char why[512];
        if (bn_daemon_config_set(c, keys[i].key, v, why, sizeof why)) {
            snprintf(err, errlen, "%s: %s", name, why);
            *bad = 1;
        }
    }
}

int bn_daemon_gpus(const char *spec, bool cuda_built, int visible, int *out, int cap, char *err,
                   size_t errlen)
{
    if (!spec[0] || strcmp(spec, "all") == 0) {
        int n = cuda_built ? visible : 0;
        if (n > cap) n = cap;
        for (int i = 0; i < n; i++) out[i] = i;
        return n;
    }
    if (strcmp(spec, "none") == 0) return 0;
    if (!cuda_built) {
        snprintf(err, errlen, "gpus: \"%s\": this bitnetd is built without the CUDA backend "
                 "(-Dcuda=disabled or no nvcc/cuBLAS at build time); use --gpus none", spec);
        return -1;
    }
    int n = 0;
    const char *p = spec;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || (*end && *end != ',')) {
            snprintf(err, errlen, "gpus: \"%s\" is not a list of GPU ordinals (e.g. 0,1), all or none", spec);
            return -1;
        }
        if (v >= visible) {
            if (visible > 0)
                snprintf(err, errlen, "gpus: GPU %ld is not visible (this host has %d: 0..%d)", v,
                         visible, visible - 1);
            else
                snprintf(err, errlen, "gpus: GPU %ld is not visible (this host has no usable GPU)", v);
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (out[i] == (int)v) {
                snprintf(err, errlen, "gpus: GPU %ld is listed twice", v);
                return -1;
            }
        if (n >= cap) {
            snprintf(err, errlen, "gpus: more than %d GPUs", cap);
            return -1;
        }
        out[n++] = (int)v;
        if (!*end) break;
        p = end + 1;
    }
    return n;
}

void bn_daemon_usage(FILE *f)
{
    fprintf(f,
        "usage: bitnetd [--config FILE] [--listen ADDR:PORT] [--state-dir DIR]\n"
        "               [--model-root DIR]... [--output-root DIR] [--data-dir DIR]\n"
        "               [--tokens-file FILE] [--workers N] [--threads N] [--gpus LIST]\n"
        "               [--log-format text|json] [--log-level L] [--set KEY=VALUE]...\n\n"
        "Every option can also be set in the config file (key = value, [api], [jobs] and\n"
        "[wandb] sections) or as BITNETD_<KEY> (e.g. BITNETD_API_MAX_BODY). Flags win over\n"
        "the environment, which wins over the file. Keys:\n");
    for (size_t i = 0; i < N_KEYS; i++) fprintf(f, "  %-24s %s\n", keys[i].key, keys[i].help);
}

int bn_daemon_config_args(bn_daemon_config *c, int argc, char **argv, char *err,
                          size_t errlen)
{
    bool cli_roots = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            bn_daemon_usage(stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("bitnetd %s\n", BN_VERSION);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument \"%s\"", a);
            return -1;
        }
        char name[128], *val = NULL;
        snprintf(name, sizeof name, "%s", a + 2);
        char *eq = strchr(name, '=');
        if (eq) {
            *eq = 0;
            val = (char *)strchr(a, '=') + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(err, errlen, "--%s needs a value", name);
            return -1;
        }
        if (strcmp(name, "config") == 0) continue; /* read before the other layers */
        if (strcmp(name, "set") == 0) {
            char kv[2048];
            snprintf(kv, sizeof kv, "%s", val);
            char *e = strchr(kv, '=');
            if (!e) {
                snprintf(err, errlen, "--set needs KEY=VALUE");
                return -1;
            }
            *e = 0;
            if (bn_daemon_config_set(c, kv, e + 1, err, errlen)) return -1;
            continue;
        }
        for (char *p = name; *p; p++)
            if (*p == '-') *p = '_';
        if (strcmp(name, "model_root") == 0 && !cli_roots) {
            c->n_model_roots = 0;
            cli_roots = true;
        }
        if (bn_daemon_config_set(c, name, val, err, errlen)) return -1;
    }
    return 0;
}
