/* hub.c - hf://ORG/NAME[@REVISION] to a snapshot folder in the Hub cache (see hub.h).
 *
 * Protocol (the Hub's HTTP API, as huggingface_hub speaks it):
 *   GET  {endpoint}/api/models/ORG/NAME/revision/REV?blobs=true
 *        -> {"sha": COMMIT, "siblings": [{"rfilename", "size", "blobId",
 *            "lfs": {"sha256", "size"}}]}
 *   GET  {endpoint}/ORG/NAME/resolve/COMMIT/FILE   (Range: bytes=N- to resume)
 *        -> 200, or 302 to a CDN URL for LFS files, with X-Repo-Commit, X-Linked-Etag
 *           (the LFS sha256) and X-Linked-Size on the first answer
 *   401 (gated or private; X-Error-Code GatedRepo / RepoNotFound), 404 (X-Error-Code
 *   RepoNotFound, RevisionNotFound, EntryNotFound), 429 with Retry-After.
 * Cache (huggingface_hub's layout, shared with it in both directions):
 *   <cache>/models--ORG--NAME/blobs/<etag>              complete, checked content
 *   <cache>/models--ORG--NAME/blobs/<etag>.incomplete   a download in progress
 *   <cache>/models--ORG--NAME/snapshots/COMMIT/FILE     symlink ../../blobs/<etag>
 *   <cache>/models--ORG--NAME/refs/REV                  COMMIT (no newline)
 *   <cache>/.locks/models--ORG--NAME/<etag>.lock        flock() while downloading
 * The etag of an LFS file is its sha256, of a plain git file its blob id.
 *
 * Invariants: a blob file exists only with its full, checked content (written as
 * .incomplete, fsynced, renamed); a snapshot link points only at such a blob; refs/REV is
 * written after every needed file of the commit is linked. The token goes only into the
 * Authorization header of requests to the endpoint (libcurl drops it on a redirect to
 * another host) and never into a message.
 */
#include "hub/hub.h"

#include "base/checksum.h"
#include "base/clock.h"
#include "base/fsutil.h"
#include "base/str.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define API_MAX_BYTES (64u << 20) /* a model's file listing */

/* snprintf for paths: a path that does not fit is cut (and then not found), never overrun. */
static void pathf(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
}

/* ---- sources and configuration ---------------------------------------------------- */

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int bn_hub_cache_dir(const bn_hub_config *cfg, char *out, size_t len, bn_err *err)
{
    const char *home = env("HOME");
    int n;
    if (cfg && cfg->cache_dir) n = snprintf(out, len, "%s", cfg->cache_dir);
    else if (env("HF_HUB_CACHE")) n = snprintf(out, len, "%s", env("HF_HUB_CACHE"));
    else if (env("HF_HOME")) n = snprintf(out, len, "%s/hub", env("HF_HOME"));
    else if (home) n = snprintf(out, len, "%s/.cache/huggingface/hub", home);
    else return bn_err_set(err, BN_EINVAL, "hub cache: neither HF_HUB_CACHE, HF_HOME nor HOME is set");
    if (n < 0 || (size_t)n >= len) return bn_err_set(err, BN_EINVAL, "hub cache: path too long");
    return 0;
}

/* ---- one fetch ----------------------------------------------------------------------- */

typedef struct hub_file {
    char *name;
    uint64_t size;
    char etag[72];   /* LFS sha256, or the git blob id */
    bool lfs;
} hub_file;

typedef struct fetch {
    const bn_hub_config *cfg;
    const bn_hub_progress *progress;
    bn_err *err;
    bn_hub_ref ref;
    char src[400];
    const char *endpoint, *token;
    char cache[PATH_MAX], repo_dir[PATH_MAX], folder[256];
    char commit[72];
    hub_file *files;
    size_t n_files;
    uint64_t total, done;      /* bytes of the needed files; present so far */
    double rate_t0, last_cb;   /* rate window start, last progress call */
    uint64_t rate_b0;
    double rate;
    bool cancelled;
    CURL *curl;
    struct curl_slist *headers;
} fetch;

static bool report(fetch *f, const char *file, bool waiting, bool force)
{
    double t = bn_clock_mono_s();
    if (t - f->rate_t0 >= 2.0) {
        f->rate = (double)(f->done - f->rate_b0) / (t - f->rate_t0);
        f->rate_t0 = t;
        f->rate_b0 = f->done;
    }
    if (!f->progress || !f->progress->update || (!force && t - f->last_cb < 0.25)) return f->cancelled;
    f->last_cb = t;
    if (f->progress->update(f->progress->ctx, f->done, f->total, f->rate, file, waiting)) f->cancelled = true;
    return f->cancelled;
}

