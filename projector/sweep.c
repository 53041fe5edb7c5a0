/* Sweep: the commit-safe catch-up from the events table (tx_id, position order below the
 * transaction horizon) that applies whatever the bus lost, one sweeper at a time. It is the
 * safety net, not a second projector: it stops at the first event that its partition's consumer
 * may still bring (see sweep_due), so during a backlog it follows the consumers instead of
 * racing them to the same events. In the steady state the live path has applied everything it
 * reads, so it reads ids and versions only (sweep_read), asks Redis for each account's version
 * in one round trip (load_applied), and reads whole and applies only the events above it. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "pass.h"
#include "rds.h"
#include "readmodel.h"
#include "stalls.h"
#include "tail.h"
#include "uuid.h"

/* ---- reading the events table in commit-safe order ---- */

/* One commit-safe read of `columns` (position first, tx_id::text at txcol) of up to limit events
 * after *cursor, which moves to the last row read; *res is the caller's (PQclear). With
 * caught_up, the same snapshot also answers whether anything committed lies beyond (the read
 * and the question in one REPEATABLE READ transaction); without, the read is one statement,
 * which sees the same snapshot pg_current_snapshot() names. */
static status tail_query(struct pj *p, struct tail_cursor *cursor, int limit, const char *columns, int txcol,
                         PGresult **out, int *caught_up, struct err *e)
{
    char lim[16], tx[32], pos[32], msg[200], sql[512];
    const char *params[3] = {tx, pos, lim};
    PGresult *res = NULL, *more = NULL;
    status st;
    int began = 0, n;

    *out = NULL;
    if (caught_up != NULL)
        *caught_up = 0;
    st = pj_pg(p, e);
    if (st != ST_OK)
        return st;
    if (caught_up != NULL) {
        /* one snapshot for the read and the "anything committed beyond?" question: caught up
         * then means every event committed before that snapshot has been read */
        res = PQexec(p->pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            goto failed;
        began = 1;
        PQclear(res);
    }
    snprintf(tx, sizeof tx, "%" PRIu64, cursor->tx_id);
    snprintf(pos, sizeof pos, "%" PRId64, cursor->position);
    snprintf(lim, sizeof lim, "%d", limit);
    /* commit-safe order (see common/tail.h): below the snapshot's xmin every transaction has
     * finished, so nothing can later appear behind the cursor */
    snprintf(sql, sizeof sql,
             "SELECT %s FROM events e "
             "WHERE (tx_id, position) > ($1::text::xid8, $2::bigint) "
             "AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) "
             "ORDER BY e.tx_id, e.position LIMIT $3::int" /* e.: not the text output column */,
             columns);
    res = PQexecParams(p->pg, sql, 3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto failed;
    n = PQntuples(res);
    if (n > 0) {
        cursor->tx_id = strtoull(PQgetvalue(res, n - 1, txcol), NULL, 10);
        cursor->position = strtoll(PQgetvalue(res, n - 1, 0), NULL, 10);
        snprintf(tx, sizeof tx, "%" PRIu64, cursor->tx_id);
        snprintf(pos, sizeof pos, "%" PRId64, cursor->position);
    }
    *out = res;
    res = NULL;
    if (!began)
        return ST_OK;
    if (n < limit) {
        more = PQexecParams(p->pg,
                            "SELECT EXISTS (SELECT 1 FROM events "
                            "WHERE (tx_id, position) > ($1::text::xid8, $2::bigint))",
                            2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(more) != PGRES_TUPLES_OK)
            goto failed;
        *caught_up = strcmp(PQgetvalue(more, 0, 0), "f") == 0;
    }
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
        PQclear(*out);
        *out = NULL;
        if (db_broken(p->pg))
            pj_drop_pg(p);
    }
    return st;
}

status pj_tail_read(struct pj *p, struct tail_cursor *cursor, int limit, struct pj_item **out,
                    int *n, int *caught_up, struct err *e)
{
    struct tail_cursor next = *cursor;
    PGresult *res = NULL;
    status st = tail_query(p, &next, limit, DB_EVENT_COLUMNS ", tx_id::text", PJ_ROW_TX_COL, &res, caught_up, e);

    *out = NULL;
    *n = 0;
    if (st != ST_OK)
        return st;
    st = pj_rows_to_items(res, out, n, e);
    PQclear(res);
    if (st == ST_OK)
        *cursor = next;
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

/* What the sweep reads of an event first: enough to decide whether it is due and whether the
 * current generation holds it, not the event itself (its data is read only when it is not). */
struct sweep_row {
    int64_t position, version, recorded_ms;
    char stream_id[UUID_STR_SIZE];
    int64_t applied; /* the account's version in the current generation (v) */
};

#define SWEEP_COLUMNS                                                                         \
    "position, stream_id::text, stream_version, "                                             \
    "(extract(epoch FROM recorded_at) * 1000)::bigint, tx_id::text"
#define SWEEP_TX_COL 4

static int rows_by_account(const void *a, const void *b)
{
    const struct sweep_row *x = a, *y = b;
    int c = strcmp(x->stream_id, y->stream_id);

    return c != 0 ? c : (x->version > y->version) - (x->version < y->version);
}

/* May the sweep apply it now? When its partition's consumer has gone past it (it is behind the
 * consumer: lost on the bus), or when it is older than the grace and the consumer brings nothing
 * more: caught up (nothing pending), silent for SWEEP_STALE_MS, or absent (NATS down, no owner).
 * Otherwise the consumer may still bring it: leave it (and everything after it) to a later sweep. */
static int sweep_due(const struct sweep_row *r, const struct part_progress *pp, int nparts, int64_t now)
{
    const struct part_progress *c = &pp[event_partition(r->stream_id, (unsigned)nparts)];

    if (c->at_ms > 0 && r->position <= c->pos)
        return 1;
    if (r->recorded_ms > 0 && now - r->recorded_ms < SWEEP_GRACE_MS)
        return 0;
    return c->at_ms == 0 || c->pending == 0 || now - c->at_ms >= SWEEP_STALE_MS;
}

/* The current generation's version of every account of rows[0..n) (sorted by account) into
 * their applied, in one pipelined round trip: an event at or below it is applied (the version
 * only moves by the compare-and-set, one version after the other), so the sweep need not read
 * it whole nor fold it again. */
static status load_applied(struct pj *p, long gen, struct sweep_row *rows, int n, struct err *e)
{
    int na = 0, k = 0, *argc = NULL;
    const char *(*argv)[3] = NULL;
    const char *const **cmds = NULL;
    char (*keys)[RM_KEY_SIZE] = NULL;
    redisReply **rep = NULL;
    status st = ST_OK;

    for (int i = 0; i < n; i++)
        na += i == 0 || strcmp(rows[i].stream_id, rows[i - 1].stream_id) != 0;
    argc = calloc((size_t)na + 1, sizeof *argc);
    argv = calloc((size_t)na + 1, sizeof *argv);
    cmds = calloc((size_t)na + 1, sizeof *cmds);
    keys = calloc((size_t)na + 1, sizeof *keys);
    rep = calloc((size_t)na + 1, sizeof *rep);
    if (argc == NULL || argv == NULL || cmds == NULL || keys == NULL || rep == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        if (i > 0 && strcmp(rows[i].stream_id, rows[i - 1].stream_id) == 0)
            continue;
        rm_key_account(keys[k], RM_KEY_SIZE, gen, rows[i].stream_id);
        argc[k] = 3;
        argv[k][0] = "HGET";
        argv[k][1] = keys[k];
        argv[k][2] = "v";
        cmds[k] = argv[k];
        k++;
    }
    st = rds_pipeline(p->rc, na, argc, cmds, NULL, rep, e);
    if (st != ST_OK) {
        pj_drop_redis(p);
        goto cleanup;
    }
    for (int i = 0, j = -1; i < n; i++) {
        if (i == 0 || strcmp(rows[i].stream_id, rows[i - 1].stream_id) != 0) {
            j++;
            if (rep[j]->type == REDIS_REPLY_ERROR) {
                st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis version of '%s': %s",
                              rows[i].stream_id, rep[j]->str);
                goto cleanup;
            }
        }
        rows[i].applied = rds_reply_int(rep[j]); /* none yet: 0 */
    }
cleanup:
    if (rep != NULL)
        rds_replies_free(rep, na);
    free(argc);
    free(argv);
    free(cmds);
    free(keys);
    free(rep);
    return st;
}

/* The whole events at positions[0..n) as items (*out malloc'd, pj_items_free). */
static status read_positions(struct pj *p, const int64_t *positions, int n, struct pj_item **out, int *nout,
                             struct err *e)
{
    char *lit = malloc((size_t)n * 21 + 3), msg[200];
    const char *params[1] = {lit};
    size_t len = 0;
    PGresult *res;
    status st;

    *out = NULL;
    *nout = 0;
    if (lit == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    lit[len++] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)sprintf(lit + len, "%s%" PRId64, i > 0 ? "," : "", positions[i]);
    lit[len++] = '}';
    lit[len] = '\0';
    res = PQexecParams(p->pg, "SELECT " DB_EVENT_COLUMNS " FROM events e WHERE position = ANY ($1::bigint[])", 1,
                       NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "read %d events: %s", n,
                      db_error(msg, sizeof msg, p->pg, res));
        if (db_broken(p->pg))
            pj_drop_pg(p);
    } else {
        st = pj_rows_to_items(res, out, nout, e);
    }
    PQclear(res);
    free(lit);
    return st;
}

