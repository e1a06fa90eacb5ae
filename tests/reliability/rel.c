/* rel.c - see rel.h. */
#include "rel.h"

#include <check.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bn_test.h"
#include "base/checksum.h"

void rel_real_model(const char *models_dir, int seed)
{
    char dir[8192], cmd[16384];
    snprintf(dir, sizeof dir, "%s/tiny", models_dir);
    bn_test_rmtree(dir);
    snprintf(cmd, sizeof cmd, "%s init-model %s --shape tiny --seed %d >/dev/null",
             bn_test_build_path("cli/bitnetctl"), dir, seed);
    ck_assert_int_eq(system(cmd), 0);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = '\0';
    fclose(f);
    return buf;
}

static int check_file(const char *dir, const cJSON *entry, char *why, size_t len)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(entry, "path");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(entry, "bytes");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(entry, "sha256");
    if (!cJSON_IsString(p) || !cJSON_IsNumber(b) || !cJSON_IsString(h)) {
        snprintf(why, len, "%s: malformed files[] entry", dir);
        return 0;
    }
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, p->valuestring);
    struct stat st;
    if (stat(path, &st) != 0 || (double)st.st_size != b->valuedouble) {
        snprintf(why, len, "%s: size differs from metadata", path);
        return 0;
    }
    char hex[65];
    bn_err err = {0};
    if (bn_sha256_file(path, hex, &err) != 0 || strcmp(hex, h->valuestring) != 0) {
        snprintf(why, len, "%s: sha256 differs from metadata", path);
        return 0;
    }
    return 1;
}

int out_folder_complete(const char *dir, char *why, size_t len)
{
    char meta[8192];
    snprintf(meta, sizeof meta, "%s/compression_metadata.json", dir);
    char *text = slurp(meta);
    if (!text) {
        snprintf(why, len, "%s: no compression_metadata.json", dir);
        return 0;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    int ok = cJSON_IsArray(files) && cJSON_GetArraySize(files) >= 3;
    if (!ok) snprintf(why, len, "%s: metadata has no files[] list", dir);
    const cJSON *e;
    cJSON_ArrayForEach(e, files) {
        if (!ok) break;
        ok = check_file(dir, e, why, len);
    }
    cJSON_Delete(root);
    return ok;
}

static int is_partial(const char *name)
{
    size_t n = strlen(name);
    return n >= 8 && strcmp(name + n - 8, ".partial") == 0;
}

int out_root_complete(const char *root, char *why, size_t len)
{
    DIR *d = opendir(root);
    if (!d) return 0;
    int checked = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || is_partial(de->d_name)) continue;
        char dir[8192];
        snprintf(dir, sizeof dir, "%s/%s", root, de->d_name);
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        if (!out_folder_complete(dir, why, len)) { checked = -1; break; }
        checked++;
    }
    closedir(d);
    return checked;
}

int out_root_partials(const char *root)
{
    DIR *d = opendir(root);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (is_partial(de->d_name)) n++;
    closedir(d);
    return n;
}
