/* cmd_compress.c - `bitnetctl compress MODEL_DIR OUT_DIR`: the whole pipeline in-process.
 *
 * Flags become a JSON config object (the same object a REST job carries), validated by
 * bn_options_from_json: --config gives the base (a file, or inline JSON), then
 * --sparsity-threshold, --per-tensor, --preserve (added to the patterns) and --threads
 * override it. Progress goes to stderr as a bar when stderr is a terminal (plain lines
 * otherwise); events print as they come; the end shows a summary table (or JSON with
 * --json). The work folder (stage checkpoints) is <OUT>.work unless --work-dir is
 * given; the default one is removed at the end, an explicit one is kept so that a
 * rerun resumes. Ctrl-C cancels at the next tensor. On failure nothing is left at OUT.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/device.h"
#include "bn_engine.h"
#include "cli.h"
#include "base/clock.h"
#include "base/fsutil.h"

/* Atomic: the handler can run on one of OpenBLAS's threads, which start before main(). */
static atomic_int interrupted;
static void on_sigint(int sig) { (void)sig; atomic_store(&interrupted, 1); }

typedef struct {
    bool tty, json;
    double last_draw;
    int last_stage;
    char keys[64][64];
    double vals[64];
    int n;
    char src_keys[32][64];  /* where each perplexity/loss metric's text came from */
    char src_vals[32][600];
    int n_src;
} ui;

static bool on_update(void *p, bn_stage stage, double f, const char *detail)
{
    ui *u = p;
    double t = bn_clock_mono_s();
    bool new_stage = (int)stage != u->last_stage;
    if (u->tty) {
        if (!new_stage && f < 1 && t - u->last_draw < 0.1) return atomic_load(&interrupted);
        int w = 30, fill = (int)(f * w + 0.5);
        char bar[64];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '-';
        bar[w] = 0;
        fprintf(stderr, "\r\033[K%-9s [%s] %3.0f%% %.40s", bn_stage_name(stage), bar, f * 100, detail ? detail : "");
        if (f >= 1) fputc('\n', stderr);
        fflush(stderr);
    } else if (new_stage && !u->json) {
        fprintf(stderr, "bitnetctl: %s...\n", bn_stage_name(stage));
    }
    u->last_stage = (int)stage;
    u->last_draw = t;
    return atomic_load(&interrupted);
}

static void on_event(void *p, bn_stage stage, const char *level, const char *msg)
{
    ui *u = p;
    if (u->tty) fputs("\r\033[K", stderr);
    fprintf(stderr, "bitnetctl: [%s] %s: %s\n", level, bn_stage_name(stage), msg);
}

static void on_metric(void *p, const char *key, double v, int64_t step)
{
    ui *u = p;
    if (step >= 0) return;
    for (int i = 0; i < u->n; i++)
        if (!strcmp(u->keys[i], key)) { u->vals[i] = v; return; }
    if (u->n < 64) {
        snprintf(u->keys[u->n], sizeof u->keys[0], "%s", key);
        u->vals[u->n++] = v;
    }
}

static void on_source(void *p, const char *key, const char *value)
{
    ui *u = p;
    int i = 0;
    while (i < u->n_src && strcmp(u->src_keys[i], key)) i++;
    if (i == u->n_src) {
        if (u->n_src == 32) return;
        u->n_src++;
        snprintf(u->src_keys[i], sizeof u->src_keys[0], "%s", key);
    }
    snprintf(u->src_vals[i], sizeof u->src_vals[0], "%s", value);
}

