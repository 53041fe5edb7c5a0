/* Read scaling (issue 15): a read API with READ_REPLICAS=1 reads from a real Redis replica of
 * the stack's Redis, started here (REPLICAOF; CLIENT PAUSE WRITE on it holds its replication
 * stream, so it lags while its link stays up and it still answers reads). Shows: plain reads come from the replica (its own
 * command counts and readapi_replica_reads_total); a min_version read the paused replica has
 * not reached is answered by the primary, never below min_version; a read API with a small
 * READ_REPLICA_MAX_LAG_MS stops using the lagging replica; after the pause the cache shows the
 * new version (invalidations through the replica); the replica killed under reads costs no
 * failed read. */
#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"
#include "thttp.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"

#define R "{service=\"readapi\"}"
#define FALLBACK(reason) "readapi_replica_fallbacks_total{service=\"readapi\",reason=\"" reason "\"}"

static int redis_port;

/* --- the replica --- */

static pid_t replica_pid;
static int replica_port;
static char replica_dir[256];

static redisContext *replica_open(void)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", replica_port, tv);

    if (c == NULL || c->err)
        tfail("replica on %d does not answer", replica_port);
    redisSetTimeout(c, tv);
    return c;
}

/* A field of INFO section on c (into out); "" when absent. */
static void info_field(redisContext *c, const char *section, const char *name, char *out, size_t len)
{
    redisReply *r = redisCommand(c, "INFO %s", section);
    const char *p;
    size_t n = strlen(name);

    out[0] = '\0';
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        tfail("INFO %s failed", section);
    for (p = r->str; p != NULL; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            size_t k = strcspn(p + n + 1, "\r\n");
            snprintf(out, len, "%.*s", (int)k, p + n + 1);
            break;
        }
    freeReplyObject(r);
}

/* EVALSHA_RO calls the replica has served. */
static long long replica_evalsha_calls(void)
{
    redisContext *c = replica_open();
    char v[256];
    long long calls = 0;

    info_field(c, "commandstats", "cmdstat_evalsha_ro", v, sizeof v);
    if (v[0] != '\0')
        sscanf(v, "calls=%lld", &calls);
    redisFree(c);
    return calls;
}

static void replica_start(void)
{
    char port[16], master[64], log[512];
    int64_t t0 = tnow_ms();

    replica_port = thttp_free_port();
    snprintf(replica_dir, sizeof replica_dir, "/tmp/cqrs-replica-XXXXXX");
    if (mkdtemp(replica_dir) == NULL)
        tfail("mkdtemp: %s", strerror(errno));
    snprintf(port, sizeof port, "%d", replica_port);
    snprintf(master, sizeof master, "127.0.0.1 %d", redis_port);
    snprintf(log, sizeof log, "%s/redis.log", replica_dir);
    replica_pid = fork();
    if (replica_pid == 0) {
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", replica_dir, "--logfile", log, "--replicaof", master,
               (char *)NULL);
        _exit(127);
    }
    tstack_guard(replica_pid);
    for (;;) { /* the first sync may wait for the master's diskless-sync delay (5 s) */
        redisContext *c = redisConnect("127.0.0.1", replica_port);
        char link[32] = "";
        if (c != NULL && !c->err)
            info_field(c, "replication", "master_link_status", link, sizeof link);
        if (c != NULL)
            redisFree(c);
        if (strcmp(link, "up") == 0)
            break;
        if (tnow_ms() - t0 > 30000)
            tfail("the replica did not sync within 30 s (see %s)", log);
        usleep(100 * 1000);
    }
    fprintf(stderr, "replica on %d synced in %lld ms\n", replica_port, (long long)(tnow_ms() - t0));
}

/* Waits until the replica has applied all the primary had written when called (after its
 * first sync the primary streams only once the replica's first REPLCONF ACK came, up to 1 s). */
