/* HA suite (label ha, on the `--topology ha` stack): a mixed load through haproxy while one
 * machine of each kind is SIGKILLed and brought back in turn (a NATS node, then two, the Redis
 * primary, the Postgres primary, a writer, a read API, a projector). Per fault it prints how
 * long commands and reads failed and the longest staleness a read saw, and asserts the issue's
 * goal for it; afterwards the checker proves nothing acknowledged was lost or doubled, the read
 * models equal the fold of the events table and money is conserved. The stream EVENTS (and the
 * projector's lease bucket) must be at R3. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "event.h"
#include "support.h"
#include "tcheck.h"
#include "thttp.h"
#include "tproj.h"
#include "tload.h"
#include "tstack.h"
#include "twriter.h"

#define CLIENTS 3
#define READERS 2
#define ATTEMPT_TIMEOUT_MS 3000
#define RETRY_BUDGET_MS 60000 /* longer than any failover here: every command gets its answer */
#define WARMUP_MS 3000
#define CONVERGE_TIMEOUT_MS 120000

/* What each fault may cost (the issue's goals): a bound in ms on the time from the first to
 * the last failed attempt, or one of these. The suite prints the measured figures next to them
 * and asserts each goal (and the correctness) after the run. */
#define GOAL_NONE 0        /* no attempt may fail */
#define GOAL_INFLIGHT (-1) /* only attempts in flight at the kill may fail */
#define SERVED_MS 1000     /* "served" while stale: reads may not be unavailable for longer */
#define CAUGHT_UP_MS 5000  /* "projected when quorum returns": staleness at the window's end */
#define HANDOVER_SLACK_MS 2000 /* a killed projector's partitions owned again within lease + this */
#define LEASE_MS_DEFAULT 6000  /* PROJECTOR_LEASE_MS when the stack's env does not set it */

struct fault {
    const char *name;
    void (*kill)(struct fault *f);
    void (*recover)(struct fault *f);
    int down_ms;  /* load while the component is down */
    int after_ms; /* load after it is back */
    int goal_w_ms, goal_r_ms;
    int caught_up; /* the read models must have caught up by the end of the window */
    char victim[32];
    int64_t t_kill, t_back, t_end;
    struct tload_window w, tail;
    /* a projector killed: its pid, the partitions it owned, and when (ms after the kill) no
     * lease named it any more and every partition had an owner (-1: not within the bound) */
    pid_t victim_pid;
    int victim_parts;
    int64_t handover_ms;
};

static int nth_port(const char *key, int n);

static void stack_cmd(const char *what)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/scripts/stack' %s --name '%s' >>'%s/logs/test-stack-up.log' 2>&1",
             getenv("CQRS_SOURCE_DIR"), what, tenv("STACK_NAME"), tenv("STACK_DIR"));
    if (system(cmd) != 0)
        tfail("'scripts/stack %s' failed (see %s/logs/test-stack-up.log)", what, tenv("STACK_DIR"));
}

/* Polls base+path on each port of a list until all answer 200 (or timeout_ms passes). */
static void wait_ports_ok(const char *ports_key, int n, const char *path, int timeout_ms)
{
    for (int i = 0; i < n; i++) {
        char base[64];
        snprintf(base, sizeof base, "http://127.0.0.1:%d", nth_port(ports_key, i));
        if (!twait_http_ok(base, path, timeout_ms))
            tfail("%s%s did not answer 200 within %d ms", base, path, timeout_ms);
    }
}

/* Everything of the topology that is not running started again (the stack's start-missing:
 * servers, keepers, services), then what the killed kind needs before the load goes on. */
static void bring_back(struct fault *f)
{
    stack_cmd("start-missing");
    if (strncmp(f->victim, "nats", 4) == 0)
        wait_ports_ok("NATS_MONITOR_PORTS", 3, "/healthz?js-enabled-only=true", 30000);
    else if (strncmp(f->victim, "writer", 6) == 0)
        wait_ports_ok("WRITER_PORTS", 2, "/readyz", 30000);
    else if (strncmp(f->victim, "readapi", 7) == 0)
        wait_ports_ok("READAPI_PORTS", 2, "/readyz", 30000);
    /* a Postgres node rejoins as the standby by itself (pg_rewind, ~30 s here), a Redis node
     * as a replica, a projector takes its share: the load goes on meanwhile */
}

/* SIGKILL of a component's whole process group: the machine is gone (a pg_autoctl keeper
 * takes its postmaster and backends with it). */
