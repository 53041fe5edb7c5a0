/* Issue 18: finding things again and querying by time. An owner's 250 accounts paged newest
 * first; an event and a transfer read back by id; a statement time range across page
 * boundaries in both orders; a 400 invalid_query naming every unknown or malformed parameter;
 * the ETag of an account round-trips as the writer's If-Match; a reversal named by its transfer
 * id; a name_taken that names the account holding the name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "thttp.h"
#include "treadapi.h"
#include "tstack.h"
#include "twriter.h"

#define OWNER_ACCOUNTS 250

/* Waits (bounded) until the read model shows version of id. */
static void wait_projected(const char *id, int64_t version)
{
    char path[256];
    json_t *doc;

    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=10000", id, (long long)version);
    doc = tr_get_ok(NULL, path);
    json_decref(doc);
}

static void test_owner_accounts_paged(void **state)
{
    static char ids[OWNER_ACCOUNTS][UUID_STR_SIZE];
    char owner[64], other[UUID_STR_SIZE], path[512], name[32], after[32] = "";
    int seen = 0, pages = 0;
    int64_t t0;

    (void)state;
    snprintf(owner, sizeof owner, "pager-%lld", (long long)tnow_ms());
    t0 = tnow_ms();
    for (int i = 0; i < OWNER_ACCOUNTS; i++) {
        snprintf(name, sizeof name, "acct-%03d", i);
        tw_open(ids[i], owner, name, "EUR", 0);
    }
    tw_open(other, "someone-else", "acct-000", "EUR", 0);
    fprintf(stderr, "opened %d accounts in %lld ms\n", OWNER_ACCOUNTS, (long long)(tnow_ms() - t0));
    wait_projected(ids[OWNER_ACCOUNTS - 1], 1);
    wait_projected(other, 1);
    /* newest first, 100 a page: 100, 100, 50, each exactly once, and nothing of another owner */
    for (;;) {
        json_t *doc, *accounts, *next;
        snprintf(path, sizeof path, "/accounts?owner=%s&limit=100%s%s", owner, after[0] ? "&after=" : "",
                 after);
        doc = tr_get_ok(NULL, path);
        accounts = json_object_get(doc, "accounts");
        assert_true(json_is_array(accounts));
        pages++;
        for (size_t i = 0; i < json_array_size(accounts); i++) {
            json_t *a = json_array_get(accounts, i);
            assert_string_equal(tw_str(a, "owner"), owner);
            assert_string_equal(tw_str(a, "account_id"), ids[OWNER_ACCOUNTS - 1 - seen]);
            assert_string_equal(tw_str(a, "status"), "open");
            seen++;
        }
        next = json_object_get(doc, "next_after");
        if (json_is_null(next)) {
            assert_int_equal(json_array_size(accounts), OWNER_ACCOUNTS % 100);
            json_decref(doc);
            break;
        }
        assert_int_equal(json_array_size(accounts), 100);
        assert_true(json_is_integer(next));
        snprintf(after, sizeof after, "%lld", (long long)json_integer_value(next));
        json_decref(doc);
        assert_true(pages < 10);
    }
    assert_int_equal(seen, OWNER_ACCOUNTS);
    assert_int_equal(pages, 3);

    /* an owner with nothing: an empty page; the parameters checked */
    {
        json_t *doc = tr_get_ok(NULL, "/accounts?owner=nobody-at-all");
        assert_int_equal(json_array_size(json_object_get(doc, "accounts")), 0);
        assert_true(json_is_null(json_object_get(doc, "next_after")));
        json_decref(doc);
    }
    tr_expect_error("GET", NULL, "/accounts", 400, "invalid_query");
    tr_expect_error("GET", NULL, "/accounts?owner=", 400, "invalid_query");
    tr_expect_error("GET", NULL, "/accounts?owner=a&limit=0", 400, "invalid_query");
    tr_expect_error("GET", NULL, "/accounts?owner=a&after=x", 400, "invalid_query");
    tr_expect_error("POST", NULL, "/accounts?owner=a", 405, "method_not_allowed");
}

