/* The `projector run` loop. The main thread renews and balances the partition leases
 * (ownership.c), starts a consumer thread for each partition it claims and stops it before
 * handing the partition over (consume.c), and runs the commit-safe sweep (sweep.c) and the
 * self-healing rebuild; it logs every claim, hand-over and loss. */
#include "worker.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "consume.h"
#include "db.h"
#include "engine.h"
#include "http.h"
#include "log.h"
#include "observe.h"
#include "ownership.h"
#include "readmodel.h"
#include "rebuild.h"
#include "svc.h"
#include "uuid.h"

#ifndef SWEEP_INTERVAL_MS
#define SWEEP_INTERVAL_MS 1000 /* how soon an event lost on NATS is caught up from Postgres */
#endif
#define SWEEP_LIMIT 2000
#define BACKOFF_MAX_MS 5000
#define LOOP_MS 50

/* ---- self-healing: a rebuild in a thread when there is no valid current generation ---- */

struct healer {
    const struct cfg *cfg;
    pthread_t thread;
    int running;
    volatile int finished;
};

static void *heal_main(void *arg)
{
    struct healer *h = arg;
    struct rb_opts o = {.mode = RB_SWITCH, .batch = RB_HEAL_BATCH, .auto_heal = 1, .stop = &svc_stop_requested};
    struct rb_result res;
    struct err e;

    err_clear(&e);
    if (rb_run(h->cfg, &o, &res, &e) != ST_OK && e.code != ST_CONFLICT)
        log_warn("self-heal rebuild: %s", e.msg);
    else if (e.code == ST_CONFLICT && e.msg[0] != '\0')
        log_info("self-heal rebuild not run: %s", e.msg);
    h->finished = 1;
    return NULL;
}

/* Starts a rebuild when rm:current is missing or names a generation without data (Redis
 * restarted empty, keys flushed, rm:current set by hand). Only one process rebuilds: the
 * others find the lease taken, keep applying to the building generation and wait. */
static void heal_check(struct pj *p, struct healer *h)
{
    struct rm_gens g;
    struct err e;

    if (h->running && h->finished) {
        pthread_join(h->thread, NULL);
        h->running = 0;
    }
    if (h->running || svc_stop_requested || p->rc == NULL)
        return;
    err_clear(&e);
    if (rm_load_gens(p->rc, &g, &e) != ST_OK) {
        pj_drop_redis(p);
        return;
    }
    if (g.current > 0)
        return;
    if (g.current_named > 0)
        log_warn("rm:current names generation %ld, which has no data: rebuilding", g.current_named);
    else
        log_warn("no current read-model generation: rebuilding from the events table");
    h->finished = 0;
    if (pthread_create(&h->thread, NULL, heal_main, h) == 0)
        h->running = 1;
    else
        log_error("unable to start the self-heal rebuild thread");
}


struct worker {
    const struct cfg *cfg;
    char name[OWN_WORKER_SIZE];
    struct bus bus;
    struct own own;
    struct cs_part *parts; /* nparts; running when running[p] */
    atomic_int *running;
    /* mu: parts[] (re)started and stopped by the ownership thread while the main thread sums
     * their counters and reads their gauges: the same partition must not be read while it is
     * cleared for a new thread, nor counted both as running and as joined */
    pthread_mutex_t mu;
    /* counters of consumer threads already joined */
    long applied_done, gap_done, duplicates_done, conflicts_done, parked_done, strays_done, holes_done,
        resubscribes_done;
    _Atomic int held;                    /* partitions held, for the main thread's logs */
    _Atomic int share; /* partitions held or due (ceil(P / live)): they share PROJECTOR_WORKER_EVENTS */
    pthread_t owner_thread;
};

static void part_stop(struct worker *w, int p)
{
    if (!w->running[p])
        return;
    cs_part_join(&w->parts[p]);
    pthread_mutex_lock(&w->mu);
    w->applied_done += atomic_load(&w->parts[p].applied);
    w->gap_done += atomic_load(&w->parts[p].gap_events);
    w->duplicates_done += atomic_load(&w->parts[p].duplicates);
    w->conflicts_done += atomic_load(&w->parts[p].conflicts);
    w->parked_done += atomic_load(&w->parts[p].parked);
    w->strays_done += atomic_load(&w->parts[p].strays);
    w->holes_done += atomic_load(&w->parts[p].holes);
    w->resubscribes_done += atomic_load(&w->parts[p].resubscribes);
    w->running[p] = 0;
    pthread_mutex_unlock(&w->mu);
}

/* Tells p's consumer thread to stop (part_stop joins it). */
static void part_signal(struct worker *w, int p)
{
    if (w->running[p])
        atomic_store(&w->parts[p].stop, 1);
}

