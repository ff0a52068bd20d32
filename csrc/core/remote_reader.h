/* The engine's reader for samples on S3: plans ranged GETs that each carry many samples,
 * fetches them ahead of the decode threads on an S3 client's transport, and hands out pointers
 * into the fetched bytes.
 *
 * Planning: each appended order is cut into windows of consecutive positions (at most `window`
 * samples and half the byte budget, ending at the order's cuts). Within a window the
 * samples are sorted by (object,
 * offset) and neighbours at most `max_gap` bytes apart are merged into one request of at
 * most `max_request` bytes. mx8's deal (csrc/core/epoch_deal.h) gives each rank whole
 * pieces of 16 blocks of 64 neighbours, read in a shuffled order and cut apart, so a
 * shuffled epoch becomes whole-block requests at any world size; a sequential epoch becomes
 * 4 MiB requests.
 *
 * Fetching: requests are issued in the order their first sample is needed, while the bytes
 * fetched and not yet released stay within `budget_bytes`. The request a decode thread is
 * waiting for is always issued, over the budget if need be (by at most one request per
 * waiting thread), so the reader can never deadlock on its own budget. A request's buffer
 * is freed when its last sample is released.
 *
 * Thread-safety: acquire/release from any number of decode threads; positions are acquired
 * roughly in increasing order (the engine hands them out in order). */
#ifndef MX8_REMOTE_READER_H
#define MX8_REMOTE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "manifest.h"
#include "mx8_error.h"
#include "s3_transport.h"

typedef struct {
    uint64_t budget_bytes;  /* fetched bytes not yet released; 0 = 256 MiB */
    uint64_t max_request;   /* bytes a request may span; 0 = 4 MiB */
    uint64_t max_gap;       /* unneeded bytes a request may carry between two samples; 0 = 64 KiB */
    size_t window;          /* positions planned together; 0 = 2048 */
    uint64_t max_sample;    /* records longer than this are not planned; 0 = 1 GiB */
} mx8_remote_config;

typedef struct {
    uint64_t fetches;  /* requests ended (succeeded or failed for good) */
    uint64_t bytes;    /* bytes of the successful ones */
    uint64_t held_max; /* high-water mark of the budget's charge: fetched, unreleased bytes */
} mx8_remote_stats;

typedef struct mx8_remote_reader mx8_remote_reader;

/* paths[loc] is "bucket/key"; manifest, paths and client must outlive the reader, and the
 * client's transfers must have ended (or the client been freed) before mx8_remote_free,
 * which frees the buffers they write into. The reader lives as long as its engine: orders
 * are appended to it one after another (epochs, lease ranges), under one byte budget. */
mx8_remote_reader *mx8_remote_new(const mx8_manifest *m, const char *const *paths, mx8_s3_client *client,
                                  const mx8_remote_config *cfg, mx8_error *err);

/* Appends an order (copied): its samples get positions *base .. *base + n - 1, after every
 * position appended before. Records without a byte length, or longer than max_sample, are
 * not planned (the caller reads them another way, or refuses them). A planning window never
 * spans two orders, nor one of the n_cuts offsets of the order (increasing, inside it): an
 * epoch's share cuts where another piece begins, so a window holds whole blocks of one piece
 * (csrc/core/epoch_deal.h), not the end of one piece's random half and another's. */
int mx8_remote_append(mx8_remote_reader *r, const int64_t *order, size_t n, const uint64_t *cuts, size_t n_cuts,
                      size_t *base, mx8_error *err);

/* An order cut short (an epoch left early, a lost lease): positions [lo, hi), none of them
 * acquired, will never be: their requests are not issued, or their buffers are given back
 * (a request in flight is dropped when it ends). Positions [held_lo, lo) are held by
 * readers that will release them: a wait for one of them ends now (MX8_ERR_CLOSED) rather
 * than when its request, queued behind the prefetch of the order's tail, completes. */
void mx8_remote_skip(mx8_remote_reader *r, size_t held_lo, size_t lo, size_t hi);

/* Waits until the bytes of the sample at position pos are fetched; *data points at its
 * record length of bytes, valid until mx8_remote_release(pos). On failure the error names
 * the request (object, byte range, HTTP status); call release all the same. MX8_ERR_CLOSED
 * after mx8_remote_stop. */
int mx8_remote_acquire(mx8_remote_reader *r, size_t pos, const uint8_t **data, mx8_error *err);
void mx8_remote_release(mx8_remote_reader *r, size_t pos);

/* Wakes every waiter with MX8_ERR_CLOSED; later acquires fail the same way. */
void mx8_remote_stop(mx8_remote_reader *r);
void mx8_remote_free(mx8_remote_reader *r);
void mx8_remote_stats_get(mx8_remote_reader *r, mx8_remote_stats *out);

#endif
