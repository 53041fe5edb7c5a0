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
    RA_OWNER_ACCOUNTS, /* GET /accounts?owner= */
    RA_EVENT,          /* GET /events/{event_id} */
    RA_TRANSFER,       /* GET /transfers/{transfer_id} */
};

#define RA_LIMIT_DEFAULT 20
#define RA_LIMIT_MAX 500
#define RA_WAIT_DEFAULT_MS 1000
#define RA_WAIT_MAX_MS 10000
#define RA_OWNER_MAX 128

enum ra_order { RA_DESC = 0, RA_ASC };

struct ra_query {
    enum ra_route route;
    char account_id[UUID_STR_SIZE]; /* the account, event or transfer id of the path */
    int64_t min_version;            /* 0: no wait */
    int wait_ms;
    int limit;
    int64_t before;                 /* statement, newest first: 0 = from the newest */
    int64_t after;                  /* statement oldest first: versions above; owner list: positions below */
    enum ra_order order;
    int64_t from_us, to_us;         /* statement time range [from, to), microseconds since the
                                     * epoch; INT64_MIN / INT64_MAX when absent */
    char owner[RA_OWNER_MAX + 1];
};

/* Matches path to a route; for id routes validates and canonicalises the id (a malformed id is
 * ST_INVALID, reason invalid_field). RA_NOT_FOUND is not an error. */
status ra_parse_path(struct ra_query *q, const char *path, struct err *e) WUR;
/* Parses one query parameter (value NULL = given without '=') of q's route into q with its
 * bounds. A parameter the route does not take, or a malformed value, is ST_INVALID with reason
 * invalid_query and a message naming the parameter. */
status ra_parse_param(struct ra_query *q, const char *name, const char *value, struct err *e) WUR;
/* Checks the parameters together once all are parsed (required ones present, combinations
 * that contradict each other): ST_INVALID, reason invalid_query, naming the parameter. */
status ra_check_query(const struct ra_query *q, struct err *e) WUR;
/* Strict decimal integer in [min, max]; no sign, spaces or trailing characters. */
status ra_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);
/* RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm), 'T' and 'Z' in either
 * case, at most 6 fraction digits kept) into microseconds since the epoch. */
status ra_parse_time(const char *s, int64_t *us);

#endif
