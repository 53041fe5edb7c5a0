/* Domain events: types, the envelope (contract), decoding with upcasting, encoding. Pure, no I/O. */
#ifndef PROJECTIONS_EVENT_H
#define PROJECTIONS_EVENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "uuid.h"

#define OWNER_MAX 128
#define ACCOUNT_NAME_MAX 128
#define DESCRIPTION_MAX 256
#define REASON_MAX 256
#define IDEMPOTENCY_KEY_MAX 128
#define TIMESTAMP_SIZE 40
#define EVENT_PARTITIONS 16 /* default of the PARTITIONS setting */

#define EVENT_TYPE_MAP(X)                                 \
    X(ACCOUNT_OPENED, "AccountOpened")                    \
    X(MONEY_DEPOSITED, "MoneyDeposited")                  \
    X(MONEY_WITHDRAWN, "MoneyWithdrawn")                  \
    X(TRANSFER_SENT, "TransferSent")                      \
    X(TRANSFER_RECEIVED, "TransferReceived")              \
    X(TRANSACTION_REVERSED, "TransactionReversed")        \
    X(ACCOUNT_CLOSED, "AccountClosed")

enum event_type {
    EV_UNKNOWN = 0,
#define EVENT_TYPE_ENUM(name, text) EV_##name,
    EVENT_TYPE_MAP(EVENT_TYPE_ENUM)
#undef EVENT_TYPE_ENUM
    EV__COUNT
};

/* The schema writers write (contract: schema 1 for every type). Decoding accepts every schema
 * from 1 to event_schema_latest(type) and upcasts the data to the latest one before reading
 * it; see docs/event-versioning.md. */
#define EVENT_SCHEMA_CURRENT 1

struct event {
    char event_id[UUID_STR_SIZE];
    char stream_id[UUID_STR_SIZE];
    int64_t stream_version;
    int64_t position;
    enum event_type type;
    int schema; /* as stored; the fields below do not depend on it (upcast on decoding) */
    char recorded_at[TIMESTAMP_SIZE];
    /* data */
    char owner[OWNER_MAX + 1];
    char name[ACCOUNT_NAME_MAX + 1];
    char currency[4];
    int64_t overdraft_limit;
    int64_t amount; /* deposits, withdrawals, transfers: > 0; reversal: signed effect */
    char description[DESCRIPTION_MAX + 1];
    char transfer_id[UUID_STR_SIZE];
    char counterparty[UUID_STR_SIZE]; /* "to" of TransferSent, "from" of TransferReceived */
    char reversed_event_id[UUID_STR_SIZE];
    char reason[REASON_MAX + 1];
    /* metadata */
    char command_id[UUID_STR_SIZE];
    char correlation_id[UUID_STR_SIZE];
    char idempotency_key[IDEMPOTENCY_KEY_MAX + 1];
    char principal[OWNER_MAX + 1]; /* who sent the command (a token's sub); "" before auth */
};

/* Static name of a type ("AccountOpened"); "unknown" for EV_UNKNOWN. */
const char *event_type_name(enum event_type t);
/* EV_UNKNOWN when name is not a known type. */
enum event_type event_type_parse(const char *name);

/* Highest schema known for a type (the data form decoding reads); 0 for EV_UNKNOWN. */
int event_schema_latest(enum event_type t);

/* Decodes a whole envelope (the NATS payload). Unknown type, bad field or an unsupported schema:
 * ST_INVALID with e->reason "poison" and a message naming the field. */
status event_decode(struct event *out, const char *json, size_t len, struct err *e) WUR;
/* Same from a parsed envelope object. */
status event_from_json(struct event *out, const json_t *envelope, struct err *e) WUR;
/* Fills the data fields of ev (type and schema already set) from data, upcasting older schemas. */
status event_data_from_json(struct event *ev, const json_t *data, struct err *e) WUR;
/* Fills the metadata fields; every field is optional. */
status event_metadata_from_json(struct event *ev, const json_t *metadata, struct err *e) WUR;

/* New references; NULL only on allocation failure. data is written in the form of ev->schema
 * (EVENT_SCHEMA_CURRENT when 0), and the envelope's "schema" says which. */
json_t *event_data_to_json(const struct event *ev);
json_t *event_metadata_to_json(const struct event *ev);
json_t *event_to_json(const struct event *ev);
/* The envelope as compact JSON text; caller frees. */
char *event_encode(const struct event *ev);

/* Signed effect of the event on its account's balance. */
int64_t event_balance_effect(const struct event *ev);

/* FNV-1a 32-bit hash (the contract's partition function). */
uint32_t fnv1a32(const char *s);
/* The partition of a stream: fnv1a32(stream_id) % partitions (partitions >= 1). */
unsigned event_partition(const char *stream_id, unsigned partitions);
/* "events.<event_partition(stream_id, partitions)>" into buf. */
void event_subject(const char *stream_id, unsigned partitions, char *buf, size_t len);

#endif
