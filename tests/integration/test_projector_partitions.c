/* Issue 12: partitions owned through KV leases. In-order load with 1, 2 and 4 workers (gap
 * repairs < 1%), a worker SIGKILLed under load, a worker SIGSTOPped past its lease, workers
 * joining and leaving under load, and Redis restored to an older snapshot. */
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
#include "readmodel.h"
#include "support.h"
#include "tcheck.h"
#include "tgen.h"
#include "tproj.h"

#define ACCOUNTS 300
#define EVENTS 12000
#define LEASE_MS 2000
#define MAXW 4
#define CHUNK 200

static const char *const worker_env[] = {"PROJECTOR_LEASE_MS=2000", "PROJECTOR_BATCH=256", NULL};

static struct tgen_history hist;

/* ---- load: insert a chunk into Postgres, then publish it in order (what writer + relay do) ---- */

struct load {
    pthread_t thread;
    long rate;                 /* events per second */
    _Atomic long published;    /* events published so far (in position order) */
    int64_t *at_ms;            /* publish time of each event */
    atomic_int stop;
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    struct bus b = {0};
    struct err e;
    int64_t t0 = tnow_ms();

    if (bus_connect(&b, tenv("NATS_URL"), "test-load", 10000, &e) != ST_OK || bus_ensure_stream(&b, &e) != ST_OK)
        tfail("nats: %s", e.msg);
    for (long i = 0; i < hist.n && !atomic_load(&l->stop); i += CHUNK) {
        long n = hist.n - i < CHUNK ? hist.n - i : CHUNK;
        int64_t due = t0 + (i * 1000) / l->rate;

        while (tnow_ms() < due)
            usleep(2000);
        tproj_publish(&b, &hist, i, n);
        for (long k = i; k < i + n; k++)
            l->at_ms[k] = tnow_ms();
        atomic_store(&l->published, i + n);
    }
    bus_release(&b);
    return NULL;
}

static void load_start(struct load *l, long rate)
{
    memset(l, 0, sizeof *l);
    l->rate = rate;
    l->at_ms = calloc((size_t)hist.n, sizeof *l->at_ms);
    if (pthread_create(&l->thread, NULL, load_main, l) != 0)
        tfail("load thread");
}

static void load_join(struct load *l)
{
    pthread_join(l->thread, NULL);
    free(l->at_ms);
    l->at_ms = NULL;
}

/* The longest time an event published was not yet visible in the read model, over all accounts:
 * for each account, the publish time of the first published version above the model's. */
static int64_t staleness(redisContext *rc, struct load *l)
{
    long pub = atomic_load(&l->published);
    int64_t now = tnow_ms(), worst = 0;

    for (int a = 0; a < hist.naccounts; a++) {
        redisReply *r = redisCommand(rc, "HGET rm:1:a:{%s} v", hist.accounts[a]);
        long long v = r != NULL && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
        freeReplyObject(r);
        for (long k = 0; k < pub; k++) {
            const struct event *ev = &hist.events[k];
            if (ev->stream_version == v + 1 && strcmp(ev->stream_id, hist.accounts[a]) == 0) {
                if (now - l->at_ms[k] > worst)
                    worst = now - l->at_ms[k];
                break;
            }
        }
    }
    return worst;
}

static void fresh(void)
{
    tgen_fresh_history(&hist, ACCOUNTS, EVENTS, 12); /* the load inserts it chunk by chunk */
    treset_read_side();
    tproj_seed_generation();
}

static void logpath(char *buf, size_t len, const char *test, int i)
{
    snprintf(buf, len, "%s/proj-%s-%d.log", getenv("CQRS_BIN_DIR"), test, i);
}

/* Which workers (by index) own each partition right now; -1 unowned, -2 an unknown name. */
static int owners(char names[][TPROJ_OWNER_SIZE], int nw, int *who)
{
    char owner[EVENT_PARTITIONS][TPROJ_OWNER_SIZE];
    uint64_t epoch[EVENT_PARTITIONS];
    int owned = tproj_owners(EVENT_PARTITIONS, owner, epoch);

    for (int p = 0; p < EVENT_PARTITIONS; p++) {
        who[p] = owner[p][0] == '\0' ? -1 : -2;
        for (int i = 0; i < nw; i++)
            if (strcmp(owner[p], names[i]) == 0)
                who[p] = i;
    }
    return owned;
}

