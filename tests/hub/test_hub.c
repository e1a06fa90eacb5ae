/* test_hub.c - engine/hub against the fake Hub (tests/fake_hub) on 127.0.0.1, serving
 * ../shared/data/stories260K-hf: the cache layout, cache reuse (ours and one laid out
 * as huggingface_hub does), offline mode, resume after a dropped connection, checksum
 * mismatch, 401 (gated), 404, 429 + Retry-After, the size limit, the allow-list, two
 * fetches sharing one download, and `bitnetctl compress hf://...` end to end.
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/checksum.h"
#include "base/fsutil.h"
#include "bn_test.h"
#include "fake_hub.h"
#include "hub/hub.h"

#define REPO "karpathy/stories260K"
#define SRC "hf://" REPO

static fake_hub *hub;
static char *tmp;
static char cache[4096];
static const char *model;

static void setup(void)
{
    /* the caller's Hub settings must not leak into the tests */
    static const char *const vars[] = { "HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME" };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
    model = bn_test_data("stories260K-hf");
    static char model_buf[4096];
    snprintf(model_buf, sizeof model_buf, "%s", model);
    model = model_buf;
    tmp = bn_test_tmpdir("hub");
    snprintf(cache, sizeof cache, "%s/cache", tmp);
    hub = fake_hub_start();
    ck_assert_ptr_nonnull(hub);
    ck_assert_int_eq(fake_hub_add_repo(hub, REPO, model, NULL), 0);
    ck_assert_int_eq(fake_hub_add_repo(hub, "meta/gated", model, "hf_secret_token_1234"), 0);
}

static void teardown(void)
{
    fake_hub_stop(hub);
    bn_test_rmtree(tmp);
    free(tmp);
}

static bn_hub_config cfg(void)
{
    bn_hub_config c = { .endpoint = fake_hub_url(hub), .cache_dir = cache, .offline = 0,
                        .max_retry_wait_s = 2 };
    return c;
}

/* Collects events for assertions. */
typedef struct log { char text[8192]; int waits; double last_total; } log_t;
static bool on_update(void *p, uint64_t done, uint64_t total, double rate, const char *file, bool waiting)
{
    (void)done; (void)rate; (void)file;
    log_t *l = p;
    l->waits += waiting;
    l->last_total = (double)total;
    return false;
}
static void on_event(void *p, const char *level, const char *msg)
{
    log_t *l = p;
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "[%s] %s\n", level, msg);
}

static int fetch(const bn_hub_config *c, const char *src, char *dir, bn_err *err, log_t *l)
{
    bn_hub_progress p = { l, on_update, on_event };
    return bn_hub_fetch(src, c, l ? &p : NULL, dir, 4096, err);
}

static bool same_file(const char *a, const char *b)
{
    char ha[65], hb[65];
    bn_err e;
    return bn_sha256_file(a, ha, &e) == 0 && bn_sha256_file(b, hb, &e) == 0 && strcmp(ha, hb) == 0;
}

