/* Event envelope decoding (with upcasting) and encoding. */
#include "event.h"

#include <stdio.h>
#include <string.h>

#include "jsonx.h"

static const char *const event_type_names[] = {
    [EV_UNKNOWN] = "unknown",
#define EVENT_TYPE_NAME(name, text) [EV_##name] = text,
    EVENT_TYPE_MAP(EVENT_TYPE_NAME)
#undef EVENT_TYPE_NAME
};

const char *event_type_name(enum event_type t)
{
    if ((unsigned)t >= EV__COUNT)
        return "unknown";
    return event_type_names[t];
}

enum event_type event_type_parse(const char *name)
{
    for (int t = 1; t < EV__COUNT; t++)
        if (strcmp(event_type_names[t], name) == 0)
            return (enum event_type)t;
    return EV_UNKNOWN;
}

#define AMOUNT_MAX INT64_MAX

static status poison(struct err *e, const struct err *cause)
{
    return err_setr(e, ST_INVALID, "poison", "%s", cause->msg);
}

/* Upcasters: each turns data of (type, schema) into (type, schema + 1), in place. Add one here
 * with a golden history (tests/golden/); never change how an existing (type, schema) folds. */
static const int schema_latest[EV__COUNT] = {
    [EV_ACCOUNT_OPENED] = 1,  [EV_MONEY_DEPOSITED] = 2,      [EV_MONEY_WITHDRAWN] = 1,
    [EV_TRANSFER_SENT] = 1,   [EV_TRANSFER_RECEIVED] = 1,    [EV_TRANSACTION_REVERSED] = 1,
    [EV_ACCOUNT_CLOSED] = 1,
};

int event_schema_latest(enum event_type t)
{
    return (unsigned)t < EV__COUNT ? schema_latest[t] : 0;
}

/* MoneyDeposited 1 -> 2: schema 2 names the unit, "amount" became "amount_minor". */
static status upcast_money_deposited_1(json_t *data, struct err *e)
{
    json_t *amount = json_object_get(data, "amount");

    if (json_object_get(data, "amount_minor") != NULL)
        return err_setr(e, ST_INVALID, "poison", "MoneyDeposited schema 1 has no field 'amount_minor'");
    if (amount == NULL)
        return ST_OK; /* reported as the missing amount_minor, like any missing field */
    if (json_object_set(data, "amount_minor", amount) != 0 || json_object_del(data, "amount") != 0)
        return err_set(e, ST_INTERNAL, "out of memory");
    return ST_OK;
}

static status upcast(enum event_type type, int schema, json_t *data, struct err *e)
{
    status st = ST_OK;
    int latest = event_schema_latest(type);

    if (schema < 1 || schema > latest)
        return err_setr(e, ST_INVALID, "poison", "%s schema %d is not supported (1..%d)",
                        event_type_name(type), schema, latest);
    for (int s = schema; s < latest && st == ST_OK; s++) {
        if (type == EV_MONEY_DEPOSITED && s == 1)
            st = upcast_money_deposited_1(data, e);
        else
            st = err_set(e, ST_INTERNAL, "no upcaster for %s schema %d", event_type_name(type), s);
    }
    return st;
}

