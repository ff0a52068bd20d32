/* Ranged S3 GETs driven by one I/O thread on a curl multi handle.
 *
 * Callers queue fetches (byte range -> their buffer) from any thread; the I/O thread runs
 * at most `max_connections` transfers at once (one easy handle each, connections kept
 * alive between requests by the multi handle's pool), oldest queued first, signs each
 * attempt afresh, and retries transient failures after the same capped, jittered backoff
 * as the blocking client (s3_request.c) without holding up other transfers. When a fetch
 * ends, for good or ill, the I/O thread calls on_done (without any fetcher lock held).
 *
 * Decode threads therefore never block on the network themselves: they wait only for the
 * bytes they need next, while the I/O thread keeps up to max_connections requests ahead. */
#ifndef MX8_S3_FETCHER_H
#define MX8_S3_FETCHER_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"
#include "s3_client.h"
#include "s3_request.h"

#define MX8_LATENCY_BUCKETS 32 /* bucket i: latencies in [2^i, 2^(i+1)) microseconds */

typedef struct mx8_s3_fetch {
    /* set by the caller before submitting; the strings and dst outlive the fetch */
    const char *bucket, *key;
    uint64_t offset;
    size_t len; /* > 0 */
    uint8_t *dst;
    void *user;
    /* the result, valid in on_done and after it */
    int rc;
    mx8_error err;
    size_t received; /* bytes written to dst: len on success; fewer when the object ends
                        inside the range (rc MX8_ERR_RANGE, a short 206 from the right start) */
    /* fetcher-private */
    int attempts;
    uint64_t not_before_ns, started_ns;
    int slot;
    struct mx8_s3_fetch *next;
    mx8_s3_op op;
    mx8_s3_response resp;
} mx8_s3_fetch;

typedef void (*mx8_s3_fetch_done)(void *ud, mx8_s3_fetch *f);

typedef struct {
    uint64_t requests; /* HTTP requests, retries included */
    uint64_t retries;
    uint64_t fetches;  /* fetches ended (succeeded or failed for good) */
    uint64_t bytes;    /* body bytes of successful fetches */
    uint64_t latency_sum_ns, latency_max_ns; /* per request, from start to last byte */
    uint64_t latency_hist[MX8_LATENCY_BUCKETS];
} mx8_s3_fetch_stats;

typedef struct mx8_s3_fetcher mx8_s3_fetcher;

/* Starts the I/O thread. max_connections >= 1. */
int mx8_s3_fetcher_new(const mx8_s3_options *o, int max_connections, mx8_s3_fetch_done on_done, void *ud,
                       mx8_s3_fetcher **out, mx8_error *err);
/* Queues f; on_done(ud, f) follows exactly once unless the fetcher is freed first. */
void mx8_s3_fetcher_submit(mx8_s3_fetcher *fx, mx8_s3_fetch *f);
/* Asks the I/O thread to stop soon (no new transfers or retries); does not wait. */
void mx8_s3_fetcher_stop(mx8_s3_fetcher *fx);
/* Stops and joins the I/O thread; fetches not ended by then are dropped without on_done and
 * their buffers are no longer written. */
void mx8_s3_fetcher_free(mx8_s3_fetcher *fx);
void mx8_s3_fetcher_stats(mx8_s3_fetcher *fx, mx8_s3_fetch_stats *out);
/* The q-quantile (0..1) of the per-request latency histogram, in milliseconds (the upper
 * edge of its bucket: an estimate within a factor of 2). */
double mx8_s3_latency_quantile_ms(const mx8_s3_fetch_stats *s, double q);

#endif
