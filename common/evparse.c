/* Fast paths of the envelope and account document codecs (see evparse.h). Every check below
 * mirrors one in projections/event.c, projections/account.c or common/jsonx.c; where one fails
 * the fast path gives up and the jansson codec decides, so only the accepting side must match. */
#include "evparse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jscan.h"
#include "uuid.h"

#define AMOUNT_MAX INT64_MAX
#define NOT_HANDLED (-1)
#define ABSENT 0
#define READ 1

typedef const struct jscan_member jmember;

/* jsonx_str: READ, ABSENT (optional, dst ""), or NOT_HANDLED (anything jsonx_str refuses). */
static int f_str(const struct jscan *js, int obj, const char *key, char *dst, size_t dstsz,
                 size_t min_len, size_t max_len, bool required)
{
    jmember *m = jscan_get(js, obj, key);

    dst[0] = '\0';
    if (m == NULL || m->kind == JSCAN_NULL)
        return required ? NOT_HANDLED : ABSENT;
    if (m->kind != JSCAN_STR || m->len > max_len || m->len + 1 > dstsz || m->len < min_len)
        return NOT_HANDLED;
    memcpy(dst, m->str, m->len);
    dst[m->len] = '\0';
    return READ;
}

/* jsonx_int */
static int f_int(const struct jscan *js, int obj, const char *key, int64_t *out, int64_t min,
                 int64_t max, bool required)
{
    jmember *m = jscan_get(js, obj, key);

    if (m == NULL || m->kind == JSCAN_NULL)
        return required ? NOT_HANDLED : ABSENT;
    if (m->kind != JSCAN_INT || m->num < min || m->num > max)
        return NOT_HANDLED;
    *out = m->num;
    return READ;
}

/* jsonx_uuid */
static int f_uuid(const struct jscan *js, int obj, const char *key, char dst[UUID_STR_SIZE], bool required)
{
    jmember *m = jscan_get(js, obj, key);

    dst[0] = '\0';
    if (m == NULL || m->kind == JSCAN_NULL)
        return required ? NOT_HANDLED : ABSENT;
    if (m->kind != JSCAN_STR || !uuid_parse(m->str, m->len, dst))
        return NOT_HANDLED;
    return READ;
}

/* The latest schema of each type as this file reads it: a type whose latest schema moved on
 * (a new upcaster in event.c) is left to the jansson path until this file learns it. */
static int known_latest(enum event_type t)
{
    return t == EV_MONEY_DEPOSITED ? 2 : 1;
}

/* event_data_from_json on the object obj of js (after the upcast of MoneyDeposited 1 -> 2). */
static bool data_fast(struct event *ev, const struct jscan *js, int obj)
{
    const char *amount = "amount";
    int latest = event_schema_latest(ev->type);

    if (ev->type <= EV_UNKNOWN || ev->type >= EV__COUNT || latest != known_latest(ev->type) ||
        ev->schema < 1 || ev->schema > latest)
        return false;
#define REQ(call)              \
    do {                       \
        if ((call) != READ)    \
            return false;      \
    } while (0)
#define OPT(call)                     \
    do {                              \
        if ((call) == NOT_HANDLED)    \
            return false;             \
    } while (0)
    switch (ev->type) {
    case EV_ACCOUNT_OPENED:
        REQ(f_str(js, obj, "owner", ev->owner, sizeof ev->owner, 1, OWNER_MAX, true));
        REQ(f_str(js, obj, "name", ev->name, sizeof ev->name, 1, ACCOUNT_NAME_MAX, true));
        REQ(f_str(js, obj, "currency", ev->currency, sizeof ev->currency, 3, 3, true));
        REQ(f_int(js, obj, "overdraft_limit", &ev->overdraft_limit, 0, AMOUNT_MAX, true));
        return true;
    case EV_MONEY_DEPOSITED:
        if (ev->schema >= 2)
            amount = "amount_minor";
        else if (jscan_get(js, obj, "amount_minor") != NULL)
            return false; /* schema 1 with the field of schema 2: poison */
        /* fall through */
    case EV_MONEY_WITHDRAWN:
        REQ(f_int(js, obj, amount, &ev->amount, 1, AMOUNT_MAX, true));
        OPT(f_str(js, obj, "description", ev->description, sizeof ev->description, 0, DESCRIPTION_MAX, false));
        return true;
    case EV_TRANSFER_SENT:
    case EV_TRANSFER_RECEIVED:
        REQ(f_uuid(js, obj, "transfer_id", ev->transfer_id, true));
        REQ(f_uuid(js, obj, ev->type == EV_TRANSFER_SENT ? "to" : "from", ev->counterparty, true));
        REQ(f_int(js, obj, "amount", &ev->amount, 1, AMOUNT_MAX, true));
        OPT(f_str(js, obj, "description", ev->description, sizeof ev->description, 0, DESCRIPTION_MAX, false));
        return true;
    case EV_TRANSACTION_REVERSED:
        REQ(f_uuid(js, obj, "reversed_event_id", ev->reversed_event_id, true));
        REQ(f_int(js, obj, "amount", &ev->amount, -AMOUNT_MAX, AMOUNT_MAX, true));
        OPT(f_str(js, obj, "reason", ev->reason, sizeof ev->reason, 0, REASON_MAX, false));
        return true;
    case EV_ACCOUNT_CLOSED:
        OPT(f_str(js, obj, "reason", ev->reason, sizeof ev->reason, 0, REASON_MAX, false));
        return true;
    default:
        return false;
    }
#undef REQ
#undef OPT
}

