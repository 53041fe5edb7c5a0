/* Issue 12, the lease bucket: epochs never go back (a NATS restart, a bucket behind the epochs
 * Redis holds) and the live workers are counted once each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "db.h"
#include "ownership.h"
#include "support.h"
#include "tcheck.h"
#include "tgen.h"
#include "tproj.h"
#include "tstack.h"

#define ACCOUNTS 200 /* every one of the 16 partitions has accounts */
#define EVENTS 4000
#define LEASE_MS 1000
#define BOUND_MS (LEASE_MS + 5000) /* new events applied on every partition within it */

static const char *const worker_env[] = {"PROJECTOR_LEASE_MS=1000", "PROJECTOR_BATCH=256", NULL};

static struct tgen_history hist;

static void fresh(void)
{
    tgen_fresh_history(&hist, ACCOUNTS, EVENTS, 7); /* the load inserts it chunk by chunk */
    treset_read_side();
    tproj_seed_generation();
}

static void logpath(char *buf, size_t len, const char *test, int i)
{
    snprintf(buf, len, "%s/leases-%s-%d.log", getenv("CQRS_BIN_DIR"), test, i);
}

static void bus_open(struct bus *b)
{
    struct err e;

    memset(b, 0, sizeof *b);
    if (bus_connect(b, tenv("NATS_URL"), "test-leases", 10000, &e) != ST_OK || bus_ensure_stream(b, &e) != ST_OK)
        tfail("nats: %s", e.msg);
}

/* Publishes events from .. from+n-1, then waits until every partition's consumer has recorded
 * the last sequence of its subject in rm:part:<p>; returns how long that took. */
static int64_t publish_and_wait(const char *what, long from, long n, int bound_ms)
{
    struct bus b;
    uint64_t last[EVENT_PARTITIONS];
    int64_t t0;

    bus_open(&b);
    tproj_publish(&b, &hist, from, n);
    t0 = tnow_ms();
    for (int p = 0; p < EVENT_PARTITIONS; p++) {
        last[p] = tproj_stream_last(&b, p);
        assert_true(last[p] > 0);
    }
    bus_release(&b);
    for (int p = 0; p < EVENT_PARTITIONS; p++)
        tproj_wait_seq(p, last[p], (int)(t0 + bound_ms - tnow_ms()) > 0 ? (int)(t0 + bound_ms - tnow_ms()) : 1);
    fprintf(stderr, "%s: every partition applied its new events %lld ms after they were published\n", what,
            (long long)(tnow_ms() - t0));
    return tnow_ms() - t0;
}

static uint64_t min_epoch(void)
{
    uint64_t min = UINT64_MAX;

    for (int p = 0; p < EVENT_PARTITIONS; p++) {
        uint64_t seq, epoch;
        tproj_part(p, &seq, &epoch);
        if (epoch < min)
            min = epoch;
    }
    return min;
}

/* ---- 1. a restart of NATS does not send the epochs back below what Redis holds ---- */

static void test_epochs_survive_nats_restart(void **state)
{
    char log1[256], log2[256];
    pid_t w1, w2;
    uint64_t before;
    int64_t t0;

    (void)state;
    fresh();
    logpath(log1, sizeof log1, "restart", 1);
    logpath(log2, sizeof log2, "restart", 2);
    /* revisions grow with renewals (16 every 250 ms); a worker started later claims above them */
    w1 = tproj_spawn(log1, worker_env);
    publish_and_wait("first worker", 0, EVENTS / 4, 20000);
    usleep(3000000);
    assert_int_equal(tsvc_stop(w1, SIGTERM, 15000), 0);
    w2 = tproj_spawn(log2, worker_env);
    t0 = tnow_ms();
    while ((before = min_epoch()) < 100) {
        if (tnow_ms() - t0 > 15000)
            tfail("the second worker's epochs stay below 100 (lowest %llu)", (unsigned long long)before);
        usleep(100000);
    }
    publish_and_wait("second worker", EVENTS / 4, EVENTS / 4, BOUND_MS);
    fprintf(stderr, "restart: lowest epoch in Redis before the restart of NATS: %llu\n", (unsigned long long)before);
    tstack_kill("nats", SIGKILL, 10000);
    tstack_up();
    publish_and_wait("after the restart of NATS", EVENTS / 2, EVENTS / 2, BOUND_MS);
    fprintf(stderr, "restart: lowest epoch after: %llu; \"older than\" refusals in the log: %ld\n",
            (unsigned long long)min_epoch(), tproj_log_count(log2, "in Redis: dropping it"));
    assert_int_equal(tproj_log_count(log2, "in Redis: dropping it"), 0);
    tcheck_expect_exact("after the restart of NATS", 60000);
    assert_int_equal(tsvc_stop(w2, SIGTERM, 15000), 0);
}

/* ---- 2. a bucket behind the epochs in Redis (NATS lost its state) is moved past them ---- */

static void seed_epochs(uint64_t epoch)
{
    redisContext *rc = tredis_open();

    for (int p = 0; p < EVENT_PARTITIONS; p++) {
        redisReply *r = redisCommand(rc, "HSET rm:part:%d epoch %llu", p, (unsigned long long)epoch);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            tfail("seed epoch of %d", p);
        freeReplyObject(r);
    }
    redisFree(rc);
}

