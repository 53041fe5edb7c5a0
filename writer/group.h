/* Group commit: concurrent commands that batch share one transaction and one WAL flush. */
#ifndef WRITER_GROUP_H
#define WRITER_GROUP_H

#include <stdbool.h>

#include "command.h"
#include "fastpub.h"
#include "grouptx.h"
#include "pool.h"
#include "status.h"
#include "store.h"

struct group;

/* A group commit running its transactions on p, handing committed events to pub (may be NULL;
 * both must outlive it). Caller frees with group_free. */
status group_create(struct group **out, struct pool *p, struct fastpub *pub, struct err *e) WUR;
void group_free(struct group **b);

/* Whether c (with its metadata) may run in a batch. */
bool group_accepts(const struct command *c, const struct store_meta *m);

/* Queues p for the committer thread (p->c, m, out, e, finish and arg set; p owned by the
 * caller, untouched by it until finish). finish(p) is called on the committer's thread once
 * its batch ended: p->st and p->out/e hold the answer, or p->alone: it must run on its own
 * (single_execute). Not queued (ST_INTERNAL, p->e): out of memory. The caller then calls
 * group_pending_release(p). */
status group_submit(struct group *b, struct pending *p) WUR;
void group_pending_release(struct pending *p);

/* Queues c and returns once the batch that carried it committed (or c ran on its own after
 * a batch failure); the contract of store_execute. */
status group_execute(struct group *b, const struct command *c, const struct store_meta *m,
                     struct store_reply *out, struct err *e) WUR;

#endif
