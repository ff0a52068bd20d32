/* Reads manifest byte ranges for one worker thread, from local files (pread, descriptor
 * cache) or from S3 (blocking ranged GETs on the engine's client, shared by all its
 * threads). For S3 each location is "bucket/key" (bucket names cannot contain '/'). */
#ifndef MX8_SAMPLE_READER_H
#define MX8_SAMPLE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "file_reader.h"
#include "mx8_error.h"
#include "s3_client.h"

typedef struct {
    mx8_file_reader file;
    mx8_s3_client *s3; /* NULL: local files; else the engine's, not owned */
    const char *const *paths;
    size_t n_paths;
} mx8_sample_reader;

/* s3 NULL reads local files. */
void mx8_sample_reader_init(mx8_sample_reader *r, const char *const *paths, size_t n_paths, mx8_s3_client *s3);
void mx8_sample_reader_close(mx8_sample_reader *r);

/* Size of a location's object (for records without a byte length). */
int mx8_sample_reader_size(mx8_sample_reader *r, uint32_t loc, uint64_t *size, mx8_error *err);

/* Exactly len bytes at off into dst; a range past the end is MX8_ERR_RANGE. */
int mx8_sample_reader_read(mx8_sample_reader *r, uint32_t loc, uint64_t off, uint64_t len, uint8_t *dst,
                           mx8_error *err);

#endif
