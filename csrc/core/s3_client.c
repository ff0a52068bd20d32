#include "s3_client.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "s3_sign.h"

#define LIST_MAX_BYTES (64u << 20) /* a 1,000-key page is ~350 KB; anything near this is wrong */
#define ERRBODY_MAX 4096

struct mx8_s3_client {
    CURL *curl;
    pthread_mutex_t lock; /* one transfer at a time on the easy handle */
    char *endpoint, *region, *access_key, *secret_key, *session_token;
    int virtual_host, max_attempts;
    long connect_timeout_ms, low_speed_time_s, backoff_base_ms, backoff_cap_ms;
    uint64_t rng; /* backoff jitter */
    mx8_s3_stats stats;
    char curl_msg[CURL_ERROR_SIZE];
};

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
} op_spec;

/* One attempt's response. */
typedef struct {
    const op_spec *spec;
    long status;
    uint8_t *data;
    size_t len, cap;
    int overflow;
    char errbody[ERRBODY_MAX];
    size_t errlen;
    uint64_t content_length;
    int has_content_length;
    char etag[128], request_id[96], content_range[96];
    long retry_after_s; /* -1 when absent */
    size_t upload_pos;
} response;

int mx8_s3_global_init(mx8_error *err) {
    /* Reference-counted by libcurl, so once per module instance is fine; it is not
     * thread-safe in 7.88, so it runs at import, before any I/O thread exists. Never paired
     * with curl_global_cleanup: other users of libcurl may share the process. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return mx8_error_set(err, MX8_ERR_IO, "libcurl global initialisation failed");
    return MX8_OK;
}

/* ---- client lifetime ---- */

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

int mx8_s3_client_new(const mx8_s3_options *o, mx8_s3_client **out, mx8_error *err) {
    *out = NULL;
    if (!o->endpoint || !o->region || !o->access_key || !o->secret_key || !*o->access_key || !*o->secret_key)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 client: endpoint, region, access key and secret key are required");
    mx8_s3_client *c = calloc(1, sizeof *c);
    if (!c)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory creating an S3 client");
    pthread_mutex_init(&c->lock, NULL);
    c->endpoint = strdup(o->endpoint);
    c->region = strdup(o->region);
    c->access_key = strdup(o->access_key);
    c->secret_key = strdup(o->secret_key);
    c->session_token = dup_or_null(o->session_token);
    c->virtual_host = o->virtual_host;
    c->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
    c->low_speed_time_s = o->low_speed_time_s > 0 ? o->low_speed_time_s : 20;
    c->max_attempts = o->max_attempts > 0 ? o->max_attempts : 6;
    c->backoff_base_ms = o->backoff_base_ms > 0 ? o->backoff_base_ms : 100;
    c->backoff_cap_ms = o->backoff_cap_ms > 0 ? o->backoff_cap_ms : 5000;
    c->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)c;
    c->curl = curl_easy_init();
    if (!c->endpoint || !c->region || !c->access_key || !c->secret_key || !c->curl ||
        (o->session_token && *o->session_token && !c->session_token)) {
        mx8_s3_client_free(c);
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory creating an S3 client");
    }
    *out = c;
    return MX8_OK;
}

void mx8_s3_client_free(mx8_s3_client *c) {
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    pthread_mutex_destroy(&c->lock);
    if (c->secret_key)
        OPENSSL_cleanse(c->secret_key, strlen(c->secret_key));
    free(c->endpoint);
    free(c->region);
    free(c->access_key);
    free(c->secret_key);
    free(c->session_token);
    free(c);
}

