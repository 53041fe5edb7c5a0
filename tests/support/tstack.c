/* Test stack processes: pidfiles under STACK_DIR, scripts/stack to restart, a reaper for aborts. */
#include "tstack.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"

#define GUARDED_MAX 16

/* 1: running, 0: gone, -1: dead but not reaped yet (a zombie answers kill(0) all the same,
 * and would fool a liveness check by pid). */
static int proc_state(pid_t pid)
{
    char path[64], st = '?';
    FILE *f;

    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    /* the command name may hold spaces: the state follows the last ')' */
    {
        char buf[512];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        char *rp;
        buf[n] = '\0';
        rp = strrchr(buf, ')');
        if (rp != NULL && rp[1] == ' ')
            st = rp[2];
    }
    fclose(f);
    return st == 'Z' || st == 'X' ? -1 : 1;
}

pid_t tstack_pid(const char *component)
{
    const char *dir = tenv("STACK_DIR");
    char path[1024];
    FILE *f;
    long pid = -1;

    if (dir == NULL)
        tfail("STACK_DIR is not in the stack env file");
    if (strcmp(component, "postgres") == 0) /* the postmaster's own lock file */
        snprintf(path, sizeof path, "%s/pg/postmaster.pid", dir);
    else
        snprintf(path, sizeof path, "%s/run/%s.pid", dir, component);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = -1;
    fclose(f);
    if (pid <= 0 || proc_state((pid_t)pid) != 1)
        return -1;
    return (pid_t)pid;
}

void tstack_kill(const char *component, int sig, int timeout_ms)
{
    pid_t pid = tstack_pid(component);
    int64_t deadline = tnow_ms() + timeout_ms;

    if (pid < 0)
        tfail("stack component '%s' is not running", component);
    if (kill(pid, sig) != 0)
        tfail("kill %s (%d): %s", component, (int)pid, strerror(errno));
    /* not our child: poll until it is gone, reaped too, so that scripts/stack sees it dead;
     * a zombie is accepted only at the deadline */
    for (;;) {
        int ps = proc_state(pid);
        if (ps == 0 || (ps < 0 && tnow_ms() >= deadline))
            return;
        if (tnow_ms() >= deadline)
            break;
        usleep(20000);
    }
    tfail("stack component '%s' (%d) did not stop within %d ms", component, (int)pid, timeout_ms);
}

void tstack_up(void)
{
    const char *src = getenv("CQRS_SOURCE_DIR");
    const char *dir = tenv("STACK_DIR");
    const char *name = tenv("STACK_NAME");
    char cmd[2048];
    int rc;

    if (src == NULL || dir == NULL || name == NULL)
        tfail("CQRS_SOURCE_DIR, STACK_DIR or STACK_NAME is not set");
    snprintf(cmd, sizeof cmd, "'%s/scripts/stack' up --name '%s' >>'%s/logs/test-stack-up.log' 2>&1", src,
             name, dir);
    /* the stack's ports lie in the ephemeral range: under heavy connection churn a client
     * socket may hold one for a moment (bind: address already in use), so try again */
    for (int attempt = 1; attempt <= 4; attempt++) {
        rc = system(cmd);
        if (rc == 0)
            return;
        sleep(1);
    }
    tfail("'%s' failed (%d): see %s/logs/test-stack-up.log", cmd, rc, dir);
}

void tstack_pg_stop_immediate(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D '%s/pg' -m immediate -w stop "
             ">/dev/null 2>&1",
             tenv("STACK_DIR"));
    if (system(cmd) != 0)
        tfail("could not stop postgres");
}

void tstack_ensure_up(void)
{
    if (tstack_pid("nats") < 0 || tstack_pid("redis") < 0 || tstack_pid("postgres") < 0)
        tstack_up();
}

static volatile pid_t guarded[GUARDED_MAX];

static void on_abort(int sig)
{
    for (int i = 0; i < GUARDED_MAX; i++)
        if (guarded[i] > 0)
            kill(guarded[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

void tstack_guard(pid_t pid)
{
    static int installed;

    if (!installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_abort;
        sigaction(SIGABRT, &sa, NULL);
        installed = 1;
    }
    for (int i = 0; i < GUARDED_MAX; i++) {
        if (guarded[i] <= 0) {
            guarded[i] = pid;
            return;
        }
    }
}

void tstack_unguard(pid_t pid)
{
    for (int i = 0; i < GUARDED_MAX; i++)
        if (guarded[i] == pid)
            guarded[i] = 0;
}

void tstack_start_services_within(struct tstack_svcs *s, int ready_timeout_ms)
{
    tsvc_start_all(&s->writer, &s->projector, &s->readapi, ready_timeout_ms);
    tstack_guard(s->writer);
    tstack_guard(s->projector);
    tstack_guard(s->readapi);
}

void tstack_start_services(struct tstack_svcs *s)
{
    tstack_start_services_within(s, 20000);
}

void tstack_stop_services(struct tstack_svcs *s, int projector_timeout_ms)
{
    int readapi, projector, writer;

    tstack_unguard(s->writer);
    tstack_unguard(s->projector);
    tstack_unguard(s->readapi);
    /* SIGTERM must drain and exit 0 */
    readapi = tsvc_stop(s->readapi, SIGTERM, 10000);
    projector = tsvc_stop(s->projector, SIGTERM, projector_timeout_ms);
    writer = tsvc_stop(s->writer, SIGTERM, 10000);
    if (readapi != 0 || projector != 0 || writer != 0)
        tfail("services did not exit 0 on SIGTERM: readapi %d, projector %d (within %d ms), writer %d",
              readapi, projector, projector_timeout_ms, writer);
}

static struct tstack_svcs group_svcs;

int tstack_group_setup(void **state)
{
    tstack_ensure_up();
    treset_state();
    tstack_start_services(&group_svcs);
    *state = &group_svcs;
    return 0;
}

int tstack_group_teardown(void **state)
{
    tstack_stop_services(*state, 10000);
    return 0;
}
