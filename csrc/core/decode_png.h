/* PNG decoding through libpng's progressive-free "read" API (not the simplified API,
 * which gamma-converts 16-bit data and composites alpha). Output equals Pillow's
 * Image.open(f).convert("RGB"): 16-bit samples keep their high byte, except 16-bit
 * grayscale, which Pillow opens as "I;16" and clips to 255 on convert; palette and gray
 * expand to RGB; alpha and tRNS are dropped, never composited; interlaced works. */
#ifndef MX8_DECODE_PNG_H
#define MX8_DECODE_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "image_buffer.h"
#include "mx8_error.h"

/* Size from the IHDR chunk, without libpng. */
int mx8_png_probe(const uint8_t *data, size_t len, int *width, int *height, mx8_error *err);

/* Decodes the whole image into pix (packed RGB, stride 3*width); rows is scratch for the
 * row pointers. Both only grow. Checks width*height against max_pixels (0 = no limit)
 * before allocating. Corrupt or truncated data -> MX8_ERR_DECODE with libpng's message. */
int mx8_png_decode(const uint8_t *data, size_t len, uint64_t max_pixels, mx8_scratch *pix,
                   mx8_scratch *rows, mx8_image_view *out, mx8_error *err);

#endif