static const char *source_of(const ui *u, const char *key)
{
    for (int i = 0; i < u->n_src; i++)
        if (!strcmp(u->src_keys[i], key)) return u->src_vals[i];
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bitnetctl compress MODEL_DIR|hf://ORG/NAME[@REV] OUT_DIR [--sparsity-threshold X|auto] [--per-tensor]\n"
               "       [--preserve PATTERN]... [--threads N] [--device cpu|cuda|auto] [--config FILE|JSON] [--work-dir DIR] [--json]\n"
               "       [--calibration FILE] [--fine-tune] [--max-minutes M]\n"
               "--calibration FILE: calibration and fine-tuning text (.txt: documents at blank lines; .jsonl:\n"
               "a \"text\" field per line). --fine-tune: STE fine-tuning when compression degrades the held-out\n"
               "perplexity by more than fine_tune.threshold; --max-minutes: its time budget (default 30): epochs\n"
               "run until it ends or the selection perplexity stops improving (fine_tune.patience), and the best\n"
               "weights are kept. Without --calibration the text is synthetic and fine-tuning is skipped.\n"
               "SIGINT/SIGTERM stop\n"
               "at the next safe point with a checkpoint; with --work-dir the same command resumes.\n"
               "Ternarizes a Hugging Face Llama/Mistral/Qwen2 folder (BitNet b1.58) and writes OUT_DIR with the\n"
               "dequantized FP16 model, quantized/ (packed 2-bit) and compression_metadata.json.\n"
               "hf://ORG/NAME: downloaded into the Hugging Face cache first (HF_ENDPOINT, HF_TOKEN, HF_HOME,\n"
               "HF_HUB_OFFLINE; docs/HUB.md).\n");
}

/* --config: a file path, or the JSON text itself */
static cJSON *load_config(const char *arg)
{
    char *text = NULL;
    size_t len = 0;
    bn_err err = { 0 };
    cJSON *j;
    if (arg[0] != '{' && bn_fs_exists(arg)) {
        if (bn_fs_read_file(arg, 16u << 20, &text, &len, &err)) {
            bn_cli_errorf("compress: --config: %s", err.msg);
            return NULL;
        }
        j = cJSON_ParseWithLength(text, len);
        free(text);
    } else {
        j = cJSON_Parse(arg);
    }
    if (!cJSON_IsObject(j)) {
        bn_cli_errorf("compress: --config: not a JSON object (give a file or inline JSON)");
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static void set_key(cJSON *o, const char *k, cJSON *v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    cJSON_AddItemToObject(o, k, v);
}

/* cfg[k] as an object (created, or replacing a non-object). */
static cJSON *sub_object(cJSON *cfg, const char *k)
{
    cJSON *o = cJSON_GetObjectItemCaseSensitive(cfg, k);
    if (cJSON_IsObject(o)) return o;
    o = cJSON_CreateObject();
    set_key(cfg, k, o);
    return o;
}

static cJSON *build_config(int argc, char **argv, bool *json_out, const char **work_dir, int *bad)
{
    static const struct option opts[] = {
        { "sparsity-threshold", required_argument, 0, 't' }, { "per-tensor", no_argument, 0, 'p' },
        { "preserve", required_argument, 0, 'P' }, { "threads", required_argument, 0, 'j' },
        { "config", required_argument, 0, 'c' }, { "work-dir", required_argument, 0, 'w' },
        { "json", no_argument, 0, 'J' }, { "help", no_argument, 0, 'h' },
        { "calibration", required_argument, 0, 'C' }, { "fine-tune", no_argument, 0, 'F' },
        { "max-minutes", required_argument, 0, 'M' }, { "device", required_argument, 0, 'D' },
        { 0, 0, 0, 0 },
    };
    cJSON *cfg = NULL;
    for (int i = 1; i + 1 < argc; i++) /* --config first: flags override it */
        if (!strcmp(argv[i], "--config")) {
            cJSON_Delete(cfg);
            if (!(cfg = load_config(argv[i + 1]))) { *bad = 1; return NULL; }
        }
    if (!cfg) cfg = cJSON_CreateObject();
    cJSON *extra = cJSON_CreateArray();
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            if (!strcmp(optarg, "auto")) set_key(cfg, "sparsity_threshold", cJSON_CreateString("auto"));
            else {
                char *end;
                double v = strtod(optarg, &end);
                if (!*optarg || *end) { bn_cli_errorf("compress: --sparsity-threshold needs a number or auto"); *bad = 2; }
                set_key(cfg, "sparsity_threshold", cJSON_CreateNumber(v));
            }
            break;
        case 'p': set_key(cfg, "scale", cJSON_CreateString("per_tensor")); break;
        case 'P': cJSON_AddItemToArray(extra, cJSON_CreateString(optarg)); break;
        case 'j': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end) { bn_cli_errorf("compress: --threads needs an integer"); *bad = 2; }
            set_key(cfg, "threads", cJSON_CreateNumber((double)v));
            break;
        }
        case 'c': break;
        case 'C': { /* calibration (and fine-tuning) text: a .txt or .jsonl file */
            cJSON *cal = sub_object(cfg, "calibration");
            set_key(cal, "dataset", cJSON_CreateString("custom"));
            cJSON_DeleteItemFromObjectCaseSensitive(cal, "texts");
            set_key(cal, "path", cJSON_CreateString(optarg));
            break;
        }
        case 'F': set_key(sub_object(cfg, "fine_tune"), "enabled", cJSON_CreateBool(1)); break;
        case 'M': {
            char *end;
            double v = strtod(optarg, &end);
            if (!*optarg || *end || !(v > 0)) { bn_cli_errorf("compress: --max-minutes needs a positive number"); *bad = 2; }
            set_key(sub_object(cfg, "fine_tune"), "max_minutes", cJSON_CreateNumber(v));
            break;
        }
        case 'D': set_key(cfg, "device", cJSON_CreateString(optarg)); break; /* checked below */
        case 'w': *work_dir = optarg; break;
        case 'J': *json_out = true; break;
        case 'h': usage(stdout); *bad = -1; break;
        default: *bad = 2; break;
        }
    }
    if (cJSON_GetArraySize(extra) > 0) {
        cJSON *pres = cJSON_GetObjectItemCaseSensitive(cfg, "preserve");
        if (!pres) { /* defaults + the new patterns */
            bn_options d;
            bn_options_default(&d);
            pres = cJSON_AddArrayToObject(cfg, "preserve");
            for (int i = 0; i < d.n_preserve; i++) cJSON_AddItemToArray(pres, cJSON_CreateString(d.preserve[i]));
            bn_options_free(&d);
        }
        if (cJSON_IsArray(pres))
            for (cJSON *e = extra->child; e; e = e->next) cJSON_AddItemToArray(pres, cJSON_CreateString(e->valuestring));
    }
    cJSON_Delete(extra);
    return cfg;
}

