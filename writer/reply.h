/* The 2xx body of a committed command, built from its decision (events with positions). */
#ifndef WRITER_REPLY_H
#define WRITER_REPLY_H

#include "command.h"
#include "decide.h"
#include "status.h"
#include "store.h"

/* Sets out->http_status and out->body (malloc'd, caller frees). */
status reply_build(const struct command *c, const struct decision *d, struct store_reply *out,
                   struct err *e) WUR;

#endif
