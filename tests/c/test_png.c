/* PNG decoder: every colour type / depth converts like Pillow's convert("RGB");
 * truncated, corrupt and oversized input fail cleanly. */
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../csrc/core/image_transform.h"
#include "../../csrc/core/rng.h"
#include "mx8_test.h"
#include "test_images.h"
#include "tests.h"

typedef struct {
    const char *name;
    int ct, depth, interlace, trns;
} png_mode;

static const png_mode PMODES[] = {
    {"rgb8", PNG_COLOR_TYPE_RGB, 8, 0, 0},          {"rgb8 interlaced", PNG_COLOR_TYPE_RGB, 8, 1, 0},
    {"rgb8 tRNS", PNG_COLOR_TYPE_RGB, 8, 0, 1},     {"rgba8", PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, 0},
    {"rgb16", PNG_COLOR_TYPE_RGB, 16, 0, 0},        {"rgba16 interlaced", PNG_COLOR_TYPE_RGB_ALPHA, 16, 1, 0},
    {"gray1", PNG_COLOR_TYPE_GRAY, 1, 0, 0},        {"gray2", PNG_COLOR_TYPE_GRAY, 2, 0, 0},
    {"gray4 tRNS", PNG_COLOR_TYPE_GRAY, 4, 0, 1},   {"gray8", PNG_COLOR_TYPE_GRAY, 8, 1, 0},
    {"gray16", PNG_COLOR_TYPE_GRAY, 16, 0, 0},      {"gray+alpha8", PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, 0},
    {"gray+alpha16", PNG_COLOR_TYPE_GRAY_ALPHA, 16, 0, 0}, {"palette8 tRNS", PNG_COLOR_TYPE_PALETTE, 8, 0, 1},
    {"palette4", PNG_COLOR_TYPE_PALETTE, 4, 1, 0},  {"palette1", PNG_COLOR_TYPE_PALETTE, 1, 0, 1},
};

static int channels(int ct) {
    return ct == PNG_COLOR_TYPE_RGB ? 3 : ct == PNG_COLOR_TYPE_RGB_ALPHA ? 4
         : ct == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
}

/* Reads sample s of row y (unpacked), from packed PNG rows. */
static unsigned sample_at(const uint8_t *row, int depth, int s) {
    if (depth == 16) return (unsigned)(row[2 * s] << 8 | row[2 * s + 1]);
    if (depth == 8) return row[s];
    int per = 8 / depth, shift = 8 - depth * (s % per + 1);
    return (row[s / per] >> shift) & ((1u << depth) - 1);
}

/* Pillow's convert("RGB") of one sample value: 16-bit keeps the high byte, except 16-bit
 * gray (mode I;16) which clips; low-depth gray scales to 0..255. */
static uint8_t to8(unsigned v, int depth, int gray_only) {
    if (depth == 16) return gray_only ? (uint8_t)(v > 255 ? 255 : v) : (uint8_t)(v >> 8);
    return (uint8_t)(v * 255 / ((1u << depth) - 1));
}

static void expected_rgb(const png_mode *m, const uint8_t *rows, size_t rowbytes, int w, int h,
                         const uint8_t *pal, uint8_t *out) {
    int ch = channels(m->ct);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *row = rows + (size_t)y * rowbytes;
            uint8_t *o = out + ((size_t)y * w + x) * 3;
            if (m->ct == PNG_COLOR_TYPE_PALETTE) {
                memcpy(o, pal + 3 * sample_at(row, m->depth, x), 3);
            } else if (ch <= 2) {
                o[0] = o[1] = o[2] = to8(sample_at(row, m->depth, x * ch), m->depth, ch == 1);
            } else {
                for (int c = 0; c < 3; c++) o[c] = to8(sample_at(row, m->depth, x * ch + c), m->depth, 0);
            }
        }
}

static uint8_t *make_png(const png_mode *m, int w, int h, uint64_t seed, uint8_t *pal,
                         uint8_t **rows_out, size_t *rowbytes, size_t *len) {
    int ch = channels(m->ct);
    *rowbytes = ((size_t)w * ch * m->depth + 7) / 8;
    uint8_t *rows = malloc(*rowbytes * h);
    mx8_rng r;
    mx8_rng_seed(&r, seed);
    t_fill_photo(rows, (int)*rowbytes, h, 1, seed);
    for (int i = 0; i < 256 * 3; i++) pal[i] = (uint8_t)mx8_rng_next(&r);
    int npal = 1 << (m->depth < 8 ? m->depth : 8);
    if (m->ct == PNG_COLOR_TYPE_PALETTE && m->depth == 8) /* keep indices < npal: all 256 */
        npal = 256;
    uint8_t trans[256];
    memset(trans, 100, sizeof trans);
    if (m->ct != PNG_COLOR_TYPE_PALETTE) trans[0] = 3; /* a grey/colour key valid at any depth */
    uint8_t *png = t_encode_png(rows, w, h, m->ct, m->depth, m->interlace,
                                m->ct == PNG_COLOR_TYPE_PALETTE ? pal : NULL, npal,
                                m->trns ? trans : NULL, m->ct == PNG_COLOR_TYPE_PALETTE ? npal : 1, len);
    *rows_out = rows;
    return png;
}

