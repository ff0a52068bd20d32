#include "s3_multipart.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESULT_MAX (1u << 20) /* initiate/complete results are a few hundred bytes */

/* A multipart step: its query, and a Content-Type when one is given. */
static mx8_s3_op step(const char *name, const char *method, const char *bucket, const char *key,
                      const mx8_s3_param *q, size_t nq, const char *content_type) {
    mx8_s3_op s = mx8_s3_op_for(name, method, bucket, key);
    s.query = q;
    s.n_query = nq;
    if (content_type && *content_type)
        s.headers[s.n_headers++] = (mx8_s3_header){"content-type", content_type};
    return s;
}

int mx8_s3_multipart_create(mx8_s3_client *c, const char *bucket, const char *key, const char *content_type,
                            char **upload_id, mx8_error *err) {
    *upload_id = NULL;
    mx8_s3_param q = {"uploads", ""};
    mx8_s3_op s = step("CreateMultipartUpload", "POST", bucket, key, &q, 1, content_type);
    s.max_len = RESULT_MAX;
    mx8_s3_reply r;
    int rc = mx8_s3_call_run(c, &s, &r, err);
    if (rc)
        return rc;
    rc = mx8_s3_parse_text(r.body ? (const char *)r.body : "", r.len, "InitiateMultipartUploadResult", "UploadId",
                           upload_id, NULL, err);
    free(r.body);
    if (rc == MX8_OK && !**upload_id) {
        free(*upload_id);
        *upload_id = NULL;
        rc = mx8_error_set(err, MX8_ERR_FORMAT, "S3 CreateMultipartUpload s3://%.63s/%.110s: empty UploadId",
                           bucket, key);
    } else if (rc && err) {
        char msg[MX8_ERROR_MSG_LEN];
        snprintf(msg, sizeof msg, "%s", err->msg);
        mx8_error_set(err, rc, "S3 CreateMultipartUpload s3://%.63s/%.110s: %s", bucket, key, msg);
    }
    return rc;
}

int mx8_s3_upload_part(mx8_s3_client *c, const char *bucket, const char *key, const char *upload_id,
                       int part_number, const void *data, size_t len, char etag[128], mx8_error *err) {
    if (part_number < 1 || part_number > 10000)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 UploadPart: part number %d outside 1..10000", part_number);
    char pn[16];
    snprintf(pn, sizeof pn, "%d", part_number);
    mx8_s3_param q[2] = {{"partNumber", pn}, {"uploadId", upload_id}};
    mx8_s3_op s = step("UploadPart", "PUT", bucket, key, q, 2, NULL);
    mx8_s3_reply r;
    int rc = mx8_s3_op_body(&s, data, len, err);
    if (rc || (rc = mx8_s3_call_run(c, &s, &r, err)))
        return rc;
    free(r.body);
    if (!r.etag[0])
        return mx8_error_set(err, MX8_ERR_IO, "S3 UploadPart s3://%.63s/%.110s part %d: no ETag in the response",
                             bucket, key, part_number);
    memcpy(etag, r.etag, sizeof r.etag);
    return MX8_OK;
}

/* Appends s to the XML body with & < > escaped (ETags are quoted hex, but come from the network). */
static char *xml_escaped(char *o, const char *s) {
    for (; *s; s++) {
        const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : NULL;
        if (e) {
            memcpy(o, e, strlen(e));
            o += strlen(e);
        } else {
            *o++ = *s;
        }
    }
    return o;
}

static char *complete_body(const mx8_s3_part *parts, size_t n, size_t *len) {
    size_t cap = 64;
    for (size_t i = 0; i < n; i++)
        cap += 80 + 5 * strlen(parts[i].etag);
    char *b = malloc(cap), *o = b;
    if (!b)
        return NULL;
    o += sprintf(o, "<CompleteMultipartUpload>");
    for (size_t i = 0; i < n; i++) {
        o += sprintf(o, "<Part><PartNumber>%d</PartNumber><ETag>", parts[i].part_number);
        o = xml_escaped(o, parts[i].etag);
        o += sprintf(o, "</ETag></Part>");
    }
    o += sprintf(o, "</CompleteMultipartUpload>");
    *len = (size_t)(o - b);
    return b;
}

int mx8_s3_multipart_complete(mx8_s3_client *c, const char *bucket, const char *key, const char *upload_id,
                              const mx8_s3_part *parts, size_t n, char etag[128], mx8_error *err) {
    for (size_t i = 0; i < n; i++)
        if (!parts[i].etag || (i && parts[i].part_number <= parts[i - 1].part_number))
            return mx8_error_set(err, MX8_ERR_ARG, "S3 CompleteMultipartUpload: parts must have ETags and "
                                                   "ascending part numbers (entry %zu)", i);
    size_t blen = 0;
    char *body = complete_body(parts, n, &blen);
    if (!body)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory completing an S3 multipart upload");
    mx8_s3_param q = {"uploadId", upload_id};
    mx8_s3_op s = step("CompleteMultipartUpload", "POST", bucket, key, &q, 1, "application/xml");
    s.max_len = RESULT_MAX;
    mx8_s3_reply r;
    int rc = mx8_s3_op_body(&s, body, blen, err);
    if (!rc)
        rc = mx8_s3_call_run(c, &s, &r, err);
    free(body);
    if (rc)
        return rc;
    /* S3 may answer 200 and put the failure in the body, so the body decides. */
    char *tag = NULL;
    mx8_s3_error_info e;
    memset(&e, 0, sizeof e);
    rc = mx8_s3_parse_text(r.body ? (const char *)r.body : "", r.len, "CompleteMultipartUploadResult", "ETag", &tag,
                           &e, err);
    free(r.body);
    if (rc) {
        char msg[MX8_ERROR_MSG_LEN];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        return mx8_error_set(err, rc, "S3 CompleteMultipartUpload s3://%.63s/%.110s: %s%s%.100s (request id %.60s)",
                             bucket, key, msg, e.message[0] ? ": " : "", e.message,
                             e.request_id[0] ? e.request_id : "none");
    }
    if (etag)
        snprintf(etag, 128, "%s", tag);
    free(tag);
    return MX8_OK;
}

int mx8_s3_multipart_abort(mx8_s3_client *c, const char *bucket, const char *key, const char *upload_id,
                           mx8_error *err) {
    mx8_s3_param q = {"uploadId", upload_id};
    mx8_s3_op s = step("AbortMultipartUpload", "DELETE", bucket, key, &q, 1, NULL);
    mx8_s3_reply r;
    int rc = mx8_s3_call_run(c, &s, &r, err);
    if (rc == MX8_OK)
        free(r.body);
    return rc;
}

int mx8_s3_delete(mx8_s3_client *c, const char *bucket, const char *key, mx8_error *err) {
    mx8_s3_op s = mx8_s3_op_for("DELETE", "DELETE", bucket, key);
    mx8_s3_reply r;
    int rc = mx8_s3_call_run(c, &s, &r, err);
    if (rc == MX8_OK)
        free(r.body);
    return rc;
}
