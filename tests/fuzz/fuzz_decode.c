/* libFuzzer target: decode + transform of JPEG and PNG (csrc/core/image_transform.c and the
 * decoders under it), as the engine runs it on every sample: random crop + flip with crop-aware
 * decode and DCT scaling, center crop, whole-image resize, and a plain full decode. Limits are
 * the defaults', so the fuzzer also looks for inputs that are slow or large within them. */
#include <stdint.h>
#include <stdlib.h>

#include "../../csrc/core/image_transform.h"

static mx8_decoder *dec;
static uint8_t out[3 * 48 * 40];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dec && !(dec = mx8_decoder_new())) abort();
    mx8_error err;
    mx8_transform t = mx8_transform_random_crop(40, 48);
    t.max_pixels = 4000000; /* lower than the default so that the fuzzer's time goes to coverage */
    int modes[3] = {MX8_CROP_RANDOM, MX8_CROP_CENTER, MX8_CROP_NONE};
    for (int k = 0; k < 3; k++) {
        t.crop_mode = modes[k];
        t.dct_scaling = k == 0;
        t.crop_aware = k != 2;
        t.layout = k == 1 ? MX8_LAYOUT_NHWC : MX8_LAYOUT_NCHW;
        mx8_error_clear(&err);
        int rc = mx8_decode_transform(dec, data, size, &t, (uint64_t)k * 7919 + size, out, &err);
        if (rc != MX8_OK && rc != MX8_ERR_DECODE && rc != MX8_ERR_TOO_LARGE && rc != MX8_ERR_NOMEM) abort();
        if (rc != MX8_OK && !err.msg[0]) abort(); /* every failure says why */
    }
    const uint8_t *rgb;
    int w, h;
    mx8_error_clear(&err);
    if (mx8_decode_rgb(dec, data, size, t.max_pixels, &rgb, &w, &h, &err) == MX8_OK && (w <= 0 || h <= 0)) abort();
    mx8_decoder_trim(dec, 64u << 20);
    return 0;
}
