/* Writer command API against the real stack: every command's effect on the events table, every
 * rejection code of the contract (and that a rejection writes nothing), bearer auth, name reuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.h"
#include "thttp.h"
#include "tstack.h"
#include "twriter.h"

static pid_t writer_pid;
static char owner[64]; /* unique per run: names never collide with a previous run's */

static int setup(void **state)
{
    (void)state;
    treset_state();
    writer_pid = tsvc_start("writer", NULL, NULL);
    tstack_guard(writer_pid);
    if (!twait_http_ok(tenv("WRITER_URL"), "/healthz", 20000))
        tfail("writer did not become healthy at %s", tenv("WRITER_URL"));
    snprintf(owner, sizeof owner, "cmd-%d", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tstack_unguard(writer_pid);
    assert_int_equal(tsvc_stop(writer_pid, SIGTERM, 10000), 0);
    return 0;
}

/* The stored event with id event_id must be of stream, version and type, and carry every field
 * of want (a subset of its data). Returns its position. */
static int64_t check_event(PGconn *pg, const char *event_id, const char *stream, int64_t version,
                           const char *type, json_t *want)
{
    const char *p[1] = {event_id};
    PGresult *res = PQexecParams(pg, "SELECT stream_id::text, stream_version, type, data::text, position, "
                                     "metadata::text FROM events WHERE event_id = $1::uuid",
                                 1, NULL, p, NULL, NULL, 0);
    json_t *data, *md, *v;
    const char *k;
    int64_t position;

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    if (PQntuples(res) != 1)
        tfail("event %s: %d rows", event_id, PQntuples(res));
    assert_string_equal(PQgetvalue(res, 0, 0), stream);
    assert_int_equal(strtoll(PQgetvalue(res, 0, 1), NULL, 10), version);
    assert_string_equal(PQgetvalue(res, 0, 2), type);
    data = json_loads(PQgetvalue(res, 0, 3), 0, NULL);
    md = json_loads(PQgetvalue(res, 0, 5), 0, NULL);
    assert_non_null(data);
    assert_non_null(md);
    json_object_foreach(want, k, v) {
        if (!json_equal(json_object_get(data, k), v))
            tfail("event %s (%s): data.%s is %s, expected %s", event_id, type, k,
                  json_dumps(json_object_get(data, k), JSON_ENCODE_ANY),
                  json_dumps(v, JSON_ENCODE_ANY));
    }
    /* every event says which command wrote it */
    assert_int_equal(strlen(tw_str(md, "command_id")), 36);
    assert_int_equal(strlen(tw_str(md, "correlation_id")), 36);
    position = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    json_decref(data);
    json_decref(md);
    json_decref(want);
    PQclear(res);
    return position;
}

/* The write-side row of an account. */
static void check_account_row(PGconn *pg, const char *id, int64_t balance, int64_t version,
                              const char *status)
{
    const char *p[1] = {id};
    PGresult *res = PQexecParams(pg, "SELECT balance, version, status, closed_at IS NOT NULL "
                                     "FROM accounts WHERE account_id = $1::uuid",
                                 1, NULL, p, NULL, NULL, 0);

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), 1);
    assert_int_equal(strtoll(PQgetvalue(res, 0, 0), NULL, 10), balance);
    assert_int_equal(strtoll(PQgetvalue(res, 0, 1), NULL, 10), version);
    assert_string_equal(PQgetvalue(res, 0, 2), status);
    assert_string_equal(PQgetvalue(res, 0, 3), strcmp(status, "closed") == 0 ? "t" : "f");
    PQclear(res);
}

static void path_of(char *buf, size_t len, const char *id, const char *tail)
{
    snprintf(buf, len, "/accounts/%s/%s", id, tail);
}

/* Open, deposit, withdraw, transfer, reversal of a deposit, of a withdrawal and of a transfer
 * (both legs in one transaction), close: replies and stored events. */
