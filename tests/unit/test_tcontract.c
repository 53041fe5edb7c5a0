/* The response contract check (tests/support/tcontract.c) against the build's openapi.json:
 * answers as the services give them pass, and each deliberate mismatch fails naming what
 * differs: a field renamed in a response, a field of the wrong type, an error code under the
 * wrong status, a required header missing, an undocumented status or route. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "tcontract.h"

#define ID "0b7c3a1e-5a8e-4e0b-9c1d-2f3e4a5b6c7d"
#define EV "1c8d4b2f-6b9f-4f1c-8d2e-3a4b5c6d7e8f"
#define H "HTTP/1.1 200 OK\r\nX-Request-Id: r1\r\n"

static json_t *spec;

static int setup(void **state)
{
    char err[256];
    (void)state;
    spec = tc_load(NULL, err, sizeof err);
    if (spec == NULL)
        fprintf(stderr, "%s\n", err);
    return spec == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(spec);
    return 0;
}

struct contract_case {
    const char *name;
    const char *server; /* NULL: any */
    const char *method, *target;
    int status;
    const char *headers, *body;
    const char *fails_with; /* NULL: must pass; else a part of the difference reported */
};

static const struct contract_case cases[] = {
    {"deposit reply", NULL, "POST", "/accounts/" ID "/deposits", 201, H,
     "{\"event_id\":\"" EV "\",\"account_id\":\"" ID "\",\"version\":2,\"position\":7,\"balance\":1500}", NULL},
    /* the deliberate mismatch of issue 17: a field renamed in a response */
    {"deposit reply, balance renamed", NULL, "POST", "/accounts/" ID "/deposits", 201, H,
     "{\"event_id\":\"" EV "\",\"account_id\":\"" ID "\",\"version\":2,\"position\":7,\"balanc\":1500}",
     "\"balance\" is missing"},
    {"deposit reply, renamed field reported as unknown", NULL, "POST", "/accounts/" ID "/deposits", 201, H,
     "{\"event_id\":\"" EV "\",\"account_id\":\"" ID "\",\"version\":2,\"position\":7,\"balanc\":1500}",
     "$.balanc: a field the document does not have"},
    {"deposit reply, balance a string", NULL, "POST", "/accounts/" ID "/deposits", 201, H,
     "{\"event_id\":\"" EV "\",\"account_id\":\"" ID "\",\"version\":2,\"position\":7,\"balance\":\"1500\"}",
     "$.balance: a string, the document says integer"},
    {"account document", NULL, "GET", "/accounts/" ID "?min_version=2&wait_ms=100", 200, H "ETag: \"2\"\r\n",
     "{\"account_id\":\"" ID "\",\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"balance\":0,"
     "\"overdraft_limit\":0,\"status\":\"open\",\"version\":2,\"updated_at\":\"2026-12-06T23:00:00.000000Z\"}",
     NULL},
    {"account document, status outside its enum", NULL, "GET", "/accounts/" ID, 200, H,
     "{\"account_id\":\"" ID "\",\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"balance\":0,"
     "\"overdraft_limit\":0,\"status\":\"frozen\",\"version\":2,\"updated_at\":\"2026-12-06T23:00:00.000000Z\"}",
     "$.status: \"frozen\" is not in the document's enum"},
    {"a 422 with its code", NULL, "POST", "/accounts/" ID "/withdrawals", 422, H,
     "{\"error\":\"insufficient_funds\",\"message\":\"m\",\"request_id\":\"r1\"}", NULL},
    {"a code under another status", NULL, "POST", "/accounts/" ID "/withdrawals", 409, H,
     "{\"error\":\"insufficient_funds\",\"message\":\"m\",\"request_id\":\"r1\"}", "is not in the document's enum"},
    {"an error without request_id", NULL, "POST", "/transfers", 400, H, "{\"error\":\"invalid_field\",\"message\":\"m\"}",
     "\"request_id\" is missing"},
    {"a 503 with Retry-After", NULL, "GET", "/accounts/" ID "?min_version=9", 503, H "Retry-After: 1\r\n",
     "{\"error\":\"not_yet_projected\",\"message\":\"m\",\"request_id\":\"r1\",\"projected_version\":2,"
     "\"min_version\":9}", NULL},
    {"a 503 without Retry-After", NULL, "GET", "/accounts/" ID, 503, H,
     "{\"error\":\"read_model_unavailable\",\"message\":\"m\",\"request_id\":\"r1\"}",
     "the required header Retry-After is missing"},
    {"an undocumented status", NULL, "POST", "/accounts/" ID "/deposits", 202, H, "{}", "status 202 is not documented"},
    {"an unknown route: 404 not_found", NULL, "GET", "/nowhere", 404, H,
     "{\"error\":\"not_found\",\"message\":\"m\",\"request_id\":\"r1\"}", NULL},
    {"an unknown route answered 200", NULL, "GET", "/nowhere", 200, H, "{}", "no route of the document"},
    {"another method: 405 with Allow", NULL, "DELETE", "/accounts/" ID, 405, H "Allow: GET\r\n",
     "{\"error\":\"method_not_allowed\",\"message\":\"m\",\"request_id\":\"r1\"}", NULL},
    {"a 405 without Allow", NULL, "DELETE", "/accounts/" ID, 405, H,
     "{\"error\":\"method_not_allowed\",\"message\":\"m\",\"request_id\":\"r1\"}", "header Allow is missing"},
    {"statement with a wrong entry type", NULL, "GET", "/accounts/" ID "/statement", 200, H,
     "{\"account_id\":\"" ID "\",\"balance\":0,\"version\":1,\"order\":\"desc\",\"next_before\":null,\"entries\":"
     "[{\"version\":1,\"event_id\":\"" EV "\",\"type\":\"Opened\",\"amount\":0,\"balance_after\":0,"
     "\"description\":\"\",\"at\":\"2026-12-06T23:00:00.000000Z\"}]}",
     "$.entries[0].type: \"Opened\" is not in the document's enum"},
    {"GET /accounts on the writer: a 405", "writer", "GET", "/accounts", 405, H "Allow: POST\r\n",
     "{\"error\":\"method_not_allowed\",\"message\":\"m\",\"request_id\":\"r1\"}", NULL},
    {"GET /accounts on the writer answered 200", "writer", "GET", "/accounts?owner=o", 200, H,
     "{\"accounts\":[],\"next_after\":null}", "has no GET on the writer"},
    {"HEAD carries no body", NULL, "HEAD", "/healthz", 200, H, "", NULL},
    {"metrics are text", NULL, "GET", "/metrics", 200, H, "# TYPE x counter\nx 1\n", NULL},
};

static void test_cases(void **state)
{
    int failed = 0;
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct contract_case *c = &cases[i];
        char err[1024];
        int rc = tc_check(spec, c->server, c->method, c->target, c->status, c->headers, c->body, err, sizeof err);
        int ok = c->fails_with == NULL ? rc == 0 : rc == -1 && strstr(err, c->fails_with) != NULL;
        fprintf(stderr, "%s %s: %s%s%s\n", ok ? "ok  " : "FAIL", c->name, rc == 0 ? "passes" : "fails: ",
                rc == 0 ? "" : err, "");
        failed += !ok;
    }
    assert_int_equal(failed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
