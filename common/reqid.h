/* Request ids: a caller's X-Request-Id kept when it is safe to echo and log, else a new one. */
#ifndef COMMON_REQID_H
#define COMMON_REQID_H

#include <stdbool.h>

#define REQID_MAX 64 /* characters; longer ids are replaced */

/* Copies header into out when it is 1..REQID_MAX characters of [A-Za-z0-9._:-] (safe in a
 * header, a JSON string and a log line); returns false (out: "") otherwise. Pure, fuzzed. */
bool reqid_accept(const char *header, char out[REQID_MAX + 1]);
/* A caller's id when acceptable, else a random one (32 hex digits) into out. */
void reqid_take(const char *header, char out[REQID_MAX + 1]);

#endif
