#include "engine.h"

#include "checked_math.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "normalize.h"
#include "remote_reader.h"
#include "rng.h"
#include "sample_reader.h"

/* A single encoded sample above this is refused instead of allocated. */
#define MAX_SAMPLE_BYTES ((uint64_t)1 << 30)
/* A worker keeps at most this much scratch between samples: an outlier (a 100-Mpixel image, a
 * 500 MB sample) gives its buffers back after use instead of pinning them. Typical photos
 * need a few MB; images above ~10 Mpixels then pay one allocation per sample (~2% of their
 * decode time). */
#define KEEP_READ_SCRATCH ((size_t)16 << 20)
#define KEEP_DECODE_SCRATCH ((size_t)64 << 20)

/* A submitted order. Its positions are claimed in order; its batches are numbers
 * [batch0, batch0 + n_batches) of the engine's sequence. Freed once its last batch is
 * delivered, or by a cancel that leaves none of its batches to deliver (either way every
 * sample of it is done: no worker holds it). */
typedef struct run {
    uint64_t id;
    int64_t *order;
    size_t n;           /* positions */
    size_t claimed;     /* positions handed to workers (or skipped by a cancel) */
    size_t batch0, n_batches;
    size_t remote_base; /* S3: the remote reader's position of order[0] */
    uint64_t aug_seed;
    int cancelled;
    struct run *next;
} run_t;

typedef struct {
    /* set by provide, read by workers after they claim a position of this batch */
    uint8_t *images;
    size_t cap;
    int64_t *labels, *ids, *offsets;
    run_t *run;               /* the batch's run, and its batch number within it */
    size_t local;
    /* guarded by engine.mu */
    size_t batch, len, done;  /* batch number, samples, samples done */
    int has_error;            /* first failure of this batch is in error */
    int cancelled;            /* its run was cancelled while it had a buffer */
    mx8_sample_error error;
    uint8_t *failed;          /* per position: 1 = skipped (engine-owned, batch_size bytes) */
    size_t n_failed;
} slot_t;

typedef struct {
    mx8_engine *e;
    pthread_t tid;
    int started;              /* joinable: started and neither joined nor abandoned */
    int abandoned;            /* detached by a stop that timed out; its resources wait for free */
    _Atomic int64_t busy_id;  /* the sample being processed, or -1 */
    mx8_decoder *dec;
    mx8_sample_reader reader;
    uint8_t *scratch;
    size_t scratch_cap;
    uint8_t *u8_slot; /* out_float: the uint8 image before normalisation */
} worker_t;

struct mx8_engine {
    const mx8_manifest *m;
    const char *const *paths;
    size_t slot_bytes;
    mx8_engine_config cfg;
    mx8_normalize norm;

    pthread_mutex_t mu;
    pthread_mutex_t join_mu; /* held while joining the workers: stop may come from two threads */
    pthread_cond_t work_cv;  /* a buffer was provided, a run submitted, or stop */
    pthread_cond_t ready_cv; /* a batch completed, or stop */
    run_t *runs, *runs_tail; /* runs not yet wholly delivered, in order */
    run_t *cursor;           /* the run whose positions are being claimed (NULL: none yet) */
    uint64_t next_run_id;
    size_t queued;           /* batch numbers queued in all */
    size_t provided;         /* batches with buffers */
    size_t delivered;        /* batches handed to the consumer */
    int stop, started;
    slot_t *slots;           /* depth of them; batch b lives in slots[b % depth] */
    worker_t *workers;
    /* S3 sources: one client (its I/O threads and connections) and one remote reader for the
     * engine's whole life. The reader fetches requests of many samples each ahead of the
     * workers; records without a byte length are read by the workers' blocking calls on the
     * same client. */
    mx8_s3_client *s3;
    mx8_remote_reader *remote;

    /* Worker threads that have not yet returned: a stop that times out abandons the ones still
     * blocked (a read the kernel does not return from), and nothing may be freed until their
     * call returns and they leave. Each worker's decrement is its last access to the engine. */
    _Atomic int running;

