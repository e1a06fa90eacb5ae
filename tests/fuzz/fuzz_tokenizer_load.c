/* fuzz_tokenizer_load.c - libFuzzer harness: arbitrary bytes as tokenizer.json.
 *
 * A tokenizer that loads must encode and decode a fixed sentence without crashing.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bn_tok *tok = NULL;
    bn_err err = {0};
    if (bn_tok_load_mem((const char *)data, size, NULL, 0, "fuzz", &tok, &err) != 0) {
        if (err.msg[0] == '\0') __builtin_trap();
        return 0;
    }
    static const char text[] = "Hello world, 123 \xc3\xa9t\xc3\xa9 <s> \xf0\x9f\x99\x82  !";
    bn_tok_ids ids = {0};
    if (bn_tok_encode(tok, text, sizeof text - 1, BN_TOK_ADD_SPECIAL, &ids, &err) == 0) {
        char *out = NULL;
        size_t out_len = 0;
        if (bn_tok_decode(tok, ids.ids, ids.n, 0, &out, &out_len, &err) == 0) free(out);
    }
    bn_tok_ids_free(&ids);
    bn_tok_free(tok);
    return 0;
}
