#include "decode_png.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

static const uint8_t PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* One decode's state. It lives in mx8_png_decode's frame and decode_inner (the function
 * that calls setjmp) only writes it through a pointer, so nothing it holds is an
 * indeterminate automatic after a longjmp. */
typedef struct {
    png_structp png;
    png_infop info;
    jmp_buf jb;
    char msg[200];
    /* filled by the info callback */
    uint64_t max_pixels;
    mx8_scratch *pix, *rows;
    png_uint_32 w, h;
    int gray16, last_pass, rc; /* rc: a limit the info callback hit (an mx8 code) */
    mx8_error *err;
    int done; /* the last row of the last pass has arrived */
} png_ctx;

static void on_error(png_structp p, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(p);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    longjmp(c->jb, 1);
}

/* libpng warns about harmless things (known-bad sRGB profiles, ancillary CRCs): drop
 * them, never stderr. */
static void on_warning(png_structp p, png_const_charp msg) {
    (void)p;
    (void)msg;
}

int mx8_png_probe(const uint8_t *d, size_t len, int *width, int *height, mx8_error *err) {
    if (len < 8 || memcmp(d, PNG_SIG, 8) != 0)
        return mx8_error_set(err, MX8_ERR_DECODE, "not a PNG file: bad signature");
    if (len < 24 || memcmp(d + 12, "IHDR", 4) != 0)
        return mx8_error_set(err, MX8_ERR_DECODE, "PNG data ends before its IHDR chunk");
    uint32_t w = ((uint32_t)d[16] << 24) | ((uint32_t)d[17] << 16) | ((uint32_t)d[18] << 8) | d[19];
    uint32_t h = ((uint32_t)d[20] << 24) | ((uint32_t)d[21] << 16) | ((uint32_t)d[22] << 8) | d[23];
    if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu)
        return mx8_error_set(err, MX8_ERR_DECODE, "PNG IHDR has an invalid size %ux%u", w, h);
    /* libpng refuses sides above its user limits in png_read_info; say so here, before a
     * caller plans a resize from the declared size. */
    if (w > PNG_USER_WIDTH_MAX || h > PNG_USER_HEIGHT_MAX)
        return mx8_error_set(err, MX8_ERR_TOO_LARGE, "PNG is %ux%u, above libpng's limit of %u x %u pixels", w,
                             h, (unsigned)PNG_USER_WIDTH_MAX, (unsigned)PNG_USER_HEIGHT_MAX);
    *width = (int)w;
    *height = (int)h;
    return MX8_OK;
}

/* Sets the transforms that turn any PNG into 8-bit RGB the way Pillow's convert("RGB")
 * does. Returns 1 for 16-bit grayscale, which we convert ourselves (Pillow clips it). */
static int set_transforms(png_structp png, int depth, int ctype) {
    int gray16 = depth == 16 && ctype == PNG_COLOR_TYPE_GRAY;
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && !gray16) png_set_strip_16(png); /* keeps the high byte, as Pillow */
    png_set_strip_alpha(png); /* also drops alpha that palette expansion made from tRNS */
    if (!gray16 && (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA))
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    return gray16;
}

/* 16-bit big-endian gray -> RGB like Pillow's I;16 -> RGB: values above 255 clip.
 * In place, right to left, since 3-byte outputs outgrow the 2-byte inputs. */
static void gray16_row_to_rgb(uint8_t *row, int w) {
    for (int x = w - 1; x >= 0; x--) {
        uint8_t v = row[2 * x] ? 255 : row[2 * x + 1];
        row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = v;
    }
}

/* libpng's progressive reader, fed the whole buffer: unlike png_read_image, which inflates
 * whatever compressed data follows the last row (a 2 MB file of 2 GB compressed zeros behind a
 * 16x16 image decoded "fine" in 8-13 s), it stops inflating at the last row ("extra compressed
 * data" is only a warning) and skips the rest. */