static void note(fetch *f, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(fetch *f, const char *level, const char *fmt, ...)
{
    if (!f->progress || !f->progress->event) return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    f->progress->event(f->progress->ctx, level, msg);
}

/* Sleeps s seconds in small steps; returns true when cancelled meanwhile. */
static bool pause_for(fetch *f, double s, const char *file)
{
    double until = bn_clock_mono_s() + s;
    while (bn_clock_mono_s() < until) {
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        if (report(f, file, false, false)) return true;
    }
    return false;
}

/* ---- HTTP ---------------------------------------------------------------------------- */

typedef struct answer {
    long status;
    char repo_commit[72], linked_etag[80], error_code[64], error_message[256];
    uint64_t linked_size;
    long retry_after;
    uint64_t range_start;
    bool has_range;
} answer;

static void header_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
    size_t k = strlen(name);
    if (n <= k + 1 || strncasecmp(line, name, k) != 0 || line[k] != ':') return;
    const char *v = line + k + 1, *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ')) e--;
    if (e - v >= 2 && v[0] == 'W' && v[1] == '/') v += 2; /* weak etag */
    if (e - v >= 2 && v[0] == '"' && e[-1] == '"') { v++; e--; }
    snprintf(out, cap, "%.*s", (int)(e - v), v);
}

static size_t on_header(char *line, size_t size, size_t nitems, void *user)
{
    answer *a = user;
    size_t n = size * nitems;
    char v[256] = "";
    if (n > 5 && strncmp(line, "HTTP/", 5) == 0) { /* a new answer (after a redirect) */
        a->error_code[0] = a->error_message[0] = 0;
        a->retry_after = -1;
        a->has_range = false;
        return n;
    }
    header_value(line, n, "X-Repo-Commit", a->repo_commit, sizeof a->repo_commit);
    header_value(line, n, "X-Linked-Etag", a->linked_etag, sizeof a->linked_etag);
    header_value(line, n, "X-Error-Code", a->error_code, sizeof a->error_code);
    header_value(line, n, "X-Error-Message", a->error_message, sizeof a->error_message);
    header_value(line, n, "X-Linked-Size", v, sizeof v);
    if (*v) { a->linked_size = strtoull(v, NULL, 10); v[0] = 0; }
    header_value(line, n, "Retry-After", v, sizeof v);
    if (*v) { a->retry_after = strtol(v, NULL, 10); v[0] = 0; }
    header_value(line, n, "Content-Range", v, sizeof v);
    if (*v && strncmp(v, "bytes ", 6) == 0) {
        a->range_start = strtoull(v + 6, NULL, 10);
        a->has_range = true;
    }
    return n;
}

static void curl_setup(fetch *f, const char *url, answer *a)
{
    CURL *c = f->curl;
    curl_easy_reset(c);
    memset(a, 0, sizeof *a);
    a->retry_after = -1;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);   /* a stalled transfer ... */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);   /* ... fails after a minute */
    curl_easy_setopt(c, CURLOPT_USERAGENT, "bitnetd/" BN_VERSION);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, f->headers);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
}

/* A failed answer as a message; returns the BN code. */
static int http_error(fetch *f, const answer *a, const char *what)
{
    const char *why = a->error_message[0] ? a->error_message : "";
    if (a->status == 401 || a->status == 403)
        return bn_err_set(f->err, BN_EINVAL, "%s: %s: HTTP %ld%s%s: the repository is gated or private "
                          "(or does not exist); accept its terms on the Hub and set HF_TOKEN "
                          "(or the daemon's hub_token_file)%s%s", f->src, what, a->status,
                          a->error_code[0] ? " " : "", a->error_code, *why ? ": " : "", why);
    if (a->status == 404)
        return bn_err_set(f->err, BN_EINVAL, "%s: %s: not found (HTTP 404%s%s)%s%s", f->src, what,
                          a->error_code[0] ? " " : "", a->error_code, *why ? ": " : "", why);
    return bn_err_set(f->err, BN_EIO, "%s: %s: HTTP %ld%s%s", f->src, what, a->status,
                      *why ? ": " : "", why);
}

/* Whether an answer (or a transport error) is worth another attempt, and how long to
 * wait before it. */
