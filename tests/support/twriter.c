/* Writer test helpers: HTTP commands with checked replies, event-store queries, the stream read back. */
#include "twriter.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "event.h"
#include "support.h"
#include "thttp.h"

json_t *tw_post(const char *base, const char *path, const char *body, const char *extra_headers,
                int expect_status)
{
    struct thttp_resp r;
    json_t *doc;

    if (base == NULL)
        base = tenv("WRITER_URL");
    if (thttp_request(&r, "POST", base, path, body, extra_headers, 15000) != 0)
        tfail("POST %s%s: no response", base, path);
    if (r.status != expect_status)
        tfail("POST %s %.300s: status %d, expected %d: %s", path, body != NULL ? body : "", r.status,
              expect_status, r.body);
    doc = thttp_json(&r);
    if (doc == NULL || !json_is_object(doc))
        tfail("POST %s: body is not a JSON object: %s", path, r.body);
    thttp_resp_release(&r);
    return doc;
}

void tw_reject(const char *base, const char *path, const char *body, const char *extra_headers,
               int expect_status, const char *code)
{
    PGconn *pg = tw_pg();
    struct tw_counts before, after;
    json_t *doc;

    tw_counts(pg, &before);
    doc = tw_post(base, path, body, extra_headers, expect_status);
    if (tw_str(doc, "error") == NULL || strcmp(tw_str(doc, "error"), code) != 0)
        tfail("POST %s %.300s: error %s, expected %s", path, body != NULL ? body : "",
              tw_str(doc, "error") != NULL ? tw_str(doc, "error") : "(none)", code);
    if (tw_str(doc, "message") == NULL || tw_str(doc, "message")[0] == '\0')
        tfail("POST %s: error %s without a message", path, code);
    thttp_assert_no_internals(path, doc);
    json_decref(doc);
    tw_counts(pg, &after);
    /* the outbox is left out: the relay empties it meanwhile, and its rows need events */
    if (after.events != before.events || after.accounts != before.accounts ||
        after.idempotency_keys != before.idempotency_keys)
        tfail("POST %s rejected with %s but wrote: events %lld -> %lld, accounts %lld -> %lld, "
              "idempotency keys %lld -> %lld",
              path, code, (long long)before.events, (long long)after.events, (long long)before.accounts,
              (long long)after.accounts, (long long)before.idempotency_keys, (long long)after.idempotency_keys);
    PQfinish(pg);
}

int64_t tw_open(char id[UUID_STR_SIZE], const char *owner, const char *name, const char *currency,
                int64_t overdraft_limit)
{
    char body[512];
    json_t *doc;
    int64_t version;

    snprintf(body, sizeof body,
             "{\"owner\":\"%s\",\"name\":\"%s\",\"currency\":\"%s\",\"overdraft_limit\":%lld}", owner,
             name, currency, (long long)overdraft_limit);
    doc = tw_post(NULL, "/accounts", body, NULL, 201);
    if (tw_str(doc, "account_id") == NULL || strlen(tw_str(doc, "account_id")) != UUID_STR_SIZE - 1)
        tfail("open %s/%s: no account_id", owner, name);
    snprintf(id, UUID_STR_SIZE, "%s", tw_str(doc, "account_id"));
    version = tw_int(doc, "version");
    json_decref(doc);
    return version;
}

json_t *tw_money(const char *account_id, const char *kind, int64_t amount, const char *description)
{
    char path[128], body[512];

    snprintf(path, sizeof path, "/accounts/%s/%s", account_id, kind);
    snprintf(body, sizeof body, "{\"amount\":%lld,\"description\":\"%s\"}", (long long)amount,
             description);
    return tw_post(NULL, path, body, NULL, 201);
}

int64_t tw_int(const json_t *doc, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(doc, key));
}

const char *tw_str(const json_t *doc, const char *key)
{
    return json_string_value(json_object_get(doc, key));
}

PGconn *tw_pg(void)
{
    PGconn *pg = PQconnectdb(tenv("DATABASE_URL"));

    if (PQstatus(pg) != CONNECTION_OK)
        tfail("connect to postgres: %s", PQerrorMessage(pg));
    return pg;
}

int64_t tw_scalar(PGconn *pg, const char *sql, const char *p1, const char *p2)
{
    const char *p[2] = {p1, p2};
    int n = p1 == NULL ? 0 : p2 == NULL ? 1 : 2;
    PGresult *res = PQexecParams(pg, sql, n, NULL, p, NULL, NULL, 0);
    int64_t v;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1)
        tfail("%s: %s", sql, PQerrorMessage(pg));
    v = PQgetisnull(res, 0, 0) ? 0 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

