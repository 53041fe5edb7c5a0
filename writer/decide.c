/* Business rules of the writer, on the write-side state of the accounts a command touches. */
#include "decide.h"

#include <stdio.h>
#include <string.h>

/* The checks every command on an existing account shares, in the order a client needs them. */
static status check_open(const struct account_view *acc, const struct command *c, bool check_version,
                         struct err *e)
{
    /* another owner's account is answered as one that does not exist: nothing about it leaks */
    if (acc->status == ACCOUNT_NONE ||
        (check_version && c->actor[0] != '\0' && strcmp(acc->owner, c->actor) != 0))
        return err_setr(e, ST_NOT_FOUND, "account_not_found", "account '%s' does not exist",
                        acc->account_id);
    if (acc->status == ACCOUNT_CLOSED)
        return err_setr(e, ST_CONFLICT, "account_closed", "account '%s' is closed", acc->account_id);
    if (check_version && c->expected_version >= 0 && c->expected_version != acc->version)
        return err_setr(e, ST_CONFLICT, "version_conflict",
                        "account '%s' is at version %lld, If-Match expected %lld", acc->account_id,
                        (long long)acc->version, (long long)c->expected_version);
    return ST_OK;
}

/* Sets the stream fields of the next event of acc and checks its effect on the balance. */
static status add_event(struct decision *out, const struct account_view *acc, struct event *ev,
                        struct err *e)
{
    int64_t effect, after;

    snprintf(ev->stream_id, sizeof ev->stream_id, "%s", acc->account_id);
    ev->stream_version = acc->version + 1;
    ev->schema = EVENT_SCHEMA_CURRENT;
    effect = event_balance_effect(ev);
    if (__builtin_add_overflow(acc->balance, effect, &after)) {
        if (effect < 0)
            return err_setr(e, ST_REJECTED, "insufficient_funds",
                            "account '%s' has not enough funds", acc->account_id);
        return err_setr(e, ST_REJECTED, "balance_overflow",
                        "the balance of account '%s' would overflow", acc->account_id);
    }
    /* only a debit is held to the overdraft limit: a credit never makes things worse */
    if (effect < 0 && after < -acc->overdraft_limit)
        return err_setr(e, ST_REJECTED, "insufficient_funds",
                        "account '%s' has a balance of %lld and an overdraft limit of %lld: "
                        "%lld cannot be debited",
                        acc->account_id, (long long)acc->balance, (long long)acc->overdraft_limit,
                        (long long)-effect);
    if (out->count >= DECISION_MAX)
        return err_set(e, ST_INTERNAL, "too many events in one decision");
    out->events[out->count] = *ev;
    out->balance_after[out->count] = after;
    out->count++;
    return ST_OK;
}

status decide(const struct account_view *acc, const struct command *c, struct decision *out,
              struct err *e)
{
    struct event ev;
    status st;

    memset(out, 0, sizeof *out);
    memset(&ev, 0, sizeof ev);
    switch (c->kind) {
    case CMD_OPEN:
        if (acc->status != ACCOUNT_NONE)
            return err_setr(e, ST_CONFLICT, "account_exists", "account '%s' already exists",
                            acc->account_id);
        ev.type = EV_ACCOUNT_OPENED;
        snprintf(ev.owner, sizeof ev.owner, "%s", c->owner);
        snprintf(ev.name, sizeof ev.name, "%s", c->name);
        snprintf(ev.currency, sizeof ev.currency, "%s", c->currency);
        ev.overdraft_limit = c->overdraft_limit;
        return add_event(out, acc, &ev, e);
    case CMD_DEPOSIT:
    case CMD_WITHDRAW:
        st = check_open(acc, c, true, e);
        if (st != ST_OK)
            return st;
        ev.type = c->kind == CMD_DEPOSIT ? EV_MONEY_DEPOSITED : EV_MONEY_WITHDRAWN;
        ev.amount = c->amount;
        snprintf(ev.description, sizeof ev.description, "%s", c->description);
        return add_event(out, acc, &ev, e);
    case CMD_CLOSE:
        st = check_open(acc, c, true, e);
        if (st != ST_OK)
            return st;
        if (acc->balance != 0)
            return err_setr(e, ST_REJECTED, "balance_not_zero",
                            "account '%s' has a balance of %lld: only an account at 0 closes",
                            acc->account_id, (long long)acc->balance);
        ev.type = EV_ACCOUNT_CLOSED;
        snprintf(ev.reason, sizeof ev.reason, "%s", c->reason);
        return add_event(out, acc, &ev, e);
    default:
        return err_set(e, ST_INTERNAL, "decide: command %d needs another rule", (int)c->kind);
    }
}

