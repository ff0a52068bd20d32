/* Manifest parsing, hashing and error lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../csrc/core/manifest.h"
#include "../../csrc/core/manifest_index.h"
#include "../../csrc/core/sha256_hex.h"
#include "mx8_test.h"
#include "tests.h"

static const char GOOD[] =
    "schema_version=0\n"
    "0\tshards/shard-00000.tar\t512\t100\tmx8:vision:imagefolder;label_id=3\n"
    "1\tshards/shard-00000.tar\t1536\t7\t\n"
    "2\t/abs/shard-00001.tar\t\t\tmx8:vision:imagefolder;label_id=0\n"
    "3\tshards/shard-00000.tar\t0\t1\tother:hint\n";

static void sha_hex(const char *s, size_t len, char out[65]) {
    mx8_error err;
    mx8_sha256 *h = mx8_sha256_new(&err);
    mx8_sha256_update(h, s, len, &err);
    mx8_sha256_final_hex(h, out, &err);
    mx8_sha256_free(h);
}

void test_manifest_parse_and_hash(void) {
    mx8_manifest *m;
    mx8_error err;
    REQUIRE_OK(mx8_manifest_parse(GOOD, strlen(GOOD), &m, &err), &err);
    CHECK_INT(m->n_records, ==, 4);
    CHECK_INT(m->n_locations, ==, 2);
    CHECK_STR(m->locations[0], "shards/shard-00000.tar");
    CHECK_INT(m->records[0].offset, ==, 512);
    CHECK_INT(m->records[0].label, ==, 3);
    CHECK_INT(m->records[1].label, ==, MX8_NO_LABEL);
    CHECK(m->records[2].length == MX8_LENGTH_WHOLE);
    CHECK_INT(m->records[2].offset, ==, 0);
    CHECK_INT(m->records[2].location, ==, 1);
    CHECK_INT(m->records[3].location, ==, 0);
    CHECK_INT(m->records[3].label, ==, MX8_NO_LABEL);
    CHECK_INT(m->max_label, ==, 3);
    char want[65];
    sha_hex(GOOD, strlen(GOOD), want);
    CHECK_STR(m->hash_hex, want);
    /* SHA-256("abc"), the FIPS 180-2 example, checks the digest itself */
    sha_hex("abc", 3, want);
    CHECK_STR(want, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    mx8_manifest_free(m);
}

void test_manifest_missing_final_newline_hashes_canonically(void) {
    mx8_manifest *a, *b;
    mx8_error err;
    REQUIRE_OK(mx8_manifest_parse(GOOD, strlen(GOOD), &a, &err), &err);
    REQUIRE_OK(mx8_manifest_parse(GOOD, strlen(GOOD) - 1, &b, &err), &err);
    CHECK_STR(a->hash_hex, b->hash_hex);
    mx8_manifest_free(a);
    mx8_manifest_free(b);
}

static void expect_error(const char *text, const char *want) {
    mx8_manifest *m = (mx8_manifest *)1;
    mx8_error err;
    mx8_error_clear(&err);
    int rc = mx8_manifest_parse(text, strlen(text), &m, &err);
    CHECK_INT(rc, ==, MX8_ERR_FORMAT);
    CHECK(m == NULL);
    if (!strstr(err.msg, want)) {
        fprintf(stderr, "  error \"%s\" lacks \"%s\"\n", err.msg, want);
        mx8t_failed++;
    }
}

void test_manifest_errors_name_the_line(void) {
    expect_error("", "manifest is empty");
    expect_error("schema_version=2\n", "manifest line 1: expected 'schema_version=0'");
    expect_error("schema_version=0\n0\ta\t0\t1\t\n0\ta\t0\t1\t\n", "manifest line 3: sample_id '0' is not 1");
    expect_error("schema_version=0\n0\ta\t0\t1\n", "manifest line 2: expected 5 tab-separated fields");
    expect_error("schema_version=0\n0\ta\t0\t1\t\t\n", "found 6");
    expect_error("schema_version=0\n0\ta\t007\t1\t\n", "byte_offset '007' is not a number");
    expect_error("schema_version=0\n0\ta\t0\t99999999999999999999\t\n", "byte_length");
    expect_error("schema_version=0\n0\t\t0\t1\t\n", "line 2: empty location");
    expect_error("schema_version=0\n0\ta\t0\t1\tmx8:vision:imagefolder;label_id=-1\n", "bad label_id");
    expect_error("schema_version=0\n\n", "line 2: expected 5");
    expect_error("schema_version=0\r\n", "carriage return");
}

