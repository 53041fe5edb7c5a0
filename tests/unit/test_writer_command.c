/* Unit tests of the writer's routing and command parsing (table-driven, no server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "command.h"

#define ID "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
#define ID2 "11111111-2222-3333-4444-555555555555"

struct route_case {
    const char *path;
    status st;
    enum cmd_kind kind;
    const char *id;
};

static const struct route_case route_cases[] = {
    {"/healthz", ST_OK, CMD_HEALTHZ, ""},
    {"/readyz", ST_OK, CMD_READYZ, ""},
    {"/accounts", ST_OK, CMD_OPEN, ""},
    {"/transfers", ST_OK, CMD_TRANSFER, ""},
    {"/accounts/0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0/deposits", ST_OK, CMD_DEPOSIT, ID},
    {"/accounts/" ID "/withdrawals", ST_OK, CMD_WITHDRAW, ID},
    {"/accounts/" ID "/reversals", ST_OK, CMD_REVERSE, ID},
    {"/accounts/" ID "/close", ST_OK, CMD_CLOSE, ID},
    {"/accounts/" ID, ST_NOT_FOUND, CMD_NONE, ""},
    {"/accounts/" ID "/other", ST_NOT_FOUND, CMD_NONE, ""},
    {"/accounts/not-a-uuid/deposits", ST_INVALID, CMD_DEPOSIT, ""},
    {"/accounts//deposits", ST_INVALID, CMD_DEPOSIT, ""},
    {"/accounts/" ID "x/deposits", ST_INVALID, CMD_DEPOSIT, ""},
    {"/accounts/" ID "/deposits/", ST_NOT_FOUND, CMD_NONE, ""},
    {"/", ST_NOT_FOUND, CMD_NONE, ""},
    {"/accounts/", ST_NOT_FOUND, CMD_NONE, ""},
};

static void test_routes(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof route_cases / sizeof route_cases[0]; i++) {
        const struct route_case *c = &route_cases[i];
        struct cmd_route r;
        struct err e = {0};
        status st = cmd_route(&r, c->path, &e);
        if (st != c->st)
            fail_msg("%s: status %d, expected %d (%s)", c->path, st, c->st, e.msg);
        assert_non_null(r.route);
        if (st == ST_OK || st == ST_INVALID)
            assert_int_equal(r.kind, c->kind);
        if (st == ST_OK)
            assert_string_equal(r.account_id, c->id);
    }
}

struct parse_case {
    enum cmd_kind kind;
    const char *body;
    status st;
    const char *reason; /* expected e.reason when st != ST_OK */
};

#define LONG129 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct parse_case parse_cases[] = {
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"EUR\"}", ST_OK, NULL},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"EUR\",\"overdraft_limit\":0}", ST_OK, NULL},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"EUR\",\"overdraft_limit\":-1}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"EUR\",\"overdraft_limit\":1.5}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"eur\"}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"EURO\"}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"E1R\"}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"XYZ\"}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"XXX\"}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"JPY\"}", ST_OK, NULL},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"AED\"}", ST_OK, NULL},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"ZWL\"}", ST_OK, NULL},
    {CMD_OPEN, "{\"owner\":\"\",\"name\":\"main\",\"currency\":\"EUR\"}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"" LONG129 "\",\"name\":\"main\",\"currency\":\"EUR\"}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"currency\":\"EUR\"}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"EUR\",\"x\":1}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"name\":7,\"currency\":\"EUR\"}", ST_INVALID, "invalid_field"},
    {CMD_OPEN, "{\"owner\":\"a\\u0000b\",\"name\":\"main\",\"currency\":\"EUR\"}", ST_INVALID, "invalid_json"},
    {CMD_OPEN, "{\"owner\":\"\xff\",\"name\":\"main\",\"currency\":\"EUR\"}", ST_INVALID, "invalid_json"},
    {CMD_OPEN, "{\"owner\":\"ann\",\"owner\":\"bob\",\"name\":\"main\",\"currency\":\"EUR\"}", ST_INVALID, "invalid_json"},
    {CMD_OPEN, "[1]", ST_INVALID, "invalid_json"},
    {CMD_OPEN, "{", ST_INVALID, "invalid_json"},
    {CMD_OPEN, "", ST_INVALID, "invalid_json"},
    {CMD_DEPOSIT, "{\"amount\":1}", ST_OK, NULL},
    {CMD_DEPOSIT, "{\"amount\":9223372036854775807,\"description\":\"max\"}", ST_OK, NULL},
    {CMD_DEPOSIT, "{\"amount\":9223372036854775808}", ST_INVALID, "invalid_field"},
    {CMD_DEPOSIT, "{\"amount\":-99999999999999999999}", ST_INVALID, "invalid_field"},
    {CMD_DEPOSIT, "{\"amount\":0}", ST_INVALID, "invalid_field"},
    {CMD_DEPOSIT, "{\"amount\":-5}", ST_INVALID, "invalid_field"},
    {CMD_DEPOSIT, "{\"amount\":10.0}", ST_INVALID, "invalid_field"},
    {CMD_DEPOSIT, "{\"amount\":1e3}", ST_INVALID, "invalid_field"},
    {CMD_DEPOSIT, "{\"amount\":\"10\"}", ST_INVALID, "invalid_field"},
    {CMD_DEPOSIT, "{\"amount\":true}", ST_INVALID, "invalid_field"},
    {CMD_DEPOSIT, "{}", ST_INVALID, "invalid_field"},
    {CMD_WITHDRAW, "{\"amount\":5,\"description\":null}", ST_OK, NULL},
    {CMD_WITHDRAW, "{\"amount\":5,\"description\":3}", ST_INVALID, "invalid_field"},
    {CMD_WITHDRAW, "{\"amount\":5,\"note\":\"x\"}", ST_INVALID, "invalid_field"},
    {CMD_TRANSFER, "{\"from\":\"" ID "\",\"to\":\"" ID2 "\",\"amount\":3}", ST_OK, NULL},
    {CMD_TRANSFER, "{\"from\":\"" ID "\",\"to\":\"" ID "\",\"amount\":3}", ST_INVALID, "invalid_field"},
    {CMD_TRANSFER, "{\"from\":\"" ID "\",\"to\":\"nope\",\"amount\":3}", ST_INVALID, "invalid_field"},
    {CMD_TRANSFER, "{\"from\":\"" ID "\",\"amount\":3}", ST_INVALID, "invalid_field"},
    {CMD_REVERSE, "{\"event_id\":\"" ID2 "\",\"reason\":\"typo\"}", ST_OK, NULL},
    {CMD_REVERSE, "{\"reason\":\"typo\"}", ST_INVALID, "invalid_field"},
    {CMD_REVERSE, "{\"transfer_id\":\"" ID2 "\"}", ST_OK, NULL},
    {CMD_REVERSE, "{\"transfer_id\":\"" ID2 "\",\"event_id\":\"" ID2 "\"}", ST_INVALID, "invalid_field"},
    {CMD_REVERSE, "{\"transfer_id\":\"nope\"}", ST_INVALID, "invalid_field"},
    {CMD_CLOSE, "", ST_OK, NULL},
    {CMD_CLOSE, "{}", ST_OK, NULL},
    {CMD_CLOSE, "{\"reason\":\"done\"}", ST_OK, NULL},
    {CMD_CLOSE, "{\"why\":\"done\"}", ST_INVALID, "invalid_field"},
};

