/* The projector's connections and the batch pass: one batch goes through rounds of read, fold and
 * compare-and-set (apply.c) over the building and then the current generation. */
#include "engine.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "gens.h"
#include "log.h"
#include "pass.h"
#include "rds.h"
#include "readmodel.h"
#include "vcache.h"

void pj_init(struct pj *p, const struct cfg *c)
{
    memset(p, 0, sizeof *p);
    p->cfg = c;
    pj_notify_declare();
}

void pj_release(struct pj *p)
{
    pj_drop_redis(p);
    pj_drop_pg(p);
    vc_free(p->cache);
    p->cache = NULL;
}

void pj_drop_redis(struct pj *p)
{
    rds_free(&p->rc);
    p->sha[0] = '\0';
    pj_forget(p);
}

void pj_forget(struct pj *p)
{
    vc_clear(p->cache);
    p->gens_known = 0;
}

void pj_drop_pg(struct pj *p)
{
    if (p->pg != NULL)
        PQfinish(p->pg);
    p->pg = NULL;
}

status pj_redis_failed(struct pj *p, const redisReply *r, struct err *e, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    status st;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis %s: %s", what,
                  r == NULL ? rds_errstr(p->rc)
                  : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r == NULL)
        pj_drop_redis(p); /* the connection is gone or out of step */
    return st;
}

status pj_load_script(struct pj *p, struct err *e)
{
    redisReply *r = rds_command(p->rc, "SCRIPT LOAD %s", rm_apply_script());
    status st = ST_OK;

    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len >= sizeof p->sha) {
        st = pj_redis_failed(p, r, e, "script load");
    } else {
        memcpy(p->sha, r->str, r->len + 1);
    }
    freeReplyObject(r);
    return st;
}

status pj_redis(struct pj *p, struct err *e)
{
    status st;

    if (p->rc != NULL && rds_broken(p->rc))
        pj_drop_redis(p);
    if (p->rc == NULL) {
        redisReply *r;
        st = rds_connect_cfg(&p->rc, p->cfg, e);
        if (st != ST_OK)
            return st;
        /* a lost connection may have taken a batch's notification with it, and a start may
         * follow a worker killed between its write and its PUBLISH: read API caches drop
         * everything ("*") rather than serve what that notification would have invalidated */
        r = rds_command(p->rc, "PUBLISH %s *", RM_APPLIED_CHANNEL);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            pj_notify_lost(p, r != NULL ? "refused" : "connection", r != NULL ? r->str : rds_errstr(p->rc));
        freeReplyObject(r);
        /* a connection lost again at once (Redis killed as we connected) is kept: the script
         * load below (sha is empty after every connect) fails on it, drops it, answers
         * unavailable */
    }
    /* no generation is created here: a current generation only ever comes from a rebuild's
     * switch, so the read API never serves an empty one while the event store has events */
    if (p->sha[0] == '\0')
        return pj_load_script(p, e);
    return ST_OK;
}

status pj_pg(struct pj *p, struct err *e)
{
    if (p->pg != NULL && db_broken(p->pg))
        pj_drop_pg(p);
    if (p->pg != NULL)
        return ST_OK;
    return db_connect(&p->pg, p->cfg->database_url, p->cfg->request_timeout_ms, e);
}

