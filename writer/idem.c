/* Idempotency keys: claimed in the command's transaction under the caller's principal, the
 * first response kept for replays, records older than the retention purged in the background. */
#include "idem.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "sql.h"

static const char *principal(const struct store_meta *m)
{
    return m->principal != NULL ? m->principal : "";
}

char *idem_request_text(const struct store_meta *m)
{
    /* the parsed body, not its bytes: a replay that differs in key order or white space is
     * the same request */
    json_t *doc = json_loadb(m->body, m->body_len, 0, NULL);
    char *canon = doc != NULL ? json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    const char *body = canon != NULL ? canon : m->body; /* bodies reaching here parsed once */
    size_t rl = strlen(m->scope), bl = canon != NULL ? strlen(canon) : m->body_len;
    char *s = malloc(rl + 1 + bl + 1);

    if (s != NULL) {
        /* the account of the path belongs to the request: one key sent to two accounts is reuse */
        memcpy(s, m->scope, rl);
        s[rl] = '\n';
        memcpy(s + rl + 1, body, bl);
        s[rl + 1 + bl] = '\0';
    }
    free(canon);
    json_decref(doc);
    return s;
}

status idem_claim(PGconn *conn, const struct store_meta *m, const char *request, int retention_s,
                  bool *replay, struct store_reply *out, struct err *e)
{
    PGresult *res = NULL;
    char ret[16];
    const char *p[4] = {m->idempotency_key, request, principal(m), ret};
    status st;

    *replay = false;
    snprintf(ret, sizeof ret, "%d", retention_s);
    st = sql_run(conn, &res, "idem_claim", 4, p, PGRES_TUPLES_OK, e);
    if (st != ST_OK || PQntuples(res) == 1)
        goto cleanup;
    PQclear(res);
    st = sql_run(conn, &res, "idem_get", 3, p, PGRES_TUPLES_OK, e);
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
    const char *p[4] = {m->idempotency_key, code, out->body, principal(m)};
    status st;

    snprintf(code, sizeof code, "%d", out->http_status);
    st = sql_run(conn, &res, "idem_set", 4, p, PGRES_COMMAND_OK, e);
    PQclear(res);
    return st;
}

status idem_purge(PGconn *conn, int retention_s, long *purged, struct err *e)
{
    char ret[16];
    const char *p[1] = {ret};
    PGresult *res = NULL;
    status st = ST_OK;
    char msg[200];

    *purged = 0;
    snprintf(ret, sizeof ret, "%d", retention_s);
    /* in slices, so a large backlog never holds many row locks or one long transaction */
    for (;;) {
        long n;
        res = PQexecParams(conn,
                           "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM "
                           "idempotency_keys WHERE created_at < clock_timestamp() - "
                           "make_interval(secs => $1::int) LIMIT 1000))",
                           1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "purge idempotency keys: %s",
                          db_error(msg, sizeof msg, conn, res));
            break;
        }
        n = strtol(PQcmdTuples(res), NULL, 10);
        *purged += n;
        PQclear(res);
        res = NULL;
        if (n < 1000)
            break;
    }
    PQclear(res);
    return st;
}
