/* main.c - the fake W&B server as a program, for manual runs and scripted tests.
 *
 *   fake_wandb [--port N] [--key KEY] [--state-file PATH]
 *
 * Prints "fake_wandb listening on http://127.0.0.1:PORT" and serves until SIGINT or
 * SIGTERM; then, with --state-file, writes the final state JSON there. Faults and the
 * state are driven over HTTP (GET /_state, POST /_faults, /_queue, /_down, /_reset).
 */
#include "fake_wandb.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    unsigned port = 0;
    const char *key = NULL, *state_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--key") && i + 1 < argc) key = argv[++i];
        else if (!strcmp(argv[i], "--state-file") && i + 1 < argc) state_file = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--port N] [--key KEY] [--state-file PATH]\n", argv[0]);
            return 2;
        }
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    fake_wandb *fw = fake_wandb_start((uint16_t)port, key);
    if (!fw) {
        fprintf(stderr, "fake_wandb: cannot listen on 127.0.0.1:%u\n", port);
        return 1;
    }
    printf("fake_wandb listening on %s\n", fake_wandb_url(fw));
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    if (state_file) {
        cJSON *s = fake_wandb_state(fw);
        char *t = cJSON_Print(s);
        FILE *f = fopen(state_file, "w");
        if (f && t) fputs(t, f);
        if (f) fclose(f);
        free(t);
        cJSON_Delete(s);
    }
    fake_wandb_stop(fw);
    return 0;
}
