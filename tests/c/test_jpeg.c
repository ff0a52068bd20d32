/* JPEG decoder: crop-aware == full decode then crop (bit-exact), colour conversions,
 * truncated / corrupt / oversized input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../csrc/core/decode_jpeg.h"
#include "../../csrc/core/image_transform.h"
#include "../../csrc/core/rng.h"
#include "mx8_test.h"
#include "test_images.h"
#include "tests.h"

typedef struct {
    const char *name;
    int kind, hs, vs, progressive;
} jpeg_mode;

static const jpeg_mode MODES[] = {
    {"rgb 4:2:0", T_JPEG_RGB, 2, 2, 0}, {"rgb 4:4:4", T_JPEG_RGB, 1, 1, 0},
    {"rgb 4:2:2", T_JPEG_RGB, 2, 1, 0}, {"rgb 4:4:0", T_JPEG_RGB, 1, 2, 0},
    {"gray", T_JPEG_GRAY, 1, 1, 0},     {"progressive 4:2:0", T_JPEG_RGB, 2, 2, 1},
    {"cmyk", T_JPEG_CMYK, 1, 1, 0},     {"ycck 4:2:0", T_JPEG_YCCK, 2, 2, 0},
};

static int comps_of(int kind) { return kind == T_JPEG_RGB ? 3 : kind == T_JPEG_GRAY ? 1 : 4; }

static uint8_t *make_jpeg(const jpeg_mode *m, int w, int h, uint64_t seed, size_t *len) {
    int comps = comps_of(m->kind);
    uint8_t *px = malloc((size_t)w * h * comps);
    if (!px) return NULL;
    t_fill_photo(px, w, h, comps, seed);
    uint8_t *jpg = t_encode_jpeg(px, w, h, m->kind, 90, m->hs, m->vs, m->progressive, len);
    free(px);
    return jpg;
}

/* Crop-aware decode of many random windows equals the same window of a full decode. */
void test_jpeg_crop_aware_bit_exact(void) {
    mx8_error err;
    mx8_jpeg *j = mx8_jpeg_new();
    CHECK(j != NULL);
    if (!j) return;
    mx8_rng rng;
    mx8_rng_seed(&rng, 42);
    for (size_t mi = 0; mi < sizeof MODES / sizeof MODES[0]; mi++) {
        const int W = 203, H = 157; /* not multiples of any iMCU size */
        size_t len;
        uint8_t *jpg = make_jpeg(&MODES[mi], W, H, mi + 1, &len);
        CHECK(jpg != NULL);
        if (!jpg) continue;
        int w, h;
        mx8_image_view full;
        REQUIRE_OK(mx8_jpeg_open(j, jpg, len, 0, 0, &w, &h, &err), &err);
        REQUIRE_OK(mx8_jpeg_decode(j, 1, 0, 0, 0, 0, 0, &full, &err), &err);
        uint8_t *ref = malloc((size_t)W * H * 3);
        for (int y = 0; y < H; y++) memcpy(ref + (size_t)y * W * 3, full.px + y * full.stride, (size_t)W * 3);
        int bad = 0;
        for (int k = 0; k < 80; k++) {
            int cw = (int)mx8_rng_range(&rng, 1, W), ch = (int)mx8_rng_range(&rng, 1, H);
            int cx = (int)mx8_rng_range(&rng, 0, W - cw), cy = (int)mx8_rng_range(&rng, 0, H - ch);
            mx8_image_view v;
            REQUIRE_OK(mx8_jpeg_open(j, jpg, len, 0, 0, &w, &h, &err), &err);
            REQUIRE_OK(mx8_jpeg_decode(j, 1, 1, cx, cy, cw, ch, &v, &err), &err);
            for (int y = 0; y < ch && !bad; y++)
                if (memcmp(v.px + y * v.stride, ref + ((size_t)(cy + y) * W + cx) * 3, (size_t)cw * 3)) {
                    fprintf(stderr, "  %s: window %dx%d+%d+%d row %d differs\n", MODES[mi].name, cw, ch,
                            cx, cy, y);
                    bad = 1;
                }
        }
        CHECK_INT(bad, ==, 0);
        free(ref);
        free(jpg);
    }
    mx8_jpeg_free(j);
}

