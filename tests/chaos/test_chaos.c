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
#include "tgen.h"
#include "thttp.h"
#include "tstack.h"
#include "twriter.h"

#define CLIENTS 4
#define READERS 1
#define PROJECTORS 2
#define CMDS_PER_CLIENT 10000 /* a bound on the count; the fault schedule bounds the time */
#define ATTEMPT_TIMEOUT_MS 3000
#define RETRY_BUDGET_MS 45000 /* a client gives up on a command after this (then: ambiguous) */
#define WARMUP_MS 3000
#define LOAD_BETWEEN_FAULTS_MS 4000
#define DOWN_MS 700           /* how long a killed component stays down before its restart */
#define CONVERGE_TIMEOUT_MS 180000
#define ATTEMPTS_MAX 400000

enum kind { K_OPEN, K_DEPOSIT, K_WITHDRAW, K_TRANSFER, K_REVERSE, K_CLOSE, K__COUNT };
static const char *const kind_names[] = {"open", "deposit", "withdraw", "transfer", "reverse", "close"};

/* One command as the client saw it; the final outcome after its retries. */
struct cmd {
    enum kind kind;
    char key[48];
    char path[128];
    char body[320];
    int64_t net;       /* effect on the sum of all balances when it took effect */
    int expect_events; /* events a success writes */
    int status;        /* final status: 0 = timeout after the retry budget */
    char *resp;        /* final body (owned) */
    int attempts;
};

struct target { /* something a reversal may undo */
    char event_id[UUID_STR_SIZE];
    char account[UUID_STR_SIZE];
    int64_t net;
    int legs;
};

struct client {
    int id;
    uint64_t rng;
    struct cmd *cmds;
    int n;
    char own[64][UUID_STR_SIZE];
    int nown;
    struct target targets[64];
    int ntargets;
    long replays_ok, replays_bad, reuse_ok, reuse_bad;
};

struct attempt {
    int64_t t0, t1;
    char svc; /* 'w' writer, 'r' read API */
    char ok;  /* an answer that is not 5xx */
};

static const char *writer_url, *readapi_url;
static atomic_int load_running = 1;
static struct attempt *attempts;
static atomic_long nattempts;
static pthread_mutex_t accounts_mu = PTHREAD_MUTEX_INITIALIZER;
static char shared_accounts[1024][UUID_STR_SIZE];
static int nshared;
static pid_t writer_pid, readapi_pid, projector_pids[PROJECTORS];
static int64_t run_t0;

static void log_attempt(char svc, int64_t t0, int ok)
{
    long i = atomic_fetch_add(&nattempts, 1);
    if (i < ATTEMPTS_MAX)
        attempts[i] = (struct attempt){t0, tnow_ms(), svc, (char)ok};
}

static int64_t rnd(struct client *c, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(tgen_rand(&c->rng) % (uint64_t)(hi - lo + 1));
}

static void share_account(const char *id)
{
    pthread_mutex_lock(&accounts_mu);
    if (nshared < 1024)
        snprintf(shared_accounts[nshared++], UUID_STR_SIZE, "%s", id);
    pthread_mutex_unlock(&accounts_mu);
}

static void random_shared(struct client *c, char out[UUID_STR_SIZE])
{
    pthread_mutex_lock(&accounts_mu);
    if (nshared > 0)
        snprintf(out, UUID_STR_SIZE, "%s", shared_accounts[rnd(c, 0, nshared - 1)]);
    else
        out[0] = '\0';
    pthread_mutex_unlock(&accounts_mu);
}

/* One attempt; returns the status (0: no answer) and the body (owned) in *body. */
static int post_once(const char *path, const char *body, const char *key, char **resp, int *replayed)
{
    struct thttp_resp r;
    char hdr[96], hv[16];
    int64_t t0 = tnow_ms();
    int status;

    snprintf(hdr, sizeof hdr, "Idempotency-Key: %s\r\n", key);
    (void)thttp_request(&r, "POST", writer_url, path, body, hdr, ATTEMPT_TIMEOUT_MS);
    status = r.status;
    log_attempt('w', t0, status != 0 && status < 500);
    if (replayed != NULL)
        *replayed = thttp_header(&r, "Idempotent-Replayed", hv, sizeof hv) != NULL && strcmp(hv, "true") == 0;
    *resp = r.body;
    r.body = NULL;
    thttp_resp_release(&r);
    return status;
}