static void test_event_and_transfer(void **state)
{
    char a[UUID_STR_SIZE], b[UUID_STR_SIZE], path[256], body[256], transfer_id[UUID_STR_SIZE],
        sent_event[UUID_STR_SIZE];
    json_t *doc, *res;

    (void)state;
    tw_open(a, "lookup-owner", "a", "EUR", 0);
    tw_open(b, "lookup-owner", "b", "EUR", 0);
    json_decref(tw_money(a, "deposits", 1000, "seed"));
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":250,\"description\":\"rent\"}", a, b);
    res = tw_post(NULL, "/transfers", body, NULL, 201);
    snprintf(transfer_id, sizeof transfer_id, "%s", tw_str(res, "transfer_id"));
    snprintf(sent_event, sizeof sent_event, "%s", tw_str(json_object_get(res, "from"), "event_id"));
    json_decref(res);

    /* the transfer: both legs with their versions */
    snprintf(path, sizeof path, "/transfers/%s", transfer_id);
    doc = tr_get_ok(NULL, path);
    assert_string_equal(tw_str(doc, "transfer_id"), transfer_id);
    assert_int_equal(tw_int(doc, "amount"), 250);
    assert_string_equal(tw_str(doc, "description"), "rent");
    assert_non_null(tw_str(doc, "at"));
    assert_string_equal(tw_str(json_object_get(doc, "from"), "account_id"), a);
    assert_string_equal(tw_str(json_object_get(doc, "from"), "event_id"), sent_event);
    assert_int_equal(tw_int(json_object_get(doc, "from"), "version"), 3);
    assert_string_equal(tw_str(json_object_get(doc, "to"), "account_id"), b);
    assert_int_equal(tw_int(json_object_get(doc, "to"), "version"), 2);
    assert_true(json_is_null(json_object_get(doc, "reversed_by")));
    json_decref(doc);

    /* the event: its envelope as stored */
    snprintf(path, sizeof path, "/events/%s", sent_event);
    doc = tr_get_ok(NULL, path);
    assert_string_equal(tw_str(doc, "event_id"), sent_event);
    assert_string_equal(tw_str(doc, "stream_id"), a);
    assert_int_equal(tw_int(doc, "stream_version"), 3);
    assert_string_equal(tw_str(doc, "type"), "TransferSent");
    assert_int_equal(tw_int(doc, "schema"), 1);
    assert_true(tw_int(doc, "position") > 0);
    assert_non_null(tw_str(doc, "recorded_at"));
    assert_string_equal(tw_str(json_object_get(doc, "data"), "transfer_id"), transfer_id);
    assert_int_equal(tw_int(json_object_get(doc, "data"), "amount"), 250);
    assert_non_null(tw_str(json_object_get(doc, "metadata"), "command_id"));
    json_decref(doc);

    /* reversed by its transfer id (the client kept only that): the transfer names its reversal */
    snprintf(path, sizeof path, "/accounts/%s/reversals", b);
    snprintf(body, sizeof body, "{\"transfer_id\":\"6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab\"}");
    tw_reject(NULL, path, body, NULL, 404, "transfer_not_found");
    snprintf(body, sizeof body, "{\"transfer_id\":\"%s\",\"event_id\":\"%s\"}", transfer_id, sent_event);
    tw_reject(NULL, path, body, NULL, 400, "invalid_field");
    snprintf(body, sizeof body, "{\"transfer_id\":\"%s\",\"reason\":\"mistake\"}", transfer_id);
    json_decref(tw_post(NULL, path, body, NULL, 201));
    tw_reject(NULL, path, body, NULL, 409, "already_reversed");
    snprintf(path, sizeof path, "/transfers/%s", transfer_id);
    doc = tr_get_ok(NULL, path);
    assert_non_null(tw_str(doc, "reversed_by"));
    json_decref(doc);

    /* a taken name says which open account holds it */
    {
        char body2[256];
        json_t *err;
        snprintf(body2, sizeof body2, "{\"owner\":\"lookup-owner\",\"name\":\"a\",\"currency\":\"EUR\"}");
        err = tw_post(NULL, "/accounts", body2, NULL, 409);
        assert_string_equal(tw_str(err, "error"), "name_taken");
        assert_non_null(strstr(tw_str(err, "message"), a));
        json_decref(err);
    }

    tr_expect_error("GET", NULL, "/events/6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab", 404, "event_not_found");
    tr_expect_error("GET", NULL, "/transfers/6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab", 404,
                    "transfer_not_found");
    tr_expect_error("GET", NULL, "/events/nope", 400, "invalid_field");
    tr_expect_error("GET", NULL, "/transfers/nope", 400, "invalid_field");
    snprintf(path, sizeof path, "/events/%s?x=1", sent_event);
    tr_expect_error("GET", NULL, path, 400, "invalid_query");
}

