/* The outbox relay against the real stack: commands keep working while NATS is down and every
 * event reaches the stream exactly once afterwards; a writer SIGKILLed between publish and
 * outbox delete republishes, and neither the stream nor the read models count anything twice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "event.h"
#include "support.h"
#include "tcheck.h"
#include "thttp.h"
#include "tstack.h"
#include "treadapi.h"
#include "twriter.h"

#define ACCOUNTS 10
#define OUTAGE_COMMANDS 500
#define BACK_COMMANDS 200
#define LOAD_THREADS 8

static pid_t writer_pid, projector_pid;
static const char *writer_url; /* read before any thread starts: tenv is not thread-safe */
static char accounts[ACCOUNTS][UUID_STR_SIZE];

static void start_writer(void)
{
    writer_pid = tsvc_start("writer", NULL, NULL);
    tstack_guard(writer_pid);
    if (!twait_http_ok(writer_url, "/healthz", 20000))
        tfail("writer did not become healthy at %s", writer_url);
}

static int setup(void **state)
{
    char owner[64], name[32];

    (void)state;
    writer_url = tenv("WRITER_URL");
    if (tstack_pid("nats") < 0)
        tstack_up(); /* a previous run may have left it stopped */
    treset_state();
    start_writer();
    snprintf(owner, sizeof owner, "relay-%d", (int)getpid());
    for (int i = 0; i < ACCOUNTS; i++) {
        snprintf(name, sizeof name, "acc-%d", i);
        tw_open(accounts[i], owner, name, "EUR", 0);
        json_decref(tw_money(accounts[i], "deposits", 1000000, "float"));
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (tstack_pid("nats") < 0)
        tstack_up();
    tstack_unguard(writer_pid);
    assert_int_equal(tsvc_stop(writer_pid, SIGTERM, 10000), 0);
    if (projector_pid > 0) { /* left running by a failed test */
        tstack_unguard(projector_pid);
        tsvc_stop(projector_pid, SIGTERM, 10000);
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}


/* NATS killed: 500 commands are all accepted and wait in the outbox, across a writer restart
 * during the outage; NATS back: each of them reaches the stream once, in per-account version
 * order. */
static void test_nats_outage(void **state)
{
    PGconn *pg = tw_pg();
    struct tw_call *calls = calloc(OUTAGE_COMMANDS, sizeof *calls);
    int64_t wall, t0, t_up, events_before;
    long n;

    (void)state;
    assert_non_null(calls);
    tw_wait_outbox_empty(pg, 15000);
    events_before = tw_scalar(pg, "SELECT count(*) FROM events", NULL, NULL);
    usleep(300000); /* let the server write what it acked */
    tstack_kill("nats", SIGKILL, 10000);

    for (int i = 0; i < OUTAGE_COMMANDS; i++) {
        const char *acc = accounts[i % ACCOUNTS];
        int deposit = i % 3 != 0;
        snprintf(calls[i].path, sizeof calls[i].path, "/accounts/%s/%s", acc, deposit ? "deposits" : "withdrawals");
        snprintf(calls[i].body, sizeof calls[i].body, "{\"amount\":%d,\"description\":\"outage %d\"}", 1 + i % 97, i);
    }
    /* half with the writer that saw NATS go, half with one started while it is away (its
     * relay never connected): a SIGTERM in between must still drain and exit 0 */
    wall = tw_run_batch(writer_url, calls, OUTAGE_COMMANDS / 2, LOAD_THREADS);
    tstack_unguard(writer_pid);
    assert_int_equal(tsvc_stop(writer_pid, SIGTERM, 10000), 0);
    start_writer();
    wall += tw_run_batch(writer_url, calls + OUTAGE_COMMANDS / 2, OUTAGE_COMMANDS - OUTAGE_COMMANDS / 2,
                         LOAD_THREADS);
    for (int i = 0; i < OUTAGE_COMMANDS; i++)
        if (calls[i].status != 201)
            tfail("command %d during the outage: status %d: %s", i, calls[i].status,
                  calls[i].raw != NULL ? calls[i].raw : "(no response)");
    fprintf(stderr, "outage: %d commands accepted in %lld ms with nats down\n", OUTAGE_COMMANDS, (long long)wall);
    /* nothing could be published: all of them wait in the outbox */
    assert_int_equal(tw_outbox_rows(pg), OUTAGE_COMMANDS);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events", NULL, NULL), events_before + OUTAGE_COMMANDS);

    t0 = tnow_ms();
    tstack_up();
    t_up = tnow_ms();
    tw_wait_outbox_empty(pg, 30000);
    fprintf(stderr, "outage: nats started in %lld ms, the outbox drained %lld ms after it listened\n",
            (long long)(t_up - t0), (long long)(tnow_ms() - t_up));
    assert_true(tnow_ms() - t_up < 2000); /* the relay retries its first connect every <= 1 s */
    n = tw_check_stream_exactly_once(pg);
    assert_int_equal(n, events_before + OUTAGE_COMMANDS);
    for (int i = 0; i < ACCOUNTS; i++)
        tw_check_gapless(pg, accounts[i]);
    tw_calls_free(calls, OUTAGE_COMMANDS);
    PQfinish(pg);
}

/* NATS back while the writer stays up: its connections reconnect and the outbox goes at once,
 * not after the relay's sweep age (1 s) and backoff; the relay is woken by the reconnect and
 * sweeps at any age, the publisher after COMMIT resumes and first publishes the older rows it
 * dropped (so each account's events stay in order in the stream). */
static void test_nats_back_publishes_at_once(void **state)
{
    PGconn *pg = tw_pg();
    struct tw_call *calls = calloc(BACK_COMMANDS, sizeof *calls);
    int64_t t_up, drained;

    (void)state;
    assert_non_null(calls);
    tw_wait_outbox_empty(pg, 15000);
    tstack_kill("nats", SIGKILL, 10000);
    for (int i = 0; i < BACK_COMMANDS; i++) {
        snprintf(calls[i].path, sizeof calls[i].path, "/accounts/%s/deposits", accounts[i % ACCOUNTS]);
        snprintf(calls[i].body, sizeof calls[i].body, "{\"amount\":%d,\"description\":\"back %d\"}", 1 + i, i);
    }
    tw_run_batch(writer_url, calls, BACK_COMMANDS, LOAD_THREADS);
    for (int i = 0; i < BACK_COMMANDS; i++)
        assert_int_equal(calls[i].status, 201);
    assert_int_equal(tw_outbox_rows(pg), BACK_COMMANDS);
    /* at once: the rows are younger than the relay's sweep age */
    tstack_up();
    t_up = tnow_ms();
    tw_wait_outbox_empty(pg, 15000);
    drained = tnow_ms() - t_up;
    fprintf(stderr, "nats back: %d rows published %lld ms after it listened\n", BACK_COMMANDS, (long long)drained);
    assert_true(drained < 1000);
    /* and the publisher after COMMIT serves the next commands again */
    for (int i = 0; i < 20; i++)
        json_decref(tw_money(accounts[i % ACCOUNTS], "deposits", 5, "after"));
    tw_wait_outbox_empty(pg, 800); /* the relay would take them only past its 1 s sweep age */
    tw_check_stream_exactly_once(pg);
    tw_calls_free(calls, BACK_COMMANDS);
    PQfinish(pg);
}

/* Clients sending deposits until told to stop; the event ids of the 2xx answers are kept. */
struct load {
    atomic_int stop;
    pthread_mutex_t mu;
    char (*acked)[UUID_STR_SIZE];
    long nacked, cap;
    atomic_long sent;
};

static void *load_client(void *arg)
{
    struct load *l = arg;
    char path[128];

    while (!atomic_load(&l->stop)) {
        struct thttp_resp r;
        long k = atomic_fetch_add(&l->sent, 1);
        json_t *doc;

        snprintf(path, sizeof path, "/accounts/%s/deposits", accounts[k % ACCOUNTS]);
        if (thttp_request(&r, "POST", writer_url, path, "{\"amount\":3,\"description\":\"load\"}", NULL, 5000) == 0 &&
            r.status == 201 && (doc = thttp_json(&r)) != NULL) {
            pthread_mutex_lock(&l->mu);
            if (l->nacked < l->cap && json_string_value(json_object_get(doc, "event_id")) != NULL)
                snprintf(l->acked[l->nacked++], UUID_STR_SIZE, "%s", json_string_value(json_object_get(doc, "event_id")));
            pthread_mutex_unlock(&l->mu);
            json_decref(doc);
        } else if (r.status == 0) {
            usleep(2000); /* the writer is gone: do not spin */
        }
        thttp_resp_release(&r);
    }
    return NULL;
}

/* Outbox rows whose event is already in the stream: what a relay killed between publish and
 * delete leaves behind for its successor to publish again. */
static long published_but_not_deleted(PGconn *pg)
{
    struct tw_msg *msgs = NULL;
    long n = 0, both = 0;
    PGresult *res = PQexec(pg, "SELECT event_id::text FROM outbox");
    const char **ids;

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    tw_stream_read(&msgs, &n);
    ids = malloc(sizeof *ids * (size_t)(n > 0 ? n : 1));
    assert_non_null(ids);
    for (long i = 0; i < n; i++)
        ids[i] = msgs[i].event_id;
    qsort(ids, (size_t)n, sizeof *ids, cmp_str);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *key = PQgetvalue(res, i, 0);
        both += bsearch(&key, ids, (size_t)n, sizeof *ids, cmp_str) != NULL;
    }
    fprintf(stderr, "  outbox %d rows, %ld of them already in the stream (%ld messages)\n", PQntuples(res), both, n);
    free(ids);
    free(msgs);
    PQclear(res);
    return both;
}

/* Waits until a backend of this database waits for a lock in the relay's DELETE FROM outbox;
 * returns its pid. */
static int relay_blocked_in_delete(PGconn *pg, int timeout_ms)
{
    int64_t deadline = tnow_ms() + timeout_ms;

    while (tnow_ms() < deadline) {
        int64_t pid = tw_scalar(pg, "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE datname = "
                                    "current_database() AND wait_event_type = 'Lock' "
                                    "AND query LIKE 'DELETE FROM outbox%'",
                                NULL, NULL);
        if (pid > 0)
            return (int)pid;
        usleep(10000);
    }
    tfail("the relay never blocked in its outbox delete");
}

/* The writer SIGKILLed while its relay sits between publish and outbox delete, under load.
 * The window is made certain: the test holds row locks on outbox rows, so the relay's DELETE
 * of rows JetStream already acked waits; then the writer is killed and its orphaned DELETE
 * cancelled (it never commits, as if the process had died before sending it). The next writer
 * republishes those rows: JetStream's duplicate window drops them (each event once in the
 * stream), the projector's read models equal the fold (no statement entry twice), and no
 * acknowledged command is lost. */
static void test_relay_killed_between_publish_and_delete(void **state)
{
    static const char *const run[] = {"run", NULL};
    PGconn *pg = tw_pg(), *locker = tw_pg();
    PGresult *res = NULL;
    struct load l = {0};
    pthread_t th[LOAD_THREADS];
    long hits;
    int locked = 0, relay_backend;
    struct tcheck_stats st;
    char bin[1024], pidbuf[16];

    (void)state;
    snprintf(bin, sizeof bin, "%s/projector", getenv("CQRS_BIN_DIR") != NULL ? getenv("CQRS_BIN_DIR") : ".");
    if (access(bin, X_OK) != 0)
        tfail("%s is missing: this test needs the projector", bin);
    projector_pid = tsvc_start("projector", run, NULL);
    tstack_guard(projector_pid);
    l.cap = 200000;
    l.acked = calloc((size_t)l.cap, sizeof *l.acked);
    assert_non_null(l.acked);
    pthread_mutex_init(&l.mu, NULL);

    for (int i = 0; i < LOAD_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, load_client, &l), 0);
    usleep(300000);
    /* lock outbox rows the relay has not deleted yet (it reads without locking) */
    for (int64_t deadline = tnow_ms() + 10000; locked == 0 && tnow_ms() < deadline;) {
        PQclear(PQexec(locker, "BEGIN"));
        res = PQexec(locker, "SELECT position FROM outbox ORDER BY position FOR UPDATE");
        assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
        locked = PQntuples(res);
        PQclear(res);
        if (locked == 0) {
            PQclear(PQexec(locker, "ROLLBACK"));
            usleep(2000);
        }
    }
    assert_true(locked > 0);
    relay_backend = relay_blocked_in_delete(pg, 15000);
    usleep(200000); /* more commands in flight */
    tstack_unguard(writer_pid);
    assert_int_equal(tsvc_stop(writer_pid, SIGKILL, 5000), 128 + SIGKILL);
    atomic_store(&l.stop, 1);
    for (int i = 0; i < LOAD_THREADS; i++)
        pthread_join(th[i], NULL);
    /* the dead writer's DELETE must not commit once the locks go */
    snprintf(pidbuf, sizeof pidbuf, "%d", relay_backend);
    assert_int_equal(tw_scalar(pg, "SELECT pg_terminate_backend($1::int)::int", pidbuf, NULL), 1);
    while (tw_scalar(pg, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", pidbuf, NULL) != 0)
        usleep(10000);
    PQclear(PQexec(locker, "ROLLBACK"));
    fprintf(stderr, "kill: %ld commands acknowledged, %d outbox rows were locked\n", l.nacked, locked);
    hits = published_but_not_deleted(pg);
    assert_true(hits > 0);

    start_writer();
    tw_wait_outbox_empty(pg, 30000);
    /* no acknowledged command lost */
    for (long i = 0; i < l.nacked; i++)
        if (tw_scalar(pg, "SELECT count(*) FROM events WHERE event_id = $1::uuid", l.acked[i], NULL) != 1)
            tfail("acknowledged event %s is not in the events table", l.acked[i]);
    tw_check_stream_exactly_once(pg);
    for (int i = 0; i < ACCOUNTS; i++)
        tw_check_gapless(pg, accounts[i]);
    assert_int_equal(tcheck_wait_converged(30000, &st), 0);
    assert_int_equal(st.events, tw_scalar(pg, "SELECT count(*) FROM events", NULL, NULL));

    tstack_unguard(projector_pid);
    assert_int_equal(tsvc_stop(projector_pid, SIGTERM, 10000), 0);
    projector_pid = 0;
    pthread_mutex_destroy(&l.mu);
    free(l.acked);
    PQfinish(locker);
    PQfinish(pg);
}

/* The EVENTS stream deleted while the writer runs (an operator's mistake, a nats-server that
 * lost its store): publishes get "no responders"; the relay must create the stream again
 * rather than retry forever, and the new events reach it. */
static void test_stream_deleted_under_the_relay(void **state)
{
    PGconn *pg = tw_pg();
    struct bus b = {0};
    struct err e = {0};
    jsErrCode jerr = 0;
    natsStatus ns;
    struct tw_msg *msgs = NULL;
    long n = 0;
    int64_t t0;

    (void)state;
    tw_wait_outbox_empty(pg, 15000);
    if (bus_connect(&b, tenv("NATS_URL"), "test-delete-stream", 5000, &e) != ST_OK)
        tfail("connect to nats: %s", e.msg);
    ns = js_DeleteStream(b.js, BUS_STREAM, NULL, &jerr);
    if (ns != NATS_OK)
        tfail("delete stream: %s (%d)", natsStatus_GetText(ns), (int)jerr);
    bus_release(&b);
    for (int i = 0; i < 20; i++)
        json_decref(tw_money(accounts[i % ACCOUNTS], "deposits", 1 + i, "after the stream vanished"));
    t0 = tnow_ms();
    tw_wait_outbox_empty(pg, 20000);
    fprintf(stderr, "stream deleted: the relay re-created it and published 20 events in %lld ms\n",
            (long long)(tnow_ms() - t0));
    tw_stream_read(&msgs, &n);
    assert_int_equal(n, 20);
    free(msgs);
    PQfinish(pg);
}

static long proc_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    FILE *f;
    long utime = 0, stime = 0;
    char *p;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL || fgets(buf, sizeof buf, f) == NULL)
        tfail("read %s", path);
    fclose(f);
    p = strrchr(buf, ')'); /* fields after the command name: state is field 3, utime 14 */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime, &stime) != 2)
        tfail("parse %s", path);
    return utime + stime;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* 1,000 rows this relay cannot decode (a type from a newer writer, a hand edit) move to the
 * dead letters with their reason, once: they hold nothing back (every deposit beside them is
 * published at once), are not retried every round (the writer's CPU stays idle) and are
 * visible in the metrics and `writer dead-letters`. */
static void test_undecodable_rows_move_to_dead_letters(void **state)
{
    PGconn *pg = tw_pg();
    PGresult *res;
    int64_t worst = 0, t0, took[20];
    long ticks, hz = sysconf(_SC_CLK_TCK);
    struct tw_msg *msgs = NULL;
    long n = 0;
    double gauge = -1;
    char out[4096];

    (void)state;
    tw_wait_outbox_empty(pg, 15000);
    res = PQexec(pg, "WITH e AS (INSERT INTO events (event_id, stream_id, stream_version, type, "
                     "schema, data) SELECT gen_random_uuid(), gen_random_uuid(), 1, 'NoSuchType', 1, "
                     "'{}' FROM generate_series(1, 1000) RETURNING position, event_id) "
                     "INSERT INTO outbox (position, event_id) SELECT position, event_id FROM e");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("insert: %s", PQerrorMessage(pg));
    PQclear(res);
    for (int i = 0; i < 20; i++) {
        /* published = acked by JetStream and its outbox row deleted */
        t0 = tnow_ms();
        json_decref(tw_money(accounts[i % ACCOUNTS], "deposits", 1 + i, "beside bad rows"));
        while (tw_scalar(pg, "SELECT count(*) FROM outbox o JOIN events e USING (position) "
                             "WHERE e.type <> 'NoSuchType'", NULL, NULL) > 0) {
            if (tnow_ms() - t0 > 3000)
                tfail("deposit %d still in the outbox after 3 s beside undecodable rows", i);
            usleep(1000);
        }
        took[i] = tnow_ms() - t0;
        if (took[i] > worst)
            worst = took[i];
    }
    qsort(took, 20, sizeof took[0], cmp_i64);
    fprintf(stderr, "beside 1,000 undecodable rows: 20 deposits published, median %lld ms, worst %lld ms\n",
            (long long)took[10], (long long)worst);
    assert_true(took[10] <= 100); /* the goal: within 100 ms */
    assert_true(worst < 1000);    /* room for a loaded machine */
    /* and the bad rows are gone from the outbox, not retried */
    t0 = tnow_ms();
    while (tw_outbox_rows(pg) > 0 && tnow_ms() - t0 < 5000)
        usleep(10000);
    assert_int_equal(tw_outbox_rows(pg), 0);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM outbox_dead_letters WHERE reason LIKE "
                                   "'%unknown event type%'", NULL, NULL), 1000);

    /* nothing retried in a loop: the writer sits idle */
    ticks = proc_cpu_ticks(writer_pid);
    sleep(2);
    ticks = proc_cpu_ticks(writer_pid) - ticks;
    fprintf(stderr, "writer CPU over 2 s with 1,000 dead letters: %ld ms\n", ticks * 1000 / hz);
    assert_true(ticks * 1000 / hz < 200);

    /* visible: the metric (the janitor refreshes it every 5 s) and the CLI */
    t0 = tnow_ms();
    while (tnow_ms() - t0 < 8000 &&
           (gauge = thttp_metric(writer_url, "writer_outbox_dead_letters{service=\"writer\"}")) != 1000)
        usleep(200000);
    assert_true(gauge == 1000);
    assert_int_equal(trun_capture("writer", "dead-letters", out, sizeof out), 0);
    assert_non_null(strstr(out, "1000 dead-lettered events"));
    assert_non_null(strstr(out, "unknown event type 'NoSuchType'"));

    tw_stream_read(&msgs, &n);
    assert_true(n >= 20);
    free(msgs);
    res = PQexec(pg, "DELETE FROM events WHERE type = 'NoSuchType'");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    PQfinish(pg);
}

