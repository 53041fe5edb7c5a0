/* Idempotency keys: a key's first response is kept with a hash of its request, so a replay of
 * the same request returns it and another request under the same key is refused. */
#ifndef WRITER_IDEM_H
#define WRITER_IDEM_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "status.h"
#include "store.h"

/* The text a key's request hash is taken of (malloc'd, caller frees; NULL: out of memory). */
char *idem_request_text(const struct store_meta *m);

/* Claims m's key inside the open transaction. *replay set when the key was used before: then
 * out holds the first response (same request) or idempotency_key_reused is returned. A
 * concurrent holder of the key makes this wait until it commits or aborts. */
status idem_claim(PGconn *conn, const struct store_meta *m, const char *request, bool *replay,
                  struct store_reply *out, struct err *e) WUR;

/* Stores the response of the claimed key (same transaction). */
status idem_record(PGconn *conn, const struct store_meta *m, const struct store_reply *out,
                   struct err *e) WUR;

#endif
