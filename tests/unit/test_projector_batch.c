/* Unit tests of the projector's pure parts and the read-model layout helpers (no server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "readmodel.h"

#define ID_A "11111111-1111-4111-8111-111111111111"
#define ID_B "22222222-2222-4222-8222-222222222222"
#define EV_1 "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"

static void envelope(char *buf, size_t len, const char *stream, int version, const char *type,
                     const char *data)
{
    snprintf(buf, len,
             "{\"event_id\":\"%08x-0000-4000-8000-%012x\",\"stream_id\":\"%s\",\"stream_version\":%d,"
             "\"position\":%d,\"type\":\"%s\",\"schema\":1,\"recorded_at\":\"2026-11-21T20:00:00Z\","
             "\"data\":%s,\"metadata\":{}}",
             (unsigned)version, (unsigned)version, stream, version, version * 10, type, data);
}

static void test_decode_and_sort_groups_by_account(void **state)
{
    static const struct {
        const char *stream;
        int version;
    } in[] = {{ID_B, 2}, {ID_A, 3}, {ID_A, 1}, {ID_B, 1}, {ID_A, 2}, {ID_A, 1}};
    enum { N = sizeof in / sizeof in[0] };
    char payloads[N + 1][512];
    struct pj_item items[N + 1];
    struct pj_item *v[N + 1];

    (void)state;
    for (int i = 0; i < N; i++) {
        envelope(payloads[i], sizeof payloads[i], in[i].stream, in[i].version, "MoneyDeposited",
                 "{\"amount\":5}");
        pj_item_decode(&items[i], payloads[i], strlen(payloads[i]), (uint64_t)i + 1);
        assert_int_equal(items[i].ok, 1);
        v[i] = &items[i];
    }
    snprintf(payloads[N], sizeof payloads[N], "not json");
    pj_item_decode(&items[N], payloads[N], strlen(payloads[N]), 99);
    assert_int_equal(items[N].ok, 0);
    assert_string_equal(items[N].why.reason, "poison");
    v[N] = &items[N];

    pj_sort(v, N + 1);
    /* no account first, then A 1,1,2,3 then B 1,2 */
    assert_ptr_equal(v[0], &items[N]);
    assert_string_equal(v[1]->ev.stream_id, ID_A);
    assert_int_equal(v[1]->ev.stream_version, 1);
    assert_int_equal(v[2]->ev.stream_version, 1);
    assert_true(v[1] < v[2]); /* equal keys keep their delivery order */
    assert_int_equal(v[3]->ev.stream_version, 2);
    assert_int_equal(v[4]->ev.stream_version, 3);
    assert_string_equal(v[5]->ev.stream_id, ID_B);
    assert_int_equal(v[5]->ev.stream_version, 1);
    assert_int_equal(v[6]->ev.stream_version, 2);
    for (int i = 0; i <= N; i++)
        pj_item_release(&items[i]);
}

static void test_sort_puts_decodable_copy_first(void **state)
{
    char good[512], bad[512];
    struct pj_item a, b;
    struct pj_item *v[2] = {&a, &b};

    (void)state;
    envelope(good, sizeof good, ID_A, 4, "MoneyDeposited", "{\"amount\":5}");
    envelope(bad, sizeof bad, ID_A, 4, "MoneyDeposited", "{\"amount\":-5}");
    pj_item_decode(&a, bad, strlen(bad), 1);
    pj_item_decode(&b, good, strlen(good), 2);
    assert_int_equal(a.ok, 0);
    assert_int_equal(b.ok, 1);
    pj_sort(v, 2);
    assert_ptr_equal(v[0], &b);
}

static void test_peek_reads_what_it_can(void **state)
{
    static const struct {
        const char *payload;
        const char *event_id, *stream_id;
        int64_t version, position;
    } cases[] = {
        {"{\"event_id\":\"" EV_1 "\",\"stream_id\":\"" ID_A "\",\"stream_version\":7,\"position\":70,\"type\":\"X\"}",
         EV_1, ID_A, 7, 70},
        {"{\"event_id\":\"nope\",\"stream_id\":\"" ID_A "\",\"stream_version\":\"7\"}", "", ID_A, 0, 0},
        {"{\"event_id\":\"" EV_1 "\",\"stream_id\":42,\"stream_version\":-1,\"position\":3}", EV_1, "", 0, 3},
        {"[1,2,3]", "", "", 0, 0},
        {"garbage", "", "", 0, 0},
        {"", "", "", 0, 0},
    };
    struct event ev;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pj_peek(&ev, cases[i].payload, strlen(cases[i].payload));
        assert_string_equal(ev.event_id, cases[i].event_id);
        assert_string_equal(ev.stream_id, cases[i].stream_id);
        assert_int_equal(ev.stream_version, cases[i].version);
        assert_int_equal(ev.position, cases[i].position);
    }
}

