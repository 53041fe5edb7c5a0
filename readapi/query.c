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

status ra_parse_path(struct ra_query *q, const char *path, struct err *e)
{
    static const char prefix[] = "/accounts/";
    const char *id, *rest;

    memset(q, 0, sizeof *q);
    q->wait_ms = RA_WAIT_DEFAULT_MS;
    q->limit = RA_LIMIT_DEFAULT;
    if (strcmp(path, "/healthz") == 0)
        q->route = RA_HEALTHZ;
    else if (strcmp(path, "/readyz") == 0)
        q->route = RA_READYZ;
    else if (strcmp(path, "/projections") == 0)
        q->route = RA_PROJECTIONS;
    if (q->route != RA_NOT_FOUND || strncmp(path, prefix, sizeof prefix - 1) != 0)
        return ST_OK;
    id = path + sizeof prefix - 1;
    rest = strchr(id, '/');
    if (rest == NULL)
        q->route = RA_ACCOUNT;
    else if (strcmp(rest, "/statement") == 0)
        q->route = RA_STATEMENT;
    else
        return ST_OK;
    if (!uuid_parse(id, rest != NULL ? (size_t)(rest - id) : strlen(id), q->account_id))
        return err_setr(e, ST_INVALID, "invalid_field", "account id must be a UUID");
    return ST_OK;
}

status ra_parse_param(struct ra_query *q, const char *name, const char *value, struct err *e)
{
    int64_t n = 0;

    if (value == NULL)
        return ST_OK;
    if (strcmp(name, "min_version") == 0) {
        if (ra_parse_int(value, 0, INT32_MAX, &n) != ST_OK)
            return err_setr(e, ST_INVALID, "invalid_field",
                            "'min_version' must be an integer between 0 and %d", INT32_MAX);
        q->min_version = n;
    } else if (strcmp(name, "wait_ms") == 0) {
        if (ra_parse_int(value, 0, RA_WAIT_MAX_MS, &n) != ST_OK)
            return err_setr(e, ST_INVALID, "invalid_field",
                            "'wait_ms' must be an integer between 0 and %d", RA_WAIT_MAX_MS);
        q->wait_ms = (int)n;
    } else if (strcmp(name, "limit") == 0) {
        if (ra_parse_int(value, 1, RA_LIMIT_MAX, &n) != ST_OK)
            return err_setr(e, ST_INVALID, "invalid_field",
                            "'limit' must be an integer between 1 and %d", RA_LIMIT_MAX);
        q->limit = (int)n;
    } else if (strcmp(name, "before") == 0) {
        if (ra_parse_int(value, 1, INT32_MAX, &n) != ST_OK)
            return err_setr(e, ST_INVALID, "invalid_field",
                            "'before' must be a version between 1 and %d", INT32_MAX);
        q->before = n;
    }
    return ST_OK;
}
