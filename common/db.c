/* Postgres helpers: bounded connect, embedded migrations under an advisory lock, event rows. */
#include "db.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evparse.h"
#include "migrations.h"

/* Any constant shared by every process that migrates; "cqrsmigr" in ASCII. */
#define DB_MIGRATE_LOCK "7166453236431169138"

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

status db_connect(PGconn **out, const char *conninfo, int timeout_ms, struct err *e)
{
    status st = ST_OK;
    PGconn *conn = NULL;
    PGresult *res = NULL;
    char connect_timeout[16], user_timeout[16], stmt_timeout[16];
    /* expand_dbname: the first "dbname" is the caller's whole conninfo or URI; the keywords
     * after it override its values. keepalives and tcp_user_timeout turn a server that vanished
     * without closing the socket into an error instead of a hang. */
    const char *const keys[] = {"dbname", "connect_timeout", "keepalives", "keepalives_idle",
                                "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                                "application_name", NULL};
    const char *vals[9];
    const char *p[1];
    char msg[200];

    *out = NULL;
    if (timeout_ms < 1000)
        timeout_ms = 1000;
    /* libpq's connect_timeout is whole seconds, and at least 2 */
    snprintf(connect_timeout, sizeof connect_timeout, "%d", timeout_ms < 2000 ? 2 : (timeout_ms + 999) / 1000);
    snprintf(user_timeout, sizeof user_timeout, "%d", timeout_ms);
    snprintf(stmt_timeout, sizeof stmt_timeout, "%d", timeout_ms);
    vals[0] = conninfo;
    vals[1] = connect_timeout;
    vals[2] = "1";
    vals[3] = "5";
    vals[4] = "2";
    vals[5] = "3";
    vals[6] = user_timeout;
    vals[7] = "cqrs";
    vals[8] = NULL;
    conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "connect to postgres: out of memory");
        goto cleanup;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "connect to postgres: %s",
                      db_error(msg, sizeof msg, conn, NULL));
        goto cleanup;
    }
    /* notices ("already exists, skipping") would go to stderr: libraries do not write there */
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    /* A SET rather than options=-c: it keeps any options the caller's conninfo carries. */
    p[0] = stmt_timeout;
    res = PQexecParams(conn, "SELECT set_config('statement_timeout', $1, false)", 1, NULL, p, NULL,
                       NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "set statement_timeout: %s",
                      db_error(msg, sizeof msg, conn, res));
        goto cleanup;
    }
    *out = conn;
    conn = NULL;
cleanup:
    PQclear(res);
    if (conn != NULL)
        PQfinish(conn);
    return st;
}

/* Runs one parameterless command; ok is the expected result status. */
static status exec_simple(PGconn *conn, const char *sql, ExecStatusType ok, const char *what,
                          struct err *e)
{
    PGresult *res = PQexec(conn, sql);
    status st = ST_OK;
    char msg[200];

    if (PQresultStatus(res) != ok)
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "%s: %s", what,
                      db_error(msg, sizeof msg, conn, res));
    PQclear(res);
    return st;
}

static status apply_one(PGconn *conn, const struct migration *m, struct err *e)
{
    status st = ST_OK;
    PGresult *res = NULL;
    const char *p[1] = {m->name};
    char what[128];

    st = exec_simple(conn, "BEGIN", PGRES_COMMAND_OK, "begin migration", e);
    if (st != ST_OK)
        goto cleanup;
    res = PQexecParams(conn, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, p, NULL,
                       NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "read schema_migrations: %s",
                      db_error(what, sizeof what, conn, res));
        goto cleanup;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        res = NULL;
        /* The migration text may hold several statements: PQexec is the only way to run it.
         * It is compiled in, never built from input. */
        snprintf(what, sizeof what, "apply migration '%s'", m->name);
        st = exec_simple(conn, m->sql, PGRES_COMMAND_OK, what, e);
        if (st != ST_OK)
            goto cleanup;
        res = PQexecParams(conn, "INSERT INTO schema_migrations (version) VALUES ($1)", 1, NULL, p,
                           NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "record migration '%s': %s",
                          m->name, db_error(what, sizeof what, conn, res));
            goto cleanup;
        }
    }
    st = exec_simple(conn, "COMMIT", PGRES_COMMAND_OK, "commit migration", e);
cleanup:
    PQclear(res);
    if (st != ST_OK && PQtransactionStatus(conn) != PQTRANS_IDLE) {
        PGresult *r = PQexec(conn, "ROLLBACK");
        PQclear(r);
    }
    return st;
}

