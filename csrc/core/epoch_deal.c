#include "epoch_deal.h"

#include <stdlib.h>
#include <string.h>

#include "epoch_order.h"
#include "rng.h"

/* Bounds that keep every product below in 64 bits (world * piece, n * 8). */
#define MAX_WORLD (1ULL << 20) /* per-rank arrays: 72 bytes a rank */
#define MAX_PIECE (1ULL << 31)
#define MAX_SAMPLES (1ULL << 60)
#define MAX_BATCH (1ULL << 40)
#define MAX_WORKERS (1ULL << 20)

/* The shape of a deal, the same for every rank, from the spec alone (no sample ids). */
typedef struct {
    uint64_t t_rem;    /* unread tails of the progress's pieces, in all */
    uint64_t m;        /* samples left in the epoch: t_rem + n - top */
    uint64_t per_rank; /* samples each rank reads, pads included */
    uint64_t rounds;   /* whole pieces each rank reads after its tails */
    uint64_t end_base; /* S position of the first end piece */
    uint64_t padded, dropped;
    uint64_t *tau;     /* per rank: tail positions it takes (r, r + W, ...) */
    uint64_t *end_lo, *end_len, *pad_off, *pad_len; /* per rank: its end piece, its pads */
} layout_t;

static void layout_free(layout_t *l) {
    free(l->tau);
    free(l->end_lo);
    free(l->end_len);
    free(l->pad_off);
    free(l->pad_len);
}

int mx8_progress_check(const mx8_progress *p, uint64_t n, mx8_error *err) {
    if (p->top > n)
        return mx8_error_set(err, MX8_ERR_ARG, "progress: top %llu is past the epoch's %llu samples",
                             (unsigned long long)p->top, (unsigned long long)n);
    if (p->n_pieces && !p->pieces)
        return mx8_error_set(err, MX8_ERR_ARG, "progress: %zu pieces without their list", p->n_pieces);
    for (size_t i = 0; i < p->n_pieces; i++) {
        const mx8_piece *x = &p->pieces[i];
        if (x->lo >= x->hi || x->hi > p->top || x->used >= x->hi - x->lo)
            return mx8_error_set(err, MX8_ERR_ARG,
                                 "progress: piece %zu [%llu, %llu) with %llu read is not a partly read piece "
                                 "below top %llu",
                                 i, (unsigned long long)x->lo, (unsigned long long)x->hi,
                                 (unsigned long long)x->used, (unsigned long long)p->top);
        if (i && x->lo < p->pieces[i - 1].hi)
            return mx8_error_set(err, MX8_ERR_ARG, "progress: piece %zu [%llu, %llu) overlaps or precedes the one "
                                 "before it", i, (unsigned long long)x->lo, (unsigned long long)x->hi);
    }
    return MX8_OK;
}

