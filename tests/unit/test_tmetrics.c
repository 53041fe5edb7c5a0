/* The tests' Prometheus exposition parser (tests/support/tmetrics.c): series keys whatever the
 * label order, histograms, escapes, deltas, and malformed lines refused with the line named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "tmetrics.h"

static const char *const sample =
    "# HELP writer_commands_total Commands.\n"
    "# TYPE writer_commands_total counter\n"
    "writer_commands_total{service=\"writer\",type=\"deposit\",result=\"ok\"} 5\n"
    "writer_commands_total{service=\"writer\",type=\"deposit\",result=\"insufficient_funds\"} 1\n"
    "# TYPE lat_seconds histogram\n"
    "lat_seconds_bucket{service=\"w\",le=\"0.5\"} 2\n"
    "lat_seconds_bucket{service=\"w\",le=\"+Inf\"} 3\n"
    "lat_seconds_sum{service=\"w\"} 1.25\n"
    "lat_seconds_count{service=\"w\"} 3\n"
    "# TYPE odd gauge\n"
    "odd{a=\"q\\\"x\\\\y\\nz\",} -Inf\n"
    "plain 7 1700000000000\n";

static void test_parse_and_lookup(void **state)
{
    struct tm_scrape m;
    char err[200];
    (void)state;

    assert_int_equal(tm_parse(&m, sample, err, sizeof err), 0);
    assert_int_equal(m.n, 8);
    /* labels in any order name the same series */
    assert_true(tm_value(&m, "writer_commands_total{result=\"ok\",type=\"deposit\",service=\"writer\"}") == 5);
    assert_true(tm_value(&m, "writer_commands_total{service=\"writer\",type=\"deposit\",result=\"ok\"}") == 5);
    assert_true(isnan(tm_value(&m, "writer_commands_total{service=\"writer\",type=\"deposit\"}")));
    assert_true(tm_value(&m, "lat_seconds_bucket{le=\"+Inf\",service=\"w\"}") == 3);
    assert_true(tm_value(&m, "lat_seconds_sum{service=\"w\"}") == 1.25);
    assert_true(isinf(tm_value(&m, "odd{a=\"q\\\"x\\\\y\\nz\"}")));
    assert_true(tm_value(&m, "plain") == 7);
    assert_string_equal(tm_family_type(&m, "lat_seconds"), "histogram");
    assert_string_equal(tm_family_type(&m, "writer_commands_total"), "counter");
    assert_null(tm_family_type(&m, "writer_commands"));
    tm_release(&m);
}

static void test_deltas(void **state)
{
    struct tm_scrape a, b;
    char err[200];
    (void)state;

    assert_int_equal(tm_parse(&a, "x_total{k=\"1\"} 2\n", err, sizeof err), 0);
    assert_int_equal(tm_parse(&b, "x_total{k=\"1\"} 5\nx_total{k=\"2\"} 1\n", err, sizeof err), 0);
    assert_true(tm_delta(&a, &b, "x_total{k=\"1\"}") == 3);
    assert_true(tm_delta(&a, &b, "x_total{k=\"2\"}") == 1); /* new series: from 0 */
    assert_true(isnan(tm_delta(&a, &b, "x_total{k=\"3\"}")));
    tm_release(&a);
    tm_release(&b);
}

static void test_expect_family(void **state)
{
    struct tm_scrape a, b;
    char err[200];
    const struct tm_want w[] = {{"h_seconds_count", 1}, {"h_seconds_sum", 0.5},
                                {"h_seconds_bucket{le=\"1\"}", 1}, {"h_seconds_bucket{le=\"+Inf\"}", 1},
                                {NULL, 0}};
    (void)state;

    assert_int_equal(tm_parse(&a, "# TYPE h_seconds histogram\nh_seconds_bucket{le=\"1\"} 0\n"
                                  "h_seconds_bucket{le=\"+Inf\"} 0\nh_seconds_sum 0\nh_seconds_count 0\n",
                              err, sizeof err), 0);
    assert_int_equal(tm_parse(&b, "# TYPE h_seconds histogram\nh_seconds_bucket{le=\"1\"} 1\n"
                                  "h_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 0.5\nh_seconds_count 1\n",
                              err, sizeof err), 0);
    assert_int_equal(tm_expect_family(&a, &b, "h_seconds", w), 4);
    tm_release(&a);
    tm_release(&b);
}

static void test_malformed(void **state)
{
    static const char *const bad[] = {
        "x{a=\"1\" 1\n", "x{a=1} 1\n", "x 1\nx 2\n", "x{a=\"1\",a=\"2\"} 1\n", "x\n", "x abc\n",
        "9x 1\n", "x{a=\"\\q\"} 1\n", "# TYPE x sometype\n",
    };
    struct tm_scrape m;
    char err[200];
    (void)state;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tm_parse(&m, bad[i], err, sizeof err), -1);
        assert_non_null(strstr(err, "line "));
    }
    assert_int_equal(tm_parse(&m, "ok 1\nbroken{\n", err, sizeof err), -1);
    assert_non_null(strstr(err, "line 2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_lookup),
        cmocka_unit_test(test_deltas),
        cmocka_unit_test(test_expect_family),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
