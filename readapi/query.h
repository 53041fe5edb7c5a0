/* Pure parsing of read API paths and query parameters (no I/O; fuzzed and unit-tested). */
#ifndef READAPI_QUERY_H
#define READAPI_QUERY_H

#include <stdint.h>

#include "status.h"
#include "uuid.h"

enum ra_route {
    RA_NOT_FOUND = 0,
    RA_HEALTHZ,
    RA_READYZ,
    RA_PROJECTIONS,
    RA_ACCOUNT,
    RA_STATEMENT,
};

#define RA_LIMIT_DEFAULT 20
#define RA_LIMIT_MAX 500
#define RA_WAIT_DEFAULT_MS 1000
#define RA_WAIT_MAX_MS 10000

struct ra_query {
    enum ra_route route;
    char account_id[UUID_STR_SIZE];
    int64_t min_version; /* 0: no wait */
    int wait_ms;
    int limit;
    int64_t before; /* 0: from the newest */
};

/* Matches path to a route; for account routes validates and canonicalises the id (a malformed
 * id is ST_INVALID with a message). RA_NOT_FOUND is not an error. */
status ra_parse_path(struct ra_query *q, const char *path, struct err *e) WUR;
/* Parses one query value (NULL = absent) of the named parameter into q with its bounds. */
status ra_parse_param(struct ra_query *q, const char *name, const char *value, struct err *e) WUR;
/* Strict decimal integer in [min, max]; no sign, spaces or trailing characters. */
status ra_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);

#endif
