/* Issue 18: a stuck account says so, and self-heal cleans up after itself. A poison event in an
 * account's history: the read shows "stalled" (document and header), a min_version wait answers
 * 409 account_stalled at once, `rebuild --verify` exits non-zero. A self-healing rebuild after
 * DEL rm:current leaves no key of the unreachable generation, and status lists what is there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "account.h"
#include "support.h"
#include "tholes.h"
#include "thttp.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"
#include "uuid.h"

/* Inserts an event row directly, as a buggy or newer writer would have; the projector's
 * catch-up sweep reads it from the events table. */
static void insert_event(PGconn *pg, const char *event_id, const char *stream, int version,
                         const char *type, const char *data)
{
    char ver[16];
    const char *p[5] = {event_id, stream, ver, type, data};
    PGresult *res;

    snprintf(ver, sizeof ver, "%d", version);
    res = PQexecParams(pg,
                       "INSERT INTO events (event_id, stream_id, stream_version, type, schema, data) "
                       "VALUES ($1, $2, $3, $4, 1, $5::jsonb)",
                       5, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("insert: %s", PQerrorMessage(pg));
    PQclear(res);
}

/* An account with 1000 deposited (its version returned), projected, then a poison event (an
 * unknown type) and a deposit of 7 behind it written straight into the store. */
static int64_t poisoned_account(PGconn *pg, const char *name, char victim[UUID_STR_SIZE],
                                char poison_id[UUID_STR_SIZE], char later_id[UUID_STR_SIZE])
{
    char path[256];
    json_t *doc;
    int64_t v;

    tw_open(victim, "stall-owner", name, "EUR", 0);
    doc = tw_money(victim, "deposits", 1000, "before");
    v = tw_int(doc, "version");
    json_decref(doc);
    /* the writer publishes after its COMMIT: the projector applies the deposit a moment later,
     * and until it has, the read API answers 404 (or an older version). Read our own write. */
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=10000", victim, (long long)v);
    json_decref(tr_get_ok(NULL, path));
    uuid_generate(poison_id);
    uuid_generate(later_id);
    insert_event(pg, poison_id, victim, (int)v + 1, "MoneyTeleported", "{\"amount\":5}");
    insert_event(pg, later_id, victim, (int)v + 2, "MoneyDeposited", "{\"amount\":7,\"description\":\"behind\"}");
    return v;
}

static void test_stalled_account_says_so(void **state)
{
    char victim[UUID_STR_SIZE], poison_id[UUID_STR_SIZE], later_id[UUID_STR_SIZE], path[256],
        hdr[64], out[16384];
    PGconn *pg = tw_pg();
    struct thttp_resp r;
    json_t *doc = NULL, *stalled;
    int64_t v, t0, took;
    int rc;

    (void)state;
    v = poisoned_account(pg, "victim", victim, poison_id, later_id);

    /* the document says it is stalled, and why, within a few sweeps */
    snprintf(path, sizeof path, "/accounts/%s", victim);
    t0 = tnow_ms();
    for (;;) {
        assert_int_equal(thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 10000), 0);
        assert_int_equal(r.status, 200);
        doc = thttp_json(&r);
        if (json_object_get(doc, "stalled") != NULL)
            break;
        json_decref(doc);
        thttp_resp_release(&r);
        if (tnow_ms() - t0 > 15000)
            tfail("the poisoned account was never served as stalled");
        usleep(100000);
    }
    fprintf(stderr, "stalled shown after %lld ms: %s\n", (long long)(tnow_ms() - t0), r.body);
    assert_non_null(thttp_header(&r, "Account-Stalled", hdr, sizeof hdr));
    assert_string_equal(hdr, poison_id);
    thttp_resp_release(&r);
    stalled = json_object_get(doc, "stalled");
    assert_string_equal(tw_str(stalled, "event_id"), poison_id);
    assert_non_null(tw_str(stalled, "reason"));
    assert_true(strlen(tw_str(stalled, "reason")) > 0);
    assert_non_null(tw_str(stalled, "since"));
    assert_int_equal(tw_int(doc, "version"), v);
    assert_int_equal(tw_int(doc, "balance"), 1000);
    json_decref(doc);

    /* a min_version wait answers at once with account_stalled, no Retry-After */
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=8000", victim, (long long)(v + 2));
    t0 = tnow_ms();
    assert_int_equal(thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 10000), 0);
    took = tnow_ms() - t0;
    fprintf(stderr, "min_version on a stalled account answered %d in %lld ms: %s\n", r.status, (long long)took,
            r.body);
    assert_int_equal(r.status, 409);
    assert_null(thttp_header(&r, "Retry-After", hdr, sizeof hdr));
    doc = thttp_json(&r);
    assert_string_equal(tw_str(doc, "error"), "account_stalled");
    assert_int_equal(tw_int(doc, "projected_version"), v);
    assert_string_equal(tw_str(json_object_get(doc, "stalled"), "event_id"), poison_id);
    json_decref(doc);
    thttp_resp_release(&r);
    assert_true(took < 2000); /* the wait was 8 s: "at once" on a loaded machine */
    /* the statement says so too */
    snprintf(path, sizeof path, "/accounts/%s/statement", victim);
    doc = tr_get_ok(NULL, path);
    assert_string_equal(tw_str(json_object_get(doc, "stalled"), "event_id"), poison_id);
    json_decref(doc);

    /* a verify over a history that does not fold is not a clean verify */
    rc = trun_capture("projector", "rebuild --verify", out, sizeof out);
    fprintf(stderr, "rebuild --verify exited %d:\n%s\n", rc, out);
    assert_int_equal(rc, 3);
    assert_non_null(strstr(out, "could not be folded"));

    /* put the history right so the rest of the suite sees a clean store */
    th_fix_poison(pg, poison_id);
    rc = trun_capture("projector", "replay-parked", out, sizeof out);
    fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=5000", victim, (long long)(v + 2));
    doc = tr_get_ok(NULL, path);
    assert_null(json_object_get(doc, "stalled"));
    assert_int_equal(tw_int(doc, "balance"), 1012);
    json_decref(doc);
    PQfinish(pg);
}

