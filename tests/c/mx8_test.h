/* A tiny test harness: CHECK macros print file:line and the failing values and mark the
 * running test failed; run_tests.c prints "N passed, M failed". */
#ifndef MX8_TEST_H
#define MX8_TEST_H

#include <stdio.h>
#include <stdlib.h>

#include "../../csrc/core/mx8_error.h"

extern int mx8t_failed; /* checks failed in the running test */

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);    \
            mx8t_failed++;                                                             \
        }                                                                              \
    } while (0)

#define CHECK_INT(a, op, b)                                                            \
    do {                                                                               \
        long long a_ = (long long)(a), b_ = (long long)(b);                            \
        if (!(a_ op b_)) {                                                             \
            fprintf(stderr, "%s:%d: CHECK(%s %s %s) failed: %lld vs %lld\n", __FILE__,  \
                    __LINE__, #a, #op, #b, a_, b_);                                    \
            mx8t_failed++;                                                             \
        }                                                                              \
    } while (0)

/* rc must be MX8_OK; otherwise print the error message. Returns from the test. */
#define REQUIRE_OK(rc, err)                                                            \
    do {                                                                               \
        int rc_ = (rc);                                                                \
        if (rc_ != 0) {                                                                \
            fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #rc, rc_, \
                    (err)->msg);                                                       \
            mx8t_failed++;                                                             \
            return;                                                                    \
        }                                                                              \
    } while (0)

#define CHECK_STR(a, b)                                                                \
    do {                                                                               \
        const char *a_ = (a), *b_ = (b);                                               \
        if (strcmp(a_, b_) != 0) {                                                     \
            fprintf(stderr, "%s:%d: CHECK_STR failed:\n  got  \"%s\"\n  want \"%s\"\n",  \
                    __FILE__, __LINE__, a_, b_);                                       \
            mx8t_failed++;                                                             \
        }                                                                              \
    } while (0)

#endif
