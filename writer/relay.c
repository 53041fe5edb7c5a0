/* Outbox relay: at-least-once publication of events, one active relay per database. */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "db.h"
#include "jsonx.h"
#include "log.h"
#include "metrics.h"
#include "pubset.h"
#include "sql.h"
#include "wmetrics.h"

/* Only the holder of this session lock relays, so events leave in outbox order from one
 * publisher; "outbxrly" in ASCII. */
#define RELAY_LOCK "8031170163733097593"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define IDLE_POLL_MS 500   /* a lost NOTIFY costs at most this */
#define LOCK_POLL_MS 1000
/* publishing after COMMIT on: how old an outbox row is before the relay takes it as missed */
#define SWEEP_AGE_MS 1000

struct relay {
    const struct cfg *cfg;
    pthread_t thread;
    bool started;
    int wake[2]; /* self-pipe: relay_stop interrupts any wait */
    atomic_int stopping;

    PGconn *pg;
    bool locked;
    struct bus bus;
    jsCtx *js; /* our own context: its ack handler is the relay's */

    struct pubset set; /* the round in flight */
    /* rows of the round that do not decode: moved to outbox_dead_letters */
    int nbad;
    int64_t *bad_positions;
    char (*bad_reasons)[256];
    int64_t bus_failing_since; /* ms; 0 while the bus works */
    /* NATS came back (a reconnect, or a fresh connection): what waited in the outbox meanwhile
     * is swept at once, at any age, until a round finds less than a full batch */
    atomic_int bus_returns;
    int caught_up; /* the bus_returns the last catch-up finished */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Empties the self-pipe (non-blocking) after a wake-up. */
static void drain_wake(struct relay *r)
{
    char buf[64];
    while (read(r->wake[0], buf, sizeof buf) > 0) {
    }
}

/* Sleeps up to ms, or less when stopping or NATS came back. */
static void relay_sleep(struct relay *r, int ms)
{
    struct pollfd p = {.fd = r->wake[0], .events = POLLIN};
    if (!r->stopping && poll(&p, 1, ms) > 0)
        drain_wake(r);
}

/* NATS library thread: the relay's connection is back. */
static void on_bus_return(natsConnection *nc, void *closure)
{
    struct relay *r = closure;

    (void)nc;
    atomic_fetch_add(&r->bus_returns, 1);
    if (write(r->wake[1], "r", 1) < 0) {
        /* a full pipe already wakes the thread */
    }
}

static void drop_pg(struct relay *r)
{
    if (r->pg != NULL)
        PQfinish(r->pg); /* also releases the session lock */
    r->pg = NULL;
    r->locked = false;
    wm_relay_active(0);
}

static void drop_bus(struct relay *r)
{
    jsCtx_Destroy(r->js);
    r->js = NULL;
    bus_release(&r->bus);
}

static status ensure_pg(struct relay *r, struct err *e)
{
    char msg[200];
    PGresult *res = NULL;
    status st = ST_OK;

    if (r->pg != NULL && db_broken(r->pg))
        drop_pg(r);
    if (r->pg == NULL) {
        st = db_connect(&r->pg, r->cfg->database_url, r->cfg->request_timeout_ms, e);
        /* the lock session of a relay whose host vanished dies within the keepalive bound */
        if (st == ST_OK)
            st = sql_keepalive(r->pg, e);
        if (st != ST_OK) {
            drop_pg(r);
            return st;
        }
    }
    if (r->locked)
        return ST_OK;
    res = PQexec(r->pg, "SELECT pg_try_advisory_lock(" RELAY_LOCK ")");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "relay lock: %s", db_error(msg, sizeof msg, r->pg, res));
        goto cleanup;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        st = err_setr(e, ST_CONFLICT, "relay_busy", "another relay holds the outbox");
        goto cleanup;
    }
    PQclear(res);
    /* Only the relay's own deletes of published rows: a delete lost in a crash means those
     * rows are published again, which Nats-Msg-Id and the projector's version guard make
     * harmless. Not waiting for its WAL flush takes ~1 ms off the path of every event.
     * enable_seqscan: see PUBSET_SESSION. */
    res = PQexec(r->pg, "SET synchronous_commit = off; " PUBSET_SESSION "; LISTEN outbox");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "listen: %s", db_error(msg, sizeof msg, r->pg, res));
        goto cleanup;
    }
    r->locked = true;
    wm_relay_active(1);
    log_info("relay: active (holds the outbox lock)");