START_TEST(parse_and_allow)
{
    bn_hub_ref r;
    bn_err e = { 0 };
    ck_assert_int_eq(bn_hub_parse("hf://Org-1/name.v2", &r, &e), 0);
    ck_assert_str_eq(r.repo, "Org-1/name.v2");
    ck_assert_str_eq(r.revision, "main");
    ck_assert_int_eq(bn_hub_parse("hf://a/b@refs/pr/1", &r, &e), 0);
    ck_assert_str_eq(r.revision, "refs/pr/1");
    static const char *bad[] = { "hf://a", "hf://a/b/c", "hf://../b", "hf://a/..", "hf://a/b@",
                                 "hf://a/b@x/../y", "hf://a b/c", "hf://a/b@/x", "/models/x", "hf:///b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(bn_hub_parse(bad[i], &r, &e) == BN_EINVAL, "%s accepted", bad[i]);
    const char *allow[] = { "meta-llama/*", "Qwen/Qwen2.5-0.5B" };
    ck_assert(bn_hub_allowed("meta-llama/Llama-3.2-1B", allow, 2));
    ck_assert(bn_hub_allowed("Qwen/Qwen2.5-0.5B", allow, 2));
    ck_assert(!bn_hub_allowed("Qwen/Qwen2.5-1.5B", allow, 2));
    ck_assert(!bn_hub_allowed("meta-llamaX/y", allow, 2));
    ck_assert(!bn_hub_allowed("x/y", allow, 0));
    ck_assert(bn_hub_allowed("x/y", NULL, 0));
}
END_TEST

/* A first fetch lays out the cache as huggingface_hub does; a second reuses it. */
START_TEST(download_layout_and_reuse)
{
    bn_hub_config c = cfg();
    char dir[4096], p[8192], q[8192], link[256];
    bn_err e = { 0 };
    log_t l = { 0 };
    ck_assert_msg(fetch(&c, SRC, dir, &e, &l) == 0, "%s", e.msg);
    const char *commit = fake_hub_commit(hub, REPO);
    snprintf(p, sizeof p, "%s/models--karpathy--stories260K/snapshots/%s", cache, commit);
    ck_assert_str_eq(dir, p);
    static const char *files[] = { "config.json", "generation_config.json", "model.safetensors",
                                   "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                                   "tokenizer_config.json" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        snprintf(q, sizeof q, "%s/%s", model, files[i]);
        ck_assert_msg(same_file(p, q), "%s differs", files[i]);
        ssize_t n = readlink(p, link, sizeof link - 1);
        ck_assert_int_gt(n, 0);
        link[n] = 0;
        ck_assert_msg(strncmp(link, "../../blobs/", 12) == 0, "%s -> %s", files[i], link);
    }
    snprintf(p, sizeof p, "%s/README.md", dir); /* not needed: not fetched */
    ck_assert(!bn_fs_exists(p));
    /* the LFS blob is named by its sha256, refs/main holds the commit */
    char hex[65];
    snprintf(q, sizeof q, "%s/model.safetensors", model);
    ck_assert_int_eq(bn_sha256_file(q, hex, &e), 0);
    snprintf(p, sizeof p, "%s/models--karpathy--stories260K/blobs/%s", cache, hex);
    ck_assert(bn_fs_exists(p));
    char *ref;
    size_t n;
    snprintf(p, sizeof p, "%s/models--karpathy--stories260K/refs/main", cache);
    ck_assert_int_eq(bn_fs_read_file(p, 100, &ref, &n, &e), 0);
    ck_assert_str_eq(ref, commit);
    free(ref);
    fake_hub_stats s1 = fake_hub_get_stats(hub);
    ck_assert_int_eq(s1.api, 1);
    ck_assert_int_eq(s1.cdn, 1);
    ck_assert(!s1.saw_token);
    ck_assert_ptr_nonnull(strstr(l.text, "7 files"));
    /* again: only the listing is asked for */
    char dir2[4096];
    ck_assert_msg(fetch(&c, SRC, dir2, &e, NULL) == 0, "%s", e.msg);
    ck_assert_str_eq(dir2, dir);
    fake_hub_stats s2 = fake_hub_get_stats(hub);
    ck_assert_int_eq(s2.api, 2);
    ck_assert_int_eq(s2.cdn, s1.cdn);
    ck_assert_int_eq(s2.resolve, s1.resolve);
    ck_assert_uint_eq(s2.body_bytes, s1.body_bytes);
    /* offline: no request at all, the same snapshot, for "main" and for the commit */
    c.offline = 1;
    ck_assert_msg(fetch(&c, SRC, dir2, &e, NULL) == 0, "%s", e.msg);
    ck_assert_str_eq(dir2, dir);
    snprintf(p, sizeof p, SRC "@%s", commit);
    ck_assert_msg(fetch(&c, p, dir2, &e, NULL) == 0, "%s", e.msg);
    ck_assert_str_eq(dir2, dir);
    ck_assert_int_eq(fake_hub_get_stats(hub).api, 2);
    /* online but the Hub is down: the complete cached snapshot serves, with a warning */
    c.offline = 0;
    c.max_attempts = 2;
    fake_hub_fail_next(hub, 503, 0, 100);
    log_t l2 = { 0 };
    ck_assert_msg(fetch(&c, SRC, dir2, &e, &l2) == 0, "%s", e.msg);
    ck_assert_str_eq(dir2, dir);
    ck_assert_ptr_nonnull(strstr(l2.text, "unreachable"));
    ck_assert_int_eq(fetch(&c, SRC "@v3", dir2, &e, NULL), BN_EIO); /* not cached: the Hub's error */
    ck_assert_ptr_nonnull(strstr(e.msg, "HTTP 503"));
    fake_hub_fail_next(hub, 503, 0, 0);
    c.offline = 1;
    ck_assert_int_eq(fetch(&c, SRC "@v2", dir2, &e, NULL), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "offline"));
    ck_assert_int_eq(fetch(&c, "hf://other/model", dir2, &e, NULL), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "offline"));
}
END_TEST

