/* Rebuild: stream the events table in commit-safe order into a new generation through the live
 * projector's own fold and compare-and-set apply, then switch (or verify, or roll back). */
#include "rebuild.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "account.h"
#include "engine.h"
#include "gens.h"
#include "jsonx.h"
#include "log.h"
#include "rbread.h"
#include "rds.h"
#include "readmodel.h"
#include "svc.h"
#include "tail.h"
#include "uuid.h"
#include "vcache.h"
#include "verify.h"

/* Why the switch is safe (docs/rebuild.md has the long form):
 * - the rebuild writes with the same compare-and-set script as the live projector, so the two
 *   writers can interleave freely: each version of each account is written once, in order;
 * - the live projector applies every batch to the building generation BEFORE the current one,
 *   so for any account the live path touched, building >= current at every instant;
 * - the rebuild switches only once a single snapshot shows no committed event beyond its
 *   cursor (pj_tail_read's caught_up): everything committed before that is in the building
 *   generation, everything committed after it reaches it through the live path (building
 *   first), or through the new generation's catch-up sweep, which starts at the rebuild's
 *   cursor. */

/* ARGV[11]: the cursor this step continues from. When Redis holds another one it lost our
 * last steps (restored from a snapshot, a replica promoted, an everysec AOF): reply {cursor,
 * done} as Redis has them, and the rebuild goes on from there. */
static const char step_lua[] =
    "if redis.call('GET', 'rm:building') ~= ARGV[1] then return 0 end\n"
    "local l = redis.call('GET', 'rm:rebuild:lease')\n"
    "if l and l ~= ARGV[2] then return -1 end\n"
    "local rb = redis.call('HMGET', 'rm:rebuild', 'gen', 'cursor', 'done')\n"
    "if rb[1] ~= ARGV[1] or rb[2] ~= ARGV[11] then return {rb[2] or '0:0', rb[3] or '0'} end\n"
    "redis.call('SET', 'rm:rebuild:lease', ARGV[2], 'PX', ARGV[10])\n"
    "redis.call('HSET', 'rm:rebuild', 'gen', ARGV[1], 'cursor', ARGV[3], 'done', ARGV[4],\n"
    "           'total', ARGV[5], 'events_per_s', ARGV[6], 'eta_s', ARGV[7],\n"
    "           'updated_at_ms', ARGV[8], 'state', ARGV[9])\n"
    "return 1\n";

static const char unlease_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

static const char unbuild_lua[] =
    "if redis.call('GET', 'rm:building') == ARGV[1] then\n"
    "  redis.call('DEL', 'rm:building')\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

static const char *mode_name(enum rb_mode m)
{
    return m == RB_VERIFY ? "verify" : m == RB_ROLLBACK ? "rollback" : "switch";
}

/* ---- progress ---- */

struct progress {
    const struct rb_opts *o;
    long gen;
    int64_t done, done0, total, t0, last_print, last_count;
    double eps;
    int64_t eta_s;
    int tty, printed;
    int64_t printed_done, printed_total; /* what the last line said (when printed) */
};

static void progress_print(struct progress *pg, int final)
{
    int64_t now = svc_mono_ms();
    char line[200];
    double pct = pg->total > 0 ? 100.0 * (double)pg->done / (double)pg->total : 100.0;

    if (!final && !pg->tty && now - pg->last_print < RB_PROGRESS_MS)
        return;
    if (!final && pg->tty && now - pg->last_print < 200)
        return;
    /* a line says something new or is not printed: the final one repeats no earlier line */
    if (!pg->tty && pg->printed && pg->done == pg->printed_done && pg->total == pg->printed_total)
        return;
    pg->last_print = now;
    pg->printed_done = pg->done;
    pg->printed_total = pg->total;
    snprintf(line, sizeof line, "%s generation %ld: %" PRId64 "/%" PRId64 " event%s (%.1f%%), %.0f events/s, ETA %" PRId64 " s",
             mode_name(pg->o->mode), pg->gen, pg->done, pg->total, pg->total == 1 ? "" : "s",
             pct > 100.0 ? 100.0 : pct, pg->eps, pg->eta_s);
    if (pg->o->auto_heal) {
        log_info("self-heal rebuild: %s", line);
    } else if (pg->o->progress != NULL) {
        if (pg->tty)
            fprintf(pg->o->progress, "\r%s\033[K%s", line, final ? "\n" : "");
        else
            fprintf(pg->o->progress, "%s\n", line);
        fflush(pg->o->progress);
    }
    pg->printed = 1;
}

