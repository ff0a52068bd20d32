/* Where to sample from: RandomResizedCrop, center crop and whole-image geometry.
 *
 * A geometry is an integer source rectangle (the "image" a Pillow resize would see after
 * an integer crop) plus a float box inside it (Pillow's resize box semantics). Keeping
 * both lets RandomResizedCrop equal torchvision's crop-then-resize exactly (the filter
 * is clamped at the crop's edges) while a center crop stays ONE resample of a float box
 * of the full image. */
#ifndef MX8_CROP_GEOMETRY_H
#define MX8_CROP_GEOMETRY_H

#include <stdint.h>

#include "rng.h"

typedef struct {
    int rx, ry, rw, rh;     /* integer source rectangle, inside the image */
    float bx0, by0, bx1, by1; /* resize box relative to (rx, ry), Pillow semantics */
} mx8_crop_geometry;

/* torchvision.transforms.RandomResizedCrop.get_params with a deterministic RNG:
 * ten tries of area*U(scale) and exp(U(log ratio)); fallback to a centre crop clamped to
 * the ratio range. Writes the window (x, y, w, h) inside a width x height image. */
void mx8_crop_random_window(int width, int height, double scale_min, double scale_max,
                            double ratio_min, double ratio_max, mx8_rng *rng, int *x, int *y,
                            int *w, int *h);

/* RandomResizedCrop as a geometry: rectangle = the window, box = the whole window. */
void mx8_crop_random(int width, int height, double scale_min, double scale_max,
                     double ratio_min, double ratio_max, mx8_rng *rng, mx8_crop_geometry *g);

/* torchvision Resize(resize_short) + CenterCrop(out_h, out_w), folded into one float box
 * of the full image. resize_short <= 0 means round(min(out_h, out_w) * 256 / 224). A crop
 * larger than the resized image is clamped to it (torchvision would pad with zeros). */
void mx8_crop_center(int width, int height, int resize_short, int out_h, int out_w,
                     mx8_crop_geometry *g);

/* The whole image. */
void mx8_crop_full(int width, int height, mx8_crop_geometry *g);

#endif
