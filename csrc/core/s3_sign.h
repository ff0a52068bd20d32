/* AWS Signature Version 4 for S3 requests, on OpenSSL's libcrypto.
 *
 * mx8 builds the request URL itself and signs exactly that string: libcurl 7.88's own
 * signing does not add x-amz-content-sha256 and signs paths/queries as written, and any
 * re-encoding between signing and sending breaks the signature. The caller hands
 * mx8_s3_signed.url to curl unchanged (with CURLOPT_PATH_AS_IS) and sends every line of
 * mx8_s3_signed.headers, Host included, so what is on the wire is what was signed. */
#ifndef MX8_S3_SIGN_H
#define MX8_S3_SIGN_H

#include <stddef.h>

#include "mx8_error.h"

/* The longest bucket name S3 has allowed (legacy us-east-1 names, and botocore's rule);
 * names of new buckets stop at 63. Every layer checks against this one limit. */
#define MX8_S3_BUCKET_MAX 255

#define MX8_S3_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

typedef struct {
    const char *name;  /* any case; sent and signed lower-cased */
    const char *value; /* sent and signed trimmed, inner runs of blanks collapsed */
} mx8_s3_header;

typedef struct {
    const char *key;   /* raw (unencoded) bytes */
    const char *value; /* raw bytes; NULL or "" is written as "key=" */
} mx8_s3_param;

typedef struct {
    const char *method;   /* "GET", "HEAD", "PUT", "POST", "DELETE" */
    const char *endpoint; /* "scheme://host[:port]" with an optional trailing '/' */
    const char *region;   /* e.g. "us-east-1" */
    const char *bucket;
    const char *key;      /* object key (raw UTF-8 bytes); NULL or "" for bucket requests */
    const mx8_s3_param *query;
    size_t n_query;
    const mx8_s3_header *headers; /* extra signed headers, e.g. range, content-type */
    size_t n_headers;
    const char *payload_sha256;   /* 64 lowercase hex digits, or NULL for UNSIGNED-PAYLOAD */
    const char *access_key;
    const char *secret_key;       /* never copied into an error message */
    const char *session_token;    /* NULL or "" when there is none */
    const char *amz_date;         /* "YYYYMMDDTHHMMSSZ" (UTC), passed in for testability */
    int virtual_host;             /* 1: scheme://bucket.host/key; 0: scheme://host/bucket/key */
} mx8_s3_request;

typedef struct {
    char *url;        /* the canonical URL to send */
    char **headers;   /* "Name: value" lines to send, Authorization last */
    size_t n_headers;
    char signature[65];
} mx8_s3_signed;

/* Builds the canonical URL and the signed headers. On success the caller owns *out and
 * releases it with mx8_s3_signed_free; on failure *out is left empty. */
int mx8_s3_sign(const mx8_s3_request *req, mx8_s3_signed *out, mx8_error *err);
void mx8_s3_signed_free(mx8_s3_signed *s);

/* Appends the AWS percent-encoding of src[0..len) to dst (which has room for 3*len+1
 * bytes): unreserved A-Z a-z 0-9 - _ . ~ kept, '/' kept when keep_slash, everything else
 * %XX with upper-case hex. Returns the number of bytes written (without the NUL). */
size_t mx8_s3_uri_encode(char *dst, const char *src, size_t len, int keep_slash);

/* Formats t (seconds since the epoch) as "YYYYMMDDTHHMMSSZ" in UTC. */
void mx8_s3_amz_date(long long t, char out[17]);

#endif
