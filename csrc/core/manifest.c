#include "manifest.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sha256_hex.h"

static const char HEADER[] = "schema_version=0";
static const char IMAGEFOLDER_HINT[] = "mx8:vision:imagefolder";

/* Unique location strings with an open-addressing index (most manifests have few shards,
 * but an unpacked ImageFolder indexed on the fly has one location per sample). */
typedef struct {
    char **strings;
    size_t n, cap;
    uint32_t *slots; /* index+1, 0 = empty */
    size_t n_slots;
} location_table;

static uint64_t fnv1a(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int table_grow_slots(location_table *t) {
    size_t n_slots = t->n_slots ? t->n_slots * 2 : 64;
    uint32_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < t->n; i++) {
        size_t j = fnv1a(t->strings[i], strlen(t->strings[i])) & (n_slots - 1);
        while (slots[j])
            j = (j + 1) & (n_slots - 1);
        slots[j] = (uint32_t)(i + 1);
    }
    free(t->slots);
    t->slots = slots;
    t->n_slots = n_slots;
    return 0;
}

/* Returns the index of the string s[0:len], adding it if new; -1 when out of memory. */
static int64_t table_intern(location_table *t, const char *s, size_t len) {
    if ((t->n + 1) * 2 > t->n_slots && table_grow_slots(t) < 0)
        return -1;
    size_t j = fnv1a(s, len) & (t->n_slots - 1);
    while (t->slots[j]) {
        const char *cand = t->strings[t->slots[j] - 1];
        if (strncmp(cand, s, len) == 0 && cand[len] == '\0')
            return t->slots[j] - 1;
        j = (j + 1) & (t->n_slots - 1);
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **strings = realloc(t->strings, cap * sizeof *strings);
        if (!strings)
            return -1;
        t->strings = strings;
        t->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    t->strings[t->n] = copy;
    t->slots[j] = (uint32_t)(t->n + 1);
    return (int64_t)t->n++;
}

/* A canonical unsigned decimal (no sign, no leading zeros) that fits in 63 bits. */
static int parse_u63(const char *s, size_t len, uint64_t *out) {
    if (len == 0 || len > 19 || (len > 1 && s[0] == '0'))
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return -1;
    *out = v;
    return 0;
}

/* label_id=<n> from "mx8:vision:imagefolder;label_id=<n>"; other hints carry no label. */
static int parse_label(const char *hint, size_t len, int32_t *label) {
    *label = MX8_NO_LABEL;
    size_t hl = sizeof IMAGEFOLDER_HINT - 1;
    if (len < hl || memcmp(hint, IMAGEFOLDER_HINT, hl) != 0)
        return 0;
    const char *key = "label_id=";
    size_t kl = strlen(key);
    for (size_t i = hl; i + kl <= len; i++) {
        if ((i == hl || hint[i - 1] == ';') && memcmp(hint + i, key, kl) == 0) {
            size_t j = i + kl, end = j;
            while (end < len && hint[end] != ';')
                end++;
            uint64_t v;
            if (parse_u63(hint + j, end - j, &v) < 0 || v > INT32_MAX)
                return -1;
            *label = (int32_t)v;
            return 0;
        }
    }
    return -1;
}

/* A streaming parser: lines may arrive split across feeds; each record goes to the sink. */
struct mx8_manifest_reader {
    mx8_record_sink sink;
    void *ctx;
    location_table locs;
    mx8_sha256 *sha;
    size_t n_records, lineno;
    int32_t max_label;
    char *carry; /* the start of a line whose \n has not arrived yet */
    size_t carry_len, carry_cap;
};

static int parse_record(mx8_manifest_reader *p, const char *line, size_t len, size_t lineno, mx8_error *err) {
    const char *field[5];
    size_t flen[5];
    size_t nf = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || line[i] == '\t') {
            if (nf < 5) {
                field[nf] = line + start;
                flen[nf] = i - start;
            }
            nf++;
            start = i + 1;
        }
    }
    if (nf != 5)
        return mx8_error_set(err, MX8_ERR_FORMAT,
                             "manifest line %zu: expected 5 tab-separated fields "
                             "(sample_id, location, byte_offset, byte_length, decode_hint), found %zu",
                             lineno, nf);
    uint64_t id, off = 0, blen = MX8_LENGTH_WHOLE;
    size_t expect = p->n_records;
    if (parse_u63(field[0], flen[0], &id) < 0 || id != expect)
        return mx8_error_set(err, MX8_ERR_FORMAT,
                             "manifest line %zu: sample_id '%.*s' is not %zu (ids run 0..N-1 in order)",
                             lineno, (int)(flen[0] > 40 ? 40 : flen[0]), field[0], expect);
    if (flen[1] == 0)
        return mx8_error_set(err, MX8_ERR_FORMAT, "manifest line %zu: empty location", lineno);
    if (flen[2] && parse_u63(field[2], flen[2], &off) < 0)
        return mx8_error_set(err, MX8_ERR_FORMAT, "manifest line %zu: byte_offset '%.*s' is not a number",
                             lineno, (int)(flen[2] > 40 ? 40 : flen[2]), field[2]);
    if (flen[3] && parse_u63(field[3], flen[3], &blen) < 0)
        return mx8_error_set(err, MX8_ERR_FORMAT, "manifest line %zu: byte_length '%.*s' is not a number",
                             lineno, (int)(flen[3] > 40 ? 40 : flen[3]), field[3]);
    int32_t label;
    if (parse_label(field[4], flen[4], &label) < 0)
        return mx8_error_set(err, MX8_ERR_FORMAT, "manifest line %zu: bad label_id in decode_hint '%.*s'",
                             lineno, (int)(flen[4] > 80 ? 80 : flen[4]), field[4]);
    int64_t loc = table_intern(&p->locs, field[1], flen[1]);
    if (loc < 0 || loc > (int64_t)UINT32_MAX)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory indexing manifest line %zu", lineno);
    mx8_record r = {.offset = off, .length = blen, .location = (uint32_t)loc, .label = label};
    int rc = p->sink(p->ctx, &r, err);
    if (rc)
        return rc;
    p->n_records++;
    if (label > p->max_label)
        p->max_label = label;
    return MX8_OK;
}

