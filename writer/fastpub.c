/* Publishing right behind the COMMIT: a queue of committed events, one thread that publishes
 * them and deletes their outbox rows once acked (see fastpub.h). */
#include "fastpub.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "db.h"
#include "log.h"
#include "pubset.h"
#include "sql.h"
#include "svc.h"
#include "wmetrics.h"

#define QUEUE_MAX 2048 /* events waiting; beyond, the relay publishes them */
/* after a failure, how long offers are dropped (they wait in the outbox, published first by the
 * next round); a connection that was up ends the pause when it is back, a first connect is
 * tried again after it (a refused connect costs nothing) */
#define RETRY_MS 250
/* Acked rows are deleted together, at most every DELETE_EVERY_MS or once DELETE_ROWS wait: a
 * delete transaction per round (one per few commands under load) cost Postgres a transaction
 * and a backend wake-up each. The relay sweeps rows older than 1 s (SWEEP_AGE_MS): far above
 * this, so a row acked here is not published twice (if it were, the stream drops the copy).
 * Short enough that an acked row leaves the outbox within a few tens of ms (test_writer_relay
 * takes that as "published"). */
#define DELETE_EVERY_MS 25
#define TICKETS 4096 /* commits in flight at once, at most (a pool connection each) */
#define DELETE_ROWS 4096

struct fastpub {
    const struct cfg *cfg;
    pthread_t thread;
    bool started;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct event *queue, *work; /* swapped: committers fill one, the thread sends the other */
    int nqueue;
    int64_t oldest_ns; /* when the queue's first event was handed over */
    bool stopping;
    bool down; /* the last round failed: offers are dropped until it works again */
    /* the outbox may hold events older than the queue's (dropped offers, unacked rounds, a
     * previous process): published first, so an account's events reach the stream in order */
    bool behind;

    /* Commit order: a transaction takes a ticket before it sends its COMMIT; its events join
     * the queue only once every earlier ticket is done (offered or released). Two commits in
     * flight (the overlapping batches, a command run alone) end in any order on the threads
     * that wait for them: without this, an account's later event could be offered first. */
    uint64_t next_ticket; /* the last one taken */
    uint64_t low_ticket;  /* the lowest not done (next_ticket + 1: none open) */
    bool ticket_done[TICKETS];
    struct held {
        uint64_t ticket, seq; /* seq: a ticket's events keep their order */
        struct event ev;
    } *held; /* events of done tickets above an open one */
    int nheld, held_cap;
    uint64_t held_seq;

    struct bus bus;
    jsCtx *js;
    PGconn *pg;
    bool delete_sent; /* the last outbox delete runs while the next rounds publish */
    int64_t *gone;    /* positions acked and not deleted yet (room for DELETE_ROWS + QUEUE_MAX) */
    int ngone;
    int64_t gone_ns; /* when the oldest of them was acked */
    /* the hand-overs of the round in progress: where each began in the set, and when its
     * oldest event was offered */
    int ngroups;
    int group_first[QUEUE_MAX];
    int64_t group_since[QUEUE_MAX];
    struct pubset set;
};

/* NATS library thread: the connection is back; a publisher pausing after a failure goes on
 * at once instead of dropping offers for the rest of RETRY_MS. */
