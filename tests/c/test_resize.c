/* Resampler: identity, flip, layouts, and agreement with a floating-point model. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../csrc/core/image_transform.h"
#include "../../csrc/core/resize.h"
#include "mx8_test.h"
#include "test_images.h"
#include "tests.h"

static int resize(mx8_resizer *r, const uint8_t *src, int w, int h, float x0, float y0, float x1,
                  float y1, int ow, int oh, int flip, int layout, uint8_t *out, mx8_error *err) {
    int rc = mx8_resize_plan(r, w, h, x0, y0, x1, y1, ow, oh, flip, err);
    if (rc) return rc;
    return mx8_resize_run(r, src, (size_t)w * 3, 0, 0, w, h, out, layout, err);
}

void test_resize_identity_exact(void) {
    mx8_error err;
    mx8_resizer r = {0};
    const int W = 41, H = 29;
    uint8_t src[W * H * 3], out[W * H * 3];
    t_fill_photo(src, W, H, 3, 1);
    REQUIRE_OK(resize(&r, src, W, H, 0, 0, W, H, W, H, 0, MX8_LAYOUT_NHWC, out, &err), &err);
    CHECK(memcmp(src, out, sizeof src) == 0);
    REQUIRE_OK(resize(&r, src, W, H, 0, 0, W, H, W, H, 0, MX8_LAYOUT_NCHW, out, &err), &err);
    int same = 1;
    for (int i = 0; i < W * H; i++)
        for (int c = 0; c < 3; c++) same &= out[c * W * H + i] == src[3 * i + c];
    CHECK(same);
    /* an integer crop at scale 1 is exact too */
    uint8_t crop[10 * 7 * 3];
    REQUIRE_OK(resize(&r, src, W, H, 5, 3, 15, 10, 10, 7, 0, MX8_LAYOUT_NHWC, crop, &err), &err);
    same = 1;
    for (int y = 0; y < 7; y++) same &= memcmp(crop + y * 30, src + ((y + 3) * W + 5) * 3, 30) == 0;
    CHECK(same);
    mx8_resizer_release(&r);
}

/* Flip and NCHW agree with plain NHWC, for both pass orders (wide and tall sources). */
static void flip_and_layouts(int W, int H, int OW, int OH, const float box[4], int want_h_first) {
    mx8_error err;
    mx8_resizer r = {0};
    size_t n = (size_t)OW * OH * 3;
    uint8_t *src = malloc((size_t)W * H * 3), *a = malloc(n), *b = malloc(n), *c = malloc(n), *d = malloc(n);
    t_fill_photo(src, W, H, 3, 2);
    REQUIRE_OK(resize(&r, src, W, H, box[0], box[1], box[2], box[3], OW, OH, 0, MX8_LAYOUT_NHWC, a, &err), &err);
    CHECK_INT(r.h_first, ==, want_h_first);
    REQUIRE_OK(resize(&r, src, W, H, box[0], box[1], box[2], box[3], OW, OH, 1, MX8_LAYOUT_NHWC, b, &err), &err);
    REQUIRE_OK(resize(&r, src, W, H, box[0], box[1], box[2], box[3], OW, OH, 0, MX8_LAYOUT_NCHW, c, &err), &err);
    REQUIRE_OK(resize(&r, src, W, H, box[0], box[1], box[2], box[3], OW, OH, 1, MX8_LAYOUT_NCHW, d, &err), &err);
    int flip_ok = 1, nchw_ok = 1, nchw_flip_ok = 1;
    for (int y = 0; y < OH; y++)
        for (int x = 0; x < OW; x++)
            for (int ch = 0; ch < 3; ch++) {
                int v = a[(y * OW + x) * 3 + ch];
                flip_ok &= b[(y * OW + (OW - 1 - x)) * 3 + ch] == v;
                nchw_ok &= c[ch * OW * OH + y * OW + x] == v;
                nchw_flip_ok &= d[ch * OW * OH + y * OW + (OW - 1 - x)] == v;
            }
    CHECK(flip_ok);
    CHECK(nchw_ok);
    CHECK(nchw_flip_ok);
    free(src);
    free(a);
    free(b);
    free(c);
    free(d);
    mx8_resizer_release(&r);
}

