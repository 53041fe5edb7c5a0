/* Reading from a Redis replica (READ_REPLICAS=1): which replica, and whether it may be read. */
#ifndef READAPI_REPLICA_H
#define READAPI_REPLICA_H

#include <stddef.h>

#include "cfg.h"
#include "status.h"

/* Starts the thread that watches the replica (nothing when c->read_replicas is 0): it finds
 * it (REDIS_REPLICA_URL, or a healthy one the Sentinels list), listens on its rm:applied, and
 * every 100 ms checks that it is a replica of the primary's history with its link up and at
 * most READ_REPLICA_MAX_LAG_MS behind; reads go to it (rs__set_source) only while all hold. */
status replica_start(const struct cfg *c, struct err *e) WUR;
void replica_stop(void);
/* The chosen replica's address into host (len bytes) and *port, with the epoch of that choice
 * (it grows when the address changes); 0 when none is chosen. Thread-safe. */
int replica_addr(char *host, size_t len, int *port, unsigned *epoch);
unsigned replica_epoch(void);

#endif
