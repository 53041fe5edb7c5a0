/* What the checkpoint cannot see: events held back by stalled accounts or an open transaction. */
#ifndef PROJECTOR_STALLS_H
#define PROJECTOR_STALLS_H

#include <stdint.h>

#include "engine.h"
#include "status.h"

/* Counts the events of stalled accounts (rm:stalled) that generation gen has not applied, and
 * the lowest position among them (0 when none): the checkpoint's highest position cannot see
 * them. Two round trips to Redis, one query to Postgres. */
status pj_stall_backlog(struct pj *p, long gen, int64_t *unapplied, int64_t *lowest, struct err *e) WUR;

/* pj_stall_backlog of the current generation recorded in rm:head (unapplied,
 * lowest_unapplied) for `projector status` and GET /projections. */
status pj_record_backlog(struct pj *p, long gen, struct err *e) WUR;

/* Records in rm:head (horizon_held, horizon_wait_ms, horizon_pid, horizon_xmin) how many
 * committed events lie at or above the transaction horizon and how long the oldest open
 * transaction has held it; logs a warning past 10 s (then once a minute). */
status pj_record_horizon(struct pj *p, struct err *e) WUR;

#endif
