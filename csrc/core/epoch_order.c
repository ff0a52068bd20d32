#include "epoch_order.h"

#include <stdlib.h>
#include <string.h>

#include "rng.h"

static void shuffle_range(int64_t *a, uint64_t n, mx8_rng *rng) {
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = (uint64_t)mx8_rng_range(rng, 0, (int64_t)i - 1);
        int64_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* Blocks of `block` neighbours permuted by rng, samples in order within each. The block
 * numbers are permuted in place at the front of out, then spread from the back, so no block
 * overwrites one not yet placed (block i lands at i * block or later). */
static void permute_blocks(uint64_t n, uint64_t block, mx8_rng *rng, int64_t *out) {
    if (n == 0)
        return;
    if (block > n)
        block = n; /* one block: and no wrap in the count below */
    uint64_t n_blocks = n / block + (n % block != 0);
    for (uint64_t b = 0; b < n_blocks; b++)
        out[b] = (int64_t)b;
    shuffle_range(out, n_blocks, rng);
    /* Every block is full but the last one (id n_blocks - 1): the blocks after it in the
     * permutation start that much earlier. */
    uint64_t short_len = n - (n_blocks - 1) * block, where = 0;
    for (uint64_t i = 0; i < n_blocks; i++)
        if ((uint64_t)out[i] == n_blocks - 1)
            where = i;
    for (uint64_t i = n_blocks; i-- > 0;) {
        uint64_t b = (uint64_t)out[i], pos = i * block - (i > where ? block - short_len : 0);
        uint64_t len = b == n_blocks - 1 ? short_len : block;
        for (uint64_t j = len; j-- > 0;)
            out[pos + j] = (int64_t)(b * block + j);
    }
}

void mx8_block_order(uint64_t n, uint64_t seed, int shuffle, uint64_t block, int64_t *out) {
    if (!shuffle || block == 0) {
        for (uint64_t i = 0; i < n; i++)
            out[i] = (int64_t)i;
        return;
    }
    mx8_rng rng;
    mx8_rng_seed(&rng, seed);
    permute_blocks(n, block, &rng, out);
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
    mx8_rng rng;
    mx8_rng_seed(&rng, seed);
    permute_blocks(n, block, &rng, out);
    /* Mix samples across each window of consecutive (already permuted) blocks. */
    uint64_t span = window > n / block ? n : block * window; /* no wrap for absurd block or window */
    for (uint64_t start = 0; start < n; start += span)
        shuffle_range(out + start, (n - start < span ? n - start : span), &rng);
    return MX8_OK;
}
