#include "s3_fetcher.h"

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

struct mx8_s3_fetcher {
    mx8_s3_client *client; /* owns the settings and credentials; also signs nothing itself */
    const mx8_s3_conf *conf;
    CURLM *multi;
    CURL **handles;         /* max_connections easy handles */
    mx8_s3_fetch **active;  /* the fetch on handles[i], or NULL */
    int *idle, n_idle;      /* indices of handles not in a transfer */
    int max_connections;
    mx8_s3_fetch_done on_done;
    void *ud;
    uint64_t rng; /* backoff jitter; I/O thread only */

    pthread_t io;
    int io_started;
    pthread_mutex_t mu;  /* guards queue, stop and stats */
    mx8_s3_fetch *queue; /* waiting to start: retries at the front, new fetches at the back */
    mx8_s3_fetch *queue_tail;
    int stop;
    mx8_s3_fetch_stats stats;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void mx8_s3_fetcher_submit(mx8_s3_fetcher *fx, mx8_s3_fetch *f) {
    f->attempts = 0;
    f->not_before_ns = 0;
    f->next = NULL;
    f->rc = MX8_OK;
    mx8_error_clear(&f->err);
    pthread_mutex_lock(&fx->mu);
    if (fx->queue_tail)
        fx->queue_tail->next = f;
    else
        fx->queue = f;
    fx->queue_tail = f;
    pthread_mutex_unlock(&fx->mu);
    curl_multi_wakeup(fx->multi);
}

/* Takes the first queued fetch that may start now; else sets *wait_ms to when one may
 * (or leaves it). Called with mu held. */
static mx8_s3_fetch *take_due(mx8_s3_fetcher *fx, uint64_t now, long *wait_ms) {
    mx8_s3_fetch *prev = NULL;
    for (mx8_s3_fetch *f = fx->queue; f; prev = f, f = f->next) {
        if (f->not_before_ns <= now) {
            if (prev)
                prev->next = f->next;
            else
                fx->queue = f->next;
            if (fx->queue_tail == f)
                fx->queue_tail = prev;
            f->next = NULL;
            return f;
        }
        long ms = (long)((f->not_before_ns - now) / 1000000ULL) + 1;
        if (ms < *wait_ms)
            *wait_ms = ms;
    }
    return NULL;
}

static void requeue_front(mx8_s3_fetcher *fx, mx8_s3_fetch *f) {
    pthread_mutex_lock(&fx->mu);
    f->next = fx->queue;
    fx->queue = f;
    if (!fx->queue_tail)
        fx->queue_tail = f;
    pthread_mutex_unlock(&fx->mu);
}

/* Ends a fetch that libcurl could not run (its handle already back in idle): the error
 * names the request, the fetch is counted, and its waiter is told. */
static void fail_fetch(mx8_s3_fetcher *fx, mx8_s3_fetch *f, const char *why, CURLMcode mc) {
    char what[200];
    mx8_s3_describe(&f->op, what, sizeof what);
    f->rc = mx8_error_set(&f->err, MX8_ERR_IO, "%s: %s (%s)", what, why, curl_multi_strerror(mc));
    pthread_mutex_lock(&fx->mu);
    fx->stats.fetches++;
    pthread_mutex_unlock(&fx->mu);
    fx->on_done(fx->ud, f);
}

/* Signs the fetch's next attempt and hands it to the multi handle. */
static void start(mx8_s3_fetcher *fx, mx8_s3_fetch *f) {
    int slot = fx->idle[--fx->n_idle];
    CURL *h = fx->handles[slot];
    if (f->attempts == 0)
        mx8_s3_op_range(&f->op, f->bucket, f->key, f->offset, f->len, f->dst);
    f->attempts++;
    mx8_error err;
    mx8_error_clear(&err);
    if (mx8_s3_attempt_begin(fx->conf, h, &f->op, &f->resp, &err) != MX8_OK) {
        fx->idle[fx->n_idle++] = slot;
        f->rc = err.code;
        f->err = err;
        pthread_mutex_lock(&fx->mu);
        fx->stats.fetches++;
        pthread_mutex_unlock(&fx->mu);
        fx->on_done(fx->ud, f);
        return;
    }
    f->started_ns = now_ns();
    CURLMcode mc = curl_multi_add_handle(fx->multi, h);
    if (mc != CURLM_OK) { /* fail it now rather than leave its waiter waiting */
        mx8_s3_attempt_end(&f->resp);
        fx->idle[fx->n_idle++] = slot;
        fail_fetch(fx, f, "libcurl could not start the transfer", mc);
        return;
    }
    f->slot = slot;
    fx->active[slot] = f;
}

static void record_latency(mx8_s3_fetch_stats *s, uint64_t ns) {
    s->requests++;
    s->latency_sum_ns += ns;
    if (ns > s->latency_max_ns)
        s->latency_max_ns = ns;
    uint64_t us = ns / 1000;
    int b = 0;
    while (us > 1 && b < MX8_LATENCY_BUCKETS - 1)
        us >>= 1, b++;
    s->latency_hist[b]++;
}

/* A transfer ended: done, retry later, or fail for good. */
static void finish(mx8_s3_fetcher *fx, CURL *h, CURLcode cc) {
    mx8_s3_response *r = NULL;
    curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&r);
    mx8_s3_fetch *f = (mx8_s3_fetch *)((char *)r - offsetof(mx8_s3_fetch, resp));
    curl_multi_remove_handle(fx->multi, h);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL); /* r may be freed before the next reset */
    fx->active[f->slot] = NULL;
    fx->idle[fx->n_idle++] = f->slot;
    mx8_s3_attempt_end(r);
    f->received = r->len;
    uint64_t t = now_ns();
    mx8_s3_error_info e;
    mx8_s3_verdict v = mx8_s3_attempt_verdict(fx->conf, cc, r, f->attempts, &e);
    int retry = v == MX8_S3_RETRY && f->attempts < fx->conf->max_attempts;
    if (v == MX8_S3_DONE)
        f->rc = mx8_s3_check_range(&f->op, r, &f->err);
    else if (!retry)
        f->rc = mx8_s3_attempt_error(fx->conf, &f->op, r, cc, &e, f->attempts, &f->err);
    pthread_mutex_lock(&fx->mu);
    record_latency(&fx->stats, t - f->started_ns);
    if (retry) {
        fx->stats.retries++;
    } else {
        fx->stats.fetches++;
        if (f->rc == MX8_OK)
            fx->stats.bytes += f->len;
    }
    pthread_mutex_unlock(&fx->mu);
    if (retry) {
        f->not_before_ns = t + (uint64_t)mx8_s3_backoff_ms(fx->conf, &fx->rng, f->attempts, r->retry_after_s) * 1000000ULL;
        requeue_front(fx, f);
        return;
    }
    fx->on_done(fx->ud, f);
}

