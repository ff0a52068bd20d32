/* The engine's S3 reader (remote_reader.c on s3_transport.c) against a small HTTP/1.1 server
 * running in threads of this process: it serves one object, "bkt/obj", from memory with
 * byte ranges and keep-alive, answers 404 NoSuchKey for anything else, can answer 503
 * SlowDown to the first k requests and delay every answer, and counts the requests in
 * progress at once. Under ASan + UBSan this covers the I/O thread, the planner, the budget,
 * retries, errors and a stop with transfers in flight. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../csrc/core/remote_reader.h"
#include "mx8_test.h"
#include "tests.h"

/* ---- the server ---- */

typedef struct {
    int fd, port;
    pthread_t tid;
    const uint8_t *obj;
    size_t obj_len;
    atomic_int requests, active, max_active, connections, fail_first, stop;
    int delay_ms;
} server_t;

typedef struct {
    server_t *s;
    int fd;
} conn_t;

static int send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

static int answer(server_t *s, int fd, const char *req) {
    char path[256] = "";
    unsigned long long lo = 0, hi = 0;
    sscanf(req, "GET %255s", path);
    const char *range = strcasestr(req, "\r\nrange: bytes=");
    int ranged = range && sscanf(range + 15, "%llu-%llu", &lo, &hi) == 2;
    char head[512];
    if (s->delay_ms)
        usleep((useconds_t)s->delay_ms * 1000);
    if (strcmp(path, "/bkt/obj") != 0) {
        const char *body = "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
                           "<RequestId>T404</RequestId></Error>";
        int n = snprintf(head, sizeof head, "HTTP/1.1 404 Not Found\r\nContent-Length: %zu\r\n\r\n", strlen(body));
        return send_all(fd, head, (size_t)n) || send_all(fd, body, strlen(body));
    }
    if (atomic_fetch_sub(&s->fail_first, 1) > 0) {
        const char *body = "<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>";
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 503 Slow Down\r\nRetry-After: 0\r\nContent-Length: %zu\r\n\r\n", strlen(body));
        return send_all(fd, head, (size_t)n) || send_all(fd, body, strlen(body));
    }
    if (ranged && lo < s->obj_len && hi >= s->obj_len)
        hi = s->obj_len - 1; /* as S3 does: the part of the range the object has */
    if (!ranged || hi >= s->obj_len || lo > hi) {
        int n = snprintf(head, sizeof head, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n");
        return send_all(fd, head, (size_t)n);
    }
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %llu-%llu/%zu\r\n"
                     "Content-Length: %llu\r\n\r\n", lo, hi, s->obj_len, hi - lo + 1);
    return send_all(fd, head, (size_t)n) || send_all(fd, s->obj + lo, (size_t)(hi - lo + 1));
}

static void *serve_conn(void *arg) {
    conn_t *c = arg;
    server_t *s = c->s;
    char buf[8192];
    size_t len = 0;
    for (;;) {
        char *end = len ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
        if (!end) {
            ssize_t k = len < sizeof buf - 1 ? recv(c->fd, buf + len, sizeof buf - 1 - len, 0) : -1;
            if (k <= 0)
                break;
            len += (size_t)k;
            buf[len] = '\0';
            continue;
        }
        *end = '\0';
        atomic_fetch_add(&s->requests, 1);
        int now = atomic_fetch_add(&s->active, 1) + 1, seen = atomic_load(&s->max_active);
        while (now > seen && !atomic_compare_exchange_weak(&s->max_active, &seen, now)) {
        }
        int bad = answer(s, c->fd, buf);
        atomic_fetch_sub(&s->active, 1);
        if (bad)
            break;
        size_t used = (size_t)(end + 4 - buf);
        memmove(buf, buf + used, len - used);
        len -= used;
        buf[len] = '\0';
    }
    close(c->fd);
    atomic_fetch_sub(&s->connections, 1);
    free(c);
    return NULL;
}

static void *accept_loop(void *arg) {
    server_t *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0)
            continue;
        conn_t *c = malloc(sizeof *c);
        c->s = s;
        c->fd = fd;
        atomic_fetch_add(&s->connections, 1);
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, c);
        pthread_detach(t);
    }
    return NULL;
}

static int server_start(server_t *s, const uint8_t *obj, size_t len) {
    memset(s, 0, sizeof *s);
    s->obj = obj;
    s->obj_len = len;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof a) || listen(s->fd, 64) ||
        getsockname(s->fd, (struct sockaddr *)&a, &al))
        return -1;
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->tid, NULL, accept_loop, s);
}

