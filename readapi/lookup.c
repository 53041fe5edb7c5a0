/* Read-only lookups of immutable facts in the event store: events, transfers, an owner's
 * accounts. A bounded pool: a thread takes a connection for one query and gives it back. */
#include "lookup.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "metrics.h"
#include "svc.h"

#define LK_POOL_MAX 64

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const struct cfg *cfg;
    int size;
    PGconn *conns[LK_POOL_MAX];
    int busy[LK_POOL_MAX];
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void store_errors(double v)
{
    metrics_counter_add("readapi_store_errors_total", "Event-store lookups that failed.", v);
}

status lk_init(const struct cfg *c, struct err *e)
{
    (void)e;
    store_errors(0); /* the series exists before the first failure */
    pool.cfg = c;
    pool.size = c->pg_pool_size < LK_POOL_MAX ? c->pg_pool_size : LK_POOL_MAX;
    return ST_OK;
}

void lk_fini(void)
{
    pthread_mutex_lock(&pool.mu);
    for (int i = 0; i < LK_POOL_MAX; i++) {
        if (pool.conns[i] != NULL)
            PQfinish(pool.conns[i]);
        pool.conns[i] = NULL;
    }
    pthread_mutex_unlock(&pool.mu);
}

static status unavailable(struct err *e, const char *what, const PGconn *conn, const PGresult *res)
{
    char msg[200];

    store_errors(1);
    return err_setr(e, ST_UNAVAILABLE, "store_unavailable", "%s: %s", what,
                    db_error(msg, sizeof msg, conn, res));
}

/* A free slot with a working read-only connection; -1 (e set) when none within the timeout. */
static int acquire(struct err *e)
{
    struct timespec deadline;
    int slot = -1;
    PGconn *conn;
    PGresult *res;

    deadline = svc_time_after_ns(CLOCK_REALTIME, (int64_t)pool.cfg->request_timeout_ms * 1000000);
    pthread_mutex_lock(&pool.mu);
    while (slot < 0) {
        for (int i = 0; i < pool.size && slot < 0; i++)
            if (!pool.busy[i])
                slot = i;
        if (slot < 0 && pthread_cond_timedwait(&pool.cv, &pool.mu, &deadline) != 0)
            break;
    }
    if (slot >= 0)
        pool.busy[slot] = 1;
    pthread_mutex_unlock(&pool.mu);
    if (slot < 0) {
        store_errors(1);
        err_setr(e, ST_UNAVAILABLE, "store_unavailable", "every event-store connection is busy");
        return -1;
    }
    if (pool.conns[slot] != NULL && !db_broken(pool.conns[slot]))
        return slot;
    if (pool.conns[slot] != NULL)
        PQfinish(pool.conns[slot]);
    pool.conns[slot] = NULL;
    if (db_connect(&conn, pool.cfg->database_url, pool.cfg->request_timeout_ms, e) != ST_OK) {
        store_errors(1); /* a lookup that cannot connect failed like one whose query did */
        goto fail;
    }
    /* the read API never writes the event store, whatever a bug might ask */
    res = PQexec(conn, "SET default_transaction_read_only = on");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        unavailable(e, "set read-only", conn, res);
        PQclear(res);
        PQfinish(conn);
        goto fail;
    }
    PQclear(res);
    pool.conns[slot] = conn;
    return slot;
fail:
    pthread_mutex_lock(&pool.mu);
    pool.busy[slot] = 0;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    return -1;
}

static void release(int slot)
{
    pthread_mutex_lock(&pool.mu);
    pool.busy[slot] = 0;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
}

/* Runs sql with text parameters on a pooled connection; *out owned by the caller (PQclear). */
static status query(PGresult **out, const char *what, const char *sql, int n, const char *const *params,
                    struct err *e)
{
    int slot = acquire(e);
    PGresult *res;
    status st = ST_OK;

    *out = NULL;
    if (slot < 0)
        return ST_UNAVAILABLE;
    res = PQexecParams(pool.conns[slot], sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = unavailable(e, what, pool.conns[slot], res);
        PQclear(res);
    } else {
        *out = res;
    }
    release(slot);
    return st;
}

