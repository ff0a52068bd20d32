/* Blocking S3 operations, each a transfer on the client's transport (s3_transport.h):
 * submitted, then waited for. Any number of threads may call them on one client at once;
 * up to the client's max_connections run in parallel.
 *
 * Every request (s3_request.c: one attempt) is signed by s3_sign.c, sent with exactly the URL
 * that was signed (CURLOPT_PATH_AS_IS) and re-signed on each retry. Transient failures (HTTP
 * 500/502/503/504, SlowDown, RequestTimeout, connection resets, timeouts) are retried with
 * capped exponential backoff and jitter, honouring Retry-After; 400/403/404 and other client
 * errors fail at once. Errors are MX8_ERR_IO (MX8_ERR_RANGE for a byte range past the end)
 * and name the operation, s3://bucket/key, byte range, HTTP status, S3 error code and
 * request id; never the secret key. mx8_s3_global_init must have run once before any client
 * is created (the module does it at import). */
#ifndef MX8_S3_CLIENT_H
#define MX8_S3_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"
#include "s3_sign.h"
#include "s3_transport.h"
#include "s3_xml.h"

/* An engine location, "bucket/key", split: the bucket copied into `bucket`, *key pointing
 * into path. Fails (naming the location) unless both parts are non-empty and the bucket
 * fits MX8_S3_BUCKET_MAX. */
int mx8_s3_split_location(const char *path, char bucket[MX8_S3_BUCKET_MAX + 1], const char **key,
                          mx8_error *err);

/* HEAD: object size and ETag (quotes kept, as S3 sends it; etag may be NULL). */
int mx8_s3_head(mx8_s3_client *c, const char *bucket, const char *key, uint64_t *size, char etag[128],
                mx8_error *err);

/* GET bytes [offset, offset+len) into buf. A range that runs past the end of the object is
 * MX8_ERR_RANGE; exactly len bytes are written on success. */
int mx8_s3_get_range(mx8_s3_client *c, const char *bucket, const char *key, uint64_t offset, size_t len,
                     void *buf, mx8_error *err);

/* GET the whole object into a malloc'd buffer (*data, *len), at most max_len bytes. */
int mx8_s3_get(mx8_s3_client *c, const char *bucket, const char *key, size_t max_len, uint8_t **data,
               size_t *len, mx8_error *err);

/* PUT an object (payload signed with its SHA-256). content_type may be NULL; etag may be NULL. */
int mx8_s3_put(mx8_s3_client *c, const char *bucket, const char *key, const void *data, size_t len,
               const char *content_type, char etag[128], mx8_error *err);

/* One ListObjectsV2 page. prefix, token, delimiter may be NULL; max_keys 0 = server default. */
int mx8_s3_list(mx8_s3_client *c, const char *bucket, const char *prefix, const char *token,
                const char *delimiter, int max_keys, mx8_s3_list_page *out, mx8_error *err);

/* Any other request (multipart steps, DELETE): op from mx8_s3_op_for with its query,
 * headers (at most 2, signed) and body (mx8_s3_op_body) set; max_len is the response body
 * limit (0 = 4 KiB). Signed and retried like the ones above. */
typedef struct {
    uint8_t *body; /* malloc'd (NULL when empty); the caller frees it */
    size_t len;
    char etag[128];
} mx8_s3_reply;

int mx8_s3_call_run(mx8_s3_client *c, const mx8_s3_op *op, mx8_s3_reply *out, mx8_error *err);

#endif
