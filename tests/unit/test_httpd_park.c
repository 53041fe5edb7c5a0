/* common/httpd's http_park/http_resume on loopback, no stack: requests resumed by another
 * thread (before or after the handler returned) all answered with their own data; a client
 * that goes away while parked leaves the server sound; http_server_stop waits for a parked
 * request to be resumed and answered instead of cutting it off. */
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

struct work {
    struct http_parked *token;
    int delay_ms;
    int n;
};

static atomic_int resumed_total;
static atomic_int dropped_total;

/* http_park's drop: a client gone before its resumed call */
static void drop(void *data)
{
    atomic_fetch_add(&dropped_total, 1);
    free(data);
}

static void *resumer(void *arg)
{
    struct work *w = arg;

    if (w->delay_ms > 0)
        usleep((useconds_t)w->delay_ms * 1000);
    atomic_fetch_add(&resumed_total, 1);
    http_resume(w->token);
    return NULL;
}

/* /park/<delay>/<n>: parked, resumed by a thread after delay ms (0: at once, usually before
 * the handler returned); the resumed call answers {"n":n}. */
static void handler(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct work *w = req->park_data;
    pthread_t t;
    char buf[64];

    (void)ctx;
    if (w != NULL) {
        snprintf(buf, sizeof buf, "{\"n\":%d,\"resumed\":%d}", w->n, req->resumed);
        free(w);
        http_reply(resp, 200, strdup(buf));
        return;
    }
    if (strncmp(req->path, "/park/", 6) != 0) {
        http_reply(resp, 200, strdup("{}"));
        return;
    }
    w = calloc(1, sizeof *w);
    assert_non_null(w);
    sscanf(req->path + 6, "%d/%d", &w->delay_ms, &w->n);
    w->token = http_park(req, resp, w, drop);
    assert_non_null(w->token);
    assert_int_equal(pthread_create(&t, NULL, resumer, w), 0);
    pthread_detach(t);
}

static struct http_server *start(char *base, size_t len, int threads)
{
    struct http_server_opts o = {.bind = "127.0.0.1", .threads = threads, .max_body = 4096,
                                 .service = "test", .handler = handler};
    struct http_server *srv = NULL;
    struct err e = {0};

    o.port = thttp_free_port();
    snprintf(base, len, "http://127.0.0.1:%d", o.port);
    if (http_server_start(&srv, &o, &e) != ST_OK)
        tfail("http_server_start: %s", e.msg);
    return srv;
}

#define CLIENTS 32
#define PER_CLIENT 50

static char base[64];
static atomic_int answered_ok;

static void *client(void *arg)
{
    int id = (int)(intptr_t)arg;

    for (int i = 0; i < PER_CLIENT; i++) {
        struct thttp_resp r;
        char path[64], want[64];
        int n = id * PER_CLIENT + i;
        snprintf(path, sizeof path, "/park/%d/%d", i % 3 == 0 ? 0 : i % 3, n);
        snprintf(want, sizeof want, "{\"n\":%d,\"resumed\":1}", n);
        if (thttp_request(&r, "GET", base, path, NULL, NULL, 20000) == 0 && r.status == 200 &&
            strcmp(r.body, want) == 0)
            atomic_fetch_add(&answered_ok, 1);
        thttp_resp_release(&r);
    }
    return NULL;
}

/* Resumes race with parking (a third of them before the handler returned): every request is
 * answered once, with its own data. */
static void test_parked_requests_resumed_by_another_thread(void **state)
{
    struct http_server *srv = start(base, sizeof base, 2);
    pthread_t c[CLIENTS];
    int64_t t0 = svc_mono_ms();

    (void)state;
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&c[i], NULL, client, (void *)(intptr_t)i), 0);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(c[i], NULL);
    printf("  %d parked requests answered in %lld ms\n", atomic_load(&answered_ok),
           (long long)(svc_mono_ms() - t0));
    assert_int_equal(atomic_load(&answered_ok), CLIENTS * PER_CLIENT);
    http_server_stop(&srv);
}

/* Sends a request that parks for delay_ms and returns the connected socket without reading. */
static int send_parking(const char *b, int delay_ms)
{
    struct sockaddr_in a;
    char req[128];
    int fd = socket(AF_INET, SOCK_STREAM, 0), n;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(strrchr(b, ':') + 1));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    n = snprintf(req, sizeof req, "GET /park/%d/7 HTTP/1.1\r\nHost: x\r\n\r\n", delay_ms);
    assert_int_equal(write(fd, req, (size_t)n), n);
    return fd;
}

/* A client that disconnects while parked: the resume still comes, the reply is dropped, the
 * connection is cleaned up, and the server goes on answering. */
static void test_a_client_gone_while_parked(void **state)
{
    char b[64];
    struct http_server *srv = start(b, sizeof b, 2);
    struct thttp_resp r;
    int before = atomic_load(&resumed_total), dropped = atomic_load(&dropped_total);

    (void)state;
    for (int i = 0; i < 20; i++)
        close(send_parking(b, 200));
    usleep(100 * 1000);
    assert_int_equal(thttp_request(&r, "GET", b, "/park/0/1", NULL, NULL, 5000), 0);
    assert_int_equal(r.status, 200);
    thttp_resp_release(&r);
    /* every resumer has run (each sleeps 200 ms; under valgrind far longer) */
    for (int64_t until = svc_mono_ms() + 20000;
         atomic_load(&resumed_total) - before < 21 && svc_mono_ms() < until;)
        usleep(10 * 1000);
    assert_int_equal(atomic_load(&resumed_total) - before, 21);
    /* each of the 20 either answered into a closed socket or dropped (no leak under ASan) */
    printf("  %d of 20 gone clients' data dropped without a second call\n", atomic_load(&dropped_total) - dropped);
    http_server_stop(&srv); /* would wait forever for a request never completed */
}

/* http_server_stop waits until a parked request is resumed and answered. */
static void test_stop_waits_for_parked_requests(void **state)
{
    char b[64], buf[512];
    struct http_server *srv = start(b, sizeof b, 2);
    int fd = send_parking(b, 500);
    int64_t t0;
    ssize_t n;

    (void)state;
    usleep(100 * 1000);
    t0 = svc_mono_ms();
    http_server_stop(&srv);
    printf("  stop took %lld ms with a request parked for 500 ms\n", (long long)(svc_mono_ms() - t0));
    assert_true(svc_mono_ms() - t0 >= 300);
    n = read(fd, buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_true(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parked_requests_resumed_by_another_thread),
        cmocka_unit_test(test_a_client_gone_while_parked),
        cmocka_unit_test(test_stop_waits_for_parked_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