/* A cache written the way huggingface_hub writes it is used without downloading. */
START_TEST(foreign_cache_reused)
{
    const char *commit = fake_hub_commit(hub, REPO);
    char repo[4200], p[8192], q[8192], hex[65];
    bn_err e = { 0 };
    snprintf(repo, sizeof repo, "%s/models--karpathy--stories260K", cache);
    snprintf(p, sizeof p, "%s/snapshots/%s", repo, commit);
    ck_assert_int_eq(bn_fs_mkdir_p(p, &e), 0);
    snprintf(p, sizeof p, "%s/blobs", repo);
    ck_assert_int_eq(bn_fs_mkdir_p(p, &e), 0);
    static const char *files[] = { "config.json", "generation_config.json", "model.safetensors",
                                   "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                                   "tokenizer_config.json" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(q, sizeof q, "%s/%s", model, files[i]);
        ck_assert_int_eq(bn_sha256_file(q, hex, &e), 0); /* any blob name will do for the test */
        snprintf(p, sizeof p, "%s/blobs/%s", repo, hex);
        ck_assert_int_eq(bn_fs_copy_file(q, p, &e), 0);
        snprintf(p, sizeof p, "%s/snapshots/%s/%s", repo, commit, files[i]);
        snprintf(q, sizeof q, "../../blobs/%s", hex);
        ck_assert_int_eq(symlink(q, p), 0);
    }
    bn_hub_config c = cfg();
    char dir[4096];
    ck_assert_msg(fetch(&c, SRC, dir, &e, NULL) == 0, "%s", e.msg);
    fake_hub_stats s = fake_hub_get_stats(hub);
    ck_assert_int_eq(s.api, 1);
    ck_assert_int_eq(s.cdn + s.resolve, 0);
}
END_TEST

/* A transfer cut mid-file: with one attempt the fetch fails and leaves only the
 * .incomplete blob (no snapshot entry, no ref); the next fetch resumes it with Range. */
START_TEST(resume_after_drop)
{
    bn_hub_config c = cfg();
    c.max_attempts = 1;
    char dir[4096], p[8192], q[8192];
    bn_err e = { 0 };
    fake_hub_drop_next(hub, "model.safetensors", 300000, 1);
    ck_assert_int_eq(fetch(&c, SRC, dir, &e, NULL), BN_EIO);
    ck_assert_ptr_nonnull(strstr(e.msg, "model.safetensors"));
    char hex[65];
    snprintf(q, sizeof q, "%s/model.safetensors", model);
    ck_assert_int_eq(bn_sha256_file(q, hex, &e), 0);
    snprintf(p, sizeof p, "%s/models--karpathy--stories260K/blobs/%s.incomplete", cache, hex);
    ck_assert_int_eq(bn_fs_file_size(p), 300000);
    snprintf(p, sizeof p, "%s/models--karpathy--stories260K/snapshots/%s/model.safetensors", cache,
             fake_hub_commit(hub, REPO));
    ck_assert(!bn_fs_exists(p));
    snprintf(p, sizeof p, "%s/models--karpathy--stories260K/refs/main", cache);
    ck_assert(!bn_fs_exists(p));
    /* resumed from byte 300000 */
    uint64_t before = fake_hub_get_stats(hub).body_bytes;
    log_t l = { 0 };
    ck_assert_msg(fetch(&c, SRC, dir, &e, &l) == 0, "%s", e.msg);
    fake_hub_stats s = fake_hub_get_stats(hub);
    ck_assert_int_eq(s.ranged, 1);
    /* the rest of the model (and the small files not reached before), not all of it */
    ck_assert_uint_ge(s.body_bytes - before, 1044992 - 300000);
    ck_assert_uint_lt(s.body_bytes - before, 1044992 - 300000 + 20000);
    ck_assert_ptr_nonnull(strstr(l.text, "resuming model.safetensors at 300000"));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    ck_assert(same_file(p, q));
    /* and within one fetch: two drops are retried and resumed */
    bn_test_rmtree(cache);
    c.max_attempts = 0;
    fake_hub_drop_next(hub, "model.safetensors", 500000, 2);
    ck_assert_msg(fetch(&c, SRC, dir, &e, NULL) == 0, "%s", e.msg);
    ck_assert(same_file(p, q));
}
END_TEST

