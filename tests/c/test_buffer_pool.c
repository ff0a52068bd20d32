/* Buffer pool: reuse, the keep limit, release from another thread, close with buffers out. */
#include <pthread.h>
#include <stdint.h>

#include "../../csrc/core/buffer_pool.h"
#include "mx8_test.h"
#include "tests.h"

static void *release_later(void *arg) {
    void **args = arg;
    mx8_pool_release(args[0], args[1]);
    return NULL;
}

void test_buffer_pool_reuse_and_lifetime(void) {
    mx8_buffer_pool *p = mx8_pool_new(1 << 20, 1);
    CHECK(p != NULL);
    if (!p)
        return;
    void *a = mx8_pool_acquire(p), *b = mx8_pool_acquire(p);
    CHECK(a && b && a != b);
    CHECK_INT((uintptr_t)a % 4096, ==, 0);
    mx8_pool_release(p, a);
    mx8_pool_release(p, b); /* keep = 1: b is freed */
    void *c = mx8_pool_acquire(p);
    CHECK(c == a);
    /* released from another thread, after the owner closed the pool: the last release
     * frees the pool (ASan reports a leak or a use-after-free otherwise) */
    mx8_pool_close(p);
    void *args[2] = {p, c};
    pthread_t t;
    pthread_create(&t, NULL, release_later, args);
    pthread_join(t, NULL);
}
