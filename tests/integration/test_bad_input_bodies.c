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
#include "tbad.h"
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

static const char *target_path(enum tbad_target t, char *buf, size_t len)
{
    return tbad_path(t, acct1, buf, len);
}

static void test_writer_bad_bodies(void **state)
{
    char path[160], *body;
    size_t cap = 64 * 1024;

    (void)state;
    body = malloc(cap);
    assert_non_null(body);
    for (size_t i = 0; i < tbad_nbodies; i++) {
        const struct tbad_body *b = &tbad_bodies[i];
        tbad_format(body, cap, b, acct1, acct2, dep_event);
        tw_reject(writer_url, target_path(b->t, path, sizeof path), body, NULL, b->status, b->code);
    }
    /* the same, with an Idempotency-Key: a rejected request keeps no key (tw_reject counts) */
    tw_reject(writer_url, target_path(TB_DEPOSIT, path, sizeof path), "{\"amount\":1.5}",
              "Idempotency-Key: bad-input-1\r\n", 400, "invalid_field");
    tw_reject(writer_url, target_path(TB_DEPOSIT, path, sizeof path), "{\"amount\":5}",
              "Idempotency-Key: \r\n", 400, "invalid_field");
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
    (void)target_path(TB_DEPOSIT, path, sizeof path);
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
    tw_reject(writer_url, target_path(TB_DEPOSIT, path, sizeof path), body, NULL, 413, "body_too_large");
    memset(body, '[', big);
    body[big] = '\0';
    tw_reject(writer_url, target_path(TB_DEPOSIT, path, sizeof path), body, NULL, 413, "body_too_large");
    /* deep nesting within the size bound */
    memset(body, '[', 30000);
    memset(body + 30000, ']', 30000);
    body[60000] = '\0';
    tw_reject(writer_url, target_path(TB_DEPOSIT, path, sizeof path), body, NULL, 400, "invalid_json");
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
    tw_reject(writer_url, target_path(TB_DEPOSIT, path, sizeof path), "{\"amount\":5}", "If-Match: 1.5\r\n", 400,
              "invalid_field");
    tw_reject(writer_url, target_path(TB_DEPOSIT, path, sizeof path), "{\"amount\":5}",
              "If-Match: 99999999999999999999999\r\n", 400, "invalid_field");
    tw_reject(writer_url, target_path(TB_DEPOSIT, path, sizeof path), "{\"amount\":5}",
              "Idempotency-Key: \xff\xfe\r\n", 400, "invalid_field");
    memset(body, 'k', 2000);
    memcpy(body, "Idempotency-Key: ", 17);
    memcpy(body + 2000, "\r\n", 3);
    tw_reject(writer_url, target_path(TB_DEPOSIT, path, sizeof path), "{\"amount\":5}", body, 400, "invalid_field");
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
    char path[12000];
    char *body;

    (void)state;
    for (size_t i = 0; i < tbad_nquery_params; i++) {
        snprintf(path, sizeof path, "/accounts/%s/statement?%s", acct1, tbad_query_params[i]);
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
