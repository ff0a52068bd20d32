/* Tar writer: header fields, checksum, pax records for long names, sizes. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../csrc/core/tar_writer.h"
#include "mx8_test.h"
#include "tests.h"

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len);
    if (fread(b, 1, *len, f) != *len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

static unsigned checksum(const uint8_t *h) {
    unsigned s = 0;
    for (int i = 0; i < 512; i++)
        s += (i >= 148 && i < 156) ? ' ' : h[i];
    return s;
}

void test_tar_writer_members_and_offsets(void) {
    char path[] = "/tmp/mx8-tar-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    mx8_tar_writer w;
    mx8_error err;
    REQUIRE_OK(mx8_tar_open(&w, path, &err), &err);
    char long_name[200];
    memset(long_name, 'n', 150);
    strcpy(long_name + 150, "/file.jpg");
    const uint8_t a[] = "hello", b[700] = {1, 2, 3};
    uint64_t off_a, off_b;
    REQUIRE_OK(mx8_tar_add(&w, "cls/a.jpg", a, 5, 1700000000, &off_a, &err), &err);
    uint64_t before_b = w.pos;
    REQUIRE_OK(mx8_tar_add(&w, long_name, b, sizeof b, 0, &off_b, &err), &err);
    CHECK_INT(w.pos - before_b, ==, mx8_tar_member_size(long_name, sizeof b));
    CHECK_INT(mx8_tar_member_size("cls/a.jpg", 5), ==, 1024);
    REQUIRE_OK(mx8_tar_finish(&w, &err), &err);

    size_t len;
    uint8_t *t = slurp(path, &len);
    unlink(path);
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_INT(len % 512, ==, 0);
    CHECK_INT(off_a, ==, 512);
    CHECK(memcmp(t + off_a, "hello", 5) == 0);
    CHECK_STR((const char *)t, "cls/a.jpg");
    CHECK(memcmp(t + 257, "ustar\0" "00", 8) == 0);
    CHECK_INT(strtoul((const char *)t + 124, NULL, 8), ==, 5);
    CHECK_INT(strtoul((const char *)t + 148, NULL, 8), ==, checksum(t));
    /* the second member: a pax 'x' header carrying the full path, then the ustar header */
    const uint8_t *pax = t + 1024;
    CHECK_INT(pax[156], ==, 'x');
    char want[256];
    snprintf(want, sizeof want, " path=%s\n", long_name);
    CHECK(memmem(pax + 512, 512, want, strlen(want)) != NULL);
    CHECK_INT(strtoul((const char *)pax + 148, NULL, 8), ==, checksum(pax));
    CHECK(memcmp(t + off_b, b, sizeof b) == 0);
    CHECK_INT(t[off_b - 512 + 156], ==, '0');
    /* two zero blocks end the archive */
    for (size_t i = len - 1024; i < len; i++)
        if (t[i]) {
            CHECK(!"non-zero byte in the end blocks");
            break;
        }
    free(t);
}

void test_tar_writer_open_error_names_path(void) {
    mx8_tar_writer w;
    mx8_error err;
    int rc = mx8_tar_open(&w, "/nonexistent-dir/x.tar", &err);
    CHECK_INT(rc, ==, MX8_ERR_IO);
    CHECK(strstr(err.msg, "/nonexistent-dir/x.tar") != NULL);
    CHECK(strstr(err.msg, "No such file") != NULL);
}
