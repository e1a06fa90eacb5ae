/* cmd_inspect.c - `bitnetctl inspect FILE|DIR`: a safetensors header summary.
 * FILE is one .safetensors file; DIR is a model folder (single file or shards). Every
 * tensor is listed with dtype, shape and bytes, then totals per dtype. The reader
 * validates the whole header first, so a malformed file gives its precise error. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "base/fsutil.h"
#include "formats/safetensors.h"

static void print_tensor(const bn_st_tensor *t, uint64_t *bytes_by_dtype, uint64_t *params_by_dtype)
{
    char shape[128];
    size_t o = (size_t)snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < t->ndim && o < sizeof shape; d++)
        o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    if (o < sizeof shape) snprintf(shape + o, sizeof shape - o, "]");
    printf("%-56s %-5s %-22s %12zu\n", t->name, bn_dtype_name(t->dtype), shape, t->nbytes);
    bytes_by_dtype[t->dtype] += t->nbytes;
    params_by_dtype[t->dtype] += t->numel;
}

int bn_cli_inspect(int argc, char **argv)
{
    if (argc != 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc == 2 ? stdout : stderr, "usage: bitnetctl inspect FILE.safetensors|MODEL_DIR\n");
        return argc == 2 ? 0 : 2;
    }
    const char *path = argv[1];
    bn_err err = { 0 };
    uint64_t bytes[BN_DTYPE_COUNT] = { 0 }, params[BN_DTYPE_COUNT] = { 0 };
    size_t n = 0;
    printf("%-56s %-5s %-22s %12s\n", "tensor", "dtype", "shape", "bytes");
    if (bn_fs_is_dir(path)) {
        bn_st_set *s;
        if (bn_st_set_open(path, &s, &err)) {
            bn_cli_errorf("%s", err.msg);
            return 1;
        }
        n = bn_st_set_count(s);
        for (size_t i = 0; i < n; i++) print_tensor(bn_st_set_at(s, i), bytes, params);
        printf("files: %zu\n", bn_st_set_file_count(s));
        bn_st_set_close(s);
    } else {
        bn_st_file *f;
        if (bn_st_open(path, &f, &err)) {
            bn_cli_errorf("%s", err.msg);
            return 1;
        }
        n = bn_st_count(f);
        for (size_t i = 0; i < n; i++) print_tensor(bn_st_at(f, i), bytes, params);
        printf("file size: %" PRIu64 " bytes\n", bn_st_file_size(f));
        bn_st_close(f);
    }
    uint64_t tb = 0, tp = 0;
    for (int d = 0; d < BN_DTYPE_COUNT; d++) {
        if (!params[d] && !bytes[d]) continue;
        printf("%-5s %14" PRIu64 " params %14" PRIu64 " bytes\n", bn_dtype_name((bn_dtype)d), params[d], bytes[d]);
        tb += bytes[d];
        tp += params[d];
    }
    printf("total: %zu tensors, %" PRIu64 " params, %" PRIu64 " bytes of tensor data\n", n, tp, tb);
    return 0;
}
