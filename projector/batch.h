/* Pure pieces of the projector: batch items, grouping by account, poison records, backoff. */
#ifndef PROJECTOR_BATCH_H
#define PROJECTOR_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "status.h"

/* What happens to an item's message once the batch is done. */
enum pj_disp {
    PJ_PENDING = 0, /* undecided: treated like PJ_NAK */
    PJ_ACK,         /* applied, duplicate, or its account is stalled (the event is in Postgres) */
    PJ_TERM,        /* parked as poison: never redeliver */
    PJ_NAK          /* could not be applied yet (e.g. predecessor missing): redeliver later */
};

/* One event to project: from a JetStream message or a Postgres row. */
struct pj_item {
    struct event ev;    /* decoded; when ok is 0 only the ids found by pj_peek are set */
    int ok;             /* 1: ev decoded; 0: poison at decode (why says why) */
    struct err why;
    const char *payload; /* raw envelope for parking: borrowed (message) or owned_payload */
    size_t payload_len;
    char *owned_payload; /* malloc'd copy when the source does not outlive the batch */
    uint64_t seq;        /* JetStream stream sequence; 0 when read from Postgres */
    int stray;           /* a message that is not the event store's event at its version:
                            terminated, counted, never folded or parked (set by the fold) */
    enum pj_disp disp;
};

/* Decodes payload into it (borrowed: payload must outlive the item); never fails: a poison
 * payload leaves ok 0, why set and the ids pj_peek could read. */
void pj_item_decode(struct pj_item *it, const char *payload, size_t len, uint64_t seq);
/* Frees owned_payload. */
void pj_item_release(struct pj_item *it);

/* Best effort on an envelope that does not decode: copies whatever of event_id, stream_id
 * (only valid UUIDs), stream_version and position it can read into ev (others zero/empty). */
void pj_peek(struct event *ev, const char *payload, size_t len);

/* Sorts pointers to items by (account, stream_version, decoded first); items without an
 * account come first. Groups are then contiguous. */
void pj_sort(struct pj_item **v, int n);

/* The rm:parked record (JSON, caller frees; NULL on allocation failure). parked_at is ISO-8601
 * UTC text; jetstream_seq is written only when it is not 0. */
char *pj_park_record(const struct event *ev, const char *reason, const char *parked_at,
                     const char *payload, size_t payload_len, uint64_t jetstream_seq);
/* The rm:stalled record (JSON, caller frees). */
char *pj_stall_record(const char *event_id, const char *reason, const char *since);

/* A partition's batch when its worker holds (or is due to hold) share partitions: the smaller
 * of batch and worker_events / share, at least 1. Each decoded event costs 1.7 KiB, so a worker
 * that owns every partition does not hold partitions x PROJECTOR_BATCH of them. */
int pj_partition_batch(int batch, int worker_events, int share);

/* Exponential backoff with a cap: 100 ms, 200 ms, ... max_ms. */
int pj_backoff_ms(int attempt, int max_ms);

/* Current UTC time as "2026-11-21T20:00:00.123Z" into buf, and as unix milliseconds. */
void pj_now_iso(char *buf, size_t len);
int64_t pj_now_ms(void);

#endif
