/* fuzz_gguf.c - libFuzzer harness for the GGUF writer/reader round trip.
 *
 * The input is split in two uses. (1) As a whole it is written to a file and opened
 * as a GGUF: the reader must reject it with a message or expose only in-bounds data.
 * (2) Its first bytes choose a ternary tensor (rows, blocks of 256, codes from the
 * following bytes, a scale) that is written as TQ2_0 and TQ1_0 and read back: the
 * codes must come back unchanged.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "formats/gguf.h"
#include "base/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_arbitrary(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-gguf", 0);
    if (fd < 0) return;
    if (write(fd, data, size) == (ssize_t)size) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        bn_gguf_file *f = NULL;
        bn_err err = {0};
        if (bn_gguf_open(path, &f, &err) == 0) {
            volatile uint8_t sink = 0;
            for (size_t i = 0; i < bn_gguf_n_tensors(f); i++) {
                const bn_gguf_tensor *t = bn_gguf_tensor_at(f, i);
                const uint8_t *p = t->data;
                for (size_t j = 0; j < t->nbytes; j++) sink ^= p[j];
            }
            (void)sink;
            bn_gguf_close(f);
        } else if (err.msg[0] == '\0') {
            __builtin_trap();
        }
    }
    close(fd);
}

static void round_trip(const uint8_t *data, size_t size, bn_gguf_type type)
{
    if (size < 3) return;
    int64_t rows = 1 + data[0] % 4, blocks = 1 + data[1] % 2, cols = blocks * 256;
    int64_t n = rows * cols;
    float scale = ldexpf(1.0f + data[2] / 256.0f, -(data[2] % 16));
    int8_t *codes = malloc((size_t)n), *back = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++)
        codes[i] = size > 3 ? (int8_t)(data[3 + (size_t)i % (size - 3)] % 3 - 1) : 0;

    char path[] = "/tmp/fuzz-gguf-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) goto out;
    close(fd);
    bn_err err = {0};
    bn_gguf_writer *w = NULL;
    size_t row_bytes = bn_gguf_row_bytes(type, cols);
    uint8_t *packed = malloc(row_bytes * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *dst = packed + (size_t)r * row_bytes;
        if (type == BN_GGUF_TQ2_0)
            bn_gguf_tq2_0_pack(codes + r * cols, scale, cols, (bn_gguf_block_tq2_0 *)dst);
        else
            bn_gguf_tq1_0_pack(codes + r * cols, scale, cols, (bn_gguf_block_tq1_0 *)dst);
    }
    int64_t ne[2] = { cols, rows };
    if (bn_gguf_writer_new(path, &w, &err) != 0 ||
        bn_gguf_kv_str(w, "general.architecture", "llama") != 0 ||
        bn_gguf_writer_declare(w, "t.weight", type, 2, ne, &err) != 0 ||
        bn_gguf_writer_begin_data(w, &err) != 0 ||
        bn_gguf_writer_write(w, packed, row_bytes * (size_t)rows, &err) != 0 ||
        bn_gguf_writer_finish(w, &err) != 0)
        __builtin_trap();
    bn_gguf_file *f = NULL;
    if (bn_gguf_open(path, &f, &err) != 0) __builtin_trap();
    const bn_gguf_tensor *t = bn_gguf_find_tensor(f, "t.weight");
    if (!t || t->type != type || t->ne[0] != cols || t->ne[1] != rows) __builtin_trap();
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *src = (const uint8_t *)t->data + (size_t)r * row_bytes;
        uint16_t d[2] = {0, 0};
        if (type == BN_GGUF_TQ2_0)
            bn_gguf_tq2_0_unpack((const bn_gguf_block_tq2_0 *)src, cols, back + r * cols, d);
        else
            bn_gguf_tq1_0_unpack((const bn_gguf_block_tq1_0 *)src, cols, back + r * cols, d);
        for (int64_t b = 0; b < blocks; b++)
            if (d[b] != bn_f32_to_f16(scale)) __builtin_trap();
    }
    if (memcmp(codes, back, (size_t)n) != 0) __builtin_trap();
    bn_gguf_close(f);
    free(packed);
    unlink(path);
out:
    free(codes);
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_arbitrary(data, size);
    round_trip(data, size, BN_GGUF_TQ2_0);
    round_trip(data, size, BN_GGUF_TQ1_0);
    return 0;
}
