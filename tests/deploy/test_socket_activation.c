/* test_socket_activation.c - bitnetd serves on a socket handed over by systemd.
 *
 * With bitnetd.socket, systemd binds the port and starts bitnetd with the listening
 * socket as fd 3 and LISTEN_FDS=1, LISTEN_PID=<its pid> (sd_listen_fds(3)). This test
 * plays systemd: it binds a loopback socket on a free port, passes it the same way, and
 * gives bitnetd a --listen address whose port is already taken by another socket, so a
 * daemon that ignored the handed-over socket would fail to start. It expects bitnetd to
 * answer GET /healthz on the handed-over port, to announce that port in bitnetd.url, and
 * to stop cleanly on SIGTERM. A second case passes two sockets, which bitnetd must
 * refuse with an error rather than silently pick one.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bn_test.h"

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Starts the daemon with fds[0..n-1] as fds 3.. and the LISTEN_* variables. */
static pid_t start_activated(const char *dir, const int *fds, int n, int busy_port)
{
    const char *bin = getenv("BN_BITNETD");
    if (!bin || !*bin) bin = bn_test_build_path("daemon/bitnetd");
    ck_assert_msg(access(bin, X_OK) == 0, "bitnetd not built: %s", bin);
    char state[4096], models[4096], out[4096], listen_arg[64], log[4096];
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(models, sizeof models, "%s/models", dir);
    snprintf(out, sizeof out, "%s/outputs", dir);
    snprintf(log, sizeof log, "%s/bitnetd.log", dir);
    snprintf(listen_arg, sizeof listen_arg, "127.0.0.1:%d", busy_port);
    mkdir(models, 0755);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Move the sockets to 3, 4, ... (first out of the way, then into place). */
        int tmp[8];
        for (int i = 0; i < n; i++) tmp[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 100);
        for (int i = 0; i < n; i++) {
            dup2(tmp[i], 3 + i); /* dup2 clears FD_CLOEXEC on the new fd */
            close(tmp[i]);
        }
        char v[32];
        snprintf(v, sizeof v, "%d", n);
        setenv("LISTEN_FDS", v, 1);
        snprintf(v, sizeof v, "%d", (int)getpid());
        setenv("LISTEN_PID", v, 1);
        int lf = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (lf >= 0) {
            dup2(lf, 1);
            dup2(lf, 2);
        }
        execl(bin, bin, "--listen", listen_arg, "--state-dir", state, "--model-root", models,
              "--output-root", out, "--workers", "1", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads <dir>/state/bitnetd.url (waits up to 30 s); returns 0 and fills url. */
static int read_url(const char *dir, pid_t pid, char *url, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/state/bitnetd.url", dir);
    for (double end = now_s() + 30; now_s() < end; usleep(50000)) {
        if (waitpid(pid, NULL, WNOHANG) == pid) return -1;
        FILE *f = fopen(path, "r");
        if (!f) continue;
        char *ok = fgets(url, (int)n, f);
        fclose(f);
        if (ok && *url) {
            url[strcspn(url, "\r\n")] = 0;
            return 0;
        }
    }
    return -1;
}

static int http_status(int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    char req[256], buf[64] = "";
    int len = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
    int code = -1;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (write(fd, req, (size_t)len) == len && poll(&p, 1, 10000) == 1 &&
        read(fd, buf, sizeof buf - 1) > 12)
        code = atoi(buf + 9);
    close(fd);
    return code;
}

static char *file_text(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

START_TEST(test_serves_on_the_passed_socket)
{
    char *dir = bn_test_tmpdir("sockact");
    int port, busy_port;
    int fd = listen_loopback(&port);
    int busy = listen_loopback(&busy_port); /* --listen points here: must not be used */
    pid_t pid = start_activated(dir, &fd, 1, busy_port);
    close(fd);
    char url[512], want[64], log[4096];
    snprintf(log, sizeof log, "%s/bitnetd.log", dir);
    int rc = read_url(dir, pid, url, sizeof url);
    if (rc != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        ck_abort_msg("no bitnetd.url; daemon log:\n%s", file_text(log));
    }
    snprintf(want, sizeof want, "http://127.0.0.1:%d", port);
    ck_assert_msg(strcmp(url, want) == 0, "bitnetd.url is %s, want %s", url, want);
    ck_assert_int_eq(http_status(port, "/healthz"), 200);
    ck_assert_int_eq(http_status(port, "/"), 200);
    kill(pid, SIGTERM);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d after SIGTERM; log:\n%s",
                  st, file_text(log));
    close(busy);
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_refuses_two_sockets)
{
    char *dir = bn_test_tmpdir("sockact2");
    int p1, p2, busy_port;
    int fds[2] = {listen_loopback(&p1), listen_loopback(&p2)};
    int busy = listen_loopback(&busy_port);
    pid_t pid = start_activated(dir, fds, 2, busy_port);
    close(fds[0]);
    close(fds[1]);
    int st = 0;
    double end = now_s() + 30;
    while (waitpid(pid, &st, WNOHANG) == 0 && now_s() < end) usleep(50000);
    if (now_s() >= end) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        ck_abort_msg("bitnetd kept running with two sockets passed");
    }
    char log[4096];
    snprintf(log, sizeof log, "%s/bitnetd.log", dir);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "bitnetd accepted two sockets");
    ck_assert_msg(strstr(file_text(log), "socket") != NULL, "error does not mention the sockets:\n%s",
                  file_text(log));
    close(busy);
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("socket_activation");
    TCase *tc = tcase_create("sd_listen_fds");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_serves_on_the_passed_socket);
    tcase_add_test(tc, test_refuses_two_sockets);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