/* Recomputes rate and ETA; recounts the total (a scan of the index) at most every 2 s. */
static status progress_update(struct progress *pg, struct pj *p, const struct tail_cursor *cur,
                              struct err *e)
{
    int64_t now = svc_mono_ms(), remaining = 0, head = 0;
    double secs = (double)(now - pg->t0) / 1000.0;
    status st;

    if (pg->last_count == 0 || now - pg->last_count >= RB_PROGRESS_MS) {
        st = pj_pg(p, e);
        if (st == ST_OK)
            st = tail_remaining(p->pg, cur, &remaining, &head, e);
        if (st != ST_OK)
            return st;
        pg->total = pg->done + remaining;
        pg->last_count = now;
    }
    if (pg->total < pg->done)
        pg->total = pg->done;
    pg->eps = secs > 0.05 ? (double)(pg->done - pg->done0) / secs : 0.0;
    pg->eta_s = pg->eps > 0.0 ? (int64_t)((double)(pg->total - pg->done) / pg->eps + 0.5) : 0;
    return ST_OK;
}

/* One round trip per batch: still our generation, still our lease (extended), progress and
 * resume cursor recorded, compare-and-set from held (the cursor Redis holds, as recorded by the
 * last step). ST_CONFLICT when the generation was abandoned or the lease lost. *rewound is set
 * (and cur, done and held are what Redis holds) when Redis lost our last steps. */
static status progress_step(struct pj *p, struct progress *pg, struct tail_cursor *cur, char *held,
                            size_t held_len, int *rewound, const char *token, const char *state,
                            struct err *e)
{
    char gen_s[24], cur_s[64], done_s[24], total_s[24], eps_s[32], eta_s[24], now_s[24], ttl_s[16];
    const char *argv[15];
    redisReply *r;
    status st = ST_OK;

    snprintf(gen_s, sizeof gen_s, "%ld", pg->gen);
    tail_cursor_format(cur, cur_s, sizeof cur_s);
    snprintf(done_s, sizeof done_s, "%" PRId64, pg->done);
    snprintf(total_s, sizeof total_s, "%" PRId64, pg->total);
    snprintf(eps_s, sizeof eps_s, "%.0f", pg->eps);
    snprintf(eta_s, sizeof eta_s, "%" PRId64, pg->eta_s);
    snprintf(now_s, sizeof now_s, "%" PRId64, pj_now_ms());
    snprintf(ttl_s, sizeof ttl_s, "%d", RB_LEASE_MS);
    /* reconnects: a rebuild waiting at the horizon reads no batch, so nothing else would
     * after a failed step dropped the connection */
    st = pj_redis(p, e);
    if (st != ST_OK)
        return st;
    argv[0] = "EVAL";
    argv[1] = step_lua;
    argv[2] = "0";
    argv[3] = gen_s;
    argv[4] = token;
    argv[5] = cur_s;
    argv[6] = done_s;
    argv[7] = total_s;
    argv[8] = eps_s;
    argv[9] = eta_s;
    argv[10] = now_s;
    argv[11] = state;
    argv[12] = ttl_s;
    argv[13] = held;
    *rewound = 0;
    r = rds_command_argv(p->rc, 14, argv, NULL);
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
        log_warn("rebuild of generation %ld: Redis holds cursor %s (%s events), not %s: it lost writes "
                 "(restored or failed over); continuing from there", pg->gen, r->element[0]->str,
                 r->element[1]->str, held);
        if (tail_cursor_parse(cur, r->element[0]->str) != ST_OK)
            memset(cur, 0, sizeof *cur);
        tail_cursor_format(cur, held, held_len);
        pg->done = strtoll(r->element[1]->str, NULL, 10);
        *rewound = 1;
    } else if (r == NULL || r->type != REDIS_REPLY_INTEGER)
        st = pj_redis_failed(p, r, e, "rebuild progress");
    else if (r->integer == 0)
        st = err_set(e, ST_CONFLICT, "generation %ld is no longer being built (aborted, or redis was flushed)", pg->gen);
    else if (r->integer < 0)
        st = err_set(e, ST_CONFLICT, "another process took the rebuild lease");
    else
        snprintf(held, held_len, "%s", cur_s);
    freeReplyObject(r);
    return st;
}

