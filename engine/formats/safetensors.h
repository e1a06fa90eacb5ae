/* safetensors.h - read (mmap, fully validated) and write (streamed, atomic) safetensors.
 *
 * Reader: the 8-byte header length, the JSON header and every tensor entry are checked
 * before any tensor is exposed: length bound, valid JSON, known dtype, shape product x
 * dtype size == data span (with overflow checks), offsets inside the file, spans that do
 * not overlap, no duplicate names. A model folder may be one file or shards listed in
 * model.safetensors.index.json; bn_st_set hides the difference.
 *
 * Writer: tensors are declared first (the header must be complete before data), then
 * their data is streamed in declaration order to "<path>.tmp"; finish fsyncs and renames.
 */
#ifndef BN_SAFETENSORS_H
#define BN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/tensor.h"

#define BN_ST_MAX_DIMS 8
#define BN_ST_MAX_HEADER (100u * 1024u * 1024u) /* header JSON bound, as upstream */

typedef struct bn_st_tensor {
    const char *name;
    bn_dtype dtype;
    int ndim;
    int64_t shape[BN_ST_MAX_DIMS];
    uint64_t numel;
    const void *data; /* inside the mmap, read-only */
    size_t nbytes;
    const char *file; /* path of the file (shard) holding it */
    int file_fd;         /* that file, open while it is (-1 for an in-memory image, bn_st_parse) */
    int64_t file_offset; /* of data in that file */
} bn_st_tensor;

typedef struct bn_st_file bn_st_file;

int bn_st_open(const char *path, bn_st_file **out, bn_err *err);
/* Parses an in-memory image (fuzzing, tests); bytes must outlive the result. */
int bn_st_parse(const void *bytes, size_t len, const char *label, bn_st_file **out, bn_err *err);
void bn_st_close(bn_st_file *f);
size_t bn_st_count(const bn_st_file *f);
const bn_st_tensor *bn_st_at(const bn_st_file *f, size_t i);
const bn_st_tensor *bn_st_find(const bn_st_file *f, const char *name);
const char *bn_st_metadata(const bn_st_file *f, const char *key); /* __metadata__ value or NULL */
uint64_t bn_st_file_size(const bn_st_file *f);
/* Drops the tensor's pages from this process's resident set (the page cache keeps
 * them); the data stays readable. Streaming code calls it after each tensor so that
 * peak RSS stays near one tensor, not the whole model. */
void bn_st_tensor_release(const bn_st_tensor *t);
/* Maps the tensor's pages in one call (fewer page faults than touching them one by one). */
void bn_st_tensor_prefetch(const bn_st_tensor *t);
/* Copies the tensor's nbytes into dst: pread from its file (no page-table work, the
 * cheapest way to stream a tensor that is read once into a reused buffer), or memcpy
 * for an in-memory image. */
int bn_st_tensor_copy(const bn_st_tensor *t, void *dst, bn_err *err);

/* A model's weights: model.safetensors, or the shards of model.safetensors.index.json. */
typedef struct bn_st_set bn_st_set;
int bn_st_set_open(const char *model_dir, bn_st_set **out, bn_err *err);
void bn_st_set_close(bn_st_set *s);
size_t bn_st_set_count(const bn_st_set *s);
const bn_st_tensor *bn_st_set_at(const bn_st_set *s, size_t i);
const bn_st_tensor *bn_st_set_find(const bn_st_set *s, const char *name);
uint64_t bn_st_set_bytes(const bn_st_set *s); /* total bytes of tensor data on disk */
size_t bn_st_set_file_count(const bn_st_set *s);

typedef struct bn_st_writer bn_st_writer;
int bn_st_writer_new(const char *path, bn_st_writer **out, bn_err *err);
int bn_st_writer_metadata(bn_st_writer *w, const char *key, const char *value);
int bn_st_writer_declare(bn_st_writer *w, const char *name, bn_dtype t, int ndim,
                         const int64_t *shape, bn_err *err);
/* Data for the next declared tensor, in order; may be called in pieces. */
int bn_st_writer_write(bn_st_writer *w, const void *data, size_t nbytes, bn_err *err);
int bn_st_writer_finish(bn_st_writer *w, bn_err *err); /* fsync, rename, free */
/* The same, and the SHA-256 (hex) of the file's bytes, computed while writing. */
int bn_st_writer_finish_sha256(bn_st_writer *w, char hex[65], bn_err *err);
void bn_st_writer_abort(bn_st_writer *w);             /* unlink tmp, free */

#endif