/* Gray JPEGs come out as R = G = B; CMYK as Pillow's inverted-CMYK conversion. */
void test_jpeg_gray_and_cmyk_colours(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    const int W = 32, H = 16;
    uint8_t gray[W * H], cmyk[W * H * 4];
    for (int i = 0; i < W * H; i++) gray[i] = (uint8_t)(i % 200 + 20);
    /* Stored (Adobe-inverted) CMYK: raw 255 = no ink. Left half raw (255, 55, 255, 205):
     * Pillow: nk = 205, c = 255-raw -> out = 205 - c*205/255 = (205, 44, 205). */
    for (int i = 0; i < W * H; i++) {
        int left = (i % W) < W / 2;
        uint8_t px[4] = {255, 55, 255, 205}, px2[4] = {255, 255, 255, 255};
        memcpy(cmyk + 4 * i, left ? px : px2, 4);
    }
    size_t len;
    uint8_t *jg = t_encode_jpeg(gray, W, H, T_JPEG_GRAY, 95, 1, 1, 0, &len);
    const uint8_t *rgb;
    int w, h;
    REQUIRE_OK(mx8_decode_rgb(dec, jg, len, 0, &rgb, &w, &h, &err), &err);
    int same = 1;
    for (int i = 0; i < w * h; i++) same &= rgb[3 * i] == rgb[3 * i + 1] && rgb[3 * i] == rgb[3 * i + 2];
    CHECK(same);
    free(jg);
    for (int kind = T_JPEG_CMYK; kind <= T_JPEG_YCCK; kind++) {
        uint8_t *jc = t_encode_jpeg(cmyk, W, H, kind, 100, 1, 1, 0, &len);
        REQUIRE_OK(mx8_decode_rgb(dec, jc, len, 0, &rgb, &w, &h, &err), &err);
        const uint8_t *l = rgb + (4 * W + 3) * 3, *r = rgb + (4 * W + W - 3) * 3;
        CHECK_INT(abs(l[0] - 205) + abs(l[1] - 44) + abs(l[2] - 205), <=, 9);
        CHECK_INT(abs(r[0] - 255) + abs(r[1] - 255) + abs(r[2] - 255), <=, 6);
        free(jc);
    }
    mx8_decoder_free(dec);
}

/* A truncated JPEG is an error with libjpeg's message, never a grey-padded success. */
void test_jpeg_truncated(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    for (int prog = 0; prog <= 1; prog++) {
        jpeg_mode m = {"t", T_JPEG_RGB, 2, 2, prog};
        size_t len;
        uint8_t *jpg = make_jpeg(&m, 120, 90, 7, &len);
        const uint8_t *rgb;
        int w, h;
        mx8_error_clear(&err);
        int rc = mx8_decode_rgb(dec, jpg, len * 6 / 10, 0, &rgb, &w, &h, &err);
        CHECK_INT(rc, ==, MX8_ERR_DECODE);
        CHECK(strstr(err.msg, "premature end") != NULL);
        /* the decoder stays usable after the error */
        REQUIRE_OK(mx8_decode_rgb(dec, jpg, len, 0, &rgb, &w, &h, &err), &err);
        CHECK_INT(w, ==, 120);
        free(jpg);
    }
    mx8_decoder_free(dec);
}

/* Corrupt scan data (bytes overwritten with a marker-like pattern) is an error. */
void test_jpeg_corrupt(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    jpeg_mode m = {"c", T_JPEG_RGB, 2, 2, 0};
    size_t len;
    uint8_t *jpg = make_jpeg(&m, 120, 90, 9, &len);
    memset(jpg + len / 2, 0xFF, 4);
    jpg[len / 2 + 4] = 0xD3; /* an out-of-order RST marker in the middle of the scan */
    const uint8_t *rgb;
    int w, h;
    int rc = mx8_decode_rgb(dec, jpg, len, 0, &rgb, &w, &h, &err);
    CHECK_INT(rc, ==, MX8_ERR_DECODE);
    CHECK(strstr(err.msg, "orrupt JPEG data") != NULL);
    free(jpg);
    mx8_decoder_free(dec);
}

/* A header claiming 50000x50000 is refused before any pixel buffer is allocated. */
void test_jpeg_too_large(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    jpeg_mode m = {"big", T_JPEG_RGB, 2, 2, 0};
    size_t len;
    uint8_t *jpg = make_jpeg(&m, 64, 48, 3, &len);
    size_t sof = t_jpeg_sof_offset(jpg, len);
    CHECK(sof != 0);
    jpg[sof + 5] = 50000 >> 8; /* height */
    jpg[sof + 6] = 50000 & 255;
    jpg[sof + 7] = 50000 >> 8; /* width */
    jpg[sof + 8] = 50000 & 255;
    size_t before = mx8_decoder_scratch_bytes(dec);
    const uint8_t *rgb;
    int w, h;
    int rc = mx8_decode_rgb(dec, jpg, len, 100000000, &rgb, &w, &h, &err);
    CHECK_INT(rc, ==, MX8_ERR_TOO_LARGE);
    CHECK_STR(err.msg, "image is 50000x50000 = 2500000000 pixels, above the limit of 100000000 (max_pixels)");
    CHECK_INT(mx8_decoder_scratch_bytes(dec), ==, before);
    mx8_transform t = {.out_h = 8, .out_w = 8, .crop_mode = MX8_CROP_RANDOM, .scale_min = 0.08,
                       .scale_max = 1, .ratio_min = 0.75, .ratio_max = 4.0 / 3, .layout = MX8_LAYOUT_NCHW,
                       .max_pixels = 100000000, .crop_aware = 1};
    uint8_t out[3 * 8 * 8];
    CHECK_INT(mx8_decode_transform(dec, jpg, len, &t, 1, out, &err), ==, MX8_ERR_TOO_LARGE);
    CHECK_INT(mx8_decoder_scratch_bytes(dec), ==, before);
    int fmt;
    CHECK_INT(mx8_image_probe(jpg, len, &fmt, &w, &h, &err), ==, MX8_OK);
    CHECK_INT(w, ==, 50000);
    free(jpg);
    mx8_decoder_free(dec);
}

