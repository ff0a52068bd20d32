/* Sample orders that depend only on (n, seed): the block sequence S that csrc/core/
 * epoch_deal.h deals to ranks, and pack's record order.
 *
 * Block order: the n ids cut into blocks of `block` neighbours (read locality: neighbours
 * live next to each other in a shard), the blocks permuted, each block's ids in order.
 * Epoch order: the block order with each run of `window` consecutive blocks then shuffled
 * sample by sample (mx8.pack shuffles records with block 1 and one window). */
#ifndef MX8_EPOCH_ORDER_H
#define MX8_EPOCH_ORDER_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"

/* out: n ids. Without shuffle (or with block 0), 0 .. n-1. */
void mx8_block_order(uint64_t n, uint64_t seed, int shuffle, uint64_t block, int64_t *out);

int mx8_epoch_order(uint64_t n, uint64_t seed, int shuffle, uint64_t block, uint64_t window,
                    int64_t *out, mx8_error *err);

#endif