void tw_exec(PGconn *pg, const char *sql)
{
    PGresult *res = PQexec(pg, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("%s: %s", sql, PQerrorMessage(pg));
    PQclear(res);
}

void tw_counts(PGconn *pg, struct tw_counts *out)
{
    PGresult *res = PQexec(pg, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox), "
                               "(SELECT count(*) FROM accounts), (SELECT count(*) FROM idempotency_keys)");

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("count rows: %s", PQerrorMessage(pg));
    out->events = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    out->outbox = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    out->accounts = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    out->idempotency_keys = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    PQclear(res);
}

int64_t tw_check_gapless(PGconn *pg, const char *stream_id)
{
    const char *p[1] = {stream_id};
    PGresult *res = PQexecParams(pg, "SELECT stream_version FROM events WHERE stream_id = $1::uuid "
                                     "ORDER BY stream_version",
                                 1, NULL, p, NULL, NULL, 0);
    int n;

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("versions of %s: %s", stream_id, PQerrorMessage(pg));
    n = PQntuples(res);
    for (int i = 0; i < n; i++)
        if (strtoll(PQgetvalue(res, i, 0), NULL, 10) != i + 1)
            tfail("stream %s: version %s at place %d (a gap or a repeat)", stream_id,
                  PQgetvalue(res, i, 0), i + 1);
    PQclear(res);
    return n;
}

void tw_stream_read(struct tw_msg **out, long *count)
{
    struct bus b = {0};
    struct err e = {0};
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus ns;
    struct tw_msg *msgs = NULL;
    long n = 0;

    *out = NULL;
    *count = 0;
    if (bus_connect(&b, tenv("NATS_URL"), "test-stream-read", 10000, &e) != ST_OK)
        tfail("connect to nats: %s", e.msg);
    ns = js_GetStreamInfo(&si, b.js, BUS_STREAM, NULL, &jerr);
    if (ns != NATS_OK)
        tfail("stream info: %s (%d)", natsStatus_GetText(ns), (int)jerr);
    if (si->State.Msgs > 0) {
        msgs = calloc((size_t)si->State.Msgs, sizeof *msgs);
        if (msgs == NULL)
            tfail("out of memory");
    }
    for (uint64_t seq = si->State.FirstSeq; si->State.Msgs > 0 && seq <= si->State.LastSeq; seq++) {
        natsMsg *m = NULL;
        const char *id = NULL;
        struct event ev;
        struct tw_msg *t;

        jerr = 0;
        ns = js_GetMsg(&m, b.js, BUS_STREAM, seq, NULL, &jerr);
        if (ns == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr)
            continue; /* a deleted sequence */
        if (ns != NATS_OK)
            tfail("get message %llu: %s (%d)", (unsigned long long)seq, natsStatus_GetText(ns), (int)jerr);
        if (n >= (long)si->State.Msgs)
            tfail("the stream holds more messages than its info said");
        t = &msgs[n++];
        t->seq = seq;
        snprintf(t->subject, sizeof t->subject, "%s", natsMsg_GetSubject(m));
        if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id != NULL)
            snprintf(t->msg_id, sizeof t->msg_id, "%s", id);
        if (event_decode(&ev, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &e) != ST_OK)
            tfail("message %llu does not decode: %s", (unsigned long long)seq, e.msg);
        snprintf(t->event_id, sizeof t->event_id, "%s", ev.event_id);
        snprintf(t->stream_id, sizeof t->stream_id, "%s", ev.stream_id);
        t->stream_version = ev.stream_version;
        natsMsg_Destroy(m);
    }
    jsStreamInfo_Destroy(si);
    bus_release(&b);
    *out = msgs;
    *count = n;
}

#define BATCH_REQUEST_TIMEOUT_MS 20000
#define BATCH_THREADS_MAX 64

struct batch {
    const char *base;
    struct tw_call *calls;
    int n;
    int next; /* claimed under mu */
    pthread_mutex_t mu;
    pthread_barrier_t start;
};

static void *batch_client(void *arg)
{
    struct batch *b = arg;

    pthread_barrier_wait(&b->start);
    for (;;) {
        struct tw_call *c;
        struct thttp_resp r;
        char hv[16];
        int64_t t0;

        pthread_mutex_lock(&b->mu);
        c = b->next < b->n ? &b->calls[b->next++] : NULL;
        pthread_mutex_unlock(&b->mu);
        if (c == NULL)
            return NULL;
        t0 = tnow_ms();
        (void)thttp_request(&r, "POST", b->base, c->path, c->body, c->headers[0] ? c->headers : NULL,
                            BATCH_REQUEST_TIMEOUT_MS);
        c->elapsed_ms = tnow_ms() - t0;
        c->status = r.status;
        c->replayed = thttp_header(&r, "Idempotent-Replayed", hv, sizeof hv) != NULL && strcmp(hv, "true") == 0;
        c->doc = thttp_json(&r);
        c->raw = r.body; /* ownership moves to the call */
        r.body = NULL;
        thttp_resp_release(&r);
    }
}

