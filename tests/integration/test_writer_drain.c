/* The writer's SIGTERM drain and parked requests, with an epoll pool (HTTP_THREADS=4, commands
 * parked while the store's threads run them) and with a thread per connection: a SIGTERM under
 * load answers every command it accepted with its true outcome (a command waiting for a row
 * lock when the signal came commits and gets its 201, never a 503 nor a closed connection), and
 * a client that disconnects while its command is parked leaves the command committed and the
 * writer serving and stopping cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.h"
#include "thttp.h"
#include "tstack.h"
#include "twriter.h"

#define LOADERS 8
#define PER_LOADER 400

static const char *writer_url; /* read before any thread starts: tenv is not thread-safe */
static const char *api_token;

struct call {
    int status;
    char event_id[UUID_STR_SIZE];
    int retry_after;
};

struct loader {
    int n;
    char account[UUID_STR_SIZE];
    int count;
    struct call calls[PER_LOADER];
};

static atomic_int stop_loaders;

static pid_t start_writer(const char *threads)
{
    const char *env[] = {threads, "LOCK_TIMEOUT_MS=4000", NULL};
    pid_t pid = tsvc_start("writer", NULL, env);

    tstack_guard(pid);
    if (!twait_http_ok(writer_url, "/healthz", 20000))
        tfail("writer did not become healthy at %s", writer_url);
    return pid;
}

/* Deposits "drain-<n>-<i>" until told to stop or the writer no longer answers. */
static void *load(void *arg)
{
    struct loader *l = arg;
    char path[128], body[128], hb[16];

    snprintf(path, sizeof path, "/accounts/%s/deposits", l->account);
    while (l->count < PER_LOADER && !atomic_load(&stop_loaders)) {
        struct call *c = &l->calls[l->count];
        struct thttp_resp r;
        json_t *doc;
        snprintf(body, sizeof body, "{\"amount\":1,\"description\":\"drain-%d-%d\"}", l->n, l->count);
        thttp_request(&r, "POST", writer_url, path, body, NULL, 20000);
        c->status = r.status;
        c->retry_after = thttp_header(&r, "Retry-After", hb, sizeof hb) != NULL;
        if (r.status == 201 && (doc = thttp_json(&r)) != NULL) {
            snprintf(c->event_id, sizeof c->event_id, "%s", tw_str(doc, "event_id"));
            json_decref(doc);
        }
        thttp_resp_release(&r);
        l->count++;
        if (c->status == 0)
            break; /* the listener is gone */
    }
    return NULL;
}

struct held {
    char path[128];
    int status;
};

static void *held_deposit(void *arg)
{
    struct held *h = arg;
    struct thttp_resp r;

    thttp_request(&r, "POST", writer_url, h->path, "{\"amount\":5,\"description\":\"held\"}", NULL, 20000);
    h->status = r.status;
    thttp_resp_release(&r);
    return NULL;
}

/* Locks the account's row in a transaction of pg (a deposit on it then waits, alone). */
static void lock_account(PGconn *pg, const char *id)
{
    PGresult *res;

    tw_exec(pg, "BEGIN");
    res = PQexecParams(pg, "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", 1, NULL,
                       (const char *const[]){id}, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("lock: %s", PQerrorMessage(pg));
    PQclear(res);
}

static int64_t described(PGconn *pg, const char *description)
{
    return tw_scalar(pg, "SELECT count(*) FROM events WHERE data->>'description' = $1", description, NULL);
}

static void sigterm_under_load(const char *threads)
{
    static struct loader loaders[LOADERS];
    PGconn *pg = tw_pg(), *holder = tw_pg();
    pthread_t t[LOADERS], th;
    struct held h = {.status = -1};
    char held_id[UUID_STR_SIZE], owner[64], desc[64];
    int answered = 0, refused = 0, unanswered = 0;
    pid_t pid;

    treset_state();
    pid = start_writer(threads);
    snprintf(owner, sizeof owner, "drain-%d", (int)getpid());
    tw_open(held_id, owner, "held", "EUR", 0);
    for (int i = 0; i < LOADERS; i++) {
        char name[16];
        snprintf(name, sizeof name, "l%d", i);
        memset(&loaders[i], 0, sizeof loaders[i]);
        loaders[i].n = i;
        tw_open(loaders[i].account, owner, name, "EUR", 0);
    }
    lock_account(holder, held_id);
    snprintf(h.path, sizeof h.path, "/accounts/%s/deposits", held_id);
    assert_int_equal(pthread_create(&th, NULL, held_deposit, &h), 0);
    atomic_store(&stop_loaders, 0);
    for (int i = 0; i < LOADERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, load, &loaders[i]), 0);
    usleep(400 * 1000);
    kill(pid, SIGTERM); /* the held deposit waits for its lock: the drain must wait for it */
    usleep(500 * 1000);
    tw_exec(holder, "COMMIT");
    tstack_unguard(pid);
    assert_int_equal(tsvc_stop(pid, 0, 10000), 0);
    atomic_store(&stop_loaders, 1);
    pthread_join(th, NULL);
    for (int i = 0; i < LOADERS; i++)
        pthread_join(t[i], NULL);

    /* the command in flight at SIGTERM: committed and answered */
    assert_int_equal(h.status, 201);
    assert_int_equal(described(pg, "held"), 1);
    for (int i = 0; i < LOADERS; i++)
        for (int k = 0; k < loaders[i].count; k++) {
            struct call *c = &loaders[i].calls[k];
            snprintf(desc, sizeof desc, "drain-%d-%d", i, k);
            if (c->status == 201) {
                answered++;
                assert_int_equal(tw_scalar(pg, "SELECT count(*) FROM events WHERE event_id = $1::uuid "
                                               "AND data->>'description' = $2", c->event_id, desc), 1);
            } else if (c->status == 503) {
                refused++; /* not applied, and says so */
                assert_true(c->retry_after);
                assert_int_equal(described(pg, desc), 0);
            } else if (c->status == 0) {
                unanswered++; /* never accepted: not applied either */
                if (described(pg, desc) != 0)
                    tfail("%s: committed but its connection closed without an answer", desc);
            } else {
                tfail("%s: status %d", desc, c->status);
            }
        }
    fprintf(stderr, "%s: %d answered 201, %d refused 503 while draining, %d not answered (not applied)\n",
            threads, answered, refused, unanswered);
    assert_true(answered > 0);
    PQfinish(holder);
    PQfinish(pg);
}

