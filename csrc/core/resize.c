#include "resize.h"

#include <math.h>
#include <string.h>

#include "image_transform.h"
#include "resize_simd.h"

/* Two implementations of the passes, equal bit for bit: the AVX2 kernels of resize_simd.c
 * (u8 pixels, 16-bit pmaddwd on split coefficients), used when the CPU has AVX2, and the
 * portable int32 loops below (any CPU, or r->no_simd). The portable loops multiply int32
 * lanes: baseline x86-64 (SSE2) has no 32-bit vector multiply, so they are also built for
 * SSE4.1 and AVX2 and picked at load time (ifunc). Measured single-thread, one
 * RandomResizedCrop(224)+flip resize of a decoded ImageNet-sized photo: ~420 us portable
 * (AVX2 clone), ~155 us with the AVX2 kernels. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define MX8_HOT_LOOP __attribute__((target_clones("avx2", "sse4.1", "default")))
#else
#define MX8_HOT_LOOP
#endif

/* Pillow's 8-bit precision: 32 bits - 8 for the value - 2 for overshoot. */
#define PRECISION_BITS 22
#define HALF (1 << (PRECISION_BITS - 1))

void mx8_resizer_release(mx8_resizer *r) {
    mx8_resize_axis *axes[2] = {&r->ax, &r->ay};
    for (int i = 0; i < 2; i++) {
        mx8_scratch_release(&axes[i]->k);
        mx8_scratch_release(&axes[i]->pos);
        mx8_scratch_release(&axes[i]->sk);
        mx8_scratch_release(&axes[i]->soff);
        axes[i]->valid = 0;
    }
    mx8_scratch_release(&r->tmp);
    mx8_scratch_release(&r->acc);
    mx8_scratch_release(&r->wd);
    mx8_scratch_release(&r->row4);
}

