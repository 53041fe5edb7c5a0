/* Operator commands on parked (poison) events: replay-parked retries them once their cause is
 * fixed; discard-parked gives up on one, audited (discarded_events), so that every fold reads it
 * as a no-op and its account resumes. */
#include "parked.h"

#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "engine.h"
#include "event.h"
#include "rds.h"
#include "readmodel.h"

json_t *pk_parse_record(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_STRING ? json_loadb(r->str, r->len, 0, NULL) : NULL;
}

const char *pk_jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "-";
}

void pk_print_stalls(const char *title, const redisReply *r)
{
    size_t n = r != NULL && r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;

    printf("%s%zu\n", title, n);
    for (size_t i = 0; i < n; i++) {
        json_t *rec = pk_parse_record(r->element[2 * i + 1]);
        printf("  %s event=%s since=%s: %s\n", r->element[2 * i]->str, pk_jstr(rec, "event_id"),
               pk_jstr(rec, "since"), pk_jstr(rec, "reason"));
        json_decref(rec);
    }
}

/* ---- catching an account up ---- */

static status stream_head(struct pj *p, const char *id, int64_t *head, struct err *e)
{
    const char *params[1] = {id};
    PGresult *res = PQexecParams(p->pg, "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1::uuid",
                                 1, NULL, params, NULL, NULL, 0);
    char msg[200];
    status st = ST_OK;

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        st = err_set(e, ST_UNAVAILABLE, "stream head of '%s': %s", id, db_error(msg, sizeof msg, p->pg, res));
    else
        *head = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return st;
}

/* Catches account id up from Postgres, stalled or not. *poison is set when an event still does
 * not fold (it is parked again with the new reason); *applied and *head describe the result. */
static status catch_up(struct pj *p, const char *id, int *poison, int64_t *applied, int64_t *head,
                       struct err *e)
{
    struct rm_account acc = {0};
    struct pj_item *items = NULL;
    int n = 0;
    status st;

    *poison = 0;
    st = rm_load_account(p->rc, p->gen, id, &acc, e);
    if (st == ST_OK)
        st = pj_read_stream(p, id, acc.version + 1, INT32_MAX, &items, &n, e);
    if (st != ST_OK)
        goto cleanup;
    if (n > 0) {
        st = pj_process(p, items, n, PJ_IGNORE_STALLED, e);
        if (st != ST_OK)
            goto cleanup;
        for (int i = 0; i < n; i++)
            if (items[i].disp == PJ_TERM) {
                *poison = 1;
                err_set(e, ST_INVALID, "version %" PRId64 ": %s", items[i].ev.stream_version, items[i].why.msg);
            }
    }
    rm_account_release(&acc);
    st = rm_load_account(p->rc, p->gen, id, &acc, e);
    if (st == ST_OK)
        st = stream_head(p, id, head, e);
    *applied = acc.version;
cleanup:
    rm_account_release(&acc);
    pj_items_free(items, n);
    return st;
}

/* Connects both stores and points p at the current generation; prints why not (as what). */
static int open_current(struct pj *p, const struct cfg *c, const char *what)
{
    struct rm_gens g;
    struct err e;

    pj_init(p, c);
    err_clear(&e);
    if (pj_redis(p, &e) != ST_OK || pj_pg(p, &e) != ST_OK || rm_load_gens(p->rc, &g, &e) != ST_OK) {
        fprintf(stderr, "projector %s: %s\n", what, e.msg);
        return -1;
    }
    if (g.current == 0) {
        fprintf(stderr, "projector %s: no current generation (a rebuild is due)\n", what);
        return -1;
    }
    p->gen = g.current;
    return 0;
}

/* ---- replay-parked ---- */

/* An account stays stalled while any parked event still names it: the others are caught up
 * and un-stalled. */
static void unstall_cleared(struct pj *p)
{
    redisReply *stalled = rds_command(p->rc, "HGETALL %s", RM_STALLED_KEY), *left = NULL, *r;
    struct err e;

    if (stalled != NULL && stalled->type == REDIS_REPLY_ARRAY)
        left = rds_command(p->rc, "HVALS %s", RM_PARKED_KEY);
    for (size_t i = 0; left != NULL && left->type == REDIS_REPLY_ARRAY && i + 1 < stalled->elements; i += 2) {
        const char *account = stalled->element[i]->str;
        int still = 0, poison = 0;
        int64_t applied = 0, head = 0;

        for (size_t k = 0; k < left->elements && !still; k++) {
            json_t *rec = pk_parse_record(left->element[k]);
            still = strcmp(pk_jstr(rec, "account_id"), account) == 0;
            json_decref(rec);
        }
        if (still)
            continue;
        err_clear(&e);
        if (catch_up(p, account, &poison, &applied, &head, &e) == ST_OK && !poison && applied >= head) {
            r = rds_command(p->rc, "HDEL %s %s", RM_STALLED_KEY, account);
            freeReplyObject(r);
            printf("account %s: no longer stalled (version %" PRId64 ")\n", account, applied);
        }
    }
    freeReplyObject(left);
    freeReplyObject(stalled);
}