/* The one JSON text sql builds for id (malloc'd into *out); ST_NOT_FOUND with reason
 * <noun>_not_found when there is no row. */
static status one_document(char **out, const char *noun, const char *sql, const char *id,
                           struct err *e)
{
    const char *p[1] = {id};
    char what[32], reason[32];
    PGresult *res = NULL;
    status st;

    *out = NULL;
    snprintf(what, sizeof what, "read %s", noun);
    st = query(&res, what, sql, 1, p, e);
    if (st != ST_OK)
        return st;
    snprintf(reason, sizeof reason, "%s_not_found", noun);
    if (PQntuples(res) == 0)
        st = err_setr(e, ST_NOT_FOUND, reason, "%s '%s' does not exist", noun, id);
    else if ((*out = strdup(PQgetvalue(res, 0, 0))) == NULL)
        st = err_set(e, ST_INTERNAL, "out of memory");
    PQclear(res);
    return st;
}

#define LK_TIME(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

status lk_event(char **out, const char *event_id, struct err *e)
{
    static const char sql[] =
        "SELECT json_build_object('event_id', event_id, 'stream_id', stream_id, 'stream_version', "
        "stream_version, 'position', position, 'type', type, 'schema', schema, 'recorded_at', "
        LK_TIME("recorded_at") ", 'data', data, 'metadata', metadata)::text "
        "FROM events WHERE event_id = $1::uuid";

    return one_document(out, "event", sql, event_id, e);
}

status lk_transfer(char **out, const char *transfer_id, struct err *e)
{
    /* both legs are written in one transaction, so there are two rows or none */
    static const char sql[] =
        "WITH legs AS (SELECT type, json_build_object('account_id', stream_id, 'event_id', event_id, "
        "'version', stream_version, 'position', position) AS leg, event_id, data, recorded_at "
        "FROM events WHERE type IN ('TransferSent', 'TransferReceived') "
        "AND data->>'transfer_id' = $1) "
        "SELECT json_build_object('transfer_id', $1::text, "
        "'from', (SELECT leg FROM legs WHERE type = 'TransferSent'), "
        "'to', (SELECT leg FROM legs WHERE type = 'TransferReceived'), "
        "'amount', s.data->'amount', 'description', coalesce(s.data->>'description', ''), "
        "'at', " LK_TIME("s.recorded_at") ", "
        "'reversed_by', (SELECT r.event_id FROM events r WHERE r.type = 'TransactionReversed' "
        "AND r.data->>'reversed_event_id' = s.event_id::text LIMIT 1))::text "
        "FROM legs s WHERE s.type = 'TransferSent'";

    return one_document(out, "transfer", sql, transfer_id, e);
}

status lk_owner_accounts(struct lk_owner_page *out, const char *owner, int64_t after, int limit,
                         struct err *e)
{
    /* one more row than asked says whether there is a next page */
    static const char sql[] =
        "SELECT stream_id::text, position FROM events WHERE type = 'AccountOpened' "
        "AND data->>'owner' = $1 AND position < $2::bigint ORDER BY position DESC LIMIT $3::int";
    char below[24], lim[16];
    const char *p[3] = {owner, below, lim};
    PGresult *res = NULL;
    status st;
    int rows;

    memset(out, 0, sizeof *out);
    snprintf(below, sizeof below, "%lld", (long long)(after > 0 ? after : INT64_MAX));
    snprintf(lim, sizeof lim, "%d", limit + 1);
    st = query(&res, "list accounts", sql, 3, p, e);
    if (st != ST_OK)
        return st;
    rows = PQntuples(res);
    out->ids = calloc((size_t)(rows > 0 ? rows : 1), sizeof *out->ids);
    if (out->ids == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < rows && i < limit; i++) {
        snprintf(out->ids[i], sizeof out->ids[i], "%s", PQgetvalue(res, i, 0));
        out->n++;
    }
    if (rows > limit)
        out->next_after = strtoll(PQgetvalue(res, limit - 1, 1), NULL, 10);
cleanup:
    PQclear(res);
    return st;
}

void lk_owner_page_release(struct lk_owner_page *p)
{
    if (p == NULL)
        return;
    free(p->ids);
    memset(p, 0, sizeof *p);
}