status decide_transfer(const struct account_view *from, const struct account_view *to,
                       const struct command *c, struct decision *out, struct err *e)
{
    struct event sent, received;
    status st;

    memset(out, 0, sizeof *out);
    memset(&sent, 0, sizeof sent);
    memset(&received, 0, sizeof received);
    st = check_open(from, c, true, e);
    if (st == ST_OK)
        st = check_open(to, c, false, e);
    if (st != ST_OK)
        return st;
    if (strcmp(from->currency, to->currency) != 0)
        return err_setr(e, ST_REJECTED, "currency_mismatch",
                        "account '%s' holds %s, account '%s' holds %s", from->account_id,
                        from->currency, to->account_id, to->currency);
    sent.type = EV_TRANSFER_SENT;
    received.type = EV_TRANSFER_RECEIVED;
    sent.amount = received.amount = c->amount;
    snprintf(sent.transfer_id, sizeof sent.transfer_id, "%s", c->transfer_id);
    snprintf(received.transfer_id, sizeof received.transfer_id, "%s", c->transfer_id);
    snprintf(sent.counterparty, sizeof sent.counterparty, "%s", to->account_id);
    snprintf(received.counterparty, sizeof received.counterparty, "%s", from->account_id);
    snprintf(sent.description, sizeof sent.description, "%s", c->description);
    snprintf(received.description, sizeof received.description, "%s", c->description);
    st = add_event(out, from, &sent, e);
    if (st == ST_OK)
        st = add_event(out, to, &received, e);
    return st;
}

status decide_reversal(const struct account_view *acc, const struct event *target,
                       const struct account_view *other, const struct event *other_leg,
                       bool reversed, const struct command *c, struct decision *out,
                       struct err *e)
{
    struct event ev;
    status st;

    memset(out, 0, sizeof *out);
    st = check_open(acc, c, true, e);
    if (st != ST_OK)
        return st;
    if (target == NULL || target->event_id[0] == '\0' || strcmp(target->stream_id, acc->account_id) != 0)
        return err_setr(e, ST_NOT_FOUND, "event_not_found", "account '%s' has no event '%s'",
                        acc->account_id, c->event_id);
    switch (target->type) {
    case EV_MONEY_DEPOSITED:
    case EV_MONEY_WITHDRAWN:
        break;
    case EV_TRANSFER_SENT:
    case EV_TRANSFER_RECEIVED:
        if (other == NULL || other_leg == NULL || other_leg->event_id[0] == '\0')
            return err_set(e, ST_INTERNAL, "transfer '%s' has no other leg", target->transfer_id);
        break;
    default:
        /* "an AccountOpened event", "a TransactionReversed event" */
        return err_setr(e, ST_REJECTED, "not_reversible", "%s %s event cannot be reversed",
                        strchr("AEIOU", event_type_name(target->type)[0]) != NULL ? "an" : "a",
                        event_type_name(target->type));
    }
    if (reversed)
        return err_setr(e, ST_CONFLICT, "already_reversed", "event '%s' is already reversed",
                        target->event_id);

    memset(&ev, 0, sizeof ev);
    ev.type = EV_TRANSACTION_REVERSED;
    snprintf(ev.reversed_event_id, sizeof ev.reversed_event_id, "%s", target->event_id);
    ev.amount = -event_balance_effect(target);
    snprintf(ev.reason, sizeof ev.reason, "%s", c->reason);
    st = add_event(out, acc, &ev, e);
    if (st != ST_OK || (target->type != EV_TRANSFER_SENT && target->type != EV_TRANSFER_RECEIVED))
        return st;
    /* the other leg: its account must accept the compensation as well */
    {
        struct command plain = *c;
        plain.expected_version = -1;
        st = check_open(other, &plain, false, e);
        if (st != ST_OK)
            return st;
    }
    memset(&ev, 0, sizeof ev);
    ev.type = EV_TRANSACTION_REVERSED;
    snprintf(ev.reversed_event_id, sizeof ev.reversed_event_id, "%s", other_leg->event_id);
    ev.amount = -event_balance_effect(other_leg);
    snprintf(ev.reason, sizeof ev.reason, "%s", c->reason);
    return add_event(out, other, &ev, e);
}
