/* Who reads what of an epoch under DDP: whole pieces of neighbouring samples dealt to ranks,
 * so that on S3 a rank's requests stay multi-MB at any world size.
 *
 * The sequence S of an epoch is the n sample ids in blocks of `block` neighbours (neighbours
 * live next to each other in a shard; n / 256 in an epoch of under 256 * block samples, so
 * that a small one still has many), the blocks permuted by the seed
 * (csrc/core/epoch_order.h, mx8_block_order). A *piece* is an interval S[lo, hi) read by one rank in its
 * own shuffled order (seeded by seed, lo and hi), so a batch drawn from a piece of 16 blocks
 * mixes 16 blocks even when the dataset is sorted by class, and the piece's GETs are whole
 * blocks. What an epoch has consumed is a *progress*: the pieces partly read (how many of
 * each, in its order) and `top`, below which everything no piece holds is read and above
 * which nothing is. It depends on no world size, so a resume may use another.
 *
 * Dealing the rest of an epoch (the progress's unread tails, then S[top, n)) to W ranks:
 *  1. the tails, concatenated in piece order, dealt position by position (rank r takes r,
 *     r + W, ...): after a resume only, at most one piece per rank of the run before;
 *  2. rounds of W pieces of `piece` samples, S[top + (i*W + r) * piece, ...) to rank r, as
 *     long as every rank can take whole ones, but for the last such round;
 *  3. the remainder (a round and less) cut into one end piece per rank, sized so that every
 *     rank has the same number of samples: padded (duplicates of S's first samples, at most
 *     W - 1) or, with drop_last, cut to whole batches (the rest dropped).
 * Pads are read last, so a rank reading its pads while another has not reached the sample
 * a pad copies leaves that sample unread in the progress: a checkpoint taken then and
 * resumed reads it again, inside the resumed deal's reported padding.
 * After every rank read c samples of its share, the progress is a function of (progress,
 * W, batch, c): mx8_deal_after. Ranks read at the same rate (DDP steps), so at most one
 * round's pieces are partly read at a time and a progress holds at most W + W' pieces. */
#ifndef MX8_EPOCH_DEAL_H
#define MX8_EPOCH_DEAL_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"

typedef struct {
    uint64_t lo, hi; /* S[lo, hi), read in the piece's own order */
    uint64_t used;   /* how many of that order were read: 0 <= used < hi - lo */
} mx8_piece;

typedef struct {
    const mx8_piece *pieces; /* sorted by lo, disjoint, every hi <= top */
    size_t n_pieces;
    uint64_t top;            /* S[top, n) unread */
} mx8_progress;

typedef struct {
    uint64_t n, seed;  /* the epoch: n samples, its order seed */
    int shuffle;       /* 0: S is 0..n-1 and pieces are read in order */
    uint64_t block;    /* neighbours kept together in S (shuffle only) */
    uint64_t piece;    /* samples of a round's piece: block * blocks mixed */
    mx8_progress done; /* what was read before (a mid-epoch resume); zeroed: nothing */
    uint64_t world, batch;
    int drop_last;     /* 1: every rank gets whole batches, the rest dropped; 0: padded */
} mx8_deal_spec;

typedef struct {
    int64_t *ids;      /* malloc'd: this consumer's sample ids, in order (free() it) */
    uint64_t count;
    uint64_t *cuts;    /* malloc'd: positions in ids where another piece begins (free() it) */
    size_t n_cuts;
    uint64_t per_rank; /* samples every rank reads, pads included */
    uint64_t padded;   /* duplicates added (whole job) so every rank has as many samples */
    uint64_t dropped;  /* samples left out of the epoch (whole job) */
} mx8_share;

/* Rank `rank`'s share; DataLoader workers of the rank take its whole batches round-robin
 * (worker w: batches w, w + workers, ...), which the loader interleaves back in order. */
int mx8_deal_share(const mx8_deal_spec *s, uint64_t rank, uint64_t worker, uint64_t workers, mx8_share *out,
                   mx8_error *err);

typedef struct {
    mx8_piece *pieces; /* malloc'd (free() it) */
    size_t n_pieces;
    uint64_t top;
    uint64_t position; /* samples of the epoch read in all (pads not counted) */
} mx8_progress_out;

/* The progress once every rank has read `read` samples of its share (more than per_rank:
 * the whole share). */
int mx8_deal_after(const mx8_deal_spec *s, uint64_t read, mx8_progress_out *out, mx8_error *err);

/* MX8_ERR_ARG naming the fault when a progress is not one this module could have made for n
 * samples (a hand-edited or foreign checkpoint). */
int mx8_progress_check(const mx8_progress *p, uint64_t n, mx8_error *err);

#endif
