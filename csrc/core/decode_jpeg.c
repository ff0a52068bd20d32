#include "decode_jpeg.h"

#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE */
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

/* Rows handed to one jpeg_read_scanlines call: at least rec_outbuf_height (<= 4), more
 * just saves calls. */
#define ROWS_PER_READ 16

/* Scans a progressive JPEG may hold. Each is a pass over the whole image, and the format
 * allows any number: a 1.4 MB file with 2,000 scans decodes "fine" in 14 s. Real encoders
 * write about 10 (libjpeg's default script; mozjpeg up to ~30). libjpeg-turbo's own tools cap
 * them the same way (djpeg -maxscans, TurboJPEG's TJPARAM_SCANLIMIT). */
#define MAX_SCANS 100
/* ... and at most this many whole-image passes of work, counted per scan as the blocks of the
 * components it covers (a scan's cost is its blocks, even when it carries no data), in units
 * of the image-decoded-whole pixel limit. libjpeg's default script is ~8 units at 4:2:0 and
 * ~14 at 4:4:4; 15 at the 3*10^7 limit is ~1 s of CPU here. A 36 MB 4:4:4 file of 34
 * full-band scans at that limit cost 2.4 s before this cap. Smaller images may have more. */
#define SCAN_PASSES 15

struct mx8_jpeg {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress; /* enforces MAX_SCANS */
    jmp_buf jb;                   /* valid only inside open_inner / decode_inner */
    char msg[JMSG_LENGTH_MAX];    /* last libjpeg message, first letter lower-cased */
    int open;                     /* a header was read: jpeg_abort_decompress is owed */
    uint64_t scan_budget;         /* component blocks all scans may cover (0: no limit) */
    uint64_t scan_blocks;         /* ... covered by the scans absorbed so far */
    int counted_scan;             /* input_scan_number last added to scan_blocks */
    mx8_scratch pix;              /* decoded rows */
};

static void record_message(j_common_ptr c) {
    mx8_jpeg *j = (mx8_jpeg *)c->client_data;
    (*c->err->format_message)(c, j->msg);
    if (j->msg[0] >= 'A' && j->msg[0] <= 'Z') j->msg[0] = (char)(j->msg[0] - 'A' + 'a');
}

static void on_error_exit(j_common_ptr c) {
    record_message(c);
    longjmp(((mx8_jpeg *)c->client_data)->jb, 1);
}

/* Never stderr: keep the text for the error we may report. */
static void on_output_message(j_common_ptr c) { record_message(c); }

/* Warnings (level -1) about corrupt data are errors here: libjpeg would otherwise pad a
 * truncated image with grey and return success. Only warnings that leave the pixels
 * untouched pass: junk between markers (Pillow decodes those files too), an unknown
 * JFIF revision or Adobe transform code, a bad ICC marker we never read. */
static void on_emit_message(j_common_ptr c, int level) {
    if (level >= 0) return; /* trace messages */
    int code = c->err->msg_code;
    if (code == JWRN_EXTRANEOUS_DATA || code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM ||
        code == JWRN_BOGUS_ICC)
        return;
    on_error_exit(c);
}

/* libjpeg calls this between passes, while it absorbs the scans of a progressive file. */
static void on_progress(j_common_ptr c) {
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (!c->is_decompressor || !d->progressive_mode)
        return;
    mx8_jpeg *j = (mx8_jpeg *)c->client_data;
    if (d->input_scan_number > MAX_SCANS) {
        snprintf(j->msg, sizeof j->msg, "progressive JPEG has more than %d scans (a decode bomb?)", MAX_SCANS);
        longjmp(j->jb, 1);
    }
    if (d->input_scan_number != j->counted_scan) { /* called per iMCU row too: count each scan once */
        j->counted_scan = d->input_scan_number;
        for (int i = 0; i < d->comps_in_scan; i++)
            j->scan_blocks += (uint64_t)d->cur_comp_info[i]->width_in_blocks * d->cur_comp_info[i]->height_in_blocks;
        if (j->scan_budget && j->scan_blocks > j->scan_budget) {
            snprintf(j->msg, sizeof j->msg,
                     "progressive JPEG's %d scans cost more than %d whole-image passes at the limit for images "
                     "decoded whole (a decode bomb? raise max_pixels to allow)", d->input_scan_number, SCAN_PASSES);
            longjmp(j->jb, 1);
        }
    }
}

