/* Projection of event batches into Redis: one read round trip, fold in C, one compare-and-set
 * round trip, gap repair from Postgres, poison parking, and the catch-up sweep. */
#include "engine.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "account.h"
#include "db.h"
#include "log.h"
#include "rds.h"
#include "readmodel.h"
#include "tail.h"
#include "uuid.h"

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

enum acct_stop { STOP_NONE = 0, STOP_MISSING, STOP_POISON };

struct acct {
    const char *id;
    struct pj_item **it; /* this account's items, sorted by version */
    int n;
    int need_read;
    int tries;
    /* read */
    int64_t applied;
    int stalled;
    char *cur_doc; /* doc held by Redis (malloc'd) */
    /* fold */
    enum acct_stop stop;
    int64_t new_version;
    int64_t max_pos;
    char *doc;
    char **entries;
    int nent, cap;
    /* gap events prefetched for this round (one query for the whole batch), by version */
    struct pj_item *gap;
    int ngap;
};

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
}

static void acct_release(struct acct *a)
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

void pj_init(struct pj *p, const struct cfg *c)
{
    memset(p, 0, sizeof *p);
    p->cfg = c;
}

void pj_release(struct pj *p)
{
    pj_drop_redis(p);
    pj_drop_pg(p);
}

void pj_drop_redis(struct pj *p)
{
    rds_free(&p->rc);
    p->sha[0] = '\0';
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
                  r == NULL ? (p->rc != NULL ? p->rc->errstr : "not connected")
                  : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r == NULL)
        pj_drop_redis(p); /* the connection is gone or out of step */
    return st;
}

static status load_script(struct pj *p, struct err *e)
{
    redisReply *r = redisCommand(p->rc, "SCRIPT LOAD %s", rm_apply_script());
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
        r = redisCommand(p->rc, "PUBLISH %s *", RM_APPLIED_CHANNEL);
        freeReplyObject(r);
    }
    /* no generation is created here: a current generation only ever comes from a rebuild's
     * switch, so the read API never serves an empty one while the event store has events */
    if (p->sha[0] == '\0')
        return load_script(p, e);
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

/* ---- Postgres reads, one row at a time so one poison row does not hide its neighbours ---- */

#define ROW_RAW_COL 9 /* row_to_json(e) after DB_EVENT_COLUMNS */

static void item_from_row(struct pj_item *it, const PGresult *res, int row)
{
    memset(it, 0, sizeof *it);
    it->owned_payload = strdup(PQgetvalue(res, row, ROW_RAW_COL));
    it->payload = it->owned_payload;
    it->payload_len = it->owned_payload != NULL ? strlen(it->owned_payload) : 0;
    if (db_event_from_row(&it->ev, res, row, 0, &it->why) == ST_OK) {
        it->ok = 1;
        return;
    }
    /* keep the ids the row does have, so the park record and the stall name them */
    memset(&it->ev, 0, sizeof it->ev);
    it->ev.position = strtoll(PQgetvalue(res, row, 0), NULL, 10);
    (void)uuid_parse(PQgetvalue(res, row, 1), (size_t)PQgetlength(res, row, 1), it->ev.event_id);
    (void)uuid_parse(PQgetvalue(res, row, 2), (size_t)PQgetlength(res, row, 2), it->ev.stream_id);
    it->ev.stream_version = strtoll(PQgetvalue(res, row, 3), NULL, 10);
}

void pj_items_free(struct pj_item *items, int n)
{
    if (items == NULL)
        return;
    for (int i = 0; i < n; i++)
        pj_item_release(&items[i]);
    free(items);
}

static status rows_to_items(const PGresult *res, struct pj_item **out, int *n, struct err *e)
{
    int rows = PQntuples(res);

    *out = NULL;
    *n = 0;
    if (rows == 0)
        return ST_OK;
    *out = calloc((size_t)rows, sizeof **out);
    if (*out == NULL)
        return err_set(e, ST_INTERNAL, "out of memory for %d events", rows);
    for (int i = 0; i < rows; i++)
        item_from_row(&(*out)[i], res, i);
    *n = rows;
    return ST_OK;
}