/* Waits (at most 15 s) until both workers own partitions and every partition is owned. */
static void await_shared(char names[][TPROJ_OWNER_SIZE], int *who)
{
    for (int64_t deadline = tnow_ms() + 15000;; usleep(100000)) {
        int n0 = 0, n1 = 0;
        owners(names, 2, who);
        for (int p = 0; p < EVENT_PARTITIONS; p++)
            n0 += who[p] == 0, n1 += who[p] == 1;
        if (n0 > 0 && n1 > 0 && n0 + n1 == EVENT_PARTITIONS)
            return;
        if (tnow_ms() > deadline)
            tfail("the two workers never shared the partitions (%d, %d)", n0, n1);
    }
}

static void worker_name(const char *log, char *name)
{
    int64_t deadline = tnow_ms() + 10000;

    while (!tproj_log_worker(log, name, TPROJ_OWNER_SIZE)) {
        if (tnow_ms() > deadline)
            tfail("no worker name in %s", log);
        usleep(50000);
    }
}

/* ---- 1. in-order load, 1, 2 and 4 workers: exact, gap repairs under 1% ---- */

static void run_in_order(int nw)
{
    char logs[MAXW][256];
    pid_t pids[MAXW];
    struct load l;
    long applied = 0, gaps = 0;
    int64_t t0 = tnow_ms();

    fresh();
    for (int i = 0; i < nw; i++) {
        logpath(logs[i], sizeof logs[i], "inorder", i);
        pids[i] = tproj_spawn(logs[i], worker_env);
    }
    load_start(&l, 4000);
    load_join(&l);
    tcheck_expect_exact("in-order load", 60000);
    for (int i = 0; i < nw; i++) {
        long a, g;
        assert_int_equal(tsvc_stop(pids[i], SIGTERM, 15000), 0);
        a = tproj_log_number(logs[i], "stopping: applied ");
        g = tproj_log_number(logs[i], "events (");
        assert_true(a >= 0 && g >= 0);
        applied += a;
        gaps += g;
    }
    fprintf(stderr, "%d worker(s): %ld events, %ld applied by the partition consumers, %ld from gap "
            "repair (%.2f%%), %lld ms\n", nw, hist.n, applied, gaps, 100.0 * (double)gaps / (double)hist.n,
            (long long)(tnow_ms() - t0));
    assert_true(gaps * 100 < hist.n); /* under 1% */
}

static void test_in_order_one_worker(void **state)
{
    (void)state;
    run_in_order(1);
}

static void test_in_order_two_workers(void **state)
{
    (void)state;
    run_in_order(2);
}

static void test_in_order_four_workers(void **state)
{
    (void)state;
    run_in_order(4);
}

/* ---- 2. SIGKILL under load: re-owned within the lease + 2 s, exact, longest staleness ---- */

static void test_sigkill_under_load(void **state)
{
    char logs[2][256], names[2][TPROJ_OWNER_SIZE];
    pid_t pids[2];
    int who[EVENT_PARTITIONS], victim_parts = 0;
    struct load l;
    redisContext *rc;
    int64_t killed_at, reowned_ms = -1, worst = 0;

    (void)state;
    fresh();
    for (int i = 0; i < 2; i++) {
        logpath(logs[i], sizeof logs[i], "sigkill", i);
        pids[i] = tproj_spawn(logs[i], worker_env);
        worker_name(logs[i], names[i]);
    }
    rc = tredis_open();
    load_start(&l, 1500);
    /* balanced: both own partitions */
    await_shared(names, who);
    usleep(1500000);
    for (int p = 0; p < EVENT_PARTITIONS; p++)
        victim_parts += who[p] == 0;
    killed_at = tnow_ms();
    assert_int_equal(tsvc_stop(pids[0], SIGKILL, 5000), 128 + SIGKILL);
    while (reowned_ms < 0 && tnow_ms() - killed_at < 20000) {
        int all = 1;
        int64_t s = staleness(rc, &l);
        if (s > worst)
            worst = s;
        owners(names, 2, who);
        for (int p = 0; p < EVENT_PARTITIONS; p++)
            all &= who[p] == 1;
        if (all)
            reowned_ms = tnow_ms() - killed_at;
        usleep(100000);
    }
    fprintf(stderr, "SIGKILL: %d partitions of the killed worker owned again after %lld ms (lease %d ms)\n",
            victim_parts, (long long)reowned_ms, LEASE_MS);
    assert_true(reowned_ms >= 0 && reowned_ms <= LEASE_MS + 2000);
    while (atomic_load(&l.published) < hist.n) {
        int64_t s = staleness(rc, &l);
        if (s > worst)
            worst = s;
        usleep(100000);
    }
    load_join(&l);
    tcheck_expect_exact("after the SIGKILL", 60000);
    fprintf(stderr, "SIGKILL: longest staleness any sampled read saw: %lld ms\n", (long long)worst);
    redisFree(rc);
    assert_int_equal(tsvc_stop(pids[1], SIGTERM, 15000), 0);
}