static void on_bus_return(natsConnection *nc, void *closure)
{
    struct fastpub *f = closure;

    (void)nc;
    pthread_mutex_lock(&f->mu);
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Waits on f->cv for at most wait_ns (f->mu held): woken by an offer, an answer, a stop or the
 * connection's return. */
static void wait_locked(struct fastpub *f, int64_t wait_ns)
{
    struct timespec until = svc_time_after_ns(CLOCK_REALTIME, wait_ns);

    (void)pthread_cond_timedwait(&f->cv, &f->mu, &until);
}

/* Takes the queued events into f->work (f->mu held); returns how many, *since: when the oldest
 * was offered. */
static int take_queue_locked(struct fastpub *f, int64_t *since)
{
    struct event *t = f->work;
    int n = f->nqueue;

    f->work = f->queue;
    f->queue = t;
    f->nqueue = 0;
    *since = f->oldest_ns;
    return n;
}

static status ensure(struct fastpub *f, struct err *e)
{
    jsOptions jo;
    natsStatus ns;
    status st;

    if (f->pg != NULL && db_broken(f->pg)) {
        PQfinish(f->pg);
        f->pg = NULL;
        f->delete_sent = false;
    }
    if (f->pg == NULL) {
        PGresult *res;
        st = db_connect(&f->pg, f->cfg->database_url, f->cfg->request_timeout_ms, e);
        if (st == ST_OK)
            st = sql_keepalive(f->pg, e);
        if (st != ST_OK) {
            PQfinish(f->pg);
            f->pg = NULL;
            return st;
        }
        /* deletes of published rows only: a lost one republishes, which the stream drops */
        res = PQexec(f->pg, "SET synchronous_commit = off; " PUBSET_SESSION);
        PQclear(res);
    }
    if (f->js != NULL && natsConnection_Status(f->bus.conn) == NATS_CONN_STATUS_CONNECTED)
        return ST_OK;
    if (f->js != NULL)
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "nats is reconnecting");
    st = bus_connect_watch(&f->bus, f->cfg, "writer-publish", on_bus_return, f, true, e);
    if (st == ST_OK)
        st = bus_ensure_stream(&f->bus, e);
    if (st != ST_OK) {
        bus_release(&f->bus);
        return st;
    }
    jsOptions_Init(&jo);
    jo.Wait = f->cfg->request_timeout_ms;
    jo.PublishAsync.MaxPending = QUEUE_MAX;
    jo.PublishAsync.AckHandler = pubset_on_ack;
    jo.PublishAsync.AckHandlerClosure = &f->set;
    ns = natsConnection_JetStream(&f->js, f->bus.conn, &jo);
    if (ns != NATS_OK) {
        bus_release(&f->bus);
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "jetstream context: %s", natsStatus_GetText(ns));
    }
    return ST_OK;
}

/* Publishes what the outbox holds, oldest first (what this publisher dropped and the relay has
 * not swept yet would otherwise reach the stream after later events of its account; the
 * relay's copies are dropped by JetStream). A row that does not decode is left to the relay,
 * which moves it to the dead letters. */
static status catch_up(struct fastpub *f, struct err *e)
{
    for (;;) {
        PGresult *res = NULL;
        int rows, published = 0, acked = 0;
        status st = pubset_read_outbox(f->pg, QUEUE_MAX, 0, &res, e);

        if (st != ST_OK)
            return st;
        rows = PQntuples(res);
        pubset_begin(&f->set);
        for (int i = 0; i < rows && st == ST_OK; i++) {
            struct event ev;
            struct err de = {0};
            if (db_event_from_row(&ev, res, i, 0, &de) != ST_OK)
                continue;
            st = pubset_publish(&f->set, f->js, &ev, e);
            published += st == ST_OK;
        }
        PQclear(res);
        if (published > 0)
            pubset_complete(&f->set, f->js, f->cfg->request_timeout_ms);
        if (st == ST_OK)
            st = pubset_delete_acked(&f->set, f->pg, &acked, e);
        wm_relay_round(published, acked, published - acked);
        if (st == ST_OK && acked < published) {
            char why[sizeof f->set.last_error];
            pubset_last_error(&f->set, why, sizeof why);
            st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "catching up: %d of %d events not acked: %s",
                          published - acked, published, why);
        }
        pubset_end(&f->set);
        if (st != ST_OK || rows < QUEUE_MAX || published == 0)
            return st;
    }
}

/* Reads the answer to the last round's delete, if one is out. */
static status delete_wait(struct fastpub *f, struct err *e)
{
    if (!f->delete_sent)
        return ST_OK;
    f->delete_sent = false;
    return pubset_delete_wait(f->pg, e);
}

/* Sends the delete of the acked rows gathered so far (after reading the last one's answer).
 * Rows whose delete fails stay in the outbox: the relay sweeps them, the stream drops the copy. */
static status gone_flush(struct fastpub *f, struct err *e)
{
    status st = delete_wait(f, e);

    if (st == ST_OK && f->ngone > 0 && f->pg != NULL)
        st = pubset_send_delete(f->pg, f->gone, f->ngone, &f->delete_sent, e);
    f->ngone = 0;
    return st;
}

/* Whether the gathered deletes are due. */
static bool gone_due(const struct fastpub *f, int64_t now_ns)
{
    return f->ngone >= DELETE_ROWS || (f->ngone > 0 && now_ns - f->gone_ns >= (int64_t)DELETE_EVERY_MS * 1000000);
}

