/* common/httpd on loopback, no stack: header blocks up to 24 KiB answered with the contract's
 * JSON 431 (larger ones refused by libmicrohttpd, the server unharmed), control bytes in the
 * target refused with 400, and
 * parked read-your-writes requests surviving a storm of wake-ups (no lost wake-up, no stall). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"
#include "support.h"
#include "svc.h"
#include "thttp.h"

#define WAKES_BEFORE_ANSWER 3

static struct http_server *srv;
static char base[64];
static atomic_int stop_waker;
static atomic_int race_looked;

/* /wait answers only after it was parked and called again WAKES_BEFORE_ANSWER times; anything
 * else answers 200 at once. */
static void handler(void *ctx, const struct http_request *req, struct http_response *resp)
{
    (void)ctx;
    if (strcmp(req->path, "/wait") == 0 && req->resumed < WAKES_BEFORE_ANSWER) {
        if (!http_defer(req, resp, svc_mono_ms() + 20000))
            http_reply_error(resp, 503, "too_many_waiters", "refused");
        return;
    }
    /* /race/<k>: looks (race_looked), takes 30 ms before it parks on k, answers when called again */
    if (strncmp(req->path, "/race/", 6) == 0 && req->resumed == 0) {
        atomic_store(&race_looked, 1);
        usleep(30 * 1000);
        if (!http_defer_for(req, resp, svc_mono_ms() + 20000, req->path + 6))
            http_reply_error(resp, 503, "too_many_waiters", "refused");
        return;
    }
    /* /key/<k>: parked on key k until called again WAKES_BEFORE_ANSWER times */
    if (strncmp(req->path, "/key/", 5) == 0 && req->resumed < WAKES_BEFORE_ANSWER) {
        if (!http_defer_for(req, resp, svc_mono_ms() + 20000, req->path + 5))
            http_reply_error(resp, 503, "too_many_waiters", "refused");
        return;
    }
    http_reply(resp, 200, strdup("{\"ok\":true}"));
}

static int setup(void **state)
{
    struct http_server_opts o = {.bind = "127.0.0.1", .threads = 4, .max_body = 4096,
                                 .service = "test", .max_waiters = 4096, .handler = handler};
    struct err e = {0};

    (void)state;
    o.port = thttp_free_port();
    snprintf(base, sizeof base, "http://127.0.0.1:%d", o.port);
    if (http_server_start(&srv, &o, &e) != ST_OK)
        tfail("http_server_start: %s", e.msg);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    http_server_stop(&srv);
    return 0;
}

/* A GET of /healthz with `total` bytes of headers in `count` fields. */
static char *headers_request(size_t total, int count, size_t *len)
{
    size_t per = total / (size_t)count, cap = total + (size_t)count * 32 + 256, n;
    char *req = malloc(cap);

    assert_non_null(req);
    n = (size_t)snprintf(req, cap, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (int i = 0; i < count; i++) {
        n += (size_t)snprintf(req + n, cap - n, "X-Big-%d: ", i);
        memset(req + n, 'b', per);
        n += per;
        memcpy(req + n, "\r\n", 2);
        n += 2;
    }
    memcpy(req + n, "\r\n", 3);
    *len = n + 2;
    return req;
}

static void test_headers_over_the_limit_get_json_431(void **state)
{
    static const size_t sizes[] = {8 * 1024 + 1, 16 * 1024, 24 * 1024};
    static const int counts[] = {1, 50, 100};

    (void)state;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            size_t len;
            char *req = headers_request(sizes[i], counts[c], &len), ct[128];
            struct thttp_resp r;
            json_t *doc;
            int64_t t0 = svc_mono_ms();

            assert_int_equal(thttp_exchange(&r, base, req, len, 10000), 0);
            printf("  %zu bytes of headers in %d fields: %d in %lld ms\n", sizes[i], counts[c], r.status,
                   (long long)(svc_mono_ms() - t0));
            assert_int_equal(r.status, 431);
            assert_non_null(thttp_header(&r, "Content-Type", ct, sizeof ct));
            assert_string_equal(ct, "application/json");
            doc = thttp_json(&r);
            if (doc == NULL)
                tfail("%zu bytes of headers: not JSON: %s", sizes[i], r.body);
            assert_string_equal(json_string_value(json_object_get(doc, "error")), "headers_too_large");
            assert_non_null(json_string_value(json_object_get(doc, "request_id")));
            json_decref(doc);
            thttp_resp_release(&r);
            free(req);
        }
    }
    /* past the connection's pool (README: libmicrohttpd's own 431, or a closed connection):
     * refused all the same, and the server keeps serving */
    for (size_t sz = 40 * 1024; sz <= 4 * 1024 * 1024; sz *= 4) {
        size_t len;
        char *req = headers_request(sz, 10, &len);
        struct thttp_resp r;
        (void)thttp_exchange(&r, base, req, len, 10000);
        printf("  %zu bytes of headers: %d\n", sz, r.status);
        if (r.status != 0 && r.status != 431)
            tfail("%zu bytes of headers: %d", sz, r.status);
        thttp_resp_release(&r);
        free(req);
    }
    /* just under the bound: served */
    {
        size_t len;
        char *req = headers_request(7 * 1024, 10, &len);
        struct thttp_resp r;
        assert_int_equal(thttp_exchange(&r, base, req, len, 5000), 0);
        assert_int_equal(r.status, 200);
        thttp_resp_release(&r);
        free(req);
    }
}

