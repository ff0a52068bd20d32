#include "s3_sign.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* ---- a growable string; an allocation failure is sticky and reported once at the end ---- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_reserve(strbuf *b, size_t extra) {
    if (b->oom || b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 128;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sb_put(strbuf *b, const char *s, size_t n) {
    sb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_encode(strbuf *b, const char *s, size_t n, int keep_slash) {
    sb_reserve(b, 3 * n);
    if (b->oom)
        return;
    b->len += mx8_s3_uri_encode(b->p + b->len, s, n, keep_slash);
}

/* ---- encoding, hashing ---- */

size_t mx8_s3_uri_encode(char *dst, const char *src, size_t len, int keep_slash) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
            c == '_' || c == '.' || c == '~' || (c == '/' && keep_slash)) {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '%';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    dst[o] = '\0';
    return o;
}

void mx8_s3_amz_date(long long t, char out[17]) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static void to_hex(const unsigned char *md, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[2 * n] = '\0';
}

static int sha256_hex(const char *data, size_t len, char out[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return -1;
    to_hex(md, 32, out);
    return 0;
}

static int hmac(const void *key, size_t klen, const char *msg, unsigned char out[32]) {
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &n) || n != 32)
        return -1;
    return 0;
}

/* ---- endpoint ---- */

typedef struct {
    const char *scheme; /* "http" or "https" */
    char host[256];     /* lower-cased, IPv6 literals keep their brackets */
    char authority[300]; /* host[:port], the port only when it is not the scheme's default */
} endpoint_parts;

static int parse_endpoint(const char *ep, endpoint_parts *pe, mx8_error *err) {
    const char *p;
    if (!strncasecmp(ep, "https://", 8)) {
        pe->scheme = "https";
        p = ep + 8;
    } else if (!strncasecmp(ep, "http://", 7)) {
        pe->scheme = "http";
        p = ep + 7;
    } else {
        return mx8_error_set(err, MX8_ERR_ARG, "S3 endpoint '%.200s' must start with http:// or https://", ep);
    }
    const char *host_end = p[0] == '[' ? strchr(p, ']') : p + strcspn(p, ":/");
    if (!host_end)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 endpoint '%.200s': unterminated IPv6 literal", ep);
    if (p[0] == '[')
        host_end++;
    size_t hlen = (size_t)(host_end - p);
    if (hlen == 0 || hlen >= sizeof pe->host || memchr(p, '@', hlen))
        return mx8_error_set(err, MX8_ERR_ARG, "S3 endpoint '%.200s': missing or invalid host", ep);
    for (size_t i = 0; i < hlen; i++)
        pe->host[i] = (char)tolower((unsigned char)p[i]);
    pe->host[hlen] = '\0';
    long port = 0;
    p = host_end;
    if (*p == ':') {
        char *end;
        port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535 || (*end && *end != '/'))
            return mx8_error_set(err, MX8_ERR_ARG, "S3 endpoint '%.200s': invalid port", ep);
        p = end;
    }
    /* A path prefix would have to be part of the signed canonical URI; no S3 store needs it. */
    if (*p && strcmp(p, "/") != 0)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 endpoint '%.200s' must not have a path", ep);
    long dflt = pe->scheme[4] == 's' ? 443 : 80;
    if (port && port != dflt)
        snprintf(pe->authority, sizeof pe->authority, "%s:%ld", pe->host, port);
    else
        snprintf(pe->authority, sizeof pe->authority, "%s", pe->host);
    return MX8_OK;
}

/* ---- request checks ---- */

static int valid_amz_date(const char *d) {
    if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
        return 0;
    for (int i = 0; i < 15; i++)
        if (i != 8 && !isdigit((unsigned char)d[i]))
            return 0;
    return 1;
}