status pj_read_stream(struct pj *p, const char *id, int64_t from, int64_t to, struct pj_item **out,
                      int *n, struct err *e)
{
    char from_s[24], to_s[24], msg[200];
    const char *params[3] = {id, from_s, to_s};
    PGresult *res = NULL;
    status st;

    *out = NULL;
    *n = 0;
    st = pj_pg(p, e);
    if (st != ST_OK)
        return st;
    snprintf(from_s, sizeof from_s, "%" PRId64, from);
    snprintf(to_s, sizeof to_s, "%" PRId64, to);
    res = PQexecParams(p->pg,
                       "SELECT " DB_EVENT_COLUMNS ", row_to_json(e)::text FROM events e "
                       "WHERE stream_id = $1::uuid AND stream_version BETWEEN $2::bigint AND $3::bigint "
                       "ORDER BY stream_version",
                       3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "read stream '%s' %s..%s: %s", id, from_s,
                      to_s, db_error(msg, sizeof msg, p->pg, res));
        if (db_broken(p->pg))
            pj_drop_pg(p);
        goto cleanup;
    }
    st = rows_to_items(res, out, n, e);
cleanup:
    PQclear(res);
    return st;
}

/* The missing versions of a's batch, given what Redis holds: [applied+1, first item - 1] and
 * every hole between its items, until the first item already parked. Calls add(lo, hi). */
static void gap_ranges(const struct acct *a, void (*add)(void *ctx, const char *id, int64_t lo, int64_t hi),
                       void *ctx)
{
    int64_t expected = a->applied + 1;

    for (int i = 0; i < a->n; i++) {
        int64_t u = a->it[i]->ev.stream_version;
        if (a->it[i]->disp == PJ_TERM)
            break;
        if (u < expected)
            continue;
        if (u > expected)
            add(ctx, a->id, expected, u - 1);
        expected = u + 1;
    }
}

struct gap_query {
    char *ids, *los, *his; /* Postgres array literals being built */
    size_t len[3], cap[3];
    int count, failed;
};

static void gq_put(struct gap_query *q, int which, const char *text)
{
    char **buf = which == 0 ? &q->ids : which == 1 ? &q->los : &q->his;
    size_t n = strlen(text) + 2;

    if (q->failed)
        return;
    if (q->len[which] + n + 2 > q->cap[which]) {
        size_t cap = (q->cap[which] + n + 2) * 2;
        char *nb = realloc(*buf, cap);
        if (nb == NULL) {
            q->failed = 1;
            return;
        }
        *buf = nb;
        q->cap[which] = cap;
    }
    q->len[which] += (size_t)sprintf(*buf + q->len[which], "%s%s", q->count > 0 ? "," : "{", text);
}

static void gq_add(void *ctx, const char *id, int64_t lo, int64_t hi)
{
    struct gap_query *q = ctx;
    char n[24];

    gq_put(q, 0, id);
    snprintf(n, sizeof n, "%" PRId64, lo);
    gq_put(q, 1, n);
    snprintf(n, sizeof n, "%" PRId64, hi);
    gq_put(q, 2, n);
    q->count++;
}

/* Reads every gap of the batch's accounts in ONE query (instead of one per account and hole)
 * and hands each account its rows. A gap the pool does not cover is still read on its own in
 * the fold (gap_events), so this is only ever an optimisation. */
