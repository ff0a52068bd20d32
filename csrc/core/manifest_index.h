/* The binary index of a manifest: its records as the engine reads them (mx8_record, 24 bytes
 * a sample) and its location strings, in one file that readers map instead of parsing, so
 * every rank and DataLoader worker of a node shares one copy in the page cache and a
 * process pays no parse and no private memory for it.
 *
 * Built from a manifest.tsv by one streaming pass in bounded memory (the records go to the
 * file as they are parsed; only the unique locations are held), into a temporary file
 * renamed into place, so a reader sees a whole index or none. The header records the
 * manifest's hash, the size, mtime, ctime and inode of the file it was built from, and when
 * the build began, so a caller can tell whether the index still describes that file
 * without reading it.
 *
 * Opening never trusts the file: magic, version, byte order, the header's and the
 * locations' checksums, every size against the file's, and one pass over the records that
 * checks their checksum and that every location and label is in range. Any fault is
 * MX8_ERR_FORMAT naming it: rebuild the index.
 *
 * Layout (host byte order, which the header records; docs/FORMAT.md):
 *   header      256 bytes: mx8_index_header, zero-padded
 *   records     n_records * 24 bytes at records_offset (8-aligned)
 *   locations   n_locations NUL-terminated strings at locations_offset */
#ifndef MX8_MANIFEST_INDEX_H
#define MX8_MANIFEST_INDEX_H

#include <stdint.h>

#include "manifest.h"
#include "mx8_error.h"

#define MX8_INDEX_VERSION 2

typedef struct {
    uint64_t size;     /* bytes of the manifest file the index was built from */
    int64_t mtime_ns;  /* its modification time */
    uint64_t inode;
    int64_t ctime_ns;  /* its status change time (set by every write; no utime() sets it) */
    int64_t built_ns;  /* when the build began (wall clock) */
} mx8_index_source;

/* Builds index_path from the manifest file at manifest_path. */
int mx8_index_build(const char *manifest_path, const char *index_path, mx8_error *err);

/* Maps and checks index_path; *out is a manifest whose records and strings live in the
 * mapping (mx8_manifest_free unmaps it); *source: what it was built from. */
int mx8_index_open(const char *index_path, mx8_manifest **out, mx8_index_source *source, mx8_error *err);

#endif
