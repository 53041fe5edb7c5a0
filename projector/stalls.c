/* The backlog behind stalled accounts, for lag reporting. */
#include "stalls.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
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
    ids = redisCommand(p->rc, "HKEYS %s", RM_STALLED_KEY);
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
    r = redisCommand(p->rc, "HSET %s unapplied %lld lowest_unapplied %lld", RM_HEAD_KEY, (long long)unapplied,
                     (long long)lowest);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        st = pj_redis_failed(p, r, e, "head backlog");
    freeReplyObject(r);
    return st;
}
