/* mx8_decode_transform end to end: crop-aware == full path, determinism, errors, probe. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../csrc/core/crop_geometry.h"
#include "../../csrc/core/image_transform.h"
#include "../../csrc/core/resize.h"
#include "../../csrc/core/rng.h"
#include "mx8_test.h"
#include "test_images.h"
#include "tests.h"

static mx8_transform rrc(int size, int layout, int crop_aware) {
    mx8_transform t = mx8_transform_random_crop(size, size);
    t.layout = layout;
    t.crop_aware = crop_aware;
    return t;
}

static uint8_t *photo_jpeg(int w, int h, int hs, int vs, int prog, size_t *len) {
    uint8_t *px = malloc((size_t)w * h * 3);
    t_fill_photo(px, w, h, 3, (uint64_t)(w * 31 + h));
    uint8_t *j = t_encode_jpeg(px, w, h, T_JPEG_RGB, 88, hs, vs, prog, len);
    free(px);
    return j;
}

/* The crop-aware path gives the same bytes as the full-decode path, crop after crop. */
void test_transform_crop_aware_equals_full(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    const int samp[][3] = {{2, 2, 0}, {1, 1, 0}, {2, 1, 0}, {2, 2, 1}};
    uint8_t a[3 * 56 * 56], b[3 * 56 * 56];
    int differ = 0;
    for (int s = 0; s < 4; s++) {
        size_t len;
        uint8_t *jpg = photo_jpeg(331, 249, samp[s][0], samp[s][1], samp[s][2], &len);
        for (uint64_t seed = 0; seed < 40; seed++) {
            for (int mode = MX8_CROP_NONE; mode <= MX8_CROP_RANDOM; mode++) {
                mx8_transform ta = rrc(56, seed & 1 ? MX8_LAYOUT_NHWC : MX8_LAYOUT_NCHW, 1);
                ta.crop_mode = mode;
                mx8_transform tb = ta;
                tb.crop_aware = 0;
                REQUIRE_OK(mx8_decode_transform(dec, jpg, len, &ta, seed, a, &err), &err);
                REQUIRE_OK(mx8_decode_transform(dec, jpg, len, &tb, seed, b, &err), &err);
                differ += memcmp(a, b, sizeof a) != 0;
            }
        }
        free(jpg);
    }
    CHECK_INT(differ, ==, 0);
    mx8_decoder_free(dec);
}

/* Same (data, transform, seed) -> same bytes, also on a fresh decoder; seeds matter. */
void test_transform_deterministic(void) {
    mx8_error err;
    mx8_decoder *d1 = mx8_decoder_new(), *d2 = mx8_decoder_new();
    size_t len;
    uint8_t *jpg = photo_jpeg(300, 200, 2, 2, 0, &len);
    mx8_transform t = rrc(32, MX8_LAYOUT_NCHW, 1);
    uint8_t a[3 * 32 * 32], b[3 * 32 * 32];
    int same = 0, differ = 0;
    for (uint64_t seed = 100; seed < 130; seed++) {
        REQUIRE_OK(mx8_decode_transform(d1, jpg, len, &t, seed, a, &err), &err);
        REQUIRE_OK(mx8_decode_transform(d2, jpg, len, &t, seed, b, &err), &err);
        same += memcmp(a, b, sizeof a) == 0;
        REQUIRE_OK(mx8_decode_transform(d2, jpg, len, &t, seed + 1000, b, &err), &err);
        differ += memcmp(a, b, sizeof a) != 0;
    }
    CHECK_INT(same, ==, 30);
    CHECK_INT(differ, >=, 29);
    free(jpg);
    mx8_decoder_free(d1);
    mx8_decoder_free(d2);
}

/* The transform equals decode_rgb + the RRC window + resize done by hand. */
void test_transform_equals_manual_pipeline(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    mx8_resizer r = {0};
    size_t len;
    uint8_t *jpg = photo_jpeg(257, 193, 2, 2, 0, &len);
    mx8_transform t = rrc(40, MX8_LAYOUT_NHWC, 1);
    uint8_t a[3 * 40 * 40], b[3 * 40 * 40];
    int differ = 0, flips = 0;
    for (uint64_t seed = 0; seed < 20; seed++) {
        REQUIRE_OK(mx8_decode_transform(dec, jpg, len, &t, seed, a, &err), &err);
        mx8_rng rng;
        mx8_rng_seed(&rng, seed);
        int flip = (int)(mx8_rng_next(&rng) >> 63);
        flips += flip;
        mx8_crop_geometry g;
        mx8_crop_random(257, 193, t.scale_min, t.scale_max, t.ratio_min, t.ratio_max, &rng, &g);
        const uint8_t *rgb;
        int w, h;
        REQUIRE_OK(mx8_decode_rgb(dec, jpg, len, 0, &rgb, &w, &h, &err), &err);
        REQUIRE_OK(mx8_resize_plan(&r, g.rw, g.rh, 0, 0, (float)g.rw, (float)g.rh, 40, 40, flip, &err), &err);
        REQUIRE_OK(mx8_resize_run(&r, rgb + ((size_t)g.ry * w + g.rx) * 3, (size_t)w * 3, 0, 0, g.rw, g.rh,
                                  b, MX8_LAYOUT_NHWC, &err), &err);
        differ += memcmp(a, b, sizeof a) != 0;
    }
    CHECK_INT(differ, ==, 0);
    CHECK(flips > 3 && flips < 17); /* the flip bit is used, about half the time */
    free(jpg);
    mx8_resizer_release(&r);
    mx8_decoder_free(dec);
}

