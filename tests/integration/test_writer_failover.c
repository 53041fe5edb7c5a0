/* Issue 3: Postgres down answers 503 store_unavailable within a bounded time and the writer
 * recovers on its own; a standby relay takes over when the active one dies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"
#include "thttp.h"
#include "tstack.h"
#include "twriter.h"

static pid_t writer_pid;

static int setup(void **state)
{
    (void)state;
    treset_state();
    writer_pid = tsvc_start("writer", NULL, NULL);
    tstack_guard(writer_pid);
    if (!twait_http_ok(tenv("WRITER_URL"), "/healthz", 20000))
        tfail("writer did not start");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tstack_unguard(writer_pid);
    assert_int_equal(tsvc_stop(writer_pid, SIGTERM, 10000), 0);
    return 0;
}

static void test_store_down_is_bounded_and_recovers(void **state)
{
    char id[UUID_STR_SIZE], path[256];
    struct thttp_resp r;
    json_t *doc;
    int64_t t0, took, deadline;
    int ok = 0;

    (void)state;
    tw_open(id, "failover", "pg", "EUR", 0);
    snprintf(path, sizeof path, "/accounts/%s/deposits", id);
    tstack_pg_stop_immediate();

    for (int i = 0; i < 3; i++) {
        t0 = tnow_ms();
        assert_int_equal(thttp_request(&r, "POST", tenv("WRITER_URL"), path, "{\"amount\":5}", NULL, 30000), 0);
        took = tnow_ms() - t0;
        fprintf(stderr, "postgres down: %d in %lld ms: %s\n", r.status, (long long)took, r.body);
        assert_int_equal(r.status, 503);
        doc = thttp_json(&r);
        assert_string_equal(tw_str(doc, "error"), "store_unavailable");
        json_decref(doc);
        thttp_resp_release(&r);
        assert_true(took < 6000); /* bounded by REQUEST_TIMEOUT_MS (5 s), never a hang */
    }
    assert_int_equal(thttp_request(&r, "GET", tenv("WRITER_URL"), "/readyz", NULL, NULL, 10000), 0);
    assert_int_equal(r.status, 503);
    thttp_resp_release(&r);

    tstack_up();
    deadline = tnow_ms() + 20000;
    while (tnow_ms() < deadline) {
        assert_int_equal(thttp_request(&r, "POST", tenv("WRITER_URL"), path, "{\"amount\":5}", NULL, 10000), 0);
        ok = r.status == 201;
        if (ok) {
            doc = thttp_json(&r);
            /* the 503s wrote nothing: this is the first deposit */
            assert_int_equal(tw_int(doc, "version"), 2);
            assert_int_equal(tw_int(doc, "balance"), 5);
            json_decref(doc);
        }
        thttp_resp_release(&r);
        if (ok)
            break;
        usleep(200000);
    }
    assert_true(ok);
    {
        PGconn *pg = tw_pg();
        assert_int_equal(tw_check_gapless(pg, id), 2);
        PQfinish(pg);
    }
}

static int64_t relay_locks(PGconn *pg)
{
    return tw_scalar(pg, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted", NULL,
                     NULL);
}

static void test_standby_relay_takes_over(void **state)
{
    char port[32], env_port[64], base[64], path[256];
    const char *extra[2] = {env_port, NULL};
    PGconn *pg = tw_pg();
    pid_t second;
    int64_t deadline;

    (void)state;
    /* the first writer holds the relay lock */
    deadline = tnow_ms() + 10000;
    while (relay_locks(pg) != 1 && tnow_ms() < deadline)
        usleep(50000);
    assert_int_equal(relay_locks(pg), 1);

    snprintf(port, sizeof port, "%d", atoi(tenv("WRITER_PORT")) + 5);
    snprintf(env_port, sizeof env_port, "WRITER_PORT=%s", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%s", port);
    second = tsvc_start("writer", NULL, extra);
    tstack_guard(second);
    if (!twait_http_ok(base, "/healthz", 20000))
        tfail("second writer did not start");
    sleep(1);
    assert_int_equal(relay_locks(pg), 1); /* still one active relay: the second stands by */

    /* the active relay dies; commands keep arriving at the second writer */
    tstack_unguard(writer_pid);
    assert_int_equal(tsvc_stop(writer_pid, SIGKILL, 5000), 128 + SIGKILL);
    writer_pid = second;
    snprintf(path, sizeof path, "/accounts");
    for (int i = 0; i < 50; i++) {
        char body[256];
        json_t *doc;
        snprintf(body, sizeof body, "{\"owner\":\"failover\",\"name\":\"n%d\",\"currency\":\"EUR\"}", i);
        doc = tw_post(base, path, body, NULL, 201);
        json_decref(doc);
    }
    /* the standby took the lock and drained the outbox */
    deadline = tnow_ms() + 10000;
    while ((relay_locks(pg) != 1 ||
            tw_scalar(pg, "SELECT count(*) FROM outbox", NULL, NULL) != 0) && tnow_ms() < deadline)
        usleep(100000);
    assert_int_equal(relay_locks(pg), 1);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM outbox", NULL, NULL), 0);
    PQfinish(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_down_is_bounded_and_recovers),
        cmocka_unit_test(test_standby_relay_takes_over),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
