/* What became of a transaction whose COMMIT answer was lost: read back from the store. */
#ifndef WRITER_OUTCOME_H
#define WRITER_OUTCOME_H

#include <libpq-fe.h>

#include "status.h"

enum outcome {
    OUTCOME_COMMITTED, /* its events are in the store */
    OUTCOME_ABORTED,   /* it is over and none of its events is in the store: safe to run again */
    OUTCOME_UNKNOWN,   /* Postgres unreachable, or the xid not over, for the whole bound */
};

/* Connects afresh (the command's session is gone) and asks, until bound_ms passed, whether
 * the transaction xid is over and whether its nevents events (event_ids: a uuid[] literal of
 * the ids the writer generated) are in the events table. Committed means the events are
 * there, nothing else: after a crash restart Postgres hands out again the xids whose WAL it
 * never flushed, so pg_xact_status(xid) may describe another transaction (it is logged as a
 * hint only). When committed and positions is not NULL, *positions receives "event_id,
 * position, recorded_at" rows of those events (caller PQclears). e says why the answer is
 * OUTCOME_UNKNOWN, or what was found (for the log). */
enum outcome outcome_resolve(const char *conninfo, const char *xid, const char *event_ids, int nevents,
                             PGresult **positions, int bound_ms, struct err *e);

#endif
