/* Tailing the events table in commit-safe order (rebuild, catch-up sweep): never skips a row
 * of a transaction that commits late. */
#ifndef COMMON_TAIL_H
#define COMMON_TAIL_H

#include <libpq-fe.h>
#include <stdint.h>

#include "event.h"
#include "status.h"

/* Positions come from a sequence and commit out of order, so "position > last" would skip a
 * slow transaction's rows. Instead rows are read in (tx_id, position) order and only from
 * transactions below the snapshot's xmin: those have all finished, and every transaction still
 * running (or not yet started) writes a larger tx_id than anything below xmin. */
struct tail_cursor {
    uint64_t tx_id;   /* last row's transaction id (xid8); 0 = from the start */
    int64_t position; /* last row's position */
};

/* The number of events after cursor (for progress), and the store's head position. */
status tail_remaining(PGconn *conn, const struct tail_cursor *cursor, int64_t *remaining,
                      int64_t *head, struct err *e) WUR;
/* "tx:position" text form for storing a cursor; parse returns ST_INVALID on bad text. */
void tail_cursor_format(const struct tail_cursor *c, char *buf, size_t len);
status tail_cursor_parse(struct tail_cursor *c, const char *text);

#endif
