#include "manifest_index.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HEADER_BYTES 256
#define BYTE_ORDER_MARK 0x01020304u
#define CHUNK (4u << 20)          /* manifest bytes read at a time */
#define RECORDS_BUFFERED 65536    /* records written at a time (1.5 MiB) */

typedef struct {
    char magic[8]; /* "MX8INDEX" */
    uint32_t version, byte_order;
    uint64_t n_records, n_locations;
    uint64_t records_offset, locations_offset, locations_bytes;
    uint64_t records_sum, locations_sum;
    uint64_t source_size;
    int64_t source_mtime_ns;
    uint64_t source_inode;
    int64_t source_ctime_ns; /* no utime() or cp -p can set it: every write moves it */
    int64_t built_ns;        /* wall clock when the build began (racy-source rule, manifest_index.py) */
    int32_t max_label;
    uint32_t record_bytes;
    char hash_hex[64];
    uint64_t header_sum; /* of the HEADER_BYTES with this field zero */
} index_header;

_Static_assert(sizeof(index_header) <= HEADER_BYTES, "the header fits its bytes");
_Static_assert(sizeof(mx8_record) == 24, "records are 24 bytes on disk");

static const char MAGIC[8] = {'M', 'X', '8', 'I', 'N', 'D', 'E', 'X'};

/* A checksum of whole 64-bit words (records are 24 bytes), fast enough to verify a
 * 100-million-record index on every open: one multiply a word. */
