/* uint8 RGB -> float32 with per-channel (x/255 - mean) / std, torchvision's
 * ToTensor + Normalize, done by the worker right after the resize while the slot is hot. */
#ifndef MX8_NORMALIZE_H
#define MX8_NORMALIZE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float scale[3]; /* 1 / (255 * std) */
    float bias[3];  /* -mean / std */
} mx8_normalize;

/* mean and std in [0, 1] units, as torchvision.transforms.Normalize after ToTensor. */
void mx8_normalize_init(mx8_normalize *n, const float mean[3], const float std[3]);

/* src: 3*h*w uint8 in layout (0 = CHW planes, 1 = HWC interleaved); dst the same layout. */
void mx8_normalize_run(const mx8_normalize *n, const uint8_t *src, float *dst, size_t h, size_t w, int layout);

#endif