/* What the partitions' batches are cut to: as many as it holds, or will once it has claimed
 * its share, so that the first batches of a worker starting alone are not each a full one. */
static void share_update(struct worker *w)
{
    int live = w->own.live > 0 ? w->own.live : 1, due = (w->own.nparts + live - 1) / live;

    atomic_store(&w->share, due > w->own.held ? due : w->own.held);
}

static void part_start(struct worker *w, int p)
{
    struct cs_part *cp = &w->parts[p];
    struct err e;
    status st;

    pthread_mutex_lock(&w->mu);
    memset(cp, 0, sizeof *cp);
    cp->cfg = w->cfg;
    cp->bus = &w->bus;
    cp->part = p;
    cp->epoch = w->own.parts[p].epoch;
    cp->worker = w->name;
    cp->share = &w->share;
    share_update(w);
    atomic_store(&cp->valid_until, w->own.parts[p].renewed_ms + (int64_t)w->cfg->projector_lease_ms * 3 / 4);
    err_clear(&e);
    st = cs_part_start(cp, &e);
    if (st == ST_OK)
        w->running[p] = 1;
    pthread_mutex_unlock(&w->mu);
    if (st != ST_OK) {
        log_error("partition %d: %s: giving it up", p, e.msg);
        if (own_release(&w->own, p, &e) != ST_OK)
            log_warn("partition %d: %s", p, e.msg);
    }
}

/* One ownership round and what it changes for the consumer threads. */
static void ownership_round(struct worker *w)
{
    struct err e;
    status st;

    /* threads that stopped on their own: fenced by a newer owner */
    for (int p = 0; p < w->own.nparts; p++) {
        uint64_t floor, was = 0;
        if (!w->running[p] || !atomic_load(&w->parts[p].finished))
            continue;
        floor = atomic_load(&w->parts[p].floor);
        part_stop(w, p);
        log_warn("lost partition %d: epoch %" PRIu64 " fenced in Redis by a newer owner", p,
                 w->own.parts[p].epoch);
        own_forget(&w->own, p);
        err_clear(&e);
        /* refused at its claim: a newer owner, or the bucket's revisions went back (NATS lost it) */
        if (floor > 0 && own_advance(&w->own, floor, &was, &e) != ST_OK)
            log_warn("ownership: %s", e.msg);
        else if (was > 0)
            log_warn("lease bucket %s ended at revision %" PRIu64 ", below epoch %" PRIu64 " recorded in "
                     "Redis (NATS lost its state): moved past it; every lease is claimed again", OWN_BUCKET,
                     was, floor);
    }
    err_clear(&e);
    st = own_tick(&w->own, &e);
    /* every consumer to stop is told at once, then joined: one by one, each taking up to a
     * pull's wait, the joins delayed the next renewal past a short lease */
    for (int i = 0; i < w->own.nevents; i++)
        if (w->own.events[i].kind == OWN_LOST)
            part_signal(w, w->own.events[i].part);
    for (int p = 0; st == ST_OK && p < w->own.nparts; p++)
        if (w->own.parts[p].release_wanted)
            part_signal(w, p);
    for (int i = 0; i < w->own.nevents; i++) {
        const struct own_event *ev = &w->own.events[i];
        if (ev->kind == OWN_CLAIMED) {
            log_info("claimed partition %d: epoch %" PRIu64 " (%s; %d live workers)", ev->part,
                     ev->epoch, ev->why, w->own.live);
            part_start(w, ev->part);
        } else {
            part_stop(w, ev->part);
            log_warn("lost partition %d: epoch %" PRIu64 ": %s", ev->part, ev->epoch, ev->why);
        }
    }
    if (st != ST_OK)
        log_warn("ownership: %s", e.msg);
    for (int p = 0; p < w->own.nparts; p++) {
        if (w->running[p] && w->own.parts[p].held)
            atomic_store(&w->parts[p].valid_until,
                         w->own.parts[p].renewed_ms + (int64_t)w->cfg->projector_lease_ms * 3 / 4);
        if (st == ST_OK && w->own.parts[p].release_wanted) {
            part_stop(w, p);
            /* logged before the lease goes, so no claim of it can appear in a log earlier */
            log_info("handed over partition %d: epoch %" PRIu64 " (%d live workers, share %d)", p,
                     w->own.parts[p].epoch, w->own.live, (w->own.nparts + w->own.live - 1) / w->own.live);
            err_clear(&e);
            if (own_release(&w->own, p, &e) != ST_OK)
                log_warn("partition %d: %s", p, e.msg);
        }
    }
}

/* The ownership thread: one round every lease / 4, on its own so that nothing the main thread
 * does (a long sweep, a slow Postgres) can delay a renewal past the lease. */
