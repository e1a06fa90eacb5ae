/* fake_engine.c - a stand-in for the engine's pipeline, for service tests only.
 *
 * It implements the bn_engine.h pipeline contract (stages, checkpoints in the
 * work folder, progress/event/metric callbacks, cancel at safe points, an output folder
 * written as <output>.partial then renamed) but computes nothing: each stage sleeps
 * BN_FAKE_STAGE_MS milliseconds (default 40) in 8 steps. The output is a deterministic
 * function of the model's config.json and the seed, so a run interrupted anywhere and
 * resumed must produce the same bytes as an uninterrupted one. A model whose
 * config.json contains "fake_fail" fails in quantize. Like the engine, it passes the
 * caller's safe point (bn_progress.may_write) before each checkpoint and the export. The service tests use it to kill
 * the daemon at exact points quickly; the real engine is tested with bitnetd itself.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bn_engine.h"

/* ---- pipeline ---------------------------------------------------------------------- */

static void ckpt_path(const char *work, int s, char *out, size_t len)
{
    snprintf(out, len, "%s/stage-%s.json", work, bn_stage_name((bn_stage)s));
}

bn_stage bn_pipeline_resume_stage(const char *work_dir)
{
    for (int s = 0; s < BN_STAGE_COUNT; s++) {
        char p[4096];
        ckpt_path(work_dir, s, p, sizeof p);
        if (access(p, F_OK) != 0) return (bn_stage)s;
    }
    return BN_STAGE_COUNT;
}

static uint64_t fnv(const char *data, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)data[i]) * 1099511628211ull;
    return h;
}

static int read_file(const char *path, char **out, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)len + 1);
    *n = fread(*out, 1, (size_t)len, f);
    (*out)[*n] = 0;
    fclose(f);
    return 0;
}

static int write_synced(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    int rc = (write(fd, data, n) == (ssize_t)n && fsync(fd) == 0) ? 0 : -1;
    close(fd);
    return rc;
}

static int export_output(const bn_pipeline_paths *p, uint64_t h, bn_err *err)
{
    char partial[4096], file[4200];
    if (access(p->output_dir, F_OK) == 0) return 0; /* renamed before a crash */
    snprintf(partial, sizeof partial, "%s.partial", p->output_dir);
    mkdir(partial, 0755);
    size_t n = 64 * 1024;
    unsigned char *blob = malloc(n);
    uint64_t x = h;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        blob[i] = (unsigned char)x;
    }
    snprintf(file, sizeof file, "%s/model.safetensors", partial);
    int rc = write_synced(file, blob, n);
    free(blob);
    char meta[256];
    int m = snprintf(meta, sizeof meta, "{\"checksum\":\"%016llx\",\"bytes\":%zu}\n",
                     (unsigned long long)h, n);
    snprintf(file, sizeof file, "%s/compression_metadata.json", partial);
    if (rc || write_synced(file, meta, (size_t)m))
        return bn_err_set(err, BN_EIO, "export: writing %s: %s", file, strerror(errno));
    if (rename(partial, p->output_dir) != 0)
        return bn_err_set(err, BN_EIO, "export: rename: %s", strerror(errno));
    return 0;
}

static void metric(const bn_progress *pr, const char *k, double v, int64_t step)
{
    if (pr && pr->metric) pr->metric(pr->ctx, k, v, step);
}

static void stage_metrics(const bn_progress *pr, int s, const bn_options *o)
{
    switch (s) {
    case BN_STAGE_CALIBRATE:
        metric(pr, "compression/original_size_mb", 1.04, -1);
        metric(pr, "compression/pre_perplexity", 4.08, -1);
        break;
    case BN_STAGE_QUANTIZE:
        metric(pr, "compression/ratio", 9.5, -1);
        metric(pr, "compression/sparsity_ratio", 0.33, -1);
        break;
    case BN_STAGE_FINETUNE:
        for (int i = 0; o->fine_tune.enabled && i < 5; i++)
            metric(pr, "fine_tune/loss", 3.0 - 0.1 * i, i);
        break;
    case BN_STAGE_EXPORT:
        metric(pr, "phase/compression_ratio", 9.5, -1);
        metric(pr, "phase/success", 1, -1);
        break;
    default:
        break;
    }
}

static bool may_write(const bn_progress *pr, int s, const char *what)
{
    return !pr || !pr->may_write || pr->may_write(pr->ctx, (bn_stage)s, what);
}

int bn_pipeline_run(const bn_pipeline_paths *p, const bn_options *opt,
                    const bn_progress *progress, bn_err *err)
{
    const char *env = getenv("BN_FAKE_STAGE_MS");
    long stage_ms = env ? atol(env) : 40;
    /* BN_FAKE_QUIET=1: progress only at the start of each stage, so that the next thing
     * the worker hears after the start is the safe point before the checkpoint. */
    bool quiet = getenv("BN_FAKE_QUIET") != NULL;
    char cfg[4096], *text;
    size_t n;
    snprintf(cfg, sizeof cfg, "%s/config.json", p->model_dir);
    if (read_file(cfg, &text, &n))
        return bn_err_set(err, BN_EIO, "load: %s: %s", cfg, strerror(errno));
    bool fail = strstr(text, "fake_fail") != NULL;
    uint64_t h = fnv(text, n, 1469598103934665603ull ^ opt->seed);
    free(text);
    for (int s = bn_pipeline_resume_stage(p->work_dir); s < BN_STAGE_COUNT; s++) {
        for (int step = 0; step <= 8; step++) {
            if (progress && progress->update && (!quiet || step == 0) &&
                progress->update(progress->ctx, (bn_stage)s, step / 8.0, bn_stage_name((bn_stage)s)))
                return bn_err_set(err, BN_ECANCELLED, "%s: cancelled", bn_stage_name((bn_stage)s));
            if (step < 8) {
                struct timespec ts = {stage_ms / 8 / 1000, (stage_ms / 8 % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
        }
        if (fail && s == BN_STAGE_QUANTIZE)
            return bn_err_set(err, BN_EFORMAT, "config.json: fake_fail requested");
        if (s == BN_STAGE_FINETUNE && !opt->fine_tune.enabled && progress && progress->event)
            progress->event(progress->ctx, (bn_stage)s, "info", "fine-tuning disabled");
        stage_metrics(progress, s, opt);
        if (s == BN_STAGE_EXPORT && !may_write(progress, s, "<output>.partial"))
            return bn_err_set(err, BN_ECANCELLED, "export: stopped before writing");
        if (s == BN_STAGE_EXPORT && export_output(p, h, err)) return err->code;
        if (!may_write(progress, s, "checkpoint"))
            return bn_err_set(err, BN_ECANCELLED, "%s: stopped before its checkpoint",
                              bn_stage_name((bn_stage)s));
        char ck[4200];
        ckpt_path(p->work_dir, s, ck, sizeof ck);
        if (write_synced(ck, "{}\n", 3))
            return bn_err_set(err, BN_EIO, "checkpoint %s: %s", ck, strerror(errno));
    }
    return 0;
}
