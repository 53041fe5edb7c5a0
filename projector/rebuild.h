/* Rebuild from zero into a new (blue/green) generation, verify, rollback, drop, abort. */
#ifndef PROJECTOR_REBUILD_H
#define PROJECTOR_REBUILD_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "cfg.h"
#include "status.h"

enum rb_mode {
    RB_SWITCH = 0, /* build (or resume) a generation, then make it current */
    RB_VERIFY,     /* build a generation, compare it with the current one, drop it */
    RB_ROLLBACK    /* catch the previous generation up, then make it current again */
};

/* events per read of the events table: a batch applies each account once (one document, one
 * script section), so more events per batch cost Redis less per event (1M events over 10,000
 * accounts: 5.3 CPU-s of Redis at 20,000, 9.7 at 5,000), held twice in memory (read-ahead),
 * ~1.7 KB each. The self-heal inside `projector run` keeps its worker small. */
#define RB_BATCH 20000
#define RB_HEAL_BATCH 5000
#define RB_LANES 2          /* partition lanes a batch is applied on in parallel */
#define RB_LEASE_MS 10000   /* a dead rebuild's lease lapses after this */
#define RB_PROGRESS_MS 2000 /* plain progress lines (and the total's recount) this often */

struct rb_opts {
    enum rb_mode mode;
    int batch;                         /* events per read; 0: RB_BATCH */
    int lanes;                         /* partition lanes applied in parallel (1..16); 0: RB_LANES */
    int auto_heal;                     /* started by `projector run`: no waiting for the lease,
                                          progress as log lines */
    volatile sig_atomic_t *stop;       /* set asynchronously: stop at the next batch (resumable) */
    FILE *out;                         /* verify's differences and every summary (stdout) */
    FILE *progress;                    /* progress (stderr); a terminal gets one \r line */
};

struct rb_result {
    long gen;            /* the generation built (or rolled back to) */
    long replaced;       /* the generation that was current before the switch (0: none) */
    int resumed;         /* 1: continued a rebuild from its checkpoint */
    int64_t events;      /* events read by this run */
    int64_t elapsed_ms;
    double events_per_s; /* events / elapsed of this run */
    long compared;       /* verify: accounts compared */
    long differing;      /* verify: accounts that differ */
    int64_t unfolded;    /* events of the history that could not be folded (parked) */
};

/* Runs a rebuild, verify or rollback to its end. ST_CONFLICT: another rebuild holds the lease,
 * a rebuild is in progress (rollback), or the generation was dropped under it (--abort);
 * ST_NOT_FOUND: nothing to roll back to or to verify against; ST_UNAVAILABLE: a dependency
 * failed or stop was requested (a rebuild resumes from its checkpoint when run again). */
status rb_run(const struct cfg *c, const struct rb_opts *o, struct rb_result *res,
              struct err *e) WUR;

/* Abandons the rebuild in progress: clears rm:building and rm:rebuild, then removes the
 * building generation's keys (UNLINK over SCAN). *gen is 0 when there was none. */
status rb_abort(const struct cfg *c, long *gen, long *removed, struct err *e) WUR;

/* Removes the previous generation (the rollback target) and clears rm:previous. */
status rb_drop_previous(const struct cfg *c, long *gen, long *removed, struct err *e) WUR;

#endif
