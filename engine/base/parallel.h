/* parallel.h - run independent tasks on a few short-lived threads inside one call.
 *
 * The engine has no long-lived threads (docs/ARCHITECTURE.md, "Threads"): a call that wants to
 * compute in parallel spawns n_threads - 1 helpers, works itself as thread 0, and joins
 * them before returning. Tasks are handed out dynamically (an atomic counter), so uneven
 * tasks (causal attention rows) balance. With n_threads <= 1 or one task, everything runs
 * on the caller's thread.
 */
#ifndef BN_PARALLEL_H
#define BN_PARALLEL_H

/* fn(ctx, task, thread) for every task in [0, n_tasks); thread in [0, n_threads). */
typedef void (*bn_task_fn)(void *ctx, int task, int thread);
void bn_parallel_for(int n_threads, int n_tasks, bn_task_fn fn, void *ctx);
/* Number of online CPUs (>= 1). */
int bn_cpu_count(void);

#endif