status db_migrate(PGconn *conn, struct err *e)
{
    status st = ST_OK;
    int locked = 0;

    /* Session lock: concurrent starters wait here, then find everything applied. */
    st = exec_simple(conn, "SELECT pg_advisory_lock(" DB_MIGRATE_LOCK ")", PGRES_TUPLES_OK,
                     "lock migrations", e);
    if (st != ST_OK)
        goto cleanup;
    locked = 1;
    st = exec_simple(conn,
                     "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())",
                     PGRES_COMMAND_OK, "create schema_migrations", e);
    if (st != ST_OK)
        goto cleanup;
    for (const struct migration *m = migrations; m->name != NULL; m++) {
        st = apply_one(conn, m, e);
        if (st != ST_OK)
            goto cleanup;
    }
cleanup:
    if (locked) {
        PGresult *r = PQexec(conn, "SELECT pg_advisory_unlock(" DB_MIGRATE_LOCK ")");
        PQclear(r);
    }
    return st;
}

static status parse_int(const char *s, int64_t *out)
{
    char *end = NULL;
    long long n = strtoll(s, &end, 10);

    if (end == s || *end != '\0')
        return ST_INVALID;
    *out = n;
    return ST_OK;
}

status db_event_from_row(struct event *ev, const PGresult *res, int row, int col, struct err *e)
{
    status st = ST_OK;
    json_t *data = NULL, *md = NULL;
    json_error_t je;
    int64_t schema = 0;
    const char *type;

    memset(ev, 0, sizeof *ev);
    if (PQnfields(res) < col + 9 || row < 0 || row >= PQntuples(res))
        return err_set(e, ST_INTERNAL, "event row %d: the result has no such row or columns", row);
    if (parse_int(PQgetvalue(res, row, col), &ev->position) != ST_OK ||
        parse_int(PQgetvalue(res, row, col + 3), &ev->stream_version) != ST_OK ||
        parse_int(PQgetvalue(res, row, col + 5), &schema) != ST_OK) {
        st = err_setr(e, ST_INVALID, "poison", "event row %d: a numeric column does not parse", row);
        goto cleanup;
    }
    ev->schema = (int)schema;
    if (!uuid_parse(PQgetvalue(res, row, col + 1), (size_t)PQgetlength(res, row, col + 1), ev->event_id) ||
        !uuid_parse(PQgetvalue(res, row, col + 2), (size_t)PQgetlength(res, row, col + 2), ev->stream_id)) {
        st = err_setr(e, ST_INVALID, "poison", "event at position %lld: bad uuid",
                      (long long)ev->position);
        goto cleanup;
    }
    type = PQgetvalue(res, row, col + 4);
    ev->type = event_type_parse(type);
    if (ev->type == EV_UNKNOWN) {
        st = err_setr(e, ST_INVALID, "poison", "event '%s': unknown event type '%.64s'", ev->event_id,
                      type);
        goto cleanup;
    }
    snprintf(ev->recorded_at, sizeof ev->recorded_at, "%s", PQgetvalue(res, row, col + 8));
    /* the plain forms without jansson trees (common/evparse.h); anything else is read below */
    if (evparse_data_fast(ev, PQgetvalue(res, row, col + 6), (size_t)PQgetlength(res, row, col + 6)) &&
        (PQgetisnull(res, row, col + 7) ? event_metadata_from_json(ev, NULL, e) == ST_OK
                                         : evparse_metadata_fast(ev, PQgetvalue(res, row, col + 7),
                                                                 (size_t)PQgetlength(res, row, col + 7))))
        return ST_OK;
    data = json_loadb(PQgetvalue(res, row, col + 6), (size_t)PQgetlength(res, row, col + 6), 0, &je);
    if (data == NULL) {
        st = err_setr(e, ST_INVALID, "poison", "event '%s': data: %s", ev->event_id, je.text);
        goto cleanup;
    }
    st = event_data_from_json(ev, data, e);
    if (st != ST_OK)
        goto cleanup;
    if (!PQgetisnull(res, row, col + 7)) {
        md = json_loadb(PQgetvalue(res, row, col + 7), (size_t)PQgetlength(res, row, col + 7), 0, &je);
        if (md == NULL) {
            st = err_setr(e, ST_INVALID, "poison", "event '%s': metadata: %s", ev->event_id, je.text);
            goto cleanup;
        }
    }
    st = event_metadata_from_json(ev, md, e);
cleanup:
    json_decref(data);
    json_decref(md);
    return st;
}

const char *db_error(char *buf, size_t len, const PGconn *conn, const PGresult *res)
{
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    size_t n;

    if (msg == NULL)
        msg = conn != NULL ? PQerrorMessage(conn) : "no connection";
    snprintf(buf, len, "%s", msg);
    for (char *p = buf; *p != '\0'; p++)
        if (*p == '\n' || *p == '\t' || *p == '\r')
            *p = ' ';
    n = strlen(buf);
    while (n > 0 && buf[n - 1] == ' ')
        buf[--n] = '\0';
    return buf;
}

int db_broken(PGconn *conn)
{
    return conn == NULL || PQstatus(conn) != CONNECTION_OK;
}
