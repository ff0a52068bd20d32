/* JPEG decoding through the libjpeg API (libjpeg-turbo 2.1+), crop-aware.
 *
 * Two steps, like TurboJPEG/libspng: mx8_jpeg_open reads the header and checks the pixel
 * limit before anything large is allocated; mx8_jpeg_decode then decodes a window.
 * One mx8_jpeg per thread: it owns the decompress struct (reused across images) and a
 * grow-only pixel buffer. Errors, and libjpeg warnings about corrupt data, become
 * MX8_ERR_DECODE with libjpeg's own message; nothing is printed. */
#ifndef MX8_DECODE_JPEG_H
#define MX8_DECODE_JPEG_H

#include <stddef.h>
#include <stdint.h>

#include "image_buffer.h"
#include "mx8_error.h"

typedef struct mx8_jpeg mx8_jpeg;

mx8_jpeg *mx8_jpeg_new(void);
void mx8_jpeg_free(mx8_jpeg *j);

/* Reads the header of data[0..len) (which must stay alive until decode/abort) and returns
 * the image size. MX8_ERR_TOO_LARGE when width*height > max_pixels, or, for a progressive
 * (multi-scan) file, whose coefficients are buffered whole, > max_multiscan_pixels
 * (0 = no limit). */
int mx8_jpeg_open(mx8_jpeg *j, const uint8_t *data, size_t len, uint64_t max_pixels,
                  uint64_t max_multiscan_pixels, int *width, int *height, mx8_error *err);

/* Size of the image decoded with DCT scaling 1/denom (denom 1, 2, 4 or 8). */
void mx8_jpeg_scaled_size(int width, int height, int denom, int *scaled_w, int *scaled_h);

/* Decodes the window (x, y, w, h), in coordinates of the image scaled by 1/denom, to RGB
 * (grayscale and CMYK/YCCK are converted like Pillow's convert("RGB")). w or h == 0
 * means the whole image. crop_aware = 1 decodes only the needed columns (left edge
 * snapped to an iMCU) and rows (skip to the first, stop after the last), widened by one
 * pixel of context for fancy upsampling, so the window's pixels are bit-identical to a
 * full decode; crop_aware = 0 decodes everything. Ends the image either way. */
int mx8_jpeg_decode(mx8_jpeg *j, int denom, int crop_aware, int x, int y, int w, int h,
                    mx8_image_view *out, mx8_error *err);

/* Ends an opened image without decoding it (safe to call when nothing is open). */
void mx8_jpeg_abort(mx8_jpeg *j);

/* Bytes of pixel scratch currently held (for stats and tests). */
size_t mx8_jpeg_scratch_bytes(const mx8_jpeg *j);
/* Frees the pixel scratch (the next decode allocates again). */
void mx8_jpeg_release_scratch(mx8_jpeg *j);

/* Header-only size probe with no libjpeg state: walks the markers to the SOF.
 * Returns MX8_OK, or MX8_ERR_DECODE when no frame header is found. */
int mx8_jpeg_probe(const uint8_t *data, size_t len, int *width, int *height, mx8_error *err);

#endif