/* One whole line, without its \n. */
static int parse_line(mx8_manifest_reader *p, const char *line, size_t llen, mx8_error *err) {
    size_t lineno = ++p->lineno;
    if (memchr(line, '\r', llen))
        return mx8_error_set(err, MX8_ERR_FORMAT,
                             "manifest line %zu: carriage return (manifests use \\n line endings)", lineno);
    if (memchr(line, '\0', llen)) /* no path or key holds one, and the location table keys on C strings */
        return mx8_error_set(err, MX8_ERR_FORMAT, "manifest line %zu: NUL byte", lineno);
    if (lineno == 1) {
        if (llen != sizeof HEADER - 1 || memcmp(line, HEADER, llen) != 0)
            return mx8_error_set(err, MX8_ERR_FORMAT, "manifest line 1: expected '%s', found '%.*s'", HEADER,
                                 (int)(llen > 40 ? 40 : llen), line);
    } else {
        int rc = parse_record(p, line, llen, lineno, err);
        if (rc)
            return rc;
    }
    /* The hash covers the canonical bytes: each line with its \n, even if the file's last
     * line lacks one. */
    int rc = mx8_sha256_update(p->sha, line, llen, err);
    return rc ? rc : mx8_sha256_update(p->sha, "\n", 1, err);
}

/* The carry grows as a line needs (bounded by the file, as a whole-buffer parse is): every
 * line is accepted or refused the same wherever the feeds split it. */
static int carry_append(mx8_manifest_reader *p, const char *buf, size_t len, mx8_error *err) {
    if (p->carry_len + len > p->carry_cap) {
        size_t cap = p->carry_len + len > 2 * p->carry_cap ? p->carry_len + len : 2 * p->carry_cap;
        char *c = realloc(p->carry, cap);
        if (!c)
            return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory reading manifest line %zu", p->lineno + 1);
        p->carry = c, p->carry_cap = cap;
    }
    memcpy(p->carry + p->carry_len, buf, len);
    p->carry_len += len;
    return MX8_OK;
}

