/* The statements a command's transaction is built from: session setup, prepared statements,
 * failures classified into the API's terms, and the reads and writes of one event. */
#include "sql.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "jsonx.h"
#include "uuid.h"

#define REQUEST_HASH "encode(sha256(convert_to($2, 'UTF8')), 'hex')"

/* The group commit's writes: every event, its outbox row and every account update of a batch
 * in one statement. cols/arrays: leading columns and their unnest arrays (positions given). */
#define BATCH_APPEND(cols, arrays)                                                                     \
    "WITH ins AS (INSERT INTO events (" cols "event_id, stream_id, stream_version, type, schema, "      \
    "data, metadata) SELECT * FROM unnest(" arrays "$1::uuid[], $2::uuid[], $3::int[], $4::text[], "    \
    "$5::int[], $6::jsonb[], $7::jsonb[]) RETURNING position, event_id, recorded_at), "                 \
    "ob AS (INSERT INTO outbox (position, event_id) SELECT position, event_id FROM ins), "             \
    "up AS (UPDATE accounts a SET balance = u.balance, version = u.version, status = u.status, "       \
    "closed_at = CASE WHEN u.status = 'closed' THEN clock_timestamp() END "                            \
    "FROM unnest($8::uuid[], $9::bigint[], $10::int[], $11::text[]) AS u(id, balance, version, status) " \
    "WHERE a.account_id = u.id AND a.account_id = ANY($8::uuid[]) RETURNING 1) "                       \
    "SELECT event_id::text, position, to_char(recorded_at AT TIME ZONE 'UTC', "                        \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), (SELECT count(*) FROM up) FROM ins"