static void *owner_main(void *arg)
{
    struct worker *w = arg;

    while (!svc_stop_requested) {
        int64_t next;
        ownership_round(w);
        next = own_next_ms(&w->own);
        atomic_store(&w->held, w->own.held);
        share_update(w);
        while (!svc_stop_requested && svc_mono_ms() < next)
            svc_pause_ms(20);
    }
    for (int p = 0; p < w->own.nparts; p++)
        part_stop(w, p);
    return NULL;
}

/* This process's counters: the sweep's (sw), the joined consumer threads' and the running ones'. */
static void totals(struct worker *w, const struct pj *sw, struct pj_counts *n)
{
    pthread_mutex_lock(&w->mu);
    n->applied = w->applied_done;
    n->gap_events = w->gap_done;
    n->duplicates = w->duplicates_done + sw->duplicates;
    n->conflicts = w->conflicts_done + sw->conflicts;
    n->parked = w->parked_done + sw->parked;
    n->strays = w->strays_done + sw->strays;
    n->holes = w->holes_done + sw->holes;
    n->resubscribes = w->resubscribes_done;
    for (int p = 0; p < w->own.nparts; p++)
        if (w->running[p]) {
            const struct cs_part *cp = &w->parts[p];
            n->applied += atomic_load(&cp->applied);
            n->gap_events += atomic_load(&cp->gap_events);
            n->duplicates += atomic_load(&cp->duplicates);
            n->conflicts += atomic_load(&cp->conflicts);
            n->parked += atomic_load(&cp->parked);
            n->strays += atomic_load(&cp->strays);
            n->holes += atomic_load(&cp->holes);
            n->resubscribes += atomic_load(&cp->resubscribes);
        }
    pthread_mutex_unlock(&w->mu);
}

/* Partition gauges: owned, and pending / lag of each partition this worker consumes. */
static void observe_partitions(struct worker *w, int *published)
{
    pj_observe_owned(atomic_load(&w->held));
    pthread_mutex_lock(&w->mu);
    for (int p = 0; p < w->own.nparts; p++) {
        int owned = w->running[p];
        if (owned)
            pj_observe_partition(p, 1, atomic_load(&w->parts[p].pending), atomic_load(&w->parts[p].lag_ms));
        else if (published[p])
            pj_observe_partition(p, 0, 0, 0);
        published[p] = owned;
    }
    pthread_mutex_unlock(&w->mu);
}

/* 1 connected, 0 stopped before, -1 refused: Redis may evict keys (any policy but noeviction
 * can drop one key of an account's pair or a generation's checkpoint). */
static int connect_all(struct worker *w, struct pj *p)
{
    const struct cfg *c = w->cfg;
    struct err e;
    int attempt;

    for (attempt = 0; !svc_stop_requested; attempt++) {
        err_clear(&e);
        if (pj_pg(p, &e) == ST_OK && db_migrate(p->pg, &e) == ST_OK)
            break;
        log_warn("postgres not ready (attempt %d): %s", attempt + 1, e.msg);
        pj_drop_pg(p);
        svc_pause_ms(pj_backoff_ms(attempt, BACKOFF_MAX_MS));
    }
    for (attempt = 0; !svc_stop_requested; attempt++) {
        err_clear(&e);
        if (pj_redis(p, &e) == ST_OK)
            break;
        log_warn("redis not ready (attempt %d): %s", attempt + 1, e.msg);
        svc_pause_ms(pj_backoff_ms(attempt, BACKOFF_MAX_MS));
    }
    err_clear(&e);
    if (p->rc != NULL && rm_check_noeviction(p->rc, &e) == ST_INVALID) {
        log_error("refusing to start: %s", e.msg);
        return -1;
    }
    for (attempt = 0; !svc_stop_requested; attempt++) {
        uint64_t floor = 0;
        err_clear(&e);
        if (cs_max_epoch(p->rc, c->partitions, &floor, &e) != ST_OK) {
            log_warn("redis: partition epochs: %s", e.msg);
            pj_drop_redis(p);
            if (pj_redis(p, &e) != ST_OK)
                log_warn("redis: %s", e.msg);
            svc_pause_ms(pj_backoff_ms(attempt, BACKOFF_MAX_MS));
            continue;
        }
        if (bus_connect_cfg(&w->bus, c, "projector", &e) == ST_OK && bus_ensure_stream(&w->bus, &e) == ST_OK &&
            cs_retire_shared_consumer(&w->bus, &e) == ST_OK &&
            own_open(&w->own, c, &w->bus, w->name, floor, &e) == ST_OK)
            break;
        log_warn("nats not ready (attempt %d): %s", attempt + 1, e.msg);
        bus_release(&w->bus);
        svc_pause_ms(pj_backoff_ms(attempt, BACKOFF_MAX_MS));
    }
    return !svc_stop_requested;
}

