/* Ownership: which worker owns which partition, through leases in a JetStream KV bucket. */
#ifndef PROJECTOR_OWNERSHIP_H
#define PROJECTOR_OWNERSHIP_H

#include <nats/nats.h>
#include <stdint.h>

#include "bus.h"
#include "cfg.h"
#include "status.h"

#define OWN_BUCKET "projector_leases"
#define OWN_WORKER_SIZE 96

struct own_part {
    int held;               /* this worker holds the lease */
    uint64_t rev;           /* revision of our last claim or renewal (the CAS value) */
    uint64_t epoch;         /* revision of the claim: the fencing epoch */
    int64_t renewed_ms;     /* monotonic time the last successful renewal was sent */
    int64_t unowned_since;  /* monotonic: first tick it was seen without an owner (0: owned) */
    int64_t released_ms;    /* when this worker released it (0: never) */
    int release_wanted;     /* above the share: the caller stops its consumer, then own_release */
};

enum own_event_kind { OWN_CLAIMED, OWN_LOST };

struct own_event {
    int part;
    enum own_event_kind kind;
    uint64_t epoch;
    char why[120];
};

struct own {
    const struct cfg *cfg; /* borrowed */
    jsCtx *js;             /* borrowed: the bus's */
    kvStore *kv;           /* owned */
    char worker[OWN_WORKER_SIZE];
    int nparts;
    struct own_part *parts; /* nparts, owned */
    int live;               /* live workers at the last tick (this one included), at least 1 */
    int live_seen;          /* fresh heartbeats the last listing saw */
    int orphans;            /* leases about to expire (their owner dead or not renewing) */
    int max_held;           /* the most partitions one live worker holds (the last listing) */
    int64_t opened_ms;      /* monotonic: own_open */
    int64_t round_ms;       /* monotonic: the last heartbeat and renewal round */
    int held;               /* partitions held */
    struct own_event *events; /* what the last tick changed (nparts slots, owned) */
    int nevents;
};

/* Binds (creating it when missing: TTL = PROJECTOR_LEASE_MS, file storage, NATS_REPLICAS
 * replicas) the lease bucket on b's connection; worker names this process. floor is the highest
 * epoch Redis holds: the bucket's revisions are moved past it (own_advance). A memory bucket of
 * an older version is recreated with file storage when no worker holds a lease (else kept, and
 * a warning says what to do). */
status own_open(struct own *o, const struct cfg *c, struct bus *b, const char *worker, uint64_t floor,
                struct err *e) WUR;
/* When the bucket's last revision is below floor (NATS lost its state), purges it so that the
 * next revision is floor + 1: every lease is gone (their renewals fail) and claims start above
 * every epoch Redis holds. *was: the last revision before (0: nothing done). */
status own_advance(struct own *o, uint64_t floor, uint64_t *was, struct err *e) WUR;
/* Releases every held lease (the caller has stopped their consumers) and frees o. */
void own_close(struct own *o);

/* One round: every lease / 4 announces this worker and renews every held lease by revision CAS
 * (the first failed renewal drops the partition: OWN_LOST); every call counts the live workers,
 * claims unowned partitions up to ceil(P / live) (or any partition left unowned for a whole
 * lease) and marks the ones above the share release_wanted. o->events lists the claims and
 * losses. */
status own_tick(struct own *o, struct err *e) WUR;
/* Monotonic ms of the next own_tick: the next renewal round, or sooner while a dead worker's
 * leases are due to expire (so they are claimed at once), while a live worker holds more than
 * the share (a hand-over is due: released partitions are claimed at once) and during the first
 * round period after own_open (workers started together see each other before the next
 * renewal round instead of one of them holding everything for it). */
int64_t own_next_ms(const struct own *o);

/* The lease of p is held and was renewed recently enough to act on it at now_ms (monotonic). */
int own_valid(const struct own *o, int p, int64_t now_ms);
/* Gives p up: deletes its lease (only right after a successful renewal, so it is still ours). */
status own_release(struct own *o, int p, struct err *e) WUR;
/* Forgets p without touching the bucket (a newer owner fenced us: the key is not ours). */
void own_forget(struct own *o, int p);

/* For status: the owner of p as stored in the bucket ("" when unowned) and its epoch. */
status own_read(kvStore *kv, int p, char *owner, size_t len, uint64_t *epoch, struct err *e) WUR;
/* Binds the existing bucket (ST_NOT_FOUND when no worker ever ran). */
status own_bind(kvStore **kv, struct bus *b, struct err *e) WUR;

#endif
