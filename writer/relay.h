/* The outbox relay: a thread that publishes committed outbox rows to JetStream and deletes the acked ones. */
#ifndef WRITER_RELAY_H
#define WRITER_RELAY_H

#include "cfg.h"
#include "status.h"

struct relay;

/* Starts the thread (it connects, and reconnects, on its own). cfg must outlive the relay. */
status relay_start(struct relay **out, const struct cfg *cfg, struct err *e) WUR;
/* Asks the thread to stop, joins it, frees *r and clears the pointer. Rows not yet published
 * stay in the outbox for the next relay. */
void relay_stop(struct relay **r);

#endif
