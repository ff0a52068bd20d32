/* The batch engine end to end on a real tar shard: order, determinism across thread
 * counts, errors in raise and skip mode, raw mode, depth limits and early stop. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../csrc/core/engine.h"
#include "../../csrc/core/tar_writer.h"
#include "mx8_test.h"
#include "test_images.h"
#include "tests.h"

#define N_SAMPLES 11
#define BAD_ID 6 /* garbage bytes */

typedef struct {
    char path[64];
    const char *paths[1];
    mx8_manifest *m;
} fixture;

/* A shard of N_SAMPLES JPEGs (sample BAD_ID is not an image) and its manifest. */
static int make_fixture(fixture *f, mx8_error *err) {
    strcpy(f->path, "/tmp/mx8-engine-XXXXXX");
    int fd = mkstemp(f->path);
    close(fd);
    f->paths[0] = f->path;
    mx8_tar_writer w;
    int rc = mx8_tar_open(&w, f->path, err);
    char *text = malloc(8192);
    size_t tl = (size_t)sprintf(text, "schema_version=0\n");
    for (int i = 0; !rc && i < N_SAMPLES; i++) {
        int iw = 80 + 7 * i, ih = 60 + 5 * i;
        uint8_t *px = malloc((size_t)iw * ih * 3);
        t_fill_photo(px, iw, ih, 3, (uint64_t)i);
        size_t len;
        uint8_t *jpg = t_encode_jpeg(px, iw, ih, T_JPEG_RGB, 90, 2, 2, 0, &len);
        if (i == BAD_ID)
            memset(jpg, 'x', len);
        char name[32];
        uint64_t off;
        sprintf(name, "c/%02d.jpg", i);
        rc = mx8_tar_add(&w, name, jpg, len, 0, &off, err);
        tl += (size_t)sprintf(text + tl, "%d\tshard.tar\t%llu\t%zu\tmx8:vision:imagefolder;label_id=%d\n", i,
                              (unsigned long long)off, len, i % 3);
        free(px);
        free(jpg);
    }
    if (!rc)
        rc = mx8_tar_finish(&w, err);
    if (!rc)
        rc = mx8_manifest_parse(text, tl, &f->m, err);
    free(text);
    return rc;
}

static void free_fixture(fixture *f) {
    mx8_manifest_free(f->m);
    unlink(f->path);
}

static mx8_engine_config config(int threads, int skip) {
    mx8_engine_config c;
    memset(&c, 0, sizeof c);
    c.threads = threads;
    c.batch_size = 4;
    c.depth = 2;
    c.skip_errors = skip;
    c.transform = mx8_transform_random_crop(24, 32);
    c.transform.max_pixels = 1000000;
    return c;
}

#define AUG_SEED 99

/* A new engine with one run queued: the order, seeded AUG_SEED. */
static mx8_engine *engine_with_order(fixture *f, const int64_t *order, size_t n, const mx8_engine_config *c,
                                     mx8_error *err) {
    mx8_engine *e = mx8_engine_new(f->m, f->paths, c, err);
    uint64_t run;
    size_t first, nb;
    if (e && mx8_engine_submit(e, order, n, NULL, 0, AUG_SEED, &run, &first, &nb, err)) {
        mx8_engine_free(e);
        return NULL;
    }
    return e;
}

typedef struct {
    uint8_t images[4 * 3 * 24 * 32];
    int64_t labels[4], ids[4];
} batch_buf;

/* Takes every batch left in the queue into bufs (depth 2), providing as it goes; appends the
 * delivered ids and images (slot by slot) at *got. Stops at a failed batch (raise mode),
 * copying its info to *fail (may be NULL) and returning -1; else returns the batches that
 * came out marked cancelled. */