static void await_caught_up(void)
{
    redisContext *p = tredis_open(), *c = replica_open();
    char v[64];
    long long want;
    int64_t t0 = tnow_ms();

    info_field(p, "replication", "master_repl_offset", v, sizeof v);
    want = atoll(v);
    for (;;) {
        info_field(c, "replication", "slave_repl_offset", v, sizeof v);
        if (atoll(v) >= want)
            break;
        if (tnow_ms() - t0 > 5000)
            tfail("the replica did not reach offset %lld within 5 s (at %s)", want, v);
        usleep(10 * 1000);
    }
    redisFree(p);
    redisFree(c);
}

/* CLIENT PAUSE WRITE on the replica (ms > 0; 0: CLIENT UNPAUSE): it stops applying its
 * replication stream, its link stays up, and it keeps answering reads (EVALSHA_RO). */
static void replica_pause(int ms)
{
    redisContext *c = replica_open();
    redisReply *r = ms > 0 ? redisCommand(c, "CLIENT PAUSE %d WRITE", ms) : redisCommand(c, "CLIENT UNPAUSE");

    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        tfail("CLIENT PAUSE/UNPAUSE on the replica failed");
    freeReplyObject(r);
    redisFree(c);
}

/* --- read APIs on the replica --- */

struct api {
    pid_t pid;
    char base[64];
};

static struct api wide, narrow; /* READ_REPLICA_MAX_LAG_MS 10000 and 300 */

static void api_start(struct api *a, int port_offset, int max_lag_ms)
{
    char port[64], url[96], lag[64];
    const char *extra[] = {port, "READ_REPLICAS=1", url, lag, NULL};
    int p = atoi(tenv("READAPI_PORT")) + port_offset;

    snprintf(port, sizeof port, "READAPI_PORT=%d", p);
    snprintf(url, sizeof url, "REDIS_REPLICA_URL=redis://127.0.0.1:%d", replica_port);
    snprintf(lag, sizeof lag, "READ_REPLICA_MAX_LAG_MS=%d", max_lag_ms);
    snprintf(a->base, sizeof a->base, "http://127.0.0.1:%d", p);
    a->pid = tsvc_start("readapi", NULL, extra);
    tstack_guard(a->pid);
    if (!twait_http_ok(a->base, "/readyz", 20000))
        tfail("read API on the replica not ready at %s", a->base);
}

/* Waits until base's readapi_replica_usable is want. */
static void await_usable(const char *base, int want, int timeout_ms)
{
    int64_t t0 = tnow_ms();

    while (thttp_metric(base, "readapi_replica_usable" R) != want) {
        if (tnow_ms() - t0 > timeout_ms)
            tfail("%s: readapi_replica_usable did not become %d within %d ms", base, want, timeout_ms);
        usleep(20 * 1000);
    }
}

static json_t *get_status(const char *base, const char *path, int *status)
{
    return tr_get(base, path, status, NULL, 0);
}

static int setup(void **state)
{
    if (tstack_group_setup(state) != 0)
        return -1;
    redis_port = atoi(tenv("REDIS_PORT"));
    replica_start();
    api_start(&wide, 7, 10000);
    api_start(&narrow, 8, 300);
    return 0;
}