static int valid_bucket(const char *b) {
    if (!b || !*b || strlen(b) > MX8_S3_BUCKET_MAX)
        return 0;
    for (const char *c = b; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.' && *c != '_')
            return 0;
    return 1;
}

static int reserved_header(const char *lname) {
    static const char *const names[] = {"host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token",
                                        "authorization"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(lname, names[i]))
            return 1;
    return 0;
}

static int check_request(const mx8_s3_request *r, mx8_error *err) {
    if (!r->method || !*r->method || strspn(r->method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(r->method))
        return mx8_error_set(err, MX8_ERR_ARG, "S3 request: method must be upper-case letters");
    if (!r->region || !*r->region || strcspn(r->region, "/ \r\n") != strlen(r->region))
        return mx8_error_set(err, MX8_ERR_ARG, "S3 request: invalid region '%.64s'", r->region ? r->region : "");
    if (!valid_bucket(r->bucket))
        return mx8_error_set(err, MX8_ERR_ARG, "S3 request: invalid bucket name '%.100s'",
                             r->bucket ? r->bucket : "");
    if (!r->access_key || !*r->access_key || strcspn(r->access_key, "/ \r\n") != strlen(r->access_key))
        return mx8_error_set(err, MX8_ERR_ARG, "S3 request: missing or invalid access key id");
    if (!r->secret_key || !*r->secret_key)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 request: missing secret access key");
    if (r->session_token && strcspn(r->session_token, "\r\n") != strlen(r->session_token))
        return mx8_error_set(err, MX8_ERR_ARG, "S3 request: session token contains a line break");
    if (!valid_amz_date(r->amz_date))
        return mx8_error_set(err, MX8_ERR_ARG, "S3 request: amz_date must be YYYYMMDDTHHMMSSZ, got '%.32s'",
                             r->amz_date ? r->amz_date : "");
    if (r->payload_sha256 && strcmp(r->payload_sha256, MX8_S3_UNSIGNED_PAYLOAD) != 0 &&
        (strlen(r->payload_sha256) != 64 || strspn(r->payload_sha256, "0123456789abcdef") != 64))
        return mx8_error_set(err, MX8_ERR_ARG,
                             "S3 request: payload_sha256 must be 64 lower-case hex digits or UNSIGNED-PAYLOAD");
    return MX8_OK;
}

/* ---- canonical headers and query ---- */

typedef struct {
    char *name;  /* lower-cased */
    char *value; /* canonical form */
} kv;

static int kv_cmp(const void *a, const void *b) {
    const kv *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static void kv_free(kv *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].value);
    }
    free(v);
}

/* Lower-cases the name and trims/collapses the value (what SigV4 signs), so the same
 * strings can be sent. Returns 0, or -1 on a malformed header or OOM (err says which). */
static int canonical_header(kv *out, const char *name, const char *value, mx8_error *err) {
    size_t nlen = name ? strlen(name) : 0;
    if (!nlen || strcspn(name, ":()<>@,;\\\"/[]?={} \t\r\n") != nlen)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 request: invalid header name '%.64s'", name ? name : ""), -1;
    if (!value || strcspn(value, "\r\n") != strlen(value))
        return mx8_error_set(err, MX8_ERR_ARG, "S3 request: header '%.64s' has a missing value or a line break",
                             name), -1;
    out->name = malloc(nlen + 1);
    out->value = malloc(strlen(value) + 1);
    if (!out->name || !out->value)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request"), -1;
    for (size_t i = 0; i <= nlen; i++)
        out->name[i] = (char)tolower((unsigned char)name[i]);
    size_t o = 0;
    for (const char *c = value; *c; c++) {
        if (*c == ' ' || *c == '\t') {
            if (o && out->value[o - 1] != ' ')
                out->value[o++] = ' ';
        } else {
            out->value[o++] = *c;
        }
    }
    while (o && out->value[o - 1] == ' ')
        o--;
    out->value[o] = '\0';
    return 0;
}

/* Every header to sign, sorted by name: the caller's plus host and the x-amz-* ones. */
static int build_headers(const mx8_s3_request *r, const char *host, const char *payload, kv **out, size_t *n,
                         mx8_error *err) {
    size_t cap = r->n_headers + 4, k = 0;
    kv *h = calloc(cap, sizeof *h);
    if (!h)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request");
    mx8_error local;
    if (!err) /* the code to return comes from the error struct */
        err = &local;
    int bad = 0;
    for (size_t i = 0; i < r->n_headers && !bad; i++) {
        bad = canonical_header(&h[k++], r->headers[i].name, r->headers[i].value, err) != 0;
        if (!bad && reserved_header(h[k - 1].name))
            bad = 1, mx8_error_set(err, MX8_ERR_ARG, "S3 request: header '%s' is set by the signer", h[k - 1].name);
    }
    if (!bad)
        bad = canonical_header(&h[k++], "host", host, err) || canonical_header(&h[k++], "x-amz-date", r->amz_date, err) ||
              canonical_header(&h[k++], "x-amz-content-sha256", payload, err);
    if (!bad && r->session_token && *r->session_token)
        bad = canonical_header(&h[k++], "x-amz-security-token", r->session_token, err) != 0;
    if (bad) {
        kv_free(h, cap);
        return err->code;
    }
    qsort(h, k, sizeof *h, kv_cmp);
    for (size_t i = 1; i < k; i++)
        if (!strcmp(h[i].name, h[i - 1].name)) {
            mx8_error_set(err, MX8_ERR_ARG, "S3 request: header '%s' given twice", h[i].name);
            kv_free(h, cap);
            return MX8_ERR_ARG;
        }
    *out = h;
    *n = k;
    return MX8_OK;
}