/* ---- the run ---- */

static status take_lease(struct pj *p, const struct rb_opts *o, const char *token, struct err *e)
{
    int64_t deadline = svc_mono_ms() + (o->auto_heal ? 0 : RB_LEASE_MS + 2000);
    int held = 0, said = 0;
    status st;

    for (;;) {
        st = pj_lease(p, RM_REBUILD_LEASE_KEY, token, RB_LEASE_MS, &held, e);
        if (st != ST_OK || held)
            return st;
        if (svc_mono_ms() >= deadline || (o->stop != NULL && *o->stop))
            return err_set(e, ST_CONFLICT, "another rebuild is running (%s is held)", RM_REBUILD_LEASE_KEY);
        if (!said && o->progress != NULL) {
            fprintf(o->progress, "waiting for %s (another rebuild, or one that died, holds it)\n",
                    RM_REBUILD_LEASE_KEY);
            said = 1;
        }
        svc_pause_ms(250);
    }
}

static void release_lease(struct pj *p, const char *token)
{
    redisReply *r;

    if (p->rc == NULL)
        return;
    r = rds_command(p->rc, "EVAL %s 1 %s %s", unlease_lua, RM_REBUILD_LEASE_KEY, token);
    freeReplyObject(r);
}

/* Sets up the generation to fill and the cursor to start from. */
static status start(struct pj *p, const struct rb_opts *o, long *gen, struct tail_cursor *cur,
                    char *held, size_t held_len, int64_t *done, struct rb_result *res, struct err *e)
{
    struct rm_gens g;
    redisReply *r = NULL;
    char now_s[24];
    status st;

    snprintf(now_s, sizeof now_s, "%" PRId64, pj_now_ms());
    st = rm_load_gens(p->rc, &g, e);
    if (st != ST_OK)
        return st;
    res->replaced = g.current;
    if (o->mode == RB_ROLLBACK) {
        if (g.previous == 0)
            return err_set(e, ST_NOT_FOUND, "there is no previous generation to roll back to");
        if (g.building != 0)
            return err_set(e, ST_CONFLICT, "generation %ld is being built: finish it or run 'projector rebuild --abort' first",
                           g.building);
        r = rds_command(p->rc, "EVAL %s 0 %ld %s", rm_rollback_script(), g.previous, now_s);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
            r->element[0]->type != REDIS_REPLY_INTEGER) {
            st = pj_redis_failed(p, r, e, "rollback");
            goto cleanup;
        }
        if (r->element[0]->integer != 1 || r->elements != 2) {
            st = err_set(e, ST_CONFLICT, "the generations changed under the rollback; try again");
            goto cleanup;
        }
        *gen = g.previous;
        /* its catch-up starts where its own sweep stopped */
        memset(cur, 0, sizeof *cur);
        if (r->element[1]->type != REDIS_REPLY_STRING || tail_cursor_parse(cur, r->element[1]->str) != ST_OK)
            memset(cur, 0, sizeof *cur);
        snprintf(held, held_len, "%s", r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "0:0");
        *done = 0;
        goto cleanup;
    }
    if (o->mode == RB_VERIFY && g.current == 0)
        return err_set(e, ST_NOT_FOUND, "there is no current generation to verify against");
    r = rds_command(p->rc, "EVAL %s 0 %s %s", rm_begin_script(), mode_name(o->mode), now_s);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 7 || r->element[1]->type != REDIS_REPLY_STRING) {
        st = pj_redis_failed(p, r, e, "begin rebuild");
        goto cleanup;
    }
    *gen = (long)r->element[0]->integer;
    if (tail_cursor_parse(cur, r->element[1]->str) != ST_OK)
        memset(cur, 0, sizeof *cur);
    snprintf(held, held_len, "%s", r->element[1]->str);
    *done = r->element[2]->integer;
    res->resumed = r->element[3]->integer == 1;
    for (int k = 4; k <= 5; k++) {
        long stale = (long)r->element[k]->integer, removed = 0;
        if (stale <= 0 || stale == *gen)
            continue;
        st = rm_drop_generation(p->rc, stale, &removed, e);
        if (st != ST_OK)
            goto cleanup;
        log_info("dropped abandoned %s generation %ld (%ld keys)", k == 4 ? "building" : "unopened", stale, removed);
    }
    if (res->resumed) {
        char fold[64];
        /* a generation is folded by one fold: another binary's is not continued */
        st = pj_gen_fold(p->rc, *gen, fold, sizeof fold, e);
        if (st == ST_OK && strcmp(fold, proj_fold_version()) != 0)
            st = err_set(e, ST_CONFLICT, "generation %ld is being built with fold version %s, this binary folds %s: "
                         "run 'projector rebuild --abort' first", *gen, fold[0] ? fold : "(none)", proj_fold_version());
        if (st != ST_OK)
            goto cleanup;
    }
    if (!res->resumed) {
        long left = 0;
        /* rm:genseq was lost (a partial flush): keys of this number may be left over. They go
         * while nothing can write the generation (no checkpoint, no name), never after. */
        if (r->element[6]->integer == 1) {
            st = rm_drop_generation(p->rc, *gen, &left, e);
            if (st != ST_OK)
                goto cleanup;
            if (left > 0)
                log_warn("generation %ld: removed %ld keys left over from an earlier generation of that number", *gen, left);
        }
        /* before any worker can see it: workers of another fold leave it to this rebuild */
        st = pj_gen_fold_set(p->rc, *gen, e);
        if (st != ST_OK)
            goto cleanup;
        freeReplyObject(r);
        r = rds_command(p->rc, "EVAL %s 0 %ld %s", rm_open_script(), *gen, now_s);
        if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
            st = pj_redis_failed(p, r, e, "open generation");
            goto cleanup;
        }
        if (r->integer != 1)
            st = err_set(e, ST_CONFLICT, "generation %ld was taken over before it was opened (another rebuild?)", *gen);
    }
