/* Fault suite: mixed commands from several clients while every component is SIGKILLed and
 * restarted in turn; afterwards a checker proves nothing acknowledged was lost or doubled,
 * nothing rejected was written, the read models equal the fold and money is conserved. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "support.h"
#include "tcheck.h"
#include "thttp.h"
#include "tload.h"
#include "tstack.h"
#include "twriter.h"

#define CLIENTS 4
#define READERS 1
#define PROJECTORS 2
#define ATTEMPT_TIMEOUT_MS 3000
#define RETRY_BUDGET_MS 45000 /* a client gives up on a command after this (then: ambiguous) */
#define WARMUP_MS 3000
#define LOAD_BETWEEN_FAULTS_MS 4000
#define DOWN_MS 700           /* how long a killed component stays down before its restart */
#define CONVERGE_TIMEOUT_MS 180000

static const char *writer_url, *readapi_url;
static pid_t writer_pid, readapi_pid, projector_pids[PROJECTORS];

/* ---- faults ---- */

struct fault {
    const char *name;
    int64_t t_kill, t_up;
    struct tload_window w; /* from the kill to the next fault */
};

static pid_t start_projector(void)
{
    static const char *const run[] = {"run", NULL};
    pid_t p = tsvc_start("projector", run, NULL);
    tstack_guard(p);
    return p;
}

static void kill_service(pid_t *pid)
{
    tstack_unguard(*pid);
    tsvc_stop(*pid, SIGKILL, 5000);
    *pid = 0;
}

static void restart_writer(void)
{
    writer_pid = tsvc_start("writer", NULL, NULL);
    tstack_guard(writer_pid);
    if (!twait_http_ok(writer_url, "/healthz", 30000))
        tfail("writer did not come back");
}

static void restart_readapi(void)
{
    readapi_pid = tsvc_start("readapi", NULL, NULL);
    tstack_guard(readapi_pid);
    if (!twait_http_ok(readapi_url, "/healthz", 30000))
        tfail("readapi did not come back");
}

static void redis_wipe(void)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/redis/appendonlydir' '%s/redis/dump.rdb'", tenv("STACK_DIR"),
             tenv("STACK_DIR"));
    if (system(cmd) != 0)
        tfail("'%s' failed", cmd);
}

static void inject(struct fault *f, int which)
{
    f->t_kill = tnow_ms();
    switch (which) {
    case 0:
        f->name = "writer (and its relay) SIGKILL";
        kill_service(&writer_pid);
        usleep(DOWN_MS * 1000);
        restart_writer();
        break;
    case 1:
    case 2:
        f->name = which == 1 ? "projector #1 SIGKILL" : "projector #2 SIGKILL";
        kill_service(&projector_pids[which - 1]);
        usleep(DOWN_MS * 1000);
        projector_pids[which - 1] = start_projector();
        break;
    case 3:
        f->name = "read API SIGKILL";
        kill_service(&readapi_pid);
        usleep(DOWN_MS * 1000);
        restart_readapi();
        break;
    case 4:
        f->name = "nats-server SIGKILL";
        tstack_kill("nats", SIGKILL, 10000);
        usleep(DOWN_MS * 1000);
        tstack_up();
        break;
    case 5:
        f->name = "redis SIGKILL, data kept";
        tstack_kill("redis", SIGKILL, 10000);
        usleep(DOWN_MS * 1000);
        tstack_up();
        break;
    case 6:
        f->name = "redis SIGKILL, restarted empty";
        tstack_kill("redis", SIGKILL, 10000);
        redis_wipe();
        usleep(DOWN_MS * 1000);
        tstack_up();
        break;
    default:
        f->name = "postgres immediate shutdown";
        tstack_pg_stop_immediate();
        usleep(DOWN_MS * 1000);
        tstack_up();
        break;
    }
    f->t_up = tnow_ms();
}

#define NFAULTS 8