static bool retryable(fetch *f, CURLcode cc, const answer *a, int attempt, double *wait)
{
    int cap = f->cfg->max_retry_wait_s > 0 ? f->cfg->max_retry_wait_s : 60;
    double backoff = attempt < 6 ? (double)(1 << attempt) * 0.5 : 30.0;
    if (cc != CURLE_OK && cc != CURLE_WRITE_ERROR && cc != CURLE_ABORTED_BY_CALLBACK) {
        *wait = backoff < cap ? backoff : cap;
        return true;
    }
    if (cc == CURLE_OK && (a->status == 429 || a->status >= 500)) {
        double ra = a->retry_after >= 0 ? (double)a->retry_after : backoff;
        *wait = ra < cap ? ra : cap;
        return true;
    }
    return false;
}

typedef struct membuf { char *p; size_t n; bool too_big; } membuf;

static size_t on_body(char *data, size_t size, size_t nm, void *user)
{
    membuf *b = user;
    size_t n = size * nm;
    if (b->n + n > API_MAX_BYTES) { b->too_big = true; return 0; }
    char *q = realloc(b->p, b->n + n + 1);
    if (!q) return 0;
    memcpy(q + b->n, data, n);
    b->p = q;
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

static int attempts_of(const fetch *f) { return f->cfg->max_attempts > 0 ? f->cfg->max_attempts : 6; }

/* GET the revision's file listing into *doc. */
static int get_listing(fetch *f, cJSON **doc)
{
    char url[1024];
    snprintf(url, sizeof url, "%s/api/models/%s/revision/%s?blobs=true", f->endpoint, f->ref.repo,
             f->ref.revision);
    for (int attempt = 0;; attempt++) {
        answer a;
        membuf b = { 0 };
        curl_setup(f, url, &a);
        curl_easy_setopt(f->curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(f->curl, CURLOPT_WRITEDATA, &b);
        CURLcode cc = curl_easy_perform(f->curl);
        curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &a.status);
        double wait;
        if (cc == CURLE_OK && a.status == 200) {
            *doc = cJSON_ParseWithLength(b.p ? b.p : "", b.n);
            free(b.p);
            if (!*doc) return bn_err_set(f->err, BN_EFORMAT, "%s: the Hub's file listing is not JSON", f->src);
            return 0;
        }
        free(b.p);
        if (b.too_big) return bn_err_set(f->err, BN_EFORMAT, "%s: the Hub's file listing exceeds %u MB", f->src, API_MAX_BYTES >> 20);
        if (attempt + 1 < attempts_of(f) && retryable(f, cc, &a, attempt, &wait)) {
            note(f, "warn", "%s: listing: %s; retrying in %.0f s", f->src,
                 cc != CURLE_OK ? curl_easy_strerror(cc) : a.status == 429 ? "HTTP 429 (rate limited)" : "server error", wait);
            if (pause_for(f, wait, NULL)) return bn_err_set(f->err, BN_ECANCELLED, "%s: cancelled", f->src);
            continue;
        }
        if (cc != CURLE_OK)
            return bn_err_set(f->err, BN_EIO, "%s: %s: %s", f->src, f->endpoint, curl_easy_strerror(cc));
        return http_error(f, &a, "listing the revision");
    }
}

/* Files of a model that bitnetd reads: config, tokenizer, safetensors (no .bin/.pth). */
static bool needed(const char *name)
{
    static const char *const exact[] = {
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
        "added_tokens.json", "chat_template.jinja",
    };
    if (strchr(name, '/')) return false;
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(name, exact[i]) == 0) return true;
    size_t n = strlen(name);
    return (n > 12 && strcmp(name + n - 12, ".safetensors") == 0) ||
           (n > 23 && strcmp(name + n - 23, ".safetensors.index.json") == 0);
}

static bool hex_ok(const char *s, size_t n)
{
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i])) return false;
    return true;
}

