/* The rm:applied listener: wakes parked read-your-writes requests after every projector batch
 * and keeps the document cache true (invalidations, generation, stalls); the cache is enabled
 * only while this thread is subscribed and its probe reaches Redis. */
#include "rstore.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
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

static void (*applied_fn)(void *);
static void *applied_arg;

void rs_on_applied(void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&applied_mu);
    applied_fn = fn;
    applied_arg = arg;
    pthread_mutex_unlock(&applied_mu);
}

static void wake_all(void)
{
    pthread_mutex_lock(&applied_mu);
    if (applied_fn != NULL)
        applied_fn(applied_arg);
    pthread_mutex_unlock(&applied_mu);
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
    metrics_counter_set("readapi_cache_clears_total",
                        "Whole-cache clears (generation change, listener reconnect).",
                        (double)st.clears);
}

/* Which generation readers see now (0: none): the cache follows it. */
static status probe_generation(redisContext *probe, struct err *e)
{
    static long long stalled_seen = -1, lost_seen = -1;
    struct rm_gens g;
    status st = rm_load_gens(probe, &g, e);
    redisReply *r;

    if (st == ST_OK)
        rc_set_gen(rs__cache(), g.current);
    /* A stall is not announced on rm:applied, and a stalled account's document is served with
     * its marker: when the set of stalled accounts changes size, cached documents start over. */
    r = st == ST_OK ? redisCommand(probe, "HLEN %s", RM_STALLED_KEY) : NULL;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        if (r->integer != stalled_seen && stalled_seen != -1)
            rc_clear(rs__cache());
        stalled_seen = r->integer;
    }
    freeReplyObject(r);
    /* a projector that could not send a notification (refused PUBLISH, lost connection) bumps
     * rm:applied:lost: anything cached may be stale then */
    r = st == ST_OK ? redisCommand(probe, "GET %s", RM_APPLIED_LOST_KEY) : NULL;
    if (r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL)) {
        long long lost = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
        if (lost != lost_seen && lost_seen != -1)
            rc_clear(rs__cache());
        lost_seen = lost;
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
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || probe_generation(probe, &e) != ST_OK) {
            freeReplyObject(r);
            if (ctx != NULL)
                redisFree(ctx);
            if (probe != NULL)
                redisFree(probe);
            rc_set_gen(rs__cache(), 0);
            svc_pause_ms(200);
            continue;
        }
        freeReplyObject(r);
        last_probe = svc_mono_ms();
        /* short read timeout: the probe runs and a stop request is noticed */
        redisSetTimeout(ctx, ms_tv(PROBE_MS));
        wake_all(); /* (re)connected: something may have been applied while we were away */
        while (!listener_stop) {
            void *reply = NULL;
            if (redisGetReply(ctx, &reply) == REDIS_OK) {
                redisReply *m = reply;
                if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 &&
                    m->element[2]->type == REDIS_REPLY_STRING &&
                    rc_apply_message(rs__cache(), m->element[2]->str, m->element[2]->len))
                    last_probe = 0; /* cleared (a switch?): learn the generation now */
                freeReplyObject(reply);
                wake_all();
            } else if (ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                ctx->err = 0; /* a read timeout: keep listening */
            } else {
                break;
            }
            if (svc_mono_ms() - last_probe >= PROBE_MS) {
                if (probe_generation(probe, &e) != ST_OK)
                    break;
                last_probe = svc_mono_ms();
            }
        }
        rc_set_gen(rs__cache(), 0); /* notifications may be lost from here on */
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

