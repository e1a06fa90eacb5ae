/* clock.h - monotonic time for durations and rate limits, and the wall-clock deadline that
 * pthread_cond_timedwait takes. Header-only: each is one clock_gettime call. */
#ifndef BN_CLOCK_H
#define BN_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Seconds on the monotonic clock (durations, budgets, rate limits). */
static inline double bn_clock_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Milliseconds on the monotonic clock. */
static inline int64_t bn_clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The CLOCK_REALTIME instant ms milliseconds from now (ms >= 0): the absolute deadline of a
 * pthread_cond_timedwait on a condition variable with the default clock. */
static inline struct timespec bn_clock_deadline(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

#endif