/* "k1=v1&k2=v2" with each part AWS-encoded (slash included), sorted by key then value. */
static int build_query(const mx8_s3_request *r, strbuf *q, mx8_error *err) {
    if (!r->n_query)
        return MX8_OK;
    kv *p = calloc(r->n_query, sizeof *p);
    if (!p)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request");
    int oom = 0;
    for (size_t i = 0; i < r->n_query && !oom; i++) {
        const char *k = r->query[i].key ? r->query[i].key : "", *v = r->query[i].value ? r->query[i].value : "";
        p[i].name = malloc(3 * strlen(k) + 1);
        p[i].value = malloc(3 * strlen(v) + 1);
        oom = !p[i].name || !p[i].value;
        if (!oom) {
            mx8_s3_uri_encode(p[i].name, k, strlen(k), 0);
            mx8_s3_uri_encode(p[i].value, v, strlen(v), 0);
        }
    }
    if (!oom) {
        qsort(p, r->n_query, sizeof *p, kv_cmp);
        for (size_t i = 0; i < r->n_query; i++) {
            if (i)
                sb_puts(q, "&");
            sb_puts(q, p[i].name);
            sb_puts(q, "=");
            sb_puts(q, p[i].value);
        }
    }
    kv_free(p, r->n_query);
    if (oom || q->oom)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request");
    return MX8_OK;
}

/* ---- signature ---- */

/* HMAC chain of the secret over date, region, service and terminator (SigV4 signing key),
 * then the signature of string_to_sign. The key material is wiped before returning. */
static int sign_string(const mx8_s3_request *r, const char *string_to_sign, char out[65], mx8_error *err) {
    size_t slen = strlen(r->secret_key);
    char *k0 = malloc(slen + 5);
    if (!k0)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request");
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, r->secret_key, slen + 1);
    char date[9];
    memcpy(date, r->amz_date, 8);
    date[8] = '\0';
    unsigned char k1[32], k2[32], k3[32], k4[32], sig[32];
    int bad = hmac(k0, slen + 4, date, k1) || hmac(k1, 32, r->region, k2) || hmac(k2, 32, "s3", k3) ||
              hmac(k3, 32, "aws4_request", k4) || hmac(k4, 32, string_to_sign, sig);
    OPENSSL_cleanse(k0, slen + 4);
    free(k0);
    OPENSSL_cleanse(k1, 32);
    OPENSSL_cleanse(k2, 32);
    OPENSSL_cleanse(k3, 32);
    OPENSSL_cleanse(k4, 32);
    if (bad)
        return mx8_error_set(err, MX8_ERR_NOMEM, "HMAC-SHA256 failed (libcrypto) signing an S3 request");
    to_hex(sig, 32, out);
    return MX8_OK;
}

/* Path part of the URL: "/bucket[/key]" path-style, "/key" virtual-hosted. */
static void build_path(const mx8_s3_request *r, strbuf *path) {
    const char *key = r->key ? r->key : "";
    if (!r->virtual_host) {
        sb_puts(path, "/");
        sb_puts(path, r->bucket);
        if (*key)
            sb_puts(path, "/");
    } else {
        sb_puts(path, "/");
    }
    sb_encode(path, key, strlen(key), 1);
}

static int make_output(const mx8_s3_request *r, const char *url, const kv *h, size_t nh, const char *signed_names,
                       const char *sig, mx8_s3_signed *out, mx8_error *err) {
    out->url = strdup(url);
    out->headers = calloc(nh + 1, sizeof *out->headers);
    if (!out->url || !out->headers)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request");
    for (size_t i = 0; i < nh; i++) {
        strbuf line = {0};
        /* "Host" keeps its usual spelling: curl replaces its own Host line only by that name. */
        sb_puts(&line, strcmp(h[i].name, "host") ? h[i].name : "Host");
        sb_puts(&line, ": ");
        sb_puts(&line, h[i].value);
        if (line.oom)
            return free(line.p), mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request");
        out->headers[out->n_headers++] = line.p;
    }
    strbuf auth = {0};
    sb_puts(&auth, "Authorization: AWS4-HMAC-SHA256 Credential=");
    sb_puts(&auth, r->access_key);
    sb_puts(&auth, "/");
    sb_put(&auth, r->amz_date, 8);
    sb_puts(&auth, "/");
    sb_puts(&auth, r->region);
    sb_puts(&auth, "/s3/aws4_request, SignedHeaders=");
    sb_puts(&auth, signed_names);
    sb_puts(&auth, ", Signature=");
    sb_puts(&auth, sig);
    if (auth.oom)
        return free(auth.p), mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request");
    out->headers[out->n_headers++] = auth.p;
    memcpy(out->signature, sig, 65);
    return MX8_OK;
}

