/* pack.c - ternary packers (see pack.h for both layouts). Plain loops over contiguous
 * columns; gcc/clang vectorise them, and packing is a small part of a compression run
 * (one byte read per weight). */
#include "quant/pack.h"

#include <string.h>

void bn_pack2_hf(const int8_t *codes, int64_t out, int64_t in, uint8_t *packed)
{
    int64_t Q = bn_pack2_rows(out);
    for (int64_t r = 0; r < Q; r++) {
        uint8_t *dst = packed + (size_t)r * (size_t)in;
        for (int64_t c = 0; c < in; c++) dst[c] = 0;
        for (int i = 0; i < 4; i++) {
            int64_t src_row = (int64_t)i * Q + r;
            if (src_row >= out) {
                for (int64_t c = 0; c < in; c++) dst[c] |= (uint8_t)(1u << (2 * i));
                continue;
            }
            const int8_t *s = codes + (size_t)src_row * (size_t)in;
            for (int64_t c = 0; c < in; c++) dst[c] |= (uint8_t)((uint8_t)(s[c] + 1) << (2 * i));
        }
    }
}

int bn_unpack2_hf(const uint8_t *packed, int64_t out, int64_t in, int8_t *codes)
{
    int64_t Q = bn_pack2_rows(out);
    int bad = 0;
    for (int64_t r = 0; r < Q; r++) {
        const uint8_t *src = packed + (size_t)r * (size_t)in;
        for (int i = 0; i < 4; i++) {
            int64_t dst_row = (int64_t)i * Q + r;
            if (dst_row >= out) continue;
            int8_t *d = codes + (size_t)dst_row * (size_t)in;
            for (int64_t c = 0; c < in; c++) {
                int q = (src[c] >> (2 * i)) & 3;
                bad |= q == 3;
                d[c] = (int8_t)(q - 1);
            }
        }
    }
    return bad ? -1 : 0;
}

void bn_pack3(const int8_t *codes, size_t n, uint8_t *packed)
{
    size_t nb = bn_pack3_bytes(n);
    for (size_t k = 0; k < nb; k++) {
        unsigned v = 0, p = 1;
        for (size_t i = 0; i < 5; i++, p *= 3) {
            size_t idx = 5 * k + i;
            unsigned d = idx < n ? (unsigned)(codes[idx] + 1) : 1u;
            v += d * p;
        }
        packed[k] = (uint8_t)v;
    }
}

int bn_unpack3(const uint8_t *packed, size_t n, int8_t *codes)
{
    size_t nb = bn_pack3_bytes(n);
    int bad = 0;
    for (size_t k = 0; k < nb; k++) {
        unsigned v = packed[k];
        bad |= v > 242;
        for (size_t i = 0; i < 5; i++) {
            size_t idx = 5 * k + i;
            if (idx < n) codes[idx] = (int8_t)((int)(v % 3) - 1);
            v /= 3;
        }
    }
    return bad ? -1 : 0;
}
