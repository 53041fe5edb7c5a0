/* The read API's Redis connections, shared by its reads (rstore.c) and its rm:applied listener
 * (listener.c): a connection per worker thread with the read scripts loaded on first use. */
#ifndef READAPI_RCONN_H
#define READAPI_RCONN_H

#include <hiredis/hiredis.h>

#include "cache.h"
#include "cfg.h"
#include "status.h"

enum { RS_SCRIPT_ACCOUNT, RS_SCRIPT_STATEMENT, RS_SCRIPT_ACCOUNTS, RS_SCRIPT_PROJECTIONS, RS_SCRIPT_COUNT };

/* Where a read goes: the primary (REDIS_URL or the Sentinels' master) or the replica that
 * replica.c chose. */
enum rs_src { RS_PRIMARY = 0, RS_REPLICA = 1 };

struct rconn {
    redisContext *ctx;
    char sha[RS_SCRIPT_COUNT][48];
    unsigned epoch; /* the replica: the replica_addr epoch it connected to */
};

/* Remembers the settings (c must outlive every connection) and prepares the per-thread slot. */
void rconn_setup(const struct cfg *c);
/* A new connection to the read model's Redis (Sentinel discovery and the ROLE check at every
 * call), commands bounded by the request timeout (at most 1 s); NULL with e set. Caller frees. */
redisContext *rconn_connect(struct err *e);
/* This thread's connection (owned by the thread, freed at its exit), connected if it was not;
 * NULL (and e set) when Redis is unreachable. */
struct rconn *rconn_get(struct err *e);
/* The same for src: the replica's connection goes to replica_addr's address (NULL with e set
 * when there is none), and is made again when that address changes. */
struct rconn *rconn_get_on(enum rs_src src, struct err *e);
/* Closes rc's connection after a failure: the next rconn_get reconnects. NULL-safe. */
void rconn_drop(struct rconn *rc);
/* Counts a failed Redis command in redis_errors_total. */
void rconn_count_error(void);
/* Runs script idx with argv on this thread's connection; returns the reply (caller frees) or
 * NULL with e set. A failed connection or a NOSCRIPT reply (Redis restarted) is tried once
 * more. */
redisReply *rconn_script(int idx, int argc, const char **argv, struct err *e);
/* rconn_script on src; on the replica a failure is not tried again (the caller asks the
 * primary) and is not counted in redis_errors_total. */
redisReply *rconn_script_on(enum rs_src src, int idx, int argc, const char **argv, struct err *e);

/* The document cache made by rs_init (NULL before): the listeners keep it true. */
struct rcache *rs__cache(void);

/* The source the cache follows, which is where plain reads go (listener.c): the replica while
 * replica.c finds it usable, else the primary. A fill is stored only when its read came from
 * the source current at its ticket (a switch clears the cache, which refuses older tickets). */
enum rs_src rs__source(void);
/* Switches the source (a change clears and disables the cache until the new source's probe
 * names the generation). */
void rs__set_source(enum rs_src src);
/* A probe of from's server saw generation gen (0: none, or it failed): the cache follows it
 * when from is the source. */
void rs__follow_gen(enum rs_src from, long gen);
/* Probes from's server (probe: a connection to it): follows its generation, and clears the
 * cache when its set of stalled accounts changed size; publishes the cache's metrics. */
status rs__probe(enum rs_src from, redisContext *probe, struct err *e) WUR;
/* Waits (up to sub's timeout) for one message on sub, subscribed to rm:applied on from's
 * server, and applies it to the cache (*cleared: it cleared everything; the documents it
 * carries are stored only when from is the source); with wake_waiters, wakes the reads
 * waiting on the accounts it names (every one when it cleared the cache). 1: a message came,
 * 0: the timeout, -1: the connection broke. */
int rs__receive(redisContext *sub, enum rs_src from, int *cleared, int wake_waiters);

#endif
