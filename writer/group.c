/* Group commit.
 * Deposits, withdrawals and closes without an Idempotency-Key that arrive while other batches
 * are in flight queue up; whoever finds a free leader slot takes the queue and runs it as one
 * transaction in two round trips (BEGIN + lock, then events/outbox/accounts + notify + COMMIT),
 * so N concurrent commands share one WAL flush. Every guarantee of the one-command path holds:
 * decisions run in arrival order on the locked rows, so per-account serialisation and If-Match
 * see each earlier command of the batch; a rejected command adds nothing; a reply is released
 * only after the COMMIT. A batch that fails for a definite reason (a constraint, a deadlock)
 * is rolled back and each command is run again on its own, so one command never fails another. */
#include "group.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "decide.h"
#include "jsonx.h"
#include "reply.h"
#include "single.h"
#include "sql.h"
#include "uuid.h"

#define BATCH_MAX 128

struct pending {
    const struct command *c;
    const struct store_meta *m;
    struct store_reply *out;
    struct err *e;
    status st;
    bool done;
    pthread_cond_t cv;
    struct pending *next;
    /* filled while the batch runs */
    struct decision d;
    bool decided;
};

/* A growable string with a Postgres array literal builder; oom sticks. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void arr_item(struct sbuf *b, const char *s)
{
    sb_put(b, b->len == 0 ? "{\"" : ",\"", 2);
    for (const char *q = s; *q != '\0';) {
        size_t run = strcspn(q, "\"\\");
        sb_put(b, q, run);
        q += run;
        if (*q != '\0') {
            char esc[2] = {'\\', *q};
            sb_put(b, esc, 2);
            q++;
        }
    }
    sb_put(b, "\"", 1);
}

static void arr_close(struct sbuf *b)
{
    sb_put(b, b->len == 0 ? "{}" : "}", b->len == 0 ? 2 : 1);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Reads every result of a pipeline up to its sync; the first failure goes to e. *res_keep
 * (may be NULL) receives the result of statement index `keep`. Returns ST_OK when all
 * statements met their expected status. */
static status pipeline_collect(PGconn *conn, int nstmts, const ExecStatusType *ok, int keep,
                               PGresult **res_keep, struct err *e)
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
        if (i == keep && res_keep != NULL && st == ST_OK)
            *res_keep = res;
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

/* Runs the batch. *definite: on failure, whether the transaction certainly did not commit
 * (then the commands may run again on their own). */
