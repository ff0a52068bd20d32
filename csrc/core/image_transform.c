/* The per-sample hot path: probe -> crop geometry -> (crop-aware) decode -> resize+flip
 * straight into the caller's slot. See image_transform.h for the contract. */
#include "image_transform.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "crop_geometry.h"
#include "decode_jpeg.h"
#include "decode_png.h"
#include "image_buffer.h"
#include "resize.h"
#include "rng.h"

/* One per thread; every field is owned here and reused across samples. */
struct mx8_decoder {
    mx8_jpeg *jpeg;       /* libjpeg decompress struct + JPEG pixel scratch */
    mx8_scratch png_pix;  /* PNG pixels (packed RGB) */
    mx8_scratch png_rows; /* PNG row pointers */
    mx8_resizer rs;       /* resize coefficients and pass buffers */
};

mx8_decoder *mx8_decoder_new(void) {
    mx8_decoder *dec = calloc(1, sizeof *dec);
    if (!dec) return NULL;
    dec->jpeg = mx8_jpeg_new();
    if (!dec->jpeg) {
        free(dec);
        return NULL;
    }
    return dec;
}

void mx8_decoder_free(mx8_decoder *dec) {
    if (!dec) return;
    mx8_jpeg_free(dec->jpeg);
    mx8_scratch_release(&dec->png_pix);
    mx8_scratch_release(&dec->png_rows);
    mx8_resizer_release(&dec->rs);
    free(dec);
}

size_t mx8_decoder_scratch_bytes(const mx8_decoder *dec) {
    const mx8_resizer *r = &dec->rs;
    return mx8_jpeg_scratch_bytes(dec->jpeg) + dec->png_pix.cap + dec->png_rows.cap +
           r->tmp.cap + r->acc.cap + r->wd.cap + r->ax.k.cap + r->ax.pos.cap + r->ay.k.cap +
           r->ay.pos.cap + r->row4.cap;
}

int mx8_decoder_trim(mx8_decoder *dec, size_t keep_bytes) {
    if (mx8_decoder_scratch_bytes(dec) <= keep_bytes) return 0;
    mx8_jpeg_release_scratch(dec->jpeg);
    mx8_scratch_release(&dec->png_pix);
    mx8_scratch_release(&dec->png_rows);
    mx8_resizer_release(&dec->rs);
    return 1;
}

