/* rebuild --verify: compare two generations of the read models account by account. */
#ifndef PROJECTOR_VERIFY_H
#define PROJECTOR_VERIFY_H

#include "engine.h"
#include "rebuild.h"
#include "status.h"

/* Compares generation `built` with `live` for every account either holds (a difference is
 * looked at again, so an event being applied right now is not reported); prints the last look's
 * differences to o->out and fills res->compared and res->differing. */
status rb_verify(struct pj *p, long live, long built, const struct rb_opts *o,
                 struct rb_result *res, struct err *e);

#endif