static double triangle(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's rounding of a normalised weight to fixed point. */
static int32_t to_fixed(double k) {
    return k < 0 ? (int32_t)(-0.5 + k * (1 << PRECISION_BITS))
                 : (int32_t)(0.5 + k * (1 << PRECISION_BITS));
}

/* Weights for output sample i exactly as Pillow's precompute_coeffs computes them
 * (same double expressions, same truncating casts); returns the tap count, sets *first. */
static int sample_weights(int in_size, float in0, double scale, double support, double ss,
                          int i, double *w, int *first) {
    double center = in0 + (i + 0.5) * scale;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    int n = xmax - xmin;
    if (n < 0) n = 0;
    double sum = 0.0;
    for (int x = 0; x < n; x++) {
        w[x] = triangle((x + xmin - center + 0.5) * ss);
        sum += w[x];
    }
    for (int x = 0; x < n && sum != 0.0; x++) w[x] /= sum;
    *first = xmin;
    return n;
}

/* The AVX2 kernels' copy of a planned axis: horizontal (fixed) as mx8_hk_build lays it
 * out, vertical as ceil(taps / 2) kh/kl pair dwords per output row. */
static int plan_simd(mx8_resize_axis *a, int fixed, mx8_error *err) {
    const int32_t *k = a->k.p;
    const int *pos = a->pos.p;
    int pairs = (a->taps + 1) / 2;
    if (fixed) {
        int rc = mx8_scratch_reserve(&a->sk, mx8_hk_k_bytes(a->out_size, a->taps), err);
        if (!rc) rc = mx8_scratch_reserve(&a->soff, mx8_hk_off_bytes(a->out_size), err);
        if (!rc) mx8_hk_build(k, pos, a->lo, a->out_size, a->taps, a->sk.p, a->soff.p);
        return rc;
    }
    int rc = mx8_scratch_reserve(&a->sk, sizeof(int32_t) * 2 * (size_t)pairs * a->out_size, err);
    for (int i = 0; !rc && i < a->out_size; i++)
        mx8_vk_build(k + (size_t)i * a->taps, pos[2 * i + 1],
                     (int32_t *)a->sk.p + (size_t)i * 2 * pairs);
    return rc;
}

/* Fills one axis. fixed = 1 (horizontal) gives every output exactly `taps` coefficients,
 * zero padded, with the start moved left when it would run off the input: the inner
 * loop then has no per-pixel bound and reads only real pixels (times zero). */
static int plan_axis(mx8_resize_axis *a, mx8_scratch *wd, int in_size, float b0, float b1,
                     int out_size, int flip, int fixed, int simd, mx8_error *err) {
    if (a->valid && a->in_size == in_size && a->out_size == out_size && a->flip == flip &&
        a->simd == simd && a->b0 == b0 && a->b1 == b1)
        return MX8_OK; /* same geometry as last time (e.g. center crops of equal sizes) */
    a->valid = 0;
    double scale = (double)(b1 - b0) / out_size; /* float subtraction, as Pillow */
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    double ksize_d = ceil(support) * 2 + 1;
    if (ksize_d * out_size > (double)(INT32_MAX / 8)) /* keeps every product below in int */
        return mx8_error_set(err, MX8_ERR_ARG, "resize %d -> %d: kernel too large", in_size, out_size);
    int ksize = (int)ksize_d;
    int taps = fixed && ksize > in_size ? in_size : ksize;
    int rc = mx8_scratch_reserve(&a->k, sizeof(int32_t) * (size_t)out_size * taps, err);
    if (!rc) rc = mx8_scratch_reserve(&a->pos, sizeof(int) * 2 * (size_t)out_size, err);
    if (!rc) rc = mx8_scratch_reserve(wd, sizeof(double) * (size_t)ksize, err);
    if (rc) return rc;
    int32_t *k = a->k.p;
    int *pos = a->pos.p;
    double *w = wd->p;
    a->lo = in_size;
    a->hi = 0;
    for (int i = 0; i < out_size; i++) {
        int first, n = sample_weights(in_size, b0, scale, support, 1.0 / filterscale, i, w, &first);
        int slot = flip ? out_size - 1 - i : i;
        int32_t *kk = k + (size_t)slot * taps;
        int shift = 0;
        if (fixed && first + taps > in_size) shift = first + taps - in_size;
        memset(kk, 0, sizeof(int32_t) * (size_t)taps);
        for (int x = 0; x < n; x++) kk[x + shift] = to_fixed(w[x]);
        pos[2 * slot] = first - shift;
        pos[2 * slot + 1] = fixed ? taps : n;
        if (first - shift < a->lo) a->lo = first - shift;
        if (first - shift + pos[2 * slot + 1] > a->hi) a->hi = first - shift + pos[2 * slot + 1];
    }
    if (a->lo > a->hi) a->lo = a->hi;
    a->in_size = in_size;
    a->out_size = out_size;
    a->flip = flip;
    a->b0 = b0;
    a->b1 = b1;
    a->taps = taps;
    a->simd = simd;
    if (simd && (rc = plan_simd(a, fixed, err))) return rc;
    a->valid = 1;
    return MX8_OK;
}

int mx8_resize_plan(mx8_resizer *r, int in_w, int in_h, float x0, float y0, float x1,
                    float y1, int out_w, int out_h, int flip, mx8_error *err) {
    if (in_w <= 0 || in_h <= 0 || out_w <= 0 || out_h <= 0)
        return mx8_error_set(err, MX8_ERR_ARG, "resize %dx%d -> %dx%d: sizes must be > 0",
                             in_w, in_h, out_w, out_h);
    if (!(x0 >= 0 && y0 >= 0 && x1 <= in_w && y1 <= in_h && x1 > x0 && y1 > y0))
        return mx8_error_set(err, MX8_ERR_ARG, "resize box (%g, %g, %g, %g) outside the %dx%d image",
                             x0, y0, x1, y1, in_w, in_h);
    r->in_w = in_w;
    r->in_h = in_h;
    r->out_w = out_w;
    r->out_h = out_h;
    /* Pillow skips a pass when it is the identity (its test compares box[2] to the
     * output size); a flip always needs the horizontal pass. */
    r->need_h = out_w != in_w || x0 != 0 || x1 != out_w || flip;
    r->need_v = out_h != in_h || y0 != 0 || y1 != out_h;
    /* Pillow 11+: when the height shrinks by more than twice what the width does, the
     * vertical pass runs first. The order changes rounding, so follow it exactly. */
    r->h_first = !(in_h - out_h > 0 && in_h - out_h > (in_w - out_w) * 2);
    r->simd = !r->no_simd && mx8_resize_simd_available();
    int rc = plan_axis(&r->ax, &r->wd, in_w, x0, x1, out_w, flip ? 1 : 0, 1, r->simd, err);
    if (!rc) rc = plan_axis(&r->ay, &r->wd, in_h, y0, y1, out_h, 0, 0, r->simd, err);
    if (rc) return rc;
    if (!r->need_h) {
        r->ax.lo = 0;
        r->ax.hi = in_w;
    }
    if (!r->need_v) {
        r->ay.lo = 0;
        r->ay.hi = in_h;
    }
    return MX8_OK;
}

static inline uint8_t clip8(int32_t v) {
    int32_t s = v >> PRECISION_BITS;
    return (uint8_t)(s > 255 ? 255 : s); /* weights are >= 0, so s >= 0 */
}

/* Pixels as 4 x int32 lanes (R, G, B, pad): one load + multiply + add per tap instead of
 * three scalar ones (pmulld/paddd with SSE4.1). GCC/Clang vector extensions, so no
 * intrinsics and any target still compiles. */
typedef int32_t v4i32 __attribute__((vector_size(16)));

/* Widens source columns [0, n) of an RGB row to int32 lanes once per row, so the tap loop
 * (which reads each pixel about 2 * taps / scale times) does no byte work. */
MX8_HOT_LOOP static void expand_rgbx(const uint8_t *restrict s, int n, int32_t *restrict d) {
    for (int x = 0; x < n; x++) {
        d[4 * x] = s[3 * x];
        d[4 * x + 1] = s[3 * x + 1];
        d[4 * x + 2] = s[3 * x + 2];
        d[4 * x + 3] = 0;
    }
}

/* Output pointers for one row: lane c of pixel x goes to d[c][x * step]. step 3 writes
 * interleaved RGB (NHWC), step 1 writes three planes (NCHW). */
typedef struct {
    uint8_t *d0, *d1, *d2;
    int step;
} row_out;

/* Horizontal pass over one row held as int32 pixels starting at input column lo. */
MX8_HOT_LOOP static void h_row(const int32_t *restrict px4, int lo, row_out o, int out_w, int taps,
                  const int32_t *restrict k, const int *restrict pos) {
    const v4i32 half = {HALF, HALF, HALF, HALF}, top = {255, 255, 255, 255};
    for (int x = 0; x < out_w; x++, k += taps) {
        const int32_t *p = px4 + (size_t)(pos[2 * x] - lo) * 4;
        v4i32 acc = half;
        for (int t = 0; t < taps; t++) {
            v4i32 v;
            memcpy(&v, p + 4 * t, sizeof v);
            acc += v * k[t];
        }
        acc >>= PRECISION_BITS;
        v4i32 over = acc > top; /* weights are >= 0, so only the top needs clipping */
        acc = (acc & ~over) | (top & over);
        o.d0[x * o.step] = (uint8_t)acc[0];
        o.d1[x * o.step] = (uint8_t)acc[1];
        o.d2[x * o.step] = (uint8_t)acc[2];
    }
}

static row_out out_row(uint8_t *o, size_t plane, int planar) {
    row_out r = {o, o + (planar ? plane : 1), o + (planar ? 2 * plane : 2), planar ? 1 : 3};
    return r;
}

/* One output row of one plane: acc over the taps rows, each a contiguous run of n bytes
 * (the j loops vectorise: widen, multiply, add). */
MX8_HOT_LOOP static void v_row(const uint8_t *rows, size_t row_stride, int n, int count,
                  const int32_t *restrict k, int32_t *restrict acc, uint8_t *restrict out) {
    for (int j = 0; j < n; j++) acc[j] = HALF;
    for (int t = 0; t < count; t++) {
        const uint8_t *restrict s = rows + (size_t)t * row_stride;
        int32_t kt = k[t];
        for (int j = 0; j < n; j++) acc[j] += s[j] * kt;
    }
    for (int j = 0; j < n; j++) out[j] = clip8(acc[j]);
}

/* Output row y of the vertical pass over n bytes: AVX2 when planned (and wide enough). */
static void v_pass_row(const mx8_resizer *r, int y, const uint8_t *rows, size_t stride, int n,
                       int32_t *acc, uint8_t *out) {
    int count = ((const int *)r->ay.pos.p)[2 * y + 1];
#if MX8_RESIZE_SIMD
    if (r->simd && n >= 32) {
        size_t pairs = (size_t)(r->ay.taps + 1) / 2;
        const int32_t *kv = (const int32_t *)r->ay.sk.p + (size_t)y * 2 * pairs;
        mx8_resize_v_row_avx2(rows, stride, n, count, kv, out);
        return;
    }
#endif
    v_row(rows, stride, n, count, (const int32_t *)r->ay.k.p + (size_t)y * r->ay.taps, acc, out);
}

/* Row scratch for h_pass_row: the AVX2 kernel's zero-padded tail or the int32 row. */
static int reserve_row(mx8_resizer *r, mx8_error *err) {
    size_t ncols = (size_t)(r->ax.hi - r->ax.lo), pairs = (size_t)(r->ax.taps + 1) / 2;
    return mx8_scratch_reserve(&r->row4, r->simd ? 12 * pairs + 48 : ncols * 16, err);
}

/* Horizontal pass of one row: RGB bytes of source columns [ax.lo, ax.hi). */
static void h_pass_row(mx8_resizer *r, const uint8_t *row, row_out o) {
    int ncols = r->ax.hi - r->ax.lo;
#if MX8_RESIZE_SIMD
    if (r->simd) {
        mx8_hk p = {r->out_w, (r->ax.taps + 1) / 2, r->ax.sk.p, r->ax.soff.p};
        mx8_resize_h_row_avx2(&p, row, ncols * 3, r->row4.p, o.d0, o.d1, o.d2, o.step);
        return;
    }
#endif
    expand_rgbx(row, ncols, r->row4.p);
    h_row(r->row4.p, r->ax.lo, o, r->out_w, r->ax.taps, r->ax.k.p, r->ax.pos.p);
}

/* Stage 2: vertical pass (or plain copy) of `planes` planes, each n bytes wide, from
 * tmp (row y of plane p at tmp + p*plane_stride + (y - y_lo)*row_stride) to out. */
static void vertical(const mx8_resizer *r, const uint8_t *tmp, size_t plane_stride,
                     size_t row_stride, int planes, int n, int32_t *acc, uint8_t *out) {
    const int *pos = r->ay.pos.p;
    size_t out_plane = planes == 3 ? (size_t)r->out_w * r->out_h : 0;
    for (int p = 0; p < planes; p++) {
        const uint8_t *tp = tmp + p * plane_stride;
        uint8_t *op = out + p * out_plane;
        for (int y = 0; y < r->out_h; y++, op += n) {
            if (!r->need_v) {
                memcpy(op, tp + (size_t)(y - r->ay.lo) * row_stride, (size_t)n);
                continue;
            }
            const uint8_t *rows = tp + (size_t)(pos[2 * y] - r->ay.lo) * row_stride;
            v_pass_row(r, y, rows, row_stride, n, acc, op);
        }
    }
}

/* Pillow >= 11 order: horizontal pass first, rows [ay.lo, ay.hi) into tmp, then vertical. */
static int run_h_first(mx8_resizer *r, const uint8_t *src, size_t stride, int src_x, int src_y,
                       uint8_t *out, int planar, mx8_error *err) {
    int rows = r->ay.hi - r->ay.lo, ow = r->out_w;
    const uint8_t *row = src + (size_t)(r->ay.lo - src_y) * stride; /* first row read */
    if (!r->need_h && !planar) { /* NHWC identity columns: read the source rows in place */
        vertical(r, row, 0, stride, 1, ow * 3, r->acc.p, out); /* src_x == ax.lo == 0 */
        return MX8_OK;
    }
    size_t plane = (size_t)ow * rows;
    int rc = mx8_scratch_reserve(&r->tmp, plane * 3, err);
    if (rc) return rc;
    uint8_t *tmp = r->tmp.p;
    if ((rc = reserve_row(r, err))) return rc;
    row += (size_t)(r->ax.lo - src_x) * 3;
    for (int y = 0; y < rows; y++, row += stride)
        h_pass_row(r, row, out_row(tmp + (size_t)y * ow * (planar ? 1 : 3), plane, planar));
    if (planar)
        vertical(r, tmp, plane, (size_t)ow, 3, ow, r->acc.p, out);
    else
        vertical(r, tmp, 0, (size_t)ow * 3, 1, ow * 3, r->acc.p, out);
    return MX8_OK;
}

/* Vertical pass first (Pillow does this when the height shrinks much more than the
 * width): only the columns [ax.lo, ax.hi) the horizontal pass reads, into tmp, then the
 * horizontal pass writes the output rows in the requested layout. */
static int run_v_first(mx8_resizer *r, const uint8_t *src, size_t stride, int src_x, int src_y,
                       uint8_t *out, int planar, mx8_error *err) {
    int ow = r->out_w, oh = r->out_h, ncols = r->ax.hi - r->ax.lo;
    /* Without a vertical pass the source rows are read in place, and then src_y == 0; with
     * one, rows is the tmp buffer (src - src_y * stride, formed as a size_t, wrapped: UB). */
    const uint8_t *rows = src;
    size_t rstride = stride;
    int col0 = src_x;
    if (r->need_v) {
        size_t n = (size_t)ncols * 3;
        int rc = mx8_scratch_reserve(&r->tmp, n * (size_t)oh, err);
        if (rc) return rc;
        const int *pos = r->ay.pos.p;
        const uint8_t *s0 = src + (size_t)(r->ax.lo - src_x) * 3;
        for (int y = 0; y < oh; y++)
            v_pass_row(r, y, s0 + (size_t)(pos[2 * y] - src_y) * stride, stride, (int)n, r->acc.p,
                       (uint8_t *)r->tmp.p + (size_t)y * n);
        rows = r->tmp.p;
        rstride = n;
        col0 = r->ax.lo;
    }
    size_t plane = (size_t)ow * oh;
    int rc = reserve_row(r, err);
    if (rc) return rc;
    rows += (size_t)(r->ax.lo - col0) * 3;
    for (int y = 0; y < oh; y++, rows += rstride)
        h_pass_row(r, rows, out_row(out + (size_t)y * ow * (planar ? 1 : 3), plane, planar));
    return MX8_OK;
}

int mx8_resize_run(mx8_resizer *r, const uint8_t *src, size_t stride, int src_x, int src_y,
                   int src_w, int src_h, uint8_t *out, int layout, mx8_error *err) {
    if (src_x < 0 || src_y < 0 || src_x > r->ax.lo || src_y > r->ay.lo ||
        src_x + src_w < r->ax.hi || src_y + src_h < r->ay.hi)
        return mx8_error_set(err, MX8_ERR_ARG,
                             "resize source %dx%d+%d+%d does not cover columns %d..%d rows %d..%d",
                             src_w, src_h, src_x, src_y, r->ax.lo, r->ax.hi, r->ay.lo, r->ay.hi);
    int planar = layout == MX8_LAYOUT_NCHW;
    size_t widest = (size_t)(r->out_w > r->ax.hi - r->ax.lo ? r->out_w : r->ax.hi - r->ax.lo);
    int rc = mx8_scratch_reserve(&r->acc, sizeof(int32_t) * 3 * widest, err);
    if (rc) return rc;
    if (r->h_first) return run_h_first(r, src, stride, src_x, src_y, out, planar, err);
    return run_v_first(r, src, stride, src_x, src_y, out, planar, err);
}
