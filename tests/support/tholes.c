/* Rebuild-hole suites' support: keyspace filler, deposit load, pair check, snapshot restart. */
#include "tholes.h"

#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus.h"
#include "event.h"
#include "support.h"
#include "thttp.h"
#include "tstack.h"
#include "twriter.h"

void th_populate(redisContext *rc, long n)
{
    const long per = 1000;
    long sent = 0, pending = 0;
    const char **argv = calloc((size_t)(2 * per + 1), sizeof *argv);
    char (*keys)[32] = calloc((size_t)per, sizeof *keys);

    redisReply *dr;

    if (argv == NULL || keys == NULL)
        tfail("out of memory");
    /* the stack's Redis allows DEBUG from loopback: the keys are made inside the server */
    dr = redisCommand(rc, "DEBUG POPULATE %ld junk 8", n);
    if (dr != NULL && dr->type == REDIS_REPLY_STATUS)
        sent = n;
    freeReplyObject(dr);
    while (sent < n) {
        long k = n - sent < per ? n - sent : per;
        argv[0] = "MSET";
        for (long i = 0; i < k; i++) {
            snprintf(keys[i], sizeof keys[i], "junk:%ld", sent + i);
            argv[1 + 2 * i] = keys[i];
            argv[2 + 2 * i] = "x";
        }
        if (redisAppendCommandArgv(rc, (int)(2 * k + 1), argv, NULL) != REDIS_OK)
            tfail("populate: append");
        sent += k;
        if (++pending == 50 || sent == n) {
            while (pending > 0) {
                redisReply *r = NULL;
                if (redisGetReply(rc, (void **)&r) != REDIS_OK || r == NULL || r->type == REDIS_REPLY_ERROR)
                    tfail("populate: MSET failed");
                freeReplyObject(r);
                pending--;
            }
        }
    }
    free(argv);
    free(keys);
}

void th_open_accounts(char (*ids)[UUID_STR_SIZE], int n, const char *owner)
{
    struct tw_call *calls = calloc((size_t)n, sizeof *calls);

    if (calls == NULL)
        tfail("out of memory");
    for (int i = 0; i < n; i++) {
        snprintf(calls[i].path, sizeof calls[i].path, "/accounts");
        snprintf(calls[i].body, sizeof calls[i].body,
                 "{\"owner\":\"%s\",\"name\":\"acct %d %lld\",\"currency\":\"EUR\"}", owner, i,
                 (long long)tnow_ms());
    }
    tw_run_batch(tenv("WRITER_URL"), calls, n, 8);
    for (int i = 0; i < n; i++) {
        const char *id = calls[i].doc != NULL ? tw_str(calls[i].doc, "account_id") : NULL;
        if (calls[i].status != 201 || id == NULL)
            tfail("open account %d: status %d %s", i, calls[i].status, calls[i].raw != NULL ? calls[i].raw : "");
        snprintf(ids[i], UUID_STR_SIZE, "%s", id);
    }
    tw_calls_free(calls, n);
}

struct th_worker {
    struct th_load *l;
    int index;
};

static void *load_main(void *arg)
{
    struct th_worker *w = arg;
    struct th_load *l = w->l;

    for (long k = w->index; !l->stop; k += l->nthreads) {
        char path[128], body[128];
        struct thttp_resp r;
        int status;

        snprintf(path, sizeof path, "/accounts/%s/deposits", l->ids[k % l->n]);
        snprintf(body, sizeof body, "{\"amount\":%ld,\"description\":\"hole load\"}", 100 + k % 13);
        if (thttp_request(&r, "POST", tenv("WRITER_URL"), path, body, NULL, 15000) != 0)
            r.status = 0;
        status = r.status;
        pthread_mutex_lock(&l->mu);
        if (status != 201 && status != 409 && status != 422 && l->first_failure[0] == '\0')
            snprintf(l->first_failure, sizeof l->first_failure, "%s: %d %.200s", path, status,
                     r.body != NULL ? r.body : "");
        thttp_resp_release(&r);
        l->sent++;
        if (status == 201)
            l->ok++;
        else if (status == 409 || status == 422)
            l->refused++;
        else
            l->failed++;
        pthread_mutex_unlock(&l->mu);
    }
    free(w);
    return NULL;
}

void th_load_start(struct th_load *l, char (*ids)[UUID_STR_SIZE], int n, int nthreads)
{
    memset(l, 0, sizeof *l);
    l->ids = ids;
    l->n = n;
    l->nthreads = nthreads > 8 ? 8 : nthreads;
    pthread_mutex_init(&l->mu, NULL);
    for (int i = 0; i < l->nthreads; i++) {
        struct th_worker *w = calloc(1, sizeof *w);
        if (w == NULL)
            tfail("out of memory");
        w->l = l;
        w->index = i;
        if (pthread_create(&l->threads[i], NULL, load_main, w) != 0)
            tfail("load thread");
    }
}

