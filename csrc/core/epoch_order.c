#include "epoch_order.h"

#include <stdlib.h>

#include "rng.h"

static void shuffle_range(int64_t *a, uint64_t n, mx8_rng *rng) {
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = (uint64_t)mx8_rng_range(rng, 0, (int64_t)i - 1);
        int64_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

int mx8_epoch_order(uint64_t n, uint64_t seed, int shuffle, uint64_t block, uint64_t window,
                    int64_t *out, mx8_error *err) {
    if (!shuffle) {
        for (uint64_t i = 0; i < n; i++)
            out[i] = (int64_t)i;
        return MX8_OK;
    }
    if (block == 0 || window == 0)
        return mx8_error_set(err, MX8_ERR_ARG, "shuffle block and window must be positive");
    uint64_t n_blocks = (n + block - 1) / block;
    int64_t *perm = malloc((n_blocks ? n_blocks : 1) * sizeof *perm);
    if (!perm)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an epoch order of %llu samples",
                             (unsigned long long)n);
    mx8_rng rng;
    mx8_rng_seed(&rng, seed);
    for (uint64_t b = 0; b < n_blocks; b++)
        perm[b] = (int64_t)b;
    shuffle_range(perm, n_blocks, &rng);
    uint64_t pos = 0;
    for (uint64_t b = 0; b < n_blocks; b++) {
        uint64_t first = (uint64_t)perm[b] * block;
        uint64_t last = first + block < n ? first + block : n;
        for (uint64_t id = first; id < last; id++)
            out[pos++] = (int64_t)id;
    }
    free(perm);
    /* Mix samples across each window of consecutive (already permuted) blocks. */
    uint64_t span = block * window;
    for (uint64_t start = 0; start < n; start += span)
        shuffle_range(out + start, (n - start < span ? n - start : span), &rng);
    return MX8_OK;
}
