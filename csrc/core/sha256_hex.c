#include "sha256_hex.h"

#include <stdlib.h>

#include <openssl/evp.h>

struct mx8_sha256 {
    EVP_MD_CTX *ctx;
};

mx8_sha256 *mx8_sha256_new(mx8_error *err) {
    mx8_sha256 *h = calloc(1, sizeof *h);
    if (!h) {
        mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a SHA-256 context");
        return NULL;
    }
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        mx8_error_set(err, MX8_ERR_NOMEM, "cannot initialise SHA-256 (libcrypto)");
        mx8_sha256_free(h);
        return NULL;
    }
    return h;
}

int mx8_sha256_update(mx8_sha256 *h, const void *data, size_t len, mx8_error *err) {
    if (EVP_DigestUpdate(h->ctx, data, len) != 1)
        return mx8_error_set(err, MX8_ERR_NOMEM, "SHA-256 update failed (libcrypto)");
    return MX8_OK;
}

int mx8_sha256_final_hex(mx8_sha256 *h, char hex[65], mx8_error *err) {
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(h->ctx, md, &n) != 1 || n != 32)
        return mx8_error_set(err, MX8_ERR_NOMEM, "SHA-256 final failed (libcrypto)");
    for (unsigned int i = 0; i < n; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
    return MX8_OK;
}

void mx8_sha256_free(mx8_sha256 *h) {
    if (h) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
    }
}
