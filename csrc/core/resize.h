/* Separable antialiased bilinear resampling, equal to Pillow's
 * Image.resize((w, h), Image.BILINEAR, box=(x0, y0, x1, y1)) on RGB images: triangle
 * filter whose support grows with the downscale factor, coefficients computed in double
 * like Pillow's precompute_coeffs, then 22-bit fixed point; two passes, clipped to 8 bits
 * in between, in Pillow's (>= 11) order: vertical first when the height shrinks by more
 * than twice what the width does, else horizontal first. Written straight into the
 * caller's slot in NCHW or NHWC, with an optional horizontal flip folded into the
 * coefficients (no extra pass).
 *
 * Measured against Pillow 13.0 on a 500-image real-photo corpus (1,500 integer crops +
 * 1,500 float boxes, 1,000 full RandomResizedCrop+flip samples): max abs diff 0 levels
 * (bit-identical). Pillow < 11 always ran the horizontal pass first; against those
 * versions about a quarter of resizes differ by 1 level. The contract we promise is +-1.
 *
 * On CPUs with AVX2 the passes run as the kernels of resize_simd.h, which compute the same
 * integers (max diff 0 against the portable loops and against Pillow 13.0 on 3,000
 * resizes of 500 photos); set no_simd to force the portable loops. */
#ifndef MX8_RESIZE_H
#define MX8_RESIZE_H

#include <stddef.h>
#include <stdint.h>

#include "image_buffer.h"
#include "mx8_error.h"

/* One axis of a plan. The key fields let an identical next plan reuse the coefficients. */
typedef struct {
    int in_size, out_size, flip, simd, valid; /* cache key (with b0, b1) */
    float b0, b1;
    int taps;        /* coefficients per output sample (row stride of k) */
    mx8_scratch k;   /* int32 [out_size * taps] */
    mx8_scratch pos; /* int [out_size * 2]: first input sample, number of taps used */
    int lo, hi;      /* input samples the axis reads: [lo, hi) */
    mx8_scratch sk;  /* simd: the coefficients as the AVX2 kernels read them */
    mx8_scratch soff; /* simd, horizontal: byte offset of each output's first tap */
} mx8_resize_axis;

/* Per-decoder resampler: plan + scratch, all grow-only. Zero-initialise, then
 * mx8_resizer_release when done. */
typedef struct {
    int in_w, in_h, out_w, out_h;
    int need_h, need_v;
    int h_first; /* pass order, Pillow's rule */
    int no_simd; /* set to 1 to force the portable loops (tests compare the two) */
    int simd;    /* this plan runs the AVX2 kernels (resize_simd.h) */
    mx8_resize_axis ax, ay;
    mx8_scratch tmp; /* horizontal pass output */
    mx8_scratch acc; /* int32 vertical accumulators */
    mx8_scratch wd;  /* double weights while computing coefficients */
    mx8_scratch row4; /* one source row as int32 x 4 pixels for the horizontal pass */
} mx8_resizer;

void mx8_resizer_release(mx8_resizer *r);

/* Plans a resample of box (x0, y0, x1, y1) of an in_w x in_h image to out_w x out_h,
 * flipping horizontally when flip != 0. Afterwards r->ax.lo/hi and r->ay.lo/hi give
 * the source columns/rows that mx8_resize_run will read. */
int mx8_resize_plan(mx8_resizer *r, int in_w, int in_h, float x0, float y0, float x1,
                    float y1, int out_w, int out_h, int flip, mx8_error *err);

/* Runs the plan. src points at pixel (src_x, src_y) of the in image and holds src_w x
 * src_h RGB pixels with rows stride bytes apart; it must cover the planned source
 * window. out receives 3*out_w*out_h bytes in layout (mx8_layout: 0 NCHW, 1 NHWC). */
int mx8_resize_run(mx8_resizer *r, const uint8_t *src, size_t stride, int src_x, int src_y,
                   int src_w, int src_h, uint8_t *out, int layout, mx8_error *err);

#endif
