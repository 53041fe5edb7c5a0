/* Unit tests of the read API's path and query parsing (table-driven). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "query.h"

#define STATEMENT_PATH "/accounts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/statement"

struct path_case {
    const char *path;
    status st;
    enum ra_route route;
    const char *id;
};

static const struct path_case path_cases[] = {
    {"/healthz", ST_OK, RA_HEALTHZ, ""},
    {"/readyz", ST_OK, RA_READYZ, ""},
    {"/projections", ST_OK, RA_PROJECTIONS, ""},
    {"/accounts/0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", ST_OK, RA_ACCOUNT,
     "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
    {"/accounts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/statement", ST_OK, RA_STATEMENT,
     "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
    {"/accounts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/other", ST_OK, RA_NOT_FOUND, ""},
    {"/accounts/not-a-uuid", ST_INVALID, RA_ACCOUNT, ""},
    {"/accounts/", ST_INVALID, RA_ACCOUNT, ""},
    {"/accounts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f/statement", ST_INVALID, RA_STATEMENT, ""},
    {"/accounts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0'--", ST_INVALID, RA_ACCOUNT, ""},
    {"/", ST_OK, RA_NOT_FOUND, ""},
    {"/accounts", ST_OK, RA_OWNER_ACCOUNTS, ""},
    {"/events/0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", ST_OK, RA_EVENT,
     "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
    {"/transfers/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", ST_OK, RA_TRANSFER,
     "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
    {"/events/nope", ST_INVALID, RA_EVENT, ""},
    {"/transfers/", ST_INVALID, RA_TRANSFER, ""},
    {"/events/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/x", ST_OK, RA_NOT_FOUND, ""},
    {"/healthz/", ST_OK, RA_NOT_FOUND, ""},
};

static void test_paths(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof path_cases / sizeof path_cases[0]; i++) {
        const struct path_case *c = &path_cases[i];
        struct ra_query q;
        struct err e = {0};
        status st = ra_parse_path(&q, c->path, &e);
        assert_int_equal(st, c->st);
        assert_int_equal(q.route, c->route);
        if (st == ST_OK)
            assert_string_equal(q.account_id, c->id);
        else
            assert_string_equal(e.reason, "invalid_field");
    }
}

struct param_case {
    const char *name, *value;
    status st;
    int64_t min_version, before;
    int wait_ms, limit;
};

static const struct param_case param_cases[] = {
    {"limit", NULL, ST_OK, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"limit", "1", ST_OK, 0, 0, RA_WAIT_DEFAULT_MS, 1},
    {"limit", "500", ST_OK, 0, 0, RA_WAIT_DEFAULT_MS, 500},
    {"limit", "501", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"limit", "0", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"limit", "-1", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"limit", "2.5", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"limit", "", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"limit", " 5", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"wait_ms", "10000", ST_OK, 0, 0, 10000, RA_LIMIT_DEFAULT},
    {"wait_ms", "10001", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"wait_ms", "0", ST_OK, 0, 0, 0, RA_LIMIT_DEFAULT},
    {"min_version", "42", ST_OK, 42, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"min_version", "99999999999999999999", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"min_version", "1e3", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"before", "7", ST_OK, 0, 7, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"before", "0", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"before", "9223372036854775807", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"before", "9223372036854775808", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"before", "9999999999999999999", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"limit", "0000000000000000005", ST_OK, 0, 0, RA_WAIT_DEFAULT_MS, 5},
    {"other", "whatever", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"owner", "alice", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"limit", NULL, ST_OK, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"order", "sideways", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"from", "yesterday", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"to", "2026-13-01T00:00:00Z", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
    {"after", "-3", ST_INVALID, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
};

static void test_params(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof param_cases / sizeof param_cases[0]; i++) {
        const struct param_case *c = &param_cases[i];
        struct ra_query q;
        struct err e = {0};
        assert_int_equal(ra_parse_path(&q, STATEMENT_PATH, &e), ST_OK);
        if (c->value == NULL) /* absent: not offered to the parser at all */
            continue;
        assert_int_equal(ra_parse_param(&q, c->name, c->value, &e), c->st);
        assert_int_equal(q.min_version, c->min_version);
        assert_int_equal(q.before, c->before);
        assert_int_equal(q.wait_ms, c->wait_ms);
        assert_int_equal(q.limit, c->limit);
        if (c->st != ST_OK) {
            assert_non_null(strstr(e.msg, c->name));
            assert_string_equal(e.reason, "invalid_query");
        }
    }
}

