/* Data and checks for the benchmarks, against the stack named by $CQRS_STACK_ENV:
 *
 *   benchdata reset                      empty the event store, Redis and the EVENTS stream
 *   benchdata reset-read                 empty Redis and delete the projector consumer (keeps the stream)
 *   benchdata open N FILE                open N accounts through the writer, ids to FILE
 *   benchdata seed EVENTS ACCOUNTS FILE  generate a valid history, COPY it into Postgres,
 *                                        publish it to EVENTS (async), account ids to FILE
 *   benchdata drain WORKERS TIMEOUT_S    start WORKERS `projector run`, time until every
 *                                        partition's owner recorded the partition's last
 *                                        sequence in rm:part:<p>; print events/s and peak RSS
 *   benchdata jsping N                   median JetStream publish-ack round trip (own stream)
 *   benchdata check [TIMEOUT_MS]         read models == fold of the events table (exit 1 if not)
 */
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "jsonx.h"
#include "support.h"
#include "tcheck.h"
#include "tgen.h"
#include "thttp.h"
#include "tstack.h"

static double secs_since(int64_t t0)
{
    return (double)(tnow_ms() - t0) / 1000.0;
}

static void copy_events(const struct tgen_history *h)
{
    PGconn *pg = PQconnectdb(tenv("DATABASE_URL"));
    PGresult *res;
    char *buf = NULL;
    size_t cap = 0;

    if (PQstatus(pg) != CONNECTION_OK)
        tfail("connect: %s", PQerrorMessage(pg));
    res = PQexec(pg, "COPY events (position, event_id, stream_id, stream_version, type, schema, data, "
                     "metadata, recorded_at) FROM STDIN");
    if (PQresultStatus(res) != PGRES_COPY_IN)
        tfail("copy: %s", PQerrorMessage(pg));
    PQclear(res);
    for (long i = 0; i < h->n; i++) {
        const struct event *ev = &h->events[i];
        json_t *data = event_data_to_json(ev), *md = event_metadata_to_json(ev);
        char *ds = jsonx_dump(data), *ms = jsonx_dump(md);
        size_t need = strlen(ds) * 2 + strlen(ms) * 2 + 512;
        size_t o = 0;
        if (need > cap) {
            cap = need * 2;
            buf = realloc(buf, cap);
            if (buf == NULL)
                tfail("out of memory");
        }
        o += (size_t)snprintf(buf + o, cap - o, "%lld\t%s\t%s\t%lld\t%s\t%d\t", (long long)ev->position,
                              ev->event_id, ev->stream_id, (long long)ev->stream_version,
                              event_type_name(ev->type), ev->schema);
        /* COPY text format: escape backslash, tab and newlines of the JSON */
        for (int f = 0; f < 2; f++) {
            for (const char *p = f == 0 ? ds : ms; *p; p++) {
                if (*p == '\\' || *p == '\t' || *p == '\n' || *p == '\r')
                    buf[o++] = '\\';
                buf[o++] = *p == '\t' ? 't' : *p == '\n' ? 'n' : *p == '\r' ? 'r' : *p;
            }
            buf[o++] = '\t';
        }
        o += (size_t)snprintf(buf + o, cap - o, "%s\n", ev->recorded_at);
        if (PQputCopyData(pg, buf, (int)o) != 1)
            tfail("copy data: %s", PQerrorMessage(pg));
        free(ds);
        free(ms);
        json_decref(data);
        json_decref(md);
    }
    if (PQputCopyEnd(pg, NULL) != 1)
        tfail("copy end: %s", PQerrorMessage(pg));
    res = PQgetResult(pg);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tfail("copy: %s", PQerrorMessage(pg));
    PQclear(res);
    res = PQexec(pg, "SELECT setval(pg_get_serial_sequence('events', 'position'), (SELECT max(position) FROM events)); ANALYZE events");
    PQclear(res);
    PQfinish(pg);
    free(buf);
}

static void publish_events(const struct tgen_history *h)
{
    struct bus b = {0};
    struct err e = {0};
    jsPubOptions po;
    natsStatus ns;

    if (bus_connect(&b, tenv("NATS_URL"), "bench-publish", 10000, &e) != ST_OK ||
        bus_ensure_stream(&b, &e) != ST_OK)
        tfail("nats: %s", e.msg);
    for (long i = 0; i < h->n; i++) {
        char subject[32], *payload = event_encode(&h->events[i]);
        natsMsg *msg = NULL;
        event_subject(h->events[i].stream_id, EVENT_PARTITIONS, subject, sizeof subject);
        ns = natsMsg_Create(&msg, subject, NULL, payload, (int)strlen(payload));
        if (ns == NATS_OK)
            ns = natsMsgHeader_Set(msg, "Nats-Msg-Id", h->events[i].event_id);
        if (ns == NATS_OK)
            ns = js_PublishMsgAsync(b.js, &msg, NULL);
        natsMsg_Destroy(msg);
        free(payload);
        if (ns != NATS_OK)
            tfail("publish %ld: %s", i, natsStatus_GetText(ns));
    }
    jsPubOptions_Init(&po);
    po.MaxWait = 120000;
    ns = js_PublishAsyncComplete(b.js, &po);
    if (ns != NATS_OK)
        tfail("publish acks: %s", natsStatus_GetText(ns));
    bus_release(&b);
}