    _Atomic uint64_t images, bytes_read, errors, skipped, batches, reads;
    _Atomic uint64_t read_ns, decode_ns, wait_ns, starve_ns;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t sample_seed(uint64_t aug_seed, int64_t id) {
    mx8_rng r;
    mx8_rng_seed(&r, aug_seed ^ ((uint64_t)id * 0xD1B54A32D192ED03ULL));
    return mx8_rng_next(&r);
}

size_t mx8_engine_slot_bytes(const mx8_engine *e) { return e->slot_bytes; }

static size_t locked_size(mx8_engine *e, const size_t *field) {
    pthread_mutex_lock(&e->mu);
    size_t v = *field;
    pthread_mutex_unlock(&e->mu);
    return v;
}

size_t mx8_engine_next_to_provide(mx8_engine *e) { return locked_size(e, &e->provided); }
size_t mx8_engine_queued_batches(mx8_engine *e) { return locked_size(e, &e->queued); }

/* The run batch number b belongs to (NULL: none queued). e->mu held. */
static run_t *run_of_batch(const mx8_engine *e, size_t b) {
    for (run_t *r = e->runs; r; r = r->next)
        if (b >= r->batch0 && b < r->batch0 + r->n_batches)
            return r;
    return NULL;
}

/* The queued run with this id (NULL: none). e->mu held. */
static run_t *run_by_id(const mx8_engine *e, uint64_t run) {
    run_t *r = e->runs;
    while (r && r->id != run)
        r = r->next;
    return r;
}

static size_t run_batch_len(const mx8_engine *e, const run_t *r, size_t local) {
    size_t first = local * (size_t)e->cfg.batch_size;
    if (first >= r->n)
        return 0;
    size_t left = r->n - first;
    return left < (size_t)e->cfg.batch_size ? left : (size_t)e->cfg.batch_size;
}

size_t mx8_engine_batch_len(mx8_engine *e, size_t batch) {
    pthread_mutex_lock(&e->mu);
    const run_t *r = run_of_batch(e, batch);
    size_t n = r ? run_batch_len(e, r, batch - r->batch0) : 0;
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* The bytes sample i of a run's batch takes raw: its manifest length, or 0 for one above the
 * sample limit (sample_len refuses it before any read). So no manifest, however hostile, can
 * make a raw batch's size or its offsets wrap: each term is at most 1 GiB. */
static uint64_t raw_sample_bytes(const mx8_engine *e, const run_t *r, size_t local, size_t i) {
    uint64_t len = e->m->records[r->order[local * (size_t)e->cfg.batch_size + i]].length;
    return len > MAX_SAMPLE_BYTES ? 0 : len;
}

/* e->mu held. */
static int run_required_bytes(const mx8_engine *e, const run_t *r, size_t local, uint64_t *nbytes,
                              mx8_error *err) {
    size_t n = run_batch_len(e, r, local);
    uint64_t total;
    if (e->cfg.output == MX8_OUTPUT_DECODED) {
        if (!mx8_mul_u64(n, e->slot_bytes, &total))
            return mx8_error_set(err, MX8_ERR_TOO_LARGE, "batch %zu: %zu images of %zu bytes overflow",
                                 r->batch0 + local, n, e->slot_bytes);
    } else {
        total = 0;
        for (size_t i = 0; i < n; i++)
            if (!mx8_add_u64(total, raw_sample_bytes(e, r, local, i), &total))
                return mx8_error_set(err, MX8_ERR_TOO_LARGE, "batch %zu: sample byte lengths overflow",
                                     r->batch0 + local);
    }
    *nbytes = total;
    return MX8_OK;
}

int mx8_engine_required_bytes(mx8_engine *e, size_t batch, uint64_t *nbytes, mx8_error *err) {
    pthread_mutex_lock(&e->mu);
    const run_t *r = run_of_batch(e, batch);
    int rc = r ? run_required_bytes(e, r, batch - r->batch0, nbytes, err)
               : mx8_error_set(err, MX8_ERR_ARG, "batch %zu is not queued", batch);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int mx8_engine_run_costs(mx8_engine *e, uint64_t run, int64_t *out, size_t n_batches, mx8_error *err) {
    int rc = MX8_OK;
    pthread_mutex_lock(&e->mu);
    const run_t *r = run_by_id(e, run);
    if (!r || r->n_batches != n_batches)
        rc = mx8_error_set(err, MX8_ERR_ARG, "run %llu is not queued with %zu batches", (unsigned long long)run,
                           n_batches);
    for (size_t b = 0; !rc && b < n_batches; b++) {
        size_t n = run_batch_len(e, r, b);
        int64_t bytes = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t len = e->m->records[r->order[b * (size_t)e->cfg.batch_size + i]].length;
            bytes += len == MX8_LENGTH_WHOLE || len > MAX_SAMPLE_BYTES ? 0 : (int64_t)len;
        }
        out[2 * b] = (int64_t)n;
        out[2 * b + 1] = bytes;
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int64_t mx8_engine_largest_sample(mx8_engine *e, size_t batch) {
    pthread_mutex_lock(&e->mu);
    const run_t *r = run_of_batch(e, batch);
    int64_t best = -1;
    if (r) {
        size_t local = batch - r->batch0, n = run_batch_len(e, r, local);
        for (size_t i = 0; i < n; i++) {
            int64_t id = r->order[local * (size_t)e->cfg.batch_size + i];
            if (best < 0 || e->m->records[id].length > e->m->records[best].length)
                best = id;
        }
    }
    pthread_mutex_unlock(&e->mu);
    return best;
}

static int check_config(const mx8_engine_config *c, mx8_error *err) {
    if (c->threads < 1 || c->batch_size < 1 || c->depth < 1)
        return mx8_error_set(err, MX8_ERR_ARG, "threads, batch_size and depth must be >= 1");
    if (c->output == MX8_OUTPUT_DECODED &&
        (c->transform.out_h <= 0 || c->transform.out_w <= 0 || c->transform.out_h > 65535 ||
         c->transform.out_w > 65535))
        return mx8_error_set(err, MX8_ERR_ARG, "output size %dx%d is out of range",
                             c->transform.out_h, c->transform.out_w);
    for (int ch = 0; c->out_float && ch < 3; ch++)
        if (!(c->std[ch] > 0))
            return mx8_error_set(err, MX8_ERR_ARG, "std[%d] must be positive", ch);
    return MX8_OK;
}

static int check_order(const mx8_engine *e, const int64_t *order, size_t n, mx8_error *err) {
    const mx8_manifest *m = e->m;
    for (size_t i = 0; i < n; i++) {
        if (order[i] < 0 || (uint64_t)order[i] >= m->n_records)
            return mx8_error_set(err, MX8_ERR_ARG, "order[%zu] = %lld is not a sample id (0..%zu)", i,
                                 (long long)order[i], m->n_records - 1);
        if (e->cfg.output == MX8_OUTPUT_RAW && m->records[order[i]].length == MX8_LENGTH_WHOLE)
            return mx8_error_set(err, MX8_ERR_ARG,
                                 "raw batches need byte lengths, and sample %lld has none in the manifest",
                                 (long long)order[i]);
    }
    return MX8_OK;
}

mx8_engine *mx8_engine_new(const mx8_manifest *m, const char *const *paths, const mx8_engine_config *cfg,
                           mx8_error *err) {
    if (check_config(cfg, err))
        return NULL;
    mx8_engine *e = calloc(1, sizeof *e);
    if (!e) {
        mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an engine");
        return NULL;
    }
    /* First, so mx8_engine_free may stop and destroy them on any path below. */
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->join_mu, NULL);
    pthread_cond_init(&e->work_cv, NULL);
    pthread_cond_init(&e->ready_cv, NULL);
    e->m = m;
    e->paths = paths;
    e->cfg = *cfg;
    e->slot_bytes = 3 * (size_t)cfg->transform.out_h * (size_t)cfg->transform.out_w * (cfg->out_float ? 4 : 1);
    if (cfg->out_float)
        mx8_normalize_init(&e->norm, cfg->mean, cfg->std);
    e->slots = calloc((size_t)cfg->depth, sizeof *e->slots);
    e->workers = calloc((size_t)cfg->threads, sizeof *e->workers);
    int ok = e->slots && e->workers;
    for (int s = 0; ok && s < cfg->depth; s++)
        ok = (e->slots[s].failed = calloc((size_t)cfg->batch_size, 1)) != NULL;
    if (!ok) {
        mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an engine");
        mx8_engine_free(e);
        return NULL;
    }
    if (cfg->s3) {
        mx8_s3_options o = *cfg->s3;
        if (cfg->max_connections)
            o.max_connections = cfg->max_connections;
        mx8_remote_config rc_cfg = {.budget_bytes = cfg->fetch_budget, .max_sample = MAX_SAMPLE_BYTES};
        if (mx8_s3_client_new(&o, &e->s3, err) || !(e->remote = mx8_remote_new(m, paths, e->s3, &rc_cfg, err))) {
            mx8_engine_free(e);
            return NULL;
        }
    }
    return e;
}

int mx8_engine_submit(mx8_engine *e, const int64_t *order, size_t n, const uint64_t *cuts, size_t n_cuts,
                      uint64_t aug_seed, uint64_t *run,
                      size_t *first_batch, size_t *n_batches, mx8_error *err) {
    int rc = check_order(e, order, n, err);
    if (rc)
        return rc;
    run_t *r = calloc(1, sizeof *r);
    if (r && !(r->order = malloc((n ? n : 1) * sizeof *order))) {
        free(r);
        r = NULL;
    }
    if (!r)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an order of %zu samples", n);
    if (n)
        memcpy(r->order, order, n * sizeof *order);
    r->n = n;
    r->aug_seed = aug_seed;
    r->n_batches = (n + (size_t)e->cfg.batch_size - 1) / (size_t)e->cfg.batch_size;
    if (e->remote && (rc = mx8_remote_append(e->remote, order, n, cuts, n_cuts, &r->remote_base, err))) {
        free(r->order);
        free(r);
        return rc;
    }
    pthread_mutex_lock(&e->mu);
    r->id = ++e->next_run_id;
    r->batch0 = e->queued;
    *run = r->id;
    *first_batch = r->batch0;
    *n_batches = r->n_batches;
    if (!r->n_batches) { /* nothing to read: never queued */
        pthread_mutex_unlock(&e->mu);
        free(r->order);
        free(r);
        return MX8_OK;
    }
    e->queued += r->n_batches;
    if (e->runs_tail)
        e->runs_tail->next = r;
    else
        e->runs = r;
    e->runs_tail = r;
    if (!e->cursor)
        e->cursor = r;
    pthread_cond_broadcast(&e->work_cv);
    pthread_mutex_unlock(&e->mu);
    return MX8_OK;
}

static slot_t *slot_for(mx8_engine *e, size_t batch) { return &e->slots[batch % (size_t)e->cfg.depth]; }

/* Unlinks and frees run r. e->mu held; every batch of r was delivered (or none had a buffer). */
static void run_free(mx8_engine *e, run_t *r) {
    run_t **link = &e->runs, *prev = NULL;
    while (*link != r) {
        prev = *link;
        link = &(*link)->next;
    }
    *link = r->next;
    if (e->runs_tail == r)
        e->runs_tail = prev;
    if (e->cursor == r)
        e->cursor = r->next;
    free(r->order);
    free(r);
}

size_t mx8_engine_cancel(mx8_engine *e, uint64_t run) {
    size_t bs = (size_t)e->cfg.batch_size;
    pthread_mutex_lock(&e->mu);
    run_t *r = run_by_id(e, run);
    if (!r || r->cancelled) {
        size_t left = r ? r->batch0 + r->n_batches - e->delivered : 0;
        pthread_mutex_unlock(&e->mu);
        return left;
    }
    r->cancelled = 1;
    /* Batches with buffers keep their numbers and are delivered, marked; the rest go. */
    size_t keep = e->provided > r->batch0 ? e->provided - r->batch0 : 0;
    if (keep > r->n_batches)
        keep = r->n_batches;
    size_t drop = r->n_batches - keep;
    for (run_t *later = r->next; later; later = later->next)
        later->batch0 -= drop;
    e->queued -= drop;
    r->n_batches = keep;
    /* Unclaimed positions of the batches kept count as done, unread. */
    for (size_t b = r->batch0 + (r->claimed / bs); b < r->batch0 + keep; b++) {
        slot_t *s = slot_for(e, b);
        size_t lo = (b - r->batch0) * bs, hi = lo + s->len;
        if (r->claimed > lo)
            lo = r->claimed;
        s->done += hi > lo ? hi - lo : 0;
    }
    for (size_t b = e->delivered > r->batch0 ? e->delivered : r->batch0; b < r->batch0 + keep; b++)
        slot_for(e, b)->cancelled = 1;
    size_t skip_from = r->claimed;
    r->claimed = r->n;
    if (e->remote) /* positions below skip_from are held by workers: their waits end now */
        mx8_remote_skip(e->remote, r->remote_base, r->remote_base + skip_from, r->remote_base + r->n);
    size_t end = r->batch0 + keep, left = end > e->delivered ? end - e->delivered : 0;
    if (!left) /* nothing of it left in flight */
        run_free(e, r);
    pthread_cond_broadcast(&e->ready_cv);
    pthread_mutex_unlock(&e->mu);
    return left;
}

int mx8_engine_provide(mx8_engine *e, uint8_t *images, size_t cap, int64_t *labels, int64_t *ids,
                       int64_t *offsets, mx8_error *err) {
    pthread_mutex_lock(&e->mu);
    size_t b = e->provided;
    run_t *r = run_of_batch(e, b);
    int rc = MX8_OK;
    uint64_t need = 0;
    if (!r)
        rc = mx8_error_set(err, MX8_ERR_ARG, "all %zu queued batches already have buffers", e->queued);
    else if (b >= e->delivered + (size_t)e->cfg.depth)
        rc = mx8_error_set(err, MX8_ERR_ARG, "depth %d reached: take a batch before providing more",
                           e->cfg.depth);
    else if ((rc = run_required_bytes(e, r, b - r->batch0, &need, err)) == MX8_OK && cap < need)
        rc = mx8_error_set(err, MX8_ERR_ARG, "batch %zu needs %llu bytes, buffer has %zu", b,
                           (unsigned long long)need, cap);
    else if (e->cfg.output == MX8_OUTPUT_RAW && !offsets)
        rc = mx8_error_set(err, MX8_ERR_ARG, "raw batches need an offsets buffer");
    if (rc) {
        pthread_mutex_unlock(&e->mu);
        return rc;
    }
    slot_t *s = slot_for(e, b);
    size_t local = b - r->batch0, n = run_batch_len(e, r, local);
    s->images = images;
    s->cap = cap;
    s->labels = labels;
    s->ids = ids;
    s->offsets = offsets;
    s->run = r;
    s->local = local;
    s->batch = b;
    s->len = n;
    s->done = 0;
    s->has_error = 0;
    s->cancelled = 0;
    s->n_failed = 0;
    memset(s->failed, 0, (size_t)e->cfg.batch_size);
    if (offsets) {
        uint64_t off = 0; /* <= need, checked above */
        for (size_t i = 0; i < n; i++) {
            offsets[i] = (int64_t)off;
            off += raw_sample_bytes(e, r, local, i);
        }
        offsets[n] = (int64_t)off;
    }
    e->provided++;
    pthread_cond_broadcast(&e->work_cv);
    pthread_mutex_unlock(&e->mu);
    return MX8_OK;
}

static int ensure_scratch(worker_t *w, uint64_t len, mx8_error *err) {
    if (len <= w->scratch_cap)
        return MX8_OK;
    size_t cap = w->scratch_cap ? w->scratch_cap : 1 << 16;
    while (cap < len)
        cap *= 2;
    uint8_t *p = realloc(w->scratch, cap);
    if (!p)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a %llu-byte sample",
                             (unsigned long long)len);
    w->scratch = p;
    w->scratch_cap = cap;
    return MX8_OK;
}

/* The sample's byte length; records without one span to the end of their object. */
static int sample_len(worker_t *w, const mx8_record *r, uint64_t *len, mx8_error *err) {
    *len = r->length;
    if (*len == MX8_LENGTH_WHOLE) {
        uint64_t size;
        int rc = mx8_sample_reader_size(&w->reader, r->location, &size, err);
        if (rc)
            return rc;
        *len = size > r->offset ? size - r->offset : 0;
    }
    if (*len > MAX_SAMPLE_BYTES)
        return mx8_error_set(err, MX8_ERR_TOO_LARGE, "sample is %llu bytes, above the 1 GiB limit",
                             (unsigned long long)*len);
    return MX8_OK;
}

static int timed_read(worker_t *w, uint32_t loc, uint64_t off, uint64_t len, uint8_t *dst, mx8_error *err) {
    uint64_t t0 = now_ns();
    int rc = mx8_sample_reader_read(&w->reader, loc, off, len, dst, err);
    atomic_fetch_add(&w->e->read_ns, now_ns() - t0);
    atomic_fetch_add(&w->e->reads, 1);
    if (!rc)
        atomic_fetch_add(&w->e->bytes_read, len);
    return rc;
}

/* Turns a sample's encoded bytes into its slot: a copy for raw batches, else decode +
 * transform (+ normalisation). */
static int consume(worker_t *w, slot_t *s, size_t i, int64_t id, const uint8_t *data, uint64_t len,
                   mx8_error *err) {
    mx8_engine *e = w->e;
    if (e->cfg.output == MX8_OUTPUT_RAW) {
        if (data != s->images + s->offsets[i])
            memcpy(s->images + s->offsets[i], data, (size_t)len);
        return MX8_OK;
    }
    uint64_t t0 = now_ns();
    uint8_t *slot = s->images + i * e->slot_bytes;
    const mx8_transform *t = &e->cfg.transform;
    int rc = mx8_decode_transform(w->dec, data, (size_t)len, t, sample_seed(s->run->aug_seed, id),
                                  e->cfg.out_float ? w->u8_slot : slot, err);
    if (!rc && e->cfg.out_float)
        mx8_normalize_run(&e->norm, w->u8_slot, (float *)slot, (size_t)t->out_h, (size_t)t->out_w, t->layout);
    atomic_fetch_add(&e->decode_ns, now_ns() - t0);
    return rc;
}

/* A sample of a remote source: its bytes come from a request the remote reader fetched
 * ahead (usually with many neighbours). pos: the position in the slot's run. */
static int process_remote(worker_t *w, slot_t *s, size_t i, size_t pos, mx8_error *err) {
    mx8_engine *e = w->e;
    int64_t id = s->run->order[pos];
    const mx8_record *r = &e->m->records[id];
    const uint8_t *data;
    uint64_t t0 = now_ns();
    size_t rpos = s->run->remote_base + pos;
    int rc = mx8_remote_acquire(e->remote, rpos, &data, err);
    atomic_fetch_add(&e->read_ns, now_ns() - t0);
    if (!rc)
        rc = consume(w, s, i, id, data, r->length, err);
    mx8_remote_release(e->remote, rpos);
    return rc;
}

/* Reads and decodes the sample at position pos of the slot's run into slot index i. Runs
 * without the engine lock. */
static int process(worker_t *w, slot_t *s, size_t i, size_t pos, mx8_error *err) {
    mx8_engine *e = w->e;
    int64_t id = s->run->order[pos];
    const mx8_record *r = &e->m->records[id];
    s->ids[i] = id;
    s->labels[i] = r->label;
    uint64_t len;
    int rc = sample_len(w, r, &len, err); /* refuses oversized samples before any read */
    if (rc)
        return rc;
    if (e->remote && r->length != MX8_LENGTH_WHOLE)
        return process_remote(w, s, i, pos, err);
    /* Raw batches read straight into the batch; decoding reads into the worker's scratch. */
    uint8_t *dst = e->cfg.output == MX8_OUTPUT_RAW ? s->images + s->offsets[i] : NULL;
    if (!dst && (rc = ensure_scratch(w, len, err)))
        return rc;
    if (!dst)
        dst = w->scratch;
    rc = timed_read(w, r->location, r->offset, len, dst, err);
    return rc ? rc : consume(w, s, i, id, dst, len, err);
}

static void record_failure(mx8_engine *e, slot_t *s, size_t i, int64_t id, const mx8_error *err) {
    const mx8_record *r = &e->m->records[id];
    atomic_fetch_add(&e->errors, 1);
    if (e->cfg.skip_errors) {
        s->failed[i] = 1;
        s->n_failed++;
    }
    if (!s->has_error) { /* keep the first failure of the batch for the report */
        s->has_error = 1;
        s->error.code = err->code;
        s->error.sample_id = id;
        s->error.location = r->location;
        s->error.offset = r->offset;
        s->error.length = r->length;
        memcpy(s->error.msg, err->msg, sizeof s->error.msg);
    }
}

static void trim_scratch(worker_t *w) {
    if (w->scratch_cap > KEEP_READ_SCRATCH) {
        free(w->scratch);
        w->scratch = NULL;
        w->scratch_cap = 0;
    }
    if (w->dec) /* raw batches have no decoder */
        mx8_decoder_trim(w->dec, KEEP_DECODE_SCRATCH);
}

/* The workers' readers, decoders and scratch: once they are joined nothing uses them, and
 * the memory (often the bulk of an engine's) should not wait for the Python object to die. */
static void release_workers(mx8_engine *e) {
    for (int i = 0; e->workers && i < e->cfg.threads; i++) {
        worker_t *w = &e->workers[i];
        if (w->e)
            mx8_sample_reader_close(&w->reader);
        w->e = NULL;
        mx8_decoder_free(w->dec);
        w->dec = NULL;
        free(w->scratch);
        w->scratch = NULL;
        w->scratch_cap = 0;
        free(w->u8_slot);
        w->u8_slot = NULL;
    }
}

/* The run with a position a worker may claim now: the next unclaimed one, if its batch has
 * a buffer. e->mu held. */
static run_t *claimable(mx8_engine *e) {
    while (e->cursor && e->cursor->claimed >= e->cursor->n)
        e->cursor = e->cursor->next;
    run_t *r = e->cursor;
    return r && r->batch0 + r->claimed / (size_t)e->cfg.batch_size < e->provided ? r : NULL;
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    mx8_engine *e = w->e;
    size_t bs = (size_t)e->cfg.batch_size;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        run_t *r = NULL;
        while (!e->stop && !(r = claimable(e))) {
            /* Starving: a run has positions left but no buffer for them (waiting between runs,
             * with nothing queued, is not counted). */
            int starving = e->cursor != NULL;
            uint64_t idle0 = now_ns();
            pthread_cond_wait(&e->work_cv, &e->mu);
            if (starving)
                atomic_fetch_add(&e->starve_ns, now_ns() - idle0);
        }
        if (e->stop)
            break;
        size_t pos = r->claimed++;
        slot_t *s = slot_for(e, r->batch0 + pos / bs);
        atomic_store(&w->busy_id, r->order[pos]);
        pthread_mutex_unlock(&e->mu);

        mx8_error err;
        mx8_error_clear(&err);
        int rc = process(w, s, pos % bs, pos, &err);
        trim_scratch(w);
        int64_t id = atomic_exchange(&w->busy_id, -1);

        pthread_mutex_lock(&e->mu);
        if (rc && !s->cancelled) /* a cancelled batch's failures (abandoned waits) are nobody's */
            record_failure(e, s, pos % bs, id, &err);
        if (++s->done == s->len)
            pthread_cond_broadcast(&e->ready_cv);
    }
    pthread_mutex_unlock(&e->mu);
    atomic_fetch_sub(&e->running, 1); /* the last access: an abandoned worker's engine may go now */
    return NULL;
}

int mx8_engine_start(mx8_engine *e, mx8_error *err) {
    if (e->started)
        return mx8_error_set(err, MX8_ERR_ARG, "engine already started");
    e->started = 1;
    /* Workers block every signal so SIGINT and friends reach the Python main thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = e->s3 ? mx8_s3_client_start(e->s3, err) : MX8_OK;
    for (int i = 0; i < e->cfg.threads && !rc; i++) {
        worker_t *w = &e->workers[i];
        w->e = e;
        mx8_sample_reader_init(&w->reader, e->paths, e->m->n_locations, e->s3);
        if (e->cfg.output == MX8_OUTPUT_DECODED && !(w->dec = mx8_decoder_new())) {
            rc = mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a decoder");
            break;
        }
        if (e->cfg.out_float && !(w->u8_slot = malloc(e->slot_bytes / 4))) {
            rc = mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a worker's image buffer");
            break;
        }
        atomic_store(&w->busy_id, -1);
        atomic_fetch_add(&e->running, 1);
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            atomic_fetch_sub(&e->running, 1);
            rc = mx8_error_set(err, MX8_ERR_NOMEM, "cannot start worker thread %d", i);
            break;
        }
        w->started = 1;
        char name[16]; /* the kernel keeps 15 characters */
        snprintf(name, sizeof name, "mx8-worker-%d", i % 1000);
        pthread_setname_np(w->tid, name);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        mx8_engine_stop(e, -1, NULL);
    return rc;
}

/* Drops skipped samples from a completed batch, keeping the rest in order. */
static size_t compact(mx8_engine *e, slot_t *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->failed[i])
            continue;
        if (k != i) {
            s->labels[k] = s->labels[i];
            s->ids[k] = s->ids[i];
            if (e->cfg.output == MX8_OUTPUT_DECODED) {
                memmove(s->images + k * e->slot_bytes, s->images + i * e->slot_bytes, e->slot_bytes);
            } else {
                int64_t len = s->offsets[i + 1] - s->offsets[i];
                memmove(s->images + s->offsets[k], s->images + s->offsets[i], (size_t)len);
                s->offsets[k + 1] = s->offsets[k] + len;
            }
        } else if (e->cfg.output == MX8_OUTPUT_RAW) {
            s->offsets[k + 1] = s->offsets[i + 1];
        }
        k++;
    }
    return k;
}

