/* Sweep: the commit-safe catch-up from the events table (tx_id, position order below the
 * transaction horizon) that applies whatever the bus lost, one sweeper at a time. It is the
 * safety net, not a second projector: it stops at the first event that its partition's consumer
 * may still bring (see sweep_due), so during a backlog it follows the consumers instead of
 * racing them to the same events. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "pass.h"
#include "readmodel.h"
#include "stalls.h"
#include "tail.h"
#include "uuid.h"

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
                       "SELECT " DB_EVENT_COLUMNS ", tx_id::text FROM events e "
                       "WHERE (tx_id, position) > ($1::text::xid8, $2::bigint) "
                       "AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) "
                       "ORDER BY e.tx_id, e.position LIMIT $3::int" /* e.: not the text output column */,
                       3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto failed;
    st = pj_rows_to_items(res, out, n, e);
    if (st != ST_OK)
        goto cleanup;
    if (*n > 0) {
        cursor->tx_id = strtoull(PQgetvalue(res, *n - 1, PJ_ROW_TX_COL), NULL, 10);
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

#define SWEEP_GRACE_MS 500   /* an event younger than this is the consumers' (live path) */
#define SWEEP_STALE_MS 2000  /* a consumer silent this long is not bringing anything */

/* How far each partition's consumer got, from rm:part:<p> (consume.c's record_lag). */
struct part_progress {
    int64_t pos;     /* the highest event position it applied */
    int64_t at_ms;   /* when it said so (0: no consumer has said anything) */
    long long pending;
};

static status load_progress(struct pj *p, struct part_progress *pp, int nparts, struct err *e)
{
    char key[RM_KEY_SIZE];
    status st = ST_OK;

    for (int i = 0; i < nparts; i++) {
        rm_key_partition(key, sizeof key, i);
        redisAppendCommand(p->rc, "HMGET %s pos at_ms pending", key);
    }
    for (int i = 0; i < nparts; i++) {
        redisReply *r = NULL;
        if (redisGetReply(p->rc, (void **)&r) != REDIS_OK || r == NULL || r->type != REDIS_REPLY_ARRAY ||
            r->elements != 3) {
            st = pj_redis_failed(p, r, e, "partition progress");
            freeReplyObject(r);
            break;
        }
        pp[i].pos = r->element[0]->type == REDIS_REPLY_STRING ? strtoll(r->element[0]->str, NULL, 10) : 0;
        pp[i].at_ms = r->element[1]->type == REDIS_REPLY_STRING ? strtoll(r->element[1]->str, NULL, 10) : 0;
        pp[i].pending = r->element[2]->type == REDIS_REPLY_STRING ? strtoll(r->element[2]->str, NULL, 10) : 0;
        freeReplyObject(r);
    }
    return st;
}

/* recorded_at ("YYYY-MM-DDTHH:MM:SS.uuuuuuZ") in ms since the epoch; 0 when unreadable. */
static int64_t recorded_ms(const char *t)
{
    struct tm tm;
    int us = 0;

    memset(&tm, 0, sizeof tm);
    if (sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%6d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &us) < 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + us / 1000;
}

/* May the sweep apply it now? When its partition's consumer has gone past it (it is behind the
 * consumer: lost on the bus), or when it is older than the grace and the consumer brings nothing
 * more: caught up (nothing pending), silent for SWEEP_STALE_MS, or absent (NATS down, no owner).
 * Otherwise the consumer may still bring it: leave it (and everything after it) to a later sweep. */
static int sweep_due(const struct pj_item *it, const struct part_progress *pp, int nparts, int64_t now)
{
    const struct part_progress *c = &pp[event_partition(it->ev.stream_id, (unsigned)nparts)];
    int64_t at = recorded_ms(it->ev.recorded_at);

    if (c->at_ms > 0 && it->ev.position <= c->pos)
        return 1;
    if (at > 0 && now - at < SWEEP_GRACE_MS)
        return 0;
    return c->at_ms == 0 || c->pending == 0 || now - c->at_ms >= SWEEP_STALE_MS;
}

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
    r = NULL;
    /* what the checkpoint's highest position cannot see: events held back by stalls */
    st = pj_record_backlog(p, g.current, e);
    if (st == ST_OK)
        st = pj_record_horizon(p, e); /* what an open transaction holds back */
    if (st != ST_OK)
        goto cleanup;
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

    {
        struct tail_cursor from = cur;
        int nparts = p->cfg->partitions, cut = 0;
        struct part_progress *pp = calloc((size_t)nparts, sizeof *pp);
        if (pp == NULL) {
            st = err_set(e, ST_INTERNAL, "out of memory");
            goto cleanup;
        }
        st = pj_tail_read(p, &cur, limit, &items, &n, &caught_up, e);
        if (st == ST_OK && n > 0)
            st = load_progress(p, pp, nparts, e);
        if (st == ST_OK) {
            int64_t now = pj_now_ms();
            while (cut < n && sweep_due(&items[cut], pp, nparts, now))
                cut++;
        }
        free(pp);
        if (st == ST_OK && cut < n) {
            /* the rows up to the first one not due again: the same rows (below the horizon
             * nothing appears behind the cursor), and the cursor right after them */
            pj_items_free(items, n);
            items = NULL;
            n = 0;
            cur = from;
            if (cut > 0)
                st = pj_tail_read(p, &cur, cut, &items, &n, &caught_up, e);
        }
    }
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

