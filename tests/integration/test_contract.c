/* Issue 17: the response contract. Every route of both services, and every error code a test
 * can provoke without breaking a dependency, called for real; every answer checked against
 * docs/openapi.yaml (tests/support/tcontract: route, status, required headers, the body's
 * schema). Each service serves the document at GET /openapi.json, equal to the build's. */
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
#include "tcontract.h"
#include "tholes.h"
#include "thttp.h"
#include "tstack.h"
#include "ttoken.h"
#include "twriter.h"

static json_t *spec;
static int checked;

/* One call, checked against the document; fails unless the status is expect (0: any). Returns
 * the body parsed (new reference; NULL when not JSON). auth: NULL the admin token, "" none. */
static json_t *call(const char *server, const char *method, const char *path, const char *body,
                    const char *headers, const char *auth, int expect)
{
    const char *base = strcmp(server, "writer") == 0 ? tenv("WRITER_URL") : tenv("READAPI_URL");
    struct thttp_resp r;
    char err[2048];
    json_t *doc;
    int rc;

    rc = auth == NULL ? thttp_request(&r, method, base, path, body, headers, 10000)
                      : thttp_request_as(&r, method, base, path, body, headers, auth, 10000);
    if (rc != 0)
        tfail("%s %s %.120s: no answer", server, method, path);
    if (expect != 0 && r.status != expect)
        tfail("%s %s %.120s: %d, expected %d: %.300s", server, method, path, r.status, expect, r.body);
    if (tc_check(spec, server, method, path, r.status, r.headers, r.body, err, sizeof err) != 0)
        tfail("contract: %s", err);
    checked++;
    doc = thttp_json(&r);
    thttp_resp_release(&r);
    return doc;
}

static void ok(const char *server, const char *method, const char *path, const char *body, int expect)
{
    json_decref(call(server, method, path, body, NULL, NULL, expect));
}

