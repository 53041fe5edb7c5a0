/* Issue 6: the read API's endpoints, parameters and errors; pagination over 1,000 entries;
 * read-your-writes 500 times; Redis stopped and restarted under a read load; the document cache
 * never serving an older version once the projector has applied a newer one.
 * The read API here runs with a 60 s cache lifetime, so only the projector's notifications can
 * keep its answers current: every test below checks them too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"
#include "tcheck.h"
#include "trebuild.h"
#include "thttp.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"

static char main_acct[UUID_STR_SIZE];

static void test_endpoints_and_errors(void **state)
{
    char path[256];
    json_t *doc;
    int64_t v;

    (void)state;
    tw_open(main_acct, "readapi-owner", "main", "EUR", 2500);
    doc = tw_money(main_acct, "deposits", 1200, "first");
    v = tw_int(doc, "version");
    json_decref(doc);
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=5000", main_acct, (long long)v);
    doc = tr_get_ok(NULL, path);
    assert_string_equal(tw_str(doc, "account_id"), main_acct);
    assert_string_equal(tw_str(doc, "owner"), "readapi-owner");
    assert_string_equal(tw_str(doc, "name"), "main");
    assert_string_equal(tw_str(doc, "currency"), "EUR");
    assert_int_equal(tw_int(doc, "balance"), 1200);
    assert_int_equal(tw_int(doc, "overdraft_limit"), 2500);
    assert_string_equal(tw_str(doc, "status"), "open");
    assert_int_equal(tw_int(doc, "version"), v);
    assert_non_null(tw_str(doc, "updated_at"));
    json_decref(doc);

    tr_expect_error("GET", NULL, "/accounts/6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab", 404, "account_not_found");
    tr_expect_error("GET", NULL, "/accounts/6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab/statement", 404,
                 "account_not_found");
    tr_expect_error("GET", NULL, "/accounts/not-a-uuid", 400, "invalid_field");
    tr_expect_error("GET", NULL, "/accounts/not-a-uuid/statement", 400, "invalid_field");
    tr_expect_error("GET", NULL, "/nowhere", 404, "not_found");
    snprintf(path, sizeof path, "/accounts/%s", main_acct);
    tr_expect_error("POST", NULL, path, 405, "method_not_allowed");
    tr_expect_error("DELETE", NULL, path, 405, "method_not_allowed");
    snprintf(path, sizeof path, "/accounts/%s/statement?limit=0", main_acct);
    tr_expect_error("GET", NULL, path, 400, "invalid_query");
    snprintf(path, sizeof path, "/accounts/%s/statement?limit=501", main_acct);
    tr_expect_error("GET", NULL, path, 400, "invalid_query");
    snprintf(path, sizeof path, "/accounts/%s/statement?before=x", main_acct);
    tr_expect_error("GET", NULL, path, 400, "invalid_query");
    snprintf(path, sizeof path, "/accounts/%s?min_version=-1", main_acct);
    tr_expect_error("GET", NULL, path, 400, "invalid_query");
    snprintf(path, sizeof path, "/accounts/%s?min_version=1&wait_ms=10001", main_acct);
    tr_expect_error("GET", NULL, path, 400, "invalid_query");

    /* not yet projected: 503 with the projected version and Retry-After, after about wait_ms */
    {
        char ra[32];
        int status = 0;
        int64_t t0 = tnow_ms(), took;
        snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=300", main_acct, (long long)(v + 5));
        doc = tr_get(NULL, path, &status, ra, sizeof ra);
        took = tnow_ms() - t0;
        assert_int_equal(status, 503);
        assert_string_equal(tw_str(doc, "error"), "not_yet_projected");
        assert_int_equal(tw_int(doc, "projected_version"), v);
        assert_true(ra[0] != '\0');
        assert_true(took >= 250 && took < 3000);
        json_decref(doc);
        snprintf(path, sizeof path, "/accounts/%s/statement?min_version=%lld&wait_ms=0", main_acct,
                 (long long)(v + 5));
        doc = tr_get(NULL, path, &status, ra, sizeof ra);
        assert_int_equal(status, 503);
        assert_string_equal(tw_str(doc, "error"), "not_yet_projected");
        json_decref(doc);
    }

    /* status endpoints */
    doc = tr_get_ok(NULL, "/healthz");
    json_decref(doc);
    doc = tr_get_ok(NULL, "/readyz");
    json_decref(doc);
    doc = tr_get_ok(NULL, "/projections");
    assert_int_equal(tw_int(doc, "current_generation"), 1);
    assert_true(tw_int(doc, "position") >= v);
    assert_true(json_is_object(json_object_get(doc, "stalled_accounts")));
    assert_non_null(json_object_get(doc, "lag_events"));
    assert_non_null(json_object_get(doc, "lag_seconds"));
    json_decref(doc);
    {
        struct thttp_resp r;
        assert_int_equal(thttp_request(&r, "GET", tenv("READAPI_URL"), "/metrics", NULL, NULL, 5000), 0);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "http_requests_total{service=\"readapi\",route=\"GET /accounts/{id}\",status=\"200\"}"));
        assert_non_null(strstr(r.body, "http_request_duration_seconds_bucket"));
        assert_non_null(strstr(r.body, "status=\"404\""));
        thttp_resp_release(&r);
    }
}

