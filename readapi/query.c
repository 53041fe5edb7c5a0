/* Read API request parsing: routes, ids and bounded query parameters. */
#include "query.h"

#include <string.h>

status ra_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    int64_t n = 0;

    if (s == NULL || *s == '\0' || strlen(s) > 19)
        return ST_INVALID;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return ST_INVALID;
        if (n > (INT64_MAX - (*p - '0')) / 10)
            return ST_INVALID; /* would overflow: certainly above any bound */
        n = n * 10 + (*p - '0');
    }
    if (n < min || n > max)
        return ST_INVALID;
    *out = n;
    return ST_OK;
}

/* n decimal digits at s into *v; 0 when one is not a digit. */
static int digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        *v = *v * 10 + (s[i] - '0');
    }
    return 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

status ra_parse_time(const char *s, int64_t *us)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, oh = 0, om = 0, frac = 0, leap;
    const char *p;
    int64_t t;

    if (s == NULL || strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &sec))
        return ST_INVALID;
    leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) || h > 23 ||
        mi > 59 || sec > 59)
        return ST_INVALID;
    p = s + 19;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 6)
                frac = frac * 10 + (*p - '0');
        if (n == 0)
            return ST_INVALID;
        for (; n < 6; n++)
            frac *= 10;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        /* UTC */
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && digits(p + 1, 2, &oh) && p[3] == ':' &&
               digits(p + 4, 2, &om) && oh <= 23 && om <= 59) {
        if (*p == '-') {
            oh = -oh;
            om = -om;
        }
    } else {
        return ST_INVALID;
    }
    t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - (oh * 3600 + om * 60);
    *us = t * 1000000 + frac;
    return ST_OK;
}

/* The id after prefix up to rest (or the end) into q->account_id; route set first. */
static status parse_id(struct ra_query *q, enum ra_route route, const char *id, const char *rest,
                       const char *what, struct err *e)
{
    q->route = route;
    if (!uuid_parse(id, rest != NULL ? (size_t)(rest - id) : strlen(id), q->account_id))
        return err_setr(e, ST_INVALID, "invalid_field", "%s must be a UUID", what);
    return ST_OK;
}

status ra_parse_path(struct ra_query *q, const char *path, struct err *e)
{
    static const char accounts[] = "/accounts/", events[] = "/events/", transfers[] = "/transfers/";
    const char *id, *rest;

    memset(q, 0, sizeof *q);
    q->wait_ms = RA_WAIT_DEFAULT_MS;
    q->limit = RA_LIMIT_DEFAULT;
    q->from_us = INT64_MIN;
    q->to_us = INT64_MAX;
    if (strcmp(path, "/healthz") == 0)
        q->route = RA_HEALTHZ;
    else if (strcmp(path, "/readyz") == 0)
        q->route = RA_READYZ;
    else if (strcmp(path, "/projections") == 0)
        q->route = RA_PROJECTIONS;
    else if (strcmp(path, "/accounts") == 0)
        q->route = RA_OWNER_ACCOUNTS;
    if (q->route != RA_NOT_FOUND)
        return ST_OK;
    if (strncmp(path, events, sizeof events - 1) == 0) {
        id = path + sizeof events - 1;
        return strchr(id, '/') != NULL ? ST_OK : parse_id(q, RA_EVENT, id, NULL, "event id", e);
    }
    if (strncmp(path, transfers, sizeof transfers - 1) == 0) {
        id = path + sizeof transfers - 1;
        return strchr(id, '/') != NULL ? ST_OK : parse_id(q, RA_TRANSFER, id, NULL, "transfer id", e);
    }
    if (strncmp(path, accounts, sizeof accounts - 1) != 0)
        return ST_OK;
    id = path + sizeof accounts - 1;
    rest = strchr(id, '/');
    if (rest == NULL)
        return parse_id(q, RA_ACCOUNT, id, NULL, "account id", e);
    if (strcmp(rest, "/statement") == 0)
        return parse_id(q, RA_STATEMENT, id, rest, "account id", e);
    return ST_OK;
}

enum param {
    P_MIN_VERSION = 1 << 0,
    P_WAIT_MS = 1 << 1,
    P_LIMIT = 1 << 2,
    P_BEFORE = 1 << 3,
    P_AFTER = 1 << 4,
    P_ORDER = 1 << 5,
    P_FROM = 1 << 6,
    P_TO = 1 << 7,
    P_OWNER = 1 << 8,
};

static unsigned route_params(enum ra_route r)
{
    switch (r) {
    case RA_ACCOUNT:
        return P_MIN_VERSION | P_WAIT_MS;
    case RA_STATEMENT:
        return P_MIN_VERSION | P_WAIT_MS | P_LIMIT | P_BEFORE | P_AFTER | P_ORDER | P_FROM | P_TO;
    case RA_OWNER_ACCOUNTS:
        return P_OWNER | P_LIMIT | P_AFTER;
    default:
        return 0;
    }
}

