/* pack.h - ternary code packers.
 *
 * 2-bit, Hugging Face BitNet layout (transformers integrations/bitnet.py): codes
 * W[out, in] in {-1, 0, 1} are stored as q = t + 1 in uint8 packed[Q, in] with
 * Q = ceil(out / 4); bits 2i..2i+1 of packed[r, c] hold W[i*Q + r, c] (four row blocks
 * of the output dimension share a byte). When out % 4 != 0 the last block is short:
 * the positions past `out` are written as q = 1 (value 0) and ignored by unpack, which
 * is told `out` (HF's own unpack slices them off the same way).
 *
 * Base-3, 5 per byte (1.6 bits): a flat array of n codes; byte k holds codes 5k..5k+4 as
 * v = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4 with d = t + 1 (0..242); missing trailing codes
 * are d = 1 (value 0).
 */
#ifndef BN_PACK_H
#define BN_PACK_H

#include <stddef.h>
#include <stdint.h>

static inline int64_t bn_pack2_rows(int64_t out) { return (out + 3) / 4; }
void bn_pack2_hf(const int8_t *codes, int64_t out, int64_t in, uint8_t *packed);
/* Returns 0, or -1 when a byte holds the unused code 3 (corrupt data). */
int bn_unpack2_hf(const uint8_t *packed, int64_t out, int64_t in, int8_t *codes);

static inline size_t bn_pack3_bytes(size_t n) { return (n + 4) / 5; }
void bn_pack3(const int8_t *codes, size_t n, uint8_t *packed);
/* Returns 0, or -1 when a byte is above 242 (corrupt data). */
int bn_unpack3(const uint8_t *packed, size_t n, int8_t *codes);

#endif