void test_png_all_modes_match_pillow_rules(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    const int W = 37, H = 23;
    for (size_t i = 0; i < sizeof PMODES / sizeof PMODES[0]; i++) {
        const png_mode *m = &PMODES[i];
        uint8_t pal[768], *rows;
        size_t rowbytes, len;
        uint8_t *png = make_png(m, W, H, i + 11, pal, &rows, &rowbytes, &len);
        CHECK(png != NULL);
        if (!png) {
            free(rows);
            continue;
        }
        uint8_t *want = malloc((size_t)W * H * 3);
        expected_rgb(m, rows, rowbytes, W, H, pal, want);
        const uint8_t *rgb;
        int w, h;
        int rc = mx8_decode_rgb(dec, png, len, 0, &rgb, &w, &h, &err);
        CHECK_INT(rc, ==, MX8_OK);
        if (rc == MX8_OK) {
            CHECK_INT(w, ==, W);
            CHECK_INT(h, ==, H);
            if (memcmp(rgb, want, (size_t)W * H * 3) != 0) {
                fprintf(stderr, "  png mode %s differs\n", m->name);
                mx8t_failed++;
            }
        } else {
            fprintf(stderr, "  png mode %s: %s\n", m->name, err.msg);
        }
        free(want);
        free(rows);
        free(png);
    }
    mx8_decoder_free(dec);
}

void test_png_truncated_and_corrupt(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    uint8_t pal[768], *rows;
    size_t rowbytes, len;
    png_mode m = {"rgb8", PNG_COLOR_TYPE_RGB, 8, 0, 0};
    uint8_t *png = make_png(&m, 64, 40, 5, pal, &rows, &rowbytes, &len);
    const uint8_t *rgb;
    int w, h;
    CHECK_INT(mx8_decode_rgb(dec, png, len / 2, 0, &rgb, &w, &h, &err), ==, MX8_ERR_DECODE);
    CHECK(strstr(err.msg, "premature end of PNG data") != NULL);
    CHECK_INT(mx8_decode_rgb(dec, png, 30, 0, &rgb, &w, &h, &err), ==, MX8_ERR_DECODE);
    /* bits flipped inside IDAT: zlib/filter decoding fails before the chunk CRC is seen */
    png[len / 2] ^= 0x55;
    CHECK_INT(mx8_decode_rgb(dec, png, len, 0, &rgb, &w, &h, &err), ==, MX8_ERR_DECODE);
    CHECK(strncmp(err.msg, "corrupt PNG data: ", 18) == 0 && strlen(err.msg) > 18);
    png[len / 2] ^= 0x55;
    png[29] ^= 1; /* last byte of the IHDR CRC */
    CHECK_INT(mx8_decode_rgb(dec, png, len, 0, &rgb, &w, &h, &err), ==, MX8_ERR_DECODE);
    CHECK_STR(err.msg, "corrupt PNG data: IHDR: CRC error");
    png[29] ^= 1;
    REQUIRE_OK(mx8_decode_rgb(dec, png, len, 0, &rgb, &w, &h, &err), &err);
    free(rows);
    free(png);
    mx8_decoder_free(dec);
}

void test_png_too_large(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    uint8_t pal[768], *rows;
    size_t rowbytes, len;
    png_mode m = {"rgb8", PNG_COLOR_TYPE_RGB, 8, 0, 0};
    uint8_t *png = make_png(&m, 16, 16, 5, pal, &rows, &rowbytes, &len);
    const uint8_t big[8] = {0, 0, 0xC3, 0x50, 0, 0, 0xC3, 0x50}; /* 50000 x 50000 */
    memcpy(png + 16, big, 8);
    t_png_fix_crc(png, 12);
    size_t before = mx8_decoder_scratch_bytes(dec);
    const uint8_t *rgb;
    int w, h, fmt;
    CHECK_INT(mx8_decode_rgb(dec, png, len, 100000000, &rgb, &w, &h, &err), ==, MX8_ERR_TOO_LARGE);
    CHECK_STR(err.msg, "image is 50000x50000 = 2500000000 pixels, above the limit of 100000000 (max_pixels)");
    CHECK_INT(mx8_decoder_scratch_bytes(dec), ==, before);
    CHECK_INT(mx8_image_probe(png, len, &fmt, &w, &h, &err), ==, MX8_OK);
    CHECK_INT(fmt, ==, MX8_FMT_PNG);
    CHECK_INT(h, ==, 50000);
    free(rows);
    free(png);
    mx8_decoder_free(dec);
}

