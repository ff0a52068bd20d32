/* Epoch order: a permutation, deterministic, seed-sensitive, block-local yet mixing. */
#include <stdlib.h>
#include <string.h>

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

void test_epoch_share_slices_pads_and_drops(void) {
    mx8_error err;
    mx8_share sh;
    /* 10 ids in order, 3 ranks, batch 2: rank 1 takes 1, 4, 7 and one pad (the epoch's first id). */
    mx8_share_spec s = {.n = 10, .seed = 1, .block = 64, .window = 16, .rank = 1, .world = 3, .batch = 2,
                        .workers = 1};
    REQUIRE_OK(mx8_epoch_share(&s, &sh, &err), &err);
    CHECK_INT(sh.count, ==, 4);
    CHECK_INT(sh.padded, ==, 2);
    CHECK(sh.ids[0] == 1 && sh.ids[1] == 4 && sh.ids[2] == 7 && sh.ids[3] == 0);
    free(sh.ids);
    /* drop_last with batch 1: 3 ids a rank (0, 3, 6 for rank 0), 1 dropped; worker 1 of 2 takes
     * the rank's second batch, id 3. */
    s.drop_last = 1;
    s.rank = 0;
    s.worker = 1;
    s.workers = 2;
    s.batch = 1;
    REQUIRE_OK(mx8_epoch_share(&s, &sh, &err), &err);
    CHECK_INT(sh.dropped, ==, 1);
    CHECK_INT(sh.count, ==, 1);
    CHECK_INT(sh.ids[0], ==, 3);
    free(sh.ids);
    s.rank = 3; /* of 3 */
    CHECK_INT(mx8_epoch_share(&s, &sh, &err), ==, MX8_ERR_ARG);
}