static int layout_make(const mx8_deal_spec *s, layout_t *l, mx8_error *err) {
    memset(l, 0, sizeof *l);
    if (s->world < 1 || s->world > MAX_WORLD || s->batch < 1 || s->batch > MAX_BATCH || s->piece < 1 ||
        s->piece > MAX_PIECE ||
        (s->shuffle && s->block < 1) || s->n > MAX_SAMPLES)
        return mx8_error_set(err, MX8_ERR_ARG, "bad deal: %llu samples, world %llu, batch %llu, piece %llu, block %llu",
                             (unsigned long long)s->n, (unsigned long long)s->world, (unsigned long long)s->batch,
                             (unsigned long long)s->piece, (unsigned long long)s->block);
    int rc = mx8_progress_check(&s->done, s->n, err);
    if (rc)
        return rc;
    uint64_t W = s->world, L = s->piece;
    for (size_t i = 0; i < s->done.n_pieces; i++)
        l->t_rem += s->done.pieces[i].hi - s->done.pieces[i].lo - s->done.pieces[i].used;
    uint64_t r0 = s->n - s->done.top;
    l->m = l->t_rem + r0;
    l->per_rank = s->drop_last ? l->m / W / s->batch * s->batch : (l->m + W - 1) / W;
    uint64_t tau_max = (l->t_rem + W - 1) / W;
    if (tau_max > l->per_rank)
        tau_max = l->per_rank;
    l->rounds = r0 / (W * L);
    if (l->rounds > (l->per_rank - tau_max) / L)
        l->rounds = (l->per_rank - tau_max) / L;
    /* The last round goes to the end pieces, so they hold at least a piece when the epoch
     * has one a rank: a batch at the end of the epoch mixes as many blocks as the others. */
    if (l->rounds)
        l->rounds--;
    l->end_base = s->done.top + l->rounds * W * L;
    size_t bytes = (size_t)W * sizeof(uint64_t);
    l->tau = malloc(bytes), l->end_lo = malloc(bytes), l->end_len = malloc(bytes);
    l->pad_off = malloc(bytes), l->pad_len = malloc(bytes);
    if (!l->tau || !l->end_lo || !l->end_len || !l->pad_off || !l->pad_len) {
        layout_free(l);
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory dealing an epoch to %llu ranks",
                             (unsigned long long)W);
    }
    /* End pieces in rank order, each as long as its rank needs to reach per_rank; what the
     * remainder cannot fill is padded (never with drop_last: per_rank was cut to fit). */
    uint64_t left = s->n - l->end_base, lo = l->end_base, pads = 0;
    for (uint64_t r = 0; r < W; r++) {
        uint64_t tau = l->t_rem / W + (r < l->t_rem % W);
        l->tau[r] = tau < l->per_rank ? tau : l->per_rank;
        uint64_t cap = l->per_rank - l->tau[r] - l->rounds * L, e = cap < left ? cap : left;
        l->end_lo[r] = lo, l->end_len[r] = e;
        l->pad_off[r] = pads, l->pad_len[r] = cap - e;
        lo += e, left -= e, pads += cap - e;
    }
    l->padded = pads;
    l->dropped = s->drop_last ? l->m - W * l->per_rank : 0;
    return MX8_OK;
}

/* Blocks as long as the spec's, but at most n / 256: in an epoch of under 16,384 samples
 * (64-sample blocks), where locality buys little, the share of each of up to 16 ranks still
 * mixes 16 blocks. A function of n alone, so S is the same at any world size. */
static uint64_t block_of(const mx8_deal_spec *s) {
    uint64_t b = s->n / 256;
    return b < 1 ? 1 : b > s->block ? s->block : b;
}

/* The ids of piece S[lo, hi) in the order its reader takes them. */
static void piece_ids(const int64_t *S, uint64_t lo, uint64_t hi, const mx8_deal_spec *s, int64_t *out) {
    uint64_t n = hi - lo;
    memcpy(out, S + lo, n * sizeof *out);
    if (!s->shuffle)
        return;
    mx8_rng rng;
    mx8_rng_seed(&rng, s->seed ^ (lo * 0x9e3779b97f4a7c15ULL) ^ (hi * 0xc2b2ae3d27d4eb4fULL));
    mx8_rng_next(&rng);
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = (uint64_t)mx8_rng_range(&rng, 0, (int64_t)i - 1);
        int64_t t = out[i - 1];
        out[i - 1] = out[j];
        out[j] = t;
    }
}

/* Which part of rank r's stream position p lies in: 0 its tails, 1.. its round pieces, then
 * its end piece, then its pads. A new part is a new piece: the S3 reader plans each apart. */
static uint64_t part_of(const layout_t *l, uint64_t L, uint64_t r, uint64_t p) {
    if (p < l->tau[r])
        return 0;
    p -= l->tau[r];
    if (p < l->rounds * L)
        return 1 + p / L;
    p -= l->rounds * L;
    return p < l->end_len[r] ? 1 + l->rounds : 2 + l->rounds;
}

