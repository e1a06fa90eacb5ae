/* rng.h - splitmix64, the engine's one pseudo-random generator (seeded, reproducible),
 * and what is built on it: uniform doubles and Fisher-Yates shuffles. Header-only. */
#ifndef BN_RNG_H
#define BN_RNG_H

#include <stdint.h>

/* Advances *state and returns the next 64 random bits. */
static inline uint64_t bn_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The splitmix64 finaliser of x alone: a counter-based generator (same x, same bits). */
static inline uint64_t bn_rng_hash(uint64_t x)
{
    return bn_rng_next(&x);
}

/* Uniform in (0, 1): never 0, never 1. */
static inline double bn_rng_uniform01(uint64_t *state)
{
    return ((double)(bn_rng_next(state) >> 11) + 0.5) * 0x1.0p-53;
}

/* Shuffles idx[0..n) in place (Fisher-Yates), reproducibly for a seed. */
static inline void bn_rng_shuffle(int *idx, int n, uint64_t seed)
{
    uint64_t s = seed;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(bn_rng_next(&s) % (uint64_t)(i + 1));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

#endif
