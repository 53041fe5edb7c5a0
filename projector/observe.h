/* The projector's metrics: the engine's counters and, once a second, the read side's state
 * (lag, parked, stalled, rebuild progress) read from Redis, and the readiness that follows. */
#ifndef PROJECTOR_OBSERVE_H
#define PROJECTOR_OBSERVE_H

#include "engine.h"

/* Publishes p's counters; at most once a second also reads the read side's status from Redis
 * (one script call on p->rc, when connected) into gauges and sets readiness: ready when
 * subscribed is set, Redis answers and a current generation exists. Run-loop thread only. */
void pj_observe(struct pj *p, int subscribed);
/* Counts one catch-up sweep that read count events (ok 0: it failed). */
void pj_observe_sweep(int ok, int count);

#endif