static void test_happy_paths(void **state)
{
    PGconn *pg = tw_pg();
    char a[UUID_STR_SIZE], b[UUID_STR_SIZE], path[160], body[512], corr[UUID_STR_SIZE], hdr[128];
    char dep[UUID_STR_SIZE], wd[UUID_STR_SIZE], sent[UUID_STR_SIZE], recv[UUID_STR_SIZE];
    char transfer_id[UUID_STR_SIZE];
    json_t *doc, *from, *to, *cp;
    int64_t pos, last_pos;

    (void)state;
    /* open */
    snprintf(body, sizeof body,
             "{\"owner\":\"%s\",\"name\":\"current\",\"currency\":\"EUR\",\"overdraft_limit\":1000}", owner);
    doc = tw_post(NULL, "/accounts", body, NULL, 201);
    snprintf(a, sizeof a, "%s", tw_str(doc, "account_id"));
    assert_int_equal(tw_int(doc, "version"), 1);
    last_pos = tw_int(doc, "position");
    assert_true(last_pos > 0);
    json_decref(doc);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE stream_id = $1::uuid", a, NULL), 1);
    {
        const char *p[1] = {a};
        PGresult *res = PQexecParams(pg, "SELECT event_id::text FROM events WHERE stream_id = $1::uuid",
                                     1, NULL, p, NULL, NULL, 0);
        assert_int_equal(PQntuples(res), 1);
        pos = check_event(pg, PQgetvalue(res, 0, 0), a, 1, "AccountOpened",
                          json_pack("{s:s, s:s, s:s, s:i}", "owner", owner, "name", "current",
                                    "currency", "EUR", "overdraft_limit", 1000));
        PQclear(res);
        assert_int_equal(pos, last_pos);
    }
    check_account_row(pg, a, 0, 1, "open");
    /* overdraft_limit is optional: 0 */
    snprintf(body, sizeof body, "{\"owner\":\"%s\",\"name\":\"savings\",\"currency\":\"EUR\"}", owner);
    doc = tw_post(NULL, "/accounts", body, NULL, 201);
    snprintf(b, sizeof b, "%s", tw_str(doc, "account_id"));
    assert_string_not_equal(a, b);
    json_decref(doc);
    assert_int_equal(tw_scalar(pg, "SELECT overdraft_limit FROM accounts WHERE account_id = $1::uuid", b, NULL), 0);

    /* deposit, with a caller's correlation id kept in the metadata */
    uuid_generate(corr);
    snprintf(hdr, sizeof hdr, "X-Correlation-Id: %s\r\n", corr);
    path_of(path, sizeof path, a, "deposits");
    doc = tw_post(NULL, path, "{\"amount\":5000,\"description\":\"salary\"}", hdr, 201);
    snprintf(dep, sizeof dep, "%s", tw_str(doc, "event_id"));
    assert_string_equal(tw_str(doc, "account_id"), a);
    assert_int_equal(tw_int(doc, "version"), 2);
    assert_int_equal(tw_int(doc, "balance"), 5000);
    assert_true(tw_int(doc, "position") > last_pos);
    last_pos = tw_int(doc, "position");
    json_decref(doc);
    assert_int_equal(check_event(pg, dep, a, 2, "MoneyDeposited",
                                 json_pack("{s:i, s:s}", "amount", 5000, "description", "salary")),
                     last_pos);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE event_id = $1::uuid "
                                   "AND metadata->>'correlation_id' = $2",
                               dep, corr),
                     1);

    /* withdraw into the overdraft */
    doc = tw_money(a, "withdrawals", 5500, "rent");
    snprintf(wd, sizeof wd, "%s", tw_str(doc, "event_id"));
    assert_int_equal(tw_int(doc, "version"), 3);
    assert_int_equal(tw_int(doc, "balance"), -500);
    json_decref(doc);
    check_event(pg, wd, a, 3, "MoneyWithdrawn", json_pack("{s:i, s:s}", "amount", 5500, "description", "rent"));
    check_account_row(pg, a, -500, 3, "open");

    /* transfer a -> b: two legs, one reply */
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":300,\"description\":\"gift\"}", a, b);
    doc = tw_post(NULL, "/transfers", body, NULL, 201);
    snprintf(transfer_id, sizeof transfer_id, "%s", tw_str(doc, "transfer_id"));
    assert_int_equal(strlen(transfer_id), 36);
    from = json_object_get(doc, "from");
    to = json_object_get(doc, "to");
    assert_string_equal(tw_str(from, "account_id"), a);
    assert_int_equal(tw_int(from, "version"), 4);
    assert_int_equal(tw_int(from, "balance"), -800);
    assert_string_equal(tw_str(to, "account_id"), b);
    assert_int_equal(tw_int(to, "version"), 2);
    assert_int_equal(tw_int(to, "balance"), 300);
    assert_int_equal(tw_int(doc, "position"), tw_int(to, "position"));
    snprintf(sent, sizeof sent, "%s", tw_str(from, "event_id"));
    snprintf(recv, sizeof recv, "%s", tw_str(to, "event_id"));
    json_decref(doc);
    check_event(pg, sent, a, 4, "TransferSent",
                json_pack("{s:s, s:s, s:i, s:s}", "transfer_id", transfer_id, "to", b, "amount", 300,
                          "description", "gift"));
    check_event(pg, recv, b, 2, "TransferReceived",
                json_pack("{s:s, s:s, s:i, s:s}", "transfer_id", transfer_id, "from", a, "amount", 300,
                          "description", "gift"));
    assert_int_equal(tw_scalar(pg, "SELECT count(DISTINCT tx_id) FROM events WHERE event_id IN ($1::uuid, $2::uuid)",
                               sent, recv),
                     1);

    /* reversal of the deposit: a debit of 5000 within the overdraft? -800 - 5000 is below -1000 */
    path_of(path, sizeof path, a, "reversals");
    snprintf(body, sizeof body, "{\"event_id\":\"%s\",\"reason\":\"bounced\"}", dep);
    tw_reject(NULL, path, body, NULL, 422, "insufficient_funds");
    doc = tw_money(a, "deposits", 6000, "top up"); /* -800 + 6000 = 5200 */
    assert_int_equal(tw_int(doc, "version"), 5);
    json_decref(doc);
    doc = tw_post(NULL, path, body, NULL, 201);
    assert_string_equal(tw_str(doc, "account_id"), a);
    assert_string_equal(tw_str(doc, "reversed_event_id"), dep);
    assert_int_equal(tw_int(doc, "amount"), -5000);
    assert_int_equal(tw_int(doc, "version"), 6);
    assert_int_equal(tw_int(doc, "balance"), 200);
    assert_null(json_object_get(doc, "counterparty"));
    check_event(pg, tw_str(doc, "event_id"), a, 6, "TransactionReversed",
                json_pack("{s:s, s:i, s:s}", "reversed_event_id", dep, "amount", -5000, "reason", "bounced"));
    json_decref(doc);

    /* reversal of the withdrawal: a credit */
    snprintf(body, sizeof body, "{\"event_id\":\"%s\"}", wd);
    doc = tw_post(NULL, path, body, NULL, 201);
    assert_int_equal(tw_int(doc, "amount"), 5500);
    assert_int_equal(tw_int(doc, "version"), 7);
    assert_int_equal(tw_int(doc, "balance"), 5700);
    json_decref(doc);

    /* reversal of the transfer, asked on the receiving leg: both legs, one transaction */
    path_of(path, sizeof path, b, "reversals");
    snprintf(body, sizeof body, "{\"event_id\":\"%s\",\"reason\":\"wrong payee\"}", recv);
    doc = tw_post(NULL, path, body, NULL, 201);
    assert_string_equal(tw_str(doc, "account_id"), b);
    assert_string_equal(tw_str(doc, "reversed_event_id"), recv);
    assert_int_equal(tw_int(doc, "amount"), -300);
    assert_int_equal(tw_int(doc, "version"), 3);
    assert_int_equal(tw_int(doc, "balance"), 0);
    cp = json_object_get(doc, "counterparty");
    assert_non_null(cp);
    assert_string_equal(tw_str(cp, "account_id"), a);
    assert_int_equal(tw_int(cp, "version"), 8);
    assert_int_equal(tw_int(cp, "balance"), 6000);
    check_event(pg, tw_str(doc, "event_id"), b, 3, "TransactionReversed",
                json_pack("{s:s, s:i, s:s}", "reversed_event_id", recv, "amount", -300, "reason", "wrong payee"));
    check_event(pg, tw_str(cp, "event_id"), a, 8, "TransactionReversed",
                json_pack("{s:s, s:i, s:s}", "reversed_event_id", sent, "amount", 300, "reason", "wrong payee"));
    assert_int_equal(tw_scalar(pg, "SELECT count(DISTINCT tx_id) FROM events WHERE event_id IN ($1::uuid, $2::uuid)",
                               tw_str(doc, "event_id"), tw_str(cp, "event_id")),
                     1);
    json_decref(doc);
    check_account_row(pg, a, 6000, 8, "open");
    check_account_row(pg, b, 0, 3, "open");

    /* each of them only once, from either side */
    tw_reject(NULL, path, body, NULL, 409, "already_reversed");
    path_of(path, sizeof path, a, "reversals");
    snprintf(body, sizeof body, "{\"event_id\":\"%s\"}", sent);
    tw_reject(NULL, path, body, NULL, 409, "already_reversed");
    snprintf(body, sizeof body, "{\"event_id\":\"%s\"}", dep);
    tw_reject(NULL, path, body, NULL, 409, "already_reversed");

    /* close: only at 0; an empty body is an empty object */
    path_of(path, sizeof path, a, "close");
    tw_reject(NULL, path, "{\"reason\":\"moving\"}", NULL, 422, "balance_not_zero");
    json_decref(tw_money(a, "withdrawals", 6000, "empty it"));
    doc = tw_post(NULL, path, "{\"reason\":\"moving\"}", NULL, 200);
    assert_string_equal(tw_str(doc, "status"), "closed");
    assert_string_equal(tw_str(doc, "account_id"), a);
    assert_int_equal(tw_int(doc, "version"), 10);
    assert_int_equal(tw_int(doc, "balance"), 0);
    check_event(pg, tw_str(doc, "event_id"), a, 10, "AccountClosed", json_pack("{s:s}", "reason", "moving"));
    json_decref(doc);
    check_account_row(pg, a, 0, 10, "closed");
    path_of(path, sizeof path, b, "close");
    doc = tw_post(NULL, path, NULL, NULL, 200);
    assert_int_equal(tw_int(doc, "version"), 4);
    json_decref(doc);
    check_account_row(pg, b, 0, 4, "closed");

    assert_int_equal(tw_check_gapless(pg, a), 10);
    assert_int_equal(tw_check_gapless(pg, b), 4);
    PQfinish(pg);
}

