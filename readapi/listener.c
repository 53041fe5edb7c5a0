/* The rm:applied listener on the primary: wakes parked read-your-writes requests after every
 * projector batch and keeps the document cache true (invalidations, generation, stalls); the
 * cache is enabled only while the listener of the source it follows (this one, or replica.c's
 * on the replica) is subscribed and its probe reaches Redis. Every invalidation is applied
 * whichever server it came from: dropping an entry is always safe. */
#include "rstore.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/time.h>

#include "cache.h"
#include "metrics.h"
#include "rconn.h"
#include "readmodel.h"
#include "svc.h"

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static pthread_mutex_t applied_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile int listener_stop;
static pthread_t listener_thread;
static int listener_started;

static void (*applied_fn)(void *, const char *);
static void *applied_arg;

void rs_on_applied(void (*fn)(void *, const char *), void *arg)
{
    pthread_mutex_lock(&applied_mu);
    applied_fn = fn;
    applied_arg = arg;
    pthread_mutex_unlock(&applied_mu);
}

/* Wakes the reads waiting on account_id, or every one when NULL. */
static void wake(const char *account_id)
{
    pthread_mutex_lock(&applied_mu);
    if (applied_fn != NULL)
        applied_fn(applied_arg, account_id);
    pthread_mutex_unlock(&applied_mu);
}

static void wake_all(void)
{
    wake(NULL);
}

static void wake_account(const char *account_id, void *arg)
{
    (void)arg;
    wake(account_id);
}

static void publish_cache_metrics(void)
{
    struct rc_stats st;

    rc_stats(rs__cache(), &st);
    metrics_counter_set("readapi_cache_hits_total", "Account reads answered from memory.",
                        (double)st.hits);
    metrics_counter_set("readapi_cache_misses_total", "Account reads that went to Redis.",
                        (double)st.misses);
    metrics_counter_set("readapi_cache_refused_total",
                        "Cache fills dropped because a notification raced them.", (double)st.refused);
    metrics_counter_set("readapi_cache_invalidations_total",
                        "Account notifications received on rm:applied.", (double)st.invalidations);
    metrics_counter_set("readapi_cache_pushes_total",
                        "Account documents stored from the rm:applied notification that carried them.",
                        (double)st.pushes);
    metrics_counter_set("readapi_cache_clears_total",
                        "Whole-cache clears (generation change, listener reconnect).",
                        (double)st.clears);
}

/* --- the source the cache follows --- */

static pthread_mutex_t source_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int source = RS_PRIMARY;

enum rs_src rs__source(void)
{
    return (enum rs_src)atomic_load(&source);
}

void rs__set_source(enum rs_src src)
{
    pthread_mutex_lock(&source_mu);
    if (atomic_load(&source) != (int)src) {
        /* stored before the clear: a reader whose ticket follows the clear reads from src */
        atomic_store(&source, (int)src);
        rc_set_gen(rs__cache(), 0);
    }
    pthread_mutex_unlock(&source_mu);
}

void rs__follow_gen(enum rs_src from, long gen)
{
    int changed = 0;

    pthread_mutex_lock(&source_mu);
    if (atomic_load(&source) == (int)from)
        changed = rc_set_gen(rs__cache(), gen);
    pthread_mutex_unlock(&source_mu);
    /* a switch names no account: every parked read looks again */
    if (changed)
        wake_all();
}

int rs__receive(redisContext *sub, enum rs_src from, int *cleared, int wake_waiters)
{
    void *reply = NULL;
    redisReply *m;

    *cleared = 0;
    if (redisGetReply(sub, &reply) != REDIS_OK) {
        if (sub->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            sub->err = 0; /* a read timeout: keep listening */
            return 0;
        }
        return -1;
    }
    m = reply;
    if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 && m->element[2]->type == REDIS_REPLY_STRING)
        /* documents are taken only from the server whose answers the cache holds (as fills) */
        *cleared = rc_apply_message(rs__cache(), m->element[2]->str, m->element[2]->len, from == rs__source(),
                                    svc_mono_ms(), wake_waiters ? wake_account : NULL, NULL);
    if (*cleared && wake_waiters)
        wake_all(); /* parked reads park again only on what the cache says: ask Redis */
    freeReplyObject(reply);
    return 1;
}

