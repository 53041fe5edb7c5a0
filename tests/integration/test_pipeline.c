/* End to end: writer -> Postgres -> outbox relay -> JetStream -> projector -> Redis -> read API. */
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

#include "bus.h"
#include "db.h"
#include "support.h"
#include "tcheck.h"
#include "tproj.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"

static char account_id[64];
static long long final_version;

/* Issue 2, check 3: 50 deposits and withdrawals, one rejected by the overdraft rule, then the
 * read API agrees with the events table entry for entry. */
static void test_commands_reach_read_model(void **state)
{
    char body[512], path[256];
    json_t *doc;
    long long balance = 0, version, expected_events;
    int rejected = 0;
    PGconn *pg;
    PGresult *res;

    (void)state;
    snprintf(body, sizeof body,
             "{\"owner\":\"pipeline-%d\",\"name\":\"main\",\"currency\":\"EUR\",\"overdraft_limit\":500}",
             (int)getpid());
    doc = tw_post(NULL, "/accounts", body, NULL, 201);
    snprintf(account_id, sizeof account_id, "%s", json_string_value(json_object_get(doc, "account_id")));
    version = json_integer_value(json_object_get(doc, "version"));
    assert_int_equal(version, 1);
    assert_true(json_integer_value(json_object_get(doc, "position")) > 0);
    json_decref(doc);

    for (int i = 0; i < 50; i++) {
        int deposit = i % 3 != 2;
        long long amount = deposit ? 1000 + i : 700 + i;
        if (i == 30) {
            /* more than balance + overdraft: rejected, nothing written */
            snprintf(path, sizeof path, "/accounts/%s/withdrawals", account_id);
            snprintf(body, sizeof body, "{\"amount\":%lld,\"description\":\"too much\"}",
                     balance + 501);
            doc = tw_post(NULL, path, body, NULL, 422);
            assert_string_equal(json_string_value(json_object_get(doc, "error")), "insufficient_funds");
            json_decref(doc);
            rejected++;
            continue;
        }
        snprintf(path, sizeof path, "/accounts/%s/%s", account_id, deposit ? "deposits" : "withdrawals");
        snprintf(body, sizeof body, "{\"amount\":%lld,\"description\":\"op %d\"}", amount, i);
        doc = tw_post(NULL, path, body, NULL, 201);
        balance += deposit ? amount : -amount;
        version++;
        assert_int_equal(json_integer_value(json_object_get(doc, "version")), version);
        assert_int_equal(json_integer_value(json_object_get(doc, "balance")), balance);
        assert_string_equal(json_string_value(json_object_get(doc, "account_id")), account_id);
        json_decref(doc);
    }
    assert_int_equal(rejected, 1);
    final_version = version;
    expected_events = version;

    /* the events table holds exactly the accepted commands */
    pg = PQconnectdb(tenv("DATABASE_URL"));
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    {
        const char *params[1] = {account_id};
        res = PQexecParams(pg, "SELECT count(*), max(stream_version) FROM events WHERE stream_id = $1",
                           1, NULL, params, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
        assert_int_equal(atoll(PQgetvalue(res, 0, 0)), expected_events);
        assert_int_equal(atoll(PQgetvalue(res, 0, 1)), expected_events);
        PQclear(res);
    }

    /* read-your-writes: bounded wait for the last version */
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=10000", account_id, version);
    doc = tr_get_ok(NULL, path);
    assert_int_equal(json_integer_value(json_object_get(doc, "version")), version);
    assert_int_equal(json_integer_value(json_object_get(doc, "balance")), balance);
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "open");
    assert_int_equal(json_integer_value(json_object_get(doc, "overdraft_limit")), 500);
    json_decref(doc);

    /* the statement, page by page, equals the events table entry for entry */
    {
        const char *params[1] = {account_id};
        long long before = 0, seen = 0, running = 0;
        res = PQexecParams(pg,
                           "SELECT stream_version, event_id::text, type, coalesce((data->>'amount')::bigint, 0) "
                           "FROM events WHERE stream_id = $1 ORDER BY stream_version DESC",
                           1, NULL, params, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
        for (;;) {
            json_t *entries, *e;
            size_t idx;
            if (before == 0)
                snprintf(path, sizeof path, "/accounts/%s/statement?limit=7", account_id);
            else
                snprintf(path, sizeof path, "/accounts/%s/statement?limit=7&before=%lld", account_id, before);
            doc = tr_get_ok(NULL, path);
            assert_int_equal(json_integer_value(json_object_get(doc, "balance")), balance);
            entries = json_object_get(doc, "entries");
            json_array_foreach(entries, idx, e) {
                int row = (int)seen;
                const char *type = PQgetvalue(res, row, 2);
                long long amount = atoll(PQgetvalue(res, row, 3));
                long long signed_amount = strcmp(type, "MoneyWithdrawn") == 0 ? -amount : amount;
                assert_true(row < PQntuples(res));
                assert_int_equal(json_integer_value(json_object_get(e, "version")),
                                 atoll(PQgetvalue(res, row, 0)));
                assert_string_equal(json_string_value(json_object_get(e, "event_id")),
                                    PQgetvalue(res, row, 1));
                assert_string_equal(json_string_value(json_object_get(e, "type")), type);
                assert_int_equal(json_integer_value(json_object_get(e, "amount")), signed_amount);
                running += signed_amount;
                seen++;
            }
            if (json_is_null(json_object_get(doc, "next_before"))) {
                json_decref(doc);
                break;
            }
            before = json_integer_value(json_object_get(doc, "next_before"));
            json_decref(doc);
        }
        assert_int_equal(seen, expected_events);
        assert_int_equal(running, balance);
        PQclear(res);
    }
    PQfinish(pg);

    /* and every account equals the production fold of the event store */
    {
        struct tcheck_stats st;
        assert_int_equal(tcheck_wait_converged(10000, &st), 0);
        assert_true(st.events >= expected_events);
    }
}

/* Issue 2, check 4: an already-applied event published again with a fresh Nats-Msg-Id (so
 * JetStream cannot drop it) leaves the read model unchanged. */
static void test_republished_event_has_no_effect(void **state)
{
    PGconn *pg = PQconnectdb(tenv("DATABASE_URL"));
    PGresult *res;
    struct bus b = {0};
    struct err e;
    char path[256], subject[64], msgid[64];
    json_t *before_doc, *before_stmt, *after_doc, *after_stmt;
    uint64_t last_seq = 0;
    int part;

    (void)state;
    assert_true(account_id[0] != '\0');
    snprintf(path, sizeof path, "/accounts/%s", account_id);
    before_doc = tr_get_ok(NULL, path);
    snprintf(path, sizeof path, "/accounts/%s/statement?limit=500", account_id);
    before_stmt = tr_get_ok(NULL, path);
    assert_int_equal(json_integer_value(json_object_get(before_doc, "version")), final_version);

    {
        char last[32];
        const char *p2[2] = {account_id, last};
        snprintf(last, sizeof last, "%lld", final_version);
        res = PQexecParams(pg, "SELECT " DB_EVENT_COLUMNS " FROM events WHERE stream_id = $1 "
                               "AND stream_version IN (1, 2, $2::int) ORDER BY stream_version",
                           2, NULL, p2, NULL, NULL, 0);
    }
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), 3);
    assert_int_equal(bus_connect(&b, tenv("NATS_URL"), "test-republish", 5000, &e), ST_OK);
    part = (int)event_partition(account_id, EVENT_PARTITIONS);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < PQntuples(res); i++) {
            struct event ev;
            char *payload;
            natsMsg *msg = NULL;
            jsPubAck *ack = NULL;
            jsErrCode jerr = 0;

            assert_int_equal(db_event_from_row(&ev, res, i, 0, &e), ST_OK);
            payload = event_encode(&ev);
            event_subject(ev.stream_id, EVENT_PARTITIONS, subject, sizeof subject);
            uuid_generate(msgid); /* a fresh id: JetStream's de-duplication does not apply */
            assert_int_equal(natsMsg_Create(&msg, subject, NULL, payload, (int)strlen(payload)), NATS_OK);
            assert_int_equal(natsMsgHeader_Set(msg, "Nats-Msg-Id", msgid), NATS_OK);
            assert_int_equal(js_PublishMsg(&ack, b.js, msg, NULL, &jerr), NATS_OK);
            assert_false(ack->Duplicate);
            last_seq = ack->Sequence;
            jsPubAck_Destroy(ack);
            natsMsg_Destroy(msg);
            free(payload);
        }
    }
    PQclear(res);
    PQfinish(pg);
    tproj_wait_seq(part, last_seq, 15000); /* the partition's owner has been past them all */
    bus_release(&b);

    snprintf(path, sizeof path, "/accounts/%s", account_id);
    after_doc = tr_get_ok(NULL, path);
    snprintf(path, sizeof path, "/accounts/%s/statement?limit=500", account_id);
    after_stmt = tr_get_ok(NULL, path);
    assert_true(json_equal(before_doc, after_doc));
    assert_true(json_equal(before_stmt, after_stmt));
    assert_int_equal(json_array_size(json_object_get(after_stmt, "entries")), final_version);
    json_decref(before_doc);
    json_decref(before_stmt);
    json_decref(after_doc);
    json_decref(after_stmt);
    assert_int_equal(tcheck_readmodels(NULL, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands_reach_read_model),
        cmocka_unit_test(test_republished_event_has_no_effect),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
