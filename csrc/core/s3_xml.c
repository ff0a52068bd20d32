#include "s3_xml.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define XML_MAX_DEPTH 16
#define XML_MAX_NAME 64

/* ---- text accumulated for the element being read ---- */

typedef struct {
    char *p;
    size_t len, cap;
} text_buf;

static int tb_put(text_buf *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p)
            return -1;
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
    return 0;
}

/* Empties the buffer and its string: callbacks read the text as a C string, so an empty
 * element must not show the previous element's text. */
static void tb_clear(text_buf *t) {
    t->len = 0;
    if (t->p)
        t->p[0] = '\0';
}

static size_t utf8_put(char *out, unsigned long cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one entity; s points just after '&'. Returns the bytes consumed (through ';') or
 * 0 when the entity is malformed or unknown. */
static size_t decode_entity(const char *s, size_t n, char out[4], size_t *out_len) {
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
    const char *semi = memchr(s, ';', n < 12 ? n : 12);
    if (!semi)
        return 0;
    size_t len = (size_t)(semi - s);
    if (len >= 2 && s[0] == '#') {
        int hex = s[1] == 'x' || s[1] == 'X';
        const char *d = s + 1 + hex;
        unsigned long cp = 0;
        if (d == semi)
            return 0;
        for (; d < semi; d++) {
            int v = isdigit((unsigned char)*d) ? *d - '0'
                    : hex && isxdigit((unsigned char)*d) ? tolower((unsigned char)*d) - 'a' + 10 : -1;
            if (v < 0)
                return 0;
            cp = cp * (hex ? 16 : 10) + (unsigned long)v;
            if (cp > 0x10FFFF)
                return 0;
        }
        /* NUL would cut C strings short; surrogates are not characters. */
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        *out_len = utf8_put(out, cp);
        return len + 1;
    }
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (strlen(named[i].name) == len && !memcmp(s, named[i].name, len)) {
            out[0] = named[i].c;
            *out_len = 1;
            return len + 1;
        }
    return 0;
}

static int append_text(text_buf *t, const char *s, size_t n, mx8_error *err) {
    size_t i = 0;
    while (i < n) {
        const char *amp = memchr(s + i, '&', n - i);
        size_t plain = amp ? (size_t)(amp - (s + i)) : n - i;
        if (tb_put(t, s + i, plain))
            return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory reading an S3 XML response");
        i += plain;
        if (i < n) {
            char ch[4];
            size_t chn = 0, used = decode_entity(s + i + 1, n - i - 1, ch, &chn);
            if (!used)
                return mx8_error_set(err, MX8_ERR_FORMAT, "S3 XML response: bad character reference near '%.*s'",
                                     (int)(n - i < 12 ? n - i : 12), s + i); /* the body has no NUL */
            if (tb_put(t, ch, chn))
                return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory reading an S3 XML response");
            i += 1 + used;
        }
    }
    return MX8_OK;
}

/* ---- the walker ---- */

typedef struct {
    const char *x;
    size_t len, i;
    char names[XML_MAX_DEPTH][XML_MAX_NAME];
    const char *path[XML_MAX_DEPTH];
    int depth, roots;
    text_buf text;
    mx8_xml_cb cb;
    void *ctx;
    mx8_error *err;
} walker;

static const char *find(const walker *w, size_t from, const char *needle) {
    size_t nl = strlen(needle);
    for (size_t i = from; i + nl <= w->len; i++)
        if (!memcmp(w->x + i, needle, nl))
            return w->x + i;
    return NULL;
}

/* Reads a tag name at w->i into out (prefix "ns:" dropped); returns its raw length or 0. */
static size_t read_name(walker *w, char out[XML_MAX_NAME]) {
    size_t s = w->i, e = s;
    while (e < w->len && !isspace((unsigned char)w->x[e]) && w->x[e] != '/' && w->x[e] != '>' && w->x[e] != '<')
        e++;
    const char *colon = memchr(w->x + s, ':', e - s);
    size_t from = colon ? (size_t)(colon - w->x) + 1 : s;
    if (e == s || from == e || e - from >= XML_MAX_NAME)
        return 0;
    memcpy(out, w->x + from, e - from);
    out[e - from] = '\0';
    return e - s;
}

static int end_element(walker *w) {
    w->depth--;
    int rc = w->cb(w->ctx, w->path, w->depth + 1, w->text.p ? w->text.p : "", w->text.len);
    tb_clear(&w->text);
    return rc;
}

static int start_tag(walker *w) {
    w->i++; /* '<' */
    if (w->depth == XML_MAX_DEPTH)
        return mx8_error_set(w->err, MX8_ERR_FORMAT, "S3 XML response nested deeper than %d", XML_MAX_DEPTH);
    if (w->depth == 0 && w->roots++)
        return mx8_error_set(w->err, MX8_ERR_FORMAT, "S3 XML response has more than one root element");
    size_t n = read_name(w, w->names[w->depth]);
    if (!n)
        return mx8_error_set(w->err, MX8_ERR_FORMAT, "S3 XML response: bad element name at byte %zu", w->i);
    w->i += n;
    char quote = 0; /* attributes are skipped, but a '>' inside quotes does not end the tag */
    while (w->i < w->len && (quote || w->x[w->i] != '>')) {
        char c = w->x[w->i++];
        if (quote && c == quote)
            quote = 0;
        else if (!quote && (c == '"' || c == '\''))
            quote = c;
    }
    if (w->i >= w->len)
        return mx8_error_set(w->err, MX8_ERR_FORMAT, "S3 XML response truncated inside a tag");
    int self_closing = w->x[w->i - 1] == '/';
    w->i++; /* '>' */
    w->path[w->depth] = w->names[w->depth];
    w->depth++;
    tb_clear(&w->text);
    return self_closing ? end_element(w) : MX8_OK;
}

static int end_tag(walker *w) {
    w->i += 2; /* "</" */
    char name[XML_MAX_NAME];
    size_t n = read_name(w, name);
    if (!n || w->depth == 0 || strcmp(name, w->names[w->depth - 1]) != 0)
        return mx8_error_set(w->err, MX8_ERR_FORMAT, "S3 XML response: unexpected end tag at byte %zu", w->i);
    w->i += n;
    while (w->i < w->len && isspace((unsigned char)w->x[w->i]))
        w->i++;
    if (w->i >= w->len || w->x[w->i] != '>')
        return mx8_error_set(w->err, MX8_ERR_FORMAT, "S3 XML response: malformed end tag at byte %zu", w->i);
    w->i++;
    return end_element(w);
}

/* "<?...?>", "<!--...-->" and CDATA; a DOCTYPE is refused (no entity definitions from the
 * network). Returns MX8_OK with w->i past the construct. */
static int special(walker *w) {
    static const struct {
        const char *open, *close;
    } kinds[] = {{"<?", "?>"}, {"<!--", "-->"}, {"<![CDATA[", "]]>"}};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t ol = strlen(kinds[k].open);
        if (w->len - w->i < ol || memcmp(w->x + w->i, kinds[k].open, ol) != 0)
            continue;
        const char *end = find(w, w->i + ol, kinds[k].close);
        if (!end)
            return mx8_error_set(w->err, MX8_ERR_FORMAT, "S3 XML response truncated in '%s'", kinds[k].open);
        if (k == 2 && w->depth > 0 && tb_put(&w->text, w->x + w->i + ol, (size_t)(end - w->x) - w->i - ol))
            return mx8_error_set(w->err, MX8_ERR_NOMEM, "out of memory reading an S3 XML response");
        w->i = (size_t)(end - w->x) + strlen(kinds[k].close);
        return MX8_OK;
    }
    return mx8_error_set(w->err, MX8_ERR_FORMAT, "S3 XML response: unsupported markup at byte %zu", w->i);
}