static int read_listing(fetch *f, const cJSON *doc)
{
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(doc, "sha");
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(doc, "siblings");
    if (!cJSON_IsString(sha) || !hex_ok(sha->valuestring, 40) || !cJSON_IsArray(sib))
        return bn_err_set(f->err, BN_EFORMAT, "%s: the Hub's listing lacks \"sha\" (a commit) or \"siblings\"", f->src);
    snprintf(f->commit, sizeof f->commit, "%s", sha->valuestring);
    int n = cJSON_GetArraySize(sib);
    f->files = calloc((size_t)n + 1, sizeof *f->files);
    if (!f->files) return bn_err_set(f->err, BN_ENOMEM, "out of memory");
    bool config = false, weights = false;
    for (const cJSON *s = sib->child; s; s = s->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "rfilename");
        if (!cJSON_IsString(name) || !needed(name->valuestring)) continue;
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(s, "size");
        const cJSON *blob = cJSON_GetObjectItemCaseSensitive(s, "blobId");
        const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(s, "lfs");
        const cJSON *lsha = cJSON_GetObjectItemCaseSensitive(lfs, "sha256");
        const cJSON *lsize = cJSON_GetObjectItemCaseSensitive(lfs, "size");
        hub_file *h = &f->files[f->n_files];
        if (cJSON_IsObject(lfs)) {
            if (!cJSON_IsString(lsha) || !hex_ok(lsha->valuestring, 64) || !cJSON_IsNumber(lsize) || lsize->valuedouble < 0)
                return bn_err_set(f->err, BN_EFORMAT, "%s: %s: the listing's lfs entry lacks sha256 or size", f->src, name->valuestring);
            h->lfs = true;
            h->size = (uint64_t)lsize->valuedouble;
            snprintf(h->etag, sizeof h->etag, "%s", lsha->valuestring);
        } else {
            if (!cJSON_IsString(blob) || !hex_ok(blob->valuestring, 40) || !cJSON_IsNumber(size) || size->valuedouble < 0)
                return bn_err_set(f->err, BN_EFORMAT, "%s: %s: the listing lacks blobId or size", f->src, name->valuestring);
            h->size = (uint64_t)size->valuedouble;
            snprintf(h->etag, sizeof h->etag, "%s", blob->valuestring);
        }
        for (char *c = h->etag; *c; c++) *c = (char)tolower((unsigned char)*c);
        if (!(h->name = bn_str_dup(name->valuestring))) return bn_err_set(f->err, BN_ENOMEM, "out of memory");
        f->n_files++;
        f->total += h->size;
        config |= strcmp(h->name, "config.json") == 0;
        size_t k = strlen(h->name);
        weights |= k > 12 && strcmp(h->name + k - 12, ".safetensors") == 0;
    }
    if (!config) return bn_err_set(f->err, BN_EUNSUPPORTED, "%s: the repository has no config.json (not a transformers model)", f->src);
    if (!weights)
        return bn_err_set(f->err, BN_EUNSUPPORTED, "%s: the repository has no *.safetensors weights "
                          "(bitnetd does not read .bin/.pth pickles)", f->src);
    return 0;
}

/* ---- one file ------------------------------------------------------------------------ */

typedef struct sink {
    fetch *f;
    const hub_file *h;
    int fd;
    bn_sha256 sha;
    uint64_t have;       /* bytes in the .incomplete file (and hashed) */
    uint64_t base;       /* f->done before this file */
    bool started, bad_status, io_error;
    int io_errno;
    uint64_t want_start; /* the Range start asked for */
    answer *a;
} sink;

static int hash_prefix(sink *s, bn_err *err)
{
    enum { BUF = 1 << 20 };
    char *buf = malloc(BUF);
    if (!buf) return bn_err_set(err, BN_ENOMEM, "out of memory");
    uint64_t off = 0;
    while (off < s->have) {
        size_t k = s->have - off < BUF ? (size_t)(s->have - off) : BUF;
        ssize_t r = pread(s->fd, buf, k, (off_t)off);
        if (r <= 0) { free(buf); return bn_err_set(err, BN_EIO, "reading a partial download: %s", r ? strerror(errno) : "short"); }
        bn_sha256_update(&s->sha, buf, (size_t)r);
        off += (uint64_t)r;
    }
    free(buf);
    return 0;
}

static size_t on_data(char *data, size_t size, size_t nm, void *user)
{
    sink *s = user;
    size_t n = size * nm;
    if (!s->started) {
        long st = 0;
        curl_easy_getinfo(s->f->curl, CURLINFO_RESPONSE_CODE, &st);
        s->started = true;
        if (st == 200 && s->want_start > 0) { /* the server ignored Range: start over */
            if (ftruncate(s->fd, 0) != 0) { s->io_error = true; s->io_errno = errno; return 0; }
            bn_sha256_free(&s->sha);
            if (bn_sha256_init(&s->sha, NULL)) { s->io_error = true; s->io_errno = ENOMEM; return 0; }
            s->have = 0;
        } else if (st == 206 && (!s->a->has_range || s->a->range_start != s->want_start)) {
            s->bad_status = true;
            return 0;
        } else if (st != 200 && st != 206) {
            s->bad_status = true;
            return 0;
        }
    }
    if (s->have + n > s->h->size) { s->bad_status = true; return 0; } /* more than listed */
    size_t off = 0;
    while (off < n) {
        ssize_t w = pwrite(s->fd, data + off, n - off, (off_t)(s->have + off));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) { s->io_error = true; s->io_errno = errno; return 0; }
        off += (size_t)w;
    }
    bn_sha256_update(&s->sha, data, n);
    s->have += n;
    s->f->done = s->base + s->have;
    return n;
}

