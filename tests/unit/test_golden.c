/* Golden histories: every file under tests/golden/ is a list of stored envelopes with the read
 * models they must fold to, byte for byte. They pin the fold of every (type, schema): a change
 * that makes one fail changes history, and must come as a new type or schema instead. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "event.h"
#include "jsonx.h"

#define MAX_FILES 64

static char golden_dir[1024];
static char *files[MAX_FILES];
static int nfiles;

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int setup(void **state)
{
    const char *src = getenv("CQRS_SOURCE_DIR");
    DIR *d;
    struct dirent *de;

    (void)state;
    snprintf(golden_dir, sizeof golden_dir, "%s/tests/golden", src != NULL ? src : ".");
    d = opendir(golden_dir);
    if (d == NULL) {
        fprintf(stderr, "cannot open %s (set CQRS_SOURCE_DIR)\n", golden_dir);
        return -1;
    }
    while ((de = readdir(d)) != NULL && nfiles < MAX_FILES) {
        size_t n = strlen(de->d_name);
        if (n > 5 && strcmp(de->d_name + n - 5, ".json") == 0)
            files[nfiles++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(files, (size_t)nfiles, sizeof *files, name_cmp);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < nfiles; i++)
        free(files[i]);
    return 0;
}

/* Folds one history file; returns the number of differences (printed). Counts the event
 * types and schemas seen into seen[type][schema]. */
static int check_file(const char *name, int seen[EV__COUNT][4])
{
    char path[1200];
    json_error_t je;
    json_t *doc, *events, *want_acc, *want_st, *env;
    struct account_view acc;
    struct statement_entry *entries = NULL;
    size_t i, nev;
    int bad = 0;
    char *got = NULL, *want = NULL;

    snprintf(path, sizeof path, "%s/%s", golden_dir, name);
    doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (doc == NULL)
        fail_msg("%s: %s at line %d", name, je.text, je.line);
    events = json_object_get(doc, "events");
    want_acc = json_object_get(doc, "account");
    want_st = json_object_get(doc, "statement");
    if (!json_is_array(events) || !json_is_object(want_acc) || !json_is_array(want_st))
        fail_msg("%s: needs \"events\" (array), \"account\" (object), \"statement\" (array)", name);
    nev = json_array_size(events);
    entries = calloc(nev + 1, sizeof *entries);
    assert_non_null(entries);
    json_array_foreach(events, i, env) {
        struct event ev;
        struct err e;
        if (event_from_json(&ev, env, &e) != ST_OK)
            fail_msg("%s: event %zu does not decode: %s", name, i, e.msg);
        if (i == 0)
            account_view_init(&acc, ev.stream_id);
        if (proj_evolve(&acc, &ev, &entries[i], &e) != ST_OK)
            fail_msg("%s: event %zu does not fold: %s", name, i, e.msg);
        if (ev.schema >= 1 && ev.schema < 4)
            seen[ev.type][ev.schema]++;
    }
    got = account_view_to_json(&acc);
    want = jsonx_dump(want_acc);
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "%s: account\n  expected %s\n  folded   %s\n", name, want, got);
        bad++;
    }
    free(got);
    free(want);
    if (json_array_size(want_st) != nev) {
        fprintf(stderr, "%s: %zu statement entries expected, %zu events folded\n", name,
                json_array_size(want_st), nev);
        bad++;
    }
    for (i = 0; i < nev && i < json_array_size(want_st); i++) {
        got = statement_entry_to_json(&entries[i]);
        want = jsonx_dump(json_array_get(want_st, i));
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "%s: statement entry %zu\n  expected %s\n  folded   %s\n", name, i + 1,
                    want, got);
            bad++;
        }
        free(got);
        free(want);
    }
    free(entries);
    json_decref(doc);
    return bad;
}

static void test_golden_histories(void **state)
{
    int seen[EV__COUNT][4] = {{0}};
    int bad = 0;

    (void)state;
    assert_true(nfiles > 0);
    for (int i = 0; i < nfiles; i++) {
        int b = check_file(files[i], seen);
        fprintf(stderr, "%-40s %s\n", files[i], b == 0 ? "ok" : "DIFFERS");
        bad += b;
    }
    assert_int_equal(bad, 0);
    /* every (type, schema) the decoder accepts is pinned by at least one history */
    for (int t = 1; t < EV__COUNT; t++)
        for (int s = 1; s <= event_schema_latest((enum event_type)t); s++)
            if (seen[t][s] == 0)
                fail_msg("no golden history folds %s schema %d", event_type_name((enum event_type)t), s);
}

/* The upcast case: a schema 1 deposit and its schema 2 form decode to the same event. */
static void test_upcast_is_equivalent(void **state)
{
    static const char v1[] =
        "{\"event_id\":\"00000000-0000-4000-8000-000000000002\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":2,\"position\":2,\"type\":\"MoneyDeposited\",\"schema\":1,"
        "\"recorded_at\":\"2026-11-21T20:00:01.000000Z\",\"data\":{\"amount\":1500,\"description\":\"salary\"},\"metadata\":{}}";
    static const char v2[] =
        "{\"event_id\":\"00000000-0000-4000-8000-000000000002\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":2,\"position\":2,\"type\":\"MoneyDeposited\",\"schema\":2,"
        "\"recorded_at\":\"2026-11-21T20:00:01.000000Z\",\"data\":{\"amount_minor\":1500,\"description\":\"salary\"},\"metadata\":{}}";
    static const char bad[] =
        "{\"event_id\":\"00000000-0000-4000-8000-000000000002\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":2,\"position\":2,\"type\":\"MoneyDeposited\",\"schema\":3,"
        "\"recorded_at\":\"2026-11-21T20:00:01.000000Z\",\"data\":{\"amount_minor\":1500},\"metadata\":{}}";
    struct event a, b;
    struct err e;
    char *text;

    (void)state;
    assert_int_equal(event_decode(&a, v1, strlen(v1), &e), ST_OK);
    assert_int_equal(event_decode(&b, v2, strlen(v2), &e), ST_OK);
    assert_int_equal(a.schema, 1);
    assert_int_equal(b.schema, 2);
    a.schema = b.schema;
    assert_memory_equal(&a, &b, sizeof a);
    /* each form encodes back as itself */
    a.schema = 1;
    text = event_encode(&a);
    assert_non_null(strstr(text, "\"amount\":1500"));
    assert_non_null(strstr(text, "\"schema\":1"));
    free(text);
    text = event_encode(&b);
    assert_non_null(strstr(text, "\"amount_minor\":1500"));
    free(text);
    /* a schema from the future is poison, never guessed at */
    assert_int_equal(event_decode(&a, bad, strlen(bad), &e), ST_INVALID);
    assert_string_equal(e.reason, "poison");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_histories),
        cmocka_unit_test(test_upcast_is_equivalent),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