static int replay(struct pj *p, const char *only, const char *what)
{
    redisReply *parked = NULL, *r;
    struct err e;
    int rc = 1, failed = 0, done = 0;
    size_t np;

    if (only != NULL)
        parked = rds_command(p->rc, "HMGET %s %s", RM_PARKED_KEY, only);
    else
        parked = rds_command(p->rc, "HGETALL %s", RM_PARKED_KEY);
    if (parked == NULL || parked->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "projector %s: redis: %s\n", what, parked == NULL ? rds_errstr(p->rc) : "bad reply");
        goto cleanup;
    }
    np = only != NULL ? 1 : parked->elements / 2;
    if (only != NULL && parked->element[0]->type != REDIS_REPLY_STRING) {
        fprintf(stderr, "projector %s: no parked event '%s'\n", what, only);
        rc = 5;
        goto cleanup;
    }
    if (np == 0)
        printf("no parked events\n");
    for (size_t i = 0; i < np; i++) {
        const redisReply *rec_r = only != NULL ? parked->element[0] : parked->element[2 * i + 1];
        const char *event_id = only != NULL ? only : parked->element[2 * i]->str;
        json_t *rec = pk_parse_record(rec_r);
        const char *account = json_string_value(json_object_get(rec, "account_id"));
        int64_t version = json_integer_value(json_object_get(rec, "stream_version"));
        int64_t applied = 0, head = 0;
        int poison = 0;

        if (account == NULL) {
            printf("%s: names no account (jetstream_seq %" JSON_INTEGER_FORMAT "); left parked, remove it with HDEL %s %s\n",
                   event_id, json_integer_value(json_object_get(rec, "jetstream_seq")), RM_PARKED_KEY, event_id);
            failed++;
            json_decref(rec);
            continue;
        }
        err_clear(&e);
        if (catch_up(p, account, &poison, &applied, &head, &e) != ST_OK) {
            printf("%s: account %s: %s\n", event_id, account, e.msg);
            failed++;
        } else if (poison) {
            printf("%s: account %s still does not fold at %s; left parked\n", event_id, account, e.msg);
            failed++;
        } else if (applied >= head && applied >= version) {
            r = rds_command(p->rc, "HDEL %s %s", RM_PARKED_KEY, event_id);
            freeReplyObject(r);
            printf("%s: applied; account %s caught up to version %" PRId64 "\n", event_id, account, applied);
            done++;
        } else if (applied >= head) {
            /* the event store has no such version: the message was not a recorded event */
            r = rds_command(p->rc, "HDEL %s %s", RM_PARKED_KEY, event_id);
            freeReplyObject(r);
            printf("%s: not in the event store (version %" PRId64 " > %" PRId64 "); account %s caught up; removed\n",
                   event_id, version, head, account);
            done++;
        } else {
            printf("%s: account %s at version %" PRId64 " of %" PRId64 "; left parked\n", event_id, account,
                   applied, head);
            failed++;
        }
        json_decref(rec);
    }
    unstall_cleared(p);
    printf("%d replayed, %d left parked\n", done, failed);
    rc = failed == 0 ? 0 : 1;
cleanup:
    freeReplyObject(parked);
    return rc;
}

int pk_cmd_replay(const struct cfg *c, const char *only)
{
    struct pj p;
    int rc = 1;

    if (open_current(&p, c, "replay-parked") == 0)
        rc = replay(&p, only, "replay-parked");
    pj_release(&p);
    return rc;
}

/* ---- discard-parked ---- */

/* "user@host" of the process: who discarded (the database role is recorded beside it). */
static void who(char *out, size_t len)
{
    const struct passwd *pw = getpwuid(geteuid());
    char host[256] = "";

    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    if (pw != NULL && pw->pw_name != NULL)
        snprintf(out, len, "%s@%s", pw->pw_name, host);
    else
        snprintf(out, len, "uid %u@%s", (unsigned)geteuid(), host);
}

/* Whether event_id may be discarded: a stored event, not an account's opening one, with every
 * version before it in the store (else its account would stay stuck behind the hole anyway).
 * Returns 0 when it may, else the exit status with the reason printed. */