static void test_park_record_fields(void **state)
{
    struct event ev;
    char *rec;
    json_t *doc;

    (void)state;
    memset(&ev, 0, sizeof ev);
    strcpy(ev.event_id, EV_1);
    strcpy(ev.stream_id, ID_A);
    ev.stream_version = 3;
    ev.position = 30;
    rec = pj_park_record(&ev, "unknown event type 'X'", "2026-11-21T20:00:00.000Z", "{\"x\":1}", 7, 12);
    assert_non_null(rec);
    doc = json_loads(rec, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "event_id")), EV_1);
    assert_string_equal(json_string_value(json_object_get(doc, "account_id")), ID_A);
    assert_int_equal(json_integer_value(json_object_get(doc, "stream_version")), 3);
    assert_int_equal(json_integer_value(json_object_get(doc, "position")), 30);
    assert_string_equal(json_string_value(json_object_get(doc, "reason")), "unknown event type 'X'");
    assert_string_equal(json_string_value(json_object_get(doc, "payload")), "{\"x\":1}");
    assert_int_equal(json_integer_value(json_object_get(doc, "jetstream_seq")), 12);
    json_decref(doc);
    free(rec);

    /* no account, no sequence, bytes that are not UTF-8 */
    ev.stream_id[0] = '\0';
    rec = pj_park_record(&ev, "r", "t", "\xff\xfe", 2, 0);
    doc = json_loads(rec, 0, NULL);
    assert_true(json_is_null(json_object_get(doc, "account_id")));
    assert_null(json_object_get(doc, "jetstream_seq"));
    assert_true(json_is_string(json_object_get(doc, "payload")));
    json_decref(doc);
    free(rec);

    rec = pj_stall_record(EV_1, "why", "since");
    assert_string_equal(rec, "{\"event_id\":\"" EV_1 "\",\"reason\":\"why\",\"since\":\"since\"}");
    free(rec);
}

/* A worker's partitions share PROJECTOR_WORKER_EVENTS: one worker owning all 16 partitions
 * with PROJECTOR_BATCH=2000 fetches 1024 per partition, two of 8 each the whole 2000. */
static void test_partition_batch_shares_the_worker_bound(void **state)
{
    (void)state;
    assert_int_equal(pj_partition_batch(2000, 16384, 16), 1024);
    assert_int_equal(pj_partition_batch(2000, 16384, 8), 2000);
    assert_int_equal(pj_partition_batch(512, 16384, 16), 512); /* the default batch is below it */
    assert_int_equal(pj_partition_batch(2000, 16384, 0), 2000); /* no share known: one */
    assert_int_equal(pj_partition_batch(2000, 10, 1024), 1);    /* never an empty batch */
}

static void test_backoff_doubles_to_a_cap(void **state)
{
    static const int want[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000};

    (void)state;
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++)
        assert_int_equal(pj_backoff_ms(i, 5000), want[i]);
    assert_int_equal(pj_backoff_ms(1000, 5000), 5000);
}

static void test_readmodel_keys(void **state)
{
    char buf[RM_KEY_SIZE];

    (void)state;
    rm_key_account(buf, sizeof buf, 3, ID_A);
    assert_string_equal(buf, "rm:3:a:{" ID_A "}");
    rm_key_statement(buf, sizeof buf, 3, ID_A);
    assert_string_equal(buf, "rm:3:s:{" ID_A "}");
    rm_key_checkpoint(buf, sizeof buf, 12);
    assert_string_equal(buf, "rm:12:checkpoint");
    rm_key_tail(buf, sizeof buf, 1);
    assert_string_equal(buf, "rm:1:tail");
    rm_key_account(buf, 8, 3, ID_A); /* truncated, still terminated */
    assert_int_equal(strlen(buf), 7);
}

