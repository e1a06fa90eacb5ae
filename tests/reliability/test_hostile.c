/* test_hostile.c - hostile clients against the real bitnetd.
 *
 *   auth:      every mutating route refuses a missing, unknown or too-weak token
 *              (401/403 problem+json), and accepts the right one;
 *   traversal: model and output paths and artifact paths in every form (.., absolute,
 *              symlink out of the root, NUL, percent-encoding) are refused and never
 *              return a byte from outside the roots;
 *   slowloris: many idle and byte-at-a-time connections (more than the connection
 *              limit) time out, and a real client still gets served meanwhile;
 *   secrets:   after a job that reports to (fake) W&B, neither a bearer token nor the
 *              W&B API key appears in the daemon's log, any API response, the output
 *              folder or the state folder.
 */
#include <arpa/inet.h>
#include <check.h>
#include <stdbool.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bn_test.h"
#include "fake_wandb.h"
#include "rel.h"
#include "svc.h"

#define TOKEN_READ "rd_9f2c41d7e1a04b6b8d5e3c2a1f0e9d8c"
#define TOKEN_SUBMIT "sb_0a1b2c3d4e5f60718293a4b5c6d7e8f9"
#define TOKEN_ADMIN "ad_77aa55cc33ee11ff22dd44bb66998800"
#define WANDB_KEY "wandbsecretkey0123456789abcdefghijklmnopqrstu"

static svc S;

static void sha256_line(FILE *f, const char *name, const char *scope, const char *token)
{
    char cmd[512], hex[128] = "";
    snprintf(cmd, sizeof cmd, "printf %%s '%s' | sha256sum", token);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(fscanf(p, "%64s", hex), 1);
    pclose(p);
    fprintf(f, "%s %s %s\n", name, scope, hex);
}

static void start_with_tokens(svc *s, int timeout_s, int max_conn, bool workers)
{
    svc_init(s, bn_test_build_path("daemon/bitnetd"));
    char path[4400];
    snprintf(path, sizeof path, "%s/tokens", s->root);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    sha256_line(f, "reader", "read", TOKEN_READ);
    sha256_line(f, "submitter", "submit", TOKEN_SUBMIT);
    sha256_line(f, "operator", "admin", TOKEN_ADMIN);
    fclose(f);
    svc_flag(s, "--tokens-file");
    svc_flag(s, path);
    static char t[64], c[64];
    snprintf(t, sizeof t, "api.connection_timeout=%d", timeout_s);
    snprintf(c, sizeof c, "api.max_connections=%d", max_conn);
    svc_flag(s, "--set");
    svc_flag(s, t);
    svc_flag(s, "--set");
    svc_flag(s, c);
    if (!workers) {
        svc_flag(s, "--workers");
        svc_flag(s, "0");
    }
}

static long req(const char *method, const char *path, const char *body, const char *token,
                char **out)
{
    char auth[256];
    const char *hdrs[3] = { "Content-Type: application/json", NULL, NULL };
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdrs[1] = auth;
    }
    svc_resp r = {0};
    svc_req(&S, method, path, body, hdrs, &r);
    long st = r.status;
    if (st >= 400) {
        const char *ct = svc_header(&r, "Content-Type");
        ck_assert_msg(ct && strstr(ct, "application/problem+json"), "%s %s -> %ld without problem+json",
                      method, path, st);
    }
    if (out) *out = r.body ? strdup(r.body) : strdup("");
    svc_resp_free(&r);
    return st;
}

