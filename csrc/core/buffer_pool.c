#include "buffer_pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

struct mx8_buffer_pool {
    pthread_mutex_t mu;
    size_t buf_bytes;
    int keep;
    int n_idle;
    void **idle;   /* keep entries */
    long refs;     /* 1 for the owner + buffers handed out */
};

mx8_buffer_pool *mx8_pool_new(size_t buf_bytes, int keep) {
    mx8_buffer_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->idle = calloc(keep > 0 ? (size_t)keep : 1, sizeof(void *));
    if (!p->idle) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    p->buf_bytes = buf_bytes ? buf_bytes : 1;
    p->keep = keep > 0 ? keep : 0;
    p->refs = 1;
    return p;
}

size_t mx8_pool_buf_bytes(const mx8_buffer_pool *p) { return p->buf_bytes; }

static void destroy(mx8_buffer_pool *p) {
    for (int i = 0; i < p->n_idle; i++)
        free(p->idle[i]);
    pthread_mutex_destroy(&p->mu);
    free(p->idle);
    free(p);
}

void *mx8_pool_acquire(mx8_buffer_pool *p) {
    void *buf = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->n_idle > 0)
        buf = p->idle[--p->n_idle];
    p->refs++;
    pthread_mutex_unlock(&p->mu);
    if (!buf) {
        if (posix_memalign(&buf, 4096, p->buf_bytes) != 0) {
            pthread_mutex_lock(&p->mu);
            p->refs--;
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
#ifdef MADV_HUGEPAGE
        if (p->buf_bytes >= (4u << 20)) /* fewer faults and TLB misses on big batches */
            madvise(buf, p->buf_bytes, MADV_HUGEPAGE);
#endif
    }
    return buf;
}

static void drop_ref(mx8_buffer_pool *p) {
    /* called with p->mu held; unlocks */
    long refs = --p->refs;
    pthread_mutex_unlock(&p->mu);
    if (refs == 0)
        destroy(p);
}

void mx8_pool_release(mx8_buffer_pool *p, void *buf) {
    pthread_mutex_lock(&p->mu);
    if (p->n_idle < p->keep) { /* keep is 0 once the owner has closed the pool */
        p->idle[p->n_idle++] = buf;
        buf = NULL;
    }
    drop_ref(p);
    free(buf);
}

void mx8_pool_close(mx8_buffer_pool *p) {
    pthread_mutex_lock(&p->mu);
    p->keep = 0; /* later releases free their buffer */
    for (int i = 0; i < p->n_idle; i++)
        free(p->idle[i]);
    p->n_idle = 0;
    drop_ref(p);
}