status rs__probe(enum rs_src from, redisContext *probe, struct err *e)
{
    static long long stalled_seen[2] = {-1, -1}, lost_seen[2] = {-1, -1};
    struct rm_gens g;
    status st = rm_load_gens(probe, &g, e);
    redisReply *r;

    if (st == ST_OK)
        rs__follow_gen(from, g.current);
    /* A stall is not announced on rm:applied, and a stalled account's document is served with
     * its marker: when the set of stalled accounts changes size, cached documents start over. */
    r = st == ST_OK ? redisCommand(probe, "HLEN %s", RM_STALLED_KEY) : NULL;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        if (r->integer != stalled_seen[from] && stalled_seen[from] != -1) {
            rc_clear(rs__cache());
            wake_all(); /* parked reads park again only on what the cache says: ask Redis */
        }
        stalled_seen[from] = r->integer;
    }
    freeReplyObject(r);
    /* a projector that could not send a notification (refused PUBLISH, lost connection) bumps
     * rm:applied:lost: anything cached may be stale then */
    r = st == ST_OK ? redisCommand(probe, "GET %s", RM_APPLIED_LOST_KEY) : NULL;
    if (r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL)) {
        long long lost = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
        if (lost != lost_seen[from] && lost_seen[from] != -1) {
            rc_clear(rs__cache());
            wake_all();
        }
        lost_seen[from] = lost;
    }
    freeReplyObject(r);
    publish_cache_metrics();
    return st;
}

#define PROBE_MS 100

/* Listens on rm:applied: wakes read-your-writes waiters and keeps the cache true. The cache is
 * enabled only while this thread is subscribed and its probe (every PROBE_MS) reaches Redis:
 * a lost connection, a flush or a generation switch clears it before anything stale is
 * served. */
static void *listener_main(void *arg)
{
    (void)arg;
    while (!listener_stop) {
        struct err e;
        redisContext *ctx = rconn_connect(&e), *probe = ctx != NULL ? rconn_connect(&e) : NULL;
        redisReply *r = NULL;
        int64_t last_probe;

        if (ctx != NULL && probe != NULL)
            r = redisCommand(ctx, "SUBSCRIBE %s", RM_APPLIED_CHANNEL);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || rs__probe(RS_PRIMARY, probe, &e) != ST_OK) {
            freeReplyObject(r);
            if (ctx != NULL)
                redisFree(ctx);
            if (probe != NULL)
                redisFree(probe);
            rs__follow_gen(RS_PRIMARY, 0);
            svc_pause_ms(200);
            continue;
        }
        freeReplyObject(r);
        last_probe = svc_mono_ms();
        /* short read timeout: the probe runs and a stop request is noticed */
        redisSetTimeout(ctx, ms_tv(PROBE_MS));
        wake_all(); /* (re)connected: something may have been applied while we were away */
        while (!listener_stop) {
            int cleared = 0, got = rs__receive(ctx, RS_PRIMARY, &cleared, 1);
            if (got < 0)
                break;
            if (cleared)
                last_probe = 0; /* cleared (a switch?): learn the generation now */
            if (svc_mono_ms() - last_probe >= PROBE_MS) {
                if (rs__probe(RS_PRIMARY, probe, &e) != ST_OK)
                    break;
                last_probe = svc_mono_ms();
            }
        }
        rs__follow_gen(RS_PRIMARY, 0); /* notifications may be lost from here on */
        redisFree(ctx);
        redisFree(probe);
    }
    return NULL;
}

status rs_start_listener(struct err *e)
{
    if (pthread_create(&listener_thread, NULL, listener_main, NULL) != 0)
        return err_set(e, ST_INTERNAL, "unable to start the rm:applied listener");
    listener_started = 1;
    return ST_OK;
}

void rs_stop_listener(void)
{
    if (!listener_started)
        return;
    listener_stop = 1;
    pthread_join(listener_thread, NULL);
    listener_started = 0;
}