/* Sizes a header declares are checked before the transform plans anything from them: a
 * 10^8 x 1 PNG (within the pixel limit, beyond libpng's 10^6 per side) and a 2^31-1 square
 * are refused at once, with no scratch grown. Before, the first cost seconds and gigabytes
 * in the resize plan, and the second surfaced as a plain ValueError. */
void test_png_header_sizes_checked_before_planning(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    uint8_t pal[768], *rows;
    size_t rowbytes, len;
    png_mode m = {"rgb8", PNG_COLOR_TYPE_RGB, 8, 0, 0};
    uint8_t *png = make_png(&m, 16, 16, 5, pal, &rows, &rowbytes, &len);
    static const struct {
        uint8_t ihdr[8];
        const char *msg;
    } cases[] = {
        {{0x05, 0xF5, 0xE1, 0x00, 0, 0, 0, 1}, "PNG is 100000000x1, above libpng's limit of 1000000 x 1000000 pixels"},
        {{0x7F, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF},
         "PNG is 2147483647x2147483647, above libpng's limit of 1000000 x 1000000 pixels"},
        {{0, 0x0F, 0x42, 0x40, 0, 0, 0x03, 0xE8}, "image is 1000000x1000 = 1000000000 pixels, above the limit of 30000000 (max_pixels)"},
    };
    size_t before = mx8_decoder_scratch_bytes(dec);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(png + 16, cases[i].ihdr, 8);
        t_png_fix_crc(png, 12);
        for (int crop = MX8_CROP_NONE; crop <= MX8_CROP_RANDOM; crop++) {
            mx8_transform t = mx8_transform_random_crop(32, 32);
            t.crop_mode = crop;
            t.resize_short = 36;
            uint8_t out[3 * 32 * 32];
            CHECK_INT(mx8_decode_transform(dec, png, len, &t, 3, out, &err), ==, MX8_ERR_TOO_LARGE);
            CHECK_STR(err.msg, cases[i].msg);
        }
    }
    CHECK_INT(mx8_decoder_scratch_bytes(dec), ==, before);
    free(rows);
    free(png);
    mx8_decoder_free(dec);
}

/* Interlaced images of every small size (where Adam7 passes are empty) decode to the same
 * pixels as the plain encoding: the progressive reader's end-of-image rule holds for all. */
void test_png_interlaced_small_sizes(void) {
    mx8_error err;
    mx8_decoder *dec = mx8_decoder_new();
    png_mode plain = {"rgb8", PNG_COLOR_TYPE_RGB, 8, 0, 0}, adam7 = {"rgb8 i", PNG_COLOR_TYPE_RGB, 8, 1, 0};
    for (int w = 1; w <= 10; w++)
        for (int h = 1; h <= 10; h++) {
            uint8_t pal[768], *rows_a, *rows_b;
            size_t rb, la, lb;
            uint8_t *a = make_png(&plain, w, h, 3, pal, &rows_a, &rb, &la);
            uint8_t *b = make_png(&adam7, w, h, 3, pal, &rows_b, &rb, &lb);
            const uint8_t *pa, *pb;
            int wa, ha, wb, hb;
            uint8_t *copy = malloc((size_t)w * h * 3);
            REQUIRE_OK(mx8_decode_rgb(dec, a, la, 0, &pa, &wa, &ha, &err), &err);
            memcpy(copy, pa, (size_t)w * h * 3);
            REQUIRE_OK(mx8_decode_rgb(dec, b, lb, 0, &pb, &wb, &hb, &err), &err);
            CHECK(wa == wb && ha == hb && memcmp(copy, pb, (size_t)w * h * 3) == 0);
            /* cut before its last rows, it is an error (not rows of an earlier image); cut after
             * them (only the checksums and IEND lost) the pixels are all there */
            CHECK_INT(mx8_decode_rgb(dec, b, lb / 2, 0, &pb, &wb, &hb, &err), ==, MX8_ERR_DECODE);
            free(copy);
            free(a);
            free(b);
            free(rows_a);
            free(rows_b);
        }
    mx8_decoder_free(dec);
}
