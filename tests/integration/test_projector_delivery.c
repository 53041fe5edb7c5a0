/* Issue 4 (and 12): read models stay exact under duplicate, shuffled and lost delivery, with
 * one, two and four projectors sharing the partitions, and with a projector killed (SIGKILL)
 * again and again. */
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

#include <hiredis/hiredis.h>

#include "bus.h"
#include "cfg.h"
#include "readmodel.h"
#include "db.h"
#include "support.h"
#include "tcheck.h"
#include "tgen.h"

#define ACCOUNTS 200
#define EVENTS 20000

static struct tgen_history hist;
/* short leases: a killed worker's partitions come back within 2 s */
static const char *const worker_env[] = {"PROJECTOR_LEASE_MS=2000", NULL};

static int setup(void **state)
{
    (void)state;
    tgen_fresh_store(&hist, ACCOUNTS, EVENTS, 42);
    fprintf(stderr, "generated %ld events over %d accounts\n", hist.n, hist.naccounts);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tgen_release(&hist);
    return 0;
}

struct pub_stats {
    long messages, withheld, duplicates;
};

/* Publishes every event 1-4 times with fresh Nats-Msg-Ids, all copies shuffled, and withholds
 * about 3% of the events from NATS altogether. */
static struct pub_stats publish_shuffled(uint64_t seed)
{
    struct pub_stats ps = {0, 0, 0};
    uint64_t s = seed;
    long *order = NULL, n = 0;
    struct bus b = {0};
    struct err e;

    order = malloc(sizeof *order * (size_t)hist.n * 4);
    for (long i = 0; i < hist.n; i++) {
        int copies = 1 + (int)(tgen_rand(&s) % 4);
        if (tgen_rand(&s) % 100 < 3) {
            ps.withheld++;
            continue;
        }
        ps.duplicates += copies - 1;
        for (int c = 0; c < copies; c++)
            order[n++] = i;
    }
    for (long i = n - 1; i > 0; i--) {
        long j = (long)(tgen_rand(&s) % (uint64_t)(i + 1));
        long t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    if (bus_connect(&b, tenv("NATS_URL"), "test-publisher", 10000, &e) != ST_OK ||
        bus_ensure_stream(&b, &e) != ST_OK)
        tfail("nats: %s", e.msg);
    for (long i = 0; i < n; i++) {
        const struct event *ev = &hist.events[order[i]];
        char subject[64], msgid[UUID_STR_SIZE];
        char *payload = event_encode(ev);
        natsMsg *msg = NULL;
        natsStatus st;

        event_subject(ev->stream_id, EVENT_PARTITIONS, subject, sizeof subject);
        uuid_generate(msgid);
        if (natsMsg_Create(&msg, subject, NULL, payload, (int)strlen(payload)) != NATS_OK ||
            natsMsgHeader_Set(msg, "Nats-Msg-Id", msgid) != NATS_OK)
            tfail("create message");
        st = js_PublishMsgAsync(b.js, &msg, NULL);
        if (st != NATS_OK)
            tfail("publish: %s", natsStatus_GetText(st));
        natsMsg_Destroy(msg);
        free(payload);
        if (i % 1000 == 999 && js_PublishAsyncComplete(b.js, NULL) != NATS_OK)
            tfail("publish acks");
    }
    if (js_PublishAsyncComplete(b.js, NULL) != NATS_OK)
        tfail("publish acks");
    bus_release(&b);
    free(order);
    ps.messages = n;
    fprintf(stderr, "published %ld messages (%ld duplicates), withheld %ld events\n", ps.messages,
            ps.duplicates, ps.withheld);
    return ps;
}

/* Makes generation 1 the live, empty read model, as if the projector had been running since
 * before the first event: no self-healing rebuild then, so only JetStream delivery, gap repair
 * and the catch-up sweep bring the events in. */
static void seed_live_empty_generation(void)
{
    redisContext *rc = tredis_open();
    redisReply *r;

    r = redisCommand(rc, "MULTI");
    freeReplyObject(r);
    r = redisCommand(rc, "SET %s 1", RM_GENSEQ_KEY);
    freeReplyObject(r);
    r = redisCommand(rc, "HSET rm:1:checkpoint position 0 at_ms 0 events 0");
    freeReplyObject(r);
    r = redisCommand(rc, "SET %s 1", RM_CURRENT_KEY);
    freeReplyObject(r);
    r = redisCommand(rc, "EXEC");
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        tfail("seed generation");
    freeReplyObject(r);
    redisFree(rc);
}

static void run_with_projectors(int nproj, uint64_t seed, int seed_live)
{
    static const char *const run[] = {"run", NULL};
    pid_t pids[4];
    struct tcheck_stats st;
    struct pub_stats ps;
    int64_t t0;

    treset_read_side();
    if (seed_live)
        seed_live_empty_generation();
    ps = publish_shuffled(seed);
    assert_true(ps.withheld > 0);
    assert_true(ps.duplicates > 0);
    t0 = tnow_ms();
    for (int i = 0; i < nproj; i++)
        pids[i] = tsvc_start("projector", run, worker_env);
    assert_int_equal(tcheck_wait_converged(120000, &st), 0);
    fprintf(stderr, "%d projector(s)%s: converged in %lld ms: %ld accounts, %ld events exact\n", nproj,
            seed_live ? " on a live empty generation" : " with a self-healing rebuild",
            (long long)(tnow_ms() - t0), st.accounts, st.events);
    assert_int_equal(st.accounts, ACCOUNTS);
    assert_int_equal(st.events, hist.n);
    for (int i = 0; i < nproj; i++)
        assert_int_equal(tsvc_stop(pids[i], SIGTERM, 15000), 0);
}

static void test_one_projector(void **state)
{
    (void)state;
    run_with_projectors(1, 1, 1);
}

static void test_two_projectors(void **state)
{
    (void)state;
    run_with_projectors(2, 2, 1);
}

static void test_four_projectors(void **state)
{
    (void)state;
    run_with_projectors(4, 3, 1);
}

/* The projector also finds an empty Redis (self-healing rebuild from Postgres) while the same
 * shuffled duplicates arrive: the rebuild and the live path write one generation together. */
static void test_two_projectors_with_rebuild(void **state)
{
    (void)state;
    run_with_projectors(2, 5, 0);
}

/* SIGKILL in the middle of batches, 10 times, then one clean run: the same exact result. */
static void test_projector_killed(void **state)
{
    static const char *const run[] = {"run", NULL};
    struct tcheck_stats st;
    uint64_t s = 77;
    pid_t pid;

    (void)state;
    treset_read_side();
    seed_live_empty_generation();
    publish_shuffled(4);
    pid = tsvc_start("projector", run, worker_env);
    for (int k = 0; k < 10; k++) {
        usleep((useconds_t)(150000 + tgen_rand(&s) % 350000));
        assert_int_equal(tsvc_stop(pid, SIGKILL, 5000), 128 + SIGKILL);
        pid = tsvc_start("projector", run, worker_env);
    }
    assert_int_equal(tcheck_wait_converged(120000, &st), 0);
    assert_int_equal(st.events, hist.n);
    assert_int_equal(tsvc_stop(pid, SIGTERM, 15000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_projector),
        cmocka_unit_test(test_two_projectors),
        cmocka_unit_test(test_four_projectors),
        cmocka_unit_test(test_two_projectors_with_rebuild),
        cmocka_unit_test(test_projector_killed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
