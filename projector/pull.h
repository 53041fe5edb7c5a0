/* A partition's pull consumer: a standing bounded request, taken from as events arrive. */
#ifndef PROJECTOR_PULL_H
#define PROJECTOR_PULL_H

#include <stdint.h>

#include "bus.h"
#include "status.h"

struct pull;

/* An ephemeral pull consumer (no acks) on events.<part> from stream sequence start, fetching at
 * most max_bytes bytes, and the batch last set, at a time. *out is the caller's (pull_close). */
status pull_open(struct pull **out, struct bus *b, int part, uint64_t start, int64_t max_bytes,
                 struct err *e) WUR;
/* The batch of the requests sent from now on (the one standing keeps its own); 1 until set. */
void pull_set_batch(struct pull *p, int batch);
/* Up to the batch size of messages in stream order into msgs (the caller's to destroy), *n of
 * them; waits up to wait_ms for the first (*n 0: none came), then takes what has arrived, or,
 * while the consumer is behind, what the request is still bringing. */
status pull_next(struct pull *p, natsMsg **msgs, int *n, int wait_ms, struct err *e) WUR;
/* Ends the subscription and deletes the consumer; *p becomes NULL (NULL-safe). */
void pull_close(struct pull **p);

#endif
