/* Consumption: one thread per owned partition reads events.<p> in order and applies it. */
#ifndef PROJECTOR_CONSUME_H
#define PROJECTOR_CONSUME_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "bus.h"
#include "cfg.h"
#include "status.h"

/* One owned partition. The caller fills the first block, starts the thread, moves valid_until
 * forward after each lease renewal, and sets stop to hand the partition back. */
struct cs_part {
    const struct cfg *cfg;  /* borrowed */
    struct bus *bus;        /* borrowed: the process's connection (thread-safe) */
    int part;
    uint64_t epoch;         /* the lease's fencing epoch */
    const char *worker;     /* borrowed: this process's name, recorded with the epoch */
    _Atomic int64_t valid_until; /* monotonic ms: nothing is applied at or after it */
    const _Atomic int *share; /* borrowed: partitions the worker holds or is due to (its batch) */

    pthread_t thread;
    atomic_int stop;     /* set by the caller: finish (or drop) the batch in hand and exit */
    atomic_int finished; /* the thread has exited (join it) */
    atomic_int fenced;   /* it exited because a newer owner's epoch is in Redis */
    _Atomic uint64_t floor; /* fenced at its claim: the highest epoch in Redis (see own_advance) */
    /* progress, for logs, status and tests */
    _Atomic long applied, gap_events, conflicts, rewinds, duplicates, parked, strays, holes;
    _Atomic long resubscribes; /* consumers begun again after a hole or a bus error */
    _Atomic uint64_t seq;     /* last stream sequence recorded in rm:part:<p> */
    _Atomic uint64_t pending; /* messages of the partition after the last one applied */
    _Atomic int64_t pos;      /* the highest event position applied from the partition */
    _Atomic int64_t lag_ms;   /* age of the last message applied while more were pending */
};

/* Starts the partition's thread (the fields of the first block must be set). */
status cs_part_start(struct cs_part *w, struct err *e) WUR;
/* Sets stop and waits for the thread. */
void cs_part_join(struct cs_part *w);

/* The highest epoch rm:part:0..nparts-1 hold (0 when none). */
status cs_max_epoch(redisContext *rc, int nparts, uint64_t *max, struct err *e) WUR;

/* Deletes the shared durable consumer of the first version ("projector"), if present: its
 * pending messages would only age on the server. */
status cs_retire_shared_consumer(struct bus *b, struct err *e) WUR;

#endif
