/* Issue 17: every metric family of the projector moves by exactly what happened: events
 * applied and read by the sweep, a duplicate delivery, a withheld event filled from Postgres
 * (gap repair), an event only the sweep brings (the bus lost it), a parked poison event with its stalled account and the events held behind it,
 * an event whose account's history has a hole, and a rebuild's progress. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "event.h"
#include "support.h"
#include "tholes.h"
#include "thttp.h"
#include "tmetrics.h"
#include "trebuild.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"

#define P "{service=\"projector\"}"
#define SWEEP_OK "projector_sweep_runs_total{service=\"projector\",result=\"ok\"}"
#define SWEEP_FAILED "projector_sweep_runs_total{service=\"projector\",result=\"failed\"}"

static char url[64];

static void set_url(void **state)
{
    struct tstack_svcs *s = *state;
    snprintf(url, sizeof url, "http://127.0.0.1:%d", tsvc_projector_port(s->projector));
}

static void await_projected(const char *id, int64_t version)
{
    char path[160];
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=10000", id, (long long)version);
    json_decref(tr_get_ok(NULL, path));
}

static int64_t store_head(void)
{
    PGconn *pg = tw_pg();
    int64_t h = tw_scalar(pg, "SELECT coalesce(max(position), 0) FROM events", NULL, NULL);
    PQfinish(pg);
    return h;
}

/* A quiet read side: everything applied and read by the sweep, the gauges refreshed. */
static void await_quiet(struct tm_scrape *m)
{
    int64_t head = store_head();
    tm_await_value(m, url, "projector_checkpoint_position" P, (double)head, 15000);
    tm_release(m);
    tm_await_value(m, url, "projector_event_store_head_position" P, (double)head, 15000);
    tm_release(m);
    usleep(2200 * 1000); /* two sweeps more: whatever they read is in the counters */
    tm_scrape(m, url);
}

/* The sweep's lease held by the test: no catch-up from the events table meanwhile, so an event
 * kept off the bus stays missing until a later one shows the gap. */
static void hold_sweep(redisContext *rc, int hold)
{
    long gen = trb_get(rc, "rm:current");
    redisReply *r = hold ? redisCommand(rc, "SET rm:%ld:tail:lease test-holds-it PX 60000", gen)
                         : redisCommand(rc, "DEL rm:%ld:tail:lease", gen);
    assert_true(r != NULL && r->type != REDIS_REPLY_ERROR);
    freeReplyObject(r);
    if (hold)
        usleep(1500 * 1000); /* a sweep that had the lease finishes its round */
}

/* N events through the writer: each applied once by the live path, each read once more by the
 * sweep by its id and version only: found applied, never read whole nor folded again (no
 * duplicate, nothing fetched); the positions agree with the store, no lag. */
