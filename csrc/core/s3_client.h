/* Blocking S3 operations on one libcurl easy handle (keeps its connection between calls).
 *
 * Every request (s3_request.c: one attempt) is signed by s3_sign.c, sent with exactly the URL that was signed
 * (CURLOPT_PATH_AS_IS) and re-signed on each retry. Transient failures (HTTP 500/502/503/
 * 504, SlowDown, RequestTimeout, connection resets, timeouts) are retried with capped
 * exponential backoff and jitter, honouring Retry-After; 400/403/404 and other client
 * errors fail at once. Errors are MX8_ERR_IO (MX8_ERR_RANGE for a byte range past the end)
 * and name the operation, s3://bucket/key, byte range, HTTP status, S3 error code and
 * request id; never the secret key.
 *
 * Thread-safety: a client serialises its own calls with a mutex, so one client may be
 * shared; use one client per thread for parallel requests. mx8_s3_global_init must have
 * run once before any client is created (the module does it at import). */
#ifndef MX8_S3_CLIENT_H
#define MX8_S3_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"
#include "s3_credentials.h"
#include "s3_sign.h"
#include "s3_xml.h"

typedef struct mx8_s3_client mx8_s3_client;

typedef struct {
    const char *endpoint; /* scheme://host[:port] */
    const char *region;
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL or "" when there is none */
    /* Refreshable credentials shared with other clients (the client takes a reference);
     * when set, the three keys above are ignored. */
    mx8_s3_credentials *credentials;
    int unsigned_requests; /* anonymous: no keys, no Authorization header (public buckets) */
    int requester_pays;    /* x-amz-request-payer: requester on every request */
    const char *ca_file;       /* CA bundle for https (CURLOPT_CAINFO); NULL: libcurl's built-in path */
    int virtual_host;
    /* 0 picks the default shown */
    long connect_timeout_ms; /* 5000 */
    long first_byte_timeout_ms; /* 5000: the request sent, no status line yet: tried twice, then fails */
    long low_speed_time_s;   /* 20: abort a transfer slower than 1 KiB/s for this long */
    int max_attempts;        /* 6 (so up to 5 retries) */
    long backoff_base_ms;    /* 100: first retry waits a random 50-100% of this */
    long backoff_cap_ms;     /* 5000: no wait longer, Retry-After included */
} mx8_s3_options;

typedef struct {
    uint64_t requests; /* HTTP requests sent, retries included */
    uint64_t retries;
    uint64_t bytes_in; /* response body bytes delivered to callers */
    uint64_t bytes_out;
} mx8_s3_stats;

/* Calls curl_global_init once; not thread-safe itself (call it before starting threads). */
int mx8_s3_global_init(mx8_error *err);

int mx8_s3_client_new(const mx8_s3_options *o, mx8_s3_client **out, mx8_error *err);
void mx8_s3_client_free(mx8_s3_client *c);

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

/* Any other request (multipart steps, DELETE), signed and retried like the ones above. */
typedef struct {
    const char *op;     /* for messages, e.g. "CompleteMultipartUpload" */
    const char *method; /* GET, HEAD, PUT, POST, DELETE */
    const char *bucket, *key;
    const mx8_s3_param *query;
    size_t n_query;
    const mx8_s3_header *headers; /* at most 2, signed */
    size_t n_headers;
    const void *body; /* its SHA-256 is signed */
    size_t body_len;
    size_t max_response; /* response body limit; 0 = 4 KiB */
} mx8_s3_call;

typedef struct {
    uint8_t *body; /* malloc'd (NULL when empty); the caller frees it */
    size_t len;
    char etag[128];
} mx8_s3_reply;

int mx8_s3_call_run(mx8_s3_client *c, const mx8_s3_call *call, mx8_s3_reply *out, mx8_error *err);

void mx8_s3_client_stats(mx8_s3_client *c, mx8_s3_stats *out);

/* The client's settings and credentials (s3_request.h), for another transport (the
 * engine's fetcher) that signs the same way; valid while the client lives. */
struct mx8_s3_conf;
const struct mx8_s3_conf *mx8_s3_client_conf(const mx8_s3_client *c);

#endif