static long current_gen(redisContext *rc)
{
    redisReply *r = redisCommand(rc, "GET rm:current");
    long g = r != NULL && r->type == REDIS_REPLY_STRING ? atol(r->str) : 0;
    freeReplyObject(r);
    return g;
}

static void test_self_heal_drops_the_unreachable_generation(void **state)
{
    redisContext *rc = tredis_open();
    char id[UUID_STR_SIZE], pattern[32], path[128], out[16384];
    json_t *doc;
    long old, now = 0, left = -1;
    int64_t t0;

    (void)state;
    tw_open(id, "heal-owner", "h", "EUR", 0);
    doc = tw_money(id, "deposits", 42, "x");
    json_decref(doc);
    json_decref(tr_get_ok(NULL, "/readyz"));
    old = current_gen(rc);
    assert_true(old > 0);
    snprintf(pattern, sizeof pattern, "rm:%ld:*", old);
    fprintf(stderr, "generation %ld holds %ld keys before DEL rm:current\n", old, tredis_count_keys(rc, pattern));
    freeReplyObject(redisCommand(rc, "DEL rm:current"));
    t0 = tnow_ms();
    /* healed: a new generation is current, and the old one is gone to the last key */
    while (tnow_ms() - t0 < 60000) {
        now = current_gen(rc);
        if (now > 0 && now != old && (left = tredis_count_keys(rc, pattern)) == 0)
            break;
        usleep(200000);
    }
    fprintf(stderr, "healed to generation %ld in %lld ms; %ld keys of generation %ld left\n", now,
            (long long)(tnow_ms() - t0), left, old);
    assert_true(now > 0 && now != old);
    assert_int_equal(left, 0);
    /* status lists every generation in Redis: only the new one */
    assert_int_equal(trun_capture("projector", "status", out, sizeof out), 0);
    fprintf(stderr, "%s", out);
    assert_non_null(strstr(out, "in redis:          1 generation\n"));
    assert_null(strstr(out, "unreachable"));
    snprintf(path, sizeof path, "/accounts/%s?min_version=2&wait_ms=5000", id);
    doc = tr_get_ok(NULL, path);
    assert_int_equal(tw_int(doc, "balance"), 42);
    json_decref(doc);

    /* an orphan that a self-heal did not see (keys of a generation nothing names) is listed by
     * status and removed by drop-generation */
    freeReplyObject(redisCommand(rc, "HSET rm:%ld:a:{x} v 1 doc {}", now + 100));
    assert_int_equal(trun_capture("projector", "status", out, sizeof out), 0);
    assert_non_null(strstr(out, "unreachable"));
    assert_int_equal(trun_capture("projector", "drop-generation", out, sizeof out), 0);
    fprintf(stderr, "%s", out);
    assert_non_null(strstr(out, "dropped 1 unreachable generation"));
    snprintf(pattern, sizeof pattern, "rm:%ld:*", now + 100);
    assert_int_equal(tredis_count_keys(rc, pattern), 0);
    redisFree(rc);
}

