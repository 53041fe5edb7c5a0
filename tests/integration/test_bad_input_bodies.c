/* Hostile request bodies, paths and query strings against the writer and the read API:
 * malformed, truncated and mistyped JSON, floats and overflowing integers, bad UUIDs and UTF-8,
 * NUL bytes, SQL meta-characters, huge bodies. Each gets a 4xx JSON error, writes nothing, and
 * the service keeps serving. (Header abuse and slow clients: test_bad_input_headers; the same
 * with a store down: test_bad_input_stores.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"
#include "thttp.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"

#define UA "6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab" /* an id no account has */

static const char *writer_url, *readapi_url;
static char acct1[UUID_STR_SIZE], acct2[UUID_STR_SIZE], dep_event[UUID_STR_SIZE];

static void assert_serving(const char *base)
{
    if (!twait_http_ok(base, "/healthz", 3000))
        tfail("%s/healthz does not answer 200 after bad input", base);
}

static int setup(void **state)
{
    json_t *doc;

    writer_url = tenv("WRITER_URL");
    readapi_url = tenv("READAPI_URL");
    tstack_group_setup(state);
    tw_open(acct1, "bad-input", "main", "EUR", 0);
    tw_open(acct2, "bad-input", "other", "EUR", 0);
    doc = tw_money(acct1, "deposits", 5000, "seed");
    snprintf(dep_event, sizeof dep_event, "%s", tw_str(doc, "event_id"));
    json_decref(doc);
    return 0;
}

/* ---- writer bodies ---- */

enum target { T_OPEN, T_DEPOSIT, T_WITHDRAW, T_TRANSFER, T_REVERSE, T_CLOSE };

struct bad_body {
    enum target t;
    const char *body; /* %1$s: the account, %2$s: the other account, %3$s: an event id */
    int status;
    const char *code;
};

static const struct bad_body bad_bodies[] = {
    /* malformed */
    {T_DEPOSIT, "", 400, "invalid_json"},
    {T_DEPOSIT, "   ", 400, "invalid_json"},
    {T_DEPOSIT, "{", 400, "invalid_json"},
    {T_DEPOSIT, "}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5,}", 400, "invalid_json"},
    {T_DEPOSIT, "{'amount':5}", 400, "invalid_json"},
    {T_DEPOSIT, "{amount:5}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5}{\"amount\":5}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5} trailing", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":05}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":0x10}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":+5}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":NaN}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":Infinity}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":\"unterminated}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":\"bad \\x escape\"}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":\"lone \\ud800 surrogate\"}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":\"nul \\u0000 inside\"}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":\"raw\ttab\"}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":\"\xc3\x28\"}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":\"\xed\xa0\x80\"}", 400, "invalid_json"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":\"\xc0\xaf overlong\"}", 400, "invalid_json"},
    {T_DEPOSIT, "\xef\xbb\xbf{\"amount\":5}", 400, "invalid_json"},
    {T_OPEN, "{\"owner\":\"\xff\",\"name\":\"n\",\"currency\":\"EUR\"}", 400, "invalid_json"},
    /* not an object */
    {T_DEPOSIT, "[]", 400, "invalid_json"},
    {T_DEPOSIT, "[{\"amount\":5}]", 400, "invalid_json"},
    {T_DEPOSIT, "5", 400, "invalid_json"},
    {T_DEPOSIT, "\"amount\"", 400, "invalid_json"},
    {T_DEPOSIT, "null", 400, "invalid_json"},
    {T_DEPOSIT, "true", 400, "invalid_json"},
    /* wrong types, field by field */
    {T_DEPOSIT, "{\"amount\":\"5\"}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":true}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":null}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":[5]}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":{\"v\":5}}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":5}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":[\"x\"]}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":5,\"name\":\"n\",\"currency\":\"EUR\"}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":null,\"currency\":\"EUR\"}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":978}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"eur\"}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EURO\"}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"E\xc3\x9cR\"}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":\"10\"}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":-1}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":1.0}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"extra\":1}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"currency\":\"EUR\"}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":5,\"to\":\"%2$s\",\"amount\":5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":[\"%2$s\"],\"amount\":5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%1$s\",\"amount\":5}", 400, "invalid_field"},
    {T_REVERSE, "{\"event_id\":5}", 400, "invalid_field"},
    {T_REVERSE, "{\"event_id\":\"%3$s\",\"reason\":false}", 400, "invalid_field"},
    {T_CLOSE, "{\"reason\":{}}", 400, "invalid_field"},
    /* floats for amounts */
    {T_DEPOSIT, "{\"amount\":1.5}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":5.0}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":1e3}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":1E2}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":-0.0}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":0.1e1}", 400, "invalid_field"},
    {T_WITHDRAW, "{\"amount\":0.5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%2$s\",\"amount\":2.5}", 400, "invalid_field"},
    /* int64 overflow */
    {T_DEPOSIT, "{\"amount\":9223372036854775808}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":18446744073709551616}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":-9223372036854775809}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":1e19}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":99999999999999999999999999999999999999999999999999}", 400, "invalid_field"},
    {T_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":9223372036854775808}", 400, "invalid_field"},
    /* the largest amount parses; the balance it would make is refused, not wrapped */
    {T_WITHDRAW, "{\"amount\":9223372036854775807}", 422, "insufficient_funds"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%2$s\",\"amount\":9223372036854775807}", 422, "insufficient_funds"},
    /* zero and negative */
    {T_DEPOSIT, "{\"amount\":0}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":-1}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":-9223372036854775808}", 400, "invalid_field"},
    {T_WITHDRAW, "{\"amount\":0}", 400, "invalid_field"},
    {T_WITHDRAW, "{\"amount\":-5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%2$s\",\"amount\":0}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%2$s\",\"amount\":-5}", 400, "invalid_field"},
    /* invalid UUIDs in the body */
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"not-a-uuid\",\"amount\":5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"6b3f0c1e-2a4d-4b8e-9c1f-0123456789abc\",\"amount\":5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"6b3f0c1e2a4d4b8e9c1f0123456789ab\",\"amount\":5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"{6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab}\",\"amount\":5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"6b3f0c1e-2a4d-4b8e-9c1f-0123456789ag\",\"amount\":5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"\",\"amount\":5}", 400, "invalid_field"},
    {T_TRANSFER, "{\"from\":\"'; DROP TABLE events; --\",\"to\":\"%2$s\",\"amount\":5}", 400, "invalid_field"},
    {T_REVERSE, "{\"event_id\":\"6b3f0c1e-2a4d-4b8e-9c1f-01234567\"}", 400, "invalid_field"},
    {T_REVERSE, "{\"event_id\":\"6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab' OR '1'='1\"}", 400, "invalid_field"},
    /* limits on strings */
    {T_CLOSE, "{\"reason\":\"%4$s\"}", 400, "invalid_field"},
    {T_DEPOSIT, "{\"amount\":5,\"description\":\"%4$s\"}", 400, "invalid_field"},
};