/* Every 4xx code of the contract, each leaving the tables untouched. */
static void test_rejections(void **state)
{
    char a[UUID_STR_SIZE], c[UUID_STR_SIZE], gone[UUID_STR_SIZE], path[160], body[512], name[64];
    char dep[UUID_STR_SIZE], other_ev[UUID_STR_SIZE];
    char *big;
    json_t *doc;

    (void)state;
    snprintf(name, sizeof name, "rej-%d", (int)getpid());
    tw_open(a, owner, name, "EUR", 100);
    tw_open(c, owner, "rej-other", "EUR", 0);
    uuid_generate(gone);
    doc = tw_money(a, "deposits", 1000, "seed");
    snprintf(dep, sizeof dep, "%s", tw_str(doc, "event_id"));
    json_decref(doc);
    doc = tw_money(c, "deposits", 50, "seed");
    snprintf(other_ev, sizeof other_ev, "%s", tw_str(doc, "event_id"));
    json_decref(doc);

    /* 400 invalid_json */
    path_of(path, sizeof path, a, "deposits");
    tw_reject(NULL, path, "{\"amount\": 5", NULL, 400, "invalid_json");
    tw_reject(NULL, path, "amount=5", NULL, 400, "invalid_json");
    tw_reject(NULL, path, "", NULL, 400, "invalid_json");
    tw_reject(NULL, path, "{\"amount\":5,\"description\":\"\xff\xfe\"}", NULL, 400, "invalid_json");
    tw_reject(NULL, "/accounts", "{\"owner\":\"x\",", NULL, 400, "invalid_json");
    /* beyond int64: well-formed JSON, a field out of range */
    tw_reject(NULL, path, "{\"amount\":99999999999999999999999}", NULL, 400, "invalid_field");

    /* 400 invalid_field */
    tw_reject(NULL, path, "{\"amount\":0}", NULL, 400, "invalid_field");
    tw_reject(NULL, path, "{\"amount\":-5}", NULL, 400, "invalid_field");
    tw_reject(NULL, path, "{\"amount\":1.5}", NULL, 400, "invalid_field");
    tw_reject(NULL, path, "{\"amount\":\"5\"}", NULL, 400, "invalid_field");
    tw_reject(NULL, path, "{\"amount\":5,\"amont\":5}", NULL, 400, "invalid_field");
    tw_reject(NULL, path, "{\"description\":\"no amount\"}", NULL, 400, "invalid_field");
    tw_reject(NULL, path, "{\"amount\":5}", "If-Match: soon\r\n", 400, "invalid_field");
    tw_reject(NULL, path, "{\"amount\":5}", "Idempotency-Key: has space\r\n", 400, "invalid_field");
    tw_reject(NULL, "/accounts/not-a-uuid/deposits", "{\"amount\":5}", NULL, 400, "invalid_field");
    snprintf(body, sizeof body, "{\"owner\":\"%s\",\"name\":\"n\",\"currency\":\"eur\"}", owner);
    tw_reject(NULL, "/accounts", body, NULL, 400, "invalid_field");
    snprintf(body, sizeof body, "{\"owner\":\"%s\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":-1}", owner);
    tw_reject(NULL, "/accounts", body, NULL, 400, "invalid_field");
    tw_reject(NULL, "/accounts", "{\"owner\":\"\",\"name\":\"n\",\"currency\":\"EUR\"}", NULL, 400, "invalid_field");
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1}", a, a);
    tw_reject(NULL, "/transfers", body, NULL, 400, "invalid_field");
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"nobody\",\"amount\":1}", a);
    tw_reject(NULL, "/transfers", body, NULL, 400, "invalid_field");
    path_of(path, sizeof path, a, "reversals");
    tw_reject(NULL, path, "{\"event_id\":\"x\"}", NULL, 400, "invalid_field");

    /* 404 account_not_found (and the event variant of a reversal) */
    path_of(path, sizeof path, gone, "deposits");
    tw_reject(NULL, path, "{\"amount\":5}", NULL, 404, "account_not_found");
    path_of(path, sizeof path, gone, "withdrawals");
    tw_reject(NULL, path, "{\"amount\":5}", NULL, 404, "account_not_found");
    path_of(path, sizeof path, gone, "close");
    tw_reject(NULL, path, "{}", NULL, 404, "account_not_found");
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1}", a, gone);
    tw_reject(NULL, "/transfers", body, NULL, 404, "account_not_found");
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1}", gone, a);
    tw_reject(NULL, "/transfers", body, NULL, 404, "account_not_found");
    path_of(path, sizeof path, gone, "reversals");
    snprintf(body, sizeof body, "{\"event_id\":\"%s\"}", dep);
    tw_reject(NULL, path, body, NULL, 404, "account_not_found");
    /* c's event is not a's to reverse */
    path_of(path, sizeof path, a, "reversals");
    snprintf(body, sizeof body, "{\"event_id\":\"%s\"}", other_ev);
    tw_reject(NULL, path, body, NULL, 404, "event_not_found");

    /* 409 version_conflict: a is at version 2 */
    path_of(path, sizeof path, a, "deposits");
    tw_reject(NULL, path, "{\"amount\":5}", "If-Match: 1\r\n", 409, "version_conflict");
    tw_reject(NULL, path, "{\"amount\":5}", "If-Match: \"3\"\r\n", 409, "version_conflict");
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1}", a, c);
    tw_reject(NULL, "/transfers", body, "If-Match: 7\r\n", 409, "version_conflict");
    doc = tw_post(NULL, path, "{\"amount\":5}", "If-Match: \"2\"\r\n", 201);
    assert_int_equal(tw_int(doc, "version"), 3);
    json_decref(doc);

    /* 409 name_taken: per owner, among open accounts */
    snprintf(body, sizeof body, "{\"owner\":\"%s\",\"name\":\"%s\",\"currency\":\"USD\"}", owner, name);
    tw_reject(NULL, "/accounts", body, NULL, 409, "name_taken");

    /* 413 body_too_large: refused before parsing */
    big = malloc(70 * 1024 + 64);
    assert_non_null(big);
    {
        int n = snprintf(big, 64, "{\"amount\":5,\"description\":\"");
        memset(big + n, 'x', 70 * 1024);
        strcpy(big + n + 70 * 1024, "\"}");
    }
    path_of(path, sizeof path, a, "deposits");
    tw_reject(NULL, path, big, NULL, 413, "body_too_large");
    free(big);

    /* 422 insufficient_funds: a holds 1005 with an overdraft of 100 */
    path_of(path, sizeof path, a, "withdrawals");
    tw_reject(NULL, path, "{\"amount\":1106}", NULL, 422, "insufficient_funds");
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1106}", a, c);
    tw_reject(NULL, "/transfers", body, NULL, 422, "insufficient_funds");
    doc = tw_post(NULL, path, "{\"amount\":1105}", NULL, 201); /* exactly at the limit */
    assert_int_equal(tw_int(doc, "balance"), -100);
    json_decref(doc);
    tw_reject(NULL, path, "{\"amount\":1}", NULL, 422, "insufficient_funds");

    /* 422 balance_not_zero */
    path_of(path, sizeof path, a, "close");
    tw_reject(NULL, path, "{}", NULL, 422, "balance_not_zero");

    /* 422 idempotency_key_reused: another body, or the same body on another route */
    path_of(path, sizeof path, c, "deposits");
    json_decref(tw_post(NULL, path, "{\"amount\":7}", "Idempotency-Key: rej-key-1\r\n", 201));
    tw_reject(NULL, path, "{\"amount\":8}", "Idempotency-Key: rej-key-1\r\n", 422, "idempotency_key_reused");
    path_of(path, sizeof path, c, "withdrawals");
    tw_reject(NULL, path, "{\"amount\":7}", "Idempotency-Key: rej-key-1\r\n", 422, "idempotency_key_reused");
    /* ... or the same route and body for another account: not a replay of c's deposit */
    path_of(path, sizeof path, a, "deposits");
    tw_reject(NULL, path, "{\"amount\":7}", "Idempotency-Key: rej-key-1\r\n", 422, "idempotency_key_reused");
    path_of(path, sizeof path, c, "withdrawals");
    /* a rejected command keeps no key (tw_reject counts the idempotency_keys rows) */
    tw_reject(NULL, path, "{\"amount\":1000}", "Idempotency-Key: rej-key-2\r\n", 422, "insufficient_funds");

    /* 409 account_closed: every command on a closed account, and transfers touching one */
    path_of(path, sizeof path, c, "withdrawals");
    json_decref(tw_post(NULL, path, "{\"amount\":57}", NULL, 201));
    path_of(path, sizeof path, c, "close");
    json_decref(tw_post(NULL, path, "{}", NULL, 200));
    tw_reject(NULL, path, "{}", NULL, 409, "account_closed");
    path_of(path, sizeof path, c, "deposits");
    tw_reject(NULL, path, "{\"amount\":5}", NULL, 409, "account_closed");
    path_of(path, sizeof path, c, "withdrawals");
    tw_reject(NULL, path, "{\"amount\":5}", NULL, 409, "account_closed");
    path_of(path, sizeof path, c, "reversals");
    snprintf(body, sizeof body, "{\"event_id\":\"%s\"}", other_ev);
    tw_reject(NULL, path, body, NULL, 409, "account_closed");
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1}", a, c);
    tw_reject(NULL, "/transfers", body, NULL, 409, "account_closed");
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1}", c, a);
    tw_reject(NULL, "/transfers", body, NULL, 409, "account_closed");
}