static status prefetch_gaps(struct pj *p, struct acct *accts, int na, unsigned flags, struct err *e)
{
    struct gap_query q;
    const char *params[3];
    struct pj_item *rows = NULL;
    PGresult *res = NULL;
    char msg[200];
    int nrows = 0, a = 0;
    status st = ST_OK;

    memset(&q, 0, sizeof q);
    for (int i = 0; i < na; i++) {
        pj_items_free(accts[i].gap, accts[i].ngap);
        accts[i].gap = NULL;
        accts[i].ngap = 0;
        if (accts[i].need_read && (!accts[i].stalled || (flags & PJ_IGNORE_STALLED)))
            gap_ranges(&accts[i], gq_add, &q);
    }
    if (q.count == 0 || q.failed)
        goto cleanup;
    for (int k = 0; k < 3; k++)
        strcat(k == 0 ? q.ids : k == 1 ? q.los : q.his, "}");
    st = pj_pg(p, e);
    if (st != ST_OK)
        goto cleanup;
    params[0] = q.ids;
    params[1] = q.los;
    params[2] = q.his;
    res = PQexecParams(p->pg,
                       "SELECT " DB_EVENT_COLUMNS ", row_to_json(e)::text FROM events e "
                       "JOIN unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS r(gap_id, lo, hi) "
                       "ON e.stream_id = r.gap_id AND e.stream_version BETWEEN r.lo AND r.hi "
                       "ORDER BY e.stream_id, e.stream_version",
                       3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "read %d gaps: %s", q.count,
                      db_error(msg, sizeof msg, p->pg, res));
        if (db_broken(p->pg))
            pj_drop_pg(p);
        goto cleanup;
    }
    st = rows_to_items(res, &rows, &nrows, e);
    if (st != ST_OK)
        goto cleanup;
    /* rows and accounts are both in stream_id order: hand out contiguous runs */
    for (int r = 0; r < nrows;) {
        int end = r + 1;
        while (end < nrows && strcmp(rows[end].ev.stream_id, rows[r].ev.stream_id) == 0)
            end++;
        while (a < na && strcmp(accts[a].id, rows[r].ev.stream_id) < 0)
            a++;
        if (a < na && strcmp(accts[a].id, rows[r].ev.stream_id) == 0 && rows[r].ev.stream_id[0] != '\0') {
            accts[a].gap = calloc((size_t)(end - r), sizeof *accts[a].gap);
            if (accts[a].gap != NULL) {
                memcpy(accts[a].gap, &rows[r], (size_t)(end - r) * sizeof *rows);
                memset(&rows[r], 0, (size_t)(end - r) * sizeof *rows); /* moved */
                accts[a].ngap = end - r;
            }
        }
        r = end;
    }
cleanup:
    pj_items_free(rows, nrows);
    PQclear(res);
    free(q.ids);
    free(q.los);
    free(q.his);
    return st;
}

/* Versions from..to of a's stream: from the prefetched pool when it holds them all (*owned 0),
 * else read now (*owned 1, caller frees). */
static status gap_events(struct pj *p, struct acct *a, int64_t from, int64_t to,
                         struct pj_item **out, int *n, int *owned, struct err *e)
{
    for (int k = 0; k < a->ngap; k++) {
        if (a->gap[k].ev.stream_version != from)
            continue;
        if (k + (to - from) < a->ngap && a->gap[k + (to - from)].ev.stream_version == to) {
            *out = &a->gap[k];
            *n = (int)(to - from + 1);
            *owned = 0;
            return ST_OK;
        }
        break;
    }
    *owned = 1;
    return pj_read_stream(p, a->id, from, to, out, n, e);
}

/* ---- parking ---- */

static status stall(struct pj *p, const char *account_id, const char *event_id, const char *reason,
                    struct err *e)
{
    char now[40];
    char *rec = NULL;
    redisReply *r = NULL;
    status st = ST_OK;