static const char *target_path(enum target t, char *buf, size_t len)
{
    static const char *const tails[] = {"", "deposits", "withdrawals", "", "reversals", "close"};
    if (t == T_OPEN)
        return "/accounts";
    if (t == T_TRANSFER)
        return "/transfers";
    snprintf(buf, len, "/accounts/%s/%s", acct1, tails[t]);
    return buf;
}

static void test_writer_bad_bodies(void **state)
{
    char path[160], *body, *longstr;
    size_t cap = 64 * 1024;

    (void)state;
    longstr = malloc(8192);
    body = malloc(cap);
    assert_non_null(longstr);
    assert_non_null(body);
    memset(longstr, 'x', 8000);
    longstr[8000] = '\0';
    for (size_t i = 0; i < sizeof bad_bodies / sizeof bad_bodies[0]; i++) {
        const struct bad_body *b = &bad_bodies[i];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(body, cap, b->body, acct1, acct2, dep_event, longstr);
#pragma GCC diagnostic pop
        tw_reject(writer_url, target_path(b->t, path, sizeof path), body, NULL, b->status, b->code);
    }
    /* the same, with an Idempotency-Key: a rejected request keeps no key (tw_reject counts) */
    tw_reject(writer_url, target_path(T_DEPOSIT, path, sizeof path), "{\"amount\":1.5}",
              "Idempotency-Key: bad-input-1\r\n", 400, "invalid_field");
    tw_reject(writer_url, target_path(T_DEPOSIT, path, sizeof path), "{\"amount\":5}",
              "Idempotency-Key: \r\n", 400, "invalid_field");
    free(longstr);
    free(body);
    assert_serving(writer_url);
}

/* Every proper prefix of a valid body is invalid JSON, and refused as such. */
static void test_writer_truncated(void **state)
{
    char path[160], body[512], cut[512];

    (void)state;
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":125,\"description\":\"rent \\u00e9\"}",
             acct1, acct2);
    for (size_t n = 0; n < strlen(body); n++) {
        memcpy(cut, body, n);
        cut[n] = '\0';
        tw_reject(writer_url, "/transfers", cut, NULL, 400, "invalid_json");
    }
    snprintf(body, sizeof body, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":10}");
    for (size_t n = 0; n < strlen(body); n++) {
        memcpy(cut, body, n);
        cut[n] = '\0';
        tw_reject(writer_url, "/accounts", cut, NULL, 400, "invalid_json");
    }
    (void)target_path(T_DEPOSIT, path, sizeof path);
    assert_serving(writer_url);
}

