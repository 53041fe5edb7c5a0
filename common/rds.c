/* hiredis connection helper: timeouts on connect and on every command, SELECT of the database. */
#include "rds.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

status rds_connect(redisContext **out, const char *host, int port, int db, int timeout_ms,
                   struct err *e)
{
    status st = ST_OK;
    redisContext *ctx = NULL;
    redisReply *r = NULL;

    *out = NULL;
    ctx = redisConnectWithTimeout(host, port, ms_tv(timeout_ms));
    if (ctx == NULL || ctx->err) {
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "unable to connect to redis '%s:%d': %s",
                      host, port, ctx != NULL ? ctx->errstr : "out of memory");
        goto cleanup;
    }
    /* without a command timeout a stalled server would block the caller forever */
    if (redisSetTimeout(ctx, ms_tv(timeout_ms)) != REDIS_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis '%s:%d': set timeout: %s",
                      host, port, ctx->errstr);
        goto cleanup;
    }
    if (db != 0) {
        r = redisCommand(ctx, "SELECT %d", db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis '%s:%d': select %d: %s",
                          host, port, db, r != NULL ? r->str : ctx->errstr);
            goto cleanup;
        }
    }
    *out = ctx;
    ctx = NULL;
cleanup:
    freeReplyObject(r);
    if (ctx != NULL)
        redisFree(ctx);
    return st;
}

status rds_connect_cfg(redisContext **out, const struct cfg *c, struct err *e)
{
    return rds_connect(out, c->redis_host, c->redis_port, c->redis_db, c->request_timeout_ms, e);
}

void rds_free(redisContext **ctx)
{
    if (ctx == NULL || *ctx == NULL)
        return;
    redisFree(*ctx);
    *ctx = NULL;
}

int rds_broken(const redisContext *ctx)
{
    return ctx == NULL || ctx->err != 0;
}

status rds_pipeline(redisContext *ctx, int n, const int *argc, const char *const *const *cmds,
                    const size_t *const *lens, redisReply **replies, struct err *e)
{
    status st = ST_OK;

    for (int i = 0; i < n; i++)
        replies[i] = NULL;
    if (ctx == NULL)
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: not connected");
    for (int i = 0; i < n; i++) {
        if (redisAppendCommandArgv(ctx, argc[i], (const char **)cmds[i],
                                   lens != NULL ? lens[i] : NULL) != REDIS_OK) {
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s", ctx->errstr);
            goto cleanup;
        }
    }
    for (int i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(ctx, &r) != REDIS_OK || r == NULL) {
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s",
                          ctx->err ? ctx->errstr : "no reply");
            goto cleanup;
        }
        replies[i] = r;
    }
cleanup:
    if (st != ST_OK) {
        /* the context is out of step with its replies now: the caller must reconnect */
        if (ctx->err == 0)
            ctx->err = REDIS_ERR_OTHER;
        rds_replies_free(replies, n);
    }
    return st;
}

void rds_replies_free(redisReply **replies, int n)
{
    for (int i = 0; i < n; i++) {
        freeReplyObject(replies[i]);
        replies[i] = NULL;
    }
}
