/* Apply: the fold of one account's items onto what Redis holds, and the compare-and-set script
 * call that writes it (one read round trip and one write round trip per batch round). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "evparse.h"
#include "log.h"
#include "pass.h"
#include "rds.h"
#include "readmodel.h"

/* Why several workers on one consumer build the same read models as one:
 * - Every write is a compare-and-set on the account's applied version, done inside one Lua
 *   script (rm_apply_script): the version check, the list append, the doc and the checkpoint
 *   change together or not at all, so no interleaving of workers can tear an account.
 * - A worker folds from what Redis holds (doc at version v), never from its own memory, and
 *   only ever writes versions v+1..w contiguously: events it lacks are read from Postgres (gap
 *   repair), so the result for each version is the fold of the event store's history, whoever
 *   computes it. Two workers computing the same versions produce the same bytes.
 * - When another worker got there first the script writes nothing and returns the version it
 *   holds; this worker re-reads that account and re-folds (PJ_MAX_CAS_ROUNDS), and what it had
 *   already seen becomes a duplicate (stream_version <= applied): acked, no effect.
 * - A message is acked only after the script confirmed (or the event was already applied), so a
 *   crash at any point leaves the message to be redelivered and re-judged the same way. */

static void acct_reset_fold(struct acct *a)
{
    for (int i = 0; i < a->nent; i++)
        free(a->entries[i]);
    a->nent = 0;
    free(a->doc);
    a->doc = NULL;
    a->stop = STOP_NONE;
    a->new_version = 0;
    a->max_pos = 0;
    a->have_view = 0; /* a->view itself is kept: a cached account's fold starts from it */
}

void ap_acct_release(struct acct *a)
{
    acct_reset_fold(a);
    pj_items_free(a->gap, a->ngap);
    a->gap = NULL;
    a->ngap = 0;
    free(a->entries);
    free(a->cur_doc);
    a->entries = NULL;
    a->cur_doc = NULL;
}

/* ---- fold ---- */

static status push_entry(struct acct *a, const struct statement_entry *en, int64_t position,
                         struct err *e)
{
    char *s;