/* event_metadata_from_json on the object obj of js. */
static bool metadata_fast(struct event *ev, const struct jscan *js, int obj)
{
    ev->command_id[0] = ev->correlation_id[0] = ev->idempotency_key[0] = ev->principal[0] = '\0';
    return f_uuid(js, obj, "command_id", ev->command_id, false) != NOT_HANDLED &&
           f_uuid(js, obj, "correlation_id", ev->correlation_id, false) != NOT_HANDLED &&
           f_str(js, obj, "idempotency_key", ev->idempotency_key, sizeof ev->idempotency_key, 0,
                 IDEMPOTENCY_KEY_MAX, false) != NOT_HANDLED &&
           f_str(js, obj, "principal", ev->principal, sizeof ev->principal, 0, OWNER_MAX, false) != NOT_HANDLED;
}

bool evparse_event_fast(struct event *out, const char *json, size_t len)
{
    struct jscan js;
    char type[64];
    int64_t schema = 0;
    jmember *data, *md;

    if (!jscan_parse(&js, json, len))
        return false;
    memset(out, 0, sizeof *out);
    if (f_uuid(&js, JSCAN_TOP, "event_id", out->event_id, true) != READ ||
        f_uuid(&js, JSCAN_TOP, "stream_id", out->stream_id, true) != READ ||
        f_int(&js, JSCAN_TOP, "stream_version", &out->stream_version, 1, INT32_MAX, true) != READ ||
        f_int(&js, JSCAN_TOP, "position", &out->position, 1, INT64_MAX, true) != READ ||
        f_str(&js, JSCAN_TOP, "type", type, sizeof type, 1, sizeof type - 1, true) != READ ||
        f_int(&js, JSCAN_TOP, "schema", &schema, 1, 1000, true) != READ ||
        f_str(&js, JSCAN_TOP, "recorded_at", out->recorded_at, sizeof out->recorded_at, 1,
              TIMESTAMP_SIZE - 1, true) != READ)
        return false;
    out->type = event_type_parse(type);
    if (out->type == EV_UNKNOWN)
        return false;
    out->schema = (int)schema;
    data = jscan_get(&js, JSCAN_TOP, "data");
    if (data == NULL || data->kind != JSCAN_OBJ || !data_fast(out, &js, jscan_index(&js, data)))
        return false;
    md = jscan_get(&js, JSCAN_TOP, "metadata");
    if (md == NULL || md->kind == JSCAN_NULL) {
        out->command_id[0] = out->correlation_id[0] = out->idempotency_key[0] = out->principal[0] = '\0';
        return true;
    }
    return md->kind == JSCAN_OBJ && metadata_fast(out, &js, jscan_index(&js, md));
}

