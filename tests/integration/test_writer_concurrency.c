/* Writer under concurrency against the real stack: racing debits on one account, opposite
 * transfers between two accounts, and one Idempotency-Key sent many times at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"
#include "tgen.h"
#include "thttp.h"
#include "tstack.h"
#include "twriter.h"

#define THREADS 16
#define MONEY_OPS 200
#define TRANSFERS 100
#define IDEM_COPIES 20

static pid_t writer_pid;
static const char *writer_url; /* read before any thread starts: tenv is not thread-safe */
static char owner[64];

static int setup(void **state)
{
    (void)state;
    treset_state();
    writer_url = tenv("WRITER_URL");
    writer_pid = tsvc_start("writer", NULL, NULL);
    tstack_guard(writer_pid);
    if (!twait_http_ok(writer_url, "/healthz", 20000))
        tfail("writer did not become healthy at %s", writer_url);
    snprintf(owner, sizeof owner, "conc-%d", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tstack_unguard(writer_pid);
    assert_int_equal(tsvc_stop(writer_pid, SIGTERM, 10000), 0);
    return 0;
}

/* Replays the account's events in version order: the running balance never goes below
 * -overdraft_limit, and (when balances is not NULL) equals balances[v] wherever that is set
 * (INT64_MIN: not known). Returns the final balance. */
static int64_t replay(PGconn *pg, const char *id, int64_t overdraft_limit, const int64_t *balances,
                      int64_t nbalances, int64_t *min_seen)
{
    const char *p[1] = {id};
    PGresult *res = PQexecParams(pg,
                                 "SELECT stream_version, type, coalesce((data->>'amount')::bigint, 0) "
                                 "FROM events WHERE stream_id = $1::uuid ORDER BY stream_version",
                                 1, NULL, p, NULL, NULL, 0);
    int64_t bal = 0, lowest = 0;

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t v = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        const char *type = PQgetvalue(res, i, 1);
        int64_t amount = strtoll(PQgetvalue(res, i, 2), NULL, 10);

        if (strcmp(type, "MoneyWithdrawn") == 0 || strcmp(type, "TransferSent") == 0)
            bal -= amount;
        else if (strcmp(type, "MoneyDeposited") == 0 || strcmp(type, "TransferReceived") == 0 ||
                 strcmp(type, "TransactionReversed") == 0)
            bal += amount;
        if (bal < -overdraft_limit)
            tfail("account %s: balance %lld after version %lld, below the overdraft limit %lld", id,
                  (long long)bal, (long long)v, (long long)overdraft_limit);
        if (balances != NULL && v < nbalances && balances[v] != INT64_MIN && balances[v] != bal)
            tfail("account %s: the reply for version %lld said balance %lld, the events say %lld", id,
                  (long long)v, (long long)balances[v], (long long)bal);
        if (bal < lowest)
            lowest = bal;
    }
    PQclear(res);
    if (min_seen != NULL)
        *min_seen = lowest;
    return bal;
}

/* 200 deposits and withdrawals racing on one account from 16 threads: the final balance is the
 * sum of the accepted amounts, versions have no gap, the overdraft limit is never crossed, and
 * every reply's version and balance are the ones the event store holds. */