void th_load_stop(struct th_load *l)
{
    l->stop = 1;
    for (int i = 0; i < l->nthreads; i++)
        pthread_join(l->threads[i], NULL);
    pthread_mutex_destroy(&l->mu);
    fprintf(stderr, "deposit load: %ld sent, %ld 201, %ld refused (closed account), %ld failed%s%s\n",
            l->sent, l->ok, l->refused, l->failed, l->first_failure[0] ? "; first: " : "", l->first_failure);
}

/* The other key of an account's pair: "rm:<g>:a:{id}" <-> "rm:<g>:s:{id}". */
static long scan_pairs(redisContext *rc, long gen, char kind, long *printed)
{
    char cursor[32] = "0", pattern[64];
    long broken = 0;

    snprintf(pattern, sizeof pattern, "rm:%ld:%c:{*", gen, kind);
    do {
        redisReply *r = redisCommand(rc, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY)
            tfail("scan failed");
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            char other[160];
            const char *k = r->element[1]->element[i]->str;
            const char *brace = strchr(k, '{');
            redisReply *v, *len;
            long hv, ll;
            if (brace == NULL)
                continue;
            snprintf(other, sizeof other, "rm:%ld:%c:%s", gen, kind == 'a' ? 's' : 'a', brace);
            v = redisCommand(rc, "HGET %s v", kind == 'a' ? k : other);
            len = redisCommand(rc, "LLEN %s", kind == 'a' ? other : k);
            if (v == NULL || len == NULL)
                tfail("redis read failed");
            hv = v->type == REDIS_REPLY_STRING ? atol(v->str) : -1;
            ll = len->type == REDIS_REPLY_INTEGER ? (long)len->integer : -1;
            if (hv < 0 || ll <= 0 || hv != ll) {
                broken++;
                if ((*printed)++ < 10)
                    fprintf(stderr, "  broken pair %s: v=%ld LLEN=%ld\n", k, hv, ll);
            }
            freeReplyObject(v);
            freeReplyObject(len);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return broken;
}

long th_broken_pairs(redisContext *rc, long gen)
{
    long printed = 0;

    /* from both sides: a hash without its list and a list without its hash; an account broken
     * both ways counts twice (any count > 0 is a failure anyway) */
    return scan_pairs(rc, gen, 'a', &printed) + scan_pairs(rc, gen, 's', &printed);
}

static void info_wait(redisContext *rc, const char *field, int timeout_ms)
{
    int64_t deadline = tnow_ms() + timeout_ms;
    char want[64];

    snprintf(want, sizeof want, "%s:0", field);
    while (tnow_ms() < deadline) {
        redisReply *r = redisCommand(rc, "INFO persistence");
        int done = r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, want) != NULL;
        freeReplyObject(r);
        if (done)
            return;
        usleep(20000);
    }
    tfail("redis %s did not finish", field);
}

void th_snapshot(redisContext *rc)
{
    redisReply *r = redisCommand(rc, "CONFIG SET appendonly no");
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        tfail("config set appendonly no");
    freeReplyObject(r);
    info_wait(rc, "aof_rewrite_in_progress", 30000);
    r = redisCommand(rc, "BGSAVE");
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        tfail("bgsave: %s", r != NULL ? r->str : "no reply");
    freeReplyObject(r);
    usleep(10000);
    info_wait(rc, "rdb_bgsave_in_progress", 30000);
}

void th_restart_from_snapshot(void)
{
    const char *dir = tenv("STACK_DIR"), *port = tenv("REDIS_PORT");
    char cmd[2048];

    tstack_kill("redis", SIGKILL, 10000);
    /* scripts/stack's command line, with the AOF off so the snapshot is what loads */
    snprintf(cmd, sizeof cmd,
             "cd '%s/redis' && setsid redis-server --bind 127.0.0.1 --port %s --dir '%s/redis' "
             "--daemonize yes --pidfile '%s/run/redis.pid' --logfile '%s/logs/redis.log' "
             "--appendonly no --save '' --protected-mode yes --enable-debug-command local </dev/null >/dev/null 2>&1",
             dir, port, dir, dir, dir);
    if (system(cmd) != 0)
        tfail("restart redis from the snapshot");
    for (int i = 0; i < 200; i++) {
        if (tstack_pid("redis") > 0) {
            redisContext *rc = redisConnect("127.0.0.1", atoi(port));
            if (rc != NULL && !rc->err) {
                redisReply *r = redisCommand(rc, "PING");
                int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
                freeReplyObject(r);
                redisFree(rc);
                if (ok)
                    return;
            } else if (rc != NULL) {
                redisFree(rc);
            }
        }
        usleep(50000);
    }
    tfail("redis did not come back from the snapshot");
}

