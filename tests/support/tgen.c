/* History generator: drives the production fold so every generated stream is valid. */
#include "tgen.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "db.h"
#include "jsonx.h"
#include "support.h"

uint64_t tgen_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ULL;
}

struct gacct {
    struct account_view v;
    long *reversible; /* indexes into h->events of this account's not yet reversed money events */
    long nrev, caprev;
};

static void uuid_from_rand(char out[UUID_STR_SIZE], uint64_t *s)
{
    uint64_t a = tgen_rand(s), b = tgen_rand(s);
    snprintf(out, UUID_STR_SIZE, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff, (unsigned)(0x8000 | ((b >> 48) & 0x3fff)),
             (unsigned long long)(b & 0xffffffffffffULL));
}

static struct event *push(struct tgen_history *h, struct gacct *a, enum event_type t, uint64_t *s)
{
    struct event *ev;
    struct err e;

    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->events = realloc(h->events, (size_t)h->cap * sizeof *h->events);
        if (h->events == NULL)
            tfail("out of memory");
    }
    ev = &h->events[h->n];
    memset(ev, 0, sizeof *ev);
    uuid_from_rand(ev->event_id, s);
    snprintf(ev->stream_id, sizeof ev->stream_id, "%s", a->v.account_id);
    ev->stream_version = a->v.version + 1;
    ev->position = h->n + 1;
    ev->type = t;
    ev->schema = EVENT_SCHEMA_CURRENT;
    snprintf(ev->recorded_at, sizeof ev->recorded_at, "2026-11-21T20:00:00.000000Z");
    (void)e;
    return ev;
}

static void commit(struct tgen_history *h, struct gacct *a, int reversible)
{
    struct err e;
    struct event *ev = &h->events[h->n];

    if (proj_evolve(&a->v, ev, NULL, &e) != ST_OK)
        tfail("generator produced an invalid event: %s", e.msg);
    if (reversible) {
        if (a->nrev == a->caprev) {
            a->caprev = a->caprev ? a->caprev * 2 : 16;
            a->reversible = realloc(a->reversible, (size_t)a->caprev * sizeof(long));
        }
        a->reversible[a->nrev++] = h->n;
    }
    h->n++;
}

static int64_t available(const struct gacct *a)
{
    return a->v.balance + a->v.overdraft_limit;
}

static void drop_reversible(struct gacct *a, long idx)
{
    for (long i = 0; i < a->nrev; i++)
        if (a->reversible[i] == idx) {
            a->reversible[i] = a->reversible[--a->nrev];
            return;
        }
}

void tgen_generate(struct tgen_history *h, int naccounts, long nevents, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    struct gacct *acc = calloc((size_t)naccounts, sizeof *acc);
    struct event *ev;

    memset(h, 0, sizeof *h);
    h->naccounts = naccounts;
    h->accounts = calloc((size_t)naccounts, sizeof *h->accounts);
    for (int i = 0; i < naccounts; i++) {
        uuid_from_rand(h->accounts[i], &s);
        account_view_init(&acc[i].v, h->accounts[i]);
        ev = push(h, &acc[i], EV_ACCOUNT_OPENED, &s);
        snprintf(ev->owner, sizeof ev->owner, "gen-owner-%d", i % 50);
        snprintf(ev->name, sizeof ev->name, "account %d", i);
        snprintf(ev->currency, sizeof ev->currency, "EUR");
        ev->overdraft_limit = (int64_t)(tgen_rand(&s) % 3) * 5000;
        commit(h, &acc[i], 0);
    }
    while (h->n < nevents - naccounts / 5) {
        int i = (int)(tgen_rand(&s) % (uint64_t)naccounts);
        struct gacct *a = &acc[i];
        unsigned op = (unsigned)(tgen_rand(&s) % 100);
        int64_t amount = 1 + (int64_t)(tgen_rand(&s) % 20000);

        if (op < 40) {
            ev = push(h, a, EV_MONEY_DEPOSITED, &s);
            ev->amount = amount;
            snprintf(ev->description, sizeof ev->description, "deposit %ld", h->n);
            commit(h, a, 1);
        } else if (op < 62) {
            if (amount > available(a))
                continue;
            ev = push(h, a, EV_MONEY_WITHDRAWN, &s);
            ev->amount = amount;
            snprintf(ev->description, sizeof ev->description, "withdrawal %ld", h->n);
            commit(h, a, 1);
        } else if (op < 87) {
            int j = (int)(tgen_rand(&s) % (uint64_t)naccounts);
            struct gacct *b = &acc[j];
            char tid[UUID_STR_SIZE];
            if (j == i || amount > available(a))
                continue;
            uuid_from_rand(tid, &s);
            ev = push(h, a, EV_TRANSFER_SENT, &s);
            ev->amount = amount;
            snprintf(ev->transfer_id, sizeof ev->transfer_id, "%s", tid);
            snprintf(ev->counterparty, sizeof ev->counterparty, "%s", b->v.account_id);
            snprintf(ev->description, sizeof ev->description, "transfer");
            commit(h, a, 1);
            ev = push(h, b, EV_TRANSFER_RECEIVED, &s);
            ev->amount = amount;
            snprintf(ev->transfer_id, sizeof ev->transfer_id, "%s", tid);
            snprintf(ev->counterparty, sizeof ev->counterparty, "%s", a->v.account_id);
            snprintf(ev->description, sizeof ev->description, "transfer");
            commit(h, b, 1);
        } else {
            long idx, other = -1;
            struct event orig;
            struct gacct *b = NULL;
            if (a->nrev == 0)
                continue;
            idx = a->reversible[tgen_rand(&s) % (uint64_t)a->nrev];
            orig = h->events[idx];
            if (orig.type == EV_TRANSFER_SENT || orig.type == EV_TRANSFER_RECEIVED) {
                /* the other leg: same transfer_id on the counterparty */
                for (int k = 0; k < naccounts; k++)
                    if (strcmp(acc[k].v.account_id, orig.counterparty) == 0)
                        b = &acc[k];
                for (long k = 0; b != NULL && k < b->nrev; k++)
                    if (strcmp(h->events[b->reversible[k]].transfer_id, orig.transfer_id) == 0)
                        other = b->reversible[k];
                if (other < 0)
                    continue; /* other leg already reversed */
                if (a->v.balance - event_balance_effect(&orig) < -a->v.overdraft_limit ||
                    b->v.balance - event_balance_effect(&h->events[other]) < -b->v.overdraft_limit)
                    continue;
            } else if (a->v.balance - event_balance_effect(&orig) < -a->v.overdraft_limit) {
                continue;
            }
            ev = push(h, a, EV_TRANSACTION_REVERSED, &s);
            ev->amount = -event_balance_effect(&orig);
            snprintf(ev->reversed_event_id, sizeof ev->reversed_event_id, "%s", orig.event_id);
            snprintf(ev->reason, sizeof ev->reason, "reversal");
            commit(h, a, 0);
            drop_reversible(a, idx);
            if (other >= 0) {
                struct event o2 = h->events[other];
                ev = push(h, b, EV_TRANSACTION_REVERSED, &s);
                ev->amount = -event_balance_effect(&o2);
                snprintf(ev->reversed_event_id, sizeof ev->reversed_event_id, "%s", o2.event_id);
                snprintf(ev->reason, sizeof ev->reason, "reversal of transfer");
                commit(h, b, 0);
                drop_reversible(b, other);
            }
        }
    }
    /* close about one account in ten, at balance 0 */
    for (int i = 0; i < naccounts; i += 10) {
        struct gacct *a = &acc[i];
        if (a->v.balance != 0) {
            ev = push(h, a, a->v.balance > 0 ? EV_MONEY_WITHDRAWN : EV_MONEY_DEPOSITED, &s);
            ev->amount = a->v.balance > 0 ? a->v.balance : -a->v.balance;
            snprintf(ev->description, sizeof ev->description, "settle before close");
            commit(h, a, 0);
        }
        ev = push(h, a, EV_ACCOUNT_CLOSED, &s);
        snprintf(ev->reason, sizeof ev->reason, "customer request");
        commit(h, a, 0);
    }
    for (int i = 0; i < naccounts; i++)
        free(acc[i].reversible);
    free(acc);
}