static uint64_t sum_words(uint64_t h, const void *p, size_t n_words) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n_words; i++) {
        uint64_t w;
        memcpy(&w, b + 8 * i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    return h;
}

static uint64_t sum_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t header_sum(const unsigned char *bytes) {
    unsigned char copy[HEADER_BYTES];
    memcpy(copy, bytes, HEADER_BYTES);
    memset(copy + offsetof(index_header, header_sum), 0, sizeof(uint64_t));
    return sum_words(0xcbf29ce484222325ULL, copy, HEADER_BYTES / 8);
}

/* ---- build ---- */

typedef struct {
    FILE *out;
    mx8_record buf[RECORDS_BUFFERED];
    size_t n;
    uint64_t sum;
    const char *path;
} record_writer;

static int writer_flush(record_writer *w, mx8_error *err) {
    if (w->n && fwrite(w->buf, sizeof w->buf[0], w->n, w->out) != w->n)
        return mx8_error_sys(err, errno, "writing index %s", w->path);
    w->sum = sum_words(w->sum, w->buf, w->n * sizeof w->buf[0] / 8);
    w->n = 0;
    return MX8_OK;
}

static int writer_sink(void *ctx, const mx8_record *r, mx8_error *err) {
    record_writer *w = ctx;
    w->buf[w->n++] = *r;
    return w->n == RECORDS_BUFFERED ? writer_flush(w, err) : MX8_OK;
}

static int64_t ns_of(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

static int build_into(FILE *in, const struct stat *st, int64_t built_ns, FILE *out, const char *manifest_path,
                      const char *tmp, mx8_error *err) {
    record_writer *w = calloc(1, sizeof *w);
    char *chunk = malloc(CHUNK);
    mx8_manifest meta = {0};
    mx8_manifest_reader *p = w && chunk ? mx8_manifest_reader_new(writer_sink, w, err) : NULL;
    int rc = !w || !chunk ? mx8_error_set(err, MX8_ERR_NOMEM, "out of memory building an index") : !p ? MX8_ERR_NOMEM
                                                                                                    : MX8_OK;
    unsigned char header[HEADER_BYTES] = {0};
    if (!rc && fwrite(header, 1, HEADER_BYTES, out) != HEADER_BYTES)
        rc = mx8_error_sys(err, errno, "writing index %s", tmp);
    if (!rc) {
        w->out = out, w->path = tmp, w->sum = 0xcbf29ce484222325ULL;
        size_t got;
        while (!rc && (got = fread(chunk, 1, CHUNK, in)) > 0)
            rc = mx8_manifest_reader_feed(p, chunk, got, err);
        if (!rc && ferror(in))
            rc = mx8_error_sys(err, errno, "reading %s", manifest_path);
    }
    if (!rc)
        rc = mx8_manifest_reader_finish(p, &meta, err);
    if (!rc)
        rc = writer_flush(w, err);
    uint64_t loc_bytes = 0, loc_sum = 0xcbf29ce484222325ULL;
    for (size_t i = 0; !rc && i < meta.n_locations; i++) {
        size_t len = strlen(meta.locations[i]) + 1;
        if (fwrite(meta.locations[i], 1, len, out) != len)
            rc = mx8_error_sys(err, errno, "writing index %s", tmp);
        loc_sum = sum_bytes(loc_sum, meta.locations[i], len);
        loc_bytes += len;
    }
    if (!rc) {
        index_header h = {.version = MX8_INDEX_VERSION, .byte_order = BYTE_ORDER_MARK, .n_records = meta.n_records,
                          .n_locations = meta.n_locations, .records_offset = HEADER_BYTES,
                          .locations_offset = HEADER_BYTES + meta.n_records * sizeof(mx8_record),
                          .locations_bytes = loc_bytes, .records_sum = w->sum, .locations_sum = loc_sum,
                          .source_size = (uint64_t)st->st_size, .source_mtime_ns = ns_of(st->st_mtim),
                          .source_inode = (uint64_t)st->st_ino, .source_ctime_ns = ns_of(st->st_ctim),
                          .built_ns = built_ns, .max_label = meta.max_label,
                          .record_bytes = sizeof(mx8_record)};
        memcpy(h.magic, MAGIC, sizeof MAGIC);
        memcpy(h.hash_hex, meta.hash_hex, 64);
        memcpy(header, &h, sizeof h);
        uint64_t hs = header_sum(header);
        memcpy(header + offsetof(index_header, header_sum), &hs, sizeof hs);
        if (fseek(out, 0, SEEK_SET) || fwrite(header, 1, HEADER_BYTES, out) != HEADER_BYTES || fflush(out) ||
            fsync(fileno(out)))
            rc = mx8_error_sys(err, errno, "writing index %s", tmp);
    }
    for (size_t i = 0; i < meta.n_locations; i++)
        free(meta.locations[i]);
    free(meta.locations);
    mx8_manifest_reader_free(p);
    free(chunk);
    free(w);
    return rc;
}

int mx8_index_build(const char *manifest_path, const char *index_path, mx8_error *err) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now); /* before the stat: a write after it is "racy" */
    FILE *in = fopen(manifest_path, "rb");
    if (!in)
        return mx8_error_sys(err, errno, "cannot read %s", manifest_path);
    struct stat st;
    if (fstat(fileno(in), &st)) {
        int e = errno;
        fclose(in);
        return mx8_error_sys(err, e, "cannot stat %s", manifest_path);
    }
    /* A temporary of our own beside the index (O_EXCL, random suffix): builders in other
     * threads, or in processes of other machines with the same pid, never share it. */
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", index_path) >= (int)sizeof tmp) {
        fclose(in);
        return mx8_error_set(err, MX8_ERR_IO, "index path too long: %s", index_path);
    }
    int fd = mkostemp(tmp, O_CLOEXEC);
    FILE *out = fd >= 0 && fchmod(fd, 0644) == 0 ? fdopen(fd, "wb") : NULL;
    if (!out) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        fclose(in);
        return mx8_error_sys(err, e, "cannot write an index beside %s", index_path);
    }
    int rc = build_into(in, &st, ns_of(now), out, manifest_path, tmp, err);
    fclose(in);
    if (fclose(out) && !rc)
        rc = mx8_error_sys(err, errno, "writing index %s", tmp);
    if (!rc && rename(tmp, index_path))
        rc = mx8_error_sys(err, errno, "cannot move index into place at %s", index_path);
    if (rc)
        unlink(tmp); /* our own name: nobody else's temporary */
    return rc;
}

/* ---- open ---- */

static int bad(mx8_error *err, const char *path, const char *what) {
    return mx8_error_set(err, MX8_ERR_FORMAT, "index %s: %s", path, what);
}

