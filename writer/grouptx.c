/* One batch of group commit as one pipelined transaction in two round trips: BEGIN, the
 * locks of every account of the batch (in id order) and the xid (with Idempotency-Keys: their
 * claims and the events' positions); then decisions in memory, and every event, outbox row and
 * account update in one statement (with keys: the responses recorded), NOTIFY and COMMIT. */
#include "grouptx.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "jsonx.h"
#include "reply.h"
#include "sbuf.h"
#include "sql.h"
#include "uuid.h"

/* Postgres array literals built in an sbuf. */
static void arr_item(struct sbuf *b, const char *s)
{
    sbuf_add(b, b->len == 0 ? "{\"" : ",\"", 2);
    for (const char *q = s; *q != '\0';) {
        size_t run = strcspn(q, "\"\\");
        sbuf_add(b, q, run);
        q += run;
        if (*q != '\0') {
            char esc[2] = {'\\', *q};
            sbuf_add(b, esc, 2);
            q++;
        }
    }
    sbuf_add(b, "\"", 1);
}

static void arr_close(struct sbuf *b)
{
    sbuf_add(b, b->len == 0 ? "{}" : "}", b->len == 0 ? 2 : 1);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Reads every result of a pipeline up to its sync; the first failure goes to e. keep[i]
 * (keep may be NULL) receives the result of statement i when every statement up to it met its
 * expected status (the caller PQclears them). */
static status pipeline_collect(PGconn *conn, int nstmts, const ExecStatusType *ok, PGresult **keep,
                               struct err *e)
{
    status st = ST_OK;

    for (int i = 0; i < nstmts; i++) {
        PGresult *res = PQgetResult(conn), *extra;
        if (res == NULL) {
            if (st == ST_OK)
                st = sql_fail(conn, NULL, "pipeline", e);
            return st;
        }
        if (PQresultStatus(res) != ok[i] && st == ST_OK)
            st = sql_fail(conn, res, "batch", e);
        if (keep != NULL && st == ST_OK)
            keep[i] = res;
        else
            PQclear(res);
        while ((extra = PQgetResult(conn)) != NULL) /* the NULL that ends each statement */
            PQclear(extra);
    }
    {
        PGresult *sync = PQgetResult(conn);
        if (PQresultStatus(sync) != PGRES_PIPELINE_SYNC && st == ST_OK)
            st = sql_fail(conn, sync, "pipeline sync", e);
        PQclear(sync);
    }
    return st;
}

static void clear_all(PGresult **res, int n)
{
    for (int i = 0; i < n; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
}

void grouptx_positions(struct pending **batch, int n, const PGresult *res)
{
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        for (int i = 0; i < n; i++)
            for (int k = 0; batch[i]->decided && k < batch[i]->d.count; k++) {
                struct event *ev = &batch[i]->d.events[k];
                if (strcmp(ev->event_id, id) == 0) {
                    ev->position = strtoll(PQgetvalue(res, r, 1), NULL, 10);
                    snprintf(ev->recorded_at, sizeof ev->recorded_at, "%s", PQgetvalue(res, r, 2));
                }
            }
    }
}

static const char *principal_of(const struct pending *p)
{
    return p->m->principal != NULL ? p->m->principal : "";
}

static bool same_key(const struct pending *a, const struct pending *b)
{
    return strcmp(a->m->idempotency_key, b->m->idempotency_key) == 0 &&
           strcmp(principal_of(a), principal_of(b)) == 0;
}

/* The claim statement's arrays (k[0..2]) for the batch's keyed commands; a key used twice in
 * the batch is claimed once, its later commands marked dup (they run alone and replay).
 * Returns how many keys are claimed. */
static int claim_arrays(struct pending **batch, int n, bool *dup, struct sbuf *k)
{
    int nkeyed = 0;

    for (int i = 0; i < n; i++) {
        dup[i] = false;
        if (batch[i]->m->idempotency_key == NULL)
            continue;
        for (int j = 0; j < i && !dup[i]; j++)
            dup[i] = batch[j]->m->idempotency_key != NULL && same_key(batch[i], batch[j]);
        if (dup[i])
            continue;
        arr_item(&k[0], principal_of(batch[i]));
        arr_item(&k[1], batch[i]->m->idempotency_key);
        arr_item(&k[2], batch[i]->request);
        nkeyed++;
    }
    for (int i = 0; i < 3; i++)
        arr_close(&k[i]);
    return nkeyed;
}

/* Marks the commands whose keys the claim returned ("principal, key" rows). */
static void mark_claimed(struct pending **batch, int n, const bool *dup, const PGresult *res)
{
    for (int r = 0; r < PQntuples(res); r++)
        for (int i = 0; i < n; i++)
            if (batch[i]->m->idempotency_key != NULL && !dup[i] &&
                strcmp(batch[i]->m->idempotency_key, PQgetvalue(res, r, 1)) == 0 &&
                strcmp(principal_of(batch[i]), PQgetvalue(res, r, 0)) == 0)
                batch[i]->claimed = true;
}

/* The arrays of a batch with claimed keys (k[0..5]) for idem_batch_finish: the responses of
 * the written commands (their replies built now, before the COMMIT: the record holds them),
 * and the claims of the others (rejected, or run alone) to drop. */
static status key_arrays(struct pending **batch, int n, struct sbuf *k, struct err *e)
{
    status st = ST_OK;

    for (int i = 0; i < n && st == ST_OK; i++) {
        struct pending *p = batch[i];
        char code[8];
        if (!p->claimed)
            continue;
        if (!p->decided) {
            arr_item(&k[4], principal_of(p));
            arr_item(&k[5], p->m->idempotency_key);
            continue;
        }
        st = reply_build(p->c, &p->d, p->out, p->e);
        if (st != ST_OK)
            break;
        snprintf(code, sizeof code, "%d", p->out->http_status);
        arr_item(&k[0], principal_of(p));
        arr_item(&k[1], p->m->idempotency_key);
        arr_item(&k[2], code);
        arr_item(&k[3], p->out->body);
    }
    for (int i = 0; i < 6; i++) {
        arr_close(&k[i]);
        if (k[i].failed && st == ST_OK)
            st = err_set(e, ST_INTERNAL, "out of memory encoding a batch");
    }
    return st;
}

/* Index of id in the sorted, de-duplicated ids (every id looked up is there). */
static int find(char (*ids)[UUID_STR_SIZE], int nids, const char *id)
{
    char(*hit)[UUID_STR_SIZE] = bsearch(id, ids, (size_t)nids, sizeof *ids, cmp_id);
    return (int)(hit - ids);
}

enum grouptx_end grouptx_run(PGconn *conn, struct pending **batch, int n, bool notify, void (*sent)(void *),
                             void *arg, struct fastpub *pub, uint64_t *ticket, char *xid, size_t xid_len,
                             char **event_ids, struct err *e)
{
    enum grouptx_end end = GTX_NOT_COMMITTED;
    status st = ST_OK;
    PGresult *res = NULL, *r1[5] = {NULL, NULL, NULL, NULL, NULL}, *r2[4] = {NULL, NULL, NULL, NULL};
    char (*ids)[UUID_STR_SIZE] = NULL;
    struct account_view *accs = NULL;
    struct event **evs = NULL;
    struct sbuf a[13]; /* 0: locked ids; 1-7: event columns; 8-11: account columns; 12: positions */
    struct sbuf k[3];  /* the keys claimed: principals, keys, request texts */
    struct sbuf kf[6]; /* the keys' responses and the claims dropped (key_arrays) */
    int nids = 0, nev = 0, ntouched = 0, nkeyed = 0, npos = 0;
    bool *touched = NULL, *dup = NULL, in_pipeline = false, keys_claimed = false;
    char retention[16], npos_s[16];

    *ticket = 0;
    *event_ids = NULL;
    xid[0] = '\0';
    memset(a, 0, sizeof a);
    memset(k, 0, sizeof k);
    memset(kf, 0, sizeof kf);
    /* a transfer has two accounts */
    ids = calloc((size_t)n * 2, sizeof *ids);
    accs = calloc((size_t)n * 2, sizeof *accs);
    evs = calloc((size_t)n * DECISION_MAX, sizeof *evs);
    touched = calloc((size_t)n * 2, sizeof *touched);
    dup = calloc((size_t)n, sizeof *dup);
    if (ids == NULL || accs == NULL || evs == NULL || touched == NULL || dup == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        memcpy(ids[nids++], batch[i]->c->account_id, UUID_STR_SIZE);
        npos++; /* the events a command may write: one, a transfer two */
        if (batch[i]->c->kind == CMD_TRANSFER) {
            memcpy(ids[nids++], batch[i]->c->to, UUID_STR_SIZE);
            npos++;
        }
    }
    qsort(ids, (size_t)nids, sizeof *ids, cmp_id);
    {
        int all = nids;
        nids = 0;
        for (int i = 0; i < all; i++)
            if (nids == 0 || strcmp(ids[nids - 1], ids[i]) != 0)
                memmove(ids[nids++], ids[i], UUID_STR_SIZE);
    }
    for (int i = 0; i < nids; i++) {
        arr_item(&a[0], ids[i]);
        account_view_init(&accs[i], ids[i]);
    }
    arr_close(&a[0]);
    nkeyed = claim_arrays(batch, n, dup, k);
    snprintf(retention, sizeof retention, "%d", n > 0 ? batch[0]->retention_s : 0);
    snprintf(npos_s, sizeof npos_s, "%d", npos);
    if (a[0].failed || k[0].failed || k[1].failed || k[2].failed) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }

    /* round trip 1: BEGIN, the locks, the xid (to ask for the outcome if COMMIT's answer is
     * lost), the Idempotency-Keys claimed and positions for the events (the replies recorded
     * with the keys name them, and are built before round trip 2; positions left unused are
     * gaps, as a rollback leaves). Rows locked elsewhere are skipped: their commands run on
     * their own, so one held account never stalls a batch (nor the queue behind it). */
    if (PQenterPipelineMode(conn) != 1) {
        st = sql_fail(conn, NULL, "pipeline", e);
        goto cleanup;
    }
    in_pipeline = true;
    {
        const char *p[1] = {a[0].p}, *kp[4] = {k[0].p, k[1].p, k[2].p, retention}, *pp[1] = {npos_s};
        static const ExecStatusType ok[5] = {PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_TUPLES_OK,
                                             PGRES_TUPLES_OK, PGRES_TUPLES_OK};
        if (PQsendQueryParams(conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
            PQsendQueryPrepared(conn, "batch_lock", 1, p, NULL, NULL, 0) != 1 ||
            PQsendQueryPrepared(conn, "xact_id", 0, NULL, NULL, NULL, 0) != 1 ||
            (nkeyed > 0 && PQsendQueryPrepared(conn, "idem_batch_claim", 4, kp, NULL, NULL, 0) != 1) ||
            (nkeyed > 0 && PQsendQueryPrepared(conn, "ev_positions", 1, pp, NULL, NULL, 0) != 1) ||
            PQpipelineSync(conn) != 1) {
            st = sql_fail(conn, NULL, "send batch locks", e);
            goto cleanup;
        }
        st = pipeline_collect(conn, nkeyed > 0 ? 5 : 3, ok, r1, e);
        if (st != ST_OK)
            goto cleanup;
        snprintf(xid, xid_len, "%s", PQgetvalue(r1[2], 0, 0));
        if (nkeyed > 0)
            mark_claimed(batch, n, dup, r1[3]);
        res = r1[1];
        r1[1] = NULL;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        char(*hit)[UUID_STR_SIZE] = bsearch(id, ids, (size_t)nids, sizeof *ids, cmp_id);
        struct account_view *v;
        if (hit == NULL)
            continue;
        v = &accs[hit - ids];
        snprintf(v->owner, sizeof v->owner, "%s", PQgetvalue(res, r, 1));
        snprintf(v->name, sizeof v->name, "%s", PQgetvalue(res, r, 2));
        snprintf(v->currency, sizeof v->currency, "%s", PQgetvalue(res, r, 3));
        v->overdraft_limit = strtoll(PQgetvalue(res, r, 4), NULL, 10);
        v->balance = strtoll(PQgetvalue(res, r, 5), NULL, 10);
        v->version = strtoll(PQgetvalue(res, r, 6), NULL, 10);
        v->status = strcmp(PQgetvalue(res, r, 7), "closed") == 0 ? ACCOUNT_CLOSED : ACCOUNT_OPEN;
        touched[hit - ids] = true; /* locked; reset below to mean "written" */
    }
    PQclear(res);
    res = NULL;
    for (int i = 0; i < n; i++) {
        /* missing or held by another session: decided on its own (a 404, or a lock wait) */
        batch[i]->alone = !touched[find(ids, nids, batch[i]->c->account_id)] ||
                          (batch[i]->c->kind == CMD_TRANSFER && !touched[find(ids, nids, batch[i]->c->to)]);
        /* a key used before: its replay (or the reuse answer) comes from the one-command path */
        if (batch[i]->m->idempotency_key != NULL && !batch[i]->claimed)
            batch[i]->alone = true;
        keys_claimed = keys_claimed || batch[i]->claimed;
    }
    for (int i = 0; i < nids; i++)
        touched[i] = false;

    /* decisions in arrival order, each on the state the earlier ones left */
    for (int i = 0; i < n; i++) {
        struct pending *p = batch[i];
        if (p->alone)
            continue;
        if (p->c->kind == CMD_TRANSFER)
            p->st = decide_transfer(&accs[find(ids, nids, p->c->account_id)], &accs[find(ids, nids, p->c->to)],
                                    p->c, &p->d, p->e);
        else
            p->st = decide(&accs[find(ids, nids, p->c->account_id)], p->c, &p->d, p->e);
        if (p->st != ST_OK)
            continue; /* rejected: nothing of it is written */
        p->decided = true;
        for (int k = 0; k < p->d.count; k++) {
            struct event *ev = &p->d.events[k];
            int at = find(ids, nids, ev->stream_id);
            struct account_view *v = &accs[at];
            uuid_generate(ev->event_id);
            snprintf(ev->command_id, sizeof ev->command_id, "%s", p->m->command_id);
            snprintf(ev->correlation_id, sizeof ev->correlation_id, "%s", p->m->correlation_id);
            snprintf(ev->idempotency_key, sizeof ev->idempotency_key, "%s",
                     p->m->idempotency_key != NULL ? p->m->idempotency_key : "");
            snprintf(ev->principal, sizeof ev->principal, "%s",
                     p->m->principal != NULL ? p->m->principal : "");
            v->version = ev->stream_version;
            v->balance = p->d.balance_after[k];
            if (ev->type == EV_ACCOUNT_CLOSED)
                v->status = ACCOUNT_CLOSED;
            evs[nev++] = ev;
            touched[at] = true;
        }
    }
    if (nev == 0) {
        end = GTX_COMMITTED; /* nothing to write: rejections and commands to run alone */
        goto cleanup;        /* the caller rolls back */
    }

    if (keys_claimed) {
        if (PQntuples(r1[4]) < nev) {
            st = err_set(e, ST_INTERNAL, "the batch has %d events and %d positions", nev, PQntuples(r1[4]));
            goto cleanup;
        }
        for (int i = 0; i < nev; i++) {
            char pos[24];
            evs[i]->position = strtoll(PQgetvalue(r1[4], i, 0), NULL, 10);
            snprintf(pos, sizeof pos, "%lld", (long long)evs[i]->position);
            arr_item(&a[12], pos);
        }
        arr_close(&a[12]);
        st = key_arrays(batch, n, kf, e);
        if (st != ST_OK)
            goto cleanup;
    }
    for (int i = 0; i < nev; i++) {
        const struct event *ev = evs[i];
        json_t *data = event_data_to_json(ev), *md = event_metadata_to_json(ev);
        char *ds = data != NULL ? jsonx_dump(data) : NULL, *ms = md != NULL ? jsonx_dump(md) : NULL;
        char ver[24], schema[12];
        snprintf(ver, sizeof ver, "%lld", (long long)ev->stream_version);
        snprintf(schema, sizeof schema, "%d", ev->schema);
        arr_item(&a[1], ev->event_id);
        arr_item(&a[2], ev->stream_id);
        arr_item(&a[3], ver);
        arr_item(&a[4], event_type_name(ev->type));
        arr_item(&a[5], schema);
        if (ds == NULL || ms == NULL)
            a[6].failed = true;
        else {
            arr_item(&a[6], ds);
            arr_item(&a[7], ms);
        }
        json_decref(data);
        json_decref(md);
        free(ds);
        free(ms);
    }
    for (int i = 0; i < nids; i++) {
        char bal[24], ver[24];
        if (!touched[i])
            continue;
        ntouched++;
        snprintf(bal, sizeof bal, "%lld", (long long)accs[i].balance);
        snprintf(ver, sizeof ver, "%lld", (long long)accs[i].version);
        arr_item(&a[8], accs[i].account_id);
        arr_item(&a[9], bal);
        arr_item(&a[10], ver);
        arr_item(&a[11], accs[i].status == ACCOUNT_CLOSED ? "closed" : "open");
    }
    for (int i = 1; i <= 11; i++)
        arr_close(&a[i]);
    for (int i = 0; i <= 12; i++)
        if (a[i].failed) {
            st = err_set(e, ST_INTERNAL, "out of memory encoding a batch");
            goto cleanup;
        }
    *event_ids = a[1].p; /* what to look for when the COMMIT's answer is lost */
    a[1].p = NULL;
    /* round trip 2: everything written, the keys' responses recorded, the relay notified,
     * committed */
    {
        const char *p[12] = {*event_ids, a[2].p, a[3].p, a[4].p, a[5].p, a[6].p, a[7].p,
                             a[8].p, a[9].p, a[10].p, a[11].p, a[12].p};
        const char *kp[6] = {kf[0].p, kf[1].p, kf[2].p, kf[3].p, kf[4].p, kf[5].p};
        ExecStatusType ok[4] = {PGRES_TUPLES_OK};
        int nstmts = 1;
        if (keys_claimed)
            ok[nstmts++] = PGRES_TUPLES_OK;
        if (notify)
            ok[nstmts++] = PGRES_TUPLES_OK;
        ok[nstmts++] = PGRES_COMMAND_OK;
        /* the rows are locked: whatever committed on them before has its ticket already */
        *ticket = fastpub_ticket(pub);
        if ((keys_claimed ? PQsendQueryPrepared(conn, "batch_append_at", 12, p, NULL, NULL, 0)
                          : PQsendQueryPrepared(conn, "batch_append", 11, p, NULL, NULL, 0)) != 1 ||
            (keys_claimed && PQsendQueryPrepared(conn, "idem_batch_finish", 6, kp, NULL, NULL, 0) != 1) ||
            (notify && PQsendQueryPrepared(conn, "notify", 0, NULL, NULL, NULL, 0) != 1) ||
            PQsendQueryParams(conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1 || PQpipelineSync(conn) != 1) {
            /* some of it may have reached the server: only Postgres can say */
            st = sql_fail(conn, NULL, "send batch", e);
            end = db_broken(conn) ? GTX_COMMIT_LOST : GTX_NOT_COMMITTED;
            goto cleanup;
        }
        if (sent != NULL)
            sent(arg);
        st = pipeline_collect(conn, nstmts, ok, r2, e);
        if (st == ST_OK && sql_committed(r2[nstmts - 1], e) != ST_OK) {
            end = GTX_NOT_COMMITTED; /* answered ROLLBACK: nothing applied */
            st = e->code;
            goto cleanup;
        }
        if (st != ST_OK) {
            /* a statement error aborts the rest, COMMIT included; a broken connection may
             * have lost the answer to a COMMIT that happened */
            end = db_broken(conn) ? GTX_COMMIT_LOST : GTX_NOT_COMMITTED;
            goto cleanup;
        }
        res = r2[0];
        r2[0] = NULL;
    }
    if (PQntuples(res) != nev || strtol(PQgetvalue(res, 0, 3), NULL, 10) != ntouched) {
        /* committed, but not what was asked: a 500 that says so, never a retry hint */
        end = GTX_COMMITTED_WRONG;
        st = err_setr(e, ST_INTERNAL, "outcome_unknown",
                      "the batch committed %d events and %s account updates where %d and %d were "
                      "expected",
                      PQntuples(res), PQntuples(res) > 0 ? PQgetvalue(res, 0, 3) : "?", nev, ntouched);
        goto cleanup;
    }
    grouptx_positions(batch, n, res);
    end = GTX_COMMITTED;
cleanup:
    PQclear(res);
    clear_all(r1, 5);
    clear_all(r2, 4);
    /* fails when results were left unread: the caller then drops the connection */
    if (in_pipeline && PQpipelineStatus(conn) != PQ_PIPELINE_OFF)
        (void)PQexitPipelineMode(conn);
    for (int i = 0; i <= 12; i++)
        sbuf_release(&a[i]);
    for (int i = 0; i < 3; i++)
        sbuf_release(&k[i]);
    for (int i = 0; i < 6; i++)
        sbuf_release(&kf[i]);
    free(dup);
    free(ids);
    free(accs);
    free(evs);
    free(touched);
    if (st != ST_OK && end == GTX_COMMITTED)
        end = GTX_NOT_COMMITTED; /* failed before anything was sent for the COMMIT */
    return end;
}

