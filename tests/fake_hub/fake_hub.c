/* fake_hub.c - the fake Hugging Face Hub (see fake_hub.h).
 *
 * One libmicrohttpd daemon, a thread per connection, every piece of state behind one
 * mutex. Files are read into memory when a repository is added (test models are small).
 * Content answers are produced by a reader callback, so a transfer can be cut at an
 * exact byte (the callback ends with an error and libmicrohttpd closes the connection,
 * which a client sees as a body shorter than its Content-Length).
 */
#include "fake_hub.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct hub_blob {
    char name[256];
    unsigned char *data;
    uint64_t size;
    char sha256[65], blob_id[41];
    bool lfs, corrupt;
    uint64_t drop_after;
    int drop_n;
} hub_blob;

typedef struct hub_repo {
    char id[192], commit[41], token[128];
    bool gated;
    hub_blob *files;
    size_t n_files;
} hub_repo;

struct fake_hub {
    struct MHD_Daemon *d;
    char url[64];
    pthread_mutex_t mu;
    hub_repo *repos;
    size_t n_repos;
    int fail_status, fail_retry, fail_n;
    fake_hub_stats st;
};

static void hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

static void digest(const EVP_MD *md, const void *a, size_t an, const void *b, size_t bn, char *out)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, md, NULL);
    EVP_DigestUpdate(c, a, an);
    if (bn) EVP_DigestUpdate(c, b, bn);
    EVP_DigestFinal_ex(c, d, &n);
    EVP_MD_CTX_free(c);
    hex(d, n, out);
}

static bool is_lfs(const char *name)
{
    size_t n = strlen(name);
    return (n > 12 && strcmp(name + n - 12, ".safetensors") == 0) || (n > 4 && strcmp(name + n - 4, ".bin") == 0);
}

int fake_hub_add_repo(fake_hub *h, const char *repo, const char *dir, const char *token)
{
    DIR *dd = opendir(dir);
    if (!dd) return -1;
    hub_repo r = { 0 };
    snprintf(r.id, sizeof r.id, "%s", repo);
    if (token) { r.gated = true; snprintf(r.token, sizeof r.token, "%s", token); }
    struct dirent *e;
    while ((e = readdir(dd))) {
        char p[4096];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        FILE *fp = fopen(p, "rb");
        if (!fp) continue;
        hub_blob b = { 0 };
        snprintf(b.name, sizeof b.name, "%s", e->d_name);
        b.size = (uint64_t)sb.st_size;
        b.data = malloc(b.size + 1);
        if (!b.data || fread(b.data, 1, b.size, fp) != b.size) { fclose(fp); free(b.data); closedir(dd); return -1; }
        fclose(fp);
        char head[64];
        int hn = snprintf(head, sizeof head, "blob %llu", (unsigned long long)b.size);
        digest(EVP_sha1(), head, (size_t)hn + 1, b.data, b.size, b.blob_id);
        digest(EVP_sha256(), b.data, b.size, NULL, 0, b.sha256);
        b.lfs = is_lfs(b.name);
        hub_blob *nf = realloc(r.files, (r.n_files + 1) * sizeof *nf);
        if (!nf) { free(b.data); closedir(dd); return -1; }
        r.files = nf;
        r.files[r.n_files++] = b;
    }
    closedir(dd);
    /* the commit: a digest of the repository's name and its files' ids */
    char *all = calloc(r.n_files + 1, 300);
    size_t k = (size_t)sprintf(all, "%s", r.id);
    for (size_t i = 0; i < r.n_files; i++) k += (size_t)sprintf(all + k, " %s=%s", r.files[i].name, r.files[i].blob_id);
    digest(EVP_sha1(), all, k, NULL, 0, r.commit);
    free(all);
    pthread_mutex_lock(&h->mu);
    hub_repo *nr = realloc(h->repos, (h->n_repos + 1) * sizeof *nr);
    if (nr) { h->repos = nr; h->repos[h->n_repos++] = r; }
    pthread_mutex_unlock(&h->mu);
    return nr ? 0 : -1;
}

