/* Redis side of the read API: a connection per worker thread, scripts that read each answer
 * (generation included) in one round trip, and the rm:applied listener for read-your-writes. */
#include "rstore.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "account.h"
#include "cache.h"
#include "jsonx.h"
#include "log.h"
#include "metrics.h"
#include "query.h"
#include "rds.h"
#include "readmodel.h"
#include "svc.h"

enum { SCRIPT_ACCOUNT, SCRIPT_STATEMENT, SCRIPT_ACCOUNTS, SCRIPT_PROJECTIONS, SCRIPT_COUNT };
/* The read scripts belong to the layout (common/readmodel.c); the API only runs them. */
static const char *script_text(int idx)
{
    return idx == SCRIPT_ACCOUNT     ? rm_read_account_script()
           : idx == SCRIPT_STATEMENT ? rm_read_statement_script()
           : idx == SCRIPT_ACCOUNTS  ? rm_read_accounts_script()
                                     : rm_read_status_script();
}

static const struct cfg *rs_cfg;
static struct rcache *cache; /* account documents, fed by the rm:applied listener */
static pthread_key_t conn_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

struct rconn {
    redisContext *ctx;
    char sha[SCRIPT_COUNT][48];
};

static void rconn_free(void *p)
{
    struct rconn *rc = p;
    if (rc == NULL)
        return;
    if (rc->ctx != NULL)
        redisFree(rc->ctx);
    free(rc);
}

static void make_key(void)
{
    pthread_key_create(&conn_key, rconn_free);
}

static void redis_errors(double v);

status rs_init(const struct cfg *c, struct err *e)
{
    rs_cfg = c;
    redis_errors(0); /* the series exists before the first failure */
    pthread_once(&key_once, make_key);
    return rc_create(&cache, (size_t)c->read_cache_slots, c->read_cache_ttl_ms, e);
}

void rs_fini(void)
{
    rc_destroy(cache);
    cache = NULL;
}

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static void redis_errors(double v)
{
    metrics_counter_add("redis_errors_total", "Redis commands that failed.", v);
}

static void redis_error(void)
{
    redis_errors(1);
}

static redisContext *connect_redis(struct err *e)
{
    redisContext *ctx = NULL;

    /* the shared helper: Sentinel discovery and the ROLE check at every (re)connect */
    if (rds_open(&ctx, rs_cfg, rs_cfg->request_timeout_ms < 1000 ? rs_cfg->request_timeout_ms : 1000, e) != ST_OK)
        return NULL;
    return ctx;
}

/* This thread's connection with its scripts loaded; NULL (and e set) when Redis is unreachable. */
static struct rconn *conn_get(struct err *e)
{
    struct rconn *rc = pthread_getspecific(conn_key);

    if (rc == NULL) {
        rc = calloc(1, sizeof *rc);
        if (rc == NULL) {
            err_set(e, ST_INTERNAL, "out of memory");
            return NULL;
        }
        pthread_setspecific(conn_key, rc);
    }
    if (rc->ctx != NULL)
        return rc;
    rc->ctx = connect_redis(e);
    if (rc->ctx == NULL)
        return NULL;
    memset(rc->sha, 0, sizeof rc->sha); /* scripts are loaded when first used */
    return rc;
}

/* The sha of script idx on this connection, loaded on first use: a connection made for one
 * request (a thread per HTTP connection) loads only the script it runs. NULL with e set. */
static const char *script_sha(struct rconn *rc, int idx, struct err *e)
{
    redisReply *r;

    if (rc->sha[idx][0] != '\0')
        return rc->sha[idx];
    r = redisCommand(rc->ctx, "SCRIPT LOAD %s", script_text(idx));
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "unable to load a script into redis");
        return NULL;
    }
    snprintf(rc->sha[idx], sizeof rc->sha[idx], "%s", r->str);
    freeReplyObject(r);
    return rc->sha[idx];
}

static void conn_drop(struct rconn *rc)
{
    if (rc != NULL && rc->ctx != NULL) {
        redisFree(rc->ctx);
        rc->ctx = NULL;
    }
}

/* Runs script idx with argv; returns the reply (caller frees) or NULL with e set. A NOSCRIPT
 * reply (Redis restarted) reloads once. */