/* Which parameters each route takes: anything else is named in a 400 invalid_query. */
static void test_params_per_route(void **state)
{
    (void)state;
    static const struct {
        const char *path, *name, *value;
        status st;
    } cases[] = {
        {"/healthz", "limit", "5", ST_INVALID},
        {"/projections", "x", "1", ST_INVALID},
        {"/accounts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "limit", "5", ST_INVALID},
        {"/accounts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "min_version", "5", ST_OK},
        {"/accounts", "owner", "alice", ST_OK},
        {"/accounts", "after", "17", ST_OK},
        {"/accounts", "after", "0", ST_INVALID},
        {"/accounts", "before", "17", ST_INVALID},
        {"/accounts", "min_version", "1", ST_INVALID},
        {"/accounts", "owner", "", ST_INVALID},
        {"/events/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "limit", "1", ST_INVALID},
        {"/transfers/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "x", NULL, ST_INVALID},
        {STATEMENT_PATH, "order", "asc", ST_OK},
        {STATEMENT_PATH, "after", "0", ST_OK},
        {STATEMENT_PATH, "from", "2026-11-21T20:00:00.5+01:00", ST_OK},
        {STATEMENT_PATH, "limit", NULL, ST_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ra_query q;
        struct err e = {0};
        assert_int_equal(ra_parse_path(&q, cases[i].path, &e), ST_OK);
        assert_int_equal(ra_parse_param(&q, cases[i].name, cases[i].value, &e), cases[i].st);
        if (cases[i].st != ST_OK) {
            assert_string_equal(e.reason, "invalid_query");
            assert_non_null(strstr(e.msg, cases[i].name));
        }
    }
}

static void test_check_query(void **state)
{
    struct ra_query q;
    struct err e = {0};

    (void)state;
    assert_int_equal(ra_parse_path(&q, "/accounts", &e), ST_OK);
    assert_int_equal(ra_check_query(&q, &e), ST_INVALID);
    assert_non_null(strstr(e.msg, "owner"));
    assert_int_equal(ra_parse_param(&q, "owner", "bob", &e), ST_OK);
    assert_int_equal(ra_check_query(&q, &e), ST_OK);

    assert_int_equal(ra_parse_path(&q, STATEMENT_PATH, &e), ST_OK);
    assert_int_equal(ra_parse_param(&q, "order", "asc", &e), ST_OK);
    assert_int_equal(ra_parse_param(&q, "before", "4", &e), ST_OK);
    assert_int_equal(ra_check_query(&q, &e), ST_INVALID);
    assert_non_null(strstr(e.msg, "before"));

    assert_int_equal(ra_parse_path(&q, STATEMENT_PATH, &e), ST_OK);
    assert_int_equal(ra_parse_param(&q, "after", "4", &e), ST_OK);
    assert_int_equal(ra_check_query(&q, &e), ST_INVALID);
    assert_non_null(strstr(e.msg, "after"));

    assert_int_equal(ra_parse_path(&q, STATEMENT_PATH, &e), ST_OK);
    assert_int_equal(ra_parse_param(&q, "from", "2026-01-02T00:00:00Z", &e), ST_OK);
    assert_int_equal(ra_parse_param(&q, "to", "2026-01-01T00:00:00Z", &e), ST_OK);
    assert_int_equal(ra_check_query(&q, &e), ST_INVALID);
    assert_non_null(strstr(e.msg, "from"));
}

static void test_times(void **state)
{
    static const struct {
        const char *s;
        status st;
        int64_t us;
    } cases[] = {
        {"1970-01-01T00:00:00Z", ST_OK, 0},
        {"1970-01-01t00:00:01z", ST_OK, 1000000},
        {"2026-11-21T20:00:00.123456Z", ST_OK, 1795291200123456LL},
        {"2026-11-21T21:00:00.123456+01:00", ST_OK, 1795291200123456LL},
        {"2026-11-21T19:30:00.1234567-00:30", ST_OK, 1795291200123456LL},
        {"2000-02-29T00:00:00Z", ST_OK, 951782400000000LL},
        {"2001-02-29T00:00:00Z", ST_INVALID, 0},
        {"2026-11-21 20:00:00Z", ST_INVALID, 0},
        {"2026-11-21T20:00:00", ST_INVALID, 0},
        {"2026-11-21T20:00:00.Z", ST_INVALID, 0},
        {"2026-11-21T24:00:00Z", ST_INVALID, 0},
        {"2026-11-21T20:00:00+0100", ST_INVALID, 0},
        {"2026-11-21T20:00:00Zjunk", ST_INVALID, 0},
        {"", ST_INVALID, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t us = -1;
        assert_int_equal(ra_parse_time(cases[i].s, &us), cases[i].st);
        if (cases[i].st == ST_OK)
            assert_int_equal(us, cases[i].us);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_params_per_route),
        cmocka_unit_test(test_check_query),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
