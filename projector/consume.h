/* Consumption: the JetStream pull consumer and the handling of one fetched batch. */
#ifndef PROJECTOR_CONSUME_H
#define PROJECTOR_CONSUME_H

#include <nats/nats.h>

#include "bus.h"
#include "cfg.h"
#include "engine.h"
#include "status.h"

/* Creates (or updates to c's settings) the durable pull consumer every worker shares. */
status cs_ensure_consumer(struct bus *b, const struct cfg *c, struct err *e) WUR;
/* Binds *sub to that consumer (caller: natsSubscription_Destroy). */
status cs_subscribe(natsSubscription **sub, struct bus *b, struct err *e) WUR;
/* Up to batch messages into list, returning as soon as what is there has been delivered. */
natsStatus cs_fetch(natsSubscription *sub, natsMsgList *list, int batch, int wait_ms);
/* Projects one fetched batch and acks it; retries (without acking) while Redis or Postgres is
 * down. The messages stay owned by list. */
void cs_handle_batch(struct pj *p, const struct cfg *c, natsMsgList *list);

#endif