static void kill_group(const char *component)
{
    pid_t pid = tstack_pid(component);
    int64_t deadline = tnow_ms() + 10000;

    if (pid <= 0)
        tfail("%s is not running", component);
    if (kill(-pid, SIGKILL) != 0 && kill(pid, SIGKILL) != 0)
        tfail("kill %s (%d): %s", component, (int)pid, strerror(errno));
    while (tstack_pid(component) > 0 && tnow_ms() < deadline)
        usleep(20000);
}

/* The n-th port (0-based) of a comma-separated list of the env file. */
static int nth_port(const char *key, int n)
{
    const char *p = tenv(key);
    for (int i = 0; p != NULL && i < n; i++) {
        p = strchr(p, ',');
        if (p != NULL)
            p++;
    }
    if (p == NULL)
        tfail("%s has no entry %d", key, n);
    return atoi(p);
}

/* The node (1..3) leading the EVENTS stream, from a node's monitor. */
static int nats_stream_leader(void)
{
    for (int i = 0; i < 3; i++) {
        char base[64];
        struct thttp_resp r;
        json_t *doc, *sd;
        const char *leader;
        int node = 0;
        snprintf(base, sizeof base, "http://127.0.0.1:%d", nth_port("NATS_MONITOR_PORTS", i));
        if (thttp_request(&r, "GET", base, "/jsz?streams=true", NULL, NULL, 2000) != 0 || r.status != 200) {
            thttp_resp_release(&r);
            continue;
        }
        doc = thttp_json(&r);
        sd = json_array_get(json_object_get(json_array_get(json_object_get(doc, "account_details"), 0),
                                            "stream_detail"), 0);
        leader = tw_str(json_object_get(sd, "cluster"), "leader");
        if (leader != NULL && leader[0] == 'n')
            node = atoi(leader + 1);
        json_decref(doc);
        thttp_resp_release(&r);
        if (node >= 1 && node <= 3)
            return node;
    }
    return 1;
}

/* The replicas of a JetStream stream (a KV bucket is the stream KV_<bucket>) from its info;
 * 0 when it does not exist or no node answers. */
static int stream_replicas(const char *stream)
{
    struct bus b = {0};
    struct err e = {0};
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    int n = 0;

    if (bus_connect(&b, tenv("NATS_URL"), "test-ha", 5000, &e) != ST_OK)
        return 0;
    if (js_GetStreamInfo(&si, b.js, stream, NULL, &jerr) == NATS_OK && si != NULL && si->Config != NULL)
        n = (int)si->Config->Replicas;
    jsStreamInfo_Destroy(si);
    bus_release(&b);
    return n;
}

/* stream_replicas once the stream exists (the services create it when they start). */
static int wait_stream_replicas(const char *stream, int timeout_ms)
{
    int64_t deadline = tnow_ms() + timeout_ms;
    int n;
    while ((n = stream_replicas(stream)) == 0 && tnow_ms() < deadline)
        usleep(200000);
    return n;
}

static void kill_nats_one(struct fault *f)
{
    snprintf(f->victim, sizeof f->victim, "nats%d", nats_stream_leader());
    kill_group(f->victim);
}

static void kill_nats_two(struct fault *f)
{
    int a = nats_stream_leader(), b = a % 3 + 1;
    char c[16];

    snprintf(c, sizeof c, "nats%d", a);
    kill_group(c);
    snprintf(c, sizeof c, "nats%d", b);
    kill_group(c);
    snprintf(f->victim, sizeof f->victim, "nats%d+nats%d", a, b);
}

static void kill_redis_primary(struct fault *f)
{
    char host[128];
    int port = 0;
    tsentinel_master(host, sizeof host, &port);
    snprintf(f->victim, sizeof f->victim, "redis%d", port == nth_port("REDIS_NODE_PORTS", 0) ? 1 : 2);
    kill_group(f->victim);
}

static void kill_pg_primary(struct fault *f)
{
    f->victim[0] = '\0';
    for (int i = 0; i < 2; i++) {
        char conninfo[128];
        PGconn *pg;
        snprintf(conninfo, sizeof conninfo, "postgresql://postgres@127.0.0.1:%d/postgres?connect_timeout=2",
                 nth_port("PG_NODE_PORTS", i));
        pg = PQconnectdb(conninfo);
        if (PQstatus(pg) == CONNECTION_OK) {
            PGresult *res = PQexec(pg, "SELECT pg_is_in_recovery()");
            if (PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "f") == 0)
                snprintf(f->victim, sizeof f->victim, "pg%d", i + 1);
            PQclear(res);
        }
        PQfinish(pg);
    }
    if (f->victim[0] == '\0')
        tfail("no Postgres node is the primary");
    kill_group(f->victim);
}

