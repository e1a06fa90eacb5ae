/* fuzz_safetensors.c - libFuzzer harness: arbitrary bytes as a safetensors image.
 *
 * The parser must either reject the bytes with a message or expose tensors whose spans
 * lie inside the image; the harness touches every byte of every tensor it is given so
 * that an out-of-range span shows up under AddressSanitizer.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bn_st_file *f = NULL;
    bn_err err = {0};
    if (bn_st_parse(data, size, "fuzz", &f, &err) != 0) {
        if (err.msg[0] == '\0') __builtin_trap(); /* every rejection says why */
        return 0;
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < bn_st_count(f); i++) {
        const bn_st_tensor *t = bn_st_at(f, i);
        if (t->nbytes != t->numel * bn_dtype_size(t->dtype)) __builtin_trap();
        const uint8_t *p = t->data;
        for (size_t j = 0; j < t->nbytes; j++) sink ^= p[j];
        if (bn_st_find(f, t->name) != t) __builtin_trap();
    }
    (void)sink;
    bn_st_close(f);
    return 0;
}
