/* Redis connections for the services: bounded connect and command timeouts, database selected. */
#ifndef COMMON_RDS_H
#define COMMON_RDS_H

#include <hiredis/hiredis.h>
#include <stdint.h>

#include "cfg.h"
#include "status.h"

/* Connects to host:port, bounds the connect and every later command by timeout_ms, and selects
 * db. *out is NULL on failure (ST_UNAVAILABLE, reason "read_model_unavailable"). Caller owns
 * *out (rds_free). */
status rds_connect(redisContext **out, const char *host, int port, int db, int timeout_ms,
                   struct err *e) WUR;
/* The server of c: with REDIS_SENTINELS the master the Sentinels name (asked again at every
 * call, so a reconnect follows a failover) and only once it answers ROLE as master; else
 * REDIS_URL's host and port. Selects c's database; timeout_ms bounds connect and commands. */
status rds_open(redisContext **out, const struct cfg *c, int timeout_ms, struct err *e) WUR;
/* A replica of REDIS_MASTER_NAME the Sentinels list as healthy (flags just "slave", master
 * link ok), into host (host_len bytes) and *port; ST_UNAVAILABLE when no Sentinel answers or
 * none is healthy. timeout_ms bounds each Sentinel's connect and command. */
status rds_sentinel_replica(const struct cfg *c, int timeout_ms, char *host, size_t host_len,
                            int *port, struct err *e) WUR;
/* rds_open with c's request_timeout_ms. */
status rds_connect_cfg(redisContext **out, const struct cfg *c, struct err *e) WUR;
/* Frees *ctx (NULL-safe) and clears the caller's pointer. */
void rds_free(redisContext **ctx);

/* True when the context can no longer be used (I/O or protocol error): reconnect. */
int rds_broken(const redisContext *ctx);
/* redisCommand / redisCommandArgv that answer NULL for a NULL context (a connection dropped
 * under the caller) instead of crashing; a NULL reply is then told apart by rds_errstr. */
redisReply *rds_command(redisContext *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
redisReply *rds_command_argv(redisContext *ctx, int argc, const char **argv, const size_t *lens);
/* Why ctx gave no reply: its error, "not connected" for NULL, "no reply" when it holds none. */
const char *rds_errstr(const redisContext *ctx);

/* Sends every command of the pipeline and reads every reply in one round trip: argv-style
 * commands (cmds[i] has argc[i] arguments, lengths in lens[i], NULL = strlen). replies[i] are
 * owned by the caller (freeReplyObject each, or rds_replies_free). On a connection failure all
 * replies are freed and NULL, and the result is ST_UNAVAILABLE; error replies are not failures
 * here: the caller judges each. */
status rds_pipeline(redisContext *ctx, int n, const int *argc, const char *const *const *cmds,
                    const size_t *const *lens, redisReply **replies, struct err *e) WUR;
void rds_replies_free(redisReply **replies, int n);

/* An integer reply, or a string reply holding one (HGET fields); 0 for anything else. */
int64_t rds_reply_int(const redisReply *r);

#endif
