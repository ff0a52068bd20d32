/* libFuzzer target: the manifest parser (csrc/core/manifest.c) on arbitrary bytes. A manifest
 * comes from whoever filled the bucket: any input must parse or fail with MX8_ERR_FORMAT /
 * MX8_ERR_NOMEM, never crash, and a parsed one must be self-consistent. */
#include <stdint.h>
#include <stdlib.h>

#include "../../csrc/core/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mx8_manifest *m = NULL;
    mx8_error err;
    mx8_error_clear(&err);
    int rc = mx8_manifest_parse((const char *)data, size, &m, &err);
    if (rc == MX8_OK) {
        for (size_t i = 0; i < m->n_records; i++)
            if (m->records[i].location >= m->n_locations) abort();
        mx8_manifest_free(m);
    } else if (rc != MX8_ERR_FORMAT && rc != MX8_ERR_NOMEM) {
        abort();
    }
    return 0;
}