void test_resize_flip_and_layouts(void) {
    const float wide[4] = {3.5f, 2.25f, 90.0f, 60.0f}, tall[4] = {1.0f, 10.5f, 59.0f, 190.0f};
    flip_and_layouts(97, 61, 31, 23, wide, 1);
    flip_and_layouts(60, 200, 50, 40, tall, 0);
    /* flip of an identity-size resize mirrors the exact pixels */
    mx8_error err;
    mx8_resizer r = {0};
    const int W = 19, H = 7;
    uint8_t src[W * H * 3], e[W * H * 3];
    t_fill_photo(src, W, H, 3, 4);
    REQUIRE_OK(resize(&r, src, W, H, 0, 0, W, H, W, H, 1, MX8_LAYOUT_NHWC, e, &err), &err);
    int mirrored = 1;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) mirrored &= memcmp(e + (y * W + x) * 3, src + (y * W + W - 1 - x) * 3, 3) == 0;
    CHECK(mirrored);
    mx8_resizer_release(&r);
}

/* Pillow's algorithm in floating point (weights not rounded to fixed point), with the
 * same 8-bit rounding between the passes: the fixed-point result must be within 1. */
static void model_axis(int in, float b0, float b1, int out, int i, double *w, int *first, int *n) {
    double scale = (double)(b1 - b0) / out, fs = scale < 1 ? 1 : scale;
    double center = b0 + (i + 0.5) * scale, sum = 0;
    int lo = (int)(center - fs + 0.5), hi = (int)(center + fs + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in) hi = in;
    for (int x = lo; x < hi; x++) {
        double t = fabs((x - center + 0.5) / fs);
        w[x - lo] = t < 1 ? 1 - t : 0;
        sum += w[x - lo];
    }
    for (int x = 0; x < hi - lo; x++) w[x] /= sum;
    *first = lo;
    *n = hi - lo;
}

static uint8_t round8(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : floor(v + 0.5)); }

/* Runs the plan on an exact-size copy of the window it reads (so that any load past it
 * trips ASan), SIMD or portable. */
static int run_tight(mx8_resizer *r, const uint8_t *src, int W, int H, float x0, float y0,
                     float x1, float y1, int ow, int oh, int flip, int layout, uint8_t *out,
                     mx8_error *err) {
    int rc = mx8_resize_plan(r, W, H, x0, y0, x1, y1, ow, oh, flip, err);
    if (rc) return rc;
    int cw = r->ax.hi - r->ax.lo, ch = r->ay.hi - r->ay.lo;
    uint8_t *win = malloc((size_t)cw * ch * 3);
    for (int y = 0; y < ch; y++)
        memcpy(win + (size_t)y * cw * 3, src + ((size_t)(y + r->ay.lo) * W + r->ax.lo) * 3, (size_t)cw * 3);
    rc = mx8_resize_run(r, win, (size_t)cw * 3, r->ax.lo, r->ay.lo, cw, ch, out, layout, err);
    free(win);
    return rc;
}

/* The AVX2 kernels (where the CPU has them) equal the portable loops bit for bit:
 * random sizes, boxes, flips, layouts and both pass orders, small outputs included. */
