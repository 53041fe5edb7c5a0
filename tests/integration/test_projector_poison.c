/* Issue 4: a poison event is parked with its reason and visible in status, the account waits
 * behind it while every other account is served, and after the fix replay-parked resumes it. */
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
#include "tcheck.h"
#include "tholes.h"
#include "thttp.h"
#include "tstack.h"
#include "twriter.h"

static int64_t projected_version(const char *id)
{
    struct thttp_resp r;
    char path[128];
    json_t *doc;
    int64_t v = -1;

    snprintf(path, sizeof path, "/accounts/%s", id);
    if (thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 5000) == 0 && r.status == 200) {
        doc = thttp_json(&r);
        v = tw_int(doc, "version");
        json_decref(doc);
    }
    thttp_resp_release(&r);
    return v;
}

static void test_poison_parked_and_replayed(void **state)
{
    char victim[UUID_STR_SIZE], other[UUID_STR_SIZE], poison_id[UUID_STR_SIZE], later_id[UUID_STR_SIZE];
    char out[16384], path[256];
    PGconn *pg = tw_pg();
    json_t *doc;
    int64_t v, ov = 0, deadline;
    int rc;

    (void)state;
    tw_open(victim, "poison", "victim", "EUR", 0);
    doc = tw_money(victim, "deposits", 1000, "before");
    v = tw_int(doc, "version");
    json_decref(doc);
    tw_open(other, "poison", "bystander", "EUR", 0);

    /* an event type this projector does not know, then a good event behind it */
    uuid_generate(poison_id);
    uuid_generate(later_id);
    /* inserted directly and published, as a buggy or newer writer would have */
    th_event(pg, 1, poison_id, victim, (int)v + 1, "MoneyTeleported", "{\"amount\":5}");
    th_event(pg, 1, later_id, victim, (int)v + 2, "MoneyDeposited", "{\"amount\":7,\"description\":\"behind\"}");

    /* parked and visible in status */
    deadline = tnow_ms() + 10000;
    do {
        rc = trun_capture("projector", "status", out, sizeof out);
        if (strstr(out, poison_id) != NULL)
            break;
        usleep(100000);
    } while (tnow_ms() < deadline);
    fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, poison_id));
    assert_non_null(strstr(out, "MoneyTeleported"));
    assert_non_null(strstr(out, "stalled accounts:  1"));
    assert_non_null(strstr(out, victim));

    /* every other account is served meanwhile */
    for (int i = 0; i < 20; i++) {
        doc = tw_money(other, "deposits", 10 + i, "unaffected");
        ov = tw_int(doc, "version");
        json_decref(doc);
    }
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=5000", other, (long long)ov);
    {
        struct thttp_resp r;
        assert_int_equal(thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 10000), 0);
        assert_int_equal(r.status, 200);
        thttp_resp_release(&r);
    }
    /* the victim waits behind the parked event: no later version is applied out of order */
    sleep(2);
    assert_int_equal(projected_version(victim), v);
    /* /projections shows it too */
    {
        struct thttp_resp r;
        assert_int_equal(thttp_request(&r, "GET", tenv("READAPI_URL"), "/projections", NULL, NULL, 5000), 0);
        assert_non_null(strstr(r.body, victim));
        thttp_resp_release(&r);
    }

    /* replay before the fix: still poison, still parked, non-zero exit */
    rc = trun_capture("projector", "replay-parked", out, sizeof out);
    assert_int_not_equal(rc, 0);
    assert_int_equal(projected_version(victim), v);

    /* the fix (here: the event's data corrected to a known type), then replay */
    th_fix_poison(pg, poison_id);
    rc = trun_capture("projector", "replay-parked", out, sizeof out);
    fprintf(stderr, "%s", out);
    assert_int_equal(rc, 0);
    assert_int_equal(projected_version(victim), v + 2);
    rc = trun_capture("projector", "status", out, sizeof out);
    assert_int_equal(rc, 0);
    assert_null(strstr(out, poison_id));
    assert_non_null(strstr(out, "stalled accounts:  0"));
    PQfinish(pg);
    assert_int_equal(tcheck_wait_converged(10000, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poison_parked_and_replayed),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