static int sniff(const uint8_t *d, size_t len) {
    if (len >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return MX8_FMT_JPEG;
    if (len >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return MX8_FMT_PNG;
    return MX8_FMT_UNKNOWN;
}

static int not_an_image(const uint8_t *d, size_t len, mx8_error *err) {
    if (len == 0) return mx8_error_set(err, MX8_ERR_DECODE, "bytes are not a JPEG or PNG image (empty)");
    char hex[16] = "";
    size_t n = len < 4 ? len : 4, o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(hex + o, sizeof hex - o, i ? " %02x" : "%02x", d[i]);
    return mx8_error_set(err, MX8_ERR_DECODE, "bytes are not a JPEG or PNG image (starts with %s)", hex);
}

int mx8_image_probe(const uint8_t *data, size_t len, int *format, int *width, int *height,
                    mx8_error *err) {
    int fmt = sniff(data, len);
    *format = fmt;
    if (fmt == MX8_FMT_JPEG) return mx8_jpeg_probe(data, len, width, height, err);
    if (fmt == MX8_FMT_PNG) return mx8_png_probe(data, len, width, height, err);
    return not_an_image(data, len, err);
}

int mx8_decode_rgb(mx8_decoder *dec, const uint8_t *data, size_t len, uint64_t max_pixels,
                   const uint8_t **rgb, int *width, int *height, mx8_error *err) {
    mx8_image_view v;
    int rc, fmt = sniff(data, len);
    if (fmt == MX8_FMT_PNG) {
        rc = mx8_png_decode(data, len, max_pixels, &dec->png_pix, &dec->png_rows, &v, err);
    } else if (fmt == MX8_FMT_JPEG) {
        int w, h;
        rc = mx8_jpeg_open(dec->jpeg, data, len, max_pixels, max_pixels, &w, &h, err);
        if (rc == MX8_OK) rc = mx8_jpeg_decode(dec->jpeg, 1, 0, 0, 0, 0, 0, &v, err);
    } else {
        return not_an_image(data, len, err);
    }
    if (rc != MX8_OK) return rc;
    *rgb = v.px; /* full decodes are packed: stride == 3 * width */
    *width = v.w;
    *height = v.h;
    return MX8_OK;
}

static int check_transform(const mx8_transform *t, mx8_error *err) {
    if (t->out_h <= 0 || t->out_w <= 0 || t->out_h > 65535 || t->out_w > 65535)
        return mx8_error_set(err, MX8_ERR_ARG, "output size %dx%d out of range", t->out_w, t->out_h);
    if (t->layout != MX8_LAYOUT_NCHW && t->layout != MX8_LAYOUT_NHWC)
        return mx8_error_set(err, MX8_ERR_ARG, "unknown layout %d", t->layout);
    if (t->crop_mode == MX8_CROP_RANDOM &&
        !(t->scale_min > 0 && t->scale_min <= t->scale_max && t->ratio_min > 0 &&
          t->ratio_min <= t->ratio_max))
        return mx8_error_set(err, MX8_ERR_ARG, "bad RandomResizedCrop scale (%g, %g) or ratio (%g, %g)",
                             t->scale_min, t->scale_max, t->ratio_min, t->ratio_max);
    if (t->crop_mode < MX8_CROP_NONE || t->crop_mode > MX8_CROP_RANDOM)
        return mx8_error_set(err, MX8_ERR_ARG, "unknown crop mode %d", t->crop_mode);
    return MX8_OK;
}

static void geometry(const mx8_transform *t, int w, int h, mx8_rng *rng, mx8_crop_geometry *g) {
    if (t->crop_mode == MX8_CROP_RANDOM)
        mx8_crop_random(w, h, t->scale_min, t->scale_max, t->ratio_min, t->ratio_max, rng, g);
    else if (t->crop_mode == MX8_CROP_CENTER)
        mx8_crop_center(w, h, t->resize_short, t->out_h, t->out_w, g);
    else
        mx8_crop_full(w, h, g);
}

/* Largest DCT scale 1/d (d = 8, 4, 2) that leaves the box at least the output size. */
static int pick_denom(const mx8_transform *t, const mx8_crop_geometry *g) {
    if (!t->dct_scaling) return 1;
    double bw = g->bx1 - g->bx0, bh = g->by1 - g->by0;
    for (int d = 8; d >= 2; d /= 2)
        if (bw >= (double)d * t->out_w && bh >= (double)d * t->out_h) return d;
    return 1;
}

/* Maps a geometry of the full-size image onto the image scaled to sw x sh. */
static void scale_geometry(mx8_crop_geometry *g, int w, int h, int sw, int sh) {
    double fx = (double)sw / w, fy = (double)sh / h;
    int x0 = (int)floor(g->rx * fx), y0 = (int)floor(g->ry * fy);
    int x1 = (int)ceil((g->rx + g->rw) * fx), y1 = (int)ceil((g->ry + g->rh) * fy);
    if (x1 > sw) x1 = sw;
    if (y1 > sh) y1 = sh;
    if (x1 <= x0) x1 = x0 + 1;
    if (y1 <= y0) y1 = y0 + 1;
    float bx0 = (float)((g->rx + g->bx0) * fx - x0), by0 = (float)((g->ry + g->by0) * fy - y0);
    float bx1 = (float)((g->rx + g->bx1) * fx - x0), by1 = (float)((g->ry + g->by1) * fy - y0);
    g->rx = x0;
    g->ry = y0;
    g->rw = x1 - x0;
    g->rh = y1 - y0;
    g->bx0 = bx0 < 0 ? 0 : bx0;
    g->by0 = by0 < 0 ? 0 : by0;
    g->bx1 = bx1 > g->rw ? (float)g->rw : bx1;
    g->by1 = by1 > g->rh ? (float)g->rh : by1;
}

/* Decodes the source window the resize plan reads (rectangle coordinates + g->rx/ry). */
static uint64_t buffered_limit(const mx8_transform *t) {
    return t->max_buffered_pixels ? t->max_buffered_pixels : t->max_pixels;
}

static int decode_window(mx8_decoder *dec, int fmt, const uint8_t *data, size_t len,
                         const mx8_transform *t, int denom, const mx8_crop_geometry *g,
                         mx8_image_view *v, mx8_error *err) {
    const mx8_resizer *r = &dec->rs;
    int x = g->rx + r->ax.lo, y = g->ry + r->ay.lo;
    int w = r->ax.hi - r->ax.lo, h = r->ay.hi - r->ay.lo;
    if (fmt == MX8_FMT_JPEG) return mx8_jpeg_decode(dec->jpeg, denom, t->crop_aware, x, y, w, h, v, err);
    int rc = mx8_png_decode(data, len, buffered_limit(t), &dec->png_pix, &dec->png_rows, v, err);
    if (rc != MX8_OK) return rc;
    /* PNG: decode everything, then point the view at the window. */
    v->px += (size_t)y * v->stride + (size_t)x * 3;
    v->x = x;
    v->y = y;
    v->w = w;
    v->h = h;
    return MX8_OK;
}

int mx8_decode_transform(mx8_decoder *dec, const uint8_t *data, size_t len,
                         const mx8_transform *t, uint64_t seed, uint8_t *out, mx8_error *err) {
    int rc = check_transform(t, err);
    if (rc != MX8_OK) return rc;
    int fmt = sniff(data, len), w = 0, h = 0;
    if (fmt == MX8_FMT_JPEG)
        rc = mx8_jpeg_open(dec->jpeg, data, len, t->max_pixels, buffered_limit(t), &w, &h, err);
    else if (fmt == MX8_FMT_PNG) {
        /* The pixel limit before any plan is made from the header's size (JPEG's open
         * checks it too): a 45-byte PNG can declare 10^8 x 1 pixels. */
        rc = mx8_png_probe(data, len, &w, &h, err);
        if (rc == MX8_OK) rc = mx8_check_pixels((uint64_t)w, (uint64_t)h, buffered_limit(t), err);
    } else
        return not_an_image(data, len, err);
    if (rc != MX8_OK) return rc;
    /* The flip bit is drawn first so it does not depend on how many crop tries ran. */
    mx8_rng rng;
    mx8_rng_seed(&rng, seed);
    int flip = (int)(mx8_rng_next(&rng) >> 63) & (t->flip ? 1 : 0);
    mx8_crop_geometry g;
    geometry(t, w, h, &rng, &g);
    int denom = fmt == MX8_FMT_JPEG ? pick_denom(t, &g) : 1;
    if (denom > 1) {
        int sw, sh;
        mx8_jpeg_scaled_size(w, h, denom, &sw, &sh);
        scale_geometry(&g, w, h, sw, sh);
    }
    rc = mx8_resize_plan(&dec->rs, g.rw, g.rh, g.bx0, g.by0, g.bx1, g.by1, t->out_w, t->out_h,
                         flip, err);
    if (rc != MX8_OK) {
        mx8_jpeg_abort(dec->jpeg);
        return rc;
    }
    mx8_image_view v;
    rc = decode_window(dec, fmt, data, len, t, denom, &g, &v, err);
    if (rc != MX8_OK) return rc;
    return mx8_resize_run(&dec->rs, v.px, v.stride, v.x - g.rx, v.y - g.ry, v.w, v.h, out,
                          t->layout, err);
}

mx8_transform mx8_transform_random_crop(int out_h, int out_w) {
    mx8_transform t;
    memset(&t, 0, sizeof t);
    t.out_h = out_h;
    t.out_w = out_w;
    t.crop_mode = MX8_CROP_RANDOM;
    t.scale_min = 0.08;
    t.scale_max = 1.0;
    t.ratio_min = 3.0 / 4.0;
    t.ratio_max = 4.0 / 3.0;
    t.flip = 1;
    t.layout = MX8_LAYOUT_NCHW;
    t.max_pixels = 100000000ULL;
    t.max_buffered_pixels = 30000000ULL;
    t.crop_aware = 1;
    return t;
}
