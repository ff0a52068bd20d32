/* splitmix64: a tiny, well-mixed 64-bit generator. Integer-only, so every platform and
 * compiler gives the same sequence (epoch orders must be reproducible everywhere). */
#ifndef MX8_RNG_SPLITMIX_H
#define MX8_RNG_SPLITMIX_H

#include <stdint.h>

static inline uint64_t mx8_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform integer in [0, bound) without modulo bias (Lemire's multiply-shift with
 * rejection). bound > 0. */
static inline uint64_t mx8_rand_below(uint64_t *state, uint64_t bound) {
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t r = mx8_splitmix64(state);
        __uint128_t m = (__uint128_t)r * bound;
        if ((uint64_t)m >= threshold)
            return (uint64_t)(m >> 64);
    }
}

#endif
