/* One S3 request attempt on a libcurl easy handle, for the transport's I/O threads
 * (s3_transport.c): signing, handle set-up, response capture, the retry policy and the
 * error messages.
 *
 * A request's life: mx8_s3_attempt_begin signs it afresh (the date moves on between
 * retries) and sets up the handle; the caller performs the transfer; then
 * mx8_s3_attempt_verdict says done / retry / fail, mx8_s3_backoff_ms how long to wait before
 * the next attempt and mx8_s3_attempt_error words the failure. */
#ifndef MX8_S3_REQUEST_H
#define MX8_S3_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "mx8_error.h"
#include "s3_credentials.h"
#include "s3_sign.h"
#include "s3_xml.h"

#define MX8_S3_ERRBODY_MAX 4096

/* Connection settings (strings owned by whoever holds the struct) and a reference to the
 * credentials, which a refresh may change between any two attempts. */
typedef struct mx8_s3_conf {
    char *endpoint, *region, *ca_file;
    mx8_s3_credentials *creds; /* NULL: anonymous (unsigned) requests */
    int requester_pays;        /* send x-amz-request-payer: requester */
    int virtual_host, max_attempts;
    long connect_timeout_ms, low_speed_time_s, backoff_base_ms, backoff_cap_ms;
    long first_byte_timeout_ms; /* no status line this long after the request was sent: no answer */
} mx8_s3_conf;

/* One operation, the same for all its attempts. */
typedef struct {
    const char *op; /* for messages: "GET", "HEAD", "PUT", "LIST" */
    const char *method;
    const char *bucket, *key;
    const char *shown_key; /* what messages show after s3://bucket/ (the prefix for LIST) */
    const mx8_s3_param *query;
    size_t n_query;
    mx8_s3_header headers[2];
    size_t n_headers;
    const uint8_t *body;
    size_t body_len;
    char payload_sha[65];
    uint8_t *fixed; /* range GET: the caller's buffer of fixed_len bytes */
    size_t fixed_len;
    size_t max_len; /* otherwise: a growable body up to this size */
    int has_range;
    uint64_t range_off;
    char range[64]; /* storage for the Range header value */
} mx8_s3_op;

/* One attempt's response. */
typedef struct {
    const mx8_s3_op *spec;
    long status;
    uint8_t *data; /* growable body (malloc'd; the caller frees it) */
    size_t len, cap;
    int overflow;
    char errbody[MX8_S3_ERRBODY_MAX];
    size_t errlen;
    uint64_t content_length;
    int has_content_length;
    char etag[128], request_id[96], content_range[96];
    char bucket_region[48]; /* x-amz-bucket-region: sent with 301s and 400s for the wrong region */
    long retry_after_s; /* -1 when absent */
    uint64_t creds_generation; /* of the keys this attempt was signed with */
    uint64_t sent_ns;          /* when the request (and its body) was all sent; 0 before */
    int got_status;            /* a status line arrived */
    int no_answer;             /* aborted: no status line within first_byte_timeout_ms */
    long timeout_ms;           /* the conf's first_byte_timeout_ms, for the progress callback */
    CURL *handle;              /* the attempt's easy handle, for the progress callback */
    size_t upload_pos;
    struct curl_slist *headers; /* owned until mx8_s3_attempt_end */
    char curl_msg[CURL_ERROR_SIZE];
} mx8_s3_response;

/* MX8_S3_RETRY_KEYS: refused for its keys, which a refresh may replace (see stale_keys in
 * s3_request.c): worth retrying for longer than max_attempts' backoff alone would wait. */
typedef enum { MX8_S3_DONE = 0, MX8_S3_RETRY = 1, MX8_S3_FAIL = 2, MX8_S3_RETRY_KEYS = 3 } mx8_s3_verdict;

/* An op with the empty payload hash filled in. */
mx8_s3_op mx8_s3_op_for(const char *op, const char *method, const char *bucket, const char *key);
/* A ranged GET of [off, off+len) into buf (len > 0). Its Range header points into *op
 * itself, so the op must stay where it was built. */
void mx8_s3_op_range(mx8_s3_op *op, const char *bucket, const char *key, uint64_t off, size_t len, void *buf);

/* The op's body; its SHA-256 goes into the signature, so S3 rejects a body damaged on the
 * way. body must outlive the op. */
int mx8_s3_op_body(mx8_s3_op *op, const void *body, size_t len, mx8_error *err);

/* Signs the op and sets up h (curl_easy_reset first: options only, connections stay).
 * Resets r; on success r->headers must later be freed by mx8_s3_attempt_end. */
int mx8_s3_attempt_begin(const mx8_s3_conf *conf, CURL *h, const mx8_s3_op *s, mx8_s3_response *r,
                         mx8_error *err);
void mx8_s3_attempt_end(mx8_s3_response *r);

/* What the finished transfer means; e receives the parsed S3 error document. */
/* attempt_no: 1 for the first. A server that gives no answer is tried twice, not
 * max_attempts times: a hung endpoint fails in seconds rather than minutes. */
mx8_s3_verdict mx8_s3_attempt_verdict(const mx8_s3_conf *c, CURLcode cc, const mx8_s3_response *r,
                                      int attempt_no, mx8_s3_error_info *e);

/* Capped exponential backoff with jitter before attempt attempt_no+1, Retry-After honoured
 * (up to the cap). rng is the caller's xorshift state. */
long mx8_s3_backoff_ms(const mx8_s3_conf *conf, uint64_t *rng, int attempt_no, long retry_after_s);

/* The error of a failed op after `attempts` attempts. Returns the mx8 code. */
int mx8_s3_attempt_error(const mx8_s3_conf *c, const mx8_s3_op *s, const mx8_s3_response *r, CURLcode cc,
                         const mx8_s3_error_info *e, int attempts, mx8_error *err);

/* A 2xx answer to a ranged GET must hold exactly the asked bytes from the asked offset. */
int mx8_s3_check_range(const mx8_s3_op *s, const mx8_s3_response *r, mx8_error *err);

/* CLOCK_MONOTONIC in nanoseconds: the timeouts' and the transport's clock. */
uint64_t mx8_s3_now_ns(void);

/* "S3 GET s3://bucket/key @ 100+50" for messages (key shortened to fit). */
void mx8_s3_describe(const mx8_s3_op *s, char *out, size_t cap);

#endif
