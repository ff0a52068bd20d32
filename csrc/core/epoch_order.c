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

int mx8_epoch_share(const mx8_share_spec *s, mx8_share *out, mx8_error *err) {
    memset(out, 0, sizeof *out);
    if (s->world < 1 || s->rank >= s->world || s->batch < 1 || s->workers < 1 || s->worker >= s->workers)
        return mx8_error_set(err, MX8_ERR_ARG, "bad share: rank %llu of %llu, worker %llu of %llu, batch %llu",
                             (unsigned long long)s->rank, (unsigned long long)s->world,
                             (unsigned long long)s->worker, (unsigned long long)s->workers,
                             (unsigned long long)s->batch);
    if (s->n > SIZE_MAX / sizeof(int64_t))
        return mx8_error_set(err, MX8_ERR_NOMEM, "an epoch of %llu samples", (unsigned long long)s->n);
    int64_t *order = malloc((s->n ? s->n : 1) * sizeof *order);
    if (!order)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an epoch order of %llu samples",
                             (unsigned long long)s->n);
    int rc = mx8_epoch_order(s->n, s->seed, s->shuffle, s->block, s->window, order, err);
    if (rc) {
        free(order);
        return rc;
    }
    uint64_t first = s->start < s->n ? s->start : s->n, m = s->n - first, per_rank;
    if (s->drop_last) {
        per_rank = m / s->world / s->batch * s->batch;
        out->dropped = m - per_rank * s->world;
    } else {
        per_rank = (m + s->world - 1) / s->world;
        out->padded = per_rank * s->world - m;
    }
    /* This worker's batches of the rank's per_rank positions: j, j + workers, ... */
    uint64_t n_batches = (per_rank + s->batch - 1) / s->batch, count = 0;
    for (uint64_t j = s->worker; j < n_batches; j += s->workers)
        count += (j + 1) * s->batch <= per_rank ? s->batch : per_rank - j * s->batch;
    out->ids = malloc((count ? count : 1) * sizeof *out->ids);
    if (!out->ids) {
        free(order);
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a share of %llu samples",
                             (unsigned long long)count);
    }
    for (uint64_t j = s->worker, k = 0; j < n_batches; j += s->workers)
        for (uint64_t p = j * s->batch; p < (j + 1) * s->batch && p < per_rank; p++) {
            uint64_t g = p * s->world + s->rank; /* position in the rest, past its end: the pad */
            out->ids[k++] = g < m ? order[first + g] : order[(g - m) % s->n];
        }
    out->count = count;
    free(order);
    return MX8_OK;
}