START_TEST(test_auth_every_mutating_route)
{
    start_with_tokens(&S, 30, 256, false);
    svc_start(&S);
    const char *body = "{\"model\":\"tiny\",\"output\":\"a1\",\"config\":{\"fine_tune\":{\"enabled\":false}}}";
    /* A queued job to act on (workers 0 keeps it queued). */
    char *resp = NULL, id[64] = "";
    ck_assert_int_eq(req("POST", "/v1/jobs", body, TOKEN_SUBMIT, &resp), 201);
    char *p = strstr(resp, "\"id\":\"");
    ck_assert_ptr_nonnull(p);
    sscanf(p + 6, "%63[^\"]", id);
    free(resp);
    char cancel[128], job[128];
    snprintf(cancel, sizeof cancel, "/v1/jobs/%s/cancel", id);
    snprintf(job, sizeof job, "/v1/jobs/%s", id);
    struct { const char *m, *path, *body, *weak; } routes[] = {
        { "POST", "/v1/jobs", body, TOKEN_READ },
        { "POST", cancel, NULL, TOKEN_READ },
        { "DELETE", job, NULL, TOKEN_SUBMIT },
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        ck_assert_int_eq(req(routes[i].m, routes[i].path, routes[i].body, NULL, NULL), 401);
        ck_assert_int_eq(req(routes[i].m, routes[i].path, routes[i].body, "not-a-token", NULL), 401);
        ck_assert_int_eq(req(routes[i].m, routes[i].path, routes[i].body, TOKEN_READ "x", NULL), 401);
        ck_assert_int_eq(req(routes[i].m, routes[i].path, routes[i].body, routes[i].weak, NULL), 403);
    }
    /* Reads need a token too; health does not. */
    ck_assert_int_eq(req("GET", "/v1/jobs", NULL, NULL, NULL), 401);
    ck_assert_int_eq(req("GET", job, NULL, TOKEN_READ, NULL), 200);
    ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200);
    /* The right scopes pass. */
    ck_assert_int_eq(req("POST", cancel, NULL, TOKEN_SUBMIT, NULL), 200);
    long del = req("DELETE", job, NULL, TOKEN_ADMIN, NULL);
    ck_assert_msg(del == 200 || del == 204, "DELETE with admin token -> %ld", del);
    svc_cleanup(&S);
}
END_TEST

START_TEST(test_traversal_every_form)
{
    start_with_tokens(&S, 30, 256, false);
    /* A symlink inside the model root that points outside it. */
    char link[4400];
    snprintf(link, sizeof link, "%s/escape", S.models);
    ck_assert_int_eq(symlink("/etc", link), 0);
    svc_start(&S);
    const char *models[] = { "../tiny", "/etc", "tiny/../../x", "escape", "escape/ssl",
                             "%2e%2e/etc", "..%2f..%2fetc", "tiny\\u0000/../../etc", "/proc/self/cwd" };
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"model\":\"%s\",\"output\":\"t%zu\"}", models[i], i);
        long st = req("POST", "/v1/jobs", body, TOKEN_SUBMIT, NULL);
        ck_assert_msg(st == 403 || st == 400 || st == 404, "model %s -> %ld", models[i], st);
    }
    const char *outputs[] = { "../x", "/tmp/x", "a/../../x", "..", ".", "%2e%2e", "a\\u0000b", "" };
    for (size_t i = 0; i < sizeof outputs / sizeof outputs[0]; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"model\":\"tiny\",\"output\":\"%s\"}", outputs[i]);
        long st = req("POST", "/v1/jobs", body, TOKEN_SUBMIT, NULL);
        ck_assert_msg(st == 403 || st == 400, "output \"%s\" -> %ld", outputs[i], st);
    }
    /* Artifact paths of a real job id. */
    char *resp = NULL, id[64] = "";
    ck_assert_int_eq(req("POST", "/v1/jobs", "{\"model\":\"tiny\",\"output\":\"ok\"}", TOKEN_SUBMIT, &resp), 201);
    sscanf(strstr(resp, "\"id\":\"") + 6, "%63[^\"]", id);
    free(resp);
    const char *arts[] = { "../../../../etc/passwd", "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                           "..%2f..%2f..%2fetc%2fpasswd", "%00/etc/passwd", "/etc/passwd",
                           "a/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd" };
    for (size_t i = 0; i < sizeof arts / sizeof arts[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "/v1/jobs/%s/artifacts/%s", id, arts[i]);
        char *out = NULL;
        long st = req("GET", path, NULL, TOKEN_READ, &out);
        ck_assert_msg(st == 400 || st == 403 || st == 404 || st == 409, "artifact %s -> %ld", arts[i], st);
        ck_assert_msg(!strstr(out, "root:"), "artifact %s leaked /etc/passwd", arts[i]);
        free(out);
    }
    svc_cleanup(&S);
}
END_TEST

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return -1; }
    return fd;
}

