/* One Postgres transaction per command: lock the accounts, decide, append events + outbox,
 * update the write-side accounts and the idempotency record, notify the relay, commit. */
#include "store.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "decide.h"
#include "jsonx.h"
#include "uuid.h"

#define REQUEST_HASH "encode(sha256(convert_to($2, 'UTF8')), 'hex')"
#define MAX_ATTEMPTS 3 /* serialization failures and deadlocks are retried */

static const struct {
    const char *name;
    const char *sql;
} statements[] = {
    {"acct_lock", "SELECT owner, name, currency, overdraft_limit, balance, version, status "
                  "FROM accounts WHERE account_id = $1::uuid FOR UPDATE"},
    {"acct_insert", "INSERT INTO accounts (account_id, owner, name, currency, overdraft_limit, "
                    "balance, version, status) VALUES ($1::uuid, $2, $3, $4, $5::bigint, 0, "
                    "$6::int, 'open')"},
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
    {"idem_claim", "INSERT INTO idempotency_keys (key, request_hash, status, response_body) "
                   "VALUES ($1, " REQUEST_HASH ", 0, '') ON CONFLICT (key) DO NOTHING RETURNING 1"},
    {"idem_get", "SELECT request_hash = " REQUEST_HASH ", status, response_body "
                 "FROM idempotency_keys WHERE key = $1"},
    {"idem_set", "UPDATE idempotency_keys SET status = $2::int, response_body = $3 WHERE key = $1"},
    {"notify", "SELECT pg_notify('outbox', '')"},
    /* group commit: the accounts of a batch locked in id order (the order lock_account pairs
     * use), then every event, outbox row and account update of the batch in one statement */
    {"batch_lock", "SELECT account_id::text, owner, name, currency, overdraft_limit, balance, version, "
                   "status FROM accounts WHERE account_id = ANY($1::uuid[]) ORDER BY account_id FOR UPDATE"},
    {"batch_append", "WITH ins AS (INSERT INTO events (event_id, stream_id, stream_version, type, schema, "
                     "data, metadata) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], "
                     "$5::int[], $6::jsonb[], $7::jsonb[]) RETURNING position, event_id, recorded_at), "
                     "ob AS (INSERT INTO outbox (position, event_id) SELECT position, event_id FROM ins), "
                     "up AS (UPDATE accounts a SET balance = u.balance, version = u.version, status = u.status, "
                     "closed_at = CASE WHEN u.status = 'closed' THEN clock_timestamp() END "
                     "FROM unnest($8::uuid[], $9::bigint[], $10::int[], $11::text[]) AS u(id, balance, version, status) "
                     "WHERE a.account_id = u.id RETURNING 1) "
                     "SELECT event_id::text, position, to_char(recorded_at AT TIME ZONE 'UTC', "
                     "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), (SELECT count(*) FROM up) FROM ins"},
    {"ping", "SELECT 1"},
};

struct slot {
    PGconn *conn;
    bool busy;
};

struct store {
    pthread_mutex_t mu;
    pthread_cond_t freed;
    struct slot *slots;
    int size;
    int timeout_ms;
    char *conninfo;
    /* group commit: queued single-account commands and the batches running now */
    pthread_mutex_t qmu;
    struct pending *qhead, *qtail;
    int leaders, max_leaders;
};

/* ---- pool ---- */

status store_create(struct store **out, const char *conninfo, int size, int timeout_ms,
                    struct err *e)
{
    struct store *s = calloc(1, sizeof *s);
    pthread_condattr_t ca;

    *out = NULL;
    if (s == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    s->slots = calloc((size_t)size, sizeof *s->slots);
    s->conninfo = strdup(conninfo);
    if (s->slots == NULL || s->conninfo == NULL) {
        free(s->slots);
        free(s->conninfo);
        free(s);
        return err_set(e, ST_INTERNAL, "out of memory");
    }
    s->size = size;
    s->timeout_ms = timeout_ms;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->freed, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->qmu, NULL);
    /* One batch at a time: while it waits for its commit the next one fills up, which makes
     * the batches (and the saving) largest; measured 4,800 deposits/s against 2,100 with four
     * concurrent batches on 2 cores (docs/benchmarks.md). The other connections serve the
     * commands that do not batch (open, transfer, reversal, keyed). */
    s->max_leaders = 1;
    *out = s;
    return ST_OK;
}

void store_free(struct store **sp)
{
    struct store *s = *sp;

    if (s == NULL)
        return;
    for (int i = 0; i < s->size; i++)
        if (s->slots[i].conn != NULL)
            PQfinish(s->slots[i].conn);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->qmu);
    pthread_cond_destroy(&s->freed);
    free(s->slots);
    free(s->conninfo);
    free(s);
    *sp = NULL;
}

