/* Request routing and body validation for the writer's commands. */
#include "command.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jsonx.h"
#include "uuid.h"

#define ACCOUNTS_PREFIX "/accounts/"

/* "/accounts/{id}/<tail>" -> kind; route labels are static for the metrics. */
static const struct {
    const char *tail;
    enum cmd_kind kind;
    const char *route;
} account_routes[] = {
    {"deposits", CMD_DEPOSIT, "POST /accounts/{id}/deposits"},
    {"withdrawals", CMD_WITHDRAW, "POST /accounts/{id}/withdrawals"},
    {"reversals", CMD_REVERSE, "POST /accounts/{id}/reversals"},
    {"close", CMD_CLOSE, "POST /accounts/{id}/close"},
};

status cmd_route(struct cmd_route *r, const char *path, struct err *e)
{
    const char *id, *slash;

    memset(r, 0, sizeof *r);
    r->method = "POST";
    if (strcmp(path, "/healthz") == 0) {
        r->kind = CMD_HEALTHZ;
        r->route = "GET /healthz";
        r->method = "GET";
        return ST_OK;
    }
    if (strcmp(path, "/readyz") == 0) {
        r->kind = CMD_READYZ;
        r->route = "GET /readyz";
        r->method = "GET";
        return ST_OK;
    }
    if (strcmp(path, "/accounts") == 0) {
        r->kind = CMD_OPEN;
        r->route = "POST /accounts";
        return ST_OK;
    }
    if (strcmp(path, "/transfers") == 0) {
        r->kind = CMD_TRANSFER;
        r->route = "POST /transfers";
        return ST_OK;
    }
    r->route = "not_found";
    if (strncmp(path, ACCOUNTS_PREFIX, strlen(ACCOUNTS_PREFIX)) != 0)
        return err_setr(e, ST_NOT_FOUND, "not_found", "no route for '%.200s'", path);
    id = path + strlen(ACCOUNTS_PREFIX);
    slash = strchr(id, '/');
    if (slash == NULL)
        return err_setr(e, ST_NOT_FOUND, "not_found", "no route for '%.200s'", path);
    for (size_t i = 0; i < sizeof account_routes / sizeof account_routes[0]; i++) {
        if (strcmp(slash + 1, account_routes[i].tail) != 0)
            continue;
        r->kind = account_routes[i].kind;
        r->route = account_routes[i].route;
        if (!uuid_parse(id, (size_t)(slash - id), r->account_id))
            return err_setr(e, ST_INVALID, "invalid_field", "the account id in '%.200s' is not a UUID",
                            path);
        return ST_OK;
    }
    return err_setr(e, ST_NOT_FOUND, "not_found", "no route for '%.200s'", path);
}

/* Active ISO 4217 codes (sorted for bsearch), without XXX ("no currency": an account holds
 * money of some currency). */
static const char iso4217[][4] = {
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR",
    "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
};

static int cmp_code(const void *a, const void *b)
{
    return memcmp(a, b, 3);
}

int cmd_currency_known(const char *code)
{
    return strlen(code) == 3 &&
           bsearch(code, iso4217, sizeof iso4217 / sizeof iso4217[0], sizeof iso4217[0], cmp_code) != NULL;
}

/* Optional field: absent is fine, anything else must be valid. */
static status opt(status st)
{
    return st == ST_NOT_FOUND ? ST_OK : st;
}

