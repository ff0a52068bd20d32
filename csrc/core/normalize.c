#include "normalize.h"

void mx8_normalize_init(mx8_normalize *n, const float mean[3], const float std[3]) {
    for (int c = 0; c < 3; c++) {
        n->scale[c] = 1.0f / (255.0f * std[c]);
        n->bias[c] = -mean[c] / std[c];
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx2", "default")))
#endif
void mx8_normalize_run(const mx8_normalize *n, const uint8_t *restrict src, float *restrict dst, size_t h,
                       size_t w, int layout) {
    size_t plane = h * w;
    if (layout == 0) {
        for (int c = 0; c < 3; c++) {
            const uint8_t *s = src + c * plane;
            float *d = dst + c * plane;
            float scale = n->scale[c], bias = n->bias[c];
            for (size_t i = 0; i < plane; i++) /* vectorised by gcc -O3 */
                d[i] = (float)s[i] * scale + bias;
        }
        return;
    }
    for (size_t i = 0; i < plane; i++) {
        dst[3 * i + 0] = (float)src[3 * i + 0] * n->scale[0] + n->bias[0];
        dst[3 * i + 1] = (float)src[3 * i + 1] * n->scale[1] + n->bias[1];
        dst[3 * i + 2] = (float)src[3 * i + 2] * n->scale[2] + n->bias[2];
    }
}