/* Rank r's whole stream (per_rank ids). */
static int rank_stream(const mx8_deal_spec *s, const layout_t *l, uint64_t r, int64_t *out, mx8_error *err) {
    int64_t *S = malloc((s->n ? s->n : 1) * sizeof *S), *tails = NULL;
    if (!S)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an epoch order of %llu samples",
                             (unsigned long long)s->n);
    mx8_block_order(s->n, s->seed, s->shuffle, block_of(s), S);
    uint64_t k = 0, W = s->world, L = s->piece;
    if (l->tau[r]) { /* the unread tails of the pieces before, one after another */
        uint64_t longest = 0;
        for (size_t i = 0; i < s->done.n_pieces; i++)
            if (s->done.pieces[i].hi - s->done.pieces[i].lo > longest)
                longest = s->done.pieces[i].hi - s->done.pieces[i].lo;
        int64_t *one = malloc(longest * sizeof *one);
        tails = malloc(l->t_rem * sizeof *tails);
        if (!one || !tails) {
            free(one);
            free(tails);
            free(S);
            return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for %llu unread samples",
                                 (unsigned long long)l->t_rem);
        }
        uint64_t t = 0;
        for (size_t i = 0; i < s->done.n_pieces; i++) {
            const mx8_piece *x = &s->done.pieces[i];
            piece_ids(S, x->lo, x->hi, s, one);
            memcpy(tails + t, one + x->used, (x->hi - x->lo - x->used) * sizeof *one);
            t += x->hi - x->lo - x->used;
        }
        free(one);
        for (uint64_t p = 0; p < l->tau[r]; p++)
            out[k++] = tails[r + p * W];
        free(tails);
    }
    for (uint64_t i = 0; i < l->rounds; i++, k += L)
        piece_ids(S, s->done.top + (i * W + r) * L, s->done.top + (i * W + r + 1) * L, s, out + k);
    piece_ids(S, l->end_lo[r], l->end_lo[r] + l->end_len[r], s, out + k);
    k += l->end_len[r];
    for (uint64_t i = 0; i < l->pad_len[r]; i++)
        out[k++] = S[(l->pad_off[r] + i) % s->n];
    free(S);
    return MX8_OK;
}

int mx8_deal_share(const mx8_deal_spec *s, uint64_t rank, uint64_t worker, uint64_t workers, mx8_share *out,
                   mx8_error *err) {
    memset(out, 0, sizeof *out);
    if (rank >= s->world || workers < 1 || workers > MAX_WORKERS || worker >= workers)
        return mx8_error_set(err, MX8_ERR_ARG, "bad share: rank %llu of %llu, worker %llu of %llu",
                             (unsigned long long)rank, (unsigned long long)s->world, (unsigned long long)worker,
                             (unsigned long long)workers);
    layout_t l;
    int rc = layout_make(s, &l, err);
    if (rc)
        return rc;
    uint64_t per = l.per_rank, B = s->batch, n_batches = (per + B - 1) / B, count = 0;
    for (uint64_t j = worker; j < n_batches; j += workers)
        count += (j + 1) * B <= per ? B : per - j * B;
    int64_t *stream = malloc((per ? per : 1) * sizeof *stream);
    out->ids = malloc((count ? count : 1) * sizeof *out->ids);
    out->cuts = malloc((count ? count : 1) * sizeof *out->cuts);
    if (!stream || !out->ids || !out->cuts) {
        free(stream);
        free(out->ids);
        free(out->cuts);
        layout_free(&l);
        memset(out, 0, sizeof *out);
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a share of %llu samples",
                             (unsigned long long)per);
    }
    if ((rc = rank_stream(s, &l, rank, stream, err))) {
        free(stream);
        free(out->ids);
        free(out->cuts);
        layout_free(&l);
        memset(out, 0, sizeof *out);
        return rc;
    }
    /* This worker's batches j, j + workers, ...: a cut wherever the next id is another piece's. */
    uint64_t q = 0, prev_part = 0;
    for (uint64_t j = worker; j < n_batches; j += workers)
        for (uint64_t p = j * B; p < (j + 1) * B && p < per; p++, q++) {
            uint64_t part = part_of(&l, s->piece, rank, p);
            if (q && part != prev_part)
                out->cuts[out->n_cuts++] = q;
            prev_part = part;
            out->ids[q] = stream[p];
        }
    free(stream);
    out->count = count;
    out->per_rank = per;
    out->padded = l.padded;
    out->dropped = l.dropped;
    layout_free(&l);
    return MX8_OK;
}

