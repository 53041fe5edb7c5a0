/* Group commit.
 * Deposits, withdrawals, closes and transfers, with or without an Idempotency-Key, that arrive
 * while a batch is in flight queue up; the committer thread takes the queue and
 * runs it as one transaction in two round trips (BEGIN + locks + key claims + positions, then
 * events/outbox/accounts + the keys' responses + COMMIT), so N
 * concurrent commands share one WAL flush. A key used before (a replay) or twice in the batch
 * runs on its own, where the one-command path answers the replay. Every guarantee of the one-command path holds:
 * decisions run in arrival order on the locked rows, so per-account serialisation and If-Match
 * see each earlier command of the batch; a rejected command adds nothing; a reply is released
 * only after the COMMIT. A batch that fails for a definite reason (a constraint, a deadlock)
 * is rolled back and each command is run again on its own, so one command never fails another;
 * so does a command whose account another session holds (the batch skips that row). A batch
 * whose COMMIT answer is lost looks for its events in the store (outcome.h) and answers that. */
#include "group.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "grouptx.h"
#include "idem.h"
#include "outcome.h"
#include "reply.h"
#include "single.h"
#include "sql.h"
#include "wmetrics.h"

#define BATCH_MAX 128

struct group {
    struct pool *pool;
    struct fastpub *pub;
    pthread_mutex_t qmu;
    pthread_cond_t queued;         /* the committer: something was queued, or stop */
    struct pending *qhead, *qtail; /* queued commands */
    bool stop;
    bool started;
    pthread_t committer;
    int delay_us; /* GROUP_COMMIT_DELAY_US */
    int last_n;   /* commands in the committer's last batch */
};

static void *committer_main(void *arg);