/* Call after the reader is freed (its connections closed): waits for the handlers. */
static void server_stop(server_t *s) {
    atomic_store(&s->stop, 1);
    pthread_join(s->tid, NULL);
    close(s->fd);
    for (int i = 0; i < 500 && atomic_load(&s->connections) > 0; i++)
        usleep(10000);
    CHECK_INT(atomic_load(&s->connections), ==, 0);
}

/* ---- the dataset: N samples back to back in one object, 512-byte gaps (tar headers) ---- */

#define N 300

typedef struct {
    uint8_t *obj;
    size_t len;
    mx8_manifest *m;
    int64_t order[N];
    char endpoint[64];
    mx8_s3_options opt;
} data_t;

/* shuffle: groups of 30 ids read as three interleaved blocks of 10 (a small model of mx8's
 * block shuffle), so neighbours in the object are spread over the positions of a window. */
static void data_make(data_t *d, int shuffle) {
    memset(d, 0, sizeof *d);
    char *text = malloc(N * 96 + 64);
    size_t tl = (size_t)sprintf(text, "schema_version=0\n"), off = 512;
    uint64_t x = 12345;
    size_t lens[N], offs[N];
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        lens[i] = 100 + (size_t)(x >> 33) % 3000;
        offs[i] = off;
        off += lens[i] + 512;
        tl += (size_t)sprintf(text + tl, "%d\tshard.tar\t%zu\t%zu\t\n", i, offs[i], lens[i]);
    }
    d->len = off;
    d->obj = malloc(d->len);
    for (size_t i = 0; i < d->len; i++)
        d->obj[i] = (uint8_t)(i * 31 + (i >> 8));
    mx8_error err;
    CHECK(mx8_manifest_parse(text, tl, &d->m, &err) == MX8_OK);
    free(text);
    for (int p = 0; p < N; p++) {
        int g = p / 30, k = (p % 30) / 3, blk = p % 3;
        d->order[p] = shuffle ? g * 30 + blk * 10 + k : p;
    }
}

static void data_free(data_t *d) {
    mx8_manifest_free(d->m);
    free(d->obj);
}

/* A reader with the order appended as two orders (positions 0..N/2-1 and N/2..N-1), as an
 * engine appends run after run. */
static mx8_remote_reader *new_reader(data_t *d, const char *const *paths, mx8_s3_client *c,
                                     const mx8_remote_config *cfg, mx8_error *err) {
    mx8_remote_reader *r = mx8_remote_new(d->m, paths, c, cfg, err);
    size_t base0 = 1, base1 = 0;
    if (r && (mx8_remote_append(r, d->order, N / 2, NULL, 0, &base0, err) ||
              mx8_remote_append(r, d->order + N / 2, N - N / 2, NULL, 0, &base1, err))) {
        mx8_remote_free(r);
        return NULL;
    }
    CHECK(!r || (base0 == 0 && base1 == N / 2));
    return r;
}

static mx8_s3_options options(data_t *d, int port) {
    snprintf(d->endpoint, sizeof d->endpoint, "http://127.0.0.1:%d", port);
    mx8_s3_options o;
    memset(&o, 0, sizeof o);
    o.endpoint = d->endpoint;
    o.region = "us-east-1";
    o.access_key = "AKIDTEST";
    o.secret_key = "not-a-real-secret";
    o.backoff_base_ms = 1;
    o.backoff_cap_ms = 5;
    return o;
}

/* Two threads take positions in order, like the engine's workers, and check every byte. */
typedef struct {
    mx8_remote_reader *r;
    data_t *d;
    int skip_lo, skip_hi; /* one thread: at skip_lo, positions [skip_lo, skip_hi) are skipped */
    atomic_int next, wrong, failed;
    int last_rc;
    mx8_error last_err;
    uint64_t fetches, held_max; /* the reader's counters after the drain */
} drain_t;