/* Versions of a statement page's entries, in page order, into v (n of them); the next cursor. */
static int page_versions(const char *path, int64_t *v, int *n, const char *cursor_key)
{
    json_t *doc = tr_get_ok(NULL, path), *entries = json_object_get(doc, "entries"), *next;
    int64_t c = 0;

    *n = (int)json_array_size(entries);
    for (int i = 0; i < *n; i++)
        v[i] = tw_int(json_array_get(entries, (size_t)i), "version");
    next = json_object_get(doc, cursor_key);
    assert_true(json_is_null(next) || json_is_integer(next));
    c = json_is_integer(next) ? json_integer_value(next) : 0;
    json_decref(doc);
    return (int)c;
}

static void test_statement_time_range(void **state)
{
    char id[UUID_STR_SIZE], path[512], from[40], to[40], late[40];
    int64_t v[64];
    int n, cursor, got = 0;
    json_t *doc, *entries, *res = NULL;

    (void)state;
    tw_open(id, "time-owner", "t", "EUR", 0);
    for (int i = 0; i < 30; i++) {
        json_decref(res);
        res = tw_money(id, "deposits", 10 + i, "tick");
    }
    wait_projected(id, tw_int(res, "version"));
    json_decref(res);
    /* every entry's time, oldest first: versions 1..31 */
    snprintf(path, sizeof path, "/accounts/%s/statement?order=asc&limit=500", id);
    doc = tr_get_ok(NULL, path);
    entries = json_object_get(doc, "entries");
    assert_int_equal(json_array_size(entries), 31);
    assert_string_equal(tw_str(doc, "order"), "asc");
    assert_true(json_is_null(json_object_get(doc, "next_after")));
    for (int i = 0; i < 31; i++)
        assert_int_equal(tw_int(json_array_get(entries, (size_t)i), "version"), i + 1);
    /* [from, to) = the times of versions 6 and 26: versions 6..25 */
    snprintf(from, sizeof from, "%s", tw_str(json_array_get(entries, 5), "at"));
    snprintf(to, sizeof to, "%s", tw_str(json_array_get(entries, 25), "at"));
    snprintf(late, sizeof late, "%s", tw_str(json_array_get(entries, 30), "at"));
    json_decref(doc);
    fprintf(stderr, "range %s .. %s\n", from, to);

    /* newest first, 7 a page: 25..19, 18..12, 11..6 */
    cursor = 0;
    for (int page = 0; page < 3; page++) {
        char before[32] = "";
        if (cursor > 0)
            snprintf(before, sizeof before, "&before=%d", cursor);
        snprintf(path, sizeof path, "/accounts/%s/statement?from=%s&to=%s&limit=7%s", id, from, to, before);
        cursor = page_versions(path, v, &n, "next_before");
        assert_int_equal(n, page < 2 ? 7 : 6);
        for (int i = 0; i < n; i++)
            assert_int_equal(v[i], 25 - got - i);
        got += n;
        assert_true(page < 2 ? cursor == 25 - got + 1 : cursor == 0);
    }
    assert_int_equal(got, 20);

    /* oldest first, 7 a page: 6..12, 13..19, 20..25 */
    cursor = 0;
    got = 0;
    for (int page = 0; page < 3; page++) {
        snprintf(path, sizeof path, "/accounts/%s/statement?order=asc&from=%s&to=%s&limit=7&after=%d", id,
                 from, to, cursor);
        cursor = page_versions(path, v, &n, "next_after");
        assert_int_equal(n, page < 2 ? 7 : 6);
        for (int i = 0; i < n; i++)
            assert_int_equal(v[i], 6 + got + i);
        got += n;
        assert_true(page < 2 ? cursor == 5 + got : cursor == 0);
    }

    /* only a start, only an end, a range after the last entry */
    snprintf(path, sizeof path, "/accounts/%s/statement?from=%s&limit=500", id, late);
    page_versions(path, v, &n, "next_before");
    assert_int_equal(n, 1);
    assert_int_equal(v[0], 31);
    snprintf(path, sizeof path, "/accounts/%s/statement?to=%s&limit=500&order=asc", id, from);
    page_versions(path, v, &n, "next_after");
    assert_int_equal(n, 5);
    assert_int_equal(v[4], 5);
    snprintf(path, sizeof path, "/accounts/%s/statement?from=2999-01-01T00:00:00Z", id);
    page_versions(path, v, &n, "next_before");
    assert_int_equal(n, 0);
    /* an offset time is the same instant */
    snprintf(path, sizeof path, "/accounts/%s/statement?to=1970-01-01T01:00:00%%2B01:00", id);
    page_versions(path, v, &n, "next_before");
    assert_int_equal(n, 0);
}

