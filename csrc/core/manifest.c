#include "manifest.h"

#include <stdlib.h>
#include <string.h>

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

typedef struct {
    mx8_manifest *m;
    size_t cap;
    location_table locs;
    mx8_sha256 *sha;
} parser;

static int parse_record(parser *p, const char *line, size_t len, size_t lineno, mx8_error *err) {
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
    size_t expect = p->m->n_records;
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
    if (p->m->n_records == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 1024;
        mx8_record *r = realloc(p->m->records, cap * sizeof *r);
        if (!r)
            return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory at manifest line %zu", lineno);
        p->m->records = r;
        p->cap = cap;
    }
    mx8_record *r = &p->m->records[p->m->n_records++];
    r->offset = off;
    r->length = blen;
    r->location = (uint32_t)loc;
    r->label = label;
    if (label > p->m->max_label)
        p->m->max_label = label;
    return MX8_OK;
}

static int parse_lines(parser *p, const char *buf, size_t len, mx8_error *err) {
    size_t pos = 0, lineno = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len;
        const char *line = buf + pos;
        size_t llen = end - pos;
        lineno++;
        if (memchr(line, '\r', llen))
            return mx8_error_set(err, MX8_ERR_FORMAT,
                                 "manifest line %zu: carriage return (manifests use \\n line endings)", lineno);
        if (memchr(line, '\0', llen)) /* no path or key holds one, and the location table keys on C strings */
            return mx8_error_set(err, MX8_ERR_FORMAT, "manifest line %zu: NUL byte", lineno);
        if (lineno == 1) {
            if (llen != sizeof HEADER - 1 || memcmp(line, HEADER, llen) != 0)
                return mx8_error_set(err, MX8_ERR_FORMAT,
                                     "manifest line 1: expected '%s', found '%.*s'", HEADER,
                                     (int)(llen > 40 ? 40 : llen), line);
        } else {
            int rc = parse_record(p, line, llen, lineno, err);
            if (rc)
                return rc;
        }
        /* The hash covers the canonical bytes: each line with its \n, even if the file's
         * last line lacks one. */
        int rc = mx8_sha256_update(p->sha, line, llen, err);
        if (!rc)
            rc = mx8_sha256_update(p->sha, "\n", 1, err);
        if (rc)
            return rc;
        pos = end + 1;
    }
    if (lineno == 0)
        return mx8_error_set(err, MX8_ERR_FORMAT, "manifest is empty (expected '%s' on line 1)", HEADER);
    return MX8_OK;
}

int mx8_manifest_parse(const char *buf, size_t len, mx8_manifest **out, mx8_error *err) {
    *out = NULL;
    parser p = {0};
    p.m = calloc(1, sizeof *p.m);
    if (!p.m)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a manifest");
    p.m->max_label = -1;
    p.sha = mx8_sha256_new(err);
    int rc = p.sha ? parse_lines(&p, buf, len, err) : MX8_ERR_NOMEM;
    if (!rc)
        rc = mx8_sha256_final_hex(p.sha, p.m->hash_hex, err);
    mx8_sha256_free(p.sha);
    free(p.locs.slots);
    p.m->locations = p.locs.strings;
    p.m->n_locations = p.locs.n;
    if (rc) {
        mx8_manifest_free(p.m);
        return rc;
    }
    /* Give back the growth slack: the index is most of a big manifest's memory. */
    if (p.m->n_records && p.m->n_records < p.cap) {
        mx8_record *r = realloc(p.m->records, p.m->n_records * sizeof *r);
        if (r)
            p.m->records = r;
    }
    *out = p.m;
    return MX8_OK;
}

void mx8_manifest_free(mx8_manifest *m) {
    if (!m)
        return;
    for (size_t i = 0; i < m->n_locations; i++)
        free(m->locations[i]);
    free(m->locations);
    free(m->records);
    free(m);
}