/* jpeg_create_decompress only fails on out-of-memory, through error_exit. */
static int create_inner(mx8_jpeg *j) {
    if (setjmp(j->jb)) return -1;
    jpeg_create_decompress(&j->cinfo);
    return 0;
}

mx8_jpeg *mx8_jpeg_new(void) {
    mx8_jpeg *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->cinfo.err = jpeg_std_error(&j->jerr);
    j->jerr.error_exit = on_error_exit;
    j->jerr.output_message = on_output_message;
    j->jerr.emit_message = on_emit_message;
    j->cinfo.client_data = j;
    if (create_inner(j) != 0) {
        free(j);
        return NULL;
    }
    j->progress.progress_monitor = on_progress;
    j->cinfo.progress = &j->progress; /* jpeg_create_decompress cleared it */
    return j;
}

void mx8_jpeg_free(mx8_jpeg *j) {
    if (!j) return;
    jpeg_destroy_decompress(&j->cinfo);
    mx8_scratch_release(&j->pix);
    free(j);
}

void mx8_jpeg_abort(mx8_jpeg *j) {
    if (j->open) {
        /* Frees per-image memory and returns the object to its idle state for reuse. */
        jpeg_abort_decompress(&j->cinfo);
        j->open = 0;
    }
}

size_t mx8_jpeg_scratch_bytes(const mx8_jpeg *j) { return j->pix.cap; }

void mx8_jpeg_release_scratch(mx8_jpeg *j) { mx8_scratch_release(&j->pix); }

static int open_inner(mx8_jpeg *j, const uint8_t *data, size_t len) {
    if (setjmp(j->jb)) return -1;
    jpeg_mem_src(&j->cinfo, data, (unsigned long)len);
    jpeg_read_header(&j->cinfo, TRUE);
    return 0;
}

/* Whether FF D9 (end of image) follows the headers. A crop-aware decode stops after the last
 * row it needs, so a file cut short would fail only in the epochs whose random crop reaches
 * the cut: the verdict on a sample must not depend on the epoch. Entropy-coded data never
 * holds FF D9 (a data FF is followed by 00 or a restart marker), so a missing one means the
 * end is missing. Trailing bytes after it (camera extras) are fine, as in libjpeg. */
static int has_end_marker(const uint8_t *p, size_t n) {
    const uint8_t *end = p + n;
    while (n >= 2 && (p = memchr(p, 0xFF, n - 1)) != NULL) {
        if (p[1] == 0xD9) return 1;
        p++;
        n = (size_t)(end - p);
    }
    return 0;
}

int mx8_jpeg_open(mx8_jpeg *j, const uint8_t *data, size_t len, uint64_t max_pixels,
                  uint64_t max_multiscan_pixels, int *width, int *height, mx8_error *err) {
    mx8_jpeg_abort(j);
    if (len == 0) return mx8_error_set(err, MX8_ERR_DECODE, "empty JPEG data");
    j->open = 1;
    if (open_inner(j, data, len) != 0) {
        mx8_jpeg_abort(j);
        return mx8_error_set(err, MX8_ERR_DECODE, "%s", j->msg);
    }
    int rc = mx8_check_pixels(j->cinfo.image_width, j->cinfo.image_height, max_pixels, err);
    /* A multi-scan file is absorbed into a whole-image coefficient buffer before any output
     * (2 bytes per pixel and component at 4:4:4): its own, lower limit. */
    uint64_t npix = (uint64_t)j->cinfo.image_width * j->cinfo.image_height;
    j->scan_budget = (uint64_t)SCAN_PASSES * (max_multiscan_pixels / 64);
    j->scan_blocks = 0;
    j->counted_scan = 0;
    if (rc == MX8_OK && jpeg_has_multiple_scans(&j->cinfo) && max_multiscan_pixels && npix > max_multiscan_pixels)
        rc = mx8_error_set(err, MX8_ERR_TOO_LARGE,
                           "progressive JPEG is %ux%u = %llu pixels, above the limit of %llu for images "
                           "decoded whole (max_pixels)", j->cinfo.image_width, j->cinfo.image_height,
                           (unsigned long long)npix, (unsigned long long)max_multiscan_pixels);
    if (rc != MX8_OK) {
        mx8_jpeg_abort(j);
        return rc;
    }
    if (!has_end_marker(j->cinfo.src->next_input_byte, j->cinfo.src->bytes_in_buffer)) {
        mx8_jpeg_abort(j);
        return mx8_error_set(err, MX8_ERR_DECODE, "premature end of JPEG file (no end-of-image marker)");
    }
    *width = (int)j->cinfo.image_width;
    *height = (int)j->cinfo.image_height;
    return MX8_OK;
}