static const struct {
    const char *name;
    const char *sql;
} statements[] = {
    {"acct_lock", "SELECT owner, name, currency, overdraft_limit, balance, version, status "
                  "FROM accounts WHERE account_id = $1::uuid FOR UPDATE"},
    /* ON CONFLICT: a taken name is an expected answer, not an ERROR line in Postgres's log (nor
     * an aborted transaction); the second column names the open account that holds it */
    {"acct_insert", "WITH ins AS (INSERT INTO accounts (account_id, owner, name, currency, "
                    "overdraft_limit, balance, version, status) VALUES ($1::uuid, $2, $3, $4, "
                    "$5::bigint, 0, $6::int, 'open') ON CONFLICT (owner, name) WHERE closed_at IS NULL "
                    "DO NOTHING RETURNING account_id) "
                    "SELECT (SELECT count(*) FROM ins), (SELECT account_id::text FROM accounts "
                    "WHERE owner = $2 AND name = $3 AND closed_at IS NULL LIMIT 1)"},
    {"acct_update", "UPDATE accounts SET balance = $2::bigint, version = $3::int, status = $4, "
                    "closed_at = CASE WHEN $4 = 'closed' THEN clock_timestamp() END "
                    "WHERE account_id = $1::uuid"},
    /* The outbox row goes in with its event: the relay sees both or neither. */
    {"ev_append", "WITH ins AS (INSERT INTO events (event_id, stream_id, stream_version, type, "
                  "schema, data, metadata) VALUES ($1::uuid, $2::uuid, $3::int, $4, $5::int, "
                  "$6::jsonb, $7::jsonb) RETURNING position, event_id, recorded_at), "
                  "ob AS (INSERT INTO outbox (position, event_id) SELECT position, event_id FROM ins) "
                  "SELECT position, to_char(recorded_at AT TIME ZONE 'UTC', "
                  "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM ins"},
    {"ev_get", "SELECT " DB_EVENT_COLUMNS " FROM events WHERE event_id = $1::uuid"},
    {"ev_leg", "SELECT " DB_EVENT_COLUMNS " FROM events WHERE stream_id = $1::uuid "
               "AND type IN ('TransferSent', 'TransferReceived') AND data->>'transfer_id' = $2"},
    {"ev_reversed", "SELECT count(*) FROM events WHERE type = 'TransactionReversed' "
                    "AND data->>'reversed_event_id' = ANY($1::text[])"},
    /* $1 key, $2 request text, $3 principal; a record past its retention ($4 s) counts as
     * absent (the background purge may not have reached it yet) */
    {"idem_claim", "INSERT INTO idempotency_keys AS k (principal, key, request_hash, status, response_body) "
                   "VALUES ($3, $1, " REQUEST_HASH ", 0, '') ON CONFLICT (principal, key) DO UPDATE "
                   "SET request_hash = EXCLUDED.request_hash, status = 0, response_body = '', "
                   "created_at = clock_timestamp() "
                   "WHERE k.created_at < clock_timestamp() - make_interval(secs => $4::int) RETURNING 1"},
    {"idem_get", "SELECT request_hash = " REQUEST_HASH ", status, response_body "
                 "FROM idempotency_keys WHERE principal = $3 AND key = $1"},
    {"idem_set", "UPDATE idempotency_keys SET status = $2::int, response_body = $3 "
                 "WHERE principal = $4 AND key = $1"},
    /* group commit of keyed commands: the keys of a batch claimed in one statement (the ones
     * returned are this batch's; the others were used before and their commands run alone),
     * then the responses recorded and the claims of commands not written dropped */
    {"idem_batch_claim", "INSERT INTO idempotency_keys AS k (principal, key, request_hash, status, response_body) "
                         "SELECT pr, ky, encode(sha256(convert_to(rq, 'UTF8')), 'hex'), 0, '' FROM "
                         "unnest($1::text[], $2::text[], $3::text[]) AS u(pr, ky, rq) "
                         "ON CONFLICT (principal, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
                         "status = 0, response_body = '', created_at = clock_timestamp() "
                         "WHERE k.created_at < clock_timestamp() - make_interval(secs => $4::int) "
                         "RETURNING principal, key"},
    {"idem_batch_finish", "WITH u AS (UPDATE idempotency_keys k SET status = u.st, response_body = u.body "
                          "FROM unnest($1::text[], $2::text[], $3::int[], $4::text[]) AS u(pr, ky, st, body) "
                          "WHERE k.principal = u.pr AND k.key = u.ky RETURNING 1), "
                          "d AS (DELETE FROM idempotency_keys k USING unnest($5::text[], $6::text[]) AS x(pr, ky) "
                          "WHERE k.principal = x.pr AND k.key = x.ky RETURNING 1) "
                          "SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM d)"},
    /* delivered at commit: wakes the relay without polling; the xid asks for the outcome of
     * a COMMIT whose answer is lost */
    {"notify", "SELECT pg_notify('outbox', ''), pg_current_xact_id()::text"},
    {"xact_id", "SELECT pg_current_xact_id()::text"},
    /* group commit: the accounts of a batch locked in id order (the order lock_account pairs
     * use), rows held elsewhere skipped, then every event, outbox row and account update of
     * the batch in one statement (the ANY lets the update find its rows by the primary key:
     * joined to the unnest alone, it scanned the whole table, dead row versions included, in
     * every batch) */
    {"batch_lock", "SELECT account_id::text, owner, name, currency, overdraft_limit, balance, version, "
                   "status FROM accounts WHERE account_id = ANY($1::uuid[]) ORDER BY account_id FOR UPDATE SKIP LOCKED"},
    {"batch_append", BATCH_APPEND("", "")},
    /* the same with positions taken beforehand (ev_positions): a batch with claimed keys builds
     * its replies, which name the positions, before this round trip, so the responses are
     * recorded and the batch committed in it */
    {"batch_append_at", BATCH_APPEND("position, ", "$12::bigint[], ")},
    {"ev_positions", "SELECT nextval('events_position_seq') FROM generate_series(1, $1::int)"},
    /* no row on a server in recovery: a standby (or a demoted primary) is not a store */
    {"ping", "SELECT 1 WHERE NOT pg_is_in_recovery()"},
};

status sql_keepalive(PGconn *conn, struct err *e)
{
    /* the server's side of the keepalives: a writer host that vanished without closing its
     * sockets loses its sessions, and the row or advisory locks they hold, within ~11 s */
    PGresult *res = PQexec(conn, "SELECT set_config('tcp_keepalives_idle', '5', false), "
                                 "set_config('tcp_keepalives_interval', '2', false), "
                                 "set_config('tcp_keepalives_count', '3', false)");
    status st = ST_OK;
    char msg[200];

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "session keepalives: %s",
                      db_error(msg, sizeof msg, conn, res));
    PQclear(res);
    return st;
}

