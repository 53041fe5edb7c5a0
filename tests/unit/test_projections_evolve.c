/* Unit tests of the fold (proj_evolve) for every event type and of envelope decoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "event.h"

#define ACC_A "11111111-1111-4111-8111-111111111111"
#define ACC_B "22222222-2222-4222-8222-222222222222"
#define XFER "33333333-3333-4333-8333-333333333333"

static int64_t next_pos = 1;

static struct event mk(const char *stream, int64_t version, enum event_type type)
{
    struct event ev;

    memset(&ev, 0, sizeof ev);
    snprintf(ev.event_id, sizeof ev.event_id, "%08llx-0000-4000-8000-%012llx",
             (unsigned long long)next_pos, (unsigned long long)next_pos);
    snprintf(ev.stream_id, sizeof ev.stream_id, "%s", stream);
    ev.stream_version = version;
    ev.position = next_pos++;
    ev.type = type;
    ev.schema = 1;
    snprintf(ev.recorded_at, sizeof ev.recorded_at, "2026-11-21T20:00:%02lld.000000Z",
             (long long)(ev.position % 60));
    return ev;
}

static struct event opened(const char *stream, int64_t overdraft)
{
    struct event ev = mk(stream, 1, EV_ACCOUNT_OPENED);
    strcpy(ev.owner, "alice");
    strcpy(ev.name, "main");
    strcpy(ev.currency, "EUR");
    ev.overdraft_limit = overdraft;
    return ev;
}

static struct event money(const char *stream, int64_t version, enum event_type type, int64_t amount)
{
    struct event ev = mk(stream, version, type);
    ev.amount = amount;
    snprintf(ev.description, sizeof ev.description, "%s %lld", event_type_name(type), (long long)amount);
    return ev;
}

static void apply_ok(struct account_view *acc, const struct event *ev, struct statement_entry *en)
{
    struct err e;
    status st = proj_evolve(acc, ev, en, &e);
    if (st != ST_OK)
        fail_msg("evolve %s: %s", event_type_name(ev->type), e.msg);
}

static void test_every_event_type(void **state)
{
    struct account_view a, b;
    struct statement_entry en;
    struct event sent, recv, rev_a, rev_b, ev;

    (void)state;
    account_view_init(&a, ACC_A);
    account_view_init(&b, ACC_B);

    ev = opened(ACC_A, 500);
    apply_ok(&a, &ev, &en);
    assert_int_equal(a.version, 1);
    assert_int_equal(a.status, ACCOUNT_OPEN);
    assert_string_equal(a.owner, "alice");
    assert_string_equal(a.name, "main");
    assert_string_equal(a.currency, "EUR");
    assert_int_equal(a.overdraft_limit, 500);
    assert_int_equal(a.balance, 0);
    assert_string_equal(a.updated_at, ev.recorded_at);
    assert_int_equal(en.version, 1);
    assert_int_equal(en.type, EV_ACCOUNT_OPENED);
    assert_int_equal(en.amount, 0);
    assert_int_equal(en.balance_after, 0);
    assert_string_equal(en.event_id, ev.event_id);

    ev = opened(ACC_B, 0);
    apply_ok(&b, &ev, NULL); /* entry is optional */

    ev = money(ACC_A, 2, EV_MONEY_DEPOSITED, 1000);
    apply_ok(&a, &ev, &en);
    assert_int_equal(a.balance, 1000);
    assert_int_equal(en.amount, 1000);
    assert_int_equal(en.balance_after, 1000);
    assert_string_equal(en.description, "MoneyDeposited 1000");

    ev = money(ACC_A, 3, EV_MONEY_WITHDRAWN, 1300);
    apply_ok(&a, &ev, &en);
    assert_int_equal(a.balance, -300); /* within the overdraft; rules are the writer's anyway */
    assert_int_equal(en.amount, -1300);

    sent = money(ACC_A, 4, EV_TRANSFER_SENT, 200);
    strcpy(sent.transfer_id, XFER);
    strcpy(sent.counterparty, ACC_B);
    apply_ok(&a, &sent, &en);
    assert_int_equal(a.balance, -500);
    assert_int_equal(en.amount, -200);
    assert_string_equal(en.counterparty, ACC_B);
    assert_string_equal(en.transfer_id, XFER);

    recv = money(ACC_B, 2, EV_TRANSFER_RECEIVED, 200);
    strcpy(recv.transfer_id, XFER);
    strcpy(recv.counterparty, ACC_A);
    apply_ok(&b, &recv, &en);
    assert_int_equal(b.balance, 200);
    assert_int_equal(en.amount, 200);
    assert_string_equal(en.counterparty, ACC_A);

    /* reversal of both transfer legs: each carries its signed effect */
    rev_a = mk(ACC_A, 5, EV_TRANSACTION_REVERSED);
    strcpy(rev_a.reversed_event_id, sent.event_id);
    rev_a.amount = 200;
    strcpy(rev_a.reason, "mistake");
    apply_ok(&a, &rev_a, &en);
    assert_int_equal(a.balance, -300);
    assert_int_equal(en.amount, 200);
    assert_string_equal(en.reversed_event_id, sent.event_id);
    assert_string_equal(en.description, "mistake");
    assert_string_equal(en.counterparty, "");

    rev_b = mk(ACC_B, 3, EV_TRANSACTION_REVERSED);
    strcpy(rev_b.reversed_event_id, recv.event_id);
    rev_b.amount = -200;
    strcpy(rev_b.reason, "mistake");
    apply_ok(&b, &rev_b, &en);
    assert_int_equal(b.balance, 0);
    assert_int_equal(en.amount, -200);
    assert_int_equal(en.balance_after, 0);

    /* reversal of a plain withdrawal */
    ev = mk(ACC_A, 6, EV_TRANSACTION_REVERSED);
    ev.amount = 1300;
    strcpy(ev.reversed_event_id, "00000003-0000-4000-8000-000000000003");
    apply_ok(&a, &ev, &en);
    assert_int_equal(a.balance, 1000);

    ev = mk(ACC_B, 4, EV_ACCOUNT_CLOSED);
    strcpy(ev.reason, "moving away");
    apply_ok(&b, &ev, &en);
    assert_int_equal(b.status, ACCOUNT_CLOSED);
    assert_int_equal(b.version, 4);
    assert_int_equal(en.amount, 0);
    assert_string_equal(en.description, "moving away");
}

