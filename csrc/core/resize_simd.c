#include "resize_simd.h"

#include <string.h>

#define KH_SHIFT 11                 /* k = kh << 11 | kl */
#define KL_MASK ((1 << KH_SHIFT) - 1)
#define HALF (1 << 21)              /* Pillow's rounding term for 22-bit coefficients */

size_t mx8_hk_k_bytes(int out_w, int taps) {
    return (size_t)(out_w + 7) / 8 * 4 * (size_t)((taps + 1) / 2) * 32 * sizeof(int16_t);
}

size_t mx8_hk_off_bytes(int out_w) { return (size_t)(out_w + 7) / 8 * 9 * sizeof(int32_t); }

void mx8_vk_build(const int32_t *k32, int n, int32_t *out) {
    for (int t = 0; t < n; t += 2) {
        uint32_t a = (uint32_t)k32[t], b = t + 1 < n ? (uint32_t)k32[t + 1] : 0;
        out[t] = (int32_t)((a >> KH_SHIFT) | (b >> KH_SHIFT) << 16);
        out[t + 1] = (int32_t)((a & KL_MASK) | (b & KL_MASK) << 16);
    }
}

/* Pixel x of pair x / 2 owns 128-bit lane x & 1 of each 32-coefficient block: 16 kh then
 * 16 kl, each lane {k[t], k[t + 1]} four times (R, G, B, pad). Output pixels are padded
 * to a multiple of 8 with weight-0 copies of the last one, so the kernel has no tail. */
void mx8_hk_build(const int32_t *k32, const int *pos, int lo, int out_w, int taps, int16_t *k,
                  int32_t *off) {
    int pairs = (taps + 1) / 2, npad = (out_w + 7) / 8 * 8;
    for (int x = 0; x < npad; x++) {
        int real = x < out_w;
        off[x] = 3 * (pos[2 * (real ? x : out_w - 1)] - lo);
        int32_t *block_max = off + npad + x / 8;
        if (x % 8 == 0 || off[x] > *block_max) *block_max = off[x];
        int16_t *kk = k + (size_t)(x / 2) * pairs * 32 + (x & 1) * 8;
        for (int j = 0; j < pairs; j++, kk += 32) {
            int32_t pair[2] = {0, 0}; /* {kh[t], kh[t + 1]}, {kl[t], kl[t + 1]} as int16 pairs */
            if (real) mx8_vk_build(k32 + (size_t)x * taps + 2 * j, taps - 2 * j < 2 ? 1 : 2, pair);
            for (int c = 0; c < 4; c++) {
                memcpy(kk + 2 * c, &pair[0], 4);
                memcpy(kk + 16 + 2 * c, &pair[1], 4);
            }
        }
    }
}

#if MX8_RESIZE_SIMD
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2")))

int mx8_resize_simd_available(void) { return __builtin_cpu_supports("avx2"); }

/* (hi << 11) + lo, back to 8-bit scale (the caller's packus clips at 255); lo holds the
 * rounding term. */
AVX2 static inline __m256i finish(__m256i hi, __m256i lo) {
    return _mm256_srli_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi, KH_SHIFT), lo), 22);
}

/* A row and a zero-padded copy of its end: pixels whose loads would pass the row read
 * the copy. */
typedef struct {
    const uint8_t *row, *tail;
    int safe, tail_from; /* last offset read in place; row offset of tail[0] */
} h_src;

static inline const uint8_t *h_at(const h_src *s, int off) {
    return off <= s->safe ? s->row + off : s->tail + (off - s->tail_from);
}

#define INLINE_AVX2 AVX2 __attribute__((always_inline)) static inline

/* Unaligned loads (the _u types may alias anything). */
static inline __m128i load16(const void *p) { return _mm_loadu_si128((const __m128i_u *)p); }
INLINE_AVX2 __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i_u *)p); }

/* One tap pair: hi += v * kh, lo += v * kl (k: 16 kh then 16 kl). */
INLINE_AVX2 void h_taps(__m256i v, const int16_t *k, __m256i *hi, __m256i *lo) {
    *hi = _mm256_add_epi32(*hi, _mm256_madd_epi16(v, load32(k)));
    *lo = _mm256_add_epi32(*lo, _mm256_madd_epi16(v, load32(k + 16)));
}

