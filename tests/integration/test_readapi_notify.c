/* Issue 13, hole 5: notifications on rm:applied that do not go out as they should, and the read
 * API's cache (a 60 s lifetime here, so only notifications keep it current):
 * - a projector whose Redis user may not publish on the channel (the refusal is counted, logged
 *   and reaches the cache through rm:applied:lost);
 * - a batch whose later round fails on Postgres after an earlier round wrote an account: what
 *   the earlier round wrote is announced all the same. */
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

#include "event.h"
#include "support.h"
#include "tcheck.h"
#include "tholes.h"
#include "thttp.h"
#include "trebuild.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"

/* Issue 13, hole 5: a notification the projector cannot send still reaches the read API's
 * cache. With a projector whose Redis user may not publish on rm:applied (an ACL without the
 * channel) and documents cached for 60 s, each new version is served within 1 s; the refusal
 * is counted and logged. */
static void test_refused_notification_clears_the_cache(void **state)
{
    struct tstack_svcs *svcs = *state;
    static const char *const run[] = {"run", NULL};
    static const char *const env[] = {"REDIS_USERNAME=nopub", "REDIS_PASSWORD=nopub-test", NULL};
    redisContext *rc = tredis_open();
    char id[UUID_STR_SIZE], path[160], url[64], key[128];
    long log_from = th_log_size("projector");
    double lost;
    redisReply *r;
    json_t *doc;

    r = redisCommand(rc, "ACL SETUSER nopub reset on >nopub-test ~* resetchannels +@all");
    assert_true(r != NULL && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    tw_open(id, "lost", "acl", "EUR", 0);
    snprintf(path, sizeof path, "/accounts/%s?min_version=1&wait_ms=10000", id);
    json_decref(tr_get_ok(NULL, path));
    /* from here only a projector without the channel applies */
    tstack_unguard(svcs->projector);
    assert_int_equal(tsvc_stop(svcs->projector, SIGTERM, 10000), 0);
    svcs->projector = tsvc_start("projector", run, env);
    tstack_guard(svcs->projector);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", tsvc_projector_port(svcs->projector));
    if (!twait_http_ok(url, "/readyz", 20000))
        tfail("the projector without the channel is not ready at %s", url);
    snprintf(path, sizeof path, "/accounts/%s", id);
    snprintf(key, sizeof key, "rm:%ld:a:{%s}", trb_get(rc, "rm:current"), id);
    for (int k = 0; k < 3; k++) {
        int64_t v, t0, t1, seen = 0;
        json_decref(tr_get_ok(NULL, path)); /* cached */
        json_decref(tr_get_ok(NULL, path));
        doc = tw_money(id, "deposits", 10, "refused notification");
        v = tw_int(doc, "version");
        json_decref(doc);
        /* from the moment Redis holds it (the projector's own delay is not the cache's) */
        for (t0 = tnow_ms(); tnow_ms() - t0 < 10000 && trb_hget(rc, key, "v") < v; usleep(5000))
            ;
        assert_int_equal(trb_hget(rc, key, "v"), v);
        for (t1 = tnow_ms(); tnow_ms() - t1 < 3000 && seen < v; usleep(20000)) {
            doc = tr_get_ok(NULL, path);
            seen = tw_int(doc, "version");
            json_decref(doc);
        }
        fprintf(stderr, "version %lld applied after %lld ms, served %lld ms later (a 60 s cache, PUBLISH refused)\n",
                (long long)v, (long long)(t1 - t0), (long long)(tnow_ms() - t1));
        assert_int_equal(seen, v);
        assert_true(tnow_ms() - t1 <= 1000);
    }
    lost = thttp_metric(url, "projector_notifications_lost_total{service=\"projector\",reason=\"refused\"}");
    fprintf(stderr, "projector_notifications_lost_total{reason=refused} %.0f\n", lost);
    assert_true(lost >= 3);
    assert_true(th_log_count("projector", log_from, "not sent (refused)") >= 1);
    /* the stack's projector again */
    tstack_unguard(svcs->projector);
    assert_int_equal(tsvc_stop(svcs->projector, SIGTERM, 10000), 0);
    svcs->projector = tsvc_start("projector", run, NULL);
    tstack_guard(svcs->projector);
    freeReplyObject(redisCommand(rc, "ACL DELUSER nopub"));
    redisFree(rc);
}


/* ---- Postgres locks as the test's clock: where the projector's partition thread waits ---- */

/* The backend (other than ours) running a statement like `like` that waits for a lock, held by
 * blocker when it is > 0; fails the test after 10 s. */
static int lock_waiter(PGconn *pg, const char *like, int blocker)
{
    char b[16];
    const char *p[2] = {like, b};

    snprintf(b, sizeof b, "%d", blocker);
    for (int64_t deadline = tnow_ms() + 10000; tnow_ms() < deadline; usleep(2000)) {
        PGresult *res = PQexecParams(pg,
                                     "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                                     "AND state = 'active' AND wait_event_type = 'Lock' AND query LIKE $1 "
                                     "AND ($2::int = 0 OR $2::int = ANY (pg_blocking_pids(pid))) LIMIT 1",
                                     2, NULL, p, NULL, NULL, 0);
        int pid = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;
        PQclear(res);
        if (pid > 0)
            return pid;
    }
    tfail("no statement like '%s' waits for a lock%s", like, blocker > 0 ? " held by the test" : "");
}

/* A connection that asks for ACCESS EXCLUSIVE on events (blocks every reader) without waiting
 * for it; lock_queued checks that it waits behind the earlier requests, lock_granted waits
 * until it holds it. */
static PGconn *lock_events_async(void)
{
    PGconn *c = tw_pg();

    if (!PQsendQuery(c, "BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
        tfail("lock events: %s", PQerrorMessage(c));
    return c;
}

static void lock_queued(PGconn *pg, PGconn *locker)
{
    char pid[16];

    snprintf(pid, sizeof pid, "%d", PQbackendPID(locker));
    for (int64_t deadline = tnow_ms() + 5000; tnow_ms() < deadline; usleep(2000))
        if (tw_scalar(pg, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int AND wait_event_type = 'Lock'",
                      pid, NULL) == 1)
            return;
    tfail("the test's lock request does not wait");
}

static void lock_granted(PGconn *locker)
{
    PGresult *res;

    while ((res = PQgetResult(locker)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            tfail("lock events: %s", PQresultErrorMessage(res));
        PQclear(res);
    }
}

/* Reads `id` from the read API until it serves version `want` or timeout_ms passes; returns
 * the last version served. */
static int64_t served_within(const char *id, int64_t want, int timeout_ms)
{
    char path[160];
    int64_t t0 = tnow_ms(), seen = 0;

    snprintf(path, sizeof path, "/accounts/%s", id);
    for (; tnow_ms() - t0 < timeout_ms && seen < want; usleep(10000)) {
        json_t *doc = tr_get_ok(NULL, path);
        seen = tw_int(doc, "version");
        json_decref(doc);
    }
    return seen;
}

/* Waits until generation gen's sweep cursor has passed version `version` of account id. */
static void sweep_past(PGconn *pg, redisContext *rc, long gen, const char *id, int version)
{
    char ver[16], tkey[64], cur[64] = "";
    unsigned long long tx = 0, txc = 0;
    long long pos = 0, posc = 0;
    int past = 0;

    snprintf(ver, sizeof ver, "%d", version);
    snprintf(tkey, sizeof tkey, "rm:%ld:tail", gen);
    tx = (unsigned long long)tw_scalar(pg, "SELECT tx_id::text::bigint FROM events WHERE stream_id = $1::uuid "
                                           "AND stream_version = $2::bigint", id, ver);
    pos = tw_scalar(pg, "SELECT position FROM events WHERE stream_id = $1::uuid AND stream_version = $2::bigint",
                    id, ver);
    for (int64_t deadline = tnow_ms() + 10000; tnow_ms() < deadline && !past; usleep(20000)) {
        redisReply *r = redisCommand(rc, "GET %s", tkey);
        if (r != NULL && r->type == REDIS_REPLY_STRING)
            snprintf(cur, sizeof cur, "%s", r->str);
        freeReplyObject(r);
        past = sscanf(cur, "%llu:%lld", &txc, &posc) == 2 && (txc > tx || (txc == tx && posc >= pos));
    }
    if (!past)
        tfail("the sweep cursor (%s) has not passed version %d of %s (%llu:%lld)", cur, version, id, tx, pos);
}

/* The projector applies a's new version in round 1 of a batch and fails on Postgres in round 2
 * (b's gap repair): a's version must still be announced. A deterministic schedule:
 *  1. events locked by the test (T1): the partition thread of a's and b's partition blocks on a
 *     stray message's check against the store, so a's and b's messages, published meanwhile,
 *     make up its next batch (a's with a gap: a+1 is only in the store);
 *  2. the lock handed to T2 (queued behind the stray's check): round 1 reads a and b from Redis
 *     and blocks in a's gap repair; meanwhile b's version in Redis moves (another writer: here
 *     back one version, as a restored Redis would), so round 1's compare-and-set writes a and
 *     refuses b;
 *  3. the lock handed to T3 (queued behind round 1's read): round 2 re-reads b, needs its gap
 *     from Postgres and blocks; its backend is terminated (Postgres fails) while T3 keeps every
 *     later read waiting.
 * The sweep is held below the test's events (an open transaction: the horizon). */
static void test_pg_failure_mid_batch_still_notifies(void **state)
{
    char ids[EVENT_PARTITIONS + 1][UUID_STR_SIZE], c[UUID_STR_SIZE], ev[UUID_STR_SIZE], path[160], key[128],
        skey[128], want[96], a[UUID_STR_SIZE] = "", b[UUID_STR_SIZE] = "", *doc0;
    long gen, log_from = th_log_size("projector");
    int64_t seen, t0;
    redisContext *rc = tredis_open();
    PGconn *pg = tw_pg(), *t1, *t2, *t3;
    redisReply *r;
    unsigned part = 0;
    void *horizon;
    int waiter;

    (void)state;
    /* two accounts of one partition (pigeonhole: at most EVENT_PARTITIONS + 1 opened) */
    for (int i = 0; i <= EVENT_PARTITIONS && b[0] == '\0'; i++) {
        char name[32];
        snprintf(name, sizeof name, "mid-batch %d", i);
        tw_open(ids[i], "notify", name, "EUR", 0);
        for (int k = 0; k < i && b[0] == '\0'; k++)
            if (event_partition(ids[k], EVENT_PARTITIONS) == event_partition(ids[i], EVENT_PARTITIONS)) {
                memcpy(a, ids[k], UUID_STR_SIZE);
                memcpy(b, ids[i], UUID_STR_SIZE);
                part = event_partition(a, EVENT_PARTITIONS);
            }
    }
    assert_true(b[0] != '\0');
    do
        uuid_generate(c); /* the stray's account: never opened */
    while (event_partition(c, EVENT_PARTITIONS) != part);
    /* b at 2 (its document kept), then 3; a at 1, cached by the read API */
    json_decref(tw_money(b, "deposits", 10, "b at 2"));
    snprintf(path, sizeof path, "/accounts/%s?min_version=2&wait_ms=10000", b);
    json_decref(tr_get_ok(NULL, path));
    gen = trb_get(rc, "rm:current");
    snprintf(key, sizeof key, "rm:%ld:a:{%s}", gen, b);
    snprintf(skey, sizeof skey, "rm:%ld:s:{%s}", gen, b);
    r = redisCommand(rc, "HGET %s doc", key);
    assert_true(r != NULL && r->type == REDIS_REPLY_STRING);
    doc0 = strdup(r->str);
    freeReplyObject(r);
    json_decref(tw_money(b, "deposits", 20, "b at 3"));
    snprintf(path, sizeof path, "/accounts/%s?min_version=3&wait_ms=10000", b);
    json_decref(tr_get_ok(NULL, path));
    snprintf(path, sizeof path, "/accounts/%s?min_version=1&wait_ms=10000", a);
    json_decref(tr_get_ok(NULL, path));
    assert_int_equal(served_within(a, 1, 1000), 1); /* cached at 1 */
    /* the sweep past b's 3 (it would apply it again after the move below), then held there */
    sweep_past(pg, rc, gen, b, 3);
    horizon = th_hold_horizon();

    /* 1. the partition thread held on a stray; a's and b's events behind it */
    t1 = tw_pg();
    tw_exec(t1, "BEGIN");
    tw_exec(t1, "LOCK TABLE events IN ACCESS EXCLUSIVE MODE");
    uuid_generate(ev);
    th_event(NULL, 0, ev, c, 1, "MoneyTeleported", "{\"amount\":5}");
    (void)lock_waiter(pg, "%WHERE stream_id = $1::uuid AND stream_version BETWEEN%", 0);
    uuid_generate(ev);
    th_insert_event(t1, ev, a, 2, "MoneyDeposited", "{\"amount\":7,\"description\":\"a in the store only\"}", NULL);
    uuid_generate(ev);
    th_event(t1, 1, ev, a, 3, "MoneyDeposited", "{\"amount\":8,\"description\":\"a published\"}");
    uuid_generate(ev);
    th_event(t1, 1, ev, b, 4, "MoneyDeposited", "{\"amount\":9,\"description\":\"b published\"}");
    usleep(300000); /* delivered to the projector's subscription */

    /* 2. round 1 waits in a's gap repair; b moves under it */
    t2 = lock_events_async();
    lock_queued(pg, t2);
    tw_exec(t1, "COMMIT");
    PQfinish(t1);
    lock_granted(t2);
    (void)lock_waiter(pg, "%JOIN unnest(%", PQbackendPID(t2));
    r = redisCommand(rc, "EVAL %s 2 %s %s 2 %s",
                     "redis.call('HSET', KEYS[1], 'v', ARGV[1], 'doc', ARGV[2]) redis.call('RPOP', KEYS[2]) return 1",
                     key, skey, doc0);
    assert_true(r != NULL && r->type == REDIS_REPLY_INTEGER);
    freeReplyObject(r);

    /* 3. round 1 writes a and not b; round 2 waits in b's gap repair and loses Postgres */
    t3 = lock_events_async();
    lock_queued(pg, t3);
    tw_exec(t2, "COMMIT");
    PQfinish(t2);
    lock_granted(t3);
    snprintf(key, sizeof key, "rm:%ld:a:{%s}", gen, a);
    for (t0 = tnow_ms(); tnow_ms() - t0 < 5000 && trb_hget(rc, key, "v") < 3; usleep(2000))
        ;
    assert_int_equal(trb_hget(rc, key, "v"), 3);
    t0 = tnow_ms(); /* Redis holds a's 3 */
    waiter = lock_waiter(pg, "%JOIN unnest(%", PQbackendPID(t3));
    snprintf(path, sizeof path, "%d", waiter);
    assert_int_equal(tw_scalar(pg, "SELECT pg_terminate_backend($1::int)::int", path, NULL), 1);
    seen = served_within(a, 3, 3000);
    fprintf(stderr, "a's version 3 written in round 1 of a batch whose round 2 lost Postgres: the read API "
            "served version %lld %lld ms after Redis held 3 (a 60 s cache)\n", (long long)seen, (long long)(tnow_ms() - t0));
    assert_int_equal(seen, 3);
    assert_true(tnow_ms() - t0 <= 1000);

    /* Postgres back: b catches up, and everything is exact */
    tw_exec(t3, "COMMIT");
    PQfinish(t3);
    snprintf(path, sizeof path, "/accounts/%s?min_version=4&wait_ms=10000", b);
    json_decref(tr_get_ok(NULL, path));
    assert_int_equal(served_within(b, 4, 1000), 4);
    th_release_horizon(horizon);
    snprintf(want, sizeof want, "partition %u: batch of 2 not applied (attempt 1): read 1 gaps", part);
    assert_true(th_log_count("projector", log_from, want) == 1);
    tcheck_expect_exact("after a batch that lost Postgres in its second round", 10000);
    free(doc0);
    PQfinish(pg);
    redisFree(rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_notification_clears_the_cache),
        cmocka_unit_test(test_pg_failure_mid_batch_still_notifies),
    };
    /* inherited by the services: only notifications keep the cache current */
    setenv("READ_CACHE_TTL_MS", "60000", 1);
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
