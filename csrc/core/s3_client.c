#include "s3_client.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "s3_request.h"

#define LIST_MAX_BYTES (64u << 20) /* a 1,000-key page is ~350 KB; anything near this is wrong */

struct mx8_s3_client {
    CURL *curl;
    pthread_mutex_t lock; /* one transfer at a time on the easy handle */
    mx8_s3_conf conf;
    uint64_t rng; /* backoff jitter */
    mx8_s3_stats stats;
};

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
    if (!o->endpoint || !o->region)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 client: endpoint and region are required");
    mx8_s3_credentials *creds = o->unsigned_requests ? NULL : o->credentials;
    if (creds)
        mx8_s3_credentials_ref(creds);
    else if (!o->unsigned_requests &&
             !(creds = mx8_s3_credentials_new(o->access_key, o->secret_key, o->session_token, err)))
        return err ? err->code : MX8_ERR_ARG;
    mx8_s3_client *c = calloc(1, sizeof *c);
    if (!c) {
        mx8_s3_credentials_unref(creds);
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory creating an S3 client");
    }
    pthread_mutex_init(&c->lock, NULL);
    mx8_s3_conf *f = &c->conf;
    f->creds = creds;
    f->endpoint = strdup(o->endpoint);
    f->region = strdup(o->region);
    f->ca_file = dup_or_null(o->ca_file);
    f->virtual_host = o->virtual_host;
    f->requester_pays = o->requester_pays;
    f->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
    f->first_byte_timeout_ms = o->first_byte_timeout_ms > 0 ? o->first_byte_timeout_ms : 5000;
    f->low_speed_time_s = o->low_speed_time_s > 0 ? o->low_speed_time_s : 20;
    f->max_attempts = o->max_attempts > 0 ? o->max_attempts : 6;
    f->backoff_base_ms = o->backoff_base_ms > 0 ? o->backoff_base_ms : 100;
    f->backoff_cap_ms = o->backoff_cap_ms > 0 ? o->backoff_cap_ms : 5000;
    c->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)c;
    c->curl = curl_easy_init();
    if (!f->endpoint || !f->region || !c->curl || (o->ca_file && *o->ca_file && !f->ca_file)) {
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
    mx8_s3_conf *f = &c->conf;
    mx8_s3_credentials_unref(f->creds);
    free(f->endpoint);
    free(f->region);
    free(f->ca_file);
    free(c);
}

const struct mx8_s3_conf *mx8_s3_client_conf(const mx8_s3_client *c) { return &c->conf; }

void mx8_s3_client_stats(mx8_s3_client *c, mx8_s3_stats *out) {
    pthread_mutex_lock(&c->lock);
    *out = c->stats;
    pthread_mutex_unlock(&c->lock);
}

/* ---- blocking requests with retries ---- */

/* Runs an operation with retries. On MX8_OK, *r holds the final 2xx response. */
static int run_op(mx8_s3_client *c, const mx8_s3_op *s, mx8_s3_response *r, mx8_error *err) {
    for (int n = 1;; n++) {
        int rc = mx8_s3_attempt_begin(&c->conf, c->curl, s, r, err);
        if (rc)
            return rc;
        CURLcode cc = curl_easy_perform(c->curl);
        mx8_s3_attempt_end(r);
        c->stats.requests++;
        c->stats.bytes_out += s->body_len;
        mx8_s3_error_info e;
        mx8_s3_verdict v = mx8_s3_attempt_verdict(&c->conf, cc, r, n, &e);
        if (v == MX8_S3_DONE)
            return MX8_OK;
        if (v == MX8_S3_RETRY && n < c->conf.max_attempts) {
            free(r->data);
            c->stats.retries++;
            long d = mx8_s3_backoff_ms(&c->conf, &c->rng, n, r->retry_after_s);
            struct timespec ts = {d / 1000, (d % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
            continue;
        }
        rc = mx8_s3_attempt_error(&c->conf, s, r, cc, &e, n, err);
        free(r->data);
        r->data = NULL;
        return rc;
    }
}

/* ---- operations ---- */

/* run_op under the client's lock (one easy handle per client), counting the body bytes. */
static int run_counted(mx8_s3_client *c, const mx8_s3_op *s, mx8_s3_response *r, mx8_error *err) {
    pthread_mutex_lock(&c->lock);
    int rc = run_op(c, s, r, err);
    if (rc == MX8_OK)
        c->stats.bytes_in += r->len;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int mx8_s3_head(mx8_s3_client *c, const char *bucket, const char *key, uint64_t *size, char etag[128],
                mx8_error *err) {
    mx8_s3_op s = mx8_s3_op_for("HEAD", "HEAD", bucket, key);
    mx8_s3_response r;
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

int mx8_s3_get_range(mx8_s3_client *c, const char *bucket, const char *key, uint64_t offset, size_t len,
                     void *buf, mx8_error *err) {
    if (len == 0)
        return MX8_OK; /* "bytes=a-(a-1)" is not a range; there is nothing to fetch */
    mx8_s3_op s;
    mx8_s3_op_range(&s, bucket, key, offset, len, buf);
    mx8_s3_response r;
    pthread_mutex_lock(&c->lock);
    int rc = run_op(c, &s, &r, err);
    if (rc == MX8_OK && r.len == len)
        c->stats.bytes_in += len;
    pthread_mutex_unlock(&c->lock);
    return rc ? rc : mx8_s3_check_range(&s, &r, err);
}

int mx8_s3_get(mx8_s3_client *c, const char *bucket, const char *key, size_t max_len, uint8_t **data,
               size_t *len, mx8_error *err) {
    mx8_s3_op s = mx8_s3_op_for("GET", "GET", bucket, key);
    s.max_len = max_len;
    mx8_s3_response r;
    int rc = run_counted(c, &s, &r, err);
    if (rc)
        return rc;
    *data = r.data ? r.data : malloc(1); /* an empty object is still a valid buffer */
    *len = r.len;
    return *data ? MX8_OK : mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an empty S3 object");
}

/* The body's SHA-256 goes into the signature: S3 then rejects a body damaged on the way. */
static int hash_body(mx8_s3_op *s, mx8_error *err) {
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
    mx8_s3_op s = mx8_s3_op_for(call->op, call->method, call->bucket, call->key);
    s.query = call->query;
    s.n_query = call->n_query;
    for (size_t i = 0; i < call->n_headers; i++)
        s.headers[i] = call->headers[i];
    s.n_headers = call->n_headers;
    s.body = call->body;
    s.body_len = call->body_len;
    s.max_len = call->max_response ? call->max_response : MX8_S3_ERRBODY_MAX;
    int rc = s.body_len || !strcmp(s.method, "PUT") || !strcmp(s.method, "POST") ? hash_body(&s, err) : MX8_OK;
    if (rc)
        return rc;
    mx8_s3_response r;
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
    mx8_s3_op s = mx8_s3_op_for("LIST", "GET", bucket, ""); /* the prefix travels in the query */
    s.shown_key = prefix;
    s.query = q;
    s.n_query = nq;
    s.max_len = LIST_MAX_BYTES;
    mx8_s3_response r;
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