/* Output pixels x (low lane) and x + 1 (high lane) as int32 RGBX. One 16-byte load per
 * pixel serves two tap pairs: the shuffles widen RGB pixels 0-1 (then 2-3) to int16
 * {R0, R1, G0, G1, B0, B1, 0, 0} for pmaddwd. */
INLINE_AVX2 __m256i h_pair(const uint8_t *a, const uint8_t *b, const int16_t *k, int pairs) {
    const __m256i m0 = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
                                        0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
    const __m256i m1 = _mm256_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1,
                                        6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1);
    __m256i hi = _mm256_setzero_si256(), lo = hi;
    for (int j = 0; j < pairs; j += 2) {
        __m256i v = _mm256_castsi128_si256(load16(a + 6 * j));
        v = _mm256_inserti128_si256(v, load16(b + 6 * j), 1);
        h_taps(_mm256_shuffle_epi8(v, m0), k + 32 * j, &hi, &lo);
        if (j + 1 < pairs) h_taps(_mm256_shuffle_epi8(v, m1), k + 32 * (j + 1), &hi, &lo);
    }
    /* rounding term last: starting from zero lets the compiler drop the first adds */
    return finish(hi, _mm256_add_epi32(lo, _mm256_set1_epi32(HALF)));
}

/* Stores the first `bytes` (8 or 12) bytes of v, or only n of them at the row's end. */
static inline void put(uint8_t *d, __m128i v, int bytes, int n) {
    if (n >= bytes) {
        _mm_storel_epi64((__m128i_u *)(void *)d, v);
        if (bytes == 12) {
            int32_t w = _mm_cvtsi128_si32(_mm_srli_si128(v, 8));
            memcpy(d + 8, &w, 4);
        }
        return;
    }
    uint8_t b[16];
    _mm_storeu_si128((__m128i_u *)(void *)b, v);
    memcpy(d, b, (size_t)n);
}

/* Stores n <= 8 pixels, r[i] holding pixels 2i and 2i + 1 (int32 RGBX, >= 0). */
INLINE_AVX2 void h_store8(const __m256i r[4], uint8_t *d0, uint8_t *d1, uint8_t *d2, int step,
                          int n) {
    __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(r[0], r[1]),
                                    _mm256_packus_epi32(r[2], r[3]));
    __m128i l = _mm256_castsi256_si128(b), h = _mm256_extracti128_si256(b, 1); /* px 0246, 1357 */
    __m128i q0 = _mm_unpacklo_epi32(l, h), q1 = _mm_unpackhi_epi32(l, h);      /* px 0-3, 4-7 */
    if (step == 1) { /* planes: gather each channel's 8 bytes */
        const __m128i m = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        __m128i c0 = _mm_shuffle_epi8(q0, m), c1 = _mm_shuffle_epi8(q1, m);
        __m128i rg = _mm_unpacklo_epi32(c0, c1), bx = _mm_unpackhi_epi32(c0, c1);
        put(d0, rg, 8, n);
        put(d1, _mm_srli_si128(rg, 8), 8, n);
        put(d2, bx, 8, n);
    } else { /* interleaved RGB: drop the pad byte */
        const __m128i m = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
        put(d0, _mm_shuffle_epi8(q0, m), 12, 3 * n);
        if (n > 4) put(d0 + 12, _mm_shuffle_epi8(q1, m), 12, 3 * n - 12);
    }
}

/* The row loop, inlined once per common tap count so that h_pair fully unrolls. */
INLINE_AVX2 void h_pixels(const mx8_hk *p, const h_src *s, uint8_t *d0, uint8_t *d1, uint8_t *d2,
                          int step, int pairs) {
    const int16_t *k = p->k;
    const int32_t *off = p->off, *block_max = off + (p->out_w + 7) / 8 * 8;
    for (int x = 0; x < p->out_w; x += 8, k += 4 * 32 * pairs) {
        const uint8_t *px[8];
        if (block_max[x / 8] <= s->safe) /* all 8 pixels read in place: no per-pixel test */
            for (int i = 0; i < 8; i++) px[i] = s->row + off[x + i];
        else
            for (int i = 0; i < 8; i++) px[i] = h_at(s, off[x + i]);
        __m256i r[4];
        for (int i = 0; i < 4; i++)
            r[i] = h_pair(px[2 * i], px[2 * i + 1], k + i * 32 * pairs, pairs);
        size_t at = (size_t)x * step;
        h_store8(r, d0 + at, d1 + at, d2 + at, step, p->out_w - x);
    }
}

