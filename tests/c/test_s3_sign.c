/* SigV4 signer: the AWS documentation's S3 examples, URL encoding, headers, errors. */
#include <string.h>

#include "../../csrc/core/s3_sign.h"
#include "mx8_test.h"

#define AK "AKIAIOSFODNN7EXAMPLE"
#define SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static mx8_s3_request doc_request(void) {
    mx8_s3_request r;
    memset(&r, 0, sizeof r);
    r.method = "GET";
    r.endpoint = "https://s3.amazonaws.com";
    r.region = "us-east-1";
    r.bucket = "examplebucket";
    r.payload_sha256 = EMPTY_SHA;
    r.access_key = AK;
    r.secret_key = SK;
    r.amz_date = "20130524T000000Z";
    r.virtual_host = 1;
    return r;
}

static const char *find_header(const mx8_s3_signed *s, const char *prefix) {
    for (size_t i = 0; i < s->n_headers; i++)
        if (!strncmp(s->headers[i], prefix, strlen(prefix)))
            return s->headers[i];
    return NULL;
}

/* "Example: GET Object" from the SigV4 header-based auth page. */
void test_s3_sign_aws_doc_get_object(void) {
    mx8_s3_request r = doc_request();
    mx8_s3_header range = {"Range", "bytes=0-9"};
    r.key = "test.txt";
    r.headers = &range;
    r.n_headers = 1;
    mx8_s3_signed s;
    mx8_error err;
    REQUIRE_OK(mx8_s3_sign(&r, &s, &err), &err);
    CHECK_STR(s.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    CHECK_STR(s.url, "https://examplebucket.s3.amazonaws.com/test.txt");
    CHECK_INT(s.n_headers, ==, 5);
    CHECK_STR(s.headers[0], "Host: examplebucket.s3.amazonaws.com");
    CHECK_STR(s.headers[1], "range: bytes=0-9");
    CHECK_STR(s.headers[2], "x-amz-content-sha256: " EMPTY_SHA);
    CHECK_STR(s.headers[3], "x-amz-date: 20130524T000000Z");
    CHECK_STR(s.headers[4], "Authorization: AWS4-HMAC-SHA256 Credential=" AK "/20130524/us-east-1/s3/aws4_request, "
                            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    mx8_s3_signed_free(&s);
}

/* "Example: PUT Object": a '$' in the key, a signed Date and storage class, a body hash. */
void test_s3_sign_aws_doc_put_object(void) {
    mx8_s3_request r = doc_request();
    mx8_s3_header h[] = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"}, {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
    r.method = "PUT";
    r.key = "test$file.text";
    r.headers = h;
    r.n_headers = 2;
    r.payload_sha256 = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
    mx8_s3_signed s;
    mx8_error err;
    REQUIRE_OK(mx8_s3_sign(&r, &s, &err), &err);
    CHECK_STR(s.url, "https://examplebucket.s3.amazonaws.com/test%24file.text");
    CHECK_STR(s.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    mx8_s3_signed_free(&s);
}

/* "Example: GET Bucket Lifecycle" (empty query value) and "Example: Get Bucket (List Objects)". */
void test_s3_sign_aws_doc_bucket_queries(void) {
    mx8_s3_request r = doc_request();
    mx8_s3_param lifecycle = {"lifecycle", NULL};
    r.query = &lifecycle;
    r.n_query = 1;
    mx8_s3_signed s;
    mx8_error err;
    REQUIRE_OK(mx8_s3_sign(&r, &s, &err), &err);
    CHECK_STR(s.url, "https://examplebucket.s3.amazonaws.com/?lifecycle=");
    CHECK_STR(s.signature, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    mx8_s3_signed_free(&s);

    mx8_s3_param list[] = {{"prefix", "J"}, {"max-keys", "2"}}; /* given unsorted on purpose */
    r.query = list;
    r.n_query = 2;
    REQUIRE_OK(mx8_s3_sign(&r, &s, &err), &err);
    CHECK_STR(s.url, "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J");
    CHECK_STR(s.signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    mx8_s3_signed_free(&s);
}

void test_s3_sign_encoding_rules(void) {
    char buf[64];
    CHECK_INT(mx8_s3_uri_encode(buf, "aZ09-_.~", 8, 0), ==, 8);
    CHECK_STR(buf, "aZ09-_.~");
    mx8_s3_uri_encode(buf, "a b+c=d/e%f", 11, 0);
    CHECK_STR(buf, "a%20b%2Bc%3Dd%2Fe%25f");
    mx8_s3_uri_encode(buf, "a b+c=d/e%f", 11, 1);
    CHECK_STR(buf, "a%20b%2Bc%3Dd/e%25f");
    mx8_s3_uri_encode(buf, "\xc3\xbc\xe2\x82\xac", 5, 1); /* "ü€" in UTF-8 */
    CHECK_STR(buf, "%C3%BC%E2%82%AC");

    mx8_s3_request r = doc_request();
    r.endpoint = "http://127.0.0.1:9000/";
    r.virtual_host = 0;
    r.bucket = "bkt";
    r.key = "dir one/\xc3\xbc+=~%/c.txt";
    mx8_s3_param q[] = {{"prefix", "a b/c"}, {"continuation-token", "x=+/y"}, {"list-type", "2"},
                        {"uploads", ""}, {"a", "2"}, {"a", "1"}};
    r.query = q;
    r.n_query = 6;
    mx8_s3_signed s;
    mx8_error err;
    REQUIRE_OK(mx8_s3_sign(&r, &s, &err), &err);
    CHECK_STR(s.url, "http://127.0.0.1:9000/bkt/dir%20one/%C3%BC%2B%3D~%25/c.txt"
                     "?a=1&a=2&continuation-token=x%3D%2B%2Fy&list-type=2&prefix=a%20b%2Fc&uploads=");
    CHECK_STR(s.headers[0], "Host: 127.0.0.1:9000");
    mx8_s3_signed_free(&s);

    r.key = NULL; /* a bucket request path-style is "/bucket" */
    r.n_query = 0;
    REQUIRE_OK(mx8_s3_sign(&r, &s, &err), &err);
    CHECK_STR(s.url, "http://127.0.0.1:9000/bkt");
    mx8_s3_signed_free(&s);
}

void test_s3_sign_host_ports_and_headers(void) {
    static const struct {
        const char *endpoint;
        const char *host;
    } cases[] = {{"http://LocalHost:80", "localhost"}, {"https://h.example:443/", "h.example"},
                 {"https://h.example:8443", "h.example:8443"}, {"http://[::1]:9000", "[::1]:9000"}};
    mx8_s3_request r = doc_request();
    r.virtual_host = 0;
    r.key = "k";
    mx8_s3_signed s;
    mx8_error err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        r.endpoint = cases[i].endpoint;
        REQUIRE_OK(mx8_s3_sign(&r, &s, &err), &err);
        char want[128];
        snprintf(want, sizeof want, "Host: %s", cases[i].host);
        CHECK_STR(s.headers[0], want);
        mx8_s3_signed_free(&s);
    }
    /* Session token: sent and signed; header values trimmed and collapsed as signed. */
    mx8_s3_header h[] = {{"Content-Type", "  text/plain;   charset=utf-8 "}};
    r.headers = h;
    r.n_headers = 1;
    r.session_token = "FQoG//tok+en=";
    r.payload_sha256 = NULL;
    REQUIRE_OK(mx8_s3_sign(&r, &s, &err), &err);
    CHECK(find_header(&s, "x-amz-security-token: FQoG//tok+en=") != NULL);
    CHECK(find_header(&s, "content-type: text/plain; charset=utf-8") != NULL);
    CHECK(find_header(&s, "x-amz-content-sha256: UNSIGNED-PAYLOAD") != NULL);
    const char *auth = find_header(&s, "Authorization: ");
    CHECK(auth && strstr(auth, "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;"
                               "x-amz-security-token, ") != NULL);
    mx8_s3_signed_free(&s);
}

void test_s3_sign_rejects_bad_input_without_leaking_secret(void) {
    mx8_s3_header host = {"HOST", "evil"}, crlf = {"x-meta", "a\r\nInjected: 1"}, dup[] = {{"Range", "a"},
                                                                                             {"range", "b"}};
    struct {
        const char *endpoint, *bucket, *date, *method;
        const mx8_s3_header *h;
        size_t nh;
        const char *want;
    } cases[] = {
        {"ftp://h", "b", "20130524T000000Z", "GET", NULL, 0, "http:// or https://"},
        {"http://h/prefix", "b", "20130524T000000Z", "GET", NULL, 0, "must not have a path"},
        {"http://h:99999", "b", "20130524T000000Z", "GET", NULL, 0, "invalid port"},
        {"http://h", "b/x", "20130524T000000Z", "GET", NULL, 0, "invalid bucket"},
        {"http://h", "b", "2013-05-24", "GET", NULL, 0, "amz_date"},
        {"http://h", "b", "20130524T000000Z", "get", NULL, 0, "method"},
        {"http://h", "b", "20130524T000000Z", "GET", &host, 1, "set by the signer"},
        {"http://h", "b", "20130524T000000Z", "GET", &crlf, 1, "line break"},
        {"http://h", "b", "20130524T000000Z", "GET", dup, 2, "given twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mx8_s3_request r = doc_request();
        r.endpoint = cases[i].endpoint;
        r.bucket = cases[i].bucket;
        r.amz_date = cases[i].date;
        r.method = cases[i].method;
        r.headers = cases[i].h;
        r.n_headers = cases[i].nh;
        mx8_s3_signed s;
        mx8_error err;
        mx8_error_clear(&err);
        CHECK_INT(mx8_s3_sign(&r, &s, &err), ==, MX8_ERR_ARG);
        CHECK(strstr(err.msg, cases[i].want) != NULL);
        CHECK(strstr(err.msg, SK) == NULL && strstr(err.msg, "EXAMPLEKEY") == NULL);
        CHECK(s.url == NULL && s.n_headers == 0);
        if (!strstr(err.msg, cases[i].want))
            fprintf(stderr, "  case %zu: %s\n", i, err.msg);
    }
    char d[17];
    mx8_s3_amz_date(1369353600LL, d);
    CHECK_STR(d, "20130524T000000Z");
}