static status prepare_all(PGconn *conn, struct err *e)
{
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

static void checkin(struct store *s, struct slot *sl)
{
    /* A connection left inside a transaction (a failed ROLLBACK) is not reused. */
    if (sl->conn != NULL && (db_broken(sl->conn) || PQtransactionStatus(sl->conn) != PQTRANS_IDLE)) {
        PQfinish(sl->conn);
        sl->conn = NULL;
    }
    pthread_mutex_lock(&s->mu);
    sl->busy = false;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->mu);
}

/* Waits (bounded) for a free slot, then makes sure it holds a working connection. */
static status checkout(struct store *s, struct slot **out, struct err *e)
{
    struct timespec deadline;
    struct slot *sl = NULL;
    status st = ST_OK;

    *out = NULL;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += s->timeout_ms / 1000;
    deadline.tv_nsec += (long)(s->timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    for (;;) {
        /* prefer a connected slot so a broken one is only reopened when needed */
        for (int i = 0; i < s->size && sl == NULL; i++)
            if (!s->slots[i].busy && s->slots[i].conn != NULL)
                sl = &s->slots[i];
        for (int i = 0; i < s->size && sl == NULL; i++)
            if (!s->slots[i].busy)
                sl = &s->slots[i];
        if (sl != NULL)
            break;
        if (pthread_cond_timedwait(&s->freed, &s->mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&s->mu);
            return err_setr(e, ST_UNAVAILABLE, "store_unavailable",
                            "no postgres connection free within %d ms", s->timeout_ms);
        }
    }
    sl->busy = true;
    pthread_mutex_unlock(&s->mu);

    /* connecting happens outside the lock: other requests keep using healthy slots */
    if (sl->conn != NULL && db_broken(sl->conn)) {
        PQfinish(sl->conn);
        sl->conn = NULL;
    }
    if (sl->conn == NULL) {
        st = db_connect(&sl->conn, s->conninfo, s->timeout_ms, e);
        if (st == ST_OK)
            st = prepare_all(sl->conn, e);
        if (st != ST_OK) {
            if (sl->conn != NULL)
                PQfinish(sl->conn);
            sl->conn = NULL;
            checkin(s, sl);
            return st;
        }
    }
    *out = sl;
    return ST_OK;
}


/* ---- statements ---- */

/* Classifies a failed statement into the API's terms. */
static status pg_fail(PGconn *conn, const PGresult *res, const char *what, struct err *e)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *constraint = res != NULL ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    char buf[200];
    const char *msg = db_error(buf, sizeof buf, conn, res);

    if (state == NULL || db_broken(conn) || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57", 2) == 0 || strcmp(state, "55P03") == 0 || strncmp(state, "53", 2) == 0)
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

/* Runs a prepared statement; ok is the expected result status. *res owned by the caller. */
static status run(PGconn *conn, PGresult **res, const char *name, int n, const char *const *p,
                  ExecStatusType ok, struct err *e)
{
    *res = PQexecPrepared(conn, name, n, p, NULL, NULL, 0);
    if (PQresultStatus(*res) == ok)
        return ST_OK;
    return pg_fail(conn, *res, name, e);
}

static status run_simple(PGconn *conn, const char *sql, struct err *e)
{
    PGresult *res = PQexec(conn, sql);
    status st = ST_OK;

    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        st = pg_fail(conn, res, sql, e);
    PQclear(res);
    return st;
}

/* Locks and reads an account; a missing row is an ACCOUNT_NONE view. */
static status lock_account(PGconn *conn, const char *id, struct account_view *v, struct err *e)
{
    PGresult *res = NULL;
    const char *p[1] = {id};
    status st;

    account_view_init(v, id);
    st = run(conn, &res, "acct_lock", 1, p, PGRES_TUPLES_OK, e);
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

/* Reads one event (stmt "ev_get" or "ev_leg"); none found leaves ev->event_id empty. */
static status read_event(PGconn *conn, const char *stmt, int n, const char *const *p,
                         struct event *ev, struct err *e)
{
    PGresult *res = NULL;
    status st;

    memset(ev, 0, sizeof *ev);
    st = run(conn, &res, stmt, n, p, PGRES_TUPLES_OK, e);
    if (st == ST_OK && PQntuples(res) > 0) {
        struct err de = {0};
        if (db_event_from_row(ev, res, 0, 0, &de) != ST_OK)
            st = err_setr(e, ST_INTERNAL, "internal_error", "stored event: %s", de.msg);
    }
    PQclear(res);
    return st;
}

static status append_event(PGconn *conn, struct event *ev, const struct store_meta *m,
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
    st = run(conn, &res, "ev_append", 7, p, PGRES_TUPLES_OK, e);
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

static status save_account(PGconn *conn, const struct account_view *before, const struct event *ev,
                           int64_t balance, struct err *e)
{
    PGresult *res = NULL;
    char ver[24], bal[24], od[24];
    status st;

    snprintf(ver, sizeof ver, "%lld", (long long)ev->stream_version);
    if (ev->type == EV_ACCOUNT_OPENED) {
        const char *p[6] = {ev->stream_id, ev->owner, ev->name, ev->currency, od, ver};
        snprintf(od, sizeof od, "%lld", (long long)ev->overdraft_limit);
        st = run(conn, &res, "acct_insert", 6, p, PGRES_COMMAND_OK, e);
    } else {
        const char *p[4] = {ev->stream_id, bal, ver,
                            ev->type == EV_ACCOUNT_CLOSED || before->status == ACCOUNT_CLOSED ? "closed" : "open"};
        snprintf(bal, sizeof bal, "%lld", (long long)balance);
        st = run(conn, &res, "acct_update", 4, p, PGRES_COMMAND_OK, e);
        if (st == ST_OK && strcmp(PQcmdTuples(res), "1") != 0)
            st = err_set(e, ST_INTERNAL, "account '%s' vanished during its update", ev->stream_id);
    }
    PQclear(res);
    return st;
}

/* ---- replies ---- */

static json_t *leg_json(const struct event *ev, int64_t balance)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:I}", "event_id", ev->event_id, "account_id",
                     ev->stream_id, "version", (json_int_t)ev->stream_version, "position",
                     (json_int_t)ev->position, "balance", (json_int_t)balance);
}

static status build_reply(const struct command *c, const struct decision *d, struct store_reply *out,
                          struct err *e)
{
    const struct event *ev = &d->events[0];
    json_t *doc = NULL;

    out->http_status = 201;
    switch (c->kind) {
    case CMD_OPEN:
        doc = json_pack("{s:s, s:I, s:I}", "account_id", ev->stream_id, "version",
                        (json_int_t)ev->stream_version, "position", (json_int_t)ev->position);
        break;
    case CMD_TRANSFER:
        doc = json_pack("{s:s, s:o, s:o, s:I}", "transfer_id", ev->transfer_id, "from",
                        leg_json(&d->events[0], d->balance_after[0]), "to",
                        leg_json(&d->events[1], d->balance_after[1]), "position",
                        (json_int_t)d->events[1].position);
        break;
    case CMD_REVERSE:
        doc = leg_json(ev, d->balance_after[0]);
        if (doc != NULL) {
            json_object_set_new(doc, "reversed_event_id", json_string(ev->reversed_event_id));
            json_object_set_new(doc, "amount", json_integer(ev->amount));
            if (d->count > 1)
                json_object_set_new(doc, "counterparty", leg_json(&d->events[1], d->balance_after[1]));
        }
        break;
    case CMD_CLOSE:
        out->http_status = 200;
        doc = leg_json(ev, d->balance_after[0]);
        if (doc != NULL)
            json_object_set_new(doc, "status", json_string("closed"));
        break;
    default:
        doc = leg_json(ev, d->balance_after[0]);
        break;
    }
    out->body = jsonx_dump_decref(doc);
    if (out->body == NULL)
        return err_set(e, ST_INTERNAL, "out of memory building the reply");
    return ST_OK;
}

/* ---- the transaction ---- */

/* Claims the idempotency key for this transaction. *replay set when the key was used before:
 * then out holds the first response (same request) or an error is returned (another one). */
static status claim_key(PGconn *conn, const struct store_meta *m, const char *hash_input,
                        bool *replay, struct store_reply *out, struct err *e)
{
    PGresult *res = NULL;
    const char *p[2] = {m->idempotency_key, hash_input};
    status st;

    *replay = false;
    /* a concurrent holder of the same key makes this wait until it commits or aborts */
    st = run(conn, &res, "idem_claim", 2, p, PGRES_TUPLES_OK, e);
    if (st != ST_OK || PQntuples(res) == 1)
        goto cleanup;
    PQclear(res);
    st = run(conn, &res, "idem_get", 2, p, PGRES_TUPLES_OK, e);
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

/* Reads and locks what a reversal needs, accounts in id order (no deadlock between two
 * reversals of one transfer from both sides). */
static status load_reversal(PGconn *conn, const struct command *c, struct account_view *acc,
                            struct account_view *other, struct event *target, struct event *leg,
                            bool *reversed, struct err *e)
{
    const char *p[2];
    char ids[2 * UUID_STR_SIZE + 4];
    PGresult *res = NULL;
    status st;
    bool transfer;

    *reversed = false;
    memset(leg, 0, sizeof *leg);
    account_view_init(other, "");
    p[0] = c->event_id;
    st = read_event(conn, "ev_get", 1, p, target, e);
    if (st != ST_OK)
        return st;
    if (target->event_id[0] != '\0' && strcmp(target->stream_id, c->account_id) != 0)
        memset(target, 0, sizeof *target); /* another account's event: not found here */
    transfer = target->type == EV_TRANSFER_SENT || target->type == EV_TRANSFER_RECEIVED;
    if (transfer && strcmp(target->counterparty, c->account_id) < 0) {
        st = lock_account(conn, target->counterparty, other, e);
        if (st == ST_OK)
            st = lock_account(conn, c->account_id, acc, e);
    } else {
        st = lock_account(conn, c->account_id, acc, e);
        if (st == ST_OK && transfer)
            st = lock_account(conn, target->counterparty, other, e);
    }
    if (st != ST_OK || target->event_id[0] == '\0')
        return st;
    if (transfer) {
        p[0] = target->counterparty;
        p[1] = target->transfer_id;
        st = read_event(conn, "ev_leg", 2, p, leg, e);
        if (st != ST_OK)
            return st;
    }
    /* after the locks: a reversal committed meanwhile is visible to this statement */
    snprintf(ids, sizeof ids, "{%s%s%s}", target->event_id, leg->event_id[0] ? "," : "", leg->event_id);
    p[0] = ids;
    st = run(conn, &res, "ev_reversed", 1, p, PGRES_TUPLES_OK, e);
    if (st == ST_OK)
        *reversed = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    PQclear(res);
    return st;
}

static status transact(PGconn *conn, const struct command *c, const struct store_meta *m,
                       const char *hash_input, struct store_reply *out, struct err *e)
{
    status st;
    struct account_view acc, other;
    struct event target, leg;
    struct decision d;
    bool replay = false, reversed = false;

    st = run_simple(conn, "BEGIN", e);
    if (st != ST_OK && db_broken(conn)) {
        /* a pooled connection that died while idle: nothing was sent, a fresh one may work */
        char cause[sizeof e->msg];
        snprintf(cause, sizeof cause, "%s", e->msg);
        return err_setr(e, ST_CONFLICT, "retry", "%s", cause);
    }
    if (st != ST_OK)
        return st;
    if (m->idempotency_key != NULL) {
        st = claim_key(conn, m, hash_input, &replay, out, e);
        if (st != ST_OK || replay)
            return st; /* the caller rolls back: nothing of this request is kept */
    }

    switch (c->kind) {
    case CMD_OPEN:
        account_view_init(&acc, c->account_id);
        st = decide(&acc, c, &d, e);
        break;
    case CMD_TRANSFER: {
        /* both rows locked in id order, so opposite transfers cannot deadlock */
        bool from_first = strcmp(c->account_id, c->to) < 0;
        st = lock_account(conn, from_first ? c->account_id : c->to, from_first ? &acc : &other, e);
        if (st == ST_OK)
            st = lock_account(conn, from_first ? c->to : c->account_id, from_first ? &other : &acc, e);
        if (st == ST_OK)
            st = decide_transfer(&acc, &other, c, &d, e);
        break;
    }
    case CMD_REVERSE:
        st = load_reversal(conn, c, &acc, &other, &target, &leg, &reversed, e);
        if (st == ST_OK)
            st = decide_reversal(&acc, &target, &other, &leg, reversed, c, &d, e);
        break;
    default:
        st = lock_account(conn, c->account_id, &acc, e);
        if (st == ST_OK)
            st = decide(&acc, c, &d, e);
        break;
    }
    if (st != ST_OK)
        return st;

    for (int i = 0; i < d.count && st == ST_OK; i++) {
        const struct account_view *owner_acc = strcmp(d.events[i].stream_id, acc.account_id) == 0 ? &acc : &other;
        st = append_event(conn, &d.events[i], m, e);
        if (st == ST_OK)
            st = save_account(conn, owner_acc, &d.events[i], d.balance_after[i], e);
    }
    if (st == ST_OK)
        st = build_reply(c, &d, out, e);
    if (st == ST_OK && m->idempotency_key != NULL) {
        PGresult *res = NULL;
        char code[8];
        const char *p[3] = {m->idempotency_key, code, out->body};
        snprintf(code, sizeof code, "%d", out->http_status);
        st = run(conn, &res, "idem_set", 3, p, PGRES_COMMAND_OK, e);
        PQclear(res);
    }
    if (st == ST_OK) {
        PGresult *res = NULL;
        /* delivered at commit: wakes the relay without polling */
        st = run(conn, &res, "notify", 0, NULL, PGRES_TUPLES_OK, e);
        PQclear(res);
    }
    if (st == ST_OK)
        st = run_simple(conn, "COMMIT", e);
    return st;
}

/* One command in its own transaction, retried on serialization failures and stale connections. */
static status execute_one(struct store *s, const struct command *c, const struct store_meta *m,
                          struct store_reply *out, struct err *e)
{
    status st = ST_OK;
    struct slot *sl = NULL;
    char *hash_input = NULL;

    memset(out, 0, sizeof *out);
    if (m->idempotency_key != NULL) {
        size_t rl = strlen(m->scope);
        hash_input = malloc(rl + 1 + m->body_len + 1);
        if (hash_input == NULL)
            return err_set(e, ST_INTERNAL, "out of memory");
        memcpy(hash_input, m->scope, rl);
        hash_input[rl] = '\n';
        memcpy(hash_input + rl + 1, m->body, m->body_len);
        hash_input[rl + 1 + m->body_len] = '\0';
    }
    /* stale pooled connections (after a server restart) each cost one attempt */
    for (int attempt = 1; attempt <= MAX_ATTEMPTS + s->size; attempt++) {
        st = checkout(s, &sl, e);
        if (st != ST_OK)
            break;
        st = transact(sl->conn, c, m, hash_input, out, e);
        if (PQtransactionStatus(sl->conn) != PQTRANS_IDLE) {
            PGresult *res = PQexec(sl->conn, "ROLLBACK");
            PQclear(res);
        }
        checkin(s, sl);
        sl = NULL;
        if (st == ST_OK || strcmp(e->reason, "retry") != 0)
            break;
        free(out->body);
        memset(out, 0, sizeof *out);
    }
    if (st == ST_CONFLICT && strcmp(e->reason, "retry") == 0) {
        char cause[sizeof e->msg];
        snprintf(cause, sizeof cause, "%s", e->msg);
        err_setr(e, ST_UNAVAILABLE, "store_unavailable", "too much contention: %s", cause);
    }
    if (st != ST_OK) {
        free(out->body);
        memset(out, 0, sizeof *out);
        st = e->code;
    }
    free(hash_input);
    return st;
}

/* ---- group commit ----
 * Deposits, withdrawals and closes without an Idempotency-Key that arrive while other batches
 * are in flight queue up; whoever finds a free leader slot takes the queue and runs it as one
 * transaction in two round trips (BEGIN + lock, then events/outbox/accounts + notify + COMMIT),
 * so N concurrent commands share one WAL flush. Every guarantee of the one-command path holds:
 * decisions run in arrival order on the locked rows, so per-account serialisation and If-Match
 * see each earlier command of the batch; a rejected command adds nothing; a reply is released
 * only after the COMMIT. A batch that fails for a definite reason (a constraint, a deadlock)
 * is rolled back and each command is run again on its own, so one command never fails another. */

#define BATCH_MAX 128

struct pending {
    const struct command *c;
    const struct store_meta *m;
    struct store_reply *out;
    struct err *e;
    status st;
    bool done;
    pthread_cond_t cv;
    struct pending *next;
    /* filled while the batch runs */
    struct decision d;
    bool decided;
};

/* A growable string with a Postgres array literal builder; oom sticks. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void arr_item(struct sbuf *b, const char *s)
{
    sb_put(b, b->len == 0 ? "{\"" : ",\"", 2);
    for (const char *q = s; *q != '\0';) {
        size_t run = strcspn(q, "\"\\");
        sb_put(b, q, run);
        q += run;
        if (*q != '\0') {
            char esc[2] = {'\\', *q};
            sb_put(b, esc, 2);
            q++;
        }
    }
    sb_put(b, "\"", 1);
}

static void arr_close(struct sbuf *b)
{
    sb_put(b, b->len == 0 ? "{}" : "}", b->len == 0 ? 2 : 1);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Reads every result of a pipeline up to its sync; the first failure goes to e. *res_keep
 * (may be NULL) receives the result of statement index `keep`. Returns ST_OK when all
 * statements met their expected status. */
static status pipeline_collect(PGconn *conn, int nstmts, const ExecStatusType *ok, int keep,
                               PGresult **res_keep, struct err *e)
{
    status st = ST_OK;

    for (int i = 0; i < nstmts; i++) {
        PGresult *res = PQgetResult(conn), *extra;
        if (res == NULL) {
            if (st == ST_OK)
                st = pg_fail(conn, NULL, "pipeline", e);
            return st;
        }
        if (PQresultStatus(res) != ok[i] && st == ST_OK)
            st = pg_fail(conn, res, "batch", e);
        if (i == keep && res_keep != NULL && st == ST_OK)
            *res_keep = res;
        else
            PQclear(res);
        while ((extra = PQgetResult(conn)) != NULL) /* the NULL that ends each statement */
            PQclear(extra);
    }
    {
        PGresult *sync = PQgetResult(conn);
        if (PQresultStatus(sync) != PGRES_PIPELINE_SYNC && st == ST_OK)
            st = pg_fail(conn, sync, "pipeline sync", e);
        PQclear(sync);
    }
    return st;
}

/* Runs the batch. *definite: on failure, whether the transaction certainly did not commit
 * (then the commands may run again on their own). */
static status batch_transact(PGconn *conn, struct pending **batch, int n, bool *definite, struct err *e)
{
    status st = ST_OK;
    PGresult *res = NULL;
    char (*ids)[UUID_STR_SIZE] = NULL;
    struct account_view *accs = NULL;
    struct event **evs = NULL;
    struct sbuf a[12]; /* 0: locked ids; 1-7: event columns; 8-11: account columns */
    int nids = 0, nev = 0, ntouched = 0;
    bool *touched = NULL, in_pipeline = false;

    *definite = true;
    memset(a, 0, sizeof a);
    ids = calloc((size_t)n, sizeof *ids);
    accs = calloc((size_t)n, sizeof *accs);
    evs = calloc((size_t)n * DECISION_MAX, sizeof *evs);
    touched = calloc((size_t)n, sizeof *touched);
    if (ids == NULL || accs == NULL || evs == NULL || touched == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < n; i++)
        memcpy(ids[i], batch[i]->c->account_id, UUID_STR_SIZE);
    qsort(ids, (size_t)n, sizeof *ids, cmp_id);
    for (int i = 0; i < n; i++)
        if (nids == 0 || strcmp(ids[nids - 1], ids[i]) != 0)
            memmove(ids[nids++], ids[i], UUID_STR_SIZE);
    for (int i = 0; i < nids; i++) {
        arr_item(&a[0], ids[i]);
        account_view_init(&accs[i], ids[i]);
    }
    arr_close(&a[0]);
    if (a[0].oom) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }

    /* round trip 1: BEGIN and the locks */
    if (PQenterPipelineMode(conn) != 1) {
        st = pg_fail(conn, NULL, "pipeline", e);
        goto cleanup;
    }
    in_pipeline = true;
    {
        const char *p[1] = {a[0].p};
        static const ExecStatusType ok[2] = {PGRES_COMMAND_OK, PGRES_TUPLES_OK};
        if (PQsendQueryParams(conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
            PQsendQueryPrepared(conn, "batch_lock", 1, p, NULL, NULL, 0) != 1 || PQpipelineSync(conn) != 1) {
            st = pg_fail(conn, NULL, "send batch locks", e);
            goto cleanup;
        }
        st = pipeline_collect(conn, 2, ok, 1, &res, e);
        if (st != ST_OK)
            goto cleanup;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        char(*hit)[UUID_STR_SIZE] = bsearch(id, ids, (size_t)nids, sizeof *ids, cmp_id);
        struct account_view *v;
        if (hit == NULL)
            continue;
        v = &accs[hit - ids];
        snprintf(v->owner, sizeof v->owner, "%s", PQgetvalue(res, r, 1));
        snprintf(v->name, sizeof v->name, "%s", PQgetvalue(res, r, 2));
        snprintf(v->currency, sizeof v->currency, "%s", PQgetvalue(res, r, 3));
        v->overdraft_limit = strtoll(PQgetvalue(res, r, 4), NULL, 10);
        v->balance = strtoll(PQgetvalue(res, r, 5), NULL, 10);
        v->version = strtoll(PQgetvalue(res, r, 6), NULL, 10);
        v->status = strcmp(PQgetvalue(res, r, 7), "closed") == 0 ? ACCOUNT_CLOSED : ACCOUNT_OPEN;
    }
    PQclear(res);
    res = NULL;

    /* decisions in arrival order, each on the state the earlier ones left */
    for (int i = 0; i < n; i++) {
        struct pending *p = batch[i];
        char(*hit)[UUID_STR_SIZE] = bsearch(p->c->account_id, ids, (size_t)nids, sizeof *ids, cmp_id);
        struct account_view *v = &accs[hit - ids];
        p->st = decide(v, p->c, &p->d, p->e);
        if (p->st != ST_OK)
            continue; /* rejected: nothing of it is written */
        p->decided = true;
        for (int k = 0; k < p->d.count; k++) {
            struct event *ev = &p->d.events[k];
            uuid_generate(ev->event_id);
            snprintf(ev->command_id, sizeof ev->command_id, "%s", p->m->command_id);
            snprintf(ev->correlation_id, sizeof ev->correlation_id, "%s", p->m->correlation_id);
            ev->idempotency_key[0] = '\0';
            v->version = ev->stream_version;
            v->balance = p->d.balance_after[k];
            if (ev->type == EV_ACCOUNT_CLOSED)
                v->status = ACCOUNT_CLOSED;
            evs[nev++] = ev;
        }
        touched[hit - ids] = true;
    }
    if (nev == 0)
        goto cleanup; /* every command was rejected: the caller rolls back */

    for (int i = 0; i < nev; i++) {
        const struct event *ev = evs[i];
        json_t *data = event_data_to_json(ev), *md = event_metadata_to_json(ev);
        char *ds = data != NULL ? jsonx_dump(data) : NULL, *ms = md != NULL ? jsonx_dump(md) : NULL;
        char ver[24], schema[12];
        snprintf(ver, sizeof ver, "%lld", (long long)ev->stream_version);
        snprintf(schema, sizeof schema, "%d", ev->schema);
        arr_item(&a[1], ev->event_id);
        arr_item(&a[2], ev->stream_id);
        arr_item(&a[3], ver);
        arr_item(&a[4], event_type_name(ev->type));
        arr_item(&a[5], schema);
        if (ds == NULL || ms == NULL)
            a[6].oom = true;
        else {
            arr_item(&a[6], ds);
            arr_item(&a[7], ms);
        }
        json_decref(data);
        json_decref(md);
        free(ds);
        free(ms);
    }
    for (int i = 0; i < nids; i++) {
        char bal[24], ver[24];
        if (!touched[i])
            continue;
        ntouched++;
        snprintf(bal, sizeof bal, "%lld", (long long)accs[i].balance);
        snprintf(ver, sizeof ver, "%lld", (long long)accs[i].version);
        arr_item(&a[8], accs[i].account_id);
        arr_item(&a[9], bal);
        arr_item(&a[10], ver);
        arr_item(&a[11], accs[i].status == ACCOUNT_CLOSED ? "closed" : "open");
    }
    for (int i = 1; i <= 11; i++)
        arr_close(&a[i]);
    for (int i = 0; i <= 11; i++)
        if (a[i].oom) {
            st = err_set(e, ST_INTERNAL, "out of memory encoding a batch");
            goto cleanup;
        }
    /* round trip 2: everything written, the relay notified, committed */
    {
        const char *p[11] = {a[1].p, a[2].p, a[3].p, a[4].p, a[5].p, a[6].p, a[7].p,
                             a[8].p, a[9].p, a[10].p, a[11].p};
        static const ExecStatusType ok[3] = {PGRES_TUPLES_OK, PGRES_TUPLES_OK, PGRES_COMMAND_OK};
        if (PQsendQueryPrepared(conn, "batch_append", 11, p, NULL, NULL, 0) != 1 ||
            PQsendQueryPrepared(conn, "notify", 0, NULL, NULL, NULL, 0) != 1 ||
            PQsendQueryParams(conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1 || PQpipelineSync(conn) != 1) {
            *definite = false;
            st = pg_fail(conn, NULL, "send batch", e);
            goto cleanup;
        }
        st = pipeline_collect(conn, 3, ok, 0, &res, e);
        if (st != ST_OK) {
            /* a statement error aborts the rest, COMMIT included; a broken connection may
             * have lost the answer to a COMMIT that happened */
            *definite = !db_broken(conn);
            goto cleanup;
        }
    }
    if (PQntuples(res) != nev || strtol(PQgetvalue(res, 0, 3), NULL, 10) != ntouched) {
        /* committed, but not what was asked: a 500 that says so, never a retry hint */
        *definite = false;
        st = err_set(e, ST_INTERNAL,
                     "the batch committed %d events and %s account updates where %d and %d were "
                     "expected: check the account before sending this command again",
                     PQntuples(res), PQntuples(res) > 0 ? PQgetvalue(res, 0, 3) : "?", nev, ntouched);
        goto cleanup;
    }
    for (int r = 0; r < nev; r++) {
        const char *id = PQgetvalue(res, r, 0);
        for (int i = 0; i < nev; i++)
            if (strcmp(evs[i]->event_id, id) == 0) {
                evs[i]->position = strtoll(PQgetvalue(res, r, 1), NULL, 10);
                snprintf(evs[i]->recorded_at, sizeof evs[i]->recorded_at, "%s", PQgetvalue(res, r, 2));
                break;
            }
    }
cleanup:
    PQclear(res);
    /* fails when results were left unread: the caller then drops the connection */
    if (in_pipeline && PQpipelineStatus(conn) != PQ_PIPELINE_OFF)
        (void)PQexitPipelineMode(conn);
    for (int i = 0; i <= 11; i++)
        free(a[i].p);
    free(ids);
    free(accs);
    free(evs);
    free(touched);
    return st;
}

static void run_batch(struct store *s, struct pending **batch, int n)
{
    struct slot *sl = NULL;
    struct err be = {0};
    bool definite = true;
    status st;

    for (int i = 0; i < n; i++) {
        batch[i]->decided = false;
        batch[i]->st = ST_OK;
    }
    st = checkout(s, &sl, &be);
    if (st == ST_OK) {
        st = batch_transact(sl->conn, batch, n, &definite, &be);
        if (PQpipelineStatus(sl->conn) != PQ_PIPELINE_OFF) {
            PQfinish(sl->conn); /* left mid-pipeline: not reusable */
            sl->conn = NULL;
        } else if (PQtransactionStatus(sl->conn) != PQTRANS_IDLE) {
            PGresult *res = PQexec(sl->conn, "ROLLBACK");
            PQclear(res);
        }
        checkin(s, sl);
    }
    if (st == ST_OK) {
        for (int i = 0; i < n; i++)
            if (batch[i]->decided) {
                batch[i]->st = build_reply(batch[i]->c, &batch[i]->d, batch[i]->out, batch[i]->e);
                if (batch[i]->st != ST_OK) {
                    free(batch[i]->out->body);
                    memset(batch[i]->out, 0, sizeof *batch[i]->out);
                }
            }
        return;
    }
    for (int i = 0; i < n; i++) {
        struct pending *p = batch[i];
        bool committed = !definite && be.code == ST_INTERNAL; /* see batch_transact */
        if (committed && !p->decided && p->st != ST_OK)
            continue; /* its rejection stands: the state it was decided on is committed */
        free(p->out->body);
        memset(p->out, 0, sizeof *p->out);
        err_clear(p->e);
        if (definite && be.code != ST_UNAVAILABLE) {
            p->st = execute_one(s, p->c, p->m, p->out, p->e); /* on its own, so no command fails another */
        } else {
            *p->e = be;
            if (!definite && !committed)
                err_setr(p->e, ST_UNAVAILABLE, "store_unavailable", "outcome unknown: %s", be.msg);
            p->st = p->e->code;
        }
    }
}

static bool batchable(const struct command *c, const struct store_meta *m)
{
    return m->idempotency_key == NULL &&
           (c->kind == CMD_DEPOSIT || c->kind == CMD_WITHDRAW || c->kind == CMD_CLOSE);
}

status store_execute(struct store *s, const struct command *c, const struct store_meta *m,
                     struct store_reply *out, struct err *e)
{
    struct pending p, *batch[BATCH_MAX];

    memset(out, 0, sizeof *out);
    if (!batchable(c, m))
        return execute_one(s, c, m, out, e);
    memset(&p, 0, sizeof p);
    p.c = c;
    p.m = m;
    p.out = out;
    p.e = e;
    pthread_cond_init(&p.cv, NULL);
    pthread_mutex_lock(&s->qmu);
    if (s->qtail != NULL)
        s->qtail->next = &p;
    else
        s->qhead = &p;
    s->qtail = &p;
    while (!p.done) {
        int n = 0;
        if (s->leaders >= s->max_leaders || s->qhead == NULL) {
            pthread_cond_wait(&p.cv, &s->qmu);
            continue;
        }
        while (s->qhead != NULL && n < BATCH_MAX) {
            batch[n++] = s->qhead;
            s->qhead = s->qhead->next;
        }
        if (s->qhead == NULL)
            s->qtail = NULL;
        s->leaders++;
        pthread_mutex_unlock(&s->qmu);
        run_batch(s, batch, n);
        pthread_mutex_lock(&s->qmu);
        s->leaders--;
        for (int i = 0; i < n; i++) {
            batch[i]->done = true;
            if (batch[i] != &p)
                pthread_cond_signal(&batch[i]->cv);
        }
        if (s->qhead != NULL) /* hand the lead to the oldest waiter */
            pthread_cond_signal(&s->qhead->cv);
    }
    pthread_mutex_unlock(&s->qmu);
    pthread_cond_destroy(&p.cv);
    if (p.st != ST_OK) {
        free(out->body);
        memset(out, 0, sizeof *out);
    }
    return p.st;
}

status store_ping(struct store *s, struct err *e)
{
    struct slot *sl = NULL;
    PGresult *res = NULL;
    status st = checkout(s, &sl, e);

    if (st != ST_OK)
        return st;
    st = run(sl->conn, &res, "ping", 0, NULL, PGRES_TUPLES_OK, e);
    PQclear(res);
    checkin(s, sl);
    return st;
}