static void kill_writer(struct fault *f)
{
    snprintf(f->victim, sizeof f->victim, "writer1");
    kill_group(f->victim);
}

static void kill_readapi(struct fault *f)
{
    snprintf(f->victim, sizeof f->victim, "readapi1");
    kill_group(f->victim);
}

static int lease_ms(void)
{
    const char *v = tenv("PROJECTOR_LEASE_MS");
    return v != NULL && atoi(v) > 0 ? atoi(v) : LEASE_MS_DEFAULT;
}

/* Partitions whose lease names the worker of pid (its name is <host>-<pid>-<id>); *owned: how
 * many partitions have an owner at all. */
static int parts_of(pid_t pid, int *owned)
{
    char owner[EVENT_PARTITIONS][TPROJ_OWNER_SIZE], tag[24];
    uint64_t epoch[EVENT_PARTITIONS];
    int n = 0;

    *owned = tproj_owners(EVENT_PARTITIONS, owner, epoch);
    snprintf(tag, sizeof tag, "-%ld-", (long)pid);
    for (int p = 0; p < EVENT_PARTITIONS; p++)
        n += strstr(owner[p], tag) != NULL;
    return n;
}

static void kill_projector(struct fault *f)
{
    int owned;

    snprintf(f->victim, sizeof f->victim, "projector1");
    f->victim_pid = tstack_pid(f->victim);
    f->victim_parts = f->victim_pid > 0 ? parts_of(f->victim_pid, &owned) : 0;
    kill_group(f->victim);
}

/* After a projector's kill: polls the lease bucket until no partition names the dead worker
 * and every partition has an owner (the other projector took them over), at most lease + 2 s
 * after the kill. */
static void await_handover(struct fault *f)
{
    int64_t bound = lease_ms() + HANDOVER_SLACK_MS;
    int owned = 0, left;

    f->handover_ms = -1;
    do {
        left = parts_of(f->victim_pid, &owned);
        if (left == 0 && owned == EVENT_PARTITIONS) {
            f->handover_ms = tnow_ms() - f->t_kill;
            return;
        }
        usleep(100000);
    } while (tnow_ms() - f->t_kill <= bound);
    fprintf(stderr, "ha: after %lld ms %d partitions still name the killed projector (pid %ld), %d of %d owned\n",
            (long long)(tnow_ms() - f->t_kill), left, (long)f->victim_pid, owned, EVENT_PARTITIONS);
}

static void fmt_goal(char *buf, size_t len, int goal)
{
    if (goal == GOAL_INFLIGHT)
        snprintf(buf, len, "inflt");
    else if (goal == GOAL_NONE)
        snprintf(buf, len, "none");
    else
        snprintf(buf, len, "<=%d s", goal / 1000);
}

/* Whether a column (failed attempts, those begun after the kill, first-to-last span) met its
 * goal. */
static int goal_met(int goal, long failed, long late, int64_t outage_ms)
{
    if (goal == GOAL_NONE)
        return failed == 0;
    if (goal == GOAL_INFLIGHT)
        return late == 0;
    return outage_ms <= goal;
}

/* Each goal of each fault; returns how many were missed (each printed on o, with the failed
 * attempts of its window). */
static int check_goals(FILE *o, struct tload *load, const struct fault *faults, int n)
{
    int missed = 0;
    for (int i = 0; i < n; i++) {
        const struct fault *f = &faults[i];
        if (!goal_met(f->goal_w_ms, f->w.w_fail, f->w.w_late, f->w.w_outage)) {
            fprintf(o, "  GOAL MISSED: %s: commands failed %ld times (%ld begun after the kill) over %.1f s\n",
                    f->name, f->w.w_fail, f->w.w_late, f->w.w_outage / 1000.0);
            tload_print_failures(load, f->t_kill, f->t_end, o);
            missed++;
        }
        if (!goal_met(f->goal_r_ms, f->w.r_fail, f->w.r_late, f->w.r_outage)) {
            fprintf(o, "  GOAL MISSED: %s: reads failed %ld times (%ld begun after the kill) over %.1f s\n",
                    f->name, f->w.r_fail, f->w.r_late, f->w.r_outage / 1000.0);
            tload_print_failures(load, f->t_kill, f->t_end, o);
            missed++;
        }
        if (f->caught_up && (f->tail.reads == 0 || f->tail.max_stale_ms > CAUGHT_UP_MS)) {
            fprintf(o, "  GOAL MISSED: %s: %ld reads at the end of the window, %.1f s stale at most (bound %d s)\n",
                    f->name, f->tail.reads, f->tail.max_stale_ms / 1000.0, CAUGHT_UP_MS / 1000);
            missed++;
        }
    }
    return missed;
}

