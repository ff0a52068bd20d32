/* S3 multipart upload, one step per call: create, upload parts (in any order, from several
 * clients at once: each part is independent), complete with the part list, or abort.
 * Each step is signed and retried like every other request (s3_client.c). The caller aborts
 * on failure so no half-uploaded parts linger (and cost) on the bucket. */
#ifndef MX8_S3_MULTIPART_H
#define MX8_S3_MULTIPART_H

#include <stddef.h>

#include "s3_client.h"

typedef struct {
    int part_number; /* 1..10000 */
    const char *etag; /* as returned by mx8_s3_upload_part, quotes included */
} mx8_s3_part;

/* Starts an upload; *upload_id is malloc'd (the caller frees it). content_type may be NULL. */
int mx8_s3_multipart_create(mx8_s3_client *c, const char *bucket, const char *key, const char *content_type,
                            char **upload_id, mx8_error *err);

int mx8_s3_upload_part(mx8_s3_client *c, const char *bucket, const char *key, const char *upload_id,
                       int part_number, const void *data, size_t len, char etag[128], mx8_error *err);

/* Parts must be in ascending part_number order. etag (may be NULL) gets the object's ETag. */
int mx8_s3_multipart_complete(mx8_s3_client *c, const char *bucket, const char *key, const char *upload_id,
                              const mx8_s3_part *parts, size_t n, char etag[128], mx8_error *err);

int mx8_s3_multipart_abort(mx8_s3_client *c, const char *bucket, const char *key, const char *upload_id,
                           mx8_error *err);

/* DELETE of one object (S3 answers 204 whether or not it existed). */
int mx8_s3_delete(mx8_s3_client *c, const char *bucket, const char *key, mx8_error *err);

#endif
