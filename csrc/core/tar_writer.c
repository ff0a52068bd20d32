#include "tar_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 512
#define NAME_FIELD 100

static int write_all(mx8_tar_writer *w, const void *buf, size_t len, mx8_error *err) {
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(w->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return mx8_error_sys(err, errno, "cannot write %s at byte %llu", w->path,
                                 (unsigned long long)w->pos);
        }
        p += n;
        len -= (size_t)n;
        w->pos += (uint64_t)n;
    }
    return MX8_OK;
}

static void octal(char *field, size_t width, uint64_t v) {
    /* width-1 zero-padded octal digits and a NUL, as GNU tar writes them */
    snprintf(field, width, "%0*llo", (int)(width - 1), (unsigned long long)v);
}

/* Fills a ustar header block. name is truncated to the field; a pax record carries the rest. */
static void ustar_header(uint8_t h[BLOCK], const char *name, uint64_t size, uint64_t mtime, char type) {
    memset(h, 0, BLOCK);
    size_t nl = strlen(name);
    memcpy(h, name, nl < NAME_FIELD ? nl : NAME_FIELD);
    octal((char *)h + 100, 8, 0644);
    octal((char *)h + 108, 8, 0);
    octal((char *)h + 116, 8, 0);
    octal((char *)h + 124, 12, size);
    octal((char *)h + 136, 12, mtime);
    memset(h + 148, ' ', 8);
    h[156] = (uint8_t)type;
    memcpy(h + 257, "ustar", 6); /* magic "ustar\0", version "00" */
    memcpy(h + 263, "00", 2);
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum); /* 6 digits, NUL, then the space already there */
}

static size_t pad_of(uint64_t len) { return (size_t)((BLOCK - len % BLOCK) % BLOCK); }

/* "<len> path=<name>\n" where <len> counts the whole record including its own digits. */
static size_t pax_record_len(size_t nl) {
    size_t body = strlen(" path=\n") + nl, total = body + 1;
    while (total != body + (size_t)snprintf(NULL, 0, "%zu", total))
        total = body + (size_t)snprintf(NULL, 0, "%zu", total);
    return total;
}

static int needs_pax(const char *name) { return strlen(name) > NAME_FIELD; }

uint64_t mx8_tar_member_size(const char *name, size_t len) {
    uint64_t size = BLOCK + len + pad_of(len);
    if (needs_pax(name)) {
        size_t rl = pax_record_len(strlen(name));
        size += BLOCK + rl + pad_of(rl);
    }
    return size;
}

static const uint8_t ZEROS[2 * BLOCK];

static int write_pax(mx8_tar_writer *w, const char *name, uint64_t mtime, mx8_error *err) {
    size_t nl = strlen(name), rl = pax_record_len(nl);
    char *rec = malloc(rl + 1);
    if (!rec)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for a tar pax header");
    snprintf(rec, rl + 1, "%zu path=%s\n", rl, name);
    uint8_t h[BLOCK];
    ustar_header(h, "././@PaxHeader", rl, mtime, 'x');
    int rc = write_all(w, h, BLOCK, err);
    if (!rc)
        rc = write_all(w, rec, rl, err);
    if (!rc)
        rc = write_all(w, ZEROS, pad_of(rl), err);
    free(rec);
    return rc;
}

int mx8_tar_open(mx8_tar_writer *w, const char *path, mx8_error *err) {
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->path = strdup(path);
    if (!w->path)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory");
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int rc = mx8_error_sys(err, errno, "cannot create %s", path);
        free(w->path);
        w->path = NULL;
        return rc;
    }
    return MX8_OK;
}

int mx8_tar_add(mx8_tar_writer *w, const char *name, const uint8_t *data, size_t len,
                uint64_t mtime, uint64_t *data_offset, mx8_error *err) {
    if (!name[0])
        return mx8_error_set(err, MX8_ERR_ARG, "empty tar member name");
    int rc = needs_pax(name) ? write_pax(w, name, mtime, err) : MX8_OK;
    uint8_t h[BLOCK];
    ustar_header(h, name, len, mtime, '0');
    if (!rc)
        rc = write_all(w, h, BLOCK, err);
    if (!rc) {
        *data_offset = w->pos;
        rc = write_all(w, data, len, err);
    }
    if (!rc)
        rc = write_all(w, ZEROS, pad_of(len), err);
    return rc;
}

int mx8_tar_finish(mx8_tar_writer *w, mx8_error *err) {
    int rc = write_all(w, ZEROS, sizeof ZEROS, err);
    if (!rc && fsync(w->fd) != 0)
        rc = mx8_error_sys(err, errno, "cannot fsync %s", w->path);
    if (close(w->fd) != 0 && !rc)
        rc = mx8_error_sys(err, errno, "cannot close %s", w->path);
    w->fd = -1;
    free(w->path);
    w->path = NULL;
    return rc;
}

void mx8_tar_abort(mx8_tar_writer *w) {
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    free(w->path);
    w->path = NULL;
}