/* ---- 3. SIGSTOP past the lease, then SIGCONT: fenced, nothing applied twice, dropped ---- */

static void test_sigstop_past_lease(void **state)
{
    char logs[2][256], names[2][TPROJ_OWNER_SIZE];
    pid_t pids[2];
    int who[EVENT_PARTITIONS], stopped_parts[EVENT_PARTITIONS], nstopped = 0;
    uint64_t epoch_before[EVENT_PARTITIONS], seq, ep;
    struct load l;
    int64_t t;

    (void)state;
    fresh();
    for (int i = 0; i < 2; i++) {
        logpath(logs[i], sizeof logs[i], "sigstop", i);
        pids[i] = tproj_spawn(logs[i], worker_env);
        worker_name(logs[i], names[i]);
    }
    load_start(&l, 2000);
    await_shared(names, who);
    usleep(1000000);
    owners(names, 2, who);
    for (int p = 0; p < EVENT_PARTITIONS; p++) {
        tproj_part(p, &seq, &epoch_before[p]);
        if (who[p] == 0)
            stopped_parts[nstopped++] = p;
    }
    assert_true(nstopped > 0);
    kill(pids[0], SIGSTOP);
    t = tnow_ms();
    /* the other worker takes every partition over and installs its newer epochs */
    for (;;) {
        int all = 1;
        owners(names, 2, who);
        for (int p = 0; p < EVENT_PARTITIONS; p++)
            all &= who[p] == 1;
        if (all)
            break;
        if (tnow_ms() - t > LEASE_MS + 8000)
            tfail("partitions of the stopped worker not taken over");
        usleep(100000);
    }
    usleep(3 * LEASE_MS * 1000);
    for (int i = 0; i < nstopped; i++) {
        tproj_part(stopped_parts[i], &seq, &ep);
        assert_true(ep > epoch_before[stopped_parts[i]]);
    }
    kill(pids[0], SIGCONT);
    fprintf(stderr, "SIGSTOP: %d partitions, stopped %lld ms, resumed\n", nstopped, (long long)(tnow_ms() - t));
    usleep(3 * LEASE_MS * 1000);
    load_join(&l);
    /* it dropped its partitions (log), holds none (bucket), wrote nothing with its old epoch
     * (every partition still carries the newer epoch), and nothing was applied twice (exact:
     * v == LLEN and every entry equal to the fold) */
    assert_true(tproj_log_count(logs[0], "lost partition") + tproj_log_count(logs[0], "dropping it") >= nstopped);
    fprintf(stderr, "SIGSTOP: the resumed worker logged %ld losses, %ld refusals by a newer epoch in "
            "Redis\n", tproj_log_count(logs[0], "lost partition"), tproj_log_count(logs[0], "superseded") +
            tproj_log_count(logs[0], "is older than"));
    owners(names, 2, who);
    for (int i = 0; i < nstopped; i++) {
        int p = stopped_parts[i];
        tproj_part(p, &seq, &ep);
        assert_true(ep > epoch_before[p]);
    }
    tcheck_expect_exact("after SIGSTOP and SIGCONT", 60000);
    for (int i = 0; i < 2; i++)
        assert_int_equal(tsvc_stop(pids[i], SIGTERM, 15000), 0);
}

