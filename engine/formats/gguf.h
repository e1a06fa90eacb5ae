/* gguf.h - GGUF v3 files: a streaming writer, a validating reader, and the ggml block
 * formats bitnetd writes (TQ2_0, TQ1_0, Q8_0, F16, F32).
 *
 * Container (ggml's gguf.h): "GGUF", u32 version 3, u64 n_tensors, u64 n_kv; then the
 * key/value pairs (gguf string key, u32 value type, value); then per tensor its name,
 * u32 n_dims, n_dims x u64 ne (ne[0] = row length, the innermost dimension), u32 ggml
 * type, u64 offset relative to the data section; then padding to the alignment (32,
 * no general.alignment key written) and the tensor data, each tensor padded to 32.
 *
 * Writer: key/values and tensor declarations first (sizes follow from type and shape),
 * then the data of each declared tensor in declaration order, possibly in pieces, so a
 * model is never held in memory twice. It writes "<path>.tmp", fsyncs and renames.
 *
 * Block formats (layouts of ggml-common.h; a 256-weight "super-block" for TQ):
 *   TQ2_0 66 B/256: qs[64] then fp16 d. Code q = t+1. Byte qs[32*h + m] (h = 0,1;
 *         m = 0..31), bits 2n..2n+1, holds weight 128*h + 32*n + m. Value (q-1)*d.
 *   TQ1_0 54 B/256: qs[48], qh[4], fp16 d. Base-3 digits t+1, first weight most
 *         significant, byte = ceil(v * 256 / 243): qs[m] (m < 32) holds weights m + 32*n
 *         (n = 0..4); qs[32 + m] (m < 16) weights 160 + m + 16*n; qh[j] holds weights
 *         240 + j + 4*n (n = 0..3) and a 5th zero digit. Digit n of byte b is
 *         ((uint8)(b * 3^n) * 3) >> 8.
 *   Q8_0  34 B/32: fp16 d then int8 qs[32]; d = absmax/127, q = round(x/d).
 * For ternary export the block's d is the row's scale (per-channel quantization: every
 * block of a row carries the same d), rounded to fp16.
 */
#ifndef BN_GGUF_H
#define BN_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* ggml tensor types (ggml.h enum values). */
typedef enum bn_gguf_type {
    BN_GGUF_F32 = 0,
    BN_GGUF_F16 = 1,
    BN_GGUF_Q8_0 = 8,
    BN_GGUF_TQ1_0 = 34,
    BN_GGUF_TQ2_0 = 35,
} bn_gguf_type;

/* GGUF value types. */
typedef enum bn_gguf_vtype {
    BN_GGUF_V_U8 = 0, BN_GGUF_V_I8, BN_GGUF_V_U16, BN_GGUF_V_I16, BN_GGUF_V_U32,
    BN_GGUF_V_I32, BN_GGUF_V_F32, BN_GGUF_V_BOOL, BN_GGUF_V_STRING, BN_GGUF_V_ARRAY,
    BN_GGUF_V_U64, BN_GGUF_V_I64, BN_GGUF_V_F64, BN_GGUF_V_COUNT
} bn_gguf_vtype;

#define BN_GGUF_ALIGN 32
#define BN_GGUF_QK_K 256
#define BN_GGUF_QK8_0 32
#define BN_GGUF_MAX_DIMS 4

/* llama.cpp general.file_type values */
#define BN_GGUF_FTYPE_F16 1
#define BN_GGUF_FTYPE_TQ1_0 36
#define BN_GGUF_FTYPE_TQ2_0 37

typedef struct bn_gguf_block_tq2_0 {
    uint8_t qs[BN_GGUF_QK_K / 4];
    uint16_t d;
} bn_gguf_block_tq2_0;

typedef struct bn_gguf_block_tq1_0 {
    uint8_t qs[48];
    uint8_t qh[4];
    uint16_t d;
} bn_gguf_block_tq1_0;

typedef struct bn_gguf_block_q8_0 {
    uint16_t d;
    int8_t qs[BN_GGUF_QK8_0];
} bn_gguf_block_q8_0;

const char *bn_gguf_type_name(bn_gguf_type t); /* "tq2_0", ... or NULL if unknown */
/* Weights per block (1 for F32/F16) and bytes per block; 0 for an unknown type. */
int bn_gguf_block_len(bn_gguf_type t);
size_t bn_gguf_block_bytes(bn_gguf_type t);
/* Bytes of one row of ne0 weights; 0 when ne0 is not a multiple of the block. */
size_t bn_gguf_row_bytes(bn_gguf_type t, int64_t ne0);

/* ---- block packing (n must be a multiple of the block length) ---------------------- */

/* codes[n] in {-1,0,1} with one scale for the row -> n/256 blocks. */
void bn_gguf_tq2_0_pack(const int8_t *codes, float scale, int64_t n, bn_gguf_block_tq2_0 *out);
void bn_gguf_tq1_0_pack(const int8_t *codes, float scale, int64_t n, bn_gguf_block_tq1_0 *out);
/* Inverse: codes[n] and each block's fp16 d in d[n/256] (d may be NULL). A TQ2_0 code
 * 3 (never written) is returned as +2 so a caller can detect it. */