static uint64_t clamp(uint64_t v, uint64_t lo, uint64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

int mx8_deal_after(const mx8_deal_spec *s, uint64_t read, mx8_progress_out *out, mx8_error *err) {
    memset(out, 0, sizeof *out);
    layout_t l;
    int rc = layout_make(s, &l, err);
    if (rc)
        return rc;
    uint64_t W = s->world, L = s->piece, c = read < l.per_rank ? read : l.per_rank;
    /* At most: the pieces before, two rounds' pieces partly read, one end piece a rank. */
    size_t cap = s->done.n_pieces + 3 * (size_t)W;
    out->pieces = malloc(cap * sizeof *out->pieces);
    if (!out->pieces) {
        layout_free(&l);
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an epoch's progress");
    }
    size_t k = 0;
    /* 1. Tails: dealt position by position, so together the ranks read a prefix of them. */
    uint64_t t = 0, m_lo = UINT64_MAX, m_hi = 0, ended = 0;
    for (uint64_t r = 0; r < W; r++)
        t += c < l.tau[r] ? c : l.tau[r];
    for (size_t i = 0; i < s->done.n_pieces; i++) {
        mx8_piece x = s->done.pieces[i];
        uint64_t take = x.hi - x.lo - x.used < t ? x.hi - x.lo - x.used : t;
        x.used += take, t -= take;
        if (x.used < x.hi - x.lo)
            out->pieces[k++] = x;
    }
    /* 2. Rounds: rank r has read m_r samples of its round pieces. Ranks differ by at most one
     * sample, so only the rounds [m_lo / L, ceil(m_hi / L)) are partly read. */
    for (uint64_t r = 0; r < W; r++) {
        uint64_t m = clamp(c - (c < l.tau[r] ? c : l.tau[r]), 0, l.rounds * L);
        m_lo = m < m_lo ? m : m_lo;
        m_hi = m > m_hi ? m : m_hi;
    }
    uint64_t i_lo = m_lo / L, i_hi = (m_hi + L - 1) / L, top = s->done.top + i_hi * W * L;
    for (uint64_t i = i_lo; i < i_hi; i++)
        for (uint64_t r = 0; r < W; r++) {
            uint64_t m = clamp(c - (c < l.tau[r] ? c : l.tau[r]), 0, l.rounds * L);
            uint64_t used = clamp(m > i * L ? m - i * L : 0, 0, L), lo = s->done.top + (i * W + r) * L;
            if (used < L)
                out->pieces[k++] = (mx8_piece){lo, lo + L, used};
        }
    /* 3. End pieces: touched only once every round piece is read. */
    for (uint64_t r = 0; r < W; r++)
        if (c > l.tau[r] + l.rounds * L && l.end_len[r])
            ended = 1;
    if (ended) {
        top = l.end_base;
        for (uint64_t r = 0; r < W; r++) {
            uint64_t before = l.tau[r] + l.rounds * L;
            uint64_t used = clamp(c > before ? c - before : 0, 0, l.end_len[r]);
            if (used < l.end_len[r])
                out->pieces[k++] = (mx8_piece){l.end_lo[r], l.end_lo[r] + l.end_len[r], used};
            top = l.end_lo[r] + l.end_len[r];
        }
    }
    /* Unread pieces at the top are simply unread S. */
    while (k && out->pieces[k - 1].used == 0 && out->pieces[k - 1].hi == top)
        top = out->pieces[--k].lo;
    out->n_pieces = k;
    out->top = top;
    out->position = s->n - l.m;
    for (uint64_t r = 0; r < W; r++) {
        uint64_t real = l.per_rank - l.pad_len[r];
        out->position += c < real ? c : real;
    }
    layout_free(&l);
    return MX8_OK;
}