/* A write with an older epoch is refused by the apply script itself, whatever the worker does. */
static void test_epoch_refused_by_script(void **state)
{
    redisContext *rc;
    redisReply *r;

    (void)state;
    treset_read_side();
    tproj_seed_generation();
    rc = tredis_open();
    r = redisCommand(rc, "EVAL %s 1 rm:part:3 7 -1 w-new 1", rm_claim_script());
    assert_true(r != NULL && r->type == REDIS_REPLY_ARRAY && r->element[0]->integer == 1);
    freeReplyObject(r);
    /* epoch 5 < 7: refused, nothing written */
    r = redisCommand(rc, "EVAL %s 4 rm:1:checkpoint rm:part:3 rm:1:a:{x} rm:1:s:{x} 5 0 10 1 %s 0 %s 0 1 {} 1 1 e1",
                     rm_apply_script(), "", "");
    assert_true(r != NULL && r->type == REDIS_REPLY_ARRAY && r->element[0]->integer == -1);
    assert_int_equal(r->element[1]->integer, 7);
    freeReplyObject(r);
    assert_int_equal(tredis_count_keys(rc, "rm:1:a:*"), 0);
    /* the claim of an older epoch is refused too */
    r = redisCommand(rc, "EVAL %s 1 rm:part:3 6 -1 w-old 1", rm_claim_script());
    assert_true(r != NULL && r->type == REDIS_REPLY_ARRAY && r->element[0]->integer == -1);
    freeReplyObject(r);
    /* epoch 7: applied, seq recorded */
    r = redisCommand(rc, "EVAL %s 4 rm:1:checkpoint rm:part:3 rm:1:a:{x} rm:1:s:{x} 7 0 10 1 %s 0 %s 0 1 {} 1 1 e1",
                     rm_apply_script(), "", "");
    assert_true(r != NULL && r->type == REDIS_REPLY_ARRAY && r->element[0]->integer == 1);
    assert_int_equal(r->element[2]->integer, 10);
    assert_int_equal(r->element[3]->integer, -1);
    freeReplyObject(r);
    /* a caller expecting seq 20 finds 10: the store went back in time */
    r = redisCommand(rc, "EVAL %s 2 rm:1:checkpoint rm:part:3 7 20 21 1 %s 0 %s", rm_apply_script(), "", "");
    assert_true(r != NULL && r->type == REDIS_REPLY_ARRAY && r->element[0]->integer == -2);
    freeReplyObject(r);
    redisFree(rc);
}

/* ---- 4. joining and leaving under load: one owner each, every partition owned in bound ---- */

struct interval {
    int worker, part;
    int64_t from, to;
    int lost;
};

static int64_t log_ms(const char *line)
{
    int h, m, s, ms;
    if (sscanf(line + 11, "%d:%d:%d.%d", &h, &m, &s, &ms) != 4)
        return -1;
    return ((h * 60 + m) * 60 + s) * 1000LL + ms;
}

/* Claimed..handed over/lost/stopping intervals of one worker's log. */
static int intervals(const char *path, int worker, struct interval *out, int max)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    int n = 0, open_at[EVENT_PARTITIONS];

    for (int p = 0; p < EVENT_PARTITIONS; p++)
        open_at[p] = -1;
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL && n < max) {
        const char *s;
        int p;
        int64_t t = log_ms(line);
        if ((s = strstr(line, "claimed partition ")) != NULL && sscanf(s + 18, "%d", &p) == 1) {
            out[n] = (struct interval){worker, p, t, INT64_MAX, 0};
            open_at[p] = n++;
        } else if (((s = strstr(line, "handed over partition ")) != NULL && sscanf(s + 22, "%d", &p) == 1) ||
                   ((s = strstr(line, "lost partition ")) != NULL && sscanf(s + 15, "%d", &p) == 1)) {
            if (p >= 0 && p < EVENT_PARTITIONS && open_at[p] >= 0) {
                out[open_at[p]].to = t;
                out[open_at[p]].lost = strstr(line, "lost partition") != NULL;
                open_at[p] = -1;
            }
        } else if (strstr(line, "stopping:") != NULL) {
            for (p = 0; p < EVENT_PARTITIONS; p++)
                if (open_at[p] >= 0) {
                    out[open_at[p]].to = t;
                    open_at[p] = -1;
                }
        }
    }
    fclose(f);
    return n;
}