static int walk_step(walker *w) {
    if (w->x[w->i] != '<') {
        const char *lt = memchr(w->x + w->i, '<', w->len - w->i);
        size_t n = lt ? (size_t)(lt - (w->x + w->i)) : w->len - w->i;
        if (w->depth == 0) {
            for (size_t k = 0; k < n; k++)
                if (!isspace((unsigned char)w->x[w->i + k]))
                    return mx8_error_set(w->err, MX8_ERR_FORMAT, "S3 XML response: text outside the root element");
        } else {
            int rc = append_text(&w->text, w->x + w->i, n, w->err);
            if (rc)
                return rc;
        }
        w->i += n;
        return MX8_OK;
    }
    if (w->i + 1 < w->len && (w->x[w->i + 1] == '?' || w->x[w->i + 1] == '!'))
        return special(w);
    if (w->i + 1 < w->len && w->x[w->i + 1] == '/')
        return end_tag(w);
    return start_tag(w);
}

int mx8_xml_walk(const char *xml, size_t len, mx8_xml_cb cb, void *ctx, mx8_error *err) {
    walker *w = calloc(1, sizeof *w);
    if (!w)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory reading an S3 XML response");
    w->x = xml;
    w->len = len;
    w->cb = cb;
    w->ctx = ctx;
    w->err = err;
    /* A UTF-8 byte order mark is allowed before the declaration. */
    if (len >= 3 && !memcmp(xml, "\xEF\xBB\xBF", 3))
        w->i = 3;
    int rc = MX8_OK;
    while (rc == MX8_OK && w->i < w->len)
        rc = walk_step(w);
    if (rc == MX8_OK && (w->depth != 0 || w->roots == 0))
        rc = mx8_error_set(err, MX8_ERR_FORMAT, "S3 XML response is %s", w->roots ? "truncated" : "empty");
    free(w->text.p);
    free(w);
    return rc;
}

