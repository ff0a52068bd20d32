/* Incremental SHA-256 with a hex digest, on OpenSSL's libcrypto (EVP). */
#ifndef MX8_SHA256_HEX_H
#define MX8_SHA256_HEX_H

#include <stddef.h>

#include "mx8_error.h"

typedef struct mx8_sha256 mx8_sha256;

mx8_sha256 *mx8_sha256_new(mx8_error *err);
int mx8_sha256_update(mx8_sha256 *h, const void *data, size_t len, mx8_error *err);
/* Writes 64 lowercase hex digits and a NUL into hex (65 bytes). */
int mx8_sha256_final_hex(mx8_sha256 *h, char hex[65], mx8_error *err);
void mx8_sha256_free(mx8_sha256 *h);

#endif
