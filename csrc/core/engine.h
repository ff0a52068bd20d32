/* The batch engine: N native threads read manifest byte ranges and decode/transform each
 * sample straight into caller-provided batch buffers.
 *
 * An engine lives as long as its reader (a Dataset, a lease worker): its threads, decoders,
 * sample readers and S3 transport are made once, and it runs one order after another. Each
 * submitted order is a *run*: its batches follow the batches of the runs submitted before,
 * in one sequence of batch numbers (a batch never spans two runs; a run's last batch may be
 * short). Workers go from the end of one run straight into the next, so a lease worker
 * reading range after range keeps every thread busy across the boundary.
 *
 * Memory is bounded by construction: workers only touch batches whose buffers the caller
 * has provided, and the caller provides at most `depth` batches beyond the last one it
 * took. The output is deterministic: slot i of a run's batch b is order[b*batch_size + i]
 * and its augmentation depends only on (the run's aug_seed, sample_id), never on thread
 * timing or on the runs before it.
 *
 * Worker threads never call back into the caller; they record (code, sample, message) in
 * the batch and the consumer, in mx8_engine_next, reports it. One consumer at a time
 * submits, provides, cancels and takes batches (mx8/stream.py serialises them);
 * mx8_engine_stop may come from any thread. */
#ifndef MX8_ENGINE_H
#define MX8_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "image_transform.h"
#include "manifest.h"
#include "mx8_error.h"
#include "s3_client.h"
#include "s3_transport.h"

typedef enum {
    MX8_OUTPUT_DECODED = 0, /* images, 3*out_h*out_w uint8 (or float32) a slot */
    MX8_OUTPUT_RAW = 1,     /* the encoded bytes, back to back, with offsets */
} mx8_output_mode;

typedef struct {
    int threads;     /* worker threads, >= 1 */
    int batch_size;  /* >= 1 */
    int depth;       /* batches that may have buffers at once, >= 1 */
    int output;      /* mx8_output_mode */
    int skip_errors; /* 1: a failed sample is dropped from its batch and counted */
    mx8_transform transform; /* MX8_OUTPUT_DECODED only */
    int out_float;           /* 1: float32 slots, (x/255 - mean) / std per channel */
    float mean[3], std[3];   /* out_float only */
    const mx8_s3_options *s3; /* NULL: paths are local files; else "bucket/key" on S3 (must
                                 outlive the engine), read through remote_reader.h */
    uint64_t fetch_budget;    /* s3 only: fetched bytes not yet decoded; 0 = 256 MiB */
    int max_connections;      /* s3 only: connections (transfers at once); 0 = 16 */
} mx8_engine_config;

typedef struct {
    uint64_t images;      /* samples delivered */
    uint64_t bytes_read;  /* encoded bytes read */
    uint64_t errors;      /* samples that failed (raised or skipped) */
    uint64_t skipped;     /* samples dropped under skip_errors */
    uint64_t batches;     /* batches delivered */
    uint64_t read_ns;     /* summed over workers */
    uint64_t decode_ns;   /* summed over workers */
    uint64_t wait_ns;     /* consumer blocked in mx8_engine_next */
    uint64_t starve_ns;   /* workers idle for lack of a provided buffer (or of a run) */
    uint64_t reads;       /* reads issued (pread calls, or S3 ranged GETs of one or more samples) */
    uint64_t s3_requests; /* HTTP requests, retries included */
    uint64_t s3_retries;
    mx8_s3_stats s3_latency; /* the S3 client's counters and per-request latency histogram */
    uint64_t s3_held_max;          /* most bytes fetched and not yet decoded at once */
} mx8_engine_stats;

typedef struct {
    int code;          /* mx8_code */
    int64_t sample_id;
    uint32_t location;
    uint64_t offset, length;
    char msg[MX8_ERROR_MSG_LEN];
} mx8_sample_error;

typedef struct {
    size_t batch;      /* batch number (in the engine's sequence of all runs' batches) */
    uint64_t run;      /* the run it belongs to */
    size_t count;      /* samples in the delivered batch (after skips) */
    size_t skipped;    /* samples dropped from this batch */
    int failed;        /* a sample failed and skip_errors is off: see error */
    int cancelled;     /* its run was cancelled: the contents are not meaningful */
    mx8_sample_error error;
} mx8_batch_info;

typedef struct mx8_engine mx8_engine;

/* The manifest and paths must outlive the engine. */
mx8_engine *mx8_engine_new(const mx8_manifest *m, const char *const *paths, const mx8_engine_config *cfg,
                           mx8_error *err);

