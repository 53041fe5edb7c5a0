/* Reading from a Redis replica. One thread watches the replica and decides, every PROBE_MS,
 * whether plain reads go to it; the reads themselves (rstore.c) fall back to the primary for
 * anything the replica cannot answer.
 *
 * The replica is read from only while all of these hold, checked every PROBE_MS:
 *  - it answers INFO replication as a replica (role:slave) with its link up and no sync in
 *    progress, and its master_replid is the primary's (the same replication history);
 *  - it is at most READ_REPLICA_MAX_LAG_MS behind: the primary's replication offset is sampled
 *    (before the replica's) into a ring; the replica holds everything the primary had at the
 *    latest sample whose offset it has reached, so now minus that sample's time bounds its
 *    lag from above (0 when it has reached the newest sample);
 *  - this thread is subscribed to rm:applied on the replica. The primary's PUBLISH reaches a
 *    replica's subscribers through the replication stream, after the writes before it, so an
 *    invalidation heard here comes after the data it announces is readable here: the document
 *    cache, while it follows the replica, stays as true as it is with the primary (cache.h).
 * A change of verdict switches the source (rs__set_source), which clears the cache; a full
 * resynchronisation (which announces nothing) takes the link down first, which the probe sees.
 * A read that the replica does not answer at min_version goes to the primary (rstore.c), so
 * read-your-writes never depends on the replica. */
#include "replica.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "log.h"
#include "metrics.h"
#include "rconn.h"
#include "rds.h"
#include "readmodel.h"
#include "svc.h"

#define PROBE_MS 100
#define RING 128 /* primary offset samples: 12.8 s at PROBE_MS, past the largest lag bound */

static const struct cfg *conf;
static pthread_t thread;
static int started;
static atomic_int stopping;

static pthread_mutex_t addr_mu = PTHREAD_MUTEX_INITIALIZER;
static char addr_host[256];
static int addr_port;
static atomic_uint addr_epoch;

struct sample {
    int64_t t_ms;
    long long offset;
};

struct ring {
    struct sample s[RING];
    int n, next;
};

int replica_addr(char *host, size_t len, int *port, unsigned *epoch)
{
    int ok;

    pthread_mutex_lock(&addr_mu);
    ok = addr_port > 0;
    if (ok) {
        snprintf(host, len, "%s", addr_host);
        *port = addr_port;
        *epoch = atomic_load(&addr_epoch);
    }
    pthread_mutex_unlock(&addr_mu);
    return ok;
}

unsigned replica_epoch(void)
{
    return atomic_load(&addr_epoch);
}

static void set_addr(const char *host, int port)
{
    pthread_mutex_lock(&addr_mu);
    if (port != addr_port || strcmp(host, addr_host) != 0) {
        snprintf(addr_host, sizeof addr_host, "%s", host);
        addr_port = port;
        atomic_fetch_add(&addr_epoch, 1);
    }
    pthread_mutex_unlock(&addr_mu);
}

/* The value of field name in an INFO reply's text into out; 0 when absent. */
static int info_field(const char *info, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);

    for (const char *p = info; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            size_t k = strcspn(p + n + 1, "\r\n");
            if (k >= len)
                k = len - 1;
            memcpy(out, p + n + 1, k);
            out[k] = '\0';
            return 1;
        }
    }
    return 0;
}

struct repl_info {
    char role[16];
    char replid[48];
    char link[16];
    char syncing[8];
    long long offset;
};

static status read_info(redisContext *ctx, struct repl_info *out, struct err *e)
{
    redisReply *r = redisCommand(ctx, "INFO replication");
    char off[32] = "";
    status st = ST_OK;

    memset(out, 0, sizeof *out);
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis INFO replication: %s",
                      r == NULL ? ctx->errstr : "unexpected reply");
        goto cleanup;
    }
    info_field(r->str, "role", out->role, sizeof out->role);
    info_field(r->str, "master_replid", out->replid, sizeof out->replid);
    info_field(r->str, "master_link_status", out->link, sizeof out->link);
    info_field(r->str, "master_sync_in_progress", out->syncing, sizeof out->syncing);
    /* a replica's slave_repl_offset is what it has applied; a master's master_repl_offset */
    if (!info_field(r->str, "slave_repl_offset", off, sizeof off))
        info_field(r->str, "master_repl_offset", off, sizeof off);
    out->offset = atoll(off);
cleanup:
    freeReplyObject(r);
    return st;
}

/* Upper bound of the replica's lag behind the primary, in ms; -1 when it is behind every
 * sample held (unknown, and at least the ring's span). */
static int64_t lag_ms(const struct ring *g, long long replica_offset, int64_t now)
{
    int64_t best = -1;

    for (int k = 0; k < g->n; k++) {
        const struct sample *s = &g->s[(g->next - 1 - k + RING) % RING];
        if (s->offset <= replica_offset) {
            best = k == 0 ? 0 : now - s->t_ms;
            break;
        }
    }
    return best;
}

/* Is the replica readable now? *lag set (-1: unknown); a reason in e when not: ST_CONFLICT
 * when it is only too far behind, ST_UNAVAILABLE for anything else. */
static status check(redisContext *replica, redisContext *primary, struct ring *g, int64_t *lag,
                    struct err *e)
{
    struct repl_info p, r;
    int64_t now;