cleanup:
    freeReplyObject(r);
    return st;
}

/* Every lane forgets the views it remembered (vcache.h: vc_clear). */
static void forget_views(struct pj *p, struct pj *extra, int nl)
{
    vc_clear(p->cache);
    for (int k = 0; k < nl - 1; k++)
        vc_clear(extra[k].cache);
}

status rb_run(const struct cfg *c, const struct rb_opts *o, struct rb_result *res, struct err *e)
{
    struct pj p;
    struct progress pg;
    struct tail_cursor cur = {0, 0}, before;
    struct pj_item *items = NULL;
    char token[UUID_STR_SIZE], cur_s[64], held[64] = "0:0";
    int batch = o->batch > 0 ? o->batch : RB_BATCH;
    /* a batch's partitions applied on lanes in parallel, each with its own connections (the
     * same apply path as the live owners: many accounts per script call) */
    int nl = o->lanes > 0 ? (o->lanes < PJ_LANES_MAX ? o->lanes : PJ_LANES_MAX) : RB_LANES;
    struct pj extra[PJ_LANES_MAX - 1];
    struct rb_reader rd;
    int leased = 0, waiting_said = 0, retries = 0, n = 0, rewound = 0;
    redisReply *r = NULL;
    long gen = 0;
    status st;

    memset(res, 0, sizeof *res);
    memset(&pg, 0, sizeof pg);
    pj_init(&p, c);
    for (int k = 0; k < nl - 1; k++)
        pj_init(&extra[k], c);
    rbr_init(&rd, c);
    /* each lane remembers the views it wrote (an account is always in the same lane); without
     * memory for it every account is read from Redis as before */
    p.cache = vc_new(VC_SETS);
    for (int k = 0; k < nl - 1; k++)
        extra[k].cache = vc_new(VC_SETS);
    uuid_generate(token);
    st = pj_redis(&p, e);
    if (st == ST_OK)
        st = rm_check_noeviction(p.rc, e);
    if (st == ST_OK)
        st = pj_pg(&p, e);
    if (st == ST_OK)
        st = take_lease(&p, o, token, e);
    if (st != ST_OK)
        goto cleanup;
    leased = 1;
    st = start(&p, o, &gen, &cur, held, sizeof held, &pg.done, res, e);
    if (st != ST_OK)
        goto cleanup;
    res->gen = gen;
    pg.o = o;
    pg.gen = gen;
    pg.done0 = pg.done;
    pg.t0 = svc_mono_ms();
    pg.tty = !o->auto_heal && o->progress != NULL && isatty(fileno(o->progress));
    if (o->auto_heal)
        log_info("self-heal: %s generation %ld from the events table", res->resumed ? "resuming" : "building", gen);
    else if (o->progress != NULL)
        fprintf(o->progress, "%s generation %ld%s\n", o->mode == RB_ROLLBACK ? "catching up" : res->resumed ? "resuming" : "building",
                gen, res->resumed ? " from its checkpoint" : "");

stream:
    for (;;) {
        int caught_up = 0, gone = 0, all = 1;

        if (o->stop != NULL && *o->stop) {
            st = err_set(e, ST_UNAVAILABLE, "stopped at %" PRId64 " events; run it again to resume", pg.done);
            goto cleanup;
        }
        before = cur;
        st = rbr_take(&rd, &cur, batch, &items, &n, &caught_up, e);
        if (st == ST_OK && n > 0)
            rbr_start(&rd, &cur, batch); /* the next batch is read while this one is applied */
        if (st == ST_OK && n > 0) {
            st = pj_process_gen_lanes(&p, extra, nl, gen, items, n, PJ_IGNORE_STALLED, &gone, e);
            if (st == ST_OK && gone) {
                st = err_set(e, ST_CONFLICT, "generation %ld was dropped under the rebuild (--abort, or redis flushed)", gen);
                goto cleanup;
            }
            for (int i = 0; st == ST_OK && i < n; i++)
                all &= items[i].disp == PJ_ACK || items[i].disp == PJ_TERM;
        }
        if (st == ST_OK && !all) {
            /* contended with the live projector past the retry rounds: read the batch again */
            forget_views(&p, extra, nl);
            cur = before;
            pj_items_free(items, n);
            items = NULL;
            n = 0;
            if (++retries > 20) {
                st = err_set(e, ST_UNAVAILABLE, "a batch could not be applied after %d attempts", retries);
                goto cleanup;
            }
            continue;
        }
        if (st != ST_OK) {
            if (st != ST_UNAVAILABLE || ++retries > 20)
                goto cleanup;
            log_warn("rebuild of generation %ld: %s (retrying)", gen, e->msg);
            forget_views(&p, extra, nl);
            cur = before;
            pj_items_free(items, n);
            items = NULL;
            n = 0;
            svc_pause_ms(pj_backoff_ms(retries, 5000));
            continue;
        }
        pg.done += n;
        res->events += n;
        for (int i = 0; i < n; i++)
            res->unfolded += items[i].disp == PJ_TERM; /* parked: the history does not fold */
        pj_items_free(items, n);
        items = NULL;
        st = progress_update(&pg, &p, &cur, e);
        if (st == ST_OK)
            st = progress_step(&p, &pg, &cur, held, sizeof held, &rewound, token, "building", e);
        if (st == ST_UNAVAILABLE && ++retries <= 20) {
            /* the batch again; the next step's compare-and-set finds out whether Redis came
             * back with fewer steps than we recorded */
            log_warn("rebuild of generation %ld: %s (retrying)", gen, e->msg);
            pg.done -= n;
            res->events -= n;
            n = 0;
            forget_views(&p, extra, nl);
            cur = before;
            svc_pause_ms(pj_backoff_ms(retries, 5000));
            continue;
        }
        if (st != ST_OK)
            goto cleanup;
        retries = 0;
        if (rewound) {
            forget_views(&p, extra, nl); /* what they remember is not in Redis any more */
            continue;                    /* Redis lost our last steps: go over them again */
        }
        progress_print(&pg, 0);
        if (n == 0 && caught_up)
            break;
        if (n == 0) {
            /* committed events exist beyond the horizon: a transaction below them is still
             * open. Skipping ahead would lose its rows, so wait for it. */
            if (!waiting_said++)
                log_info("rebuild of generation %ld waits for an open transaction below the horizon", gen);
            svc_pause_ms(50);
        }
    }
    pg.total = pg.done;
    pg.eta_s = 0;
    progress_print(&pg, 1);
    res->elapsed_ms = svc_mono_ms() - pg.t0;
    res->events_per_s = pg.eps;

    if (o->mode == RB_VERIFY) {
        st = progress_step(&p, &pg, &cur, held, sizeof held, &rewound, token, "verifying", e);
        if (st == ST_OK && rewound)
            goto stream;
        if (st == ST_OK)
            st = rb_verify(&p, res->replaced, gen, o, res, e);
        if (st != ST_OK)
            goto cleanup;
        if (res->unfolded > 0 && o->out != NULL)
            fprintf(o->out, "verify: %" PRId64 " event%s of the history could not be folded (parked): "
                    "the rebuilt generation is incomplete\n", res->unfolded, res->unfolded == 1 ? "" : "s");
        r = rds_command(p.rc, "EVAL %s 0 %ld", unbuild_lua, gen);
        if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
            st = pj_redis_failed(&p, r, e, "unname the verified generation");
            goto cleanup;
        }
        freeReplyObject(r);
        r = NULL;
        st = rm_drop_generation(p.rc, gen, NULL, e);
        if (st != ST_OK)
            goto cleanup;
        r = rds_command(p.rc, "HSET %s state done differing %ld compared %ld updated_at_ms %lld", RM_REBUILD_KEY,
                        res->differing, res->compared, (long long)pj_now_ms());
        goto cleanup;
    }
    /* the new generation's catch-up sweep starts where the rebuild ended: set by the switch
     * itself, and only if Redis still holds that cursor (else it lost our last steps) */
    tail_cursor_format(&cur, cur_s, sizeof cur_s);
    r = rds_command(p.rc, "EVAL %s 0 %ld %lld %s", rm_switch_script(), gen, (long long)pj_now_ms(), cur_s);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        st = pj_redis_failed(&p, r, e, "switch");
        goto cleanup;
    }
    if (r->integer == -2) {
        log_warn("rebuild of generation %ld: Redis no longer holds cursor %s at the switch: going over the rest again",
                 gen, cur_s);
        freeReplyObject(r);
        r = NULL;
        st = progress_step(&p, &pg, &cur, held, sizeof held, &rewound, token, "building", e);
        if (st != ST_OK)
            goto cleanup;
        goto stream;
    }
    if (r->integer < 0) {
        st = err_set(e, ST_CONFLICT, "generation %ld is no longer being built: not switched", gen);
        goto cleanup;
    }
    if (r->integer > 0) {
        long old = (long)r->integer, removed = 0;
        /* the generation two switches back: no command refers to it any more */
        if (rm_drop_generation(p.rc, old, &removed, e) != ST_OK)
            log_warn("drop generation %ld: %s", old, e->msg);
    }
    {
        /* a generation no name reaches any more (rm:current deleted or flushed before this
         * self-heal) would stay in Redis for good: nothing could roll back to or drop it */
        long nd = 0, nk = 0;
        struct err de;
        err_clear(&de);
        if (pj_gens_drop_unreachable(p.rc, &nd, &nk, &de) != ST_OK)
            log_warn("drop unreachable generations: %s", de.msg);
        else if (nd > 0)
            log_info("dropped %ld unreachable generation%s (%ld keys)", nd, nd == 1 ? "" : "s", nk);
    }
    if (o->auto_heal)
        log_info("self-heal: generation %ld is current (%" PRId64 " events, %.0f events/s)", gen, res->events,
                 res->events_per_s);