static void test_rejections_leave_the_view_untouched(void **state)
{
    struct account_view a, before;
    struct event ev;
    struct err e;

    (void)state;
    account_view_init(&a, ACC_A);

    /* the first event must be AccountOpened */
    ev = money(ACC_A, 1, EV_MONEY_DEPOSITED, 5);
    assert_int_equal(proj_evolve(&a, &ev, NULL, &e), ST_INVALID);
    assert_string_equal(e.reason, "poison");
    assert_int_equal(a.version, 0);

    ev = opened(ACC_A, 0);
    apply_ok(&a, &ev, NULL);
    before = a;

    /* version conflicts: a gap and a replay */
    ev = money(ACC_A, 3, EV_MONEY_DEPOSITED, 5);
    assert_int_equal(proj_evolve(&a, &ev, NULL, &e), ST_CONFLICT);
    ev = money(ACC_A, 1, EV_MONEY_DEPOSITED, 5);
    assert_int_equal(proj_evolve(&a, &ev, NULL, &e), ST_CONFLICT);
    /* AccountOpened only starts a stream */
    ev = opened(ACC_A, 0);
    ev.stream_version = 2;
    assert_int_equal(proj_evolve(&a, &ev, NULL, &e), ST_INVALID);
    assert_string_equal(e.reason, "poison");
    /* another account's event */
    ev = money(ACC_B, 2, EV_MONEY_DEPOSITED, 5);
    assert_int_equal(proj_evolve(&a, &ev, NULL, &e), ST_INVALID);
    /* unknown type */
    ev = money(ACC_A, 2, EV_UNKNOWN, 5);
    assert_int_equal(proj_evolve(&a, &ev, NULL, &e), ST_INVALID);
    assert_string_equal(e.reason, "poison");
    assert_memory_equal(&a, &before, sizeof a);

    /* balance overflow, both ways */
    ev = money(ACC_A, 2, EV_MONEY_DEPOSITED, INT64_MAX);
    apply_ok(&a, &ev, NULL);
    before = a;
    ev = money(ACC_A, 3, EV_MONEY_DEPOSITED, 1);
    assert_int_equal(proj_evolve(&a, &ev, NULL, &e), ST_INVALID);
    assert_string_equal(e.reason, "poison");
    assert_memory_equal(&a, &before, sizeof a);

    account_view_init(&a, ACC_B);
    ev = opened(ACC_B, 0);
    apply_ok(&a, &ev, NULL);
    ev = money(ACC_B, 2, EV_MONEY_WITHDRAWN, INT64_MAX);
    apply_ok(&a, &ev, NULL);
    ev = money(ACC_B, 3, EV_MONEY_WITHDRAWN, 2);
    assert_int_equal(proj_evolve(&a, &ev, NULL, &e), ST_INVALID);
    assert_int_equal(a.balance, -INT64_MAX);
}

