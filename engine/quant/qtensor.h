/* qtensor.h - a ternarized tensor, the calibration statistics of a linear input, and a
 * preserved tensor changed by fine-tuning: what the quantize stage produces and the file
 * writers (GGUF, safetensors export) read. Plain data; no job context.
 */
#ifndef BN_QTENSOR_H
#define BN_QTENSOR_H

#include <stdint.h>

#include "formats/hf.h"
#include "quant/quant.h"

/* One ternarized linear tensor. */
typedef struct bn_qtensor {
    char *name;          /* HF tensor name, e.g. model.layers.0.mlp.up_proj.weight */
    bn_role role;
    int layer;           /* -1 for global tensors */
    int64_t rows, cols;  /* [out, in]; a 1-D tensor is [1, n] */
    int8_t *codes;       /* [rows * cols] in {-1, 0, 1}, row-major */
    float *scales;       /* [n_scales] */
    int64_t n_scales;    /* rows (per channel) or 1 (per tensor) */
    bn_quant_stats stats;
} bn_qtensor;

/* Calibration statistics of one linear tensor's input (set by calibrate). */
typedef struct bn_calib_stat {
    char *name;          /* the linear weight's HF name */
    int64_t cols;        /* = the tensor's in-features */
    float *xsq;          /* [cols] E[x_j^2] over the calibration tokens */
    uint64_t n_tokens;
} bn_calib_stat;

/* A preserved (non-ternary) tensor whose values changed (fine-tuning), in FP32. */
typedef struct bn_ptensor {
    char *name;
    uint64_t numel;
    float *data;
} bn_ptensor;

/* Frees t's arrays and zeroes it. */
void bn_qtensor_free(bn_qtensor *t);

#endif
