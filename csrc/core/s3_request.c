#include "s3_request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

static const char EMPTY_SHA256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

mx8_s3_op mx8_s3_op_for(const char *op, const char *method, const char *bucket, const char *key) {
    mx8_s3_op s;
    memset(&s, 0, sizeof s);
    s.op = op;
    s.method = method;
    s.bucket = bucket;
    s.key = key;
    memcpy(s.payload_sha, EMPTY_SHA256, sizeof EMPTY_SHA256);
    return s;
}

void mx8_s3_op_range(mx8_s3_op *op, const char *bucket, const char *key, uint64_t off, size_t len, void *buf) {
    mx8_s3_op s = mx8_s3_op_for("GET", "GET", bucket, key);
    *op = s;
    snprintf(op->range, sizeof op->range, "bytes=%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + len - 1));
    op->headers[0] = (mx8_s3_header){"range", op->range}; /* points into *op: never copy an op */
    op->n_headers = 1;
    op->fixed = buf;
    op->fixed_len = len;
    op->has_range = 1;
    op->range_off = off;
}

int mx8_s3_op_body(mx8_s3_op *op, const void *body, size_t len, mx8_error *err) {
    op->body = body;
    op->body_len = len;
    if (!len)
        return MX8_OK; /* the empty payload's hash is already there */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdn = 0;
    if (EVP_Digest(body, len, md, &mdn, EVP_sha256(), NULL) != 1 || mdn != 32)
        return mx8_error_set(err, MX8_ERR_NOMEM, "SHA-256 of an S3 request body failed (libcrypto)");
    for (int i = 0; i < 32; i++)
        snprintf(op->payload_sha + 2 * i, 3, "%02x", md[i]);
    return MX8_OK;
}

/* ---- curl callbacks ---- */

static void copy_header_value(char *dst, size_t cap, const char *v, size_t n) {
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    mx8_s3_response *r = ud;
    size_t len = size * n;
    char tmp[32];
    if (len > 5 && !memcmp(p, "HTTP/", 5)) {
        /* A new status line (after a 100 Continue, say): start the response afresh. */
        const char *sp = memchr(p, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->got_status = 1;
        r->has_content_length = 0;
        r->retry_after_s = -1;
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return len;
    size_t nl = (size_t)(colon - p), vl = len - nl - 1;
    if (nl == 14 && !strncasecmp(p, "content-length", nl)) {
        copy_header_value(tmp, sizeof tmp, colon + 1, vl);
        r->content_length = strtoull(tmp, NULL, 10);
        r->has_content_length = 1;
    } else if (nl == 4 && !strncasecmp(p, "etag", nl)) {
        copy_header_value(r->etag, sizeof r->etag, colon + 1, vl);
    } else if (nl == 16 && !strncasecmp(p, "x-amz-request-id", nl)) {
        copy_header_value(r->request_id, sizeof r->request_id, colon + 1, vl);
    } else if (nl == 19 && !strncasecmp(p, "x-amz-bucket-region", nl)) {
        copy_header_value(r->bucket_region, sizeof r->bucket_region, colon + 1, vl);
    } else if (nl == 13 && !strncasecmp(p, "content-range", nl)) {
        copy_header_value(r->content_range, sizeof r->content_range, colon + 1, vl);
    } else if (nl == 11 && !strncasecmp(p, "retry-after", nl)) {
        /* Only the delta-seconds form; an HTTP-date falls back to the computed backoff. */
        copy_header_value(tmp, sizeof tmp, colon + 1, vl);
        char *end;
        long v = strtol(tmp, &end, 10);
        r->retry_after_s = end != tmp && !*end && v >= 0 ? (v > 86400 ? 86400 : v) : -1; /* no overflow in ms */
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    mx8_s3_response *r = ud;
    size_t len = size * n;
    if (r->status < 200 || r->status >= 300) { /* an error document: keep its head for the message */
        size_t room = MX8_S3_ERRBODY_MAX - 1 - r->errlen, k = len < room ? len : room;
        memcpy(r->errbody + r->errlen, p, k);
        r->errlen += k;
        return len;
    }
    const mx8_s3_op *s = r->spec;
    if (s->fixed) {
        if (len > s->fixed_len - r->len)
            return r->overflow = 1, 0; /* more than asked for: abort (CURLE_WRITE_ERROR) */
        memcpy(s->fixed + r->len, p, len);
        r->len += len;
        return len;
    }
    if (len > s->max_len - r->len)
        return r->overflow = 1, 0;
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 64 * 1024;
        while (cap < r->len + len)
            cap *= 2;
        uint8_t *d = realloc(r->data, cap);
        if (!d)
            return 0;
        r->data = d;
        r->cap = cap;
    }
    memcpy(r->data + r->len, p, len);
    r->len += len;
    return len;
}

static size_t on_upload(char *p, size_t size, size_t n, void *ud) {
    mx8_s3_response *r = ud;
    size_t left = r->spec->body_len - r->upload_pos, k = size * n < left ? size * n : left;
    memcpy(p, r->spec->body + r->upload_pos, k);
    r->upload_pos += k;
    return k;
}

static int on_seek(void *ud, curl_off_t off, int origin) {
    mx8_s3_response *r = ud;
    if (origin != SEEK_SET || off < 0 || (size_t)off > r->spec->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->upload_pos = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

uint64_t mx8_s3_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The first-byte rule: libcurl's low-speed rule treats a server that accepted the connection
 * and never answers like a slow transfer (20 s per attempt, 6 attempts). This callback ends
 * the attempt once the request is all sent and no status line came within the timeout. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)dltotal, (void)dlnow, (void)ultotal;
    mx8_s3_response *r = ud;
    if (r->got_status)
        return 0;
    curl_off_t connected = 0; /* 0 until the connection (TLS included) is up: connect_timeout_ms's part */
    curl_easy_getinfo(r->handle, CURLINFO_PRETRANSFER_TIME_T, &connected);
    if (!r->sent_ns && connected > 0 && (size_t)ulnow >= r->spec->body_len)
        r->sent_ns = mx8_s3_now_ns(); /* an upload's answer comes only after its body */
    if (r->sent_ns && r->timeout_ms > 0 && mx8_s3_now_ns() - r->sent_ns > (uint64_t)r->timeout_ms * 1000000ULL) {
        r->no_answer = 1;
        return 1; /* CURLE_ABORTED_BY_CALLBACK */
    }
    return 0;
}

/* ---- one attempt ---- */

static void setup_transfer(const mx8_s3_conf *c, CURL *h, const mx8_s3_op *s, mx8_s3_response *r,
                           const char *url) {
    curl_easy_reset(h); /* options only; the connection and DNS caches stay */
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);      /* send the signed path byte for byte */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);        /* no SIGALRM in threads */
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    /* A libcurl vendored into the wheel has its build machine's CA path compiled in, which
     * other distributions keep elsewhere: mx8/s3config.py finds this machine's bundle. */
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    /* HTTP/1.1 as S3 speaks it: each easy handle then has its own connection, so the
     * fetcher's cap on handles is a cap on connections (HTTP/2 would multiplex them). */
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    /* A stalled transfer ends instead of hanging: under 1 KiB/s for low_speed_time_s. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->low_speed_time_s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->curl_msg);
    curl_easy_setopt(h, CURLOPT_PRIVATE, r);
    r->timeout_ms = c->first_byte_timeout_ms;
    r->handle = h;
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, r);
    if (!strcmp(s->method, "HEAD")) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(s->method, "PUT") || !strcmp(s->method, "POST")) {
        /* An upload (even of 0 bytes) sends Content-Length, which S3 requires on POST too,
         * and no form Content-Type that a server might parse the body as. */
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        if (!strcmp(s->method, "POST"))
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "POST");
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
        curl_easy_setopt(h, CURLOPT_READDATA, r);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)s->body_len);
    } else if (strcmp(s->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, s->method);
    }
}

