/* Which read-model generations exist in Redis, and removing the ones nothing can reach. */
#ifndef PROJECTOR_GENS_H
#define PROJECTOR_GENS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

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

/* ---- fold versions (issue 13, hole 3) ---- */

struct pj;

/* rm:<gen>:fold, the fold version (proj_fold_version) a generation is built with: set by the
 * rebuild before the generation is named, never changed after. pj_gen_fold reads it into out
 * ("" when the generation has none: built before fold versions); pj_gen_fold_set writes this
 * binary's. */
status pj_gen_fold(redisContext *c, long gen, char *out, size_t len, struct err *e) WUR;
status pj_gen_fold_set(redisContext *c, long gen, struct err *e) WUR;

/* Whether this worker may write building generation gen: only when it is built with this
 * binary's fold, else the rebuild folds every event of it itself (a generation never mixes
 * two folds). Remembered per generation; said once in the log. */
int pj_fold_writable(struct pj *p, long gen);

/* Says once per generation (a warning) when current generation gen was built with another fold
 * than this worker's: the live path then extends it with a different fold until the same
 * binary runs everywhere. */
void pj_fold_note_current(struct pj *p, long gen);

#endif