/* Queues an order (copied) as a run, read after the runs queued before it, with its own
 * augmentation seed. *run: its id; *first_batch and *n_batches: its batch numbers (an
 * empty order makes a run of no batches). Before or after mx8_engine_start. cuts (n_cuts
 * increasing offsets inside the order, or none) are where S3 request planning restarts:
 * mx8_remote_append. */
int mx8_engine_submit(mx8_engine *e, const int64_t *order, size_t n, const uint64_t *cuts, size_t n_cuts,
                      uint64_t aug_seed, uint64_t *run,
                      size_t *first_batch, size_t *n_batches, mx8_error *err);

/* Ends a run early: no worker starts another of its samples, its batches that have no
 * buffer yet are dropped from the sequence (later runs' batch numbers move down by as many),
 * and its batches that have buffers are still delivered by mx8_engine_next, marked
 * cancelled, once the samples already being read are done (so the caller gets every buffer
 * back through the normal path). Returns how many of its batches are still to be delivered
 * (0: the run is gone; an unknown or finished run: 0). */
size_t mx8_engine_cancel(mx8_engine *e, uint64_t run);

/* Batch numbers queued so far in all (the end of the sequence). */
size_t mx8_engine_queued_batches(mx8_engine *e);
size_t mx8_engine_batch_len(mx8_engine *e, size_t batch);
size_t mx8_engine_slot_bytes(const mx8_engine *e);
/* Number of the next batch that needs a buffer, and how many bytes it needs. */
size_t mx8_engine_next_to_provide(mx8_engine *e);
int mx8_engine_required_bytes(mx8_engine *e, size_t batch, uint64_t *nbytes, mx8_error *err);
/* Per batch of a run: its samples and their manifest byte lengths summed (a record without
 * a length, or above the 1 GiB sample limit, counts 0: a raw batch's required bytes), as
 * out[2b] and out[2b + 1]; out holds 2 * n_batches. What a pacer charges before it lets a
 * batch's reads start, and what sizes a raw batch pool. */
int mx8_engine_run_costs(mx8_engine *e, uint64_t run, int64_t *out, size_t n_batches, mx8_error *err);
/* The sample of a batch with the largest manifest byte length (-1 for an empty or unknown
 * batch): what an error about a raw batch too large to allocate names. */
int64_t mx8_engine_largest_sample(mx8_engine *e, size_t batch);

/* Gives the buffers of the next batch that has none: images (cap bytes), labels and ids
 * (batch_len int64 each) and, in raw mode, offsets (batch_len + 1 int64). Fails when
 * `depth` batches are already provided and not yet taken. */
int mx8_engine_provide(mx8_engine *e, uint8_t *images, size_t cap, int64_t *labels, int64_t *ids,
                       int64_t *offsets, mx8_error *err);

int mx8_engine_start(mx8_engine *e, mx8_error *err);

/* Waits up to timeout_ms (< 0: forever) for the next batch. *has_batch: 1 = info holds
 * the batch, 0 = every queued batch was delivered, -1 = timed out (call again; the caller
 * can check for signals in between). */
int mx8_engine_next(mx8_engine *e, int timeout_ms, int *has_batch, mx8_batch_info *info,
                    mx8_error *err);

/* The sample an abandoned worker was processing (sample_id -1: none known). */
typedef struct {
    int64_t sample_id;
    uint32_t location;
    uint64_t offset, length;
} mx8_stuck_sample;

/* Stops the threads and joins them, waiting at most wait_ms (< 0: forever); safe to call
 * twice, from two threads. Returns 0 when every thread is joined: the caller's buffers are
 * then not touched any more. Returns the number of threads still inside a sample at the
 * deadline (blocked in a read the kernel does not return from: a hung network mount) and
 * names one's sample in *stuck (may be NULL). Those threads are abandoned: detached, they
 * leave on their own when their call returns, and until then they may still write into the
 * buffers of the batches provided and not taken, and read the manifest and paths. So the
 * caller keeps all of those, and the engine, until mx8_engine_running() is 0. */
size_t mx8_engine_stop(mx8_engine *e, int wait_ms, mx8_stuck_sample *stuck);
/* Worker threads that have not returned yet (abandoned ones included). */
int mx8_engine_running(mx8_engine *e);
/* Stops (waiting forever) and frees. After an abandoning stop, only once running is 0. */
void mx8_engine_free(mx8_engine *e);
void mx8_engine_get_stats(mx8_engine *e, mx8_engine_stats *out);

#endif
