#include "s3_transport.h"

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

/* One I/O thread: a multi handle and its share of the client's connections. */
typedef struct {
    mx8_s3_client *c;
    CURLM *multi;
    CURL **handles;           /* n easy handles */
    mx8_s3_transfer **active; /* the transfer on handles[i], or NULL */
    int *idle, n_idle, n;     /* indices of handles not in a transfer */
    uint64_t rng;             /* backoff jitter; this thread only */
    pthread_t tid;
    int started;
} io_thread;

struct mx8_s3_client {
    mx8_s3_conf conf;
    int max_connections, n_io;
    io_thread *io; /* n_io, started together on the first transfer (NULL in a fresh fork child) */
    pthread_mutex_t mu;    /* guards everything below, and the threads' start */
    pthread_cond_t ended;  /* a blocking transfer ended */
    mx8_s3_transfer *queue; /* waiting to start: retries at the front, new transfers at the back */
    mx8_s3_transfer *queue_tail;
    int stop, quit; /* stop: no new transfers (queued ones end CLOSED); quit: threads leave */
    mx8_s3_stats stats;
    mx8_s3_client *next_client; /* the fork registry */
};

/* The threads run when the first one does (io_start starts them in order). */
static int io_running(const mx8_s3_client *c) { return c->io && c->io[0].started; }

/* Wakes every running I/O thread (new work, stop or quit). */
static void wake_all(mx8_s3_client *c) {
    for (int k = 0; c->io && k < c->n_io; k++)
        if (c->io[k].started)
            curl_multi_wakeup(c->io[k].multi);
}

/* ---- fork: every client's lock is taken around fork(), so a child never inherits one held
 * by a thread that does not exist there; the child then forgets the parent's threads. ---- */

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static mx8_s3_client *registry;

static void before_fork(void) {
    pthread_mutex_lock(&registry_mu);
    for (mx8_s3_client *c = registry; c; c = c->next_client)
        pthread_mutex_lock(&c->mu);
}

static void after_fork_parent(void) {
    for (mx8_s3_client *c = registry; c; c = c->next_client)
        pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&registry_mu);
}