/* The lease bucket as the first version created it: memory storage. */
static void create_memory_bucket(void)
{
    struct bus b;
    kvConfig kc;
    kvStore *kv = NULL;

    bus_open(&b);
    kvConfig_Init(&kc);
    kc.Bucket = "projector_leases";
    kc.History = 1;
    kc.TTL = (int64_t)LEASE_MS * 1000000;
    kc.StorageType = js_MemoryStorage;
    if (js_CreateKeyValue(&kv, b.js, &kc) != NATS_OK)
        tfail("create a memory lease bucket");
    kvStore_Destroy(kv);
    bus_release(&b);
}

static int bucket_on_file(void)
{
    struct bus b;
    jsStreamInfo *si = NULL;
    int file;

    bus_open(&b);
    if (js_GetStreamInfo(&si, b.js, "KV_projector_leases", NULL, NULL) != NATS_OK)
        tfail("lease bucket info");
    file = si->Config->Storage == js_FileStorage;
    jsStreamInfo_Destroy(si);
    bus_release(&b);
    return file;
}

static void test_bucket_behind_redis(void **state)
{
    char log[256];
    pid_t w;

    (void)state;
    fresh();
    logpath(log, sizeof log, "behind", 1);
    /* a memory bucket of the first version, no lease held: recreated with file storage */
    create_memory_bucket();
    assert_false(bucket_on_file());
    /* at start: a long-running system's epochs, far above a new bucket's revisions */
    seed_epochs(5000000);
    w = tproj_spawn(log, worker_env);
    publish_and_wait("epochs 5000000 in Redis at start", 0, EVENTS / 4, BOUND_MS);
    assert_true(min_epoch() > 5000000);
    assert_true(tproj_log_count(log, "moved past it") >= 1);
    assert_int_equal(tproj_log_count(log, "recreated with file storage"), 1);
    assert_true(bucket_on_file());
    /* while running: the bucket loses its revisions again (as a memory bucket does when NATS
     * restarts); the refused claims move it past them */
    seed_epochs(9000000);
    publish_and_wait("epochs 9000000 in Redis while running", EVENTS / 4, EVENTS / 4, BOUND_MS);
    assert_true(min_epoch() > 9000000);
    assert_true(tproj_log_count(log, "moved past it") >= 2);
    tcheck_expect_exact("bucket behind Redis", 60000);
    assert_int_equal(tsvc_stop(w, SIGTERM, 15000), 0);
}

/* ---- 3. live workers counted once each, also while the bucket is busy ---- */

static atomic_int noise_stop;

/* Puts to the lease bucket as fast as it takes them: a listing of the bucket then overlaps
 * heartbeats (what renewals of many partitions on a slower replicated bucket do). */
static void *noise_main(void *arg)
{
    struct bus b;
    kvStore *kv = NULL;
    struct err e;
    long n = 0;

    (void)arg;
    bus_open(&b);
    if (own_bind(&kv, &b, &e) != ST_OK)
        tfail("bind: %s", e.msg);
    while (!atomic_load(&noise_stop)) {
        char key[32];
        snprintf(key, sizeof key, "n.%ld", n++ % 8);
        (void)kvStore_PutString(NULL, kv, key, "noise");
    }
    kvStore_Destroy(kv);
    bus_release(&b);
    return NULL;
}

static void test_live_workers_counted_once(void **state)
{
    char logs[2][256];
    pid_t w[2];
    pthread_t noise;
    long phantom = 0, handed = 0;

    (void)state;
    fresh();
    for (int i = 0; i < 2; i++) {
        logpath(logs[i], sizeof logs[i], "live", i);
        w[i] = tproj_spawn(logs[i], worker_env);
    }
    publish_and_wait("two workers", 0, EVENTS / 4, 20000);
    usleep(2000000); /* balanced */
    for (int i = 0; i < 2; i++)
        handed += tproj_log_count(logs[i], "handed over");
    atomic_store(&noise_stop, 0);
    if (pthread_create(&noise, NULL, noise_main, NULL) != 0)
        tfail("noise thread");
    usleep(10000000);
    atomic_store(&noise_stop, 1);
    pthread_join(noise, NULL);
    for (int i = 0; i < 2; i++) {
        for (int n = 3; n <= 12; n++) {
            char text[32];
            snprintf(text, sizeof text, "(%d live workers", n);
            phantom += tproj_log_count(logs[i], text);
        }
        handed -= tproj_log_count(logs[i], "handed over");
    }
    fprintf(stderr, "live: %ld log lines counting more than 2 live workers, %ld hand-overs under the noise\n",
            phantom, -handed);
    assert_int_equal(phantom, 0);
    assert_int_equal(handed, 0);
    publish_and_wait("two workers after the noise", EVENTS / 4, EVENTS / 4, BOUND_MS);
    for (int i = 0; i < 2; i++)
        assert_int_equal(tsvc_stop(w[i], SIGTERM, 15000), 0);
}

static int teardown(void **state)
{
    (void)state;
    tgen_release(&hist);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_epochs_survive_nats_restart),
        cmocka_unit_test(test_bucket_behind_redis),
        cmocka_unit_test(test_live_workers_counted_once),
    };
    if (getenv("CMOCKA_TEST_FILTER") != NULL) /* e.g. "test_live*" */
        cmocka_set_test_filter(getenv("CMOCKA_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, teardown);
}
