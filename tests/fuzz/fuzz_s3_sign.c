/* libFuzzer target: the SigV4 canonical request builder (csrc/core/s3_sign.c). The input is
 * cut at NUL bytes into key, query keys and values, header names and values, region and
 * bucket: every one of them can come from a user's key names or configuration. Signing must
 * succeed or fail with an error, and the secret must never appear in the error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../csrc/core/s3_sign.h"

#define MAX_FIELDS 12
#define SECRET "fuzz-secret-never-shown"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    const char *f[MAX_FIELDS];
    int n = 0;
    for (char *p = buf; n < MAX_FIELDS && p <= buf + size; p += strlen(p) + 1) f[n++] = p;
    while (n < MAX_FIELDS) f[n++] = "";
    mx8_s3_param query[2] = {{f[2], f[3]}, {f[4], f[5]}};
    mx8_s3_header headers[2] = {{f[6][0] ? f[6] : "x-amz-meta-a", f[7]}, {f[8][0] ? f[8] : "range", f[9]}};
    mx8_s3_request r = {
        .method = (size && data[0] & 1) ? "PUT" : "GET",
        .endpoint = (size && data[0] & 2) ? "https://s3.example.com:8443" : "http://127.0.0.1:9000",
        .region = f[10][0] ? f[10] : "us-east-1",
        .bucket = f[1][0] ? f[1] : "bucket",
        .key = f[0],
        .query = query,
        .n_query = (size_t)(size ? (data[size - 1] % 3) : 0),
        .headers = headers,
        .n_headers = (size_t)(size > 1 ? (data[size - 2] % 3) : 0),
        .payload_sha256 = NULL,
        .access_key = "AKIDFUZZ",
        .secret_key = SECRET,
        .session_token = f[11],
        .amz_date = "20261201T000000Z",
        .virtual_host = size && (data[0] & 4),
    };
    mx8_s3_signed out;
    memset(&out, 0, sizeof out);
    mx8_error err;
    mx8_error_clear(&err);
    if (mx8_s3_sign(&r, &out, &err) == MX8_OK) {
        if (!out.url || strlen(out.signature) != 64) abort();
        mx8_s3_signed_free(&out);
    } else if (strstr(err.msg, SECRET) && !memmem(data, size, SECRET, strlen(SECRET))) {
        abort(); /* (the fuzzer learns the string from strstr and may put it in a field itself) */
    }
    free(buf);
    return 0;
}