static void test_join_and_leave_under_load(void **state)
{
    char logs[MAXW][256], names[MAXW][TPROJ_OWNER_SIZE];
    pid_t pids[MAXW] = {0};
    int who[EVENT_PARTITIONS], samples = 0, nint = 0, losses = 0;
    int64_t unowned_since[EVENT_PARTITIONS], worst_unowned = 0, next_step, t0;
    static struct interval iv[4096];
    struct load l;
    int step = 0;

    (void)state;
    fresh();
    for (int i = 0; i < MAXW; i++)
        logpath(logs[i], sizeof logs[i], "joinleave", i);
    pids[0] = tproj_spawn(logs[0], worker_env);
    worker_name(logs[0], names[0]);
    load_start(&l, 800);
    t0 = tnow_ms();
    next_step = t0 + 2500;
    for (int p = 0; p < EVENT_PARTITIONS; p++)
        unowned_since[p] = t0;
    /* join 1, 2, 3; then leave 0 (SIGTERM), 2 (SIGTERM); one sample every 100 ms */
    while (step < 6 || tnow_ms() < next_step) {
        int64_t now = tnow_ms();
        if (step < 6 && now >= next_step) {
            if (step < 3) {
                pids[step + 1] = tproj_spawn(logs[step + 1], worker_env);
                worker_name(logs[step + 1], names[step + 1]);
            } else if (step == 3) {
                assert_int_equal(tsvc_stop(pids[0], SIGTERM, 15000), 0);
                pids[0] = 0;
            } else if (step == 4) {
                assert_int_equal(tsvc_stop(pids[2], SIGTERM, 15000), 0);
                pids[2] = 0;
            }
            step++;
            next_step = tnow_ms() + 3000;
        }
        owners(names, MAXW, who);
        samples++;
        now = tnow_ms();
        for (int p = 0; p < EVENT_PARTITIONS; p++) {
            assert_true(who[p] != -2); /* only our workers */
            if (who[p] >= 0) {
                if (unowned_since[p] > 0 && p >= 0 && now - unowned_since[p] > worst_unowned)
                    worst_unowned = now - unowned_since[p];
                unowned_since[p] = 0;
            } else if (unowned_since[p] == 0) {
                unowned_since[p] = now;
            }
        }
        usleep(100000);
    }
    load_join(&l);
    for (int p = 0; p < EVENT_PARTITIONS; p++)
        assert_int_equal(unowned_since[p], 0);
    tcheck_expect_exact("after joins and leaves", 60000);
    for (int i = 0; i < MAXW; i++)
        if (pids[i] > 0)
            assert_int_equal(tsvc_stop(pids[i], SIGTERM, 15000), 0);
    /* no partition ever had two owners acting at once: claimed..handed-over intervals of
     * different workers never overlap (a loss, ended by the lease, is reported) */
    for (int i = 0; i < MAXW; i++)
        nint += intervals(logs[i], i, iv + nint, (int)(sizeof iv / sizeof iv[0]) - nint);
    for (int a = 0; a < nint; a++) {
        losses += iv[a].lost;
        for (int b = 0; b < nint; b++)
            if (iv[a].part == iv[b].part && iv[a].worker != iv[b].worker && !iv[a].lost && !iv[b].lost &&
                iv[a].from < iv[b].to && iv[b].from < iv[a].to)
                tfail("partition %d owned by workers %d and %d at once", iv[a].part, iv[a].worker,
                      iv[b].worker);
    }
    fprintf(stderr, "join/leave: %d samples, %d ownership intervals, %d losses, longest unowned stretch "
            "%lld ms (bound %d ms)\n", samples, nint, losses, (long long)worst_unowned, LEASE_MS + 2000);
    assert_true(worst_unowned <= LEASE_MS + 2000);
}

/* ---- 5. Redis restored to an older snapshot converges, also accounts with no new event ---- */

/* A snapshot of every key (DUMP), put back later in one MULTI (FLUSHDB + RESTORE): what a
 * restore from an older RDB, or a promoted replica that missed writes, looks like to a worker. */