static const char *metric(const ui *u, const char *key, char *buf, size_t len, const char *fmt)
{
    for (int i = 0; i < u->n; i++)
        if (!strcmp(u->keys[i], key)) { snprintf(buf, len, fmt, u->vals[i]); return buf; }
    return "n/a";
}

static void print_summary(const ui *u, const char *out, double secs)
{
    static const struct { const char *label, *key, *fmt; } rows[] = {
        { "parameters", "compression/total_params", "%.0f" },
        { "ternarized parameters", "compression/quantized_params", "%.0f" },
        { "ternarized tensors", "compression/layers_quantized", "%.0f" },
        { "sparsity (zero codes)", "compression/sparsity_ratio", "%.4f" },
        { "input size (MiB)", "compression/original_size_mb", "%.2f" },
        { "quantized size (MiB)", "compression/compressed_size_mb", "%.2f" },
        { "compression ratio", "compression/ratio", "%.2fx" },
        { "pre perplexity", "compression/pre_perplexity", "%.4f" },
        { "post perplexity", "compression/post_perplexity", "%.4f" },
        { "post-finetune perplexity", "compression/post_finetune_perplexity", "%.4f" },
        { "fine-tune epochs", "compression/fine_tune_epochs", "%.2f" },
        { "final perplexity", "phase/final_perplexity", "%.4f" },
    };
    char buf[64];
    bool synthetic = false;
    printf("%-24s %s\n", "output", out);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *v = metric(u, rows[i].key, buf, sizeof buf, rows[i].fmt);
        const char *src = source_of(u, rows[i].key);
        bool syn = src && !strncmp(src, "synthetic", 9) && strcmp(v, "n/a");
        synthetic |= syn;
        printf("%-24s %s%s\n", rows[i].label, v, syn ? "  (SYNTHETIC text)" : "");
    }
    for (int i = 0; i < u->n_src; i++)
        if (!strcmp(u->src_keys[i], "compression/pre_perplexity") ||
            !strcmp(u->src_keys[i], "compression/post_finetune_perplexity"))
            printf("%-24s %s: %s\n", "text", u->src_keys[i] + 12, u->src_vals[i]);
    if (synthetic)
        printf("%-24s %s\n", "warning", "perplexities on the 5 synthetic templates say nothing about "
               "real text; pass --calibration FILE");
    printf("%-24s %.2f\n", "time (s)", secs);
}