int mx8_s3_attempt_begin(const mx8_s3_conf *c, CURL *h, const mx8_s3_op *s, mx8_s3_response *r,
                         mx8_error *err) {
    memset(r, 0, sizeof *r);
    r->spec = s;
    r->retry_after_s = -1;
    char amz_date[17];
    mx8_s3_amz_date((long long)time(NULL), amz_date);
    /* The keys as they are now: a refresh between attempts is picked up by the next one.
     * Anonymous requests (no creds) are built by the same code with placeholder keys, and
     * sent without the Authorization line: S3 serves public objects to such requests, and
     * the x-amz-date/x-amz-content-sha256 headers they keep are harmless. */
    static _Thread_local mx8_s3_key_copy keys; /* 8.5 KB: not on the I/O thread's stack */
    if (c->creds) {
        mx8_s3_credentials_copy(c->creds, &keys);
    } else {
        memset(&keys, 0, sizeof keys);
        strcpy(keys.access_key, "ANONYMOUS");
        strcpy(keys.secret_key, "unused");
    }
    r->creds_generation = keys.generation;
    /* Requester pays: the bucket owner's opt-in, signed like any other header. */
    mx8_s3_header hdrs[3];
    size_t nh = 0;
    for (; nh < s->n_headers && nh < 2; nh++)
        hdrs[nh] = s->headers[nh];
    if (c->requester_pays)
        hdrs[nh++] = (mx8_s3_header){"x-amz-request-payer", "requester"};
    mx8_s3_request rq = {.method = s->method, .endpoint = c->endpoint, .region = c->region,
                         .bucket = s->bucket, .key = s->key, .query = s->query, .n_query = s->n_query,
                         .headers = hdrs, .n_headers = nh, .payload_sha256 = s->payload_sha,
                         .access_key = keys.access_key, .secret_key = keys.secret_key,
                         .session_token = keys.session_token, .amz_date = amz_date, .virtual_host = c->virtual_host};
    mx8_s3_signed sg;
    int rc = mx8_s3_sign(&rq, &sg, err);
    mx8_s3_key_copy_wipe(&keys);
    if (rc)
        return rc;
    size_t send = c->creds ? sg.n_headers : sg.n_headers - 1; /* Authorization is last */
    /* "Expect:" turns off 100-continue: one round trip less, and nothing to re-sign. */
    for (size_t i = 0; i <= send; i++) {
        struct curl_slist *t = curl_slist_append(r->headers, i < send ? sg.headers[i] : "Expect:");
        if (!t) {
            mx8_s3_signed_free(&sg);
            mx8_s3_attempt_end(r);
            return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory building an S3 request");
        }
        r->headers = t;
    }
    setup_transfer(c, h, s, r, sg.url); /* libcurl copies the URL */
    mx8_s3_signed_free(&sg);
    return MX8_OK;
}