static redisReply *run_script(int idx, int argc, const char **argv, struct err *e)
{
    const char *small_args[8];
    size_t small_lens[8];
    const char **args = small_args;
    size_t *lens = small_lens;
    redisReply *r = NULL;

    if (argc + 3 > 8) {
        args = calloc((size_t)argc + 3, sizeof *args);
        lens = calloc((size_t)argc + 3, sizeof *lens);
        if (args == NULL || lens == NULL) {
            err_set(e, ST_INTERNAL, "out of memory");
            goto cleanup;
        }
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        struct rconn *rc = conn_get(e);
        const char *sha = rc != NULL ? script_sha(rc, idx, e) : NULL;

        if (sha == NULL) {
            /* a connection or a load that failed (a timeout under load) is tried once more */
            redis_error();
            conn_drop(rc);
            continue;
        }
        args[0] = "EVALSHA";
        args[1] = sha;
        args[2] = "0";
        for (int i = 0; i < argc; i++)
            args[3 + i] = argv[i];
        for (int i = 0; i < argc + 3; i++)
            lens[i] = strlen(args[i]);
        r = redisCommandArgv(rc->ctx, argc + 3, args, lens);
        if (r == NULL) {
            err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s", rc->ctx->errstr);
            conn_drop(rc);
            redis_error();
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            int noscript = strncmp(r->str, "NOSCRIPT", 8) == 0;
            err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s", r->str);
            freeReplyObject(r);
            r = NULL;
            redis_error();
            conn_drop(rc);
            if (noscript)
                continue;
            goto cleanup;
        }
        goto cleanup;
    }
cleanup:
    if (args != small_args) {
        free(args);
        free(lens);
    }
    return r;
}

static char *dup_str(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        return NULL;
    return strndup(r->str, r->len);
}

static status fill_account(struct rs_account *out, const redisReply *r, struct err *e)
{
    memset(out, 0, sizeof *out);
    if (r->type != REDIS_REPLY_ARRAY)
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "unexpected reply from redis");
    if (r->elements == 0)
        return ST_OK; /* no current generation */
    out->gen = (long)rds_reply_int(r->element[0]);
    if (r->elements >= 4 && r->element[3]->type == REDIS_REPLY_STRING) {
        out->stalled = dup_str(r->element[3]);
        if (out->stalled == NULL)
            return err_set(e, ST_INTERNAL, "out of memory");
    }
    if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_STRING) {
        out->version = rds_reply_int(r->element[1]);
        out->doc = dup_str(r->element[2]);
        if (out->doc == NULL)
            return err_set(e, ST_INTERNAL, "out of memory");
    }
    return ST_OK;
}

status rs_account_fresh(struct rs_account *out, const char *id, struct err *e)
{
    const char *argv[1] = {id};
    redisReply *r = run_script(SCRIPT_ACCOUNT, 1, argv, e);
    status st;

    memset(out, 0, sizeof *out);
    if (r == NULL)
        return e != NULL ? e->code : ST_UNAVAILABLE;
    st = fill_account(out, r, e);
    freeReplyObject(r);
    if (st != ST_OK)
        rs_account_release(out);
    return st;
}

status rs_account(struct rs_account *out, const char *id, int64_t min_version, struct err *e)
{
    struct rc_ticket t = {0, 0};
    status st;

    memset(out, 0, sizeof *out);
    if (cache != NULL) {
        if (rc_get(cache, id, min_version, svc_mono_ms(), &out->doc, &out->version, &out->gen))
            return ST_OK;
        t = rc_fill_begin(cache, id);
    }
    st = rs_account_fresh(out, id, e);
    /* a stalled account is not cached: its marker must go as soon as the stall is lifted */
    if (st == ST_OK && cache != NULL && out->doc != NULL && out->stalled == NULL)
        (void)rc_fill_commit(cache, id, t, out->gen, out->version, out->doc, svc_mono_ms());
    return st;
}

status rs_statement(struct rs_statement *out, const char *id, int limit, int64_t lo, int64_t hi,
                    int asc, struct err *e)
{
    char lim[16], los[24], his[24];
    const char *argv[5] = {id, lim, los, his, asc ? "asc" : "desc"};
    redisReply *r;
    status st = ST_OK;

    memset(out, 0, sizeof *out);
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(los, sizeof los, "%lld", (long long)lo);
    snprintf(his, sizeof his, "%lld", (long long)hi);
    r = run_script(SCRIPT_STATEMENT, 5, argv, e);
    if (r == NULL)
        return e != NULL ? e->code : ST_UNAVAILABLE;
    st = fill_account(&out->acc, r, e);
    if (st == ST_OK && r->elements >= 7 && out->acc.doc != NULL) {
        const redisReply *list = r->element[6];
        out->first = rds_reply_int(r->element[4]);
        out->last = rds_reply_int(r->element[5]);
        if (list->type == REDIS_REPLY_ARRAY && list->elements > 0) {
            out->entries = calloc(list->elements, sizeof *out->entries);
            if (out->entries == NULL) {
                st = err_set(e, ST_INTERNAL, "out of memory");
                goto cleanup;
            }
            for (size_t i = 0; i < list->elements; i++) {
                out->entries[i] = dup_str(list->element[i]);
                if (out->entries[i] == NULL) {
                    st = err_set(e, ST_INTERNAL, "out of memory");
                    goto cleanup;
                }
                out->nentries++;
            }
        }
    }
cleanup:
    freeReplyObject(r);
    return st;
}

