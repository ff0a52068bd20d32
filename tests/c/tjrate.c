/* The physical-limit probe of the benchmarks: a single-thread TurboJPEG loop that decodes
 * every JPEG of a list from memory into one RGB buffer, with nothing else (no crop, no
 * resize, no allocation per image). N times its rate is the ideal N-core decode that
 * scripts/bench.py holds mx8 against.
 *   make -C tests/c bench && tests/c/build/tjrate LIST [scale_denom] [reps]
 * LIST holds one JPEG path a line; scale_denom (1, 2, 4, 8) asks TurboJPEG's DCT scaling.
 * CMYK JPEGs decode to CMYK (TurboJPEG cannot make RGB of them), everything else to RGB.
 * Prints one line: images=N reps=R scale=1/D: X img/s, Y Mpix/s out, Z MB/s in, errors=E */
#include <stdio.h>
#include <stdlib.h>
#include <turbojpeg.h>

#include "bench_corpus.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s LIST [scale_denom] [reps]\n", argv[0]);
        return 2;
    }
    int denom = argc > 2 ? atoi(argv[2]) : 1;
    int reps = argc > 3 ? atoi(argv[3]) : 1;
    if (denom < 1 || reps < 1) {
        fprintf(stderr, "scale_denom and reps must be >= 1\n");
        return 2;
    }
    corpus c = {0};
    if (load(argv[1], &c) != 0) {
        fprintf(stderr, "no readable files in %s\n", argv[1]);
        return 1;
    }
    /* One output buffer sized for the largest image: the loop must not time malloc. */
    tjhandle h = tjInitDecompress();
    size_t cap = 0;
    for (size_t i = 0; i < c.n; i++) {
        int w, hh, ss, cs;
        if (tjDecompressHeader3(h, c.data[i], (unsigned long)c.len[i], &w, &hh, &ss, &cs) == 0 &&
            (size_t)w * (size_t)hh * 4 > cap)
            cap = (size_t)w * (size_t)hh * 4;
    }
    unsigned char *out = malloc(cap ? cap : 1);
    if (!h || !out) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    double px = 0, bytes = 0;
    long errors = 0;
    double t0 = now();
    for (int r = 0; r < reps; r++)
        for (size_t i = 0; i < c.n; i++) {
            int w, hh, ss, cs;
            if (tjDecompressHeader3(h, c.data[i], (unsigned long)c.len[i], &w, &hh, &ss, &cs)) {
                errors++;
                continue;
            }
            int sw = (w + denom - 1) / denom, sh = (hh + denom - 1) / denom;
            int pf = cs == TJCS_CMYK || cs == TJCS_YCCK ? TJPF_CMYK : TJPF_RGB;
            if (tjDecompress2(h, c.data[i], (unsigned long)c.len[i], out, sw, 0, sh, pf, 0))
                errors++;
            px += (double)sw * sh;
            bytes += (double)c.len[i];
        }
    double dt = now() - t0;
    printf("images=%zu reps=%d scale=1/%d: %.0f img/s, %.1f Mpix/s out, %.1f MB/s in, errors=%ld\n", c.n, reps,
           denom, (double)c.n * reps / dt, px / dt / 1e6, bytes / dt / 1e6, errors);
    tjDestroy(h);
    free(out);
    for (size_t i = 0; i < c.n; i++) free(c.data[i]);
    free(c.data);
    free(c.len);
    return 0;
}
