/* The global sample order of one epoch, a pure function of (n, seed, shuffle, block,
 * window). Ranks and DataLoader workers take slices of it (mx8/sharding.py).
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

#endif