static void test_concurrent_money_on_one_account(void **state)
{
    const int64_t limit = 3000;
    PGconn *pg = tw_pg();
    char id[UUID_STR_SIZE], ver[24];
    struct tw_call *calls = calloc(MONEY_OPS, sizeof *calls);
    int64_t *amount = calloc(MONEY_OPS, sizeof *amount);
    int64_t *by_version = malloc((MONEY_OPS + 2) * sizeof *by_version);
    int64_t sum = 0, accepted = 0, rejected = 0, accepted_debits = 0, lowest = 0, wall;
    uint64_t seed = 0x5eed;

    (void)state;
    assert_non_null(calls);
    tw_open(id, owner, "racing", "EUR", limit);
    for (int i = 0; i < MONEY_OPS; i++) {
        int deposit = tgen_rand(&seed) % 2 == 0;
        /* debits outweigh credits, so the balance keeps pressing on the limit */
        amount[i] = deposit ? 1 + (int64_t)(tgen_rand(&seed) % 400) : -(1 + (int64_t)(tgen_rand(&seed) % 900));
        snprintf(calls[i].path, sizeof calls[i].path, "/accounts/%s/%s", id, deposit ? "deposits" : "withdrawals");
        snprintf(calls[i].body, sizeof calls[i].body, "{\"amount\":%lld,\"description\":\"op %d\"}",
                 (long long)(deposit ? amount[i] : -amount[i]), i);
    }
    wall = tw_run_batch(writer_url, calls, MONEY_OPS, THREADS);

    for (int64_t v = 0; v < MONEY_OPS + 2; v++)
        by_version[v] = INT64_MIN;
    by_version[1] = 0;
    for (int i = 0; i < MONEY_OPS; i++) {
        struct tw_call *c = &calls[i];
        if (c->status == 201) {
            int64_t v = tw_int(c->doc, "version");
            if (v < 2 || v > MONEY_OPS + 1 || by_version[v] != INT64_MIN)
                tfail("op %d: version %lld repeated or out of range", i, (long long)v);
            by_version[v] = tw_int(c->doc, "balance");
            assert_string_equal(tw_str(c->doc, "account_id"), id);
            snprintf(ver, sizeof ver, "%lld", (long long)v);
            assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE event_id = $1::uuid "
                                           "AND stream_version = $2::int",
                                       tw_str(c->doc, "event_id"), ver),
                             1);
            sum += amount[i];
            accepted++;
            accepted_debits += amount[i] < 0;
        } else if (c->status == 422 && amount[i] < 0 && c->doc != NULL &&
                   strcmp(tw_str(c->doc, "error"), "insufficient_funds") == 0) {
            rejected++;
        } else {
            tfail("op %d (%s %s): status %d: %s", i, c->path, c->body, c->status, c->raw != NULL ? c->raw : "");
        }
    }
    fprintf(stderr, "money: %lld accepted (%lld debits), %lld refused, %lld ms\n", (long long)accepted,
            (long long)accepted_debits, (long long)rejected, (long long)wall);
    assert_true(rejected > 0);        /* the limit was really contended */
    assert_true(accepted_debits > 0);

    assert_int_equal(tw_check_gapless(pg, id), accepted + 1);
    assert_int_equal(replay(pg, id, limit, by_version, MONEY_OPS + 2, &lowest), sum);
    assert_int_equal(tw_scalar(pg, "SELECT balance FROM accounts WHERE account_id = $1::uuid", id, NULL), sum);
    assert_int_equal(tw_scalar(pg, "SELECT version FROM accounts WHERE account_id = $1::uuid", id, NULL), accepted + 1);
    assert_true(lowest >= -limit);
    tw_calls_free(calls, MONEY_OPS);
    free(amount);
    free(by_version);
    PQfinish(pg);
}

/* 100 transfers in both directions between two accounts at once: each is answered (no
 * deadlock, no give-up on contention) within a bound, money is conserved, both accounts'
 * versions are gapless and every reply's leg matches the event store. */
