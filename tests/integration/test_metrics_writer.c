/* Issue 17: every metric family of the writer moves by exactly what happened: N commands by
 * type and result, group-commit batches, pool checkouts and a timed-out one, the relay's
 * publishes and acks (and, with NATS down, its failures and the outbox's depth and age), a dead
 * letter, purged idempotency keys, a slow connection closed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "support.h"
#include "thttp.h"
#include "tmetrics.h"
#include "tstack.h"
#include "twriter.h"

#define W "{service=\"writer\"}"
#define CMD(type, result) "writer_commands_total{service=\"writer\",type=\"" type "\",result=\"" result "\"}"
#define REQ(route, status) "http_requests_total{service=\"writer\",route=\"" route "\",status=\"" status "\"}"

static pid_t writer_pid;
static const char *url;

static void start_writer(const char *const *extra)
{
    treset_state();
    writer_pid = tsvc_start("writer", NULL, extra);
    tstack_guard(writer_pid);
    url = tenv("WRITER_URL");
    if (!twait_http_ok(url, "/healthz", 20000))
        tfail("writer did not start");
}

static void stop_writer(void)
{
    tstack_unguard(writer_pid);
    assert_int_equal(tsvc_stop(writer_pid, SIGTERM, 10000), 0);
}

static int setup(void **state)
{
    (void)state;
    tstack_up(); /* a previous run may have left NATS stopped */
    return 0;
}

static int64_t outbox_rows(PGconn *pg)
{
    return tw_scalar(pg, "SELECT count(*) FROM outbox", NULL, NULL);
}

static void wait_outbox_empty(PGconn *pg)
{
    int64_t t0 = tnow_ms();
    while (outbox_rows(pg) > 0)
        if (tnow_ms() - t0 > 15000)
            tfail("outbox not empty after 15 s");
        else
            usleep(20000);
}

/* N commands of each kind and result: the counters by type and result, the HTTP counters by
 * route and status, one group-commit batch and one pool checkout per command, one publish and
 * one ack per event, nothing failed. */
