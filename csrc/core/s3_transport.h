/* mx8's one S3 transport: a client is a queue of transfers driven by I/O threads, each on a
 * curl multi handle with its share of the client's connections.
 *
 * Every caller goes through it: the engine's remote reader submits ranged GETs and is told
 * when each ends (mx8_s3_submit); pack, resolve, lease logs and the engine's workers make
 * blocking calls (s3_client.h), which are submit-and-wait (mx8_s3_run). One client may be
 * shared by any number of threads: blocking calls from many threads run in parallel, up to
 * max_connections at once.
 *
 * An I/O thread signs each attempt afresh (s3_request.c), runs up to its share of transfers
 * at once (connections kept alive by the multi handle's pool), oldest queued first, and
 * retries transient failures after a capped, jittered backoff without holding up other
 * transfers. Why several I/O threads: receiving is a copy out of the kernel and another into
 * the caller's buffer; one thread doing it for 16 connections saturates a core near
 * 1 GB/s on loopback (docs/performance.md), below what a fast NIC delivers.
 *
 * Threads start on the first transfer, so a client made in a process that fork()s and used
 * only in the child works. A client used in a child after its parent started the threads
 * starts fresh ones in the child and leaks the inherited connections rather than close
 * them (a TLS close would write into the parent's sessions). */
#ifndef MX8_S3_TRANSPORT_H
#define MX8_S3_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"
#include "s3_credentials.h"
#include "s3_request.h"

typedef struct mx8_s3_client mx8_s3_client;

typedef struct {
    const char *endpoint; /* scheme://host[:port] */
    const char *region;
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL or "" when there is none */
    /* Refreshable credentials shared with other clients (the client takes a reference);
     * when set, the three keys above are ignored. */
    mx8_s3_credentials *credentials;
    int unsigned_requests; /* anonymous: no keys, no Authorization header (public buckets) */
    int requester_pays;    /* x-amz-request-payer: requester on every request */
    const char *ca_file;   /* CA bundle for https (CURLOPT_CAINFO); NULL: libcurl's built-in path */
    int virtual_host;
    /* 0 picks the default shown */
    int max_connections;        /* 16: transfers (and connections) at once, all I/O threads together */
    int io_threads;             /* 1; at most max_connections */
    long connect_timeout_ms;    /* 5000 */
    long first_byte_timeout_ms; /* 5000: the request sent, no status line yet: tried twice, then fails */
    long low_speed_time_s;      /* 20: abort a transfer slower than 1 KiB/s for this long */
    int max_attempts;           /* 6 (so up to 5 retries) */
    long backoff_base_ms;       /* 100: first retry waits a random 50-100% of this */
    long backoff_cap_ms;        /* 5000: no wait longer, Retry-After included */
} mx8_s3_options;

#define MX8_LATENCY_BUCKETS 32 /* bucket i: latencies in [2^i, 2^(i+1)) microseconds */

typedef struct {
    uint64_t requests;  /* HTTP requests sent, retries included */
    uint64_t retries;
    uint64_t transfers; /* transfers ended (succeeded or failed for good) */
    uint64_t bytes_in;  /* response body bytes of successful transfers */
    uint64_t bytes_out; /* request body bytes sent, retries included */
    uint64_t connections; /* connections opened (the rest of the requests reused one) */
    uint64_t latency_sum_ns, latency_max_ns; /* per request, from start to last byte */
    uint64_t latency_hist[MX8_LATENCY_BUCKETS];
} mx8_s3_stats;

typedef struct mx8_s3_transfer mx8_s3_transfer;
typedef void (*mx8_s3_transfer_done)(void *user, mx8_s3_transfer *t);

/* One request and its outcome. The caller fills op (mx8_s3_op_for, mx8_s3_op_range), and
 * on_done/user for mx8_s3_submit; the transfer (and everything op points to) stays put
 * until it ends. */
struct mx8_s3_transfer {
    mx8_s3_op op;
    mx8_s3_transfer_done on_done;
    void *user;
    /* the outcome, valid in on_done and after it */
    int rc;
    mx8_error err;
    mx8_s3_response resp; /* the last attempt's answer; resp.data (a growable body) is the caller's
                             to free; for a ranged GET resp.len is the bytes written into op.fixed */
    /* the transport's */
    int attempts, ended, slot;
    uint64_t not_before_ns, started_ns;
    uint64_t keys_refused_ns; /* when the server first refused this transfer's keys; 0: never */
    mx8_s3_transfer *next;
};

/* Calls curl_global_init once; not thread-safe itself (call it before starting threads). */
int mx8_s3_global_init(mx8_error *err);

int mx8_s3_client_new(const mx8_s3_options *o, mx8_s3_client **out, mx8_error *err);
/* Starts the I/O threads now rather than on the first transfer, so that a failure to start
 * them is reported here (an asynchronous owner then never sees on_done inside its submit). */
int mx8_s3_client_start(mx8_s3_client *c, mx8_error *err);
/* Joins the I/O threads; transfers not ended by then are dropped without on_done and their
 * buffers are no longer written. No blocking call may still be waiting. */
void mx8_s3_client_free(mx8_s3_client *c);
/* No new transfers or retries from now on: queued ones end at once with MX8_ERR_CLOSED (a
 * waiting blocking call returns); running ones finish by their own rules. Does not wait. */
void mx8_s3_client_stop(mx8_s3_client *c);

/* Queues t; t->on_done(t->user, t) follows exactly once, on an I/O thread with no transport
 * lock held, unless the client is freed first (or, on a client never started, its threads
 * cannot start: then inside this call). */
void mx8_s3_submit(mx8_s3_client *c, mx8_s3_transfer *t);
/* Submits t and waits for its end (t->on_done is ignored). Returns t->rc; the error is in
 * err (and t->err). */
int mx8_s3_run(mx8_s3_client *c, mx8_s3_transfer *t, mx8_error *err);

void mx8_s3_client_stats(mx8_s3_client *c, mx8_s3_stats *out);
/* The q-quantile (0..1) of the per-request latency histogram, in milliseconds (the upper
 * edge of its bucket: an estimate within a factor of 2). */
double mx8_s3_latency_quantile_ms(const mx8_s3_stats *s, double q);

#endif