/* 1,000 entries paged through with odd page sizes: none missing, none repeated, newest first,
 * every field present; transfer and reversal entries name their counterparty / reversed event. */
static void test_pagination(void **state)
{
    char id[UUID_STR_SIZE], other[UUID_STR_SIZE], path[256], body[512];
    int64_t last = 0;
    static char seen[1100];
    json_t *doc;
    int64_t before = 0, count = 0, expect_next;
    const char *transfer_event = NULL;

    (void)state;
    tw_open(id, "pager", "main", "EUR", 0);
    tw_open(other, "pager", "other", "EUR", 0);
    for (int i = 0; i < 996; i++) {
        json_t *r = tw_money(id, "deposits", 1 + i, "page me");
        last = tw_int(r, "version");
        json_decref(r);
    }
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":7,\"description\":\"xfer\"}", id, other);
    doc = tw_post(NULL, "/transfers", body, NULL, 201);
    last++;
    {
        json_t *from = json_object_get(doc, "from");
        assert_int_equal(tw_int(from, "version"), last);
        transfer_event = strdup(tw_str(from, "event_id"));
    }
    json_decref(doc);
    snprintf(path, sizeof path, "/accounts/%s/reversals", id);
    snprintf(body, sizeof body, "{\"event_id\":\"%s\",\"reason\":\"oops\"}", transfer_event);
    doc = tw_post(NULL, path, body, NULL, 201);
    json_decref(doc);
    last++;
    doc = tw_money(id, "withdrawals", 5, "last");
    last = tw_int(doc, "version");
    json_decref(doc);
    assert_true(last >= 1000);

    expect_next = last;
    for (int page = 0;; page++) {
        json_t *entries, *e;
        size_t idx;
        int limit = page % 2 == 0 ? 37 : 500;
        if (before == 0)
            snprintf(path, sizeof path, "/accounts/%s/statement?limit=%d&min_version=%lld&wait_ms=10000",
                     id, limit, (long long)last);
        else
            snprintf(path, sizeof path, "/accounts/%s/statement?limit=%d&before=%lld", id, limit,
                     (long long)before);
        doc = tr_get_ok(NULL, path);
        entries = json_object_get(doc, "entries");
        assert_true(json_array_size(entries) <= (size_t)limit);
        json_array_foreach(entries, idx, e) {
            int64_t ver = tw_int(e, "version");
            assert_int_equal(ver, expect_next); /* newest first, contiguous */
            assert_true(ver >= 1 && ver <= last);
            assert_int_equal(seen[ver], 0);
            seen[ver] = 1;
            expect_next--;
            count++;
            assert_non_null(tw_str(e, "event_id"));
            assert_non_null(tw_str(e, "type"));
            assert_non_null(json_object_get(e, "amount"));
            assert_non_null(json_object_get(e, "balance_after"));
            assert_non_null(tw_str(e, "description"));
            assert_non_null(tw_str(e, "at"));
            if (strcmp(tw_str(e, "type"), "TransferSent") == 0) {
                assert_string_equal(tw_str(e, "counterparty"), other);
                assert_non_null(tw_str(e, "transfer_id"));
                assert_int_equal(tw_int(e, "amount"), -7);
            }
            if (strcmp(tw_str(e, "type"), "TransactionReversed") == 0) {
                assert_string_equal(tw_str(e, "reversed_event_id"), transfer_event);
                assert_int_equal(tw_int(e, "amount"), 7);
            }
        }
        if (json_is_null(json_object_get(doc, "next_before"))) {
            json_decref(doc);
            break;
        }
        before = tw_int(doc, "next_before");
        assert_int_equal(before, expect_next + 1);
        json_decref(doc);
    }
    assert_int_equal(count, last);
    assert_int_equal(expect_next, 0);
    free((void *)transfer_event);
}