static void simd_matches_portable(void) {
    mx8_error err;
    mx8_resizer fast = {0}, ref = {0};
    ref.no_simd = 1;
    const int W = 523, H = 401;
    uint8_t *src = malloc(W * H * 3), *a = malloc(300 * 300 * 3), *b = malloc(300 * 300 * 3);
    t_fill_photo(src, W, H, 3, 5);
    uint64_t s = 12345;
    int diffs = 0;
    for (int i = 0; i < 300; i++) {
        float v[6];
        for (int j = 0; j < 6; j++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            v[j] = (float)(s >> 40) / (float)(1 << 24);
        }
        int w = 1 + (int)(v[0] * (W - 1)), h = 1 + (int)(v[1] * (H - 1));
        float x0 = v[2] * (W - w), y0 = v[3] * (H - h);
        if (i % 3 == 0) x0 = floorf(x0), y0 = floorf(y0);
        int ow = i % 4 == 0 ? 224 : 1 + (int)(v[4] * 299), oh = i % 4 == 0 ? 224 : 1 + (int)(v[5] * 299);
        int flip = i & 1, layout = (i >> 1) & 1 ? MX8_LAYOUT_NCHW : MX8_LAYOUT_NHWC;
        REQUIRE_OK(run_tight(&fast, src, W, H, x0, y0, x0 + w, y0 + h, ow, oh, flip, layout, a, &err), &err);
        REQUIRE_OK(run_tight(&ref, src, W, H, x0, y0, x0 + w, y0 + h, ow, oh, flip, layout, b, &err), &err);
        diffs += memcmp(a, b, (size_t)ow * oh * 3) != 0;
    }
    CHECK_INT(diffs, ==, 0);
    free(src);
    free(a);
    free(b);
    mx8_resizer_release(&fast);
    mx8_resizer_release(&ref);
}

void test_resize_matches_float_model(void) {
    simd_matches_portable();
    mx8_error err;
    mx8_resizer r = {0};
    const int W = 300, H = 220;
    uint8_t *src = malloc(W * H * 3), *out = malloc(224 * 224 * 3), *tmp = malloc(224 * H * 3);
    double w[700];
    t_fill_photo(src, W, H, 3, 3);
    const float boxes[][4] = {{0, 0, 300, 220}, {10.5f, 7.25f, 290.75f, 200}, {100, 50, 140, 90},
                              {0, 0, 150, 220}, {33.3f, 0, 34.9f, 220}};
    const int outs[][2] = {{224, 224}, {64, 48}, {224, 160}, {17, 200}, {5, 3}};
    int maxd = 0;
    for (int bi = 0; bi < 5; bi++)
        for (int oi = 0; oi < 5; oi++) {
            const float *b = boxes[bi];
            int ow = outs[oi][0], oh = outs[oi][1], first, n;
            REQUIRE_OK(resize(&r, src, W, H, b[0], b[1], b[2], b[3], ow, oh, 0, MX8_LAYOUT_NHWC, out, &err), &err);
            for (int y = 0; y < H; y++)
                for (int x = 0; x < ow; x++) {
                    model_axis(W, b[0], b[2], ow, x, w, &first, &n);
                    for (int ch = 0; ch < 3; ch++) {
                        double s = 0;
                        for (int t = 0; t < n; t++) s += w[t] * src[(y * W + first + t) * 3 + ch];
                        tmp[(y * ow + x) * 3 + ch] = round8(s);
                    }
                }
            for (int y = 0; y < oh; y++) {
                model_axis(H, b[1], b[3], oh, y, w, &first, &n);
                for (int x = 0; x < ow * 3; x++) {
                    double s = 0;
                    for (int t = 0; t < n; t++) s += w[t] * tmp[(first + t) * ow * 3 + x];
                    int d = abs(round8(s) - out[y * ow * 3 + x]);
                    if (d > maxd) maxd = d;
                }
            }
        }
    CHECK_INT(maxd, <=, 1);
    free(src);
    free(out);
    free(tmp);
    mx8_resizer_release(&r);
}

void test_resize_rejects_bad_args(void) {
    mx8_error err;
    mx8_resizer r = {0};
    CHECK_INT(mx8_resize_plan(&r, 10, 10, 0, 0, 11, 10, 5, 5, 0, &err), ==, MX8_ERR_ARG);
    CHECK_INT(mx8_resize_plan(&r, 10, 10, 0, 0, 10, 10, 0, 5, 0, &err), ==, MX8_ERR_ARG);
    CHECK_INT(mx8_resize_plan(&r, 10, 10, 2, 2, 8, 8, 3, 3, 0, &err), ==, MX8_OK);
    uint8_t src[10 * 10 * 3] = {0}, out[27];
    /* a source view that starts after the planned window is refused */
    CHECK_INT(mx8_resize_run(&r, src, 30, 5, 0, 5, 10, out, MX8_LAYOUT_NHWC, &err), ==, MX8_ERR_ARG);
    mx8_resizer_release(&r);
}