/* ---- ListObjectsV2 ---- */

typedef struct {
    mx8_s3_list_page *page;
    size_t cap, pcap;
    char *key;
    uint64_t size;
    int have_size;
    mx8_error *err;
} list_ctx;

static int parse_u64(const char *s, uint64_t *out) {
    if (!*s || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int push(void **arr, size_t *cap, size_t n, size_t elem) {
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

static int list_cb(void *vctx, const char *const *path, int depth, const char *text, size_t len) {
    list_ctx *c = vctx;
    mx8_s3_list_page *pg = c->page;
    const char *oom = "out of memory reading an S3 list response";
    if (strcmp(path[0], "ListBucketResult") != 0)
        return mx8_error_set(c->err, MX8_ERR_FORMAT, "S3 list response: root element is <%.40s>", path[0]);
    if (depth == 3 && !strcmp(path[1], "Contents") && !strcmp(path[2], "Key")) {
        free(c->key);
        if (!len || memchr(text, '\0', len))
            return c->key = NULL, mx8_error_set(c->err, MX8_ERR_FORMAT, "S3 list response: empty or invalid <Key>");
        if (!(c->key = strdup(text)))
            return mx8_error_set(c->err, MX8_ERR_NOMEM, "%s", oom);
    } else if (depth == 3 && !strcmp(path[1], "Contents") && !strcmp(path[2], "Size")) {
        if (parse_u64(text, &c->size))
            return mx8_error_set(c->err, MX8_ERR_FORMAT, "S3 list response: bad <Size> '%.30s'", text);
        c->have_size = 1;
    } else if (depth == 2 && !strcmp(path[1], "Contents")) {
        if (!c->key || !c->have_size)
            return mx8_error_set(c->err, MX8_ERR_FORMAT, "S3 list response: <Contents> without <Key> and <Size>");
        if (push((void **)&pg->entries, &c->cap, pg->n, sizeof *pg->entries))
            return mx8_error_set(c->err, MX8_ERR_NOMEM, "%s", oom);
        pg->entries[pg->n++] = (mx8_s3_entry){c->key, c->size};
        c->key = NULL;
        c->have_size = 0;
    } else if (depth == 3 && !strcmp(path[1], "CommonPrefixes") && !strcmp(path[2], "Prefix")) {
        char *p = strdup(text);
        if (!p || push((void **)&pg->prefixes, &c->pcap, pg->n_prefixes, sizeof *pg->prefixes))
            return free(p), mx8_error_set(c->err, MX8_ERR_NOMEM, "%s", oom);
        pg->prefixes[pg->n_prefixes++] = p;
    } else if (depth == 2 && !strcmp(path[1], "IsTruncated")) {
        if (strcmp(text, "true") && strcmp(text, "false"))
            return mx8_error_set(c->err, MX8_ERR_FORMAT, "S3 list response: bad <IsTruncated> '%.10s'", text);
        pg->truncated = !strcmp(text, "true");
    } else if (depth == 2 && !strcmp(path[1], "NextContinuationToken") && len) {
        free(pg->next_token);
        if (!(pg->next_token = strdup(text)))
            return mx8_error_set(c->err, MX8_ERR_NOMEM, "%s", oom);
    }
    return MX8_OK;
}

int mx8_s3_parse_list(const char *xml, size_t len, mx8_s3_list_page *out, mx8_error *err) {
    memset(out, 0, sizeof *out);
    list_ctx c = {.page = out, .err = err};
    int rc = mx8_xml_walk(xml, len, list_cb, &c, err);
    free(c.key);
    if (rc == MX8_OK && out->truncated && !out->next_token)
        rc = mx8_error_set(err, MX8_ERR_FORMAT, "S3 list response: truncated without <NextContinuationToken>");
    if (rc)
        mx8_s3_list_page_free(out);
    return rc;
}

void mx8_s3_list_page_free(mx8_s3_list_page *p) {
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->entries[i].key);
    for (size_t i = 0; i < p->n_prefixes; i++)
        free(p->prefixes[i]);
    free(p->entries);
    free(p->prefixes);
    free(p->next_token);
    memset(p, 0, sizeof *p);
}

/* ---- error bodies ---- */

static void copy_printable(char *dst, size_t cap, const char *src) {
    size_t o = 0;
    for (; *src && o + 1 < cap; src++)
        dst[o++] = (unsigned char)*src < 0x20 || *src == 0x7f ? ' ' : *src;
    dst[o] = '\0';
}

static int error_cb(void *vctx, const char *const *path, int depth, const char *text, size_t len) {
    (void)len;
    mx8_s3_error_info *e = vctx;
    if (depth != 2 || strcmp(path[0], "Error") != 0)
        return MX8_OK;
    if (!strcmp(path[1], "Code"))
        copy_printable(e->code, sizeof e->code, text);
    else if (!strcmp(path[1], "Message"))
        copy_printable(e->message, sizeof e->message, text);
    else if (!strcmp(path[1], "RequestId"))
        copy_printable(e->request_id, sizeof e->request_id, text);
    else if (!strcmp(path[1], "Endpoint"))
        copy_printable(e->endpoint, sizeof e->endpoint, text);
    else if (!strcmp(path[1], "Region"))
        copy_printable(e->region, sizeof e->region, text);
    return MX8_OK;
}

void mx8_s3_parse_error(const char *xml, size_t len, mx8_s3_error_info *out) {
    memset(out, 0, sizeof *out);
    mx8_error ignored;
    mx8_xml_walk(xml, len, error_cb, out, &ignored);
}

/* ---- one value from a small result document ---- */

typedef struct {
    const char *root, *child;
    char *value;
    int is_error;
    mx8_error *err;
} text_ctx;

static int text_cb(void *vctx, const char *const *path, int depth, const char *text, size_t len) {
    text_ctx *t = vctx;
    (void)len;
    if (!strcmp(path[0], "Error")) {
        t->is_error = 1;
        return MX8_OK;
    }
    if (strcmp(path[0], t->root) != 0)
        return mx8_error_set(t->err, MX8_ERR_FORMAT, "S3 response: expected <%.40s>, got <%.40s>", t->root, path[0]);
    if (depth == 2 && !strcmp(path[1], t->child) && !t->value && !(t->value = strdup(text)))
        return mx8_error_set(t->err, MX8_ERR_NOMEM, "out of memory reading an S3 response");
    return MX8_OK;
}

int mx8_s3_parse_text(const char *xml, size_t len, const char *root, const char *child, char **out,
                      mx8_s3_error_info *e, mx8_error *err) {
    *out = NULL;
    text_ctx t = {.root = root, .child = child, .err = err};
    int rc = mx8_xml_walk(xml, len, text_cb, &t, err);
    if (rc == MX8_OK && t.is_error) {
        mx8_s3_error_info local;
        mx8_s3_parse_error(xml, len, e ? e : &local);
        rc = mx8_error_set(err, MX8_ERR_IO, "S3 error in a 200 response: %.64s", e ? e->code : local.code);
    } else if (rc == MX8_OK && !t.value) {
        rc = mx8_error_set(err, MX8_ERR_FORMAT, "S3 response: <%.40s> has no <%.40s>", root, child);
    }
    if (rc) {
        free(t.value);
        return rc;
    }
    *out = t.value;
    return MX8_OK;
}