cleanup:
    PQclear(res);
    return st;
}

static status ensure_bus(struct relay *r, struct err *e)
{
    jsOptions jo;
    natsStatus ns;
    status st;

    if (r->js != NULL)
        return ST_OK;
    st = bus_connect_watch(&r->bus, r->cfg, "writer-relay", on_bus_return, r, false, e);
    if (st == ST_OK)
        st = bus_ensure_stream(&r->bus, e);
    if (st != ST_OK) {
        bus_release(&r->bus);
        return st;
    }
    jsOptions_Init(&jo);
    jo.Wait = r->cfg->request_timeout_ms;
    jo.PublishAsync.MaxPending = r->cfg->relay_batch;
    jo.PublishAsync.AckHandler = pubset_on_ack;
    jo.PublishAsync.AckHandlerClosure = &r->set;
    ns = natsConnection_JetStream(&r->js, r->bus.conn, &jo);
    if (ns != NATS_OK) {
        bus_release(&r->bus);
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "jetstream context: %s",
                        natsStatus_GetText(ns));
    }
    atomic_fetch_add(&r->bus_returns, 1); /* a fresh connection: what waited goes first */
    return ST_OK;
}

/* Frees the notifications libpq holds; returns how many there were. */
static int drain_notifies(struct relay *r)
{
    PGnotify *n;
    int count = 0;

    while ((n = PQnotifies(r->pg)) != NULL) {
        PQfreemem(n);
        count++;
    }
    return count;
}

/* Waits for a NOTIFY (or the poll fallback, or a stop) and drains the notifications. A NOTIFY
 * that arrived while the last round's queries ran is already read into libpq's queue, not on
 * the socket: it means a commit the round may have missed, so no wait at all. */
static void wait_notify(struct relay *r)
{
    struct pollfd p[2] = {{.fd = PQsocket(r->pg), .events = POLLIN}, {.fd = r->wake[0], .events = POLLIN}};

    if (p[0].fd < 0 || r->stopping)
        return;
    if (drain_notifies(r) > 0)
        return;
    if (poll(p, 2, IDLE_POLL_MS) > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
        if (PQconsumeInput(r->pg) == 0)
            return; /* broken: the next round notices and reconnects */
    }
    if (p[1].revents & POLLIN)
        drain_wake(r);
    (void)drain_notifies(r);
}

/* Moves the round's undecodable rows from the outbox to outbox_dead_letters, with their
 * reasons, in one statement; logs once per move, not every round. */
static status move_dead(struct relay *r, struct err *e)
{
    json_t *pos = json_array(), *why = json_array();
    char *ps = NULL, *ws = NULL, msg[200];
    PGresult *res = NULL;
    status st = ST_OK;

    for (int i = 0; i < r->nbad && pos != NULL && why != NULL; i++) {
        json_array_append_new(pos, json_integer(r->bad_positions[i]));
        json_array_append_new(why, json_string(r->bad_reasons[i]));
    }
    ps = pos != NULL ? jsonx_dump(pos) : NULL;
    ws = why != NULL ? jsonx_dump(why) : NULL;
    if (ps == NULL || ws == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    {
        const char *p[2] = {ps, ws};
        res = PQexecParams(r->pg,
                           "WITH bad AS (SELECT p::bigint AS position, w AS reason FROM "
                           "jsonb_array_elements_text($1::jsonb) WITH ORDINALITY a(p, n) JOIN "
                           "jsonb_array_elements_text($2::jsonb) WITH ORDINALITY b(w, n) USING (n)), "
                           "gone AS (DELETE FROM outbox o USING bad WHERE o.position = bad.position "
                           "RETURNING o.position, o.event_id, bad.reason) "
                           "INSERT INTO outbox_dead_letters (position, event_id, reason) "
                           "SELECT position, event_id, reason FROM gone ON CONFLICT (position) DO NOTHING",
                           2, NULL, p, NULL, NULL, 0);
    }
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "move to dead letters: %s",
                      db_error(msg, sizeof msg, r->pg, res));
        goto cleanup;
    }
    wm_dead_lettered(r->nbad);
    log_error("relay: %d undecodable events moved to the dead letters (first at position %lld: %s); "
              "see `writer dead-letters`",
              r->nbad, (long long)r->bad_positions[0], r->bad_reasons[0]);
