/* Issue 13, hole 7: gap repair is bounded. One account with 200,000 events rebuilt while it
 * receives deposits: the live worker's pass over the building generation finds the whole
 * history missing there and repairs it a page (RP_GAP_PAGE versions) at a time, so the
 * projector's memory and Redis's longest command stay bounded, and the model ends exact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"
#include "tcheck.h"
#include "treadapi.h"
#include "trebuild.h"
#include "tstack.h"
#include "twriter.h"

#define HISTORY 200000
#define RSS_GROWTH_MAX_MIB 150 /* the projector's resident memory above its level before */
#define SLOWLOG_MAX_MS 250     /* Redis's longest command meanwhile */

static void exec_ok(PGconn *pg, const char *sql, const char *id)
{
    const char *params[1] = {id};
    PGresult *res = PQexecParams(pg, sql, 1, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("%s: %s", sql, PQerrorMessage(pg));
    PQclear(res);
}

/* The longest command in Redis's slow log, in microseconds. */
static long long slowlog_max_us(redisContext *rc)
{
    redisReply *r = redisCommand(rc, "SLOWLOG GET 1000");
    long long max = 0;

    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_ARRAY && e->elements >= 4 && e->element[2]->type == REDIS_REPLY_INTEGER &&
            e->element[2]->integer > max)
            max = e->element[2]->integer;
    }
    freeReplyObject(r);
    return max;
}

static void test_big_account_rebuilt_under_deposits(void **state)
{
    static const char *const args[] = {"rebuild", NULL};
    struct tstack_svcs *s = *state;
    PGconn *pg = tw_pg();
    redisContext *rc = tredis_open();
    char id[UUID_STR_SIZE], path[192];
    long rss0, rss, rss_max = 0, deposits = 0;
    long long slow_us;
    int64_t v = 0, t0;
    json_t *doc;
    pid_t pid;
    int ec;

    (void)state;
    tw_open(id, "paging", "big", "EUR", 0);
    /* its history written straight into the store (and the writer's row told), then caught up
     * by the sweep in its own bounded steps */
    exec_ok(pg,
            "INSERT INTO events (event_id, stream_id, stream_version, type, schema, data) "
            "SELECT gen_random_uuid(), $1::uuid, v, 'MoneyDeposited', 1, "
            "jsonb_build_object('amount', 1, 'description', 'bulk') FROM generate_series(2, 200001) v",
            id);
    exec_ok(pg, "UPDATE accounts SET version = 200001, balance = balance + 200000 WHERE account_id = $1::uuid", id);
    t0 = tnow_ms();
    snprintf(path, sizeof path, "/accounts/%s", id);
    while (tnow_ms() - t0 < 240000) {
        doc = tr_get_ok(NULL, path);
        v = tw_int(doc, "version");
        json_decref(doc);
        if (v >= HISTORY + 1)
            break;
        sleep(1);
    }
    fprintf(stderr, "%d events of one account projected by the sweep in %lld ms\n", HISTORY,
            (long long)(tnow_ms() - t0));
    assert_int_equal(v, HISTORY + 1);

    freeReplyObject(redisCommand(rc, "CONFIG SET slowlog-log-slower-than 10000"));
    freeReplyObject(redisCommand(rc, "SLOWLOG RESET"));
    rss0 = tproc_rss_kib(s->projector);
    pid = tsvc_start("projector", args, NULL);
    tstack_guard(pid);
    t0 = tnow_ms();
    /* deposits all along: each one finds the building generation without the history */
    while ((ec = trb_wait(pid, 0)) == -1 && tnow_ms() - t0 < 300000) {
        json_decref(tw_money(id, "deposits", 1, "during the rebuild"));
        deposits++;
        rss = tproc_rss_kib(s->projector);
        if (rss > rss_max)
            rss_max = rss;
        usleep(50000);
    }
    if (ec == -1)
        ec = trb_wait(pid, 60000);
    tstack_unguard(pid);
    slow_us = slowlog_max_us(rc);
    freeReplyObject(redisCommand(rc, "CONFIG SET slowlog-log-slower-than 10000"));
    fprintf(stderr,
            "rebuild exit %d after %lld ms, %ld deposits meanwhile; live projector RSS %ld KiB before, "
            "%ld KiB at most (+%ld MiB); Redis slowlog maximum %lld us\n",
            ec, (long long)(tnow_ms() - t0), deposits, rss0, rss_max, (rss_max - rss0) / 1024, slow_us);
    assert_int_equal(ec, 0);
    assert_true(deposits > 0);
    assert_true((rss_max - rss0) / 1024 < RSS_GROWTH_MAX_MIB);
    assert_true(slow_us < SLOWLOG_MAX_MS * 1000LL);
    snprintf(path, sizeof path, "/accounts/%s?min_version=%ld&wait_ms=10000", id, (long)(HISTORY + 1 + deposits));
    doc = tr_get_ok(NULL, path);
    assert_int_equal(tw_int(doc, "balance"), HISTORY + deposits);
    json_decref(doc);
    redisFree(rc);
    PQfinish(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_account_rebuilt_under_deposits),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