static int on_xfer(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt; (void)dn; (void)ut; (void)un;
    sink *s = user;
    return report(s->f, s->h->name, false, false) ? 1 : 0;
}

/* Downloads h into path (the .incomplete file), resuming what is there. */
static int download(fetch *f, const hub_file *h, const char *path)
{
    int rc = 0;
    sink s = { .f = f, .h = h, .fd = -1, .base = f->done };
    s.fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s.fd < 0) return bn_err_set(f->err, bn_err_from_errno(errno), "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(s.fd, &sb) != 0) { rc = bn_err_set(f->err, BN_EIO, "%s: %s", path, strerror(errno)); goto err; }
    s.have = (uint64_t)sb.st_size;
    if (s.have > h->size) {
        if (ftruncate(s.fd, 0) != 0) { rc = bn_err_set(f->err, BN_EIO, "%s: %s", path, strerror(errno)); goto err; }
        s.have = 0;
    }
    if ((rc = bn_sha256_init(&s.sha, f->err)) || (rc = hash_prefix(&s, f->err))) goto err;
    if (s.have) note(f, "info", "%s: resuming %s at %llu of %llu bytes", f->src, h->name,
                     (unsigned long long)s.have, (unsigned long long)h->size);
    char url[1400];
    snprintf(url, sizeof url, "%s/%s/resolve/%s/%s", f->endpoint, f->ref.repo, f->commit, h->name);
    for (int attempt = 0; s.have < h->size;) {
        answer a;
        char range[64];
        curl_setup(f, url, &a);
        s.a = &a;
        s.started = s.bad_status = s.io_error = false;
        s.want_start = s.have;
        f->done = s.base + s.have;
        if (s.have) {
            snprintf(range, sizeof range, "%llu-", (unsigned long long)s.have);
            curl_easy_setopt(f->curl, CURLOPT_RANGE, range);
        }
        curl_easy_setopt(f->curl, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(f->curl, CURLOPT_WRITEDATA, &s);
        curl_easy_setopt(f->curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(f->curl, CURLOPT_XFERINFOFUNCTION, on_xfer);
        curl_easy_setopt(f->curl, CURLOPT_XFERINFODATA, &s);
        uint64_t before = s.have;
        CURLcode cc = curl_easy_perform(f->curl);
        curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &a.status);
        if (f->cancelled) { rc = bn_err_set(f->err, BN_ECANCELLED, "%s: cancelled while downloading %s", f->src, h->name); goto err; }
        if (s.io_error) { rc = bn_err_set(f->err, bn_err_from_errno(s.io_errno), "%s: %s", path, strerror(s.io_errno)); goto err; }
        if (h->lfs && a.linked_etag[0] && strcasecmp(a.linked_etag, h->etag) != 0) {
            rc = bn_err_set(f->err, BN_EFORMAT, "%s: %s: the Hub's X-Linked-Etag %.64s differs from the listed sha256 %s",
                            f->src, h->name, a.linked_etag, h->etag);
            goto err;
        }
        if (a.repo_commit[0] && strcmp(a.repo_commit, f->commit) != 0) {
            rc = bn_err_set(f->err, BN_EFORMAT, "%s: %s: served from commit %.40s, not %s", f->src, h->name,
                            a.repo_commit, f->commit);
            goto err;
        }
        if (a.status == 416 && s.have == h->size) break;
        if (cc == CURLE_OK && (a.status == 200 || a.status == 206) && s.have >= h->size) break;
        if (s.have > before) attempt = 0; /* progress was made: a fresh set of attempts */
        /* what went wrong: a throttled or failing server (wait as told), a dropped
         * connection or a short body (resume at once, then after a second), or an
         * answer that no retry will change */
        double wait = 0;
        bool again;
        if (a.status == 429 || a.status >= 500) again = retryable(f, CURLE_OK, &a, attempt, &wait);
        else if (a.status >= 400) again = false;
        else if (cc != CURLE_OK && cc != CURLE_WRITE_ERROR) again = true, wait = attempt ? 1 : 0;
        else again = cc == CURLE_OK, wait = attempt ? 1 : 0;
        if (!again || ++attempt >= attempts_of(f)) {
            if (a.status >= 400) { rc = http_error(f, &a, h->name); goto err; }
            rc = bn_err_set(f->err, BN_EIO, "%s: %s: download failed at byte %llu of %llu: %s", f->src, h->name,
                            (unsigned long long)s.have, (unsigned long long)h->size,
                            cc != CURLE_OK && cc != CURLE_WRITE_ERROR ? curl_easy_strerror(cc)
                            : "the server's answer does not fit the listing (range or size)");
            goto err;
        }
        note(f, "warn", "%s: %s: %s at byte %llu; retrying%s", f->src, h->name,
             a.status == 429 ? "HTTP 429 (rate limited)" : cc != CURLE_OK ? curl_easy_strerror(cc) : "connection ended early",
             (unsigned long long)s.have, wait > 0 ? " after a pause" : "");
        if (wait > 0 && pause_for(f, wait, h->name)) {
            rc = bn_err_set(f->err, BN_ECANCELLED, "%s: cancelled", f->src);
            goto err;
        }
    }
    char hex[65];
    if ((rc = bn_sha256_final_hex(&s.sha, hex, f->err))) goto err;
    if (h->lfs && strcmp(hex, h->etag) != 0) {
        unlink(path); /* a wrong file is not worth resuming */
        rc = bn_err_set(f->err, BN_EFORMAT, "%s: %s: checksum mismatch: the Hub lists sha256 %s, the "
                        "downloaded bytes have %s; the download was discarded", f->src, h->name, h->etag, hex);
        goto err;
    }
    if (fsync(s.fd) != 0) rc = bn_err_set(f->err, bn_err_from_errno(errno), "%s: fsync: %s", path, strerror(errno));
err:
    bn_sha256_free(&s.sha);
    if (s.fd >= 0) close(s.fd);
    return rc;
}

/* Takes the cache's lock for etag (waiting for another downloader); returns the fd. */
static int lock_blob(fetch *f, const hub_file *h, int *fd_out)
{
    char dir[PATH_MAX], path[PATH_MAX + 80];
    pathf(dir, sizeof dir, "%s/.locks/%s", f->cache, f->folder);
    int rc = bn_fs_mkdir_p(dir, f->err);
    if (rc) return rc;
    pathf(path, sizeof path, "%s/%s.lock", dir, h->etag);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return bn_err_set(f->err, bn_err_from_errno(errno), "%s: %s", path, strerror(errno));
    bool told = false;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            close(fd);
            return bn_err_set(f->err, BN_EIO, "%s: lock: %s", path, strerror(errno));
        }
        if (!told) {
            note(f, "info", "%s: %s is being downloaded by another job; waiting for it", f->src, h->name);
            report(f, h->name, true, true);
            told = true;
        }
        if (pause_for(f, 0.2, h->name)) {
            close(fd);
            return bn_err_set(f->err, BN_ECANCELLED, "%s: cancelled", f->src);
        }
    }
    *fd_out = fd;
    return 0;
}

