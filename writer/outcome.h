/* What became of a transaction whose COMMIT answer was lost: asked of Postgres by its xid. */
#ifndef WRITER_OUTCOME_H
#define WRITER_OUTCOME_H

#include <libpq-fe.h>

#include "status.h"

enum outcome {
    OUTCOME_COMMITTED,
    OUTCOME_ABORTED, /* nothing of it is applied: safe to run again */
    OUTCOME_UNKNOWN, /* Postgres unreachable, or the transaction still running, for the bound */
};

/* Connects afresh (the command's session is gone) and asks pg_xact_status(xid) until it is
 * committed or aborted, or bound_ms passed. When committed and event_ids (a uuid[] literal)
 * is not NULL, *positions receives "event_id, position, recorded_at" rows of those events
 * (caller PQclears). e says why the answer is OUTCOME_UNKNOWN (for the log). */
enum outcome outcome_resolve(const char *conninfo, const char *xid, const char *event_ids,
                             PGresult **positions, int bound_ms, struct err *e);

#endif
