/* A set of events published to JetStream at once, their acks, and the deletion of the acked
 * outbox rows: what the relay and the publish-after-commit path share. */
#ifndef WRITER_PUBSET_H
#define WRITER_PUBSET_H

#include <libpq-fe.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "event.h"
#include "status.h"
#include "uuid.h"

struct pubset {
    pthread_mutex_t mu; /* acks arrive on the NATS thread */
    int n, cap;
    unsigned partitions; /* subject events.<p>: p = fnv1a32(stream id) % partitions */
    int64_t *positions;
    char (*ids)[UUID_STR_SIZE];
    bool *acked;
    bool *answered;     /* an ack or an error came for it */
    int64_t *answer_ns; /* when (CLOCK_MONOTONIC) */
    int nanswered;
    int next_hint;
    char last_error[160];
    /* called on the NATS thread after each answer (NULL: none), outside mu */
    void (*on_answer)(void *arg);
    void *on_answer_arg;
};

status pubset_init(struct pubset *ps, int cap, unsigned partitions, struct err *e) WUR;
void pubset_free(struct pubset *ps);

/* The ack handler of a jsCtx whose AckHandlerClosure is the pubset. */
void pubset_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure);

/* What a session reading the outbox sets: its rows live for milliseconds, so between two
 * autovacuums the table holds hundreds of pages of dead rows, and a plan that scanned them all
 * (the sweep's filter on created_at) cost ~16 ms a round where the primary key's order finds
 * the oldest rows at once. Every statement of these sessions goes by a key. */
#define PUBSET_SESSION "SET enable_seqscan = off"

/* Reads up to limit outbox rows at least min_age_ms old, oldest position first, with their
 * events (DB_EVENT_COLUMNS from column 0; caller PQclears *out). */
status pubset_read_outbox(PGconn *pg, int limit, int min_age_ms, PGresult **out, struct err *e) WUR;

/* Starts a set (forgets the last one). */
void pubset_begin(struct pubset *ps);
/* Publishes ev asynchronously with its event id as Nats-Msg-Id (JetStream drops a second copy,
 * so the relay's later publish of the same row is harmless). ST_UNAVAILABLE: not handed over
 * (the rest waits); the set is full: ST_INTERNAL. */
status pubset_publish(struct pubset *ps, jsCtx *js, const struct event *ev, struct err *e) WUR;
/* Waits up to wait_ms for the acks; what is still unacked is taken back (published again by
 * a later round; the stream keeps one copy). */
void pubset_complete(struct pubset *ps, jsCtx *js, int wait_ms);
/* How many published events of the set have no answer yet. */
int pubset_unanswered(struct pubset *ps);
/* When event i of the set was answered (CLOCK_MONOTONIC ns), 0 while it is not. */
int64_t pubset_answer_ns(struct pubset *ps, int i);
/* Deletes the acked rows from the outbox; *acked: how many were acked. */
status pubset_delete_acked(struct pubset *ps, PGconn *pg, int *acked, struct err *e) WUR;
/* Copies the acked positions of the set into out (room for the set's cap); returns how many. */
int pubset_take_acked(struct pubset *ps, int64_t *out);
/* Deletes the n outbox rows at positions without waiting for the answer (*sent: a statement
 * went out); its result is read by pubset_delete_wait before pg is used again. */
status pubset_send_delete(PGconn *pg, const int64_t *positions, int n, bool *sent, struct err *e) WUR;
/* Reads the answer of a delete sent by pubset_send_delete. */
status pubset_delete_wait(PGconn *pg, struct err *e) WUR;
/* The last publish or ack failure ("" if none), copied into buf. */
void pubset_last_error(struct pubset *ps, char *buf, size_t len);
/* Forgets the set (acks arriving later find nothing). */
void pubset_end(struct pubset *ps);

#endif