status sql_session_init(PGconn *conn, const struct cfg *cfg, struct err *e)
{
    char lock_ms[16], idle_ms[16];
    const char *p[2] = {lock_ms, idle_ms};
    PGresult *res = NULL;
    status st = ST_OK;
    char msg[200];

    /* synchronous_commit on whatever the database default says: a 2xx must survive a crash.
     * lock_timeout: a row held elsewhere fails this command (503, not applied) instead of
     * holding a pool connection and the group commit. idle_in_transaction: a writer stuck
     * mid-transaction loses its locks. Generic plans: every statement below finds its rows
     * by a key, whatever its parameters; Postgres otherwise planned the batch statements
     * again for each batch (the arrays' lengths change the estimates, not the plan). No
     * sequential scans: a generic plan guesses 10 ids in an array, and for a small accounts
     * table it then scanned the whole table, whose dead row versions between two vacuums
     * make it several times larger than its live rows. */
    snprintf(lock_ms, sizeof lock_ms, "%d", cfg->lock_timeout_ms);
    snprintf(idle_ms, sizeof idle_ms, "%d", cfg->request_timeout_ms * 2);
    res = PQexecParams(conn, "SELECT set_config('synchronous_commit', 'on', false), "
                             "set_config('lock_timeout', $1, false), "
                             "set_config('idle_in_transaction_session_timeout', $2, false), "
                             "set_config('plan_cache_mode', 'force_generic_plan', false), "
                             "set_config('enable_seqscan', 'off', false)",
                       2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "session settings: %s",
                      db_error(msg, sizeof msg, conn, res));
    PQclear(res);
    if (st == ST_OK)
        st = sql_keepalive(conn, e);
    if (st != ST_OK)
        return st;
    for (size_t i = 0; i < sizeof statements / sizeof statements[0]; i++) {
        PGresult *res = PQprepare(conn, statements[i].name, statements[i].sql, 0, NULL);
        status st = ST_OK;
        char msg[200];
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "prepare '%s': %s",
                          statements[i].name, db_error(msg, sizeof msg, conn, res));
        PQclear(res);
        if (st != ST_OK)
            return st;
    }
    return ST_OK;
}

status sql_fail(PGconn *conn, const PGresult *res, const char *what, struct err *e)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *constraint = res != NULL ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    char buf[200];
    const char *msg = db_error(buf, sizeof buf, conn, res);

    if (state != NULL && strcmp(state, "55P03") == 0 && !db_broken(conn))
        return err_setr(e, ST_UNAVAILABLE, "account_unavailable", "%s: lock timeout: %s", what, msg);
    if (state == NULL || db_broken(conn) || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57", 2) == 0 || strncmp(state, "53", 2) == 0)
        return err_setr(e, ST_UNAVAILABLE, "store_unavailable", "%s: %s", what, msg);
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return err_setr(e, ST_CONFLICT, "retry", "%s: %s", what, msg);
    if (strcmp(state, "23505") == 0 && constraint != NULL) {
        if (strcmp(constraint, "accounts_owner_name_open") == 0)
            return err_setr(e, ST_CONFLICT, "name_taken",
                            "an open account with this owner and name already exists");
        if (strcmp(constraint, "events_reversed_once") == 0)
            return err_setr(e, ST_CONFLICT, "already_reversed", "the event is already reversed");
        if (strcmp(constraint, "events_stream_id_stream_version_key") == 0)
            return err_setr(e, ST_CONFLICT, "retry", "%s: %s", what, msg);
    }
    return err_setr(e, ST_INTERNAL, "internal_error", "%s: %s (%s)", what, msg, state);
}

status sql_run(PGconn *conn, PGresult **res, const char *name, int n, const char *const *p,
                  ExecStatusType ok, struct err *e)
{
    *res = PQexecPrepared(conn, name, n, p, NULL, NULL, 0);
    if (PQresultStatus(*res) == ok)
        return ST_OK;
    return sql_fail(conn, *res, name, e);
}

status sql_exec(PGconn *conn, const char *sql, struct err *e)
{
    PGresult *res = PQexec(conn, sql);
    status st = ST_OK;

    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        st = sql_fail(conn, res, sql, e);
    PQclear(res);
    return st;
}

status sql_committed(const PGresult *res, struct err *e)
{
    if (PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus((PGresult *)res), "COMMIT") != 0)
        return err_setr(e, ST_UNAVAILABLE, "store_unavailable", "COMMIT answered '%s': nothing applied",
                        PQcmdStatus((PGresult *)res));
    return ST_OK;
}

status sql_lock_account(PGconn *conn, const char *id, struct account_view *v, struct err *e)
{
    PGresult *res = NULL;
    const char *p[1] = {id};
    status st;

    account_view_init(v, id);
    st = sql_run(conn, &res, "acct_lock", 1, p, PGRES_TUPLES_OK, e);
    if (st == ST_OK && PQntuples(res) == 1) {
        snprintf(v->owner, sizeof v->owner, "%s", PQgetvalue(res, 0, 0));
        snprintf(v->name, sizeof v->name, "%s", PQgetvalue(res, 0, 1));
        snprintf(v->currency, sizeof v->currency, "%s", PQgetvalue(res, 0, 2));
        v->overdraft_limit = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
        v->balance = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
        v->version = strtoll(PQgetvalue(res, 0, 5), NULL, 10);
        v->status = strcmp(PQgetvalue(res, 0, 6), "closed") == 0 ? ACCOUNT_CLOSED : ACCOUNT_OPEN;
    }
    PQclear(res);
    return st;
}