/* Reads the events after *cur narrowly (SWEEP_COLUMNS), keeps the prefix that is due
 * (sweep_due) and moves *cur to its last row; *rows (malloc'd) holds that prefix, sorted by
 * account and version, with each account's applied version of generation gen. */
static status sweep_read(struct pj *p, long gen, struct tail_cursor *cur, int limit, struct sweep_row **rows,
                         int *n, struct err *e)
{
    int nparts = p->cfg->partitions, total, cut = 0;
    struct tail_cursor next = *cur;
    struct part_progress *pp = NULL;
    PGresult *res = NULL;
    status st;

    *rows = NULL;
    *n = 0;
    st = tail_query(p, &next, limit, SWEEP_COLUMNS, SWEEP_TX_COL, &res, NULL, e);
    if (st != ST_OK)
        return st;
    total = PQntuples(res);
    if (total == 0)
        goto cleanup;
    pp = calloc((size_t)nparts, sizeof *pp);
    *rows = calloc((size_t)total, sizeof **rows);
    if (pp == NULL || *rows == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < total; i++) {
        struct sweep_row *r = &(*rows)[i];
        r->position = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        snprintf(r->stream_id, sizeof r->stream_id, "%s", PQgetvalue(res, i, 1));
        r->version = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        r->recorded_ms = strtoll(PQgetvalue(res, i, 3), NULL, 10);
    }
    st = load_progress(p, pp, nparts, e);
    if (st != ST_OK)
        goto cleanup;
    {
        int64_t now = pj_now_ms();
        while (cut < total && sweep_due(&(*rows)[cut], pp, nparts, now))
            cut++;
    }
    if (cut == 0)
        goto cleanup;
    /* below the horizon nothing appears behind a row: the cursor goes right after the last
     * one due */
    next.tx_id = strtoull(PQgetvalue(res, cut - 1, SWEEP_TX_COL), NULL, 10);
    next.position = (*rows)[cut - 1].position;
    qsort(*rows, (size_t)cut, sizeof **rows, rows_by_account);
    st = load_applied(p, gen, *rows, cut, e);
    if (st == ST_OK) {
        *n = cut;
        *cur = next;
    }
cleanup:
    PQclear(res);
    free(pp);
    if (*n == 0) {
        free(*rows);
        *rows = NULL;
    }
    return st;
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
    r = rds_command(p->rc, "EVAL %s 1 %s %s %d", lease_lua, key, token, ttl_ms);
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

/* The store head into rm:head, with what the checkpoint cannot see (stalls, the horizon). */
static status record_head(struct pj *p, long gen, struct err *e)
{
    char msg[200];
    redisReply *r;
    PGresult *res = PQexec(p->pg, "SELECT coalesce(max(position), 0) FROM events");
    status st = ST_OK;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "store_unavailable", "event store head: %s",
                      db_error(msg, sizeof msg, p->pg, res));
        PQclear(res);
        if (db_broken(p->pg))
            pj_drop_pg(p);
        return st;
    }
    r = rds_command(p->rc, "HSET %s position %s at_ms %lld", RM_HEAD_KEY, PQgetvalue(res, 0, 0),
                    (long long)pj_now_ms());
    PQclear(res);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        st = pj_redis_failed(p, r, e, "head");
    freeReplyObject(r);
    /* what the checkpoint's highest position cannot see: events held back by stalls */
    if (st == ST_OK)
        st = pj_record_backlog(p, gen, e);
    if (st == ST_OK)
        st = pj_record_horizon(p, e); /* what an open transaction holds back */
    return st;
}

