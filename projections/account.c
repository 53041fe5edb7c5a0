/* evolve: the single definition of how events fold into the balance and statement models. */
#include "account.h"

#include <stdio.h>
#include <string.h>

#include "fold_version.h"
#include "jsonx.h"

/* snprintf(dst, size, "%s", src) without the formatting machinery: src truncated to size - 1. */
static void copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

void account_view_init(struct account_view *acc, const char *account_id)
{
    memset(acc, 0, sizeof *acc);
    copy_str(acc->account_id, sizeof acc->account_id, account_id);
}

const char *account_status_name(enum account_status s)
{
    switch (s) {
    case ACCOUNT_OPEN:
        return "open";
    case ACCOUNT_CLOSED:
        return "closed";
    default:
        return "none";
    }
}

status proj_evolve(struct account_view *acc, const struct event *ev, struct statement_entry *entry,
                   struct err *e)
{
    struct account_view next = *acc;
    int64_t effect = event_balance_effect(ev);

#ifdef PROJ_TEST_ALTERED_FOLD
    /* Only in the test-only binary projector_altfold (never in a production target): a
     * deliberately different fold so tests can show that `rebuild --verify` finds exactly the
     * accounts it changes. */
    if (ev->type == EV_MONEY_DEPOSITED && strncmp(ev->description, "altfold", 7) == 0)
        effect += 1;
#endif

    if (strcmp(ev->stream_id, acc->account_id) != 0)
        return err_set(e, ST_INVALID, "event '%s' belongs to '%s', not '%s'", ev->event_id,
                       ev->stream_id, acc->account_id);
    if (ev->stream_version != acc->version + 1)
        return err_set(e, ST_CONFLICT, "event '%s' has version %lld, expected %lld", ev->event_id,
                       (long long)ev->stream_version, (long long)(acc->version + 1));
    if ((acc->version == 0) != (ev->type == EV_ACCOUNT_OPENED))
        return err_setr(e, ST_INVALID, "poison", "event '%s' (%s) at version %lld: %s", ev->event_id,
                        event_type_name(ev->type), (long long)ev->stream_version,
                        acc->version == 0 ? "a stream must start with AccountOpened"
                                          : "AccountOpened may only start a stream");
    if (__builtin_add_overflow(acc->balance, effect, &next.balance))
        return err_setr(e, ST_INVALID, "poison", "event '%s' overflows the balance", ev->event_id);

    switch (ev->type) {
    case EV_ACCOUNT_OPENED:
        copy_str(next.owner, sizeof next.owner, ev->owner);
        copy_str(next.name, sizeof next.name, ev->name);
        copy_str(next.currency, sizeof next.currency, ev->currency);
        next.overdraft_limit = ev->overdraft_limit;
        next.status = ACCOUNT_OPEN;
        break;
    case EV_ACCOUNT_CLOSED:
        next.status = ACCOUNT_CLOSED;
        break;
    case EV_MONEY_DEPOSITED:
    case EV_MONEY_WITHDRAWN:
    case EV_TRANSFER_SENT:
    case EV_TRANSFER_RECEIVED:
    case EV_TRANSACTION_REVERSED:
        break;
    default:
        return err_setr(e, ST_INVALID, "poison", "event '%s' has an unknown type", ev->event_id);
    }
    next.version = ev->stream_version;
    copy_str(next.updated_at, sizeof next.updated_at, ev->recorded_at);

    if (entry != NULL) {
        memset(entry, 0, sizeof *entry);
        entry->version = ev->stream_version;
        copy_str(entry->event_id, sizeof entry->event_id, ev->event_id);
        entry->type = ev->type;
        entry->amount = effect;
        entry->balance_after = next.balance;
        copy_str(entry->description, sizeof entry->description,
                 (ev->type == EV_TRANSACTION_REVERSED || ev->type == EV_ACCOUNT_CLOSED) ? ev->reason
                                                                                        : ev->description);
        copy_str(entry->at, sizeof entry->at, ev->recorded_at);
        if (ev->type == EV_TRANSFER_SENT || ev->type == EV_TRANSFER_RECEIVED) {
            copy_str(entry->counterparty, sizeof entry->counterparty, ev->counterparty);
            copy_str(entry->transfer_id, sizeof entry->transfer_id, ev->transfer_id);
        }
        if (ev->type == EV_TRANSACTION_REVERSED)
            copy_str(entry->reversed_event_id, sizeof entry->reversed_event_id, ev->reversed_event_id);
    }
    *acc = next;
    return ST_OK;
}

const char *proj_fold_version(void)
{
#ifdef PROJ_TEST_ALTERED_FOLD
    return PROJ_FOLD_DIGEST "+altfold"; /* another fold, built from the same text */
#else
    return PROJ_FOLD_DIGEST;
#endif
}

status proj_discard(struct account_view *acc, const char *event_id, int64_t version, const char *at,
                    const char *reason, struct statement_entry *entry, struct err *e)
{
    if (version != acc->version + 1)
        return err_set(e, ST_CONFLICT, "event '%s' has version %lld, expected %lld", event_id,
                       (long long)version, (long long)(acc->version + 1));
    if (acc->version == 0)
        return err_set(e, ST_INVALID, "event '%s' opens the account: it cannot be discarded", event_id);
    acc->version = version;
    copy_str(acc->updated_at, sizeof acc->updated_at, at);
    if (entry != NULL) {
        memset(entry, 0, sizeof *entry);
        entry->version = version;
        copy_str(entry->event_id, sizeof entry->event_id, event_id);
        entry->type = EV_UNKNOWN;
        entry->discarded = 1;
        entry->balance_after = acc->balance;
        copy_str(entry->description, sizeof entry->description, reason);
        copy_str(entry->at, sizeof entry->at, at);
    }
    return ST_OK;
}