static long drain(mx8_engine *e, batch_buf *bufs, int64_t *ids, uint8_t *images, size_t *got, mx8_batch_info *fail) {
    mx8_error err;
    size_t slot = sizeof bufs[0].images / 4;
    long cancelled = 0;
    for (size_t b; (b = mx8_engine_next_to_provide(e)) < mx8_engine_queued_batches(e);)
        if (mx8_engine_provide(e, bufs[b % 2].images, sizeof bufs[0].images, bufs[b % 2].labels, bufs[b % 2].ids,
                               NULL, &err))
            break; /* depth reached */
    for (;;) {
        int has;
        mx8_batch_info info;
        if (mx8_engine_next(e, -1, &has, &info, &err) || !has)
            break;
        batch_buf *b = &bufs[info.batch % 2];
        if (info.failed) {
            if (fail)
                *fail = info;
            return -1;
        }
        if (info.cancelled)
            cancelled++;
        for (size_t i = 0; !info.cancelled && i < info.count; i++, (*got)++) {
            CHECK_INT(b->labels[i], ==, b->ids[i] % 3);
            ids[*got] = b->ids[i];
            memcpy(images + *got * slot, b->images + i * slot, slot);
        }
        size_t nb = mx8_engine_next_to_provide(e);
        if (nb < mx8_engine_queued_batches(e))
            mx8_engine_provide(e, bufs[nb % 2].images, sizeof bufs[0].images, bufs[nb % 2].labels, bufs[nb % 2].ids,
                               NULL, &err);
    }
    return cancelled;
}

/* Runs the whole order on a fresh engine; returns images of every delivered sample
 * concatenated by position, and the ids delivered. Stops at the first failed batch (raise
 * mode): returns 1 with its info in *fail. */
static int run(fixture *f, const mx8_engine_config *c, const int64_t *order, size_t n, uint8_t *all,
               int64_t *ids_out, size_t *n_out, mx8_batch_info *fail) {
    mx8_error err;
    mx8_engine *e = engine_with_order(f, order, n, c, &err);
    if (!e)
        return -1;
    batch_buf bufs[2];
    *n_out = 0;
    mx8_engine_start(e, &err);
    long rc = drain(e, bufs, ids_out, all, n_out, fail);
    mx8_engine_free(e);
    return rc < 0;
}

void test_engine_order_determinism_and_skip(void) {
    fixture f;
    mx8_error err;
    REQUIRE_OK(make_fixture(&f, &err), &err);
    const int64_t order[] = {3, 0, 10, 7, 1, 2, 4, 5, 8, 9}; /* no BAD_ID */
    size_t n = sizeof order / sizeof order[0], slot = 3 * 24 * 32;
    uint8_t *one = malloc(n * slot), *three = malloc(n * slot);
    int64_t ids1[16], ids3[16];
    size_t n1, n3;
    mx8_batch_info fail;
    mx8_engine_config c1 = config(1, 0), c3 = config(3, 0);
    CHECK_INT(run(&f, &c1, order, n, one, ids1, &n1, &fail), ==, 0);
    CHECK_INT(run(&f, &c3, order, n, three, ids3, &n3, &fail), ==, 0);
    CHECK_INT(n1, ==, n);
    CHECK_INT(n3, ==, n);
    CHECK(memcmp(ids1, order, n * 8) == 0);
    CHECK(memcmp(one, three, n * slot) == 0); /* same bytes whatever the thread count */

    /* skip mode: BAD_ID is dropped from its batch, the rest keep their pixels */
    const int64_t with_bad[] = {3, 0, 10, 7, 1, 2, BAD_ID, 4, 5, 8, 9};
    uint8_t *skip = malloc(sizeof with_bad / 8 * slot);
    int64_t ids_s[16];
    size_t ns;
    mx8_engine_config cs = config(2, 1);
    CHECK_INT(run(&f, &cs, with_bad, 11, skip, ids_s, &ns, &fail), ==, 0);
    CHECK_INT(ns, ==, 10);
    CHECK(memcmp(ids_s, order, n * 8) == 0);
    CHECK(memcmp(skip, one, n * slot) == 0);

    /* raise mode: the batch holding BAD_ID reports it */
    mx8_engine_config cr = config(2, 0);
    CHECK_INT(run(&f, &cr, with_bad, 11, skip, ids_s, &ns, &fail), ==, 1);
    CHECK_INT(ns, ==, 4); /* the first batch was delivered before the failed one */
    CHECK_INT(fail.batch, ==, 1);
    CHECK_INT(fail.error.sample_id, ==, BAD_ID);
    CHECK_INT(fail.error.code, ==, MX8_ERR_DECODE);
    CHECK(strstr(fail.error.msg, "not a JPEG or PNG") != NULL);
    free(one);
    free(three);
    free(skip);
    free_fixture(&f);
}