const char *fake_hub_commit(const fake_hub *h, const char *repo)
{
    for (size_t i = 0; i < h->n_repos; i++)
        if (strcmp(h->repos[i].id, repo) == 0) return h->repos[i].commit;
    return NULL;
}

static hub_repo *find_repo(fake_hub *h, const char *id, size_t n)
{
    for (size_t i = 0; i < h->n_repos; i++)
        if (strlen(h->repos[i].id) == n && strncmp(h->repos[i].id, id, n) == 0) return &h->repos[i];
    return NULL;
}

static hub_blob *find_file(hub_repo *r, const char *name)
{
    for (size_t i = 0; r && i < r->n_files; i++)
        if (strcmp(r->files[i].name, name) == 0) return &r->files[i];
    return NULL;
}

void fake_hub_fail_next(fake_hub *h, int status, int retry_after_s, int n)
{
    pthread_mutex_lock(&h->mu);
    h->fail_status = status;
    h->fail_retry = retry_after_s;
    h->fail_n = n;
    pthread_mutex_unlock(&h->mu);
}

void fake_hub_drop_next(fake_hub *h, const char *file, uint64_t after_bytes, int n)
{
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n_repos; i++) {
        hub_blob *b = find_file(&h->repos[i], file);
        if (b) { b->drop_after = after_bytes; b->drop_n = n; }
    }
    pthread_mutex_unlock(&h->mu);
}

void fake_hub_corrupt(fake_hub *h, const char *file, bool on)
{
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n_repos; i++) {
        hub_blob *b = find_file(&h->repos[i], file);
        if (b) b->corrupt = on;
    }
    pthread_mutex_unlock(&h->mu);
}

fake_hub_stats fake_hub_get_stats(fake_hub *h)
{
    pthread_mutex_lock(&h->mu);
    fake_hub_stats s = h->st;
    pthread_mutex_unlock(&h->mu);
    return s;
}

/* ---- answers ------------------------------------------------------------------------- */

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *body,
                                 const char *error_code, int retry_after)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (error_code) {
        MHD_add_response_header(r, "X-Error-Code", error_code);
        MHD_add_response_header(r, "X-Error-Message", body);
    }
    if (retry_after >= 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", retry_after);
        MHD_add_response_header(r, "Retry-After", v);
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* A content transfer: a copy of the bytes to send (so faults apply per request). */
typedef struct xfer {
    fake_hub *h;
    unsigned char *data;
    uint64_t n, cut; /* bytes to send; cut < n: stop there with an error */
} xfer;

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    xfer *x = cls;
    if (pos >= x->cut) return x->cut < x->n ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    size_t k = x->cut - pos < max ? (size_t)(x->cut - pos) : max;
    memcpy(buf, x->data + pos, k);
    pthread_mutex_lock(&x->h->mu);
    x->h->st.body_bytes += k;
    pthread_mutex_unlock(&x->h->mu);
    return (ssize_t)k;
}

static void free_xfer(void *cls)
{
    xfer *x = cls;
    free(x->data);
    free(x);
}

