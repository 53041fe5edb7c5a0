/* Transaction-id-horizon reader of the events table. */
#include "tail.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "db.h"

status tail_fetch(PGconn *conn, struct tail_cursor *cursor, int limit, struct event *out,
                  int *count, struct err *e)
{
    char tx[32], pos[32], lim[16];
    const char *params[3] = {tx, pos, lim};
    PGresult *res = NULL;
    status st = ST_OK;
    int n;

    *count = 0;
    snprintf(tx, sizeof tx, "%" PRIu64, cursor->tx_id);
    snprintf(pos, sizeof pos, "%" PRId64, cursor->position);
    snprintf(lim, sizeof lim, "%d", limit);
    res = PQexecParams(conn,
                       "SELECT " DB_EVENT_COLUMNS ", tx_id::text FROM events e "
                       "WHERE (tx_id, position) > ($1::text::xid8, $2::bigint) "
                       "AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) "
                       "ORDER BY e.tx_id, e.position LIMIT $3::int" /* e.: not the text output column */,
                       3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_set(e, ST_UNAVAILABLE, "read events after %s:%s: %s", tx, pos,
                     PQresultErrorMessage(res));
        goto cleanup;
    }
    n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        st = db_event_from_row(&out[i], res, i, 0, e);
        if (st != ST_OK)
            goto cleanup;
        cursor->tx_id = strtoull(PQgetvalue(res, i, 9), NULL, 10);
        cursor->position = out[i].position;
        *count = i + 1;
    }
cleanup:
    PQclear(res);
    return st;
}

status tail_remaining(PGconn *conn, const struct tail_cursor *cursor, int64_t *remaining,
                      int64_t *head, struct err *e)
{
    char tx[32], pos[32];
    const char *params[2] = {tx, pos};
    PGresult *res;
    status st = ST_OK;

    snprintf(tx, sizeof tx, "%" PRIu64, cursor->tx_id);
    snprintf(pos, sizeof pos, "%" PRId64, cursor->position);
    res = PQexecParams(conn,
                       "SELECT count(*) FILTER (WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)), "
                       "coalesce(max(position), 0) FROM events",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_set(e, ST_UNAVAILABLE, "count events: %s", PQresultErrorMessage(res));
    } else {
        *remaining = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        *head = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    }
    PQclear(res);
    return st;
}

void tail_cursor_format(const struct tail_cursor *c, char *buf, size_t len)
{
    snprintf(buf, len, "%" PRIu64 ":%" PRId64, c->tx_id, c->position);
}

status tail_cursor_parse(struct tail_cursor *c, const char *text)
{
    char *end = NULL;
    unsigned long long tx;
    long long pos;

    if (text == NULL)
        return ST_INVALID;
    tx = strtoull(text, &end, 10);
    if (end == text || *end != ':')
        return ST_INVALID;
    text = end + 1;
    pos = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || pos < 0)
        return ST_INVALID;
    c->tx_id = tx;
    c->position = pos;
    return ST_OK;
}