cleanup:
    PQclear(res);
    json_decref(pos);
    json_decref(why);
    free(ps);
    free(ws);
    return st;
}

/* One round: read a batch, publish it, wait (bounded) for the acks, delete the acked rows.
 * *nread: rows read; *failed: rows not published or not acked (a row that does not decode is
 * neither: it moves to the dead letters and does not hold the others back). With publishing
 * after COMMIT on, only rows older than SWEEP_AGE_MS are read: younger ones are the writers'
 * own to publish, and a copy from here would only be dropped by JetStream; catch_up (NATS just
 * came back: the writers dropped what they could not publish) reads them at any age. */
static status relay_round(struct relay *r, bool catch_up, int *nread, int *failed, struct err *e)
{
    PGresult *res = NULL;
    status st = ST_OK;
    int rows, acked = 0, skipped = 0, published = 0;

    *nread = *failed = 0;
    r->nbad = 0;
    st = pubset_read_outbox(r->pg, r->cfg->relay_batch,
                            r->cfg->publish_after_commit && !catch_up ? SWEEP_AGE_MS : 0, &res, e);
    if (st != ST_OK)
        goto cleanup;
    rows = PQntuples(res);
    if (rows == 0)
        goto cleanup;

    pubset_begin(&r->set);
    for (int i = 0; i < rows; i++) {
        struct event ev;
        struct err de = {0};

        if (db_event_from_row(&ev, res, i, 0, &de) != ST_OK) {
            /* a row this binary cannot encode goes to the dead letters after this round */
            r->bad_positions[r->nbad] = strtoll(PQgetvalue(res, i, 0), NULL, 10);
            snprintf(r->bad_reasons[r->nbad], sizeof r->bad_reasons[0], "%s", de.msg);
            r->nbad++;
            skipped++;
            continue;
        }
        st = pubset_publish(&r->set, r->js, &ev, e);
        if (st == ST_INTERNAL)
            goto cleanup;
        if (st != ST_OK) {
            st = ST_OK;
            break; /* the rest waits for the next round */
        }
        published++;
    }
    /* undecodable rows first: they are gone from the next read whatever the bus does */
    if (r->nbad > 0)
        st = move_dead(r, e);
    if (published > 0)
        pubset_complete(&r->set, r->js, r->cfg->request_timeout_ms);
    if (st == ST_OK)
        st = pubset_delete_acked(&r->set, r->pg, &acked, e);
    *nread = rows;
    *failed = rows - skipped - acked;
    wm_relay_round(published, st == ST_OK ? acked : 0, *failed);
    if (st == ST_OK && *failed > 0) {
        char why[sizeof r->set.last_error];
        pubset_last_error(&r->set, why, sizeof why);
        st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "%d of %d events not acked: %s", *failed,
                      rows, why);
    }
cleanup:
    pubset_end(&r->set);
    PQclear(res);
    return st;
}

/* The bus failed this round: a relay that holds the outbox lock but has not been able to
 * publish for RELAY_BUS_GIVEUP_MS lets it go, so a standby whose NATS works takes over. */
