#include "test_images.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <jpeglib.h>

#include "../../csrc/core/rng.h"

void t_fill_photo(uint8_t *px, int w, int h, int comps, uint64_t seed) {
    mx8_rng r;
    mx8_rng_seed(&r, seed);
    double f1 = 0.02 + mx8_rng_unit(&r) * 0.05, f2 = 0.01 + mx8_rng_unit(&r) * 0.07;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            for (int c = 0; c < comps; c++) {
                double v = 128 + 90 * sin(x * f1 * (c + 1) + y * f2) * cos(y * f1 - c);
                if (((x / 13) + (y / 11) + c) % 5 == 0) v = 255 - v; /* hard edges for chroma */
                v += (double)(mx8_rng_next(&r) % 41) - 20;
                px[((size_t)y * w + x) * comps + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
}

struct t_jerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
};

static void t_jerr_exit(j_common_ptr c) { longjmp(((struct t_jerr *)c->err)->jb, 1); }

static int encode_jpeg_inner(struct jpeg_compress_struct *c, struct t_jerr *e, const uint8_t *px,
                             int w, int h, int kind, int quality, int hs, int vs, int progressive,
                             unsigned char **out, unsigned long *outlen) {
    if (setjmp(e->jb)) return -1;
    jpeg_create_compress(c);
    jpeg_mem_dest(c, out, outlen);
    c->image_width = (JDIMENSION)w;
    c->image_height = (JDIMENSION)h;
    c->input_components = kind == T_JPEG_RGB ? 3 : kind == T_JPEG_GRAY ? 1 : 4;
    c->in_color_space = kind == T_JPEG_RGB ? JCS_RGB : kind == T_JPEG_GRAY ? JCS_GRAYSCALE : JCS_CMYK;
    jpeg_set_defaults(c);
    if (kind == T_JPEG_YCCK) jpeg_set_colorspace(c, JCS_YCCK);
    jpeg_set_quality(c, quality, TRUE);
    if (kind != T_JPEG_GRAY) {
        c->comp_info[0].h_samp_factor = hs;
        c->comp_info[0].v_samp_factor = vs;
        for (int i = 1; i < c->num_components; i++)
            c->comp_info[i].h_samp_factor = c->comp_info[i].v_samp_factor = 1;
        if (kind != T_JPEG_RGB) { /* CMYK/YCCK: K at full resolution like luma */
            c->comp_info[3].h_samp_factor = hs;
            c->comp_info[3].v_samp_factor = vs;
        }
    }
    static jpeg_scan_info per_coef[1 + 4 * 63];
    if (progressive == T_JPEG_SCAN_PER_COEF) {
        /* DC of every component, then each AC coefficient of each component alone: a valid
         * progression of 1 + 63 * components scans (the shape of a scan-count bomb). */
        int n = 0;
        per_coef[n++] = (jpeg_scan_info){.comps_in_scan = c->num_components,
                                         .component_index = {0, 1, 2, 3}, .Ss = 0, .Se = 0};
        for (int comp = 0; comp < c->num_components; comp++)
            for (int k = 1; k < 64; k++)
                per_coef[n++] = (jpeg_scan_info){.comps_in_scan = 1, .component_index = {comp}, .Ss = k, .Se = k};
        c->scan_info = per_coef;
        c->num_scans = n;
    } else if (progressive) {
        jpeg_simple_progression(c);
    }
    jpeg_start_compress(c, TRUE);
    size_t stride = (size_t)w * (size_t)c->input_components;
    while (c->next_scanline < c->image_height) {
        JSAMPROW row = (JSAMPROW)(px + c->next_scanline * stride);
        jpeg_write_scanlines(c, &row, 1);
    }
    jpeg_finish_compress(c);
    return 0;
}

uint8_t *t_encode_jpeg(const uint8_t *px, int w, int h, int kind, int quality, int h_samp,
                       int v_samp, int progressive, size_t *len) {
    struct jpeg_compress_struct c;
    struct t_jerr e;
    unsigned char *out = NULL;
    unsigned long outlen = 0;
    c.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = t_jerr_exit;
    int rc = encode_jpeg_inner(&c, &e, px, w, h, kind, quality, h_samp, v_samp, progressive,
                               &out, &outlen);
    jpeg_destroy_compress(&c);
    if (rc != 0) {
        free(out);
        return NULL;
    }
    *len = outlen;
    return out;
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
} t_buf;

static void png_write_mem(png_structp png, png_bytep data, size_t n) {
    t_buf *b = png_get_io_ptr(png);
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) png_error(png, "out of memory");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

static int encode_png_inner(png_structp png, png_infop info, t_buf *b, const uint8_t *rows, int w,
                            int h, int ct, int depth, int interlace, const uint8_t *pal, int npal,
                            const uint8_t *trans, int ntrans) {
    if (setjmp(png_jmpbuf(png))) return -1;
    png_set_write_fn(png, b, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ct,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) {
        png_color colors[256];
        for (int i = 0; i < npal; i++) {
            colors[i].red = pal[3 * i];
            colors[i].green = pal[3 * i + 1];
            colors[i].blue = pal[3 * i + 2];
        }
        png_set_PLTE(png, info, colors, npal);
    }
    if (trans) {
        png_color_16 tc = {0, trans[0], trans[0], trans[0], trans[0]};
        png_set_tRNS(png, info, ct == PNG_COLOR_TYPE_PALETTE ? trans : NULL, ntrans,
                     ct == PNG_COLOR_TYPE_PALETTE ? NULL : &tc);
    }
    png_write_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    png_bytep *rp = malloc(sizeof(png_bytep) * (size_t)h);
    if (!rp) png_error(png, "out of memory");
    for (int y = 0; y < h; y++) rp[y] = (png_bytep)(rows + (size_t)y * rowbytes);
    png_write_image(png, rp);
    free(rp);
    png_write_end(png, NULL);
    return 0;
}

uint8_t *t_encode_png(const uint8_t *rows, int w, int h, int color_type, int bit_depth,
                      int interlace, const uint8_t *palette_rgb, int npalette,
                      const uint8_t *trans, int ntrans, size_t *len) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    t_buf b = {NULL, 0, 0};
    int rc = info ? encode_png_inner(png, info, &b, rows, w, h, color_type, bit_depth, interlace,
                                     palette_rgb, npalette, trans, ntrans)
                  : -1;
    png_destroy_write_struct(&png, &info);
    if (rc != 0) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

void t_png_fix_crc(uint8_t *png, size_t type_off) {
    uint32_t n = ((uint32_t)png[type_off - 4] << 24) | ((uint32_t)png[type_off - 3] << 16) |
                 ((uint32_t)png[type_off - 2] << 8) | png[type_off - 1];
    uLong crc = crc32(0L, png + type_off, (uInt)(4 + n));
    uint8_t *p = png + type_off + 4 + n;
    p[0] = (uint8_t)(crc >> 24);
    p[1] = (uint8_t)(crc >> 16);
    p[2] = (uint8_t)(crc >> 8);
    p[3] = (uint8_t)crc;
}

size_t t_jpeg_sof_offset(const uint8_t *d, size_t len) {
    size_t pos = 2;
    while (pos + 4 <= len && d[pos] == 0xFF) {
        int m = d[pos + 1];
        if (m >= 0xC0 && m <= 0xC2) return pos;
        pos += 2 + (((size_t)d[pos + 2] << 8) | d[pos + 3]);
    }
    return 0;
}
