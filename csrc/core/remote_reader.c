#include "remote_reader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "buffer_pool.h"
#include "s3_client.h"

#define NO_UNIT UINT32_MAX

enum { U_PLANNED, U_FETCHING, U_READY, U_FAILED, U_FREED };

/* One planned request: a byte span of one object holding one or more samples. */
typedef struct unit {
    uint32_t location;
    int state;
    uint64_t offset, span;
    uint64_t avail;   /* bytes of the span fetched: span, or fewer when the object ends early */
    size_t first_pos; /* the earliest position that needs it: requests go out in this order */
    uint32_t refs;    /* positions not yet released */
    uint8_t *data;
    struct remote_fetch *fetch;
    struct window *window; /* the window it belongs to */
} unit_t;

/* A unit's transfer, and the bucket name it needs to outlive it. */
typedef struct remote_fetch {
    mx8_s3_transfer t; /* first: the transfer's address is the fetch's */
    struct unit *unit;
    char bucket[MX8_S3_BUCKET_MAX + 1];
} remote_fetch;

typedef struct window {
    size_t start, end;   /* positions [start, end) */
    int64_t *ids;        /* per position: its sample id */
    uint32_t *unit_of;   /* per position; NO_UNIT for a record without a length */
    unit_t *units;
    uint32_t *by_need;   /* unit indices by first_pos */
    size_t n_units, next_submit, live;
    struct window *next;
} window_t;

/* An appended order: positions [base, base + n), planned into windows in turn. */
typedef struct segment {
    size_t base, n;
    int64_t *ids;
    uint64_t *cuts;        /* offsets in the order where a planning window must end */
    size_t n_cuts, next_cut;
    struct segment *next;
} segment_t;

struct mx8_remote_reader {
    const mx8_manifest *m;
    const char *const *paths;
    segment_t *segs, *segs_tail; /* appended and not yet wholly planned, in order */
    size_t n_order;              /* positions appended in all */
    mx8_remote_config cfg;
    mx8_s3_client *client;
    /* Request buffers of max_request bytes kept for reuse: a fresh 4 MiB malloc is an mmap
     * whose every page faults in, zeroed, as curl writes it, which cost the I/O thread about
     * a third of its time. At most budget / max_request are kept idle. */
    mx8_buffer_pool *buffers;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* a fetch ended, or stop */
    window_t *head, *tail, *cursor; /* live windows in order; cursor: the one being issued */
    size_t planned_end;
    uint64_t held, held_max;
    uint64_t fetches, bytes; /* requests ended, and bytes of the successful ones */
    size_t abandon_lo, abandon_hi; /* positions whose samples nobody wants any more (a cancelled
                                      order's, being read): their waits end at once */
    int stop;
    int plan_rc; /* sticky planning failure (out of memory) */
    mx8_error plan_err;
};

/* ---- planning ---- */

typedef struct {
    uint32_t location;
    uint64_t offset, length;
    size_t pos;
} entry_t;

