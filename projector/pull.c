/* A partition's pull consumer. The projector asks JetStream for at most one batch at a time
 * (PROJECTOR_BATCH messages, PROJECTOR_FETCH_BYTES bytes): a push consumer let flow control run
 * up to 32 MiB per partition ahead of a busy worker, and libnats' pending limit bounded that
 * only by dropping messages. So a partition holds the batch in hand plus at most one request's
 * worth more.
 *
 * The request stands (issue 14): it is not no_wait, so it does not end when it has delivered
 * what the stream held; it keeps delivering each new event as it is stored, until its batch or
 * bytes are used up or it expires (STANDING_MS), and then it is asked again at once. The
 * projector takes whatever has arrived and applies it: at the live tail an event costs no
 * request of its own. While the consumer is behind (the last message says more is pending) the
 * batch waits for the rest of what the request brings, so a backlog still drains in full
 * batches. nats-server 2.9.10 (consumer.go): a request that is not no_wait is answered by
 * events until batch or max_bytes is reached (no status when the batch is full; 409 "Message
 * Size Exceeds MaxBytes" when the next event does not fit), 408 at its expiry, and, with
 * idle_heartbeat, a 100 status after each heartbeat interval without a delivery; a request whose
 * reply subject lost its subscriber is dropped before it is delivered to. A request heard from
 * neither by an event nor by a heartbeat for SILENT_MS is taken as lost (a server restart, or
 * the byte bound met exactly, which ends it without a word) and asked again, after a look at
 * the consumer (consumer_there: a restart loses it). A request is also over, 408 or not, at its
 * own expiry: nats-server 2.9.10 does not always send the 408, and waiting for silence instead
 * held a partition's events back for up to SILENT_MS (measured: 4 of 16 partitions' requests
 * expired without a word at once, every read of those partitions waited 0.6-1.4 s, and at
 * 2,000 commands/s so did every client behind them). The server's clock for a request starts
 * when the request reaches it, after the client's, and its expiry is processed later still, so
 * the next request is already waiting behind the old one when that ends: no gap at the live
 * tail, and for those few ms two requests stand (the old one's late 408 is not the current
 * request's: dropped). Waiting 50 ms past the expiry instead held the events of a partition
 * whose 408 did not come back for up to 50 ms every 5 s (max_ms of e2e runs at 50-56 ms).
 *
 * The requests are sent by hand (not natsSubscription_Fetch: libnats 3.4.1's fetch overruns its
 * array when messages of an earlier fetch are still queued, which a bytes bound causes). Each
 * request has a reply subject of its own (<inbox>.<n>), so the status that ends an older one
 * (408 expired, 404, 409 over the byte bound) is told apart; events are taken in arrival order
 * whichever request brought them (the consumer delivers each once, in stream order). */
#include "pull.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc.h"

#define INACTIVE_NS (60 * 1000000000LL) /* a consumer nobody fetched from this long is deleted */
#define STANDING_MS 5000  /* a standing request's expiry (asked again at once after it) */
#define HEARTBEAT_MS 500  /* the server's idle heartbeat on it */
#define SILENT_MS (2 * HEARTBEAT_MS + 500) /* unheard this long: the request is gone */
#define UNSUB_FLUSH_MS 1000 /* see pull_close() */
#define UNSUB_GRACE_MS 200

struct pull {
    struct bus *bus;
    natsSubscription *sub;
    natsInbox *inbox;
    char next[160];     /* the consumer's request subject */
    char name[64];      /* the consumer */
    int batch;
    int64_t max_bytes;
    uint64_t req;       /* the newest request's number */
    int open;           /* it has not ended */
    int got;            /* messages it brought */
    int asked;          /* messages it asked for */
    int unbounded;      /* the next message is larger than max_bytes: ask for it alone */
    int unheard;        /* the last request ended in silence: is the consumer still there? */
    int64_t ends_at;    /* monotonic ms: unheard since SILENT_MS */
    int64_t expires_at; /* monotonic ms: past its expiry */
};

