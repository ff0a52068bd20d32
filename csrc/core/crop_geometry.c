#include "crop_geometry.h"

#include <limits.h>
#include <math.h>

/* double -> int that saturates (and maps NaN to 0): a plain cast of a value out of int's
 * range is undefined, and extreme aspect ratios or headers do produce such values here. */
static int sat_int(double v) {
    if (!(v == v)) return 0;
    if (v >= (double)INT_MAX) return INT_MAX;
    if (v <= (double)INT_MIN) return INT_MIN;
    return (int)v;
}

/* Python's round() is round-half-to-even; rint() does the same under the default
 * FE_TONEAREST mode, which the core never changes. */
static int py_round(double v) { return sat_int(rint(v)); }

void mx8_crop_random_window(int width, int height, double scale_min, double scale_max,
                            double ratio_min, double ratio_max, mx8_rng *rng, int *x, int *y,
                            int *w, int *h) {
    double area = (double)width * (double)height;
    double log_lo = log(ratio_min), log_hi = log(ratio_max);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * mx8_rng_uniform(rng, scale_min, scale_max);
        double aspect = exp(mx8_rng_uniform(rng, log_lo, log_hi));
        int cw = py_round(sqrt(target * aspect));
        int ch = py_round(sqrt(target / aspect));
        if (cw > 0 && cw <= width && ch > 0 && ch <= height) {
            /* torchvision draws i (row) before j (column). */
            *y = (int)mx8_rng_range(rng, 0, height - ch);
            *x = (int)mx8_rng_range(rng, 0, width - cw);
            *w = cw;
            *h = ch;
            return;
        }
    }
    double in_ratio = (double)width / (double)height;
    int cw = width, ch = height;
    if (in_ratio < ratio_min) {
        ch = py_round(cw / ratio_min);
    } else if (in_ratio > ratio_max) {
        cw = py_round(ch * ratio_max);
    }
    /* Guard degenerate inputs (a 1-pixel image): never return an empty window. */
    if (cw < 1) cw = 1;
    if (ch < 1) ch = 1;
    if (cw > width) cw = width;
    if (ch > height) ch = height;
    *x = (width - cw) / 2;
    *y = (height - ch) / 2;
    *w = cw;
    *h = ch;
}

void mx8_crop_random(int width, int height, double scale_min, double scale_max,
                     double ratio_min, double ratio_max, mx8_rng *rng, mx8_crop_geometry *g) {
    mx8_crop_random_window(width, height, scale_min, scale_max, ratio_min, ratio_max, rng,
                           &g->rx, &g->ry, &g->rw, &g->rh);
    g->bx0 = 0.0f;
    g->by0 = 0.0f;
    g->bx1 = (float)g->rw;
    g->by1 = (float)g->rh;
}

void mx8_crop_center(int width, int height, int resize_short, int out_h, int out_w,
                     mx8_crop_geometry *g) {
    int short_out = out_h < out_w ? out_h : out_w;
    if (resize_short <= 0) resize_short = py_round(short_out * 256.0 / 224.0);
    /* torchvision Resize(int): shorter side -> resize_short, longer side truncated. */
    int new_w, new_h;
    if (width <= height) {
        new_w = resize_short;
        new_h = sat_int((double)resize_short * height / width);
    } else {
        new_h = resize_short;
        new_w = sat_int((double)resize_short * width / height);
    }
    if (new_w < 1) new_w = 1;
    if (new_h < 1) new_h = 1;
    int cw = out_w < new_w ? out_w : new_w;
    int ch = out_h < new_h ? out_h : new_h;
    /* torchvision CenterCrop: top = int(round((h - ch) / 2.0)). */
    int left = py_round((new_w - cw) / 2.0);
    int top = py_round((new_h - ch) / 2.0);
    double sx = (double)width / new_w, sy = (double)height / new_h;
    g->rx = 0;
    g->ry = 0;
    g->rw = width;
    g->rh = height;
    g->bx0 = (float)(left * sx);
    g->by0 = (float)(top * sy);
    g->bx1 = (float)((left + cw) * sx);
    g->by1 = (float)((top + ch) * sy);
    /* float rounding must not push the box past the image (the resampler refuses it) */
    if (g->bx1 > (float)width) g->bx1 = (float)width;
    if (g->by1 > (float)height) g->by1 = (float)height;
}

void mx8_crop_full(int width, int height, mx8_crop_geometry *g) {
    g->rx = 0;
    g->ry = 0;
    g->rw = width;
    g->rh = height;
    g->bx0 = 0.0f;
    g->by0 = 0.0f;
    g->bx1 = (float)width;
    g->by1 = (float)height;
}