static int teardown(void **state)
{
    char cmd[320];
    int ignore;

    tstack_unguard(wide.pid);
    tstack_unguard(narrow.pid);
    assert_int_equal(tsvc_stop(wide.pid, SIGTERM, 10000), 0);
    assert_int_equal(tsvc_stop(narrow.pid, SIGTERM, 10000), 0);
    if (replica_pid > 0) {
        tstack_unguard(replica_pid);
        tsvc_stop(replica_pid, SIGTERM, 5000);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", replica_dir);
    ignore = system(cmd);
    (void)ignore;
    return tstack_group_teardown(state);
}

/* Plain reads come from the replica: the replica's own EVALSHA count grows with them. */
static void test_reads_come_from_the_replica(void **state)
{
    char id[UUID_STR_SIZE], path[256];
    double reads0;
    long long calls0, calls;
    json_t *r;

    (void)state;
    await_usable(wide.base, 1, 10000);
    await_usable(narrow.base, 1, 10000);
    tw_open(id, "replica", "reads", "EUR", 0);
    json_decref(tw_money(id, "deposits", 500, "first"));
    snprintf(path, sizeof path, "/accounts/%s?min_version=2&wait_ms=5000", id);
    json_decref(tr_get_ok(wide.base, path));
    await_caught_up();
    snprintf(path, sizeof path, "/accounts/%s/statement", id);
    reads0 = thttp_metric(wide.base, "readapi_replica_reads_total" R);
    calls0 = replica_evalsha_calls();
    /* statements are not cached: each one is a script on the replica */
    for (int i = 0; i < 20; i++) {
        r = tr_get_ok(wide.base, path);
        assert_int_equal(tw_int(r, "balance"), 500);
        json_decref(r);
    }
    calls = replica_evalsha_calls();
    fprintf(stderr, "20 statement reads: the replica ran %lld scripts, readapi_replica_reads_total +%.0f\n",
            calls - calls0, thttp_metric(wide.base, "readapi_replica_reads_total" R) - reads0);
    assert_true(calls - calls0 >= 20);
    assert_true(thttp_metric(wide.base, "readapi_replica_reads_total" R) - reads0 >= 20);
    assert_true(thttp_metric(wide.base, "readapi_replica_lag_seconds" R) >= 0);
}

/* The replica paused (its link up, nothing flowing): every min_version read answers at that
 * version from the primary; plain reads may be the replica's older version on the read API
 * that tolerates 10 s of lag, and are the primary's on the one that tolerates 300 ms. */
static void test_min_version_is_never_stale(void **state)
{
    char id[UUID_STR_SIZE], path[256], path2[256];
    double behind0;
    int64_t v = 0;
    int stale_plain = 0;
    json_t *r;

    (void)state;
    await_usable(wide.base, 1, 10000);
    tw_open(id, "replica", "min", "EUR", 0);
    snprintf(path, sizeof path, "/accounts/%s?min_version=1&wait_ms=5000", id);
    json_decref(tr_get_ok(wide.base, path));
    await_caught_up(); /* the replica has the account */
    behind0 = thttp_metric(wide.base, FALLBACK("behind"));
    replica_pause(30000);
    for (int i = 1; i <= 10; i++) {
        int status;
        json_t *d = tw_money(id, "deposits", 100, "paused");
        v = tw_int(d, "version");
        json_decref(d);
        assert_int_equal(v, i + 1);
        snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=5000", id, (long long)v);
        r = get_status(wide.base, path, &status);
        assert_int_equal(status, 200);
        assert_true(tw_int(r, "version") >= v);
        assert_int_equal(tw_int(r, "balance"), 100 * (tw_int(r, "version") - 1));
        json_decref(r);
        snprintf(path2, sizeof path2, "/accounts/%s/statement?min_version=%lld&wait_ms=5000", id,
                 (long long)v);
        r = get_status(wide.base, path2, &status);
        assert_int_equal(status, 200);
        assert_true(tw_int(r, "version") >= v);
        json_decref(r);
        /* a plain read on the tolerant read API: the replica's, older */
        snprintf(path, sizeof path, "/accounts/%s", id);
        r = tr_get_ok(wide.base, path);
        if (tw_int(r, "version") < v)
            stale_plain++;
        json_decref(r);
    }
    fprintf(stderr, "replica paused: 10 min_version reads at their version (fallbacks behind +%.0f), "
                    "%d of 10 plain reads showed the replica's older version\n",
            thttp_metric(wide.base, FALLBACK("behind")) - behind0, stale_plain);
    assert_true(thttp_metric(wide.base, FALLBACK("behind")) - behind0 >= 10);
    assert_true(stale_plain > 0); /* the plain reads did come from the lagging replica */
    /* the read API that tolerates 300 ms stops reading from it */
    await_usable(narrow.base, 0, 3000);
    snprintf(path, sizeof path, "/accounts/%s", id);
    r = tr_get_ok(narrow.base, path);
    assert_int_equal(tw_int(r, "version"), v);
    json_decref(r);
    assert_true(thttp_metric(wide.base, "readapi_replica_usable" R) == 1);

    /* the replica catches up: the tolerant API's cache shows the newest version soon (the
     * replica's own notifications invalidate it), the narrow one reads the replica again */
    replica_pause(0);
    {
        int64_t t0 = tnow_ms();
        for (;;) {
            r = tr_get_ok(wide.base, path);
            int64_t got = tw_int(r, "version");
            json_decref(r);
            if (got == v)
                break;
            if (tnow_ms() - t0 > 3000)
                tfail("the replica caught up but a plain read still shows %lld < %lld", (long long)got,
                      (long long)v);
            usleep(10 * 1000);
        }
        fprintf(stderr, "after the pause a plain read showed the newest version in %lld ms\n",
                (long long)(tnow_ms() - t0));
    }
    await_usable(narrow.base, 1, 5000);
}

struct reader {
    const char *base;
    char id[UUID_STR_SIZE];
    int64_t min_version;
    atomic_int stop;
    int ok, failed;
};

static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    char path[3][256];

    snprintf(path[0], sizeof path[0], "/accounts/%s", rd->id);
    snprintf(path[1], sizeof path[1], "/accounts/%s/statement", rd->id);
    snprintf(path[2], sizeof path[2], "/accounts/%s?min_version=%lld&wait_ms=5000", rd->id,
             (long long)rd->min_version);
    for (int i = 0; !atomic_load(&rd->stop); i++) {
        struct thttp_resp hr;
        if (thttp_request(&hr, "GET", rd->base, path[i % 3], NULL, NULL, 10000) == 0 && hr.status == 200) {
            rd->ok++;
        } else {
            rd->failed++;
            fprintf(stderr, "%s%s: %d %.300s\n", rd->base, path[i % 3], hr.status,
                    hr.body != NULL ? hr.body : "");
        }
        thttp_resp_release(&hr);
    }
    return NULL;
}

