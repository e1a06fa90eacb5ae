/* clock.h - monotonic time for durations and rate limits, and wall time for records.
 * Header-only: each is one clock_gettime call. */
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

#endif
