/* paths.c - where a job may read and write.
 *
 * A model path must resolve (realpath, so symlinks are followed) to a folder inside one
 * of the model roots, or be an hf://ORG/NAME[@REV] source whose repository is on the
 * hub allow-list (the job's load stage downloads it); an output is a relative name whose folder lands inside the output
 * root. Everything that could step outside is refused with 403 before touching the
 * filesystem: absolute paths elsewhere, ".." components, percent-encoded text (the API
 * never decodes it, so "%2e%2e" is refused rather than guessed at), control characters;
 * after resolution, a symlink that leads outside is refused too.
 */
#include "api_internal.h"

#include "hub/hub.h"

#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool has_percent_escape(const char *p)
{
    for (; *p; p++)
        if (p[0] == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2]))
            return true;
    return false;
}

static bool has_control(const char *p)
{
    for (; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) return true;
    return false;
}

static bool has_dotdot(const char *p)
{
    const char *s = p;
    while (*s) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 2 && s[0] == '.' && s[1] == '.') return true;
        if (!e) break;
        s = e + 1;
    }
    return false;
}

/* True when path equals root or lies below it (both canonical). */
static bool inside(const char *root, const char *path)
{
    size_t n = strlen(root);
    if (strncmp(root, path, n) != 0) return false;
    return path[n] == 0 || path[n] == '/' || (n == 1 && root[0] == '/');
}

/* A relative name: non-empty components of [A-Za-z0-9._-], no "." or "..", no leading
 * dot (hidden files and ".partial" folders are never addressable). */
bool bn_api_rel_path_ok(const char *p)
{
    if (!p || !*p || *p == '/' || strlen(p) > 255) return false;
    const char *s = p;
    for (;;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || s[0] == '.') return false;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (!isalnum(c) && c != '.' && c != '_' && c != '-') return false;
        }
        if (!e) return true;
        s = e + 1;
    }
}

int bn_api_check_model(bn_api *api, const char *model, char *resolved, size_t len,
                       unsigned *code, char *why, size_t whylen)
{
    *code = 403;
    if (has_control(model) || has_percent_escape(model) || has_dotdot(model)) {
        snprintf(why, whylen, "model path must not contain '..', control characters or "
                              "percent-encoding");
        return -1;
    }
    if (bn_hub_is_source(model)) { /* downloaded by the job's load stage */
        bn_hub_ref ref;
        bn_err e = { 0 };
        if (bn_hub_parse(model, &ref, &e)) {
            *code = 400;
            snprintf(why, whylen, "%s", e.msg);
            return -1;
        }
        if (api->cfg.n_hub_allow == 0) {
            snprintf(why, whylen, "hf:// model sources are disabled on this server (hub.allow is empty)");
            return -1;
        }
        if (!bn_hub_allowed(ref.repo, api->cfg.hub_allow, api->cfg.n_hub_allow)) {
            snprintf(why, whylen, "repository %s is not on this server's hub allow-list (hub.allow)", ref.repo);
            return -1;
        }
        snprintf(resolved, len, "hf://%s@%s", ref.repo, ref.revision);
        return 0;
    }
    char joined[PATH_MAX];
    if (model[0] == '/') {
        snprintf(joined, sizeof joined, "%s", model);
        bool lexically = false;
        for (int i = 0; i < api->cfg.n_model_roots; i++)
            lexically |= inside(api->model_roots[i], model);
        if (!lexically) {
            snprintf(why, whylen, "model path is outside the model roots");
            return -1;
        }
    } else {
        if (api->cfg.n_model_roots == 0) {
            snprintf(why, whylen, "no model root is configured");
            return -1;
        }
        snprintf(joined, sizeof joined, "%s/%s", api->model_roots[0], model);
    }
    char real[PATH_MAX];
    if (!realpath(joined, real)) {
        *code = 400;
        snprintf(why, whylen, "model folder not found: %s", strerror(errno));
        return -1;
    }
    bool ok = false;
    for (int i = 0; i < api->cfg.n_model_roots; i++) ok |= inside(api->model_roots[i], real);
    if (!ok) {
        snprintf(why, whylen, "model path resolves outside the model roots (symlink)");
        return -1;
    }
    struct stat sb;
    char cfg[PATH_MAX + 16];
    snprintf(cfg, sizeof cfg, "%s/config.json", real);
    if (stat(real, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(cfg, R_OK) != 0) {
        *code = 400;
        snprintf(why, whylen, "model must be a Hugging Face folder with a readable config.json");
        return -1;
    }
    snprintf(resolved, len, "%s", real);
    return 0;
}

int bn_api_check_output(bn_api *api, const char *output, char *resolved, size_t len,
                        unsigned *code, char *why, size_t whylen)
{
    *code = 403;
    if (output[0] == '/' || has_control(output) || has_percent_escape(output) ||
        has_dotdot(output)) {
        snprintf(why, whylen, "output must be a relative name under the output root "
                              "(no '..', absolute path or percent-encoding)");
        return -1;
    }
    if (!bn_api_rel_path_ok(output)) {
        *code = 400;
        snprintf(why, whylen, "output must be a relative name of letters, digits, '.', '_', "
                              "'-' and '/' (no empty or hidden components, max 255)");
        return -1;
    }
    char full[PATH_MAX];
    snprintf(full, sizeof full, "%s/%s", api->output_root, output);
    /* the deepest existing ancestor must resolve inside the output root */
    char probe[PATH_MAX];
    snprintf(probe, sizeof probe, "%s", full);
    for (;;) {
        char real[PATH_MAX];
        if (realpath(probe, real)) {
            if (!inside(api->output_root, real)) {
                snprintf(why, whylen, "output resolves outside the output root (symlink)");
                return -1;
            }
            break;
        }
        char *slash = strrchr(probe, '/');
        if (!slash || slash == probe) break;
        *slash = 0;
    }
    struct stat sb;
    if (lstat(full, &sb) == 0) {
        *code = 409;
        snprintf(why, whylen, "output folder %s already exists", output);
        return -1;
    }
    snprintf(resolved, len, "%s", full);
    return 0;
}

