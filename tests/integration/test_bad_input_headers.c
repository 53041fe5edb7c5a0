/* Raw-socket abuse of both services' HTTP layer: header blocks past the bounds (the contract's
 * JSON 431 up to 24 KiB, libmicrohttpd's own refusal beyond), thousands of fields, lying
 * Content-Length, garbage request lines, and clients that trickle their headers. Each is
 * refused, writes nothing, and everyone else is served meanwhile. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.h"
#include "thttp.h"
#include "tstack.h"
#include "twriter.h"

static const char *writer_url, *readapi_url;
static char acct1[UUID_STR_SIZE];

static void assert_serving(const char *base)
{
    if (!twait_http_ok(base, "/healthz", 3000))
        tfail("%s/healthz does not answer 200 after bad input", base);
}

static int setup(void **state)
{
    writer_url = tenv("WRITER_URL");
    readapi_url = tenv("READAPI_URL");
    tstack_group_setup(state);
    tw_open(acct1, "bad-input", "main", "EUR", 0);
    json_decref(tw_money(acct1, "deposits", 5000, "seed"));
    return 0;
}

static int raw_connect(const char *base)
{
    struct sockaddr_in a;
    const char *colon = strrchr(base, ':');
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        tfail("connect to %s", base);
    return fd;
}

/* Status of the answer to raw bytes (0: none within timeout_ms); its body into out. */
static int raw_exchange(const char *base, const char *data, size_t len, int timeout_ms, char *out, size_t outlen)
{
    struct thttp_resp r;
    int status = thttp_exchange(&r, base, data, len, timeout_ms) == 0 ? r.status : 0;

    snprintf(out, outlen, "%s", r.body != NULL ? r.body : "");
    thttp_resp_release(&r);
    return status;
}

/* Header blocks past the bound, of every size up to 24 KiB, in one field or many: the
 * contract's JSON 431 from both services, never libmicrohttpd's HTML. */
static void expect_json_431(const char *base, char *req, size_t cap, size_t total, int fields)
{
    struct thttp_resp r;
    size_t len = (size_t)snprintf(req, cap, "POST /accounts/%s/deposits HTTP/1.1\r\nHost: x\r\n", acct1);
    json_t *doc;
    char ct[64];

    for (int i = 0; i < fields; i++) {
        len += (size_t)snprintf(req + len, cap - len, "X-Big-%d: ", i);
        memset(req + len, 'b', total / (size_t)fields);
        len += total / (size_t)fields;
        len += (size_t)snprintf(req + len, cap - len, "\r\n");
    }
    len += (size_t)snprintf(req + len, cap - len,
                            "Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"amount\":5}");
    if (thttp_exchange(&r, base, req, len, 10000) != 0)
        tfail("%s: no answer to %zu bytes of headers", base, total);
    doc = thttp_json(&r);
    if (r.status != 431 || doc == NULL || thttp_header(&r, "Content-Type", ct, sizeof ct) == NULL ||
        strcmp(ct, "application/json") != 0 ||
        strcmp(json_string_value(json_object_get(doc, "error")), "headers_too_large") != 0)
        tfail("%s: %zu bytes of headers in %d fields got %d: %.200s", base, total, fields, r.status, r.body);
    json_decref(doc);
    thttp_resp_release(&r);
}

