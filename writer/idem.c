/* Idempotency keys: claim in the command's transaction, the first response kept for replays. */
#include "idem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql.h"

char *idem_request_text(const struct store_meta *m)
{
    size_t rl = strlen(m->scope);
    char *s = malloc(rl + 1 + m->body_len + 1);

    if (s == NULL)
        return NULL;
    /* the account of the path belongs to the request: one key sent to two accounts is reuse */
    memcpy(s, m->scope, rl);
    s[rl] = '\n';
    memcpy(s + rl + 1, m->body, m->body_len);
    s[rl + 1 + m->body_len] = '\0';
    return s;
}

status idem_claim(PGconn *conn, const struct store_meta *m, const char *request, bool *replay,
                  struct store_reply *out, struct err *e)
{
    PGresult *res = NULL;
    const char *p[2] = {m->idempotency_key, request};
    status st;

    *replay = false;
    st = sql_run(conn, &res, "idem_claim", 2, p, PGRES_TUPLES_OK, e);
    if (st != ST_OK || PQntuples(res) == 1)
        goto cleanup;
    PQclear(res);
    st = sql_run(conn, &res, "idem_get", 2, p, PGRES_TUPLES_OK, e);
    if (st != ST_OK)
        goto cleanup;
    if (PQntuples(res) != 1) {
        st = err_setr(e, ST_CONFLICT, "retry", "idempotency key vanished");
        goto cleanup;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        st = err_setr(e, ST_REJECTED, "idempotency_key_reused",
                      "this Idempotency-Key was used with another request");
        goto cleanup;
    }
    *replay = true;
    out->http_status = atoi(PQgetvalue(res, 0, 1));
    out->body = strdup(PQgetvalue(res, 0, 2));
    out->replayed = true;
    if (out->body == NULL)
        st = err_set(e, ST_INTERNAL, "out of memory");
cleanup:
    PQclear(res);
    return st;
}

status idem_record(PGconn *conn, const struct store_meta *m, const struct store_reply *out,
                   struct err *e)
{
    PGresult *res = NULL;
    char code[8];
    const char *p[3] = {m->idempotency_key, code, out->body};
    status st;

    snprintf(code, sizeof code, "%d", out->http_status);
    st = sql_run(conn, &res, "idem_set", 3, p, PGRES_COMMAND_OK, e);
    PQclear(res);
    return st;
}