void test_manifest_many_unique_locations(void) {
    /* an ImageFolder indexed on the fly: one location a sample, interned through the table */
    size_t n = 5000, cap = n * 48 + 32, len = 0;
    char *buf = malloc(cap);
    len += (size_t)snprintf(buf + len, cap - len, "schema_version=0\n");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%zu\tc%zu/img%zu.jpg\t0\t%zu\t\n", i, i % 7, i / 2, i + 1);
    mx8_manifest *m;
    mx8_error err;
    int rc = mx8_manifest_parse(buf, len, &m, &err);
    free(buf);
    REQUIRE_OK(rc, &err);
    /* (i%7, i/2) pairs are unique for i < 5000 except none: every location is distinct */
    CHECK_INT(m->n_locations, ==, n);
    CHECK_STR(m->locations[m->records[4321].location], "c2/img2160.jpg");
    mx8_manifest_free(m);
}

static int count_sink(void *ctx, const mx8_record *r, mx8_error *err) {
    (void)err;
    mx8_record *last = ctx;
    *last = *r;
    last[1].offset++; /* records seen */
    return MX8_OK;
}

void test_manifest_reader_streams_in_any_chunks(void) {
    /* Fed one byte at a time, the streaming reader sees the records and hash a whole parse does. */
    const char *text = "schema_version=0\n0\ta.tar\t512\t10\tmx8:vision:imagefolder;label_id=2\n"
                       "1\tb.tar\t0\t\t\n2\ta.tar\t1024\t7\tmx8:vision:imagefolder;label_id=0";
    mx8_error err;
    mx8_manifest *whole;
    REQUIRE_OK(mx8_manifest_parse(text, strlen(text), &whole, &err), &err);
    mx8_record seen[2] = {{0}};
    mx8_manifest_reader *p = mx8_manifest_reader_new(count_sink, seen, &err);
    CHECK(p != NULL);
    for (size_t i = 0; p && i < strlen(text); i++)
        REQUIRE_OK(mx8_manifest_reader_feed(p, text + i, 1, &err), &err);
    mx8_manifest meta = {0};
    REQUIRE_OK(mx8_manifest_reader_finish(p, &meta, &err), &err);
    CHECK_INT(meta.n_records, ==, 3);
    CHECK_INT(seen[1].offset, ==, 3);
    CHECK(seen[0].offset == 1024 && seen[0].length == 7 && seen[0].label == 0);
    CHECK(strcmp(meta.hash_hex, whole->hash_hex) == 0);
    CHECK_INT(meta.n_locations, ==, 2);
    CHECK_INT(meta.max_label, ==, 2);
    for (size_t i = 0; i < meta.n_locations; i++)
        free(meta.locations[i]);
    free(meta.locations);
    mx8_manifest_reader_free(p);
    mx8_manifest_free(whole);
}

void test_manifest_index_round_trip_and_refusals(void) {
    char dir[] = "/tmp/mx8-index-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char tsv[256], idx[256];
    snprintf(tsv, sizeof tsv, "%s/manifest.tsv", dir);
    snprintf(idx, sizeof idx, "%s/manifest.idx", dir);
    FILE *f = fopen(tsv, "w");
    fprintf(f, "schema_version=0\n");
    for (int i = 0; i < 5000; i++) /* more than one write buffer of records, lines across read chunks */
        fprintf(f, "%d\tshards/s%d.tar\t%d\t%d\tmx8:vision:imagefolder;label_id=%d\n", i, i % 3, i * 600, 500, i % 7);
    fclose(f);
    mx8_error err;
    REQUIRE_OK(mx8_index_build(tsv, idx, &err), &err);
    mx8_manifest *m;
    mx8_index_source src;
    REQUIRE_OK(mx8_index_open(idx, &m, &src, &err), &err);
    CHECK_INT(m->n_records, ==, 5000);
    CHECK_INT(m->n_locations, ==, 3);
    CHECK(m->records[4999].offset == 4999u * 600 && m->records[4999].label == 4999 % 7 && m->max_label == 6);
    CHECK(strcmp(m->locations[2], "shards/s2.tar") == 0);
    mx8_manifest_free(m);
    /* A record whose location is past the table: refused, naming the record. */
    FILE *g = fopen(idx, "r+b");
    uint32_t bad = 9;
    fseek(g, 256 + 24 * 17 + 16, SEEK_SET);
    fwrite(&bad, sizeof bad, 1, g);
    fclose(g);
    CHECK_INT(mx8_index_open(idx, &m, &src, &err), ==, MX8_ERR_FORMAT);
    CHECK(strstr(err.msg, "record 17 is out of range") != NULL);
    /* Truncated. */
    CHECK(truncate(idx, 1000) == 0);
    CHECK_INT(mx8_index_open(idx, &m, &src, &err), ==, MX8_ERR_FORMAT);
    unlink(idx);
    unlink(tsv);
    rmdir(dir);
}