static void test_chaos(void **state)
{
    struct fault faults[NFAULTS];
    struct tcheck_stats stats = {0};
    struct tload_report rep;
    struct tload *load;
    struct tload_opts o = {.tag = "chaos", .clients = CLIENTS, .readers = READERS,
                           .attempt_timeout_ms = ATTEMPT_TIMEOUT_MS, .retry_budget_ms = RETRY_BUDGET_MS,
                           .pause_us = 4000};
    int64_t load_t0, load_ms, t_quiet, converge_ms;
    long bad;
    FILE *out;
    char figpath[1100];

    (void)state;
    writer_url = o.writer_url = tenv("WRITER_URL");
    readapi_url = o.readapi_url = tenv("READAPI_URL");
    tstack_ensure_up();
    treset_state();
    writer_pid = 0;
    restart_writer();
    for (int i = 0; i < PROJECTORS; i++)
        projector_pids[i] = start_projector();
    restart_readapi();

    load_t0 = tnow_ms();
    load = tload_start(&o);
    usleep(WARMUP_MS * 1000);
    for (int f = 0; f < NFAULTS; f++) {
        memset(&faults[f], 0, sizeof faults[f]);
        inject(&faults[f], f);
        fprintf(stderr, "chaos: %-34s restored in %lld ms\n", faults[f].name,
                (long long)(faults[f].t_up - faults[f].t_kill));
        usleep(LOAD_BETWEEN_FAULTS_MS * 1000);
    }
    tload_stop(load);
    load_ms = tnow_ms() - load_t0;
    for (int f = 0; f < NFAULTS; f++)
        tload_window(load, faults[f].t_kill, f + 1 < NFAULTS ? faults[f + 1].t_kill : tnow_ms(), &faults[f].w);

    /* quiescence: everything up, then the read side must reach the fold of the event store */
    tstack_ensure_up();
    t_quiet = tnow_ms();
    bad = tcheck_wait_converged(CONVERGE_TIMEOUT_MS, &stats);
    converge_ms = tnow_ms() - t_quiet;
    if (bad != 0)
        tfail("the read models did not converge in %d ms: %ld accounts differ from the fold (a "
              "restart with an empty Redis needs the projector's self-healing rebuild)",
              CONVERGE_TIMEOUT_MS, bad);
    tload_check(load, &rep);

    snprintf(figpath, sizeof figpath, "%s/../chaos-figures.txt", getenv("CQRS_BIN_DIR"));
    out = fopen(figpath, "w");
    for (int pass = 0; pass < 2; pass++) {
        FILE *f = pass == 0 ? stdout : out;
        if (f == NULL)
            continue;
        fprintf(f, "chaos figures (%d clients, %d projectors, load %.1f s)\n", CLIENTS, PROJECTORS, load_ms / 1000.0);
        tload_print(&rep, f);
        fprintf(f, "  faults injected        %d\n", NFAULTS);
        for (int i = 0; i < NFAULTS; i++)
            fprintf(f, "    %-34s restored %5lld ms; writes failed %4ld over %5lld ms; reads failed %4ld over %5lld ms\n",
                    faults[i].name, (long long)(faults[i].t_up - faults[i].t_kill), faults[i].w.w_fail,
                    (long long)faults[i].w.w_outage, faults[i].w.r_fail, (long long)faults[i].w.r_outage);
        fprintf(f, "  time to converge       %lld ms (after the last fault's load)\n", (long long)converge_ms);
        fflush(f);
    }
    if (out != NULL)
        fclose(out);

    assert_int_equal(rep.replays_bad, 0);
    assert_int_equal(rep.reuse_bad, 0);
    assert_int_equal(rep.problems, 0);
    assert_true(rep.money_clients == rep.money_events && rep.money_events == rep.money_write &&
                rep.money_write == rep.money_read);
    assert_true(rep.sent_sum == rep.recv_sum);
    assert_true(rep.final_2xx > 500);

    kill_service(&writer_pid);
    kill_service(&readapi_pid);
    for (int i = 0; i < PROJECTORS; i++) {
        tstack_unguard(projector_pids[i]);
        tsvc_stop(projector_pids[i], SIGTERM, 10000);
    }
    tload_free(load);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chaos),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
