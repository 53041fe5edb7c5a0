/* The fast envelope and account document codecs (common/evparse.c, common/jscan.c) against the
 * jansson ones of projections/: the same status, error and bytes on valid events of every type
 * and schema, on edge cases, and on thousands of mutated (hostile) inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evparse.h"
#include "jscan.h"
#include "jsonx.h"

#define MUTATIONS 40000

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* evparse_event and event_decode agree on json[0..len); returns 1 when the fast path took it. */
static int same_event(const char *json, size_t len)
{
    struct event a, b, c;
    struct err ea, eb;
    status sa, sb;
    int fast;

    memset(&ea, 0, sizeof ea);
    memset(&eb, 0, sizeof eb);
    sa = evparse_event(&a, json, len, &ea);
    sb = event_decode(&b, json, len, &eb);
    if (sa != sb || memcmp(&a, &b, sizeof a) != 0 || strcmp(ea.reason, eb.reason) != 0 ||
        strcmp(ea.msg, eb.msg) != 0)
        fail_msg("fast and jansson decoding differ (%d/%d '%s'/'%s') on: %.*s", sa, sb, ea.msg, eb.msg,
                 (int)len, json);
    fast = evparse_event_fast(&c, json, len);
    if (fast && (sb != ST_OK || memcmp(&c, &b, sizeof c) != 0))
        fail_msg("the fast path accepted what jansson gives %d for: %.*s", sb, (int)len, json);
    return fast;
}

static int same_account(const char *json, size_t len)
{
    struct account_view a, b;
    struct err ea, eb;
    status sa, sb;
    int fast;

    memset(&ea, 0, sizeof ea);
    memset(&eb, 0, sizeof eb);
    sa = evparse_account(&a, json, len, &ea);
    sb = account_view_from_json(&b, json, len, &eb);
    if (sa != sb || memcmp(&a, &b, sizeof a) != 0 || strcmp(ea.msg, eb.msg) != 0)
        fail_msg("fast and jansson documents differ (%d/%d) on: %.*s", sa, sb, (int)len, json);
    fast = evparse_account_fast(&a, json, len);
    if (fast && (sb != ST_OK || memcmp(&a, &b, sizeof a) != 0))
        fail_msg("the fast path accepted a document jansson gives %d for: %.*s", sb, (int)len, json);
    return fast;
}

/* The data object alone, as db_event_from_row reads it (json_loadb without flags). */
static int same_data(enum event_type type, int schema, const char *json, size_t len)
{
    struct event a, b;
    json_t *doc = json_loadb(json, len, 0, NULL);
    status sb = ST_INVALID;
    int fast;

    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.type = b.type = type;
    a.schema = b.schema = schema;
    if (doc != NULL)
        sb = event_data_from_json(&b, doc, NULL);
    json_decref(doc);
    fast = evparse_data_fast(&a, json, len);
    if (fast && (sb != ST_OK || memcmp(&a, &b, sizeof a) != 0))
        fail_msg("the fast data path accepted what jansson gives %d for: %.*s", sb, (int)len, json);
    return fast;
}