static void *drain_main(void *arg) {
    drain_t *t = arg;
    int p;
    while ((p = atomic_fetch_add(&t->next, 1)) < N) {
        if (p == t->skip_lo && t->skip_hi > p) { /* an order cut short, mid-window */
            mx8_remote_skip(t->r, (size_t)p, (size_t)p, (size_t)t->skip_hi);
            atomic_store(&t->next, t->skip_hi);
            continue;
        }
        const uint8_t *data;
        mx8_error err;
        int rc = mx8_remote_acquire(t->r, (size_t)p, &data, &err);
        if (rc) {
            atomic_fetch_add(&t->failed, 1);
            t->last_rc = rc;
            t->last_err = err;
        } else {
            const mx8_record *rec = &t->d->m->records[t->d->order[p]];
            if (memcmp(data, t->d->obj + rec->offset, rec->length) != 0)
                atomic_fetch_add(&t->wrong, 1);
        }
        mx8_remote_release(t->r, (size_t)p);
    }
    return NULL;
}

static void drain(drain_t *t) {
    pthread_t a, b;
    pthread_create(&a, NULL, drain_main, t);
    pthread_create(&b, NULL, drain_main, t);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
}

/* cut: bytes the served object lacks at its end (a truncated shard). skip_lo < skip_hi: one
 * thread drains and skips [skip_lo, skip_hi) when it gets there. */
static void run_case_skip(int shuffle, uint64_t budget, int conns, int fail_first, int delay_ms, const char *path,
                          size_t cut, int skip_lo, int skip_hi, drain_t *out, mx8_s3_stats *st, server_t *srv);

static void run_case(int shuffle, uint64_t budget, int conns, int fail_first, int delay_ms, const char *path,
                     size_t cut, drain_t *out, mx8_s3_stats *st, server_t *srv) {
    run_case_skip(shuffle, budget, conns, fail_first, delay_ms, path, cut, 0, 0, out, st, srv);
}

static void run_case_skip(int shuffle, uint64_t budget, int conns, int fail_first, int delay_ms, const char *path,
                          size_t cut, int skip_lo, int skip_hi, drain_t *out, mx8_s3_stats *st, server_t *srv) {
    static data_t d; /* big; one case at a time */
    data_make(&d, shuffle);
    CHECK(server_start(srv, d.obj, d.len - cut) == 0);
    srv->fail_first = fail_first;
    srv->delay_ms = delay_ms;
    mx8_s3_options o = options(&d, srv->port);
    o.max_connections = conns;
    const char *paths[1] = {path};
    mx8_remote_config cfg = {.budget_bytes = budget, .max_request = 16384, .window = 64};
    mx8_error err;
    mx8_s3_client *c = NULL;
    REQUIRE_OK(mx8_s3_client_new(&o, &c, &err), &err);
    mx8_remote_reader *r = new_reader(&d, paths, c, &cfg, &err);
    CHECK(r != NULL);
    memset(out, 0, sizeof *out);
    if (r) {
        out->r = r;
        out->d = &d;
        out->skip_lo = skip_lo;
        out->skip_hi = skip_hi;
        if (skip_hi > skip_lo)
            drain_main(out);
        else
            drain(out);
        mx8_remote_stats rs;
        mx8_remote_stats_get(r, &rs);
        mx8_s3_client_stats(c, st);
        out->held_max = rs.held_max;
        out->fetches = rs.fetches;
        mx8_s3_client_free(c); /* first: its transfers write into the reader's buffers */
        mx8_remote_free(r);
    }
    server_stop(srv);
    data_free(&d);
}

void test_remote_reader_coalesces_within_budget_and_cap(void) {
    mx8_error err;
    REQUIRE_OK(mx8_s3_global_init(&err), &err);
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        for (int conns = 1; conns <= 3; conns += 2) {
            drain_t t;
            mx8_s3_stats st;
            server_t srv;
            uint64_t budget = 256 << 10;
            run_case(shuffle, budget, conns, 0, 2, "bkt/obj", 0, &t, &st, &srv);
            CHECK_INT(t.failed, ==, 0);
            CHECK_INT(t.wrong, ==, 0);
            /* samples merge into requests (sequential: up to 16 KiB; shuffled: within a window) */
            CHECK_INT(t.fetches, <, N / 2);
            CHECK_INT(st.requests, ==, t.fetches);
            CHECK_INT(st.retries, ==, 0);
            CHECK_INT(srv.requests, ==, st.requests);
            CHECK_INT(srv.max_active, <=, conns);
            /* the budget, plus the requests two waiting threads may force */
            CHECK_INT(t.held_max, <=, budget + 2 * 16384);
            if (conns > 1)
                CHECK_INT(srv.max_active, >, 1); /* requests did overlap */
        }
    }
}

