/* The two S3 XML documents mx8 reads: a ListObjectsV2 page and an error body.
 *
 * A small, strict walker rather than a general XML library: S3 responses are flat and
 * well-formed, but the bytes still come from the network, so every length is bounded,
 * entities are decoded (&amp; &lt; &gt; &quot; &apos; and numeric references, which S3 uses
 * for keys with '&' or control characters) and anything malformed is an MX8_ERR_FORMAT. */
#ifndef MX8_S3_XML_H
#define MX8_S3_XML_H

#include <stddef.h>
#include <stdint.h>

#include "mx8_error.h"

typedef struct {
    char *key;     /* decoded UTF-8 */
    uint64_t size;
} mx8_s3_entry;

typedef struct {
    mx8_s3_entry *entries;
    size_t n;
    char **prefixes;  /* CommonPrefixes/Prefix, when the request had a delimiter */
    size_t n_prefixes;
    int truncated;    /* IsTruncated */
    char *next_token; /* NextContinuationToken, NULL when there is none */
} mx8_s3_list_page;

typedef struct {
    char code[64];        /* e.g. "NoSuchKey", "" when the body has none */
    char message[512];    /* whole, as S3 words it */
    char request_id[96];
    char endpoint[160];   /* PermanentRedirect / TemporaryRedirect: where the bucket is served */
    char region[48];      /* AuthorizationHeaderMalformed / redirects: the bucket's region */
} mx8_s3_error_info;

/* Parses a ListObjectsV2 result into *out (owned by the caller: mx8_s3_list_page_free). */
int mx8_s3_parse_list(const char *xml, size_t len, mx8_s3_list_page *out, mx8_error *err);
void mx8_s3_list_page_free(mx8_s3_list_page *p);

/* Fills what it finds of Code, Message and RequestId; never fails (a body that is not an
 * S3 error document leaves the fields empty). */
void mx8_s3_parse_error(const char *xml, size_t len, mx8_s3_error_info *out);

/* The text of <root><child>...</child></root> (e.g. InitiateMultipartUploadResult/UploadId)
 * as a malloc'd string. A different root element is MX8_ERR_FORMAT naming it; a body whose
 * root is <Error> fills *e (when e is not NULL) and returns MX8_ERR_IO, for the S3 calls
 * that answer 200 and report failure in the body (CompleteMultipartUpload). */
int mx8_s3_parse_text(const char *xml, size_t len, const char *root, const char *child, char **out,
                      mx8_s3_error_info *e, mx8_error *err);

/* Calls cb at the end of each element with its path (outermost first, namespace prefixes
 * dropped) and the decoded text directly inside it. A non-zero return from cb stops the
 * walk and is returned. Exposed for tests. */
typedef int (*mx8_xml_cb)(void *ctx, const char *const *path, int depth, const char *text, size_t len);
int mx8_xml_walk(const char *xml, size_t len, mx8_xml_cb cb, void *ctx, mx8_error *err);

#endif
