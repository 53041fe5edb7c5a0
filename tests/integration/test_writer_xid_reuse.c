/* A lost COMMIT's outcome after a Postgres crash restart: the xid of a transaction whose WAL
 * was never flushed is handed out again, and pg_xact_status then reports the new owner's
 * "committed". A chaos run showed the writer taking that for its own batch and publishing
 * events the store never had. Here, on the real server: a transaction writes an event and
 * takes its xid, Postgres stops immediately before anything flushes that WAL, another
 * transaction takes the same xid after the restart and commits; outcome_resolve must answer
 * "not committed" for the lost one (its event is not in the store) and "committed" for the
 * new owner, and an xid not handed out yet is asked again until the bound, then unknown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "outcome.h"
#include "support.h"
#include "tstack.h"
#include "twriter.h"

/* Inserts a deposit event with a fresh event id (into id) for a fresh stream. */
static void insert_event(PGconn *pg, char id[UUID_STR_SIZE])
{
    char stream[UUID_STR_SIZE];
    const char *p[2] = {id, stream};
    PGresult *res;

    uuid_generate(id);
    uuid_generate(stream);
    res = PQexecParams(pg,
                       "INSERT INTO events (event_id, stream_id, stream_version, type, schema, data) "
                       "VALUES ($1, $2, 1, 'MoneyDeposited', 1, '{\"amount\":1,\"description\":\"xid\"}')",
                       2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("insert event: %s", PQerrorMessage(pg));
    PQclear(res);
}

static void xact_id(PGconn *pg, char *out, size_t len)
{
    PGresult *res = PQexec(pg, "SELECT pg_current_xact_id()::text");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("pg_current_xact_id: %s", PQerrorMessage(pg));
    snprintf(out, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* One attempt: true when the lost transaction's xid was handed out again (its WAL reached
 * the disk before the stop otherwise, and the scenario is tried once more). */
static bool lost_xid_reused(void)
{
    char lost_id[UUID_STR_SIZE], new_id[UUID_STR_SIZE], lost_xid[32], ids[UUID_STR_SIZE + 4];
    const char *conninfo = tenv("DATABASE_URL");
    PGconn *a = tw_pg(), *b;
    PGresult *res;
    struct err e = {0};
    long long next;

    /* the lost transaction: an event written, its xid taken, no COMMIT; nothing else commits
     * (a commit would flush this WAL too), the WAL writer sleeps long */
    tw_exec(a, "BEGIN");
    insert_event(a, lost_id);
    xact_id(a, lost_xid, sizeof lost_xid);
    tstack_pg_stop_immediate();
    PQfinish(a);
    tstack_up();
    b = tw_pg();
    snprintf(ids, sizeof ids, "{%s}", lost_id);

    /* before the xid is handed out again it is beyond the server's next one: asked until the
     * bound, then unknown (never a guess either way) */
    next = tw_scalar(b, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint", NULL, NULL);
    if (next > strtoll(lost_xid, NULL, 10)) {
        fprintf(stderr, "xid %s reached the WAL before the stop (next %lld): again\n", lost_xid, next);
        PQfinish(b);
        return false;
    }
    if (next <= strtoll(lost_xid, NULL, 10)) {
        long long t0 = tnow_ms();
        assert_int_equal(outcome_resolve(conninfo, lost_xid, ids, 1, NULL, 400, &e), OUTCOME_UNKNOWN);
        assert_true(tnow_ms() - t0 >= 400);
        assert_non_null(strstr(e.msg, "not begun"));
        fprintf(stderr, "before reuse: %s\n", e.msg);
    }
    /* other transactions until one gets the lost xid; that one writes an event and commits */
    for (;;) {
        char x[32];
        tw_exec(b, "BEGIN");
        xact_id(b, x, sizeof x);
        if (strcmp(x, lost_xid) == 0) {
            insert_event(b, new_id);
            tw_exec(b, "COMMIT");
            break;
        }
        tw_exec(b, "COMMIT");
        assert_true(strtoll(x, NULL, 10) < strtoll(lost_xid, NULL, 10));
    }

    /* what fooled the writer: the xid reads committed, the lost event is not in the store */
    res = PQexecParams(b, "SELECT pg_xact_status($1::xid8)", 1, NULL, (const char *[]){lost_xid}, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "committed");
    PQclear(res);
    assert_int_equal(tw_scalar(b, "SELECT count(*) FROM events WHERE event_id = $1", lost_id, NULL), 0);

    assert_int_equal(outcome_resolve(conninfo, lost_xid, ids, 1, NULL, 2000, &e), OUTCOME_ABORTED);
    fprintf(stderr, "lost transaction after reuse: not committed (%s)\n", e.msg);
    {
        /* the xid's new owner is committed, its rows read back */
        PGresult *pos = NULL;
        snprintf(ids, sizeof ids, "{%s}", new_id);
        assert_int_equal(outcome_resolve(conninfo, lost_xid, ids, 1, &pos, 2000, &e), OUTCOME_COMMITTED);
        assert_non_null(pos);
        assert_int_equal(PQntuples(pos), 1);
        assert_string_equal(PQgetvalue(pos, 0, 0), new_id);
        PQclear(pos);
    }
    PQfinish(b);
    return true;
}

static void test_reused_xid_is_not_our_commit(void **state)
{
    PGconn *pg;
    bool shown = false;

    (void)state;
    pg = tw_pg();
    {
        struct err e = {0};
        if (db_migrate(pg, &e) != ST_OK)
            tfail("migrate: %s", e.msg);
    }
    treset_state(); /* no service runs here: nothing commits behind the test's back */
    tw_exec(pg, "ALTER SYSTEM SET wal_writer_delay = '10s'");
    tw_exec(pg, "SELECT pg_reload_conf()");
    PQfinish(pg);
    usleep(300000);
    for (int attempt = 1; attempt <= 5 && !shown; attempt++)
        shown = lost_xid_reused();
    assert_true(shown);
}

static int reset_wal_writer(void **state)
{
    PGconn *pg;
    (void)state;
    tstack_up();
    pg = tw_pg();
    tw_exec(pg, "ALTER SYSTEM RESET wal_writer_delay");
    tw_exec(pg, "SELECT pg_reload_conf()");
    PQfinish(pg);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reused_xid_is_not_our_commit, reset_wal_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