status evparse_event(struct event *out, const char *json, size_t len, struct err *e)
{
    if (evparse_event_fast(out, json, len))
        return ST_OK;
    return event_decode(out, json, len, e);
}

bool evparse_data_fast(struct event *ev, const char *json, size_t len)
{
    struct jscan js;

    return jscan_parse(&js, json, len) && data_fast(ev, &js, JSCAN_TOP);
}

bool evparse_metadata_fast(struct event *ev, const char *json, size_t len)
{
    struct jscan js;

    return jscan_parse(&js, json, len) && metadata_fast(ev, &js, JSCAN_TOP);
}

bool evparse_account_fast(struct account_view *acc, const char *json, size_t len)
{
    struct jscan js;
    char st_name[16];

    if (!jscan_parse(&js, json, len))
        return false;
    memset(acc, 0, sizeof *acc);
    if (f_uuid(&js, JSCAN_TOP, "account_id", acc->account_id, true) != READ ||
        f_str(&js, JSCAN_TOP, "owner", acc->owner, sizeof acc->owner, 0, OWNER_MAX, true) != READ ||
        f_str(&js, JSCAN_TOP, "name", acc->name, sizeof acc->name, 0, ACCOUNT_NAME_MAX, true) != READ ||
        f_str(&js, JSCAN_TOP, "currency", acc->currency, sizeof acc->currency, 0, 3, true) != READ ||
        f_int(&js, JSCAN_TOP, "balance", &acc->balance, INT64_MIN, INT64_MAX, true) != READ ||
        f_int(&js, JSCAN_TOP, "overdraft_limit", &acc->overdraft_limit, 0, INT64_MAX, true) != READ ||
        f_str(&js, JSCAN_TOP, "status", st_name, sizeof st_name, 1, sizeof st_name - 1, true) != READ ||
        f_int(&js, JSCAN_TOP, "version", &acc->version, 0, INT64_MAX, true) != READ ||
        f_str(&js, JSCAN_TOP, "updated_at", acc->updated_at, sizeof acc->updated_at, 0,
              TIMESTAMP_SIZE - 1, true) != READ)
        return false;
    acc->status = strcmp(st_name, "open") == 0     ? ACCOUNT_OPEN
                  : strcmp(st_name, "closed") == 0 ? ACCOUNT_CLOSED
                                                   : ACCOUNT_NONE;
    return true;
}

status evparse_account(struct account_view *acc, const char *json, size_t len, struct err *e)
{
    if (evparse_account_fast(acc, json, len))
        return ST_OK;
    return account_view_from_json(acc, json, len, e);
}

/* Printable ASCII that jansson writes as is (no escape, valid UTF-8). */
static bool plain(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7E || *s == '"' || *s == '\\')
            return false;
    return true;
}

char *evparse_account_json(const struct account_view *acc)
{
    char buf[1024];
    char *out;
    int n;

    if (!plain(acc->account_id) || !plain(acc->owner) || !plain(acc->name) || !plain(acc->currency) ||
        !plain(acc->updated_at))
        return account_view_to_json(acc);
    /* json_pack's keys in their order, JSON_COMPACT, integers as %lld: account_view_to_json */
    n = snprintf(buf, sizeof buf,
                 "{\"account_id\":\"%s\",\"owner\":\"%s\",\"name\":\"%s\",\"currency\":\"%s\","
                 "\"balance\":%lld,\"overdraft_limit\":%lld,\"status\":\"%s\",\"version\":%lld,"
                 "\"updated_at\":\"%s\"}",
                 acc->account_id, acc->owner, acc->name, acc->currency, (long long)acc->balance,
                 (long long)acc->overdraft_limit, account_status_name(acc->status),
                 (long long)acc->version, acc->updated_at);
    if (n < 0 || (size_t)n >= sizeof buf)
        return account_view_to_json(acc);
    out = malloc((size_t)n + 1);
    if (out != NULL)
        memcpy(out, buf, (size_t)n + 1);
    return out;
}