    pj_now_iso(now, sizeof now);
    rec = pj_stall_record(event_id, reason, now);
    if (rec == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    /* NX: the first stuck event is the one an operator must look at; later ones follow it */
    r = redisCommand(p->rc, "HSETNX %s %s %s", RM_STALLED_KEY, account_id, rec);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        st = pj_redis_failed(p, r, e, "stall '%s'", account_id);
    freeReplyObject(r);
    free(rec);
    return st;
}

status pj_park(struct pj *p, struct pj_item *it, const char *reason, struct err *e)
{
    char now[40];
    char *rec = NULL;
    redisReply *r = NULL;
    status st = ST_OK;

    if (p->rc == NULL)
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: not connected");
    if (it->ev.event_id[0] == '\0')
        uuid_generate(it->ev.event_id); /* nothing to key it by: the record carries the sequence */
    pj_now_iso(now, sizeof now);
    rec = pj_park_record(&it->ev, reason, now, it->payload, it->payload_len, it->seq);
    if (rec == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    r = redisCommand(p->rc, "HSET %s %s %s", RM_PARKED_KEY, it->ev.event_id, rec);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        st = pj_redis_failed(p, r, e, "park '%s'", it->ev.event_id);
        goto cleanup;
    }
    log_warn("parked poison event event=%s account=%s version=%" PRId64 " seq=%" PRIu64 ": %s",
             it->ev.event_id, it->ev.stream_id[0] ? it->ev.stream_id : "-", it->ev.stream_version,
             it->seq, reason);
    p->parked++;
    if (it->ev.stream_id[0] != '\0')
        st = stall(p, it->ev.stream_id, it->ev.event_id, reason, e);
cleanup:
    freeReplyObject(r);
    free(rec);
    return st;
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
    s = statement_entry_to_json(en);
    if (s == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    a->entries[a->nent++] = s;
    if (position > a->max_pos)
        a->max_pos = position;
    return ST_OK;
}

/* Applies one event to view; poison parks it (the item's disp becomes PJ_TERM when it is a
 * message) and stops the account's fold. */
static status fold_one(struct pj *p, struct acct *a, struct account_view *view, struct pj_item *it,
                       int *stopped, struct err *e)
{
    struct statement_entry en;
    struct err fe;
    status st;

    *stopped = 0;
    if (!it->ok) {
        fe = it->why;
    } else {
        st = proj_evolve(view, &it->ev, &en, &fe);
        if (st == ST_OK)
            return push_entry(a, &en, it->ev.position, e);
        if (st != ST_INVALID)
            return err_set(e, st, "fold '%s': %s", it->ev.event_id, fe.msg);
    }
    st = pj_park(p, it, fe.msg, e);
    if (st != ST_OK)
        return st;
    it->disp = PJ_TERM;
    a->stop = STOP_POISON;
    *stopped = 1;
    return ST_OK;
}

static status fold_account(struct pj *p, struct acct *a, unsigned flags, struct err *e)
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
    if (a->cur_doc != NULL) {
        if (account_view_from_json(&view, a->cur_doc, strlen(a->cur_doc), &fe) != ST_OK ||
            view.version != a->applied || strcmp(view.account_id, a->id) != 0) {
            if (fe.msg[0] == '\0')
                err_set(&fe, ST_INVALID, "document of version %" PRId64 " or account '%s'",
                        view.version, view.account_id);
            log_error("account=%s read model document unreadable at version %" PRId64 ": %s", a->id,
                      a->applied, fe.msg);
            a->stop = STOP_POISON;
            return stall(p, a->id, a->n > 0 ? a->it[0]->ev.event_id : "", "read model document unreadable", e);
        }
    } else {
        account_view_init(&view, a->id);
    }
    for (int i = 0; i < a->n && !stopped; i++) {
        struct pj_item *it = a->it[i];
        int64_t u = it->ev.stream_version;

        if (u <= view.version)
            continue;
        if (it->disp == PJ_TERM) {
            a->stop = STOP_POISON; /* parked before the read: nothing after it may be applied */
            break;
        }
        if (u > view.version + 1) {
            /* a gap: the missing versions are committed (u is), so Postgres has them */
            st = gap_events(p, a, view.version + 1, u - 1, &gap, &ngap, &owned, e);
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
            if (view.version != u - 1) {
                a->stop = STOP_MISSING;
                break;
            }
        }
        st = fold_one(p, a, &view, it, &stopped, e);
        if (st != ST_OK)
            goto cleanup;
    }
    a->new_version = view.version;
    if (a->nent > 0) {
        a->doc = account_view_to_json(&view);
        if (a->doc == NULL)
            st = err_set(e, ST_INTERNAL, "out of memory");
    }
cleanup:
    if (owned)
        pj_items_free(gap, ngap);
    return st;
}

/* Final dispositions once the account's new version is durable in Redis. */
static void settle(struct pj *p, struct acct *a)
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
static status read_accounts(struct pj *p, long gen, struct acct *accts, int na, struct err *e)
{
    int nc = 0, k = 0, pending = 0;
    status st = ST_OK;
    int *argc = NULL;
    const char *(*argv)[4] = NULL;
    const char *const **cmds = NULL;
    redisReply **rep = NULL;
    char (*keys)[RM_KEY_SIZE] = NULL;

    for (int i = 0; i < na; i++)
        pending += accts[i].need_read;
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
        if (!accts[i].need_read)
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
        argv[k][1] = RM_STALLED_KEY;
        argv[k][2] = accts[i].id;
        k++;
    }
    for (int i = 0; i < nc; i++)
        cmds[i] = argv[i];
    for (int i = 0, j = 0; i < na; i++)
        if (accts[i].need_read)
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
        if (!a->need_read)
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

/* One round trip: an EVALSHA per account that has something to write. */
static status apply_accounts(struct pj *p, long gen, struct acct *accts, int na, int *reload,
                             int *gone, struct err *e)
{
    int nc = 0;
    status st = ST_OK;
    int64_t now = pj_now_ms();
    int *argc = NULL, *which = NULL;
    const char ***argv = NULL;
    size_t **lens = NULL;
    struct rm_apply_buf *bufs = NULL;
    struct rm_apply *ap = NULL;
    redisReply **rep = NULL;

    *reload = 0;
    for (int i = 0; i < na; i++)
        nc += accts[i].need_read && accts[i].nent > 0;
    if (nc == 0)
        return ST_OK;
    argc = calloc((size_t)nc, sizeof *argc);
    which = calloc((size_t)nc, sizeof *which);
    argv = calloc((size_t)nc, sizeof *argv);
    lens = calloc((size_t)nc, sizeof *lens);
    bufs = calloc((size_t)nc, sizeof *bufs);
    ap = calloc((size_t)nc, sizeof *ap);
    rep = calloc((size_t)nc, sizeof *rep);
    if (argc == NULL || which == NULL || argv == NULL || lens == NULL || bufs == NULL || ap == NULL ||
        rep == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0, j = 0; i < na; i++) {
        struct acct *a = &accts[i];
        if (!a->need_read || a->nent == 0)
            continue;
        which[j] = i;
        ap[j] = (struct rm_apply){a->id, a->applied, a->new_version, a->doc, a->max_pos, now, a->nent,
                                  a->entries};
        argv[j] = calloc((size_t)rm_apply_argc(&ap[j]), sizeof *argv[j]);
        lens[j] = calloc((size_t)rm_apply_argc(&ap[j]), sizeof *lens[j]);
        if (argv[j] == NULL || lens[j] == NULL) {
            st = err_set(e, ST_INTERNAL, "out of memory");
            goto cleanup;
        }
        argc[j] = rm_apply_argv(&ap[j], gen, p->sha, &bufs[j], argv[j], lens[j]);
        if (argc[j] < 0) {
            st = err_set(e, ST_INTERNAL, "inconsistent apply for '%s'", a->id);
            goto cleanup;
        }
        j++;
    }
    st = rds_pipeline(p->rc, nc, argc, (const char *const *const *)argv, (const size_t *const *)lens,
                      rep, e);
    if (st != ST_OK) {
        pj_drop_redis(p);
        goto cleanup;
    }
    for (int j = 0; j < nc; j++) {
        struct acct *a = &accts[which[j]];
        int64_t held = 0;
        switch (rm_apply_reply(rep[j], &held)) {
        case RM_APPLIED:
            p->applied += a->nent;
            settle(p, a);
            break;
        case RM_CONFLICT:
            /* another worker (or a rebuild) moved it: re-read and re-fold */
            p->conflicts++;
            log_debug("account=%s holds version %" PRId64 ", expected %" PRId64 ": re-reading", a->id,
                      held, a->applied);
            break;
        case RM_FAILED:
            if (rep[j]->type == REDIS_REPLY_ERROR && strncmp(rep[j]->str, "NOSCRIPT", 8) == 0) {
                *reload = 1; /* the server lost its scripts (restart, SCRIPT FLUSH) */
            } else if (rep[j]->type == REDIS_REPLY_ERROR && strncmp(rep[j]->str, "RMNOGEN", 7) == 0) {
                /* the generation was dropped or flushed under us: nothing of this pass counts */
                *gone = 1;
                a->need_read = 0;
            } else if (rep[j]->type == REDIS_REPLY_ERROR && strncmp(rep[j]->str, "RM", 2) == 0) {
                log_error("account=%s cannot be applied: %s", a->id, rep[j]->str);
                st = stall(p, a->id, a->it[0]->ev.event_id, rep[j]->str, e);
                if (st != ST_OK)
                    goto cleanup;
                a->stop = STOP_POISON;
                a->new_version = a->applied;
                settle(p, a);
            } else {
                st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "apply '%s': %s", a->id,
                              rep[j]->type == REDIS_REPLY_ERROR ? rep[j]->str : "unexpected reply");
                goto cleanup;
            }
            break;
        }
    }
cleanup:
    if (rep != NULL)
        rds_replies_free(rep, nc);
    for (int j = 0; argv != NULL && j < nc; j++) {
        free(argv[j]);
        free(lens[j]);
    }
    free(argc);
    free(which);
    free(argv);
    free(lens);
    free(bufs);
    free(ap);
    free(rep);
    return st;
}

