/* S3 credentials that can change while requests run: temporary keys (an instance role, web
 * identity, credential_process) are refreshed by the Python layer (mx8/s3creds.py) and pushed
 * in here; every client and fetcher holding the object signs its next attempt with the new
 * keys. Reference-counted, because the engine's clients, its fetcher and the Python object
 * that receives the refreshes all hold it.
 *
 * The secret never leaves this object except as a copy for one signature, which the signer
 * wipes. No message ever contains it. */
#ifndef MX8_S3_CREDENTIALS_H
#define MX8_S3_CREDENTIALS_H

#include <stdint.h>

#include "mx8_error.h"

#define MX8_S3_KEY_MAX 256      /* access key id and secret: AWS's are 20 and 40 characters */
#define MX8_S3_TOKEN_MAX 8192   /* session tokens: ~1 KB from STS, a few KB from IAM roles */

typedef struct mx8_s3_credentials mx8_s3_credentials;

/* What one signature uses: a consistent copy (never half old, half new keys). */
typedef struct {
    char access_key[MX8_S3_KEY_MAX];
    char secret_key[MX8_S3_KEY_MAX];
    char session_token[MX8_S3_TOKEN_MAX]; /* "" when there is none */
    uint64_t generation;                  /* of the keys copied: 1 for the first set */
} mx8_s3_key_copy;

/* New credentials holding these keys (session_token may be NULL or ""); reference count 1. */
mx8_s3_credentials *mx8_s3_credentials_new(const char *access_key, const char *secret_key,
                                           const char *session_token, mx8_error *err);
void mx8_s3_credentials_ref(mx8_s3_credentials *c);
void mx8_s3_credentials_unref(mx8_s3_credentials *c); /* frees (and wipes) at zero */

/* Replaces the keys; requests signed from now on use them. */
int mx8_s3_credentials_set(mx8_s3_credentials *c, const char *access_key, const char *secret_key,
                           const char *session_token, mx8_error *err);
void mx8_s3_credentials_copy(mx8_s3_credentials *c, mx8_s3_key_copy *out);
uint64_t mx8_s3_credentials_generation(mx8_s3_credentials *c);
/* Marks keys that a refresher replaces (temporary credentials): a request refused for its
 * keys is then retried with backoff, re-signed each time, since the refresh that replaces
 * revoked keys may land a moment after the server stopped accepting them. */
void mx8_s3_credentials_set_refreshable(mx8_s3_credentials *c, int refreshable);
int mx8_s3_credentials_refreshable(mx8_s3_credentials *c);
/* Wipes a copy once its signature is made. */
void mx8_s3_key_copy_wipe(mx8_s3_key_copy *k);

#endif
