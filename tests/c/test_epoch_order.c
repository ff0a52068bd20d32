/* Epoch order: a permutation, deterministic, seed-sensitive, block-local yet mixing. */
#include <stdlib.h>
#include <string.h>

#include "../../csrc/core/epoch_deal.h"
#include "../../csrc/core/epoch_order.h"
#include "mx8_test.h"
#include "tests.h"

static int is_permutation(const int64_t *a, uint64_t n) {
    uint8_t *seen = calloc(n ? n : 1, 1);
    int ok = 1;
    for (uint64_t i = 0; i < n && ok; i++) {
        ok = a[i] >= 0 && (uint64_t)a[i] < n && !seen[a[i]];
        if (ok)
            seen[a[i]] = 1;
    }
    free(seen);
    return ok;
}

void test_epoch_order_permutation_and_determinism(void) {
    mx8_error err;
    uint64_t sizes[] = {0, 1, 2, 63, 64, 65, 1000, 12345};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint64_t n = sizes[k];
        int64_t *a = malloc((n + 1) * 8), *b = malloc((n + 1) * 8), *c = malloc((n + 1) * 8);
        REQUIRE_OK(mx8_epoch_order(n, 42, 1, 64, 16, a, &err), &err);
        REQUIRE_OK(mx8_epoch_order(n, 42, 1, 64, 16, b, &err), &err);
        REQUIRE_OK(mx8_epoch_order(n, 43, 1, 64, 16, c, &err), &err);
        CHECK(is_permutation(a, n));
        CHECK(memcmp(a, b, n * 8) == 0);
        if (n >= 64)
            CHECK(memcmp(a, c, n * 8) != 0);
        REQUIRE_OK(mx8_epoch_order(n, 42, 0, 64, 16, c, &err), &err);
        for (uint64_t i = 0; i < n; i++)
            if (c[i] != (int64_t)i) {
                CHECK(!"unshuffled order is not sequential");
                break;
            }
        free(a);
        free(b);
        free(c);
    }
}

void test_epoch_order_batches_mix_blocks(void) {
    /* A class-sorted dataset: 100 classes of 100 samples. Every batch of 256 of a shuffled
     * epoch must hold many classes, and each window reads only `window` blocks. */
    uint64_t n = 10000;
    int64_t *a = malloc(n * 8);
    mx8_error err;
    REQUIRE_OK(mx8_epoch_order(n, 7, 1, 64, 16, a, &err), &err);
    int min_classes = 1000;
    for (uint64_t start = 0; start + 256 <= n; start += 256) {
        uint8_t seen[100] = {0};
        int classes = 0;
        for (uint64_t i = start; i < start + 256; i++)
            if (!seen[a[i] / 100]++)
                classes++;
        if (classes < min_classes)
            min_classes = classes;
    }
    CHECK_INT(min_classes, >=, 10);
    /* locality: the first window (16 blocks of 64) covers at most 16 distinct blocks */
    uint8_t blocks[157] = {0};
    int distinct = 0;
    for (int i = 0; i < 1024; i++)
        if (!blocks[a[i] / 64]++)
            distinct++;
    CHECK_INT(distinct, <=, 16);
    free(a);
}

static int64_t *share_of(const mx8_deal_spec *s, uint64_t rank, mx8_share *sh) {
    mx8_error err;
    if (mx8_deal_share(s, rank, 0, 1, sh, &err)) {
        CHECK(!"mx8_deal_share failed");
        return NULL;
    }
    return sh->ids;
}

void test_epoch_share_slices_pads_and_drops(void) {
    mx8_error err;
    mx8_share sh;
    /* 10 ids in order, 3 ranks: 4 each (2 pads); rank 1 reads the run of neighbours 4..7. */
    mx8_deal_spec s = {.n = 10, .seed = 1, .block = 64, .piece = 1024, .world = 3, .batch = 2};
    int64_t *ids = share_of(&s, 1, &sh);
    CHECK_INT(sh.count, ==, 4);
    CHECK_INT(sh.padded, ==, 2);
    CHECK(ids && ids[0] == 4 && ids[1] == 5 && ids[2] == 6 && ids[3] == 7);
    free(sh.ids);
    free(sh.cuts);
    /* drop_last with batch 1: 3 ids a rank, 1 dropped; worker 1 of 2 takes the rank's second batch. */
    s.drop_last = 1;
    s.batch = 1;
    REQUIRE_OK(mx8_deal_share(&s, 0, 1, 2, &sh, &err), &err);
    CHECK_INT(sh.dropped, ==, 1);
    CHECK_INT(sh.count, ==, 1);
    CHECK_INT(sh.ids[0], ==, 1);
    free(sh.ids);
    free(sh.cuts);
    CHECK_INT(mx8_deal_share(&s, 3, 0, 1, &sh, &err), ==, MX8_ERR_ARG);
}

void test_epoch_deal_resumes_exactly_once(void) {
    /* 5000 shuffled ids, 4 ranks read 300 each, then 3 ranks read the rest from the progress:
     * every id once, besides the pads the second deal reports. */
    uint64_t n = 5000;
    mx8_error err;
    mx8_deal_spec a = {.n = n, .seed = 9, .shuffle = 1, .block = 64, .piece = 1024, .world = 4, .batch = 50};
    uint8_t *seen = calloc(n, 1);
    mx8_share sh;
    for (uint64_t r = 0; r < 4; r++) {
        int64_t *ids = share_of(&a, r, &sh);
        for (uint64_t i = 0; ids && i < 300; i++)
            seen[ids[i]]++;
        free(sh.ids);
        free(sh.cuts);
    }
    mx8_progress_out p;
    REQUIRE_OK(mx8_deal_after(&a, 300, &p, &err), &err);
    CHECK_INT(p.position, ==, 1200);
    mx8_deal_spec b = a;
    b.world = 3;
    b.done = (mx8_progress){p.pieces, p.n_pieces, p.top};
    uint64_t pads = 0;
    for (uint64_t r = 0; r < 3; r++) {
        int64_t *ids = share_of(&b, r, &sh);
        for (uint64_t i = 0; ids && i < sh.count; i++)
            seen[ids[i]]++;
        pads = sh.padded;
        free(sh.ids);
        free(sh.cuts);
    }
    uint64_t extra = 0, missing = 0;
    for (uint64_t i = 0; i < n; i++) {
        missing += seen[i] == 0;
        extra += seen[i] > 1 ? seen[i] - 1u : 0;
    }
    CHECK_INT(missing, ==, 0);
    CHECK_INT(extra, ==, pads);
    /* a progress with a piece wholly read is not one the deal makes */
    mx8_piece bad = {0, 10, 10};
    b.done = (mx8_progress){&bad, 1, 100};
    CHECK_INT(mx8_deal_share(&b, 0, 0, 1, &sh, &err), ==, MX8_ERR_ARG);
    free(p.pieces);
    free(seen);
}