/* The batch wrote this account: settled (not left contended) with a newer version. */
static int wrote(const struct acct *a)
{
    return !a->need_read && a->nent > 0 && a->new_version > a->applied;
}

static status publish_applied(struct pj *p, struct acct *accts, int na, struct err *e)
{
    size_t len = 1;
    char *msg = NULL;
    redisReply *r = NULL;
    status st = ST_OK;

    for (int i = 0; i < na; i++)
        if (wrote(&accts[i]))
            len += strlen(accts[i].id) + 24;
    if (len == 1)
        return ST_OK;
    msg = calloc(1, len);
    if (msg == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    for (int i = 0; i < na; i++)
        if (wrote(&accts[i]))
            (void)pj_applied_append(msg, len, accts[i].id, accts[i].new_version);
    r = redisCommand(p->rc, "PUBLISH %s %s", RM_APPLIED_CHANNEL, msg);
    if (r == NULL) {
        /* the writes are durable; waiters fall back to their timeout */
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "publish: %s", p->rc->errstr);
        pj_drop_redis(p);
    }
    freeReplyObject(r);
    free(msg);
    return st;
}

/* One pass over generation gen: read, fold, compare-and-set, re-read the contended. *gone is set
 * when the generation does not exist (any more): the dispositions then mean nothing. */