static int check(const unsigned char *map, size_t size, const char *path, index_header *h, mx8_error *err) {
    if (size < HEADER_BYTES)
        return bad(err, path, "truncated (shorter than its header)");
    memcpy(h, map, sizeof *h);
    if (memcmp(h->magic, MAGIC, sizeof MAGIC))
        return bad(err, path, "not an mx8 index (bad magic)");
    if (h->version != MX8_INDEX_VERSION)
        return bad(err, path, "another index version");
    if (h->byte_order != BYTE_ORDER_MARK || h->record_bytes != sizeof(mx8_record))
        return bad(err, path, "written by a machine of another byte order or record layout");
    uint64_t hs;
    memcpy(&hs, map + offsetof(index_header, header_sum), sizeof hs);
    if (hs != header_sum(map))
        return bad(err, path, "header checksum mismatch");
    if (h->records_offset != HEADER_BYTES || h->n_records > (size - HEADER_BYTES) / sizeof(mx8_record) ||
        h->locations_offset != HEADER_BYTES + h->n_records * sizeof(mx8_record) ||
        h->locations_bytes != size - h->locations_offset || h->n_locations > h->locations_bytes ||
        h->n_locations > UINT32_MAX + 1ULL || h->max_label < -1)
        return bad(err, path, "sizes do not match the file (truncated or overwritten)");
    for (int i = 0; i < 64; i++)
        if (!((h->hash_hex[i] >= '0' && h->hash_hex[i] <= '9') || (h->hash_hex[i] >= 'a' && h->hash_hex[i] <= 'f')))
            return bad(err, path, "bad manifest hash in the header");
    const unsigned char *locs = map + h->locations_offset;
    if (sum_bytes(0xcbf29ce484222325ULL, locs, h->locations_bytes) != h->locations_sum)
        return bad(err, path, "location table checksum mismatch");
    uint64_t nuls = 0;
    for (uint64_t i = 0; i < h->locations_bytes; i++)
        nuls += locs[i] == 0;
    if (nuls != h->n_locations || (h->locations_bytes && locs[h->locations_bytes - 1] != 0))
        return bad(err, path, "location table is not its count of strings");
    /* Every record in range, and the records as written: one pass, which also brings the
     * pages into the page cache that all readers of the node share. */
    const mx8_record *r = (const mx8_record *)(map + HEADER_BYTES);
    uint64_t sum = 0xcbf29ce484222325ULL;
    for (uint64_t i = 0; i < h->n_records; i++) {
        if (r[i].location >= h->n_locations || r[i].label < -1 || r[i].label > h->max_label ||
            r[i].offset > (uint64_t)INT64_MAX || (r[i].length != MX8_LENGTH_WHOLE && r[i].length > (uint64_t)INT64_MAX))
            return mx8_error_set(err, MX8_ERR_FORMAT, "index %s: record %llu is out of range", path,
                                 (unsigned long long)i);
        sum = sum_words(sum, &r[i], sizeof r[i] / 8);
    }
    if (sum != h->records_sum)
        return bad(err, path, "records checksum mismatch");
    return MX8_OK;
}

int mx8_index_open(const char *index_path, mx8_manifest **out, mx8_index_source *source, mx8_error *err) {
    *out = NULL;
    int fd = open(index_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mx8_error_sys(err, errno, "cannot open index %s", index_path);
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        return mx8_error_sys(err, e, "cannot stat index %s", index_path);
    }
    size_t size = (size_t)st.st_size;
    void *map = size ? mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd);
    if (map == MAP_FAILED)
        return size ? mx8_error_sys(err, errno, "cannot map index %s", index_path)
                    : bad(err, index_path, "empty");
    index_header h;
    int rc = check(map, size, index_path, &h, err);
    mx8_manifest *m = rc ? NULL : calloc(1, sizeof *m);
    if (!rc && m && h.n_locations && !(m->locations = malloc(h.n_locations * sizeof *m->locations))) {
        free(m);
        m = NULL;
    }
    if (!rc && !m)
        rc = mx8_error_set(err, MX8_ERR_NOMEM, "out of memory opening index %s", index_path);
    if (rc) {
        munmap(map, size);
        return rc;
    }
    char *s = (char *)map + h.locations_offset;
    for (uint64_t i = 0; i < h.n_locations; i++) {
        m->locations[i] = s;
        s += strlen(s) + 1;
    }
    m->map = map, m->map_len = size;
    m->records = (mx8_record *)((char *)map + HEADER_BYTES); /* read-only mapping: nothing writes records */
    m->n_records = h.n_records, m->n_locations = h.n_locations, m->max_label = h.max_label;
    memcpy(m->hash_hex, h.hash_hex, 64);
    m->hash_hex[64] = '\0';
    *source = (mx8_index_source){h.source_size, h.source_mtime_ns, h.source_inode, h.source_ctime_ns, h.built_ns};
    *out = m;
    return MX8_OK;
}
