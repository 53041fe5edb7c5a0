/* Parking: a poison event is kept in rm:parked and its account stalled in rm:stalled; an event
 * an operator discarded (discarded_events) folds as a no-op instead. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "pass.h"
#include "readmodel.h"
#include "uuid.h"

/* ---- parking ---- */

const char *pj_stalled_key(const struct pj *p, char *buf, size_t len)
{
    if (p->pass_gen <= 0 || p->pass_gen == p->gen)
        return RM_STALLED_KEY;
    snprintf(buf, len, "rm:%ld:stalled", p->pass_gen);
    return buf;
}

status pj_stall(struct pj *p, const char *account_id, const char *event_id, const char *reason,
                    struct err *e)
{
    char now[40], key[64];
    char *rec = NULL;
    redisReply *r = NULL;
    status st = ST_OK;

    pj_now_iso(now, sizeof now);
    rec = pj_stall_record(event_id, reason, now);
    if (rec == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    /* NX: the first stuck event is the one an operator must look at; later ones follow it */
    r = redisCommand(p->rc, "HSETNX %s %s %s", pj_stalled_key(p, key, sizeof key), account_id, rec);
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
        st = pj_stall(p, it->ev.stream_id, it->ev.event_id, reason, e);
cleanup:
    freeReplyObject(r);
    free(rec);
    return st;
}

/* ---- discarded events ---- */

status pj_fold_discarded(struct pj *p, struct account_view *view, const struct pj_item *it,
                         struct statement_entry *en, int *found, struct err *e)
{
    const char *params[1] = {it->ev.event_id};
    PGresult *res = NULL;
    const char *code;
    struct err fe;
    char msg[200];
    status st;

    *found = 0;
    if (it->ev.event_id[0] == '\0')
        return ST_OK;
    st = pj_pg(p, e);
    if (st != ST_OK)
        return st;
    res = PQexecParams(p->pg,
                       "SELECT d.reason, to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                       "FROM discarded_events d JOIN events e ON e.event_id = d.event_id WHERE d.event_id = $1::uuid",
                       1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (code != NULL && strcmp(code, "42P01") == 0)
            goto cleanup; /* a store not migrated yet has discarded nothing */
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "read discarded event '%s': %s", it->ev.event_id,
                      db_error(msg, sizeof msg, p->pg, res));
        if (db_broken(p->pg))
            pj_drop_pg(p);
        goto cleanup;
    }
    if (PQntuples(res) == 0)
        goto cleanup;
    /* a discard names the event that stopped the fold: it is always the next version */
    if (proj_discard(view, it->ev.event_id, it->ev.stream_version, PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 0),
                     en, &fe) != ST_OK) {
        log_warn("account=%s discarded event %s not folded as a no-op: %s", it->ev.stream_id, it->ev.event_id, fe.msg);
        goto cleanup;
    }
    *found = 1;
cleanup:
    PQclear(res);
    return st;
}