static void deadline_after(struct timespec *ts, int ms) {
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int mx8_engine_next(mx8_engine *e, int timeout_ms, int *has_batch, mx8_batch_info *info,
                    mx8_error *err) {
    memset(info, 0, sizeof *info);
    *has_batch = 0;
    pthread_mutex_lock(&e->mu);
    size_t b = e->delivered;
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        return mx8_error_set(err, MX8_ERR_CLOSED, "the engine was stopped");
    }
    if (b >= e->queued) {
        pthread_mutex_unlock(&e->mu);
        return MX8_OK;
    }
    if (b >= e->provided || !e->started) {
        pthread_mutex_unlock(&e->mu);
        return mx8_error_set(err, MX8_ERR_ARG, "batch %zu has no buffer, or the engine is not started", b);
    }
    slot_t *s = slot_for(e, b);
    uint64_t t0 = now_ns();
    struct timespec deadline;
    if (timeout_ms >= 0)
        deadline_after(&deadline, timeout_ms);
    int timed_out = 0;
    while (!e->stop && s->done < s->len && !timed_out) {
        if (timeout_ms < 0)
            pthread_cond_wait(&e->ready_cv, &e->mu);
        else
            timed_out = pthread_cond_timedwait(&e->ready_cv, &e->mu, &deadline) != 0;
    }
    atomic_fetch_add(&e->wait_ns, now_ns() - t0);
    if (!e->stop && s->done < s->len) {
        pthread_mutex_unlock(&e->mu);
        *has_batch = -1;
        return MX8_OK;
    }
    if (s->done < s->len) {
        pthread_mutex_unlock(&e->mu);
        return mx8_error_set(err, MX8_ERR_CLOSED, "the engine was stopped");
    }
    e->delivered++;
    run_t *r = s->run;
    info->run = r->id;
    info->cancelled = s->cancelled;
    size_t n = s->len;
    if (b + 1 == r->batch0 + r->n_batches) /* its last batch: every sample of the run is done */
        run_free(e, r);
    pthread_mutex_unlock(&e->mu);

    /* The batch is complete: no worker touches this slot until it is provided again. */
    info->batch = b;
    *has_batch = 1;
    if (info->cancelled)
        return MX8_OK;
    info->failed = s->has_error && !e->cfg.skip_errors;
    if (s->has_error)
        info->error = s->error;
    info->skipped = s->n_failed;
    info->count = s->n_failed ? compact(e, s, n) : n;
    atomic_fetch_add(&e->skipped, s->n_failed);
    atomic_fetch_add(&e->images, info->count);
    atomic_fetch_add(&e->batches, 1);
    return MX8_OK;
}

