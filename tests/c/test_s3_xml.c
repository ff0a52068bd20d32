/* The S3 XML reader: ListObjectsV2 pages (entities, pagination, prefixes), error bodies,
 * and malformed input that must fail cleanly. */
#include <stdlib.h>
#include <string.h>

#include "../../csrc/core/s3_xml.h"
#include "mx8_test.h"

void test_s3_xml_list_page(void) {
    static const char xml[] =
        "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        "<Name>bkt</Name><Prefix>raw/</Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys>"
        "<IsTruncated>true</IsTruncated>"
        "<Contents><Key>raw/a &amp; b &lt;1&gt; &quot;q&quot; &apos;s&apos;.jpg</Key>"
        "<LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;abc&quot;</ETag>"
        "<Size>123</Size><StorageClass>STANDARD</StorageClass></Contents>\n"
        "  <Contents><Size>18446744073709551615</Size><Key>raw/&#252;&#x20AC;&#x1F600;+=.png</Key></Contents>"
        "<Contents><Key><![CDATA[raw/<cdata>&amp;]]></Key><Size>0</Size><Owner/></Contents>"
        "<!-- a comment with <Contents> inside -->"
        "<CommonPrefixes><Prefix>raw/dir/</Prefix></CommonPrefixes>"
        "<NextContinuationToken>1ueG/cx+LP==</NextContinuationToken>"
        "</ListBucketResult>\n";
    mx8_s3_list_page p;
    mx8_error err;
    REQUIRE_OK(mx8_s3_parse_list(xml, sizeof xml - 1, &p, &err), &err);
    CHECK_INT(p.n, ==, 3);
    CHECK_STR(p.entries[0].key, "raw/a & b <1> \"q\" 's'.jpg");
    CHECK_INT(p.entries[0].size, ==, 123);
    CHECK_STR(p.entries[1].key, "raw/\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80+=.png");
    CHECK(p.entries[1].size == 18446744073709551615ULL);
    CHECK_STR(p.entries[2].key, "raw/<cdata>&amp;");
    CHECK_INT(p.n_prefixes, ==, 1);
    CHECK_STR(p.prefixes[0], "raw/dir/");
    CHECK_INT(p.truncated, ==, 1);
    CHECK_STR(p.next_token, "1ueG/cx+LP==");
    mx8_s3_list_page_free(&p);

    static const char last[] = "<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount>"
                               "</ListBucketResult>";
    REQUIRE_OK(mx8_s3_parse_list(last, sizeof last - 1, &p, &err), &err);
    CHECK(p.n == 0 && !p.truncated && p.next_token == NULL);
    mx8_s3_list_page_free(&p);
}