int worker_run(const struct cfg *c)
{
    struct healer heal = {.cfg = c};
    struct worker w;
    struct pj p;
    struct err e;
    struct pj_http *http = NULL;
    struct pj_counts n = {0};
    char host[64] = "host", id[UUID_STR_SIZE];
    int64_t last_sweep = 0, last_stats = svc_mono_ms();
    int owner_started = 0, connected, rc = 0;
    int *published; /* partitions whose gauges are published */
    long last_applied = -1;
    int sweep_more = 0;

    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    w.cfg = c;
    (void)gethostname(host, sizeof host - 1);
    for (char *s = host; *s; s++)
        if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') && !(*s >= '0' && *s <= '9') && *s != '-')
            *s = '-';
    uuid_generate(id);
    snprintf(w.name, sizeof w.name, "%s-%ld-%.8s", host, (long)getpid(), id);
    w.parts = calloc((size_t)c->partitions, sizeof *w.parts);
    w.running = calloc((size_t)c->partitions, sizeof *w.running);
    published = calloc((size_t)c->partitions, sizeof *published);
    if (w.parts == NULL || w.running == NULL || published == NULL) {
        log_error("out of memory");
        free(w.parts);
        free(w.running);
        free(published);
        pthread_mutex_destroy(&w.mu);
        return 1;
    }
    pj_init(&p, c);
    log_info("starting worker %s: %d partitions, lease %d ms, batch %d", w.name, c->partitions,
             c->projector_lease_ms, c->projector_batch);
    err_clear(&e);
    if (pj_http_start(&http, c, &e) != ST_OK) {
        log_error("%s", e.msg);
        rc = 1;
        goto cleanup;
    }
    connected = connect_all(&w, &p);
    if (connected < 0) {
        rc = 2;
        goto cleanup;
    }
    if (connected) {
        log_info("running: stream %s, lease bucket %s", BUS_STREAM, OWN_BUCKET);
        owner_started = pthread_create(&w.owner_thread, NULL, owner_main, &w) == 0;
        if (!owner_started)
            log_error("unable to start the ownership thread: consuming nothing, sweeping only");
    }
    heal_check(&p, &heal);

    while (!svc_stop_requested) {
        int64_t now = svc_mono_ms();

        totals(&w, &p, &n);
        pj_observe(&p, &n, owner_started);
        observe_partitions(&w, published);
        if (sweep_more || now - last_sweep >= SWEEP_INTERVAL_MS) {
            int count = 0, fetched = 0;
            status st;
            err_clear(&e);
            st = pj_sweep(&p, SWEEP_LIMIT, &count, &fetched, &e);
            if (st != ST_OK)
                log_warn("catch-up sweep: %s", e.msg);
            pj_observe_sweep(st == ST_OK, count, fetched);
            sweep_more = count == SWEEP_LIMIT;
            if (count > 0)
                log_debug("catch-up sweep read %d events, %d of them not applied yet", count, fetched);
            last_sweep = now;
            heal_check(&p, &heal);
        }
        if (now - last_stats >= 10000 && n.applied != last_applied) {
            log_info("applied %ld events (%ld from gap repair) over %d partitions, sweep %ld; %ld duplicates, "
                     "%ld conflicts, %ld parked, %ld stray messages dropped, %ld history holes",
                     n.applied, n.gap_events, atomic_load(&w.held), p.applied, n.duplicates, n.conflicts, n.parked,
                     n.strays, n.holes);
            last_applied = n.applied;
            last_stats = now;
        }
        if (!sweep_more)
            svc_pause_ms(LOOP_MS);
    }
    if (owner_started)
        pthread_join(w.owner_thread, NULL); /* it stops every consumer thread first */
    totals(&w, &p, &n);
    log_info("stopping: applied %ld events (%ld from gap repair), sweep applied %ld, %ld duplicates, %ld conflicts, "
             "%ld parked, %ld stray messages dropped, %ld history holes, %ld consumers begun again after a "
             "hole or a bus error",
             n.applied, n.gap_events, p.applied, n.duplicates, n.conflicts, n.parked, n.strays, n.holes,
             n.resubscribes);
cleanup:
    own_close(&w.own);
    bus_release(&w.bus);
    if (heal.running)
        pthread_join(heal.thread, NULL); /* it saw svc_stop_requested: its checkpoint is saved */
    pj_http_stop(&http);
    pj_release(&p);
    free(w.parts);
    free(published);
    free(w.running);
    pthread_mutex_destroy(&w.mu);
    return rc;
}