static void test_envelope_round_trip(void **state)
{
    struct event cases[4], back;
    struct err e;

    (void)state;
    cases[0] = opened(ACC_A, 700);
    cases[1] = money(ACC_A, 2, EV_MONEY_WITHDRAWN, 42);
    strcpy(cases[1].command_id, XFER);
    strcpy(cases[1].idempotency_key, "key-1");
    cases[2] = money(ACC_A, 3, EV_TRANSFER_RECEIVED, 9);
    strcpy(cases[2].transfer_id, XFER);
    strcpy(cases[2].counterparty, ACC_B);
    cases[3] = mk(ACC_A, 4, EV_TRANSACTION_REVERSED);
    cases[3].amount = -9;
    strcpy(cases[3].reversed_event_id, cases[2].event_id);
    strcpy(cases[3].reason, "r");
    for (int i = 0; i < 4; i++) {
        char *text = event_encode(&cases[i]), *again;
        assert_non_null(text);
        if (event_decode(&back, text, strlen(text), &e) != ST_OK)
            fail_msg("decode %s: %s", text, e.msg);
        assert_memory_equal(&back, &cases[i], sizeof back);
        again = event_encode(&back);
        assert_string_equal(again, text);
        free(text);
        free(again);
    }
}

#define ENV(type, data, extra)                                                                  \
    "{\"event_id\":\"44444444-4444-4444-8444-444444444444\",\"stream_id\":\"" ACC_A "\","      \
    "\"stream_version\":2,\"position\":9,\"type\":\"" type "\",\"schema\":1,"                  \
    "\"recorded_at\":\"2026-11-21T20:00:00Z\",\"data\":" data extra "}"