static void test_control_bytes_in_the_target_get_400(void **state)
{
    static const char *const bad[] = {"/accounts/a%00b", "/a%01", "/a%1F", "/a%7f", "/a%0d%0a",
                                      "/x?q=%00"};
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct thttp_resp r;
        json_t *doc;
        assert_int_equal(thttp_request(&r, "GET", base, bad[i], NULL, NULL, 5000), 0);
        if (r.status != 400)
            tfail("GET %s: %d", bad[i], r.status);
        doc = thttp_json(&r);
        assert_non_null(doc);
        assert_string_equal(json_string_value(json_object_get(doc, "error")), "invalid_path");
        json_decref(doc);
        thttp_resp_release(&r);
    }
    {
        struct thttp_resp r;
        assert_int_equal(thttp_request(&r, "GET", base, "/a%20b", NULL, NULL, 5000), 0);
        assert_int_equal(r.status, 200);
        thttp_resp_release(&r);
    }
}

struct keyed {
    char path[32];
    atomic_int status;
};

static void *keyed_client(void *arg)
{
    struct keyed *k = arg;
    struct thttp_resp r;

    if (thttp_request(&r, "GET", base, k->path, NULL, NULL, 30000) == 0)
        atomic_store(&k->status, r.status);
    else
        atomic_store(&k->status, -1);
    thttp_resp_release(&r);
    return NULL;
}

static int answered_within(struct keyed *k, int ms)
{
    for (int64_t until = svc_mono_ms() + ms; svc_mono_ms() < until; usleep(2000))
        if (atomic_load(&k->status) != 0)
            return 1;
    return atomic_load(&k->status) != 0;
}

/* A wake-up for one key resumes the requests parked on it, not those parked on another. */
static void test_a_keyed_wake_resumes_only_its_key(void **state)
{
    struct keyed a = {.path = "/key/a"}, b = {.path = "/key/b"};
    pthread_t ta, tb;

    (void)state;
    assert_int_equal(pthread_create(&ta, NULL, keyed_client, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, keyed_client, &b), 0);
    usleep(300 * 1000); /* both parked */
    for (int i = 0; i < WAKES_BEFORE_ANSWER; i++) {
        http_server_wake_for(srv, "a");
        usleep(50 * 1000);
    }
    assert_true(answered_within(&a, 5000));
    assert_int_equal(atomic_load(&a.status), 200);
    assert_false(answered_within(&b, 300)); /* a's wake-ups left b parked */
    for (int i = 0; i < WAKES_BEFORE_ANSWER; i++) {
        http_server_wake_for(srv, "b");
        usleep(50 * 1000);
    }
    assert_true(answered_within(&b, 5000));
    assert_int_equal(atomic_load(&b.status), 200);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
}

/* A wake-up for its key that lands after the handler looked but before the request parked is
 * not lost (else it would wait for its 20 s wake_at); one for another key in that window leaves
 * it parked. */
static void test_a_keyed_wake_while_parking_is_not_lost(void **state)
{
    struct keyed k = {.path = "/race/r1"}, o = {.path = "/race/r2"};
    pthread_t t;

    (void)state;
    atomic_store(&race_looked, 0);
    assert_int_equal(pthread_create(&t, NULL, keyed_client, &k), 0);
    while (!atomic_load(&race_looked))
        usleep(200);
    http_server_wake_for(srv, "another");
    http_server_wake_for(srv, "r1"); /* the handler is still in its 30 ms before parking */
    assert_true(answered_within(&k, 5000));
    assert_int_equal(atomic_load(&k.status), 200);
    pthread_join(t, NULL);

    atomic_store(&race_looked, 0);
    assert_int_equal(pthread_create(&t, NULL, keyed_client, &o), 0);
    while (!atomic_load(&race_looked))
        usleep(200);
    http_server_wake_for(srv, "another");
    assert_false(answered_within(&o, 500)); /* not its key: parked */
    http_server_wake_for(srv, "r2");
    assert_true(answered_within(&o, 5000));
    assert_int_equal(atomic_load(&o.status), 200);
    pthread_join(t, NULL);
}

static void *waker(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_waker)) {
        http_server_wake(srv);
        usleep(500);
    }
    return NULL;
}

#define CLIENTS 48
#define PER_CLIENT 20

static atomic_int answered_ok;

static void *client(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_CLIENT; i++) {
        struct thttp_resp r;
        if (thttp_request(&r, "GET", base, "/wait", NULL, NULL, 20000) == 0 && r.status == 200)
            atomic_fetch_add(&answered_ok, 1);
        thttp_resp_release(&r);
    }
    return NULL;
}

/* Parking (suspend), waking (resume) and completing race on every request: each is parked three
 * times while a thread wakes everything every half millisecond. Nothing is lost or stuck. */
static void test_parked_requests_under_a_wake_storm(void **state)
{
    pthread_t w, c[CLIENTS];
    int64_t t0 = svc_mono_ms(), took;

    (void)state;
    atomic_store(&stop_waker, 0);
    assert_int_equal(pthread_create(&w, NULL, waker, NULL), 0);
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&c[i], NULL, client, NULL), 0);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(c[i], NULL);
    atomic_store(&stop_waker, 1);
    pthread_join(w, NULL);
    took = svc_mono_ms() - t0;
    printf("  %d parked-three-times requests answered in %lld ms\n", atomic_load(&answered_ok),
           (long long)took);
    assert_int_equal(atomic_load(&answered_ok), CLIENTS * PER_CLIENT);
    assert_true(took < 60000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_over_the_limit_get_json_431),
        cmocka_unit_test(test_control_bytes_in_the_target_get_400),
        cmocka_unit_test(test_parked_requests_under_a_wake_storm),
        cmocka_unit_test(test_a_keyed_wake_resumes_only_its_key),
        cmocka_unit_test(test_a_keyed_wake_while_parking_is_not_lost),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
