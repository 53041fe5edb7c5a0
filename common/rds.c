/* hiredis connection helper: timeouts on connect and on every command, SELECT of the database. */
#include "rds.h"

#include <stdarg.h>
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

/* Asks one Sentinel for the master's address. */
static status sentinel_master(const struct cfg_hostport *s, const char *name, int timeout_ms,
                              char *host, size_t host_len, int *port, struct err *e)
{
    status st = ST_OK;
    redisContext *ctx = NULL;
    redisReply *r = NULL;

    st = rds_connect(&ctx, s->host, s->port, 0, timeout_ms, e);
    if (st != ST_OK)
        return st;
    r = redisCommand(ctx, "SENTINEL get-master-addr-by-name %s", name);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[0]->len >= host_len) {
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable",
                      "sentinel '%s:%d' does not know master '%s'", s->host, s->port, name);
        goto cleanup;
    }
    memcpy(host, r->element[0]->str, r->element[0]->len + 1);
    *port = atoi(r->element[1]->str);
cleanup:
    freeReplyObject(r);
    redisFree(ctx);
    return st;
}

/* Is the server a master right now? A Sentinel's answer can be a moment old (a failover in
 * progress, a restarted old master not yet turned into a replica): ROLE is the server's own. */
static status check_master(redisContext *ctx, const char *host, int port, struct err *e)
{
    redisReply *r = redisCommand(ctx, "ROLE");
    status st = ST_OK;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "master") != 0)
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable",
                      "redis '%s:%d' named master by the sentinels is not a master (yet)", host, port);
    freeReplyObject(r);
    return st;
}

/* AUTH as the configured ACL user (nothing when no password is set), then SELECT of the
 * database (rds_connect was given 0: a SELECT before AUTH is refused). */
static status auth(redisContext *ctx, const struct cfg *c, struct err *e)
{
    redisReply *r;
    status st = ST_OK;

    if (c->redis_password[0] == '\0')
        return ST_OK;
    if (c->redis_username[0] != '\0')
        r = redisCommand(ctx, "AUTH %s %s", c->redis_username, c->redis_password);
    else
        r = redisCommand(ctx, "AUTH %s", c->redis_password);
    if (r == NULL || r->type != REDIS_REPLY_STATUS)
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis auth as '%s': %s",
                      c->redis_username[0] ? c->redis_username : "default",
                      r == NULL ? ctx->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);
    if (st == ST_OK && c->redis_db != 0) {
        r = redisCommand(ctx, "SELECT %d", c->redis_db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis select %d: %s", c->redis_db,
                          r != NULL ? r->str : ctx->errstr);
        freeReplyObject(r);
    }
    return st;
}

/* The database rds_connect selects itself: none when AUTH must come first. */
static int first_db(const struct cfg *c)
{
    return c->redis_password[0] != '\0' ? 0 : c->redis_db;
}

status rds_open(redisContext **out, const struct cfg *c, int timeout_ms, struct err *e)
{
    /* the Sentinel that answered last is asked first: a dead one costs a connect each time */
    static _Atomic int first;
    char host[256];
    int port = 0;
    status st = ST_UNAVAILABLE;

    if (c->redis_sentinel_count == 0) {
        st = rds_connect(out, c->redis_host, c->redis_port, first_db(c), timeout_ms, e);
        if (st == ST_OK)
            st = auth(*out, c, e);
        if (st != ST_OK)
            rds_free(out);
        return st;
    }
    *out = NULL;
    for (int k = 0; k < c->redis_sentinel_count && st != ST_OK; k++) {
        int i = (first + k) % c->redis_sentinel_count;
        st = sentinel_master(&c->redis_sentinel[i], c->redis_master_name,
                             timeout_ms < 1000 ? timeout_ms : 1000, host, sizeof host, &port, e);
        if (st == ST_OK)
            first = i;
    }
    if (st != ST_OK)
        return st;
    st = rds_connect(out, host, port, first_db(c), timeout_ms, e);
    if (st == ST_OK)
        st = auth(*out, c, e);
    if (st == ST_OK)
        st = check_master(*out, host, port, e);
    if (st != ST_OK)
        rds_free(out);
    return st;
}

/* The value of field name in a SENTINEL REPLICAS entry (a flat name, value array); NULL when
 * absent. */
static const char *pair_value(const redisReply *entry, const char *name)
{
    if (entry->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < entry->elements; i += 2)
        if (entry->element[i]->type == REDIS_REPLY_STRING &&
            entry->element[i + 1]->type == REDIS_REPLY_STRING &&
            strcmp(entry->element[i]->str, name) == 0)
            return entry->element[i + 1]->str;
    return NULL;
}

status rds_sentinel_replica(const struct cfg *c, int timeout_ms, char *host, size_t host_len,
                            int *port, struct err *e)
{
    status st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "no sentinel configured");

    for (int k = 0; k < c->redis_sentinel_count; k++) {
        redisContext *ctx = NULL;
        redisReply *r;

        st = rds_connect(&ctx, c->redis_sentinel[k].host, c->redis_sentinel[k].port, 0, timeout_ms, e);
        if (st != ST_OK)
            continue;
        r = redisCommand(ctx, "SENTINEL REPLICAS %s", c->redis_master_name);
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable",
                      "sentinel '%s:%d' lists no healthy replica of '%s'", c->redis_sentinel[k].host,
                      c->redis_sentinel[k].port, c->redis_master_name);
        for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            const char *ip = pair_value(r->element[i], "ip"), *p = pair_value(r->element[i], "port");
            const char *flags = pair_value(r->element[i], "flags");
            const char *link = pair_value(r->element[i], "master-link-status");
            if (ip == NULL || p == NULL || flags == NULL || strcmp(flags, "slave") != 0 ||
                link == NULL || strcmp(link, "ok") != 0 || strlen(ip) >= host_len)
                continue;
            memcpy(host, ip, strlen(ip) + 1);
            *port = atoi(p);
            st = ST_OK;
            break;
        }
        freeReplyObject(r);
        redisFree(ctx);
        if (st == ST_OK)
            break;
    }
    return st;
}

status rds_connect_cfg(redisContext **out, const struct cfg *c, struct err *e)
{
    return rds_open(out, c, c->request_timeout_ms, e);
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

redisReply *rds_command(redisContext *ctx, const char *fmt, ...)
{
    redisReply *r;
    va_list ap;

    if (ctx == NULL)
        return NULL;
    va_start(ap, fmt);
    r = redisvCommand(ctx, fmt, ap);
    va_end(ap);
    return r;
}

redisReply *rds_command_argv(redisContext *ctx, int argc, const char **argv, const size_t *lens)
{
    return ctx == NULL ? NULL : redisCommandArgv(ctx, argc, argv, lens);
}

const char *rds_errstr(const redisContext *ctx)
{
    if (ctx == NULL)
        return "not connected";
    return ctx->err ? ctx->errstr : "no reply";
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

int64_t rds_reply_int(const redisReply *r)
{
    if (r == NULL)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}
