/* The writer's Postgres side: the pool, and each command routed to group commit or to a
 * transaction of its own; waited for by its caller (store_execute) or handed over as a job
 * (store_submit: the committer thread or the executor runs it, done() answers). */
#include "store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fastpub.h"
#include "group.h"
#include "job.h"
#include "log.h"
#include "pool.h"
#include "single.h"
#include "sql.h"
#include "svc.h"

struct store {
    struct pool *pool;
    struct group *group;
    struct fastpub *pub; /* NULL: PUBLISH_AFTER_COMMIT=0 */
    struct execq *exec;
    pthread_mutex_t mu;
    pthread_cond_t idle; /* inflight reached 0 */
    int inflight;        /* jobs submitted and not done */
    bool draining;
};

static void exec_run(void *ctx, struct store_job *j);

status store_create(struct store **out, const struct cfg *cfg, struct err *e)
{
    struct store *s = calloc(1, sizeof *s);
    status st;

    *out = NULL;
    if (s == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle, NULL);
    st = pool_create(&s->pool, cfg, e);
    if (st == ST_OK)
        st = fastpub_start(&s->pub, cfg, e);
    if (st == ST_OK)
        st = group_create(&s->group, s->pool, s->pub, e);
    /* a thread for every connection of the pool and two more: a ping or a command queued
     * behind commands that wait for row locks then waits in the pool's bounded checkout (a
     * 503 after REQUEST_TIMEOUT_MS, as with a thread per connection), not behind them */
    if (st == ST_OK)
        st = execq_start(&s->exec, pool_size(s->pool) + 2, exec_run, s, e);
    if (st != ST_OK) {
        store_free(&s);
        return st;
    }
    *out = s;
    return ST_OK;
}

void store_free(struct store **sp)
{
    struct store *s = *sp;

    if (s == NULL)
        return;
    store_drain(s);
    group_free(&s->group);
    execq_stop(&s->exec); /* after the committer: it hands commands that run alone here */
    fastpub_stop(&s->pub);
    pool_free(&s->pool);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *sp = NULL;
}

status store_execute(struct store *s, const struct command *c, const struct store_meta *m,
                     struct store_reply *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    if (group_accepts(c, m))
        return group_execute(s->group, c, m, out, e);
    return single_execute(s->pool, s->pub, c, m, out, e);
}

status store_ping(struct store *s, struct err *e)
{
    struct pool_slot *sl = NULL;
    PGresult *res = NULL;
    status st = pool_checkout(s->pool, &sl, e);

    if (st != ST_OK)
        return st;
    st = sql_run(sl->conn, &res, "ping", 0, NULL, PGRES_TUPLES_OK, e);
    if (st == ST_OK && PQntuples(res) != 1)
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "the database is read-only (in recovery)");
    PQclear(res);
    pool_checkin(s->pool, sl);
    return st;
}

/* The job's answer is final: done() hands it back (j is not touched afterwards: the caller
 * may free it), then the drain may count it. */
static void job_finish(struct store *s, struct store_job *j)
{
    if (j->st != ST_OK) {
        free(j->out.body);
        memset(&j->out, 0, sizeof j->out);
    }
    j->done(j);
    pthread_mutex_lock(&s->mu);
    if (--s->inflight == 0)
        pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
}

/* On an executor thread: a command on its own, or a ping. A job that waited in the queue
 * longer than a pool checkout may wait is refused as the pool would refuse it: not run. */
static void exec_run(void *ctx, struct store_job *j)
{
    struct store *s = ctx;
    int64_t waited = svc_mono_ms() - j->queued_ms;

    log_set_request_id(j->request_id);
    if (waited > pool_timeout_ms(s->pool))
        j->st = err_setr(&j->e, ST_UNAVAILABLE, "store_unavailable",
                         "no executor thread free within %lld ms: not run", (long long)waited);
    else if (j->ping)
        j->st = store_ping(s, &j->e);
    else
        j->st = single_execute(s->pool, s->pub, &j->c, &j->m, &j->out, &j->e);
    log_set_request_id(NULL);
    job_finish(s, j);
}

/* On the committer's thread, once the job's batch ended. */
static void group_finish(struct pending *p)
{
    struct store_job *j = p->arg;

    group_pending_release(p);
    if (p->alone) { /* a lock timeout, a replay, a failed batch: on its own, off this thread */
        j->queued_ms = svc_mono_ms();
        execq_push(j->store->exec, j);
        return;
    }
    j->st = p->st;
    job_finish(j->store, j);
}

void store_submit(struct store *s, struct store_job *j)
{
    memset(&j->out, 0, sizeof j->out);
    err_clear(&j->e);
    j->st = ST_OK;
    j->store = s;
    pthread_mutex_lock(&s->mu);
    if (s->draining) {
        pthread_mutex_unlock(&s->mu);
        j->st = err_setr(&j->e, ST_UNAVAILABLE, "store_unavailable", "the writer is stopping: not run");
        j->done(j);
        return;
    }
    s->inflight++;
    pthread_mutex_unlock(&s->mu);
    if (!j->ping && group_accepts(&j->c, &j->m)) {
        memset(&j->p, 0, sizeof j->p);
        j->p.c = &j->c;
        j->p.m = &j->m;
        j->p.out = &j->out;
        j->p.e = &j->e;
        j->p.finish = group_finish;
        j->p.arg = j;
        if (group_submit(s->group, &j->p) != ST_OK) {
            j->st = j->e.code;
            job_finish(s, j);
        }
        return;
    }
    j->queued_ms = svc_mono_ms();
    execq_push(s->exec, j);
}

void store_drain(struct store *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    while (s->inflight > 0)
        pthread_cond_wait(&s->idle, &s->mu);
    pthread_mutex_unlock(&s->mu);
}
