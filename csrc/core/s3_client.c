#include "s3_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3_request.h"

#define LIST_MAX_BYTES (64u << 20) /* a 1,000-key page is ~350 KB; anything near this is wrong */

/* Runs op to its end on the transport: *t holds the final response (t->resp.data is the
 * caller's on success; freed on failure). */
static int run(mx8_s3_client *c, const mx8_s3_op *op, mx8_s3_transfer *t, mx8_error *err) {
    t->op = *op; /* (not a ranged op: its Range header points into itself) */
    return mx8_s3_run(c, t, err);
}

int mx8_s3_head(mx8_s3_client *c, const char *bucket, const char *key, uint64_t *size, char etag[128],
                mx8_error *err) {
    mx8_s3_transfer t;
    mx8_s3_op s = mx8_s3_op_for("HEAD", "HEAD", bucket, key);
    int rc = run(c, &s, &t, err);
    if (rc)
        return rc;
    free(t.resp.data);
    if (!t.resp.has_content_length)
        return mx8_error_set(err, MX8_ERR_IO, "S3 HEAD s3://%.63s/%.110s: no Content-Length in the response",
                             bucket, key);
    *size = t.resp.content_length;
    if (etag)
        memcpy(etag, t.resp.etag, sizeof t.resp.etag);
    return MX8_OK;
}

int mx8_s3_get_range(mx8_s3_client *c, const char *bucket, const char *key, uint64_t offset, size_t len,
                     void *buf, mx8_error *err) {
    if (len == 0)
        return MX8_OK; /* "bytes=a-(a-1)" is not a range; there is nothing to fetch */
    mx8_s3_transfer t;
    mx8_s3_op_range(&t.op, bucket, key, offset, len, buf); /* built in place: never copied */
    return mx8_s3_run(c, &t, err);
}

int mx8_s3_get(mx8_s3_client *c, const char *bucket, const char *key, size_t max_len, uint8_t **data,
               size_t *len, mx8_error *err) {
    mx8_s3_transfer t;
    mx8_s3_op s = mx8_s3_op_for("GET", "GET", bucket, key);
    s.max_len = max_len;
    int rc = run(c, &s, &t, err);
    if (rc)
        return rc;
    *data = t.resp.data ? t.resp.data : malloc(1); /* an empty object is still a valid buffer */
    *len = t.resp.len;
    return *data ? MX8_OK : mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an empty S3 object");
}

int mx8_s3_call_run(mx8_s3_client *c, const mx8_s3_op *op, mx8_s3_reply *out, mx8_error *err) {
    memset(out, 0, sizeof *out);
    if (op->n_headers > 2)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 %s: at most 2 extra headers", op->op);
    mx8_s3_op s = *op;
    if (!s.max_len)
        s.max_len = MX8_S3_ERRBODY_MAX;
    mx8_s3_transfer t;
    int rc = run(c, &s, &t, err);
    if (rc)
        return rc;
    out->body = t.resp.data;
    out->len = t.resp.len;
    memcpy(out->etag, t.resp.etag, sizeof t.resp.etag);
    return MX8_OK;
}

int mx8_s3_put(mx8_s3_client *c, const char *bucket, const char *key, const void *data, size_t len,
               const char *content_type, char etag[128], mx8_error *err) {
    mx8_s3_op s = mx8_s3_op_for("PUT", "PUT", bucket, key);
    if (content_type && *content_type)
        s.headers[s.n_headers++] = (mx8_s3_header){"content-type", content_type};
    int rc = mx8_s3_op_body(&s, data, len, err);
    mx8_s3_reply r;
    if (rc || (rc = mx8_s3_call_run(c, &s, &r, err)))
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
    mx8_s3_transfer t;
    int rc = run(c, &s, &t, err);
    if (rc)
        return rc;
    rc = mx8_s3_parse_list(t.resp.data ? (const char *)t.resp.data : "", t.resp.len, out, err);
    free(t.resp.data);
    if (rc && err) {
        char msg[MX8_ERROR_MSG_LEN];
        snprintf(msg, sizeof msg, "%s", err->msg);
        mx8_error_set(err, rc, "S3 LIST s3://%.63s/%.100s: %s", bucket, prefix ? prefix : "", msg);
    }
    return rc;
}

int mx8_s3_split_location(const char *path, char bucket[MX8_S3_BUCKET_MAX + 1], const char **key,
                          mx8_error *err) {
    const char *slash = strchr(path, '/');
    if (!slash || slash == path || (size_t)(slash - path) > MX8_S3_BUCKET_MAX || !slash[1])
        return mx8_error_set(err, MX8_ERR_ARG, "S3 location '%.200s' is not bucket/key", path);
    memcpy(bucket, path, (size_t)(slash - path));
    bucket[slash - path] = '\0';
    *key = slash + 1;
    return MX8_OK;
}