/* Serves b (with Range) under h->mu; unlocks it. */
static enum MHD_Result send_content(fake_hub *h, struct MHD_Connection *c, hub_repo *r, hub_blob *b, bool head,
                                    bool cdn)
{
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    uint64_t from = 0, to = b->size ? b->size - 1 : 0;
    bool ranged = false;
    if (range && strncmp(range, "bytes=", 6) == 0) {
        char *end;
        from = strtoull(range + 6, &end, 10);
        if (*end == '-' && end[1]) to = strtoull(end + 1, NULL, 10);
        ranged = true;
        if (from > 0) h->st.ranged++;
    }
    char etag[80], total[32];
    snprintf(etag, sizeof etag, "\"%s\"", b->lfs ? b->sha256 : b->blob_id);
    snprintf(total, sizeof total, "%llu", (unsigned long long)b->size);
    if (ranged && (from >= b->size || to < from)) {
        pthread_mutex_unlock(&h->mu);
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        char cr[64];
        snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)b->size);
        MHD_add_response_header(resp, "Content-Range", cr);
        enum MHD_Result ret = MHD_queue_response(c, 416, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    if (to >= b->size) to = b->size - 1;
    uint64_t n = b->size ? to - from + 1 : 0;
    xfer *x = calloc(1, sizeof *x);
    x->h = h;
    x->n = x->cut = n;
    x->data = malloc(n + 1);
    memcpy(x->data, b->data + from, n);
    if (b->corrupt && b->size / 2 >= from && b->size / 2 <= to) x->data[b->size / 2 - from] ^= 0x55;
    if (!head && b->drop_n > 0 && b->drop_after > from && b->drop_after - from < n) {
        x->cut = b->drop_after - from;
        b->drop_n--;
        h->st.faults++;
    }
    char commit[41];
    memcpy(commit, r->commit, sizeof commit);
    pthread_mutex_unlock(&h->mu);
    struct MHD_Response *resp = MHD_create_response_from_callback(n, 64 * 1024, read_body, x, free_xfer);
    MHD_add_response_header(resp, "ETag", etag);
    MHD_add_response_header(resp, "Accept-Ranges", "bytes");
    if (!cdn) MHD_add_response_header(resp, "X-Repo-Commit", commit); /* the CDN knows no commits */
    MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
    if (ranged) {
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%s", (unsigned long long)from, (unsigned long long)to, total);
        MHD_add_response_header(resp, "Content-Range", cr);
    }
    enum MHD_Result ret = MHD_queue_response(c, ranged ? 206 : 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static bool authorized(hub_repo *r, struct MHD_Connection *c)
{
    if (!r->gated) return true;
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    return a && strncmp(a, "Bearer ", 7) == 0 && strcmp(a + 7, r->token) == 0;
}

static enum MHD_Result listing(fake_hub *h, struct MHD_Connection *c, hub_repo *r, const char *rev)
{
    if (strcmp(rev, "main") != 0 && strcmp(rev, r->commit) != 0) {
        pthread_mutex_unlock(&h->mu);
        return send_text(c, 404, "Invalid rev id", "RevisionNotFound", -1);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "_id", r->commit);
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "modelId", r->id);
    cJSON_AddStringToObject(o, "sha", r->commit);
    cJSON_AddBoolToObject(o, "private", false);
    if (r->gated) cJSON_AddStringToObject(o, "gated", "manual");
    else cJSON_AddBoolToObject(o, "gated", false);
    cJSON *sib = cJSON_AddArrayToObject(o, "siblings");
    for (size_t i = 0; i < r->n_files; i++) {
        hub_blob *b = &r->files[i];
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "rfilename", b->name);
        cJSON_AddStringToObject(s, "blobId", b->blob_id);
        cJSON_AddNumberToObject(s, "size", (double)b->size);
        if (b->lfs) {
            cJSON *l = cJSON_AddObjectToObject(s, "lfs");
            cJSON_AddStringToObject(l, "sha256", b->sha256);
            cJSON_AddNumberToObject(l, "size", (double)b->size);
            cJSON_AddNumberToObject(l, "pointerSize", 134);
        }
        cJSON_AddItemToArray(sib, s);
    }
    pthread_mutex_unlock(&h->mu);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    enum MHD_Result ret = send_text(c, 200, text, NULL, -1);
    free(text);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_n, void **state)
{
    (void)version; (void)upload; (void)upload_n;
    fake_hub *h = cls;
    if (!*state) { *state = h; return MHD_YES; } /* headers first */
    bool head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0) return send_text(c, 405, "method not allowed", NULL, -1);
    pthread_mutex_lock(&h->mu);
    if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization")) h->st.saw_token = true;
    if (head) h->st.head++;
    if (h->fail_n > 0) {
        h->fail_n--;
        h->st.faults++;
        int st = h->fail_status, ra = h->fail_retry;
        pthread_mutex_unlock(&h->mu);
        return send_text(c, (unsigned)st, st == 429 ? "rate limited" : "injected failure", NULL, ra);
    }
    if (strncmp(url, "/cdn-lfs/", 9) == 0) {
        h->st.cdn++;
        for (size_t i = 0; i < h->n_repos; i++)
            for (size_t j = 0; j < h->repos[i].n_files; j++)
                if (h->repos[i].files[j].lfs && strcmp(h->repos[i].files[j].sha256, url + 9) == 0)
                    return send_content(h, c, &h->repos[i], &h->repos[i].files[j], head, true);
        pthread_mutex_unlock(&h->mu);
        return send_text(c, 404, "no such object", NULL, -1);
    }
    bool api = strncmp(url, "/api/models/", 12) == 0;
    const char *p = api ? url + 12 : url + 1;
    /* ORG/NAME then /revision/REV (api) or /resolve/REV/FILE */
    const char *s1 = strchr(p, '/'), *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    hub_repo *r = s2 ? find_repo(h, p, (size_t)(s2 - p)) : NULL;
    if (!r) {
        pthread_mutex_unlock(&h->mu);
        return send_text(c, 404, "Repository not found", "RepoNotFound", -1);
    }
    if (!authorized(r, c)) {
        pthread_mutex_unlock(&h->mu);
        return send_text(c, 401, "Access to this model is restricted; you must be authenticated and have accepted its terms", "GatedRepo", -1);
    }
    if (api) {
        h->st.api++;
        if (strncmp(s2, "/revision/", 10) != 0) {
            pthread_mutex_unlock(&h->mu);
            return send_text(c, 404, "not found", NULL, -1);
        }
        return listing(h, c, r, s2 + 10);
    }
    h->st.resolve++;
    const char *rev = strncmp(s2, "/resolve/", 9) == 0 ? s2 + 9 : NULL;
    const char *s3 = rev ? strchr(rev, '/') : NULL;
    if (!s3) {
        pthread_mutex_unlock(&h->mu);
        return send_text(c, 404, "not found", NULL, -1);
    }
    if (!((size_t)(s3 - rev) == 4 && strncmp(rev, "main", 4) == 0) &&
        !((size_t)(s3 - rev) == 40 && strncmp(rev, r->commit, 40) == 0)) {
        pthread_mutex_unlock(&h->mu);
        return send_text(c, 404, "Invalid rev id", "RevisionNotFound", -1);
    }
    hub_blob *b = find_file(r, s3 + 1);
    if (!b) {
        pthread_mutex_unlock(&h->mu);
        return send_text(c, 404, "Entry not found", "EntryNotFound", -1);
    }
    if (!b->lfs) return send_content(h, c, r, b, head, false);
    /* LFS: a redirect to the "CDN", with the linked object's identity */
    char loc[256], etag[80], size[32];
    snprintf(loc, sizeof loc, "%s/cdn-lfs/%s", h->url, b->sha256);
    snprintf(etag, sizeof etag, "\"%s\"", b->sha256);
    snprintf(size, sizeof size, "%llu", (unsigned long long)b->size);
    char commit[41];
    memcpy(commit, r->commit, sizeof commit);
    pthread_mutex_unlock(&h->mu);
    static const char body[] = "Found. Redirecting";
    struct MHD_Response *resp = MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Location", loc);
    MHD_add_response_header(resp, "X-Repo-Commit", commit);
    MHD_add_response_header(resp, "X-Linked-Etag", etag);
    MHD_add_response_header(resp, "X-Linked-Size", size);
    MHD_add_response_header(resp, "ETag", "\"0000000000000000000000000000000000000000\"");
    enum MHD_Result ret = MHD_queue_response(c, 302, resp);
    MHD_destroy_response(resp);
    return ret;
}

fake_hub *fake_hub_start(void)
{
    fake_hub *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    pthread_mutex_init(&h->mu, NULL);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
                            on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!h->d) { free(h); return NULL; }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(h->url, sizeof h->url, "http://127.0.0.1:%u", info ? (unsigned)info->port : 0u);
    return h;
}

const char *fake_hub_url(const fake_hub *h) { return h->url; }

void fake_hub_stop(fake_hub *h)
{
    if (!h) return;
    MHD_stop_daemon(h->d);
    for (size_t i = 0; i < h->n_repos; i++) {
        for (size_t j = 0; j < h->repos[i].n_files; j++) free(h->repos[i].files[j].data);
        free(h->repos[i].files);
    }
    free(h->repos);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