static int cmd_seed(long nevents, int naccounts, const char *file)
{
    struct tgen_history h = {0};
    int64_t t0 = tnow_ms();
    FILE *f;

    tgen_generate(&h, naccounts, nevents, 42);
    fprintf(stderr, "benchdata: generated %ld events over %d accounts in %.1f s\n", h.n, h.naccounts,
            secs_since(t0));
    t0 = tnow_ms();
    copy_events(&h);
    fprintf(stderr, "benchdata: copied into postgres in %.1f s\n", secs_since(t0));
    t0 = tnow_ms();
    publish_events(&h);
    fprintf(stderr, "benchdata: published to EVENTS in %.1f s\n", secs_since(t0));
    f = fopen(file, "w");
    if (f == NULL)
        tfail("unable to write '%s'", file);
    for (int i = 0; i < h.naccounts; i++)
        fprintf(f, "%s\n", h.accounts[i]);
    fclose(f);
    printf("events=%ld accounts=%d\n", h.n, h.naccounts);
    tgen_release(&h);
    return 0;
}

static int cmd_open(int n, const char *file)
{
    FILE *f = fopen(file, "w");
    const char *url = tenv("WRITER_URL");

    if (f == NULL)
        tfail("unable to write '%s'", file);
    for (int i = 0; i < n; i++) {
        struct thttp_resp r = {0};
        char body[160];
        json_t *doc;
        snprintf(body, sizeof body,
                 "{\"owner\":\"bench%d\",\"name\":\"acct%ld\",\"currency\":\"EUR\",\"overdraft_limit\":0}", i,
                 (long)time(NULL));
        if (thttp_request(&r, "POST", url, "/accounts", body, NULL, 10000) != 0 || r.status != 201)
            tfail("open account %d: status %d %s", i, r.status, r.body ? r.body : "");
        doc = thttp_json(&r);
        fprintf(f, "%s\n", json_string_value(json_object_get(doc, "account_id")));
        json_decref(doc);
        thttp_resp_release(&r);
    }
    fclose(f);
    return 0;
}

/* The last stream sequence of each partition (0: none). */
static void last_seqs(struct bus *b, uint64_t *last)
{
    for (int p = 0; p < EVENT_PARTITIONS; p++) {
        char subject[32];
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        snprintf(subject, sizeof subject, "events.%d", p);
        last[p] = js_GetLastMsg(&m, b->js, BUS_STREAM, subject, NULL, &jerr) == NATS_OK ? natsMsg_GetSequence(m) : 0;
        natsMsg_Destroy(m);
    }
}

/* Every partition's owner has recorded its last sequence in rm:part:<p>. */
static int drained(redisContext *rc, const uint64_t *last)
{
    for (int p = 0; p < EVENT_PARTITIONS; p++) {
        redisReply *r;
        uint64_t seq;
        if (last[p] == 0)
            continue;
        r = redisCommand(rc, "HGET rm:part:%d seq", p);
        seq = r != NULL && r->type == REDIS_REPLY_STRING ? strtoull(r->str, NULL, 10) : 0;
        freeReplyObject(r);
        if (seq < last[p])
            return 0;
    }
    return 1;
}

static long vm_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    long v = 0;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, strlen(field)) == 0)
            v = strtol(line + strlen(field) + 1, NULL, 10);
    if (f != NULL)
        fclose(f);
    return v;
}

static int cmd_drain(int workers, int timeout_s)
{
    struct bus b = {0};
    struct err e = {0};
    pid_t pids[16];
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    uint64_t total, last[EVENT_PARTITIONS];
    redisContext *rc = NULL;
    int64_t t0;
    long hwm = 0;
    int done = 0;

    if (workers < 1 || workers > 16)
        tfail("1..16 workers");
    if (bus_connect(&b, tenv("NATS_URL"), "bench-drain", 10000, &e) != ST_OK)
        tfail("nats: %s", e.msg);
    if (js_GetStreamInfo(&si, b.js, BUS_STREAM, NULL, &jerr) != NATS_OK)
        tfail("stream info (%d)", (int)jerr);
    total = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    last_seqs(&b, last);
    rc = redisConnect("127.0.0.1", atoi(tenv("REDIS_PORT")));
    if (rc == NULL || rc->err)
        tfail("redis");
    t0 = tnow_ms();
    for (int i = 0; i < workers; i++) {
        static const char *const args[] = {"run", NULL};
        pids[i] = tsvc_start("projector", args, NULL);
        tstack_guard(pids[i]);
    }
    while (secs_since(t0) < timeout_s) {
        usleep(20000);
        for (int i = 0; i < workers; i++) {
            long v = vm_kib(pids[i], "VmHWM:");
            hwm = v > hwm ? v : hwm;
        }
        if (drained(rc, last)) { /* the partition owners are past every message */
            done = 1;
            break;
        }
    }
    {
        double s = secs_since(t0);
        printf("events=%llu seconds=%.3f eps=%.1f drained=%d projector_hwm_kib=%ld\n", (unsigned long long)total,
               s, done ? (double)total / s : 0.0, done, hwm);
    }
    for (int i = 0; i < workers; i++) {
        tsvc_stop(pids[i], SIGTERM, 15000);
        tstack_unguard(pids[i]);
    }
    redisFree(rc);
    bus_release(&b);
    return done ? 0 : 1;
}

