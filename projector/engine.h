/* The projector's core: fold batches of events into the Redis read models, idempotently. */
#ifndef PROJECTOR_ENGINE_H
#define PROJECTOR_ENGINE_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdint.h>

#include "batch.h"
#include "cfg.h"
#include "readmodel.h"
#include "status.h"
#include "tail.h"

struct pj {
    const struct cfg *cfg; /* borrowed, outlives the struct */
    PGconn *pg;            /* owned; NULL until pj_pg connects */
    redisContext *rc;      /* owned; NULL until pj_redis connects */
    char sha[48];          /* SHA1 of the apply script on rc's server */
    long gen;              /* current generation seen by the last batch (0: none) */
    long building;         /* building generation seen by the last batch (0: none) */
    int no_model;          /* the last batch found no current generation */
    char lease_token[UUID_STR_SIZE]; /* identifies this worker's sweep lease */
    /* set by a partition owner (NULL: unfenced, the sweep and the rebuild): every apply checks
     * the owner's epoch, and the final pass of a batch that settles every item records
     * fence->new_seq; expect_seq follows what was recorded */
    struct rm_fence *fence;
    int fence_final; /* this pass is the batch's last (internal to pj_process) */
    int fenced;      /* the last pj_process was refused: a newer owner holds the partition */
    int rewound;     /* the last pj_process found the store behind fence->expect_seq */
    /* counters since start, for logs */
    long applied, duplicates, parked, conflicts, gap_events, strays, holes;
    /* the transaction horizon as the last sweep saw it (stalls.c) */
    char horizon_xmin[24];
    int64_t horizon_since_ms, horizon_warned_ms;
    /* the fold versions of the last generations seen (gens.c pj_fold_writable) */
    long fold_building, fold_current;
    int fold_building_ok;
    long pass_gen; /* the generation the running pass writes (park.c: whose stalls) */
    /* the rebuild's and a partition owner's (owned, NULL elsewhere): the views it wrote, folded
     * onto without reading them back; every write is still a compare-and-set (vcache.c says why
     * that is safe) */
    struct vcache *cache;
    /* a partition owner's: the generations its last batch was built for, taken for the next one
     * without reading them (gens_known); every apply of a live pass checks the names it was
     * built for (gens_check, "" elsewhere) and a change redoes the batch (gens_changed) */
    struct rm_gens gens;
    int gens_known, gens_changed;
    char gens_check[48];
};

/* notify.c: a notification on rm:applied could not be sent (reason "refused" or "connection",
 * why the error text): counted, logged at most once a minute, and rm:applied:lost bumped so the
 * read API clears its caches. */
void pj_notify_lost(struct pj *p, const char *reason, const char *why);
/* Declares the family at 0 (pj_init does), so a healthy projector shows it. */
void pj_notify_declare(void);

#define PJ_IGNORE_STALLED 1u /* replay-parked: fold stalled accounts too */
#define PJ_MAX_CAS_ROUNDS 8  /* re-read and re-fold an account at most this often per batch */

void pj_init(struct pj *p, const struct cfg *c);
/* Closes the connections; safe to call twice. */
void pj_release(struct pj *p);

/* Connects Redis when needed and loads the apply script. Never creates a generation. */
status pj_redis(struct pj *p, struct err *e) WUR;
/* Connects Postgres when needed (no migration). */
status pj_pg(struct pj *p, struct err *e) WUR;
/* Drops a connection after a failure so the next pj_redis/pj_pg reconnects (pj_drop_redis also
 * forgets what it remembered of that Redis: pj_forget). */
void pj_drop_redis(struct pj *p);
/* Forgets the remembered views and generations: Redis may hold less than was written (it lost
 * writes, or another server answers), so none may decide that an event is already applied. */
void pj_forget(struct pj *p);
void pj_drop_pg(struct pj *p);
/* A failed or unexpected Redis reply as ST_UNAVAILABLE "redis <what>: <why>"; a NULL reply
 * (connection lost) also drops the connection. */
status pj_redis_failed(struct pj *p, const redisReply *r, struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Projects items (any order, duplicates allowed) into the building generation (when a rebuild
 * runs) and then the current one, and sets each item's disp. Poison is parked
 * and its account stalled on the way. ST_OK: every disp is final and may be acted on.
 * ST_UNAVAILABLE: Redis or Postgres failed; nothing may be acknowledged (retry the batch: it is
 * idempotent). The array keeps its order. */
status pj_process(struct pj *p, struct pj_item *items, int n, unsigned flags, struct err *e) WUR;

/* Same as pj_process for one generation only (the rebuild's writes): the same read, fold and
 * compare-and-set. *gone is set when gen does not exist (dropped, aborted, flushed). */
status pj_process_gen(struct pj *p, long gen, struct pj_item *items, int n, unsigned flags,
                      int *gone, struct err *e) WUR;

/* pj_process_gen over nl lanes in parallel (the rebuild's): the items of partition q go to lane
 * q % nl, lane 0 is p, lanes 1.. are extra[0..nl-2] (pj_init'ed, their own connections). An
 * account is in one lane, so its versions keep their order; the lanes' Redis calls and folds
 * overlap. ST_OK when every lane's is; *gone when any lane found gen gone. */
#define PJ_LANES_MAX 16
status pj_process_gen_lanes(struct pj *p, struct pj *extra, int nl, long gen, struct pj_item *items, int n,
                            unsigned flags, int *gone, struct err *e) WUR;

/* Reads up to limit events after *cursor in commit-safe order (tx_id, position) below the
 * transaction horizon, as items (*out malloc'd, pj_items_free), and advances *cursor.
 * *caught_up: in the same snapshot no committed event lies beyond the new cursor. */
status pj_tail_read(struct pj *p, struct tail_cursor *cursor, int limit, struct pj_item **out,
                    int *n, int *caught_up, struct err *e) WUR;

/* Takes the lease key for token (SET NX PX ttl_ms) or extends it when token holds it. */
status pj_lease(struct pj *p, const char *key, const char *token, int ttl_ms, int *held,
                struct err *e) WUR;

/* Events of one stream with versions in [from, to] from Postgres as items (each row decoded on
 * its own: a poison row is an item with ok 0). *out is malloc'd (caller: pj_items_free). */
status pj_read_stream(struct pj *p, const char *id, int64_t from, int64_t to, struct pj_item **out,
                      int *n, struct err *e) WUR;
void pj_items_free(struct pj_item *items, int n);

/* Catch-up sweep: reads up to limit events of the events table after the generation's tail
 * cursor (commit-safe order) by their ids and versions only, applies those the current
 * generation does not hold yet (read whole, *fetched of them) and advances the cursor; also
 * records the store head in rm:head. *count is the number of events read (limit: call again
 * soon). Skips (count 0) while another worker holds the sweep lease. */
status pj_sweep(struct pj *p, int limit, int *count, int *fetched, struct err *e) WUR;

/* Parks a poison item in rm:parked (under a generated id when it has none) and stalls its
 * account in rm:stalled (the first cause is kept). */
status pj_park(struct pj *p, struct pj_item *it, const char *reason, struct err *e) WUR;

#endif