static void test_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *c = &parse_cases[i];
        struct command cmd;
        struct err e = {0};
        status st = cmd_parse(&cmd, c->kind, ID, c->body, strlen(c->body), &e);
        if (st != c->st)
            fail_msg("case %zu %s: status %d, expected %d (%s)", i, c->body, st, c->st, e.msg);
        if (st != ST_OK && c->reason != NULL && strcmp(e.reason, c->reason) != 0)
            fail_msg("case %zu %s: reason %s, expected %s", i, c->body, e.reason, c->reason);
        if (st == ST_OK)
            assert_int_equal(cmd.expected_version, -1);
    }
}

static void test_parse_values(void **state)
{
    struct command c;
    struct err e = {0};
    const char *b = "{\"owner\":\"ann\",\"name\":\"main\",\"currency\":\"EUR\",\"overdraft_limit\":500}";
    const char *t = "{\"from\":\"0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0\",\"to\":\"" ID2 "\",\"amount\":3}";

    (void)state;
    assert_int_equal(cmd_parse(&c, CMD_OPEN, "", b, strlen(b), &e), ST_OK);
    assert_string_equal(c.owner, "ann");
    assert_string_equal(c.name, "main");
    assert_string_equal(c.currency, "EUR");
    assert_int_equal(c.overdraft_limit, 500);
    assert_int_equal(cmd_parse(&c, CMD_TRANSFER, "", t, strlen(t), &e), ST_OK);
    assert_string_equal(c.account_id, ID); /* canonical lower case */
    assert_string_equal(c.to, ID2);
    assert_int_equal(c.amount, 3);
}

static void test_if_match(void **state)
{
    static const struct {
        const char *h;
        status st;
        int64_t v;
    } cases[] = {
        {NULL, ST_OK, -1},   {"3", ST_OK, 3},        {"\"3\"", ST_OK, 3}, {"W/\"12\"", ST_OK, 12},
        {"0", ST_OK, 0},     {"", ST_INVALID, -1},   {"-1", ST_INVALID, -1}, {"3x", ST_INVALID, -1},
        {"abc", ST_INVALID, -1}, {"99999999999", ST_INVALID, -1}, {"\"\"", ST_INVALID, -1},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t v = 77;
        struct err e = {0};
        assert_int_equal(cmd_parse_if_match(&v, cases[i].h, &e), cases[i].st);
        if (cases[i].st == ST_OK)
            assert_int_equal(v, cases[i].v);
    }
}

static void test_idempotency_key_and_bearer(void **state)
{
    struct err e = {0};
    (void)state;
    assert_int_equal(cmd_check_idempotency_key("abc-123", &e), ST_OK);
    assert_int_equal(cmd_check_idempotency_key("", &e), ST_INVALID);
    assert_int_equal(cmd_check_idempotency_key("a b", &e), ST_INVALID);
    assert_int_equal(cmd_check_idempotency_key("caf\xc3\xa9", &e), ST_INVALID);
    assert_int_equal(cmd_check_idempotency_key(LONG129, &e), ST_INVALID);
}

static void test_http_status(void **state)
{
    (void)state;
    assert_int_equal(cmd_http_status(ST_INVALID), 400);
    assert_int_equal(cmd_http_status(ST_NOT_FOUND), 404);
    assert_int_equal(cmd_http_status(ST_CONFLICT), 409);
    assert_int_equal(cmd_http_status(ST_REJECTED), 422);
    assert_int_equal(cmd_http_status(ST_UNAVAILABLE), 503);
    assert_int_equal(cmd_http_status(ST_INTERNAL), 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),         cmocka_unit_test(test_parse),
        cmocka_unit_test(test_parse_values),   cmocka_unit_test(test_if_match),
        cmocka_unit_test(test_idempotency_key_and_bearer), cmocka_unit_test(test_http_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
