/* Checked arithmetic for sizes and offsets that come from untrusted input (manifests, image
 * headers, HTTP responses). Every sum or product of such values goes through these, so an
 * overflow is an error at the place that knows what the numbers mean, never a wrapped size.
 * Each returns 1 when the result fits (and stores it), 0 on overflow (and leaves *out). */
#ifndef MX8_CHECKED_MATH_H
#define MX8_CHECKED_MATH_H

#include <stddef.h>
#include <stdint.h>

static inline int mx8_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) return 0;
    *out = r;
    return 1;
}

static inline int mx8_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return 0;
    *out = r;
    return 1;
}

/* a + b as a size_t: also fails when the 64-bit sum does not fit the address space. */
static inline int mx8_add_size(uint64_t a, uint64_t b, size_t *out) {
    uint64_t r;
    if (!mx8_add_u64(a, b, &r) || r > SIZE_MAX) return 0;
    *out = (size_t)r;
    return 1;
}

#endif
