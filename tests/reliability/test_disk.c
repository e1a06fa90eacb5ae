/* test_disk.c - a full disk, first under the output root, then under the state folder.
 *
 * Each case mounts a small tmpfs (needs root and mount(2); skipped elsewhere, fails
 * under CI=true) and checks that:
 *   - a job whose output does not fit fails with a reason that says so, leaves no
 *     folder under its final name and no .partial behind, and the daemon keeps serving;
 *     once space is back, the same model compresses fine;
 *   - with the state folder full, a submission is refused with a problem+json error
 *     (never a crash, never a half-written job), reads keep working, and submissions
 *     work again once space is freed.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bn_test.h"
#include "rel.h"
#include "svc.h"

static void require_mount(void)
{
    char dir[] = "/tmp/bn-mountcheck-XXXXXX";
    if (mkdtemp(dir) && mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0) {
        umount(dir);
        rmdir(dir);
        return;
    }
    rmdir(dir);
    if (getenv("CI")) {
        fprintf(stderr, "FATAL: cannot mount a tmpfs (%s): the full-disk tests need root\n",
                strerror(errno));
        exit(1);
    }
    fprintf(stderr, "SKIP: cannot mount a tmpfs (%s)\n", strerror(errno));
    exit(77);
}

static const char *small_job(const char *output, char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"model\":\"tiny\",\"output\":\"%s\",\"config\":{\"calibration\":{\"samples\":8,"
             "\"sequence_length\":32},\"evaluate\":{\"windows\":1},\"fine_tune\":{\"enabled\":false}}}",
             output);
    return buf;
}

static long get_status(const svc *s, const char *path)
{
    svc_resp r = {0};
    svc_req(s, "GET", path, NULL, NULL, &r);
    long st = r.status;
    svc_resp_free(&r);
    return st;
}

START_TEST(test_output_root_full)
{
    svc s;
    svc_init(&s, bn_test_build_path("daemon/bitnetd"));
    rel_real_model(s.models, 5);
    ck_assert_int_eq(mount("tmpfs", s.outputs, "tmpfs", 0, "size=512k"), 0);
    svc_start(&s);

    char body[1024], id[64];
    ck_assert_int_eq(svc_submit(&s, small_job("full1", body, sizeof body), NULL, id), 201);
    ck_assert_str_eq(svc_wait(&s, id, 300), "failed");
    const char *err = svc_job_field(&s, id, "error");
    ck_assert_msg(err && (strcasestr(err, "space") || strcasestr(err, "disk full")),
                  "failure reason does not say the disk is full: %s", err ? err : "(none)");
    printf("disk: output root full -> job failed: %s\n", err);
    fflush(stdout);
    char final_dir[4200];
    snprintf(final_dir, sizeof final_dir, "%s/full1", s.outputs);
    struct stat st;
    ck_assert_int_ne(stat(final_dir, &st), 0);
    ck_assert_int_eq(out_root_partials(s.outputs), 0);
    ck_assert_int_eq(get_status(&s, "/healthz"), 200);
    ck_assert_int_eq(get_status(&s, "/v1/jobs"), 200);

    /* Space is back: the same model compresses. */
    ck_assert_int_eq(mount("tmpfs", s.outputs, "tmpfs", MS_REMOUNT, "size=64m"), 0);
    ck_assert_int_eq(svc_submit(&s, small_job("full2", body, sizeof body), NULL, id), 201);
    ck_assert_str_eq(svc_wait(&s, id, 300), "succeeded");
    char why[512] = "";
    ck_assert_msg(out_root_complete(s.outputs, why, sizeof why) == 1, "%s", why);

    svc_stop(&s, SIGTERM);
    umount(s.outputs);
    svc_cleanup(&s);
}
END_TEST

/* Fills the filesystem holding dir; returns the filler's path (caller frees). */
static char *fill(const char *dir)
{
    char *path = malloc(4300);
    snprintf(path, 4300, "%s/filler", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    static char block[65536];
    while (write(fd, block, sizeof block) > 0) {}
    while (write(fd, block, 512) > 0) {}
    close(fd);
    return path;
}

START_TEST(test_state_dir_full)
{
    svc s;
    svc_init(&s, bn_test_build_path("daemon/bitnetd"));
    rel_real_model(s.models, 5);
    mkdir(s.state, 0700);
    ck_assert_int_eq(mount("tmpfs", s.state, "tmpfs", 0, "size=4m"), 0);
    svc_flag(&s, "--workers");
    svc_flag(&s, "0");
    svc_start(&s);

    char body[1024], id[64];
    ck_assert_int_eq(svc_submit(&s, small_job("s1", body, sizeof body), NULL, id), 201);
    char *filler = fill(s.state);
    int refused = 0;
    for (int i = 0; i < 50 && !refused; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%d", i + 2);
        svc_resp r = {0};
        const char *hdrs[] = { "Content-Type: application/json", NULL };
        svc_req(&s, "POST", "/v1/jobs", small_job(name, body, sizeof body), hdrs, &r);
        if (r.status != 201) {
            const char *ct = svc_header(&r, "Content-Type");
            ck_assert_msg(r.status == 503 || r.status == 507, "full state dir -> %ld", r.status);
            ck_assert_msg(ct && strstr(ct, "problem+json"), "no problem+json when the disk is full");
            printf("disk: state dir full -> POST /v1/jobs %ld: %s\n", r.status, r.body);
            fflush(stdout);
            refused = 1;
        }
        svc_resp_free(&r);
    }
    ck_assert_msg(refused, "50 submissions accepted on a full state folder");
    ck_assert_int_eq(get_status(&s, "/healthz"), 200);
    ck_assert_int_eq(get_status(&s, "/v1/jobs"), 200);

    unlink(filler);
    free(filler);
    ck_assert_int_eq(svc_submit(&s, small_job("after", body, sizeof body), NULL, id), 201);
    ck_assert_int_eq(get_status(&s, "/v1/jobs"), 200);

    svc_stop(&s, SIGTERM);
    umount(s.state);
    svc_cleanup(&s);
}
END_TEST

int main(void)
{
    require_mount();
    signal(SIGPIPE, SIG_IGN);
    Suite *su = suite_create("disk");
    TCase *tc = tcase_create("full");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_output_root_full);
    tcase_add_test(tc, test_state_dir_full);
    suite_add_tcase(su, tc);
    return bn_test_run(su);
}
