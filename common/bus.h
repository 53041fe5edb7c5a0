/* NATS JetStream helpers shared by the relay, the projector and the tests. */
#ifndef COMMON_BUS_H
#define COMMON_BUS_H

#include <nats/nats.h>

#include "cfg.h"
#include "status.h"

#define BUS_STREAM "EVENTS"
#define BUS_SUBJECTS "events.>"
#define BUS_CONSUMER "projector"
/* JetStream's duplicate window for Nats-Msg-Id: republishes inside it are dropped. */
#define BUS_DUPLICATE_WINDOW_MS (2 * 60 * 1000)

struct bus {
    natsConnection *conn;
    jsCtx *js;
    int replicas; /* of the stream bus_ensure_stream creates (0: 1) */
};

/* Connects to url, one or several comma-separated server URLs (reconnecting forever in the
 * background once connected, to any of them) and creates the JetStream context. timeout_ms
 * bounds the first connect and every JetStream API call. */
status bus_connect(struct bus *b, const char *url, const char *name, int timeout_ms,
                   struct err *e) WUR;
/* The same with the NATS_URL and request timeout of c; streams it creates get c's
 * NATS_REPLICAS. */
status bus_connect_cfg(struct bus *b, const struct cfg *c, const char *name, struct err *e) WUR;
/* bus_connect_cfg whose reconnected(conn, closure) runs, on a NATS library thread, each time
 * the connection is back after a loss (what waits for the bus can go at once); send_asap: a
 * publish is written to the socket by the publishing thread at once, not by the library's
 * flusher thread (one thread hop less for a latency-bound publisher). */
status bus_connect_watch(struct bus *b, const struct cfg *c, const char *name, natsConnectionHandler reconnected,
                         void *closure, bool send_asap, struct err *e) WUR;
/* Creates the EVENTS stream (file storage, subjects events.>, duplicate window, b->replicas
 * replicas) if missing. */
status bus_ensure_stream(struct bus *b, struct err *e) WUR;
/* Destroys the context and the connection; safe on a zeroed struct. */
void bus_release(struct bus *b);

#endif