void test_s3_xml_error_body(void) {
    static const char xml[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>"
                              "<Message>The specified key does not exist.</Message><Key>a&amp;b</Key>"
                              "<RequestId>4442587FB7D0A2F9</RequestId><HostId>x</HostId></Error>";
    mx8_s3_error_info e;
    mx8_s3_parse_error(xml, sizeof xml - 1, &e);
    CHECK_STR(e.code, "NoSuchKey");
    CHECK_STR(e.message, "The specified key does not exist.");
    CHECK_STR(e.request_id, "4442587FB7D0A2F9");
    mx8_s3_parse_error("<html>Bad Gateway", 17, &e); /* not S3's: fields stay empty */
    CHECK(e.code[0] == '\0' && e.request_id[0] == '\0');
    mx8_s3_parse_error("", 0, &e);
    CHECK(e.code[0] == '\0');
    /* An empty element is empty, not the previous element's text (radosgw sends <ETag></ETag>). */
    static const char empty[] = "<Error><Code>AccessDenied</Code><Message></Message><RequestId/></Error>";
    mx8_s3_parse_error(empty, sizeof empty - 1, &e);
    CHECK_STR(e.code, "AccessDenied");
    CHECK_STR(e.message, "");
    CHECK_STR(e.request_id, "");
    static const char done[] = "<CompleteMultipartUploadResult><Key>data/k</Key><ETag></ETag>"
                               "</CompleteMultipartUploadResult>";
    char *tag = NULL;
    mx8_error err;
    REQUIRE_OK(mx8_s3_parse_text(done, sizeof done - 1, "CompleteMultipartUploadResult", "ETag", &tag, NULL, &err),
               &err);
    CHECK_STR(tag, "");
    free(tag);
}

void test_s3_xml_rejects_malformed(void) {
    static const char *const bad[] = {
        "",
        "<ListBucketResult><Contents><Key>a</Key><Size>1</Size></Contents>", /* truncated */
        "<ListBucketResult><Contents><Key>a</Key><Size>1</Size></Contents></ListBucket>",
        "<ListBucketResult><Contents><Key>a &bogus; b</Key><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a &#0; b</Key><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a &#xD800;</Key><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a &amp b</Key><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a</Key><Size>99999999999999999999</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
        "<Error><Code>AccessDenied</Code></Error>",
        "<!DOCTYPE x [<!ENTITY e \"boom\">]><ListBucketResult></ListBucketResult>",
        "<ListBucketResult></ListBucketResult><ListBucketResult></ListBucketResult>",
        "junk<ListBucketResult></ListBucketResult>",
        "<ListBucketResult><a><b><c><d><e><f><g><h><i><j><k><l><m><n><o><p><q>x</q></p></o></n></m></l></k>"
        "</j></i></h></g></f></e></d></c></b></a></ListBucketResult>",
        "<ListBucketResult attr=\"unterminated></ListBucketResult>",
        "<ListBucketResult><!-- unterminated </ListBucketResult>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mx8_s3_list_page p;
        mx8_error err;
        mx8_error_clear(&err);
        int rc = mx8_s3_parse_list(bad[i], strlen(bad[i]), &p, &err);
        CHECK_INT(rc, ==, MX8_ERR_FORMAT);
        CHECK(p.n == 0 && p.entries == NULL && p.next_token == NULL);
        if (rc != MX8_ERR_FORMAT)
            fprintf(stderr, "  case %zu: rc %d (%s)\n", i, rc, err.msg);
        if (rc == MX8_OK)
            mx8_s3_list_page_free(&p);
    }
}

void test_s3_xml_result_text_and_error_in_200(void) {
    static const char init[] = "<?xml version=\"1.0\"?><InitiateMultipartUploadResult><Bucket>b</Bucket>"
                               "<Key>k</Key><UploadId>VXBs+/=&amp;ID</UploadId></InitiateMultipartUploadResult>";
    char *v = NULL;
    mx8_s3_error_info e;
    mx8_error err;
    REQUIRE_OK(mx8_s3_parse_text(init, sizeof init - 1, "InitiateMultipartUploadResult", "UploadId", &v, &e, &err),
               &err);
    CHECK_STR(v, "VXBs+/=&ID");
    free(v);
    static const char in200[] = "<Error><Code>InternalError</Code><Message>try again</Message>"
                                "<RequestId>R1</RequestId></Error>";
    CHECK_INT(mx8_s3_parse_text(in200, sizeof in200 - 1, "CompleteMultipartUploadResult", "ETag", &v, &e, &err), ==,
              MX8_ERR_IO);
    CHECK(v == NULL && strstr(err.msg, "InternalError") != NULL);
    CHECK_STR(e.message, "try again");
    CHECK_STR(e.request_id, "R1");
    CHECK_INT(mx8_s3_parse_text(init, sizeof init - 1, "CompleteMultipartUploadResult", "ETag", &v, NULL, &err), ==,
              MX8_ERR_FORMAT);
    CHECK(strstr(err.msg, "expected <CompleteMultipartUploadResult>") != NULL);
    CHECK_INT(mx8_s3_parse_text(init, sizeof init - 1, "InitiateMultipartUploadResult", "Nope", &v, NULL, &err), ==,
              MX8_ERR_FORMAT);
    CHECK(v == NULL);
}