static void test_commands_batches_pool_relay(void **state)
{
    struct tm_scrape a, b;
    char id[UUID_STR_SIZE], id2[UUID_STR_SIZE], dep[128], wd[128], body[160];
    const char *key = "Idempotency-Key: metrics-1\r\n";
    PGconn *pg = tw_pg();

    (void)state;
    start_writer(NULL);
    tw_open(id, "metrics", "main", "EUR", 0);
    tw_open(id2, "metrics", "other", "EUR", 0);
    snprintf(dep, sizeof dep, "/accounts/%s/deposits", id);
    snprintf(wd, sizeof wd, "/accounts/%s/withdrawals", id);
    wait_outbox_empty(pg);
    tm_scrape(&a, url);

    for (int i = 0; i < 5; i++)
        json_decref(tw_money(id, "deposits", 100, "metrics"));                           /* 5 ok */
    json_decref(tw_post(url, dep, "{\"amount\":7}", key, 201));                          /* 1 ok */
    json_decref(tw_post(url, dep, "{\"amount\":7}", key, 201));                          /* replayed */
    tw_reject(url, wd, "{\"amount\":1000000}", NULL, 422, "insufficient_funds");         /* 1 */
    tw_reject(url, dep, "{\"amount\":-1}", NULL, 400, "invalid_field");                  /* 1, no store */
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":10}", id, id2);
    json_decref(tw_post(url, "/transfers", body, NULL, 201));                            /* 2 events */
    wait_outbox_empty(pg);
    tm_scrape(&b, url);
    tm_print_moves(&a, &b, NULL);

    {
        const struct tm_want w[] = {{CMD("deposit", "ok"), 6},
                                    {CMD("deposit", "replayed"), 1},
                                    {CMD("withdraw", "insufficient_funds"), 1},
                                    {CMD("deposit", "invalid_field"), 1},
                                    {CMD("transfer", "ok"), 1},
                                    {NULL, 0}};
        tm_expect_family(&a, &b, "writer_commands_total", w);
    }
    {
        /* the scrape before is counted in the scrape after (a request is counted once answered) */
        const struct tm_want w[] = {{REQ("POST /accounts/{id}/deposits", "201"), 7},
                                    {REQ("POST /accounts/{id}/deposits", "400"), 1},
                                    {REQ("POST /accounts/{id}/withdrawals", "422"), 1},
                                    {REQ("POST /transfers", "201"), 1},
                                    {REQ("GET /metrics", "200"), 1},
                                    {NULL, 0}};
        tm_expect_family(&a, &b, "http_requests_total", w);
    }
    tm_expect_delta(&a, &b, "http_request_duration_seconds_count{service=\"writer\",route=\"POST /accounts/{id}/deposits\"}", 8);
    tm_expect_delta(&a, &b, "http_request_duration_seconds_bucket{service=\"writer\",route=\"POST /accounts/{id}/deposits\",le=\"+Inf\"}", 8);
    /* every command that reached the store went through group commit alone (sent one by one):
     * 6 deposits, the replay, the refused withdrawal and the transfer, one batch and one pool
     * checkout each; the replay's key was used before, so it leaves the batch and runs (and
     * replays) in a transaction of its own: one checkout more */
    tm_expect_delta(&a, &b, "writer_group_commit_batch_commands_count" W, 9);
    tm_expect_delta(&a, &b, "writer_group_commit_batch_commands_sum" W, 9);
    tm_expect_delta(&a, &b, "writer_group_commit_batch_commands_bucket{service=\"writer\",le=\"1\"}", 9);
    tm_expect_delta(&a, &b, "writer_pool_wait_seconds_count" W, 10);
    tm_expect_delta(&a, &b, "writer_pool_checkout_failures_total" W, 0);
    assert_true(tm_value(&b, "writer_pool_connections" W) == 8); /* PG_POOL_SIZE */
    assert_true(tm_value(&b, "writer_pool_connections_in_use" W) == 0);
    /* 8 events (6 deposits, the transfer's 2 legs): each published once and acked once */
    tm_expect_delta(&a, &b, "writer_relay_published_total" W, 8);
    tm_expect_delta(&a, &b, "writer_relay_acked_total" W, 8);
    tm_expect_delta(&a, &b, "writer_relay_failed_total" W, 0);
    tm_expect_delta(&a, &b, "writer_relay_errors_total" W, 0);
    {
        /* the publisher after COMMIT observes each round once: the 7 commands that wrote events
         * were sent one by one, so 1..7 rounds (two may share one), every one acked within 10 s */
        double rounds = tm_delta(&a, &b, "writer_publish_after_commit_seconds_count" W);
        assert_true(rounds >= 1 && rounds <= 7);
        assert_true(tm_delta(&a, &b, "writer_publish_after_commit_seconds_bucket{service=\"writer\",le=\"10\"}") ==
                    rounds);
        assert_true(tm_delta(&a, &b, "writer_publish_after_commit_seconds_sum" W) > 0);
    }
    assert_true(tm_value(&b, "writer_relay_active" W) == 1);
    assert_true(tm_value(&b, "metrics_dropped_series_total" W) == 0);
    tm_release(&a);
    tm_release(&b);
    PQfinish(pg);
    stop_writer();
}

/* NATS down: the commands are answered (the outbox holds their events), the outbox gauges show
 * them, the relay counts failures; NATS back: each event acked exactly once, the outbox empty
 * again. Every publish is acked or counted failed: published = acked + failed. */