static void fill_event(struct event *ev, enum event_type t, int schema, int i)
{
    memset(ev, 0, sizeof *ev);
    snprintf(ev->event_id, sizeof ev->event_id, "%08x-0000-4000-8000-%012x", (unsigned)i, (unsigned)i * 7);
    snprintf(ev->stream_id, sizeof ev->stream_id, "%08x-1111-4111-8111-111111111111", (unsigned)i % 13);
    ev->stream_version = 1 + i % 1000;
    ev->position = 1 + (int64_t)i * 977;
    ev->type = t;
    ev->schema = schema;
    snprintf(ev->recorded_at, sizeof ev->recorded_at, "2026-11-21T20:%02d:00.%06dZ", i % 60, i);
    switch (t) {
    case EV_ACCOUNT_OPENED:
        snprintf(ev->owner, sizeof ev->owner, "owner-%d", i);
        snprintf(ev->name, sizeof ev->name, i % 3 ? "Konto %d" : "caf\xc3\xa9 \xe2\x82\xac %d", i);
        snprintf(ev->currency, sizeof ev->currency, "EUR");
        ev->overdraft_limit = i % 5 ? 0 : 100000;
        break;
    case EV_MONEY_DEPOSITED:
    case EV_MONEY_WITHDRAWN:
        ev->amount = 1 + i * 13;
        snprintf(ev->description, sizeof ev->description, i % 4 ? "deposit %d" : "", i);
        break;
    case EV_TRANSFER_SENT:
    case EV_TRANSFER_RECEIVED:
        ev->amount = 1 + i;
        snprintf(ev->transfer_id, sizeof ev->transfer_id, "%08x-2222-4222-8222-22222222222A", (unsigned)i);
        snprintf(ev->counterparty, sizeof ev->counterparty, "%08x-3333-4333-8333-333333333333", (unsigned)i);
        snprintf(ev->description, sizeof ev->description, "transfer \"%d\"", i); /* an escape */
        if (i % 2)
            snprintf(ev->description, sizeof ev->description, "transfer %d / \xf0\x9f\x92\xb6", i);
        break;
    case EV_TRANSACTION_REVERSED:
        ev->amount = i % 2 ? -(int64_t)i : i;
        snprintf(ev->reversed_event_id, sizeof ev->reversed_event_id, "%08x-0000-4000-8000-000000000001", (unsigned)i);
        snprintf(ev->reason, sizeof ev->reason, "reversed %d", i);
        break;
    case EV_ACCOUNT_CLOSED:
        snprintf(ev->reason, sizeof ev->reason, i % 2 ? "closed" : "");
        break;
    default:
        break;
    }
    if (i % 3 != 0) {
        snprintf(ev->command_id, sizeof ev->command_id, "%08x-4444-4444-8444-444444444444", (unsigned)i);
        snprintf(ev->correlation_id, sizeof ev->correlation_id, "%08x-5555-4555-8555-555555555555", (unsigned)i);
    }
    if (i % 4 == 1)
        snprintf(ev->idempotency_key, sizeof ev->idempotency_key, "key-%d", i);
    if (i % 5 == 2)
        snprintf(ev->principal, sizeof ev->principal, "user-%d", i);
}

/* Valid envelopes of every type and schema: n of them into v (caller frees each). */
static int valid_envelopes(char **v, int max)
{
    int n = 0;

    for (int i = 0; n < max; i++) {
        enum event_type t = (enum event_type)(1 + i % (EV__COUNT - 1));
        int schema = t == EV_MONEY_DEPOSITED ? 1 + (i / 7) % 2 : 1;
        struct event ev;
        fill_event(&ev, t, schema, i);
        v[n] = event_encode(&ev);
        assert_non_null(v[n]);
        n++;
    }
    return n;
}

static void test_valid_events_take_the_fast_path(void **state)
{
    char *v[70];
    int n = valid_envelopes(v, 70), fast = 0, escaped = 0;

    (void)state;
    for (int i = 0; i < n; i++) {
        int f = same_event(v[i], strlen(v[i]));
        fast += f;
        if (!f) {
            escaped++;
            assert_non_null(strstr(v[i], "\\\"")); /* only the description with a quote escapes */
        }
        free(v[i]);
    }
    assert_true(escaped > 0);
    assert_int_equal(fast + escaped, n);
}