static status process_gen(struct pj *p, long gen, struct pj_item **items, int n, unsigned flags,
                          int publish, int *gone, struct err *e)
{
    struct acct *accts = NULL;
    int na = 0, first = 0, reload = 0;
    status st;

    *gone = 0;
    for (int i = 0; i < n; i++)
        items[i]->disp = PJ_PENDING;
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
            st = load_script(p, e);
            if (st != ST_OK)
                goto cleanup;
        }
        st = read_accounts(p, gen, accts, na, e);
        if (st == ST_OK)
            st = prefetch_gaps(p, accts, na, flags, e);
        if (st != ST_OK)
            goto cleanup;
        for (int i = 0; i < na; i++) {
            if (!accts[i].need_read)
                continue;
            st = fold_account(p, &accts[i], flags, e);
            if (st != ST_OK)
                goto cleanup;
            if (accts[i].nent == 0)
                settle(p, &accts[i]); /* nothing new: duplicates, stalled or waiting */
        }
        st = apply_accounts(p, gen, accts, na, &reload, gone, e);
        if (st != ST_OK)
            goto cleanup;
    }
    if (*gone) {
        st = ST_OK;
        goto cleanup;
    }
    for (int i = 0; i < na; i++)
        if (accts[i].need_read) {
            log_warn("account=%s still contended after %d rounds: redelivering", accts[i].id,
                     PJ_MAX_CAS_ROUNDS);
            for (int k = 0; k < accts[i].n; k++)
                if (accts[i].it[k]->disp != PJ_TERM)
                    accts[i].it[k]->disp = PJ_NAK;
        }
    /* a lost wake-up only delays read-your-writes waiters to their timeout: not a failure */
    if (publish && publish_applied(p, accts, na, e) != ST_OK)
        log_warn("publish %s failed: %s", RM_APPLIED_CHANNEL, e != NULL ? e->msg : "");
    st = ST_OK;
cleanup:
    for (int i = 0; i < na; i++)
        acct_release(&accts[i]);
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
    st = process_gen(p, gen, ptrs, n, flags, 0, gone, e);
    free(ptrs);
    return st;
}

/* The live path. The building generation goes FIRST: at every instant it holds at least what the
 * current one holds for any account the live path touched, so a switch can never make a reader
 * see an account go back in version. Only items the building generation took reach the
 * current one; the others are redelivered (NAK) and both passes run again (idempotent). */