static int64_t relay_locks(PGconn *pg)
{
    return tw_scalar(pg, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid::text::bigint = "
                         "(8031170163733097593 & 4294967295) AND granted", NULL, NULL);
}

/* A writer whose NATS is unreachable (its NATS_URL a dead port) neither takes nor keeps the
 * outbox lock: a standby writer that reaches NATS publishes. And the active relay, when NATS
 * goes away, releases the lock after RELAY_BUS_GIVEUP_MS. */
static void test_relay_without_nats_yields_the_outbox(void **state)
{
    char port[32], env_port[64], base[64];
    const char *dead_env[] = {"NATS_URL=nats://127.0.0.1:1", env_port, NULL};
    const char *giveup_env[] = {"RELAY_BUS_GIVEUP_MS=1500", NULL};
    PGconn *pg = tw_pg();
    pid_t blind;
    int64_t t0, took;
    json_t *doc;
    char path[128];

    (void)state;
    tw_wait_outbox_empty(pg, 15000);
    /* the stack's writer stops; a writer that cannot reach NATS starts first */
    tstack_unguard(writer_pid);
    assert_int_equal(tsvc_stop(writer_pid, SIGTERM, 10000), 0);
    snprintf(port, sizeof port, "%d", atoi(tenv("WRITER_PORT")) + 7);
    snprintf(env_port, sizeof env_port, "WRITER_PORT=%s", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%s", port);
    blind = tsvc_start("writer", NULL, dead_env);
    tstack_guard(blind);
    if (!twait_http_ok(base, "/healthz", 20000))
        tfail("writer without nats did not start");
    sleep(1);
    assert_int_equal(relay_locks(pg), 0); /* it does not take the outbox it cannot publish */
    snprintf(path, sizeof path, "/accounts/%s/deposits", accounts[0]);
    doc = tw_post(base, path, "{\"amount\":3}", NULL, 201);
    json_decref(doc);
    assert_int_equal(tw_outbox_rows(pg), 1);

    /* a standby with a working NATS: it publishes */
    writer_pid = tsvc_start("writer", NULL, giveup_env);
    tstack_guard(writer_pid);
    if (!twait_http_ok(writer_url, "/healthz", 20000))
        tfail("standby writer did not start");
    t0 = tnow_ms();
    tw_wait_outbox_empty(pg, 10000);
    fprintf(stderr, "relay without nats: the standby published %lld ms after it started\n",
            (long long)(tnow_ms() - t0));
    assert_int_equal(relay_locks(pg), 1);

    /* NATS goes away under the active relay: it lets the lock go within the bound */
    t0 = tnow_ms();
    tstack_kill("nats", SIGKILL, 5000);
    while (relay_locks(pg) != 0 && tnow_ms() - t0 < 10000)
        usleep(50000);
    took = tnow_ms() - t0;
    fprintf(stderr, "relay: outbox lock released %lld ms after nats died (RELAY_BUS_GIVEUP_MS=1500)\n",
            (long long)took);
    assert_int_equal(relay_locks(pg), 0);
    assert_true(took < 6000);
    tstack_up();
    t0 = tnow_ms();
    while (relay_locks(pg) != 1 && tnow_ms() - t0 < 15000)
        usleep(50000);
    assert_int_equal(relay_locks(pg), 1);
    tstack_unguard(blind);
    assert_int_equal(tsvc_stop(blind, SIGTERM, 10000), 0);
    PQfinish(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nats_outage),
        cmocka_unit_test(test_nats_back_publishes_at_once),
        cmocka_unit_test(test_relay_killed_between_publish_and_delete),
        cmocka_unit_test(test_stream_deleted_under_the_relay),
        cmocka_unit_test(test_undecodable_rows_move_to_dead_letters),
        cmocka_unit_test(test_relay_without_nats_yields_the_outbox),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