void mx8_s3_client_stats(mx8_s3_client *c, mx8_s3_stats *out) {
    pthread_mutex_lock(&c->lock);
    *out = c->stats;
    pthread_mutex_unlock(&c->lock);
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
    response *r = ud;
    size_t len = size * n;
    char tmp[32];
    if (len > 5 && !memcmp(p, "HTTP/", 5)) {
        /* A new status line (after a 100 Continue, say): start the response afresh. */
        const char *sp = memchr(p, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
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
    } else if (nl == 13 && !strncasecmp(p, "content-range", nl)) {
        copy_header_value(r->content_range, sizeof r->content_range, colon + 1, vl);
    } else if (nl == 11 && !strncasecmp(p, "retry-after", nl)) {
        /* Only the delta-seconds form; an HTTP-date falls back to the computed backoff. */
        copy_header_value(tmp, sizeof tmp, colon + 1, vl);
        char *end;
        long v = strtol(tmp, &end, 10);
        r->retry_after_s = end != tmp && !*end && v >= 0 ? v : -1;
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    response *r = ud;
    size_t len = size * n;
    if (r->status < 200 || r->status >= 300) { /* an error document: keep its head for the message */
        size_t k = len < ERRBODY_MAX - 1 - r->errlen ? len : ERRBODY_MAX - 1 - r->errlen;
        memcpy(r->errbody + r->errlen, p, k);
        r->errlen += k;
        return len;
    }
    const op_spec *s = r->spec;
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
    response *r = ud;
    size_t left = r->spec->body_len - r->upload_pos, k = size * n < left ? size * n : left;
    memcpy(p, r->spec->body + r->upload_pos, k);
    r->upload_pos += k;
    return k;
}

static int on_seek(void *ud, curl_off_t off, int origin) {
    response *r = ud;
    if (origin != SEEK_SET || off < 0 || (size_t)off > r->spec->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->upload_pos = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

/* ---- one attempt ---- */

static void setup_transfer(mx8_s3_client *c, const op_spec *s, response *r, const char *url,
                           struct curl_slist *hl) {
    CURL *h = c->curl;
    curl_easy_reset(h); /* options only; the connection and DNS caches stay */
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);      /* send the signed path byte for byte */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);        /* no SIGALRM in threads */
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L); /* a stalled transfer ends instead of hanging */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->low_speed_time_s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_msg);
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

/* Signs (afresh: the date moves on between retries) and performs one request. Returns
 * MX8_OK with *cc set, or an error that no retry can fix (bad arguments, OOM). */
static int attempt(mx8_s3_client *c, const op_spec *s, response *r, CURLcode *cc, mx8_error *err) {
    char amz_date[17];
    mx8_s3_amz_date((long long)time(NULL), amz_date);
    mx8_s3_request rq = {.method = s->method, .endpoint = c->endpoint, .region = c->region,
                         .bucket = s->bucket, .key = s->key, .query = s->query, .n_query = s->n_query,
                         .headers = s->headers, .n_headers = s->n_headers, .payload_sha256 = s->payload_sha,
                         .access_key = c->access_key, .secret_key = c->secret_key,
                         .session_token = c->session_token, .amz_date = amz_date, .virtual_host = c->virtual_host};
    mx8_s3_signed sg;
    int rc = mx8_s3_sign(&rq, &sg, err);
    if (rc)
        return rc;
    struct curl_slist *hl = NULL, *t;
    int oom = 0;
    /* "Expect:" turns off 100-continue: one round trip less, and nothing to re-sign. */
    for (size_t i = 0; i <= sg.n_headers && !oom; i++) {
        t = curl_slist_append(hl, i < sg.n_headers ? sg.headers[i] : "Expect:");
        oom = !t;
        hl = t ? t : hl;
    }
    if (!oom) {
        memset(r, 0, sizeof *r);
        r->spec = s;
        r->retry_after_s = -1;
        c->curl_msg[0] = '\0';
        setup_transfer(c, s, r, sg.url, hl);
        *cc = curl_easy_perform(c->curl);
        c->stats.requests++;
        c->stats.bytes_out += s->body_len;
    }
    curl_slist_free_all(hl);
    mx8_s3_signed_free(&sg);
    return oom ? mx8_error_set(err, MX8_ERR_NOMEM, "out of memory building an S3 request") : MX8_OK;
}

/* ---- retry policy and messages ---- */

static int transient_curl(CURLcode cc) {
    switch (cc) {
    case CURLE_COULDNT_CONNECT: case CURLE_OPERATION_TIMEDOUT: case CURLE_RECV_ERROR:
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

static void backoff(mx8_s3_client *c, int attempt_no, long retry_after_s) {
    long d = c->backoff_base_ms;
    for (int i = 1; i < attempt_no && d < c->backoff_cap_ms; i++)
        d *= 2;
    if (d > c->backoff_cap_ms)
        d = c->backoff_cap_ms;
    c->rng ^= c->rng << 13, c->rng ^= c->rng >> 7, c->rng ^= c->rng << 17;
    d = d / 2 + (long)(c->rng % (uint64_t)(d / 2 + 1)); /* jitter: spread retries of many clients */
    if (retry_after_s >= 0 && retry_after_s * 1000 > d)
        d = retry_after_s * 1000 < c->backoff_cap_ms ? retry_after_s * 1000 : c->backoff_cap_ms;
    struct timespec ts = {d / 1000, (d % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* "GET s3://bucket/key @ 100+50" (key shortened so the rest of the message fits). */
static void describe(const op_spec *s, char *out, size_t cap) {
    const char *key = s->shown_key ? s->shown_key : s->key ? s->key : "";
    int n = snprintf(out, cap, "S3 %s s3://%.63s/%.110s%s", s->op, s->bucket, key, strlen(key) > 110 ? "..." : "");
    if (s->has_range && n > 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, " @ %llu+%zu", (unsigned long long)s->range_off, s->fixed_len);
}

static int http_error(const op_spec *s, const response *r, const mx8_s3_error_info *e, int attempts,
                      mx8_error *err) {
    char what[200];
    describe(s, what, sizeof what);
    const char *rid = e->request_id[0] ? e->request_id : r->request_id;
    int code = r->status == 416 ? MX8_ERR_RANGE : MX8_ERR_IO;
    char tries[32] = "";
    if (attempts > 1)
        snprintf(tries, sizeof tries, " after %d attempts", attempts);
    mx8_error_set(err, code, "%s: HTTP %ld%s%.64s%s%.100s (request id %.60s)%s", what, r->status,
                  e->code[0] ? " " : "", e->code, e->message[0] ? ": " : "", e->message, rid[0] ? rid : "none",
                  tries);
    if (err && code == MX8_ERR_IO)
        err->sys_errno = r->status == 404 ? ENOENT : r->status == 403 ? EACCES : 0;
    return code;
}

/* Runs an operation with retries. On MX8_OK, *r holds the final 2xx response. */
static int run_op(mx8_s3_client *c, const op_spec *s, response *r, mx8_error *err) {
    for (int n = 1;; n++) {
        CURLcode cc = CURLE_OK;
        int rc = attempt(c, s, r, &cc, err);
        if (rc)
            return rc;
        if (cc == CURLE_OK && r->status >= 200 && r->status < 300)
            return MX8_OK;
        mx8_s3_error_info e;
        mx8_s3_parse_error(r->errbody, r->errlen, &e);
        int retry = cc != CURLE_OK ? transient_curl(cc) && !r->overflow : transient_http(r->status, &e);
        if (retry && n < c->max_attempts) {
            free(r->data);
            c->stats.retries++;
            backoff(c, n, r->retry_after_s);
            continue;
        }
        char what[200];
        describe(s, what, sizeof what);
        if (cc == CURLE_WRITE_ERROR && r->overflow)
            rc = mx8_error_set(err, MX8_ERR_IO, /* a ReadError: MX8_ERR_TOO_LARGE means an image */
                               s->fixed ? "%s: the server sent more bytes than the range asked for (HTTP %ld)"
                                        : "%s: the object is larger than the limit (HTTP %ld)",
                               what, r->status);
        else if (cc != CURLE_OK)
            rc = mx8_error_set(err, MX8_ERR_IO, "%s: %s (%.120s)%s", what, curl_easy_strerror(cc), c->curl_msg,
                               n > 1 ? ", retries exhausted" : "");
        else
            rc = http_error(s, r, &e, n, err);
        free(r->data);
        r->data = NULL;
        return rc;
    }
}

/* ---- operations ---- */

static const char EMPTY_SHA256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

static op_spec spec_for(const char *op, const char *method, const char *bucket, const char *key) {
    op_spec s;
    memset(&s, 0, sizeof s);
    s.op = op;
    s.method = method;
    s.bucket = bucket;
    s.key = key;
    memcpy(s.payload_sha, EMPTY_SHA256, sizeof EMPTY_SHA256);
    return s;
}

/* run_op under the client's lock (one easy handle per client), counting the body bytes. */
static int run_counted(mx8_s3_client *c, const op_spec *s, response *r, mx8_error *err) {
    pthread_mutex_lock(&c->lock);
    int rc = run_op(c, s, r, err);
    if (rc == MX8_OK)
        c->stats.bytes_in += r->len;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int mx8_s3_head(mx8_s3_client *c, const char *bucket, const char *key, uint64_t *size, char etag[128],
                mx8_error *err) {
    op_spec s = spec_for("HEAD", "HEAD", bucket, key);
    response r;
    pthread_mutex_lock(&c->lock);
    int rc = run_op(c, &s, &r, err);
    pthread_mutex_unlock(&c->lock);
    if (rc)
        return rc;
    free(r.data);
    if (!r.has_content_length)
        return mx8_error_set(err, MX8_ERR_IO, "S3 HEAD s3://%.63s/%.110s: no Content-Length in the response",
                             bucket, key);
    *size = r.content_length;
    if (etag)
        memcpy(etag, r.etag, sizeof r.etag);
    return MX8_OK;
}

/* Size of the object from "bytes a-b/N" or "bytes star/N"; "?" when unknown. */
static const char *range_total(const response *r) {
    const char *slash = strrchr(r->content_range, '/');
    return slash && slash[1] ? slash + 1 : "?";
}

int mx8_s3_get_range(mx8_s3_client *c, const char *bucket, const char *key, uint64_t offset, size_t len,
                     void *buf, mx8_error *err) {
    if (len == 0)
        return MX8_OK; /* "bytes=a-(a-1)" is not a range; there is nothing to fetch */
    char range[64];
    snprintf(range, sizeof range, "bytes=%llu-%llu", (unsigned long long)offset,
             (unsigned long long)(offset + len - 1));
    op_spec s = spec_for("GET", "GET", bucket, key);
    s.headers[0] = (mx8_s3_header){"range", range};
    s.n_headers = 1;
    s.fixed = buf;
    s.fixed_len = len;
    s.has_range = 1;
    s.range_off = offset;
    response r;
    pthread_mutex_lock(&c->lock);
    int rc = run_op(c, &s, &r, err);
    if (rc == MX8_OK && r.len == len)
        c->stats.bytes_in += len;
    pthread_mutex_unlock(&c->lock);
    if (rc)
        return rc;
    char what[200];
    describe(&s, what, sizeof what);
    if (r.len != len)
        return mx8_error_set(err, MX8_ERR_RANGE, "%s: range runs past the end of the object (%zu bytes returned, "
                             "object size %s)", what, r.len, range_total(&r));
    /* Bytes from elsewhere in the object must never pass for the range: a 200 is the whole
     * object (only right from offset 0) and a 206 must start where asked. */
    unsigned long long start = 0;
    if ((r.status == 200 && offset != 0) ||
        (r.status == 206 && (sscanf(r.content_range, "bytes %llu-", &start) != 1 || start != offset)))
        return mx8_error_set(err, MX8_ERR_IO, "%s: the server answered HTTP %ld with Content-Range '%.40s'", what,
                             r.status, r.content_range);
    return MX8_OK;
}

int mx8_s3_get(mx8_s3_client *c, const char *bucket, const char *key, size_t max_len, uint8_t **data,
               size_t *len, mx8_error *err) {
    op_spec s = spec_for("GET", "GET", bucket, key);
    s.max_len = max_len;
    response r;
    int rc = run_counted(c, &s, &r, err);
    if (rc)
        return rc;
    *data = r.data ? r.data : malloc(1); /* an empty object is still a valid buffer */
    *len = r.len;
    return *data ? MX8_OK : mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an empty S3 object");
}

/* The body's SHA-256 goes into the signature: S3 then rejects a body damaged on the way. */
static int hash_body(op_spec *s, mx8_error *err) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdn = 0;
    if (EVP_Digest(s->body ? (const void *)s->body : "", s->body_len, md, &mdn, EVP_sha256(), NULL) != 1 ||
        mdn != 32)
        return mx8_error_set(err, MX8_ERR_NOMEM, "SHA-256 of an S3 request body failed (libcrypto)");
    for (int i = 0; i < 32; i++)
        snprintf(s->payload_sha + 2 * i, 3, "%02x", md[i]);
    return MX8_OK;
}

int mx8_s3_call_run(mx8_s3_client *c, const mx8_s3_call *call, mx8_s3_reply *out, mx8_error *err) {
    memset(out, 0, sizeof *out);
    if (call->n_headers > 2)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 %s: at most 2 extra headers", call->op);
    op_spec s = spec_for(call->op, call->method, call->bucket, call->key);
    s.query = call->query;
    s.n_query = call->n_query;
    for (size_t i = 0; i < call->n_headers; i++)
        s.headers[i] = call->headers[i];
    s.n_headers = call->n_headers;
    s.body = call->body;
    s.body_len = call->body_len;
    s.max_len = call->max_response ? call->max_response : ERRBODY_MAX;
    int rc = s.body_len || !strcmp(s.method, "PUT") || !strcmp(s.method, "POST") ? hash_body(&s, err) : MX8_OK;
    if (rc)
        return rc;
    response r;
    rc = run_counted(c, &s, &r, err);
    if (rc)
        return rc;
    out->body = r.data;
    out->len = r.len;
    memcpy(out->etag, r.etag, sizeof r.etag);
    return MX8_OK;
}

int mx8_s3_put(mx8_s3_client *c, const char *bucket, const char *key, const void *data, size_t len,
               const char *content_type, char etag[128], mx8_error *err) {
    mx8_s3_header ct = {"content-type", content_type};
    mx8_s3_call call = {.op = "PUT", .method = "PUT", .bucket = bucket, .key = key, .headers = &ct,
                        .n_headers = content_type && *content_type, .body = data, .body_len = len};
    mx8_s3_reply r;
    int rc = mx8_s3_call_run(c, &call, &r, err);
    if (rc)
        return rc;
    free(r.body);
    if (etag)
        memcpy(etag, r.etag, sizeof r.etag);
    return MX8_OK;
}

int mx8_s3_list(mx8_s3_client *c, const char *bucket, const char *prefix, const char *token,
                const char *delimiter, int max_keys, mx8_s3_list_page *out, mx8_error *err) {
    memset(out, 0, sizeof *out);
    mx8_s3_param q[5];
    size_t nq = 0;
    char mk[16];
    q[nq++] = (mx8_s3_param){"list-type", "2"};
    if (prefix && *prefix)
        q[nq++] = (mx8_s3_param){"prefix", prefix};
    if (token && *token)
        q[nq++] = (mx8_s3_param){"continuation-token", token};
    if (delimiter && *delimiter)
        q[nq++] = (mx8_s3_param){"delimiter", delimiter};
    if (max_keys > 0) {
        snprintf(mk, sizeof mk, "%d", max_keys);
        q[nq++] = (mx8_s3_param){"max-keys", mk};
    }
    op_spec s = spec_for("LIST", "GET", bucket, ""); /* the prefix travels in the query */
    s.shown_key = prefix;
    s.query = q;
    s.n_query = nq;
    s.max_len = LIST_MAX_BYTES;
    response r;
    int rc = run_counted(c, &s, &r, err);
    if (rc)
        return rc;
    rc = mx8_s3_parse_list(r.data ? (const char *)r.data : "", r.len, out, err);
    free(r.data);
    if (rc && err) {
        char msg[MX8_ERROR_MSG_LEN];
        snprintf(msg, sizeof msg, "%s", err->msg);
        mx8_error_set(err, rc, "S3 LIST s3://%.63s/%.100s: %s", bucket, prefix ? prefix : "", msg);
    }
    return rc;
}
