/* The outcome of a transaction whose COMMIT answer was lost, read back from the store.
 *
 * The command's xid is read before its COMMIT is sent, and its event ids are the writer's
 * own. One statement, on a fresh session, asks both things under one snapshot: whether the
 * xid is over (below the snapshot's xmax and not among its running xids) and how many of the
 * events are visible. Its events visible: committed. Over and none visible: it rolled back,
 * crashed, or never reached the WAL at all; in every case nothing of it is stored (the
 * snapshot that finds the xid over sees every row it committed). Not over: still running
 * (a COMMIT waiting for a synchronous standby), or an xid this server has not handed out
 * since a crash restart, asked again until the bound.
 *
 * pg_xact_status alone is not enough: the xids of transactions whose WAL was never flushed
 * are handed out again after a crash restart, so "committed" may be another command's
 * transaction that took the same xid (a chaos run published such a phantom event). It is kept
 * in the log as a hint. */
#include "outcome.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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

/* over: the xid is neither running nor unassigned under the statement's snapshot; hint:
 * pg_xact_status where it can be asked (it raises an error for an xid beyond the server's
 * next one); found: how many of the events the same snapshot sees. */
static const char ASK_SQL[] =
    "SELECT x < pg_snapshot_xmax(s) AND pg_visible_in_snapshot(x, s), "
    "CASE WHEN x < pg_snapshot_xmax(s) THEN coalesce(pg_xact_status(x), 'too old') "
    "ELSE 'not begun on this server (xmax ' || pg_snapshot_xmax(s) || ')' END, "
    "(SELECT count(*) FROM events WHERE event_id = ANY($2::uuid[])) "
    "FROM pg_current_snapshot() s, CAST($1 AS xid8) x";

static const char POSITIONS_SQL[] =
    "SELECT event_id::text, position, to_char(recorded_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM events WHERE event_id = ANY($1::uuid[])";

enum outcome outcome_resolve(const char *conninfo, const char *xid, const char *event_ids, int nevents,
                             PGresult **positions, int bound_ms, struct err *e)
{
    long long deadline = now_ms() + bound_ms;
    PGconn *conn = NULL;
    enum outcome oc = OUTCOME_UNKNOWN;
    char msg[200];

    if (positions != NULL)
        *positions = NULL;
    err_setr(e, ST_INTERNAL, "outcome_unknown", "commit answer lost; no answer from postgres yet");
    if (xid == NULL || xid[0] == '\0' || event_ids == NULL || nevents <= 0) {
        err_setr(e, ST_INTERNAL, "outcome_unknown", "commit answer lost before the xid and events were known");
        return OUTCOME_UNKNOWN;
    }
    for (;;) {
        PGresult *res = NULL;
        const char *p[2] = {xid, event_ids};
        long long left = deadline - now_ms(), found;
        bool over;

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
        res = PQexecParams(conn, ASK_SQL, 2, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            err_setr(e, ST_INTERNAL, "outcome_unknown", "ask for transaction %s: %s", xid,
                     db_error(msg, sizeof msg, conn, res));
            PQclear(res);
            pause_ms(ASK_PAUSE_MS);
            continue;
        }
        over = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        found = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        if (found == nevents) {
            oc = OUTCOME_COMMITTED;
        } else if (found > 0) {
            /* part of one transaction's rows: never; say so rather than guess */
            err_setr(e, ST_INTERNAL, "outcome_unknown", "transaction %s: %lld of its %d events found", xid,
                     found, nevents);
            PQclear(res);
            break;
        } else if (over) {
            oc = OUTCOME_ABORTED;
        } else {
            err_setr(e, ST_INTERNAL, "outcome_unknown", "transaction %s not over (%s), its events not found",
                     xid, PQgetvalue(res, 0, 1));
            PQclear(res);
            pause_ms(ASK_PAUSE_MS);
            continue;
        }
        /* what was found, for the log: the status Postgres keeps for the xid is only a hint */
        err_setr(e, ST_OK, "", "transaction %s: %lld of %d events found, xid status '%s'", xid, found, nevents,
                 PQgetvalue(res, 0, 1));
        PQclear(res);
        if (oc == OUTCOME_COMMITTED && positions != NULL) {
            const char *q[1] = {event_ids};
            res = PQexecParams(conn, POSITIONS_SQL, 1, NULL, q, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != nevents) {
                err_setr(e, ST_INTERNAL, "outcome_unknown", "read committed events: %s",
                         db_error(msg, sizeof msg, conn, res));
                PQclear(res);
                oc = OUTCOME_UNKNOWN;
                pause_ms(ASK_PAUSE_MS);
                continue;
            }
            *positions = res;
        }
        break;
    }
    if (conn != NULL)
        PQfinish(conn);
    return oc;
}
