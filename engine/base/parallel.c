/* parallel.c - see parallel.h. */
#include "base/parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define BN_PAR_MAX_THREADS 64

typedef struct par_job {
    bn_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next;
} par_job;

typedef struct par_worker {
    par_job *job;
    int thread;
} par_worker;

static void par_run(par_job *job, int thread)
{
    for (;;) {
        int t = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (t >= job->n_tasks) break;
        job->fn(job->ctx, t, thread);
    }
}

static void *par_main(void *arg)
{
    par_worker *w = arg;
    par_run(w->job, w->thread);
    return NULL;
}

void bn_parallel_for(int n_threads, int n_tasks, bn_task_fn fn, void *ctx)
{
    if (n_tasks <= 0) return;
    if (n_threads > n_tasks) n_threads = n_tasks;
    if (n_threads > BN_PAR_MAX_THREADS) n_threads = BN_PAR_MAX_THREADS;
    par_job job = { .fn = fn, .ctx = ctx, .n_tasks = n_tasks };
    atomic_init(&job.next, 0);
    pthread_t tid[BN_PAR_MAX_THREADS];
    par_worker wk[BN_PAR_MAX_THREADS];
    int started = 0;
    for (int i = 1; i < n_threads; i++) {
        wk[i] = (par_worker){ .job = &job, .thread = i };
        if (pthread_create(&tid[i], NULL, par_main, &wk[i]) != 0) break; /* fewer helpers */
        started = i;
    }
    par_run(&job, 0);
    for (int i = 1; i <= started; i++) pthread_join(tid[i], NULL);
}

int bn_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
