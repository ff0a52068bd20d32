#include "file_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

void mx8_file_reader_init(mx8_file_reader *r, const char *const *paths, size_t n_paths) {
    r->paths = paths;
    r->n_paths = n_paths;
    for (int i = 0; i < MX8_FD_CACHE; i++) {
        r->cache[i].loc = -1;
        r->cache[i].fd = -1;
    }
}

void mx8_file_reader_close(mx8_file_reader *r) {
    for (int i = 0; i < MX8_FD_CACHE; i++) {
        if (r->cache[i].fd >= 0)
            close(r->cache[i].fd);
        r->cache[i].fd = -1;
        r->cache[i].loc = -1;
    }
}

/* Direct-mapped: a shard stays in its slot; per-file datasets simply replace entries. */
static int lookup(mx8_file_reader *r, uint32_t loc, int *slot_out, mx8_error *err) {
    if (loc >= r->n_paths)
        return mx8_error_set(err, MX8_ERR_ARG, "location index %u out of range", loc);
    int slot = (int)(loc % MX8_FD_CACHE);
    *slot_out = slot;
    if (r->cache[slot].loc == (int64_t)loc)
        return MX8_OK;
    if (r->cache[slot].fd >= 0)
        close(r->cache[slot].fd);
    r->cache[slot].loc = -1;
    /* O_NONBLOCK: opening a FIFO named *.jpg for reading would block until a writer comes,
     * and a worker blocked there cannot be stopped. Regular files ignore the flag. */
    int fd = open(r->paths[loc], O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return mx8_error_sys(err, errno, "cannot open %s", r->paths[loc]);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mx8_error_sys(err, e, "cannot stat %s", r->paths[loc]);
    }
    if (!S_ISREG(st.st_mode)) { /* FIFOs, devices (/dev/zero never ends), sockets, directories */
        close(fd);
        return mx8_error_sys(err, EINVAL, "%s is not a regular file (%s)", r->paths[loc],
                             S_ISFIFO(st.st_mode)  ? "a FIFO"
                             : S_ISCHR(st.st_mode) ? "a character device"
                             : S_ISBLK(st.st_mode) ? "a block device"
                             : S_ISDIR(st.st_mode) ? "a directory"
                                                   : "a socket");
    }
    r->cache[slot].fd = fd;
    r->cache[slot].size = (uint64_t)st.st_size;
    r->cache[slot].loc = loc;
    return MX8_OK;
}

int mx8_file_size(mx8_file_reader *r, uint32_t loc, uint64_t *size, mx8_error *err) {
    int slot = 0;
    int rc = lookup(r, loc, &slot, err);
    if (!rc)
        *size = r->cache[slot].size;
    return rc;
}

int mx8_file_pread(mx8_file_reader *r, uint32_t loc, uint64_t off, uint64_t len, uint8_t *dst,
                   mx8_error *err) {
    int slot = 0;
    int rc = lookup(r, loc, &slot, err);
    if (rc)
        return rc;
    uint64_t size = r->cache[slot].size;
    if (off > size || len > size - off)
        return mx8_error_set(err, MX8_ERR_RANGE,
                             "byte range %llu+%llu runs past the end of %s (%llu bytes)",
                             (unsigned long long)off, (unsigned long long)len, r->paths[loc],
                             (unsigned long long)size);
    uint64_t got = 0;
    while (got < len) {
        ssize_t n = pread(r->cache[slot].fd, dst + got, (size_t)(len - got), (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mx8_error_sys(err, errno, "cannot read %s at byte %llu", r->paths[loc],
                                 (unsigned long long)(off + got));
        if (n == 0) /* the file shrank since we opened it */
            return mx8_error_set(err, MX8_ERR_RANGE,
                                 "byte range %llu+%llu runs past the end of %s (ends at %llu)",
                                 (unsigned long long)off, (unsigned long long)len, r->paths[loc],
                                 (unsigned long long)(off + got));
        got += (uint64_t)n;
    }
    return MX8_OK;
}