static void test_opposite_transfers(void **state)
{
    const int64_t initial = 1000000;
    PGconn *pg = tw_pg();
    char a[UUID_STR_SIZE], b[UUID_STR_SIZE];
    struct tw_call *calls = calloc(TRANSFERS, sizeof *calls);
    int64_t *bal_a = malloc((TRANSFERS + 3) * sizeof *bal_a), *bal_b = malloc((TRANSFERS + 3) * sizeof *bal_b);
    int64_t expect_a = initial, expect_b = initial, wall, slowest = 0;
    uint64_t seed = 0x7a5f;

    (void)state;
    assert_non_null(calls);
    tw_open(a, owner, "left", "EUR", 0);
    tw_open(b, owner, "right", "EUR", 0);
    json_decref(tw_money(a, "deposits", initial, "float"));
    json_decref(tw_money(b, "deposits", initial, "float"));
    for (int i = 0; i < TRANSFERS; i++) {
        int64_t amount = 1 + (int64_t)(tgen_rand(&seed) % 5000);
        int ab = i % 2 == 0;
        snprintf(calls[i].path, sizeof calls[i].path, "/transfers");
        snprintf(calls[i].body, sizeof calls[i].body,
                 "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":%lld,\"description\":\"t%d\"}", ab ? a : b,
                 ab ? b : a, (long long)amount, i);
        expect_a += ab ? -amount : amount;
        expect_b += ab ? amount : -amount;
    }
    wall = tw_run_batch(writer_url, calls, TRANSFERS, THREADS);

    for (int v = 0; v < TRANSFERS + 3; v++)
        bal_a[v] = bal_b[v] = INT64_MIN;
    for (int i = 0; i < TRANSFERS; i++) {
        struct tw_call *c = &calls[i];
        json_t *from, *to;
        int64_t fv, tv;
        if (c->status != 201)
            tfail("transfer %d: status %d after %lld ms: %s", i, c->status, (long long)c->elapsed_ms,
                  c->raw != NULL ? c->raw : "(no response)");
        if (c->elapsed_ms > slowest)
            slowest = c->elapsed_ms;
        from = json_object_get(c->doc, "from");
        to = json_object_get(c->doc, "to");
        fv = tw_int(from, "version");
        tv = tw_int(to, "version");
        assert_true(fv >= 3 && fv < TRANSFERS + 3 && tv >= 3 && tv < TRANSFERS + 3);
        if (strcmp(tw_str(from, "account_id"), a) == 0) {
            assert_string_equal(tw_str(to, "account_id"), b);
            assert_true(bal_a[fv] == INT64_MIN && bal_b[tv] == INT64_MIN);
            bal_a[fv] = tw_int(from, "balance");
            bal_b[tv] = tw_int(to, "balance");
        } else {
            assert_string_equal(tw_str(from, "account_id"), b);
            assert_true(bal_b[fv] == INT64_MIN && bal_a[tv] == INT64_MIN);
            bal_b[fv] = tw_int(from, "balance");
            bal_a[tv] = tw_int(to, "balance");
        }
    }
    fprintf(stderr, "transfers: %d in %lld ms, slowest %lld ms\n", TRANSFERS, (long long)wall, (long long)slowest);
    /* a deadlock costs deadlock_timeout (1 s) per victim; a lock-order bug shows here */
    assert_true(wall < 15000);

    assert_int_equal(tw_check_gapless(pg, a), TRANSFERS + 2);
    assert_int_equal(tw_check_gapless(pg, b), TRANSFERS + 2);
    assert_int_equal(replay(pg, a, 0, bal_a, TRANSFERS + 3, NULL), expect_a);
    assert_int_equal(replay(pg, b, 0, bal_b, TRANSFERS + 3, NULL), expect_b);
    assert_int_equal(tw_scalar(pg, "SELECT sum(balance) FROM accounts WHERE account_id IN ($1::uuid, $2::uuid)", a, b),
                     2 * initial);
    assert_int_equal(tw_scalar(pg, "SELECT balance FROM accounts WHERE account_id = $1::uuid", a, NULL), expect_a);
    /* every transfer is two legs of one transaction */
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM (SELECT data->>'transfer_id' FROM events "
                                   "WHERE stream_id IN ($1::uuid, $2::uuid) AND type IN ('TransferSent', 'TransferReceived') "
                                   "GROUP BY 1 HAVING count(*) = 2 AND count(DISTINCT tx_id) = 1) t",
                               a, b),
                     TRANSFERS);
    tw_calls_free(calls, TRANSFERS);
    free(bal_a);
    free(bal_b);
    PQfinish(pg);
}

/* Sends IDEM_COPIES copies of one request with one Idempotency-Key at once: all answers are the
 * same status and body byte for byte, exactly one is not a replay. Returns the first body
 * (new reference). */
