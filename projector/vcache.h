/* The rebuild's and a partition owner's memory of the account documents it wrote, so that a
 * batch folds onto them without reading them back from Redis (the compare-and-set still checks
 * every version). */
#ifndef PROJECTOR_VCACHE_H
#define PROJECTOR_VCACHE_H

#include "account.h"

/* Bounded: 2 ways of nsets sets (the rebuild's VC_SETS: about 12 MiB; a partition owner's
 * VC_LIVE_SETS: about 0.75 MiB, touched only as accounts come); an account that does not fit is
 * read from Redis as before. */
#define VC_SETS 16384
#define VC_LIVE_SETS 1024

struct vcache;

/* NULL on allocation failure (every account is then read). Caller: vc_free (NULL-safe). */
struct vcache *vc_new(int nsets);
void vc_free(struct vcache *c);
/* The view of account id in generation gen when held (a copy into *out): 1, else 0. */
int vc_get(struct vcache *c, long gen, const char *id, struct account_view *out);
/* Remembers view (its account_id and version) as what generation gen holds. */
void vc_put(struct vcache *c, long gen, const struct account_view *view);
/* Forgets account id (stalled, refused, unknown state). */
void vc_drop(struct vcache *c, const char *id);
/* Forgets every view: Redis may hold less than was written (it lost writes, or a round failed
 * half way), so no remembered view may decide that an event is already applied. */
void vc_clear(struct vcache *c);

#endif
