/* libFuzzer target: the S3 XML parsers (csrc/core/s3_xml.c) on arbitrary bodies, as a server
 * or anything in between may send: a LIST page, an error document, a one-field result. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../csrc/core/s3_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *xml = (const char *)data;
    mx8_error err;
    mx8_error_clear(&err);
    mx8_s3_list_page page;
    memset(&page, 0, sizeof page);
    if (mx8_s3_parse_list(xml, size, &page, &err) == MX8_OK)
        mx8_s3_list_page_free(&page);
    mx8_s3_error_info info;
    mx8_s3_parse_error(xml, size, &info);
    /* fixed-size fields are always terminated */
    if (!memchr(info.code, 0, sizeof info.code) || !memchr(info.message, 0, sizeof info.message) ||
        !memchr(info.request_id, 0, sizeof info.request_id))
        abort();
    char *text = NULL;
    mx8_error_clear(&err);
    if (mx8_s3_parse_text(xml, size, "InitiateMultipartUploadResult", "UploadId", &text, &info, &err) == MX8_OK)
        free(text);
    return 0;
}