static void test_relay_with_nats_down(void **state)
{
    struct tm_scrape a, b, c;
    char id[UUID_STR_SIZE];
    PGconn *pg = tw_pg();
    double pub, ack, fail;

    (void)state;
    start_writer(NULL);
    tw_open(id, "metrics", "nats-down", "EUR", 0);
    wait_outbox_empty(pg);
    tm_await_value(&a, url, "writer_outbox_rows" W, 0, 10000);
    tstack_kill("nats", SIGKILL, 10000);
    for (int i = 0; i < 3; i++)
        json_decref(tw_money(id, "deposits", 10, "nats down"));
    tm_await_value(&b, url, "writer_outbox_rows" W, 3, 10000);
    tm_print_moves(&a, &b, "writer_");
    assert_true(tm_value(&b, "writer_outbox_oldest_age_seconds" W) > 0);
    tm_expect_delta(&a, &b, "writer_relay_acked_total" W, 0);
    assert_true(tm_delta(&a, &b, "writer_relay_failed_total" W) + tm_delta(&a, &b, "writer_relay_errors_total" W) >= 1);
    assert_true(tm_value(&b, "writer_relay_active" W) == 1); /* within RELAY_BUS_GIVEUP_MS: still the relay */

    tstack_up();
    wait_outbox_empty(pg);
    tm_await_value(&c, url, "writer_outbox_rows" W, 0, 10000);
    tm_print_moves(&a, &c, "writer_relay");
    assert_true(tm_value(&c, "writer_outbox_oldest_age_seconds" W) == 0);
    pub = tm_delta(&a, &c, "writer_relay_published_total" W);
    ack = tm_delta(&a, &c, "writer_relay_acked_total" W);
    fail = tm_delta(&a, &c, "writer_relay_failed_total" W);
    fprintf(stderr, "NATS down for 3 events: published %g, acked %g, failed %g\n", pub, ack, fail);
    assert_true(ack == 3);
    assert_true(pub == ack + fail);
    tm_release(&a);
    tm_release(&b);
    tm_release(&c);
    PQfinish(pg);
    stop_writer();
}

/* One undecodable outbox row: dead-lettered once, the gauge shows it, nothing published. */
static void test_dead_letter(void **state)
{
    struct tm_scrape a, b;
    PGconn *pg = tw_pg();
    PGresult *res;

    (void)state;
    start_writer(NULL);
    tm_scrape(&a, url);
    res = PQexec(pg, "WITH e AS (INSERT INTO events (event_id, stream_id, stream_version, type, schema, data) "
                     "VALUES (gen_random_uuid(), gen_random_uuid(), 1, 'NoSuchType', 1, '{}') "
                     "RETURNING position, event_id) INSERT INTO outbox (position, event_id) SELECT position, event_id FROM e");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("insert: %s", PQerrorMessage(pg));
    PQclear(res);
    wait_outbox_empty(pg);
    tm_await_value(&b, url, "writer_outbox_dead_letters" W, 1, 10000);
    tm_print_moves(&a, &b, "writer_");
    tm_expect_delta(&a, &b, "writer_outbox_dead_lettered_total" W, 1);
    tm_expect_delta(&a, &b, "writer_relay_acked_total" W, 0);
    tm_release(&a);
    tm_release(&b);
    PQfinish(pg);
    stop_writer();
}

struct held_call {
    const char *path;
    int status;
};

static void *deposit_thread(void *arg)
{
    struct held_call *h = arg;
    struct thttp_resp r;
    if (thttp_request(&r, "POST", url, h->path, "{\"amount\":1}", NULL, 20000) == 0)
        h->status = r.status;
    thttp_resp_release(&r);
    return NULL;
}

/* Slowloris: sends data one byte every gap_ms (each byte within libmicrohttpd's idle timeout)
 * until the writer closes the connection; returns the ms that took (fails after timeout_ms). */
static int64_t trickle(const char *data, int gap_ms, int timeout_ms)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int port = atoi(strrchr(url, ':') + 1), fd = socket(AF_INET, SOCK_STREAM, 0);
    int64_t t0 = tnow_ms();
    size_t i = 0;

    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        tfail("connect to %s failed", url);
    for (;;) {
        char c = data[i % strlen(data)];
        if (send(fd, &c, 1, MSG_NOSIGNAL) != 1)
            break; /* closed */
        i++;
        usleep((useconds_t)gap_ms * 1000);
        if (tnow_ms() - t0 > timeout_ms)
            tfail("a connection trickling its headers was not closed within %d ms", timeout_ms);
    }
    close(fd);
    fprintf(stderr, "trickled %zu bytes, closed after %lld ms\n", i, (long long)(tnow_ms() - t0));
    return tnow_ms() - t0;
}