/* Waits until the read API serves account id as stalled behind event_id. */
static void wait_stalled(const char *id, const char *event_id)
{
    char path[128];
    int64_t t0 = tnow_ms();

    snprintf(path, sizeof path, "/accounts/%s", id);
    for (;;) {
        json_t *doc = tr_get_ok(NULL, path);
        const char *ev = tw_str(json_object_get(doc, "stalled"), "event_id");
        int done = ev != NULL && strcmp(ev, event_id) == 0;
        json_decref(doc);
        if (done)
            return;
        if (tnow_ms() - t0 > 15000)
            tfail("account %s was never served as stalled behind %s", id, event_id);
        usleep(100000);
    }
}

/* The statement line of version ver and the pair invariant: hash v == LLEN of the statement. */
static json_t *statement_line(redisContext *rc, const char *id, long ver)
{
    redisReply *g = redisCommand(rc, "GET rm:current"), *v, *len, *line;
    long gen = g != NULL && g->type == REDIS_REPLY_STRING ? atol(g->str) : 0;
    json_t *doc;

    freeReplyObject(g);
    v = redisCommand(rc, "HGET rm:%ld:a:{%s} v", gen, id);
    len = redisCommand(rc, "LLEN rm:%ld:s:{%s}", gen, id);
    line = redisCommand(rc, "LINDEX rm:%ld:s:{%s} %ld", gen, id, ver - 1);
    assert_true(v != NULL && v->type == REDIS_REPLY_STRING && len != NULL && len->type == REDIS_REPLY_INTEGER);
    fprintf(stderr, "generation %ld: v=%s LLEN=%lld\n", gen, v->str, (long long)len->integer);
    assert_int_equal(atol(v->str), len->integer);
    assert_true(line != NULL && line->type == REDIS_REPLY_STRING);
    {
        char *js = statement_entry_render(line->str, line->len, ver); /* stored compact */
        assert_non_null(js);
        doc = json_loads(js, 0, NULL);
        free(js);
    }
    assert_non_null(doc);
    freeReplyObject(v);
    freeReplyObject(len);
    freeReplyObject(line);
    return doc;
}

/* Issue 18: discard-parked gives up on a poison event, audited: discarded_events says who,
 * when and why; the event folds as a no-op (version moves past it, balance untouched, the
 * statement line says EventDiscarded) in the catch-up, the sweep after it, a verify (no
 * difference, nothing unfolded) and a full rebuild; the account resumes. */
