/* fuzz_http.c - libFuzzer harness: raw HTTP request bytes through the real API.
 *
 * The first call starts bitnetd's API (libmicrohttpd, the real handlers, a real SQLite
 * store in a temporary folder) on a loopback port. Every input is sent as-is on a fresh
 * TCP connection and the reply read until the server closes or a short timeout passes.
 * What is checked: no crash or sanitizer report in any handler, and the server is still
 * answering /healthz afterwards (a wedged server fails the run).
 *
 * fuzz_job_request.c includes this file with BN_FUZZ_JOB_BODY defined: there the input
 * becomes the JSON body of a well-formed POST /v1/jobs, so the fuzzer spends its time
 * inside the job request validator instead of the HTTP framing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "bn_api.h"
#include "bn_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bn_api *g_api;
static int g_port;
static unsigned long g_execs;
static int g_last_errno; /* of the last exchange's final recv (0: orderly close) */

static void stop_api(void)
{
    if (g_api) bn_api_stop(g_api);
    g_api = NULL;
}

static void start_api(void)
{
    static char root[] = "/tmp/bn-fuzz-http-XXXXXX";
    static char db[4200], models[4200], outputs[4200], model[4300];
    if (!mkdtemp(root)) abort();
    snprintf(db, sizeof db, "%s/bitnetd.db", root);
    snprintf(models, sizeof models, "%s/models", root);
    snprintf(outputs, sizeof outputs, "%s/outputs", root);
    snprintf(model, sizeof model, "%s/m", models);
    if (mkdir(models, 0700) || mkdir(outputs, 0700) || mkdir(model, 0700)) abort();

    char err[256];
    bn_store *st = NULL;
    if (bn_store_open(db, &st, err, sizeof err) != 0) { fprintf(stderr, "%s\n", err); abort(); }
    bn_store_close(st);

    const char *roots[1] = { models };
    static const char *const hub_allow[] = { "karpathy/*", "meta/model" }; /* hf:// sources */
    bn_api_config cfg = {
        .listen_host = "127.0.0.1", .db_path = db, .state_dir = root,
        .model_roots = roots, .n_model_roots = 1, .output_root = outputs,
        .max_body = 64 * 1024, .threads = 2, .max_connections = 64,
        .connection_timeout_s = 2, .max_queued = 100000,
        .hub_allow = hub_allow, .n_hub_allow = 2,
    };
    if (bn_api_start(&cfg, NULL, &g_api, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    g_port = bn_api_port(g_api);
    atexit(stop_api);
}

/* Sends bytes, half-closes, drains the reply until the server closes or timeout_ms of
 * silence. Returns the number of reply bytes. */
static size_t exchange(const void *req, size_t len, int timeout_ms)
{
    /* Thousands of connections a second leave thousands of loopback 4-tuples in
     * TIME_WAIT: spread the client side over 127.0.0.2-251 and retry a busy address,
     * so that the harness never mistakes port exhaustion for a dead server. */
    static unsigned next_src;
    int fd = -1;
    for (int attempt = 0; fd < 0 && attempt < 200; attempt++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) abort();
        struct sockaddr_in src = { .sin_family = AF_INET };
        src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + next_src++ % 250);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)g_port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
            connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(fd);
            fd = -1;
            usleep(10000);
        }
    }
    if (fd < 0) {
        fprintf(stderr, "fuzz_http: cannot connect to the API for 2 s\n");
        abort();
    }
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, (const char *)req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    char buf[8192];
    size_t got = 0;
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) got += (size_t)n;
    g_last_errno = n < 0 ? errno : 0;
    close(fd);
    return got;
}

/* A wedged server fails the run; a single unanswered probe does not: with two fuzzers
 * saturating two cores a probe can lose a race with the kernel or the server's
 * connection accounting. Three probes a second apart must all fail. */
static void check_alive(void)
{
    static const char ping[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (int attempt = 1; attempt <= 3; attempt++) {
        if (exchange(ping, sizeof ping - 1, 5000) > 0) return;
        fprintf(stderr, "fuzz_http: /healthz probe %d after %lu inputs got no reply (%s)\n", attempt, g_execs,
                g_last_errno ? strerror(g_last_errno) : "closed without a reply");
        sleep(1);
    }
    fprintf(stderr, "fuzz_http: the API stopped answering /healthz\n");
    __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_api) start_api();
#ifdef BN_FUZZ_JOB_BODY
    char head[256];
    int h = snprintf(head, sizeof head,
                     "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n", size);
    char *req = malloc((size_t)h + size);
    memcpy(req, head, (size_t)h);
    if (size) memcpy(req + h, data, size);
    exchange(req, (size_t)h + size, 2000);
    free(req);
#else
    /* An incomplete request keeps the connection open until the server's timeout; do
     * not wait for that: 50 ms of silence ends the exchange. */
    exchange(data, size, 50);
#endif
    if (++g_execs % 256 == 0) check_alive();
    return 0;
}