void test_remote_reader_retries_then_succeeds(void) {
    drain_t t;
    mx8_s3_stats st;
    server_t srv;
    run_case(1, 1 << 20, 2, 4, 0, "bkt/obj", 0, &t, &st, &srv);
    CHECK_INT(t.failed, ==, 0);
    CHECK_INT(t.wrong, ==, 0);
    CHECK_INT(st.retries, ==, 4);
    CHECK_INT(st.requests, ==, t.fetches + 4);
}

void test_remote_reader_missing_object_fails_naming_it(void) {
    drain_t t;
    mx8_s3_stats st;
    server_t srv;
    run_case(0, 1 << 20, 2, 0, 0, "bkt/missing-key", 0, &t, &st, &srv);
    CHECK_INT(t.failed, ==, N);
    CHECK_INT(t.last_rc, ==, MX8_ERR_IO);
    CHECK(strstr(t.last_err.msg, "s3://bkt/missing-key") != NULL);
    CHECK(strstr(t.last_err.msg, "HTTP 404 NoSuchKey") != NULL);
    CHECK(strstr(t.last_err.msg, "T404") != NULL);
    CHECK(strstr(t.last_err.msg, "not-a-real-secret") == NULL);
    CHECK_INT(st.retries, ==, 0);
}

void test_remote_reader_truncated_object_fails_only_the_cut_sample(void) {
    drain_t t;
    mx8_s3_stats st;
    server_t srv;
    /* the object ends inside the last sample (each is followed by a 512-byte gap) */
    run_case(0, 1 << 20, 2, 0, 0, "bkt/obj", 512 + 50, &t, &st, &srv);
    CHECK_INT(t.failed, ==, 1);
    CHECK_INT(t.wrong, ==, 0);
    CHECK_INT(t.last_rc, ==, MX8_ERR_RANGE);
    CHECK(strstr(t.last_err.msg, "past the end of the object") != NULL);
}

typedef struct {
    mx8_remote_reader *r;
    int rc;
} waiter_t;

static void *wait_first(void *arg) {
    waiter_t *w = arg;
    const uint8_t *data;
    mx8_error err;
    w->rc = mx8_remote_acquire(w->r, 0, &data, &err);
    mx8_remote_release(w->r, 0);
    return NULL;
}

void test_remote_reader_stop_with_fetches_in_flight(void) {
    static data_t d;
    data_make(&d, 0);
    server_t srv;
    CHECK(server_start(&srv, d.obj, d.len) == 0);
    srv.delay_ms = 300; /* every answer is late: the stop comes first */
    mx8_s3_options o = options(&d, srv.port);
    o.max_connections = 4;
    const char *paths[1] = {"bkt/obj"};
    mx8_remote_config cfg = {.budget_bytes = 1 << 20};
    mx8_error err;
    mx8_s3_client *c = NULL;
    REQUIRE_OK(mx8_s3_client_new(&o, &c, &err), &err);
    mx8_remote_reader *r = new_reader(&d, paths, c, &cfg, &err);
    CHECK(r != NULL);
    if (r) {
        waiter_t w = {r, -1};
        pthread_t t;
        pthread_create(&t, NULL, wait_first, &w);
        usleep(50000);
        mx8_remote_stop(r);
        mx8_s3_client_stop(c);
        pthread_join(t, NULL);
        CHECK_INT(w.rc, ==, MX8_ERR_CLOSED);
        mx8_s3_client_free(c); /* abandons the transfers; nothing writes into freed buffers */
        mx8_remote_free(r);
    }
    server_stop(&srv);
    data_free(&d);
}

void test_remote_reader_skips_an_order_cut_short(void) {
    mx8_error err;
    REQUIRE_OK(mx8_s3_global_init(&err), &err);
    /* Positions [70, 150) of the first order skipped mid-window (70 shares requests with 69),
     * with requests in flight; the second order reads whole. Under ASan: no buffer freed under
     * a reader, none leaked. */
    drain_t whole, cut;
    mx8_s3_stats st;
    server_t srv;
    run_case(1, 1 << 16, 3, 0, 2, "bkt/obj", 0, &whole, &st, &srv); /* a budget of 4 requests ahead */
    run_case_skip(1, 1 << 16, 3, 0, 2, "bkt/obj", 0, 70, 150, &cut, &st, &srv);
    CHECK_INT(cut.failed, ==, 0);
    CHECK_INT(cut.wrong, ==, 0);
    CHECK_INT(whole.failed, ==, 0);
    CHECK(cut.fetches < whole.fetches); /* the skipped requests were not all issued */
}