void test_engine_raw_mode_and_limits(void) {
    fixture f;
    mx8_error err;
    REQUIRE_OK(make_fixture(&f, &err), &err);
    const int64_t order[] = {5, 2, 9};
    mx8_engine_config c = config(2, 0);
    c.output = MX8_OUTPUT_RAW;
    c.batch_size = 3;
    c.depth = 1;
    mx8_engine *e = engine_with_order(&f, order, 3, &c, &err);
    CHECK(e != NULL);
    if (!e)
        return;
    uint64_t need;
    REQUIRE_OK(mx8_engine_required_bytes(e, 0, &need, &err), &err);
    CHECK_INT(need, ==, f.m->records[5].length + f.m->records[2].length + f.m->records[9].length);
    uint8_t *data = malloc(need);
    int64_t labels[3], ids[3], offsets[4];
    CHECK_INT(mx8_engine_provide(e, data, need - 1, labels, ids, offsets, &err), ==, MX8_ERR_ARG);
    REQUIRE_OK(mx8_engine_provide(e, data, need, labels, ids, offsets, &err), &err);
    REQUIRE_OK(mx8_engine_start(e, &err), &err);
    int has;
    mx8_batch_info info;
    REQUIRE_OK(mx8_engine_next(e, -1, &has, &info, &err), &err);
    CHECK_INT(has, ==, 1);
    CHECK_INT(info.count, ==, 3);
    CHECK_INT(offsets[3], ==, (int64_t)need);
    FILE *fp = fopen(f.path, "rb");
    for (int i = 0; i < 3; i++) {
        const mx8_record *r = &f.m->records[order[i]];
        uint8_t *want = malloc(r->length);
        fseek(fp, (long)r->offset, SEEK_SET);
        CHECK_INT(fread(want, 1, r->length, fp), ==, r->length);
        CHECK(memcmp(data + offsets[i], want, r->length) == 0);
        free(want);
    }
    fclose(fp);
    REQUIRE_OK(mx8_engine_next(e, -1, &has, &info, &err), &err);
    CHECK_INT(has, ==, 0);
    mx8_engine_free(e);
    free(data);

    /* an order naming a sample that does not exist is refused up front */
    const int64_t bad[] = {0, 99};
    CHECK(engine_with_order(&f, bad, 2, &c, &err) == NULL);
    CHECK(strstr(err.msg, "order[1] = 99") != NULL);
    free_fixture(&f);
}

void test_engine_stop_with_work_pending(void) {
    fixture f;
    mx8_error err;
    REQUIRE_OK(make_fixture(&f, &err), &err);
    int64_t order[40];
    for (int i = 0; i < 40; i++)
        order[i] = i % N_SAMPLES == BAD_ID ? 0 : i % N_SAMPLES;
    mx8_engine_config c = config(3, 0);
    mx8_engine *e = engine_with_order(&f, order, 40, &c, &err);
    batch_buf bufs[2];
    for (int i = 0; i < 2; i++)
        REQUIRE_OK(mx8_engine_provide(e, bufs[i].images, sizeof bufs[i].images, bufs[i].labels, bufs[i].ids,
                                      NULL, &err), &err);
    /* depth 2: a third buffer before taking a batch is refused */
    CHECK_INT(mx8_engine_provide(e, bufs[0].images, sizeof bufs[0].images, bufs[0].labels, bufs[0].ids, NULL,
                                 &err), ==, MX8_ERR_ARG);
    REQUIRE_OK(mx8_engine_start(e, &err), &err);
    int has;
    mx8_batch_info info;
    REQUIRE_OK(mx8_engine_next(e, 10000, &has, &info, &err), &err);
    CHECK_INT(has, ==, 1);
    /* workers now wait for a buffer that never comes; stop must still join them */
    mx8_engine_stop(e, -1, NULL);
    CHECK_INT(mx8_engine_next(e, 100, &has, &info, &err), ==, MX8_ERR_CLOSED);
    mx8_engine_free(e);
    free_fixture(&f);
}

