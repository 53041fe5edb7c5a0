/* Issue 13, holes 4 and 8: a stray message (not the event store's event at that version) never
 * stalls an account, a stall does not outlive the generation it happened in, and lag counts
 * the events held back behind a stalled account. */
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
#include "tcheck.h"
#include "thttp.h"
#include "treadapi.h"
#include "tholes.h"
#include "trebuild.h"
#include "tstack.h"
#include "twriter.h"

/* Hole 4: one undecodable message claiming A's next version, which the events table does not
 * have, must not freeze A: the real next two deposits are visible within 3 s. */
static void test_stray_message_does_not_stall(void **state)
{
    char a[UUID_STR_SIZE], stray[UUID_STR_SIZE];
    redisContext *rc = tredis_open();
    int64_t v, ms;
    redisReply *r;

    (void)state;
    tw_open(a, "holes", "stray victim", "EUR", 0);
    v = th_deposit(a, "hole 4");
    assert_int_equal(th_read_min_version(a, v, &ms), 200);
    uuid_generate(stray);
    th_event(NULL, 0, stray, a, (int)v + 1, "MoneyTeleported", "{\"amount\":5}");
    sleep(1);
    th_deposit(a, "hole 4");
    v = th_deposit(a, "hole 4");
    assert_int_equal(th_read_min_version(a, v, &ms), 200);
    assert_true(ms <= 3500);
    r = redisCommand(rc, "HEXISTS rm:stalled %s", a);
    assert_true(r != NULL && r->type == REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    redisFree(rc);
}

/* Hole 4: a poison copy of A's next version, the real command, a rebuild, a deposit: A is
 * served at its version within 3 s (no stall carried into the new generation). */
static void test_poison_copy_then_rebuild(void **state)
{
    static const char *const args[] = {"rebuild", NULL};
    char a[UUID_STR_SIZE], copy[UUID_STR_SIZE];
    int64_t v, ms;
    char *out = NULL;
    int ec;

    (void)state;
    tw_open(a, "holes", "poison copy", "EUR", 0);
    v = th_deposit(a, "hole 4");
    assert_int_equal(th_read_min_version(a, v, &ms), 200);
    uuid_generate(copy);
    th_event(NULL, 0, copy, a, (int)v + 1, "MoneyDeposited", "{\"amount\":\"not a number\"}");
    sleep(1);
    th_deposit(a, "hole 4");
    ec = trb_run("projector", args, &out);
    fprintf(stderr, "projector rebuild (exit %d):\n%s", ec, out);
    free(out);
    assert_int_equal(ec, 0);
    v = th_deposit(a, "hole 4");
    assert_int_equal(th_read_min_version(a, v, &ms), 200);
    assert_true(ms <= 3500);
}

static long status_lag(void)
{
    char out[16384];
    const char *l;
    long lag = -1;

    if (trun_capture("projector", "status", out, sizeof out) != 0)
        tfail("projector status failed: %s", out);
    l = strstr(out, "lag:");
    if (l == NULL || sscanf(l, "lag: %ld events", &lag) != 1)
        tfail("no lag line in projector status: %s", out);
    fprintf(stderr, "%s", out);
    return lag;
}

/* Hole 8: a stalled account with 10 events behind its stall, while other accounts move the
 * checkpoint's highest position past them: lag must show at least those 10. */
static void test_lag_sees_stalled_events(void **state)
{
    char a[UUID_STR_SIZE], b[UUID_STR_SIZE], id[UUID_STR_SIZE];
    PGconn *pg = tw_pg();
    int64_t v, vb = 0, ms;
    long lag = -1;

    (void)state;
    tw_open(a, "holes", "lag victim", "EUR", 0);
    tw_open(b, "holes", "lag bystander", "EUR", 0);
    v = th_deposit(a, "hole 4");
    assert_int_equal(th_read_min_version(a, v, &ms), 200);
    /* a real poison event (in the store) stalls A; ten good events queue behind it */
    uuid_generate(id);
    th_event(pg, 1, id, a, (int)v + 1, "MoneyTeleported", "{\"amount\":5}");
    for (int i = 2; i <= 11; i++) {
        uuid_generate(id);
        th_event(pg, 1, id, a, (int)v + i, "MoneyDeposited", "{\"amount\":7,\"description\":\"behind\"}");
    }
    for (int i = 0; i < 3; i++)
        vb = th_deposit(b, "hole 4");
    assert_int_equal(th_read_min_version(b, vb, &ms), 200);
    for (int64_t deadline = tnow_ms() + 5000; tnow_ms() < deadline; usleep(500000)) {
        lag = status_lag();
        if (lag >= 10)
            break;
    }
    fprintf(stderr, "lag with 10 events behind a stalled account: %ld\n", lag);
    assert_true(lag >= 10);
    {
        json_t *doc = tr_get_ok(NULL, "/projections");
        long lag_api = (long)json_integer_value(json_object_get(doc, "lag_events"));
        fprintf(stderr, "GET /projections lag_events: %ld\n", lag_api);
        assert_true(lag_api >= 10);
        json_decref(doc);
    }
    PQfinish(pg);
}

/* Hole 4, second half: stalls belong to a generation. A broken pair met only in a generation
 * being built stalls the account there, and status reports it under that generation, while the
 * served generation goes on applying the account (before: one global rm:stalled froze it in
 * the served generation too, its deposits acked unapplied). */
static void test_building_only_stall(void **state)
{
    static const char *const args[] = {"rebuild", NULL};
    redisContext *rc = tredis_open();
    char id[UUID_STR_SIZE], other[UUID_STR_SIZE], out[16384], key[128], want[128];
    int64_t v, ms, deadline;
    long building;
    redisReply *r;
    void *hold;
    pid_t pid;

    (void)state;
    tw_open(id, "holes", "building-stall", "EUR", 0);
    v = th_deposit(id, "hole 4");
    assert_int_equal(th_read_min_version(id, v, &ms), 200);
    /* the rebuild reads everything below this transaction, then waits for it (an event is
     * committed behind it): it stays building */
    tw_open(other, "holes", "behind-the-horizon", "EUR", 0);
    hold = th_hold_horizon();
    (void)th_deposit(other, "hole 4");
    pid = tsvc_start("projector", args, NULL);
    tstack_guard(pid);
    deadline = tnow_ms() + 60000;
    while (tnow_ms() < deadline && trb_get(rc, "rm:building") == 0)
        usleep(5000);
    building = trb_get(rc, "rm:building");
    assert_true(building > 0);
    snprintf(key, sizeof key, "rm:%ld:a:{%s}", building, id);
    while (tnow_ms() < deadline && trb_hget(rc, key, "v") != v)
        usleep(5000);
    assert_int_equal(trb_hget(rc, key, "v"), v);
    /* the building generation's pair of this account broken, the served one's whole */
    freeReplyObject(redisCommand(rc, "DEL rm:%ld:s:{%s}", building, id));
    v = th_deposit(id, "hole 4");
    assert_int_equal(th_read_min_version(id, v, &ms), 200);
    assert_true(ms < 3000);
    r = redisCommand(rc, "HEXISTS rm:stalled %s", id);
    assert_true(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
    freeReplyObject(r);
    r = redisCommand(rc, "HEXISTS rm:%ld:stalled %s", building, id);
    assert_true(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    freeReplyObject(r);
    assert_int_equal(trun_capture("projector", "status", out, sizeof out), 0);
    fprintf(stderr, "status with the rebuild held:\n%s", out);
    snprintf(want, sizeof want, "stalled in building generation %ld: ", building);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(strstr(out, want), id));
    /* the abandoned generation takes its stalls with it */
    tsvc_stop(pid, SIGTERM, 10000);
    tstack_unguard(pid);
    assert_int_equal(trun_capture("projector", "rebuild --abort", out, sizeof out), 0);
    th_release_horizon(hold);
    snprintf(key, sizeof key, "rm:%ld:stalled", building);
    assert_int_equal(trb_get(rc, key), 0);
    r = redisCommand(rc, "EXISTS %s", key);
    assert_true(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
    freeReplyObject(r);
    redisFree(rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stray_message_does_not_stall),
        cmocka_unit_test(test_poison_copy_then_rebuild),
        cmocka_unit_test(test_lag_sees_stalled_events),
        cmocka_unit_test(test_building_only_stall),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