int bn_cli_compress(int argc, char **argv)
{
    bool json = false;
    const char *work_arg = NULL;
    int bad = 0;
    cJSON *cfg = build_config(argc, argv, &json, &work_arg, &bad);
    if (bad) {
        cJSON_Delete(cfg);
        if (bad > 0) usage(stderr);
        return bad < 0 ? 0 : 2;
    }
    if (optind != argc - 2) {
        cJSON_Delete(cfg);
        usage(stderr);
        return 2;
    }
    const char *model = argv[optind], *out = argv[optind + 1];
    bn_options opt;
    bn_err err = { 0 };
    int rc = bn_options_from_json(cfg, &opt, &err);
    cJSON_Delete(cfg);
    if (rc) {
        bn_cli_errorf("compress: %s", err.msg);
        return 2;
    }
    char why[512];
    if (opt.device == BN_DEVICE_CUDA && !bn_device_cuda_usable(why, sizeof why)) {
        bn_cli_errorf("compress: --device: %s", why);
        bn_options_free(&opt);
        return 2;
    }
    char work[PATH_MAX];
    snprintf(work, sizeof work, "%s", work_arg ? work_arg : "");
    if (!work_arg && snprintf(work, sizeof work, "%s.work", out) >= (int)sizeof work) {
        bn_cli_errorf("compress: output path too long");
        bn_options_free(&opt);
        return 2;
    }
    if (bn_fs_exists(out)) {
        bn_cli_errorf("compress: output folder %s already exists", out);
        bn_options_free(&opt);
        return 1;
    }
    ui u = { .tty = bn_cli_tty(), .json = json, .last_stage = -1 };
    bn_progress prog = { .ctx = &u, .update = on_update, .event = on_event, .metric = on_metric, .source = on_source };
    bn_pipeline_paths paths = { model, out, work, NULL, NULL };
    struct sigaction sa = { 0 }, old;
    sa.sa_handler = on_sigint;
    struct sigaction old_term;
    sigaction(SIGINT, &sa, &old);
    sigaction(SIGTERM, &sa, &old_term);
    double t0 = bn_clock_mono_s();
    rc = bn_pipeline_run(&paths, &opt, &prog, &err);
    double secs = bn_clock_mono_s() - t0;
    sigaction(SIGINT, &old, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (u.tty) fputs("\r\033[K", stderr);
    if (!work_arg || rc == 0) bn_fs_rm_rf(work, NULL);
    bn_options_free(&opt);
    if (rc) {
        bn_cli_errorf("compress: %s", err.msg);
        return rc == BN_ECANCELLED ? 130 : 1;
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "output", out);
        cJSON_AddNumberToObject(o, "seconds", secs);
        cJSON *m = cJSON_AddObjectToObject(o, "metrics");
        for (int i = 0; i < u.n; i++) cJSON_AddNumberToObject(m, u.keys[i], u.vals[i]);
        cJSON *srcs = cJSON_AddObjectToObject(o, "metric_sources");
        for (int i = 0; i < u.n_src; i++) cJSON_AddStringToObject(srcs, u.src_keys[i], u.src_vals[i]);
        char *text = cJSON_Print(o);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(o);
    } else {
        print_summary(&u, out, secs);
    }
    return 0;
}