static int cmd_reset_read(void)
{
    redisContext *rc = redisConnect("127.0.0.1", atoi(tenv("REDIS_PORT")));
    redisReply *r;
    struct bus b = {0};
    struct err e = {0};
    jsErrCode jerr = 0;

    if (rc == NULL || rc->err)
        tfail("redis connect");
    r = redisCommand(rc, "FLUSHDB");
    freeReplyObject(r);
    /* a live, empty generation: the projectors then drain JetStream (the path measured here)
     * instead of finding no read model and rebuilding it from Postgres */
    r = redisCommand(rc, "SET rm:genseq 1");
    freeReplyObject(r);
    r = redisCommand(rc, "HSET rm:1:checkpoint position 0 at_ms 0 events 0");
    freeReplyObject(r);
    r = redisCommand(rc, "SET rm:current 1");
    freeReplyObject(r);
    redisFree(rc);
    if (bus_connect(&b, tenv("NATS_URL"), "bench-reset", 10000, &e) != ST_OK)
        tfail("nats: %s", e.msg);
    (void)js_DeleteConsumer(b.js, BUS_STREAM, BUS_CONSUMER, NULL, &jerr);
    bus_release(&b);
    return 0;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static int cmd_jsping(int n)
{
    struct bus b = {0};
    struct err e = {0};
    jsStreamConfig sc;
    jsErrCode jerr = 0;
    const char *subjects[] = {"benchping"};
    long long *us = calloc((size_t)n, sizeof *us);

    if (bus_connect(&b, tenv("NATS_URL"), "bench-ping", 10000, &e) != ST_OK)
        tfail("nats: %s", e.msg);
    jsStreamConfig_Init(&sc);
    sc.Name = "BENCHPING";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage; /* like EVENTS */
    (void)js_AddStream(NULL, b.js, &sc, NULL, &jerr);
    for (int i = 0; i < n; i++) {
        struct timespec a, z;
        jsPubAck *pa = NULL;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (js_Publish(&pa, b.js, "benchping", "{\"x\":1}", 7, NULL, &jerr) != NATS_OK)
            tfail("publish (%d)", (int)jerr);
        clock_gettime(CLOCK_MONOTONIC, &z);
        jsPubAck_Destroy(pa);
        us[i] = (z.tv_sec - a.tv_sec) * 1000000LL + (z.tv_nsec - a.tv_nsec) / 1000;
    }
    (void)js_DeleteStream(b.js, "BENCHPING", NULL, &jerr);
    qsort(us, (size_t)n, sizeof *us, cmp_ll);
    printf("p50_ms=%.3f p99_ms=%.3f\n", (double)us[n / 2] / 1000.0, (double)us[n * 99 / 100] / 1000.0);
    free(us);
    bus_release(&b);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    if (tenv("DATABASE_URL") == NULL) {
        fprintf(stderr, "benchdata: set CQRS_STACK_ENV to the stack's env file\n");
        return 2;
    }
    if (strcmp(cmd, "reset") == 0) {
        treset_state();
        return 0;
    }
    if (strcmp(cmd, "reset-read") == 0)
        return cmd_reset_read();
    if (strcmp(cmd, "open") == 0 && argc == 4)
        return cmd_open(atoi(argv[2]), argv[3]);
    if (strcmp(cmd, "seed") == 0 && argc == 5)
        return cmd_seed(atol(argv[2]), atoi(argv[3]), argv[4]);
    if (strcmp(cmd, "drain") == 0 && argc == 4)
        return cmd_drain(atoi(argv[2]), atoi(argv[3]));
    if (strcmp(cmd, "jsping") == 0 && argc == 3)
        return cmd_jsping(atoi(argv[2]) > 0 ? atoi(argv[2]) : 1000);
    if (strcmp(cmd, "check") == 0) {
        struct tcheck_stats st = {0};
        long bad = tcheck_wait_converged(argc > 2 ? atoi(argv[2]) : 60000, &st);
        printf("accounts=%ld events=%ld mismatches=%ld\n", st.accounts, st.events, bad);
        return bad == 0 ? 0 : 1;
    }
    fprintf(stderr, "usage: see the header of bench/benchdata.c\n");
    return 2;
}
