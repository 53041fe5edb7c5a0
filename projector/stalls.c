/* What the checkpoint's highest position cannot see, for lag reporting: the backlog behind
 * stalled accounts and the committed events an open transaction holds below the horizon. */
#include "stalls.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "rds.h"
#include "readmodel.h"

/* Appends "<sep><text>" to a growing Postgres array literal. */
static int lit_put(char **buf, size_t *len, size_t *cap, const char *text)
{
    size_t n = strlen(text) + 2;

    if (*len + n + 2 > *cap) {
        size_t nc = (*cap + n + 2) * 2;
        char *nb = realloc(*buf, nc);
        if (nb == NULL)
            return -1;
        *buf = nb;
        *cap = nc;
    }
    *len += (size_t)sprintf(*buf + *len, "%s%s", *len == 0 ? "{" : ",", text);
    return 0;
}

status pj_stall_backlog(struct pj *p, long gen, int64_t *unapplied, int64_t *lowest, struct err *e)
{
    redisReply *ids = NULL, *vs = NULL;
    PGresult *res = NULL;
    char *ida = NULL, *va = NULL, msg[200];
    size_t il = 0, ic = 0, vl = 0, vc = 0;
    status st = ST_OK;

    *unapplied = 0;
    *lowest = 0;
    ids = rds_command(p->rc, "HKEYS %s", RM_STALLED_KEY);
    if (ids == NULL || ids->type != REDIS_REPLY_ARRAY) {
        st = pj_redis_failed(p, ids, e, "stalled accounts");
        goto cleanup;
    }
    if (ids->elements == 0 || gen <= 0)
        goto cleanup;
    for (size_t i = 0; i < ids->elements; i++) {
        char key[RM_KEY_SIZE];
        rm_key_account(key, sizeof key, gen, ids->element[i]->str);
        if (redisAppendCommand(p->rc, "HGET %s v", key) != REDIS_OK) {
            st = pj_redis_failed(p, NULL, e, "stalled versions");
            goto cleanup;
        }
    }
    for (size_t i = 0; i < ids->elements; i++) {
        char v[24];
        if (redisGetReply(p->rc, (void **)&vs) != REDIS_OK || vs == NULL) {
            st = pj_redis_failed(p, NULL, e, "stalled versions");
            goto cleanup;
        }
        snprintf(v, sizeof v, "%s", vs->type == REDIS_REPLY_STRING ? vs->str : "0");
        freeReplyObject(vs);
        vs = NULL;
        if (lit_put(&ida, &il, &ic, ids->element[i]->str) != 0 || lit_put(&va, &vl, &vc, v) != 0) {
            st = err_set(e, ST_INTERNAL, "out of memory");
            goto cleanup;
        }
    }
    strcat(ida, "}");
    strcat(va, "}");
    st = pj_pg(p, e);
    if (st != ST_OK)
        goto cleanup;
    {
        const char *params[2] = {ida, va};
        res = PQexecParams(p->pg,
                           "SELECT count(*), coalesce(min(e.position), 0) FROM events e "
                           "JOIN unnest($1::uuid[], $2::bigint[]) AS r(id, v) "
                           "ON e.stream_id = r.id AND e.stream_version > r.v",
                           2, NULL, params, NULL, NULL, 0);
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "stalled backlog: %s",
                      db_error(msg, sizeof msg, p->pg, res));
        if (db_broken(p->pg))
            pj_drop_pg(p);
        goto cleanup;
    }
    *unapplied = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    *lowest = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
cleanup:
    PQclear(res);
    freeReplyObject(ids);
    freeReplyObject(vs);
    free(ida);
    free(va);
    return st;
}

status pj_record_backlog(struct pj *p, long gen, struct err *e)
{
    int64_t unapplied = 0, lowest = 0;
    redisReply *r;
    status st = pj_stall_backlog(p, gen, &unapplied, &lowest, e);

    if (st != ST_OK)
        return st;
    r = rds_command(p->rc, "HSET %s unapplied %lld lowest_unapplied %lld", RM_HEAD_KEY, (long long)unapplied,
                    (long long)lowest);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        st = pj_redis_failed(p, r, e, "head backlog");
    freeReplyObject(r);
    return st;
}

/* Committed events the sweep and rebuilds cannot read yet (tx_id at or above the horizon,
 * pg_snapshot_xmin), and the oldest transaction with an xid, which holds the horizon there.
 * Its pid and age come from pg_stat_activity (NULL without the privilege to see it: the age is
 * then how long this projector has seen the same horizon). Counting stops at 100,000. */
#define HORIZON_WARN_MS 10000

status pj_record_horizon(struct pj *p, struct err *e)
{
    PGresult *res = NULL;
    redisReply *r = NULL;
    char msg[200];
    int64_t held, wait_ms = 0, now = pj_now_ms();
    long pid = 0;
    status st = pj_pg(p, e);

    if (st != ST_OK)
        return st;
    res = PQexec(p->pg,
                 "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, "
                 "(SELECT count(*) FROM (SELECT 1 FROM events "
                 "  WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot()) LIMIT 100000) h), "
                 "a.pid, floor(extract(epoch FROM clock_timestamp() - a.xact_start) * 1000)::bigint "
                 "FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT pid, xact_start FROM pg_stat_activity "
                 "  WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
                 "  ORDER BY age(backend_xid) DESC LIMIT 1) a ON true");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "transaction horizon: %s",
                      db_error(msg, sizeof msg, p->pg, res));
        if (db_broken(p->pg))
            pj_drop_pg(p);
        goto cleanup;
    }
    held = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    if (held == 0 || strcmp(p->horizon_xmin, PQgetvalue(res, 0, 0)) != 0) {
        snprintf(p->horizon_xmin, sizeof p->horizon_xmin, "%s", PQgetvalue(res, 0, 0));
        p->horizon_since_ms = now;
    }
    if (held > 0) {
        wait_ms = now - p->horizon_since_ms;
        if (!PQgetisnull(res, 0, 2)) {
            pid = strtol(PQgetvalue(res, 0, 2), NULL, 10);
            if (!PQgetisnull(res, 0, 3) && strtoll(PQgetvalue(res, 0, 3), NULL, 10) > wait_ms)
                wait_ms = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
        }
        /* once when it crosses the threshold, then every minute while it lasts */
        if (wait_ms >= HORIZON_WARN_MS && (p->horizon_warned_ms == 0 || now - p->horizon_warned_ms >= 60000)) {
            log_warn("%lld committed event%s wait%s behind transaction %s (pid %ld) open for %lld s: "
                     "the catch-up sweep and rebuilds read only below it",
                     (long long)held, held == 1 ? "" : "s", held == 1 ? "s" : "", p->horizon_xmin, pid,
                     (long long)(wait_ms / 1000));
            p->horizon_warned_ms = now;
        }
    } else {
        p->horizon_warned_ms = 0;
    }
    r = rds_command(p->rc, "HSET %s horizon_held %lld horizon_wait_ms %lld horizon_pid %ld horizon_xmin %s",
                    RM_HEAD_KEY, (long long)held, (long long)wait_ms, pid, p->horizon_xmin);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        st = pj_redis_failed(p, r, e, "head horizon");
cleanup:
    freeReplyObject(r);
    PQclear(res);
    return st;
}
