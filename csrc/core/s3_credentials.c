#include "s3_credentials.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

struct mx8_s3_credentials {
    pthread_mutex_t mu;
    _Atomic int refs;
    _Atomic int refreshable;
    mx8_s3_key_copy keys; /* under mu */
};

static int check_keys(const char *access_key, const char *secret_key, const char *session_token,
                      mx8_error *err) {
    if (!access_key || !*access_key || !secret_key || !*secret_key)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 credentials need an access key and a secret key");
    if (strlen(access_key) >= MX8_S3_KEY_MAX || strlen(secret_key) >= MX8_S3_KEY_MAX)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 access key or secret key longer than %d characters",
                             MX8_S3_KEY_MAX - 1);
    if (session_token && strlen(session_token) >= MX8_S3_TOKEN_MAX)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 session token longer than %d characters", MX8_S3_TOKEN_MAX - 1);
    return MX8_OK;
}

mx8_s3_credentials *mx8_s3_credentials_new(const char *access_key, const char *secret_key,
                                           const char *session_token, mx8_error *err) {
    if (check_keys(access_key, secret_key, session_token, err))
        return NULL;
    mx8_s3_credentials *c = calloc(1, sizeof *c);
    if (!c) {
        mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for S3 credentials");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    atomic_store(&c->refs, 1);
    mx8_s3_credentials_set(c, access_key, secret_key, session_token, err); /* checked above: cannot fail */
    return c;
}

void mx8_s3_credentials_ref(mx8_s3_credentials *c) { atomic_fetch_add(&c->refs, 1); }

void mx8_s3_credentials_unref(mx8_s3_credentials *c) {
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&c->mu);
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

int mx8_s3_credentials_set(mx8_s3_credentials *c, const char *access_key, const char *secret_key,
                           const char *session_token, mx8_error *err) {
    int rc = check_keys(access_key, secret_key, session_token, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&c->mu);
    mx8_s3_key_copy *k = &c->keys;
    OPENSSL_cleanse(k->secret_key, sizeof k->secret_key);
    strcpy(k->access_key, access_key); /* lengths checked */
    strcpy(k->secret_key, secret_key);
    strcpy(k->session_token, session_token ? session_token : "");
    k->generation++;
    pthread_mutex_unlock(&c->mu);
    return MX8_OK;
}

void mx8_s3_credentials_copy(mx8_s3_credentials *c, mx8_s3_key_copy *out) {
    pthread_mutex_lock(&c->mu);
    /* Field by field: the token is usually short, so not all 8 KB. */
    memcpy(out->access_key, c->keys.access_key, sizeof out->access_key);
    memcpy(out->secret_key, c->keys.secret_key, sizeof out->secret_key);
    strcpy(out->session_token, c->keys.session_token);
    out->generation = c->keys.generation;
    pthread_mutex_unlock(&c->mu);
}

uint64_t mx8_s3_credentials_generation(mx8_s3_credentials *c) {
    pthread_mutex_lock(&c->mu);
    uint64_t g = c->keys.generation;
    pthread_mutex_unlock(&c->mu);
    return g;
}

void mx8_s3_credentials_set_refreshable(mx8_s3_credentials *c, int refreshable) {
    atomic_store(&c->refreshable, refreshable != 0);
}

int mx8_s3_credentials_refreshable(mx8_s3_credentials *c) { return atomic_load(&c->refreshable); }

void mx8_s3_key_copy_wipe(mx8_s3_key_copy *k) { OPENSSL_cleanse(k->secret_key, sizeof k->secret_key); }
