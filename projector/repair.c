/* Repair: events read back from Postgres, a stream's versions and the gaps of a batch (versions
 * an account needs that did not arrive on the bus), prefetched in one query per round. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "pass.h"
#include "uuid.h"

/* ---- Postgres reads, one row at a time so one poison row does not hide its neighbours ---- */

static void item_from_row(struct pj_item *it, const PGresult *res, int row)
{
    /* no payload: the row's JSON text is read only when it is parked (pj_park), so a million
     * rows do not each cost Postgres a row_to_json and us a copy */
    memset(it, 0, sizeof *it);
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

status pj_rows_to_items(const PGresult *res, struct pj_item **out, int *n, struct err *e)
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
                       "SELECT " DB_EVENT_COLUMNS " FROM events e "
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
    st = pj_rows_to_items(res, out, n, e);
cleanup:
    PQclear(res);
    return st;
}

/* The missing versions of a's batch, given what Redis holds: [applied+1, first item - 1] and
 * every hole between its items, until the first item already parked, at most RP_GAP_PAGE of
 * them (the fold pages the same way). Calls add(lo, hi). */
static void gap_ranges(const struct acct *a, void (*add)(void *ctx, const char *id, int64_t lo, int64_t hi),
                       void *ctx)
{
    int64_t expected = a->applied + 1, budget = RP_GAP_PAGE;

    for (int i = 0; i < a->n; i++) {
        int64_t u = a->it[i]->ev.stream_version;
        if (a->it[i]->stray)
            continue;
        if (a->it[i]->disp == PJ_TERM)
            break;
        if (u < expected)
            continue;
        if (u > expected) {
            int64_t hi = u - 1 - expected + 1 > budget ? expected + budget - 1 : u - 1;
            add(ctx, a->id, expected, hi);
            budget -= hi - expected + 1;
            if (budget <= 0)
                break;
        }
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
status rp_prefetch_gaps(struct pj *p, struct acct *accts, int na, unsigned flags, struct err *e)
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
                       "SELECT " DB_EVENT_COLUMNS " FROM events e "
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
    st = pj_rows_to_items(res, &rows, &nrows, e);
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
status rp_gap_events(struct pj *p, struct acct *a, int64_t from, int64_t to,
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
