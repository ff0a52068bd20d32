#include "sample_reader.h"

#include <string.h>

void mx8_sample_reader_init(mx8_sample_reader *r, const char *const *paths, size_t n_paths, mx8_s3_client *s3) {
    memset(r, 0, sizeof *r);
    r->paths = paths;
    r->n_paths = n_paths;
    r->s3 = s3;
    mx8_file_reader_init(&r->file, paths, n_paths);
}

void mx8_sample_reader_close(mx8_sample_reader *r) {
    mx8_file_reader_close(&r->file);
    r->s3 = NULL;
}

static int split(mx8_sample_reader *r, uint32_t loc, char *bucket, const char **key, mx8_error *err) {
    if (loc >= r->n_paths)
        return mx8_error_set(err, MX8_ERR_ARG, "location index %u out of range", loc);
    return mx8_s3_split_location(r->paths[loc], bucket, key, err);
}

int mx8_sample_reader_size(mx8_sample_reader *r, uint32_t loc, uint64_t *size, mx8_error *err) {
    if (!r->s3)
        return mx8_file_size(&r->file, loc, size, err);
    char bucket[MX8_S3_BUCKET_MAX + 1];
    const char *key = NULL;
    int rc = split(r, loc, bucket, &key, err);
    return rc ? rc : mx8_s3_head(r->s3, bucket, key, size, NULL, err);
}

int mx8_sample_reader_read(mx8_sample_reader *r, uint32_t loc, uint64_t off, uint64_t len, uint8_t *dst,
                           mx8_error *err) {
    if (!r->s3)
        return mx8_file_pread(&r->file, loc, off, len, dst, err);
    char bucket[MX8_S3_BUCKET_MAX + 1];
    const char *key = NULL;
    int rc = split(r, loc, bucket, &key, err);
    return rc ? rc : mx8_s3_get_range(r->s3, bucket, key, off, (size_t)len, dst, err);
}