/* NATS library thread: an event of the set was answered; the publisher may be waiting. */
static void on_answer(void *arg)
{
    struct fastpub *f = arg;

    pthread_mutex_lock(&f->mu);
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Publishes the n events of f->work into the set, and remembers where this hand-over began in
 * it and when its oldest event was offered (since: for the latency histogram). */
static status publish_work(struct fastpub *f, int n, int64_t since, int *published, struct err *e)
{
    int first = f->set.n;
    status st = ST_OK;

    for (int i = 0; i < n && st == ST_OK; i++) {
        st = pubset_publish(&f->set, f->js, &f->work[i], e);
        *published += st == ST_OK;
    }
    if (f->set.n > first && f->ngroups < QUEUE_MAX) {
        f->group_first[f->ngroups] = first;
        f->group_since[f->ngroups] = since;
        f->ngroups++;
    }
    return st;
}

/* Waits for the set's acks. Events offered meanwhile are published into the same set at once
 * (each waited for the whole round before, ack wait included: 2xx -> on the stream p99 23 ms
 * at 2,000 commands/s), unless the publisher is behind (the outbox goes first, next round),
 * the set has no room or the connection is not up (a reconnecting one would only buffer
 * them); the wait ends when every event is answered, or request_timeout_ms after the round
 * began (what is unanswered is taken back: its rows stay in the outbox). */
static status await_acks(struct fastpub *f, int *offered, int *published, struct err *e)
{
    int64_t deadline = svc_mono_ns() + (int64_t)f->cfg->request_timeout_ms * 1000000;
    status st = ST_OK;

    pthread_mutex_lock(&f->mu);
    while (pubset_unanswered(&f->set) > 0) {
        int64_t now = svc_mono_ns();
        if (f->nqueue > 0 && !f->behind && !f->stopping && f->set.cap - f->set.n >= f->nqueue &&
            natsConnection_Status(f->bus.conn) == NATS_CONN_STATUS_CONNECTED) {
            int64_t since;
            int n = take_queue_locked(f, &since);
            pthread_mutex_unlock(&f->mu);
            *offered += n;
            st = publish_work(f, n, since, published, e);
            pthread_mutex_lock(&f->mu);
            if (st != ST_OK)
                break;
            continue;
        }
        if (now >= deadline || f->stopping)
            break;
        wait_locked(f, deadline - now);
    }
    pthread_mutex_unlock(&f->mu);
    if (pubset_unanswered(&f->set) > 0)
        pubset_complete(&f->set, f->js, 1); /* takes back what is unanswered */
    return st;
}

/* Publishes the n events of f->work (after the outbox's older rows when behind), and what is
 * offered while their acks are awaited, and gathers the acked rows for a later delete
 * (gone_flush): the delete is sent and its answer read later, so the next events are
 * published while Postgres deletes (a delete lost to a crash only republishes rows, which the
 * stream drops by their Nats-Msg-Id). */
static status send_round(struct fastpub *f, int n, bool behind, int64_t since, struct err *e)
{
    int published = 0, acked = 0, offered = n;
    status st = ensure(f, e);

    if (st == ST_OK && behind) {
        /* the rows acked already are gone before the outbox is read */
        st = gone_flush(f, e);
        if (st == ST_OK)
            st = delete_wait(f, e);
        if (st == ST_OK)
            st = catch_up(f, e);
    }
    if (st != ST_OK)
        return st;
    pubset_begin(&f->set);
    f->ngroups = 0;
    st = publish_work(f, n, since, &published, e);
    if (published > 0) {
        status wst = await_acks(f, &offered, &published, e);
        if (st == ST_OK)
            st = wst;
    }
    if (st == ST_OK || published > 0) {
        int64_t now = svc_mono_ns();
        acked = pubset_take_acked(&f->set, f->gone + f->ngone);
        if (f->ngone == 0)
            f->gone_ns = now;
        f->ngone += acked;
        if (gone_due(f, now)) {
            status dst = gone_flush(f, e);
            if (st == ST_OK)
                st = dst;
        }
    }
    for (int g = 0; g < f->ngroups; g++) {
        int64_t t = pubset_answer_ns(&f->set, f->group_first[g]);
        if (t > 0)
            wm_publish_after_commit((double)(t - f->group_since[g]) / 1e9);
    }
    wm_relay_round(published, acked, offered - acked);
    if (st == ST_OK && acked < offered) {
        char why[sizeof f->set.last_error];
        pubset_last_error(&f->set, why, sizeof why);
        st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "%d of %d events not acked: %s", offered - acked, offered,
                      why[0] != '\0' ? why : "no answer in time");
    }
    pubset_end(&f->set);
    return st;
}

