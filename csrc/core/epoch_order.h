/* The global sample order of one epoch, a pure function of (n, seed, shuffle, block,
 * window), and one consumer's share of it (a rank, a DataLoader worker of a rank), which
 * mx8/sharding.py asks for.
 *
 * Shuffled order: the n ids are cut into blocks of `block` neighbours (read locality:
 * neighbours live next to each other in a shard), the blocks are permuted, and then each
 * run of `window` consecutive blocks is shuffled sample by sample, so a batch draws from
 * up to `window` different blocks even when the dataset is sorted by class. */
#ifndef MX8_EPOCH_ORDER_H
#define MX8_EPOCH_ORDER_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"

int mx8_epoch_order(uint64_t n, uint64_t seed, int shuffle, uint64_t block, uint64_t window,
                    int64_t *out, mx8_error *err);

/* Who reads what of an epoch. */
typedef struct {
    uint64_t n, seed;        /* the epoch order: as mx8_epoch_order */
    int shuffle;
    uint64_t block, window;
    uint64_t start;          /* global positions already consumed (a mid-epoch resume) */
    uint64_t rank, world;    /* rank r takes positions r, r + W, ... of the rest */
    uint64_t batch;          /* batch size */
    int drop_last;           /* 1: drop the tail so every rank has whole batches; 0: pad it */
    uint64_t worker, workers; /* DataLoader workers of the rank take whole batches round-robin */
} mx8_share_spec;

typedef struct {
    int64_t *ids;     /* malloc'd: this consumer's sample ids, in order (free() it) */
    uint64_t count;
    uint64_t padded;  /* duplicates added (whole job) so every rank has as many samples */
    uint64_t dropped; /* samples left out of the epoch (whole job) */
} mx8_share;

/* Every rank gets the same number of samples, so DDP ranks take the same number of steps:
 * without drop_last the rest is padded with the epoch's first samples (cycling when the
 * epoch is shorter than the pad). After k batches of all ranks exactly the first k*B*W
 * positions of the rest are consumed, whatever W is. */
int mx8_epoch_share(const mx8_share_spec *s, mx8_share *out, mx8_error *err);

#endif