void tgen_insert(const struct tgen_history *h, const char *database_url)
{
    PGconn *pg = PQconnectdb(database_url);
    PGresult *res;

    if (PQstatus(pg) != CONNECTION_OK)
        tfail("connect: %s", PQerrorMessage(pg));
    res = PQexec(pg, "BEGIN");
    PQclear(res);
    res = PQprepare(pg, "ins",
                    "INSERT INTO events (position, event_id, stream_id, stream_version, type, schema, "
                    "data, metadata, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    9, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("prepare: %s", PQerrorMessage(pg));
    PQclear(res);
    for (long i = 0; i < h->n; i++) {
        const struct event *ev = &h->events[i];
        char pos[24], ver[24], schema[8];
        json_t *data = event_data_to_json(ev), *md = event_metadata_to_json(ev);
        char *ds = jsonx_dump(data), *ms = jsonx_dump(md);
        const char *p[9] = {pos, ev->event_id, ev->stream_id, ver, event_type_name(ev->type), schema,
                            ds, ms, ev->recorded_at};
        snprintf(pos, sizeof pos, "%lld", (long long)ev->position);
        snprintf(ver, sizeof ver, "%lld", (long long)ev->stream_version);
        snprintf(schema, sizeof schema, "%d", ev->schema);
        res = PQexecPrepared(pg, "ins", 9, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            tfail("insert event %ld: %s", i, PQerrorMessage(pg));
        PQclear(res);
        free(ds);
        free(ms);
        json_decref(data);
        json_decref(md);
    }
    res = PQexec(pg, "SELECT setval(pg_get_serial_sequence('events', 'position'), "
                     "(SELECT max(position) FROM events))");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("setval: %s", PQerrorMessage(pg));
    PQclear(res);
    res = PQexec(pg, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("commit: %s", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
}

void tgen_release(struct tgen_history *h)
{
    free(h->events);
    free(h->accounts);
    memset(h, 0, sizeof *h);
}

void tgen_fresh_history(struct tgen_history *h, int naccounts, long nevents, uint64_t seed)
{
    PGconn *pg = NULL;
    struct err e;

    treset_state();
    if (db_connect(&pg, tenv("DATABASE_URL"), 5000, &e) != ST_OK || db_migrate(pg, &e) != ST_OK)
        tfail("migrate: %s", e.msg);
    PQfinish(pg);
    tgen_release(h);
    tgen_generate(h, naccounts, nevents, seed);
}

void tgen_fresh_store(struct tgen_history *h, int naccounts, long nevents, uint64_t seed)
{
    tgen_fresh_history(h, naccounts, nevents, seed);
    tgen_insert(h, tenv("DATABASE_URL"));
}
