/* Issue 17: every metric family of the read API moves by exactly what happened: reads served
 * from memory or Redis, min_version waits started, satisfied and timed out, 503s by reason
 * (not_yet_projected, too_many_waiters, store_unavailable, read_model_unavailable), parked
 * waits and refusals, Redis and event-store failures, notifications and cache clears. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "support.h"
#include "thttp.h"
#include "tmetrics.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"

#define R "{service=\"readapi\"}"
#define UNAV(reason) "readapi_unavailable_responses_total{service=\"readapi\",reason=\"" reason "\"}"
#define REQ(route, status) "http_requests_total{service=\"readapi\",route=\"" route "\",status=\"" status "\"}"

static const char *url;

/* A GET in a thread (a parked wait), its status afterwards. */
struct bg_get {
    const char *base;
    char path[256];
    int status;
    pthread_t t;
};

static void *bg_main(void *arg)
{
    struct bg_get *g = arg;
    struct thttp_resp r;
    if (thttp_request(&r, "GET", g->base, g->path, NULL, NULL, 20000) == 0)
        g->status = r.status;
    thttp_resp_release(&r);
    return NULL;
}

static void bg_start(struct bg_get *g, const char *base, const char *path)
{
    g->base = base;
    snprintf(g->path, sizeof g->path, "%s", path);
    g->status = 0;
    pthread_create(&g->t, NULL, bg_main, g);
}

/* Reads of a projected account: each one a cache hit or a miss; a wait satisfied by a deposit,
 * a wait timed out (a 503 not_yet_projected), a min_version already reached (no wait); the
 * deposit's notification invalidates the cached document once. */
static void test_reads_waits_cache(void **state)
{
    struct tm_scrape a, b, mid;
    struct bg_get g;
    char id[UUID_STR_SIZE], path[256];
    long scrapes;

    (void)state;
    url = tenv("READAPI_URL");
    tw_open(id, "rmetrics", "main", "EUR", 0);
    json_decref(tw_money(id, "deposits", 5, "first"));
    snprintf(path, sizeof path, "/accounts/%s?min_version=2&wait_ms=5000", id);
    json_decref(tr_get_ok(NULL, path));
    usleep(300 * 1000); /* the cache counters are published every 100 ms */
    tm_scrape(&a, url);
    scrapes = tm_scrapes(url);

    snprintf(path, sizeof path, "/accounts/%s", id);
    for (int i = 0; i < 4; i++)
        json_decref(tr_get_ok(NULL, path));
    snprintf(path, sizeof path, "/accounts/%s?min_version=2", id); /* reached: no wait */
    json_decref(tr_get_ok(NULL, path));
    /* a wait satisfied by the next deposit */
    snprintf(path, sizeof path, "/accounts/%s?min_version=3&wait_ms=10000", id);
    bg_start(&g, url, path);
    tm_await_value(&mid, url, "http_waiters" R, 1, 5000);
    tm_release(&mid);
    json_decref(tw_money(id, "deposits", 5, "second"));
    pthread_join(g.t, NULL);
    assert_int_equal(g.status, 200);
    /* a wait that times out */
    snprintf(path, sizeof path, "/accounts/%s?min_version=99&wait_ms=300", id);
    tr_expect_error("GET", NULL, path, 503, "not_yet_projected");
    usleep(300 * 1000);
    scrapes = tm_scrapes(url) - scrapes; /* the scrapes between a and b, and a itself */
    tm_scrape(&b, url);
    tm_print_moves(&a, &b, NULL);

    tm_expect_delta(&a, &b, "readapi_waits_started_total" R, 2);
    tm_expect_delta(&a, &b, "readapi_waits_satisfied_total" R, 1);
    tm_expect_delta(&a, &b, "readapi_waits_timed_out_total" R, 1);
    {
        const struct tm_want w[] = {{UNAV("not_yet_projected"), 1}, {NULL, 0}};
        tm_expect_family(&a, &b, "readapi_unavailable_responses_total", w);
    }
    {
        const struct tm_want w[] = {{REQ("GET /accounts/{id}", "200"), 6},
                                    {REQ("GET /accounts/{id}", "503"), 1},
                                    {REQ("GET /metrics", "200"), (double)scrapes + 1},
                                    {NULL, 0}};
        tm_expect_family(&a, &b, "http_requests_total", w);
    }
    tm_expect_delta(&a, &b, "http_request_duration_seconds_count{service=\"readapi\",route=\"GET /accounts/{id}\"}", 7);
    assert_true(tm_value(&b, "http_waiters" R) == 0);
    tm_expect_delta(&a, &b, "http_waiters_refused_total" R, 0);
    /* every account read is answered from memory or from Redis: 5 reads that did not wait,
     * and each of the 2 waits read once when it came and once more when it ended (woken by
     * the deposit's notification, or at its deadline). The deposit's notification carried its
     * document: the read it woke was answered from memory too, so none went to Redis. */
    fprintf(stderr, "cache: hits %+g, misses %+g, invalidations %+g\n", tm_delta(&a, &b, "readapi_cache_hits_total" R),
            tm_delta(&a, &b, "readapi_cache_misses_total" R), tm_delta(&a, &b, "readapi_cache_invalidations_total" R));
    assert_true(tm_delta(&a, &b, "readapi_cache_hits_total" R) + tm_delta(&a, &b, "readapi_cache_misses_total" R) == 9);
    tm_expect_delta(&a, &b, "readapi_cache_invalidations_total" R, 1);
    tm_expect_delta(&a, &b, "readapi_cache_pushes_total" R, 1);
    tm_expect_delta(&a, &b, "readapi_cache_misses_total" R, 0);
    tm_expect_delta(&a, &b, "readapi_cache_clears_total" R, 0);
    tm_expect_delta(&a, &b, "readapi_cache_refused_total" R, 0);
    tm_expect_delta(&a, &b, "redis_errors_total" R, 0);
    tm_expect_delta(&a, &b, "readapi_store_errors_total" R, 0);
    assert_true(tm_value(&b, "metrics_dropped_series_total" R) == 0);
    tm_release(&a);
    tm_release(&b);
}