static void print_faults(FILE *o, struct fault *faults, int n)
{
    fprintf(o, "  %-26s %-12s %9s %6s %6s %-20s %9s %6s %6s %9s\n", "fault", "victim", "cmds fail", "goal",
            "failed", "(after kill, no ans.)", "reads fail", "goal", "failed", "stale max");
    for (int i = 0; i < n; i++) {
        const struct fault *f = &faults[i];
        char gw[16], gr[16];
        fmt_goal(gw, sizeof gw, f->goal_w_ms);
        fmt_goal(gr, sizeof gr, f->goal_r_ms);
        char span[48] = "";
        if (f->w.w_fail > 0)
            snprintf(span, sizeof span, "%.1f-%.1f s,%ld t/o", f->w.w_first / 1000.0, f->w.w_last / 1000.0,
                     f->w.w_noans);
        fprintf(o, "  %-26s %-12s %7.1f s %6s %6ld %-20s %7.1f s %6s %6ld %7.1f s\n", f->name, f->victim,
                f->w.w_outage / 1000.0, gw, f->w.w_fail, span, f->w.r_outage / 1000.0, gr, f->w.r_fail,
                f->w.max_stale_ms / 1000.0);
    }
}

/* The projector fault's hand-over: when no lease named the killed worker any more. */
static void print_handover(FILE *o, const struct fault *faults, int n)
{
    for (int i = 0; i < n; i++) {
        const struct fault *f = &faults[i];
        if (f->kill != kill_projector || f->t_kill == f->t_end)
            continue;
        fprintf(o, "  projector hand-over    pid %ld owned %d partitions; none named it and all %d owned %lld ms after "
                "the SIGKILL (bound %d ms = lease + %d ms; down %.1f s)\n", (long)f->victim_pid, f->victim_parts,
                EVENT_PARTITIONS, (long long)f->handover_ms, lease_ms() + HANDOVER_SLACK_MS, HANDOVER_SLACK_MS,
                f->down_ms / 1000.0);
    }
}

