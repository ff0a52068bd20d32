/* Bench: mx8's PNG decode against a bare libpng decode loop, single thread, same files,
 * same process, from memory.
 *   make -C tests/c bench && tests/c/build/pngrate LIST [reps]
 * LIST holds one PNG path a line. Three modes, interleaved per image (rotating which goes
 * first) so that load from other processes on a shared machine hits all alike:
 *   libpng  what a careful user writes: png_read_image into a reused RGB buffer with the
 *           usual transforms (palette->RGB, gray 1/2/4->8, strip 16, strip alpha,
 *           gray->RGB, interlace handling), reading from the memory buffer
 *   mx8     mx8_decode_rgb: mx8's full PNG decode (the engine's decoder object)
 *   rrc     mx8_decode_transform, RandomResizedCrop(224) + flip into NCHW (decode + resize)
 * Prints images/s for each and the mx8/libpng ratio; the last line is for scripts:
 *   pngrate: images=N reps=R libpng=.. mx8_decode=.. mx8_rrc=.. ratio=.. failed=.. mismatched=..
 * "mismatched" counts images whose mx8 pixels differ from the bare loop's (checked in the
 * warm-up pass; 16-bit grayscale differs on purpose: mx8 clips like Pillow, libpng's
 * strip_16 keeps the high byte). Quote the ratio, not the absolute rates. */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../csrc/core/image_transform.h"

#include "bench_corpus.h"

/* ---- the bare libpng loop ---------------------------------------------------------- */

typedef struct {
    const uint8_t *data;
    size_t len, pos;
} mem_src;

typedef struct {
    uint8_t *pix; /* reused RGB buffer, grown as needed */
    size_t cap;
    png_bytep *rows;
    size_t rows_cap;
    int w, h;
} bare_out;

static void mem_read(png_structp p, png_bytep out, size_t n) {
    mem_src *s = png_get_io_ptr(p);
    if (n > s->len - s->pos) png_error(p, "premature end of PNG data");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static void quiet(png_structp p, png_const_charp msg) {
    (void)p;
    (void)msg;
}

static int bare_decode(const uint8_t *data, size_t len, bare_out *o) {
    mem_src src = {data, len, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, quiet);
    if (!png) return -1;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_set_read_fn(png, &src, mem_read);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    png_set_strip_alpha(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t stride = png_get_rowbytes(png, info);
    if (stride != (size_t)w * 3) png_error(png, "not RGB after transforms");
    if (stride * h > o->cap) {
        uint8_t *p = realloc(o->pix, stride * h);
        if (!p) png_error(png, "out of memory");
        o->pix = p;
        o->cap = stride * h;
    }
    if (h > o->rows_cap) {
        png_bytep *r = realloc(o->rows, h * sizeof *r);
        if (!r) png_error(png, "out of memory");
        o->rows = r;
        o->rows_cap = h;
    }
    for (png_uint_32 y = 0; y < h; y++) o->rows[y] = o->pix + (size_t)y * stride;
    png_read_image(png, o->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    o->w = (int)w;
    o->h = (int)h;
    return 0;
}

/* ---- timing ------------------------------------------------------------------------ */

/* secs[mode] gets the time of mode 0 (libpng), 1 (mx8 decode), 2 (mx8 RRC). With
 * mismatched != NULL (the warm-up pass) the two full decodes are compared. */
static long run(mx8_decoder *dec, const corpus *c, int reps, bare_out *bo, uint8_t *out,
                double secs[3], size_t *mismatched) {
    mx8_transform t = mx8_transform_random_crop(224, 224);
    mx8_error err;
    err.msg[0] = 0;
    long failed = 0;
    for (int r = 0; r < reps; r++)
        for (size_t i = 0; i < c->n; i++) {
            const uint8_t *rgb = NULL;
            int w = 0, h = 0;
            for (int k = 0; k < 3; k++) {
                int mode = (int)((i + (size_t)k) % 3), rc;
                double t0 = now();
                if (mode == 0)
                    rc = bare_decode(c->data[i], c->len[i], bo);
                else if (mode == 1)
                    rc = mx8_decode_rgb(dec, c->data[i], c->len[i], t.max_pixels, &rgb, &w, &h, &err);
                else
                    rc = mx8_decode_transform(dec, c->data[i], c->len[i], &t, (uint64_t)i * 7919 + r, out, &err);
                secs[mode] += now() - t0;
                failed += rc != 0;
            }
            if (mismatched) { /* decode again: the RRC call above reused the scratch */
                if (mx8_decode_rgb(dec, c->data[i], c->len[i], t.max_pixels, &rgb, &w, &h, &err) != 0 ||
                    bare_decode(c->data[i], c->len[i], bo) != 0 || w != bo->w || h != bo->h ||
                    memcmp(rgb, bo->pix, (size_t)w * h * 3) != 0)
                    (*mismatched)++;
            }
        }
    if (failed) fprintf(stderr, "%ld decodes failed (last mx8 error: %s)\n", failed, err.msg);
    return failed;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s LIST [reps]\n", argv[0]);
        return 2;
    }
    int reps = argc > 2 ? atoi(argv[2]) : 1;
    if (reps < 1) reps = 1;
    corpus c = {0};
    if (load(argv[1], &c) != 0) {
        fprintf(stderr, "no images read from %s\n", argv[1]);
        return 1;
    }
    mx8_decoder *dec = mx8_decoder_new();
    uint8_t *out = malloc(3 * 224 * 224);
    bare_out bo;
    memset(&bo, 0, sizeof bo);
    if (!dec || !out) return 1;
    double warm[3] = {0, 0, 0}, secs[3] = {0, 0, 0};
    size_t mismatched = 0;
    run(dec, &c, 1, &bo, out, warm, &mismatched); /* grow buffers, fault pages in, compare */
    long failed = run(dec, &c, reps, &bo, out, secs, NULL);
    double n = (double)c.n * reps;
    double libpng = n / secs[0], mx8 = n / secs[1], rrc = n / secs[2];
    printf("images %zu x %d reps, single thread, interleaved\n", c.n, reps);
    printf("bare libpng loop (png_read_image, RGB):  %8.0f img/s\n", libpng);
    printf("mx8 PNG decode (mx8_decode_rgb):         %8.0f img/s\n", mx8);
    printf("mx8 PNG RRC(224)+flip (decode+resize):   %8.0f img/s\n", rrc);
    printf("mx8 decode / bare libpng ratio:          %8.3fx\n", mx8 / libpng);
    printf("pngrate: images=%zu reps=%d libpng=%.1f mx8_decode=%.1f mx8_rrc=%.1f ratio=%.4f failed=%ld "
           "mismatched=%zu\n",
           c.n, reps, libpng, mx8, rrc, mx8 / libpng, failed, mismatched);
    for (size_t i = 0; i < c.n; i++) free(c.data[i]);
    free(c.data);
    free(c.len);
    free(out);
    free(bo.pix);
    free(bo.rows);
    mx8_decoder_free(dec);
    return 0;
}