status group_create(struct group **out, struct pool *p, struct fastpub *pub, struct err *e)
{
    struct group *b = calloc(1, sizeof *b);

    *out = NULL;
    if (b == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    b->pool = p;
    b->pub = pub;
    b->delay_us = pool_cfg(p)->group_commit_delay_us;
    pthread_mutex_init(&b->qmu, NULL);
    pthread_cond_init(&b->queued, NULL);
    /* One batch at a time (one committer thread): the next one fills up while it runs, which
     * keeps the batches (and the saving) large; the other connections of the pool serve the
     * commands that run alone. Two in flight (the next batch forming while the first one's WAL
     * flush runs, which the leader/follower group commit before the committer thread allowed)
     * cost more than they hid on 2 cores: the
     * second batch formed with whatever had queued (31% of the batches held one command) and
     * found rows the first one still held, whose commands then ran alone, each a transaction
     * and a WAL flush of its own. In alternating `BENCH_ONLY=writer bench/run --quick` runs
     * one batch at a time did 8,466/8,681/6,776/6,911 deposits/s against 7,634/8,080/5,853/6,675,
     * end-to-end p50 3.9-4.9 ms against 6.1-10.1 ms, Postgres 58-60 us of CPU per deposit
     * against 91-96 us. Four fully concurrent batches were slower still (docs/benchmarks.md). */
    if (pthread_create(&b->committer, NULL, committer_main, b) != 0) {
        group_free(&b);
        return err_set(e, ST_INTERNAL, "unable to start the group commit thread");
    }
    b->started = true;
    *out = b;
    return ST_OK;
}

void group_free(struct group **bp)
{
    struct group *b = *bp;

    if (b == NULL)
        return;
    if (b->started) { /* the queue is run to its end first */
        pthread_mutex_lock(&b->qmu);
        b->stop = true;
        pthread_cond_signal(&b->queued);
        pthread_mutex_unlock(&b->qmu);
        pthread_join(b->committer, NULL);
    }
    pthread_cond_destroy(&b->queued);
    pthread_mutex_destroy(&b->qmu);
    free(b);
    *bp = NULL;
}

/* Answers every decided command of a committed batch, its events handed to the publisher
 * first (they are on their way while the replies go out); pub NULL: the relay publishes them
 * from the outbox. */
static void answer_committed(struct fastpub *pub, uint64_t ticket, struct pending **batch, int n)
{
    const struct event *evs[BATCH_MAX * DECISION_MAX] = {NULL};
    int nev = 0;

    for (int i = 0; i < n; i++)
        for (int k = 0; batch[i]->decided && k < batch[i]->d.count; k++)
            evs[nev++] = &batch[i]->d.events[k];
    fastpub_offer(pub, ticket, evs, nev);
    for (int i = 0; i < n; i++)
        if (batch[i]->decided && batch[i]->out->body == NULL) { /* keyed: built before COMMIT */
            batch[i]->st = reply_build(batch[i]->c, &batch[i]->d, batch[i]->out, batch[i]->e);
            if (batch[i]->st != ST_OK) {
                free(batch[i]->out->body);
                memset(batch[i]->out, 0, sizeof *batch[i]->out);
            }
        }
}

/* Answers the decided commands with one error (their rejections and "alone" marks stand). */
static void answer_decided(struct pending **batch, int n, const struct err *e)
{
    for (int i = 0; i < n; i++)
        if (batch[i]->decided) {
            *batch[i]->e = *e;
            batch[i]->st = e->code;
        }
}

static void run_batch(struct group *s, struct pending **batch, int n)
{
    const struct cfg *cfg = pool_cfg(s->pool);
    struct pool_slot *sl = NULL;
    struct err be = {0};
    enum grouptx_end end = GTX_NOT_COMMITTED;
    char xid[32] = "", *event_ids = NULL;
    uint64_t ticket = 0;
    PGresult *positions = NULL;
    struct err re = {0};

    for (int i = 0; i < n; i++) {
        batch[i]->decided = batch[i]->alone = batch[i]->claimed = false;
        batch[i]->st = ST_OK;
    }
    wm_batch(n);
    if (pool_checkout(s->pool, &sl, &be) != ST_OK) {
        /* nothing was sent: every command gets the 503 (pool exhausted, no connection) */
        for (int i = 0; i < n; i++) {
            *batch[i]->e = be;
            batch[i]->st = be.code;
        }
        return;
    }
    end = grouptx_run(sl->conn, batch, n, s->pub == NULL, NULL, NULL, s->pub, &ticket, xid, sizeof xid,
                      &event_ids, &be);
    if (PQpipelineStatus(sl->conn) != PQ_PIPELINE_OFF) {
        pool_discard(sl); /* left mid-pipeline: not reusable */
    } else if (end != GTX_COMMIT_LOST && PQtransactionStatus(sl->conn) != PQTRANS_IDLE) {
        PGresult *res = PQexec(sl->conn, "ROLLBACK");
        PQclear(res);
    }
    pool_checkin(s->pool, sl);

    switch (end) {
    case GTX_COMMITTED:
        answer_committed(s->pub, ticket, batch, n);
        break;
    case GTX_NOT_COMMITTED:
        fastpub_release(s->pub, ticket);
        /* certainly nothing written: each runs on its own, so no command fails another */
        for (int i = 0; i < n; i++) {
            err_clear(batch[i]->e);
            free(batch[i]->out->body); /* a keyed reply built before a COMMIT that failed */
            memset(batch[i]->out, 0, sizeof *batch[i]->out);
            batch[i]->decided = false;
            batch[i]->alone = true;
        }
        break;
    case GTX_COMMIT_LOST: {
        int nev = 0;
        /* whatever commits next on these accounts waits for the outbox's older rows (those
         * of this batch, if it committed) */
        fastpub_missed(s->pub);
        fastpub_release(s->pub, ticket); /* later commits need not wait for the answer */
        for (int i = 0; i < n; i++)
            nev += batch[i]->decided ? batch[i]->d.count : 0;
        switch (outcome_resolve(cfg->database_url, xid, event_ids, nev, &positions, cfg->outcome_wait_ms, &re)) {
        case OUTCOME_COMMITTED:
            /* found in the store; still, only what is read back from its outbox is published */
            grouptx_positions(batch, n, positions);
            answer_committed(NULL, 0, batch, n);
            fastpub_missed(s->pub);
            break;
        case OUTCOME_ABORTED: {
            struct err ae = {0};
            err_setr(&ae, ST_UNAVAILABLE, "store_unavailable", "batch commit answer lost (%s), not committed: %s",
                     be.msg, re.msg);
            answer_decided(batch, n, &ae);
            break;
        }
        default: {
            struct err ue = {0};
            err_setr(&ue, ST_INTERNAL, "outcome_unknown", "batch commit answer lost (%s): %s", be.msg, re.msg);
            answer_decided(batch, n, &ue);
            break;
        }
        }
        break;
    }
    case GTX_COMMITTED_WRONG:
        fastpub_missed(s->pub); /* its rows are in the outbox: before later events */
        fastpub_release(s->pub, ticket);
        answer_decided(batch, n, &be);
        break;
    }
    PQclear(positions);
    free(event_ids);
}

bool group_accepts(const struct command *c, const struct store_meta *m)
{
    (void)m; /* with or without an Idempotency-Key */
    return c->kind == CMD_DEPOSIT || c->kind == CMD_WITHDRAW || c->kind == CMD_CLOSE ||
           c->kind == CMD_TRANSFER;
}

/* Takes the queue, up to BATCH_MAX at a time, and runs it as a batch; each command's finish
 * is called once its batch ended (not touched afterwards: it may free the command). */
static void *committer_main(void *arg)
{
    struct group *s = arg;
    struct pending *batch[BATCH_MAX];

    pthread_mutex_lock(&s->qmu);
    for (;;) {
        int n = 0;
        while (s->qhead == NULL && !s->stop)
            pthread_cond_wait(&s->queued, &s->qmu);
        if (s->qhead == NULL)
            break;
        if (s->delay_us > 0 && s->last_n > 1 && !s->stop) {
            /* commands come together: let more join this batch (Postgres's commit_delay) */
            struct timespec d = {0, (long)s->delay_us * 1000L};
            pthread_mutex_unlock(&s->qmu);
            nanosleep(&d, NULL);
            pthread_mutex_lock(&s->qmu);
        }
        while (s->qhead != NULL && n < BATCH_MAX) {
            batch[n++] = s->qhead;
            s->qhead = s->qhead->next;
        }
        if (s->qhead == NULL)
            s->qtail = NULL;
        pthread_mutex_unlock(&s->qmu);
        s->last_n = n;
        run_batch(s, batch, n);
        for (int i = 0; i < n; i++)
            batch[i]->finish(batch[i]);
        pthread_mutex_lock(&s->qmu);
    }
    pthread_mutex_unlock(&s->qmu);
    return NULL;
}

status group_submit(struct group *s, struct pending *p)
{
    memset(p->out, 0, sizeof *p->out);
    p->retention_s = pool_cfg(s->pool)->idempotency_retention_s;
    p->request = NULL;
    p->next = NULL;
    p->done = false;
    if (p->m->idempotency_key != NULL) {
        /* canonical JSON in the caller's thread, not the committer's */
        p->request = idem_request_text(p->m);
        if (p->request == NULL)
            return err_set(p->e, ST_INTERNAL, "out of memory");
    }
    pthread_mutex_lock(&s->qmu);
    if (s->qtail != NULL)
        s->qtail->next = p;
    else
        s->qhead = p;
    s->qtail = p;
    pthread_cond_signal(&s->queued);
    pthread_mutex_unlock(&s->qmu);
    return ST_OK;
}

void group_pending_release(struct pending *p)
{
    free(p->request);
    p->request = NULL;
}

/* group_execute's finish: wakes its caller. */
static void wake_caller(struct pending *p)
{
    struct group *s = p->arg;

    pthread_mutex_lock(&s->qmu);
    p->done = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&s->qmu);
}

status group_execute(struct group *s, const struct command *c, const struct store_meta *m,
                     struct store_reply *out, struct err *e)
{
    struct pending p;

    memset(&p, 0, sizeof p);
    p.c = c;
    p.m = m;
    p.out = out;
    p.e = e;
    p.finish = wake_caller;
    p.arg = s;
    /* before the submit: the committer may finish p (and signal cv) before it returns */
    pthread_cond_init(&p.cv, NULL);
    if (group_submit(s, &p) != ST_OK) {
        pthread_cond_destroy(&p.cv);
        return e->code;
    }
    pthread_mutex_lock(&s->qmu);
    while (!p.done)
        pthread_cond_wait(&p.cv, &s->qmu);
    pthread_mutex_unlock(&s->qmu);
    pthread_cond_destroy(&p.cv);
    group_pending_release(&p);
    if (p.alone) /* in this thread: the committer moves on */
        p.st = single_execute(s->pool, s->pub, c, m, out, e);
    if (p.st != ST_OK) {
        free(out->body);
        memset(out, 0, sizeof *out);
    }
    return p.st;
}
