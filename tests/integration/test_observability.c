/* Issue 17: the projector's HTTP endpoints, and every service's /metrics accepted by
 * `promtool check metrics` after some traffic. */
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

static char projector_url[64];

static void set_projector_url(void **state)
{
    struct tstack_svcs *s = *state;
    snprintf(projector_url, sizeof projector_url, "http://127.0.0.1:%d", tsvc_projector_port(s->projector));
}

static void test_projector_endpoints(void **state)
{
    struct thttp_resp r;

    set_projector_url(state);
    assert_true(twait_http_ok(projector_url, "/healthz", 10000));
    /* ready once connected with a current generation (tstack_start_services waited for one) */
    assert_true(twait_http_ok(projector_url, "/readyz", 10000));
    assert_int_equal(thttp_request(&r, "GET", projector_url, "/nowhere", NULL, NULL, 5000), 0);
    assert_int_equal(r.status, 404);
    thttp_resp_release(&r);
    assert_int_equal(thttp_request(&r, "POST", projector_url, "/healthz", "{}", NULL, 5000), 0);
    assert_int_equal(r.status, 405);
    thttp_resp_release(&r);
    assert_true(thttp_metric(projector_url, "projector_read_model_available{service=\"projector\"}") == 1);
}

/* Fetches base/metrics into a file and runs promtool on it; returns promtool's exit status. */
static int promtool_check(const char *base, const char *name)
{
    struct thttp_resp r;
    char path[256], cmd[512];
    FILE *f;
    int rc;

    assert_int_equal(thttp_request(&r, "GET", base, "/metrics", NULL, NULL, 5000), 0);
    assert_int_equal(r.status, 200);
    snprintf(path, sizeof path, "%s/logs/metrics-%s.txt", tenv("STACK_DIR"), name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(r.body, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s'", path);
    rc = system(cmd);
    fprintf(stderr, "promtool check metrics on the %s's %zu bytes: exit %d\n", name, r.body_len, rc);
    thttp_resp_release(&r);
    return rc;
}

static void test_promtool_all_three(void **state)
{
    char id[UUID_STR_SIZE], path[160];
    json_t *doc;

    set_projector_url(state);
    if (system("command -v promtool >/dev/null") != 0)
        tfail("promtool is not installed (scripts/setup installs the prometheus package)");
    /* traffic first, so the families with labels and histograms have series */
    tw_open(id, "metrics-owner", "metrics", "EUR", 0);
    doc = tw_money(id, "deposits", 100, "m");
    json_decref(doc);
    snprintf(path, sizeof path, "/accounts/%s?min_version=2&wait_ms=5000", id);
    json_decref(tr_get_ok(NULL, path));
    assert_int_equal(promtool_check(tenv("WRITER_URL"), "writer"), 0);
    assert_int_equal(promtool_check(tenv("READAPI_URL"), "readapi"), 0);
    assert_int_equal(promtool_check(projector_url, "projector"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_projector_endpoints),
        cmocka_unit_test(test_promtool_all_three),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
