/* The projector's Redis connection lost at the worst moments, against a socket that accepts and
 * hangs up (no Redis needed: the fault is the point). A worker stopped after Redis was killed
 * under it crashed (SIGSEGV, test_projector_stop in CI): Redis died between the connect and the
 * PUBLISH that follows it, the lost-notification path dropped the connection, and pj_redis()
 * went on to load the apply script on a NULL context. Now every path answers "unavailable" and
 * leaves no half-dropped connection behind, and a command on a dropped connection is an error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cfg.h"
#include "engine.h"
#include "gens.h"
#include "pass.h"
#include "rds.h"
#include "readmodel.h"
#include "status.h"

/* A listener that accepts `conns` connections and closes each at once. */
struct hangup {
    int fd, port, conns;
    pthread_t thread;
};

static void *hangup_main(void *arg)
{
    struct hangup *h = arg;

    for (int i = 0; i < h->conns; i++) {
        int c = accept(h->fd, NULL, NULL);
        if (c < 0)
            break;
        close(c);
    }
    return NULL;
}

static void hangup_start(struct hangup *h, int conns)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    h->conns = conns;
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(h->fd >= 0);
    assert_int_equal(bind(h->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(h->fd, 8), 0);
    assert_int_equal(getsockname(h->fd, (struct sockaddr *)&a, &len), 0);
    h->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&h->thread, NULL, hangup_main, h), 0);
}

static void hangup_stop(struct hangup *h)
{
    shutdown(h->fd, SHUT_RDWR); /* wakes the accept if it still waits */
    pthread_join(h->thread, NULL);
    close(h->fd);
}

static void load_cfg(struct cfg *c, int port)
{
    char errs[1024] = "", url[64];

    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    setenv("REDIS_URL", url, 1);
    setenv("REQUEST_TIMEOUT_MS", "2000", 1);
    assert_int_equal(cfg_load(c, errs, sizeof errs), ST_OK);
}

/* Connected, then hung up on before the first command: unavailable, no connection kept. */
static void test_connection_lost_right_after_connect(void **state)
{
    static struct cfg c;
    struct hangup h;
    struct pj p;
    struct err e;

    (void)state;
    hangup_start(&h, 2);
    load_cfg(&c, h.port);
    pj_init(&p, &c);
    err_clear(&e);
    assert_int_equal(pj_redis(&p, &e), ST_UNAVAILABLE);
    assert_null(p.rc);
    assert_string_equal(p.sha, "");
    assert_non_null(strstr(e.msg, "redis"));
    /* and again: the next attempt starts from nothing, the same way */
    err_clear(&e);
    assert_int_equal(pj_redis(&p, &e), ST_UNAVAILABLE);
    assert_null(p.rc);
    pj_release(&p);
    hangup_stop(&h);
}

/* A context whose connection failed: the script load says so instead of using it. */
static void test_script_load_on_a_lost_connection(void **state)
{
    static struct cfg c;
    struct pj p;
    struct err e;

    (void)state;
    load_cfg(&c, 1);
    pj_init(&p, &c);
    err_clear(&e);
    assert_int_equal(pj_load_script(&p, &e), ST_UNAVAILABLE); /* never connected */
    assert_non_null(strstr(e.msg, "not connected"));
    assert_null(p.rc);
    pj_release(&p);
}

/* Every shared read-model call on a dropped (NULL) connection is an error, not a crash. */
static void test_calls_on_a_dropped_connection(void **state)
{
    struct rm_gens g;
    struct rm_account acc;
    struct err e;
    char fold[64];
    long gen = 7;

    (void)state;
    assert_null(rds_command(NULL, "GET %s", RM_CURRENT_KEY));
    assert_null(rds_command_argv(NULL, 1, (const char *[]){"PING"}, NULL));
    assert_string_equal(rds_errstr(NULL), "not connected");
    err_clear(&e);
    assert_int_equal(rm_load_gens(NULL, &g, &e), ST_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "not connected"));
    err_clear(&e);
    assert_int_equal(rm_load_current(NULL, &gen, &e), ST_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "not connected"));
    err_clear(&e);
    assert_int_equal(rm_load_account(NULL, 1, "11111111-1111-4111-8111-111111111111", &acc, &e), ST_UNAVAILABLE);
    err_clear(&e);
    assert_int_equal(rm_check_noeviction(NULL, &e), ST_UNAVAILABLE);
    err_clear(&e);
    assert_int_equal(pj_gen_fold(NULL, 1, fold, sizeof fold, &e), ST_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "not connected"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_lost_right_after_connect),
        cmocka_unit_test(test_script_load_on_a_lost_connection),
        cmocka_unit_test(test_calls_on_a_dropped_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