void mx8_jpeg_scaled_size(int width, int height, int denom, int *scaled_w, int *scaled_h) {
    /* libjpeg's jpeg_calc_output_dimensions for scale 1/denom: ceil(size / denom). */
    *scaled_w = (width + denom - 1) / denom;
    *scaled_h = (height + denom - 1) / denom;
}

/* Pillow reads every 4-component JPEG as Adobe-inverted CMYK ("CMYK;I") and converts
 * with cmyk2rgb: with raw r, c = 255 - r, nk = 255 - k = raw k, out = nk - c*nk/255
 * (MULDIV255 rounding). Writes 3-byte pixels over the 4-byte row, in place. */
static void cmyk_row_to_rgb(uint8_t *row, int n) {
    const uint8_t *in = row;
    uint8_t *out = row;
    for (int i = 0; i < n; i++, in += 4, out += 3) {
        int nk = in[3];
        for (int ch = 0; ch < 3; ch++) {
            int t = (255 - in[ch]) * nk + 128;
            out[ch] = (uint8_t)(nk - (((t >> 8) + t) >> 8));
        }
    }
}

/* Decoded window in scaled image coordinates, with one pixel of context on each side. */
typedef struct {
    int x0, y0, x1, y1;
} dec_rect;

static int read_rows(mx8_jpeg *j, const dec_rect *d, size_t stride, mx8_error *err) {
    struct jpeg_decompress_struct *c = &j->cinfo;
    size_t bytes = stride * (size_t)(d->y1 - d->y0);
    int rc = mx8_scratch_reserve(&j->pix, bytes, err);
    if (rc != MX8_OK) return rc;
    uint8_t *base = j->pix.p;
    if (d->y0 > 0) jpeg_skip_scanlines(c, (JDIMENSION)d->y0);
    while (c->output_scanline < (JDIMENSION)d->y1) {
        JSAMPROW rows[ROWS_PER_READ];
        int first = (int)c->output_scanline, n = d->y1 - first;
        if (n > ROWS_PER_READ) n = ROWS_PER_READ;
        for (int r = 0; r < n; r++) rows[r] = base + (size_t)(first - d->y0 + r) * stride;
        jpeg_read_scanlines(c, rows, (JDIMENSION)n);
    }
    return MX8_OK;
}

/* Everything that can longjmp. Returns -1 on a libjpeg error (message in j->msg), else
 * an mx8_code. Fills the rectangle actually decoded and its row stride. */