static void test_apply_argv(void **state)
{
    char *entries[] = {"{\"version\":3}", "{\"version\":4}"};
    struct rm_apply a[2] = {{ID_A, 2, 4, "{\"doc\":1}", 40, 2, entries},
                            {ID_A, 0, 1, "{\"doc\":2}", 41, 1, entries}};
    struct rm_apply_acct_buf ab[2];
    struct rm_apply_buf buf = {.acct = ab};
    struct rm_fence f = {.part = 7, .epoch = 12, .expect_seq = 100, .new_seq = 130};
    struct rm_apply_opts o = {"7:0", 1, "rm:stalled"};
    const char *argv[RM_APPLY_FIXED_ARGS + 7 * 2 + 3];
    size_t lens[RM_APPLY_FIXED_ARGS + 7 * 2 + 3];
    static const char *const want[] = {"EVALSHA", "sha", "6", "rm:5:checkpoint", "rm:part:7",
                                       "rm:5:a:{" ID_A "}", "rm:5:s:{" ID_A "}", "rm:5:a:{" ID_A "}",
                                       "rm:5:s:{" ID_A "}", "12", "100", "130", "1700000000000",
                                       "7:0", "1", "rm:stalled", "2", "4", "{\"doc\":1}", "40", "2", "{\"version\":3}",
                                       "{\"version\":4}", "0", "1", "{\"doc\":2}", "41", "1",
                                       "{\"version\":3}"};
    int n = (int)(sizeof want / sizeof want[0]);

    (void)state;
    assert_int_equal(rm_apply_argc(a, 2), n);
    assert_int_equal(rm_apply_argv(a, 2, &f, &o, 5, 1700000000000, "sha", &buf, argv, lens), n);
    for (int i = 0; i < n; i++) {
        assert_string_equal(argv[i], want[i]);
        assert_int_equal(lens[i], strlen(want[i]));
    }
    /* unfenced: epoch 0 and a placeholder partition key */
    assert_int_equal(rm_apply_argv(a, 1, NULL, NULL, 5, 1, "sha", &buf, argv, lens), RM_APPLY_FIXED_ARGS + 9);
    assert_string_equal(argv[4], "rm:part:none");
    assert_string_equal(argv[7], "0");
    /* no options: no generation check, no notification, no stall check */
    assert_string_equal(argv[11], "");
    assert_string_equal(argv[12], "0");
    assert_string_equal(argv[13], "");
    a[0].new_version = 5; /* entries do not lead from 2 to 5 */
    assert_int_equal(rm_apply_argv(a, 2, &f, NULL, 5, 1, "sha", &buf, argv, lens), -1);
    a[0].new_version = 2;
    a[0].nentries = 0;
    assert_int_equal(rm_apply_argv(a, 2, &f, NULL, 5, 1, "sha", &buf, argv, lens), -1);
    assert_non_null(strstr(rm_apply_script(), "HSET"));
}

static void test_apply_reply(void **state)
{
    redisReply i1 = {.type = REDIS_REPLY_INTEGER, .integer = 1};
    redisReply m1 = {.type = REDIS_REPLY_INTEGER, .integer = -1};
    redisReply m2 = {.type = REDIS_REPLY_INTEGER, .integer = -2};
    redisReply ep = {.type = REDIS_REPLY_INTEGER, .integer = 12};
    redisReply seq = {.type = REDIS_REPLY_INTEGER, .integer = 130};
    redisReply nine = {.type = REDIS_REPLY_INTEGER, .integer = 9};
    redisReply broken = {.type = REDIS_REPLY_STRING, .str = "RMBROKEN x", .len = 10};
    redisReply *ok_el[] = {&i1, &ep, &seq, &m1, &nine, &broken};
    redisReply *fenced_el[] = {&m1, &ep, &seq};
    redisReply *back_el[] = {&m2, &ep, &seq};
    redisReply ok = {.type = REDIS_REPLY_ARRAY, .elements = 6, .element = ok_el};
    redisReply fenced = {.type = REDIS_REPLY_ARRAY, .elements = 3, .element = fenced_el};
    redisReply back = {.type = REDIS_REPLY_ARRAY, .elements = 3, .element = back_el};
    redisReply noscript = {.type = REDIS_REPLY_ERROR, .str = "NOSCRIPT No matching script", .len = 27};
    struct rm_fence f = {0};
    int64_t held[3] = {0};

    (void)state;
    assert_int_equal(rm_apply_reply(&ok, &f, 3, 0, held), RM_APPLIED);
    assert_int_equal(held[0], -1);
    assert_int_equal(held[1], 9);
    assert_int_equal(held[2], -2);
    assert_int_equal(f.held_seq, 130);
    assert_int_equal(rm_apply_reply(&ok, &f, 2, 0, held), RM_FAILED); /* count mismatch */
    assert_int_equal(rm_apply_reply(&ok, &f, 2, 1, held), RM_APPLIED); /* 2 accounts, the publish answer */
    assert_int_equal(held[1], 9);
    assert_int_equal(rm_apply_reply(&ok, &f, 3, 1, held), RM_FAILED);
    assert_int_equal(rm_apply_reply(&fenced, &f, 3, 0, held), RM_FENCED);
    assert_int_equal(f.held_epoch, 12);
    assert_int_equal(rm_apply_reply(&back, NULL, 3, 0, held), RM_REWOUND);
    assert_int_equal(rm_apply_reply(&noscript, &f, 3, 0, held), RM_FAILED);
    assert_int_equal(rm_apply_reply(NULL, &f, 3, 0, held), RM_FAILED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_and_sort_groups_by_account),
        cmocka_unit_test(test_sort_puts_decodable_copy_first),
        cmocka_unit_test(test_peek_reads_what_it_can),
        cmocka_unit_test(test_park_record_fields),
        cmocka_unit_test(test_backoff_doubles_to_a_cap),
        cmocka_unit_test(test_partition_batch_shares_the_worker_bound),
        cmocka_unit_test(test_readmodel_keys),
        cmocka_unit_test(test_apply_argv),
        cmocka_unit_test(test_apply_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
