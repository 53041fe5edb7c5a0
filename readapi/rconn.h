/* The read API's Redis connections, shared by its reads (rstore.c) and its rm:applied listener
 * (listener.c): a connection per worker thread with the read scripts loaded on first use. */
#ifndef READAPI_RCONN_H
#define READAPI_RCONN_H

#include <hiredis/hiredis.h>

#include "cache.h"
#include "cfg.h"
#include "status.h"

enum { RS_SCRIPT_ACCOUNT, RS_SCRIPT_STATEMENT, RS_SCRIPT_ACCOUNTS, RS_SCRIPT_PROJECTIONS, RS_SCRIPT_COUNT };

struct rconn {
    redisContext *ctx;
    char sha[RS_SCRIPT_COUNT][48];
};

/* Remembers the settings (c must outlive every connection) and prepares the per-thread slot. */
void rconn_setup(const struct cfg *c);
/* A new connection to the read model's Redis (Sentinel discovery and the ROLE check at every
 * call), commands bounded by the request timeout (at most 1 s); NULL with e set. Caller frees. */
redisContext *rconn_connect(struct err *e);
/* This thread's connection (owned by the thread, freed at its exit), connected if it was not;
 * NULL (and e set) when Redis is unreachable. */
struct rconn *rconn_get(struct err *e);
/* Closes rc's connection after a failure: the next rconn_get reconnects. NULL-safe. */
void rconn_drop(struct rconn *rc);
/* Counts a failed Redis command in redis_errors_total. */
void rconn_count_error(void);
/* Runs script idx with argv on this thread's connection; returns the reply (caller frees) or
 * NULL with e set. A failed connection or a NOSCRIPT reply (Redis restarted) is tried once
 * more. */
redisReply *rconn_script(int idx, int argc, const char **argv, struct err *e);

/* The document cache made by rs_init (NULL before): the listener keeps it true. */
struct rcache *rs__cache(void);

#endif