static int decode_inner(mx8_jpeg *j, int denom, const dec_rect *want, dec_rect *got,
                        size_t *stride, mx8_error *err) {
    struct jpeg_decompress_struct *c = &j->cinfo;
    if (setjmp(j->jb)) return -1;
    int cmyk = c->num_components == 4;
    c->out_color_space = cmyk ? JCS_CMYK : JCS_RGB; /* gray -> RGB replicates, as Pillow */
    c->scale_num = 1;
    c->scale_denom = (unsigned)denom;
    c->dct_method = JDCT_ISLOW; /* Pillow's defaults: bit-identical output */
    c->do_fancy_upsampling = TRUE;
    jpeg_start_decompress(c);
    *got = *want;
    JDIMENSION xoff = (JDIMENSION)want->x0, cw = (JDIMENSION)(want->x1 - want->x0);
    if (cw < c->output_width) jpeg_crop_scanline(c, &xoff, &cw); /* snaps left to an iMCU */
    got->x0 = (int)xoff;
    got->x1 = (int)(xoff + cw);
    *stride = (size_t)cw * (size_t)c->output_components;
    int rc = read_rows(j, got, *stride, err);
    if (rc != MX8_OK) return rc;
    if (cmyk) {
        /* Compact to 3-byte pixels: row r moves from r*4*cw to r*3*cw, never ahead of
         * bytes still to be read, so one forward pass in place is safe. */
        uint8_t *base = j->pix.p;
        size_t out_stride = (size_t)cw * 3;
        for (int r = 0; r < got->y1 - got->y0; r++) {
            uint8_t *src = base + (size_t)r * *stride, *dst = base + (size_t)r * out_stride;
            cmyk_row_to_rgb(src, (int)cw);
            if (dst != src) memmove(dst, src, out_stride);
        }
        *stride = out_stride;
    }
    return MX8_OK;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

int mx8_jpeg_decode(mx8_jpeg *j, int denom, int crop_aware, int x, int y, int w, int h,
                    mx8_image_view *out, mx8_error *err) {
    if (!j->open) return mx8_error_set(err, MX8_ERR_ARG, "mx8_jpeg_decode without open");
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
        mx8_jpeg_abort(j);
        return mx8_error_set(err, MX8_ERR_ARG, "JPEG scale 1/%d is not 1, 1/2, 1/4 or 1/8", denom);
    }
    int sw, sh;
    mx8_jpeg_scaled_size((int)j->cinfo.image_width, (int)j->cinfo.image_height, denom, &sw, &sh);
    if (w <= 0 || h <= 0) {
        x = y = 0;
        w = sw;
        h = sh;
    }
    if (x < 0 || y < 0 || w > sw - x || h > sh - y) {
        mx8_jpeg_abort(j);
        return mx8_error_set(err, MX8_ERR_ARG, "window %dx%d+%d+%d outside the %dx%d image",
                             w, h, x, y, sw, sh);
    }
    dec_rect want = {0, 0, sw, sh}, got;
    if (crop_aware) {
        /* One pixel of context each side: fancy upsampling of the window's edge pixels
         * reads their neighbours' chroma (DESIGN.md section 8). */
        want.x0 = clampi(x - 1, 0, sw);
        want.y0 = clampi(y - 1, 0, sh);
        want.x1 = clampi(x + w + 1, 0, sw);
        want.y1 = clampi(y + h + 1, 0, sh);
    }
    size_t stride = 0;
    int rc = decode_inner(j, denom, &want, &got, &stride, err);
    mx8_jpeg_abort(j); /* not finish: the rows after the window are never read */
    if (rc < 0) return mx8_error_set(err, MX8_ERR_DECODE, "%s", j->msg);
    if (rc != MX8_OK) return rc;
    const uint8_t *base = j->pix.p;
    out->px = base + (size_t)(y - got.y0) * stride + (size_t)(x - got.x0) * 3;
    out->stride = stride;
    out->x = x;
    out->y = y;
    out->w = w;
    out->h = h;
    out->image_w = sw;
    out->image_h = sh;
    return MX8_OK;
}

/* ---- header probe without libjpeg ---- */

static int is_sof(int m) {
    /* SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC). */
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

int mx8_jpeg_probe(const uint8_t *d, size_t len, int *width, int *height, mx8_error *err) {
    if (len < 4 || d[0] != 0xFF || d[1] != 0xD8)
        return mx8_error_set(err, MX8_ERR_DECODE, "not a JPEG file: no SOI marker");
    size_t pos = 2;
    while (pos + 4 <= len) {
        if (d[pos] != 0xFF) return mx8_error_set(err, MX8_ERR_DECODE, "JPEG marker expected at byte %zu", pos);
        int m = d[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { /* no length field */
            pos += 2;
            continue;
        }
        if (m == 0xD9 || m == 0xDA) break; /* EOI or scan before any frame header */
        size_t seg = ((size_t)d[pos + 2] << 8) | d[pos + 3];
        if (seg < 2) break;
        if (is_sof(m)) {
            if (pos + 9 > len) break;
            *height = (d[pos + 5] << 8) | d[pos + 6];
            *width = (d[pos + 7] << 8) | d[pos + 8];
            if (*width == 0 || *height == 0)
                return mx8_error_set(err, MX8_ERR_DECODE, "JPEG frame header has a zero dimension");
            return MX8_OK;
        }
        pos += 2 + seg;
    }
    return mx8_error_set(err, MX8_ERR_DECODE, "JPEG data ends before its frame header");
}
