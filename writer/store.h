/* The writer's Postgres side: commands run in one transaction each, or grouped into a
 * batch that commits as one (writer/pool, single, batch, sql, idem, reply). */
#ifndef WRITER_STORE_H
#define WRITER_STORE_H

#include <stdbool.h>

#include "cfg.h"
#include "command.h"
#include "status.h"

struct store;

/* Where a command came from: ids for the event metadata and the idempotency record. */
struct store_meta {
    char command_id[UUID_STR_SIZE];
    char correlation_id[UUID_STR_SIZE];
    const char *principal;       /* the caller (a token's sub): scopes its idempotency keys;
                                  * NULL or "" when the service runs without authentication */
    const char *idempotency_key; /* NULL or checked with cmd_check_idempotency_key */
    const char *scope;           /* route and account: with the body, what a key is bound to */
    const char *body;
    size_t body_len;
};

/* The reply to send: a status and a JSON body (malloc'd, caller frees). */
struct store_reply {
    int http_status;
    char *body;
    bool replayed; /* an Idempotency-Key replay of the first response */
};

/* Creates the store on a pool of cfg->pg_pool_size connections (see pool.h); cfg must outlive
 * it. Caller frees with store_free. */
status store_create(struct store **out, const struct cfg *cfg, struct err *e) WUR;
void store_free(struct store **s);

/* Runs c in one transaction and commits before returning ST_OK with the reply. A rejection
 * (business rule, conflict) is an error status with e->reason the API code; nothing is written.
 * Failures say what happened, never a guess:
 *   ST_UNAVAILABLE: certainly not applied (no connection, pool exhausted, lock timeout
 *     "account_unavailable", statement timeout, COMMIT answer lost but the transaction found
 *     aborted): safe to send again;
 *   ST_INTERNAL "outcome_unknown": the COMMIT's answer was lost and Postgres could not say
 *     within cfg->outcome_wait_ms whether it committed: not safe to send again blindly;
 *   ST_INTERNAL otherwise: a bug (not applied). */
status store_execute(struct store *s, const struct command *c, const struct store_meta *m,
                     struct store_reply *out, struct err *e) WUR;

/* A round trip on a pooled connection (readiness). */
status store_ping(struct store *s, struct err *e) WUR;

#endif
