/* test_notify.c - bitnetd speaks the sd_notify protocol the way systemd expects.
 *
 * systemd hands a Type=notify service an AF_UNIX datagram socket in NOTIFY_SOCKET and,
 * with WatchdogSec=, the interval in WATCHDOG_USEC. This test plays systemd: it binds
 * such a socket, starts the real bitnetd (a free loopback port, a fresh state dir) with
 * both variables set, and records every datagram. It expects, in this order:
 *   READY=1      once store, workers and API are up (and the API then answers);
 *   STATUS=...   a human-readable status line after readiness (queue depth, running);
 *   WATCHDOG=1   repeatedly, at least twice within a few watchdog periods;
 *   STOPPING=1   after SIGTERM, followed by a clean exit (status 0).
 * A datagram may carry several assignments separated by newlines.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bn_test.h"

#define MAX_MSGS 4096
#define WATCHDOG_USEC 400000 /* 0.4 s: the daemon should ping about every 0.2 s */

typedef struct notify_log {
    char *line[MAX_MSGS]; /* one assignment per entry, in arrival order */
    double at[MAX_MSGS];  /* seconds since the daemon started */
    int n;
} notify_log;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bind_notify_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof sa.sun_path);
    strcpy(sa.sun_path, path);
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind %s: %s", path,
                  strerror(errno));
    return fd;
}

/* Reads datagrams for up to timeout_s; splits them into lines. Stops early when a line
 * starting with until (if non-NULL) arrives. Returns 1 if it arrived. */
static int collect(int fd, notify_log *log, double t0, double timeout_s, const char *until)
{
    double end = now_s() + timeout_s;
    while (now_s() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ms = (int)((end - now_s()) * 1000) + 1;
        if (poll(&p, 1, ms) <= 0) continue;
        char buf[4096];
        ssize_t k = recv(fd, buf, sizeof buf - 1, 0);
        if (k <= 0) continue;
        buf[k] = '\0';
        int hit = 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            if (log->n < MAX_MSGS) {
                log->at[log->n] = now_s() - t0;
                log->line[log->n++] = strdup(l);
            }
            if (until && strncmp(l, until, strlen(until)) == 0) hit = 1;
        }
        if (hit) return 1;
    }
    return 0;
}

static int first_index(const notify_log *log, const char *prefix, int from)
{
    for (int i = from; i < log->n; i++)
        if (strncmp(log->line[i], prefix, strlen(prefix)) == 0) return i;
    return -1;
}

static int count_from(const notify_log *log, const char *prefix, int from, int to)
{
    int c = 0;
    for (int i = from; i < to && i < log->n; i++)
        if (strncmp(log->line[i], prefix, strlen(prefix)) == 0) c++;
    return c;
}

static void dump(const notify_log *log)
{
    for (int i = 0; i < log->n; i++) fprintf(stderr, "  %7.3fs  %s\n", log->at[i], log->line[i]);
}

static pid_t start_daemon(const char *dir, const char *sock)
{
    const char *bin = getenv("BN_BITNETD"); /* set by meson: bitnetd or bitnetd-fake */
    if (!bin || !*bin) bin = bn_test_build_path("daemon/bitnetd");
    ck_assert_msg(access(bin, X_OK) == 0, "bitnetd not built: %s", bin);
    char state[4096], models[4096], out[4096], wd[64];
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(models, sizeof models, "%s/models", dir);
    snprintf(out, sizeof out, "%s/outputs", dir);
    mkdir(models, 0755);
    mkdir(out, 0755);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        snprintf(wd, sizeof wd, "%d", (int)getpid());
        setenv("NOTIFY_SOCKET", sock, 1);
        setenv("WATCHDOG_PID", wd, 1);
        snprintf(wd, sizeof wd, "%d", WATCHDOG_USEC);
        setenv("WATCHDOG_USEC", wd, 1);
        execl(bin, bin, "--listen", "127.0.0.1:0", "--state-dir", state, "--model-root", models,
              "--output-root", out, "--workers", "1", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid, double timeout_s)
{
    double end = now_s() + timeout_s;
    int st = 0;
    while (now_s() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return st;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    ck_abort_msg("bitnetd did not exit within %.0f s of SIGTERM", timeout_s);
    return -1;
}

START_TEST(test_ready_status_watchdog_stopping)
{
    char *dir = bn_test_tmpdir("notify");
    ck_assert_ptr_nonnull(dir);
    char sock[4096];
    snprintf(sock, sizeof sock, "%s/notify.sock", dir);
    int fd = bind_notify_socket(sock);
    notify_log *log = calloc(1, sizeof *log);

    double t0 = now_s();
    pid_t pid = start_daemon(dir, sock);
    int ready = collect(fd, log, t0, 30.0, "READY=1");
    if (!ready) {
        dump(log);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        ck_abort_msg("no READY=1 within 30 s (%d notify lines, above)", log->n);
    }
    int i_ready = first_index(log, "READY=1", 0);
    /* After READY the daemon must be reachable: the URL file exists. */
    char urlf[4096];
    snprintf(urlf, sizeof urlf, "%s/state/bitnetd.url", dir);
    ck_assert_msg(access(urlf, R_OK) == 0, "READY=1 sent but %s does not exist", urlf);

    /* Several watchdog periods: expect pings and a status line. */
    collect(fd, log, t0, 6.0 * WATCHDOG_USEC / 1e6, NULL);
    int n_before_term = log->n;
    kill(pid, SIGTERM);
    int stopping = collect(fd, log, t0, 30.0, "STOPPING=1");
    int st = wait_exit(pid, 30.0);
    collect(fd, log, t0, 0.05, NULL);
    fprintf(stderr, "notify lines from bitnetd:\n");
    dump(log);

    ck_assert_msg(stopping, "no STOPPING=1 after SIGTERM");
    int i_stop = first_index(log, "STOPPING=1", 0);
    int i_status = first_index(log, "STATUS=", i_ready + 1);
    int i_wd = first_index(log, "WATCHDOG=1", i_ready + 1);
    ck_assert_msg(i_status > i_ready, "no STATUS= after READY=1");
    ck_assert_msg(strstr(log->line[i_status], "queued") && strstr(log->line[i_status], "running"),
                  "STATUS= has no queue depth and running jobs: %s", log->line[i_status]);
    ck_assert_msg(i_wd > i_ready, "no WATCHDOG=1 after READY=1");
    ck_assert_msg(i_stop > i_status && i_stop > i_wd, "STOPPING=1 came before STATUS/WATCHDOG");
    ck_assert_msg(i_stop >= n_before_term, "STOPPING=1 was sent before SIGTERM");
    ck_assert_msg(count_from(log, "WATCHDOG=1", i_ready, n_before_term) >= 2,
                  "fewer than 2 WATCHDOG=1 pings in %.1f s with WATCHDOG_USEC=%d",
                  6.0 * WATCHDOG_USEC / 1e6, WATCHDOG_USEC);
    ck_assert_msg(count_from(log, "READY=1", i_ready + 1, log->n) == 0, "READY=1 sent twice");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "bitnetd exit status %d after SIGTERM",
                  WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));

    for (int i = 0; i < log->n; i++) free(log->line[i]);
    free(log);
    close(fd);
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("notify");
    TCase *tc = tcase_create("sd_notify");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_ready_status_watchdog_stopping);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