int64_t tw_run_batch(const char *base, struct tw_call *calls, int n, int nthreads)
{
    struct batch b = {.base = base, .calls = calls, .n = n};
    pthread_t th[BATCH_THREADS_MAX];
    int64_t t0;

    if (nthreads < 1 || nthreads > BATCH_THREADS_MAX)
        tfail("tw_run_batch: %d threads", nthreads);
    pthread_mutex_init(&b.mu, NULL);
    pthread_barrier_init(&b.start, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, batch_client, &b) != 0)
            tfail("pthread_create");
    pthread_barrier_wait(&b.start);
    t0 = tnow_ms();
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    t0 = tnow_ms() - t0;
    pthread_barrier_destroy(&b.start);
    pthread_mutex_destroy(&b.mu);
    return t0;
}

void tw_calls_free(struct tw_call *calls, int n)
{
    for (int i = 0; calls != NULL && i < n; i++) {
        free(calls[i].raw);
        json_decref(calls[i].doc);
    }
    free(calls);
}

int64_t tw_outbox_rows(PGconn *pg)
{
    return tw_scalar(pg, "SELECT count(*) FROM outbox", NULL, NULL);
}

void tw_wait_outbox_empty(PGconn *pg, int timeout_ms)
{
    int64_t deadline = tnow_ms() + timeout_ms, n = 0;

    while (tnow_ms() < deadline) {
        n = tw_outbox_rows(pg);
        if (n == 0)
            return;
        usleep(50000);
    }
    tfail("the outbox still holds %lld rows after %d ms", (long long)n, timeout_ms);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The stream against the events table: every event exactly once (message id = event id, on its
 * partition's subject), nothing else, and each account's events in version order. Returns
 * the number of messages. */
long tw_check_stream_exactly_once(PGconn *pg)
{
    struct tw_msg *msgs = NULL;
    long n = 0;
    PGresult *res;
    int rows;
    const char **ids;

    tw_stream_read(&msgs, &n);
    res = PQexec(pg, "SELECT event_id::text, stream_id::text, stream_version FROM events ORDER BY event_id");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        tfail("read events: %s", PQerrorMessage(pg));
    rows = PQntuples(res);
    ids = malloc(sizeof *ids * (size_t)(n > 0 ? n : 1));
    if (ids == NULL)
        tfail("out of memory");
    for (long i = 0; i < n; i++) {
        char subject[32];
        if (strcmp(msgs[i].msg_id, msgs[i].event_id) != 0)
            tfail("message %llu: Nats-Msg-Id %s for event %s", (unsigned long long)msgs[i].seq,
                  msgs[i].msg_id, msgs[i].event_id);
        event_subject(msgs[i].stream_id, EVENT_PARTITIONS, subject, sizeof subject);
        if (strcmp(msgs[i].subject, subject) != 0)
            tfail("message %llu: subject %s, expected %s", (unsigned long long)msgs[i].seq, msgs[i].subject,
                  subject);
        ids[i] = msgs[i].event_id;
    }
    qsort(ids, (size_t)n, sizeof *ids, cmp_str);
    for (long i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            tfail("event %s is in the stream twice", ids[i]);
    for (long i = 0, j = 0; i < rows || j < n;) {
        int c = i >= rows ? 1 : j >= n ? -1 : strcmp(PQgetvalue(res, i, 0), ids[j]);
        if (c < 0)
            tfail("event %s (stream %s version %s) never reached the stream", PQgetvalue(res, i, 0),
                  PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
        if (c > 0)
            tfail("the stream holds event %s that the events table lacks", ids[j]);
        i++;
        j++;
    }
    /* per account, in stream order: 1, 2, 3, ... */
    for (long i = 0; i < n; i++) {
        int64_t prev = 0;
        int seen_before = 0;
        for (long k = 0; k < i && !seen_before; k++)
            seen_before = strcmp(msgs[k].stream_id, msgs[i].stream_id) == 0;
        if (seen_before)
            continue;
        for (long k = i; k < n; k++) {
            if (strcmp(msgs[k].stream_id, msgs[i].stream_id) != 0)
                continue;
            if (msgs[k].stream_version != prev + 1)
                tfail("stream %s: version %lld follows %lld in the stream (seq %llu)", msgs[i].stream_id,
                      (long long)msgs[k].stream_version, (long long)prev, (unsigned long long)msgs[k].seq);
            prev = msgs[k].stream_version;
        }
    }
    PQclear(res);
    free(ids);
    free(msgs);
    return n;
}