/* Joins worker w by the deadline (NULL: no deadline); 0 when it has returned. */
static int join_by(worker_t *w, const struct timespec *deadline) {
    return deadline ? pthread_timedjoin_np(w->tid, NULL, deadline) : pthread_join(w->tid, NULL);
}

/* Names the sample an abandoned worker is stuck on (the first such worker wins). */
static void report_stuck(mx8_engine *e, worker_t *w, mx8_stuck_sample *stuck, size_t n_before) {
    int64_t id = atomic_load(&w->busy_id);
    if (!stuck || n_before || id < 0 || (uint64_t)id >= e->m->n_records)
        return;
    const mx8_record *r = &e->m->records[id];
    stuck->sample_id = id;
    stuck->location = r->location;
    stuck->offset = r->offset;
    stuck->length = r->length;
}

size_t mx8_engine_stop(mx8_engine *e, int wait_ms, mx8_stuck_sample *stuck) {
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_broadcast(&e->work_cv);
    pthread_cond_broadcast(&e->ready_cv);
    pthread_mutex_unlock(&e->mu);
    if (e->remote)
        mx8_remote_stop(e->remote); /* wakes workers waiting for a fetch */
    if (e->s3)
        mx8_s3_client_stop(e->s3); /* no new requests or retries; blocked workers' calls end */
    if (stuck)
        stuck->sample_id = -1;
    struct timespec deadline;
    if (wait_ms >= 0)
        deadline_after(&deadline, wait_ms); /* CLOCK_REALTIME, as pthread_timedjoin_np wants */
    /* close() in one thread while another's next() fails and closes too: the second caller
     * waits here for the first one's joins instead of joining the same threads again. */
    pthread_mutex_lock(&e->join_mu);
    size_t abandoned = 0;
    for (int i = 0; e->workers && i < e->cfg.threads; i++) {
        worker_t *w = &e->workers[i];
        if (!w->started)
            continue;
        if (join_by(w, wait_ms >= 0 ? &deadline : NULL) != 0) {
            /* Still inside its sample after the wait: blocked in a call that does not return
             * (a hung network mount). It is let go rather than joined forever; it leaves on
             * its own once the call returns (stop is set), and its resources wait for free. */
            report_stuck(e, w, stuck, abandoned);
            pthread_detach(w->tid);
            w->abandoned = 1;
            abandoned++;
        }
        w->started = 0;
    }
    if (!abandoned)
        release_workers(e);
    pthread_mutex_unlock(&e->join_mu);
    return abandoned;
}