status sql_read_event(PGconn *conn, const char *stmt, int n, const char *const *p,
                         struct event *ev, struct err *e)
{
    PGresult *res = NULL;
    status st;

    memset(ev, 0, sizeof *ev);
    st = sql_run(conn, &res, stmt, n, p, PGRES_TUPLES_OK, e);
    if (st == ST_OK && PQntuples(res) > 0) {
        struct err de = {0};
        if (db_event_from_row(ev, res, 0, 0, &de) != ST_OK)
            st = err_setr(e, ST_INTERNAL, "internal_error", "stored event: %s", de.msg);
    }
    PQclear(res);
    return st;
}

status sql_append_event(PGconn *conn, struct event *ev, const struct store_meta *m,
                           struct err *e)
{
    status st = ST_OK;
    PGresult *res = NULL;
    json_t *data = NULL, *md = NULL;
    char *data_s = NULL, *md_s = NULL;
    char ver[24], schema[12];
    const char *p[7];

    uuid_generate(ev->event_id);
    snprintf(ev->command_id, sizeof ev->command_id, "%s", m->command_id);
    snprintf(ev->correlation_id, sizeof ev->correlation_id, "%s", m->correlation_id);
    snprintf(ev->idempotency_key, sizeof ev->idempotency_key, "%s",
             m->idempotency_key != NULL ? m->idempotency_key : "");
    snprintf(ev->principal, sizeof ev->principal, "%s", m->principal != NULL ? m->principal : "");
    data = event_data_to_json(ev);
    md = event_metadata_to_json(ev);
    data_s = data != NULL ? jsonx_dump(data) : NULL;
    md_s = md != NULL ? jsonx_dump(md) : NULL;
    if (data_s == NULL || md_s == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory encoding an event");
        goto cleanup;
    }
    snprintf(ver, sizeof ver, "%lld", (long long)ev->stream_version);
    snprintf(schema, sizeof schema, "%d", ev->schema);
    p[0] = ev->event_id;
    p[1] = ev->stream_id;
    p[2] = ver;
    p[3] = event_type_name(ev->type);
    p[4] = schema;
    p[5] = data_s;
    p[6] = md_s;
    st = sql_run(conn, &res, "ev_append", 7, p, PGRES_TUPLES_OK, e);
    if (st != ST_OK)
        goto cleanup;
    ev->position = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    snprintf(ev->recorded_at, sizeof ev->recorded_at, "%s", PQgetvalue(res, 0, 1));
cleanup:
    PQclear(res);
    json_decref(data);
    json_decref(md);
    free(data_s);
    free(md_s);
    return st;
}

status sql_save_account(PGconn *conn, const struct account_view *before, const struct event *ev,
                           int64_t balance, struct err *e)
{
    PGresult *res = NULL;
    char ver[24], bal[24], od[24];
    status st;

    snprintf(ver, sizeof ver, "%lld", (long long)ev->stream_version);
    if (ev->type == EV_ACCOUNT_OPENED) {
        const char *p[6] = {ev->stream_id, ev->owner, ev->name, ev->currency, od, ver};
        snprintf(od, sizeof od, "%lld", (long long)ev->overdraft_limit);
        st = sql_run(conn, &res, "acct_insert", 6, p, PGRES_TUPLES_OK, e);
        if (st == ST_OK && strcmp(PQgetvalue(res, 0, 0), "1") != 0) {
            if (PQgetisnull(res, 0, 1))
                st = err_setr(e, ST_CONFLICT, "name_taken",
                              "an open account with this owner and name already exists");
            else
                st = err_setr(e, ST_CONFLICT, "name_taken",
                              "an open account with this owner and name already exists: '%s'",
                              PQgetvalue(res, 0, 1));
        }
    } else {
        const char *p[4] = {ev->stream_id, bal, ver,
                            ev->type == EV_ACCOUNT_CLOSED || before->status == ACCOUNT_CLOSED ? "closed" : "open"};
        snprintf(bal, sizeof bal, "%lld", (long long)balance);
        st = sql_run(conn, &res, "acct_update", 4, p, PGRES_COMMAND_OK, e);
        if (st == ST_OK && strcmp(PQcmdTuples(res), "1") != 0)
            st = err_set(e, ST_INTERNAL, "account '%s' vanished during its update", ev->stream_id);
    }
    PQclear(res);
    return st;
}