static void *fastpub_main(void *arg)
{
    struct fastpub *f = arg;
    bool warned = false;

    pthread_mutex_lock(&f->mu);
    while (!f->stopping) {
        int n;
        struct err e = {0};
        status st;
        bool behind;
        int64_t since;

        if (f->nqueue == 0 && f->ngone == 0) {
            pthread_cond_wait(&f->cv, &f->mu);
            continue;
        }
        if (f->nqueue == 0) {
            /* idle with acked rows gathered: deleted when due */
            int64_t now = svc_mono_ns();
            if (gone_due(f, now)) {
                pthread_mutex_unlock(&f->mu);
                if (gone_flush(f, &e) != ST_OK)
                    log_warn("publish after commit: %s (the relay sweeps those rows)", e.msg);
                pthread_mutex_lock(&f->mu);
            } else {
                wait_locked(f, f->gone_ns + (int64_t)DELETE_EVERY_MS * 1000000 - now);
            }
            continue;
        }
        n = take_queue_locked(f, &since);
        behind = f->behind;
        f->behind = false;
        pthread_mutex_unlock(&f->mu);
        st = send_round(f, n, behind, since, &e);
        if (st != ST_OK) {
            /* the rows stay in the outbox: the relay publishes them after its sweep age */
            if (!warned)
                log_warn("publish after commit: %s (the relay publishes the rest)", e.msg);
            warned = true;
            if (f->js != NULL && natsConnection_Status(f->bus.conn) == NATS_CONN_STATUS_CONNECTED) {
                /* acks missing on a live connection: the stream may be gone; start afresh */
                jsCtx_Destroy(f->js);
                f->js = NULL;
                bus_release(&f->bus);
            }
        } else if (warned) {
            log_info("publish after commit: working again");
            warned = false;
        }
        pthread_mutex_lock(&f->mu);
        f->down = st != ST_OK;
        f->behind = f->behind || f->down;
        if (f->down && !f->stopping) {
            /* offers are dropped meanwhile; a bounded pause (ended early when the connection
             * is back), then try with what comes next */
            wait_locked(f, (int64_t)RETRY_MS * 1000000);
            f->nqueue = 0;
            f->down = false;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* Appends n events to the queue, or marks the publisher behind when they do not fit (they
 * stay in the outbox, published first by the next round); under f->mu. */
static void enqueue_locked(struct fastpub *f, const struct event *const *evs, int n)
{
    if (n <= 0)
        return;
    if (!f->down && !f->stopping && f->nqueue + n <= QUEUE_MAX) {
        if (f->nqueue == 0)
            f->oldest_ns = svc_mono_ns();
        for (int i = 0; i < n; i++)
            f->queue[f->nqueue++] = *evs[i];
        pthread_cond_signal(&f->cv);
    } else {
        f->behind = true; /* in the outbox: the next round publishes it first */
    }
}

static int held_cmp(const void *a, const void *b)
{
    const struct held *x = a, *y = b;
    if (x->ticket != y->ticket)
        return x->ticket < y->ticket ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Ticket t is done: the low mark moves past every done ticket, and the held events below it
 * join the queue in ticket order; under f->mu. */
static void ticket_done_locked(struct fastpub *f, uint64_t t)
{
    int keep = 0, i;

    if (t == 0 || t < f->low_ticket || t > f->next_ticket)
        return;
    f->ticket_done[t % TICKETS] = true;
    while (f->low_ticket <= f->next_ticket && f->ticket_done[f->low_ticket % TICKETS])
        f->low_ticket++;
    if (f->nheld == 0)
        return;
    qsort(f->held, (size_t)f->nheld, sizeof *f->held, held_cmp);
    for (i = 0; i < f->nheld && f->held[i].ticket < f->low_ticket; i++) {
        const struct event *ev = &f->held[i].ev;
        enqueue_locked(f, &ev, 1);
    }
    for (; i < f->nheld; i++)
        f->held[keep++] = f->held[i];
    f->nheld = keep;
}

uint64_t fastpub_ticket(struct fastpub *f)
{
    uint64_t t = 0;

    if (f == NULL)
        return 0;
    pthread_mutex_lock(&f->mu);
    if (f->next_ticket + 1 - f->low_ticket < TICKETS) {
        t = ++f->next_ticket;
        f->ticket_done[t % TICKETS] = false;
    } else {
        f->behind = true; /* no ticket: its events are left to the outbox, published first */
    }
    pthread_mutex_unlock(&f->mu);
    return t;
}

void fastpub_offer(struct fastpub *f, uint64_t ticket, const struct event *const *evs, int n)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    if (ticket == 0) {
        f->behind = f->behind || n > 0; /* taken without a ticket: the outbox has them */
    } else if (ticket == f->low_ticket) {
        enqueue_locked(f, evs, n);
        ticket_done_locked(f, ticket);
    } else {
        if (f->nheld + n > f->held_cap) {
            int cap = f->held_cap > 0 ? f->held_cap * 2 : 256;
            struct held *h;
            while (cap < f->nheld + n)
                cap *= 2;
            h = realloc(f->held, (size_t)cap * sizeof *h);
            if (h != NULL) {
                f->held = h;
                f->held_cap = cap;
            }
        }
        if (f->nheld + n <= f->held_cap) {
            for (int i = 0; i < n; i++) {
                f->held[f->nheld].ticket = ticket;
                f->held[f->nheld].seq = ++f->held_seq;
                f->held[f->nheld].ev = *evs[i];
                f->nheld++;
            }
        } else {
            f->behind = true;
        }
        ticket_done_locked(f, ticket);
    }
    pthread_mutex_unlock(&f->mu);
}

void fastpub_release(struct fastpub *f, uint64_t ticket)
{
    if (f == NULL || ticket == 0)
        return;
    pthread_mutex_lock(&f->mu);
    ticket_done_locked(f, ticket);
    pthread_mutex_unlock(&f->mu);
}

void fastpub_missed(struct fastpub *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    f->behind = true;
    pthread_mutex_unlock(&f->mu);
}

status fastpub_start(struct fastpub **out, const struct cfg *cfg, struct err *e)
{
    struct fastpub *f;

    *out = NULL;
    if (!cfg->publish_after_commit)
        return ST_OK;
    f = calloc(1, sizeof *f);
    if (f == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    f->cfg = cfg;
    f->behind = true; /* rows a previous process left go before the first new ones */
    f->low_ticket = 1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->queue = calloc(QUEUE_MAX, sizeof *f->queue);
    f->work = calloc(QUEUE_MAX, sizeof *f->work);
    f->gone = calloc(DELETE_ROWS + QUEUE_MAX, sizeof *f->gone);
    if (f->queue == NULL || f->work == NULL || f->gone == NULL || pubset_init(&f->set, QUEUE_MAX, (unsigned)cfg->partitions, e) != ST_OK) {
        free(f->queue);
        free(f->work);
        free(f->gone);
        free(f);
        return err_set(e, ST_INTERNAL, "out of memory");
    }
    f->set.on_answer = on_answer;
    f->set.on_answer_arg = f;
    if (pthread_create(&f->thread, NULL, fastpub_main, f) != 0) {
        fastpub_stop(&f);
        return err_set(e, ST_INTERNAL, "publisher thread: %s", strerror(errno));
    }
    f->started = true;
    *out = f;
    return ST_OK;
}

void fastpub_stop(struct fastpub **fp)
{
    struct fastpub *f = *fp;

    if (f == NULL)
        return;
    if (f->started) {
        pthread_mutex_lock(&f->mu);
        f->stopping = true;
        pthread_cond_signal(&f->cv);
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->thread, NULL);
    }
    jsCtx_Destroy(f->js);
    bus_release(&f->bus);
    if (f->pg != NULL) {
        struct err e = {0};
        /* the gathered and the last deletes land before the session ends */
        if (gone_flush(f, &e) == ST_OK)
            (void)delete_wait(f, &e);
        PQfinish(f->pg);
    }
    pubset_free(&f->set);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f->held);
    free(f->queue);
    free(f->work);
    free(f->gone);
    free(f);
    *fp = NULL;
}