/* A valid progressive JPEG with more scans than any encoder writes is refused (each scan is
 * a pass over the image: 2,000 of them cost seconds); the standard 10-scan one decodes. */
void test_jpeg_scan_limit(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    int w = 96, h = 64;
    uint8_t *px = malloc((size_t)w * h * 3);
    t_fill_photo(px, w, h, 3, 5);
    size_t len;
    uint8_t *bomb = t_encode_jpeg(px, w, h, T_JPEG_RGB, 90, 2, 2, T_JPEG_SCAN_PER_COEF, &len);
    CHECK(bomb != NULL);
    const uint8_t *rgb;
    int ow, oh;
    CHECK_INT(mx8_decode_rgb(dec, bomb, len, 100000000, &rgb, &ow, &oh, &err), ==, MX8_ERR_DECODE);
    CHECK_STR(err.msg, "progressive JPEG has more than 100 scans (a decode bomb?)");
    mx8_transform t = mx8_transform_random_crop(32, 32);
    uint8_t out[3 * 32 * 32];
    CHECK_INT(mx8_decode_transform(dec, bomb, len, &t, 7, out, &err), ==, MX8_ERR_DECODE);
    size_t glen;
    uint8_t *good = t_encode_jpeg(px, w, h, T_JPEG_RGB, 90, 2, 2, 1, &glen);
    REQUIRE_OK(mx8_decode_rgb(dec, good, glen, 100000000, &rgb, &ow, &oh, &err), &err);
    CHECK_INT(ow, ==, w);
    REQUIRE_OK(mx8_decode_transform(dec, good, glen, &t, 7, out, &err), &err);
    free(good);
    free(bomb);
    free(px);
    mx8_decoder_free(dec);
}

/* Scans are also capped by their work: 15 whole-image passes at the limit for images decoded
 * whole. A gray file of 64 full-image scans (within the 100-scan cap) at that limit is
 * refused; with a limit ten times the image it decodes; libjpeg's default progressions at the
 * limit (4:2:0 and 4:4:4) pass. */
void test_jpeg_scan_work_budget(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    int w = 96, h = 64;
    uint8_t *px = malloc((size_t)w * h * 3);
    t_fill_photo(px, w, h, 3, 6);
    size_t len;
    uint8_t *many = t_encode_jpeg(px, w, h, T_JPEG_GRAY, 90, 1, 1, T_JPEG_SCAN_PER_COEF, &len);
    CHECK(many != NULL);
    mx8_transform t = mx8_transform_random_crop(32, 32);
    t.max_buffered_pixels = (uint64_t)w * h;
    uint8_t out[3 * 32 * 32];
    CHECK_INT(mx8_decode_transform(dec, many, len, &t, 7, out, &err), ==, MX8_ERR_DECODE);
    CHECK_STR(err.msg, "progressive JPEG's 16 scans cost more than 15 whole-image passes at the limit for images "
                       "decoded whole (a decode bomb? raise max_pixels to allow)");
    t.max_buffered_pixels = 10ULL * w * h;
    REQUIRE_OK(mx8_decode_transform(dec, many, len, &t, 7, out, &err), &err);
    t.max_buffered_pixels = (uint64_t)w * h;
    for (int hs = 1; hs <= 2; hs++) {
        size_t glen;
        uint8_t *std = t_encode_jpeg(px, w, h, T_JPEG_RGB, 90, hs, hs, 1, &glen);
        REQUIRE_OK(mx8_decode_transform(dec, std, glen, &t, 7, out, &err), &err);
        free(std);
    }
    free(many);
    free(px);
    mx8_decoder_free(dec);
}

/* DCT-scaled decode of a window has the scaled size and stays close to the source. */
void test_jpeg_dct_scaled_window(void) {
    mx8_error err;
    mx8_jpeg *j = mx8_jpeg_new();
    jpeg_mode m = {"s", T_JPEG_RGB, 2, 2, 0};
    size_t len;
    uint8_t *jpg = make_jpeg(&m, 203, 157, 5, &len);
    int w, h, sw, sh;
    mx8_jpeg_scaled_size(203, 157, 4, &sw, &sh);
    CHECK_INT(sw, ==, 51);
    CHECK_INT(sh, ==, 40);
    mx8_image_view v;
    REQUIRE_OK(mx8_jpeg_open(j, jpg, len, 0, 0, &w, &h, &err), &err);
    REQUIRE_OK(mx8_jpeg_decode(j, 4, 1, 10, 5, 30, 20, &v, &err), &err);
    CHECK_INT(v.image_w, ==, 51);
    CHECK_INT(v.w, ==, 30);
    REQUIRE_OK(mx8_jpeg_open(j, jpg, len, 0, 0, &w, &h, &err), &err);
    CHECK_INT(mx8_jpeg_decode(j, 4, 1, 40, 5, 30, 20, &v, &err), ==, MX8_ERR_ARG);
    free(jpg);
    mx8_jpeg_free(j);
}