static const struct {
    const char *name;
    unsigned bit;
} param_names[] = {
    {"min_version", P_MIN_VERSION}, {"wait_ms", P_WAIT_MS}, {"limit", P_LIMIT}, {"before", P_BEFORE},
    {"after", P_AFTER},             {"order", P_ORDER},     {"from", P_FROM},   {"to", P_TO},
    {"owner", P_OWNER},
};

/* '<name>' must be <what> <bound> */
static status bad(struct err *e, const char *name, const char *what, int64_t bound)
{
    return err_setr(e, ST_INVALID, "invalid_query", "'%s' must be %s %lld", name, what,
                    (long long)bound);
}

status ra_parse_param(struct ra_query *q, const char *name, const char *value, struct err *e)
{
    unsigned bit = 0;
    int64_t n = 0;

    for (size_t i = 0; i < sizeof param_names / sizeof param_names[0]; i++)
        if (strcmp(name, param_names[i].name) == 0)
            bit = param_names[i].bit;
    if (bit == 0 || (route_params(q->route) & bit) == 0)
        return err_setr(e, ST_INVALID, "invalid_query", "unknown query parameter '%.64s'", name);
    if (value == NULL)
        return err_setr(e, ST_INVALID, "invalid_query", "query parameter '%s' needs a value", name);
    switch (bit) {
    case P_MIN_VERSION:
        if (ra_parse_int(value, 0, INT32_MAX, &n) != ST_OK)
            return bad(e, name, "an integer between 0 and", INT32_MAX);
        q->min_version = n;
        break;
    case P_WAIT_MS:
        if (ra_parse_int(value, 0, RA_WAIT_MAX_MS, &n) != ST_OK)
            return bad(e, name, "an integer between 0 and", RA_WAIT_MAX_MS);
        q->wait_ms = (int)n;
        break;
    case P_LIMIT:
        if (ra_parse_int(value, 1, RA_LIMIT_MAX, &n) != ST_OK)
            return bad(e, name, "an integer between 1 and", RA_LIMIT_MAX);
        q->limit = (int)n;
        break;
    case P_BEFORE:
        if (ra_parse_int(value, 1, INT32_MAX, &n) != ST_OK)
            return bad(e, name, "a version between 1 and", INT32_MAX);
        q->before = n;
        break;
    case P_AFTER:
        /* a version on a statement, a global position on the owner's list */
        if (ra_parse_int(value, q->route == RA_STATEMENT ? 0 : 1,
                         q->route == RA_STATEMENT ? INT32_MAX : INT64_MAX, &n) != ST_OK)
            return bad(e, name, "a cursor between 0 and",
                       q->route == RA_STATEMENT ? INT32_MAX : INT64_MAX);
        q->after = n;
        break;
    case P_ORDER:
        if (strcmp(value, "asc") == 0)
            q->order = RA_ASC;
        else if (strcmp(value, "desc") == 0)
            q->order = RA_DESC;
        else
            return err_setr(e, ST_INVALID, "invalid_query", "'order' must be 'asc' or 'desc'");
        break;
    case P_FROM:
    case P_TO:
        if (ra_parse_time(value, bit == P_FROM ? &q->from_us : &q->to_us) != ST_OK)
            return err_setr(e, ST_INVALID, "invalid_query",
                            "'%s' must be an RFC 3339 time such as 2026-11-21T20:00:00Z", name);
        break;
    case P_OWNER: {
        size_t len = strlen(value);
        if (len < 1 || len > RA_OWNER_MAX)
            return err_setr(e, ST_INVALID, "invalid_query", "'owner' must be 1 to %d characters", RA_OWNER_MAX);
        memcpy(q->owner, value, len + 1);
        break;
    }
    default:
        break;
    }
    return ST_OK;
}

status ra_check_query(const struct ra_query *q, struct err *e)
{
    if (q->route == RA_OWNER_ACCOUNTS && q->owner[0] == '\0')
        return err_setr(e, ST_INVALID, "invalid_query", "query parameter 'owner' is required");
    if (q->route != RA_STATEMENT)
        return ST_OK;
    if (q->order == RA_ASC && q->before != 0)
        return err_setr(e, ST_INVALID, "invalid_query",
                        "'before' pages newest first: with order=asc use 'after'");
    if (q->order == RA_DESC && q->after != 0)
        return err_setr(e, ST_INVALID, "invalid_query",
                        "'after' pages oldest first: use it with order=asc (or 'before')");
    if (q->from_us != INT64_MIN && q->to_us != INT64_MAX && q->from_us >= q->to_us)
        return err_setr(e, ST_INVALID, "invalid_query", "'from' must be earlier than 'to'");
    return ST_OK;
}