status cmd_parse(struct command *c, enum cmd_kind kind, const char *account_id, const char *body,
                 size_t len, struct err *e)
{
    static const char *const open_fields[] = {"owner", "name", "currency", "overdraft_limit", NULL};
    static const char *const money_fields[] = {"amount", "description", NULL};
    static const char *const transfer_fields[] = {"from", "to", "amount", "description", NULL};
    static const char *const reverse_fields[] = {"event_id", "transfer_id", "reason", NULL};
    static const char *const close_fields[] = {"reason", NULL};
    status st = ST_OK;
    json_t *doc = NULL;

    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->expected_version = -1;
    snprintf(c->account_id, sizeof c->account_id, "%s", account_id != NULL ? account_id : "");
    /* an empty body is an empty object only where every field is optional */
    if (len == 0 && kind == CMD_CLOSE)
        return ST_OK;
    /* jansson rejects invalid UTF-8 and, without JSON_ALLOW_NUL, NUL inside strings */
    st = jsonx_load_object(&doc, body, len, e);
    if (st != ST_OK)
        goto cleanup;

    switch (kind) {
    case CMD_OPEN:
        if ((st = jsonx_only(doc, open_fields, e)) != ST_OK ||
            (st = jsonx_str(doc, "owner", c->owner, sizeof c->owner, 1, OWNER_MAX, true, e)) != ST_OK ||
            (st = jsonx_str(doc, "name", c->name, sizeof c->name, 1, ACCOUNT_NAME_MAX, true, e)) != ST_OK ||
            (st = jsonx_str(doc, "currency", c->currency, sizeof c->currency, 3, 3, true, e)) != ST_OK ||
            (st = opt(jsonx_int(doc, "overdraft_limit", &c->overdraft_limit, 0, INT64_MAX, false, e))) != ST_OK)
            goto cleanup;
        if (!cmd_currency_known(c->currency)) {
            st = err_setr(e, ST_INVALID, "invalid_field",
                          "'currency' must be an ISO 4217 code in upper case, such as EUR");
            goto cleanup;
        }
        break;
    case CMD_DEPOSIT:
    case CMD_WITHDRAW:
        if ((st = jsonx_only(doc, money_fields, e)) != ST_OK ||
            (st = jsonx_int(doc, "amount", &c->amount, 1, INT64_MAX, true, e)) != ST_OK ||
            (st = opt(jsonx_str(doc, "description", c->description, sizeof c->description, 0,
                                DESCRIPTION_MAX, false, e))) != ST_OK)
            goto cleanup;
        break;
    case CMD_TRANSFER:
        if ((st = jsonx_only(doc, transfer_fields, e)) != ST_OK ||
            (st = jsonx_uuid(doc, "from", c->account_id, true, e)) != ST_OK ||
            (st = jsonx_uuid(doc, "to", c->to, true, e)) != ST_OK ||
            (st = jsonx_int(doc, "amount", &c->amount, 1, INT64_MAX, true, e)) != ST_OK ||
            (st = opt(jsonx_str(doc, "description", c->description, sizeof c->description, 0,
                                DESCRIPTION_MAX, false, e))) != ST_OK)
            goto cleanup;
        if (strcmp(c->account_id, c->to) == 0) {
            st = err_setr(e, ST_INVALID, "invalid_field", "'from' and 'to' must differ");
            goto cleanup;
        }
        break;
    case CMD_REVERSE:
        /* the event to reverse, or a transfer by its id (its leg on this account) */
        if ((st = jsonx_only(doc, reverse_fields, e)) != ST_OK ||
            (st = opt(jsonx_uuid(doc, "event_id", c->event_id, false, e))) != ST_OK ||
            (st = opt(jsonx_uuid(doc, "transfer_id", c->transfer_id, false, e))) != ST_OK ||
            (st = opt(jsonx_str(doc, "reason", c->reason, sizeof c->reason, 0, REASON_MAX, false, e))) != ST_OK)
            goto cleanup;
        if ((c->event_id[0] == '\0') == (c->transfer_id[0] == '\0')) {
            st = err_setr(e, ST_INVALID, "invalid_field", "give exactly one of 'event_id' and 'transfer_id'");
            goto cleanup;
        }
        break;
    case CMD_CLOSE:
        if ((st = jsonx_only(doc, close_fields, e)) != ST_OK ||
            (st = opt(jsonx_str(doc, "reason", c->reason, sizeof c->reason, 0, REASON_MAX, false, e))) != ST_OK)
            goto cleanup;
        break;
    default:
        st = err_set(e, ST_INTERNAL, "no body for this command");
        goto cleanup;
    }
cleanup:
    json_decref(doc);
    return st;
}

status cmd_parse_if_match(int64_t *version, const char *header, struct err *e)
{
    char buf[32];
    const char *p = header;
    size_t n;
    char *end = NULL;
    long long v;

    *version = -1;
    if (header == NULL)
        return ST_OK;
    n = strlen(p);
    /* accept an ETag-style "3" or W/"3" as well as a bare 3 */
    if (n >= 2 && p[0] == 'W' && p[1] == '/') {
        p += 2;
        n -= 2;
    }
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
        p++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof buf)
        return err_setr(e, ST_INVALID, "invalid_field", "If-Match must be an account version");
    memcpy(buf, p, n);
    buf[n] = '\0';
    if (buf[0] < '0' || buf[0] > '9')
        return err_setr(e, ST_INVALID, "invalid_field", "If-Match must be an account version");
    v = strtoll(buf, &end, 10);
    if (*end != '\0' || v < 0 || v > INT32_MAX)
        return err_setr(e, ST_INVALID, "invalid_field", "If-Match must be an account version");
    *version = v;
    return ST_OK;
}

status cmd_check_idempotency_key(const char *key, struct err *e)
{
    size_t n = strlen(key);

    if (n == 0 || n > IDEMPOTENCY_KEY_MAX)
        return err_setr(e, ST_INVALID, "invalid_field", "Idempotency-Key must be 1..%d bytes",
                        IDEMPOTENCY_KEY_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
            return err_setr(e, ST_INVALID, "invalid_field",
                            "Idempotency-Key must be printable ASCII without spaces");
    return ST_OK;
}

int cmd_http_status(status st)
{
    switch (st) {
    case ST_OK:
        return 200;
    case ST_INVALID:
        return 400;
    case ST_UNAUTHORIZED:
        return 401;
    case ST_NOT_FOUND:
        return 404;
    case ST_CONFLICT:
        return 409;
    case ST_TOO_LARGE:
        return 413;
    case ST_REJECTED:
        return 422;
    case ST_UNAVAILABLE:
        return 503;
    default:
        return 500;
    }
}