static void test_edge_cases_agree(void **state)
{
#define E(type, schema, data) \
    "{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\"," \
    "\"stream_version\":1,\"position\":5,\"type\":\"" type "\",\"schema\":" schema                                 \
    ",\"recorded_at\":\"2026-11-21T20:00:00Z\",\"data\":" data ",\"metadata\":{}}"
    static const char *const cases[] = {
        E("MoneyDeposited", "1", "{\"amount\":5}"),
        E("MoneyDeposited", "2", "{\"amount_minor\":5}"),
        E("MoneyDeposited", "2", "{\"amount_minor\":5,\"amount\":7}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"amount_minor\":5}"),
        E("MoneyDeposited", "1", "{\"amount_minor\":5}"),
        E("MoneyDeposited", "3", "{\"amount_minor\":5}"),
        E("MoneyDeposited", "0", "{\"amount\":5}"),
        E("MoneyDeposited", "1", "{\"amount\":0}"),
        E("MoneyDeposited", "1", "{\"amount\":-0}"),
        E("MoneyDeposited", "1", "{\"amount\":05}"),
        E("MoneyDeposited", "1", "{\"amount\":5.0}"),
        E("MoneyDeposited", "1", "{\"amount\":5e2}"),
        E("MoneyDeposited", "1", "{\"amount\":5E2}"),
        E("MoneyDeposited", "1", "{\"amount\":-5}"),
        E("MoneyDeposited", "1", "{\"amount\":+5}"),
        E("MoneyDeposited", "1", "{\"amount\":9223372036854775807}"),
        E("MoneyDeposited", "1", "{\"amount\":9223372036854775808}"),
        E("MoneyDeposited", "1", "{\"amount\":999999999999999999}"),
        E("MoneyDeposited", "1", "{\"amount\":\"5\"}"),
        E("MoneyDeposited", "1", "{\"amount\":true}"),
        E("MoneyDeposited", "1", "{\"amount\":null}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":null}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":1}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":\"a\\u0000b\"}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":\"tab\there\"}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":\"\xc3\xa9\"}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":\"\xc3\"}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":\"\xc0\xaf\"}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":\"\xed\xa0\x80\"}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":\"\xf4\x90\x80\x80\"}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"description\":\"\xe0\x80\xaf\"}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"extra\":[1,2,{\"x\":[]}]}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"extra\":{\"deep\":{\"deeper\":1}}}"),
        E("MoneyDeposited", "1", "{\"amount\":5,\"amount\":6}"),
        E("MoneyDeposited", "1", "{\"amount\" : 5 , \"description\" :\"x\" }"),
        E("MoneyDeposited", "1", "{ }"),
        E("MoneyDeposited", "1", "[]"),
        E("MoneyDeposited", "1", "null"),
        E("MoneyWithdrawn", "1", "{\"amount\":5,\"description\":\"" /* 257 bytes */
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
          "xxxxxxxxxxxxxxxxxxxxx\"}"),
        E("AccountOpened", "1", "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EURO\",\"overdraft_limit\":0}"),
        E("AccountOpened", "1", "{\"owner\":\"\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":0}"),
        E("AccountOpened", "1", "{\"owner\":\"o\",\"name\":\"n\",\"currency\":\"EUR\",\"overdraft_limit\":-1}"),
        E("TransferSent", "1", "{\"transfer_id\":\"AAAAAAAA-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"to\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaab\",\"amount\":3}"),
        E("TransferSent", "1", "{\"transfer_id\":\"not-a-uuid\",\"to\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaab\",\"amount\":3}"),
        E("TransferReceived", "1", "{\"transfer_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"to\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaab\",\"amount\":3}"),
        E("TransactionReversed", "1", "{\"reversed_event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"amount\":-9223372036854775807}"),
        E("TransactionReversed", "1", "{\"reversed_event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"amount\":-922337203685477580}"),
        E("AccountClosed", "1", "{}"),
        E("AccountClosed", "1", "{\"reason\":false}"),
        E("Unknown", "1", "{}"),
        E("unknown", "1", "{}"),
        "{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":1,\"position\":5,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"x\",\"data\":{}}",
        "{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":1,\"position\":5,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"x\",\"data\":{},\"metadata\":null}",
        "{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":1,\"position\":5,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"x\",\"data\":{},\"metadata\":[]}",
        "{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":1,\"position\":5,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"x\",\"data\":{},"
        "\"metadata\":{\"command_id\":\"bad\"}}",
        "{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":2147483648,\"position\":5,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"x\",\"data\":{}}",
        "{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":1,\"position\":5,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"\",\"data\":{}}",
        "{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":1,\"position\":5,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"x\",\"data\":{}} x",
        "{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":1,\"position\":5,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"x\",\"data\":{}}{}",
        " \t\r\n{\"event_id\":\"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"stream_id\":\"11111111-1111-4111-8111-111111111111\","
        "\"stream_version\":1,\"position\":5,\"type\":\"AccountClosed\",\"schema\":1,\"recorded_at\":\"x\",\"data\":{}} \n",
        "\xef\xbb\xbf{}",
        "{}",
        "{",
        "",
        "   ",
        "[]",
        "\"x\"",
        "nul",
        "{\"a\":{\"b\":{\"c\":{\"d\":1}}}}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\" 1}",
        "{\"a\":tru}",
        "{\"a\":truex}",
        "{\"a\":1-}",
        "{\"a\":-}",
        "{'a':1}",
    };