status pj_sweep(struct pj *p, int limit, int *count, int *fetched, struct err *e)
{
    char tkey[RM_KEY_SIZE], ckey[RM_KEY_SIZE], lkey[RM_KEY_SIZE + 8], cur_s[64], old_s[64] = "";
    struct tail_cursor cur = {0, 0};
    struct rm_gens g;
    redisReply *r = NULL;
    struct sweep_row *rows = NULL;
    struct pj_item *items = NULL;
    int64_t *missing = NULL;
    int n = 0, ni = 0, nmissing = 0, lease = 0;
    status st;

    *count = 0;
    *fetched = 0;
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
    st = record_head(p, g.current, e);
    if (st != ST_OK)
        goto cleanup;
    r = rds_command(p->rc, "GET %s", tkey);
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

    st = sweep_read(p, g.current, &cur, limit, &rows, &n, e);
    if (st != ST_OK || n == 0)
        goto cleanup;
    tail_cursor_format(&cur, cur_s, sizeof cur_s);
    /* only what the current generation lacks is read whole and goes through the apply path
     * (which also writes a building generation first, as the live path does; a rebuild's own
     * tail is what fills that one) */
    missing = calloc((size_t)n, sizeof *missing);
    if (missing == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < n; i++)
        if (rows[i].version > rows[i].applied)
            missing[nmissing++] = rows[i].position;
    if (nmissing > 0) {
        *fetched = nmissing;
        st = read_positions(p, missing, nmissing, &items, &ni, e);
        if (st == ST_OK)
            st = pj_process(p, items, ni, 0, e);
        if (st != ST_OK)
            goto cleanup;
        for (int i = 0; i < ni; i++)
            if (items[i].disp == PJ_NAK || items[i].disp == PJ_PENDING)
                goto cleanup; /* not all durable: keep the cursor and try again next time */
    }
    if (p->gen != g.current)
        goto cleanup; /* switched meanwhile: this cursor belongs to the old generation */
    rm_key_checkpoint(ckey, sizeof ckey, g.current);
    r = rds_command(p->rc, "EVAL %s 2 %s %s %s %s", cursor_cas_lua, tkey, ckey, old_s, cur_s);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        st = pj_redis_failed(p, r, e, "tail cursor");
        goto cleanup;
    }
    /* not moved (another sweeper, or the generation went): no "more to do" from here */
    *count = r->integer == 1 ? n : 0;
cleanup:
    freeReplyObject(r);
    free(rows);
    free(missing);
    pj_items_free(items, ni);
    return st;
}