static void test_applied_swept_positions(void **state)
{
    struct tm_scrape a, b;
    char id[UUID_STR_SIZE];

    set_url(state);
    await_quiet(&a);
    tw_open(id, "pmetrics", "main", "EUR", 0);
    for (int i = 0; i < 5; i++)
        json_decref(tw_money(id, "deposits", 10, "p"));
    await_projected(id, 6);
    await_quiet(&b);
    tm_print_moves(&a, &b, "projector_");
    tm_expect_delta(&a, &b, "projector_events_applied_total" P, 6);
    tm_expect_delta(&a, &b, "projector_sweep_events_total" P, 6);
    tm_expect_delta(&a, &b, "projector_sweep_fetched_events_total" P, 0);
    tm_expect_delta(&a, &b, "projector_events_duplicate_total" P, 0);
    tm_expect_delta(&a, &b, "projector_gap_repair_events_total" P, 0);
    tm_expect_delta(&a, &b, "projector_cas_conflicts_total" P, 0);
    tm_expect_delta(&a, &b, "projector_events_parked_total" P, 0);
    {
        /* every notification sent (test_readapi has the refused ones: reason="refused") */
        static const struct tm_want none[] = {{NULL, 0}};
        (void)tm_expect_family(&a, &b, "projector_notifications_lost_total", none);
    }
    tm_expect_delta(&a, &b, SWEEP_FAILED, 0);
    assert_true(tm_delta(&a, &b, SWEEP_OK) >= 2); /* once a second */
    assert_true(tm_value(&b, "projector_checkpoint_position" P) == (double)store_head());
    assert_true(tm_value(&b, "projector_lag_events" P) == 0);
    assert_true(tm_value(&b, "projector_lag_seconds" P) == 0);
    assert_true(tm_value(&b, "projector_parked_events" P) == 0);
    assert_true(tm_value(&b, "projector_stalled_accounts" P) == 0);
    assert_true(tm_value(&b, "projector_horizon_held_events" P) == 0);
    assert_true(tm_value(&b, "projector_horizon_wait_seconds" P) == 0);
    assert_true(tm_value(&b, "projector_read_model_available" P) == 1);
    assert_true(tm_value(&b, "metrics_dropped_series_total" P) == 0);
    tm_expect_delta(&a, &b, "projector_stray_messages_total" P, 0);
    {
        /* the stack's one projector owns every partition; the account's is caught up */
        char subject[32], series[128];
        event_subject(id, EVENT_PARTITIONS, subject, sizeof subject);
        assert_true(tm_value(&b, "projector_partitions_owned" P) == EVENT_PARTITIONS);
        snprintf(series, sizeof series, "projector_partition_pending_messages{service=\"projector\",partition=\"%s\"}",
                 subject + strlen("events."));
        assert_true(tm_value(&b, series) == 0);
        snprintf(series, sizeof series, "projector_partition_lag_seconds{service=\"projector\",partition=\"%s\"}",
                 subject + strlen("events."));
        assert_true(tm_value(&b, series) == 0);
    }
    tm_release(&a);
    tm_release(&b);
}