#undef E
    char big[8192];
    size_t at = 0;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        (void)same_event(cases[i], strlen(cases[i]));
    /* more members than the scanner holds: jansson decides */
    at += (size_t)snprintf(big + at, sizeof big - at, "{");
    for (int i = 0; i < JSCAN_MAX + 5; i++)
        at += (size_t)snprintf(big + at, sizeof big - at, "\"k%d\":%d,", i, i);
    snprintf(big + at, sizeof big - at, "\"data\":{}}");
    (void)same_event(big, strlen(big));
    /* a NUL byte inside the length */
    {
        static const char nul[] = "{\"a\":\"x\0y\"}";
        (void)same_event(nul, sizeof nul - 1);
    }
    assert_false(jscan_parse(&(struct jscan){0}, NULL, 0));
}

static const char *const mutation_bytes = "{}[],:\"\\-+.eE019 \t\nnultrfaA";
static const unsigned char high_bytes[] = {0x00, 0x1f, 0x7f, 0x80, 0xbf, 0xc0, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xf5, 0xff};

static size_t mutate(char *buf, size_t len, size_t cap)
{
    int ops = 1 + (int)(rnd() % 3);

    for (int k = 0; k < ops; k++) {
        size_t at = len > 0 ? rnd() % len : 0;
        unsigned r = rnd() % 10;
        char c = rnd() % 4 == 0 ? (char)high_bytes[rnd() % sizeof high_bytes]
                                : mutation_bytes[rnd() % strlen(mutation_bytes)];
        if (r < 4 && len > 0) {
            buf[at] = c; /* replace */
        } else if (r < 6 && len + 1 < cap) {
            memmove(buf + at + 1, buf + at, len - at); /* insert */
            buf[at] = c;
            len++;
        } else if (r < 8 && len > 0) {
            memmove(buf + at, buf + at + 1, len - at - 1); /* delete */
            len--;
        } else if (r < 9 && len > 0) {
            len = at; /* truncate */
        } else if (len > 0) {
            size_t n = 1 + rnd() % 12; /* duplicate a span */
            if (at + n > len)
                n = len - at;
            if (len + n < cap) {
                memmove(buf + at + n, buf + at, len - at);
                len += n;
            }
        }
    }
    return len;
}

static void test_mutated_envelopes_agree(void **state)
{
    char *v[28];
    int n = valid_envelopes(v, 28), fast = 0;
    char buf[2048];

    (void)state;
    for (int i = 0; i < MUTATIONS; i++) {
        const char *src = v[rnd() % (unsigned)n];
        size_t len = strlen(src);
        memcpy(buf, src, len);
        len = mutate(buf, len, sizeof buf);
        fast += same_event(buf, len);
    }
    /* many mutations leave a valid event (in a field value or whitespace): the fast path took some */
    assert_true(fast > MUTATIONS / 50);
    for (int i = 0; i < n; i++)
        free(v[i]);
}

