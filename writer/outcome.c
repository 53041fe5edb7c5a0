/* The outcome of a transaction whose COMMIT answer was lost. The command's xid was read before
 * its COMMIT was sent; a fresh session asks pg_xact_status for it. "in progress" is a COMMIT
 * still in flight (e.g. a backend waiting for a synchronous standby): asked again until the
 * bound, so a client is told the truth instead of a guess. */
#include "outcome.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "db.h"

#define ASK_PAUSE_MS 100

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

enum outcome outcome_resolve(const char *conninfo, const char *xid, const char *event_ids,
                             PGresult **positions, int bound_ms, struct err *e)
{
    long long deadline = now_ms() + bound_ms;
    PGconn *conn = NULL;
    enum outcome oc = OUTCOME_UNKNOWN;
    char msg[200];

    if (positions != NULL)
        *positions = NULL;
    err_setr(e, ST_INTERNAL, "outcome_unknown", "commit answer lost; no answer from postgres yet");
    if (xid == NULL || xid[0] == '\0') {
        err_setr(e, ST_INTERNAL, "outcome_unknown", "commit answer lost before the xid was known");
        return OUTCOME_UNKNOWN;
    }
    for (;;) {
        PGresult *res = NULL;
        const char *p[1] = {xid};
        long long left = deadline - now_ms();

        if (left <= 0)
            break;
        if (conn != NULL && db_broken(conn)) {
            PQfinish(conn);
            conn = NULL;
        }
        if (conn == NULL && db_connect(&conn, conninfo, left < 1000 ? 1000 : (int)left, e) != ST_OK) {
            pause_ms(ASK_PAUSE_MS);
            continue;
        }
        res = PQexecParams(conn, "SELECT pg_xact_status($1::xid8)", 1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            err_setr(e, ST_INTERNAL, "outcome_unknown", "pg_xact_status: %s", db_error(msg, sizeof msg, conn, res));
            PQclear(res);
            pause_ms(ASK_PAUSE_MS);
            continue;
        }
        if (strcmp(PQgetvalue(res, 0, 0), "aborted") == 0) {
            oc = OUTCOME_ABORTED;
        } else if (strcmp(PQgetvalue(res, 0, 0), "committed") == 0) {
            oc = OUTCOME_COMMITTED;
        } else {
            /* in progress (or NULL: an xid too old to know, which a lost answer never is) */
            err_setr(e, ST_INTERNAL, "outcome_unknown", "transaction %s still %s", xid,
                     PQgetisnull(res, 0, 0) ? "unknown" : PQgetvalue(res, 0, 0));
            PQclear(res);
            pause_ms(ASK_PAUSE_MS);
            continue;
        }
        PQclear(res);
        if (oc == OUTCOME_COMMITTED && event_ids != NULL && positions != NULL) {
            const char *q[1] = {event_ids};
            res = PQexecParams(conn,
                               "SELECT event_id::text, position, to_char(recorded_at AT TIME ZONE 'UTC', "
                               "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM events WHERE event_id = ANY($1::uuid[])",
                               1, NULL, q, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                err_setr(e, ST_INTERNAL, "outcome_unknown", "read committed events: %s",
                         db_error(msg, sizeof msg, conn, res));
                PQclear(res);
                oc = OUTCOME_UNKNOWN;
                pause_ms(ASK_PAUSE_MS);
                continue;
            }
            *positions = res;
        }
        err_clear(e);
        break;
    }
    if (conn != NULL)
        PQfinish(conn);
    return oc;
}
