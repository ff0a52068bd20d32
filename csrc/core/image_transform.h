/* Decode one encoded image (JPEG or PNG) and write the transformed RGB result straight
 * into a caller-owned output slot: the per-sample hot path of the engine.
 *
 * Thread model: one mx8_decoder per thread; it owns the libjpeg/libpng state and
 * scratch buffers and is reused for every sample (no per-image allocation in steady
 * state once scratch has grown to the largest image seen). */
#ifndef MX8_IMAGE_TRANSFORM_H
#define MX8_IMAGE_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"

typedef enum {
    MX8_FMT_UNKNOWN = 0,
    MX8_FMT_JPEG = 1,
    MX8_FMT_PNG = 2,
} mx8_image_format;

typedef enum {
    MX8_CROP_NONE = 0,   /* resize the whole image to out_h x out_w */
    MX8_CROP_CENTER = 1, /* shorter side -> resize_short, then center crop out_h x out_w */
    MX8_CROP_RANDOM = 2, /* torchvision RandomResizedCrop(scale, ratio) then resize */
} mx8_crop_mode;

typedef enum {
    MX8_LAYOUT_NCHW = 0, /* slot holds 3 planes of out_h*out_w */
    MX8_LAYOUT_NHWC = 1, /* slot holds out_h*out_w interleaved RGB */
} mx8_layout;

typedef struct {
    int out_h, out_w;           /* output size; both > 0 */
    int crop_mode;              /* mx8_crop_mode */
    int resize_short;           /* MX8_CROP_CENTER: shorter side target; 0 = round(min(out)*256/224) */
    double scale_min, scale_max; /* MX8_CROP_RANDOM: fraction of the area, e.g. 0.08, 1.0 */
    double ratio_min, ratio_max; /* MX8_CROP_RANDOM: aspect w/h, e.g. 3/4, 4/3 */
    int flip;                   /* 1: horizontal flip with probability 0.5 (per-sample RNG) */
    int layout;                 /* mx8_layout */
    uint64_t max_pixels;        /* refuse images with w*h above this before allocating; 0 = no limit */
    uint64_t max_buffered_pixels; /* the same for images decoded whole into memory, PNG and
                                 * progressive JPEG (0: max_pixels applies). They cost several
                                 * times a baseline JPEG's CPU and memory a pixel (PNG: whole
                                 * inflate, no DCT scaling or crop-aware decode; progressive:
                                 * 2 bytes of coefficients per pixel and component): 3*10^7 is
                                 * ~1 s and <300 MB here, as 10^8 is for baseline JPEG
                                 * (scripts/bench_limits.py). */
    int crop_aware;             /* 1: decode only the rows/columns the crop needs (JPEG) */
    int dct_scaling;            /* 1: JPEG may decode at 1/2, 1/4, 1/8 scale when the crop is at
                                 * least that many times the output in both dimensions; faster,
                                 * no longer bit-identical to a full-size decode. 0 = off */
} mx8_transform;

/* torchvision RandomResizedCrop(size) defaults (scale 0.08-1, ratio 3/4-4/3), random flip,
 * NCHW, the 100 Mpixel limit, crop-aware decode: one place for the defaults. */
mx8_transform mx8_transform_random_crop(int out_h, int out_w);

typedef struct mx8_decoder mx8_decoder;

mx8_decoder *mx8_decoder_new(void);
void mx8_decoder_free(mx8_decoder *dec);

/* Bytes of scratch (pixels, row pointers, resize buffers) the decoder holds now. */
size_t mx8_decoder_scratch_bytes(const mx8_decoder *dec);

/* Gives back all scratch when it holds more than keep_bytes: scratch only grows, so one
 * outlier image would otherwise pin its buffers for the decoder's life. Returns 1 if it did. */
int mx8_decoder_trim(mx8_decoder *dec, size_t keep_bytes);

/* Reads only the header: format, width and height. */
int mx8_image_probe(const uint8_t *data, size_t len, int *format, int *width, int *height,
                    mx8_error *err);

/* Full decode to packed RGB (3 bytes a pixel, stride 3*width) into the decoder's scratch;
 * *rgb stays valid until the next call on this decoder. Used by tests and custom paths. */
int mx8_decode_rgb(mx8_decoder *dec, const uint8_t *data, size_t len, uint64_t max_pixels,
                   const uint8_t **rgb, int *width, int *height, mx8_error *err);

/* Decode + crop + resize + flip into out (3*out_h*out_w bytes, layout t->layout).
 * seed drives the random crop and flip: the same (data, t, seed) gives the same bytes
 * on any thread. On error, out may be partially written; err says why. */
int mx8_decode_transform(mx8_decoder *dec, const uint8_t *data, size_t len,
                         const mx8_transform *t, uint64_t seed, uint8_t *out, mx8_error *err);

#endif
