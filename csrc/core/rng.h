/* Deterministic per-sample random numbers: splitmix64 seeded from the 64-bit sample seed.
 *
 * The state lives on the caller's stack (no globals), so the same seed gives the same
 * stream on any thread. splitmix64 is a bijective mixer: consecutive seeds give unrelated
 * streams, which is what the engine feeds in (seed derived from (seed, epoch, sample id)). */
#ifndef MX8_RNG_H
#define MX8_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
} mx8_rng;

static inline void mx8_rng_seed(mx8_rng *r, uint64_t seed) { r->state = seed; }

static inline uint64_t mx8_rng_next(mx8_rng *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform double in [0, 1) with 53 random bits. */
static inline double mx8_rng_unit(mx8_rng *r) {
    return (double)(mx8_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform double in [lo, hi), like torch.empty(1).uniform_(lo, hi). */
static inline double mx8_rng_uniform(mx8_rng *r, double lo, double hi) {
    return lo + (hi - lo) * mx8_rng_unit(r);
}

/* Uniform integer in [lo, hi] (inclusive), unbiased: Lemire's multiply-shift with
 * rejection of the short final interval. */
static inline int64_t mx8_rng_range(mx8_rng *r, int64_t lo, int64_t hi) {
    uint64_t span = (uint64_t)(hi - lo) + 1u;
    if (span == 0) /* full 64-bit range */
        return (int64_t)mx8_rng_next(r);
    uint64_t threshold = (0 - span) % span;
    for (;;) {
        unsigned __int128 m = (unsigned __int128)mx8_rng_next(r) * span;
        if ((uint64_t)m >= threshold)
            return lo + (int64_t)(m >> 64);
    }
}

#endif