mx8_manifest_reader *mx8_manifest_reader_new(mx8_record_sink sink, void *ctx, mx8_error *err) {
    mx8_manifest_reader *p = calloc(1, sizeof *p);
    if (!p) {
        mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a manifest reader");
        return NULL;
    }
    p->sink = sink, p->ctx = ctx, p->max_label = -1;
    if (!(p->sha = mx8_sha256_new(err))) {
        free(p);
        return NULL;
    }
    return p;
}

int mx8_manifest_reader_feed(mx8_manifest_reader *p, const char *buf, size_t len, mx8_error *err) {
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) /* the rest is the start of a line */
            return carry_append(p, buf + pos, len - pos, err);
        size_t end = (size_t)(nl - buf);
        int rc;
        if (p->carry_len) { /* the end of the line the last feed began */
            if ((rc = carry_append(p, buf + pos, end - pos, err)))
                return rc;
            rc = parse_line(p, p->carry, p->carry_len, err);
            p->carry_len = 0;
        } else {
            rc = parse_line(p, buf + pos, end - pos, err);
        }
        if (rc)
            return rc;
        pos = end + 1;
    }
    return MX8_OK;
}

int mx8_manifest_reader_finish(mx8_manifest_reader *p, mx8_manifest *out, mx8_error *err) {
    int rc = MX8_OK;
    if (p->carry_len) { /* a last line without its \n */
        rc = parse_line(p, p->carry, p->carry_len, err);
        p->carry_len = 0;
    }
    if (!rc && p->lineno == 0)
        rc = mx8_error_set(err, MX8_ERR_FORMAT, "manifest is empty (expected '%s' on line 1)", HEADER);
    if (!rc)
        rc = mx8_sha256_final_hex(p->sha, out->hash_hex, err);
    if (rc)
        return rc;
    out->n_records = p->n_records;
    out->max_label = p->max_label;
    out->locations = p->locs.strings; /* handed over */
    out->n_locations = p->locs.n;
    p->locs.strings = NULL;
    p->locs.n = 0;
    return MX8_OK;
}

void mx8_manifest_reader_free(mx8_manifest_reader *p) {
    if (!p)
        return;
    for (size_t i = 0; i < p->locs.n; i++)
        free(p->locs.strings[i]);
    free(p->locs.strings);
    free(p->locs.slots);
    mx8_sha256_free(p->sha);
    free(p->carry);
    free(p);
}

/* The in-memory sink: records into a growing array. */
typedef struct {
    mx8_record *records;
    size_t n, cap;
} record_array;

static int array_sink(void *ctx, const mx8_record *r, mx8_error *err) {
    record_array *a = ctx;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 1024;
        mx8_record *grown = realloc(a->records, cap * sizeof *grown);
        if (!grown)
            return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for %zu manifest records", cap);
        a->records = grown, a->cap = cap;
    }
    a->records[a->n++] = *r;
    return MX8_OK;
}

int mx8_manifest_parse(const char *buf, size_t len, mx8_manifest **out, mx8_error *err) {
    *out = NULL;
    record_array a = {0};
    mx8_manifest *m = calloc(1, sizeof *m);
    mx8_manifest_reader *p = m ? mx8_manifest_reader_new(array_sink, &a, err) : NULL;
    int rc = !m ? mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a manifest") : !p ? MX8_ERR_NOMEM : MX8_OK;
    if (!rc)
        rc = mx8_manifest_reader_feed(p, buf, len, err);
    if (!rc)
        rc = mx8_manifest_reader_finish(p, m, err);
    mx8_manifest_reader_free(p);
    if (m)
        m->records = a.records;
    if (rc) {
        if (m)
            mx8_manifest_free(m);
        else
            free(a.records);
        return rc;
    }
    /* Give back the growth slack: the index is most of a big manifest's memory. */
    if (a.n && a.n < a.cap) {
        mx8_record *r = realloc(m->records, a.n * sizeof *r);
        if (r)
            m->records = r;
    }
    *out = m;
    return MX8_OK;
}

void mx8_manifest_free(mx8_manifest *m) {
    if (!m)
        return;
    if (m->map) { /* an index file's mapping: the strings and records live in it */
        munmap(m->map, m->map_len);
    } else {
        for (size_t i = 0; i < m->n_locations; i++)
            free(m->locations[i]);
        free(m->records);
    }
    free(m->locations);
    free(m);
}