    if (a->nent == a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        char **v = realloc(a->entries, (size_t)cap * sizeof *v);
        if (v == NULL)
            return err_set(e, ST_INTERNAL, "out of memory");
        a->entries = v;
        a->cap = cap;
    }
    s = statement_entry_encode(en); /* the stored form: the read API renders the JSON */
    if (s == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    a->entries[a->nent++] = s;
    if (position > a->max_pos)
        a->max_pos = position;
    return ST_OK;
}

/* Applies one event to view; poison parks it (the item's disp becomes PJ_TERM when it is a
 * message) and stops the account's fold. */
/* A message that cannot be folded is judged by the event store, the truth: when the store holds
 * another event (or none) at that version the message is a stray, dropped and counted, never a
 * reason to stall; otherwise the store's own row is folded in its place (parked if that is
 * poison too). Only an event that is in the store and cannot be folded parks. */
static status fold_one(struct pj *p, struct acct *a, struct account_view *view, struct pj_item *it,
                       int *stopped, struct err *e);

static status judge_by_store(struct pj *p, struct acct *a, struct account_view *view, struct pj_item *it,
                             int *stopped, struct err *e)
{
    struct pj_item *row = NULL;
    int nrow = 0;
    status st = pj_read_stream(p, a->id, it->ev.stream_version, it->ev.stream_version, &row, &nrow, e);

    if (st != ST_OK)
        return st;
    if (nrow == 0 || strcmp(row[0].ev.event_id, it->ev.event_id) != 0) {
        log_warn("stray message seq=%" PRIu64 " event=%s account=%s version=%" PRId64
                 ": not the event store's event at that version (%s): dropped",
                 it->seq, it->ev.event_id[0] ? it->ev.event_id : "-", a->id, it->ev.stream_version,
                 nrow == 0 ? "no event there" : row[0].ev.event_id);
        it->stray = 1;
        it->disp = PJ_TERM;
        p->strays++;
    } else {
        st = fold_one(p, a, view, &row[0], stopped, e);
        if (st == ST_OK && *stopped)
            it->disp = PJ_TERM; /* parked as the store's row */
    }
    pj_items_free(row, nrow);
    return st;
}

static status fold_one(struct pj *p, struct acct *a, struct account_view *view, struct pj_item *it,
                       int *stopped, struct err *e)
{
    struct statement_entry en;
    struct err fe;
    int discarded = 0;
    status st;

    *stopped = 0;
    if (it->seq != 0 && it->ev.stream_id[0] != '\0' && it->ev.stream_version > 0) {
        /* a message: poison only if the store says so */
        if (!it->ok)
            return judge_by_store(p, a, view, it, stopped, e);
        st = proj_evolve(view, &it->ev, &en, &fe);
        if (st == ST_OK)
            return push_entry(a, &en, it->ev.position, e);
        if (st != ST_INVALID)
            return err_set(e, st, "fold '%s': %s", it->ev.event_id, fe.msg);
        return judge_by_store(p, a, view, it, stopped, e);
    }
    if (!it->ok) {
        fe = it->why;
    } else {
        st = proj_evolve(view, &it->ev, &en, &fe);
        if (st == ST_OK)
            return push_entry(a, &en, it->ev.position, e);
        if (st != ST_INVALID)
            return err_set(e, st, "fold '%s': %s", it->ev.event_id, fe.msg);
    }
    /* an operator gave up on it (discard-parked): every fold reads the same no-op */
    st = pj_fold_discarded(p, view, it, &en, &discarded, e);
    if (st != ST_OK || discarded)
        return st != ST_OK ? st : push_entry(a, &en, it->ev.position, e);
    st = pj_park(p, it, fe.msg, e);
    if (st != ST_OK)
        return st;
    it->disp = PJ_TERM;
    a->stop = STOP_POISON;
    *stopped = 1;
    return ST_OK;
}

status ap_fold_account(struct pj *p, struct acct *a, unsigned flags, struct err *e)
{
    struct account_view view;
    struct pj_item *gap = NULL;
    int ngap = 0, stopped = 0, owned = 0;
    status st = ST_OK;
    struct err fe = {0};

    acct_reset_fold(a);
    a->new_version = a->applied;
    if (a->stalled && !(flags & PJ_IGNORE_STALLED)) {
        a->stop = STOP_POISON; /* everything acked: it is in Postgres and replay-parked catches up */
        return ST_OK;
    }
    if (a->cached) {
        view = a->view; /* what this process wrote at a->applied */
    } else if (a->cur_doc != NULL) {
        if (evparse_account(&view, a->cur_doc, strlen(a->cur_doc), &fe) != ST_OK ||
            view.version != a->applied || strcmp(view.account_id, a->id) != 0) {
            if (fe.msg[0] == '\0')
                err_set(&fe, ST_INVALID, "document of version %" PRId64 " or account '%s'",
                        view.version, view.account_id);
            log_error("account=%s read model document unreadable at version %" PRId64 ": %s", a->id,
                      a->applied, fe.msg);
            a->stop = STOP_POISON;
            return pj_stall(p, a->id, a->n > 0 ? a->it[0]->ev.event_id : "", "read model document unreadable", e);
        }
    } else {
        account_view_init(&view, a->id);
    }
    for (int i = 0; i < a->n && !stopped; i++) {
        struct pj_item *it = a->it[i];
        int64_t u = it->ev.stream_version;

        if (it->stray)
            continue; /* not an event of this account: as if it had never come */

        if (u <= view.version)
            continue;
        if (it->disp == PJ_TERM) {
            a->stop = STOP_POISON; /* parked before the read: nothing after it may be applied */
            break;
        }
        if (u > view.version + 1) {
            /* a gap: the missing versions are committed (u is), so Postgres has them. Read and
             * folded a page at a time (RP_GAP_PAGE): the rest waits for the next pass. */
            int64_t hi = u - 1 - view.version > RP_GAP_PAGE ? view.version + RP_GAP_PAGE : u - 1;
            st = rp_gap_events(p, a, view.version + 1, hi, &gap, &ngap, &owned, e);
            if (st != ST_OK)
                goto cleanup;
            for (int k = 0; k < ngap && !stopped; k++) {
                if (gap[k].ev.stream_version != view.version + 1)
                    break;
                st = fold_one(p, a, &view, &gap[k], &stopped, e);
                if (st != ST_OK)
                    goto cleanup;
                if (!stopped)
                    p->gap_events++;
            }
            if (owned)
                pj_items_free(gap, ngap);
            gap = NULL;
            ngap = 0;
            if (stopped)
                break;
            if (hi < u - 1 && view.version == hi) {
                a->stop = STOP_MISSING; /* a page of the gap applied; the item waits for the rest */
                break;
            }
            if (view.version != u - 1) {
                if (it->seq == 0) {
                    /* read from the events table: its predecessors committed no later than it
                     * (one writer per account), so Postgres lacks them for good (a manual
                     * repair). Waiting would hold the sweep cursor and every rebuild back
                     * for everyone: the event is parked and the account stalled instead. */
                    char why[160];
                    snprintf(why, sizeof why,
                             "versions %" PRId64 "..%" PRId64 " are missing from the event store",
                             view.version + 1, u - 1);
                    log_warn("account=%s has a hole in its history: %s", a->id, why);
                    st = pj_park(p, it, why, e);
                    if (st != ST_OK)
                        goto cleanup;
                    it->disp = PJ_TERM;
                    p->holes++;
                    a->stop = STOP_POISON;
                    break;
                }
                a->stop = STOP_MISSING;
                break;
            }
        }
        st = fold_one(p, a, &view, it, &stopped, e);
        if (st != ST_OK)
            goto cleanup;
    }
    a->new_version = view.version;
    if (a->stop != STOP_POISON) {
        a->view = view;
        a->have_view = 1;
    }
    if (a->nent > 0) {
        a->doc = evparse_account_json(&view);
        if (a->doc == NULL)
            st = err_set(e, ST_INTERNAL, "out of memory");
    }
cleanup:
    if (owned)
        pj_items_free(gap, ngap);
    return st;
}

/* Final dispositions once the account's new version is durable in Redis. */
void ap_settle(struct pj *p, struct acct *a)
{
    for (int i = 0; i < a->n; i++) {
        struct pj_item *it = a->it[i];
        if (it->disp == PJ_TERM)
            continue;
        if (it->ev.stream_version <= a->applied) {
            it->disp = PJ_ACK;
            p->duplicates++;
        } else if (it->ev.stream_version <= a->new_version || a->stop == STOP_POISON) {
            it->disp = PJ_ACK;
        } else {
            it->disp = PJ_NAK;
        }
    }
    a->need_read = 0;
}


static char *reply_dup(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING ? strndup(r->str, r->len) : NULL;
}

/* One round trip: every pending account's v, doc and stall flag in generation gen. */
status ap_read_accounts(struct pj *p, long gen, struct acct *accts, int na, struct err *e)
{
    int nc = 0, k = 0, pending = 0;
    status st = ST_OK;
    int *argc = NULL;
    const char *(*argv)[4] = NULL;
    const char *const **cmds = NULL;
    redisReply **rep = NULL;
    char (*keys)[RM_KEY_SIZE] = NULL, kbuf[64];
    const char *stalled_key = pj_stalled_key(p, kbuf, sizeof kbuf);

    for (int i = 0; i < na; i++)
        pending += accts[i].need_read && !accts[i].cached;
    if (pending == 0)
        return ST_OK;
    nc = 2 * pending;
    argc = calloc((size_t)nc, sizeof *argc);
    argv = calloc((size_t)nc, sizeof *argv);
    cmds = calloc((size_t)nc, sizeof *cmds);
    rep = calloc((size_t)nc, sizeof *rep);
    keys = calloc((size_t)pending + 1, sizeof *keys);
    if (argc == NULL || argv == NULL || cmds == NULL || rep == NULL || keys == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0, j = 0; i < na; i++) {
        if (!accts[i].need_read || accts[i].cached)
            continue;
        j++;
        argc[k] = 4;
        argv[k][0] = "HMGET";
        argv[k][1] = keys[j]; /* filled below once the generation is known */
        argv[k][2] = "v";
        argv[k][3] = "doc";
        k++;
        argc[k] = 3;
        argv[k][0] = "HGET";
        argv[k][1] = stalled_key;
        argv[k][2] = accts[i].id;
        k++;
    }
    for (int i = 0; i < nc; i++)
        cmds[i] = argv[i];
    for (int i = 0, j = 0; i < na; i++)
        if (accts[i].need_read && !accts[i].cached)
            rm_key_account(keys[++j], RM_KEY_SIZE, gen, accts[i].id);
    st = rds_pipeline(p->rc, nc, argc, cmds, NULL, rep, e);
    if (st != ST_OK) {
        pj_drop_redis(p);
        goto cleanup;
    }
    k = 0;
    for (int i = 0; i < na; i++) {
        struct acct *a = &accts[i];
        redisReply *h, *s;
        if (!a->need_read || a->cached)
            continue;
        h = rep[k++];
        s = rep[k++];
        if (h->type != REDIS_REPLY_ARRAY || h->elements != 2 || s->type == REDIS_REPLY_ERROR) {
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis read of '%s': %s", a->id,
                          h->type == REDIS_REPLY_ERROR ? h->str : s->type == REDIS_REPLY_ERROR ? s->str : "unexpected reply");
            goto cleanup;
        }
        free(a->cur_doc);
        a->cur_doc = NULL;
        a->applied = h->element[0]->type == REDIS_REPLY_STRING ? strtoll(h->element[0]->str, NULL, 10) : 0;
        if (h->element[1]->type == REDIS_REPLY_STRING) {
            a->cur_doc = reply_dup(h->element[1]);
            if (a->cur_doc == NULL) {
                st = err_set(e, ST_INTERNAL, "out of memory");
                goto cleanup;
            }
        }
        a->stalled = s->type == REDIS_REPLY_STRING;
    }
cleanup:
    if (rep != NULL)
        rds_replies_free(rep, nc);
    free(argc);
    free(argv);
    free(cmds);
    free(rep);
    free(keys);
    return st;
}

