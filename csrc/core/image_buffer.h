/* Grow-only scratch buffers and a borrowed view of decoded RGB pixels, shared by the
 * decoders (decode_jpeg, decode_png), the resampler and image_transform. */
#ifndef MX8_IMAGE_BUFFER_H
#define MX8_IMAGE_BUFFER_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "mx8_error.h"

/* Owned by one decoder; only grows, so steady state does no allocation. */
typedef struct {
    void *p;
    size_t cap; /* bytes */
} mx8_scratch;

static inline int mx8_scratch_reserve(mx8_scratch *s, size_t bytes, mx8_error *err) {
    if (bytes <= s->cap) return MX8_OK;
    /* Round up so images of slowly increasing size do not reallocate every time. */
    size_t want = bytes + bytes / 4 + 4096;
    if (want < bytes) want = bytes;
    void *p = realloc(s->p, want);
    if (!p)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory allocating %zu bytes", want);
    s->p = p;
    s->cap = want;
    return MX8_OK;
}

static inline void mx8_scratch_release(mx8_scratch *s) {
    free(s->p);
    s->p = NULL;
    s->cap = 0;
}

/* Decoded RGB pixels: px points at pixel (x, y) of the (possibly DCT-scaled) image and
 * the view covers w x h pixels with rows stride bytes apart. Borrowed: valid until the
 * next decode into the same scratch. */
typedef struct {
    const uint8_t *px;
    size_t stride;
    int x, y, w, h;
    int image_w, image_h; /* size of the whole (scaled) image the view is cut from */
} mx8_image_view;

/* 3 * w * h (+ slack) must fit in size_t and, when max_pixels != 0, w * h <= max_pixels. */
static inline int mx8_check_pixels(uint64_t w, uint64_t h, uint64_t max_pixels, mx8_error *err) {
    uint64_t n = w * h; /* w, h < 2^32, so no overflow in 64 bits */
    if (max_pixels && n > max_pixels)
        return mx8_error_set(err, MX8_ERR_TOO_LARGE,
                             "image is %llux%llu = %llu pixels, above the limit of %llu (max_pixels)",
                             (unsigned long long)w, (unsigned long long)h,
                             (unsigned long long)n, (unsigned long long)max_pixels);
    if (n > (SIZE_MAX - 65536) / 8)
        return mx8_error_set(err, MX8_ERR_TOO_LARGE,
                             "image is %llux%llu pixels, too large to address",
                             (unsigned long long)w, (unsigned long long)h);
    return MX8_OK;
}

#endif