/* Time of the entry of version ver (1-based) of id in gen, in microseconds. */
static status entry_time(struct rconn *rc, long gen, const char *id, int64_t ver, int64_t *us,
                         struct err *e)
{
    char key[RM_KEY_SIZE];
    struct statement_entry en;
    redisReply *r;
    status st = ST_OK;

    rm_key_statement(key, sizeof key, gen, id);
    r = redisCommand(rc->ctx, "LINDEX %s %lld", key, (long long)(ver - 1));
    if (r == NULL) {
        err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s", rc->ctx->errstr);
        conn_drop(rc);
        redis_error();
        return ST_UNAVAILABLE;
    }
    if (r->type != REDIS_REPLY_STRING) {
        /* the generation was dropped under us (a rollback or drop-generation): try again */
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable",
                      "the read model generation changed during the request");
        goto cleanup;
    }
    if (statement_entry_from_json(&en, r->str, r->len, e) != ST_OK ||
        ra_parse_time(en.at, us) != ST_OK) {
        st = err_set(e, ST_INTERNAL, "statement entry %lld of '%s' has no readable time",
                     (long long)ver, id);
        goto cleanup;
    }
cleanup:
    freeReplyObject(r);
    return st;
}

status rs_statement_seek(int64_t *out, long gen, const char *id, int64_t v, int64_t t_us,
                         struct err *e)
{
    struct rconn *rc = conn_get(e);
    int64_t lo = 1, hi = v + 1;

    if (rc == NULL) {
        redis_error();
        return e != NULL ? e->code : ST_UNAVAILABLE;
    }
    /* invariant: every version below lo is earlier than t, every version from hi on is not */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2, at;
        status st = entry_time(rc, gen, id, mid, &at, e);
        if (st != ST_OK)
            return st;
        if (at < t_us)
            lo = mid + 1;
        else
            hi = mid;
    }
    *out = lo;
    return ST_OK;
}

status rs_accounts(char **docs, long *gen, const char *const *ids, int n, struct err *e)
{
    redisReply *r;

    *gen = 0;
    for (int i = 0; i < n; i++)
        docs[i] = NULL;
    r = run_script(SCRIPT_ACCOUNTS, n, (const char **)ids, e);
    if (r == NULL)
        return e != NULL ? e->code : ST_UNAVAILABLE;
    if (r->type != REDIS_REPLY_ARRAY || (r->elements != 0 && r->elements != (size_t)n + 1)) {
        freeReplyObject(r);
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "unexpected reply from redis");
    }
    if (r->elements > 0) {
        *gen = (long)rds_reply_int(r->element[0]);
        for (int i = 0; i < n; i++) {
            if (r->element[i + 1]->type != REDIS_REPLY_STRING)
                continue;
            docs[i] = dup_str(r->element[i + 1]);
            if (docs[i] == NULL) {
                freeReplyObject(r);
                return err_set(e, ST_INTERNAL, "out of memory");
            }
        }
    }
    freeReplyObject(r);
    return ST_OK;
}

static json_t *pairs_to_object(const redisReply *r)
{
    json_t *o = json_object();
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return o;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        json_t *parsed;
        char *end = NULL;
        long long n;
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        n = strtoll(v->str, &end, 10);
        if (end != v->str && *end == '\0')
            json_object_set_new(o, k->str, json_integer(n));
        else if ((parsed = json_loadb(v->str, v->len, 0, NULL)) != NULL)
            json_object_set_new(o, k->str, parsed);
        else
            json_object_set_new(o, k->str, json_stringn(v->str, v->len));
    }
    return o;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