/* After this call every item of the batch would be settled, if every account in it applies:
 * only then may the partition's seq move past the batch. */
static int batch_settles(const struct acct *accts, int na)
{
    for (int i = 0; i < na; i++) {
        const struct acct *a = &accts[i];
        if (a->need_read && a->nent > 0) {
            if (a->stop == STOP_MISSING)
                return 0;
            continue;
        }
        for (int k = 0; k < a->n; k++)
            if (a->it[k]->disp != PJ_ACK && a->it[k]->disp != PJ_TERM)
                return 0;
    }
    return 1;
}

/* An account the script refused with an error text: stalled (nothing after it is applied). */
static status refuse(struct pj *p, struct acct *a, const redisReply *why, struct err *e)
{
    const char *text = why->type == REDIS_REPLY_STRING || why->type == REDIS_REPLY_ERROR ? why->str
                                                                                         : "unexpected reply";
    status st;

    log_error("account=%s cannot be applied: %s", a->id, text);
    st = pj_stall(p, a->id, a->it[0]->ev.event_id, text, e);
    if (st != ST_OK)
        return st;
    a->stop = STOP_POISON;
    a->new_version = a->applied;
    ap_settle(p, a);
    return ST_OK;
}

/* One EVALSHA for every account of accts[0..na) that has something to write, fenced by the
 * partition owner's epoch when p->fence is set; the seq moves only when record_seq is set.
 * *all is cleared when an account of the call was not applied. */