int mx8_engine_running(mx8_engine *e) { return atomic_load(&e->running); }

void mx8_engine_free(mx8_engine *e) {
    if (!e)
        return;
    if (e->workers) {
        mx8_engine_stop(e, -1, NULL); /* joins the workers; abandoned ones have left (running == 0) */
        release_workers(e);
        mx8_s3_client_free(e->s3); /* first: no transfer writes into the reader's buffers after it */
        mx8_remote_free(e->remote); /* after the workers: nobody holds its bytes */
        pthread_mutex_destroy(&e->mu);
        pthread_mutex_destroy(&e->join_mu);
        pthread_cond_destroy(&e->work_cv);
        pthread_cond_destroy(&e->ready_cv);
    }
    while (e->runs)
        run_free(e, e->runs);
    for (int s = 0; e->slots && s < e->cfg.depth; s++)
        free(e->slots[s].failed);
    free(e->slots);
    free(e->workers);
    free(e);
}

void mx8_engine_get_stats(mx8_engine *e, mx8_engine_stats *o) {
    o->images = atomic_load(&e->images);
    o->bytes_read = atomic_load(&e->bytes_read);
    o->errors = atomic_load(&e->errors);
    o->skipped = atomic_load(&e->skipped);
    o->batches = atomic_load(&e->batches);
    o->read_ns = atomic_load(&e->read_ns);
    o->decode_ns = atomic_load(&e->decode_ns);
    o->wait_ns = atomic_load(&e->wait_ns);
    o->starve_ns = atomic_load(&e->starve_ns);
    o->reads = atomic_load(&e->reads);
    o->s3_requests = o->s3_retries = 0;
    memset(&o->s3_latency, 0, sizeof o->s3_latency);
    o->s3_held_max = 0;
    if (e->remote) {
        mx8_remote_stats rs;
        mx8_remote_stats_get(e->remote, &rs);
        o->reads += rs.fetches;
        o->bytes_read += rs.bytes;
        o->s3_held_max = rs.held_max;
    }
    if (e->s3) { /* every request: the reader's and the workers' blocking ones */
        mx8_s3_client_stats(e->s3, &o->s3_latency);
        o->s3_requests = o->s3_latency.requests;
        o->s3_retries = o->s3_latency.retries;
    }
}
