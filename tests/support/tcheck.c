/* Oracle: fold the event store with the production fold and compare with Redis. */
#include "tcheck.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "account.h"
#include "cfg.h"
#include "db.h"
#include "support.h"

struct folded {
    struct account_view acc;
    char **entries; /* JSON per version */
    long n, cap;
};

static int compare_account(redisContext *rc, long gen, const struct folded *f, int verbose,
                           int *printed)
{
    char *doc = account_view_to_json(&f->acc);
    redisReply *h = NULL, *l = NULL;
    int bad = 0;
    char akey[128], skey[128];

    snprintf(akey, sizeof akey, "rm:%ld:a:{%s}", gen, f->acc.account_id);
    snprintf(skey, sizeof skey, "rm:%ld:s:{%s}", gen, f->acc.account_id);
    redisAppendCommand(rc, "HMGET %s v doc", akey);
    redisAppendCommand(rc, "LRANGE %s 0 -1", skey);
    if (redisGetReply(rc, (void **)&h) != REDIS_OK || redisGetReply(rc, (void **)&l) != REDIS_OK)
        tfail("redis read failed");
#define DIFF(...)                                     \
    do {                                              \
        bad = 1;                                      \
        if (verbose && (*printed)++ < 20) {           \
            fprintf(stderr, "  %s: ", f->acc.account_id); \
            fprintf(stderr, __VA_ARGS__);             \
            fprintf(stderr, "\n");                    \
        }                                             \
    } while (0)
    if (h->type != REDIS_REPLY_ARRAY || h->element[0]->type != REDIS_REPLY_STRING) {
        DIFF("missing from the read model (expected version %lld)", (long long)f->acc.version);
        goto cleanup;
    }
    if (atoll(h->element[0]->str) != f->acc.version)
        DIFF("version %s, fold says %lld", h->element[0]->str, (long long)f->acc.version);
    if (h->element[1]->type != REDIS_REPLY_STRING || strcmp(h->element[1]->str, doc) != 0)
        DIFF("doc %s, fold says %s", h->element[1]->type == REDIS_REPLY_STRING ? h->element[1]->str : "(nil)",
             doc);
    if ((long)l->elements != f->n)
        DIFF("statement has %zu entries, fold says %ld", l->elements, f->n);
    for (size_t i = 0; i < l->elements && (long)i < f->n; i++)
        if (strcmp(l->element[i]->str, f->entries[i]) != 0) {
            DIFF("statement entry %zu is %s, fold says %s", i + 1, l->element[i]->str, f->entries[i]);
            break;
        }
#undef DIFF
cleanup:
    freeReplyObject(h);
    freeReplyObject(l);
    free(doc);
    return bad;
}

long tcheck_readmodels(struct tcheck_stats *stats, int verbose)
{
    PGconn *pg = PQconnectdb(tenv("DATABASE_URL"));
    redisContext *rc = tredis_open();
    PGresult *res;
    redisReply *r;
    long gen, mismatches = 0, accounts = 0, redis_accounts;
    int printed = 0, rows;
    struct folded f;
    struct err e;
    char pattern[64];

    if (PQstatus(pg) != CONNECTION_OK)
        tfail("connect to postgres: %s", PQerrorMessage(pg));
    r = redisCommand(rc, "GET rm:current");
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        if (verbose)
            fprintf(stderr, "  no current generation in redis\n");
        freeReplyObject(r);
        redisFree(rc);
        PQfinish(pg);
        return 1;
    }
    gen = atol(r->str);
    freeReplyObject(r);

    res = PQexec(pg, "SELECT " DB_EVENT_COLUMNS " FROM events ORDER BY stream_id, stream_version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("read events: %s", PQerrorMessage(pg));
    rows = PQntuples(res);
    memset(&f, 0, sizeof f);
    for (int i = 0; i <= rows; i++) {
        struct event ev;
        struct statement_entry en;
        if (i < rows && db_event_from_row(&ev, res, i, 0, &e) != ST_OK)
            tfail("event row %d does not decode: %s", i, e.msg);
        if (i == rows || strcmp(ev.stream_id, f.acc.account_id) != 0) {
            if (f.acc.account_id[0] != '\0') {
                accounts++;
                mismatches += compare_account(rc, gen, &f, verbose, &printed);
                for (long k = 0; k < f.n; k++)
                    free(f.entries[k]);
                f.n = 0;
            }
            if (i == rows)
                break;
            account_view_init(&f.acc, ev.stream_id);
        }
        if (proj_evolve(&f.acc, &ev, &en, &e) != ST_OK)
            tfail("the event store does not fold: %s", e.msg);
        if (f.n == f.cap) {
            f.cap = f.cap ? f.cap * 2 : 64;
            f.entries = realloc(f.entries, (size_t)f.cap * sizeof *f.entries);
        }
        f.entries[f.n++] = statement_entry_encode(&en); /* the stored form */
    }
    free(f.entries);
    PQclear(res);
    PQfinish(pg);

    /* nothing in Redis that the event store does not have */
    snprintf(pattern, sizeof pattern, "rm:%ld:a:*", gen);
    redis_accounts = tredis_count_keys(rc, pattern);
    if (redis_accounts != accounts) {
        if (verbose)
            fprintf(stderr, "  redis holds %ld accounts, the event store %ld\n", redis_accounts,
                    accounts);
        mismatches++;
    }
    redisFree(rc);
    if (stats != NULL) {
        stats->accounts = accounts;
        stats->events = rows;
        stats->mismatches = mismatches;
    }
    return mismatches;
}

long tcheck_wait_converged(int timeout_ms, struct tcheck_stats *stats)
{
    int64_t deadline = tnow_ms() + timeout_ms;
    long bad;

    for (;;) {
        bad = tcheck_readmodels(stats, 0);
        if (bad == 0 || tnow_ms() > deadline)
            break;
        usleep(200000);
    }
    if (bad != 0)
        tcheck_readmodels(stats, 1);
    return bad;
}

void tcheck_expect_exact(const char *when, int timeout_ms)
{
    struct tcheck_stats st;
    long bad = tcheck_wait_converged(timeout_ms, &st);

    fprintf(stderr, "%s: %ld accounts, %ld events, %ld mismatches\n", when, st.accounts, st.events, bad);
    assert_int_equal(bad, 0);
}
