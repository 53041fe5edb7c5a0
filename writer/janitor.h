/* The writer's housekeeping thread: purges idempotency records past their retention and
 * publishes the dead-letter count as a metric. */
#ifndef WRITER_JANITOR_H
#define WRITER_JANITOR_H

#include "cfg.h"
#include "status.h"

struct janitor;

/* Starts the thread (it connects, and reconnects, on its own). cfg must outlive it. */
status janitor_start(struct janitor **out, const struct cfg *cfg, struct err *e) WUR;
/* Stops and joins the thread, frees *j and clears the pointer. */
void janitor_stop(struct janitor **j);

#endif
