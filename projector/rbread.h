/* The rebuild's reader: the next batch of the events table is read on a connection of its own
 * while the lanes apply the current one. */
#ifndef PROJECTOR_RBREAD_H
#define PROJECTOR_RBREAD_H

#include <pthread.h>

#include "engine.h"

struct rb_reader {
    struct pj pj; /* its own Postgres connection (no Redis) */
    pthread_t thread;
    int running;  /* a read from `from` was started and not taken */
    struct tail_cursor from, to;
    int limit;
    struct pj_item *items;
    int n, caught_up;
    status st;
    struct err e;
};

void rbr_init(struct rb_reader *r, const struct cfg *c);
/* Starts reading up to limit events after *from (pj_tail_read) in a thread; without a thread
 * the next rbr_take reads them itself. */
void rbr_start(struct rb_reader *r, const struct tail_cursor *from, int limit);
/* pj_tail_read(cur, limit, ...): the read started from *cur with that limit when there is one
 * (waited for), else a read now. A read started from elsewhere is dropped. */
status rbr_take(struct rb_reader *r, struct tail_cursor *cur, int limit, struct pj_item **out, int *n,
                int *caught_up, struct err *e) WUR;
/* Waits for a running read and drops it, then closes the connection. */
void rbr_release(struct rb_reader *r);

#endif