/* 500 times: a command, then at once a read with min_version of the command's version: the
 * answer is that version's state, never an older one. */
static void test_read_your_writes(void **state)
{
    char id[UUID_STR_SIZE], path[256];
    int older = 0;

    (void)state;
    tw_open(id, "ryw", "main", "EUR", 100000);
    for (int i = 0; i < 500; i++) {
        json_t *w = tw_money(id, i % 4 == 3 ? "withdrawals" : "deposits", 10 + i, "ryw");
        int64_t v = tw_int(w, "version"), bal = tw_int(w, "balance");
        json_t *r;
        snprintf(path, sizeof path, i % 2 ? "/accounts/%s?min_version=%lld&wait_ms=5000"
                                          : "/accounts/%s/statement?limit=1&min_version=%lld&wait_ms=5000",
                 id, (long long)v);
        r = tr_get_ok(NULL, path);
        if (i % 2) {
            if (tw_int(r, "version") < v)
                older++;
            assert_int_equal(tw_int(r, "version"), v);
            assert_int_equal(tw_int(r, "balance"), bal);
        } else {
            json_t *first = json_array_get(json_object_get(r, "entries"), 0);
            assert_int_equal(tw_int(first, "version"), v);
            assert_int_equal(tw_int(first, "balance_after"), bal);
            assert_int_equal(tw_int(r, "balance"), bal);
        }
        json_decref(r);
        json_decref(w);
    }
    assert_int_equal(older, 0);
}

struct load {
    volatile int stop;
    long ok, unavailable, other, slow;
    int64_t max_ms;
};

static void *reader(void *arg)
{
    struct load *l = arg;
    char path[128];
    snprintf(path, sizeof path, "/accounts/%s", main_acct);
    for (int i = 0; i < 200000 && !l->stop; i++) {
        struct thttp_resp r;
        int64_t t0 = tnow_ms(), took;
        json_t *doc;
        int rc = thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 10000);
        took = tnow_ms() - t0;
        if (took > l->max_ms)
            l->max_ms = took;
        if (took > 3000)
            __atomic_add_fetch(&l->slow, 1, __ATOMIC_RELAXED);
        doc = rc == 0 ? thttp_json(&r) : NULL;
        if (rc == 0 && r.status == 200 && tw_int(doc, "balance") == 1200)
            __atomic_add_fetch(&l->ok, 1, __ATOMIC_RELAXED);
        else if (rc == 0 && r.status == 503 && strcmp(tw_str(doc, "error"), "read_model_unavailable") == 0)
            __atomic_add_fetch(&l->unavailable, 1, __ATOMIC_RELAXED);
        else if (__atomic_add_fetch(&l->other, 1, __ATOMIC_RELAXED) <= 5)
            fprintf(stderr, "unexpected answer: rc %d, status %d, body %.200s\n", rc,
                    rc == 0 ? r.status : 0, rc == 0 && r.body != NULL ? r.body : "");
        json_decref(doc);
        thttp_resp_release(&r);
        usleep(2000);
    }
    return NULL;
}

/* Redis stopped and restarted under a read load: 503 read_model_unavailable while it is down
 * (each answer bounded in time), correct answers after, and the read API never exits. */