static void test_sigterm_under_load_epoll(void **state)
{
    (void)state;
    sigterm_under_load("HTTP_THREADS=4");
}

static void test_sigterm_under_load_thread_per_connection(void **state)
{
    (void)state;
    sigterm_under_load("HTTP_THREADS=0");
}

/* Sends a deposit on a raw connection and closes it without reading the answer. */
static void send_and_leave(const char *path, const char *description)
{
    struct sockaddr_in a;
    char req[1024], body[128];
    int fd = socket(AF_INET, SOCK_STREAM, 0), n, bn;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(strrchr(writer_url, ':') + 1));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    bn = snprintf(body, sizeof body, "{\"amount\":3,\"description\":\"%s\"}", description);
    n = snprintf(req, sizeof req,
                 "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 "%s%s%s\r\n%s",
                 path, bn, api_token[0] != '\0' ? "Authorization: Bearer " : "", api_token,
                 api_token[0] != '\0' ? "\r\n" : "", body);
    assert_int_equal(write(fd, req, (size_t)n), n);
    usleep(200 * 1000); /* parked: its account's row is held */
    close(fd);
}

/* Clients gone while their commands wait: the commands still commit (their true outcome is in
 * the store), the writer goes on serving and stops cleanly (no parked request left behind). */
static void test_client_gone_while_parked(void **state)
{
    PGconn *pg = tw_pg(), *holder = tw_pg();
    char held_id[UUID_STR_SIZE], other[UUID_STR_SIZE], owner[64], path[128];
    pid_t pid;

    (void)state;
    treset_state();
    pid = start_writer("HTTP_THREADS=4");
    snprintf(owner, sizeof owner, "gone-%d", (int)getpid());
    tw_open(held_id, owner, "held", "EUR", 0);
    tw_open(other, owner, "other", "EUR", 0);
    lock_account(holder, held_id);
    snprintf(path, sizeof path, "/accounts/%s/deposits", held_id);
    send_and_leave(path, "gone-1");
    send_and_leave(path, "gone-2");
    json_decref(tw_money(other, "deposits", 7, "beside")); /* others are served meanwhile */
    tw_exec(holder, "COMMIT");
    for (int64_t until = tnow_ms() + 5000; described(pg, "gone-2") == 0 && tnow_ms() < until;)
        usleep(20 * 1000);
    assert_int_equal(described(pg, "gone-1"), 1);
    assert_int_equal(described(pg, "gone-2"), 1);
    json_decref(tw_money(held_id, "deposits", 1, "after"));
    tstack_unguard(pid);
    assert_int_equal(tsvc_stop(pid, SIGTERM, 10000), 0);
    PQfinish(holder);
    PQfinish(pg);
}

static int setup(void **state)
{
    (void)state;
    writer_url = tenv("WRITER_URL");
    api_token = tenv("API_TOKEN") != NULL ? tenv("API_TOKEN") : "";
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_under_load_epoll),
        cmocka_unit_test(test_sigterm_under_load_thread_per_connection),
        cmocka_unit_test(test_client_gone_while_parked),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