static void test_discard_parked_resumes_the_account(void **state)
{
    static const char reason[] = "teleport is not money";
    char victim[UUID_STR_SIZE], poison_id[UUID_STR_SIZE], later_id[UUID_STR_SIZE], path[256], args[256],
        out[16384];
    PGconn *pg = tw_pg();
    redisContext *rc = tredis_open();
    PGresult *res;
    const char *p[1];
    json_t *doc, *line;
    int64_t v;

    (void)state;
    v = poisoned_account(pg, "discarded", victim, poison_id, later_id);
    wait_stalled(victim, poison_id);

    /* refused or wrong: usage 2, not parked 5 */
    assert_int_equal(trun_capture("projector", "discard-parked", out, sizeof out), 2);
    snprintf(args, sizeof args, "discard-parked %s", poison_id);
    assert_int_equal(trun_capture("projector", args, out, sizeof out), 2);
    assert_non_null(strstr(out, "--reason is required"));
    snprintf(args, sizeof args, "discard-parked %s --reason ''", poison_id);
    assert_int_equal(trun_capture("projector", args, out, sizeof out), 2);
    snprintf(args, sizeof args, "discard-parked %s --reason 'x'", later_id);
    assert_int_equal(trun_capture("projector", args, out, sizeof out), 5);

    snprintf(args, sizeof args, "discard-parked --reason '%s' %s", reason, poison_id);
    assert_int_equal(trun_capture("projector", args, out, sizeof out), 0);
    fprintf(stderr, "discard-parked:\n%s", out);
    assert_non_null(strstr(out, "discarded by "));
    assert_non_null(strstr(out, "no longer stalled"));

    /* the audit record */
    p[0] = poison_id;
    res = PQexecParams(pg,
                       "SELECT stream_id::text, stream_version, reason, parked_reason, discarded_by, db_user, "
                       "discarded_at > now() - interval '1 minute' FROM discarded_events WHERE event_id = $1::uuid",
                       1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), victim);
    assert_int_equal(atol(PQgetvalue(res, 0, 1)), v + 1);
    assert_string_equal(PQgetvalue(res, 0, 2), reason);
    assert_non_null(strstr(PQgetvalue(res, 0, 3), "MoneyTeleported"));
    assert_non_null(strchr(PQgetvalue(res, 0, 4), '@'));
    assert_true(strlen(PQgetvalue(res, 0, 5)) > 0);
    assert_string_equal(PQgetvalue(res, 0, 6), "t");
    PQclear(res);

    /* the account resumed past it: balance untouched by the discarded event, later ones folded */
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=5000", victim, (long long)(v + 2));
    doc = tr_get_ok(NULL, path);
    assert_null(json_object_get(doc, "stalled"));
    assert_int_equal(tw_int(doc, "version"), v + 2);
    assert_int_equal(tw_int(doc, "balance"), 1007);
    json_decref(doc);
    line = statement_line(rc, victim, v + 1);
    assert_string_equal(tw_str(line, "type"), "EventDiscarded");
    assert_string_equal(tw_str(line, "event_id"), poison_id);
    assert_string_equal(tw_str(line, "description"), reason);
    assert_int_equal(tw_int(line, "amount"), 0);
    assert_int_equal(tw_int(line, "balance_after"), 1000);
    json_decref(line);
    /* the sweep goes on from there (rows written behind the writer's back, as above: the
     * writer's own account row does not know them) */
    uuid_generate(later_id);
    insert_event(pg, later_id, victim, (int)v + 3, "MoneyDeposited", "{\"amount\":3,\"description\":\"after\"}");
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=5000", victim, (long long)(v + 3));
    doc = tr_get_ok(NULL, path);
    assert_int_equal(tw_int(doc, "balance"), 1010);
    json_decref(doc);
    /* not parked any more: a second discard finds nothing */
    snprintf(args, sizeof args, "discard-parked %s --reason 'again'", poison_id);
    assert_int_equal(trun_capture("projector", args, out, sizeof out), 5);

    /* the rebuild folds the same no-op: a verify finds no difference and nothing unfolded, and
     * a switched rebuild serves the same line */
    assert_int_equal(trun_capture("projector", "rebuild --verify", out, sizeof out), 0);
    fprintf(stderr, "rebuild --verify:\n%s", out);
    assert_null(strstr(out, "could not be folded"));
    assert_int_equal(trun_capture("projector", "rebuild", out, sizeof out), 0);
    line = statement_line(rc, victim, v + 1);
    assert_string_equal(tw_str(line, "type"), "EventDiscarded");
    json_decref(line);
    snprintf(path, sizeof path, "/accounts/%s", victim);
    doc = tr_get_ok(NULL, path);
    assert_int_equal(tw_int(doc, "version"), v + 3);
    assert_int_equal(tw_int(doc, "balance"), 1010);
    assert_null(json_object_get(doc, "stalled"));
    json_decref(doc);
    redisFree(rc);
    PQfinish(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stalled_account_says_so),
        cmocka_unit_test(test_self_heal_drops_the_unreachable_generation),
        cmocka_unit_test(test_discard_parked_resumes_the_account),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