void mx8_s3_attempt_end(mx8_s3_response *r) {
    curl_slist_free_all(r->headers); /* signed headers: the session token is among them */
    r->headers = NULL;
}

/* ---- retry policy ---- */

static int transient_curl(CURLcode cc) {
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_CONNECT: case CURLE_OPERATION_TIMEDOUT: case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR: case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR: case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

static int transient_http(long status, const mx8_s3_error_info *e) {
    return status == 500 || status == 502 || status == 503 || status == 504 || status == 429 ||
           !strcmp(e->code, "SlowDown") || !strcmp(e->code, "RequestTimeout") || !strcmp(e->code, "InternalError");
}

/* S3's answers to keys that expired or were revoked: worth another try, re-signed, when a
 * refresh has replaced the keys since this attempt was signed, or when the keys are ones a
 * refresher replaces (the refresh may land just after the old keys stopped working; the
 * retries' backoff gives it that time). */
static int stale_keys(const mx8_s3_conf *c, const mx8_s3_response *r, const mx8_s3_error_info *e) {
    static const char *codes[] = {"ExpiredToken", "InvalidAccessKeyId", "InvalidToken", "TokenRefreshRequired",
                                  "SignatureDoesNotMatch", "AccessDenied", NULL};
    if (!c->creds || (r->status != 400 && r->status != 403))
        return 0;
    int known = r->status == 403 && !e->code[0]; /* a HEAD has no body to name the code */
    for (int i = 0; codes[i] && !known; i++)
        known = !strcmp(e->code, codes[i]);
    return known && (mx8_s3_credentials_generation(c->creds) != r->creds_generation ||
                     mx8_s3_credentials_refreshable(c->creds));
}

mx8_s3_verdict mx8_s3_attempt_verdict(const mx8_s3_conf *c, CURLcode cc, const mx8_s3_response *r,
                                      int attempt_no, mx8_s3_error_info *e) {
    memset(e, 0, sizeof *e);
    if (cc == CURLE_OK && r->status >= 200 && r->status < 300)
        return MX8_S3_DONE;
    if (r->no_answer)
        return attempt_no < 2 ? MX8_S3_RETRY : MX8_S3_FAIL;
    mx8_s3_parse_error(r->errbody, r->errlen, e);
    if (cc == CURLE_OK && stale_keys(c, r, e))
        return MX8_S3_RETRY_KEYS;
    int retry = cc != CURLE_OK ? transient_curl(cc) && !r->overflow : transient_http(r->status, e);
    return retry ? MX8_S3_RETRY : MX8_S3_FAIL;
}

long mx8_s3_backoff_ms(const mx8_s3_conf *c, uint64_t *rng, int attempt_no, long retry_after_s) {
    long d = c->backoff_base_ms;
    for (int i = 1; i < attempt_no && d < c->backoff_cap_ms; i++)
        d *= 2;
    if (d > c->backoff_cap_ms)
        d = c->backoff_cap_ms;
    *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
    d = d / 2 + (long)(*rng % (uint64_t)(d / 2 + 1)); /* jitter: spread retries of many clients */
    if (retry_after_s >= 0 && retry_after_s * 1000 > d)
        d = retry_after_s * 1000 < c->backoff_cap_ms ? retry_after_s * 1000 : c->backoff_cap_ms;
    return d;
}

/* ---- messages ---- */

void mx8_s3_describe(const mx8_s3_op *s, char *out, size_t cap) {
    const char *key = s->shown_key ? s->shown_key : s->key ? s->key : "";
    int n = snprintf(out, cap, "S3 %s s3://%.63s/%.110s%s", s->op, s->bucket, key, strlen(key) > 110 ? "..." : "");
    if (s->has_range && n > 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, " @ %llu+%zu", (unsigned long long)s->range_off, s->fixed_len);
}

/* The host part of scheme://host[:port], for messages. */
static void endpoint_host(const char *endpoint, char *out, size_t n) {
    const char *h = strstr(endpoint, "://");
    h = h ? h + 3 : endpoint;
    snprintf(out, n, "%.*s", (int)strcspn(h, "/"), h);
}

static int http_error(const mx8_s3_conf *c, const mx8_s3_op *s, const mx8_s3_response *r,
                      const mx8_s3_error_info *e, int attempts, mx8_error *err) {
    char what[200], host[160], hint[512] = "";
    mx8_s3_describe(s, what, sizeof what);
    endpoint_host(c->endpoint, host, sizeof host);
    const char *rid = e->request_id[0] ? e->request_id : r->request_id;
    int code = r->status == 416 ? MX8_ERR_RANGE : MX8_ERR_IO;
    char tries[32] = "";
    if (attempts > 1)
        snprintf(tries, sizeof tries, " after %d attempts", attempts);
    /* A bucket in another region: say which, so the fix (AWS_REGION, region=) is obvious. */
    const char *bucket_region = e->region[0] ? e->region : r->bucket_region;
    if (bucket_region[0] && strcmp(bucket_region, c->region) != 0)
        snprintf(hint, sizeof hint, "; the bucket is in region %s (set AWS_REGION=%s or pass region=)%s%s",
                 bucket_region, bucket_region, e->endpoint[0] ? ", served at " : "", e->endpoint);
    else if (e->endpoint[0])
        snprintf(hint, sizeof hint, "; the bucket is served at %s", e->endpoint);
    mx8_error_set(err, code, "%s: HTTP %ld%s%s%s%s%s (endpoint %s, region %s, request id %.60s)%s", what,
                  r->status, e->code[0] ? " " : "", e->code, e->message[0] ? ": " : "", e->message, hint, host,
                  c->region, rid[0] ? rid : "none", tries);
    if (err && code == MX8_ERR_IO)
        err->sys_errno = r->status == 404 ? ENOENT : r->status == 403 ? EACCES : 0;
    return code;
}

int mx8_s3_attempt_error(const mx8_s3_conf *c, const mx8_s3_op *s, const mx8_s3_response *r, CURLcode cc,
                         const mx8_s3_error_info *e, int attempts, mx8_error *err) {
    char what[200], host[160];
    mx8_s3_describe(s, what, sizeof what);
    endpoint_host(c->endpoint, host, sizeof host);
    if (cc == CURLE_WRITE_ERROR && r->overflow)
        return mx8_error_set(err, MX8_ERR_IO, /* a ReadError: MX8_ERR_TOO_LARGE means an image */
                             s->fixed ? "%s: the server sent more bytes than the range asked for (HTTP %ld)"
                                      : "%s: the object is larger than the limit (HTTP %ld)",
                             what, r->status);
    if (r->no_answer)
        return mx8_error_set(err, MX8_ERR_IO, "%s: no answer within %ld ms of sending the request, %d attempts "
                             "(endpoint %s, region %s)", what, c->first_byte_timeout_ms, attempts, host, c->region);
    if (cc != CURLE_OK)
        return mx8_error_set(err, MX8_ERR_IO, "%s: %s (%.120s; endpoint %s)%s", what, curl_easy_strerror(cc),
                             r->curl_msg, host, attempts > 1 ? ", retries exhausted" : "");
    return http_error(c, s, r, e, attempts, err);
}

/* Size of the object from "bytes a-b/N" or "bytes star/N"; "?" when unknown. */
static const char *range_total(const mx8_s3_response *r) {
    const char *slash = strrchr(r->content_range, '/');
    return slash && slash[1] ? slash + 1 : "?";
}

int mx8_s3_check_range(const mx8_s3_op *s, const mx8_s3_response *r, mx8_error *err) {
    char what[200];
    mx8_s3_describe(s, what, sizeof what);
    if (r->len != s->fixed_len)
        return mx8_error_set(err, MX8_ERR_RANGE, "%s: range runs past the end of the object (%zu bytes returned, "
                             "object size %s)", what, r->len, range_total(r));
    /* Bytes from elsewhere in the object must never pass for the range: a 200 is the whole
     * object (only right from offset 0) and a 206 must start where asked. */
    unsigned long long start = 0;
    if ((r->status == 200 && s->range_off != 0) ||
        (r->status == 206 && (sscanf(r->content_range, "bytes %llu-", &start) != 1 || start != s->range_off)))
        return mx8_error_set(err, MX8_ERR_IO, "%s: the server answered HTTP %ld with Content-Range '%.40s'", what,
                             r->status, r->content_range);
    return MX8_OK;
}
