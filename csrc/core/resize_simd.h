/* AVX2 inner loops of the resampler (resize.c), bit-identical to its portable int32 loops.
 *
 * Why exact with 16-bit multiplies: each 22-bit coefficient k (0 <= k <= 2^22) is split
 * as k = kh * 2^11 + kl with kh <= 2048 and kl < 2048, both int16. With pixels widened to
 * int16, _mm256_madd_epi16 sums two taps per 32-bit lane for each half, and
 * (sum p*kh << 11) + sum p*kl + 2^21 is exactly Pillow's int32 accumulator (no step can
 * overflow: it stays below 2^31 like Pillow's own). pmaddwd is one uop for 8 products
 * where pmulld is two for 4, and the pixels stay u8 in memory (widened in registers). */
#ifndef MX8_RESIZE_SIMD_H
#define MX8_RESIZE_SIMD_H

#include <stddef.h>
#include <stdint.h>

/* -DMX8_RESIZE_SIMD=0 leaves the kernels out (what other architectures get). */
#ifndef MX8_RESIZE_SIMD
#if defined(__x86_64__) && defined(__GNUC__)
#define MX8_RESIZE_SIMD 1
#else
#define MX8_RESIZE_SIMD 0
#endif
#endif

/* Non-zero when this CPU runs the kernels below (always 0 without MX8_RESIZE_SIMD). */
int mx8_resize_simd_available(void);

/* Horizontal layout, built once per plan: for each pair of output pixels (x, x + 1) and
 * each pair of taps, 64 bytes of int16 coefficients as the kernel multiplies them. */
typedef struct {
    int out_w, pairs; /* output pixels; tap pairs per pixel, ceil(taps / 2) */
    const int16_t *k; /* [ceil(out_w / 8) * 4][pairs][32] */
    const int32_t *off; /* [npad] byte offset of each pixel's first tap, npad = out_w rounded
                           up to 8; then [npad / 8] the largest offset of each 8 pixels */
} mx8_hk;

/* Bytes of k and of off for out_w pixels of `taps` taps. */
size_t mx8_hk_k_bytes(int out_w, int taps);
size_t mx8_hk_off_bytes(int out_w);

/* Fills k and off from the plan's int32 coefficients (k32[x * taps + t], every pixel
 * exactly taps wide) and first taps (pos[2 * x], relative to lo). */
void mx8_hk_build(const int32_t *k32, const int *pos, int lo, int out_w, int taps, int16_t *k,
                  int32_t *off);

/* Packs int32 coefficients of n taps as ceil(n / 2) x {kh pair, kl pair} dwords. */
void mx8_vk_build(const int32_t *k32, int n, int32_t *out);

#if MX8_RESIZE_SIMD
/* One row: row holds nbytes of RGB from input column lo; pixel x goes to d[c][x * step]
 * (step 1: three planes, 3: interleaved). tail: scratch of at least 12 * pairs + 48
 * bytes (the last pixels read a zero-padded copy so that no load passes the row). */
void mx8_resize_h_row_avx2(const mx8_hk *p, const uint8_t *row, int nbytes, uint8_t *tail,
                           uint8_t *d0, uint8_t *d1, uint8_t *d2, int step);

/* n >= 32 output bytes from `count` rows stride apart, coefficients from mx8_vk_build. */
void mx8_resize_v_row_avx2(const uint8_t *rows, size_t stride, int n, int count,
                           const int32_t *kv, uint8_t *out);
#endif

#endif