static void after_fork_child(void) {
    for (mx8_s3_client *c = registry; c; c = c->next_client) {
        if (io_running(c)) {
            /* The parent's threads, handles and connections are the parent's: leak this copy
             * (closing a TLS connection here would write into the parent's session), drop the
             * transfers its threads were running or waiting for. The next transfer makes new
             * ones (io_start), not this handler: a child may never use the client. */
            c->io = NULL;
            c->queue = c->queue_tail = NULL;
            pthread_cond_init(&c->ended, NULL); /* its waiters were the parent's threads */
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&registry_mu);
}

int mx8_s3_global_init(mx8_error *err) {
    /* Reference-counted by libcurl, so once per module instance is fine; it is not
     * thread-safe in 7.88, so it runs at import, before any I/O thread exists. Never paired
     * with curl_global_cleanup: other users of libcurl may share the process. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return mx8_error_set(err, MX8_ERR_IO, "libcurl global initialisation failed");
    static int atfork_done;
    if (!atfork_done && pthread_atfork(before_fork, after_fork_parent, after_fork_child) != 0)
        return mx8_error_set(err, MX8_ERR_NOMEM, "pthread_atfork failed");
    atfork_done = 1;
    return MX8_OK;
}

/* ---- ending a transfer ---- */

/* Counts the ended transfer and tells its owner: a blocking caller's wait ends, or on_done
 * runs with no lock held (the owner may free t in it). */
static void end_transfer(mx8_s3_client *c, mx8_s3_transfer *t) {
    mx8_s3_transfer_done on_done = t->on_done;
    pthread_mutex_lock(&c->mu);
    c->stats.transfers++;
    if (t->rc == MX8_OK)
        c->stats.bytes_in += t->resp.len;
    if (!on_done) {
        t->ended = 1;
        pthread_cond_broadcast(&c->ended);
    }
    pthread_mutex_unlock(&c->mu);
    if (on_done)
        on_done(t->user, t);
}

/* A request refused for keys that a refresh replaces keeps being retried for this long after
 * the first refusal, max_attempts or not: the refresh (polled every second) may land after
 * the old keys stopped working, and the backoff of 6 attempts spans only 1.5-3 s. */
#define KEYS_WAIT_NS (10ULL * 1000000000ULL)

/* Ends a transfer that never got (or lost) its handle: the error names the request. */
static void fail_transfer(mx8_s3_client *c, mx8_s3_transfer *t, int code, const char *why) {
    char what[200];
    mx8_s3_describe(&t->op, what, sizeof what);
    free(t->resp.data);
    t->resp.data = NULL;
    t->resp.len = 0;
    t->rc = mx8_error_set(&t->err, code, "%s: %s", what, why);
    end_transfer(c, t);
}

/* ---- the I/O threads ---- */

/* Takes the first queued transfer that may start now; else lowers *wait_ms to when one may.
 * Called with mu held. */
static mx8_s3_transfer *take_due(mx8_s3_client *c, uint64_t now, long *wait_ms) {
    mx8_s3_transfer *prev = NULL;
    for (mx8_s3_transfer *t = c->queue; t; prev = t, t = t->next) {
        if (t->not_before_ns <= now) {
            if (prev)
                prev->next = t->next;
            else
                c->queue = t->next;
            if (c->queue_tail == t)
                c->queue_tail = prev;
            t->next = NULL;
            return t;
        }
        long ms = (long)((t->not_before_ns - now) / 1000000ULL) + 1;
        if (ms < *wait_ms)
            *wait_ms = ms;
    }
    return NULL;
}

/* Signs the transfer's next attempt and hands it to this thread's multi handle. */
static void start(io_thread *io, mx8_s3_transfer *t) {
    mx8_s3_client *c = io->c;
    int slot = io->idle[--io->n_idle];
    CURL *h = io->handles[slot];
    t->attempts++;
    mx8_error err;
    mx8_error_clear(&err);
    if (mx8_s3_attempt_begin(&c->conf, h, &t->op, &t->resp, &err) != MX8_OK) {
        io->idle[io->n_idle++] = slot;
        t->rc = err.code;
        t->err = err;
        end_transfer(c, t);
        return;
    }
    t->started_ns = mx8_s3_now_ns();
    CURLMcode mc = curl_multi_add_handle(io->multi, h);
    if (mc != CURLM_OK) { /* fail it now rather than leave its waiter waiting */
        mx8_s3_attempt_end(&t->resp);
        io->idle[io->n_idle++] = slot;
        fail_transfer(c, t, MX8_ERR_IO, curl_multi_strerror(mc));
        return;
    }
    t->slot = slot;
    io->active[slot] = t;
}

static void record_request(mx8_s3_stats *s, uint64_t ns, size_t sent) {
    s->requests++;
    s->bytes_out += sent;
    s->latency_sum_ns += ns;
    if (ns > s->latency_max_ns)
        s->latency_max_ns = ns;
    uint64_t us = ns / 1000;
    int b = 0;
    while (us > 1 && b < MX8_LATENCY_BUCKETS - 1)
        us >>= 1, b++;
    s->latency_hist[b]++;
}

static void requeue_front(mx8_s3_client *c, mx8_s3_transfer *t) {
    t->next = c->queue;
    c->queue = t;
    if (!c->queue_tail)
        c->queue_tail = t;
}

/* An attempt ended: done, retry later, or fail for good. */
static void finish(io_thread *io, CURL *h, CURLcode cc) {
    mx8_s3_client *c = io->c;
    mx8_s3_response *r = NULL;
    curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&r);
    mx8_s3_transfer *t = (mx8_s3_transfer *)((char *)r - offsetof(mx8_s3_transfer, resp));
    curl_multi_remove_handle(io->multi, h);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL); /* r may be freed before the next reset */
    io->active[t->slot] = NULL;
    io->idle[io->n_idle++] = t->slot;
    mx8_s3_attempt_end(r);
    uint64_t now = mx8_s3_now_ns();
    mx8_s3_error_info e;
    mx8_s3_verdict v = mx8_s3_attempt_verdict(&c->conf, cc, r, t->attempts, &e);
    long connects = 0; /* new connections this attempt made (0: it reused one) */
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
    pthread_mutex_lock(&c->mu);
    record_request(&c->stats, now - t->started_ns, t->op.body_len);
    c->stats.connections += connects > 0 ? (uint64_t)connects : 0;
    if (v == MX8_S3_RETRY_KEYS && !t->keys_refused_ns)
        t->keys_refused_ns = now;
    int attempts_left = t->attempts < c->conf.max_attempts ||
                        (v == MX8_S3_RETRY_KEYS && now - t->keys_refused_ns < KEYS_WAIT_NS);
    int retry = (v == MX8_S3_RETRY || v == MX8_S3_RETRY_KEYS) && attempts_left && !c->stop;
    if (retry) {
        c->stats.retries++;
        t->not_before_ns = now + (uint64_t)mx8_s3_backoff_ms(&c->conf, &io->rng, t->attempts, r->retry_after_s) *
                                     1000000ULL;
        free(r->data);
        r->data = NULL;
        requeue_front(c, t);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    pthread_mutex_unlock(&c->mu);
    if (v == MX8_S3_DONE) {
        t->rc = t->op.fixed ? mx8_s3_check_range(&t->op, r, &t->err) : MX8_OK;
    } else {
        t->rc = mx8_s3_attempt_error(&c->conf, &t->op, r, cc, &e, t->attempts, &t->err);
        free(r->data);
        r->data = NULL;
        if (!t->op.fixed)
            r->len = 0;
    }
    end_transfer(c, t);
}

/* The multi handle itself failed (out of memory, say): end every running transfer with that
 * error rather than spin. */
static void fail_active(io_thread *io, CURLMcode mc) {
    for (int i = 0; i < io->n; i++) {
        mx8_s3_transfer *t = io->active[i];
        if (!t)
            continue;
        curl_multi_remove_handle(io->multi, io->handles[i]);
        io->active[i] = NULL;
        io->idle[io->n_idle++] = i;
        mx8_s3_attempt_end(&t->resp);
        fail_transfer(io->c, t, MX8_ERR_IO, curl_multi_strerror(mc));
    }
}

/* After stop: everything queued ends CLOSED (from an I/O thread, like every other end, so
 * an owner's on_done never runs inside its own submit). */
static void drain_stopped(mx8_s3_client *c) {
    pthread_mutex_lock(&c->mu);
    mx8_s3_transfer *t = c->queue;
    c->queue = c->queue_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (t) {
        mx8_s3_transfer *next = t->next;
        fail_transfer(c, t, MX8_ERR_CLOSED, "the S3 client was stopped");
        t = next;
    }
}

static void *io_main(void *arg) {
    io_thread *io = arg;
    mx8_s3_client *c = io->c;
    for (;;) {
        long wait_ms = 1000;
        pthread_mutex_lock(&c->mu);
        int quit = c->quit, stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (quit)
            break;
        if (stop)
            drain_stopped(c);
        while (io->n_idle > 0) {
            pthread_mutex_lock(&c->mu);
            mx8_s3_transfer *t = c->stop ? NULL : take_due(c, mx8_s3_now_ns(), &wait_ms);
            pthread_mutex_unlock(&c->mu);
            if (!t)
                break;
            start(io, t);
        }
        int running = 0;
        CURLMcode pm = curl_multi_perform(io->multi, &running);
        if (pm != CURLM_OK)
            fail_active(io, pm);
        CURLMsg *m;
        int left, ended = 0;
        while ((m = curl_multi_info_read(io->multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                finish(io, m->easy_handle, m->data.result);
                ended = 1;
            }
        if (ended)
            continue; /* handles came free: start queued transfers before waiting */
        if (io->n_idle < io->n && wait_ms > 100)
            wait_ms = 100; /* transfers running: curl's own timers still need turns */
        curl_multi_poll(io->multi, NULL, 0, (int)wait_ms, NULL);
    }
    return NULL;
}

/* ---- lifetime ---- */

static void io_thread_free(io_thread *io) {
    for (int i = 0; io->handles && i < io->n; i++) {
        if (io->active && io->active[i]) {
            curl_multi_remove_handle(io->multi, io->handles[i]);
            mx8_s3_attempt_end(&io->active[i]->resp);
        }
        if (io->handles[i])
            curl_easy_cleanup(io->handles[i]);
    }
    free(io->handles);
    free(io->active);
    free(io->idle);
    if (io->multi)
        curl_multi_cleanup(io->multi);
}

/* Frees the I/O threads' state (their threads have left, or never started). */
static void io_release(mx8_s3_client *c) {
    for (int k = 0; c->io && k < c->n_io; k++)
        io_thread_free(&c->io[k]);
    free(c->io);
    c->io = NULL;
}

/* The I/O threads' state (not yet their threads): max_connections spread over n_io. On
 * failure c->io stays set, for io_release. */
static int io_alloc(mx8_s3_client *c) {
    c->io = calloc((size_t)c->n_io, sizeof *c->io);
    if (!c->io)
        return MX8_ERR_NOMEM;
    for (int k = 0; k < c->n_io; k++) {
        io_thread *io = &c->io[k];
        io->c = c;
        io->n = c->max_connections / c->n_io + (k < c->max_connections % c->n_io);
        io->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)io;
        io->multi = curl_multi_init();
        io->handles = calloc((size_t)io->n, sizeof *io->handles);
        io->active = calloc((size_t)io->n, sizeof *io->active);
        io->idle = calloc((size_t)io->n, sizeof *io->idle);
        if (!io->multi || !io->handles || !io->active || !io->idle)
            return MX8_ERR_NOMEM;
        for (int i = 0; i < io->n; i++) {
            if (!(io->handles[i] = curl_easy_init()))
                return MX8_ERR_NOMEM;
            io->idle[io->n_idle++] = i;
        }
        /* The cap holds for connections, not just transfers: no more sockets than handles,
         * and the idle ones stay cached for the next requests. */
        curl_multi_setopt(io->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)io->n);
        curl_multi_setopt(io->multi, CURLMOPT_MAXCONNECTS, (long)io->n);
    }
    return MX8_OK;
}

/* Starts the I/O threads if they are not running. Called with mu held. */
static int io_start(mx8_s3_client *c) {
    if (io_running(c))
        return MX8_OK;
    if (!c->io && io_alloc(c) != MX8_OK) { /* a fork()ed child's first transfer */
        io_release(c);
        return MX8_ERR_NOMEM;
    }
    sigset_t all, old; /* signals belong to the Python main thread */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = MX8_OK;
    for (int k = 0; k < c->n_io && !rc; k++) {
        if (pthread_create(&c->io[k].tid, NULL, io_main, &c->io[k]) != 0) {
            rc = MX8_ERR_NOMEM;
            break;
        }
        c->io[k].started = 1;
        pthread_setname_np(c->io[k].tid, "mx8-s3-io");
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* None started: this submit fails, and the next one tries again. Else those that started
     * serve the queue. */
    return io_running(c) ? MX8_OK : MX8_ERR_NOMEM;
}

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

int mx8_s3_client_new(const mx8_s3_options *o, mx8_s3_client **out, mx8_error *err) {
    *out = NULL;
    if (!o->endpoint || !o->region)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 client: endpoint and region are required");
    if (o->max_connections < 0 || o->io_threads < 0)
        return mx8_error_set(err, MX8_ERR_ARG, "S3 client: max_connections and io_threads must be >= 1");
    mx8_s3_credentials *creds = o->unsigned_requests ? NULL : o->credentials;
    if (creds)
        mx8_s3_credentials_ref(creds);
    else if (!o->unsigned_requests &&
             !(creds = mx8_s3_credentials_new(o->access_key, o->secret_key, o->session_token, err)))
        return err ? err->code : MX8_ERR_ARG;
    mx8_s3_client *c = calloc(1, sizeof *c);
    if (!c) {
        mx8_s3_credentials_unref(creds);
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory creating an S3 client");
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->ended, NULL);
    mx8_s3_conf *f = &c->conf;
    f->creds = creds;
    f->endpoint = strdup(o->endpoint);
    f->region = strdup(o->region);
    f->ca_file = dup_or_null(o->ca_file);
    f->virtual_host = o->virtual_host;
    f->requester_pays = o->requester_pays;
    f->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
    f->first_byte_timeout_ms = o->first_byte_timeout_ms > 0 ? o->first_byte_timeout_ms : 5000;
    f->low_speed_time_s = o->low_speed_time_s > 0 ? o->low_speed_time_s : 20;
    f->max_attempts = o->max_attempts > 0 ? o->max_attempts : 6;
    f->backoff_base_ms = o->backoff_base_ms > 0 ? o->backoff_base_ms : 100;
    f->backoff_cap_ms = o->backoff_cap_ms > 0 ? o->backoff_cap_ms : 5000;
    c->max_connections = o->max_connections > 0 ? o->max_connections : 16;
    c->n_io = o->io_threads > 0 ? o->io_threads : 1;
    if (c->n_io > c->max_connections)
        c->n_io = c->max_connections;
    int ok = f->endpoint && f->region && (!o->ca_file || !*o->ca_file || f->ca_file) && io_alloc(c) == MX8_OK;
    pthread_mutex_lock(&registry_mu);
    c->next_client = registry;
    registry = c;
    pthread_mutex_unlock(&registry_mu);
    if (!ok) {
        mx8_s3_client_free(c);
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory creating an S3 client");
    }
    *out = c;
    return MX8_OK;
}

int mx8_s3_client_start(mx8_s3_client *c, mx8_error *err) {
    pthread_mutex_lock(&c->mu);
    int rc = io_start(c);
    pthread_mutex_unlock(&c->mu);
    return rc ? mx8_error_set(err, rc, "cannot start an S3 I/O thread") : MX8_OK;
}

void mx8_s3_client_stop(mx8_s3_client *c) {
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_mutex_unlock(&c->mu);
    wake_all(c);
}

void mx8_s3_client_free(mx8_s3_client *c) {
    if (!c)
        return;
    pthread_mutex_lock(&registry_mu);
    for (mx8_s3_client **p = &registry; *p; p = &(*p)->next_client)
        if (*p == c) {
            *p = c->next_client;
            break;
        }
    pthread_mutex_unlock(&registry_mu);
    pthread_mutex_lock(&c->mu);
    c->quit = 1;
    pthread_mutex_unlock(&c->mu);
    wake_all(c);
    for (int k = 0; c->io && k < c->n_io; k++)
        if (c->io[k].started)
            pthread_join(c->io[k].tid, NULL);
    /* Transfers still running are abandoned: their handles leave the multi first, so
     * nothing writes into a caller's buffer after this returns. */
    io_release(c);
    mx8_s3_credentials_unref(c->conf.creds);
    free(c->conf.endpoint);
    free(c->conf.region);
    free(c->conf.ca_file);
    pthread_cond_destroy(&c->ended);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- submitting ---- */

void mx8_s3_submit(mx8_s3_client *c, mx8_s3_transfer *t) {
    t->attempts = 0;
    t->ended = 0;
    t->not_before_ns = 0;
    t->keys_refused_ns = 0;
    t->next = NULL;
    t->rc = MX8_OK;
    mx8_error_clear(&t->err);
    memset(&t->resp, 0, sizeof t->resp);
    pthread_mutex_lock(&c->mu);
    if (io_start(c) != MX8_OK) {
        pthread_mutex_unlock(&c->mu);
        fail_transfer(c, t, MX8_ERR_NOMEM, "cannot start an S3 I/O thread");
        return;
    }
    if (c->queue_tail)
        c->queue_tail->next = t;
    else
        c->queue = t;
    c->queue_tail = t;
    pthread_mutex_unlock(&c->mu);
    wake_all(c);
}

int mx8_s3_run(mx8_s3_client *c, mx8_s3_transfer *t, mx8_error *err) {
    t->on_done = NULL;
    mx8_s3_submit(c, t);
    pthread_mutex_lock(&c->mu);
    while (!t->ended)
        pthread_cond_wait(&c->ended, &c->mu);
    pthread_mutex_unlock(&c->mu);
    if (t->rc && err)
        *err = t->err;
    return t->rc;
}

/* ---- statistics ---- */

void mx8_s3_client_stats(mx8_s3_client *c, mx8_s3_stats *out) {
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->mu);
}

double mx8_s3_latency_quantile_ms(const mx8_s3_stats *s, double q) {
    uint64_t total = 0;
    for (int b = 0; b < MX8_LATENCY_BUCKETS; b++)
        total += s->latency_hist[b];
    if (!total)
        return 0.0;
    uint64_t want = (uint64_t)(q * (double)total + 0.5), seen = 0;
    if (want < 1)
        want = 1;
    for (int b = 0; b < MX8_LATENCY_BUCKETS; b++) {
        seen += s->latency_hist[b];
        if (seen >= want)
            return (double)(2ULL << b) / 1000.0;
    }
    return (double)s->latency_max_ns / 1e6;
}