/* A read API of its own with one wait allowed and an event store it cannot reach: the second
 * wait is refused at once (503 too_many_waiters), an event lookup fails (503
 * store_unavailable); no generation current: 503 read_model_unavailable; Redis gone: its
 * failures counted, and the cache cleared when the listener comes back. */
static void test_refusals_and_outages(void **state)
{
    struct tstack_svcs *svcs = *state;
    char env_port[64], base[64], id[UUID_STR_SIZE], path[256];
    const char *extra[] = {env_port, "HTTP_MAX_WAITERS=1", "DATABASE_URL=postgresql://cqrs@127.0.0.1:1/cqrs?connect_timeout=1",
                           NULL};
    struct tm_scrape a, b;
    struct bg_get g;
    redisContext *rc;
    redisReply *rep;
    char current[32] = "";
    int port = atoi(tenv("READAPI_PORT")) + 5;
    pid_t pid;

    (void)svcs;
    snprintf(env_port, sizeof env_port, "READAPI_PORT=%d", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    pid = tsvc_start("readapi", NULL, extra);
    tstack_guard(pid);
    if (!twait_http_ok(base, "/healthz", 20000))
        tfail("second readapi not up at %s", base);
    tw_open(id, "rmetrics", "refusals", "EUR", 0);
    snprintf(path, sizeof path, "/accounts/%s?min_version=1&wait_ms=5000", id);
    json_decref(tr_get_ok(NULL, path));
    usleep(300 * 1000);
    tm_scrape(&a, base);

    snprintf(path, sizeof path, "/accounts/%s?min_version=99&wait_ms=1500", id);
    bg_start(&g, base, path);
    {
        struct tm_scrape mid;
        tm_await_value(&mid, base, "http_waiters" R, 1, 5000);
        tm_release(&mid);
    }
    tr_expect_error("GET", base, path, 503, "too_many_waiters");
    pthread_join(g.t, NULL);
    assert_int_equal(g.status, 503); /* not_yet_projected at wait_ms */
    tr_expect_error("GET", base, "/events/00000000-0000-4000-8000-000000000001", 503, "store_unavailable");

    /* no current generation (the projector stopped first, so it does not heal it meanwhile) */
    rc = tredis_open();
    assert_int_equal(tsvc_stop(svcs->projector, SIGTERM, 10000), 0);
    tstack_unguard(svcs->projector);
    rep = redisCommand(rc, "GET rm:current");
    assert_true(rep != NULL && rep->type == REDIS_REPLY_STRING);
    snprintf(current, sizeof current, "%s", rep->str);
    freeReplyObject(rep);
    freeReplyObject(redisCommand(rc, "DEL rm:current"));
    /* an account the read API has not cached (a cached one is served from memory until a
     * notification or READ_CACHE_TTL_MS) */
    snprintf(path, sizeof path, "/accounts/00000000-0000-4000-8000-00000000000a");
    tr_expect_error("GET", base, path, 503, "read_model_unavailable");
    freeReplyObject(redisCommand(rc, "SET rm:current %s", current));
    redisFree(rc);
    svcs->projector = tsvc_start("projector", (const char *const[]){"run", NULL}, NULL);
    tstack_guard(svcs->projector);
    usleep(500 * 1000);
    tm_scrape(&b, base);
    tm_print_moves(&a, &b, NULL);
    {
        const struct tm_want w[] = {{UNAV("too_many_waiters"), 1},
                                    {UNAV("not_yet_projected"), 1},
                                    {UNAV("store_unavailable"), 1},
                                    {UNAV("read_model_unavailable"), 1},
                                    {NULL, 0}};
        tm_expect_family(&a, &b, "readapi_unavailable_responses_total", w);
    }
    tm_expect_delta(&a, &b, "http_waiters_refused_total" R, 1);
    tm_expect_delta(&a, &b, "readapi_waits_started_total" R, 1);
    tm_expect_delta(&a, &b, "readapi_waits_timed_out_total" R, 1);
    tm_expect_delta(&a, &b, "readapi_store_errors_total" R, 1);
    tm_release(&a);
    tm_release(&b);

    /* Redis gone: each read fails on Redis; back: the listener reconnects and clears the cache */
    tm_scrape(&a, base);
    tstack_kill("redis", SIGKILL, 5000);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "/accounts/00000000-0000-4000-8000-00000000001%d", i);
        tr_expect_error("GET", base, path, 503, "read_model_unavailable");
    }
    tm_scrape(&b, base);
    tm_print_moves(&a, &b, NULL);
    fprintf(stderr, "Redis down, 3 reads: redis_errors_total %+g\n", tm_delta(&a, &b, "redis_errors_total" R));
    assert_true(tm_delta(&a, &b, "redis_errors_total" R) >= 3);
    tm_expect_delta(&a, &b, UNAV("read_model_unavailable"), 3);
    tm_release(&b);
    tstack_up();
    tm_await(&b, base, &a, "readapi_cache_clears_total" R, 1, 15000, 500);
    tm_print_moves(&a, &b, "readapi_cache");
    tm_release(&a);
    tm_release(&b);
    tstack_unguard(pid);
    assert_int_equal(tsvc_stop(pid, SIGTERM, 10000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_waits_cache),
        cmocka_unit_test(test_refusals_and_outages),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
