/* The balance and statement read models and the pure fold (evolve) that builds them. */
#ifndef PROJECTIONS_ACCOUNT_H
#define PROJECTIONS_ACCOUNT_H

#include <stdint.h>

#include "event.h"

enum account_status { ACCOUNT_NONE = 0, ACCOUNT_OPEN, ACCOUNT_CLOSED };

/* Balance read model of one account (also the writer's view of the decision state). */
struct account_view {
    char account_id[UUID_STR_SIZE];
    char owner[OWNER_MAX + 1];
    char name[ACCOUNT_NAME_MAX + 1];
    char currency[4];
    int64_t balance;
    int64_t overdraft_limit;
    enum account_status status;
    int64_t version; /* stream_version of the last applied event; 0 = nothing applied */
    char updated_at[TIMESTAMP_SIZE];
};

/* One statement line: exactly one per event, in version order. */
struct statement_entry {
    int64_t version;
    char event_id[UUID_STR_SIZE];
    enum event_type type;
    int64_t amount; /* signed effect on the balance */
    int64_t balance_after;
    char description[REASON_MAX > DESCRIPTION_MAX ? REASON_MAX + 1 : DESCRIPTION_MAX + 1];
    char at[TIMESTAMP_SIZE];
    char counterparty[UUID_STR_SIZE];      /* transfers */
    char transfer_id[UUID_STR_SIZE];       /* transfers */
    char reversed_event_id[UUID_STR_SIZE]; /* reversals */
    int discarded; /* the no-op of a discarded event: type "EventDiscarded", amount 0 */
};

/* The statement type of a discarded event's line. */
#define STATEMENT_DISCARDED_TYPE "EventDiscarded"

/* Empty view for account_id (version 0). */
void account_view_init(struct account_view *acc, const char *account_id);

/* Applies ev to acc and describes it in entry (may be NULL). ev must belong to acc and carry
 * version acc->version + 1 (ST_CONFLICT otherwise, acc untouched); the first event must be
 * AccountOpened. A balance overflow is ST_INVALID. History is folded as recorded: business
 * rules are the writer's, not re-judged here. */
status proj_evolve(struct account_view *acc, const struct event *ev, struct statement_entry *entry,
                   struct err *e) WUR;

/* The no-op folded in place of a discarded event (`projector discard-parked`): acc's version
 * moves to version (which must be the next one), updated_at to at, nothing else changes; entry
 * (may be NULL) is its statement line: amount 0, the discard's reason as description. An
 * opening event (version 1) cannot be discarded: ST_INVALID. */
status proj_discard(struct account_view *acc, const char *event_id, int64_t version, const char *at,
                    const char *reason, struct statement_entry *entry, struct err *e) WUR;

/* The fold version: a digest of this code (how events decode and fold), so that a generation
 * is only ever written by one fold. Static text. */
const char *proj_fold_version(void);

/* JSON documents served by the read API; caller frees. NULL only on allocation failure. */
char *account_view_to_json(const struct account_view *acc);
char *statement_entry_to_json(const struct statement_entry *entry);
status account_view_from_json(struct account_view *acc, const char *json, size_t len,
                              struct err *e) WUR;
status statement_entry_from_json(struct statement_entry *entry, const char *json, size_t len,
                                 struct err *e) WUR;

/* The stored form of a statement entry (Redis, projections/entrycode.c): compact text, or the
 * JSON when the entry does not fit it; caller frees, NULL only on allocation failure. */
char *statement_entry_encode(const struct statement_entry *entry);
/* Reads a stored entry (either form); version is its place in the list (not stored). */
status statement_entry_decode(struct statement_entry *entry, int64_t version, const char *s, size_t len,
                              struct err *e) WUR;
/* The contract's JSON of a stored entry; NULL when it cannot be read (or no memory). */
char *statement_entry_render(const char *s, size_t len, int64_t version);

const char *account_status_name(enum account_status s);

#endif