static json_t *same_request_at_once(const char *path, const char *body, const char *key)
{
    struct tw_call *calls = calloc(IDEM_COPIES, sizeof *calls);
    json_t *doc;
    int originals = 0;

    assert_non_null(calls);
    for (int i = 0; i < IDEM_COPIES; i++) {
        snprintf(calls[i].path, sizeof calls[i].path, "%s", path);
        snprintf(calls[i].body, sizeof calls[i].body, "%s", body);
        snprintf(calls[i].headers, sizeof calls[i].headers, "Idempotency-Key: %s\r\n", key);
    }
    tw_run_batch(writer_url, calls, IDEM_COPIES, IDEM_COPIES);
    for (int i = 0; i < IDEM_COPIES; i++) {
        if (calls[i].status != calls[0].status || calls[i].raw == NULL || calls[0].raw == NULL ||
            strcmp(calls[i].raw, calls[0].raw) != 0)
            tfail("%s with key %s: answer %d is %d %s, answer 0 is %d %s", path, key, i, calls[i].status,
                  calls[i].raw, calls[0].status, calls[0].raw);
        originals += !calls[i].replayed;
    }
    assert_true(calls[0].status == 201 || calls[0].status == 200);
    assert_int_equal(originals, 1);
    doc = json_incref(calls[0].doc);
    tw_calls_free(calls, IDEM_COPIES);
    return doc;
}

/* One Idempotency-Key sent 20 times at once on a deposit, a transfer and an open: one effect,
 * 20 identical answers; later the same request replays, another request with the key is 422. */
static void test_idempotency_key_under_race(void **state)
{
    PGconn *pg = tw_pg();
    char a[UUID_STR_SIZE], b[UUID_STR_SIZE], path[128], body[256], key[96], hdr[128];
    struct thttp_resp r;
    char hv[16];
    json_t *doc;

    (void)state;
    tw_open(a, owner, "idem-a", "EUR", 0);
    tw_open(b, owner, "idem-b", "EUR", 0);

    /* deposit */
    snprintf(key, sizeof key, "dep-%s", owner);
    snprintf(path, sizeof path, "/accounts/%s/deposits", a);
    doc = same_request_at_once(path, "{\"amount\":250,\"description\":\"once\"}", key);
    assert_int_equal(tw_int(doc, "version"), 2);
    assert_int_equal(tw_int(doc, "balance"), 250);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE metadata->>'idempotency_key' = $1", key, NULL), 1);
    assert_int_equal(tw_check_gapless(pg, a), 2);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM idempotency_keys WHERE key = $1", key, NULL), 1);
    /* later: the same request is a replay of the first answer */
    snprintf(hdr, sizeof hdr, "Idempotency-Key: %s\r\n", key);
    assert_int_equal(thttp_request(&r, "POST", writer_url, path, "{\"amount\":250,\"description\":\"once\"}", hdr, 10000), 0);
    assert_int_equal(r.status, 201);
    assert_non_null(thttp_header(&r, "Idempotent-Replayed", hv, sizeof hv));
    assert_string_equal(hv, "true");
    {
        char *first = json_dumps(doc, JSON_COMPACT), *again = NULL;
        json_t *d2 = thttp_json(&r);
        again = json_dumps(d2, JSON_COMPACT);
        assert_string_equal(first, again);
        free(first);
        free(again);
        json_decref(d2);
    }
    thttp_resp_release(&r);
    json_decref(doc);
    /* the key with another body (even only the description), or on another route */
    tw_reject(NULL, path, "{\"amount\":250,\"description\":\"twice\"}", hdr, 422, "idempotency_key_reused");
    tw_reject(NULL, path, "{\"amount\":251,\"description\":\"once\"}", hdr, 422, "idempotency_key_reused");
    snprintf(path, sizeof path, "/accounts/%s/withdrawals", a);
    tw_reject(NULL, path, "{\"amount\":250,\"description\":\"once\"}", hdr, 422, "idempotency_key_reused");
    assert_int_equal(tw_check_gapless(pg, a), 2);

    /* transfer: one transfer id, two legs */
    snprintf(key, sizeof key, "xfer-%s", owner);
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":100}", a, b);
    doc = same_request_at_once("/transfers", body, key);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE metadata->>'idempotency_key' = $1", key, NULL), 2);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE data->>'transfer_id' = $1",
                               tw_str(doc, "transfer_id"), NULL),
                     2);
    assert_int_equal(tw_int(json_object_get(doc, "from"), "balance"), 150);
    json_decref(doc);
    assert_int_equal(tw_check_gapless(pg, a), 3);
    assert_int_equal(tw_check_gapless(pg, b), 2);

    /* open: one account */
    snprintf(key, sizeof key, "open-%s", owner);
    snprintf(body, sizeof body, "{\"owner\":\"%s\",\"name\":\"idem-open\",\"currency\":\"EUR\"}", owner);
    doc = same_request_at_once("/accounts", body, key);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM accounts WHERE owner = $1 AND name = 'idem-open'", owner, NULL), 1);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE metadata->>'idempotency_key' = $1", key, NULL), 1);
    assert_int_equal(tw_check_gapless(pg, tw_str(doc, "account_id")), 1);
    json_decref(doc);
    PQfinish(pg);
}

