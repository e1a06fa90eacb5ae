/* cmd_compress.c - `bitnetctl compress MODEL_DIR OUT_DIR` (placeholder until the pipeline lands). */
#include "cli.h"

int bn_cli_compress(int argc, char **argv)
{
    (void)argc; (void)argv;
    bn_cli_errorf("compress: not implemented yet");
    return 1;
}