cleanup:
    freeReplyObject(r);
    if (leased)
        release_lease(&p, token);
    pj_items_free(items, n);
    rbr_release(&rd);
    for (int k = 0; k < nl - 1; k++)
        pj_release(&extra[k]);
    pj_release(&p);
    return st;
}

/* Both scripts take a generation's name away and, in the same step, say whether its keys may
 * go: {gen, 1} to drop, {gen, 0} to keep, {0, 0} when there was none. Deciding inside the
 * script means a switch or rollback between a read and the drop cannot hand us a generation
 * that has become current (or a rollback's target) meanwhile. */
static const char abort_lua[] =
    "local b = redis.call('GET', 'rm:building')\n"
    "local mode = redis.call('HGET', 'rm:rebuild', 'mode')\n"
    "redis.call('DEL', 'rm:building', 'rm:rebuild')\n"
    "if not b then return {0, 0} end\n"
    "if mode == 'rollback' or b == redis.call('GET', 'rm:current') or\n"
    "   b == redis.call('GET', 'rm:previous') then return {tonumber(b), 0} end\n"
    "return {tonumber(b), 1}\n";

static const char unprevious_lua[] =
    "local p = redis.call('GET', 'rm:previous')\n"
    "if not p then return {0, 0} end\n"
    "redis.call('DEL', 'rm:previous')\n"
    "if p == redis.call('GET', 'rm:current') or p == redis.call('GET', 'rm:building') then\n"
    "  return {tonumber(p), 0} end\n"
    "return {tonumber(p), 1}\n";

static status unname_and_drop(const struct cfg *c, const char *script, const char *what, long *gen,
                              long *removed, struct err *e)
{
    struct pj p;
    redisReply *r = NULL;
    status st;

    *gen = 0;
    *removed = 0;
    pj_init(&p, c);
    st = pj_redis(&p, e);
    if (st != ST_OK)
        goto cleanup;
    r = rds_command(p.rc, "EVAL %s 0", script);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
        st = pj_redis_failed(&p, r, e, "%s", what);
        goto cleanup;
    }
    *gen = (long)r->element[0]->integer;
    if (*gen > 0 && r->element[1]->integer == 1)
        st = rm_drop_generation(p.rc, *gen, removed, e);
cleanup:
    freeReplyObject(r);
    pj_release(&p);
    return st;
}

status rb_abort(const struct cfg *c, long *gen, long *removed, struct err *e)
{
    /* the live projector stops writing there at its next batch, a running rebuild at its next
     * step (its generation is gone) */
    return unname_and_drop(c, abort_lua, "abort", gen, removed, e);
}

status rb_drop_previous(const struct cfg *c, long *gen, long *removed, struct err *e)
{
    return unname_and_drop(c, unprevious_lua, "drop previous", gen, removed, e);
}
