/* Unit tests of the read API's path and query parsing (table-driven). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "query.h"

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
    {"other", "whatever", ST_OK, 0, 0, RA_WAIT_DEFAULT_MS, RA_LIMIT_DEFAULT},
};

static void test_params(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof param_cases / sizeof param_cases[0]; i++) {
        const struct param_case *c = &param_cases[i];
        struct ra_query q;
        struct err e = {0};
        assert_int_equal(ra_parse_path(&q, "/healthz", &e), ST_OK);
        assert_int_equal(ra_parse_param(&q, c->name, c->value, &e), c->st);
        assert_int_equal(q.min_version, c->min_version);
        assert_int_equal(q.before, c->before);
        assert_int_equal(q.wait_ms, c->wait_ms);
        assert_int_equal(q.limit, c->limit);
        if (c->st != ST_OK)
            assert_non_null(strstr(e.msg, c->name));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