static void test_bad_envelopes_are_poison(void **state)
{
    static const char *const bad[] = {
        "",
        "not json",
        "[1,2]",
        "{\"event_id\":\"44444444-4444-4444-8444-444444444444\"}",
        ENV("MoneyStolen", "{\"amount\":1}", ""),
        ENV("MoneyDeposited", "{\"amount\":0}", ""),
        ENV("MoneyDeposited", "{\"amount\":-1}", ""),
        ENV("MoneyDeposited", "{\"amount\":1.5}", ""),
        ENV("MoneyDeposited", "{\"amount\":\"1\"}", ""),
        ENV("MoneyDeposited", "{}", ""),
        ENV("MoneyDeposited", "[]", ""),
        ENV("MoneyDeposited", "{\"amount\":1}", ",\"metadata\":7"),
        ENV("MoneyDeposited", "{\"amount\":1}", ",\"metadata\":{\"command_id\":\"x\"}"),
        ENV("MoneyDeposited", "{\"amount\":1}", ",\"type\":\"MoneyWithdrawn\""), /* duplicate key */
        ENV("AccountOpened", "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EU\",\"overdraft_limit\":0}", ""),
        ENV("AccountOpened", "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":-1}", ""),
        ENV("TransferSent", "{\"transfer_id\":\"" XFER "\",\"amount\":5}", ""),
        ENV("TransactionReversed", "{\"amount\":5}", ""),
        "{\"event_id\":\"not-a-uuid\",\"stream_id\":\"" ACC_A "\",\"stream_version\":2,\"position\":9,"
        "\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"t\",\"data\":{}}",
        "{\"event_id\":\"44444444-4444-4444-8444-444444444444\",\"stream_id\":\"" ACC_A "\","
        "\"stream_version\":0,\"position\":9,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"t\",\"data\":{}}",
        "{\"event_id\":\"44444444-4444-4444-8444-444444444444\",\"stream_id\":\"" ACC_A "\","
        "\"stream_version\":2,\"position\":9,\"type\":\"AccountClosed\",\"schema\":2,\"recorded_at\":\"t\",\"data\":{}}",
    };
    struct event ev;
    struct err e;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        if (event_decode(&ev, bad[i], strlen(bad[i]), &e) != ST_INVALID)
            fail_msg("accepted: %s", bad[i]);
        if (strcmp(e.reason, "poison") != 0)
            fail_msg("reason '%s' for: %s", e.reason, bad[i]);
    }
    /* and the well-formed neighbour of those cases decodes */
    {
        const char *good = ENV("MoneyDeposited", "{\"amount\":1}", ",\"metadata\":{}");
        assert_int_equal(event_decode(&ev, good, strlen(good), &e), ST_OK);
        assert_int_equal(ev.amount, 1);
        assert_string_equal(ev.description, "");
    }
}

static void test_read_model_documents_round_trip(void **state)
{
    struct account_view a, back;
    struct statement_entry en, en_back;
    struct event ev;
    struct err e;
    char *doc;

    (void)state;
    account_view_init(&a, ACC_A);
    ev = opened(ACC_A, 100);
    apply_ok(&a, &ev, NULL);
    ev = money(ACC_A, 2, EV_TRANSFER_SENT, 50);
    strcpy(ev.transfer_id, XFER);
    strcpy(ev.counterparty, ACC_B);
    apply_ok(&a, &ev, &en);
    doc = account_view_to_json(&a);
    assert_int_equal(account_view_from_json(&back, doc, strlen(doc), &e), ST_OK);
    assert_memory_equal(&back, &a, sizeof a);
    free(doc);
    doc = statement_entry_to_json(&en);
    assert_int_equal(statement_entry_from_json(&en_back, doc, strlen(doc), &e), ST_OK);
    assert_memory_equal(&en_back, &en, sizeof en);
    free(doc);
}

/* A discarded event folds as a no-op: the version moves on, nothing else; its line round-trips
 * and says EventDiscarded; an opening event or a version out of order is refused. */
static void test_discard_is_a_no_op(void **state)
{
    struct account_view a, before;
    struct statement_entry en, en_back;
    struct event ev;
    struct err e;
    char *doc;

    (void)state;
    account_view_init(&a, ACC_A);
    assert_int_equal(proj_discard(&a, XFER, 1, "2026-01-01T00:00:00.000000Z", "why", &en, &e), ST_INVALID);
    ev = opened(ACC_A, 100);
    apply_ok(&a, &ev, NULL);
    ev = money(ACC_A, 2, EV_MONEY_DEPOSITED, 70);
    apply_ok(&a, &ev, NULL);
    before = a;
    assert_int_equal(proj_discard(&a, XFER, 4, "2026-01-01T00:00:00.000000Z", "why", &en, &e), ST_CONFLICT);
    assert_memory_equal(&a, &before, sizeof a);
    assert_int_equal(proj_discard(&a, XFER, 3, "2026-01-01T00:00:00.000000Z", "teleport is not money", &en, &e),
                     ST_OK);
    assert_int_equal(a.version, 3);
    assert_int_equal(a.balance, before.balance);
    assert_string_equal(a.updated_at, "2026-01-01T00:00:00.000000Z");
    assert_int_equal(en.amount, 0);
    assert_int_equal(en.balance_after, before.balance);
    doc = statement_entry_to_json(&en);
    assert_non_null(strstr(doc, "\"type\":\"" STATEMENT_DISCARDED_TYPE "\""));
    assert_non_null(strstr(doc, "teleport is not money"));
    assert_int_equal(statement_entry_from_json(&en_back, doc, strlen(doc), &e), ST_OK);
    assert_memory_equal(&en_back, &en, sizeof en);
    free(doc);
    /* the fold goes on after it */
    ev = money(ACC_A, 4, EV_MONEY_WITHDRAWN, 20);
    apply_ok(&a, &ev, NULL);
    assert_int_equal(a.version, 4);
}

