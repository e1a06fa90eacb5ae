/* svc.h - helpers for the service integration tests: start/stop a real bitnetd on a
 * random loopback port with temporary state, model and output roots, and make HTTP
 * requests to it with libcurl. */
#ifndef BN_SVC_H
#define BN_SVC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct svc {
    char *root;          /* temp folder holding everything below */
    char state[4096], models[4096], outputs[4096], log[4096];
    char url[256];
    pid_t pid;
    char binary[4096];   /* path of the bitnetd executable */
    char extra[16][256]; /* extra flags */
    int n_extra;
    char env[4][256];    /* extra NAME=VALUE environment */
    int n_env;
} svc;

typedef struct svc_resp {
    long status;
    char *body;
    size_t len;
    char headers[8192];
} svc_resp;

/* Prepares folders (models/tiny with a config.json). binary: "bitnetd-fake" etc. */
void svc_init(svc *s, const char *binary);
void svc_flag(svc *s, const char *flag);
void svc_setenv(svc *s, const char *kv);
/* Starts the daemon and waits for <state>/bitnetd.url. */
void svc_start(svc *s);
/* Sends sig and waits for exit; returns the exit status (or 128+signal). */
int svc_stop(svc *s, int sig);
void svc_cleanup(svc *s);
/* Creates <models>/<name>/config.json with the given text. */
void svc_model(svc *s, const char *name, const char *config_json);

/* One request. headers: NULL-terminated "Name: value" list (may be NULL). */
void svc_req(const svc *s, const char *method, const char *path, const char *body,
             const char *const *headers, svc_resp *r);
void svc_resp_free(svc_resp *r);
/* Header value from a response (static buffer) or NULL. */
const char *svc_header(const svc_resp *r, const char *name);
/* POST /v1/jobs with a JSON body; returns the job id in id (or "" on error). */
long svc_submit(const svc *s, const char *body, const char *idem_key, char id[64]);
/* Polls GET /v1/jobs/{id} until status is final or timeout; returns the status text. */
const char *svc_wait(const svc *s, const char *id, double timeout_s);
/* Polls until the job's stage equals stage (and running) or timeout. */
bool svc_wait_stage(const svc *s, const char *id, const char *stage, double timeout_s);
/* A string field of GET /v1/jobs/{id} (static buffer). */
const char *svc_job_field(const svc *s, const char *id, const char *field);
double svc_now(void);
/* Reads a whole file (caller frees) or NULL. */
char *svc_read_file(const char *path);

#endif
