/* The writer's business rules: account state + command -> events or a rejection. Pure. */
#ifndef WRITER_DECIDE_H
#define WRITER_DECIDE_H

#include <stdbool.h>

#include "account.h"
#include "command.h"
#include "event.h"
#include "status.h"

#define DECISION_MAX 2

/* The events to append, with type, stream, stream_version and data set (event ids, metadata,
 * positions and times are the store's), and the balance of each event's account after it. */
struct decision {
    struct event events[DECISION_MAX];
    int64_t balance_after[DECISION_MAX];
    int count;
};

/* Open, deposit, withdraw, close on acc (status ACCOUNT_NONE when the account does not exist;
 * for open, the account the caller chose an id for). Rejections: ST_NOT_FOUND
 * account_not_found, ST_CONFLICT account_closed / version_conflict / account_exists,
 * ST_REJECTED insufficient_funds / balance_not_zero / balance_overflow. */
status decide(const struct account_view *acc, const struct command *c, struct decision *out,
              struct err *e) WUR;

/* A transfer from `from` to `to` (c->account_id and c->to); c->transfer_id set by the caller.
 * Also ST_REJECTED currency_mismatch. If-Match applies to the sending account. */
status decide_transfer(const struct account_view *from, const struct account_view *to,
                       const struct command *c, struct decision *out, struct err *e) WUR;

/* Reversal of target (an event of acc, or target->event_id[0] == '\0' when it was not found in
 * acc). For a transfer leg, other_leg is the counterparty's leg and other its account: both
 * legs are reversed together. reversed: either leg already has a TransactionReversed.
 * Rejections: event_not_found 404, already_reversed 409, not_reversible 422, and the rules
 * of decide on both accounts. */
status decide_reversal(const struct account_view *acc, const struct event *target,
                       const struct account_view *other, const struct event *other_leg,
                       bool reversed, const struct command *c, struct decision *out,
                       struct err *e) WUR;

#endif