/* True when the server has closed fd (EOF or reset) within wait_ms. */
static int closed_by_server(int fd, int wait_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, wait_ms) <= 0) return 0;
    char b[256];
    return recv(fd, b, sizeof b, MSG_DONTWAIT) <= 0;
}

START_TEST(test_slowloris_and_idle_connections)
{
    const int timeout_s = 2, limit = 48, idle = 120;
    start_with_tokens(&S, timeout_s, limit, false);
    svc_start(&S);
    int port = 0;
    sscanf(strrchr(S.url, ':') + 1, "%d", &port);
    int fds[120];
    for (int i = 0; i < idle; i++) {
        fds[i] = connect_port(port);
        /* half of them start a request and stall in the headers (slow loris) */
        if (fds[i] >= 0 && i % 2) {
            const char *part = "GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            ck_assert_int_gt(send(fds[i], part, strlen(part), MSG_NOSIGNAL), 0);
        }
    }
    /* Real clients: each request must be served within a few timeouts at worst. */
    double worst = 0;
    for (int i = 0; i < 10; i++) {
        double t0 = svc_now();
        long st = 0;
        while (st != 200 && svc_now() - t0 < 3.0 * timeout_s + 5) {
            st = req("GET", "/healthz", NULL, NULL, NULL);
            if (st != 200) usleep(100000);
        }
        ck_assert_msg(st == 200, "real client starved for %.1f s", svc_now() - t0);
        if (svc_now() - t0 > worst) worst = svc_now() - t0;
        /* keep trickling a byte into the slow ones */
        for (int k = 1; k < idle; k += 2)
            if (fds[k] >= 0) send(fds[k], "a", 1, MSG_NOSIGNAL);
    }
    /* Idle connections are closed by the server after the timeout. */
    usleep((useconds_t)(timeout_s + 2) * 1000000);
    int still_open = 0;
    for (int i = 0; i < idle; i += 2)
        if (fds[i] >= 0 && !closed_by_server(fds[i], 10)) still_open++;
    ck_assert_msg(still_open == 0, "%d idle connections still open after %d s", still_open, timeout_s + 2);
    for (int i = 0; i < idle; i++)
        if (fds[i] >= 0) close(fds[i]);
    printf("slowloris: %d idle/slow connections vs limit %d: worst real-client wait %.2f s\n",
           idle, limit, worst);
    fflush(stdout);
    ck_assert_int_eq(req("GET", "/healthz", NULL, NULL, NULL), 200);
    svc_cleanup(&S);
}
END_TEST

/* grep -r for needle in dir; returns the first file containing it, or NULL. */
static char *file_containing(const char *dir, const char *needle)
{
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "grep -rlaF -- '%s' '%s' 2>/dev/null | head -1", needle, dir);
    FILE *p = popen(cmd, "r");
    char line[4096] = "";
    if (p) {
        if (!fgets(line, sizeof line, p)) line[0] = 0;
        pclose(p);
    }
    line[strcspn(line, "\n")] = 0;
    return line[0] ? strdup(line) : NULL;
}

