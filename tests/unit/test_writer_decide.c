/* Unit tests of the writer's business rules (table-driven, no server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "decide.h"

#define A "aaaaaaaa-0000-4000-8000-000000000001"
#define B "bbbbbbbb-0000-4000-8000-000000000002"
#define T "cccccccc-0000-4000-8000-000000000003"

static struct account_view acct(const char *id, enum account_status s, int64_t balance,
                                int64_t overdraft, int64_t version, const char *currency)
{
    struct account_view v;
    account_view_init(&v, id);
    v.status = s;
    v.balance = balance;
    v.overdraft_limit = overdraft;
    v.version = version;
    snprintf(v.currency, sizeof v.currency, "%s", currency);
    return v;
}

struct decide_case {
    const char *what;
    enum account_status acc_status;
    int64_t balance, overdraft, version;
    enum cmd_kind kind;
    int64_t amount;
    int64_t if_match;
    status st;
    const char *reason;
    enum event_type type;
    int64_t balance_after;
};

static const struct decide_case decide_cases[] = {
    {"open new", ACCOUNT_NONE, 0, 0, 0, CMD_OPEN, 0, -1, ST_OK, NULL, EV_ACCOUNT_OPENED, 0},
    {"open existing", ACCOUNT_OPEN, 0, 0, 1, CMD_OPEN, 0, -1, ST_CONFLICT, "account_exists", 0, 0},
    {"deposit", ACCOUNT_OPEN, 100, 0, 1, CMD_DEPOSIT, 50, -1, ST_OK, NULL, EV_MONEY_DEPOSITED, 150},
    {"deposit missing", ACCOUNT_NONE, 0, 0, 0, CMD_DEPOSIT, 50, -1, ST_NOT_FOUND, "account_not_found", 0, 0},
    {"deposit closed", ACCOUNT_CLOSED, 0, 0, 3, CMD_DEPOSIT, 50, -1, ST_CONFLICT, "account_closed", 0, 0},
    {"deposit overflow", ACCOUNT_OPEN, INT64_MAX - 10, 0, 2, CMD_DEPOSIT, 11, -1, ST_REJECTED, "balance_overflow", 0, 0},
    {"deposit to the max", ACCOUNT_OPEN, INT64_MAX - 10, 0, 2, CMD_DEPOSIT, 10, -1, ST_OK, NULL, EV_MONEY_DEPOSITED, INT64_MAX},
    {"withdraw within balance", ACCOUNT_OPEN, 100, 0, 1, CMD_WITHDRAW, 100, -1, ST_OK, NULL, EV_MONEY_WITHDRAWN, 0},
    {"withdraw into overdraft", ACCOUNT_OPEN, 100, 500, 1, CMD_WITHDRAW, 600, -1, ST_OK, NULL, EV_MONEY_WITHDRAWN, -500},
    {"withdraw past overdraft", ACCOUNT_OPEN, 100, 500, 1, CMD_WITHDRAW, 601, -1, ST_REJECTED, "insufficient_funds", 0, 0},
    {"withdraw no overdraft", ACCOUNT_OPEN, 0, 0, 1, CMD_WITHDRAW, 1, -1, ST_REJECTED, "insufficient_funds", 0, 0},
    {"withdraw huge", ACCOUNT_OPEN, -5, INT64_MAX, 1, CMD_WITHDRAW, INT64_MAX, -1, ST_REJECTED, "insufficient_funds", 0, 0},
    {"withdraw closed", ACCOUNT_CLOSED, 0, 0, 4, CMD_WITHDRAW, 1, -1, ST_CONFLICT, "account_closed", 0, 0},
    {"if-match ok", ACCOUNT_OPEN, 10, 0, 7, CMD_DEPOSIT, 1, 7, ST_OK, NULL, EV_MONEY_DEPOSITED, 11},
    {"if-match stale", ACCOUNT_OPEN, 10, 0, 7, CMD_DEPOSIT, 1, 6, ST_CONFLICT, "version_conflict", 0, 0},
    {"close at zero", ACCOUNT_OPEN, 0, 100, 5, CMD_CLOSE, 0, -1, ST_OK, NULL, EV_ACCOUNT_CLOSED, 0},
    {"close with money", ACCOUNT_OPEN, 1, 0, 5, CMD_CLOSE, 0, -1, ST_REJECTED, "balance_not_zero", 0, 0},
    {"close in debt", ACCOUNT_OPEN, -1, 10, 5, CMD_CLOSE, 0, -1, ST_REJECTED, "balance_not_zero", 0, 0},
    {"close closed", ACCOUNT_CLOSED, 0, 0, 5, CMD_CLOSE, 0, -1, ST_CONFLICT, "account_closed", 0, 0},
};

static void test_decide(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof decide_cases / sizeof decide_cases[0]; i++) {
        const struct decide_case *c = &decide_cases[i];
        struct account_view v = acct(A, c->acc_status, c->balance, c->overdraft, c->version, "EUR");
        struct command cmd;
        struct decision d;
        struct err e = {0};
        status st;

        memset(&cmd, 0, sizeof cmd);
        cmd.kind = c->kind;
        cmd.amount = c->amount;
        cmd.expected_version = c->if_match;
        snprintf(cmd.account_id, sizeof cmd.account_id, A);
        snprintf(cmd.owner, sizeof cmd.owner, "ann");
        snprintf(cmd.name, sizeof cmd.name, "main");
        snprintf(cmd.currency, sizeof cmd.currency, "EUR");
        st = decide(&v, &cmd, &d, &e);
        if (st != c->st)
            fail_msg("%s: status %d, expected %d (%s)", c->what, st, c->st, e.msg);
        if (st != ST_OK) {
            assert_string_equal(e.reason, c->reason);
            continue;
        }
        assert_int_equal(d.count, 1);
        assert_int_equal(d.events[0].type, c->type);
        assert_string_equal(d.events[0].stream_id, A);
        assert_int_equal(d.events[0].stream_version, c->version + 1);
        assert_int_equal(d.events[0].schema, EVENT_SCHEMA_CURRENT);
        assert_int_equal(d.balance_after[0], c->balance_after);
        if (c->kind == CMD_DEPOSIT || c->kind == CMD_WITHDRAW)
            assert_int_equal(d.events[0].amount, c->amount);
    }
}

struct transfer_case {
    const char *what;
    enum account_status from_status, to_status;
    int64_t from_balance, from_overdraft;
    const char *to_currency;
    int64_t amount;
    status st;
    const char *reason;
};

static const struct transfer_case transfer_cases[] = {
    {"ok", ACCOUNT_OPEN, ACCOUNT_OPEN, 100, 0, "EUR", 100, ST_OK, NULL},
    {"overdraft", ACCOUNT_OPEN, ACCOUNT_OPEN, 100, 50, "EUR", 150, ST_OK, NULL},
    {"too much", ACCOUNT_OPEN, ACCOUNT_OPEN, 100, 50, "EUR", 151, ST_REJECTED, "insufficient_funds"},
    {"no sender", ACCOUNT_NONE, ACCOUNT_OPEN, 0, 0, "EUR", 1, ST_NOT_FOUND, "account_not_found"},
    {"no receiver", ACCOUNT_OPEN, ACCOUNT_NONE, 100, 0, "EUR", 1, ST_NOT_FOUND, "account_not_found"},
    {"closed receiver", ACCOUNT_OPEN, ACCOUNT_CLOSED, 100, 0, "EUR", 1, ST_CONFLICT, "account_closed"},
    {"currencies", ACCOUNT_OPEN, ACCOUNT_OPEN, 100, 0, "USD", 1, ST_REJECTED, "currency_mismatch"},
};

static void test_transfer(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof transfer_cases / sizeof transfer_cases[0]; i++) {
        const struct transfer_case *c = &transfer_cases[i];
        struct account_view from = acct(A, c->from_status, c->from_balance, c->from_overdraft, 3, "EUR");
        struct account_view to = acct(B, c->to_status, 7, 0, 9, c->to_currency);
        struct command cmd;
        struct decision d;
        struct err e = {0};
        status st;

        memset(&cmd, 0, sizeof cmd);
        cmd.kind = CMD_TRANSFER;
        cmd.amount = c->amount;
        cmd.expected_version = -1;
        snprintf(cmd.account_id, sizeof cmd.account_id, A);
        snprintf(cmd.to, sizeof cmd.to, B);
        snprintf(cmd.transfer_id, sizeof cmd.transfer_id, T);
        st = decide_transfer(&from, &to, &cmd, &d, &e);
        if (st != c->st)
            fail_msg("%s: status %d, expected %d (%s)", c->what, st, c->st, e.msg);
        if (st != ST_OK) {
            assert_string_equal(e.reason, c->reason);
            continue;
        }
        assert_int_equal(d.count, 2);
        assert_int_equal(d.events[0].type, EV_TRANSFER_SENT);
        assert_string_equal(d.events[0].stream_id, A);
        assert_int_equal(d.events[0].stream_version, 4);
        assert_string_equal(d.events[0].counterparty, B);
        assert_int_equal(d.balance_after[0], c->from_balance - c->amount);
        assert_int_equal(d.events[1].type, EV_TRANSFER_RECEIVED);
        assert_string_equal(d.events[1].stream_id, B);
        assert_int_equal(d.events[1].stream_version, 10);
        assert_string_equal(d.events[1].counterparty, A);
        assert_string_equal(d.events[1].transfer_id, T);
        assert_int_equal(d.balance_after[1], 7 + c->amount);
    }
}

static struct event mkevent(const char *id, const char *stream, enum event_type t, int64_t amount)
{
    struct event ev;
    memset(&ev, 0, sizeof ev);
    snprintf(ev.event_id, sizeof ev.event_id, "%s", id);
    snprintf(ev.stream_id, sizeof ev.stream_id, "%s", stream);
    ev.type = t;
    ev.amount = amount;
    snprintf(ev.transfer_id, sizeof ev.transfer_id, T);
    return ev;
}

static void test_reversal(void **state)
{
    struct account_view a = acct(A, ACCOUNT_OPEN, 30, 0, 5, "EUR");
    struct account_view b = acct(B, ACCOUNT_OPEN, 100, 0, 2, "EUR");
    struct event dep = mkevent("00000000-0000-4000-8000-00000000000d", A, EV_MONEY_DEPOSITED, 50);
    struct event wd = mkevent("00000000-0000-4000-8000-00000000000e", A, EV_MONEY_WITHDRAWN, 20);
    struct event sent = mkevent("00000000-0000-4000-8000-00000000000f", A, EV_TRANSFER_SENT, 80);
    struct event recv = mkevent("00000000-0000-4000-8000-000000000010", B, EV_TRANSFER_RECEIVED, 80);
    struct event opened = mkevent("00000000-0000-4000-8000-000000000011", A, EV_ACCOUNT_OPENED, 0);
    struct event none;
    struct command cmd;
    struct decision d;
    struct err e = {0};

    (void)state;
    memset(&none, 0, sizeof none);
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = CMD_REVERSE;
    cmd.expected_version = -1;
    snprintf(cmd.account_id, sizeof cmd.account_id, A);

    /* reversing a deposit of 50 at balance 30 would go to -20: not allowed without overdraft */
    assert_int_equal(decide_reversal(&a, &dep, NULL, NULL, false, &cmd, &d, &e), ST_REJECTED);
    assert_string_equal(e.reason, "insufficient_funds");
    a.overdraft_limit = 20;
    assert_int_equal(decide_reversal(&a, &dep, NULL, NULL, false, &cmd, &d, &e), ST_OK);
    assert_int_equal(d.count, 1);
    assert_int_equal(d.events[0].type, EV_TRANSACTION_REVERSED);
    assert_int_equal(d.events[0].amount, -50);
    assert_int_equal(d.balance_after[0], -20);
    assert_string_equal(d.events[0].reversed_event_id, dep.event_id);
    assert_int_equal(d.events[0].stream_version, 6);

    assert_int_equal(decide_reversal(&a, &wd, NULL, NULL, false, &cmd, &d, &e), ST_OK);
    assert_int_equal(d.events[0].amount, 20);
    assert_int_equal(d.balance_after[0], 50);

    assert_int_equal(decide_reversal(&a, &wd, NULL, NULL, true, &cmd, &d, &e), ST_CONFLICT);
    assert_string_equal(e.reason, "already_reversed");
    assert_int_equal(decide_reversal(&a, &opened, NULL, NULL, false, &cmd, &d, &e), ST_REJECTED);
    assert_string_equal(e.reason, "not_reversible");
    assert_int_equal(decide_reversal(&a, &none, NULL, NULL, false, &cmd, &d, &e), ST_NOT_FOUND);
    assert_string_equal(e.reason, "event_not_found");
    assert_int_equal(decide_reversal(&a, &recv, NULL, NULL, false, &cmd, &d, &e), ST_NOT_FOUND);

    /* a transfer: both legs in one decision, the receiver gives the money back */
    assert_int_equal(decide_reversal(&a, &sent, &b, &recv, false, &cmd, &d, &e), ST_OK);
    assert_int_equal(d.count, 2);
    assert_int_equal(d.events[0].amount, 80);
    assert_string_equal(d.events[1].stream_id, B);
    assert_int_equal(d.events[1].amount, -80);
    assert_int_equal(d.events[1].stream_version, 3);
    assert_string_equal(d.events[1].reversed_event_id, recv.event_id);
    assert_int_equal(d.balance_after[1], 20);
    /* ... unless the receiver has spent it */
    b.balance = 79;
    assert_int_equal(decide_reversal(&a, &sent, &b, &recv, false, &cmd, &d, &e), ST_REJECTED);
    assert_string_equal(e.reason, "insufficient_funds");
    b.balance = 100;
    b.status = ACCOUNT_CLOSED;
    assert_int_equal(decide_reversal(&a, &sent, &b, &recv, false, &cmd, &d, &e), ST_CONFLICT);
    assert_string_equal(e.reason, "account_closed");
    /* If-Match is on the account of the path */
    b.status = ACCOUNT_OPEN;
    cmd.expected_version = 4;
    assert_int_equal(decide_reversal(&a, &sent, &b, &recv, false, &cmd, &d, &e), ST_CONFLICT);
    assert_string_equal(e.reason, "version_conflict");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_transfer),
        cmocka_unit_test(test_reversal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