/* A deposit event written to the store only, as if the bus had lost it. */
static void insert_only(PGconn *pg, const char *event_id, const char *stream, int version, const char *data)
{
    char ver[16];
    const char *p[4] = {event_id, stream, ver, data};
    PGresult *res;

    snprintf(ver, sizeof ver, "%d", version);
    res = PQexecParams(pg, "INSERT INTO events (event_id, stream_id, stream_version, type, schema, data) "
                           "VALUES ($1, $2, $3, 'MoneyDeposited', 1, $4::jsonb)", 4, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("insert: %s", PQerrorMessage(pg));
    PQclear(res);
}

/* A copy of an applied version under another event id: one duplicate, nothing applied. An
 * event kept off the bus (the sweep held off) and the next one published: the gap is filled
 * from Postgres, one gap-repair event, both applied. */
static void test_duplicate_and_gap_repair(void **state)
{
    struct tm_scrape a, b;
    char id[UUID_STR_SIZE], e1[UUID_STR_SIZE], e2[UUID_STR_SIZE], e3[UUID_STR_SIZE];
    redisContext *rc = tredis_open();
    PGconn *pg = tw_pg();

    set_url(state);
    tw_open(id, "pmetrics", "gaps", "EUR", 0);
    json_decref(tw_money(id, "deposits", 10, "p")); /* version 2 */
    await_projected(id, 2);
    await_quiet(&a);
    hold_sweep(rc, 1);
    uuid_generate(e1);
    th_event(NULL, 0, e1, id, 2, "MoneyDeposited", "{\"amount\":999,\"description\":\"copy\"}");
    tm_await(&b, url, &a, "projector_events_duplicate_total" P, 1, 10000, 1500);
    tm_print_moves(&a, &b, "projector_");
    tm_expect_delta(&a, &b, "projector_events_duplicate_total" P, 1);
    tm_expect_delta(&a, &b, "projector_events_applied_total" P, 0);
    tm_release(&b);

    uuid_generate(e2);
    uuid_generate(e3);
    insert_only(pg, e2, id, 3, "{\"amount\":3,\"description\":\"withheld\"}"); /* never on the bus */
    th_event(pg, 1, e3, id, 4, "MoneyDeposited", "{\"amount\":4,\"description\":\"published\"}");
    await_projected(id, 4);
    usleep(1200 * 1000);
    tm_scrape(&b, url);
    tm_print_moves(&a, &b, "projector_");
    tm_expect_delta(&a, &b, "projector_gap_repair_events_total" P, 1);
    tm_expect_delta(&a, &b, "projector_events_applied_total" P, 2);
    tm_expect_delta(&a, &b, "projector_events_duplicate_total" P, 1);
    tm_expect_delta(&a, &b, "projector_sweep_events_total" P, 0); /* held off */
    tm_release(&b);
    hold_sweep(rc, 0);
    tm_release(&a);
    redisFree(rc);
    PQfinish(pg);
}

/* The sweep is the guarantee for what the bus lost: an account's last event written to the store
 * only (no later event shows the gap) is applied by the sweep within about a second and a half
 * (its 500 ms grace, its 1 s round), read whole once: the one event the sweep fetches. */
static void test_sweep_applies_lost(void **state)
{
    struct tm_scrape a, b;
    char id[UUID_STR_SIZE], e2[UUID_STR_SIZE];
    PGconn *pg = tw_pg();
    int64_t t0, took;

    set_url(state);
    tw_open(id, "pmetrics", "lost", "EUR", 0);
    await_projected(id, 1);
    await_quiet(&a);
    uuid_generate(e2);
    t0 = tnow_ms();
    insert_only(pg, e2, id, 2, "{\"amount\":7,\"description\":\"lost on the bus\"}"); /* never on the bus */
    await_projected(id, 2);
    took = tnow_ms() - t0;
    fprintf(stderr, "the lost event was applied by the sweep %lld ms after its commit\n", (long long)took);
    assert_true(took < 5000);
    await_quiet(&b);
    tm_print_moves(&a, &b, "projector_");
    tm_expect_delta(&a, &b, "projector_sweep_events_total" P, 1);
    tm_expect_delta(&a, &b, "projector_sweep_fetched_events_total" P, 1);
    tm_expect_delta(&a, &b, "projector_events_applied_total" P, 0); /* not by the live path */
    tm_expect_delta(&a, &b, "projector_gap_repair_events_total" P, 0);
    tm_expect_delta(&a, &b, "projector_events_duplicate_total" P, 0);
    tm_expect_delta(&a, &b, SWEEP_FAILED, 0);
    {
        char path[160];
        json_t *acct;
        snprintf(path, sizeof path, "/accounts/%s", id);
        acct = tr_get_ok(NULL, path);
        assert_int_equal(json_integer_value(json_object_get(acct, "version")), 2);
        assert_int_equal(json_integer_value(json_object_get(acct, "balance")), 7);
        json_decref(acct);
    }
    tm_release(&a);
    tm_release(&b);
    PQfinish(pg);
}

/* Another writer moves an account while the projector folds it: the projector has read the
 * account (version 2) and waits on its gap read (events locked by the test), the account is
 * moved to version 3 behind it (the other writer, simulated by its version in Redis), then the
 * read returns: the compare-and-set fails once (one conflict), the projector re-reads and
 * re-folds. Only the version was moved, so the re-read finds a document of version 2 under
 * version 3: the projector stalls the account ("read model document unreadable") rather than
 * fold on it; the rebuild that follows in this group builds it again from the events. */
static void test_cas_conflict(void **state)
{
    struct tm_scrape a, b;
    char id[UUID_STR_SIZE], e3[UUID_STR_SIZE], e4[UUID_STR_SIZE];
    redisContext *rc = tredis_open();
    PGconn *lock = tw_pg();
    PGresult *res;
    redisReply *r;

    set_url(state);
    tw_open(id, "pmetrics", "cas", "EUR", 0);
    json_decref(tw_money(id, "deposits", 10, "p")); /* version 2 */
    await_projected(id, 2);
    await_quiet(&a);
    hold_sweep(rc, 1);
    res = PQexec(lock, "BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    uuid_generate(e3);
    uuid_generate(e4);
    insert_only(lock, e3, id, 3, "{\"amount\":3,\"description\":\"gap\"}");
    th_event(lock, 1, e4, id, 4, "MoneyDeposited", "{\"amount\":4,\"description\":\"published\"}");
    usleep(800 * 1000); /* the projector has version 4, read version 2, and waits for version 3 */
    r = redisCommand(rc, "HSET rm:%ld:a:{%s} v 3", trb_get(rc, "rm:current"), id);
    assert_true(r != NULL && r->type == REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    res = PQexec(lock, "COMMIT");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    tm_await(&b, url, &a, "projector_cas_conflicts_total" P, 1, 10000, 1500);
    tm_print_moves(&a, &b, "projector_");
    tm_expect_delta(&a, &b, "projector_cas_conflicts_total" P, 1);
    tm_release(&b);
    hold_sweep(rc, 0);
    tm_release(&a);
    redisFree(rc);
    PQfinish(lock);
}

/* A transaction left open with an xid holds the horizon: the 2 events committed after it are
 * counted as held (the bus projects them all the same), with the time it has waited; ended:
 * nothing held. */
static void test_horizon_held(void **state)
{
    struct tm_scrape b;
    char id[UUID_STR_SIZE];
    PGconn *holder = tw_pg();
    PGresult *res;

    set_url(state);
    tw_open(id, "pmetrics", "horizon", "EUR", 0);
    await_projected(id, 1);
    res = PQexec(holder, "BEGIN; SELECT pg_current_xact_id()");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    json_decref(tw_money(id, "deposits", 1, "h"));
    json_decref(tw_money(id, "deposits", 1, "h"));
    await_projected(id, 3);
    tm_await_value(&b, url, "projector_horizon_held_events" P, 2, 10000);
    tm_release(&b);
    /* the gauges are refreshed about once a second (later on a slow machine): the wait reaches
     * 2 s within a bound while the same 2 events stay held */
    for (int64_t until = tnow_ms() + 10000;; usleep(200 * 1000)) {
        tm_scrape(&b, url);
        if (tm_value(&b, "projector_horizon_wait_seconds" P) >= 2 || tnow_ms() > until)
            break;
        tm_release(&b);
    }
    assert_true(tm_value(&b, "projector_horizon_held_events" P) == 2);
    assert_true(tm_value(&b, "projector_horizon_wait_seconds" P) >= 2);
    tm_release(&b);
    res = PQexec(holder, "ROLLBACK");
    PQclear(res);
    tm_await_value(&b, url, "projector_horizon_held_events" P, 0, 10000);
    assert_true(tm_value(&b, "projector_horizon_wait_seconds" P) == 0);
    tm_release(&b);
    PQfinish(holder);
}

/* A poison event (an unknown type) parked: its account stalled, the events published behind
 * it held back and counted as lag; an event of an account whose earlier versions the store
 * lacks: parked as a history hole. */
static void test_poison_stall_lag_hole(void **state)
{
    struct tm_scrape a, b;
    char id[UUID_STR_SIZE], ev[UUID_STR_SIZE], lone[UUID_STR_SIZE];
    PGconn *pg = tw_pg();

    set_url(state);
    tw_open(id, "pmetrics", "poison", "EUR", 0);
    await_projected(id, 1);
    await_quiet(&a);
    uuid_generate(ev);
    th_event(pg, 1, ev, id, 2, "NoSuchType", "{}");
    for (int v = 3; v <= 5; v++) {
        uuid_generate(ev);
        th_event(pg, 1, ev, id, v, "MoneyDeposited", "{\"amount\":1,\"description\":\"behind\"}");
    }
    tm_await_value(&b, url, "projector_stalled_accounts" P, 1, 10000);
    tm_release(&b);
    usleep(2200 * 1000);
    tm_scrape(&b, url);
    tm_print_moves(&a, &b, "projector_");
    tm_expect_delta(&a, &b, "projector_events_parked_total" P, 1);
    assert_true(tm_value(&b, "projector_parked_events" P) == 1);
    assert_true(tm_value(&b, "projector_stalled_accounts" P) == 1);
    tm_expect_delta(&a, &b, "projector_events_applied_total" P, 0);
    fprintf(stderr, "behind the parked event: lag %g events, %g s; head %g, checkpoint %g\n",
            tm_value(&b, "projector_lag_events" P), tm_value(&b, "projector_lag_seconds" P),
            tm_value(&b, "projector_event_store_head_position" P), tm_value(&b, "projector_checkpoint_position" P));
    assert_true(tm_value(&b, "projector_lag_events" P) == 4); /* the poison event and 3 behind it */
    assert_true(tm_value(&b, "projector_lag_seconds" P) > 0);
    tm_release(&b);

    uuid_generate(lone);
    uuid_generate(ev);
    th_event(pg, 1, ev, lone, 3, "MoneyDeposited", "{\"amount\":1,\"description\":\"no history\"}");
    tm_await(&b, url, &a, "projector_history_holes_total" P, 1, 15000, 2200);
    tm_print_moves(&a, &b, "projector_");
    tm_expect_delta(&a, &b, "projector_history_holes_total" P, 1);
    tm_expect_delta(&a, &b, "projector_events_parked_total" P, 2);
    tm_expect_delta(&a, &b, "projector_events_applied_total" P, 0);
    assert_true(tm_value(&b, "projector_parked_events" P) == 2);
    assert_true(tm_value(&b, "projector_stalled_accounts" P) == 2);
    assert_true(tm_value(&b, "projector_lag_events" P) == 5);
    tm_release(&a);
    tm_release(&b);
    PQfinish(pg);
}

/* `projector rebuild` beside the live projector: its gauges show the finished rebuild of the
 * whole store (every event, ratio 1, not running) and the new generation. */
static void test_rebuild_progress(void **state)
{
    static const char *const args[] = {"rebuild", NULL};
    struct tm_scrape a, b;
    redisContext *rc = tredis_open();
    char id[UUID_STR_SIZE], *out = NULL;
    long gen;

    set_url(state);
    tw_open(id, "pmetrics", "rebuild", "EUR", 0);
    for (int i = 0; i < 20; i++)
        json_decref(tw_money(id, "deposits", 10, "r"));
    {
        /* 20,000 more events straight into the store (the sweep projects them): a rebuild long
         * enough (over 50 ms) for its rate to be measured */
        PGconn *pg = tw_pg();
        PGresult *res = PQexecParams(pg, "INSERT INTO events (event_id, stream_id, stream_version, type, schema, data) "
                                         "SELECT gen_random_uuid(), $1, v, 'MoneyDeposited', 1, "
                                         "'{\"amount\":1,\"description\":\"bulk\"}' FROM generate_series(22, 20021) v",
                                     1, NULL, (const char *const[]){id}, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            tfail("insert: %s", PQerrorMessage(pg));
        PQclear(res);
        PQfinish(pg);
    }
    await_projected(id, 20021);
    tm_scrape(&a, url);
    assert_int_equal(trb_run("projector", args, &out), 0);
    free(out);
    gen = trb_get(rc, "rm:current");
    /* the generation shows from the rebuild's start; then the end (gauges refresh once a second) */
    tm_await_value(&b, url, "projector_rebuild_generation" P, (double)gen, 10000);
    tm_release(&b);
    tm_await_value(&b, url, "projector_rebuild_running" P, 0, 10000);
    tm_print_moves(&a, &b, "projector_rebuild");
    {
        PGconn *pg = tw_pg();
        int64_t events = tw_scalar(pg, "SELECT count(*) FROM events", NULL, NULL);
        PQfinish(pg);
        fprintf(stderr, "rebuild: %g of %g events (store: %lld), ratio %g, %g events/s\n",
                tm_value(&b, "projector_rebuild_events" P), tm_value(&b, "projector_rebuild_target_events" P),
                (long long)events, tm_value(&b, "projector_rebuild_progress_ratio" P),
                tm_value(&b, "projector_rebuild_events_per_second" P));
        assert_true(tm_value(&b, "projector_rebuild_events" P) == (double)events);
        assert_true(tm_value(&b, "projector_rebuild_target_events" P) == (double)events);
    }
    assert_true(tm_value(&b, "projector_rebuild_progress_ratio" P) == 1);
    assert_true(tm_value(&b, "projector_rebuild_running" P) == 0);
    assert_true(tm_value(&b, "projector_rebuild_eta_seconds" P) == 0);
    assert_true(tm_value(&b, "projector_rebuild_events_per_second" P) > 0);
    tm_release(&a);
    tm_release(&b);
    redisFree(rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_applied_swept_positions),
        cmocka_unit_test(test_duplicate_and_gap_repair),
        cmocka_unit_test(test_sweep_applies_lost),
        cmocka_unit_test(test_horizon_held),
        cmocka_unit_test(test_cas_conflict),
        cmocka_unit_test(test_rebuild_progress),
        cmocka_unit_test(test_poison_stall_lag_hole),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
