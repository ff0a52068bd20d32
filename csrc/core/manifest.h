/* _mx8/manifest.tsv: parse into a compact in-memory index (24 bytes a sample plus the
 * unique location strings) and compute manifest_hash. Format: see docs/FORMAT.md.
 *
 *   schema_version=0
 *   sample_id \t location \t byte_offset \t byte_length \t decode_hint
 */
#ifndef MX8_MANIFEST_H
#define MX8_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"

/* byte_length left empty in the manifest: the record is the whole object. */
#define MX8_LENGTH_WHOLE UINT64_MAX
#define MX8_NO_LABEL (-1)

typedef struct {
    uint64_t offset;   /* first byte of the sample's data (not its tar header) */
    uint64_t length;   /* bytes, or MX8_LENGTH_WHOLE */
    uint32_t location; /* index into mx8_manifest.locations */
    int32_t label;     /* label_id from an imagefolder decode_hint, else MX8_NO_LABEL */
} mx8_record;

typedef struct {
    size_t n_records;
    mx8_record *records;    /* records[i] is sample_id i */
    size_t n_locations;
    char **locations;       /* unique location strings, in first-seen order */
    char hash_hex[65];      /* lowercase hex SHA-256 of the canonical manifest bytes */
    int32_t max_label;      /* largest label id seen, or -1 */
    void *map;              /* an index file mapped (csrc/core/manifest_index.h), or NULL */
    size_t map_len;
} mx8_manifest;

/* Parses a whole manifest held in memory. Errors name the 1-based line number. */
int mx8_manifest_parse(const char *buf, size_t len, mx8_manifest **out, mx8_error *err);
/* Frees a parsed manifest or unmaps an opened index. */
void mx8_manifest_free(mx8_manifest *m);

/* The same parser, streaming: feed the manifest in chunks of any size (a line may span
 * feeds, and is parsed as a whole-buffer parse would), each record goes to the sink in sample-id order,
 * then finish() fills out's n_records, locations (handed over), hash_hex and max_label. */
typedef int (*mx8_record_sink)(void *ctx, const mx8_record *r, mx8_error *err);
typedef struct mx8_manifest_reader mx8_manifest_reader;
mx8_manifest_reader *mx8_manifest_reader_new(mx8_record_sink sink, void *ctx, mx8_error *err);
int mx8_manifest_reader_feed(mx8_manifest_reader *p, const char *buf, size_t len, mx8_error *err);
int mx8_manifest_reader_finish(mx8_manifest_reader *p, mx8_manifest *out, mx8_error *err);
void mx8_manifest_reader_free(mx8_manifest_reader *p);

#endif