static status apply_call(struct pj *p, long gen, struct acct *accts, int na, int record_seq, int publish,
                         int *reload, int *gone, int *all, struct err *e)
{
    int nc = 0, argc, *which = NULL, cached = 0;
    char kbuf[64];
    struct rm_apply_opts opts = {0};
    status st = ST_OK;
    const char **argv = NULL;
    size_t *lens = NULL;
    struct rm_apply_buf buf;
    struct rm_apply *ap = NULL;
    struct rm_fence fence, *f = NULL;
    int64_t *held = NULL;
    redisReply *rep = NULL;

    *reload = 0;
    memset(&buf, 0, sizeof buf);
    for (int i = 0; i < na; i++)
        nc += accts[i].need_read && accts[i].nent > 0;
    if (p->fence != NULL) {
        fence = *p->fence;
        if (!record_seq)
            fence.new_seq = 0;
        f = &fence;
    }
    if (nc == 0 && (f == NULL || fence.new_seq == 0 || fence.new_seq <= p->fence->expect_seq))
        return ST_OK;
    which = calloc((size_t)nc + 1, sizeof *which);
    ap = calloc((size_t)nc + 1, sizeof *ap);
    held = calloc((size_t)nc + 1, sizeof *held);
    buf.acct = calloc((size_t)nc + 1, sizeof *buf.acct);
    if (which == NULL || ap == NULL || held == NULL || buf.acct == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0, j = 0; i < na; i++) {
        struct acct *a = &accts[i];
        if (!a->need_read || a->nent == 0)
            continue;
        which[j] = i;
        ap[j++] = (struct rm_apply){a->id, a->applied, a->new_version, a->doc, a->max_pos, a->nent,
                                    a->entries};
        cached |= a->cached;
    }
    /* the live path: generations checked in the call, the notification sent by it, and the
     * stall flag of an account folded from memory (not read this round) checked there */
    opts.gens = p->gens_check[0] != '\0' ? p->gens_check : NULL;
    opts.publish = publish;
    opts.stall_key = cached ? pj_stalled_key(p, kbuf, sizeof kbuf) : NULL;
    argc = rm_apply_argc(ap, nc);
    argv = calloc((size_t)argc, sizeof *argv);
    lens = calloc((size_t)argc, sizeof *lens);
    if (argv == NULL || lens == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    if (rm_apply_argv(ap, nc, f, &opts, gen, pj_now_ms(), p->sha, &buf, argv, lens) != argc) {
        st = err_set(e, ST_INTERNAL, "inconsistent apply of %d accounts", nc);
        goto cleanup;
    }
    rep = rds_command_argv(p->rc, argc, argv, lens);
    if (rep == NULL) {
        st = pj_redis_failed(p, rep, e, "apply %d accounts", nc);
        goto cleanup;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        if (strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            *reload = 1; /* the server lost its scripts (restart, SCRIPT FLUSH) */
        } else if (strncmp(rep->str, "RMGENS", 6) == 0) {
            /* renamed since the batch began (a rebuild opened or switched): nothing was written;
             * the caller reads the names again and redoes the batch */
            p->gens_changed = 1;
            *gone = 1;
            for (int j = 0; j < nc; j++)
                accts[which[j]].need_read = 0;
        } else if (strncmp(rep->str, "RMNOGEN", 7) == 0) {
            /* the generation was dropped or flushed under us: nothing of this pass counts */
            *gone = 1;
            for (int j = 0; j < nc; j++)
                accts[which[j]].need_read = 0;
        } else {
            st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "apply %d accounts: %s", nc,
                          rep->str);
        }
        goto cleanup;
    }
    switch (rm_apply_reply(rep, f, nc, publish, held)) {
    case RM_FENCED:
        p->fenced = 1;
        st = err_set(e, ST_CONFLICT, "partition %d: epoch %" PRIu64 " superseded by %" PRIu64,
                     fence.part, fence.epoch, fence.held_epoch);
        goto cleanup;
    case RM_REWOUND:
        p->rewound = 1;
        p->fence->held_seq = fence.held_seq;
        p->fence->held_epoch = fence.held_epoch;
        st = err_set(e, ST_CONFLICT, "partition %d: the store holds seq %" PRIu64 " epoch %" PRIu64
                     ", expected seq %" PRIu64 " epoch %" PRIu64 ": it went back in time",
                     fence.part, fence.held_seq, fence.held_epoch, fence.expect_seq, fence.epoch);
        goto cleanup;
    case RM_FAILED:
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "apply %d accounts: unexpected reply",
                      nc);
        goto cleanup;
    case RM_APPLIED:
        break;
    }
    if (f != NULL && fence.held_seq > p->fence->expect_seq)
        p->fence->expect_seq = fence.held_seq; /* recorded: the next batch expects at least this */
    if (publish && rep->element[3 + nc]->type != REDIS_REPLY_INTEGER) {
        /* the writes are durable; the read API's caches learn of the loss another way */
        const redisReply *pr = rep->element[3 + nc];
        pj_notify_lost(p, "refused", pr->type == REDIS_REPLY_STRING || pr->type == REDIS_REPLY_ERROR
                                         ? pr->str : "unexpected reply");
    }
    for (int j = 0; j < nc; j++) {
        struct acct *a = &accts[which[j]];
        if (held[j] != -1)
            *all = 0;
        if (held[j] == -1) {
            p->applied += a->nent;
            ap_settle(p, a);
        } else if (held[j] >= 0) {
            /* another worker (or a rebuild, or the sweep) moved it: re-read and re-fold */
            p->conflicts++;
            log_debug("account=%s holds version %" PRId64 ", expected %" PRId64 ": re-reading", a->id,
                      held[j], a->applied);
        } else {
            st = refuse(p, a, rep->element[3 + j], e);
            if (st != ST_OK)
                goto cleanup;
        }
    }
