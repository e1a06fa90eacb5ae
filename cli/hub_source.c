/* hub_source.c - bitnetctl eval|generate on hf://ORG/NAME[@REV]: the model is fetched into
 * the Hugging Face cache first (engine/hub, configured by HF_ENDPOINT, HF_TOKEN, HF_HOME,
 * HF_HUB_OFFLINE) and the snapshot folder is used. compress hands hf:// to the pipeline,
 * whose load stage does the same. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include "hub/hub.h"

static bool on_update(void *ctx, uint64_t done, uint64_t total, double rate, const char *file, bool waiting)
{
    (void)ctx;
    if (!bn_cli_tty()) return false;
    if (waiting) fprintf(stderr, "\r\033[Kwaiting for another download of %s", file ? file : "the model");
    else fprintf(stderr, "\r\033[Khub: %s %.1f/%.1f MB %.2f MB/s", file ? file : "", (double)done / 1e6,
                 (double)total / 1e6, rate / 1e6);
    return false;
}

static void on_event(void *ctx, const char *level, const char *message)
{
    (void)ctx;
    if (bn_cli_tty()) fputs("\r\033[K", stderr);
    if (strcmp(level, "info") != 0 || bn_cli_tty()) fprintf(stderr, "%s: %s\n", level, message);
}

int bn_cli_model_dir(const char *cmd, const char *model, char *dir, size_t len)
{
    if (!bn_hub_is_source(model)) {
        snprintf(dir, len, "%s", model);
        return 0;
    }
    bn_err err = { 0 };
    bn_hub_progress p = { NULL, on_update, on_event };
    int rc = bn_hub_fetch(model, NULL, &p, dir, len, &err);
    if (bn_cli_tty()) fputs("\r\033[K", stderr);
    if (rc) bn_cli_errorf("%s: %s", cmd, err.msg);
    return rc;
}
