/* bn_engine.h - the public interface of the compression engine.
 *
 * The engine turns a Hugging Face Llama-family folder into BitNet b1.58 outputs. It has
 * no HTTP server, no SQL and no long-lived threads (its one network client, hub/, fetches
 * hf:// models in the load stage); a call may compute in parallel inside itself. Callers (bitnetctl compress, the daemon's workers) see three things:
 *
 *   bn_options   the job configuration, parsed and validated from JSON (the "config"
 *                object of a REST job, or bitnetctl flags turned into JSON);
 *   bn_progress  callbacks the engine calls: progress per stage (whose answer can stop
 *                the run), job events (fallbacks, skip reasons), metric values, and a
 *                safe point before every durable write (whose answer can refuse it);
 *   bn_pipeline_run  runs the stages load, calibrate, quantize, evaluate, finetune,
 *                export. Each finished stage leaves a checkpoint in the work folder, so
 *                a run interrupted at any point resumes at the first unfinished stage.
 *
 * Component headers (safetensors, hf, quant, ...) are included for tools that need them
 * (bitnetctl inspect/eval/generate, tests, benchmarks).
 */
#ifndef BN_ENGINE_H
#define BN_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "base/tensor.h"
#include "formats/safetensors.h"
#include "formats/hf.h"

struct cJSON;

typedef enum bn_stage {
    BN_STAGE_LOAD = 0,
    BN_STAGE_CALIBRATE,
    BN_STAGE_QUANTIZE,
    BN_STAGE_EVALUATE,
    BN_STAGE_FINETUNE,
    BN_STAGE_EXPORT,
    BN_STAGE_COUNT
} bn_stage;

const char *bn_stage_name(bn_stage s); /* "load", "calibrate", ... */
int bn_stage_parse(const char *name);   /* -1 if unknown */

/* ---- options (the job's "config" object) ---------------------------------------- */

#define BN_MAX_PATTERNS 32
#define BN_MAX_TEXTS 4096
/* fine_tune.patience default, in evaluations (epochs) without a new best selection
 * perplexity; chosen from measured curves (docs/BENCHMARKS.md, "patience"). */
#define BN_FT_DEFAULT_PATIENCE 5
/* fine_tune.cooldown default, a fraction of the steps done when patience runs out
 * (docs/BENCHMARKS.md, "cool-down"). */
#define BN_FT_DEFAULT_COOLDOWN 0.2

typedef enum { BN_SCALE_PER_CHANNEL = 0, BN_SCALE_PER_TENSOR } bn_scale_mode;
typedef enum { BN_CALIB_SYNTHETIC = 0, BN_CALIB_OPENWEBTEXT, BN_CALIB_C4, BN_CALIB_WIKITEXT,
               BN_CALIB_CUSTOM, BN_CALIB_NONE } bn_calib_dataset;

typedef enum { BN_FT_PRECISION_AUTO = 0, BN_FT_PRECISION_BF16, BN_FT_PRECISION_FP32 } bn_ft_precision;
/* "auto" trains in bf16 on a GPU from this hidden size up (FP32 below). */
#define BN_FT_BF16_MIN_HIDDEN 1024

typedef struct bn_options {
    double sparsity_threshold;   /* tau; default 0.5 */
    bool sparsity_auto;          /* "auto": pick tau from the size table */
    bn_scale_mode scale;         /* "per_channel" (default) | "per_tensor" */
    int n_preserve;              /* preserved tensor name patterns (substring, case-insensitive) */
    char *preserve[BN_MAX_PATTERNS];
    uint64_t seed;               /* default 42 */
    int threads;                 /* 0 = all cores */
    int device;                  /* bn_device (backend/device.h): "cpu" (default) | "cuda" | "auto" */
    int gpu;                     /* CUDA device ordinal of a cuda job (not a config key: the
                                    daemon's worker sets it from --gpus; bitnetctl uses 0) */

    struct {
        bn_calib_dataset dataset; /* default: synthetic only if nothing else; see calibrate */
        bool enabled;             /* false: skip calibration (no pre-perplexity) */
        int samples;              /* default 256 */
        int sequence_length;      /* default 512 (clamped to the model's context) */
        int batch_size;           /* default 4 */
        double eval_fraction;     /* report split, default 0.1 (every reported figure) */
        double selection_fraction; /* selection split, default 0.05 (best checkpoint, patience) */
        char *path;               /* custom: text/JSONL file inside a model root */
        int n_texts;              /* custom: inline texts */
        char **texts;
        bool refine_scales;       /* calibration-aware scales; default true */
    } calibration;

    struct {
        bool enabled;             /* default true */
        double threshold;         /* default 0.05 */
        /* Budget rule: with epochs and max_steps both 0 (the default) training runs epoch
         * after epoch until max_minutes ends or the selection perplexity has not improved
         * for `patience` evaluations (one per epoch); otherwise the epochs/max_steps limit
         * holds, max_minutes still caps it. The best checkpoint is kept either way. */
        int epochs;               /* default 0 = as many as the budget allows */
        int max_steps;            /* default 0 = no limit */
        double max_minutes;       /* default 30 */
        int patience;             /* evaluations without improvement before stopping; 0 = off */
        /* When patience runs out while the learning rate is still well above its floor,
         * the rate is first annealed to the floor over `cooldown` x the steps done so far
         * (within the budget), then training stops; 0 = stop at once. Default
         * BN_FT_DEFAULT_COOLDOWN. */
        double cooldown;
        bool allow_synthetic;     /* default false: never train on the synthetic templates */
        int batch_size;           /* default 4 */
        int sequence_length;      /* default: calibration.sequence_length */
        double lr;                /* AdamW lr, default 1e-3 */
        double muon_lr;           /* default 0.005 (STE fine-tuning; see options.c) */
        int warmup_steps;         /* default 20 */
        double distill;           /* KL weight, default 0 (off) */
        int quant_warmup_steps;   /* default 0 (off) */
        bool train_preserved;     /* default true */
        int checkpoint_every;     /* default 50 steps */
        uint64_t seed;            /* default: options.seed */
        /* Matrix products of GPU training: "auto" (default: bf16 tensor cores from
         * BN_FT_BF16_MIN_HIDDEN up, FP32 below, where a step is launch-bound and bf16 buys
         * no time), "bf16" or "fp32". The CPU computes in FP32 ("bf16" is refused there);
         * evaluation is FP32 on both devices. */
        int precision;            /* bn_ft_precision */
    } fine_tune;

    struct {
        bool gguf_tq2_0;          /* default true when shapes allow */
        bool gguf_tq1_0;          /* default false */
        bool gguf_explicit;       /* the user chose the list */
        char embedding_dtype[8];  /* "f16" (default) | "q8_0" */
    } export;

    struct {
        int windows;              /* evaluation windows, default 16 */
        bool act_quant;           /* W1.58A8 forward, default false */
    } evaluate;
} bn_options;