    *lag = -1;
    if (read_info(primary, &p, e) != ST_OK)
        return ST_UNAVAILABLE;
    now = svc_mono_ms();
    g->s[g->next] = (struct sample){now, p.offset};
    g->next = (g->next + 1) % RING;
    if (g->n < RING)
        g->n++;
    if (read_info(replica, &r, e) != ST_OK)
        return ST_UNAVAILABLE;
    if (strcmp(p.role, "master") != 0)
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "the primary is not a master");
    if (strcmp(r.role, "slave") != 0)
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "it is not a replica (role %s)",
                        r.role);
    if (strcmp(r.link, "up") != 0 || strcmp(r.syncing, "0") != 0)
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable",
                        "its link to the primary is %s%s", r.link,
                        strcmp(r.syncing, "0") != 0 ? " (synchronising)" : "");
    if (strcmp(r.replid, p.replid) != 0)
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable",
                        "it does not follow the primary's replication history");
    *lag = lag_ms(g, r.offset, svc_mono_ms());
    if (*lag < 0 || *lag > conf->read_replica_max_lag_ms)
        return err_setr(e, ST_CONFLICT, "read_model_unavailable",
                        "it is more than %d ms behind the primary", conf->read_replica_max_lag_ms);
    return ST_OK;
}

static void publish(int usable, int64_t lag)
{
    metrics_gauge_set("readapi_replica_usable", "1 while reads go to the Redis replica.", usable);
    metrics_gauge_set("readapi_replica_lag_seconds",
                      "Upper bound of the replica's lag behind the primary (-1: unknown).",
                      lag < 0 ? -1.0 : (double)lag / 1000.0);
}

/* Reads go to the replica (usable) or to the primary; logged when the verdict changes. */
static void decide(int usable, int64_t lag, const char *why)
{
    static int last = -1;
    char host[256];
    int port = 0;
    unsigned ep;

    rs__set_source(usable ? RS_REPLICA : RS_PRIMARY);
    publish(usable, lag);
    if (usable == last)
        return;
    last = usable;
    if (!replica_addr(host, sizeof host, &port, &ep))
        snprintf(host, sizeof host, "-");
    if (usable)
        log_info("reading from the redis replica %s:%d (lag at most %lld ms)", host, port, (long long)lag);
    else
        log_warn("not reading from the redis replica %s:%d: %s", host, port, why);
}

static status find(char *host, size_t len, int *port, struct err *e)
{
    if (conf->redis_replica_url[0] != '\0') {
        snprintf(host, len, "%s", conf->redis_replica_host);
        *port = conf->redis_replica_port;
        return ST_OK;
    }
    return rds_sentinel_replica(conf, 1000, host, len, port, e);
}

/* One connection's life: subscribed on the replica, probing both every PROBE_MS, until the
 * replica fails a check other than its lag, or a connection breaks. */
static void watch(redisContext *sub, redisContext *probe, redisContext *primary)
{
    struct ring g = {.n = 0};
    int64_t last_probe = 0;
    struct timeval tv = {0, PROBE_MS * 1000};
    redisReply *r = redisCommand(sub, "SUBSCRIBE %s", RM_APPLIED_CHANNEL);

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        decide(0, -1, "it refused the subscription");
        return;
    }
    freeReplyObject(r);
    redisSetTimeout(sub, tv);
    while (!atomic_load(&stopping)) {
        int cleared = 0;
        if (rs__receive(sub, RS_REPLICA, &cleared, 0) < 0) {
            decide(0, -1, "its connection broke");
            return;
        }
        if (cleared)
            last_probe = 0; /* cleared (a switch?): learn the generation now */
        if (svc_mono_ms() - last_probe >= PROBE_MS) {
            struct err e = {0};
            int64_t lag;
            status st = check(probe, primary, &g, &lag, &e);
            last_probe = svc_mono_ms();
            if (st == ST_OK) {
                decide(1, lag, "");
                /* the generation the cache follows is the replica's own */
                if (rs__probe(RS_REPLICA, probe, &e) != ST_OK) {
                    decide(0, -1, e.msg);
                    return;
                }
            } else {
                decide(0, lag, e.msg);
                /* only a lag is waited out on these connections; anything else finds the
                 * replica again (a failover may have moved it) */
                if (st != ST_CONFLICT || rds_broken(probe) || rds_broken(primary))
                    return;
            }
        }
    }
}

static void *watch_main(void *arg)
{
    (void)arg;
    publish(0, -1);
    while (!atomic_load(&stopping)) {
        struct err e = {0};
        char host[256];
        int port = 0;
        redisContext *sub = NULL, *probe = NULL, *primary = NULL;
        int tmo = conf->request_timeout_ms < 1000 ? conf->request_timeout_ms : 1000;

        if (find(host, sizeof host, &port, &e) != ST_OK) {
            decide(0, -1, e.msg);
        } else {
            set_addr(host, port);
            if (rds_connect(&sub, host, port, conf->redis_db, tmo, &e) == ST_OK &&
                rds_connect(&probe, host, port, conf->redis_db, tmo, &e) == ST_OK &&
                (primary = rconn_connect(&e)) != NULL)
                watch(sub, probe, primary);
            else
                decide(0, -1, e.msg);
        }
        decide(0, -1, "its watcher reconnects");
        rds_free(&sub);
        rds_free(&probe);
        rds_free(&primary);
        for (int i = 0; i < 5 && !atomic_load(&stopping); i++)
            svc_pause_ms(100);
    }
    return NULL;
}

status replica_start(const struct cfg *c, struct err *e)
{
    conf = c;
    if (!c->read_replicas)
        return ST_OK;
    if (pthread_create(&thread, NULL, watch_main, NULL) != 0)
        return err_set(e, ST_INTERNAL, "unable to start the replica watcher");
    started = 1;
    return ST_OK;
}

void replica_stop(void)
{
    if (!started)
        return;
    atomic_store(&stopping, 1);
    pthread_join(thread, NULL);
    started = 0;
    rs__set_source(RS_PRIMARY);
}