static bool file_has_size(const char *path, uint64_t size)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == size;
}

/* Makes snapshots/COMMIT/NAME a link to blobs/ETAG, downloading the blob if needed. */
static int fetch_file(fetch *f, const hub_file *h)
{
    char snap[PATH_MAX], blob[PATH_MAX], part[PATH_MAX + 16], target[256];
    pathf(snap, sizeof snap, "%s/snapshots/%s/%s", f->repo_dir, f->commit, h->name);
    pathf(blob, sizeof blob, "%s/blobs/%s", f->repo_dir, h->etag);
    if (file_has_size(snap, h->size)) { /* cached (follows the link to its blob) */
        f->done += h->size;
        return 0;
    }
    int lock = -1, rc = 0;
    if (!file_has_size(blob, h->size)) {
        if ((rc = lock_blob(f, h, &lock))) return rc;
        if (!file_has_size(blob, h->size)) { /* nobody finished it meanwhile */
            pathf(part, sizeof part, "%s.incomplete", blob);
            rc = download(f, h, part);
            if (!rc && rename(part, blob) != 0)
                rc = bn_err_set(f->err, bn_err_from_errno(errno), "%s: rename: %s", blob, strerror(errno));
            if (!rc) rc = bn_fs_fsync_parent(blob, f->err);
            if (rc) goto err;
        } else {
            f->done += h->size;
        }
    } else {
        f->done += h->size;
    }
    snprintf(target, sizeof target, "../../blobs/%s", h->etag);
    unlink(snap); /* a stale or broken link */
    if (symlink(target, snap) != 0 && !(errno == EEXIST && file_has_size(snap, h->size))) /* or a racing fetch's */
        rc = bn_err_set(f->err, bn_err_from_errno(errno), "%s: symlink: %s", snap, strerror(errno));
err:
    if (lock >= 0) close(lock); /* releases the flock */
    return rc;
}