/* Defaults allocate nothing (bn_options_free on them is a no-op but allowed). */
void bn_options_default(bn_options *o);
/* Parses and validates a JSON object (NULL = defaults). Unknown keys and wrong types are
 * rejected; err->msg starts with the JSON path of the offending field ("config.fine_tune.lr: ...").
 * *o is overwritten (pass an uninitialised or freed struct). On success *o owns its
 * strings; release with bn_options_free. On failure *o holds the defaults. */
int bn_options_from_json(const struct cJSON *json, bn_options *o, bn_err *err);
/* The effective options as JSON (for metadata and W&B config); caller frees with cJSON_Delete. */
struct cJSON *bn_options_to_json(const bn_options *o);
void bn_options_free(bn_options *o);

/* ---- progress, events and metrics ---------------------------------------------- */

typedef struct bn_progress {
    void *ctx;
    /* Called often (rate-limit on the receiving side). fraction in [0,1] for the stage.
     * Returning true asks the engine to stop: it returns BN_ECANCELLED at the next safe
     * point, having checkpointed what it can. May be NULL. */
    bool (*update)(void *ctx, bn_stage stage, double fraction, const char *detail);
    /* A job event: level "info" | "warn" | "error". May be NULL. */
    void (*event)(void *ctx, bn_stage stage, const char *level, const char *message);
    /* A metric value. step is -1 for the 19 job metrics and phase summary keys,
     * >= 0 for per-step history (fine_tune/loss, ...). May be NULL. Values are finite. */
    void (*metric)(void *ctx, const char *key, double value, int64_t step);
    /* Where a perplexity/loss metric's text came from, sent just before each job-level value of
     * such a key (per-step keys: once, before the first step): value = "<origin> (<split> split)", origin "file:<path>",
     * "dataset:<name>", "inline:<n> texts" or "synthetic"; split "train", "selection" or
     * "report". May be NULL. */
    void (*source)(void *ctx, const char *key, const char *value);
    /* The safe point before a durable write: called synchronously right before the
     * engine writes a stage checkpoint, the quantized tensors, calibration outputs, a
     * fine-tune checkpoint or result, the export's <output>.partial folder and its
     * rename into place. what names the write ("checkpoint calibrate", ...). Returning
     * false makes the engine return BN_ECANCELLED without writing (nor removing what
     * is there). The daemon answers from its store (it renews the job's lease; false
     * when the lease is lost or the job cancelled). May be NULL (always write). */
    bool (*may_write)(void *ctx, bn_stage stage, const char *what);
} bn_progress;

/* ---- the pipeline -------------------------------------------------------------- */

struct bn_hub_config;
typedef struct bn_pipeline_paths {
    const char *model_dir;  /* input HF folder (already checked against allowed roots), or
                               "hf://ORG/NAME[@REV]": fetched into the Hub cache by load */
    const char *output_dir; /* final output folder; written as <output_dir>.partial first */
    const char *work_dir;   /* per-job scratch + stage checkpoints; kept until the job ends */
    const char *data_dir;   /* datasets for calibration (<data_dir>/datasets/<name>/...) */
    const struct bn_hub_config *hub; /* for hf:// sources (hub/hub.h); NULL: environment */
} bn_pipeline_paths;

/* Runs every unfinished stage. Returns 0 when the output folder is complete. */
int bn_pipeline_run(const bn_pipeline_paths *paths, const bn_options *opt,
                    const bn_progress *progress, bn_err *err);
/* The first stage not yet checkpointed in work_dir (BN_STAGE_COUNT if all done). */
bn_stage bn_pipeline_resume_stage(const char *work_dir);

/* ---- metric names (README, "The 19 metrics") -------------------------------------- */

#define BN_N_JOB_METRICS 19
extern const char *const bn_job_metric_names[BN_N_JOB_METRICS];
#define BN_N_SUMMARY_KEYS 8
extern const char *const bn_summary_key_names[BN_N_SUMMARY_KEYS];

#endif