START_TEST(test_secrets_never_leak)
{
    fake_wandb *fw = fake_wandb_start(0, WANDB_KEY);
    ck_assert_ptr_nonnull(fw);
    start_with_tokens(&S, 30, 256, true);
    rel_real_model(S.models, 3);
    char env_url[256];
    snprintf(env_url, sizeof env_url, "WANDB_BASE_URL=%s", fake_wandb_url(fw));
    svc_setenv(&S, env_url);
    svc_setenv(&S, "WANDB_API_KEY=" WANDB_KEY);
    svc_flag(&S, "--log-level");
    svc_flag(&S, "debug");
    svc_start(&S);

    const char *body = "{\"model\":\"tiny\",\"output\":\"sec\",\"config\":{\"calibration\":{\"samples\":8,"
                       "\"sequence_length\":32},\"evaluate\":{\"windows\":1},\"fine_tune\":{\"enabled\":false}},"
                       "\"tracking\":{\"wandb\":{\"mode\":\"online\"}}}";
    char *resp = NULL, id[64] = "";
    ck_assert_int_eq(req("POST", "/v1/jobs", body, TOKEN_SUBMIT, &resp), 201);
    sscanf(strstr(resp, "\"id\":\"") + 6, "%63[^\"]", id);
    /* Every response the API gives about the job goes into one file to search. */
    char all[4400];
    snprintf(all, sizeof all, "%s/responses.txt", S.root);
    FILE *f = fopen(all, "w");
    fputs(resp, f);
    free(resp);
    double t0 = svc_now();
    char st[64] = "";
    while (svc_now() - t0 < 300) {
        char path[128], *out = NULL;
        snprintf(path, sizeof path, "/v1/jobs/%s", id);
        req("GET", path, NULL, TOKEN_READ, &out);
        if (strstr(out, "\"status\":\"succeeded\"")) { snprintf(st, sizeof st, "succeeded"); fputs(out, f); free(out); break; }
        if (strstr(out, "\"status\":\"failed\"")) { fputs(out, f); free(out); ck_abort_msg("job failed"); }
        free(out);
        usleep(200000);
    }
    ck_assert_str_eq(st, "succeeded");
    const char *gets[] = { "/v1/jobs", "/metrics", "/v1/openapi.json", "/readyz", "/" };
    for (size_t i = 0; i < sizeof gets / sizeof gets[0]; i++) {
        char *out = NULL;
        req("GET", gets[i], NULL, TOKEN_ADMIN, &out);
        fputs(out, f);
        free(out);
    }
    const char *subs[] = { "events", "metrics", "artifacts" };
    for (size_t i = 0; i < 3; i++) {
        char path[160], *out = NULL;
        snprintf(path, sizeof path, "/v1/jobs/%s/%s", id, subs[i]);
        req("GET", path, NULL, TOKEN_READ, &out);
        fputs(out, f);
        free(out);
    }
    fclose(f);
    /* Let the tracker deliver, then stop cleanly so logs are complete. */
    usleep(2000000);
    svc_stop(&S, SIGTERM);

    const char *secrets[] = { TOKEN_READ, TOKEN_SUBMIT, TOKEN_ADMIN, WANDB_KEY };
    const char *places[] = { S.log, all, S.outputs, S.state };
    for (size_t i = 0; i < 4; i++)
        for (size_t k = 0; k < 4; k++) {
            char *hit = file_containing(places[k], secrets[i]);
            ck_assert_msg(hit == NULL, "secret #%zu found in %s", i, hit ? hit : "");
        }
    /* The search itself works: the fake server did receive the key (as Basic auth). */
    ck_assert_int_gt(fake_wandb_request_count(fw), 0);
    svc_cleanup(&S);
    fake_wandb_stop(fw);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *su = suite_create("hostile");
    TCase *tc = tcase_create("hostile");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_auth_every_mutating_route);
    tcase_add_test(tc, test_traversal_every_form);
    tcase_add_test(tc, test_slowloris_and_idle_connections);
    tcase_add_test(tc, test_secrets_never_leak);
    suite_add_tcase(su, tc);
    return bn_test_run(su);
}
