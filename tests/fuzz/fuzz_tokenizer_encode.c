/* fuzz_tokenizer_encode.c - libFuzzer harness: arbitrary bytes as text to encode.
 *
 * Uses the real stories260K tokenizer (SentencePiece-style, byte fallback) from
 * BN_DATA_DIR. Valid UTF-8 must encode, and decode(encode(text)) must give the text back
 * (byte fallback makes it lossless; special tokens are encoded as plain text, since HF
 * prepends a "▁" to every text segment between matched specials); invalid UTF-8 must
 * be rejected with a message.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bn_tok *g_tok; /* loaded once per fuzzing process */

static bn_tok *tokenizer(void)
{
    if (g_tok) return g_tok;
    const char *dir = getenv("BN_DATA_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/stories260K-hf", dir ? dir : "../shared/data");
    bn_err err = {0};
    if (bn_tok_load(path, &g_tok, &err) != 0) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s\n", err.msg);
        abort();
    }
    return g_tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bn_tok *tok = tokenizer();
    bn_tok_ids ids = {0};
    bn_err err = {0};
    if (bn_tok_encode(tok, (const char *)data, size, BN_TOK_SPLIT_SPECIAL, &ids, &err) != 0) {
        if (err.msg[0] == '\0') __builtin_trap();
        bn_tok_ids_free(&ids);
        return 0;
    }
    char *out = NULL;
    size_t out_len = 0;
    if (bn_tok_decode(tok, ids.ids, ids.n, 0, &out, &out_len, &err) != 0) __builtin_trap();
    /* The normalizer turns spaces into U+2581 and decoding turns U+2581 back into
     * spaces, so only text without a literal U+2581 must round-trip exactly. */
    if (!memmem(data, size, "\xe2\x96\x81", 3) &&
        (out_len != size || memcmp(out, data, size) != 0))
        __builtin_trap();
    free(out);
    bn_tok_ids_free(&ids);
    return 0;
}