static status batch_transact(PGconn *conn, struct pending **batch, int n, bool *definite, struct err *e)
{
    status st = ST_OK;
    PGresult *res = NULL;
    char (*ids)[UUID_STR_SIZE] = NULL;
    struct account_view *accs = NULL;
    struct event **evs = NULL;
    struct sbuf a[12]; /* 0: locked ids; 1-7: event columns; 8-11: account columns */
    int nids = 0, nev = 0, ntouched = 0;
    bool *touched = NULL, in_pipeline = false;

    *definite = true;
    memset(a, 0, sizeof a);
    ids = calloc((size_t)n, sizeof *ids);
    accs = calloc((size_t)n, sizeof *accs);
    evs = calloc((size_t)n * DECISION_MAX, sizeof *evs);
    touched = calloc((size_t)n, sizeof *touched);
    if (ids == NULL || accs == NULL || evs == NULL || touched == NULL) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }
    for (int i = 0; i < n; i++)
        memcpy(ids[i], batch[i]->c->account_id, UUID_STR_SIZE);
    qsort(ids, (size_t)n, sizeof *ids, cmp_id);
    for (int i = 0; i < n; i++)
        if (nids == 0 || strcmp(ids[nids - 1], ids[i]) != 0)
            memmove(ids[nids++], ids[i], UUID_STR_SIZE);
    for (int i = 0; i < nids; i++) {
        arr_item(&a[0], ids[i]);
        account_view_init(&accs[i], ids[i]);
    }
    arr_close(&a[0]);
    if (a[0].oom) {
        st = err_set(e, ST_INTERNAL, "out of memory");
        goto cleanup;
    }

    /* round trip 1: BEGIN and the locks */
    if (PQenterPipelineMode(conn) != 1) {
        st = sql_fail(conn, NULL, "pipeline", e);
        goto cleanup;
    }
    in_pipeline = true;
    {
        const char *p[1] = {a[0].p};
        static const ExecStatusType ok[2] = {PGRES_COMMAND_OK, PGRES_TUPLES_OK};
        if (PQsendQueryParams(conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
            PQsendQueryPrepared(conn, "batch_lock", 1, p, NULL, NULL, 0) != 1 || PQpipelineSync(conn) != 1) {
            st = sql_fail(conn, NULL, "send batch locks", e);
            goto cleanup;
        }
        st = pipeline_collect(conn, 2, ok, 1, &res, e);
        if (st != ST_OK)
            goto cleanup;
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
    }
    PQclear(res);
    res = NULL;

    /* decisions in arrival order, each on the state the earlier ones left */
    for (int i = 0; i < n; i++) {
        struct pending *p = batch[i];
        char(*hit)[UUID_STR_SIZE] = bsearch(p->c->account_id, ids, (size_t)nids, sizeof *ids, cmp_id);
        struct account_view *v = &accs[hit - ids];
        p->st = decide(v, p->c, &p->d, p->e);
        if (p->st != ST_OK)
            continue; /* rejected: nothing of it is written */
        p->decided = true;
        for (int k = 0; k < p->d.count; k++) {
            struct event *ev = &p->d.events[k];
            uuid_generate(ev->event_id);
            snprintf(ev->command_id, sizeof ev->command_id, "%s", p->m->command_id);
            snprintf(ev->correlation_id, sizeof ev->correlation_id, "%s", p->m->correlation_id);
            ev->idempotency_key[0] = '\0';
            v->version = ev->stream_version;
            v->balance = p->d.balance_after[k];
            if (ev->type == EV_ACCOUNT_CLOSED)
                v->status = ACCOUNT_CLOSED;
            evs[nev++] = ev;
        }
        touched[hit - ids] = true;
    }
    if (nev == 0)
        goto cleanup; /* every command was rejected: the caller rolls back */

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
            a[6].oom = true;
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
    for (int i = 0; i <= 11; i++)
        if (a[i].oom) {
            st = err_set(e, ST_INTERNAL, "out of memory encoding a batch");
            goto cleanup;
        }
    /* round trip 2: everything written, the relay notified, committed */
    {
        const char *p[11] = {a[1].p, a[2].p, a[3].p, a[4].p, a[5].p, a[6].p, a[7].p,
                             a[8].p, a[9].p, a[10].p, a[11].p};
        static const ExecStatusType ok[3] = {PGRES_TUPLES_OK, PGRES_TUPLES_OK, PGRES_COMMAND_OK};
        if (PQsendQueryPrepared(conn, "batch_append", 11, p, NULL, NULL, 0) != 1 ||
            PQsendQueryPrepared(conn, "notify", 0, NULL, NULL, NULL, 0) != 1 ||
            PQsendQueryParams(conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1 || PQpipelineSync(conn) != 1) {
            *definite = false;
            st = sql_fail(conn, NULL, "send batch", e);
            goto cleanup;
        }
        st = pipeline_collect(conn, 3, ok, 0, &res, e);
        if (st != ST_OK) {
            /* a statement error aborts the rest, COMMIT included; a broken connection may
             * have lost the answer to a COMMIT that happened */
            *definite = !db_broken(conn);
            goto cleanup;
        }
    }
    if (PQntuples(res) != nev || strtol(PQgetvalue(res, 0, 3), NULL, 10) != ntouched) {
        /* committed, but not what was asked: a 500 that says so, never a retry hint */
        *definite = false;
        st = err_set(e, ST_INTERNAL,
                     "the batch committed %d events and %s account updates where %d and %d were "
                     "expected: check the account before sending this command again",
                     PQntuples(res), PQntuples(res) > 0 ? PQgetvalue(res, 0, 3) : "?", nev, ntouched);
        goto cleanup;
    }
    for (int r = 0; r < nev; r++) {
        const char *id = PQgetvalue(res, r, 0);
        for (int i = 0; i < nev; i++)
            if (strcmp(evs[i]->event_id, id) == 0) {
                evs[i]->position = strtoll(PQgetvalue(res, r, 1), NULL, 10);
                snprintf(evs[i]->recorded_at, sizeof evs[i]->recorded_at, "%s", PQgetvalue(res, r, 2));
                break;
            }
    }
cleanup:
    PQclear(res);
    /* fails when results were left unread: the caller then drops the connection */
    if (in_pipeline && PQpipelineStatus(conn) != PQ_PIPELINE_OFF)
        (void)PQexitPipelineMode(conn);
    for (int i = 0; i <= 11; i++)
        free(a[i].p);
    free(ids);
    free(accs);
    free(evs);
    free(touched);
    return st;
}

struct group {
    struct pool *pool;
    pthread_mutex_t qmu;
    struct pending *qhead, *qtail; /* queued commands */
    int leaders, max_leaders;      /* batches running now */
};

status group_create(struct group **out, struct pool *p, struct err *e)
{
    struct group *b = calloc(1, sizeof *b);

    *out = NULL;
    if (b == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    b->pool = p;
    pthread_mutex_init(&b->qmu, NULL);
    /* One batch at a time: while it waits for its commit the next one fills up, which makes
     * the batches (and the saving) largest; measured 4,800 deposits/s against 2,100 with four
     * concurrent batches on 2 cores (docs/benchmarks.md). The other connections serve the
     * commands that do not batch (open, transfer, reversal, keyed). */
    b->max_leaders = 1;
    *out = b;
    return ST_OK;
}

void group_free(struct group **bp)
{
    struct group *b = *bp;

    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->qmu);
    free(b);
    *bp = NULL;
}

static void run_batch(struct group *s, struct pending **batch, int n)
{
    struct pool_slot *sl = NULL;
    struct err be = {0};
    bool definite = true;
    status st;

    for (int i = 0; i < n; i++) {
        batch[i]->decided = false;
        batch[i]->st = ST_OK;
    }
    st = pool_checkout(s->pool, &sl, &be);
    if (st == ST_OK) {
        st = batch_transact(sl->conn, batch, n, &definite, &be);
        if (PQpipelineStatus(sl->conn) != PQ_PIPELINE_OFF) {
            PQfinish(sl->conn); /* left mid-pipeline: not reusable */
            sl->conn = NULL;
        } else if (PQtransactionStatus(sl->conn) != PQTRANS_IDLE) {
            PGresult *res = PQexec(sl->conn, "ROLLBACK");
            PQclear(res);
        }
        pool_checkin(s->pool, sl);
    }
    if (st == ST_OK) {
        for (int i = 0; i < n; i++)
            if (batch[i]->decided) {
                batch[i]->st = reply_build(batch[i]->c, &batch[i]->d, batch[i]->out, batch[i]->e);
                if (batch[i]->st != ST_OK) {
                    free(batch[i]->out->body);
                    memset(batch[i]->out, 0, sizeof *batch[i]->out);
                }
            }
        return;
    }
    for (int i = 0; i < n; i++) {
        struct pending *p = batch[i];
        bool committed = !definite && be.code == ST_INTERNAL; /* see batch_transact */
        if (committed && !p->decided && p->st != ST_OK)
            continue; /* its rejection stands: the state it was decided on is committed */
        free(p->out->body);
        memset(p->out, 0, sizeof *p->out);
        err_clear(p->e);
        if (definite && be.code != ST_UNAVAILABLE) {
            p->st = single_execute(s->pool, p->c, p->m, p->out, p->e); /* on its own, so no command fails another */
        } else {
            *p->e = be;
            if (!definite && !committed)
                err_setr(p->e, ST_UNAVAILABLE, "store_unavailable", "outcome unknown: %s", be.msg);
            p->st = p->e->code;
        }
    }
}

bool group_accepts(const struct command *c, const struct store_meta *m)
{
    return m->idempotency_key == NULL &&
           (c->kind == CMD_DEPOSIT || c->kind == CMD_WITHDRAW || c->kind == CMD_CLOSE);
}
status group_execute(struct group *s, const struct command *c, const struct store_meta *m,
                     struct store_reply *out, struct err *e)
{
    struct pending p, *batch[BATCH_MAX];

    memset(out, 0, sizeof *out);
    memset(&p, 0, sizeof p);
    p.c = c;
    p.m = m;
    p.out = out;
    p.e = e;
    pthread_cond_init(&p.cv, NULL);
    pthread_mutex_lock(&s->qmu);
    if (s->qtail != NULL)
        s->qtail->next = &p;
    else
        s->qhead = &p;
    s->qtail = &p;
    while (!p.done) {
        int n = 0;
        if (s->leaders >= s->max_leaders || s->qhead == NULL) {
            pthread_cond_wait(&p.cv, &s->qmu);
            continue;
        }
        while (s->qhead != NULL && n < BATCH_MAX) {
            batch[n++] = s->qhead;
            s->qhead = s->qhead->next;
        }
        if (s->qhead == NULL)
            s->qtail = NULL;
        s->leaders++;
        pthread_mutex_unlock(&s->qmu);
        run_batch(s, batch, n);
        pthread_mutex_lock(&s->qmu);
        s->leaders--;
        for (int i = 0; i < n; i++) {
            batch[i]->done = true;
            if (batch[i] != &p)
                pthread_cond_signal(&batch[i]->cv);
        }
        if (s->qhead != NULL) /* hand the lead to the oldest waiter */
            pthread_cond_signal(&s->qhead->cv);
    }
    pthread_mutex_unlock(&s->qmu);
    pthread_cond_destroy(&p.cv);
    if (p.st != ST_OK) {
        free(out->body);
        memset(out, 0, sizeof *out);
    }
    return p.st;
}