static status process_gen(struct pj *p, long gen, struct pj_item **items, int n, unsigned flags,
                          int publish, int use_cache, int *gone, struct err *e)
{
    struct vcache *cache = use_cache ? p->cache : NULL;
    struct acct *accts = NULL;
    int na = 0, first = 0, reload = 0;
    status st;

    *gone = 0;
    p->pass_gen = gen;
    for (int i = 0; i < n; i++)
        items[i]->disp = items[i]->stray ? PJ_TERM : PJ_PENDING;
    pj_sort(items, n);
    /* poison that cannot be placed in a stream is parked (and its account, when known,
     * stalled) before the read, so the read already sees the stall. Poison with a version is
     * judged in the fold: a copy of an applied version is only a duplicate. */
    for (int i = 0; i < n; i++) {
        if (items[i]->ok || (items[i]->ev.stream_id[0] != '\0' && items[i]->ev.stream_version > 0))
            continue;
        st = pj_park(p, items[i], items[i]->why.msg, e);
        if (st != ST_OK)
            return st;
        items[i]->disp = PJ_TERM;
    }
    while (first < n && items[first]->ev.stream_id[0] == '\0')
        first++; /* poison with no account: parked above, nothing to fold */
    accts = calloc((size_t)(n - first) + 1, sizeof *accts);
    if (accts == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    for (int i = first; i < n; i++) {
        if (na == 0 || strcmp(accts[na - 1].id, items[i]->ev.stream_id) != 0) {
            accts[na].id = items[i]->ev.stream_id;
            accts[na].it = &items[i];
            accts[na].need_read = 1;
            na++;
        }
        accts[na - 1].n++;
    }
    for (int round = 0; round < PJ_MAX_CAS_ROUNDS && !*gone; round++) {
        int pending = 0;
        for (int i = 0; i < na; i++)
            pending += accts[i].need_read;
        if (pending == 0)
            break;
        if (reload) {
            st = pj_load_script(p, e);
            if (st != ST_OK)
                goto cleanup;
        }
        /* the first round folds onto the views this process wrote; an account whose version
         * moved meanwhile is a conflict, read from Redis in the next round */
        for (int i = 0; i < na; i++)
            accts[i].cached = round == 0 && accts[i].need_read &&
                              vc_get(cache, gen, accts[i].id, &accts[i].view);
        for (int i = 0; i < na; i++)
            if (accts[i].cached)
                accts[i].applied = accts[i].view.version;
        st = ap_read_accounts(p, gen, accts, na, e);
        if (st == ST_OK)
            st = rp_prefetch_gaps(p, accts, na, flags, e);
        if (st != ST_OK)
            goto cleanup;
        for (int i = 0; i < na; i++) {
            if (!accts[i].need_read)
                continue;
            st = ap_fold_account(p, &accts[i], flags, e);
            if (st != ST_OK)
                goto cleanup;
            if (accts[i].nent == 0)
                ap_settle(p, &accts[i]); /* nothing new: duplicates, stalled or waiting */
        }
        st = ap_apply_accounts(p, gen, accts, na, publish, &reload, gone, e);
        if (st != ST_OK)
            goto cleanup;
    }
    if (*gone) {
        st = ST_OK;
        goto cleanup;
    }
    for (int i = 0; i < na && cache != NULL; i++) {
        /* settled: Redis holds the fold's view at new_version (written now, or already) */
        if (!accts[i].need_read && accts[i].have_view && accts[i].stop != STOP_POISON &&
            accts[i].view.version == accts[i].new_version)
            vc_put(cache, gen, &accts[i].view);
        else
            vc_drop(cache, accts[i].id);
    }
    for (int i = 0; i < na; i++)
        if (accts[i].need_read) {
            log_warn("account=%s still contended after %d rounds: redelivering", accts[i].id,
                     PJ_MAX_CAS_ROUNDS);
            for (int k = 0; k < accts[i].n; k++)
                if (accts[i].it[k]->disp != PJ_TERM)
                    accts[i].it[k]->disp = PJ_NAK;
        }
    st = ST_OK;
cleanup:
    /* what was written is announced by the call that wrote it (ap_apply_accounts), also when a
     * later round fails (Postgres, say) */
    for (int i = 0; i < na; i++)
        ap_acct_release(&accts[i]);
    free(accts);
    return st;
}

/* The pointer array the passes sort, so the caller's items keep their order. */
static struct pj_item **item_ptrs(struct pj_item *items, int n, struct err *e)
{
    struct pj_item **ptrs = calloc((size_t)n + 1, sizeof *ptrs);

    if (ptrs == NULL) {
        err_set(e, ST_INTERNAL, "out of memory for %d items", n);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        ptrs[i] = &items[i];
    return ptrs;
}

status pj_process_gen(struct pj *p, long gen, struct pj_item *items, int n, unsigned flags,
                      int *gone, struct err *e)
{
    struct pj_item **ptrs;
    status st = pj_redis(p, e);

    if (st != ST_OK)
        return st;
    ptrs = item_ptrs(items, n, e);
    if (ptrs == NULL)
        return ST_INTERNAL;
    st = process_gen(p, gen, ptrs, n, flags, 0, 1, gone, e);
    free(ptrs);
    return st;
}

/* One lane of pj_process_gen_lanes: its items, on its own connections. */
struct lane {
    struct pj *p;
    long gen;
    struct pj_item **ptrs;
    int n;
    unsigned flags;
    int gone;
    status st;
    struct err e;
    pthread_t thread;
};

static void *lane_main(void *arg)
{
    struct lane *l = arg;

    err_clear(&l->e);
    l->st = pj_redis(l->p, &l->e);
    if (l->st == ST_OK && l->n > 0)
        l->st = process_gen(l->p, l->gen, l->ptrs, l->n, l->flags, 0, 1, &l->gone, &l->e);
    return NULL;
}

status pj_process_gen_lanes(struct pj *p, struct pj *extra, int nl, long gen, struct pj_item *items, int n,
                            unsigned flags, int *gone, struct err *e)
{
    struct lane lanes[PJ_LANES_MAX];
    struct pj_item **ptrs;
    unsigned char *lane_of;
    int started[PJ_LANES_MAX] = {0}, at = 0;
    status st = ST_OK;

    if (nl <= 1 || n < 2 * nl)
        return pj_process_gen(p, gen, items, n, flags, gone, e);
    if (nl > PJ_LANES_MAX)
        nl = PJ_LANES_MAX;
    ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    lane_of = calloc((size_t)n + 1, 1);
    if (ptrs == NULL || lane_of == NULL) {
        free(ptrs);
        free(lane_of);
        return err_set(e, ST_INTERNAL, "out of memory for %d items", n);
    }
    for (int i = 0; i < n; i++) /* hashed once per item, not once per lane */
        lane_of[i] = (unsigned char)(event_partition(items[i].ev.stream_id, (unsigned)p->cfg->partitions) %
                                     (unsigned)nl);
    /* each lane's items contiguous in ptrs, in the batch's order: an account (a partition) is
     * in one lane, so its versions keep their order */
    for (int k = 0; k < nl; k++) {
        memset(&lanes[k], 0, sizeof lanes[k]);
        lanes[k].p = k == 0 ? p : &extra[k - 1];
        lanes[k].gen = gen;
        lanes[k].flags = flags;
        lanes[k].ptrs = ptrs + at;
        for (int i = 0; i < n; i++)
            if (lane_of[i] == k)
                ptrs[at + lanes[k].n++] = &items[i];
        at += lanes[k].n;
    }
    for (int k = 1; k < nl; k++)
        started[k] = pthread_create(&lanes[k].thread, NULL, lane_main, &lanes[k]) == 0;
    lane_main(&lanes[0]);
    for (int k = 1; k < nl; k++) {
        if (started[k])
            pthread_join(lanes[k].thread, NULL);
        else
            lane_main(&lanes[k]); /* no thread: in this one */
    }
    *gone = 0;
    for (int k = 0; k < nl; k++) {
        *gone |= lanes[k].gone;
        if (st == ST_OK && lanes[k].st != ST_OK) {
            st = lanes[k].st;
            if (e != NULL)
                *e = lanes[k].e;
        }
    }
    free(ptrs);
    free(lane_of);
    return st;
}

/* The live path. The building generation goes FIRST: at every instant it holds at least what the
 * current one holds for any account the live path touched, so a switch can never make a reader
 * see an account go back in version. Only items the building generation took reach the
 * current one; the others are redelivered (NAK) and both passes run again (idempotent).
 * A partition owner takes the generations of its last batch instead of reading them: each of its
 * apply calls checks them (gens_check), and a batch built for names that changed is redone with
 * the new ones (live_pass sets p->gens_changed, nothing was written by the refused call). */
static status live_pass(struct pj *p, struct pj_item **items, int n, unsigned flags, struct err *e)
{
    struct rm_gens g;
    struct pj_item **sub = NULL;
    enum pj_disp *bdisp = NULL;
    int gone = 0, nsub = 0, building_ok = 0;
    status st = ST_OK;

    for (int i = 0; i < n; i++)
        items[i]->disp = PJ_PENDING;
    if (p->fence != NULL && p->gens_known) {
        g = p->gens;
    } else {
        st = rm_load_gens(p->rc, &g, e);
        if (st != ST_OK) {
            pj_drop_redis(p);
            return st;
        }
        p->gens = g;
        p->gens_known = p->fence != NULL && g.current > 0; /* no model: asked again each batch */
    }
    snprintf(p->gens_check, sizeof p->gens_check, "%ld:%ld", g.current, g.building);
    if (g.current != p->gen && g.current > 0)
        log_info("read model generation is now %ld (was %ld)", g.current, p->gen);
    p->gen = g.current;
    p->building = g.building;
    /* a generation another fold builds is its rebuild's alone (issue 13, hole 3) */
    if (g.building > 0 && g.building != g.current && !pj_fold_writable(p, g.building))
        g.building = 0;
    pj_fold_note_current(p, g.current);
    sub = calloc((size_t)n + 1, sizeof *sub);
    bdisp = calloc((size_t)n + 1, sizeof *bdisp);
    if (sub == NULL || bdisp == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    if (g.building > 0 && g.building != g.current) {
        memcpy(sub, items, (size_t)n * sizeof *sub);
        p->fence_final = g.current == 0;
        st = process_gen(p, g.building, sub, n, flags, g.current == 0, 0, &gone, e);
        if (st != ST_OK || p->gens_changed)
            goto cleanup;
        building_ok = !gone;
    }
    for (int i = 0; i < n; i++) {
        bdisp[i] = building_ok ? items[i]->disp : PJ_ACK;
        if (bdisp[i] == PJ_ACK || bdisp[i] == PJ_TERM)
            sub[nsub++] = items[i];
    }
    if (g.current > 0) {
        p->fence_final = 1;
        st = process_gen(p, g.current, sub, nsub, flags, 1, 1, &gone, e);
        if (st != ST_OK || p->gens_changed)
            goto cleanup;
        if (gone) {
            /* rm:current names a generation that is gone: nothing is applied until a rebuild */
            for (int i = 0; i < nsub; i++)
                sub[i]->disp = PJ_NAK;
        }
    } else if (!building_ok) {
        /* no model at all (Redis flushed): the events stay in JetStream until a rebuild
         * has created a generation; the rebuild reads them from Postgres anyway */
        for (int i = 0; i < n; i++)
            items[i]->disp = PJ_NAK;
        p->no_model = 1;
        goto cleanup;
    }
    p->no_model = g.current == 0;
    for (int i = 0; i < n; i++) {
        if (bdisp[i] != PJ_ACK && bdisp[i] != PJ_TERM)
            items[i]->disp = PJ_NAK; /* the building generation did not take it: retry both */
        else if (g.current == 0)
            items[i]->disp = bdisp[i];
    }
cleanup:
    free(sub);
    free(bdisp);
    return st;
}

#define LIVE_GENS_TRIES 4 /* names changing under every try: the batch is retried later */

static status process_live(struct pj *p, struct pj_item **items, int n, unsigned flags, struct err *e)
{
    status st;

    p->fenced = 0;
    p->rewound = 0;
    st = pj_redis(p, e);
    for (int tries = 0; st == ST_OK; tries++) {
        p->gens_changed = 0;
        st = live_pass(p, items, n, flags, e);
        if (st != ST_OK || !p->gens_changed)
            break;
        log_info("read model generations changed under a batch of %d: doing it again", n);
        p->gens_known = 0;
        if (tries + 1 == LIVE_GENS_TRIES) {
            for (int i = 0; i < n; i++)
                if (items[i]->disp != PJ_TERM)
                    items[i]->disp = PJ_NAK;
            break;
        }
    }
    p->gens_check[0] = '\0';
    p->gens_changed = 0;
    return st;
}

status pj_process(struct pj *p, struct pj_item *items, int n, unsigned flags, struct err *e)
{
    struct pj_item **ptrs = item_ptrs(items, n, e);
    status st;

    if (ptrs == NULL)
        return ST_INTERNAL;
    st = process_live(p, ptrs, n, flags, e);
    free(ptrs);
    return st;
}