cleanup:
    freeReplyObject(rep);
    free(which);
    free(ap);
    free(held);
    free(buf.acct);
    free(argv);
    free(lens);
    return st;
}

/* Bounds of one script call: Redis runs a script alone, so a call must stay short however
 * large the batch (a rebuild passes thousands of accounts). */
#define APPLY_MAX_ACCOUNTS 64
#define APPLY_MAX_ENTRIES 2000

status ap_apply_accounts(struct pj *p, long gen, struct acct *accts, int na, int publish, int *reload,
                         int *gone, struct err *e)
{
    int settles = p->fence != NULL && p->fence_final && batch_settles(accts, na), ok = 1;

    *reload = 0;
    for (int lo = 0;;) {
        int hi = lo, count = 0, entries = 0, last, all = 1;
        status st;
        while (hi < na && count < APPLY_MAX_ACCOUNTS && entries < APPLY_MAX_ENTRIES) {
            if (accts[hi].need_read && accts[hi].nent > 0) {
                count++;
                entries += accts[hi].nent;
            }
            hi++;
        }
        last = hi >= na;
        /* the seq goes with the last call, and only when every earlier one applied everything */
        st = apply_call(p, gen, accts + lo, hi - lo, settles && ok && last, publish, reload, gone, &all, e);
        if (st != ST_OK || *reload || *gone || last)
            return st;
        ok &= all;
        lo = hi;
    }
}