AVX2 void mx8_resize_h_row_avx2(const mx8_hk *p, const uint8_t *row, int nbytes, uint8_t *tail,
                                uint8_t *d0, uint8_t *d1, uint8_t *d2, int step) {
    int span = 6 * (p->pairs - 1) + 16; /* bytes one pixel's loads cover */
    h_src s = {row, tail, nbytes - span, 0};
    s.tail_from = s.safe + 1 > 0 ? s.safe + 1 : 0;
    size_t keep = (size_t)(nbytes - s.tail_from);
    memcpy(tail, row + s.tail_from, keep);
    memset(tail + keep, 0, (size_t)span); /* a pixel starts >= 3 bytes before the end */
    switch (p->pairs) { /* 2: upscales (3 taps), 3: downscales by up to 2x (5 taps) */
    case 2: h_pixels(p, &s, d0, d1, d2, step, 2); break;
    case 3: h_pixels(p, &s, d0, d1, d2, step, 3); break;
    default: h_pixels(p, &s, d0, d1, d2, step, p->pairs); break;
    }
}

/* Rows t and t + 1 interleaved byte-wise, then zero-extended: int16 pairs for pmaddwd
 * with {k[t], k[t + 1]}. acc[0..3] (high halves) and acc[4..7] (low) hold 32 columns in
 * the lane order of the unpacks, which the packs at the end undo. */
INLINE_AVX2 void v_taps(__m256i r0, __m256i r1, __m256i kh, __m256i kl, __m256i acc[8]) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i il = _mm256_unpacklo_epi8(r0, r1), ih = _mm256_unpackhi_epi8(r0, r1);
    __m256i w[4] = {_mm256_unpacklo_epi8(il, zero), _mm256_unpackhi_epi8(il, zero),
                    _mm256_unpacklo_epi8(ih, zero), _mm256_unpackhi_epi8(ih, zero)};
    for (int i = 0; i < 4; i++) {
        acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(w[i], kh));
        acc[4 + i] = _mm256_add_epi32(acc[4 + i], _mm256_madd_epi16(w[i], kl));
    }
}

/* All 32-byte blocks of one output row; inlined per common row count (below) so that the
 * tap loop unrolls. */
INLINE_AVX2 void v_blocks(const uint8_t *rows, size_t stride, int n, int count, const int32_t *kv,
                          uint8_t *out) {
    for (int j0 = 0; j0 < n; j0 += 32) {
        int j = j0 + 32 > n ? n - 32 : j0; /* the last block overlaps the one before */
        __m256i acc[8];
        for (int i = 0; i < 4; i++) {
            acc[i] = _mm256_setzero_si256();
            acc[4 + i] = _mm256_set1_epi32(HALF);
        }
        for (int t = 0; t < count; t += 2) {
            const uint8_t *s = rows + (size_t)t * stride + j;
            __m256i r0 = load32(s), r1 = t + 1 < count ? load32(s + stride) : r0; /* r0: weight 0 */
            v_taps(r0, r1, _mm256_set1_epi32(kv[t]), _mm256_set1_epi32(kv[t + 1]), acc);
        }
        __m256i lo = _mm256_packus_epi32(finish(acc[0], acc[4]), finish(acc[1], acc[5]));
        __m256i hi = _mm256_packus_epi32(finish(acc[2], acc[6]), finish(acc[3], acc[7]));
        _mm256_storeu_si256((__m256i_u *)(void *)(out + j), _mm256_packus_epi16(lo, hi));
    }
}

AVX2 void mx8_resize_v_row_avx2(const uint8_t *rows, size_t stride, int n, int count,
                                const int32_t *kv, uint8_t *out) {
    switch (count) { /* 2-3 rows: upscales, 3-5: downscales by up to 2x */
    case 2: v_blocks(rows, stride, n, 2, kv, out); break;
    case 3: v_blocks(rows, stride, n, 3, kv, out); break;
    case 4: v_blocks(rows, stride, n, 4, kv, out); break;
    case 5: v_blocks(rows, stride, n, 5, kv, out); break;
    default: v_blocks(rows, stride, n, count, kv, out); break;
    }
}
#else
int mx8_resize_simd_available(void) { return 0; }
#endif
