/* Unit tests of the metrics registry: families grouped under one HELP/TYPE, labels, histogram
 * buckets cumulative, removal, collectors, and output promtool accepts (when installed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"

static int reset(void **state)
{
    (void)state;
    metrics_reset();
    return 0;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_labels_and_families(void **state)
{
    char *out;
    const char *a, *b, *c;

    (void)state;
    metrics_counter_add_l("writer_commands_total", "type=\"deposit\",result=\"ok\"", "Commands.", 1);
    metrics_gauge_set("writer_relay_active", "Relay.", 1);
    metrics_counter_add_l("writer_commands_total", "type=\"open\",result=\"ok\"", "Commands.", 2);
    metrics_counter_add_l("writer_commands_total", "type=\"deposit\",result=\"ok\"", "Commands.", 3);
    out = metrics_render("writer");
    assert_non_null(out);
    assert_int_equal(count_of(out, "# TYPE writer_commands_total counter\n"), 1);
    assert_non_null(strstr(out, "writer_commands_total{service=\"writer\",type=\"deposit\",result=\"ok\"} 4\n"));
    assert_non_null(strstr(out, "writer_commands_total{service=\"writer\",type=\"open\",result=\"ok\"} 2\n"));
    assert_non_null(strstr(out, "writer_relay_active{service=\"writer\"} 1\n"));
    /* a family's series follow its TYPE line, before the next family */
    a = strstr(out, "# TYPE writer_commands_total");
    b = strstr(out, "type=\"open\"");
    c = strstr(out, "# TYPE writer_relay_active");
    assert_true(a < b && b < c);
    free(out);
}

static void test_histogram(void **state)
{
    static const double bounds[] = {1, 10, 100};
    char *out;

    (void)state;
    metrics_histogram_observe("writer_batch_size_commands", NULL, "Batch sizes.", bounds, 3, 1);
    metrics_histogram_observe("writer_batch_size_commands", NULL, "Batch sizes.", bounds, 3, 5);
    metrics_histogram_observe("writer_batch_size_commands", NULL, "Batch sizes.", bounds, 3, 50);
    metrics_histogram_observe("writer_batch_size_commands", NULL, "Batch sizes.", bounds, 3, 500);
    out = metrics_render("writer");
    assert_non_null(strstr(out, "writer_batch_size_commands_bucket{service=\"writer\",le=\"1\"} 1\n"));
    assert_non_null(strstr(out, "writer_batch_size_commands_bucket{service=\"writer\",le=\"10\"} 2\n"));
    assert_non_null(strstr(out, "writer_batch_size_commands_bucket{service=\"writer\",le=\"100\"} 3\n"));
    assert_non_null(strstr(out, "writer_batch_size_commands_bucket{service=\"writer\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(out, "writer_batch_size_commands_sum{service=\"writer\"} 556\n"));
    assert_non_null(strstr(out, "writer_batch_size_commands_count{service=\"writer\"} 4\n"));
    free(out);
}

static void test_remove_and_kind_clash(void **state)
{
    char *out;

    (void)state;
    metrics_gauge_set_l("projector_partition_lag_events", "partition=\"3\"", "Lag.", 7);
    metrics_gauge_set_l("projector_partition_lag_events", "partition=\"4\"", "Lag.", 9);
    metrics_remove_l("projector_partition_lag_events", "partition=\"3\"");
    /* the same name as another kind is refused, not rendered twice */
    metrics_counter_add("projector_partition_lag_events", "Lag.", 1);
    out = metrics_render("projector");
    assert_null(strstr(out, "partition=\"3\""));
    assert_non_null(strstr(out, "projector_partition_lag_events{service=\"projector\",partition=\"4\"} 9\n"));
    assert_int_equal(count_of(out, "# TYPE projector_partition_lag_events"), 1);
    free(out);
    /* a removed series comes back from zero */
    metrics_gauge_add_l("projector_partition_lag_events", "partition=\"3\"", "Lag.", 2);
    out = metrics_render("projector");
    assert_non_null(strstr(out, "projector_partition_lag_events{service=\"projector\",partition=\"3\"} 2\n"));
    free(out);
}

static void collect(void *ctx)
{
    int *calls = ctx;
    (*calls)++;
    metrics_gauge_set("writer_outbox_rows", "Rows.", 42);
}

static void test_collector(void **state)
{
    int calls = 0;
    char *out;

    (void)state;
    metrics_collector_add(collect, &calls);
    out = metrics_render("writer");
    assert_int_equal(calls, 1);
    assert_non_null(strstr(out, "writer_outbox_rows{service=\"writer\"} 42\n"));
    free(out);
    metrics_collector_remove(collect, &calls);
    free(metrics_render("writer"));
    assert_int_equal(calls, 1);
}

static void test_label_value(void **state)
{
    char buf[16];

    (void)state;
    assert_string_equal(metrics_label_value(buf, sizeof buf, "a\"b\\c\nd"), "a_b_c_d");
    assert_string_equal(metrics_label_value(buf, 4, "abcdef"), "abc");
}

/* promtool (package prometheus) lints the text: skipped when it is not installed. */
static void test_promtool_accepts(void **state)
{
    static const double bounds[] = {0.1, 1};
    char path[] = "/tmp/test_metrics_XXXXXX";
    char cmd[256];
    char *out;
    FILE *f;
    int fd;

    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        fprintf(stderr, "promtool not installed: skipping the lint\n");
        skip();
    }
    metrics_counter_add_l("writer_commands_total", "type=\"deposit\",result=\"ok\"", "Commands.", 1);
    metrics_gauge_set("writer_relay_active", "Relay.", 1);
    metrics_histogram_observe("writer_pool_wait_seconds", NULL, "Wait.", bounds, 2, 0.5);
    metrics_http_observe("GET /accounts/{id}", 200, 0.002);
    out = metrics_render("writer");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fputs(out, f);
    fclose(f);
    free(out);
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    assert_int_equal(system(cmd), 0);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_labels_and_families, reset),
        cmocka_unit_test_setup(test_histogram, reset),
        cmocka_unit_test_setup(test_remove_and_kind_clash, reset),
        cmocka_unit_test_setup(test_collector, reset),
        cmocka_unit_test_setup(test_label_value, reset),
        cmocka_unit_test_setup(test_promtool_accepts, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