static void test_writer_routes_and_errors(void **state)
{
    char a[UUID_STR_SIZE], b[UUID_STR_SIZE], usd[UUID_STR_SIZE], path[256], body[512], dep_ev[UUID_STR_SIZE],
        open_ev[UUID_STR_SIZE], transfer[UUID_STR_SIZE];
    char *big, *reader;
    json_t *d;
    PGconn *pg = tw_pg();

    (void)state;
    d = call("writer", "POST", "/accounts", "{\"owner\":\"contract\",\"name\":\"a\",\"currency\":\"EUR\",\"overdraft_limit\":1000}",
             NULL, NULL, 201);
    snprintf(a, sizeof a, "%s", tw_str(d, "account_id"));
    json_decref(d);
    d = call("writer", "POST", "/accounts", "{\"owner\":\"contract\",\"name\":\"b\",\"currency\":\"EUR\"}", NULL, NULL, 201);
    snprintf(b, sizeof b, "%s", tw_str(d, "account_id"));
    json_decref(d);
    d = call("writer", "POST", "/accounts", "{\"owner\":\"contract\",\"name\":\"u\",\"currency\":\"USD\"}", NULL, NULL, 201);
    snprintf(usd, sizeof usd, "%s", tw_str(d, "account_id"));
    json_decref(d);
    ok("writer", "POST", "/accounts", "{\"owner\":\"contract\",\"name\":\"a\",\"currency\":\"EUR\"}", 409); /* name_taken */
    ok("writer", "POST", "/accounts", "{", 400);                                                        /* invalid_json */
    ok("writer", "POST", "/accounts", "{\"owner\":\"contract\",\"name\":\"x\"}", 400);                  /* invalid_field */

    snprintf(path, sizeof path, "/accounts/%s/deposits", a);
    d = call("writer", "POST", path, "{\"amount\":1000,\"description\":\"c\"}", NULL, NULL, 201);
    snprintf(dep_ev, sizeof dep_ev, "%s", tw_str(d, "event_id"));
    json_decref(d);
    json_decref(call("writer", "POST", path, "{\"amount\":5}", "Idempotency-Key: contract-1\r\n", NULL, 201));
    json_decref(call("writer", "POST", path, "{\"amount\":5}", "Idempotency-Key: contract-1\r\n", NULL, 201)); /* replay */
    json_decref(call("writer", "POST", path, "{\"amount\":6}", "Idempotency-Key: contract-1\r\n", NULL, 422));
    json_decref(call("writer", "POST", path, "{\"amount\":5}", "If-Match: 1\r\n", NULL, 409)); /* version_conflict */
    json_decref(call("writer", "POST", path, "{\"amount\":5}", NULL, "", 401));                /* unauthorized */
    reader = ttoken_header("contract", "accounts:read");
    json_decref(call("writer", "POST", path, "{\"amount\":5}", NULL, reader, 403)); /* forbidden */
    free(reader);
    snprintf(path, sizeof path, "/accounts/%s/withdrawals", a);
    ok("writer", "POST", path, "{\"amount\":100000}", 422); /* insufficient_funds */
    ok("writer", "POST", path, "{\"amount\":10}", 201);
    ok("writer", "POST", "/accounts/00000000-0000-4000-8000-000000000099/deposits", "{\"amount\":1}", 404);

    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":100}", a, b);
    d = call("writer", "POST", "/transfers", body, NULL, NULL, 201);
    snprintf(transfer, sizeof transfer, "%s", tw_str(d, "transfer_id"));
    json_decref(d);
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":1}", a, usd);
    ok("writer", "POST", "/transfers", body, 422); /* currency_mismatch */

    snprintf(path, sizeof path, "/accounts/%s/reversals", a);
    snprintf(body, sizeof body, "{\"event_id\":\"%s\",\"reason\":\"contract\"}", dep_ev);
    ok("writer", "POST", path, body, 201);
    ok("writer", "POST", path, body, 409); /* already_reversed */
    {
        const char *p1[1] = {a};
        PGresult *res = PQexecParams(pg, "SELECT event_id::text FROM events WHERE stream_id = $1 AND stream_version = 1",
                                     1, NULL, p1, NULL, NULL, 0);
        snprintf(open_ev, sizeof open_ev, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    snprintf(body, sizeof body, "{\"event_id\":\"%s\"}", open_ev);
    ok("writer", "POST", path, body, 422); /* not_reversible */
    snprintf(body, sizeof body, "{\"transfer_id\":\"%s\"}", transfer);
    ok("writer", "POST", path, body, 201); /* both legs: counterparty */
    ok("writer", "POST", path, "{\"event_id\":\"00000000-0000-4000-8000-000000000098\"}", 404);

    snprintf(path, sizeof path, "/accounts/%s/close", a);
    ok("writer", "POST", path, "{}", 422); /* balance_not_zero */
    snprintf(path, sizeof path, "/accounts/%s/close", usd);
    ok("writer", "POST", path, "{\"reason\":\"contract\"}", 200);
    snprintf(path, sizeof path, "/accounts/%s/deposits", usd);
    ok("writer", "POST", path, "{\"amount\":1}", 409); /* account_closed */

    /* what any route can get */
    ok("writer", "GET", "/nowhere", NULL, 404);
    ok("writer", "GET", "/accounts", NULL, 405);
    ok("writer", "DELETE", "/transfers", NULL, 405);
    ok("writer", "GET", "/accounts/%01", NULL, 400); /* invalid_path */
    big = malloc(70 * 1024 + 1);
    memset(big, 'x', 70 * 1024);
    big[70 * 1024] = '\0';
    ok("writer", "POST", "/accounts", big, 413);
    {
        char *hdr = malloc(9 * 1024 + 32);
        snprintf(hdr, 32, "X-Big: ");
        memset(hdr + 7, 'y', 9 * 1024);
        strcpy(hdr + 7 + 9 * 1024, "\r\n");
        json_decref(call("writer", "GET", "/healthz", NULL, hdr, NULL, 431));
        free(hdr);
    }
    free(big);
    PQfinish(pg);
}

static void test_read_routes_and_errors(void **state)
{
    char a[UUID_STR_SIZE], b[UUID_STR_SIZE], path[256], body[256], ev[UUID_STR_SIZE], tr[UUID_STR_SIZE];
    PGconn *pg = tw_pg();
    json_t *d;

    (void)state;
    tw_open(a, "contract-r", "a", "EUR", 0);
    tw_open(b, "contract-r", "b", "EUR", 0);
    d = tw_money(a, "deposits", 500, "r");
    snprintf(ev, sizeof ev, "%s", tw_str(d, "event_id"));
    json_decref(d);
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":100}", a, b);
    d = tw_post(NULL, "/transfers", body, NULL, 201);
    snprintf(tr, sizeof tr, "%s", tw_str(d, "transfer_id"));
    json_decref(d);

    snprintf(path, sizeof path, "/accounts/%s?min_version=3&wait_ms=5000", a);
    ok("read API", "GET", path, NULL, 200);
    snprintf(path, sizeof path, "/accounts/%s?min_version=99&wait_ms=100", a);
    ok("read API", "GET", path, NULL, 503); /* not_yet_projected */
    snprintf(path, sizeof path, "/accounts/%s/statement?limit=2", a);
    ok("read API", "GET", path, NULL, 200);
    snprintf(path, sizeof path, "/accounts/%s/statement?order=asc&after=0", a);
    ok("read API", "GET", path, NULL, 200);
    snprintf(path, sizeof path, "/accounts/%s/statement?nope=1", a);
    ok("read API", "GET", path, NULL, 400); /* invalid_query */
    ok("read API", "GET", "/accounts?owner=contract-r&limit=1", NULL, 200);
    snprintf(path, sizeof path, "/events/%s", ev);
    ok("read API", "GET", path, NULL, 200);
    ok("read API", "GET", "/events/00000000-0000-4000-8000-000000000097", NULL, 404);
    snprintf(path, sizeof path, "/transfers/%s", tr);
    ok("read API", "GET", path, NULL, 200);
    ok("read API", "GET", "/transfers/00000000-0000-4000-8000-000000000096", NULL, 404);
    ok("read API", "GET", "/accounts/00000000-0000-4000-8000-000000000095", NULL, 404);
    ok("read API", "GET", "/projections", NULL, 200);
    ok("read API", "POST", "/accounts/00000000-0000-4000-8000-000000000095", "{}", 405);
    ok("read API", "GET", "/nowhere", NULL, 404);
    json_decref(call("read API", "GET", "/projections", NULL, NULL, "", 401));

    /* a parked event: the document with stalled and Account-Stalled, a min_version read 409 */
    {
        char poison[UUID_STR_SIZE];
        int64_t t0 = tnow_ms();
        struct thttp_resp r;
        char hv[64];
        uuid_generate(poison);
        th_event(pg, 1, poison, b, 3, "NoSuchType", "{}");
        snprintf(path, sizeof path, "/accounts/%s", b);
        for (;;) {
            assert_int_equal(thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 5000), 0);
            int stalled = thttp_header(&r, "Account-Stalled", hv, sizeof hv) != NULL;
            thttp_resp_release(&r);
            if (stalled)
                break;
            if (tnow_ms() - t0 > 10000)
                tfail("account not stalled after 10 s");
            usleep(100 * 1000);
        }
        ok("read API", "GET", path, NULL, 200);
        snprintf(path, sizeof path, "/accounts/%s/statement", b);
        ok("read API", "GET", path, NULL, 200);
        snprintf(path, sizeof path, "/accounts/%s?min_version=3", b);
        ok("read API", "GET", path, NULL, 409); /* account_stalled */
    }
    PQfinish(pg);
}

