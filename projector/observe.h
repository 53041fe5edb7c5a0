/* The projector's metrics: the engine's counters and, once a second, the read side's state
 * (lag, parked, stalled, rebuild progress) read from Redis, and the readiness that follows. */
#ifndef PROJECTOR_OBSERVE_H
#define PROJECTOR_OBSERVE_H

#include "engine.h"

#include <stdint.h>

/* Counters of this process: the sweep's and every partition thread's, summed by the caller. */
struct pj_counts {
    long applied, duplicates, gap_events, conflicts, parked, strays, holes;
    long resubscribes; /* consumers begun again after a hole in their sequence or a bus error */
};

/* Publishes the counters n; at most once a second also reads the read side's status from Redis
 * (one script call on p->rc, when connected) into gauges and sets readiness: ready when
 * subscribed is set (the worker takes part in the partition leases), Redis answers and a
 * current generation exists. Run-loop thread only. */
void pj_observe(struct pj *p, const struct pj_counts *n, int subscribed);
/* Partition gauges of this worker: partitions owned, and per partition it runs a consumer for
 * (owned 1) the messages after the last one applied and the age of that one while more are
 * pending; a partition no longer owned (owned 0) has its series removed. */
void pj_observe_owned(int n);
void pj_observe_partition(int part, int owned, uint64_t pending, int64_t lag_ms);
/* Counts one catch-up sweep that read count events and fetched whole the ones the read model
 * lacked (ok 0: it failed). */
void pj_observe_sweep(int ok, int count, int fetched);

#endif