START_TEST(checksum_mismatch)
{
    bn_hub_config c = cfg();
    char dir[4096], p[8192];
    bn_err e = { 0 };
    fake_hub_corrupt(hub, "model.safetensors", true);
    ck_assert_int_eq(fetch(&c, SRC, dir, &e, NULL), BN_EFORMAT);
    ck_assert_ptr_nonnull(strstr(e.msg, "checksum mismatch"));
    ck_assert_ptr_nonnull(strstr(e.msg, "model.safetensors"));
    /* nothing of it is kept or linked */
    char hex[65], q[8192];
    snprintf(q, sizeof q, "%s/model.safetensors", model);
    ck_assert_int_eq(bn_sha256_file(q, hex, &e), 0);
    snprintf(p, sizeof p, "%s/models--karpathy--stories260K/blobs/%s", cache, hex);
    ck_assert(!bn_fs_exists(p));
    snprintf(p, sizeof p, "%s/models--karpathy--stories260K/blobs/%s.incomplete", cache, hex);
    ck_assert(!bn_fs_exists(p));
    snprintf(p, sizeof p, "%s/models--karpathy--stories260K/snapshots/%s/model.safetensors", cache,
             fake_hub_commit(hub, REPO));
    ck_assert(!bn_fs_exists(p));
    fake_hub_corrupt(hub, "model.safetensors", false);
    ck_assert_msg(fetch(&c, SRC, dir, &e, NULL) == 0, "%s", e.msg);
}
END_TEST

START_TEST(gated_401_and_404)
{
    bn_hub_config c = cfg();
    char dir[4096];
    bn_err e = { 0 };
    ck_assert_int_eq(fetch(&c, "hf://meta/gated", dir, &e, NULL), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "HTTP 401"));
    ck_assert_ptr_nonnull(strstr(e.msg, "GatedRepo"));
    ck_assert_ptr_nonnull(strstr(e.msg, "HF_TOKEN"));
    c.token = "wrong";
    ck_assert_int_eq(fetch(&c, "hf://meta/gated", dir, &e, NULL), BN_EINVAL);
    ck_assert_ptr_null(strstr(e.msg, "wrong"));
    c.token = "hf_secret_token_1234";
    ck_assert_msg(fetch(&c, "hf://meta/gated", dir, &e, NULL) == 0, "%s", e.msg);
    ck_assert(fake_hub_get_stats(hub).saw_token);
    /* the token from HF_TOKEN */
    c.token = NULL;
    setenv("HF_TOKEN", "hf_secret_token_1234", 1);
    bn_test_rmtree(cache);
    ck_assert_msg(fetch(&c, "hf://meta/gated", dir, &e, NULL) == 0, "%s", e.msg);
    unsetenv("HF_TOKEN");
    ck_assert_int_eq(fetch(&c, "hf://nobody/nothing", dir, &e, NULL), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "RepoNotFound"));
    ck_assert_int_eq(fetch(&c, SRC "@v9", dir, &e, NULL), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "RevisionNotFound"));
}
END_TEST

START_TEST(rate_limited_429)
{
    bn_hub_config c = cfg();
    char dir[4096];
    bn_err e = { 0 };
    log_t l = { 0 };
    fake_hub_fail_next(hub, 429, 1, 2); /* the listing, then its retry */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_msg(fetch(&c, SRC, dir, &e, &l) == 0, "%s", e.msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    ck_assert_msg(secs >= 1.9, "Retry-After was not honoured: %.2f s", secs);
    ck_assert_ptr_nonnull(strstr(l.text, "HTTP 429"));
    ck_assert_int_eq(fake_hub_get_stats(hub).faults, 2);
    /* a server that keeps refusing: a clear error after the attempts */
    bn_test_rmtree(cache);
    c.max_attempts = 2;
    fake_hub_fail_next(hub, 429, 0, 100);
    ck_assert_int_eq(fetch(&c, SRC, dir, &e, NULL), BN_EIO);
    ck_assert_ptr_nonnull(strstr(e.msg, "HTTP 429"));
    fake_hub_fail_next(hub, 429, 0, 0);
}
END_TEST

START_TEST(limits)
{
    bn_hub_config c = cfg();
    char dir[4096];
    bn_err e = { 0 };
    c.max_bytes = 1000000;
    ck_assert_int_eq(fetch(&c, SRC, dir, &e, NULL), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "size limit"));
    ck_assert_int_eq(fake_hub_get_stats(hub).cdn, 0);
    c.max_bytes = 0;
    const char *allow[] = { "meta/*" };
    c.allow = allow;
    c.n_allow = 1;
    ck_assert_int_eq(fetch(&c, SRC, dir, &e, NULL), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "allow-list"));
    ck_assert_int_eq(fake_hub_get_stats(hub).api, 1); /* the size check's listing only */
}
END_TEST

typedef struct job { char dir[4096]; bn_err e; int rc; } job;
static void *fetch_thread(void *p)
{
    job *j = p;
    bn_hub_config c = cfg();
    j->rc = fetch(&c, SRC, j->dir, &j->e, NULL);
    return NULL;
}

