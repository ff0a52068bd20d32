/* Bench: mx8_decode_transform with RandomResizedCrop(224) + flip, crop-aware vs full
 * decode, and a plain full decode (mx8_decode_rgb), single thread, images from memory.
 *   make -C tests/c bench && tests/c/build/croprate_mx8 LIST [reps] [dct_scaling] [resize]
 * LIST holds one JPEG path a line. Prints images/s for each mode and the ratio; quote
 * ratios from one run (absolute rates drift on shared machines). A fourth argument
 * "resize" times only the resampler (us per RandomResizedCrop(224) resize). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../csrc/core/crop_geometry.h"
#include "../../csrc/core/image_transform.h"
#include "../../csrc/core/resize.h"

#include "bench_corpus.h"

/* mode 0: full decode (mx8_decode_rgb); 1: transform full path; 2: transform crop-aware.
 * Interleaved per image (rotating which mode goes first) so that load from other
 * processes on a shared machine hits all modes alike; secs[mode] gets the time. */
static void run(mx8_decoder *dec, const corpus *c, int reps, int dct, uint8_t *out, double secs[3]) {
    mx8_transform t = mx8_transform_random_crop(224, 224);
    t.dct_scaling = dct;
    mx8_error err;
    long failed = 0;
    for (int r = 0; r < reps; r++)
        for (size_t i = 0; i < c->n; i++)
            for (int k = 0; k < 3; k++) {
                int mode = (int)((i + (size_t)k) % 3), rc;
                double t0 = now();
                if (mode == 0) {
                    const uint8_t *rgb;
                    int w, h;
                    rc = mx8_decode_rgb(dec, c->data[i], c->len[i], t.max_pixels, &rgb, &w, &h, &err);
                } else {
                    t.crop_aware = mode == 2;
                    rc = mx8_decode_transform(dec, c->data[i], c->len[i], &t, (uint64_t)i * 7919 + r, out, &err);
                }
                secs[mode] += now() - t0;
                failed += rc != 0;
            }
    if (failed) fprintf(stderr, "%ld decodes failed (last: %s)\n", failed, err.msg);
}

/* Resize alone: each image decoded once, then RandomResizedCrop(224)+flip geometries
 * (8 per image, fixed seeds) planned and run into NCHW; returns seconds per resize. */
static double resize_only(mx8_decoder *dec, const corpus *c, int reps, uint8_t *out) {
    mx8_resizer r;
    memset(&r, 0, sizeof r);
    mx8_error err;
    double secs = 0;
    long n = 0, failed = 0;
    for (size_t i = 0; i < c->n; i++) {
        const uint8_t *rgb;
        int w, h;
        if (mx8_decode_rgb(dec, c->data[i], c->len[i], 100000000, &rgb, &w, &h, &err)) continue;
        uint8_t *img = malloc((size_t)w * h * 3);
        if (!img) break;
        memcpy(img, rgb, (size_t)w * h * 3);
        for (int k = 0; k < 8 * (reps + 1); k++) {
            mx8_rng rng;
            mx8_rng_seed(&rng, (uint64_t)i * 7919 + (uint64_t)(k % 8));
            mx8_crop_geometry g;
            mx8_crop_random(w, h, 0.08, 1.0, 3.0 / 4, 4.0 / 3, &rng, &g);
            const uint8_t *win = img + ((size_t)g.ry * w + g.rx) * 3;
            double t0 = now();
            int rc = mx8_resize_plan(&r, g.rw, g.rh, g.bx0, g.by0, g.bx1, g.by1, 224, 224, k & 1, &err);
            if (!rc) rc = mx8_resize_run(&r, win, (size_t)w * 3, 0, 0, g.rw, g.rh, out, MX8_LAYOUT_NCHW, &err);
            if (k >= 8) { /* the first round warms up */
                secs += now() - t0;
                n++;
            }
            failed += rc != 0;
        }
        free(img);
    }
    if (failed) fprintf(stderr, "%ld resizes failed (last: %s)\n", failed, err.msg);
    mx8_resizer_release(&r);
    return n ? secs / (double)n : 0;
}

/* The three decode modes, then the resampler alone. */
static void report_all(mx8_decoder *dec, const corpus *c, int reps, int dct, uint8_t *out) {
    double warm[3] = {0, 0, 0}, secs[3] = {0, 0, 0};
    run(dec, c, 1, dct, out, warm); /* grow scratch, fault pages in */
    run(dec, c, reps, dct, out, secs);
    double n = (double)c->n * reps;
    double full = n / secs[0], rrc_full = n / secs[1], rrc_crop = n / secs[2];
    printf("images %zu x %d reps, single thread%s\n", c->n, reps, dct ? ", dct_scaling on" : "");
    printf("full decode (mx8_decode_rgb):          %8.0f img/s\n", full);
    printf("RRC(224)+flip, full decode + resize:   %8.0f img/s\n", rrc_full);
    printf("RRC(224)+flip, crop-aware + resize:    %8.0f img/s\n", rrc_crop);
    printf("crop-aware / full ratio:               %8.2fx\n", rrc_crop / rrc_full);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s LIST [reps] [dct_scaling] [resize]\n", argv[0]);
        return 2;
    }
    int reps = argc > 2 ? atoi(argv[2]) : 1, dct = argc > 3 ? atoi(argv[3]) : 0;
    int resize_alone = argc > 4 && strcmp(argv[4], "resize") == 0;
    corpus c = {0};
    if (load(argv[1], &c) != 0) {
        fprintf(stderr, "no images read from %s\n", argv[1]);
        return 1;
    }
    mx8_decoder *dec = mx8_decoder_new();
    uint8_t *out = malloc(3 * 224 * 224);
    if (!dec || !out) return 1;
    if (!resize_alone) report_all(dec, &c, reps, dct, out);
    printf("resize only, RRC(224)+flip NCHW:       %8.1f us/resize\n", 1e6 * resize_only(dec, &c, reps, out));
    for (size_t i = 0; i < c.n; i++) free(c.data[i]);
    free(c.data);
    free(c.len);
    free(out);
    mx8_decoder_free(dec);
    return 0;
}
