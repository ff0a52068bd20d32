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
    c.aug_seed = 99;
    c.transform = mx8_transform_random_crop(24, 32);
    c.transform.max_pixels = 1000000;
    return c;
}

typedef struct {
    uint8_t images[4 * 3 * 24 * 32];
    int64_t labels[4], ids[4];
} batch_buf;

/* Runs the whole order; returns images of every delivered sample concatenated by position,
 * and the ids delivered. Stops at the first failed batch (raise mode). */
static int run(fixture *f, const mx8_engine_config *c, const int64_t *order, size_t n, uint8_t *all,
               int64_t *ids_out, size_t *n_out, mx8_batch_info *fail) {
    mx8_error err;
    mx8_engine *e = mx8_engine_new(f->m, f->paths, order, n, c, &err);
    if (!e)
        return -1;
    batch_buf bufs[2];
    size_t got = 0;
    int failed = 0;
    for (int i = 0; i < 2; i++)
        mx8_engine_provide(e, bufs[i].images, sizeof bufs[i].images, bufs[i].labels, bufs[i].ids, NULL, &err);
    mx8_engine_start(e, &err);
    for (;;) {
        int has;
        mx8_batch_info info;
        if (mx8_engine_next(e, -1, &has, &info, &err) || !has)
            break;
        batch_buf *b = &bufs[info.batch % 2];
        if (info.failed) {
            *fail = info;
            failed = 1;
            break;
        }
        for (size_t i = 0; i < info.count; i++) {
            CHECK_INT(b->labels[i], ==, b->ids[i] % 3);
            ids_out[got] = b->ids[i];
            memcpy(all + got * sizeof b->images / 4, b->images + i * sizeof b->images / 4, sizeof b->images / 4);
            got++;
        }
        if (mx8_engine_next_to_provide(e) < mx8_engine_num_batches(e))
            mx8_engine_provide(e, b->images, sizeof b->images, b->labels, b->ids, NULL, &err);
    }
    *n_out = got;
    mx8_engine_free(e);
    return failed;
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
    mx8_engine *e = mx8_engine_new(f.m, f.paths, order, 3, &c, &err);
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
    CHECK(mx8_engine_new(f.m, f.paths, bad, 2, &c, &err) == NULL);
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
    mx8_engine *e = mx8_engine_new(f.m, f.paths, order, 40, &c, &err);
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
