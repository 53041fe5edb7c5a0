/* Which read-model generations exist in Redis, and removing the ones nothing can reach. */
#ifndef PROJECTOR_GENS_H
#define PROJECTOR_GENS_H

#include <hiredis/hiredis.h>

#include "status.h"

#define PJ_GENS_MAX 64

struct pj_gens_present {
    int n;
    long gen[PJ_GENS_MAX]; /* ascending */
    long keys[PJ_GENS_MAX]; /* keys of each */
};

/* Every generation that has a key in Redis (rm:<gen>:...), by SCAN (never blocks Redis; one
 * pass over the keyspace). */
status pj_gens_present(redisContext *c, struct pj_gens_present *out, struct err *e) WUR;

/* Drops every generation present that is neither current, building nor previous: left behind
 * when rm:current vanished (a DEL, a partial flush) and a self-healing rebuild switched to a
 * new one. Each is unnamed-checked and its checkpoint deleted in one script, so a generation
 * that a switch or rollback names meanwhile is never touched. *dropped and *removed count
 * generations and keys (either may be NULL). */
status pj_gens_drop_unreachable(redisContext *c, long *dropped, long *removed, struct err *e) WUR;

#endif
