/* Issue 13, hole 6: one item that can never apply must not freeze the catch-up sweep for
 * everyone (a version hole in the events table is parked with its reason), and a transaction
 * held open shows in status and metrics as the reason the horizon waits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"
#include "tholes.h"
#include "thttp.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"

static char *redis_str(redisContext *rc, const char *cmd, const char *arg)
{
    redisReply *r = redisCommand(rc, cmd, arg);
    char *s = NULL;

    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        tfail("redis %s %s failed", cmd, arg);
    if (r->type == REDIS_REPLY_STRING)
        s = strdup(r->str);
    freeReplyObject(r);
    return s;
}

/* A hole in A's history (version v+2 without v+1, written straight into the events table) with
 * NATS down, then a command on B: the sweep is the only path. B is visible within 2 s, A is
 * parked with the reason, a warning is logged and the sweep cursor moves past the hole. */
static void test_version_hole_does_not_freeze_the_sweep(void **state)
{
    char a[UUID_STR_SIZE], b[UUID_STR_SIZE], hole[UUID_STR_SIZE], ver[24], key[128];
    const char *params[3] = {hole, a, ver};
    redisContext *rc = tredis_open();
    PGconn *pg = tw_pg();
    PGresult *res;
    unsigned long long hole_tx, tail_tx = 0;
    char *stalled = NULL, *parked = NULL, *gen, *tail = NULL;
    int64_t v, vb, ms;
    long log_from;

    (void)state;
    tw_open(a, "holes", "hole victim", "EUR", 0);
    tw_open(b, "holes", "hole bystander", "EUR", 0);
    v = th_deposit(a, "hole 6");
    assert_int_equal(th_read_min_version(a, v, &ms), 200);
    tstack_kill("nats", SIGTERM, 15000);
    log_from = th_log_size("projector");
    uuid_generate(hole);
    snprintf(ver, sizeof ver, "%lld", (long long)v + 2);
    res = PQexecParams(pg,
                       "INSERT INTO events (event_id, stream_id, stream_version, type, schema, data) "
                       "VALUES ($1, $2, $3, 'MoneyDeposited', 1, '{\"amount\":5,\"description\":\"after a hole\"}') "
                       "RETURNING tx_id::text",
                       3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("insert: %s", PQerrorMessage(pg));
    hole_tx = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    vb = th_deposit(b, "hole 6");
    assert_int_equal(th_read_min_version(b, vb, &ms), 200);
    fprintf(stderr, "B visible %lld ms after its command (NATS down: through the sweep)\n", (long long)ms);
    assert_true(ms <= 2500);
    for (int64_t deadline = tnow_ms() + 5000; tnow_ms() < deadline; usleep(200000)) {
        free(stalled);
        free(parked);
        stalled = redis_str(rc, "HGET rm:stalled %s", a);
        parked = redis_str(rc, "HGET rm:parked %s", hole);
        if (stalled != NULL && parked != NULL)
            break;
    }
    fprintf(stderr, "rm:stalled[A] = %s\nrm:parked[hole] = %.300s\n", stalled ? stalled : "(none)",
            parked ? parked : "(none)");
    assert_non_null(stalled);
    assert_non_null(parked);
    assert_non_null(strstr(stalled, "missing from the event store"));
    assert_non_null(strstr(parked, "missing from the event store"));
    assert_true(th_log_count("projector", log_from, "has a hole in its history") >= 1);
    /* the cursor went past the hole: later sweeps are not stuck re-reading it */
    gen = redis_str(rc, "GET %s", "rm:current");
    assert_non_null(gen);
    snprintf(key, sizeof key, "rm:%s:tail", gen);
    for (int64_t deadline = tnow_ms() + 3000; tnow_ms() < deadline && tail_tx <= hole_tx; usleep(200000)) {
        free(tail);
        tail = redis_str(rc, "GET %s", key);
        tail_tx = tail != NULL ? strtoull(tail, NULL, 10) : 0;
    }
    fprintf(stderr, "hole tx %llu, sweep cursor %s\n", hole_tx, tail ? tail : "(none)");
    assert_true(tail_tx > hole_tx);
    free(tail);
    free(gen);
    free(stalled);
    free(parked);
    tstack_up();
    PQfinish(pg);
    redisFree(rc);
}

/* A transaction with an xid held open: committed events behind it wait below the horizon, and
 * status and metrics say so, naming the transaction's pid, with its age. */
static void test_open_transaction_shows_as_the_horizon(void **state)
{
    struct tstack_svcs *s = *state;
    char c[UUID_STR_SIZE], out[16384], want[64], url[64];
    PGconn *holder = tw_pg();
    PGresult *res;
    const char *line = NULL;
    long waited = 0, log_from = th_log_size("projector");
    int64_t t0;
    double wait_s, held;

    tw_open(c, "holes", "horizon", "EUR", 0);
    res = PQexec(holder, "BEGIN");
    PQclear(res);
    res = PQexec(holder, "SELECT pg_current_xact_id()"); /* takes an xid: the horizon stays here */
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    t0 = tnow_ms();
    snprintf(want, sizeof want, "(pid %d)", PQbackendPID(holder));
    th_deposit(c, "hole 6");
    while (tnow_ms() - t0 < 45000) {
        sleep(1);
        if (trun_capture("projector", "status", out, sizeof out) != 0)
            tfail("projector status failed: %s", out);
        line = strstr(out, "horizon:");
        if (line != NULL && strstr(line, want) != NULL && sscanf(strstr(line, "open for"), "open for %ld", &waited) == 1 &&
            waited >= 30)
            break;
    }
    fprintf(stderr, "after %lld ms, status:\n%s", (long long)(tnow_ms() - t0), out);
    assert_non_null(line);
    assert_non_null(strstr(line, want));
    assert_true(waited >= 30);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", tsvc_projector_port(s->projector));
    /* the gauges follow rm:head, which the sweep refreshes once a second */
    for (int64_t deadline = tnow_ms() + 4000;; usleep(500000)) {
        wait_s = thttp_metric(url, "projector_horizon_wait_seconds{service=\"projector\"}");
        held = thttp_metric(url, "projector_horizon_held_events{service=\"projector\"}");
        if ((wait_s >= 30 && held >= 1) || tnow_ms() > deadline)
            break;
    }
    fprintf(stderr, "projector_horizon_wait_seconds %.1f, projector_horizon_held_events %.0f\n", wait_s, held);
    assert_true(wait_s >= 30);
    assert_true(held >= 1);
    assert_true(th_log_count("projector", log_from, "behind transaction") >= 1);
    res = PQexec(holder, "COMMIT");
    PQclear(res);
    for (int64_t deadline = tnow_ms() + 5000; tnow_ms() < deadline; sleep(1)) {
        if (trun_capture("projector", "status", out, sizeof out) != 0)
            tfail("projector status failed: %s", out);
        if (strstr(out, "horizon:") == NULL)
            break;
    }
    assert_null(strstr(out, "horizon:"));
    PQfinish(holder);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_hole_does_not_freeze_the_sweep),
        cmocka_unit_test(test_open_transaction_shows_as_the_horizon),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
