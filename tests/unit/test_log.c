/* Unit tests of the log line formats: text as before, and LOG_FORMAT=json, one JSON object per
 * line with time, level, service, request_id, account, event_id and message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>

#include "log.h"

static const char *const stamp = "2026-12-02T18:00:00.123Z";

static void test_text_line(void **state)
{
    char line[512];

    (void)state;
    log_init("writer", LOG_LVL_INFO, LOG_FMT_TEXT);
    log_format_line(line, sizeof line, LOG_FMT_TEXT, stamp, LOG_LVL_WARN, "r-1", "slow account=a1");
    assert_string_equal(line, "2026-12-02T18:00:00.123Z WARN writer slow account=a1 req=r-1");
}

static void test_json_fields(void **state)
{
    char line[1024];
    json_error_t jerr;
    json_t *doc;

    (void)state;
    log_init("projector", LOG_LVL_INFO, LOG_FMT_JSON);
    log_format_line(line, sizeof line, LOG_FMT_JSON, stamp, LOG_LVL_ERROR, "req-7",
                    "parked account=acc-1 event=ev-9 version=3: \"bad\"\tdata\n");
    assert_null(strchr(line, '\n')); /* one line */
    doc = json_loads(line, 0, &jerr);
    if (doc == NULL)
        fail_msg("not JSON (%s): %s", jerr.text, line);
    assert_string_equal(json_string_value(json_object_get(doc, "time")), stamp);
    assert_string_equal(json_string_value(json_object_get(doc, "level")), "ERROR");
    assert_string_equal(json_string_value(json_object_get(doc, "service")), "projector");
    assert_string_equal(json_string_value(json_object_get(doc, "request_id")), "req-7");
    assert_string_equal(json_string_value(json_object_get(doc, "account")), "acc-1");
    assert_string_equal(json_string_value(json_object_get(doc, "event_id")), "ev-9");
    assert_string_equal(json_string_value(json_object_get(doc, "message")),
                        "parked account=acc-1 event=ev-9 version=3: \"bad\"\tdata\n");
    json_decref(doc);

    /* no request, no pairs: those fields are absent */
    log_format_line(line, sizeof line, LOG_FMT_JSON, stamp, LOG_LVL_INFO, NULL, "started");
    doc = json_loads(line, 0, &jerr);
    assert_non_null(doc);
    assert_null(json_object_get(doc, "request_id"));
    assert_null(json_object_get(doc, "account"));
    assert_null(json_object_get(doc, "event_id"));
    json_decref(doc);
}

/* A message longer than the line is cut, and the line is still one valid JSON object (also
 * when the cut falls inside an escape or a UTF-8 sequence). */
static void test_json_cut_stays_valid(void **state)
{
    char msg[600], line[200];
    json_t *doc;

    (void)state;
    log_init("readapi", LOG_LVL_INFO, LOG_FMT_JSON);
    for (size_t cut = 120; cut < 200; cut++) {
        for (size_t i = 0; i + 2 < sizeof msg; i += 3) {
            msg[i] = '"';
            msg[i + 1] = (char)0xC3; /* é */
            msg[i + 2] = (char)0xA9;
        }
        msg[sizeof msg - 1] = '\0';
        msg[sizeof msg - 3] = '\0';
        log_format_line(line, cut, LOG_FMT_JSON, stamp, LOG_LVL_INFO, "r", msg);
        assert_true(strlen(line) < cut);
        doc = json_loads(line, 0, NULL);
        if (doc == NULL)
            fail_msg("cut at %zu: not JSON: %s", cut, line);
        json_decref(doc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_json_fields),
        cmocka_unit_test(test_json_cut_stays_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
