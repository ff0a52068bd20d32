/* Runs every test in tests.h (or those named on the command line) and prints
 * "N passed, M failed"; exits 1 on any failure. */
#include <stdio.h>
#include <string.h>

#include "mx8_test.h"
#include "tests.h"

int mx8t_failed;

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

#define MX8_ENTRY(name) {#name, name},
static const test_case TESTS[] = {MX8_TESTS(MX8_ENTRY)};

static int selected(const char *name, int argc, char **argv) {
    if (argc < 2) return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i])) return 1;
    return 0;
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++) {
        if (!selected(TESTS[i].name, argc, argv)) continue;
        mx8t_failed = 0;
        TESTS[i].fn();
        if (mx8t_failed) {
            printf("FAIL %s\n", TESTS[i].name);
            failed++;
        } else {
            printf("ok   %s\n", TESTS[i].name);
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