/* A pool of one held by a command waiting for a row lock: in use 1; a checkout meanwhile
 * (/readyz pings the store) times out: one failure. Keys past IDEMPOTENCY_RETENTION_S: purged,
 * counted exactly. A connection whose headers never complete: closed, counted once. */
static void test_pool_purge_slow_connection(void **state)
{
    const char *extra[] = {"PG_POOL_SIZE=1", "REQUEST_TIMEOUT_MS=300", "LOCK_TIMEOUT_MS=5000", "HTTP_TIMEOUT_S=1",
                           "IDEMPOTENCY_RETENTION_S=1", NULL};
    struct tm_scrape a, b;
    struct held_call h = {NULL, 0};
    char id[UUID_STR_SIZE], path[128], hdr[64];
    struct thttp_resp r;
    PGconn *pg = tw_pg();
    PGresult *res;
    pthread_t t;
    const char *slow = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n";

    (void)state;
    start_writer(extra);
    tw_open(id, "metrics", "pool", "EUR", 0);
    snprintf(path, sizeof path, "/accounts/%s/deposits", id);
    h.path = path;
    wait_outbox_empty(pg);
    tm_scrape(&a, url);

    /* the pool's only connection held by a deposit waiting for the row lock the test holds */
    res = PQexec(pg, "BEGIN");
    PQclear(res);
    res = PQexecParams(pg, "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", 1, NULL,
                       (const char *const[]){id}, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("lock: %s", PQerrorMessage(pg));
    PQclear(res);
    pthread_create(&t, NULL, deposit_thread, &h);
    usleep(500 * 1000);
    tm_scrape(&b, url);
    assert_true(tm_value(&b, "writer_pool_connections_in_use" W) == 1);
    assert_true(tm_value(&b, "writer_pool_connections" W) == 1);
    tm_release(&b);
    assert_int_equal(thttp_request(&r, "GET", url, "/readyz", NULL, NULL, 5000), 0);
    assert_int_equal(r.status, 503);
    thttp_resp_release(&r);
    res = PQexec(pg, "COMMIT");
    PQclear(res);
    pthread_join(t, NULL);
    assert_int_equal(h.status, 201);

    /* 3 keyed deposits, purged after 1 s */
    for (int i = 0; i < 3; i++) {
        snprintf(hdr, sizeof hdr, "Idempotency-Key: purge-%d\r\n", i);
        json_decref(tw_post(url, path, "{\"amount\":2}", hdr, 201));
    }
    /* the slow client: headers never complete, closed after HTTP_TIMEOUT_S */
    assert_true(trickle(slow, 400, 10000) < 5000);

    tm_await(&b, url, &a, "writer_idempotency_keys_purged_total" W, 3, 15000, 2500);
    tm_print_moves(&a, &b, NULL);
    tm_expect_delta(&a, &b, "writer_idempotency_keys_purged_total" W, 3);
    tm_expect_delta(&a, &b, "writer_pool_checkout_failures_total" W, 1);
    /* checkouts: the held deposit's batch (its row SKIP LOCKED, so it leaves the batch) and its
     * own transaction, the failed ping, 3 keyed deposits */
    tm_expect_delta(&a, &b, "writer_pool_wait_seconds_count" W, 6);
    tm_expect_delta(&a, &b, "writer_group_commit_batch_commands_count" W, 4);
    tm_expect_delta(&a, &b, "http_slow_connections_closed_total" W, 1);
    tm_expect_delta(&a, &b, REQ("GET /readyz", "503"), 1);
    assert_true(tm_value(&b, "writer_pool_connections_in_use" W) == 0);
    tm_release(&a);
    tm_release(&b);
    PQfinish(pg);
    stop_writer();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands_batches_pool_relay),
        cmocka_unit_test(test_relay_with_nats_down),
        cmocka_unit_test(test_dead_letter),
        cmocka_unit_test(test_pool_purge_slow_connection),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
