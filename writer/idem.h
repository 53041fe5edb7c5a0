/* Idempotency keys: a key's first response is kept with a hash of its request, so a replay of
 * the same request returns it and another request under the same key is refused. */
#ifndef WRITER_IDEM_H
#define WRITER_IDEM_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "status.h"
#include "store.h"

/* The text a key's request hash is taken of: route and account, and the body as canonical
 * JSON (keys sorted, compact), so formatting does not make another request. malloc'd, caller
 * frees; NULL: out of memory. */
char *idem_request_text(const struct store_meta *m);

/* Claims m's key for m->principal inside the open transaction; a record older than
 * retention_s counts as absent. *replay set when the key was used before: then out holds the
 * first response (same request) or idempotency_key_reused is returned. A concurrent holder of
 * the key makes this wait until it commits or aborts (or the lock timeout). */
status idem_claim(PGconn *conn, const struct store_meta *m, const char *request, int retention_s,
                  bool *replay, struct store_reply *out, struct err *e) WUR;

/* Stores the response of the claimed key (same transaction). */
status idem_record(PGconn *conn, const struct store_meta *m, const struct store_reply *out,
                   struct err *e) WUR;

/* Deletes the records older than retention_s (of every principal); *purged: how many. */
status idem_purge(PGconn *conn, int retention_s, long *purged, struct err *e) WUR;

#endif
