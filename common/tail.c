/* Transaction-id-horizon reader of the events table. */
#include "tail.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "db.h"

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