/* A port nobody listens on right now (for a second writer). */
static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* 401 unauthorized from a writer started with API_TOKEN, before any parsing. */
static void test_bearer_token(void **state)
{
    static char port_env[32];
    const char *const env[] = {"API_TOKEN=s3cret-t0ken", port_env, NULL};
    char base[64], body[256], wh[64];
    struct thttp_resp r;
    pid_t pid;
    json_t *doc;
    int port = free_port();

    (void)state;
    snprintf(port_env, sizeof port_env, "WRITER_PORT=%d", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    pid = tsvc_start("writer", NULL, env);
    tstack_guard(pid);
    if (!twait_http_ok(base, "/healthz", 20000))
        tfail("the writer with a token did not become healthy at %s", base);
    snprintf(body, sizeof body, "{\"owner\":\"%s\",\"name\":\"auth\",\"currency\":\"EUR\"}", owner);

    tw_reject(base, "/accounts", body, NULL, 401, "unauthorized");
    tw_reject(base, "/accounts", body, "Authorization: Bearer s3cret-t0keN\r\n", 401, "unauthorized");
    tw_reject(base, "/accounts", body, "Authorization: Bearer s3cret-t0ken-and-more\r\n", 401, "unauthorized");
    tw_reject(base, "/accounts", body, "Authorization: Bearer s3cret\r\n", 401, "unauthorized");
    tw_reject(base, "/accounts", body, "Authorization: Basic czNjcmV0LXQwa2Vu\r\n", 401, "unauthorized");
    tw_reject(base, "/accounts", body, "Authorization: s3cret-t0ken\r\n", 401, "unauthorized");
    /* no parsing without a token: a bad body is still a 401, not a 400 */
    tw_reject(base, "/accounts", "{nope", NULL, 401, "unauthorized");
    assert_int_equal(thttp_request(&r, "POST", base, "/accounts", body, NULL, 10000), 0);
    assert_int_equal(r.status, 401);
    assert_non_null(thttp_header(&r, "WWW-Authenticate", wh, sizeof wh));
    assert_true(strncmp(wh, "Bearer", 6) == 0);
    thttp_resp_release(&r);

    doc = tw_post(base, "/accounts", body, "Authorization: Bearer s3cret-t0ken\r\n", 201);
    assert_int_equal(tw_int(doc, "version"), 1);
    json_decref(doc);
    /* the stack's writer takes the stack's API_TOKEN (the test client's default) */
    snprintf(body, sizeof body, "{\"owner\":\"%s\",\"name\":\"no-auth\",\"currency\":\"EUR\"}", owner);
    json_decref(tw_post(NULL, "/accounts", body, NULL, 201));
    tstack_unguard(pid);
    assert_int_equal(tsvc_stop(pid, SIGTERM, 10000), 0);
}

/* A closed account's name is free again; the closed account still refuses every command. */
static void test_closed_name_reused(void **state)
{
    PGconn *pg = tw_pg();
    char old[UUID_STR_SIZE], fresh[UUID_STR_SIZE], path[160], body[512], own[80];
    json_t *doc;

    (void)state;
    snprintf(own, sizeof own, "%s-reuse", owner);
    tw_open(old, own, "holiday", "EUR", 0);
    json_decref(tw_money(old, "deposits", 100, "in"));
    json_decref(tw_money(old, "withdrawals", 100, "out"));
    path_of(path, sizeof path, old, "close");
    json_decref(tw_post(NULL, path, "{\"reason\":\"done\"}", NULL, 200));

    tw_open(fresh, own, "holiday", "EUR", 0);
    assert_string_not_equal(old, fresh);
    snprintf(body, sizeof body, "{\"owner\":\"%s\",\"name\":\"holiday\",\"currency\":\"EUR\"}", own);
    tw_reject(NULL, "/accounts", body, NULL, 409, "name_taken");
    /* the name is per owner */
    snprintf(body, sizeof body, "{\"owner\":\"%s-2\",\"name\":\"holiday\",\"currency\":\"EUR\"}", own);
    json_decref(tw_post(NULL, "/accounts", body, NULL, 201));

    path_of(path, sizeof path, old, "deposits");
    tw_reject(NULL, path, "{\"amount\":5}", NULL, 409, "account_closed");
    path_of(path, sizeof path, old, "withdrawals");
    tw_reject(NULL, path, "{\"amount\":5}", NULL, 409, "account_closed");
    path_of(path, sizeof path, old, "close");
    tw_reject(NULL, path, "{}", NULL, 409, "account_closed");
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1}", fresh, old);
    tw_reject(NULL, "/transfers", body, NULL, 409, "account_closed");

    doc = tw_money(fresh, "deposits", 40, "new life");
    assert_int_equal(tw_int(doc, "version"), 2);
    assert_int_equal(tw_int(doc, "balance"), 40);
    json_decref(doc);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM accounts WHERE owner = $1 AND name = 'holiday'", own, NULL), 2);
    assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM accounts WHERE owner = $1 AND name = 'holiday' "
                                   "AND status = 'open'", own, NULL), 1);
    assert_int_equal(tw_check_gapless(pg, old), 4);
    assert_int_equal(tw_check_gapless(pg, fresh), 2);
    PQfinish(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_happy_paths),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_bearer_token),
        cmocka_unit_test(test_closed_name_reused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