/* Sends the command, retrying with the same Idempotency-Key after a timeout or a 5xx (what
 * makes a real client's retry safe) until an answer or the retry budget is spent. */
static void execute(struct cmd *cmd)
{
    int64_t start = tnow_ms();
    int backoff = 100;

    for (;;) {
        char *resp = NULL;
        int st = post_once(cmd->path, cmd->body, cmd->key, &resp, NULL);
        cmd->attempts++;
        free(cmd->resp);
        cmd->resp = resp;
        cmd->status = st;
        if ((st != 0 && st < 500) || tnow_ms() - start > RETRY_BUDGET_MS)
            return;
        usleep((useconds_t)backoff * 1000);
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
}

static json_t *resp_json(const struct cmd *cmd)
{
    return cmd->resp != NULL ? json_loads(cmd->resp, 0, NULL) : NULL;
}

static struct cmd *next_cmd(struct client *c, enum kind k)
{
    struct cmd *cmd = &c->cmds[c->n++];
    memset(cmd, 0, sizeof *cmd);
    cmd->kind = k;
    snprintf(cmd->key, sizeof cmd->key, "chaos-%lld-c%d-%d", (long long)run_t0, c->id, c->n);
    cmd->expect_events = 1;
    return cmd;
}

/* After a success: the same key and body again must replay the first answer byte for byte
 * and write nothing; the same key with another body must be refused. */
static void probe_key(struct client *c, const struct cmd *cmd)
{
    char *resp = NULL;
    int replayed = 0, st;

    if (rnd(c, 0, 9) == 0) {
        st = post_once(cmd->path, cmd->body, cmd->key, &resp, &replayed);
        if (st == cmd->status && replayed && resp != NULL && strcmp(resp, cmd->resp) == 0)
            c->replays_ok++;
        else if (st != 0 && st < 500)
            c->replays_bad++, fprintf(stderr, "replay of %s: %d %s (first %d %s)\n", cmd->key, st,
                                      resp ? resp : "", cmd->status, cmd->resp);
        free(resp);
    } else if ((cmd->kind == K_DEPOSIT || cmd->kind == K_WITHDRAW) && rnd(c, 0, 19) == 0) {
        /* a valid body, another request: refused by the key, not by validation */
        resp = NULL;
        st = post_once(cmd->path, "{\"amount\":1,\"description\":\"other body\"}", cmd->key, &resp, NULL);
        if (st == 422 && resp != NULL && strstr(resp, "idempotency_key_reused") != NULL)
            c->reuse_ok++;
        else if (st != 0 && st < 500)
            c->reuse_bad++, fprintf(stderr, "reuse of %s: %d %s\n", cmd->key, st, resp ? resp : "");
        free(resp);
    }
}

static void do_open(struct client *c, int temp)
{
    struct cmd *cmd = next_cmd(c, K_OPEN);
    json_t *doc;

    snprintf(cmd->path, sizeof cmd->path, "/accounts");
    snprintf(cmd->body, sizeof cmd->body,
             "{\"owner\":\"chaos-c%d\",\"name\":\"%s-%d\",\"currency\":\"EUR\",\"overdraft_limit\":%d}",
             c->id, temp ? "tmp" : "acc", c->n, rnd(c, 0, 1) ? 5000 : 0);
    execute(cmd);
    if (cmd->status != 201)
        return;
    doc = resp_json(cmd);
    if (tw_str(doc, "account_id") != NULL) {
        if (temp) {
            /* open and close at once: a successful close */
            char id[UUID_STR_SIZE];
            struct cmd *cl;
            snprintf(id, sizeof id, "%s", tw_str(doc, "account_id"));
            share_account(id);
            cl = next_cmd(c, K_CLOSE);
            snprintf(cl->path, sizeof cl->path, "/accounts/%s/close", id);
            snprintf(cl->body, sizeof cl->body, "{\"reason\":\"chaos\"}");
            execute(cl);
        } else {
            if (c->nown < 64)
                snprintf(c->own[c->nown++], UUID_STR_SIZE, "%s", tw_str(doc, "account_id"));
            share_account(tw_str(doc, "account_id"));
        }
    }
    json_decref(doc);
    probe_key(c, cmd);
}

static void add_target(struct client *c, const char *event_id, const char *account, int64_t net, int legs)
{
    struct target *t;
    if (event_id == NULL || account == NULL)
        return;
    t = &c->targets[c->ntargets < 64 ? c->ntargets++ : (int)rnd(c, 0, 63)];
    snprintf(t->event_id, sizeof t->event_id, "%s", event_id);
    snprintf(t->account, sizeof t->account, "%s", account);
    t->net = net;
    t->legs = legs;
}

static void one_command(struct client *c)
{
    int64_t r = rnd(c, 0, 99);
    const char *acc;
    struct cmd *cmd;
    json_t *doc;

    if (c->nown < 3 || r < 4) {
        do_open(c, 0);
        return;
    }
    if (r < 7) {
        do_open(c, 1);
        return;
    }
    acc = c->own[rnd(c, 0, c->nown - 1)];
    if (r < 40) {
        int64_t a = rnd(c, 1, 10000);
        cmd = next_cmd(c, K_DEPOSIT);
        snprintf(cmd->path, sizeof cmd->path, "/accounts/%s/deposits", acc);
        snprintf(cmd->body, sizeof cmd->body, "{\"amount\":%lld,\"description\":\"d%d\"}", (long long)a, c->n);
        cmd->net = a;
    } else if (r < 60) {
        int64_t a = rnd(c, 1, 6000);
        cmd = next_cmd(c, K_WITHDRAW);
        snprintf(cmd->path, sizeof cmd->path, "/accounts/%s/withdrawals", acc);
        snprintf(cmd->body, sizeof cmd->body, "{\"amount\":%lld,\"description\":\"w%d\"}", (long long)a, c->n);
        cmd->net = -a;
    } else if (r < 85) {
        char to[UUID_STR_SIZE];
        random_shared(c, to);
        if (to[0] == '\0' || strcmp(to, acc) == 0)
            return;
        cmd = next_cmd(c, K_TRANSFER);
        snprintf(cmd->path, sizeof cmd->path, "/transfers");
        snprintf(cmd->body, sizeof cmd->body,
                 "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":%lld,\"description\":\"t%d\"}", acc, to,
                 (long long)rnd(c, 1, 4000), c->n);
        cmd->expect_events = 2;
    } else if (r < 97) {
        struct target *t;
        if (c->ntargets == 0)
            return;
        t = &c->targets[rnd(c, 0, c->ntargets - 1)];
        cmd = next_cmd(c, K_REVERSE);
        snprintf(cmd->path, sizeof cmd->path, "/accounts/%s/reversals", t->account);
        snprintf(cmd->body, sizeof cmd->body, "{\"event_id\":\"%s\",\"reason\":\"r%d\"}", t->event_id, c->n);
        cmd->net = -t->net;
        cmd->expect_events = t->legs;
    } else {
        /* usually refused (balance not zero): a rejection that must write nothing */
        cmd = next_cmd(c, K_CLOSE);
        snprintf(cmd->path, sizeof cmd->path, "/accounts/%s/close", acc);
        snprintf(cmd->body, sizeof cmd->body, "{\"reason\":\"c%d\"}", c->n);
    }
    execute(cmd);
    if (cmd->status / 100 != 2)
        return;
    doc = resp_json(cmd);
    if (cmd->kind == K_DEPOSIT || cmd->kind == K_WITHDRAW)
        add_target(c, tw_str(doc, "event_id"), tw_str(doc, "account_id"), cmd->net, 1);
    else if (cmd->kind == K_TRANSFER)
        add_target(c, tw_str(json_object_get(doc, "from"), "event_id"),
                   tw_str(json_object_get(doc, "from"), "account_id"), 0, 2);
    json_decref(doc);
    probe_key(c, cmd);
}

static void *client_main(void *arg)
{
    struct client *c = arg;

    /* leave room for the commands one_command may add (open + close) */
    while (load_running && c->n < CMDS_PER_CLIENT - 2) {
        one_command(c);
        usleep(4000); /* bounded churn: every request is a new connection from an ephemeral port */
    }
    return NULL;
}

static void *reader_main(void *arg)
{
    uint64_t rng = 77;
    (void)arg;
    while (load_running) {
        char id[UUID_STR_SIZE], path[128];
        struct thttp_resp r;
        int64_t t0 = tnow_ms();
        pthread_mutex_lock(&accounts_mu);
        id[0] = '\0';
        if (nshared > 0)
            snprintf(id, sizeof id, "%s", shared_accounts[tgen_rand(&rng) % (uint64_t)nshared]);
        pthread_mutex_unlock(&accounts_mu);
        if (id[0] == '\0') {
            usleep(20000);
            continue;
        }
        snprintf(path, sizeof path, tgen_rand(&rng) % 2 ? "/accounts/%s" : "/accounts/%s/statement?limit=5", id);
        (void)thttp_request(&r, "GET", readapi_url, path, NULL, NULL, ATTEMPT_TIMEOUT_MS);
        /* 404: not projected yet, a fine answer */
        log_attempt('r', t0, r.status != 0 && r.status < 500);
        thttp_resp_release(&r);
        usleep(10000);
    }
    return NULL;
}

/* ---- faults ---- */

struct fault {
    const char *name;
    int64_t t_kill, t_up;
    long w_fail, r_fail;        /* failed attempts (5xx, no answer) from the kill to the next fault */
    int64_t w_outage, r_outage; /* first failure to last failure in that window, ms */
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

static pid_t postmaster_pid(void)
{
    char path[1024];
    long pid = -1;
    FILE *f;

    snprintf(path, sizeof path, "%s/pg/postmaster.pid", tenv("STACK_DIR"));
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = -1;
    fclose(f);
    return (pid_t)pid;
}

/* Immediate shutdown (what `pg_ctl stop -m immediate` sends): no checkpoint, crash recovery
 * at the next start. */
static void postgres_immediate(void)
{
    pid_t pid = postmaster_pid();
    int64_t deadline = tnow_ms() + 20000;

    if (pid <= 0 || kill(pid, SIGQUIT) != 0)
        tfail("no postmaster to stop (%d): %s", (int)pid, strerror(errno));
    while (kill(pid, 0) == 0 && tnow_ms() < deadline) {
        char st[64] = "", path[64];
        FILE *f;
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        f = fopen(path, "r");
        if (f != NULL) {
            if (fgets(st, sizeof st, f) == NULL)
                st[0] = '\0';
            fclose(f);
        }
        if (strstr(st, ") Z") != NULL)
            break;
        usleep(20000);
    }
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
        postgres_immediate();
        usleep(DOWN_MS * 1000);
        tstack_up();
        break;
    }
    f->t_up = tnow_ms();
}

#define NFAULTS 8

static void impact(struct fault *f, int64_t until)
{
    long n = atomic_load(&nattempts);
    int64_t wf0 = 0, wf1 = 0, rf0 = 0, rf1 = 0;

    if (n > ATTEMPTS_MAX)
        n = ATTEMPTS_MAX;
    for (long i = 0; i < n; i++) {
        const struct attempt *a = &attempts[i];
        if (a->ok || a->t0 < f->t_kill - ATTEMPT_TIMEOUT_MS || a->t0 >= until)
            continue;
        if (a->t1 < f->t_kill)
            continue;
        if (a->svc == 'w') {
            f->w_fail++;
            wf0 = wf0 == 0 || a->t0 < wf0 ? a->t0 : wf0;
            wf1 = a->t1 > wf1 ? a->t1 : wf1;
        } else {
            f->r_fail++;
            rf0 = rf0 == 0 || a->t0 < rf0 ? a->t0 : rf0;
            rf1 = a->t1 > rf1 ? a->t1 : rf1;
        }
    }
    f->w_outage = wf1 > 0 ? wf1 - (wf0 > f->t_kill ? wf0 : f->t_kill) : 0;
    f->r_outage = rf1 > 0 ? rf1 - (rf0 > f->t_kill ? rf0 : f->t_kill) : 0;
}

/* ---- the checker ---- */

struct evrow {
    char key[64];
    char event_id[UUID_STR_SIZE];
    char stream_id[UUID_STR_SIZE];
};

static int cmp_evrow(const void *a, const void *b)
{
    return strcmp(((const struct evrow *)a)->key, ((const struct evrow *)b)->key);
}

static int has_event(const struct evrow *rows, long lo, long hi, const char *field, const char *id)
{
    if (id == NULL)
        return 0;
    for (long i = lo; i < hi; i++)
        if (strcmp(strcmp(field, "event") == 0 ? rows[i].event_id : rows[i].stream_id, id) == 0)
            return 1;
    return 0;
}

/* Every 2xx has exactly its events, once; no 4xx has any; every event belongs to a command. */
static long check_commands(PGconn *pg, struct client *cl, long *ambiguous_landed, long *ambiguous_none,
                           int64_t *client_money)
{
    PGresult *res = PQexec(pg, "SELECT coalesce(metadata->>'idempotency_key', ''), event_id::text, "
                               "stream_id::text FROM events");
    long nrows, bad = 0, matched = 0;
    struct evrow *rows;

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    nrows = PQntuples(res);
    rows = calloc((size_t)nrows + 1, sizeof *rows);
    assert_non_null(rows);
    for (long i = 0; i < nrows; i++) {
        snprintf(rows[i].key, sizeof rows[i].key, "%s", PQgetvalue(res, (int)i, 0));
        snprintf(rows[i].event_id, sizeof rows[i].event_id, "%s", PQgetvalue(res, (int)i, 1));
        snprintf(rows[i].stream_id, sizeof rows[i].stream_id, "%s", PQgetvalue(res, (int)i, 2));
    }
    PQclear(res);
    qsort(rows, (size_t)nrows, sizeof *rows, cmp_evrow);
    *client_money = 0;
    for (int t = 0; t < CLIENTS; t++) {
        for (int i = 0; i < cl[t].n; i++) {
            struct cmd *c = &cl[t].cmds[i];
            struct evrow probe;
            long lo, hi, got;
            json_t *doc;
            snprintf(probe.key, sizeof probe.key, "%s", c->key);
            /* lower bound, then the run of equal keys */
            lo = 0, hi = nrows;
            while (lo < hi) {
                long mid = (lo + hi) / 2;
                if (strcmp(rows[mid].key, probe.key) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (hi = lo; hi < nrows && strcmp(rows[hi].key, probe.key) == 0; hi++)
                ;
            got = hi - lo;
            matched += got;
            if (c->status / 100 == 2) {
                if (got != c->expect_events) {
                    fprintf(stderr, "  %s %s: %d but %ld events (expected %d)\n", kind_names[c->kind],
                            c->key, c->status, got, c->expect_events);
                    bad++;
                    continue;
                }
                doc = resp_json(c);
                if (c->kind == K_OPEN ? !has_event(rows, lo, hi, "stream", tw_str(doc, "account_id"))
                    : c->kind == K_TRANSFER
                        ? !has_event(rows, lo, hi, "event", tw_str(json_object_get(doc, "from"), "event_id")) ||
                              !has_event(rows, lo, hi, "event", tw_str(json_object_get(doc, "to"), "event_id"))
                        : !has_event(rows, lo, hi, "event", tw_str(doc, "event_id"))) {
                    fprintf(stderr, "  %s %s: the answer names events that are not its own: %s\n",
                            kind_names[c->kind], c->key, c->resp);
                    bad++;
                }
                json_decref(doc);
                *client_money += c->net;
            } else if (c->status != 0 && c->status < 500) {
                if (got != 0) {
                    fprintf(stderr, "  %s %s: rejected with %d but %ld events exist\n", kind_names[c->kind],
                            c->key, c->status, got);
                    bad++;
                }
            } else {
                /* no answer within the budget: all of it or none of it */
                if (got != 0 && got != c->expect_events) {
                    fprintf(stderr, "  %s %s: unanswered, and %ld of %d events exist\n", kind_names[c->kind],
                            c->key, got, c->expect_events);
                    bad++;
                } else if (got != 0) {
                    (*ambiguous_landed)++;
                    *client_money += c->net;
                } else {
                    (*ambiguous_none)++;
                }
            }
        }
    }
    if (matched != nrows) {
        fprintf(stderr, "  %ld events belong to no command the clients sent\n", nrows - matched);
        bad++;
    }
    free(rows);
    return bad;
}

/* Each account through the read API: the same balance, version and status as the write side,
 * and a statement with one entry per version, none twice, none missing. */
static long check_read_api(PGconn *pg, int64_t *read_money)
{
    PGresult *res = PQexec(pg, "SELECT account_id::text, balance, version, status FROM accounts");
    long bad = 0;

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    *read_money = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0);
        int64_t balance = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        int64_t version = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        char path[160];
        struct thttp_resp r;
        json_t *doc;
        if (version > 500)
            tfail("account %s has %lld events: more than one statement page", id, (long long)version);
        snprintf(path, sizeof path, "/accounts/%s", id);
        if (thttp_request(&r, "GET", readapi_url, path, NULL, NULL, 5000) != 0 || r.status != 200)
            tfail("GET %s: %d %s", path, r.status, r.body ? r.body : "");
        doc = thttp_json(&r);
        if (tw_int(doc, "balance") != balance || tw_int(doc, "version") != version ||
            tw_str(doc, "status") == NULL || strcmp(tw_str(doc, "status"), PQgetvalue(res, i, 3)) != 0) {
            fprintf(stderr, "  read API %s: %s; write side balance %lld version %lld %s\n", id, r.body,
                    (long long)balance, (long long)version, PQgetvalue(res, i, 3));
            bad++;
        }
        *read_money += tw_int(doc, "balance");
        json_decref(doc);
        thttp_resp_release(&r);

        snprintf(path, sizeof path, "/accounts/%s/statement?limit=500", id);
        if (thttp_request(&r, "GET", readapi_url, path, NULL, NULL, 5000) != 0 || r.status != 200)
            tfail("GET %s: %d", path, r.status);
        doc = thttp_json(&r);
        {
            json_t *entries = json_object_get(doc, "entries");
            size_t n = json_array_size(entries);
            int64_t last_after = 0;
            if ((int64_t)n != version) {
                fprintf(stderr, "  statement %s: %zu entries for version %lld\n", id, n, (long long)version);
                bad++;
            }
            for (size_t k = 0; k < n; k++) {
                json_t *en = json_array_get(entries, k);
                /* newest first: version, version-1, ..., 1 */
                if (tw_int(en, "version") != version - (int64_t)k) {
                    fprintf(stderr, "  statement %s: entry %zu has version %lld (a gap or a repeat)\n", id,
                            k, (long long)tw_int(en, "version"));
                    bad++;
                    break;
                }
                if (k == 0)
                    last_after = tw_int(en, "balance_after");
            }
            if (n > 0 && last_after != balance) {
                fprintf(stderr, "  statement %s: newest balance_after %lld, balance %lld\n", id,
                        (long long)last_after, (long long)balance);
                bad++;
            }
        }
        json_decref(doc);
        thttp_resp_release(&r);
    }
    PQclear(res);
    return bad;
}

static void ensure_all_running(void)
{
    if (tstack_pid("nats") < 0 || tstack_pid("redis") < 0 || postmaster_pid() <= 0 || kill(postmaster_pid(), 0) != 0)
        tstack_up();
}

static void test_chaos(void **state)
{
    struct client cl[CLIENTS];
    pthread_t th[CLIENTS], rth[READERS];
    struct fault faults[NFAULTS];
    struct tcheck_stats stats = {0};
    struct tw_counts counts;
    PGconn *pg;
    long sent = 0, attempts_total, a2xx = 0, a4xx = 0, afail = 0, f2xx = 0, f4xx = 0, funans = 0;
    long amb_landed = 0, amb_none = 0, bad, replays_ok = 0, replays_bad = 0, reuse_ok = 0, reuse_bad = 0;
    long per_kind[K__COUNT][2] = {{0}};
    int64_t load_t0, load_ms, t_quiet, converge_ms, client_money = 0, read_money = 0;
    int64_t ev_money, write_money, sent_sum, recv_sum;
    long r_attempts = 0, r_fail = 0;
    FILE *out;
    char figpath[1100];

    (void)state;
    writer_url = tenv("WRITER_URL");
    readapi_url = tenv("READAPI_URL");
    run_t0 = (int64_t)time(NULL);
    attempts = calloc(ATTEMPTS_MAX, sizeof *attempts);
    assert_non_null(attempts);
    ensure_all_running();
    treset_state();
    writer_pid = 0;
    restart_writer();
    for (int i = 0; i < PROJECTORS; i++)
        projector_pids[i] = start_projector();
    restart_readapi();

    memset(cl, 0, sizeof cl);
    load_t0 = tnow_ms();
    for (int i = 0; i < CLIENTS; i++) {
        cl[i].id = i;
        cl[i].rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1) ^ (uint64_t)run_t0;
        cl[i].cmds = calloc(CMDS_PER_CLIENT, sizeof *cl[i].cmds);
        assert_non_null(cl[i].cmds);
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_create(&rth[i], NULL, reader_main, NULL), 0);

    usleep(WARMUP_MS * 1000);
    for (int f = 0; f < NFAULTS; f++) {
        memset(&faults[f], 0, sizeof faults[f]);
        inject(&faults[f], f);
        fprintf(stderr, "chaos: %-34s restored in %lld ms\n", faults[f].name,
                (long long)(faults[f].t_up - faults[f].t_kill));
        usleep(LOAD_BETWEEN_FAULTS_MS * 1000);
    }
    for (int i = 0; i < CLIENTS; i++)
        if (cl[i].n >= CMDS_PER_CLIENT - 2)
            tfail("client %d ran out of commands before the last fault: raise CMDS_PER_CLIENT", i);
    load_running = 0;
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < READERS; i++)
        pthread_join(rth[i], NULL);
    load_ms = tnow_ms() - load_t0;
    for (int f = 0; f < NFAULTS; f++)
        impact(&faults[f], f + 1 < NFAULTS ? faults[f + 1].t_kill : tnow_ms());

    /* quiescence: everything up, then the read side must reach the fold of the event store */
    ensure_all_running();
    t_quiet = tnow_ms();
    bad = tcheck_wait_converged(CONVERGE_TIMEOUT_MS, &stats);
    converge_ms = tnow_ms() - t_quiet;
    if (bad != 0)
        tfail("the read models did not converge in %d ms: %ld accounts differ from the fold (a "
              "restart with an empty Redis needs the projector's self-healing rebuild)",
              CONVERGE_TIMEOUT_MS, bad);

    pg = tw_pg();
    bad = check_commands(pg, cl, &amb_landed, &amb_none, &client_money);
    /* versions: 1..n per account, no gap, no repeat */
    bad += tw_scalar(pg, "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                         "HAVING min(stream_version) <> 1 OR max(stream_version) <> count(*) "
                         "OR count(DISTINCT stream_version) <> count(*)) g", NULL, NULL);
    bad += tw_scalar(pg, "SELECT count(*) FROM accounts a WHERE version <> (SELECT count(*) FROM events e "
                         "WHERE e.stream_id = a.account_id)", NULL, NULL);
    bad += check_read_api(pg, &read_money);
    ev_money = tw_scalar(pg, "SELECT coalesce(sum(CASE type WHEN 'MoneyDeposited' THEN (data->>'amount')::bigint "
                             "WHEN 'MoneyWithdrawn' THEN -(data->>'amount')::bigint "
                             "WHEN 'TransactionReversed' THEN (data->>'amount')::bigint "
                             "WHEN 'TransferSent' THEN -(data->>'amount')::bigint "
                             "WHEN 'TransferReceived' THEN (data->>'amount')::bigint ELSE 0 END), 0) FROM events",
                         NULL, NULL);
    sent_sum = tw_scalar(pg, "SELECT coalesce(sum((data->>'amount')::bigint), 0) FROM events WHERE type = 'TransferSent'",
                         NULL, NULL);
    recv_sum = tw_scalar(pg, "SELECT coalesce(sum((data->>'amount')::bigint), 0) FROM events WHERE type = 'TransferReceived'",
                         NULL, NULL);
    write_money = tw_scalar(pg, "SELECT coalesce(sum(balance), 0) FROM accounts", NULL, NULL);
    tw_counts(pg, &counts);
    PQfinish(pg);

    for (int t = 0; t < CLIENTS; t++) {
        sent += cl[t].n;
        replays_ok += cl[t].replays_ok;
        replays_bad += cl[t].replays_bad;
        reuse_ok += cl[t].reuse_ok;
        reuse_bad += cl[t].reuse_bad;
        for (int i = 0; i < cl[t].n; i++) {
            const struct cmd *c = &cl[t].cmds[i];
            if (c->status / 100 == 2)
                f2xx++, per_kind[c->kind][0]++;
            else if (c->status != 0 && c->status < 500)
                f4xx++, per_kind[c->kind][1]++;
            else
                funans++;
        }
    }
    attempts_total = atomic_load(&nattempts);
    for (long i = 0; i < attempts_total && i < ATTEMPTS_MAX; i++) {
        if (attempts[i].svc == 'r') {
            r_attempts++;
            r_fail += !attempts[i].ok;
        } else if (!attempts[i].ok) {
            afail++;
        }
    }
    a2xx = f2xx;
    a4xx = f4xx;

    snprintf(figpath, sizeof figpath, "%s/../chaos-figures.txt", getenv("CQRS_BIN_DIR"));
    out = fopen(figpath, "w");
    for (int pass = 0; pass < 2; pass++) {
        FILE *o = pass == 0 ? stdout : out;
        if (o == NULL)
            continue;
        fprintf(o, "chaos figures (%d clients, %d projectors, load %.1f s)\n", CLIENTS, PROJECTORS, load_ms / 1000.0);
        fprintf(o, "  commands sent          %ld (%ld HTTP attempts to the writer incl. retries and key probes)\n",
                sent, attempts_total - r_attempts);
        fprintf(o, "  final 2xx              %ld\n", a2xx);
        fprintf(o, "  final 4xx              %ld (business rejections)\n", a4xx);
        fprintf(o, "  final 5xx/timeout      %ld (retry budget %d s spent; %ld landed, %ld did not)\n", funans,
                RETRY_BUDGET_MS / 1000, amb_landed, amb_none);
        fprintf(o, "  5xx/timeout attempts   %ld (retried with the same Idempotency-Key)\n", afail);
        for (int k = 0; k < K__COUNT; k++)
            fprintf(o, "    %-9s 2xx %5ld  4xx %5ld\n", kind_names[k], per_kind[k][0], per_kind[k][1]);
        fprintf(o, "  key replays            %ld identical, %ld wrong; key reuse refused %ld, wrong %ld\n",
                replays_ok, replays_bad, reuse_ok, reuse_bad);
        fprintf(o, "  reads                  %ld (%ld 5xx/timeout)\n", r_attempts, r_fail);
        fprintf(o, "  faults injected        %d\n", NFAULTS);
        for (int f = 0; f < NFAULTS; f++)
            fprintf(o, "    %-34s restored %5lld ms; writes failed %4ld over %5lld ms; reads failed %4ld over %5lld ms\n",
                    faults[f].name, (long long)(faults[f].t_up - faults[f].t_kill), faults[f].w_fail,
                    (long long)faults[f].w_outage, faults[f].r_fail, (long long)faults[f].r_outage);
        fprintf(o, "  time to converge       %lld ms (after the last fault's load)\n", (long long)converge_ms);
        fprintf(o, "  event store            %ld events, %ld accounts, %lld idempotency keys\n", stats.events,
                stats.accounts, (long long)counts.idempotency_keys);
        fprintf(o, "  money                  clients %lld, events %lld, write side %lld, read API %lld; "
                   "transfers sent %lld = received %lld\n",
                (long long)client_money, (long long)ev_money, (long long)write_money, (long long)read_money,
                (long long)sent_sum, (long long)recv_sum);
        fprintf(o, "  checker                %ld problems\n", bad);
        fflush(o);
    }
    if (out != NULL)
        fclose(out);

    assert_int_equal(replays_bad, 0);
    assert_int_equal(reuse_bad, 0);
    assert_int_equal(bad, 0);
    assert_true(client_money == ev_money && ev_money == write_money && write_money == read_money);
    assert_true(sent_sum == recv_sum);
    assert_true(f2xx > 500);

    kill_service(&writer_pid);
    kill_service(&readapi_pid);
    for (int i = 0; i < PROJECTORS; i++) {
        tstack_unguard(projector_pids[i]);
        tsvc_stop(projector_pids[i], SIGTERM, 10000);
    }
    for (int t = 0; t < CLIENTS; t++) {
        for (int i = 0; i < cl[t].n; i++)
            free(cl[t].cmds[i].resp);
        free(cl[t].cmds);
    }
    free(attempts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chaos),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
