/* libFuzzer target: opening a binary manifest index (csrc/core/manifest_index.c) made of
 * arbitrary bytes. An index is a file anyone could have written: any input must open or fail
 * with MX8_ERR_FORMAT / MX8_ERR_IO / MX8_ERR_NOMEM, never crash, and an opened one must hold
 * only records whose location and label are in range. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../csrc/core/manifest_index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("mx8-fuzz-index", 0);
    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
        abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    mx8_manifest *m = NULL;
    mx8_index_source src;
    mx8_error err;
    mx8_error_clear(&err);
    int rc = mx8_index_open(path, &m, &src, &err);
    if (rc == MX8_OK) {
        for (size_t i = 0; i < m->n_records; i++)
            if (m->records[i].location >= m->n_locations || m->records[i].label > m->max_label)
                abort();
        for (size_t i = 0; i < m->n_locations; i++)
            (void)m->locations[i][0];
        mx8_manifest_free(m);
    } else if (rc != MX8_ERR_FORMAT && rc != MX8_ERR_IO && rc != MX8_ERR_NOMEM) {
        abort();
    }
    close(fd);
    return 0;
}