static int write_ref(fetch *f)
{
    if (strcmp(f->ref.revision, f->commit) == 0) return 0;
    char path[PATH_MAX];
    pathf(path, sizeof path, "%s/refs/%s", f->repo_dir, f->ref.revision);
    char dir[PATH_MAX];
    pathf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0; /* a revision "a/b" lives in refs/a/b */
    int rc = bn_fs_mkdir_p(dir, f->err);
    if (rc) return rc;
    /* a temporary name of our own (another fetch may be writing the same ref), then rename */
    char tmp[PATH_MAX + 16];
    pathf(tmp, sizeof tmp, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) return bn_err_set(f->err, bn_err_from_errno(errno), "%s: %s", tmp, strerror(errno));
    size_t n = strlen(f->commit);
    bool ok = fchmod(fd, 0644) == 0 && write(fd, f->commit, n) == (ssize_t)n && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        if (ok) e = errno;
        unlink(tmp);
        return bn_err_set(f->err, bn_err_from_errno(e), "%s: %s", path, strerror(e));
    }
    return bn_fs_fsync_parent(path, f->err);
}

/* Offline: the snapshot recorded for the revision. */
static int from_cache(fetch *f, char *dir, size_t dirlen)
{
    if (hex_ok(f->ref.revision, 40)) {
        memcpy(f->commit, f->ref.revision, 41);
    } else {
        char path[PATH_MAX], *text = NULL;
        size_t n = 0;
        pathf(path, sizeof path, "%s/refs/%s", f->repo_dir, f->ref.revision);
        bn_err e = { 0 };
        if (bn_fs_read_file(path, 128, &text, &n, &e) != 0)
            return bn_err_set(f->err, BN_EINVAL, "%s: offline (HF_HUB_OFFLINE=1) and revision %s is not in "
                              "the cache %s", f->src, f->ref.revision, f->cache);
        while (n && isspace((unsigned char)text[n - 1])) text[--n] = 0;
        pathf(f->commit, sizeof f->commit, "%s", text);
        free(text);
        if (!hex_ok(f->commit, 40))
            return bn_err_set(f->err, BN_EFORMAT, "%s: %s does not hold a commit hash", f->src, path);
    }
    char cfg[PATH_MAX + 16];
    int n = snprintf(dir, dirlen, "%s/snapshots/%s", f->repo_dir, f->commit);
    if (n < 0 || (size_t)n >= dirlen) return bn_err_set(f->err, BN_EINVAL, "%s: path too long", f->src);
    pathf(cfg, sizeof cfg, "%s/config.json", dir);
    if (!bn_fs_exists(cfg))
        return bn_err_set(f->err, BN_EINVAL, "%s: offline (HF_HUB_OFFLINE=1) and commit %s has no cached "
                          "config.json in %s", f->src, f->commit, f->cache);
    return 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

int bn_hub_fetch(const char *src, const bn_hub_config *cfg, const bn_hub_progress *progress,
                 char *dir, size_t dirlen, bn_err *err)
{
    static const bn_hub_config none = { .offline = -1 };
    fetch f = { .cfg = cfg ? cfg : &none, .progress = progress, .err = err };
    cJSON *doc = NULL;
    int rc = bn_hub_parse(src, &f.ref, err);
    if (rc) return rc;
    snprintf(f.src, sizeof f.src, "hf://%s@%s", f.ref.repo, f.ref.revision);
    if (!bn_hub_allowed(f.ref.repo, f.cfg->allow, f.cfg->n_allow))
        return bn_err_set(err, BN_EINVAL, "%s: repository %s is not on this server's hub allow-list", f.src, f.ref.repo);
    if ((rc = bn_hub_cache_dir(f.cfg, f.cache, sizeof f.cache, err))) return rc;
    snprintf(f.folder, sizeof f.folder, "models--%s", f.ref.repo);
    char *slash = strchr(f.folder, '/');
    memmove(slash + 2, slash + 1, strlen(slash + 1) + 1); /* ORG/NAME -> ORG--NAME */
    slash[0] = slash[1] = '-';
    pathf(f.repo_dir, sizeof f.repo_dir, "%s/%s", f.cache, f.folder);
    const char *off = env("HF_HUB_OFFLINE");
    bool offline = f.cfg->offline >= 0 ? f.cfg->offline == 1
                                       : off && (strcmp(off, "1") == 0 || strcasecmp(off, "true") == 0 ||
                                                 strcasecmp(off, "yes") == 0 || strcasecmp(off, "on") == 0);
    if (offline) {
        if ((rc = from_cache(&f, dir, dirlen))) return rc;
        note(&f, "info", "%s: offline: using the cached snapshot %s", f.src, f.commit);
        return 0;
    }

    f.endpoint = f.cfg->endpoint ? f.cfg->endpoint : env("HF_ENDPOINT") ? env("HF_ENDPOINT") : DEFAULT_ENDPOINT;
    f.token = f.cfg->token ? f.cfg->token : env("HF_TOKEN");
    char auth[1200];
    pthread_once(&curl_once, curl_init);
    if (!(f.curl = curl_easy_init())) return bn_err_set(err, BN_ENOMEM, "libcurl: out of memory");
    f.headers = curl_slist_append(NULL, "Accept-Encoding: identity");
    if (f.token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", f.token);
        struct curl_slist *h = curl_slist_append(f.headers, auth);
        explicit_bzero(auth, sizeof auth);
        if (h) f.headers = h;
    }
    f.rate_t0 = bn_clock_mono_s();
    if ((rc = get_listing(&f, &doc)) == BN_EIO) {
        /* the Hub is unreachable (network, 5xx, 429 after every attempt): a complete
         * cached snapshot of the revision serves, as in huggingface_hub */
        bn_err cache_err = { 0 };
        f.err = &cache_err;
        int crc = from_cache(&f, dir, dirlen);
        f.err = err;
        if (crc == 0) {
            note(&f, "warn", "%s: the Hub is unreachable (%s); using the cached snapshot %s", f.src,
                 err ? err->msg : "error", f.commit);
            rc = 0;
            goto err; /* done: clean up */
        }
    }
    if (rc || (rc = read_listing(&f, doc))) goto err;
    uint64_t limit = f.cfg->max_bytes;
    if (limit && f.total > limit) {
        rc = bn_err_set(err, BN_EINVAL, "%s: the model's files take %.1f MB, more than the hub size limit "
                        "of %.1f MB (hub_max_bytes)", f.src, (double)f.total / 1e6, (double)limit / 1e6);
        goto err;
    }
    char snapdir[PATH_MAX + 80], blobs[PATH_MAX + 8];
    pathf(snapdir, sizeof snapdir, "%s/snapshots/%s", f.repo_dir, f.commit);
    pathf(blobs, sizeof blobs, "%s/blobs", f.repo_dir);
    if ((rc = bn_fs_mkdir_p(snapdir, err)) || (rc = bn_fs_mkdir_p(blobs, err))) goto err;
    note(&f, "info", "%s: commit %s, %zu files, %.1f MB, cache %s", f.src, f.commit, f.n_files,
         (double)f.total / 1e6, f.cache);
    double t0 = bn_clock_mono_s();
    for (size_t i = 0; !rc && i < f.n_files; i++) {
        report(&f, f.files[i].name, false, true);
        rc = fetch_file(&f, &f.files[i]);
    }
    if (!rc) rc = write_ref(&f);
    if (!rc) {
        report(&f, NULL, false, true);
        note(&f, "info", "%s: all %zu files present and checked (%.1f s)", f.src, f.n_files, bn_clock_mono_s() - t0);
        int n = snprintf(dir, dirlen, "%s", snapdir);
        if (n < 0 || (size_t)n >= dirlen) rc = bn_err_set(err, BN_EINVAL, "%s: path too long", f.src);
    }
err:
    cJSON_Delete(doc);
    for (size_t i = 0; i < f.n_files; i++) free(f.files[i].name);
    free(f.files);
    curl_slist_free_all(f.headers);
    curl_easy_cleanup(f.curl);
    return rc;
}