/* The replica killed under reads: not one read fails, and the read API stops using it. */
static void test_replica_gone_costs_no_read(void **state)
{
    struct reader rd[2] = {{.base = wide.base}, {.base = narrow.base}};
    pthread_t t[2];
    json_t *d;

    (void)state;
    await_usable(wide.base, 1, 10000);
    tw_open(rd[0].id, "replica", "gone", "EUR", 0);
    d = tw_money(rd[0].id, "deposits", 700, "before");
    rd[0].min_version = rd[1].min_version = tw_int(d, "version");
    json_decref(d);
    memcpy(rd[1].id, rd[0].id, sizeof rd[1].id);
    for (int i = 0; i < 2; i++) { /* projected before the readers start: a 404 is a failure */
        char path[256];
        snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=5000", rd[i].id,
                 (long long)rd[i].min_version);
        json_decref(tr_get_ok(rd[i].base, path));
    }
    await_caught_up();
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, reader_main, &rd[i]);
    usleep(500 * 1000);
    tstack_unguard(replica_pid);
    kill(replica_pid, SIGKILL);
    waitpid(replica_pid, NULL, 0);
    replica_pid = 0;
    usleep(1500 * 1000);
    for (int i = 0; i < 2; i++) {
        atomic_store(&rd[i].stop, 1);
        pthread_join(t[i], NULL);
    }
    fprintf(stderr, "replica killed under reads: %d + %d reads answered 200, %d + %d failed\n", rd[0].ok,
            rd[1].ok, rd[0].failed, rd[1].failed);
    assert_int_equal(rd[0].failed + rd[1].failed, 0);
    assert_true(rd[0].ok > 10 && rd[1].ok > 10);
    await_usable(wide.base, 0, 2000);
    assert_true(thttp_metric(wide.base, FALLBACK("error")) >= 0);
    assert_true(thttp_metric(wide.base, FALLBACK("missing")) >= 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_come_from_the_replica),
        cmocka_unit_test(test_min_version_is_never_stale),
        cmocka_unit_test(test_replica_gone_costs_no_read),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