/* Deep nesting, huge bodies, bad paths and headers. */
static void test_writer_sizes_and_paths(void **state)
{
    char path[4200];
    size_t big = 1024 * 1024;
    char *body = malloc(big + 1);

    (void)state;
    assert_non_null(body);
    /* 1 MiB: refused before parsing */
    memset(body, ' ', big);
    body[0] = '{';
    memcpy(body + big - 12, "\"amount\":5}", 11);
    body[big - 1] = '\0';
    tw_reject(writer_url, target_path(T_DEPOSIT, path, sizeof path), body, NULL, 413, "body_too_large");
    memset(body, '[', big);
    body[big] = '\0';
    tw_reject(writer_url, target_path(T_DEPOSIT, path, sizeof path), body, NULL, 413, "body_too_large");
    /* deep nesting within the size bound */
    memset(body, '[', 30000);
    memset(body + 30000, ']', 30000);
    body[60000] = '\0';
    tw_reject(writer_url, target_path(T_DEPOSIT, path, sizeof path), body, NULL, 400, "invalid_json");
    /* invalid UUIDs in the path */
    tw_reject(writer_url, "/accounts/not-a-uuid/deposits", "{\"amount\":5}", NULL, 400, "invalid_field");
    tw_reject(writer_url, "/accounts/6b3f0c1e-2a4d-4b8e-9c1f-0123456789abc/deposits", "{\"amount\":5}", NULL,
              400, "invalid_field");
    tw_reject(writer_url, "/accounts/6B3F0C1E-2A4D-4B8E-9C1F-0123456789AG/deposits", "{\"amount\":5}", NULL,
              400, "invalid_field");
    tw_reject(writer_url, "/accounts/%27%3B%20DROP%20TABLE%20events/deposits", "{\"amount\":5}", NULL, 400,
              "invalid_field");
    tw_reject(writer_url, "/accounts/%ff%fe/deposits", "{\"amount\":5}", NULL, 400, "invalid_field");
    tw_reject(writer_url, "/accounts/" UA "/deposits", "{\"amount\":5}", NULL, 404, "account_not_found");
    tw_reject(writer_url, "/accounts/" UA "/nothing", "{\"amount\":5}", NULL, 404, "not_found");
    /* a control byte in the request target, raw or %-encoded: refused before routing */
    tw_reject(writer_url, "/accounts/" UA "%00/deposits", "{\"amount\":5}", NULL, 400, "invalid_path");
    tw_reject(writer_url, "/accounts/" UA "/deposits%0a", "{\"amount\":5}", NULL, 400, "invalid_path");
    memset(path, 'a', 4000);
    memcpy(path, "/accounts/", 10);
    memcpy(path + 3990, "/deposits", 10);
    tw_reject(writer_url, path, "{\"amount\":5}", NULL, 400, "invalid_field");
    /* headers with bad values */
    tw_reject(writer_url, target_path(T_DEPOSIT, path, sizeof path), "{\"amount\":5}", "If-Match: 1.5\r\n", 400,
              "invalid_field");
    tw_reject(writer_url, target_path(T_DEPOSIT, path, sizeof path), "{\"amount\":5}",
              "If-Match: 99999999999999999999999\r\n", 400, "invalid_field");
    tw_reject(writer_url, target_path(T_DEPOSIT, path, sizeof path), "{\"amount\":5}",
              "Idempotency-Key: \xff\xfe\r\n", 400, "invalid_field");
    memset(body, 'k', 2000);
    memcpy(body, "Idempotency-Key: ", 17);
    memcpy(body + 2000, "\r\n", 3);
    tw_reject(writer_url, target_path(T_DEPOSIT, path, sizeof path), "{\"amount\":5}", body, 400, "invalid_field");
    free(body);
    assert_serving(writer_url);
}