void test_transform_png_and_dct_scaling(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    const int W = 400, H = 300;
    uint8_t *px = malloc((size_t)W * H * 3);
    t_fill_photo(px, W, H, 3, 77);
    size_t plen, jlen;
    uint8_t *png = t_encode_png(px, W, H, 2 /* RGB */, 8, 0, NULL, 0, NULL, 0, &plen);
    uint8_t *jpg = t_encode_jpeg(px, W, H, T_JPEG_RGB, 95, 1, 1, 0, &jlen);
    mx8_transform t = rrc(48, MX8_LAYOUT_NCHW, 1);
    t.crop_mode = MX8_CROP_CENTER;
    uint8_t a[3 * 48 * 48], b[3 * 48 * 48], c[3 * 48 * 48];
    REQUIRE_OK(mx8_decode_transform(dec, png, plen, &t, 5, a, &err), &err);
    REQUIRE_OK(mx8_decode_transform(dec, jpg, jlen, &t, 5, b, &err), &err);
    t.dct_scaling = 1; /* box ~ 280 px for 48 out: decodes at 1/4 */
    REQUIRE_OK(mx8_decode_transform(dec, jpg, jlen, &t, 5, c, &err), &err);
    long dj = 0, ds = 0;
    for (size_t i = 0; i < sizeof a; i++) {
        dj += abs(a[i] - b[i]);
        ds += abs(b[i] - c[i]);
    }
    /* the lossless PNG and the q95 JPEG agree closely; the scaled decode is close, not equal */
    CHECK_INT(dj / (long)sizeof a, <=, 3);
    CHECK_INT(ds / (long)sizeof a, <=, 6);
    CHECK(ds > 0);
    free(px);
    free(png);
    free(jpg);
    mx8_decoder_free(dec);
}

void test_transform_rejects_garbage_and_bad_args(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    mx8_transform t = rrc(16, MX8_LAYOUT_NCHW, 1);
    uint8_t out[3 * 16 * 16];
    const char *html = "<html><body>not found</body></html>";
    CHECK_INT(mx8_decode_transform(dec, (const uint8_t *)html, strlen(html), &t, 1, out, &err), ==,
              MX8_ERR_DECODE);
    CHECK_STR(err.msg, "bytes are not a JPEG or PNG image (starts with 3c 68 74 6d)");
    const uint8_t fake_jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x02, 0x12, 0x34, 0x56};
    CHECK_INT(mx8_decode_transform(dec, fake_jpeg, sizeof fake_jpeg, &t, 1, out, &err), ==, MX8_ERR_DECODE);
    CHECK(err.msg[0] != '\0');
    CHECK_INT(mx8_decode_transform(dec, (const uint8_t *)"", 0, &t, 1, out, &err), ==, MX8_ERR_DECODE);
    t.out_w = 0;
    size_t len;
    uint8_t *jpg = photo_jpeg(64, 64, 2, 2, 0, &len);
    CHECK_INT(mx8_decode_transform(dec, jpg, len, &t, 1, out, &err), ==, MX8_ERR_ARG);
    t.out_w = 16;
    t.layout = 7;
    CHECK_INT(mx8_decode_transform(dec, jpg, len, &t, 1, out, &err), ==, MX8_ERR_ARG);
    t.layout = MX8_LAYOUT_NHWC;
    REQUIRE_OK(mx8_decode_transform(dec, jpg, len, &t, 1, out, &err), &err);
    int fmt, w, h;
    REQUIRE_OK(mx8_image_probe(jpg, len, &fmt, &w, &h, &err), &err);
    CHECK_INT(fmt, ==, MX8_FMT_JPEG);
    CHECK_INT(w, ==, 64);
    free(jpg);
    mx8_decoder_free(dec);
}

/* Odd and tiny sizes (1 px, thinner than an iMCU), every crop mode, both layouts, random
 * output sizes: no errors, and crop-aware always equals the full path. */
void test_transform_odd_sizes(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    mx8_rng rng;
    mx8_rng_seed(&rng, 99);
    int differ = 0, failed = 0;
    uint8_t *a = malloc(3 * 64 * 64), *b = malloc(3 * 64 * 64);
    for (int k = 0; k < 60; k++) {
        int w = (int)mx8_rng_range(&rng, 1, 90), h = (int)mx8_rng_range(&rng, 1, 90);
        int hs = (int)mx8_rng_range(&rng, 1, 2), vs = (int)mx8_rng_range(&rng, 1, 2);
        size_t len;
        uint8_t *jpg = photo_jpeg(w, h, hs, vs, k % 5 == 0, &len);
        mx8_transform t = rrc((int)mx8_rng_range(&rng, 1, 64), k & 1 ? MX8_LAYOUT_NHWC : MX8_LAYOUT_NCHW, 1);
        t.out_w = (int)mx8_rng_range(&rng, 1, 64);
        t.crop_mode = k % 3;
        t.resize_short = k % 2 ? 0 : (int)mx8_rng_range(&rng, 1, 80);
        mx8_transform tf = t;
        tf.crop_aware = 0;
        size_t n = (size_t)3 * t.out_w * t.out_h;
        int ra = mx8_decode_transform(dec, jpg, len, &t, (uint64_t)k, a, &err);
        int rb = mx8_decode_transform(dec, jpg, len, &tf, (uint64_t)k, b, &err);
        if (ra || rb) {
            fprintf(stderr, "  %dx%d mode %d out %dx%d: %s\n", w, h, t.crop_mode, t.out_w, t.out_h, err.msg);
            failed++;
        } else {
            differ += memcmp(a, b, n) != 0;
        }
        free(jpg);
    }
    CHECK_INT(failed, ==, 0);
    CHECK_INT(differ, ==, 0);
    free(a);
    free(b);
    mx8_decoder_free(dec);
}