/* Every route's unknown and malformed parameters: 400 invalid_query naming the parameter. */
static void test_unknown_parameters(void **state)
{
    char id[UUID_STR_SIZE], path[512];
    /* path = head + (the account id when with_id) + tail */
    struct {
        const char *head;
        int with_id;
        const char *tail, *param;
    } cases[] = {
        {"/accounts/", 1, "?limit=5", "limit"},
        {"/accounts/", 1, "?foo=1", "foo"},
        {"/accounts/", 1, "?min_version=1&bogus", "bogus"},
        {"/accounts/", 1, "/statement?owner=x", "owner"},
        {"/accounts/", 1, "/statement?page=2", "page"},
        {"/accounts/", 1, "/statement?order=up", "order"},
        {"/accounts/", 1, "/statement?from=yesterday", "from"},
        {"/accounts/", 1, "/statement?to=2026-02-30T00:00:00Z", "to"},
        {"/accounts/", 1, "/statement?order=asc&before=3", "before"},
        {"/accounts/", 1, "/statement?after=3", "after"},
        {"/accounts/", 1, "/statement?limit=", "limit"},
        {"/accounts?owner=", 1, "&min_version=2", "min_version"},
        {"/accounts?owner=", 1, "&sort=name", "sort"},
        {"/healthz?verbose=1", 0, "", "verbose"},
        {"/projections?x=1", 0, "", "x"},
    };

    (void)state;
    tw_open(id, "param-owner", "p", "EUR", 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct thttp_resp r;
        json_t *doc;
        snprintf(path, sizeof path, "%s%s%s", cases[i].head, cases[i].with_id ? id : "", cases[i].tail);
        assert_int_equal(thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 10000), 0);
        doc = thttp_json(&r);
        if (r.status != 400 || doc == NULL || strcmp(tw_str(doc, "error"), "invalid_query") != 0 ||
            strstr(tw_str(doc, "message"), cases[i].param) == NULL)
            tfail("GET %s: %d %s, expected 400 invalid_query naming '%s'", path, r.status, r.body,
                  cases[i].param);
        json_decref(doc);
        thttp_resp_release(&r);
    }
}

/* The account's ETag is its version, and the writer's If-Match takes it back. */
static void test_etag_round_trip(void **state)
{
    char id[UUID_STR_SIZE], path[256], etag[64], headers[128];
    struct thttp_resp r;
    json_t *res;

    (void)state;
    tw_open(id, "etag-owner", "e", "EUR", 0);
    res = tw_money(id, "deposits", 5, "x");
    wait_projected(id, tw_int(res, "version"));
    json_decref(res);
    snprintf(path, sizeof path, "/accounts/%s", id);
    assert_int_equal(thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 10000), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(thttp_header(&r, "ETag", etag, sizeof etag));
    assert_string_equal(etag, "\"2\"");
    thttp_resp_release(&r);
    snprintf(headers, sizeof headers, "If-Match: %s\r\n", etag);
    snprintf(path, sizeof path, "/accounts/%s/deposits", id);
    json_decref(tw_post(NULL, path, "{\"amount\":1}", headers, 201));
    /* the same tag again is stale now */
    tw_reject(NULL, path, "{\"amount\":1}", headers, 409, "version_conflict");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owner_accounts_paged),
        cmocka_unit_test(test_event_and_transfer),
        cmocka_unit_test(test_statement_time_range),
        cmocka_unit_test(test_unknown_parameters),
        cmocka_unit_test(test_etag_round_trip),
    };
    return cmocka_run_group_tests(tests, tstack_group_setup, tstack_group_teardown);
}
