/* The read API's Redis connections: one per worker thread (a thread-specific slot freed with
 * the thread), the read scripts loaded on a connection when first run there, and the retry of
 * a script whose connection failed or whose Redis forgot it. */
#include "rconn.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "rds.h"
#include "readmodel.h"
#include "replica.h"

/* A replica command waits at most this long: the primary answers when the replica does not. */
#define REPLICA_TIMEOUT_MS 500

/* The read scripts belong to the layout (common/readmodel.c); the API only runs them. */
static const char *script_text(int idx)
{
    return idx == RS_SCRIPT_ACCOUNT     ? rm_read_account_script()
           : idx == RS_SCRIPT_STATEMENT ? rm_read_statement_script()
           : idx == RS_SCRIPT_ACCOUNTS  ? rm_read_accounts_script()
                                        : rm_read_status_script();
}

static const struct cfg *conf;
static pthread_key_t conn_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* A thread's slot: a link to the primary and one to the replica (RS_PRIMARY, RS_REPLICA). */
static void rconn_free(void *p)
{
    struct rconn *rc = p;
    if (rc == NULL)
        return;
    for (int i = 0; i < 2; i++)
        if (rc[i].ctx != NULL)
            redisFree(rc[i].ctx);
    free(rc);
}

static void make_key(void)
{
    pthread_key_create(&conn_key, rconn_free);
}

static void redis_errors(double v)
{
    metrics_counter_add("redis_errors_total", "Redis commands that failed.", v);
}

void rconn_setup(const struct cfg *c)
{
    conf = c;
    redis_errors(0); /* the series exists before the first failure */
    pthread_once(&key_once, make_key);
}

void rconn_count_error(void)
{
    redis_errors(1);
}

/* A failed command: the primary's count in redis_errors_total; the replica's are counted by
 * the reads that then go to the primary (readapi_replica_fallbacks_total). */
static void count_error(enum rs_src src)
{
    if (src == RS_PRIMARY)
        redis_errors(1);
}

redisContext *rconn_connect(struct err *e)
{
    redisContext *ctx = NULL;

    /* the shared helper: Sentinel discovery and the ROLE check at every (re)connect */
    if (rds_open(&ctx, conf, conf->request_timeout_ms < 1000 ? conf->request_timeout_ms : 1000, e) != ST_OK)
        return NULL;
    return ctx;
}

/* The replica's connection: to the address replica.c chose (a new one when it changed), with a
 * short timeout, since the primary answers when the replica does not. */
static redisContext *connect_replica(unsigned *epoch, struct err *e)
{
    redisContext *ctx = NULL;
    char host[256];
    int port;

    if (!replica_addr(host, sizeof host, &port, epoch)) {
        err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "no replica to read from");
        return NULL;
    }
    if (rds_connect(&ctx, host, port, conf->redis_db,
                    conf->request_timeout_ms < REPLICA_TIMEOUT_MS ? conf->request_timeout_ms
                                                                  : REPLICA_TIMEOUT_MS,
                    e) != ST_OK)
        return NULL;
    return ctx;
}

struct rconn *rconn_get_on(enum rs_src src, struct err *e)
{
    struct rconn *slot = pthread_getspecific(conn_key), *rc;

    if (slot == NULL) {
        slot = calloc(2, sizeof *slot);
        if (slot == NULL) {
            err_set(e, ST_INTERNAL, "out of memory");
            return NULL;
        }
        pthread_setspecific(conn_key, slot);
    }
    rc = &slot[src];
    if (src == RS_REPLICA && rc->ctx != NULL && rc->epoch != replica_epoch())
        rconn_drop(rc); /* the replica moved */
    if (rc->ctx != NULL)
        return rc;
    rc->ctx = src == RS_REPLICA ? connect_replica(&rc->epoch, e) : rconn_connect(e);
    if (rc->ctx == NULL)
        return NULL;
    memset(rc->sha, 0, sizeof rc->sha); /* scripts are loaded when first used */
    return rc;
}

struct rconn *rconn_get(struct err *e)
{
    return rconn_get_on(RS_PRIMARY, e);
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

void rconn_drop(struct rconn *rc)
{
    if (rc != NULL && rc->ctx != NULL) {
        redisFree(rc->ctx);
        rc->ctx = NULL;
    }
}

redisReply *rconn_script(int idx, int argc, const char **argv, struct err *e)
{
    return rconn_script_on(RS_PRIMARY, idx, argc, argv, e);
}

redisReply *rconn_script_on(enum rs_src src, int idx, int argc, const char **argv, struct err *e)
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
        struct rconn *rc = rconn_get_on(src, e);
        const char *sha = rc != NULL ? script_sha(rc, idx, e) : NULL;

        if (sha == NULL) {
            /* a connection or a load that failed (a timeout under load) is tried once more on
             * the primary; a replica's failure goes to the primary at once (the caller) */
            count_error(src);
            rconn_drop(rc);
            if (src == RS_REPLICA)
                goto cleanup;
            continue;
        }
        /* read-only on the replica: EVALSHA_RO runs while the replica holds its replication
         * stream (CLIENT PAUSE WRITE) and could never write there */
        args[0] = src == RS_REPLICA ? "EVALSHA_RO" : "EVALSHA";
        args[1] = sha;
        args[2] = "0";
        for (int i = 0; i < argc; i++)
            args[3 + i] = argv[i];
        for (int i = 0; i < argc + 3; i++)
            lens[i] = strlen(args[i]);
        r = redisCommandArgv(rc->ctx, argc + 3, args, lens);
        if (r == NULL) {
            err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s", rc->ctx->errstr);
            rconn_drop(rc);
            count_error(src);
            if (src == RS_REPLICA)
                goto cleanup;
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            int noscript = strncmp(r->str, "NOSCRIPT", 8) == 0;
            err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s", r->str);
            freeReplyObject(r);
            r = NULL;
            count_error(src);
            rconn_drop(rc);
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