status pull_open(struct pull **out, struct bus *b, int part, uint64_t start, int64_t max_bytes, struct err *e)
{
    struct pull *p = calloc(1, sizeof *p);
    jsConsumerConfig cc;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    char subject[32], wild[128];
    natsStatus ns;
    status st = ST_OK;

    *out = NULL;
    if (p == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    p->bus = b;
    p->batch = 1;
    p->max_bytes = max_bytes;
    snprintf(subject, sizeof subject, "events.%d", part);
    ns = natsInbox_Create(&p->inbox);
    if (ns == NATS_OK) {
        snprintf(wild, sizeof wild, "%s.*", p->inbox);
        ns = natsConnection_SubscribeSync(&p->sub, b->conn, wild);
    }
    if (ns != NATS_OK) {
        st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "subscribe '%s': %s", subject, natsStatus_GetText(ns));
        goto cleanup;
    }
    jsConsumerConfig_Init(&cc);
    cc.FilterSubject = subject;
    cc.AckPolicy = js_AckNone;
    cc.MaxDeliver = 1;
    cc.MemoryStorage = true; /* its state is the next sequence only: nothing worth a file */
    cc.InactiveThreshold = INACTIVE_NS;
    if (start > 1) {
        cc.DeliverPolicy = js_DeliverByStartSequence;
        cc.OptStartSeq = start;
    } else {
        cc.DeliverPolicy = js_DeliverAll;
    }
    ns = js_AddConsumer(&ci, b->js, BUS_STREAM, &cc, NULL, &jerr);
    if (ns != NATS_OK || ci == NULL || ci->Name == NULL) {
        st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "consumer of '%s': %s (%d)", subject,
                      natsStatus_GetText(ns), (int)jerr);
        goto cleanup;
    }
    snprintf(p->name, sizeof p->name, "%s", ci->Name);
    snprintf(p->next, sizeof p->next, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", BUS_STREAM, p->name);
cleanup:
    jsConsumerInfo_Destroy(ci);
    if (st != ST_OK)
        pull_close(&p);
    *out = p;
    return st;
}

void pull_set_batch(struct pull *p, int batch)
{
    p->batch = batch;
}

static status request(struct pull *p, struct err *e)
{
    char reply[128], body[192];
    int n = p->unbounded ? 1 : p->batch;
    natsStatus ns;

    p->req++;
    snprintf(reply, sizeof reply, "%s.%" PRIu64, p->inbox, p->req);
    if (p->unbounded)
        snprintf(body, sizeof body, "{\"batch\":1,\"expires\":%lld,\"idle_heartbeat\":%lld}",
                 STANDING_MS * 1000000LL, HEARTBEAT_MS * 1000000LL);
    else
        snprintf(body, sizeof body, "{\"batch\":%d,\"max_bytes\":%lld,\"expires\":%lld,\"idle_heartbeat\":%lld}", n,
                 (long long)p->max_bytes, STANDING_MS * 1000000LL, HEARTBEAT_MS * 1000000LL);
    ns = natsConnection_PublishRequest(p->bus->conn, p->next, reply, body, (int)strlen(body));
    if (ns != NATS_OK)
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "next message: %s", natsStatus_GetText(ns));
    p->open = 1;
    p->got = 0;
    p->asked = n;
    p->unbounded = 0;
    p->ends_at = svc_mono_ms() + SILENT_MS;
    p->expires_at = svc_mono_ms() + STANDING_MS;
    return ST_OK;
}

/* The status code of a status message (no payload, a Status header), 0 for an event. */
static int status_code(natsMsg *m)
{
    const char *v = NULL;

    if (natsMsg_GetDataLength(m) > 0 || natsMsgHeader_Get(m, "Status", &v) != NATS_OK || v == NULL)
        return 0;
    return atoi(v);
}

/* Whether the status m answers the newest request. */
static int current(const struct pull *p, natsMsg *m)
{
    char reply[128];

    snprintf(reply, sizeof reply, "%s.%" PRIu64, p->inbox, p->req);
    return strcmp(natsMsg_GetSubject(m), reply) == 0;
}

/* Messages the stream holds for the consumer after m (0 when unknown). */
static uint64_t pending_after(natsMsg *m)
{
    jsMsgMetaData *meta = NULL;
    uint64_t pending = 0;

    if (natsMsg_GetMetaData(&meta, m) == NATS_OK)
        pending = meta->NumPending;
    jsMsgMetaData_Destroy(meta);
    return pending;
}

/* After a request ended in silence: a nats-server that restarted lost the consumer (memory
 * storage), and a request to a consumer that is gone is answered by nothing, not even a 404, so
 * asking again would wait in silence for ever while only the catch-up sweep applies events. A
 * consumer gone is an error for the caller, which opens a new one from the recorded sequence;
 * a failed look (NATS down, a timeout) is not: the request is simply asked again. */