/* The multi handle itself failed (out of memory, say): end every running transfer with
 * that error rather than spin. */
static void fail_active(mx8_s3_fetcher *fx, CURLMcode mc) {
    for (int i = 0; i < fx->max_connections; i++) {
        mx8_s3_fetch *f = fx->active[i];
        if (!f)
            continue;
        curl_multi_remove_handle(fx->multi, fx->handles[i]);
        fx->active[i] = NULL;
        fx->idle[fx->n_idle++] = i;
        mx8_s3_attempt_end(&f->resp);
        fail_fetch(fx, f, "libcurl failed", mc);
    }
}

static void *io_main(void *arg) {
    mx8_s3_fetcher *fx = arg;
    for (;;) {
        long wait_ms = 1000;
        pthread_mutex_lock(&fx->mu);
        int stop = fx->stop;
        pthread_mutex_unlock(&fx->mu);
        if (stop)
            break;
        while (fx->n_idle > 0) {
            pthread_mutex_lock(&fx->mu);
            mx8_s3_fetch *f = take_due(fx, now_ns(), &wait_ms);
            pthread_mutex_unlock(&fx->mu);
            if (!f)
                break;
            start(fx, f);
        }
        int running = 0;
        CURLMcode pm = curl_multi_perform(fx->multi, &running);
        if (pm != CURLM_OK)
            fail_active(fx, pm);
        CURLMsg *m;
        int left, ended = 0;
        while ((m = curl_multi_info_read(fx->multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                finish(fx, m->easy_handle, m->data.result);
                ended = 1;
            }
        if (ended)
            continue; /* handles came free: start queued fetches before waiting */
        if (fx->n_idle < fx->max_connections && wait_ms > 100)
            wait_ms = 100; /* transfers running: curl's own timers still need turns */
        curl_multi_poll(fx->multi, NULL, 0, (int)wait_ms, NULL);
    }
    return NULL;
}

int mx8_s3_fetcher_new(const mx8_s3_options *o, int max_connections, mx8_s3_fetch_done on_done, void *ud,
                       mx8_s3_fetcher **out, mx8_error *err) {
    *out = NULL;
    if (max_connections < 1)
        return mx8_error_set(err, MX8_ERR_ARG, "max_connections must be >= 1");
    mx8_s3_fetcher *fx = calloc(1, sizeof *fx);
    if (!fx)
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an S3 fetcher");
    pthread_mutex_init(&fx->mu, NULL);
    fx->on_done = on_done;
    fx->ud = ud;
    fx->max_connections = max_connections;
    fx->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)fx;
    int rc = mx8_s3_client_new(o, &fx->client, err);
    if (rc) {
        mx8_s3_fetcher_free(fx);
        return rc;
    }
    fx->conf = mx8_s3_client_conf(fx->client);
    fx->multi = curl_multi_init();
    fx->handles = calloc((size_t)max_connections, sizeof *fx->handles);
    fx->active = calloc((size_t)max_connections, sizeof *fx->active);
    fx->idle = calloc((size_t)max_connections, sizeof *fx->idle);
    int ok = fx->multi && fx->handles && fx->active && fx->idle;
    for (int i = 0; ok && i < max_connections; i++) {
        ok = (fx->handles[i] = curl_easy_init()) != NULL;
        fx->idle[fx->n_idle++] = i;
    }
    if (!ok) {
        mx8_s3_fetcher_free(fx);
        return mx8_error_set(err, MX8_ERR_NOMEM, "out of memory for an S3 fetcher");
    }
    /* The cap holds for connections, not just transfers: no more sockets than handles,
     * and the idle ones stay cached for the next requests. */
    curl_multi_setopt(fx->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)max_connections);
    curl_multi_setopt(fx->multi, CURLMOPT_MAXCONNECTS, (long)max_connections);
    sigset_t all, old; /* signals belong to the Python main thread */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int failed = pthread_create(&fx->io, NULL, io_main, fx);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (failed) {
        mx8_s3_fetcher_free(fx);
        return mx8_error_set(err, MX8_ERR_NOMEM, "cannot start the S3 I/O thread");
    }
    fx->io_started = 1;
    pthread_setname_np(fx->io, "mx8-s3-io");
    *out = fx;
    return MX8_OK;
}

