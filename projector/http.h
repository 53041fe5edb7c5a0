/* The projector's HTTP listener (PROJECTOR_PORT): /healthz, /readyz and /metrics. */
#ifndef PROJECTOR_HTTP_H
#define PROJECTOR_HTTP_H

#include "cfg.h"
#include "status.h"

struct pj_http;

/* Listens on HTTP_BIND:PROJECTOR_PORT; not ready until pj_http_set_ready(1, ...). *out is the
 * caller's (pj_http_stop). */
status pj_http_start(struct pj_http **out, const struct cfg *c, struct err *e) WUR;
/* Whether the worker can do its work; reason (copied, may be NULL) says why not, for /readyz. */
void pj_http_set_ready(int ready, const char *reason);
/* Stops listening (requests in flight finish), frees *h and clears the pointer; NULL-safe. */
void pj_http_stop(struct pj_http **h);

#endif