status rs_projections(char **out, struct err *e)
{
    redisReply *r = run_script(SCRIPT_PROJECTIONS, 0, NULL, e);
    json_t *doc = NULL, *cp, *bcp, *head, *stalled, *rebuild;
    int64_t pos, headpos, lag_events, lag_s = 0;

    *out = NULL;
    if (r == NULL)
        return e != NULL ? e->code : ST_UNAVAILABLE;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 10) {
        freeReplyObject(r);
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "unexpected reply from redis");
    }
    cp = pairs_to_object(r->element[2]);
    bcp = pairs_to_object(r->element[3]);
    head = pairs_to_object(r->element[4]);
    stalled = pairs_to_object(r->element[5]);
    rebuild = pairs_to_object(r->element[6]);
    pos = json_integer_value(json_object_get(cp, "position"));
    headpos = json_integer_value(json_object_get(head, "position"));
    /* the head is sampled by the projector once a second: never report it behind what was
     * already applied */
    if (headpos < pos)
        headpos = pos;
    lag_events = headpos > pos ? headpos - pos : 0;
    /* events held back behind stalled accounts: the highest position cannot see them */
    lag_events += json_integer_value(json_object_get(head, "unapplied"));
    if (lag_events > 0 && json_integer_value(json_object_get(cp, "at_ms")) > 0)
        lag_s = (now_ms() - json_integer_value(json_object_get(cp, "at_ms"))) / 1000;
    doc = json_pack("{s:o, s:b, s:o, s:o, s:I, s:o, s:I, s:I, s:I, s:o, s:o, s:I, s:o}", "current_generation",
                    r->element[0]->type == REDIS_REPLY_STRING ? json_integer(rds_reply_int(r->element[0]))
                                                              : json_null(),
                    "read_model_available", rds_reply_int(r->element[9]) == 1,
                    "previous_generation",
                    r->element[8]->type == REDIS_REPLY_STRING ? json_integer(rds_reply_int(r->element[8]))
                                                              : json_null(),
                    "building_generation",
                    r->element[1]->type == REDIS_REPLY_STRING ? json_integer(rds_reply_int(r->element[1]))
                                                              : json_null(),
                    "position", (json_int_t)pos, "checkpoint", cp, "head", (json_int_t)headpos,
                    "lag_events", (json_int_t)lag_events, "lag_seconds", (json_int_t)lag_s, "rebuild",
                    json_object_size(rebuild) > 0 ? rebuild : json_null(), "building_checkpoint", bcp,
                    "parked_events", (json_int_t)rds_reply_int(r->element[7]), "stalled_accounts", stalled);
    if (json_object_size(rebuild) == 0)
        json_decref(rebuild);
    json_decref(head);
    freeReplyObject(r);
    if (doc == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    *out = jsonx_dump(doc);
    json_decref(doc);
    return *out != NULL ? ST_OK : err_set(e, ST_INTERNAL, "out of memory");
}

status rs_ready(struct err *e)
{
    struct rs_account a;
    char zero[] = "00000000-0000-0000-0000-000000000000";
    status st = rs_account_fresh(&a, zero, e);

    if (st != ST_OK)
        return st;
    st = a.gen > 0 ? ST_OK
                   : err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "no current generation");
    rs_account_release(&a);
    return st;
}

void rs_account_release(struct rs_account *a)
{
    free(a->doc);
    a->doc = NULL;
    free(a->stalled);
    a->stalled = NULL;
}

void rs_statement_release(struct rs_statement *s)
{
    rs_account_release(&s->acc);
    for (int i = 0; i < s->nentries; i++)
        free(s->entries[i]);
    free(s->entries);
    s->entries = NULL;
    s->nentries = 0;
}

/* --- read-your-writes wake-ups --- */

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

    rc_stats(cache, &st);
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
    static long long stalled_seen = -1;
    struct rm_gens g;
    status st = rm_load_gens(probe, &g, e);
    redisReply *r;

    if (st == ST_OK)
        rc_set_gen(cache, g.current);
    /* A stall is not announced on rm:applied, and a stalled account's document is served with
     * its marker: when the set of stalled accounts changes size, cached documents start over. */
    r = st == ST_OK ? redisCommand(probe, "HLEN %s", RM_STALLED_KEY) : NULL;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        if (r->integer != stalled_seen && stalled_seen != -1)
            rc_clear(cache);
        stalled_seen = r->integer;
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
        redisContext *ctx = connect_redis(&e), *probe = ctx != NULL ? connect_redis(&e) : NULL;
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
            rc_set_gen(cache, 0);
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
                    rc_apply_message(cache, m->element[2]->str, m->element[2]->len))
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
        rc_set_gen(cache, 0); /* notifications may be lost from here on */
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