/* Canonical request -> string to sign -> signature; *signed_names gets "host;range;...". */
static int compute_signature(const mx8_s3_request *r, const char *path, const char *query, const kv *h,
                             size_t nh, const char *payload, strbuf *signed_names, char sig[65], mx8_error *err) {
    strbuf creq = {0}, sts = {0};
    sb_puts(&creq, r->method);
    sb_puts(&creq, "\n");
    sb_puts(&creq, path);
    sb_puts(&creq, "\n");
    sb_puts(&creq, query);
    sb_puts(&creq, "\n");
    for (size_t i = 0; i < nh; i++) {
        sb_puts(&creq, h[i].name);
        sb_puts(&creq, ":");
        sb_puts(&creq, h[i].value);
        sb_puts(&creq, "\n");
        if (i)
            sb_puts(signed_names, ";");
        sb_puts(signed_names, h[i].name);
    }
    sb_puts(&creq, "\n");
    sb_puts(&creq, signed_names->p ? signed_names->p : "");
    sb_puts(&creq, "\n");
    sb_puts(&creq, payload);
    char creq_hash[65];
    int rc = MX8_OK;
    if (creq.oom || signed_names->oom || sha256_hex(creq.p, creq.len, creq_hash) != 0) {
        rc = mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request");
    } else {
        sb_puts(&sts, "AWS4-HMAC-SHA256\n");
        sb_puts(&sts, r->amz_date);
        sb_puts(&sts, "\n");
        sb_put(&sts, r->amz_date, 8);
        sb_puts(&sts, "/");
        sb_puts(&sts, r->region);
        sb_puts(&sts, "/s3/aws4_request\n");
        sb_puts(&sts, creq_hash);
        rc = sts.oom ? mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request")
                     : sign_string(r, sts.p, sig, err);
    }
    free(creq.p);
    free(sts.p);
    return rc;
}

int mx8_s3_sign(const mx8_s3_request *r, mx8_s3_signed *out, mx8_error *err) {
    memset(out, 0, sizeof *out);
    endpoint_parts ep;
    int rc = check_request(r, err);
    if (rc || (rc = parse_endpoint(r->endpoint ? r->endpoint : "", &ep, err)))
        return rc;
    char host[600];
    snprintf(host, sizeof host, "%s%s%s", r->virtual_host ? r->bucket : "", r->virtual_host ? "." : "",
             ep.authority);
    const char *payload = r->payload_sha256 ? r->payload_sha256 : MX8_S3_UNSIGNED_PAYLOAD;
    strbuf path = {0}, query = {0}, url = {0}, names = {0};
    size_t nh = 0;
    kv *h = NULL;
    char sig[65];
    build_path(r, &path);
    if (path.oom) {
        rc = mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request");
        goto done;
    }
    if ((rc = build_query(r, &query, err)))
        goto done;
    if ((rc = build_headers(r, host, payload, &h, &nh, err)))
        goto done;
    if ((rc = compute_signature(r, path.p, query.p ? query.p : "", h, nh, payload, &names, sig, err)))
        goto done;
    sb_puts(&url, ep.scheme);
    sb_puts(&url, "://");
    sb_puts(&url, host);
    sb_puts(&url, path.p);
    if (query.len) {
        sb_puts(&url, "?");
        sb_puts(&url, query.p);
    }
    rc = url.oom ? mx8_error_set(err, MX8_ERR_NOMEM, "out of memory signing an S3 request")
                 : make_output(r, url.p, h, nh, names.p, sig, out, err);
done:
    if (rc)
        mx8_s3_signed_free(out);
    if (h)
        kv_free(h, nh);
    free(path.p);
    free(query.p);
    free(url.p);
    free(names.p);
    return rc;
}

void mx8_s3_signed_free(mx8_s3_signed *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->n_headers; i++)
        free(s->headers[i]);
    free(s->headers);
    free(s->url);
    memset(s, 0, sizeof *s);
}