static void test_header_abuse(void **state)
{
    static const size_t sizes[] = {8 * 1024 + 1, 16 * 1024, 24 * 1024};
    const char *bases[2] = {writer_url, readapi_url};
    size_t cap = 1200 * 1024;
    char *req = malloc(cap), body[4096];
    PGconn *pg = tw_pg();
    struct tw_counts before, after;

    (void)state;
    assert_non_null(req);
    tw_counts(pg, &before);
    for (int s = 0; s < 2; s++) {
        int st;
        size_t len;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            expect_json_431(bases[s], req, cap, sizes[i], 1);
            expect_json_431(bases[s], req, cap, sizes[i], 64);
        }
        /* past the connection's pool (32 KiB): libmicrohttpd's own 431 (HTML, README) or a
         * closed connection, never served */
        len = (size_t)snprintf(req, cap, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: ");
        memset(req + len, 'h', 1024 * 1024);
        len += 1024 * 1024;
        len += (size_t)snprintf(req + len, cap - len, "\r\n\r\n");
        st = raw_exchange(bases[s], req, len, 10000, body, sizeof body);
        if (st != 0 && st != 431)
            tfail("%s: 1 MiB of headers got %d", bases[s], st);
        /* 200 and 10,000 small headers: past the field bound */
        for (int n = 200; n <= 10000; n = n == 200 ? 10000 : 2 * n) {
            len = (size_t)snprintf(req, cap, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
            for (int i = 0; i < n; i++)
                len += (size_t)snprintf(req + len, cap - len, "X-Many-%d: %d\r\n", i, i);
            len += (size_t)snprintf(req + len, cap - len, "\r\n");
            st = raw_exchange(bases[s], req, len, 5000, body, sizeof body);
            /* 10,000 (~200 KiB) are past the connection's pool: libmicrohttpd's own 431 */
            if (n == 200 ? st != 431 || strstr(body, "\"headers_too_large\"") == NULL
                          : st != 0 && st != 431)
                tfail("%s: %d headers got %d: %s", bases[s], n, st, body);
        }
        /* a Content-Length that lies (larger than the bound) */
        len = (size_t)snprintf(req, cap, "POST /accounts/%s/deposits HTTP/1.1\r\nHost: x\r\n"
                                         "Content-Length: 99999999999\r\n\r\n{\"amount\":5}", acct1);
        st = raw_exchange(bases[s], req, len, 3000, body, sizeof body);
        if (st != 0 && (st < 400 || st > 499))
            tfail("%s: an oversized Content-Length got %d", bases[s], st);
        /* a malformed request line */
        len = (size_t)snprintf(req, cap, "GARBAGE\r\n\r\n");
        st = raw_exchange(bases[s], req, len, 3000, body, sizeof body);
        if (st != 0 && (st < 400 || st > 499))
            tfail("%s: a garbage request line got %d", bases[s], st);
        assert_serving(bases[s]);
    }
    tw_counts(pg, &after);
    assert_int_equal(after.events, before.events);
    assert_int_equal(after.idempotency_keys, before.idempotency_keys);
    PQfinish(pg);
    free(req);
}

struct slow_arg {
    const char *base;
    int seconds;
    int status;
};

/* One byte every 100 ms: a request that takes `seconds` to arrive. */
static void *slow_client(void *arg)
{
    struct slow_arg *a = arg;
    char req[256];
    int fd = raw_connect(a->base), n;
    int64_t end = tnow_ms() + a->seconds * 1000;
    size_t len, i = 0;
    char buf[1024];

    len = (size_t)snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    while (i < len && send(fd, req + i, 1, MSG_NOSIGNAL) == 1)
        i++, usleep(100000);
    while (tnow_ms() < end && send(fd, "s", 1, MSG_NOSIGNAL) == 1)
        usleep(100000);
    (void)!send(fd, "\r\n\r\n", 4, MSG_NOSIGNAL);
    {
        struct pollfd p = {fd, POLLIN, 0};
        n = poll(&p, 1, 5000) == 1 ? (int)recv(fd, buf, sizeof buf - 1, 0) : 0;
    }
    buf[n > 0 ? n : 0] = '\0';
    a->status = strncmp(buf, "HTTP/1.", 7) == 0 ? atoi(buf + 9) : 0;
    close(fd);
    return NULL;
}

#define SLOW_CLIENTS 16

static void test_slow_clients(void **state)
{
    const char *bases[2] = {writer_url, readapi_url};

    (void)state;
    for (int s = 0; s < 2; s++) {
        pthread_t th[SLOW_CLIENTS];
        struct slow_arg args[SLOW_CLIENTS];
        int64_t worst = 0, t_end;
        long served = 0;
        char path[160];

        for (int i = 0; i < SLOW_CLIENTS; i++) {
            args[i] = (struct slow_arg){bases[s], 4, 0};
            assert_int_equal(pthread_create(&th[i], NULL, slow_client, &args[i]), 0);
        }
        usleep(300000);
        /* meanwhile everyone else is served promptly */
        t_end = tnow_ms() + 3000;
        snprintf(path, sizeof path, s == 0 ? "/healthz" : "/accounts/%s", acct1);
        while (tnow_ms() < t_end) {
            struct thttp_resp r;
            int64_t t0 = tnow_ms();
            if (s == 0) {
                json_t *doc = tw_money(acct1, "deposits", 1, "while slow clients trickle");
                json_decref(doc);
            } else {
                if (thttp_request(&r, "GET", bases[s], path, NULL, NULL, 2000) != 0 || r.status != 200)
                    tfail("GET %s while slow clients trickle: %d", path, r.status);
                thttp_resp_release(&r);
            }
            if (tnow_ms() - t0 > worst)
                worst = tnow_ms() - t0;
            served++;
        }
        for (int i = 0; i < SLOW_CLIENTS; i++)
            pthread_join(th[i], NULL);
        printf("  %s: %ld requests served while %d clients trickled 1 byte/100 ms; slowest %lld ms\n",
               bases[s], served, SLOW_CLIENTS, (long long)worst);
        if (worst > 1000)
            tfail("%s: a request took %lld ms while slow clients were connected", bases[s], (long long)worst);
        for (int i = 0; i < SLOW_CLIENTS; i++)
            if (args[i].status != 200 && args[i].status != 0 && (args[i].status < 400 || args[i].status > 499))
                tfail("%s: slow client got %d", bases[s], args[i].status);
        assert_serving(bases[s]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_abuse),
        cmocka_unit_test(test_slow_clients),
    };
    return cmocka_run_group_tests(tests, setup, tstack_group_teardown);
}