void bn_gguf_tq2_0_unpack(const bn_gguf_block_tq2_0 *b, int64_t n, int8_t *codes, uint16_t *d);
void bn_gguf_tq1_0_unpack(const bn_gguf_block_tq1_0 *b, int64_t n, int8_t *codes, uint16_t *d);
void bn_gguf_q8_0_quantize(const float *x, int64_t n, bn_gguf_block_q8_0 *out);
/* Any supported type -> float (n elements). Returns BN_EUNSUPPORTED for other types. */
int bn_gguf_dequantize(bn_gguf_type t, const void *data, int64_t n, float *out);

/* ---- writer --------------------------------------------------------------------- */

typedef struct bn_gguf_writer bn_gguf_writer;

int bn_gguf_writer_new(const char *path, bn_gguf_writer **out, bn_err *err);
/* Key/values (before bn_gguf_writer_begin_data). Strings are copied. */
int bn_gguf_kv_u32(bn_gguf_writer *w, const char *key, uint32_t v);
int bn_gguf_kv_i32(bn_gguf_writer *w, const char *key, int32_t v);
int bn_gguf_kv_f32(bn_gguf_writer *w, const char *key, float v);
int bn_gguf_kv_bool(bn_gguf_writer *w, const char *key, bool v);
int bn_gguf_kv_str(bn_gguf_writer *w, const char *key, const char *v);
int bn_gguf_kv_arr_str(bn_gguf_writer *w, const char *key, const char *const *v, size_t n);
int bn_gguf_kv_arr_f32(bn_gguf_writer *w, const char *key, const float *v, size_t n);
int bn_gguf_kv_arr_i32(bn_gguf_writer *w, const char *key, const int32_t *v, size_t n);
/* Declares a tensor: ne[0] is the row length (must be a multiple of the type's block). */
int bn_gguf_writer_declare(bn_gguf_writer *w, const char *name, bn_gguf_type type, int n_dims,
                           const int64_t *ne, bn_err *err);
/* Writes the header, key/values and tensor table; data follows. */
int bn_gguf_writer_begin_data(bn_gguf_writer *w, bn_err *err);
/* Data of the next tensor(s), in declaration order, in any number of pieces. */
int bn_gguf_writer_write(bn_gguf_writer *w, const void *data, size_t nbytes, bn_err *err);
/* Checks every tensor got all its bytes; fsync, rename, free. */
int bn_gguf_writer_finish(bn_gguf_writer *w, bn_err *err);
void bn_gguf_writer_abort(bn_gguf_writer *w); /* unlink the tmp file, free */
/* A failed kv_* call (out of memory, duplicate key) is remembered and reported here. */

/* ---- reader --------------------------------------------------------------------- */

typedef struct bn_gguf_kv {
    const char *key;          /* NUL-terminated copy */
    bn_gguf_vtype type;
    bn_gguf_vtype arr_type;   /* element type for arrays */
    uint64_t n;               /* array length (1 for scalars) */
    union {
        uint64_t u;
        int64_t i;
        double f;
        bool b;
    } v;                      /* scalar value (integers and floats widened) */
    const char *str;          /* string value (NUL-terminated copy) */
    const uint8_t *arr;       /* array payload in the file (numeric arrays) */
    char **arr_str;           /* string arrays: n NUL-terminated copies */
} bn_gguf_kv;

typedef struct bn_gguf_tensor {
    const char *name;
    int n_dims;
    int64_t ne[BN_GGUF_MAX_DIMS];
    bn_gguf_type type;
    uint64_t offset;
    const void *data;  /* in the mapped file */
    size_t nbytes;
} bn_gguf_tensor;

typedef struct bn_gguf_file bn_gguf_file;

/* Maps and validates the whole file: magic, version 3, every key/value and tensor
 * entry in bounds, known tensor types, aligned non-overlapping data inside the file.
 * Errors name the file and the entry. */
int bn_gguf_open(const char *path, bn_gguf_file **out, bn_err *err);
void bn_gguf_close(bn_gguf_file *f);
uint32_t bn_gguf_version(const bn_gguf_file *f);
size_t bn_gguf_n_kv(const bn_gguf_file *f);
const bn_gguf_kv *bn_gguf_find_kv(const bn_gguf_file *f, const char *key);
size_t bn_gguf_n_tensors(const bn_gguf_file *f);
const bn_gguf_tensor *bn_gguf_tensor_at(const bn_gguf_file *f, size_t i);
const bn_gguf_tensor *bn_gguf_find_tensor(const bn_gguf_file *f, const char *name);
/* Numeric array element i as double / int64 (for arrays of numbers). */
double bn_gguf_kv_arr_f64(const bn_gguf_kv *kv, uint64_t i);
int64_t bn_gguf_kv_arr_i64(const bn_gguf_kv *kv, uint64_t i);

#endif
