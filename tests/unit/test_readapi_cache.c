/* Unit tests of the read API's document cache: when an entry may be served, and that a fill
 * racing a notification can never leave an older document behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

#define A "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
#define B "11111111-2222-3333-4444-555555555555"

static struct rcache *make(int ttl_ms)
{
    struct rcache *c = NULL;
    struct err e = {0};
    assert_int_equal(rc_create(&c, 1024, ttl_ms, &e), ST_OK);
    rc_set_gen(c, 7);
    return c;
}

/* A hit returns a copy of what was stored; returns the version or -1 on a miss. */
static int64_t get(struct rcache *c, const char *id, int64_t min_version, int64_t now,
                   const char *want_doc)
{
    char *body = NULL;
    int64_t v = -1;
    long gen = 0;
    if (!rc_get(c, id, min_version, now, &body, &v, &gen))
        return -1;
    assert_int_equal(gen, 7);
    if (want_doc != NULL)
        assert_string_equal(body, want_doc);
    free(body);
    return v;
}

static int fill(struct rcache *c, const char *id, long gen, int64_t v, const char *doc, int64_t now)
{
    struct rc_ticket t = rc_fill_begin(c, id);
    return rc_fill_commit(c, id, t, gen, v, doc, now);
}

static void test_hit_and_miss(void **state)
{
    struct rcache *c = make(1000);
    (void)state;
    assert_int_equal(get(c, A, 0, 0, NULL), -1);
    assert_true(fill(c, A, 7, 3, "{\"v\":3}", 0));
    assert_int_equal(get(c, A, 0, 10, "{\"v\":3}"), 3);
    assert_int_equal(get(c, A, 3, 10, NULL), 3);
    /* read-your-writes: a document below min_version is not an answer */
    assert_int_equal(get(c, A, 4, 10, NULL), -1);
    /* another account is not this one, even on a shared slot */
    assert_int_equal(get(c, B, 0, 10, NULL), -1);
    rc_destroy(c);
}

static void test_ttl_bounds_staleness(void **state)
{
    struct rcache *c = make(1000);
    (void)state;
    assert_true(fill(c, A, 7, 3, "{}", 5000));
    assert_int_equal(get(c, A, 0, 5999, NULL), 3);
    assert_int_equal(get(c, A, 0, 6000, NULL), -1);
    rc_destroy(c);

    c = make(0); /* ttl 0: no cache at all */
    assert_false(fill(c, A, 7, 3, "{}", 0));
    assert_int_equal(get(c, A, 0, 0, NULL), -1);
    rc_destroy(c);
}

static void test_generation(void **state)
{
    struct rcache *c = make(1000);
    (void)state;
    /* a document of another generation is never stored */
    assert_false(fill(c, A, 6, 3, "{}", 0));
    assert_true(fill(c, A, 7, 3, "{}", 0));
    rc_set_gen(c, 7); /* unchanged: keeps entries */
    assert_int_equal(get(c, A, 0, 1, NULL), 3);
    rc_set_gen(c, 8); /* a switch clears */
    assert_int_equal(get(c, A, 0, 1, NULL), -1);
    rc_set_gen(c, 0); /* no generation (listener down, flush): disabled */
    assert_false(fill(c, A, 0, 3, "{}", 0));
    assert_int_equal(get(c, A, 0, 1, NULL), -1);
    rc_destroy(c);
}

static void test_notifications(void **state)
{
    struct rcache *c = make(1000);
    struct rc_stats st;
    char msg[256];
    (void)state;
    assert_true(fill(c, A, 7, 3, "{}", 0));
    assert_true(fill(c, B, 7, 9, "{}", 0));
    /* an older or equal version (a late duplicate notification) leaves the entry */
    rc_invalidate(c, A, 3);
    assert_int_equal(get(c, A, 0, 1, NULL), 3);
    snprintf(msg, sizeof msg, "%s:4 %s:9", A, B);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 0);
    assert_int_equal(get(c, A, 0, 1, NULL), -1);
    assert_int_equal(get(c, B, 0, 1, NULL), 9);
    /* a switch clears everything */
    assert_int_equal(rc_apply_message(c, "*", 1, 1, 0, NULL, NULL), 1);
    assert_int_equal(get(c, B, 0, 1, NULL), -1);
    /* an unreadable message clears rather than guess */
    assert_true(fill(c, B, 7, 9, "{}", 0));
    assert_int_equal(rc_apply_message(c, B ":x", strlen(B) + 2, 1, 0, NULL, NULL), 1);
    assert_int_equal(get(c, B, 0, 1, NULL), -1);
    assert_true(fill(c, B, 7, 9, "{}", 0));
    rc_apply_message(c, "", 0, 1, 0, NULL, NULL); /* nothing: nothing changes */
    assert_int_equal(get(c, B, 0, 1, NULL), 9);
    rc_stats(c, &st);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.clears, 3); /* the first generation, the switch, the bad message */
    rc_destroy(c);
}