/* The stored form of a statement entry (Redis): compact, read back to the same entry and the
 * same JSON as the contract's; an entry that does not fit the form is stored as the JSON. */
static void check_stored_form(const struct statement_entry *en, size_t max_len)
{
    struct statement_entry back;
    struct err e;
    char *stored = statement_entry_encode(en), *json = statement_entry_to_json(en), *rendered;

    assert_non_null(stored);
    assert_true(strlen(stored) <= max_len);
    assert_int_equal(statement_entry_decode(&back, en->version, stored, strlen(stored), &e), ST_OK);
    assert_memory_equal(&back, en, sizeof back);
    rendered = statement_entry_render(stored, strlen(stored), en->version);
    assert_non_null(rendered);
    assert_string_equal(rendered, json);
    free(rendered);
    free(stored);
    free(json);
}

static void test_statement_entry_stored_form(void **state)
{
    struct account_view a;
    struct statement_entry en, back;
    struct event ev;
    struct err e;
    char *stored;

    (void)state;
    account_view_init(&a, ACC_A);
    ev = opened(ACC_A, 100);
    apply_ok(&a, &ev, &en);
    check_stored_form(&en, 90);
    ev = money(ACC_A, 2, EV_MONEY_DEPOSITED, 1234);
    strcpy(ev.description, "a|b|c|d|e|f|g|h: bars kept");
    apply_ok(&a, &ev, &en);
    check_stored_form(&en, 120);
    ev = money(ACC_A, 3, EV_TRANSFER_SENT, 50);
    strcpy(ev.transfer_id, XFER);
    strcpy(ev.counterparty, ACC_B);
    apply_ok(&a, &ev, &en);
    check_stored_form(&en, 160);
    /* the longest numbers beside both transfer ids: nothing is cut (the description stays whole) */
    en.amount = INT64_MIN;
    en.balance_after = INT64_MIN + 1;
    memset(en.description, 0, sizeof en.description);
    strcpy(en.description, "all of it");
    check_stored_form(&en, 220);
    assert_int_equal(proj_discard(&a, XFER, 4, "2026-01-01T00:00:00.000000Z", "why", &en, &e), ST_OK);
    check_stored_form(&en, 90);
    stored = statement_entry_encode(&en);
    assert_int_equal(stored[0], '-');
    free(stored);
    /* a time in another format: the JSON is stored, and read back */
    memset(en.at, 0, sizeof en.at);
    strcpy(en.at, "2026-01-01 00:00:00+00");
    stored = statement_entry_encode(&en);
    assert_int_equal(stored[0], '{');
    free(stored);
    check_stored_form(&en, 400);
    /* malformed */
    assert_int_equal(statement_entry_decode(&back, 1, "B12|x", 5, &e), ST_INVALID);
    assert_int_equal(statement_entry_decode(&back, 1, "Z1|1|20260101000000000000|0123||||", 33, &e), ST_INVALID);
    assert_null(statement_entry_render("", 0, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_event_type),
        cmocka_unit_test(test_rejections_leave_the_view_untouched),
        cmocka_unit_test(test_envelope_round_trip),
        cmocka_unit_test(test_bad_envelopes_are_poison),
        cmocka_unit_test(test_read_model_documents_round_trip),
        cmocka_unit_test(test_discard_is_a_no_op),
        cmocka_unit_test(test_statement_entry_stored_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
