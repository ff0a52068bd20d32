/* A pool of equal-sized, page-aligned batch buffers that are recycled instead of being
 * freed and faulted in again (a fresh 38 MB batch costs ~10k page faults, tens of ms).
 *
 * Thread-safe: buffers can be released from any thread (e.g. a torch tensor's deleter).
 * The pool frees itself when its owner has closed it and every buffer is back. */
#ifndef MX8_BUFFER_POOL_H
#define MX8_BUFFER_POOL_H

#include <stddef.h>

typedef struct mx8_buffer_pool mx8_buffer_pool;

/* keep: idle buffers retained for reuse; more are freed on release. */
mx8_buffer_pool *mx8_pool_new(size_t buf_bytes, int keep);
size_t mx8_pool_buf_bytes(const mx8_buffer_pool *p);
/* A buffer of buf_bytes (reused when one is idle), or NULL when out of memory. */
void *mx8_pool_acquire(mx8_buffer_pool *p);
void mx8_pool_release(mx8_buffer_pool *p, void *buf);
/* The owner's release of the pool itself. */
void mx8_pool_close(mx8_buffer_pool *p);

#endif