static void on_info(png_structp png, png_infop info) {
    png_ctx *c = png_get_progressive_ptr(png);
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &c->w, &c->h, &depth, &ctype, &interlace, NULL, NULL);
    if ((c->rc = mx8_check_pixels(c->w, c->h, c->max_pixels, c->err)) != MX8_OK) longjmp(c->jb, 2);
    c->gray16 = set_transforms(png, depth, ctype);
    png_read_update_info(png, info);
    size_t stride = (size_t)c->w * 3;
    if (png_get_rowbytes(png, info) != (c->gray16 ? (size_t)c->w * 2 : stride))
        png_error(png, "unexpected row size after transforms");
    if ((c->rc = mx8_scratch_reserve(c->pix, stride * c->h, c->err)) != MX8_OK ||
        (c->rc = mx8_scratch_reserve(c->rows, sizeof(png_bytep) * c->h, c->err)) != MX8_OK)
        longjmp(c->jb, 2);
    png_bytep *rp = c->rows->p;
    for (png_uint_32 y = 0; y < c->h; y++) rp[y] = (uint8_t *)c->pix->p + (size_t)y * stride;
    /* The pass that delivers the last row: 0 without interlacing, else the last non-empty one. */
    c->last_pass = 0;
    for (int p = 6; interlace != PNG_INTERLACE_NONE && p > 0; p--)
        if (PNG_PASS_COLS(c->w, p) && PNG_PASS_ROWS(c->h, p)) {
            c->last_pass = p;
            break;
        }
}

static void on_row(png_structp png, png_bytep row, png_uint_32 y, int pass) {
    png_ctx *c = png_get_progressive_ptr(png);
    if (y >= c->h) png_error(png, "row number out of range");
    if (row) png_progressive_combine_row(png, ((png_bytep *)c->rows->p)[y], row);
    if (pass == c->last_pass && y == c->h - 1)
        c->done = 1; /* decode_inner feeds no more (png_process_data_pause here makes libpng spin) */
}

static int decode_inner(png_ctx *c, const uint8_t *data, size_t len) {
    int jumped = setjmp(c->jb);
    if (jumped) return jumped == 2 ? c->rc : -1;
    c->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    if (!c->png) return mx8_error_set(c->err, MX8_ERR_NOMEM, "out of memory creating a PNG reader");
    c->info = png_create_info_struct(c->png);
    if (!c->info) return mx8_error_set(c->err, MX8_ERR_NOMEM, "out of memory creating a PNG reader");
    png_set_progressive_read_fn(c->png, c, on_info, on_row, NULL);
    /* In pieces, so that a pause at the last row leaves the rest of the file unread. */
    for (size_t pos = 0; pos < len && !c->done; pos += 65536)
        png_process_data(c->png, c->info, (png_bytep)data + pos, len - pos < 65536 ? len - pos : 65536);
    if (!c->done) {
        snprintf(c->msg, sizeof c->msg, "premature end of PNG data");
        return -1;
    }
    if (c->gray16)
        for (png_uint_32 y = 0; y < c->h; y++) gray16_row_to_rgb(((png_bytep *)c->rows->p)[y], (int)c->w);
    return MX8_OK;
}

int mx8_png_decode(const uint8_t *data, size_t len, uint64_t max_pixels, mx8_scratch *pix,
                   mx8_scratch *rows, mx8_image_view *out, mx8_error *err) {
    int w = 0, h = 0;
    int rc = mx8_png_probe(data, len, &w, &h, err);
    if (rc != MX8_OK) return rc;
    png_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.max_pixels = max_pixels;
    ctx.pix = pix;
    ctx.rows = rows;
    ctx.err = err;
    rc = decode_inner(&ctx, data, len);
    if (ctx.png) png_destroy_read_struct(&ctx.png, ctx.info ? &ctx.info : NULL, NULL);
    if (rc < 0) return mx8_error_set(err, MX8_ERR_DECODE, "corrupt PNG data: %s", ctx.msg);
    if (rc != MX8_OK) return rc;
    w = (int)ctx.w;
    h = (int)ctx.h;
    out->px = pix->p;
    out->stride = (size_t)w * 3;
    out->x = out->y = 0;
    out->w = out->image_w = w;
    out->h = out->image_h = h;
    return MX8_OK;
}
