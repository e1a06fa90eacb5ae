/* finetune.h - STE fine-tuning of the ternary model (the finetune stage's engine).
 *
 * The stage entry points are bn_stage_finetune / bn_stage_finetune_restore (stages.h).
 * What is exposed here is for tests and benchmarks: the trigger rule and the name of the
 * checkpoint files in <work_dir>/finetune/.
 *
 * Training: FP32 shadow weights W (initialised from the FP model). Every step the
 * model's linear tensors are set to q(W) = scale x code, computed from W by the same
 * quantizer as the quantize stage (absmean, threshold tau, calibration-aware scales when
 * statistics exist), or to W + lambda (q(W) - W) during the optional quant warm-up
 * (lambda rising 0 -> 1 over quant_warmup_steps). The loss gradient w.r.t. the linear
 * tensors is applied to W unchanged (straight-through estimator). Preserved tensors
 * (embeddings, head, norms, biases) train directly when train_preserved, else stay
 * frozen. Optional distillation adds distill * KL(p_fp || p_ternary) per position,
 * with the FP model as teacher. MuGrokfast (optim.h) updates: Muon for the 2-D hidden
 * matrices, AdamW for the rest.
 *
 * Data: the calibrate stage's training stream cut into sequences of T+1 tokens (stride
 * T); an epoch visits them in a seeded random order, B per step. The selection split's
 * perplexity is measured before the first step, at every epoch end and at the end; the
 * best weights are kept, measured once on the report split (post_finetune_perplexity,
 * comparable with pre/post), requantized into the job context and exported.
 *
 * Length (the budget rule, docs/FINETUNE.md): with epochs and max_steps unset, epochs
 * run until max_minutes ends, the cosine schedule fitted to the budget from the measured
 * step time; otherwise the epochs/max_steps limit (max_minutes still caps it). Either way
 * `patience` epoch-end evaluations without a new best stop it early. The quantizer is the
 * quantize stage's (same tau, 0 included, same refinement grid). Synthetic calibration
 * text is never trained on unless fine_tune.allow_synthetic.
 *
 * Checkpoints (every checkpoint_every steps, spaced so that writing them takes at most
 * about a tenth of the time, and when the progress callback asks to stop): finetune/ckpt-<step>.safetensors (shadow weights, best weights, optimizer state)
 * and finetune/ckpt.json (step, epoch, position in the epoch, the schedule length, the
 * data seed, elapsed time, best perplexity, history), each written atomically, the JSON
 * last. A restarted stage resumes from it and continues the same loss curve.
 */
#ifndef BN_FINETUNE_H
#define BN_FINETUNE_H

#include <stdbool.h>

#define BN_FT_DIR "finetune"
#define BN_FT_STATE "finetune/ckpt.json"
#define BN_FT_PRESERVED "finetune/preserved.safetensors"

/* Whether fine-tuning runs: enabled and (post - pre) / pre > threshold (strict). */
bool bn_ft_should_run(bool enabled, double pre_ppl, double post_ppl, double threshold);

/* Whether a checkpoint is due after `step`: every `every` steps (0: never), except that
 * after one that took BN_FT_CKPT_SLOW_S seconds or more (last_cost_s) the next waits
 * until training has run BN_FT_CKPT_RATIO times that long since (since_last_s), so that
 * checkpoints take at most about a tenth of the time. A 1.1B model's state is about 22 GB
 * a checkpoint, 25 s on the GPU machine, while 50 GPU steps take 19 s. */
#define BN_FT_CKPT_SLOW_S 2.0
#define BN_FT_CKPT_RATIO 9.0
bool bn_ft_checkpoint_due(long long step, int every, double since_last_s, double last_cost_s);

#endif