void mx8_s3_fetcher_stop(mx8_s3_fetcher *fx) {
    pthread_mutex_lock(&fx->mu);
    fx->stop = 1;
    pthread_mutex_unlock(&fx->mu);
    curl_multi_wakeup(fx->multi);
}

void mx8_s3_fetcher_free(mx8_s3_fetcher *fx) {
    if (!fx)
        return;
    if (fx->io_started) {
        pthread_mutex_lock(&fx->mu);
        fx->stop = 1;
        pthread_mutex_unlock(&fx->mu);
        curl_multi_wakeup(fx->multi);
        pthread_join(fx->io, NULL);
    }
    /* Transfers still running are abandoned: their handles leave the multi first, so
     * nothing writes into a caller's buffer after this returns. */
    for (int i = 0; fx->handles && i < fx->max_connections; i++) {
        if (fx->active && fx->active[i]) {
            curl_multi_remove_handle(fx->multi, fx->handles[i]);
            mx8_s3_attempt_end(&fx->active[i]->resp);
        }
        if (fx->handles[i])
            curl_easy_cleanup(fx->handles[i]);
    }
    free(fx->handles);
    free(fx->active);
    free(fx->idle);
    if (fx->multi)
        curl_multi_cleanup(fx->multi);
    mx8_s3_client_free(fx->client);
    pthread_mutex_destroy(&fx->mu);
    free(fx);
}

void mx8_s3_fetcher_stats(mx8_s3_fetcher *fx, mx8_s3_fetch_stats *out) {
    pthread_mutex_lock(&fx->mu);
    *out = fx->stats;
    pthread_mutex_unlock(&fx->mu);
}

double mx8_s3_latency_quantile_ms(const mx8_s3_fetch_stats *s, double q) {
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
