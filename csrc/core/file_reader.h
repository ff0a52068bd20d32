/* Positional reads of manifest byte ranges from local files (shards, or the images of an
 * unpacked ImageFolder). One reader per thread: it caches open descriptors and their sizes,
 * so no lock is needed and a shard is opened once per thread, not once per sample. */
#ifndef MX8_FILE_READER_H
#define MX8_FILE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"

#define MX8_FD_CACHE 64

typedef struct {
    const char *const *paths; /* resolved path of each manifest location (not owned) */
    size_t n_paths;
    struct {
        int64_t loc; /* -1 = empty */
        int fd;
        uint64_t size;
    } cache[MX8_FD_CACHE];
} mx8_file_reader;

void mx8_file_reader_init(mx8_file_reader *r, const char *const *paths, size_t n_paths);
void mx8_file_reader_close(mx8_file_reader *r);

/* Size of location loc's file. */
int mx8_file_size(mx8_file_reader *r, uint32_t loc, uint64_t *size, mx8_error *err);

/* Reads exactly len bytes at off into dst; a range past the end is MX8_ERR_RANGE. */
int mx8_file_pread(mx8_file_reader *r, uint32_t loc, uint64_t off, uint64_t len, uint8_t *dst,
                   mx8_error *err);

#endif
