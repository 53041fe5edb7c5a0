/* Writer commands: routing of method and path, and request bodies parsed into checked structs. Pure. */
#ifndef WRITER_COMMAND_H
#define WRITER_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "status.h"

enum cmd_kind {
    CMD_NONE = 0,
    CMD_HEALTHZ,
    CMD_READYZ,
    CMD_OPEN,
    CMD_DEPOSIT,
    CMD_WITHDRAW,
    CMD_TRANSFER,
    CMD_REVERSE,
    CMD_CLOSE,
};

/* What a request asks for: the kind, the metrics route and the account id of the path. */
struct cmd_route {
    enum cmd_kind kind;
    const char *route;  /* static metrics label */
    const char *method; /* static: the method the route accepts */
    char account_id[UUID_STR_SIZE];
};

struct command {
    enum cmd_kind kind;
    char account_id[UUID_STR_SIZE]; /* path id; open: chosen by the caller; transfer: "from" */
    /* open */
    char owner[OWNER_MAX + 1];
    /* the caller's owner when it may act only on its own accounts ("": any, an admin): the
     * account a command acts on (a transfer's "from") must be this owner's */
    char actor[OWNER_MAX + 1];
    char name[ACCOUNT_NAME_MAX + 1];
    char currency[4];
    int64_t overdraft_limit;
    /* deposit, withdraw, transfer */
    int64_t amount;
    char description[DESCRIPTION_MAX + 1];
    char to[UUID_STR_SIZE];          /* transfer */
    char transfer_id[UUID_STR_SIZE]; /* transfer: chosen by the caller */
    /* reverse, close */
    char event_id[UUID_STR_SIZE]; /* the event to reverse */
    char reason[REASON_MAX + 1];
    int64_t expected_version; /* If-Match; -1 when absent */
};

/* Routes path (no query string). Unknown path: ST_NOT_FOUND (reason "not_found"); a path id
 * that is not a UUID: ST_INVALID. method is not checked here: compare with r->method. */
status cmd_route(struct cmd_route *r, const char *path, struct err *e) WUR;

/* Parses and checks the JSON body of a command of kind; account_id comes from the path (may be
 * "" for open and transfer). Every field is type-, range- and length-checked, unknown fields
 * rejected: ST_INVALID with reason "invalid_json" or "invalid_field". */
status cmd_parse(struct command *c, enum cmd_kind kind, const char *account_id, const char *body,
                 size_t len, struct err *e) WUR;

/* Parses an If-Match value (a version, optionally quoted as an ETag); NULL: -1. */
status cmd_parse_if_match(int64_t *version, const char *header, struct err *e) WUR;

/* Checks an Idempotency-Key value: 1..IDEMPOTENCY_KEY_MAX printable ASCII bytes. */
status cmd_check_idempotency_key(const char *key, struct err *e) WUR;

/* 1 when code is an active ISO 4217 currency code (upper case). */
int cmd_currency_known(const char *code);

/* HTTP status for an error status (400, 401, 404, 409, 422, 503, 500). */
int cmd_http_status(status st);

#endif