/* Two fetches at once: one download (the second waits on the lock, then links). */
START_TEST(shared_download)
{
    fake_hub_drop_next(hub, "model.safetensors", 100000, 1); /* slows the first a little */
    job a = { 0 }, b = { 0 };
    pthread_t ta, tb;
    pthread_create(&ta, NULL, fetch_thread, &a);
    pthread_create(&tb, NULL, fetch_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_msg(a.rc == 0, "%s", a.e.msg);
    ck_assert_msg(b.rc == 0, "%s", b.e.msg);
    ck_assert_str_eq(a.dir, b.dir);
    fake_hub_stats s = fake_hub_get_stats(hub);
    ck_assert_uint_eq(s.body_bytes, 1044992 + 14759 + 7522 + 903 + 627 + 74 + 476); /* each file once */
}
END_TEST

/* bitnetctl compress hf://... with HF_ENDPOINT and HF_HOME, end to end. */
START_TEST(compress_end_to_end)
{
    char cmd[16384], out[8192], p[8400];
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(cmd, sizeof cmd, "HF_ENDPOINT=%s HF_HOME=%s/hfhome HF_TOKEN= %s compress " SRC " %s "
             "--config '{\"calibration\":{\"samples\":8,\"sequence_length\":64},\"evaluate\":{\"windows\":2},"
             "\"fine_tune\":{\"enabled\":false}}' >%s/compress.log 2>&1",
             fake_hub_url(hub), tmp, bn_test_build_path("cli/bitnetctl"), out, tmp);
    int st = system(cmd);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(p, sizeof p, "cat %s/compress.log >&2", tmp);
        (void)!system(p);
    }
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    snprintf(p, sizeof p, "%s/quantized/model.safetensors", out);
    ck_assert(bn_fs_exists(p));
    snprintf(p, sizeof p, "%s/compression_metadata.json", out);
    char *md;
    size_t n;
    bn_err e;
    ck_assert_int_eq(bn_fs_read_file(p, 1 << 24, &md, &n, &e), 0);
    cJSON *doc = cJSON_Parse(md);
    free(md);
    ck_assert_ptr_nonnull(doc);
    ck_assert_str_eq(cJSON_GetObjectItem(doc, "source_model")->valuestring, SRC);
    ck_assert_ptr_nonnull(strstr(cJSON_GetObjectItem(doc, "source_snapshot")->valuestring, "/snapshots/"));
    cJSON_Delete(doc);
    snprintf(p, sizeof p, "%s/hfhome/hub/models--karpathy--stories260K/refs/main", tmp);
    ck_assert(bn_fs_exists(p));
    /* eval on the same source, offline: the cache alone */
    snprintf(cmd, sizeof cmd, "HF_HUB_OFFLINE=1 HF_ENDPOINT=http://127.0.0.1:9 HF_HOME=%s/hfhome %s eval " SRC
             " --text %s/config.json --ctx 32 >%s/eval.log 2>&1", tmp, bn_test_build_path("cli/bitnetctl"), model, tmp);
    st = system(cmd);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(p, sizeof p, "cat %s/eval.log >&2", tmp);
        (void)!system(p);
    }
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* generate, offline too */
    snprintf(cmd, sizeof cmd, "HF_HUB_OFFLINE=1 HF_HOME=%s/hfhome %s generate " SRC
             " --greedy --prompt 'Once upon a time' -n 8 >%s/gen.log 2>&1", tmp, bn_test_build_path("cli/bitnetctl"), tmp);
    st = system(cmd);
    snprintf(p, sizeof p, "%s/gen.log", tmp);
    char *gen = NULL;
    ck_assert_int_eq(bn_fs_read_file(p, 1 << 20, &gen, &n, &e), 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", gen);
    ck_assert_msg(strstr(gen, "Once upon a time") != NULL, "%s", gen);
    free(gen);
}
END_TEST

int main(void)
{
    bn_test_require_data("stories260K-hf/model.safetensors");
    Suite *s = suite_create("hub");
    TCase *tc = tcase_create("fake hub");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, parse_and_allow);
    tcase_add_test(tc, download_layout_and_reuse);
    tcase_add_test(tc, foreign_cache_reused);
    tcase_add_test(tc, resume_after_drop);
    tcase_add_test(tc, checksum_mismatch);
    tcase_add_test(tc, gated_401_and_404);
    tcase_add_test(tc, rate_limited_429);
    tcase_add_test(tc, limits);
    tcase_add_test(tc, shared_download);
    tcase_add_test(tc, compress_end_to_end);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