/* A parked read's question: is the account known to be below min_version, nothing newer
 * announced since the fill? Only a servable entry says so; a notification, a clear, a new
 * generation or the lifetime ends it (then the read asks Redis). */
static void test_below(void **state)
{
    struct rcache *c = make(1000);
    char msg[128];
    int64_t v = -1;
    (void)state;
    assert_false(rc_below(c, A, 4, 0, &v, NULL)); /* nothing cached: unknown */
    assert_true(fill(c, A, 7, 3, "{}", 0));
    assert_true(rc_below(c, A, 4, 10, &v, NULL));
    assert_int_equal(v, 3);
    {
        char *doc = NULL; /* and what it holds, for the caller's own checks (the owner) */
        assert_true(rc_below(c, A, 4, 10, &v, &doc));
        assert_non_null(doc);
        assert_string_equal(doc, "{}");
        free(doc);
        doc = NULL;
        assert_false(rc_below(c, A, 3, 10, &v, &doc));
        assert_null(doc);
    }
    assert_false(rc_below(c, A, 3, 10, &v, NULL));  /* reached: the read is answered */
    assert_false(rc_below(c, A, 4, 1000, &v, NULL)); /* past its lifetime */
    snprintf(msg, sizeof msg, "%s:4", B);
    rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL); /* another account's news says nothing of A */
    assert_true(rc_below(c, A, 4, 10, &v, NULL));
    snprintf(msg, sizeof msg, "%s:4", A);
    rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL);
    assert_false(rc_below(c, A, 4, 10, &v, NULL));
    assert_true(fill(c, A, 7, 3, "{}", 0));
    rc_clear(c);
    assert_false(rc_below(c, A, 4, 10, &v, NULL));
    assert_true(fill(c, A, 7, 3, "{}", 0));
    rc_set_gen(c, 8);
    assert_false(rc_below(c, A, 4, 10, &v, NULL));
    rc_destroy(c);
}

/* The race the ticket exists for: a reader reads version 3 from Redis, the projector applies 4
 * and its notification is handled, then the reader stores. The store must be refused. */
static void test_fill_racing_a_notification(void **state)
{
    struct rcache *c = make(1000);
    struct rc_ticket t;
    (void)state;
    t = rc_fill_begin(c, A);
    rc_invalidate(c, A, 4);
    assert_false(rc_fill_commit(c, A, t, 7, 3, "{\"v\":3}", 0));
    assert_int_equal(get(c, A, 0, 1, NULL), -1);
    /* and a fill racing a clear */
    t = rc_fill_begin(c, A);
    rc_clear(c);
    assert_false(rc_fill_commit(c, A, t, 7, 4, "{}", 0));
    /* a fill that started after the notification stores */
    t = rc_fill_begin(c, A);
    assert_true(rc_fill_commit(c, A, t, 7, 4, "{}", 0));
    assert_int_equal(get(c, A, 0, 1, NULL), 4);
    rc_destroy(c);
}

/* Many readers fill while a notifier advances versions: once the notifier is done and its last
 * notification handled, no reader may see anything but the last version. */
struct race {
    struct rcache *c;
    volatile int64_t redis_version; /* what "Redis" holds */
    volatile int done;
};

static void *reader(void *arg)
{
    struct race *r = arg;
    char doc[32];
    while (!r->done) {
        struct rc_ticket t = rc_fill_begin(r->c, A);
        int64_t v = __atomic_load_n(&r->redis_version, __ATOMIC_SEQ_CST); /* the Redis read */
        snprintf(doc, sizeof doc, "%lld", (long long)v);
        (void)rc_fill_commit(r->c, A, t, 7, v, doc, 0);
    }
    return NULL;
}

static void test_concurrent_fills(void **state)
{
    struct race r = {make(1000000), 0, 0};
    pthread_t th[4];
    (void)state;
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader, &r), 0);
    for (int64_t v = 1; v <= 20000; v++) {
        __atomic_store_n(&r.redis_version, v, __ATOMIC_SEQ_CST); /* the apply */
        rc_invalidate(r.c, A, v);                                /* then its notification */
    }
    r.done = 1;
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    {
        int64_t v = get(r.c, A, 0, 1, NULL);
        assert_true(v == -1 || v == 20000);
    }
    rc_destroy(r.c);
}

