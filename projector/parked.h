/* The operator commands on parked (poison) events: replay-parked and discard-parked. */
#ifndef PROJECTOR_PARKED_H
#define PROJECTOR_PARKED_H

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "cfg.h"

/* A park or stall record (JSON in rm:parked / rm:stalled) parsed: new reference, NULL when r is
 * not a string or not JSON. */
json_t *pk_parse_record(const redisReply *r);
/* String field k of o, "-" when absent (belongs to o). */
const char *pk_jstr(const json_t *o, const char *k);

/* Prints title with the count, then one line per stall record of r (an HGETALL reply). */
void pk_print_stalls(const char *title, const redisReply *r);

/* Retries every parked event (only: the one event id given) after its cause was fixed; exit
 * status 0 all replayed, 1 some left parked or a failure, 5 no such parked event. */
int pk_cmd_replay(const struct cfg *c, const char *only);

/* Gives up on parked event event_id for reason: records who, when and why in discarded_events,
 * then catches its account up (the event folds as a no-op from then on, in every fold) and
 * un-stalls it. Exit status 0 done, 1 a failure, 4 refused (the event cannot be discarded),
 * 5 no such parked event. */
int pk_cmd_discard(const struct cfg *c, const char *event_id, const char *reason);

#endif
