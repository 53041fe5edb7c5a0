/* The writer's Postgres connection pool: bounded checkout, lazy (re)connect, session setup. */
#ifndef WRITER_POOL_H
#define WRITER_POOL_H

#include <libpq-fe.h>

#include "cfg.h"
#include "status.h"

struct pool;

/* A checked-out connection; conn is NULL only between a failed reconnect and checkin. */
struct pool_slot {
    PGconn *conn;
    int busy;
};

/* Creates a pool of cfg->pg_pool_size connections to cfg->database_url, opened lazily and
 * replaced when broken; cfg->request_timeout_ms bounds a connect and the wait for a free
 * connection. cfg must outlive the pool. Caller frees with pool_free. */
status pool_create(struct pool **out, const struct cfg *cfg, struct err *e) WUR;
void pool_free(struct pool **p);

/* Waits (bounded) for a free slot and makes sure it holds a working, prepared session.
 * ST_UNAVAILABLE (store_unavailable): none free in time or Postgres unreachable; nothing
 * was sent, so the command certainly did not run. Return it with pool_checkin. */
status pool_checkout(struct pool *p, struct pool_slot **out, struct err *e) WUR;

/* Returns a slot; a broken session, or one left inside a transaction, is closed. */
void pool_checkin(struct pool *p, struct pool_slot *sl);

/* Closes the slot's session (left mid-pipeline or in an unknown state). */
void pool_discard(struct pool_slot *sl);

int pool_size(const struct pool *p);
int pool_timeout_ms(const struct pool *p);
const struct cfg *pool_cfg(const struct pool *p);

#endif