/* Two ways per set: 100 accounts in 256 slots mostly stay (a direct-mapped table of the same
 * size keeps about 82 of them; the ids and the hash are fixed, so this is deterministic). */
static void test_associativity(void **state)
{
    struct rcache *c = NULL;
    struct err e = {0};
    char id[40];
    int hits = 0;
    (void)state;
    assert_int_equal(rc_create(&c, 256, 1000, &e), ST_OK);
    rc_set_gen(c, 7);
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", i);
        assert_true(fill(c, id, 7, 1, "{}", i));
    }
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", i);
        hits += get(c, id, 0, 100, NULL) == 1;
    }
    fprintf(stderr, "100 accounts in 256 slots: %d stayed\n", hits);
    assert_true(hits >= 90);
    rc_destroy(c);
}

/* A notification that carries the document written: the entry becomes that document (a read
 * it wakes needs no round trip), never over a newer one, only in the cache's generation, only
 * when the listener takes documents (push); a length that runs past its message clears. */
static void test_notification_carries_the_document(void **state)
{
    struct rcache *c = make(1000);
    const char *doc = "{\"id\": \"x\", \"note\": \"a: b c 12:3\"}";
    struct rc_ticket t;
    struct rc_stats st;
    char msg[512];
    (void)state;
    /* a document with spaces and colons in it, a plain invalidation beside it */
    assert_true(fill(c, B, 7, 1, "{}", 0));
    snprintf(msg, sizeof msg, "%s:5:7:%zu:%s %s:2", A, strlen(doc), doc, B);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 0);
    assert_int_equal(get(c, A, 5, 1, doc), 5);
    assert_int_equal(get(c, B, 0, 1, NULL), -1);
    /* a late notification of an older version leaves the newer document */
    snprintf(msg, sizeof msg, "%s:4:7:2:{}", A);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 0);
    assert_int_equal(get(c, A, 0, 1, doc), 5);
    /* another generation's document is not taken; it still invalidates below its version */
    snprintf(msg, sizeof msg, "%s:6:8:2:{}", A);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 0);
    assert_int_equal(get(c, A, 0, 1, NULL), -1);
    /* push off (a server whose answers the cache does not hold): an invalidation only */
    snprintf(msg, sizeof msg, "%s:7:7:2:{}", A);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 0, 0, NULL, NULL), 0);
    assert_int_equal(get(c, A, 0, 1, NULL), -1);
    /* a fill that read before the notification does not land over its document */
    t = rc_fill_begin(c, B);
    snprintf(msg, sizeof msg, "%s:9:7:7:{\"v\":9}", B);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 0);
    assert_false(rc_fill_commit(c, B, t, 7, 8, "{\"v\":8}", 0));
    assert_int_equal(get(c, B, 0, 1, "{\"v\":9}"), 9);
    /* a length past the message's end, a missing separator, bytes after the document: cleared */
    snprintf(msg, sizeof msg, "%s:10:7:99:{}", B);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 1);
    assert_int_equal(get(c, B, 0, 1, NULL), -1);
    snprintf(msg, sizeof msg, "%s:10:7:2{}", B);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 1);
    snprintf(msg, sizeof msg, "%s:10:7:2:{}x", B);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 1);
    snprintf(msg, sizeof msg, "%s:10:7", B);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 1);
    /* the lifetime holds for a pushed entry as for a filled one */
    snprintf(msg, sizeof msg, "%s:11:7:2:{}", B);
    assert_int_equal(rc_apply_message(c, msg, strlen(msg), 1, 0, NULL, NULL), 0);
    assert_int_equal(get(c, B, 0, 999, "{}"), 11);
    assert_int_equal(get(c, B, 0, 1000, NULL), -1);
    rc_stats(c, &st);
    assert_int_equal(st.pushes, 3); /* A at 5, B at 9 and 11 */
    rc_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_miss),
        cmocka_unit_test(test_ttl_bounds_staleness),
        cmocka_unit_test(test_generation),
        cmocka_unit_test(test_notifications),
        cmocka_unit_test(test_below),
        cmocka_unit_test(test_fill_racing_a_notification),
        cmocka_unit_test(test_concurrent_fills),
        cmocka_unit_test(test_associativity),
        cmocka_unit_test(test_notification_carries_the_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
