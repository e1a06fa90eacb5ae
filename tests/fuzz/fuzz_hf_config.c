/* fuzz_hf_config.c - libFuzzer harness: arbitrary bytes as a model's config.json.
 *
 * Accepted configs must be internally consistent (positive sizes, heads dividing the
 * width as the loader promises); rejected ones must carry a message.
 */
#include <stddef.h>
#include <stdint.h>

#include "formats/hf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bn_model_config cfg;
    bn_err err = {0};
    if (bn_hf_config_parse((const char *)data, size, &cfg, &err) != 0) {
        if (err.msg[0] == '\0') __builtin_trap();
        return 0;
    }
    if (cfg.dim <= 0 || cfg.hidden_dim <= 0 || cfg.n_layers <= 0 || cfg.n_heads <= 0 ||
        cfg.n_kv_heads <= 0 || cfg.head_dim <= 0 || cfg.vocab_size <= 0 ||
        cfg.n_heads % cfg.n_kv_heads != 0)
        __builtin_trap();
    return 0;
}
