/* Parking: a poison event is kept in rm:parked and its account stalled in rm:stalled; an event
 * an operator discarded (discarded_events) folds as a no-op instead. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "pass.h"
#include "rds.h"
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
    r = rds_command(p->rc, "HSETNX %s %s %s", pj_stalled_key(p, key, sizeof key), account_id, rec);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        st = pj_redis_failed(p, r, e, "stall '%s'", account_id);
    freeReplyObject(r);
    free(rec);
    return st;
}

/* A row read from the events table carries no payload (pj_rows_to_items): the record keeps the
 * row's JSON text, read now. */
static status row_payload(struct pj *p, struct pj_item *it, struct err *e)
{
    char pos[24], msg[200];
    const char *params[1] = {pos};
    PGresult *res = NULL;
    status st;

    if (it->seq != 0 || it->payload != NULL || it->ev.position <= 0)
        return ST_OK;
    st = pj_pg(p, e);
    if (st != ST_OK)
        return st;
    snprintf(pos, sizeof pos, "%" PRId64, it->ev.position);
    res = PQexecParams(p->pg, "SELECT row_to_json(e)::text FROM events e WHERE position = $1::bigint", 1, NULL,
                       params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "read event at position %s: %s", pos,
                      db_error(msg, sizeof msg, p->pg, res));
        if (db_broken(p->pg))
            pj_drop_pg(p);
    } else if (PQntuples(res) == 1) {
        it->owned_payload = strdup(PQgetvalue(res, 0, 0));
        if (it->owned_payload == NULL)
            st = err_set(e, ST_INTERNAL, "out of memory");
        it->payload = it->owned_payload;
        it->payload_len = it->owned_payload != NULL ? strlen(it->owned_payload) : 0;
    }
    PQclear(res);
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
    st = row_payload(p, it, e);
    if (st != ST_OK)
        return st;
    if (it->ev.event_id[0] == '\0')
        uuid_generate(it->ev.event_id); /* nothing to key it by: the record carries the sequence */
    pj_now_iso(now, sizeof now);
    rec = pj_park_record(&it->ev, reason, now, it->payload, it->payload_len, it->seq);
    if (rec == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    r = rds_command(p->rc, "HSET %s %s %s", RM_PARKED_KEY, it->ev.event_id, rec);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        st = pj_redis_failed(p, r, e, "park '%s'", it->ev.event_id);
        goto cleanup;
    }
    /* counted (and logged) once per event: the live consumer and the catch-up sweep, or a
     * redone batch, may both reach an event that is parked already (HSET answers 0 then) */
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        log_warn("parked poison event event=%s account=%s version=%" PRId64 " seq=%" PRIu64 ": %s",
                 it->ev.event_id, it->ev.stream_id[0] ? it->ev.stream_id : "-", it->ev.stream_version,
                 it->seq, reason);
        p->parked++;
    }
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