/* Races the writer must settle with one winner: the same transfer reversed 20 times at once
 * from both legs, 20 opens of one owner and name, a close racing with deposits. */
static void test_races_with_one_winner(void **state)
{
    PGconn *pg = tw_pg();
    char a[UUID_STR_SIZE], b[UUID_STR_SIZE], body[256], sent[UUID_STR_SIZE], recv[UUID_STR_SIZE];
    struct tw_call *calls = calloc(IDEM_COPIES + 1, sizeof *calls);
    json_t *doc;
    int won = 0, closed_won = 0;
    int64_t close_version = 0;

    (void)state;
    assert_non_null(calls);
    tw_open(a, owner, "race-a", "EUR", 0);
    tw_open(b, owner, "race-b", "EUR", 0);
    json_decref(tw_money(a, "deposits", 1000, "seed"));
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":400}", a, b);
    doc = tw_post(NULL, "/transfers", body, NULL, 201);
    snprintf(sent, sizeof sent, "%s", tw_str(json_object_get(doc, "from"), "event_id"));
    snprintf(recv, sizeof recv, "%s", tw_str(json_object_get(doc, "to"), "event_id"));
    json_decref(doc);

    /* both legs, from both sides, at once: one reversal of the pair */
    for (int i = 0; i < IDEM_COPIES; i++) {
        snprintf(calls[i].path, sizeof calls[i].path, "/accounts/%s/reversals", i % 2 ? a : b);
        snprintf(calls[i].body, sizeof calls[i].body, "{\"event_id\":\"%s\"}", i % 2 ? sent : recv);
    }
    tw_run_batch(writer_url, calls, IDEM_COPIES, IDEM_COPIES);
    for (int i = 0; i < IDEM_COPIES; i++) {
        if (calls[i].status == 201)
            won++;
        else if (calls[i].status != 409 || strcmp(tw_str(calls[i].doc, "error"), "already_reversed") != 0)
            tfail("reversal %d: status %d: %s", i, calls[i].status, calls[i].raw != NULL ? calls[i].raw : "");
    }
    assert_int_equal(won, 1);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE type = 'TransactionReversed' "
                                   "AND data->>'reversed_event_id' IN ($1, $2)", sent, recv),
                     2);
    assert_int_equal(tw_scalar(pg, "SELECT balance FROM accounts WHERE account_id = $1::uuid", a, NULL), 1000);
    assert_int_equal(tw_scalar(pg, "SELECT balance FROM accounts WHERE account_id = $1::uuid", b, NULL), 0);
    assert_int_equal(tw_check_gapless(pg, a), 4);
    assert_int_equal(tw_check_gapless(pg, b), 3);
    tw_calls_free(calls, IDEM_COPIES + 1);

    /* one owner and name opened 20 times at once: one account */
    calls = calloc(IDEM_COPIES + 1, sizeof *calls);
    assert_non_null(calls);
    for (int i = 0; i < IDEM_COPIES; i++) {
        snprintf(calls[i].path, sizeof calls[i].path, "/accounts");
        snprintf(calls[i].body, sizeof calls[i].body, "{\"owner\":\"%s\",\"name\":\"race-open\",\"currency\":\"EUR\"}", owner);
    }
    tw_run_batch(writer_url, calls, IDEM_COPIES, IDEM_COPIES);
    won = 0;
    for (int i = 0; i < IDEM_COPIES; i++) {
        if (calls[i].status == 201)
            won++;
        else if (calls[i].status != 409 || strcmp(tw_str(calls[i].doc, "error"), "name_taken") != 0)
            tfail("open %d: status %d: %s", i, calls[i].status, calls[i].raw != NULL ? calls[i].raw : "");
    }
    assert_int_equal(won, 1);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM accounts WHERE owner = $1 AND name = 'race-open'", owner, NULL), 1);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE type = 'AccountOpened' "
                                   "AND data->>'owner' = $1 AND data->>'name' = 'race-open'", owner, NULL),
                     1);
    tw_calls_free(calls, IDEM_COPIES + 1);

    /* b (at 0) closed while 20 deposits arrive: nothing is appended after AccountClosed */
    calls = calloc(IDEM_COPIES + 1, sizeof *calls);
    assert_non_null(calls);
    for (int i = 0; i <= IDEM_COPIES; i++) {
        if (i == IDEM_COPIES / 2) {
            snprintf(calls[i].path, sizeof calls[i].path, "/accounts/%s/close", b);
            snprintf(calls[i].body, sizeof calls[i].body, "{}");
        } else {
            snprintf(calls[i].path, sizeof calls[i].path, "/accounts/%s/deposits", b);
            snprintf(calls[i].body, sizeof calls[i].body, "{\"amount\":1}");
        }
    }
    tw_run_batch(writer_url, calls, IDEM_COPIES + 1, IDEM_COPIES + 1);
    for (int i = 0; i <= IDEM_COPIES; i++) {
        const char *err = calls[i].doc != NULL ? tw_str(calls[i].doc, "error") : NULL;
        if (i == IDEM_COPIES / 2) {
            if (calls[i].status == 200) {
                closed_won = 1;
                close_version = tw_int(calls[i].doc, "version");
            } else if (calls[i].status != 422 || strcmp(err, "balance_not_zero") != 0) {
                tfail("close: status %d: %s", calls[i].status, calls[i].raw != NULL ? calls[i].raw : "");
            }
        } else if (calls[i].status != 201 && (calls[i].status != 409 || strcmp(err, "account_closed") != 0)) {
            tfail("deposit %d: status %d: %s", i, calls[i].status, calls[i].raw != NULL ? calls[i].raw : "");
        }
    }
    if (closed_won) {
        assert_int_equal(tw_scalar(pg, "SELECT max(stream_version) FROM events WHERE stream_id = $1::uuid", b, NULL),
                         close_version);
        assert_int_equal(tw_scalar(pg, "SELECT balance FROM accounts WHERE account_id = $1::uuid", b, NULL), 0);
    } else {
        assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE stream_id = $1::uuid "
                                       "AND type = 'AccountClosed'", b, NULL),
                         0);
    }
    fprintf(stderr, "races: the close %s\n", closed_won ? "won" : "lost to a deposit");
    tw_check_gapless(pg, b);
    tw_calls_free(calls, IDEM_COPIES + 1);
    PQfinish(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_money_on_one_account),
        cmocka_unit_test(test_opposite_transfers),
        cmocka_unit_test(test_idempotency_key_under_race),
        cmocka_unit_test(test_races_with_one_winner),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