static void bus_failed(struct relay *r)
{
    int64_t now = mono_ms();

    if (r->bus_failing_since == 0)
        r->bus_failing_since = now;
    if (r->locked && now - r->bus_failing_since >= r->cfg->relay_bus_giveup_ms) {
        log_warn("relay: nats unusable for %lld ms: releasing the outbox lock to a standby",
                 (long long)(now - r->bus_failing_since));
        drop_pg(r);
        drop_bus(r);
    }
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    int backoff = BACKOFF_MIN_MS;
    bool warned_busy = false;

    while (!r->stopping) {
        struct err e = {0};
        int nread = 0, failed = 0;
        /* NATS first: only a relay that can publish competes for (or keeps) the outbox lock */
        status st = ensure_bus(r, &e);

        if (st == ST_OK && natsConnection_Status(r->bus.conn) != NATS_CONN_STATUS_CONNECTED)
            st = err_setr(&e, ST_UNAVAILABLE, "bus_unavailable", "nats is reconnecting");
        if (st != ST_OK) {
            bus_failed(r);
            /* reconnecting to NATS is cheap: try every second, not at the 5 s backoff */
            if (backoff > 1000)
                backoff = 1000;
        } else {
            st = ensure_pg(r, &e);
            if (st == ST_CONFLICT) {
                if (!warned_busy)
                    log_info("relay: standing by, %s", e.msg);
                warned_busy = true;
                r->bus_failing_since = 0;
                relay_sleep(r, LOCK_POLL_MS);
                continue;
            }
            if (st == ST_OK) {
                int returns = atomic_load(&r->bus_returns);
                bool catch_up = returns != r->caught_up;
                st = relay_round(r, catch_up, &nread, &failed, &e);
                if (st == ST_OK && catch_up && nread < r->cfg->relay_batch) {
                    r->caught_up = returns;
                    log_info("relay: connected to nats again: the outbox swept at any age (%d rows in the last round)", nread);
                }
            }
            if (failed > 0)
                bus_failed(r);
            else if (st == ST_OK)
                r->bus_failing_since = 0;
        }
        if (st != ST_OK) {
            wm_relay_error();
            log_warn("relay: %s (retrying in %d ms)", e.msg, backoff);
            if (r->pg != NULL && db_broken(r->pg))
                drop_pg(r);
            /* unacked publishes: the EVENTS stream may be gone (deleted, or a nats-server that
             * lost its store answers "no responders" forever); a fresh connection runs
             * bus_ensure_stream again. A mere reconnect in progress keeps the connection. */
            if (failed > 0 && r->js != NULL &&
                natsConnection_Status(r->bus.conn) == NATS_CONN_STATUS_CONNECTED)
                drop_bus(r);
            /* holding the lock while failing: look again soon, the give-up bound must hold */
            relay_sleep(r, r->locked && r->bus_failing_since != 0 && backoff > 500 ? 500 : backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        if (nread > 0)
            log_debug("relay: round of %d rows", nread);
        /* a full batch means more is waiting: go again at once */
        if (nread < r->cfg->relay_batch)
            wait_notify(r);
    }
    drop_bus(r);
    drop_pg(r);
    return NULL;
}

status relay_start(struct relay **out, const struct cfg *cfg, struct err *e)
{
    struct relay *r = calloc(1, sizeof *r);
    size_t n = (size_t)cfg->relay_batch;

    *out = NULL;
    if (r == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    r->cfg = cfg;
    r->wake[0] = r->wake[1] = -1;
    r->bad_positions = calloc(n, sizeof *r->bad_positions);
    r->bad_reasons = calloc(n, sizeof *r->bad_reasons);
    if (pubset_init(&r->set, cfg->relay_batch, (unsigned)cfg->partitions, e) != ST_OK) {
        free(r->bad_positions);
        free(r->bad_reasons);
        free(r);
        return ST_INTERNAL;
    }
    if (r->bad_positions == NULL || r->bad_reasons == NULL || pipe2(r->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        relay_stop(&r);
        return err_set(e, ST_INTERNAL, "relay setup: %s", strerror(errno));
    }
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        relay_stop(&r);
        return err_set(e, ST_INTERNAL, "relay thread: %s", strerror(errno));
    }
    r->started = true;
    wm_relay_active(0);
    *out = r;
    return ST_OK;
}

void relay_stop(struct relay **rp)
{
    struct relay *r = *rp;

    if (r == NULL)
        return;
    if (r->started) {
        r->stopping = 1;
        if (write(r->wake[1], "x", 1) < 0) {
            /* the thread still sees the flag within one poll timeout */
        }
        pthread_join(r->thread, NULL);
    }
    if (r->wake[0] >= 0)
        close(r->wake[0]);
    if (r->wake[1] >= 0)
        close(r->wake[1]);
    pubset_free(&r->set);
    free(r->bad_positions);
    free(r->bad_reasons);
    free(r);
    *rp = NULL;
}