static int may_discard(struct pj *p, const char *event_id, char *stream, size_t stream_len, int64_t *version)
{
    const char *params[1] = {event_id};
    PGresult *res;
    char msg[200];
    int rc = 0;

    res = PQexecParams(p->pg,
                       "SELECT e.stream_id::text, e.stream_version, "
                       "(SELECT count(*) FROM events b WHERE b.stream_id = e.stream_id AND b.stream_version < e.stream_version) "
                       "FROM events e WHERE e.event_id = $1::uuid",
                       1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "projector discard-parked: read event '%s': %s\n", event_id, db_error(msg, sizeof msg, p->pg, res));
        rc = 1;
    } else if (PQntuples(res) == 0) {
        fprintf(stderr, "projector discard-parked: '%s' is not in the event store (a stray message): "
                "replay-parked removes it\n", event_id);
        rc = 4;
    } else {
        snprintf(stream, stream_len, "%s", PQgetvalue(res, 0, 0));
        *version = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        if (*version == 1) {
            fprintf(stderr, "projector discard-parked: '%s' opens account %s: an account without its opening "
                    "event cannot be served\n", event_id, stream);
            rc = 4;
        } else if (strtoll(PQgetvalue(res, 0, 2), NULL, 10) != *version - 1) {
            fprintf(stderr, "projector discard-parked: versions before %" PRId64 " of account %s are missing from "
                    "the event store: discarding '%s' would not un-stall it\n", *version, stream, event_id);
            rc = 4;
        }
    }
    PQclear(res);
    return rc;
}

/* Inserts the audit record (kept as it is when the event was discarded before); prints it. */
static int record(struct pj *p, const char *event_id, const char *stream, int64_t version, const char *reason,
                  const char *parked_reason)
{
    char by[320], ver[24], msg[200];
    const char *params[6] = {event_id, stream, ver, reason, parked_reason, by};
    PGresult *res;
    int rc = 0;

    who(by, sizeof by);
    snprintf(ver, sizeof ver, "%" PRId64, version);
    res = PQexecParams(p->pg,
                       "WITH ins AS (INSERT INTO discarded_events (event_id, stream_id, stream_version, reason, "
                       "parked_reason, discarded_by) VALUES ($1::uuid, $2::uuid, $3::int, $4, $5, $6) "
                       "ON CONFLICT (event_id) DO NOTHING RETURNING *, true AS new) "
                       "SELECT new, discarded_by, db_user, discarded_at::text, reason FROM ins "
                       "UNION ALL SELECT false, discarded_by, db_user, discarded_at::text, reason "
                       "FROM discarded_events WHERE event_id = $1::uuid AND NOT EXISTS (SELECT 1 FROM ins)",
                       6, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        fprintf(stderr, "projector discard-parked: record the discard of '%s': %s\n", event_id,
                db_error(msg, sizeof msg, p->pg, res));
        rc = 1;
    } else {
        printf("%s: %s by %s (database user %s) at %s: %s\n", event_id,
               strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? "discarded" : "already discarded", PQgetvalue(res, 0, 1),
               PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4));
    }
    PQclear(res);
    return rc;
}

int pk_cmd_discard(const struct cfg *c, const char *event_id, const char *reason)
{
    struct pj p;
    redisReply *r = NULL;
    json_t *rec = NULL;
    char stream[UUID_STR_SIZE + 8] = "";
    int64_t version = 0;
    int rc = 1;

    if (open_current(&p, c, "discard-parked") != 0)
        goto cleanup;
    r = rds_command(p.rc, "HGET %s %s", RM_PARKED_KEY, event_id);
    if (r == NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        fprintf(stderr, "projector discard-parked: redis: %s\n", r == NULL ? rds_errstr(p.rc) : "bad reply");
        goto cleanup;
    }
    if (r->type == REDIS_REPLY_NIL) {
        fprintf(stderr, "projector discard-parked: no parked event '%s'\n", event_id);
        rc = 5;
        goto cleanup;
    }
    rec = pk_parse_record(r);
    rc = may_discard(&p, event_id, stream, sizeof stream, &version);
    if (rc == 0)
        rc = record(&p, event_id, stream, version, reason, pk_jstr(rec, "reason"));
    /* the account folds past it now, and is un-stalled once nothing else holds it */
    if (rc == 0)
        rc = replay(&p, event_id, "discard-parked");
cleanup:
    json_decref(rec);
    freeReplyObject(r);
    pj_release(&p);
    return rc;
}
