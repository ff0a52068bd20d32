/* Test inputs made in memory: synthetic photo-like pixels and encoders for JPEG (libjpeg
 * compressor) and PNG (libpng writer). Returned buffers are malloc'd; free() them. */
#ifndef MX8_TEST_IMAGES_H
#define MX8_TEST_IMAGES_H

#include <stddef.h>
#include <stdint.h>

/* Smooth colour gradients plus deterministic noise and edges, comps bytes a pixel. */
void t_fill_photo(uint8_t *px, int w, int h, int comps, uint64_t seed);

enum { T_JPEG_RGB = 0, T_JPEG_GRAY = 1, T_JPEG_CMYK = 2, T_JPEG_YCCK = 3 };

/* progressive: 0 baseline, 1 libjpeg's simple progression (10 scans for YCbCr),
 * T_JPEG_SCAN_PER_COEF one scan per AC coefficient per component (190 for YCbCr). */
enum { T_JPEG_SCAN_PER_COEF = 2 };

/* px holds w*h pixels of 3 (RGB), 1 (GRAY) or 4 (CMYK/YCCK) bytes. h_samp/v_samp give the
 * luma sampling factors (2,2 = 4:2:0; 2,1 = 4:2:2; 1,1 = 4:4:4; 1,2 = 4:4:0). */
uint8_t *t_encode_jpeg(const uint8_t *px, int w, int h, int kind, int quality, int h_samp,
                       int v_samp, int progressive, size_t *len);

/* rows: w*h samples packed as libpng expects for (color_type, bit_depth), 16-bit big
 * endian. palette/trans may be NULL. */
uint8_t *t_encode_png(const uint8_t *rows, int w, int h, int color_type, int bit_depth,
                      int interlace, const uint8_t *palette_rgb, int npalette,
                      const uint8_t *trans, int ntrans, size_t *len);

/* Re-computes the CRC of the chunk whose type starts at png[off] (length precedes it). */
void t_png_fix_crc(uint8_t *png, size_t type_off);

/* Offset of the first SOFn marker (0xFF byte) in a JPEG, or 0. */
size_t t_jpeg_sof_offset(const uint8_t *d, size_t len);

#endif
