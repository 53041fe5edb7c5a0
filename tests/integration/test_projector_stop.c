/* A worker stopped (SIGTERM) at varied moments after Redis was killed and came back empty under
 * it (the self-heal rebuild running, the sweep and the consumers reconnecting): it exits
 * cleanly every time. It crashed here (SIGSEGV, about 1 run in 10 of this test): Redis died
 * between the sweep's connect and the PUBLISH after it, the lost-notification path dropped the
 * connection and the script load used the NULL context (test_projector_redis_lost reproduces
 * that alone, every time). This loops the whole situation as a guard: a crash fails a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bus.h"
#include "support.h"
#include "tgen.h"
#include "tproj.h"
#include "tstack.h"

#define ACCOUNTS 200
#define EVENTS 4000
#define ROUNDS 6

static const char *const worker_env[] = {"PROJECTOR_LEASE_MS=2000", NULL};

static struct tgen_history hist;

static void test_stop_after_redis_restart(void **state)
{
    struct bus b = {0};
    struct err e;
    char log[256];
    uint64_t rnd = 7;

    (void)state;
    tgen_fresh_history(&hist, ACCOUNTS, EVENTS, 33);
    treset_read_side();
    tproj_seed_generation();
    if (bus_connect(&b, tenv("NATS_URL"), "test-stop", 10000, &e) != ST_OK || bus_ensure_stream(&b, &e) != ST_OK)
        tfail("nats: %s", e.msg);
    tproj_publish(&b, &hist, 0, hist.n);
    bus_release(&b);
    for (int i = 0; i < ROUNDS; i++) {
        redisContext *rc;
        redisReply *r;
        pid_t pid;
        int ec;

        snprintf(log, sizeof log, "%s/proj-stop-%d.log", getenv("CQRS_BIN_DIR"), i);
        pid = tproj_spawn(log, worker_env);
        usleep(1000000 + (useconds_t)(tgen_rand(&rnd) % 1000) * 1000);
        tstack_kill("redis", SIGKILL, 5000);
        tstack_up();
        rc = tredis_open();
        r = redisCommand(rc, "FLUSHALL"); /* back empty: every partition rewinds, self-heal runs */
        freeReplyObject(r);
        redisFree(rc);
        usleep((useconds_t)(tgen_rand(&rnd) % 1500) * 1000);
        ec = tsvc_stop(pid, SIGTERM, 15000);
        fprintf(stderr, "round %d: exit %d (%s)\n", i, ec, log);
        assert_int_equal(ec, 0);
    }
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
        cmocka_unit_test(test_stop_after_redis_restart),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