static status process_live(struct pj *p, struct pj_item **items, int n, unsigned flags, struct err *e)
{
    struct rm_gens g;
    struct pj_item **sub = NULL;
    enum pj_disp *bdisp = NULL;
    int gone = 0, nsub = 0, building_ok = 0;
    status st;

    for (int i = 0; i < n; i++)
        items[i]->disp = PJ_PENDING;
    st = pj_redis(p, e);
    if (st != ST_OK)
        return st;
    st = rm_load_gens(p->rc, &g, e);
    if (st != ST_OK) {
        pj_drop_redis(p);
        return st;
    }
    if (g.current != p->gen && g.current > 0)
        log_info("read model generation is now %ld (was %ld)", g.current, p->gen);
    p->gen = g.current;
    p->building = g.building;
    sub = calloc((size_t)n + 1, sizeof *sub);
    bdisp = calloc((size_t)n + 1, sizeof *bdisp);
    if (sub == NULL || bdisp == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    if (g.building > 0 && g.building != g.current) {
        memcpy(sub, items, (size_t)n * sizeof *sub);
        st = process_gen(p, g.building, sub, n, flags, g.current == 0, &gone, e);
        if (st != ST_OK)
            goto cleanup;
        building_ok = !gone;
    }
    for (int i = 0; i < n; i++) {
        bdisp[i] = building_ok ? items[i]->disp : PJ_ACK;
        if (bdisp[i] == PJ_ACK || bdisp[i] == PJ_TERM)
            sub[nsub++] = items[i];
    }
    if (g.current > 0) {
        st = process_gen(p, g.current, sub, nsub, flags, 1, &gone, e);
        if (st != ST_OK)
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

/* ---- reading the events table in commit-safe order ---- */

status pj_tail_read(struct pj *p, struct tail_cursor *cursor, int limit, struct pj_item **out,
                    int *n, int *caught_up, struct err *e)
{
    char lim[16], tx[32], pos[32], msg[200];
    const char *params[3] = {tx, pos, lim};
    PGresult *res = NULL, *more = NULL;
    status st;
    int began = 0;

    *out = NULL;
    *n = 0;
    *caught_up = 0;
    st = pj_pg(p, e);
    if (st != ST_OK)
        return st;
    /* one snapshot for the read and the "anything committed beyond?" question: caught up
     * then means every event committed before that snapshot has been read */
    res = PQexec(p->pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto failed;
    began = 1;
    PQclear(res);
    snprintf(tx, sizeof tx, "%" PRIu64, cursor->tx_id);
    snprintf(pos, sizeof pos, "%" PRId64, cursor->position);
    snprintf(lim, sizeof lim, "%d", limit);
    /* commit-safe order (see common/tail.h): below the snapshot's xmin every transaction has
     * finished, so nothing can later appear behind the cursor */
    res = PQexecParams(p->pg,
                       "SELECT " DB_EVENT_COLUMNS ", row_to_json(e)::text, tx_id::text FROM events e "
                       "WHERE (tx_id, position) > ($1::text::xid8, $2::bigint) "
                       "AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) "
                       "ORDER BY e.tx_id, e.position LIMIT $3::int" /* e.: not the text output column */,
                       3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto failed;
    st = rows_to_items(res, out, n, e);
    if (st != ST_OK)
        goto cleanup;
    if (*n > 0) {
        cursor->tx_id = strtoull(PQgetvalue(res, *n - 1, ROW_RAW_COL + 1), NULL, 10);
        cursor->position = strtoll(PQgetvalue(res, *n - 1, 0), NULL, 10);
        snprintf(tx, sizeof tx, "%" PRIu64, cursor->tx_id);
        snprintf(pos, sizeof pos, "%" PRId64, cursor->position);
    }
    if (*n < limit) {
        more = PQexecParams(p->pg,
                            "SELECT EXISTS (SELECT 1 FROM events "
                            "WHERE (tx_id, position) > ($1::text::xid8, $2::bigint))",
                            2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(more) != PGRES_TUPLES_OK)
            goto failed;
        *caught_up = strcmp(PQgetvalue(more, 0, 0), "f") == 0;
    }
    PQclear(res);
    res = PQexec(p->pg, "COMMIT");
    began = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto failed;
    goto cleanup;
failed:
    st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "read events after %s:%s: %s", tx, pos,
                  db_error(msg, sizeof msg, p->pg, res != NULL && PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK ? res : more));
cleanup:
    PQclear(res);
    PQclear(more);
    if (began && !db_broken(p->pg)) {
        PGresult *r = PQexec(p->pg, "ROLLBACK");
        PQclear(r);
    }
    if (st != ST_OK) {
        pj_items_free(*out, *n);
        *out = NULL;
        *n = 0;
        if (db_broken(p->pg))
            pj_drop_pg(p);
    }
    return st;
}

/* ---- catch-up sweep ---- */

/* Take the lease, or extend it when it is already ours. */
static const char lease_lua[] =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or\n"
    "   redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end\n"
    "return 0\n";

status pj_lease(struct pj *p, const char *key, const char *token, int ttl_ms, int *held,
                struct err *e)
{
    redisReply *r;
    status st = ST_OK;

    *held = 0;
    r = redisCommand(p->rc, "EVAL %s 1 %s %s %d", lease_lua, key, token, ttl_ms);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        st = pj_redis_failed(p, r, e, "lease '%s'", key);
    } else {
        *held = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    }
    freeReplyObject(r);
    return st;
}

/* Advances the sweep cursor only if nobody moved it since it was read and the generation still
 * exists: a Redis wiped (or a generation dropped) in the middle of a sweep must not receive a
 * cursor that claims events it does not hold. */
static const char cursor_cas_lua[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if (cur or '') ~= ARGV[1] then return 0 end\n"
    "if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[2])\n"
    "return 1\n";

status pj_sweep(struct pj *p, int limit, int *count, struct err *e)
{
    char tkey[RM_KEY_SIZE], ckey[RM_KEY_SIZE], lkey[RM_KEY_SIZE + 8], cur_s[64], old_s[64] = "",
        msg[200];
    struct tail_cursor cur = {0, 0};
    struct rm_gens g;
    redisReply *r = NULL;
    PGresult *res = NULL;
    struct pj_item *items = NULL;
    int n = 0, lease = 0, caught_up = 0;
    status st;

    *count = 0;
    st = pj_redis(p, e);
    if (st == ST_OK)
        st = pj_pg(p, e);
    if (st == ST_OK)
        st = rm_load_gens(p->rc, &g, e);
    if (st != ST_OK)
        return st;
    p->gen = g.current;
    if (g.current == 0)
        return ST_OK; /* no model: the rebuild's own tail does the catching up */
    rm_key_tail(tkey, sizeof tkey, g.current);
    snprintf(lkey, sizeof lkey, "%s:lease", tkey);
    /* one sweeper at a time is enough; the lease only saves work (the apply is safe anyway) */
    if (p->lease_token[0] == '\0')
        uuid_generate(p->lease_token);
    st = pj_lease(p, lkey, p->lease_token, 5000, &lease, e);
    if (st != ST_OK || !lease)
        goto cleanup;

    res = PQexec(p->pg, "SELECT coalesce(max(position), 0) FROM events");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "event store head: %s",
                      db_error(msg, sizeof msg, p->pg, res));
        if (db_broken(p->pg))
            pj_drop_pg(p);
        goto cleanup;
    }
    r = redisCommand(p->rc, "HSET %s position %s at_ms %lld", RM_HEAD_KEY, PQgetvalue(res, 0, 0),
                     (long long)pj_now_ms());
    PQclear(res);
    res = NULL;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        st = pj_redis_failed(p, r, e, "head");
        goto cleanup;
    }
    freeReplyObject(r);
    r = redisCommand(p->rc, "GET %s", tkey);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        st = pj_redis_failed(p, r, e, "tail cursor");
        goto cleanup;
    }
    if (r->type == REDIS_REPLY_STRING) {
        snprintf(old_s, sizeof old_s, "%s", r->str);
        if (tail_cursor_parse(&cur, r->str) != ST_OK)
            cur.tx_id = 0, cur.position = 0;
    }
    freeReplyObject(r);
    r = NULL;

    st = pj_tail_read(p, &cur, limit, &items, &n, &caught_up, e);
    if (st != ST_OK || n == 0)
        goto cleanup;
    tail_cursor_format(&cur, cur_s, sizeof cur_s);
    st = pj_process(p, items, n, 0, e);
    if (st != ST_OK)
        goto cleanup;
    for (int i = 0; i < n; i++)
        if (items[i].disp == PJ_NAK || items[i].disp == PJ_PENDING)
            goto cleanup; /* not all durable: keep the cursor and try again next time */
    if (p->gen != g.current)
        goto cleanup; /* switched meanwhile: this cursor belongs to the old generation */
    rm_key_checkpoint(ckey, sizeof ckey, g.current);
    r = redisCommand(p->rc, "EVAL %s 2 %s %s %s %s", cursor_cas_lua, tkey, ckey, old_s, cur_s);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        st = pj_redis_failed(p, r, e, "tail cursor");
        goto cleanup;
    }
    /* not moved (another sweeper, or the generation went): no "more to do" from here */
    *count = r->integer == 1 ? n : 0;
cleanup:
    freeReplyObject(r);
    PQclear(res);
    pj_items_free(items, n);
    return st;
}