static void test_redis_restart(void **state)
{
    struct tstack_svcs *svcs = *state;
    pthread_t th[4];
    struct load l;
    long ok_before, ok_after;
    int wst;

    memset(&l, 0, sizeof l);
    assert_true(main_acct[0] != '\0');
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, reader, &l);
    usleep(500000);
    ok_before = l.ok;
    tstack_kill("redis", SIGKILL, 5000);
    usleep(1500000);
    tstack_up();
    {
        int64_t deadline = tnow_ms() + 10000;
        long ok_at_restart = l.ok;
        while (l.ok < ok_at_restart + 50 && tnow_ms() < deadline)
            usleep(50000);
    }
    ok_after = l.ok;
    l.stop = 1;
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    fprintf(stderr, "reads: ok %ld (before kill %ld), unavailable %ld, other %ld, max latency %lld ms\n",
            l.ok, ok_before, l.unavailable, l.other, (long long)l.max_ms);
    assert_true(ok_before > 0);
    assert_true(l.unavailable > 0);   /* honest 503s while Redis was gone */
    assert_int_equal(l.other, 0);     /* never a wrong answer or another error */
    assert_int_equal(l.slow, 0);      /* bounded: no request hung */
    assert_true(ok_after > ok_before);
    assert_int_equal(waitpid(svcs->readapi, &wst, WNOHANG), 0); /* still running */
    /* the outage is counted in /metrics */
    assert_true(thttp_metric(NULL, "redis_errors_total{service=\"readapi\"}") > 0);
    assert_int_equal(tcheck_wait_converged(10000, NULL), 0);
}

/* The cache follows the projector: after each command a plain read (no min_version) shows the
 * new version well inside the cache lifetime, and never an older one after a newer. */
static void test_cache_follows_the_projector(void **state)
{
    char id[UUID_STR_SIZE], path[256];
    double hits0, hits1;
    int64_t worst = 0, seen = 0;

    (void)state;
    tw_open(id, "cache", "main", "EUR", 0);
    snprintf(path, sizeof path, "/accounts/%s?min_version=1", id);
    json_decref(tr_get_ok(NULL, path)); /* projected, and now cached */
    snprintf(path, sizeof path, "/accounts/%s", id);
    hits0 = thttp_metric(NULL, "readapi_cache_hits_total{service=\"readapi\"}");
    for (int i = 0; i < 20; i++) {
        json_t *r = tr_get_ok(NULL, path);
        json_decref(r);
    }
    usleep(300000); /* the listener publishes the counters every 100 ms */
    hits1 = thttp_metric(NULL, "readapi_cache_hits_total{service=\"readapi\"}");
    fprintf(stderr, "cache hits over 20 repeated reads: %.0f\n", hits1 - hits0);
    assert_true(hits1 - hits0 >= 15); /* the cache is really in the path */
    for (int i = 0; i < 200; i++) {
        json_t *w = tw_money(id, "deposits", 1 + i, "cache");
        int64_t v = tw_int(w, "version"), t0 = tnow_ms(), took;
        json_decref(w);
        for (;;) {
            json_t *r = tr_get_ok(NULL, path);
            int64_t got = tw_int(r, "version");
            json_decref(r);
            assert_true(got >= seen); /* never backwards */
            seen = got;
            if (got >= v)
                break;
            if (tnow_ms() - t0 > 5000)
                tfail("version %lld not visible after 5 s (cache lifetime is 60 s)", (long long)v);
            usleep(500);
        }
        took = tnow_ms() - t0;
        if (took > worst)
            worst = took;
    }
    fprintf(stderr, "200 commands: the plain read showed each within %lld ms at worst\n",
            (long long)worst);
}

/* A notification that never comes (a projector killed between its write and its PUBLISH, a
 * hand edit): a read API with a 300 ms cache lifetime shows what Redis holds within it. */
