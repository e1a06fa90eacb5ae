/* hub.h - the Hugging Face Hub as a model source: "hf://ORG/NAME[@REVISION]" becomes a
 * local snapshot folder in the Hub's own cache, downloaded over the Hub HTTP API (libcurl).
 *
 * The cache is huggingface_hub's: <cache>/models--ORG--NAME/{blobs,snapshots/COMMIT,refs}
 * plus <cache>/.locks/models--ORG--NAME/<etag>.lock, so a cache filled by huggingface_hub
 * is used as it is, and one filled here serves transformers. Only the files a model needs
 * are fetched (config, generation config, tokenizer files, *.safetensors and the index).
 * Every LFS file is checked against the sha256 the Hub publishes; a file is visible in a
 * snapshot only once it is complete and checked, and the snapshot folder is returned only
 * when every needed file is in it, so nothing half-downloaded is ever loaded.
 */
#ifndef BN_HUB_H
#define BN_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define BN_HUB_SCHEME "hf://"

/* Where and how to fetch. Zeroed = everything from the environment: HF_ENDPOINT (default
 * https://huggingface.co), HF_TOKEN, HF_HUB_CACHE or $HF_HOME/hub (default
 * ~/.cache/huggingface/hub), HF_HUB_OFFLINE=1. A field that is set wins over the
 * environment. */
typedef struct bn_hub_config {
    const char *endpoint;
    const char *token;       /* sent as a Bearer token; never logged or recorded */
    const char *cache_dir;   /* the hub cache itself (the folder holding models--*) */
    int offline;             /* 1 cache only, 0 online, -1 from HF_HUB_OFFLINE */
    const char *const *allow; /* repositories allowed: "ORG/NAME", "ORG/" + "*" or "*"; NULL = all */
    int n_allow;
    uint64_t max_bytes;      /* refuse a model whose needed files are larger (0 = no limit) */
    int max_attempts;        /* per request, for 429/5xx/dropped connections (0 = 6) */
    int max_retry_wait_s;    /* cap on one Retry-After wait (0 = 60) */
} bn_hub_config;

/* Download progress: bytes of the needed files already present (cache hits count),
 * of all of them, the current rate over the last seconds, and the file being fetched.
 * Returning true cancels the fetch (BN_ECANCELLED); the partial file is kept for a
 * later resume. Called at most a few times a second, and once when a lock held by
 * another download is being waited for (file names it, waiting = true). */
typedef struct bn_hub_progress {
    void *ctx;
    bool (*update)(void *ctx, uint64_t done, uint64_t total, double bytes_per_s,
                   const char *file, bool waiting);
    void (*event)(void *ctx, const char *level, const char *message);
} bn_hub_progress;

/* A parsed source. */
typedef struct bn_hub_ref {
    char repo[192];     /* "ORG/NAME" */
    char revision[128]; /* "main" when none was given */
} bn_hub_ref;

/* True when s starts with "hf://". */
bool bn_hub_is_source(const char *s);
/* Parses "hf://ORG/NAME[@REVISION]": ORG and NAME of [A-Za-z0-9._-] (no leading '.', no
 * ".."), REVISION of [A-Za-z0-9._/-] (no ".." component). BN_EINVAL with the reason. */
int bn_hub_parse(const char *src, bn_hub_ref *ref, bn_err *err);
/* True when repo ("ORG/NAME") is on the allow list (NULL list = every repo). */
bool bn_hub_allowed(const char *repo, const char *const *allow, int n_allow);

/* Makes hf://... available in the cache and writes its snapshot folder to dir. Online:
 * resolves the revision to a commit, downloads missing files (resuming .incomplete
 * ones with Range, retrying 429 after Retry-After and dropped connections), checks sizes
 * and sha256, links the snapshot and writes refs/REVISION. Offline: the cached snapshot
 * of refs/REVISION (or of the commit) must hold config.json. Two fetches of the same
 * files (threads or processes) share one download through the lock files. */
int bn_hub_fetch(const char *src, const bn_hub_config *cfg, const bn_hub_progress *progress,
                 char *dir, size_t dirlen, bn_err *err);

/* The cache folder cfg resolves to (for messages and tests). */
int bn_hub_cache_dir(const bn_hub_config *cfg, char *out, size_t len, bn_err *err);

#endif