struct snapshot {
    int n;
    char **keys;
    redisReply **dumps;
};

/* A point-in-time copy, like the RDB file a restore would load: writes are paused while the
 * keys are dumped one by one (else an account's document and statement list could come from
 * different script calls, a state no real snapshot holds: the projector rightly stalls such an
 * account as broken). */
static void snapshot_take(redisContext *rc, struct snapshot *sn)
{
    redisReply *keys;

    freeReplyObject(redisCommand(rc, "CLIENT PAUSE 10000 WRITE"));
    keys = redisCommand(rc, "KEYS *");

    assert_true(keys != NULL && keys->type == REDIS_REPLY_ARRAY);
    sn->n = (int)keys->elements;
    sn->keys = calloc((size_t)sn->n + 1, sizeof *sn->keys);
    sn->dumps = calloc((size_t)sn->n + 1, sizeof *sn->dumps);
    for (int i = 0; i < sn->n; i++) {
        sn->keys[i] = strdup(keys->element[i]->str);
        sn->dumps[i] = redisCommand(rc, "DUMP %s", sn->keys[i]);
        assert_true(sn->dumps[i] != NULL);
    }
    freeReplyObject(redisCommand(rc, "CLIENT UNPAUSE"));
    freeReplyObject(keys);
}

static void snapshot_restore(redisContext *rc, struct snapshot *sn)
{
    redisReply *r;

    freeReplyObject(redisCommand(rc, "MULTI"));
    freeReplyObject(redisCommand(rc, "FLUSHDB"));
    for (int i = 0; i < sn->n; i++)
        if (sn->dumps[i]->type == REDIS_REPLY_STRING)
            freeReplyObject(redisCommand(rc, "RESTORE %s 0 %b REPLACE", sn->keys[i], sn->dumps[i]->str,
                                         sn->dumps[i]->len));
    r = redisCommand(rc, "EXEC");
    assert_true(r != NULL && r->type == REDIS_REPLY_ARRAY);
    freeReplyObject(r);
    for (int i = 0; i < sn->n; i++) {
        free(sn->keys[i]);
        freeReplyObject(sn->dumps[i]);
    }
    free(sn->keys);
    free(sn->dumps);
}

static void test_redis_back_in_time(void **state)
{
    char log[256];
    pid_t pid;
    struct load l;
    struct snapshot sn;
    redisContext *rc;

    (void)state;
    fresh();
    logpath(log, sizeof log, "restore", 0);
    pid = tproj_spawn(log, worker_env);
    load_start(&l, 3000);
    while (atomic_load(&l.published) < hist.n / 2)
        usleep(50000);
    rc = tredis_open();
    snapshot_take(rc, &sn); /* the older state */
    load_join(&l);          /* the second half is applied after it */
    tcheck_expect_exact("before the restore", 60000);
    snapshot_restore(rc, &sn); /* back to it, under the running worker */
    redisFree(rc);
    /* no new event arrives: the owner notices the older seq and projects again from it */
    tcheck_expect_exact("after Redis went back to the snapshot", 60000);
    /* the sweep may converge the models first: the owners notice within their idle check (1 s) */
    for (int64_t until = tnow_ms() + 5000; tproj_log_count(log, "went back in time") < 1 && tnow_ms() < until;)
        usleep(100000);
    fprintf(stderr, "restore: the worker logged %ld rewinds\n", tproj_log_count(log, "went back in time"));
    assert_true(tproj_log_count(log, "went back in time") >= 1);
    assert_int_equal(tsvc_stop(pid, SIGTERM, 15000), 0);
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
        cmocka_unit_test(test_epoch_refused_by_script),
        cmocka_unit_test(test_in_order_one_worker),
        cmocka_unit_test(test_in_order_two_workers),
        cmocka_unit_test(test_in_order_four_workers),
        cmocka_unit_test(test_sigkill_under_load),
        cmocka_unit_test(test_sigstop_past_lease),
        cmocka_unit_test(test_join_and_leave_under_load),
        cmocka_unit_test(test_redis_back_in_time),
    };
    if (getenv("CMOCKA_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("CMOCKA_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, teardown);
}
