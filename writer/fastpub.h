/* Publishing right behind the COMMIT: a command's events are handed to this writer's own
 * publisher thread as soon as their transaction committed, published with their event id as
 * Nats-Msg-Id, and their outbox rows deleted once JetStream acked them. The outbox row stays
 * the guarantee: whatever this path misses (NATS down, a full queue, a crash) the relay
 * publishes once the row is older than its sweep age (at once when NATS came back), and this
 * publisher, the next time it publishes, publishes the outbox's older rows first. */
#ifndef WRITER_FASTPUB_H
#define WRITER_FASTPUB_H

#include "cfg.h"
#include "event.h"
#include "status.h"

struct fastpub;

/* Starts the publisher thread (it connects, and reconnects, on its own). */
status fastpub_start(struct fastpub **out, const struct cfg *cfg, struct err *e) WUR;
/* Stops and joins the thread; events not yet published stay in the outbox for the relay. */
void fastpub_stop(struct fastpub **f);

/* A transaction that may commit events takes a ticket right before it sends its COMMIT, and
 * ends it with fastpub_offer (committed: its events, maybe none) or fastpub_release (not
 * committed, or its outcome unknown): events are queued in ticket order, so an account's
 * events reach the stream in commit order whichever thread learns of its COMMIT first. Every
 * ticket must be ended, or later events wait for it. 0 when f is NULL (or too many are open:
 * the events are then left to the outbox). Thread-safe. */
uint64_t fastpub_ticket(struct fastpub *f);
/* Hands n committed events (positions set) of ticket's transaction to the publisher; copies
 * them, never blocks on the bus. f may be NULL (nothing happens: the relay publishes). */
void fastpub_offer(struct fastpub *f, uint64_t ticket, const struct event *const *evs, int n);
/* Ends a ticket whose transaction did not commit, or whose outcome is not known (call
 * fastpub_missed first when it may have committed). f NULL or ticket 0: nothing happens. */
void fastpub_release(struct fastpub *f, uint64_t ticket);
/* Committed events were not offered (their COMMIT's answer was lost and they were found in the
 * store afterwards): the next round publishes the outbox's older rows first, so they go before
 * later events of their accounts. f may be NULL. Thread-safe. */
void fastpub_missed(struct fastpub *f);

#endif