/* SQL meta-characters are data: stored verbatim, read back verbatim. */
static void test_writer_sql_metacharacters(void **state)
{
    static const char *const owners[] = {"o'brien", "x'); DROP TABLE events; --", "\\\\ %% _ $1 ;",
                                         "\\\"quoted\\\"", "caf\\u00e9 \\u2603 \xe2\x98\x83"};
    static const char *const stored[] = {"o'brien", "x'); DROP TABLE events; --", "\\ %% _ $1 ;",
                                         "\"quoted\"", "caf\xc3\xa9 \xe2\x98\x83 \xe2\x98\x83"};
    PGconn *pg = tw_pg();
    struct tw_counts before, after;

    (void)state;
    tw_counts(pg, &before);
    for (size_t i = 0; i < sizeof owners / sizeof owners[0]; i++) {
        char body[512], id[UUID_STR_SIZE], path[160];
        json_t *doc;
        int64_t deadline;
        snprintf(body, sizeof body, "{\"owner\":\"%s\",\"name\":\"n'; --%zu\",\"currency\":\"EUR\"}", owners[i], i);
        doc = tw_post(writer_url, "/accounts", body, NULL, 201);
        snprintf(id, sizeof id, "%s", tw_str(doc, "account_id"));
        json_decref(doc);
        snprintf(body, sizeof body, "{\"amount\":7,\"description\":\"%s\"}", owners[i]);
        snprintf(path, sizeof path, "/accounts/%s/deposits", id);
        json_decref(tw_post(writer_url, path, body, NULL, 201));
        /* through the projection to the read API, byte for byte */
        snprintf(path, sizeof path, "/accounts/%s?min_version=2&wait_ms=5000", id);
        deadline = tnow_ms() + 15000;
        for (;;) {
            struct thttp_resp r;
            (void)thttp_request(&r, "GET", readapi_url, path, NULL, NULL, 8000);
            doc = r.status == 200 ? thttp_json(&r) : NULL;
            thttp_resp_release(&r);
            if (doc != NULL || tnow_ms() > deadline)
                break;
            usleep(100000);
        }
        if (doc == NULL)
            tfail("GET %s: not projected", path);
        assert_string_equal(tw_str(doc, "owner"), stored[i]);
        json_decref(doc);
        assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE stream_id = $1::uuid AND "
                                       "data->>'description' = $2",
                                   id, stored[i]),
                         1);
    }
    tw_counts(pg, &after);
    assert_int_equal(after.events, before.events + 10);
    assert_int_equal(after.accounts, before.accounts + 5);
    PQfinish(pg);
}

/* ---- the read API ---- */

static void test_readapi_bad_input(void **state)
{
    static const char *const bad_params[] = {
        "limit=abc", "limit=0", "limit=-1", "limit=1.5", "limit=1e2", "limit=99999999999999999999",
        "limit=", "limit=%00", "before=x", "before=-1", "before=9223372036854775808",
        "min_version=-1", "min_version=1.0", "min_version=18446744073709551616", "wait_ms=-5",
        "wait_ms=1e3", "wait_ms=10001", "min_version=1&wait_ms=abc", "limit=%ff",
        "limit=5'%20OR%201=1--",
    };
    char path[12000];
    char *body;

    (void)state;
    for (size_t i = 0; i < sizeof bad_params / sizeof bad_params[0]; i++) {
        snprintf(path, sizeof path, "/accounts/%s/statement?%s", acct1, bad_params[i]);
        tr_expect_error("GET", readapi_url, path, 400, NULL);
    }
    tr_expect_error("GET", readapi_url, "/accounts/not-a-uuid", 400, NULL);
    tr_expect_error("GET", readapi_url, "/accounts/" UA "x", 400, NULL);
    tr_expect_error("GET", readapi_url, "/accounts/%ff%fe%fd", 400, NULL);
    tr_expect_error("GET", readapi_url, "/accounts/" UA "%00", 400, "invalid_path");
    tr_expect_error("GET", readapi_url, "/accounts/" UA "%7f/statement", 400, "invalid_path");
    tr_expect_error("GET", readapi_url, "/accounts/'%20OR%20'1'='1", 400, NULL);
    tr_expect_error("GET", readapi_url, "/accounts/*", 400, NULL);
    tr_expect_error("GET", readapi_url, "/accounts/" UA "/statement/x", 404, NULL);
    tr_expect_error("GET", readapi_url, "/accounts/" UA, 404, NULL);
    memset(path, 'a', 10000);
    memcpy(path, "/accounts/", 10);
    path[10000] = '\0';
    tr_expect_error("GET", readapi_url, path, 400, NULL);
    /* a body where none belongs: bounded, then refused */
    body = malloc(1024 * 1024 + 1);
    assert_non_null(body);
    memset(body, 'x', 1024 * 1024);
    body[1024 * 1024] = '\0';
    snprintf(path, sizeof path, "/accounts/%s", acct1);
    tr_expect_error_body("GET", readapi_url, path, body, 413, NULL);
    free(body);
    assert_serving(readapi_url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_bad_bodies),
        cmocka_unit_test(test_writer_truncated),
        cmocka_unit_test(test_writer_sizes_and_paths),
        cmocka_unit_test(test_writer_sql_metacharacters),
        cmocka_unit_test(test_readapi_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, tstack_group_teardown);
}
