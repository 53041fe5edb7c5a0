/* The writer's metrics: commands, group commit, the connection pool, the outbox and the relay. */
#ifndef WRITER_WMETRICS_H
#define WRITER_WMETRICS_H

#include "command.h"

/* A command answered: result is "ok", "replayed" or the error code of the answer. */
void wm_command(enum cmd_kind kind, const char *result);
/* A group-commit transaction carried n commands. */
void wm_batch(int n);
/* A pool checkout waited wait_s seconds; ok 0: it timed out or could not connect. */
void wm_pool_checkout(double wait_s, int ok);
/* Connections checked out changed by delta (+1 checkout, -1 checkin); size: the pool's. */
void wm_pool_in_use(int delta, int size);
/* This writer's relay holds the outbox lock (1) or stands by / is disconnected (0). */
void wm_relay_active(int active);
/* A relay round: published (handed to JetStream), acked (deleted from the outbox), failed
 * (published but not acked). Dead letters are counted where they are moved aside. */
void wm_relay_round(int published, int acked, int failed);
/* Publishing after COMMIT: seconds from the hand-over of a round's oldest event to the acks of
 * the whole round (how much of the end-to-end latency the writer's publishing takes). */
void wm_publish_after_commit(double seconds);
/* A relay round that failed before or while publishing (Postgres or NATS unavailable). */
void wm_relay_error(void);
/* n undecodable outbox rows moved to the dead letters. */
void wm_dead_lettered(int n);
/* n idempotency records purged after their retention. */
void wm_keys_purged(long n);
/* Every counter without labels (and writer_relay_active) at 0, before anything happens. */
void wm_init(void);
/* Rows in the outbox and the age of the oldest in seconds (0 when empty). */
void wm_outbox(double rows, double oldest_age_s);

#endif
