/* Crop geometry: RandomResizedCrop bounds and statistics, determinism, center crop. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../csrc/core/crop_geometry.h"
#include "../../csrc/core/rng.h"
#include "mx8_test.h"
#include "tests.h"

void test_rrc_windows_inside_and_in_bounds(void) {
    const int sizes[][2] = {{500, 375}, {375, 500}, {224, 224}, {1024, 100}, {64, 900}, {1, 1}, {3, 700}};
    const double smin = 0.08, smax = 1.0, rmin = 3.0 / 4, rmax = 4.0 / 3;
    long inside_bad = 0, accepted = 0, scale_bad = 0, ratio_bad = 0;
    double area_sum = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int W = sizes[si][0], H = sizes[si][1];
        for (uint64_t seed = 0; seed < 4000; seed++) {
            mx8_rng r;
            mx8_rng_seed(&r, seed * 7919 + si);
            int x, y, w, h;
            mx8_crop_random_window(W, H, smin, smax, rmin, rmax, &r, &x, &y, &w, &h);
            if (!(w > 0 && h > 0 && x >= 0 && y >= 0 && x + w <= W && y + h <= H)) inside_bad++;
            if (si == 0) { /* 500x375: the ten tries nearly always succeed */
                double frac = (double)w * h / (W * H), ratio = (double)w / h;
                /* rounding w, h moves area and ratio by at most ~1 pixel per side */
                if (frac < smin * 0.9 || frac > smax * 1.0 + 0.01) scale_bad++;
                if (ratio < rmin * 0.95 || ratio > rmax * 1.05) ratio_bad++;
                area_sum += frac;
                accepted++;
            }
        }
    }
    CHECK_INT(inside_bad, ==, 0);
    CHECK_INT(scale_bad, ==, 0);
    CHECK_INT(ratio_bad, ==, 0);
    /* uniform area fraction in [0.08, 1] restricted to windows that fit: the mean of the
     * accepted ones is well inside (0.35, 0.6); a broken sampler (fixed scale, always the
     * fallback) lands outside. */
    double mean = area_sum / accepted;
    CHECK(mean > 0.35 && mean < 0.6);
}

void test_rrc_positions_cover_the_image(void) {
    /* i and j are uniform: over many seeds both the left and the right third are used. */
    int left = 0, right = 0, top = 0, bottom = 0;
    for (uint64_t seed = 0; seed < 2000; seed++) {
        mx8_rng r;
        mx8_rng_seed(&r, seed);
        int x, y, w, h;
        mx8_crop_random_window(1000, 1000, 0.08, 0.1, 1, 1, &r, &x, &y, &w, &h);
        left += x + w / 2 < 333;
        right += x + w / 2 > 666;
        top += y + h / 2 < 333;
        bottom += y + h / 2 > 666;
    }
    CHECK(left > 400 && right > 400 && top > 400 && bottom > 400);
}

void test_rrc_deterministic_and_seed_sensitive(void) {
    int same = 0, differ = 0;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        mx8_rng a, b, c;
        mx8_rng_seed(&a, seed);
        mx8_rng_seed(&b, seed);
        mx8_rng_seed(&c, seed + 1);
        mx8_crop_geometry ga, gb, gc;
        mx8_crop_random(640, 480, 0.08, 1, 0.75, 4.0 / 3, &a, &ga);
        mx8_crop_random(640, 480, 0.08, 1, 0.75, 4.0 / 3, &b, &gb);
        mx8_crop_random(640, 480, 0.08, 1, 0.75, 4.0 / 3, &c, &gc);
        same += memcmp(&ga, &gb, sizeof ga) == 0;
        differ += ga.rx != gc.rx || ga.rw != gc.rw || ga.ry != gc.ry;
    }
    CHECK_INT(same, ==, 200);
    CHECK_INT(differ, >=, 195);
}

void test_rrc_fallback_clamps_ratio(void) {
    /* A 1000x10 strip: no try can fit, so the fallback crops to ratio_max. */
    mx8_rng r;
    mx8_rng_seed(&r, 3);
    int x, y, w, h;
    mx8_crop_random_window(1000, 10, 0.5, 1.0, 0.75, 4.0 / 3, &r, &x, &y, &w, &h);
    CHECK_INT(h, ==, 10);
    CHECK_INT(w, ==, 13); /* round(10 * 4/3) */
    CHECK_INT(x, ==, (1000 - 13) / 2);
}

void test_center_crop_box(void) {
    mx8_crop_geometry g;
    /* 500x375 -> Resize(256) = 341x256; CenterCrop(224): left = round(58.5) = 58 (half to
     * even, as Python), top = 16; box scaled back by 500/341 and 375/256. */
    mx8_crop_center(500, 375, 0, 224, 224, &g);
    CHECK_INT(g.rw, ==, 500);
    CHECK(fabsf(g.bx0 - (float)(58 * 500.0 / 341)) < 1e-3f);
    CHECK(fabsf(g.by0 - (float)(16 * 375.0 / 256)) < 1e-3f);
    CHECK(fabsf(g.bx1 - (float)(282 * 500.0 / 341)) < 1e-3f);
    CHECK(fabsf(g.by1 - (float)(240 * 375.0 / 256)) < 1e-3f);
    /* a crop larger than the resized image is clamped to the image */
    mx8_crop_center(100, 50, 64, 224, 224, &g);
    CHECK(g.bx0 >= 0 && g.by0 >= 0 && g.bx1 <= 100.0f && g.by1 <= 50.0f);
    mx8_crop_full(7, 9, &g);
    CHECK(g.bx1 == 7.0f && g.by1 == 9.0f && g.rw == 7 && g.rh == 9);
}

/* Extreme sizes and ratios stay defined (UBSan aborts this binary on an out-of-range
 * double -> int cast, which 10^6 x 1 images and ratios like 1e-300 used to produce) and
 * always give a window inside the image. */
void test_geometry_extreme_inputs_stay_in_bounds(void) {
    static const int sizes[][2] = {{1000000, 1}, {1, 1000000}, {1, 1}, {65500, 65500}, {2, 999999}};
    static const double ratios[][2] = {{1e-300, 1e300}, {1e-9, 1e-8}, {1e8, 1e9}, {0.75, 4.0 / 3}};
    mx8_rng rng;
    mx8_rng_seed(&rng, 11);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int W = sizes[i][0], H = sizes[i][1];
        for (size_t k = 0; k < sizeof ratios / sizeof ratios[0]; k++)
            for (int t = 0; t < 20; t++) {
                int x, y, w, h;
                mx8_crop_random_window(W, H, 1e-12, 1.0, ratios[k][0], ratios[k][1], &rng, &x, &y, &w, &h);
                CHECK(w >= 1 && h >= 1 && x >= 0 && y >= 0 && x + w <= W && y + h <= H);
            }
        mx8_crop_geometry g;
        mx8_crop_center(W, H, 65535, 224, 224, &g);
        CHECK(g.rw == W && g.rh == H);
        CHECK(g.bx0 >= 0 && g.by0 >= 0 && g.bx1 <= (float)W && g.by1 <= (float)H);
    }
}