void *th_hold_horizon(void)
{
    PGconn *holder = tw_pg();
    PGresult *res = PQexec(holder, "BEGIN");
    PQclear(res);
    res = PQexec(holder, "SELECT pg_current_xact_id()");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("take an xid: %s", PQerrorMessage(holder));
    PQclear(res);
    return holder;
}

void th_release_horizon(void *holder)
{
    PGresult *res = PQexec(holder, "COMMIT");
    PQclear(res);
    PQfinish(holder);
}

void th_aof_back(redisContext *rc)
{
    redisReply *r = redisCommand(rc, "CONFIG SET appendonly yes");
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        tfail("config set appendonly yes");
    freeReplyObject(r);
    usleep(50000);
    info_wait(rc, "aof_rewrite_in_progress", 60000);
}

long th_log_size(const char *binary)
{
    char path[1024];
    struct stat sb;

    snprintf(path, sizeof path, "%s/logs/test-%s.log", tenv("STACK_DIR"), binary);
    return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

long th_log_count(const char *binary, long from, const char *needle)
{
    char path[1024], line[4096];
    long n = 0;
    FILE *f;

    snprintf(path, sizeof path, "%s/logs/test-%s.log", tenv("STACK_DIR"), binary);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    if (fseek(f, from, SEEK_SET) != 0) {
        fclose(f);
        return 0;
    }
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

long long th_insert_event(void *pgv, const char *event_id, const char *stream, int version, const char *type,
                          const char *data, char at[40])
{
    PGconn *pg = pgv;
    char ver[16];
    const char *p[5] = {event_id, stream, ver, type, data};
    long long position;
    PGresult *res;

    snprintf(ver, sizeof ver, "%d", version);
    res = PQexecParams(pg,
                       "INSERT INTO events (event_id, stream_id, stream_version, type, schema, data) "
                       "VALUES ($1, $2, $3, $4, 1, $5::jsonb) RETURNING position, "
                       "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                       5, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("insert: %s", PQerrorMessage(pg));
    position = atoll(PQgetvalue(res, 0, 0));
    if (at != NULL)
        snprintf(at, 40, "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
    return position;
}

void th_fix_poison(void *pgv, const char *event_id)
{
    const char *p[1] = {event_id};
    PGresult *res = PQexecParams(pgv,
                                 "UPDATE events SET type = 'MoneyDeposited', "
                                 "data = '{\"amount\":5,\"description\":\"fixed\"}' WHERE event_id = $1",
                                 1, NULL, p, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdTuples(res), "1") != 0)
        tfail("fix poison %s: %s", event_id, PQresultErrorMessage(res));
    PQclear(res);
}

long long th_event(void *pg, int insert, const char *event_id, const char *stream, int version,
                   const char *type, const char *data)
{
    char subject[64], payload[2048], at[40] = "2026-11-21T20:00:00.000000Z";
    struct bus b = {0};
    struct err e;
    natsMsg *msg = NULL;
    jsPubAck *ack = NULL;
    long long position = 0;

    if (insert)
        position = th_insert_event(pg, event_id, stream, version, type, data, at);
    /* an inserted event's message is the store's row: the same fold either way */
    snprintf(payload, sizeof payload,
             "{\"event_id\":\"%s\",\"stream_id\":\"%s\",\"stream_version\":%d,\"position\":%lld,"
             "\"type\":\"%s\",\"schema\":1,\"recorded_at\":\"%s\",\"data\":%s,"
             "\"metadata\":{}}",
             event_id, stream, version, position > 0 ? position : 999999999LL, type, at, data);
    event_subject(stream, EVENT_PARTITIONS, subject, sizeof subject);
    if (bus_connect(&b, tenv("NATS_URL"), "test-holes", 5000, &e) != ST_OK)
        tfail("nats: %s", e.msg);
    if (natsMsg_Create(&msg, subject, NULL, payload, (int)strlen(payload)) != NATS_OK ||
        natsMsgHeader_Set(msg, "Nats-Msg-Id", event_id) != NATS_OK ||
        js_PublishMsg(&ack, b.js, msg, NULL, NULL) != NATS_OK)
        tfail("publish %s", event_id);
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(msg);
    bus_release(&b);
    return position;
}

int th_read_min_version(const char *id, int64_t v, int64_t *ms)
{
    struct thttp_resp r;
    char path[192];
    int64_t t0 = tnow_ms();
    int status;

    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=3000", id, (long long)v);
    if (thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 10000) != 0)
        tfail("GET %s: no response", path);
    status = r.status;
    *ms = tnow_ms() - t0;
    fprintf(stderr, "GET %s: %d after %lld ms %.200s\n", path, status, (long long)*ms, r.body);
    thttp_resp_release(&r);
    return status;
}

int64_t th_deposit(const char *id, const char *description)
{
    json_t *doc = tw_money(id, "deposits", 100, description);
    int64_t v = tw_int(doc, "version");
    json_decref(doc);
    return v;
}