char *account_view_to_json(const struct account_view *acc)
{
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:s}", "account_id",
                            acc->account_id, "owner", acc->owner, "name", acc->name, "currency",
                            acc->currency, "balance", (json_int_t)acc->balance, "overdraft_limit",
                            (json_int_t)acc->overdraft_limit, "status",
                            account_status_name(acc->status), "version", (json_int_t)acc->version,
                            "updated_at", acc->updated_at);

    return jsonx_dump_decref(doc);
}

char *statement_entry_to_json(const struct statement_entry *en)
{
    json_t *doc = json_pack("{s:I, s:s, s:s, s:I, s:I, s:s, s:s}", "version", (json_int_t)en->version,
                            "event_id", en->event_id, "type",
                            en->discarded ? STATEMENT_DISCARDED_TYPE : event_type_name(en->type), "amount",
                            (json_int_t)en->amount, "balance_after", (json_int_t)en->balance_after,
                            "description", en->description, "at", en->at);

    if (doc == NULL)
        return NULL;
    jsonx_set_nonempty(doc, "counterparty", en->counterparty);
    jsonx_set_nonempty(doc, "transfer_id", en->transfer_id);
    jsonx_set_nonempty(doc, "reversed_event_id", en->reversed_event_id);
    return jsonx_dump_decref(doc);
}

status account_view_from_json(struct account_view *acc, const char *json, size_t len, struct err *e)
{
    json_t *doc = NULL;
    char st_name[16];
    status st;

    memset(acc, 0, sizeof *acc);
    st = jsonx_load_object(&doc, json, len, e);
    if (st != ST_OK)
        return st;
    if (jsonx_uuid(doc, "account_id", acc->account_id, true, e) != ST_OK ||
        jsonx_str(doc, "owner", acc->owner, sizeof acc->owner, 0, OWNER_MAX, true, e) != ST_OK ||
        jsonx_str(doc, "name", acc->name, sizeof acc->name, 0, ACCOUNT_NAME_MAX, true, e) != ST_OK ||
        jsonx_str(doc, "currency", acc->currency, sizeof acc->currency, 0, 3, true, e) != ST_OK ||
        jsonx_int(doc, "balance", &acc->balance, INT64_MIN, INT64_MAX, true, e) != ST_OK ||
        jsonx_int(doc, "overdraft_limit", &acc->overdraft_limit, 0, INT64_MAX, true, e) != ST_OK ||
        jsonx_str(doc, "status", st_name, sizeof st_name, 1, sizeof st_name - 1, true, e) != ST_OK ||
        jsonx_int(doc, "version", &acc->version, 0, INT64_MAX, true, e) != ST_OK ||
        jsonx_str(doc, "updated_at", acc->updated_at, sizeof acc->updated_at, 0, TIMESTAMP_SIZE - 1,
                  true, e) != ST_OK) {
        st = e != NULL ? e->code : ST_INVALID;
        goto cleanup;
    }
    acc->status = strcmp(st_name, "open") == 0     ? ACCOUNT_OPEN
                  : strcmp(st_name, "closed") == 0 ? ACCOUNT_CLOSED
                                                   : ACCOUNT_NONE;
cleanup:
    json_decref(doc);
    return st;
}

status statement_entry_from_json(struct statement_entry *en, const char *json, size_t len,
                                 struct err *e)
{
    json_t *doc = NULL;
    char type[64];
    status st;

    memset(en, 0, sizeof *en);
    st = jsonx_load_object(&doc, json, len, e);
    if (st != ST_OK)
        return st;
    if (jsonx_int(doc, "version", &en->version, 1, INT64_MAX, true, e) != ST_OK ||
        jsonx_uuid(doc, "event_id", en->event_id, true, e) != ST_OK ||
        jsonx_str(doc, "type", type, sizeof type, 1, sizeof type - 1, true, e) != ST_OK ||
        jsonx_int(doc, "amount", &en->amount, INT64_MIN, INT64_MAX, true, e) != ST_OK ||
        jsonx_int(doc, "balance_after", &en->balance_after, INT64_MIN, INT64_MAX, true, e) != ST_OK ||
        jsonx_str(doc, "description", en->description, sizeof en->description, 0,
                  sizeof en->description - 1, true, e) != ST_OK ||
        jsonx_str(doc, "at", en->at, sizeof en->at, 0, TIMESTAMP_SIZE - 1, true, e) != ST_OK ||
        jsonx_uuid(doc, "counterparty", en->counterparty, false, e) == ST_INVALID ||
        jsonx_uuid(doc, "transfer_id", en->transfer_id, false, e) == ST_INVALID ||
        jsonx_uuid(doc, "reversed_event_id", en->reversed_event_id, false, e) == ST_INVALID) {
        st = e != NULL ? e->code : ST_INVALID;
        goto cleanup;
    }
    en->type = event_type_parse(type);
    en->discarded = strcmp(type, STATEMENT_DISCARDED_TYPE) == 0;
    st = ST_OK;
cleanup:
    json_decref(doc);
    return st;
}