status event_data_from_json(struct event *ev, const json_t *data_in, struct err *e)
{
    status st = ST_OK;
    struct err fe;
    json_t *data = NULL;
    int64_t n = 0;

    if (!json_is_object(data_in))
        return err_setr(e, ST_INVALID, "poison", "event data must be an object");
    data = json_deep_copy(data_in);
    if (data == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    st = upcast(ev->type, ev->schema, data, e);
    if (st != ST_OK)
        goto cleanup;

#define REQ(call)                       \
    do {                                \
        if ((call) != ST_OK) {          \
            st = poison(e, &fe);        \
            goto cleanup;               \
        }                               \
    } while (0)
#define OPT(call)                                  \
    do {                                           \
        status s_ = (call);                        \
        if (s_ != ST_OK && s_ != ST_NOT_FOUND) {   \
            st = poison(e, &fe);                   \
            goto cleanup;                          \
        }                                          \
    } while (0)

    switch (ev->type) {
    case EV_ACCOUNT_OPENED:
        REQ(jsonx_str(data, "owner", ev->owner, sizeof ev->owner, 1, OWNER_MAX, true, &fe));
        REQ(jsonx_str(data, "name", ev->name, sizeof ev->name, 1, ACCOUNT_NAME_MAX, true, &fe));
        REQ(jsonx_str(data, "currency", ev->currency, sizeof ev->currency, 3, 3, true, &fe));
        REQ(jsonx_int(data, "overdraft_limit", &ev->overdraft_limit, 0, AMOUNT_MAX, true, &fe));
        break;
    case EV_MONEY_DEPOSITED:
    case EV_MONEY_WITHDRAWN:
        REQ(jsonx_int(data, ev->type == EV_MONEY_DEPOSITED ? "amount_minor" : "amount", &ev->amount, 1,
                      AMOUNT_MAX, true, &fe));
        OPT(jsonx_str(data, "description", ev->description, sizeof ev->description, 0,
                      DESCRIPTION_MAX, false, &fe));
        break;
    case EV_TRANSFER_SENT:
    case EV_TRANSFER_RECEIVED:
        REQ(jsonx_uuid(data, "transfer_id", ev->transfer_id, true, &fe));
        REQ(jsonx_uuid(data, ev->type == EV_TRANSFER_SENT ? "to" : "from", ev->counterparty, true,
                       &fe));
        REQ(jsonx_int(data, "amount", &ev->amount, 1, AMOUNT_MAX, true, &fe));
        OPT(jsonx_str(data, "description", ev->description, sizeof ev->description, 0,
                      DESCRIPTION_MAX, false, &fe));
        break;
    case EV_TRANSACTION_REVERSED:
        REQ(jsonx_uuid(data, "reversed_event_id", ev->reversed_event_id, true, &fe));
        REQ(jsonx_int(data, "amount", &n, -AMOUNT_MAX, AMOUNT_MAX, true, &fe));
        ev->amount = n;
        OPT(jsonx_str(data, "reason", ev->reason, sizeof ev->reason, 0, REASON_MAX, false, &fe));
        break;
    case EV_ACCOUNT_CLOSED:
        OPT(jsonx_str(data, "reason", ev->reason, sizeof ev->reason, 0, REASON_MAX, false, &fe));
        break;
    default:
        st = err_setr(e, ST_INVALID, "poison", "unknown event type");
        goto cleanup;
    }
#undef REQ
#undef OPT
cleanup:
    json_decref(data);
    return st;
}

status event_metadata_from_json(struct event *ev, const json_t *md, struct err *e)
{
    struct err fe;

    ev->command_id[0] = ev->correlation_id[0] = ev->idempotency_key[0] = ev->principal[0] = '\0';
    if (md == NULL || json_is_null(md))
        return ST_OK;
    if (!json_is_object(md))
        return err_setr(e, ST_INVALID, "poison", "event metadata must be an object");
    if (jsonx_uuid(md, "command_id", ev->command_id, false, &fe) == ST_INVALID ||
        jsonx_uuid(md, "correlation_id", ev->correlation_id, false, &fe) == ST_INVALID ||
        jsonx_str(md, "idempotency_key", ev->idempotency_key, sizeof ev->idempotency_key, 0,
                  IDEMPOTENCY_KEY_MAX, false, &fe) == ST_INVALID ||
        jsonx_str(md, "principal", ev->principal, sizeof ev->principal, 0, OWNER_MAX, false, &fe) ==
            ST_INVALID)
        return poison(e, &fe);
    return ST_OK;
}

status event_from_json(struct event *out, const json_t *env, struct err *e)
{
    struct err fe;
    char type[64];
    int64_t schema = 0;
    status st;

    memset(out, 0, sizeof *out);
    if (!json_is_object(env))
        return err_setr(e, ST_INVALID, "poison", "envelope must be a JSON object");
    if (jsonx_uuid(env, "event_id", out->event_id, true, &fe) != ST_OK ||
        jsonx_uuid(env, "stream_id", out->stream_id, true, &fe) != ST_OK ||
        jsonx_int(env, "stream_version", &out->stream_version, 1, INT32_MAX, true, &fe) != ST_OK ||
        jsonx_int(env, "position", &out->position, 1, INT64_MAX, true, &fe) != ST_OK ||
        jsonx_str(env, "type", type, sizeof type, 1, sizeof type - 1, true, &fe) != ST_OK ||
        jsonx_int(env, "schema", &schema, 1, 1000, true, &fe) != ST_OK ||
        jsonx_str(env, "recorded_at", out->recorded_at, sizeof out->recorded_at, 1,
                  TIMESTAMP_SIZE - 1, true, &fe) != ST_OK)
        return poison(e, &fe);
    out->type = event_type_parse(type);
    if (out->type == EV_UNKNOWN)
        return err_setr(e, ST_INVALID, "poison", "unknown event type '%s'", type);
    out->schema = (int)schema;
    st = event_data_from_json(out, json_object_get(env, "data"), e);
    if (st != ST_OK)
        return st;
    return event_metadata_from_json(out, json_object_get(env, "metadata"), e);
}

status event_decode(struct event *out, const char *json, size_t len, struct err *e)
{
    json_error_t je;
    json_t *env = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    status st;

    if (env == NULL) {
        memset(out, 0, sizeof *out);
        return err_setr(e, ST_INVALID, "poison", "undecodable envelope: %s at column %d", je.text,
                        je.column);
    }
    st = event_from_json(out, env, e);
    json_decref(env);
    return st;
}

json_t *event_data_to_json(const struct event *ev)
{
    switch (ev->type) {
    case EV_ACCOUNT_OPENED:
        return json_pack("{s:s, s:s, s:s, s:I}", "owner", ev->owner, "name", ev->name, "currency",
                         ev->currency, "overdraft_limit", (json_int_t)ev->overdraft_limit);
    case EV_MONEY_DEPOSITED:
    case EV_MONEY_WITHDRAWN:
        return json_pack("{s:I, s:s}",
                         ev->type == EV_MONEY_DEPOSITED && ev->schema >= 2 ? "amount_minor" : "amount",
                         (json_int_t)ev->amount, "description", ev->description);
    case EV_TRANSFER_SENT:
    case EV_TRANSFER_RECEIVED:
        return json_pack("{s:s, s:s, s:I, s:s}", "transfer_id", ev->transfer_id,
                         ev->type == EV_TRANSFER_SENT ? "to" : "from", ev->counterparty, "amount",
                         (json_int_t)ev->amount, "description", ev->description);
    case EV_TRANSACTION_REVERSED:
        return json_pack("{s:s, s:I, s:s}", "reversed_event_id", ev->reversed_event_id, "amount",
                         (json_int_t)ev->amount, "reason", ev->reason);
    case EV_ACCOUNT_CLOSED:
        return json_pack("{s:s}", "reason", ev->reason);
    default:
        return json_object();
    }
}

json_t *event_metadata_to_json(const struct event *ev)
{
    json_t *md = json_object();

    if (md == NULL)
        return NULL;
    jsonx_set_nonempty(md, "command_id", ev->command_id);
    jsonx_set_nonempty(md, "correlation_id", ev->correlation_id);
    jsonx_set_nonempty(md, "idempotency_key", ev->idempotency_key);
    jsonx_set_nonempty(md, "principal", ev->principal);
    return md;
}

json_t *event_to_json(const struct event *ev)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:s, s:i, s:s, s:o, s:o}", "event_id", ev->event_id,
                     "stream_id", ev->stream_id, "stream_version", (json_int_t)ev->stream_version,
                     "position", (json_int_t)ev->position, "type", event_type_name(ev->type),
                     "schema", ev->schema >= 1 ? ev->schema : EVENT_SCHEMA_CURRENT, "recorded_at", ev->recorded_at, "data",
                     event_data_to_json(ev), "metadata", event_metadata_to_json(ev));
}

char *event_encode(const struct event *ev)
{
    return jsonx_dump_decref(event_to_json(ev));
}

int64_t event_balance_effect(const struct event *ev)
{
    switch (ev->type) {
    case EV_MONEY_DEPOSITED:
    case EV_TRANSFER_RECEIVED:
        return ev->amount;
    case EV_MONEY_WITHDRAWN:
    case EV_TRANSFER_SENT:
        return -ev->amount;
    case EV_TRANSACTION_REVERSED:
        return ev->amount;
    default:
        return 0;
    }
}

uint32_t fnv1a32(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 16777619u;
    }
    return h;
}

unsigned event_partition(const char *stream_id, unsigned partitions)
{
    return fnv1a32(stream_id) % (partitions > 0 ? partitions : 1);
}

void event_subject(const char *stream_id, unsigned partitions, char *buf, size_t len)
{
    snprintf(buf, len, "events.%u", event_partition(stream_id, partitions));
}
