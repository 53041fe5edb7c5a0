/* The bad-input suite's tables (see tbad.h). */
#include "tbad.h"

#include <stdio.h>
#include <string.h>

const struct tbad_body tbad_bodies[] = {
    /* malformed */
    {TB_DEPOSIT, "", 400, "invalid_json"},
    {TB_DEPOSIT, "   ", 400, "invalid_json"},
    {TB_DEPOSIT, "{", 400, "invalid_json"},
    {TB_DEPOSIT, "}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5,}", 400, "invalid_json"},
    {TB_DEPOSIT, "{'amount':5}", 400, "invalid_json"},
    {TB_DEPOSIT, "{amount:5}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5}{\"amount\":5}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5} trailing", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":05}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":0x10}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":+5}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":NaN}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":Infinity}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":\"unterminated}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":\"bad \\x escape\"}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":\"lone \\ud800 surrogate\"}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":\"nul \\u0000 inside\"}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":\"raw\ttab\"}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":\"\xc3\x28\"}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":\"\xed\xa0\x80\"}", 400, "invalid_json"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":\"\xc0\xaf overlong\"}", 400, "invalid_json"},
    {TB_DEPOSIT, "\xef\xbb\xbf{\"amount\":5}", 400, "invalid_json"},
    {TB_OPEN, "{\"owner\":\"\xff\",\"name\":\"n\",\"currency\":\"EUR\"}", 400, "invalid_json"},
    /* not an object */
    {TB_DEPOSIT, "[]", 400, "invalid_json"},
    {TB_DEPOSIT, "[{\"amount\":5}]", 400, "invalid_json"},
    {TB_DEPOSIT, "5", 400, "invalid_json"},
    {TB_DEPOSIT, "\"amount\"", 400, "invalid_json"},
    {TB_DEPOSIT, "null", 400, "invalid_json"},
    {TB_DEPOSIT, "true", 400, "invalid_json"},
    /* wrong types, field by field */
    {TB_DEPOSIT, "{\"amount\":\"5\"}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":true}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":null}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":[5]}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":{\"v\":5}}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":5}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":[\"x\"]}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":5,\"name\":\"n\",\"currency\":\"EUR\"}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":null,\"currency\":\"EUR\"}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":978}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"eur\"}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EURO\"}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"E\xc3\x9cR\"}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":\"10\"}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":-1}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":1.0}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"extra\":1}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"currency\":\"EUR\"}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":5,\"to\":\"%2$s\",\"amount\":5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":[\"%2$s\"],\"amount\":5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%1$s\",\"amount\":5}", 400, "invalid_field"},
    {TB_REVERSE, "{\"event_id\":5}", 400, "invalid_field"},
    {TB_REVERSE, "{\"event_id\":\"%3$s\",\"reason\":false}", 400, "invalid_field"},
    {TB_CLOSE, "{\"reason\":{}}", 400, "invalid_field"},
    /* floats for amounts */
    {TB_DEPOSIT, "{\"amount\":1.5}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":5.0}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":1e3}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":1E2}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":-0.0}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":0.1e1}", 400, "invalid_field"},
    {TB_WITHDRAW, "{\"amount\":0.5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%2$s\",\"amount\":2.5}", 400, "invalid_field"},
    /* int64 overflow */
    {TB_DEPOSIT, "{\"amount\":9223372036854775808}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":18446744073709551616}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":-9223372036854775809}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":1e19}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":99999999999999999999999999999999999999999999999999}", 400, "invalid_field"},
    {TB_OPEN, "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":9223372036854775808}", 400, "invalid_field"},
    /* the largest amount parses; the balance it would make is refused, not wrapped */
    {TB_WITHDRAW, "{\"amount\":9223372036854775807}", 422, "insufficient_funds"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%2$s\",\"amount\":9223372036854775807}", 422, "insufficient_funds"},
    /* zero and negative */
    {TB_DEPOSIT, "{\"amount\":0}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":-1}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":-9223372036854775808}", 400, "invalid_field"},
    {TB_WITHDRAW, "{\"amount\":0}", 400, "invalid_field"},
    {TB_WITHDRAW, "{\"amount\":-5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%2$s\",\"amount\":0}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"%2$s\",\"amount\":-5}", 400, "invalid_field"},
    /* invalid UUIDs in the body */
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"not-a-uuid\",\"amount\":5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"6b3f0c1e-2a4d-4b8e-9c1f-0123456789abc\",\"amount\":5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"6b3f0c1e2a4d4b8e9c1f0123456789ab\",\"amount\":5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"{6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab}\",\"amount\":5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"6b3f0c1e-2a4d-4b8e-9c1f-0123456789ag\",\"amount\":5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"%1$s\",\"to\":\"\",\"amount\":5}", 400, "invalid_field"},
    {TB_TRANSFER, "{\"from\":\"'; DROP TABLE events; --\",\"to\":\"%2$s\",\"amount\":5}", 400, "invalid_field"},
    {TB_REVERSE, "{\"event_id\":\"6b3f0c1e-2a4d-4b8e-9c1f-01234567\"}", 400, "invalid_field"},
    {TB_REVERSE, "{\"event_id\":\"6b3f0c1e-2a4d-4b8e-9c1f-0123456789ab' OR '1'='1\"}", 400, "invalid_field"},
    /* limits on strings */
    {TB_CLOSE, "{\"reason\":\"%4$s\"}", 400, "invalid_field"},
    {TB_DEPOSIT, "{\"amount\":5,\"description\":\"%4$s\"}", 400, "invalid_field"},
};
const size_t tbad_nbodies = sizeof tbad_bodies / sizeof tbad_bodies[0];

const char *const tbad_query_params[] = {
    "limit=abc", "limit=0", "limit=-1", "limit=1.5", "limit=1e2", "limit=99999999999999999999",
    "limit=", "limit=%00", "before=x", "before=-1", "before=9223372036854775808",
    "min_version=-1", "min_version=1.0", "min_version=18446744073709551616", "wait_ms=-5",
    "wait_ms=1e3", "wait_ms=10001", "min_version=1&wait_ms=abc", "limit=%ff",
    "limit=5'%20OR%201=1--",
};
const size_t tbad_nquery_params = sizeof tbad_query_params / sizeof tbad_query_params[0];

const char *tbad_path(enum tbad_target t, const char *account, char *buf, size_t len)
{
    static const char *const tails[] = {"", "deposits", "withdrawals", "", "reversals", "close"};
    if (t == TB_OPEN)
        return "/accounts";
    if (t == TB_TRANSFER)
        return "/transfers";
    snprintf(buf, len, "/accounts/%s/%s", account, tails[t]);
    return buf;
}

void tbad_format(char *out, size_t cap, const struct tbad_body *b, const char *acct1, const char *acct2,
                 const char *event_id)
{
    char longstr[8001];

    memset(longstr, 'x', sizeof longstr - 1);
    longstr[sizeof longstr - 1] = '\0';
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(out, cap, b->body, acct1, acct2, event_id, longstr);
#pragma GCC diagnostic pop
}