static void test_data_and_metadata_alone_agree(void **state)
{
    char *v[28];
    int n = valid_envelopes(v, 28), fast = 0;
    char buf[2048];

    (void)state;
    for (int i = 0; i < MUTATIONS / 4; i++) {
        int k = (int)(rnd() % (unsigned)n);
        struct event ev;
        json_t *env = json_loads(v[k], 0, NULL);
        char *data = jsonx_dump(json_object_get(env, "data"));
        size_t len = strlen(data);
        assert_int_equal(evparse_event_fast(&ev, v[k], strlen(v[k])) || strstr(v[k], "\\\"") != NULL, 1);
        memcpy(buf, data, len);
        if (i % 4 != 0)
            len = mutate(buf, len, sizeof buf);
        ev.type = event_type_parse(json_string_value(json_object_get(env, "type")));
        ev.schema = (int)json_integer_value(json_object_get(env, "schema"));
        fast += same_data(ev.type, ev.schema, buf, len);
        free(data);
        json_decref(env);
    }
    assert_true(fast > MUTATIONS / 32);
    {
        struct event a;
        memset(&a, 0, sizeof a);
        static const char md[] = "{\"command_id\":\"AAAAAAAA-aaaa-4aaa-8aaa-aaaaaaaaaaaa\",\"principal\":\"p\"}";
        assert_true(evparse_metadata_fast(&a, md, sizeof md - 1));
        assert_string_equal(a.command_id, "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa");
        assert_string_equal(a.principal, "p");
        assert_false(evparse_metadata_fast(&a, "{\"command_id\":1}", 16));
    }
    for (int i = 0; i < n; i++)
        free(v[i]);
}

static void fill_account(struct account_view *acc, int i)
{
    account_view_init(acc, "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa");
    snprintf(acc->owner, sizeof acc->owner, i % 5 == 0 ? "o\"%d" : i % 7 == 0 ? "caf\xc3\xa9 %d" : "owner %d", i);
    snprintf(acc->name, sizeof acc->name, i % 11 == 0 ? "tab\t%d" : "name/%d", i);
    snprintf(acc->currency, sizeof acc->currency, "EUR");
    acc->balance = i % 2 ? -(int64_t)i * 1000003 : (int64_t)i * 1000003;
    if (i == 3)
        acc->balance = INT64_MIN;
    if (i == 4)
        acc->balance = INT64_MAX;
    acc->overdraft_limit = i % 3 ? 0 : 500;
    acc->status = (enum account_status)(i % 3);
    acc->version = i;
    snprintf(acc->updated_at, sizeof acc->updated_at, "2026-11-21T20:00:%02d.123456Z", i % 60);
}

static void test_account_documents_agree(void **state)
{
    char buf[2048];
    int fast = 0;

    (void)state;
    for (int i = 0; i < 200; i++) {
        struct account_view acc;
        char *a, *b;
        fill_account(&acc, i);
        a = evparse_account_json(&acc);
        b = account_view_to_json(&acc);
        assert_non_null(a);
        assert_non_null(b);
        assert_string_equal(a, b); /* the same bytes */
        fast += same_account(b, strlen(b));
        free(a);
        free(b);
    }
    assert_true(fast > 100);
    for (int i = 0; i < MUTATIONS / 4; i++) {
        struct account_view acc;
        char *doc;
        size_t len;
        fill_account(&acc, (int)(rnd() % 200));
        doc = account_view_to_json(&acc);
        len = strlen(doc);
        memcpy(buf, doc, len);
        len = mutate(buf, len, sizeof buf);
        (void)same_account(buf, len);
        free(doc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_events_take_the_fast_path),
        cmocka_unit_test(test_edge_cases_agree),
        cmocka_unit_test(test_mutated_envelopes_agree),
        cmocka_unit_test(test_data_and_metadata_alone_agree),
        cmocka_unit_test(test_account_documents_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