static void test_ha_faults(void **state)
{
    struct fault faults[] = {
        {"one NATS node (leader)", kill_nats_one, bring_back, 5000, 4000, GOAL_NONE, GOAL_NONE, 0, "", 0, 0, 0, {0}, {0}},
        {"two NATS nodes (quorum)", kill_nats_two, bring_back, 6000, 6000, GOAL_NONE, SERVED_MS, 1, "", 0, 0, 0, {0}, {0}},
        {"Redis primary", kill_redis_primary, bring_back, 7000, 4000, GOAL_NONE, 5000, 0, "", 0, 0, 0, {0}, {0}},
        {"Postgres primary", kill_pg_primary, bring_back, 12000, 4000, 15000, GOAL_NONE, 0, "", 0, 0, 0, {0}, {0}},
        {"one writer", kill_writer, bring_back, 3000, 3000, GOAL_INFLIGHT, GOAL_NONE, 0, "", 0, 0, 0, {0}, {0}},
        {"one read API", kill_readapi, bring_back, 3000, 3000, GOAL_NONE, GOAL_INFLIGHT, 0, "", 0, 0, 0, {0}, {0}},
        {"one projector", kill_projector, bring_back, 3000, 3000, GOAL_NONE, GOAL_NONE, 0, "", 0, 0, 0, {0}, {0}},
    };
    int nfaults = (int)(sizeof faults / sizeof faults[0]);
    struct tload_opts o = {.writer_url = tenv("WRITER_URL"), .readapi_url = tenv("READAPI_URL"), .tag = "ha",
                           .clients = CLIENTS, .readers = READERS, .attempt_timeout_ms = ATTEMPT_TIMEOUT_MS,
                           .retry_budget_ms = RETRY_BUDGET_MS, .pause_us = 5000};
    struct tcheck_stats stats = {0};
    struct tload_report rep;
    struct tload *load;
    int64_t t0 = tnow_ms(), t_quiet, converge_ms;
    long bad;
    int missed = 0, lease_replicas;
    const char *only = getenv("HA_ONLY"); /* a developer's shortcut: the faults whose name has it */
    char figpath[1100];
    FILE *out;

    (void)state;
    /* from a clean slate: services stopped while the stores are emptied */
    stack_cmd("start-missing");
    stack_cmd("services-down");
    treset_state();
    stack_cmd("services-up");
    fprintf(stderr, "ha: stack ready and reset in %.1f s\n", (tnow_ms() - t0) / 1000.0);
    /* every JetStream asset survives the loss of one node: three replicas each */
    assert_int_equal(wait_stream_replicas("EVENTS", 10000), 3);

    load = tload_start(&o);
    usleep(WARMUP_MS * 1000);
    for (int i = 0; i < nfaults; i++) {
        struct fault *f = &faults[i];
        long acked = tload_acked(load);
        if (only != NULL && strstr(f->name, only) == NULL) {
            f->t_kill = f->t_back = f->t_end = tnow_ms();
            continue;
        }
        f->kill(f);
        f->t_kill = tnow_ms(); /* attempts begun before this were in flight at the kill */
        if (f->kill == kill_projector) {
            /* down past the lease: the hand-over is the other projector's doing, not the restart's */
            if (f->down_ms < lease_ms() + HANDOVER_SLACK_MS)
                f->down_ms = lease_ms() + HANDOVER_SLACK_MS;
            await_handover(f);
        }
        if (tnow_ms() - f->t_kill < f->down_ms)
            usleep((useconds_t)(f->down_ms - (tnow_ms() - f->t_kill)) * 1000);
        f->recover(f);
        f->t_back = tnow_ms();
        usleep((useconds_t)f->after_ms * 1000);
        f->t_end = tnow_ms();
        fprintf(stderr, "ha: %-26s %-14s down %5.1f s, back after %5.1f s; %ld commands acknowledged meanwhile\n",
                f->name, f->victim, f->down_ms / 1000.0, (f->t_back - f->t_kill) / 1000.0,
                tload_acked(load) - acked);
    }
    tload_stop(load);
    for (int i = 0; i < nfaults; i++) {
        tload_window(load, faults[i].t_kill, faults[i].t_end, &faults[i].w);
        tload_window(load, faults[i].t_end - 2000, faults[i].t_end, &faults[i].tail);
    }

    stack_cmd("start-missing");
    t_quiet = tnow_ms();
    bad = tcheck_wait_converged(CONVERGE_TIMEOUT_MS, &stats);
    converge_ms = tnow_ms() - t_quiet;
    if (bad != 0)
        tfail("the read models did not converge in %d ms: %ld accounts differ from the fold", CONVERGE_TIMEOUT_MS, bad);
    tload_check(load, &rep);

    snprintf(figpath, sizeof figpath, "%s/../ha-figures.txt", getenv("CQRS_BIN_DIR"));
    out = fopen(figpath, "w");
    for (int pass = 0; pass < 2; pass++) {
        FILE *f = pass == 0 ? stdout : out;
        if (f == NULL)
            continue;
        fprintf(f, "ha figures (%d clients and %d readers through haproxy, whole run %.0f s)\n", CLIENTS,
                READERS, (tnow_ms() - t0) / 1000.0);
        print_faults(f, faults, nfaults);
        missed = check_goals(f, load, faults, nfaults);
        print_handover(f, faults, nfaults);
        tload_print(&rep, f);
        fprintf(f, "  time to converge       %lld ms (after the last fault)\n", (long long)converge_ms);
        fflush(f);
    }
    if (out != NULL)
        fclose(out);

    /* the projector's lease bucket (issue 12), once projectors that use one run: R3 too */
    lease_replicas = stream_replicas("KV_projector_leases");
    fprintf(stderr, "ha: lease bucket projector_leases: %s%d\n", lease_replicas > 0 ? "R" : "absent ", lease_replicas);
    if (lease_replicas != 0)
        assert_int_equal(lease_replicas, 3);
    for (int i = 0; i < nfaults; i++) {
        const struct fault *f = &faults[i];
        if (f->kill != kill_projector || f->t_kill == f->t_end)
            continue;
        assert_true(f->victim_parts > 0); /* the name check found the victim's leases at all */
        assert_true(f->handover_ms >= 0);
    }
    assert_int_equal(missed, 0);
    assert_int_equal(rep.replays_bad, 0);
    assert_int_equal(rep.reuse_bad, 0);
    assert_int_equal(rep.problems, 0);
    assert_int_equal(rep.unanswered, 0);
    assert_true(rep.money_clients == rep.money_events && rep.money_events == rep.money_write &&
                rep.money_write == rep.money_read);
    assert_true(rep.sent_sum == rep.recv_sum);
    assert_true(rep.final_2xx > 200);
    tload_free(load);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ha_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