static status consumer_there(struct pull *p, struct err *e)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus ns = js_GetConsumerInfo(&ci, p->bus->js, BUS_STREAM, p->name, NULL, &jerr);

    jsConsumerInfo_Destroy(ci);
    if (ns == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr)
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable",
                        "next message: consumer '%s' is gone (nats-server restarted?)", p->name);
    if (ns == NATS_OK)
        p->unheard = 0;
    return ST_OK;
}

status pull_next(struct pull *p, natsMsg **msgs, int *n, int wait_ms, struct err *e)
{
    int64_t give_up = svc_mono_ms() + wait_ms;
    int behind = 0; /* more is pending on the server: this request brings it at once */
    status st = ST_OK;

    *n = 0;
    if (!p->open)
        st = request(p, e);
    while (st == ST_OK && *n < p->batch && p->open) {
        natsMsg *m = NULL;
        int64_t now = svc_mono_ms(), wait, over = p->ends_at < p->expires_at ? p->ends_at : p->expires_at;
        natsStatus ns;
        int code;

        /* the first message is waited for; after it, only what has arrived (the live tail) or,
         * while the consumer is behind, what the request is still delivering */
        if (*n == 0)
            wait = (give_up < over ? give_up : over) - now;
        else
            wait = behind ? over - now : 0;
        ns = natsSubscription_NextMsg(&m, p->sub, wait > 0 ? wait : 0);
        if (ns == NATS_TIMEOUT) {
            if (svc_mono_ms() >= p->expires_at) {
                p->open = 0; /* expired without its 408 (a late one is not current: dropped) */
                break;
            }
            if (svc_mono_ms() >= p->ends_at) {
                p->open = 0; /* unheard: lost, or ended without a word (the byte bound met exactly) */
                p->unheard = 1;
                break;
            }
            if (*n > 0 && !behind && pending_after(msgs[*n - 1]) > 0) {
                behind = 1;
                continue;
            }
            break;
        }
        if (ns != NATS_OK)
            return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "next message: %s", natsStatus_GetText(ns));
        code = status_code(m);
        if (code == 0) {
            msgs[(*n)++] = m;
            behind = 0; /* asked again when the queue runs dry */
            /* an event says not which request brought it (its subject is the stream's), so it
             * counts for the open one: one of an ended request ends it early, at worst */
            p->ends_at = svc_mono_ms() + SILENT_MS;
            if (++p->got == p->asked)
                p->open = 0;
            continue;
        }
        if (current(p, m)) {
            p->ends_at = svc_mono_ms() + SILENT_MS;
            if (code == 100) { /* idle heartbeat: the request stands */
                natsMsg_Destroy(m);
                continue;
            }
            p->open = 0;
            if (code == 409 && p->got == 0) /* the next message alone exceeds max_bytes */
                p->unbounded = 1;
            else if (code != 404 && code != 408 && code != 409)
                st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "next message: status %d", code);
        }
        natsMsg_Destroy(m);
    }
    if (st == ST_OK && p->unheard && *n == 0)
        st = consumer_there(p, e);
    /* used up, expired or lost: the next request stands while this batch is applied */
    if (st == ST_OK && !p->open)
        st = request(p, e);
    return st;
}

/* libnats 3.4.1 can crash when a subscription is destroyed while its read loop still processes
 * a message for it (nats.c issue #637, fixed in 3.6.0 by PR #638: "malloc_consolidate():
 * unaligned fastbin chunk" at hand-over here). So: UNSUB first (no new message is routed to
 * it), then a flush (the PONG is read after any message the read loop held for it), then
 * destroy; if the flush fails, a grace period stands in for it. */
void pull_close(struct pull **pp)
{
    struct pull *p = *pp;

    if (p == NULL)
        return;
    *pp = NULL;
    if (p->sub != NULL) {
        (void)natsSubscription_Unsubscribe(p->sub);
        if (natsConnection_FlushTimeout(p->bus->conn, UNSUB_FLUSH_MS) != NATS_OK)
            svc_pause_ms(UNSUB_GRACE_MS);
        natsSubscription_Destroy(p->sub);
    }
    /* best effort (the server deletes it after INACTIVE_NS anyway); not while disconnected */
    if (p->name[0] != '\0' && natsConnection_Status(p->bus->conn) == NATS_CONN_STATUS_CONNECTED) {
        jsErrCode jerr = 0;
        (void)js_DeleteConsumer(p->bus->js, BUS_STREAM, p->name, NULL, &jerr);
    }
    natsInbox_Destroy(p->inbox);
    free(p);
}