static void test_cache_lifetime_bounds_a_lost_notification(void **state)
{
    struct tstack_svcs *svcs = *state;
    char id[UUID_STR_SIZE], path[256], env_port[64], url[64], key[128];
    static char env_ttl[] = "READ_CACHE_TTL_MS=300";
    const char *extra[3] = {env_port, env_ttl, NULL};
    redisContext *rc = tredis_open();
    redisReply *rep;
    long gen = trb_get(rc, "rm:current");
    int port = atoi(tenv("READAPI_PORT")) + 5;
    char *orig;
    json_t *r;
    int64_t t0, took;
    pid_t pid;

    snprintf(env_port, sizeof env_port, "READAPI_PORT=%d", port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    pid = tsvc_start("readapi", NULL, extra);
    if (!twait_http_ok(url, "/readyz", 20000))
        tfail("second readapi not ready at %s", url);
    tw_open(id, "lost", "main", "EUR", 0);
    snprintf(path, sizeof path, "/accounts/%s?min_version=1", id);
    r = tr_get_ok(NULL, path); /* primary: waits until projected */
    json_decref(r);
    snprintf(path, sizeof path, "/accounts/%s", id);
    for (int i = 0; i < 3; i++) {
        struct thttp_resp hr;
        assert_int_equal(thttp_request(&hr, "GET", url, path, NULL, NULL, 5000), 0);
        assert_int_equal(hr.status, 200);
        thttp_resp_release(&hr);
    }
    /* change the document behind the cache's back: no notification */
    snprintf(key, sizeof key, "rm:%ld:a:{%s}", gen, id);
    rep = redisCommand(rc, "HGET %s doc", key);
    assert_true(rep != NULL && rep->type == REDIS_REPLY_STRING);
    orig = strdup(rep->str);
    freeReplyObject(rep);
    {
        json_t *doc = json_loads(orig, 0, NULL);
        char *edited;
        json_object_set_new(doc, "balance", json_integer(424242));
        edited = json_dumps(doc, JSON_COMPACT);
        rep = redisCommand(rc, "HSET %s doc %s", key, edited);
        freeReplyObject(rep);
        free(edited);
        json_decref(doc);
    }
    t0 = tnow_ms();
    for (;;) {
        struct thttp_resp hr;
        json_t *doc;
        int64_t bal;
        assert_int_equal(thttp_request(&hr, "GET", url, path, NULL, NULL, 5000), 0);
        doc = thttp_json(&hr);
        bal = tw_int(doc, "balance");
        json_decref(doc);
        thttp_resp_release(&hr);
        if (bal == 424242)
            break;
        assert_int_equal(bal, 0);
        if (tnow_ms() - t0 > 3000)
            break;
        usleep(5000);
    }
    took = tnow_ms() - t0;
    {
        /* the primary read API (60 s lifetime) still serves what it cached; a projector that
         * starts announces "*", after which it shows what Redis holds */
        static const char *const run[] = {"run", NULL};
        json_t *doc = tr_get_ok(NULL, path);
        assert_int_equal(tw_int(doc, "balance"), 0);
        json_decref(doc);
        tstack_unguard(svcs->projector);
        assert_int_equal(tsvc_stop(svcs->projector, SIGTERM, 10000), 0);
        svcs->projector = tsvc_start("projector", run, NULL);
        tstack_guard(svcs->projector);
        t0 = tnow_ms();
        for (;;) {
            doc = tr_get_ok(NULL, path);
            if (tw_int(doc, "balance") == 424242) {
                json_decref(doc);
                break;
            }
            json_decref(doc);
            if (tnow_ms() - t0 > 10000)
                tfail("a restarted projector did not clear the read API's cache");
            usleep(20000);
        }
        fprintf(stderr, "after a projector start the primary showed the change in %lld ms\n",
                (long long)(tnow_ms() - t0));
    }
    rep = redisCommand(rc, "HSET %s doc %s", key, orig); /* put the truth back */
    freeReplyObject(rep);
    rep = redisCommand(rc, "PUBLISH rm:applied *"); /* and have the caches forget the edit */
    freeReplyObject(rep);
    free(orig);
    redisFree(rc);
    assert_int_equal(tsvc_stop(pid, SIGTERM, 10000), 0);
    fprintf(stderr, "an unnotified change showed after %lld ms (lifetime 300 ms)\n", (long long)took);
    assert_true(took <= 1500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints_and_errors),
        cmocka_unit_test(test_pagination),
        cmocka_unit_test(test_read_your_writes),
        cmocka_unit_test(test_redis_restart),
        cmocka_unit_test(test_cache_follows_the_projector),
        cmocka_unit_test(test_cache_lifetime_bounds_a_lost_notification),
    };
    /* inherited by the services: only notifications keep the cache current */
    setenv("READ_CACHE_TTL_MS", "60000", 1);
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
