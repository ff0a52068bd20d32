/* Writes POSIX tar shards: one regular-file member per sample, a pax 'path' record for
 * names that do not fit ustar's 100-byte name field, and the two zero blocks at the end.
 * Readable by tar, Python's tarfile and WebDataset. */
#ifndef MX8_TAR_WRITER_H
#define MX8_TAR_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"

typedef struct {
    int fd;
    uint64_t pos; /* bytes written so far */
    char *path;   /* for error messages */
} mx8_tar_writer;

/* Creates (truncates) path for writing. */
int mx8_tar_open(mx8_tar_writer *w, const char *path, mx8_error *err);

/* Appends one member; *data_offset receives where its data starts in the file (the value
 * the manifest records). mtime is seconds since the epoch. */
int mx8_tar_add(mx8_tar_writer *w, const char *name, const uint8_t *data, size_t len,
                uint64_t mtime, uint64_t *data_offset, mx8_error *err);

/* Bytes a member of this name and size takes in the archive (headers + data + padding). */
uint64_t mx8_tar_member_size(const char *name, size_t len);

/* Writes the end-of-archive blocks, fsyncs and closes. */
int mx8_tar_finish(mx8_tar_writer *w, mx8_error *err);

/* Closes without finishing (after an error); the caller removes the file. */
void mx8_tar_abort(mx8_tar_writer *w);

#endif