/* The operations routes of all three services, and the document each serves. */
static void test_operations_and_served_document(void **state)
{
    struct tstack_svcs *s = *state;
    char projector[64], err[1024];
    const char *bases[3][2] = {{"writer", NULL}, {"read API", NULL}, {NULL, NULL}};
    static const char *const paths[] = {"/healthz", "/readyz", "/metrics", "/openapi.json"};

    snprintf(projector, sizeof projector, "http://127.0.0.1:%d", tsvc_projector_port(s->projector));
    bases[0][1] = tenv("WRITER_URL");
    bases[1][1] = tenv("READAPI_URL");
    bases[2][1] = projector;
    for (int i = 0; i < 3; i++) {
        for (size_t k = 0; k < sizeof paths / sizeof paths[0]; k++) {
            struct thttp_resp r;
            assert_int_equal(thttp_request(&r, "GET", bases[i][1], paths[k], NULL, NULL, 10000), 0);
            if (r.status != 200)
                fprintf(stderr, "%s %s: %d %s\n", bases[i][0] != NULL ? bases[i][0] : "projector", paths[k], r.status,
                        r.body);
            assert_true(r.status == 200 || (strcmp(paths[k], "/readyz") == 0 && r.status == 503));
            if (tc_check(spec, bases[i][0], "GET", paths[k], r.status, r.headers, r.body, err, sizeof err) != 0)
                tfail("contract: %s", err);
            checked++;
            if (strcmp(paths[k], "/openapi.json") == 0) {
                json_t *served = thttp_json(&r);
                assert_true(served != NULL && json_equal(served, spec));
                json_decref(served);
            }
            thttp_resp_release(&r);
        }
        {
            struct thttp_resp r;
            assert_int_equal(thttp_request(&r, "POST", bases[i][1], "/healthz", "{}", NULL, 10000), 0);
            if (tc_check(spec, bases[i][0], "POST", "/healthz", r.status, r.headers, r.body, err, sizeof err) != 0)
                tfail("contract: %s", err);
            checked++;
            thttp_resp_release(&r);
        }
    }
    fprintf(stderr, "%d answers checked against docs/openapi.yaml\n", checked);
}

static int setup(void **state)
{
    char err[256];
    spec = tc_load(NULL, err, sizeof err);
    if (spec == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return tstack_group_setup(state);
}

static int teardown(void **state)
{
    json_decref(spec);
    return tstack_group_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_routes_and_errors),
        cmocka_unit_test(test_read_routes_and_errors),
        cmocka_unit_test(test_operations_and_served_document),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