void test_engine_runs_back_to_back_and_cancel(void) {
    fixture f;
    mx8_error err;
    REQUIRE_OK(make_fixture(&f, &err), &err);
    const int64_t a[] = {3, 0, 10, 7, 1, 2, 4, 5, 8, 9}, b[] = {9, 8, 7, 5, 4, 3};
    size_t slot = 3 * 24 * 32;
    mx8_engine_config c = config(3, 0);
    /* Reference: each order alone on a fresh engine. */
    uint8_t *ref_a = malloc(10 * slot), *ref_b = malloc(6 * slot), *both = malloc(16 * slot);
    int64_t ids_a[16], ids_b[16], ids[32];
    size_t na, nb, got = 0;
    mx8_batch_info fail;
    CHECK_INT(run(&f, &c, a, 10, ref_a, ids_a, &na, &fail), ==, 0);
    CHECK_INT(run(&f, &c, b, 6, ref_b, ids_b, &nb, &fail), ==, 0);

    /* Both as two runs of one engine: b's batches follow a's (a's last batch is short), and
     * every pixel is what a fresh engine gives (the augmentation is the run's own). */
    mx8_engine *e = mx8_engine_new(f.m, f.paths, &c, &err);
    uint64_t ra, rb;
    size_t first, n_batches;
    REQUIRE_OK(mx8_engine_submit(e, a, 10, NULL, 0, AUG_SEED, &ra, &first, &n_batches, &err), &err);
    CHECK_INT(first, ==, 0);
    CHECK_INT(n_batches, ==, 3);
    REQUIRE_OK(mx8_engine_start(e, &err), &err);
    REQUIRE_OK(mx8_engine_submit(e, b, 6, NULL, 0, AUG_SEED, &rb, &first, &n_batches, &err), &err);
    CHECK_INT(first, ==, 3);
    CHECK_INT(n_batches, ==, 2);
    batch_buf bufs[2];
    CHECK_INT(drain(e, bufs, ids, both, &got, NULL), ==, 0);
    CHECK_INT(got, ==, 16);
    CHECK(memcmp(ids, a, sizeof a) == 0 && memcmp(ids + 10, b, sizeof b) == 0);
    CHECK(memcmp(both, ref_a, 10 * slot) == 0);
    CHECK(memcmp(both + 10 * slot, ref_b, 6 * slot) == 0);

    /* Cancel a run after one batch: its batches with buffers come out marked, the rest are
     * dropped from the sequence, and the run queued behind it reads normally. */
    int64_t long_order[40];
    for (int i = 0; i < 40; i++)
        long_order[i] = a[i % 10];
    uint64_t rl;
    REQUIRE_OK(mx8_engine_submit(e, long_order, 40, NULL, 0, AUG_SEED, &rl, &first, &n_batches, &err), &err);
    CHECK_INT(first, ==, 5);
    CHECK_INT(n_batches, ==, 10);
    REQUIRE_OK(mx8_engine_submit(e, b, 6, NULL, 0, AUG_SEED, &rb, &first, &n_batches, &err), &err);
    CHECK_INT(first, ==, 15);
    for (int i = 0; i < 2; i++)
        REQUIRE_OK(mx8_engine_provide(e, bufs[(5 + i) % 2].images, sizeof bufs[0].images, bufs[(5 + i) % 2].labels,
                                      bufs[(5 + i) % 2].ids, NULL, &err), &err);
    int has;
    mx8_batch_info info;
    REQUIRE_OK(mx8_engine_next(e, -1, &has, &info, &err), &err);
    CHECK_INT(info.batch, ==, 5);
    CHECK(info.run == rl && !info.cancelled);
    CHECK_INT(mx8_engine_cancel(e, rl), ==, 1); /* batch 6 has a buffer: still to come, marked */
    CHECK_INT(mx8_engine_queued_batches(e), ==, 7 + 2);
    got = 0;
    CHECK_INT(drain(e, bufs, ids, both, &got, NULL), ==, 1);
    CHECK_INT(got, ==, 6);
    CHECK(memcmp(ids, b, sizeof b) == 0);
    CHECK(memcmp(both, ref_b, 6 * slot) == 0);
    CHECK_INT(mx8_engine_cancel(e, rl), ==, 0); /* gone */
    mx8_engine_free(e);
    free(ref_a);
    free(ref_b);
    free(both);
    free_fixture(&f);
}