static int by_place(const void *a, const void *b) {
    const entry_t *x = a, *y = b;
    if (x->location != y->location)
        return x->location < y->location ? -1 : 1;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static void buffer_put(mx8_remote_reader *r, const struct unit *u);

static void window_free(mx8_remote_reader *r, window_t *w) {
    if (!w)
        return;
    for (size_t i = 0; w->units && i < w->n_units; i++) {
        buffer_put(r, &w->units[i]);
        free(w->units[i].fetch);
    }
    free(w->ids);
    free(w->unit_of);
    free(w->units);
    free(w->by_need);
    free(w);
}

/* Plans the window after the last planned one and appends it. Returns it, or NULL when
 * every appended position is planned or on failure (r->plan_rc). A window never spans two
 * appended orders, so skipping an order's tail (mx8_remote_skip) frees whole windows.
 * Called with r->mu held. */
static window_t *plan_next(mx8_remote_reader *r) {
    while (r->segs && r->planned_end >= r->segs->base + r->segs->n) { /* wholly planned */
        segment_t *done = r->segs;
        r->segs = done->next;
        if (!r->segs)
            r->segs_tail = NULL;
        free(done->ids);
        free(done->cuts);
        free(done);
    }
    if (!r->segs || r->plan_rc)
        return NULL;
    segment_t *seg = r->segs;
    if (r->planned_end < seg->base)
        r->planned_end = seg->base;
    size_t start = r->planned_end, end = start, seg_end = seg->base + seg->n;
    while (seg->next_cut < seg->n_cuts && seg->base + seg->cuts[seg->next_cut] <= start)
        seg->next_cut++;
    if (seg->next_cut < seg->n_cuts)
        seg_end = seg->base + seg->cuts[seg->next_cut]; /* the window ends where another piece begins */
    uint64_t bytes = 0;
    while (end < seg_end && end - start < r->cfg.window && (end == start || bytes < r->cfg.budget_bytes / 2)) {
        uint64_t len = r->m->records[seg->ids[end - seg->base]].length;
        bytes += len == MX8_LENGTH_WHOLE || len > r->cfg.max_sample ? 0 : len;
        end++;
    }
    size_t n = end - start;
    window_t *w = calloc(1, sizeof *w);
    entry_t *e = malloc(n * sizeof *e);
    if (w) {
        w->ids = malloc(n * sizeof *w->ids);
        w->unit_of = malloc(n * sizeof *w->unit_of);
        w->units = calloc(n, sizeof *w->units);
        w->by_need = malloc(n * sizeof *w->by_need);
    }
    if (!w || !e || !w->ids || !w->unit_of || !w->units || !w->by_need) {
        free(e);
        window_free(r, w);
        r->plan_rc = mx8_error_set(&r->plan_err, MX8_ERR_NOMEM, "out of memory planning S3 requests");
        return NULL;
    }
    w->start = start;
    w->end = end;
    memcpy(w->ids, seg->ids + (start - seg->base), n * sizeof *w->ids);
    size_t k = 0;
    for (size_t p = start; p < end; p++) {
        const mx8_record *rec = &r->m->records[w->ids[p - start]];
        w->unit_of[p - start] = NO_UNIT;
        if (rec->length != MX8_LENGTH_WHOLE && rec->length <= r->cfg.max_sample)
            e[k++] = (entry_t){rec->location, rec->offset, rec->length, p};
    }
    qsort(e, k, sizeof *e, by_place);
    unit_t *u = NULL;
    for (size_t i = 0; i < k; i++) {
        uint64_t lo = e[i].offset, hi = lo + e[i].length;
        int join = u && u->location == e[i].location && lo <= u->offset + u->span + r->cfg.max_gap &&
                   (hi > u->offset + u->span ? hi : u->offset + u->span) - u->offset <= r->cfg.max_request;
        if (!join) {
            u = &w->units[w->n_units++];
            *u = (unit_t){.location = e[i].location, .state = U_PLANNED, .offset = lo, .span = e[i].length,
                          .first_pos = e[i].pos, .window = w};
        } else if (hi > u->offset + u->span) {
            u->span = hi - u->offset;
        }
        if (e[i].pos < u->first_pos)
            u->first_pos = e[i].pos;
        u->refs++;
        w->unit_of[e[i].pos - start] = (uint32_t)(w->n_units - 1);
    }
    free(e);
    /* Each position belongs to one unit, so first positions are distinct: walking the
     * positions in order lists the units by need without a sort. */
    for (size_t p = start, k2 = 0; p < end; p++) {
        uint32_t id = w->unit_of[p - start];
        if (id != NO_UNIT && w->units[id].first_pos == p)
            w->by_need[k2++] = id;
    }
    w->live = w->n_units;
    if (r->tail)
        r->tail->next = w;
    else
        r->head = w;
    r->tail = w;
    r->planned_end = end;
    return w;
}

/* ---- fetching ---- */

/* Units of at least half of max_request get a reusable max_request buffer, and the budget
 * is charged the whole buffer; smaller ones get exactly their span. So every buffer in use
 * or spare was once charged, and the spares never add to the budget's high-water mark. */
static int pooled(const mx8_remote_reader *r, const unit_t *u) {
    return u->span >= r->cfg.max_request / 2 && u->span <= r->cfg.max_request;
}

static uint64_t charge(const mx8_remote_reader *r, const unit_t *u) {
    return pooled(r, u) ? r->cfg.max_request : u->span;
}

static uint8_t *buffer_get(mx8_remote_reader *r, const unit_t *u) {
    return pooled(r, u) ? mx8_pool_acquire(r->buffers) : malloc(u->span ? u->span : 1);
}

static void buffer_put(mx8_remote_reader *r, const unit_t *u) {
    if (u->data && pooled(r, u))
        mx8_pool_release(r->buffers, u->data);
    else
        free(u->data);
}

/* Gives back a unit no position needs any more: its buffer and its charge. Its transfer
 * record stays until the window goes (an ended transfer is still the transport's to
 * finish with when on_done runs). r->mu held; not for a unit still fetching. */
static void drop_unit(mx8_remote_reader *r, unit_t *u) {
    if (u->state != U_PLANNED) /* never issued: never charged */
        r->held -= charge(r, u);
    buffer_put(r, u);
    u->data = NULL;
    u->state = U_FREED;
    u->window->live--;
}

static void on_fetch_done(void *ud, mx8_s3_transfer *t) {
    mx8_remote_reader *r = ud;
    unit_t *u = ((remote_fetch *)t)->unit;
    pthread_mutex_lock(&r->mu);
    /* An object that ends inside the request (a short answer from the right offset) fails
     * only the samples past its end, as reading a truncated file would. */
    int partial = t->rc == MX8_ERR_RANGE && t->resp.len > 0;
    u->avail = t->rc == MX8_OK ? u->span : partial ? t->resp.len : 0;
    u->state = t->rc == MX8_OK || partial ? U_READY : U_FAILED;
    r->fetches++;
    r->bytes += u->avail;
    if (u->refs == 0) /* every sample of it was skipped while it ran: nobody will read it */
        drop_unit(r, u);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Issues a unit's request. Called with r->mu held. */
static void submit(mx8_remote_reader *r, unit_t *u) {
    u->state = U_FETCHING;
    r->held += charge(r, u);
    if (r->held > r->held_max)
        r->held_max = r->held;
    u->fetch = calloc(1, sizeof *u->fetch);
    u->data = buffer_get(r, u);
    if (!u->fetch || !u->data) {
        free(u->fetch);
        u->fetch = NULL;
        u->state = U_FAILED;
        return; /* acquire reports it as out of memory */
    }
    const char *key;
    if (mx8_s3_split_location(r->paths[u->location], u->fetch->bucket, &key, &u->fetch->t.err)) {
        u->state = U_FAILED;
        u->fetch->t.rc = u->fetch->t.err.code;
        return;
    }
    if (u->span == 0) { /* only empty samples: nothing to fetch */
        u->state = U_READY;
        return;
    }
    mx8_s3_transfer *t = &u->fetch->t;
    mx8_s3_op_range(&t->op, u->fetch->bucket, key, u->offset, (size_t)u->span, u->data);
    t->on_done = on_fetch_done;
    t->user = r;
    u->fetch->unit = u;
    mx8_s3_submit(r->client, t);
}

/* Issues requests in need order while the budget allows; past it, only those a waiting
 * thread needs (first_pos <= need; SIZE_MAX: none). Called with r->mu held. */
static void pump(mx8_remote_reader *r, size_t need) {
    for (;;) {
        window_t *w = r->cursor;
        if (!w || w->next_submit == w->n_units) {
            window_t *nw = w && w->next ? w->next : w || !r->head ? NULL : r->head;
            if (!nw && !(nw = plan_next(r)))
                return;
            r->cursor = nw;
            continue;
        }
        unit_t *u = &w->units[w->by_need[w->next_submit]];
        if (u->state != U_PLANNED) { /* freed unissued: all its samples were skipped */
            w->next_submit++;
            continue;
        }
        int forced = need != SIZE_MAX && u->first_pos <= need;
        if (!forced && r->held > 0 && r->held + charge(r, u) > r->cfg.budget_bytes)
            return;
        submit(r, u);
        w->next_submit++;
    }
}

static window_t *window_of(mx8_remote_reader *r, size_t pos) {
    for (window_t *w = r->head; w; w = w->next)
        if (pos >= w->start && pos < w->end)
            return w;
    return NULL;
}

/* Frees leading windows whose requests are all issued and released. r->mu held. */
static void drop_done_windows(mx8_remote_reader *r) {
    while (r->head && r->head->live == 0 && r->head->next_submit == r->head->n_units && r->head != r->cursor) {
        window_t *w = r->head;
        r->head = w->next;
        if (r->tail == w)
            r->tail = NULL;
        window_free(r, w);
    }
}

/* ---- public ---- */

mx8_remote_reader *mx8_remote_new(const mx8_manifest *m, const char *const *paths, mx8_s3_client *client,
                                  const mx8_remote_config *cfg, mx8_error *err) {
    mx8_remote_reader *r = calloc(1, sizeof *r);
    if (!r) {
        mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an S3 reader");
        return NULL;
    }
    r->m = m;
    r->paths = paths;
    r->cfg = *cfg;
    if (!r->cfg.budget_bytes)
        r->cfg.budget_bytes = (uint64_t)256 << 20;
    if (!r->cfg.max_request)
        r->cfg.max_request = (uint64_t)4 << 20;
    if (!r->cfg.max_gap)
        r->cfg.max_gap = (uint64_t)64 << 10;
    if (!r->cfg.window)
        r->cfg.window = 2048; /* the longest piece of a share (csrc/core/epoch_deal.h), planned whole */
    if (!r->cfg.max_sample)
        r->cfg.max_sample = (uint64_t)1 << 30;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->client = client;
    if (!(r->buffers = mx8_pool_new(r->cfg.max_request, (int)(r->cfg.budget_bytes / r->cfg.max_request) + 1))) {
        mx8_remote_free(r);
        mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an S3 reader");
        return NULL;
    }
    return r;
}

int mx8_remote_append(mx8_remote_reader *r, const int64_t *order, size_t n, const uint64_t *cuts, size_t n_cuts,
                      size_t *base, mx8_error *err) {
    for (size_t i = 0; i < n_cuts; i++)
        if (cuts[i] == 0 || cuts[i] >= n || (i && cuts[i] <= cuts[i - 1]))
            return mx8_error_set(err, MX8_ERR_ARG, "cut %zu (%llu) of an order of %zu samples is not increasing "
                                 "inside it", i, (unsigned long long)cuts[i], n);
    segment_t *seg = calloc(1, sizeof *seg);
    if (seg && n && !(seg->ids = malloc(n * sizeof *seg->ids))) {
        free(seg);
        seg = NULL;
    }
    if (seg && n_cuts && !(seg->cuts = malloc(n_cuts * sizeof *seg->cuts))) {
        free(seg->ids);
        free(seg);
        seg = NULL;
    }
    if (!seg)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an order of %zu samples", n);
    if (n)
        memcpy(seg->ids, order, n * sizeof *order);
    if (n_cuts)
        memcpy(seg->cuts, cuts, n_cuts * sizeof *cuts);
    seg->n_cuts = n_cuts;
    pthread_mutex_lock(&r->mu);
    seg->base = *base = r->n_order;
    seg->n = n;
    r->n_order += n;
    if (r->segs_tail)
        r->segs_tail->next = seg;
    else
        r->segs = seg;
    r->segs_tail = seg;
    pthread_mutex_unlock(&r->mu);
    return MX8_OK;
}

int mx8_remote_acquire(mx8_remote_reader *r, size_t pos, const uint8_t **data, mx8_error *err) {
    *data = NULL;
    pthread_mutex_lock(&r->mu);
    window_t *w = NULL;
    while (!r->stop && !(w = window_of(r, pos)) && plan_next(r)) {
    }
    int rc = MX8_OK;
    if (r->stop)
        rc = mx8_error_set(err, MX8_ERR_CLOSED, "the S3 reader was stopped");
    else if (!w)
        rc = r->plan_rc ? (*err = r->plan_err, r->plan_rc)
                        : mx8_error_set(err, MX8_ERR_ARG, "position %zu has no planned request", pos);
    else if (w->unit_of[pos - w->start] == NO_UNIT)
        rc = mx8_error_set(err, MX8_ERR_ARG, "position %zu has no byte length to fetch", pos);
    if (rc) {
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    unit_t *u = &w->units[w->unit_of[pos - w->start]];
    const mx8_record *rec = &r->m->records[w->ids[pos - w->start]];
#define ABANDONED(r, pos) ((pos) >= (r)->abandon_lo && (pos) < (r)->abandon_hi)
    if (!ABANDONED(r, pos))
        pump(r, u->state == U_PLANNED ? pos : SIZE_MAX);
    while (!r->stop && !ABANDONED(r, pos) && u->state == U_FETCHING)
        pthread_cond_wait(&r->cv, &r->mu);
    if (r->stop)
        rc = mx8_error_set(err, MX8_ERR_CLOSED, "the S3 reader was stopped");
    else if (ABANDONED(r, pos) && u->state != U_READY)
        rc = mx8_error_set(err, MX8_ERR_CLOSED, "position %zu is no longer wanted", pos);
    else if (u->state == U_FREED)
        rc = mx8_error_set(err, MX8_ERR_CLOSED, "position %zu was skipped", pos);
    else if (u->state == U_FAILED && !u->fetch)
        rc = mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a %llu-byte S3 request",
                           (unsigned long long)u->span);
    else if (u->state == U_FAILED || rec->offset + rec->length > u->offset + u->avail)
        rc = (*err = u->fetch->t.err, u->fetch->t.rc); /* failed, or past the end of a short object */
    else
        *data = u->data + (rec->offset - u->offset);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* One reference of a position (in window w, unit id) is given back. r->mu held. */
static void release_locked(mx8_remote_reader *r, window_t *w, uint32_t id) {
    if (id == NO_UNIT || w->units[id].state == U_FREED || w->units[id].refs == 0)
        return;
    unit_t *u = &w->units[id];
    if (--u->refs == 0 && u->state != U_FETCHING) /* a fetch still running is dropped when it ends */
        drop_unit(r, u);
}

void mx8_remote_release(mx8_remote_reader *r, size_t pos) {
    pthread_mutex_lock(&r->mu);
    window_t *w = window_of(r, pos);
    uint32_t id = w ? w->unit_of[pos - w->start] : NO_UNIT;
    release_locked(r, w, id);
    drop_done_windows(r);
    if (!r->stop)
        pump(r, SIZE_MAX);
    pthread_mutex_unlock(&r->mu);
}

void mx8_remote_skip(mx8_remote_reader *r, size_t held_lo, size_t lo, size_t hi) {
    pthread_mutex_lock(&r->mu);
    r->abandon_lo = held_lo;
    r->abandon_hi = lo;
    pthread_cond_broadcast(&r->cv); /* a holder waiting for one of them stops waiting */
    if (r->planned_end < hi) /* the unplanned part is never planned (held positions below lo
                                    that were not planned yet are abandoned, so never acquired) */
        r->planned_end = hi;
    for (window_t *w = r->head; w; w = w->next) {
        if (w->end <= lo || w->start >= hi)
            continue;
        size_t a = w->start > lo ? w->start : lo, b = w->end < hi ? w->end : hi;
        for (size_t p = a; p < b; p++)
            release_locked(r, w, w->unit_of[p - w->start]);
        if (w->start >= lo && w->end <= hi)
            w->next_submit = w->n_units; /* what is left unissued was freed above */
    }
    drop_done_windows(r);
    if (!r->stop)
        pump(r, SIZE_MAX);
    pthread_mutex_unlock(&r->mu);
}

void mx8_remote_stop(mx8_remote_reader *r) {
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void mx8_remote_free(mx8_remote_reader *r) {
    if (!r)
        return;
    for (segment_t *g = r->segs, *next; g; g = next) {
        next = g->next;
        free(g->ids);
        free(g->cuts);
        free(g);
    }
    for (window_t *w = r->head, *next; w; w = next) {
        next = w->next;
        window_free(r, w);
    }
    if (r->buffers)
        mx8_pool_close(r->buffers); /* after the windows: every buffer is back, so the pool goes */
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

void mx8_remote_stats_get(mx8_remote_reader *r, mx8_remote_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    out->held_max = r->held_max;
    out->fetches = r->fetches;
    out->bytes = r->bytes;
    pthread_mutex_unlock(&r->mu);
}
