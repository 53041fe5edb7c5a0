/* A command in a transaction of its own: opens, transfers, reversals, keyed commands, and
 * the commands of a batch that failed for a definite reason. */
#ifndef WRITER_SINGLE_H
#define WRITER_SINGLE_H

#include "command.h"
#include "fastpub.h"
#include "pool.h"
#include "status.h"
#include "store.h"

/* Runs c in one transaction on a pooled connection, retried on serialization failures and
 * stale connections; the contract of store_execute. Its committed events go to pub (may be
 * NULL). */
status single_execute(struct pool *p, struct fastpub *pub, const struct command *c, const struct store_meta *m,
                      struct store_reply *out, struct err *e) WUR;

#endif
