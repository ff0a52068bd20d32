/* Shared by the bench tools (croprate_mx8.c, pngrate.c): a monotonic clock and a corpus of
 * files read into memory from a list (one path a line), so timing never includes disk. */
#ifndef MX8_BENCH_CORPUS_H
#define MX8_BENCH_CORPUS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    uint8_t **data;
    size_t *len;
    size_t n;
} corpus;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int read_file(const char *path, uint8_t **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int rc = -1;
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        if (sz > 0 && fseek(f, 0, SEEK_SET) == 0 && (*data = malloc((size_t)sz))) {
            *len = fread(*data, 1, (size_t)sz, f);
            rc = *len == (size_t)sz ? 0 : -1;
            if (rc) free(*data);
        }
    }
    fclose(f);
    return rc;
}

static int load(const char *list, corpus *c) {
    FILE *f = fopen(list, "r");
    if (!f) return -1;
    char path[4096];
    size_t cap = 0;
    while (fgets(path, sizeof path, f)) {
        path[strcspn(path, "\r\n")] = 0;
        if (!path[0]) continue;
        if (c->n == cap) {
            cap = cap ? cap * 2 : 256;
            uint8_t **d = realloc(c->data, cap * sizeof *d);
            size_t *l = d ? realloc(c->len, cap * sizeof *l) : NULL;
            if (d) c->data = d;
            if (!l) break;
            c->len = l;
        }
        if (read_file(path, &c->data[c->n], &c->len[c->n]) == 0) c->n++;
        else fprintf(stderr, "skipping %s\n", path);
    }
    fclose(f);
    return c->n ? 0 : -1;
}

#endif
