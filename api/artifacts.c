/* artifacts.c - GET /v1/jobs/{id}/artifacts (the files of the output folder) and
 * GET /v1/jobs/{id}/artifacts/{path} (one file, with single-range Range support).
 *
 * Only the final output folder is visible: it appears by rename when export completes,
 * so a ".partial" folder can never be listed or fetched. A requested path must be a
 * plain relative name (bn_api_rel_path_ok) and must still resolve inside the folder
 * after symlinks are followed; files are streamed from their descriptor.
 */
#include "api_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LISTED 10000

static void list_dir(const char *root, const char *rel, cJSON *arr, const char *id, int depth)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) && cJSON_GetArraySize(arr) < MAX_LISTED) {
        if (e->d_name[0] == '.') continue;
        char sub[PATH_MAX], full[PATH_MAX * 2];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat sb;
        if (lstat(full, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (depth < 8) list_dir(root, sub, arr, id, depth + 1);
            continue;
        }
        if (!S_ISREG(sb.st_mode)) continue;
        cJSON *o = cJSON_CreateObject();
        char url[PATH_MAX + 64], t[32];
        snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/%s", id, sub);
        cJSON_AddStringToObject(o, "path", sub);
        cJSON_AddNumberToObject(o, "size", (double)sb.st_size);
        cJSON_AddStringToObject(o, "modified",
                                bn_api_time((int64_t)sb.st_mtime * 1000, t));
        cJSON_AddStringToObject(o, "url", url);
        cJSON_AddItemToArray(arr, o);
    }
    closedir(d);
}

static int load(bn_api_req *r, bn_store_job *j)
{
    bn_store *st = bn_api_store(r);
    if (!st) return -1;
    int rc = bn_store_job_get(st, r->id, j);
    if (rc == BN_STORE_NOTFOUND) bn_api_problem(r, 404, "id", "no job %s", r->id);
    else if (rc) bn_api_problem(r, 500, NULL, "reading job: %s", bn_store_errmsg(st));
    return rc ? -1 : 0;
}

enum MHD_Result bn_api_job_artifacts(bn_api_req *r)
{
    bn_store_job j;
    if (load(r, &j)) return MHD_YES;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "job", j.id);
    cJSON_AddStringToObject(o, "status", bn_store_status_name(j.status));
    cJSON_AddStringToObject(o, "output_dir", j.output_dir ? j.output_dir : "");
    cJSON *arr = cJSON_AddArrayToObject(o, "artifacts");
    struct stat sb;
    if (j.output_dir && stat(j.output_dir, &sb) == 0 && S_ISDIR(sb.st_mode))
        list_dir(j.output_dir, "", arr, j.id, 0);
    bn_store_job_free(&j);
    return bn_api_reply_json(r, 200, o);
}

static const char *content_type(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot) return "application/octet-stream";
    if (strcmp(dot, ".json") == 0) return "application/json";
    if (strcmp(dot, ".txt") == 0 || strcmp(dot, ".md") == 0) return "text/plain; charset=utf-8";
    return "application/octet-stream";
}

/* Parses "bytes=a-b" | "bytes=a-" | "bytes=-n" against size. 0 ok, 1 ignore, -1 416. */
static int parse_range(const char *h, uint64_t size, uint64_t *from, uint64_t *to)
{
    if (strncmp(h, "bytes=", 6) != 0 || strchr(h, ',')) return 1;
    const char *p = h + 6;
    char *end;
    if (*p == '-') {
        unsigned long long n = strtoull(p + 1, &end, 10);
        if (*end || end == p + 1 || n == 0 || size == 0) return -1;
        *from = n >= size ? 0 : size - n;
        *to = size - 1;
        return 0;
    }
    unsigned long long a = strtoull(p, &end, 10);
    if (end == p || *end != '-') return 1;
    const char *q = end + 1;
    unsigned long long b = size ? size - 1 : 0;
    if (*q) {
        b = strtoull(q, &end, 10);
        if (*end) return 1;
        if (b >= size) b = size - 1;
    }
    if (a >= size || a > b) return -1;
    *from = a;
    *to = b;
    return 0;
}

static enum MHD_Result send_file(bn_api_req *r, const char *real)
{
    int fd = open(real, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        return bn_api_problem(r, 404, "path", "no artifact %s", r->subpath);
    }
    uint64_t size = (uint64_t)sb.st_size, from = 0, to = size ? size - 1 : 0;
    const char *range = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Range");
    int pr = range ? parse_range(range, size, &from, &to) : 1;
    if (pr < 0) {
        close(fd);
        snprintf(r->extra_value, sizeof r->extra_value, "bytes */%llu",
                 (unsigned long long)size);
        r->extra_header = MHD_HTTP_HEADER_CONTENT_RANGE;
        bn_api_problem(r, 416, "header.Range", "range %s is outside the file's %llu bytes",
                       range, (unsigned long long)size);
        return MHD_YES;
    }
    uint64_t len = pr == 0 ? to - from + 1 : size;
    struct MHD_Response *resp =
        MHD_create_response_from_fd_at_offset64(len, fd, pr == 0 ? from : 0);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type(real));
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    if (pr == 0) {
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)from,
                 (unsigned long long)to, (unsigned long long)size);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, cr);
    }
    return bn_api_queue(r, pr == 0 ? 206 : 200, resp);
}

enum MHD_Result bn_api_job_artifact(bn_api_req *r)
{
    if (strstr(r->subpath, "..") || r->subpath[0] == '/' || strchr(r->subpath, '%'))
        return bn_api_problem(r, 403, "path", "artifact path must stay inside the output "
                              "folder");
    if (!bn_api_rel_path_ok(r->subpath))
        return bn_api_problem(r, 404, "path", "no artifact %s", r->subpath);
    bn_store_job j;
    if (load(r, &j)) return MHD_YES;
    char root[PATH_MAX], real[PATH_MAX], joined[PATH_MAX * 2];
    bool have_root = j.output_dir && realpath(j.output_dir, root);
    if (have_root) snprintf(joined, sizeof joined, "%s/%s", root, r->subpath);
    bn_store_job_free(&j);
    if (!have_root) return bn_api_problem(r, 404, "path", "job %s has no output yet", r->id);
    if (!realpath(joined, real))
        return bn_api_problem(r, 404, "path", "no artifact %s", r->subpath);
    size_t n = strlen(root);
    if (strncmp(real, root, n) != 0 || real[n] != '/')
        return bn_api_problem(r, 403, "path", "artifact resolves outside the output folder");
    return send_file(r, real);
}
