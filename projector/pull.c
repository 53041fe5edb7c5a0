/* A partition's pull consumer. The projector asks JetStream for at most one batch at a time
 * (PROJECTOR_BATCH messages, PROJECTOR_FETCH_BYTES bytes): a push consumer let flow control run
 * up to 32 MiB per partition ahead of a busy worker, and libnats' pending limit bounded that
 * only by dropping messages. So a partition holds the batch in hand plus at most one more: when
 * a fetch came back full (more is likely waiting) the next is requested at once, and JetStream
 * fills it while the batch is applied.
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
#define END_SLACK_MS 500 /* a request counts as ended this long after its expiry (none came) */
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
    int64_t ends_at;    /* monotonic ms */
};

status pull_open(struct pull **out, struct bus *b, int part, uint64_t start, int batch, int64_t max_bytes,
                 struct err *e)
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
    p->batch = batch;
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

static status request(struct pull *p, int wait_ms, struct err *e)
{
    char reply[128], body[160];
    int n = p->unbounded ? 1 : p->batch;
    natsStatus ns;

    p->req++;
    snprintf(reply, sizeof reply, "%s.%" PRIu64, p->inbox, p->req);
    /* no_wait with an expiry: answered as soon as something is delivered, else at the expiry */
    if (p->unbounded)
        snprintf(body, sizeof body, "{\"batch\":1,\"no_wait\":true,\"expires\":%lld}", (long long)wait_ms * 1000000);
    else
        snprintf(body, sizeof body, "{\"batch\":%d,\"max_bytes\":%lld,\"no_wait\":true,\"expires\":%lld}", n,
                 (long long)p->max_bytes, (long long)wait_ms * 1000000);
    ns = natsConnection_PublishRequest(p->bus->conn, p->next, reply, body, (int)strlen(body));
    if (ns != NATS_OK)
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "next message: %s", natsStatus_GetText(ns));
    p->open = 1;
    p->got = 0;
    p->asked = n;
    p->unbounded = 0;
    p->ends_at = svc_mono_ms() + wait_ms + END_SLACK_MS;
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

status pull_next(struct pull *p, natsMsg **msgs, int *n, int wait_ms, struct err *e)
{
    status st = ST_OK;

    *n = 0;
    if (!p->open)
        st = request(p, wait_ms, e);
    while (st == ST_OK && *n < p->batch && p->open) {
        natsMsg *m = NULL;
        int64_t left = p->ends_at - svc_mono_ms();
        natsStatus ns;
        int code;

        /* a request ends soon once it delivers (its batch, its bytes, or the stream's end with
         * no_wait), so it is waited for: small batches cost an apply each */
        ns = left > 0 ? natsSubscription_NextMsg(&m, p->sub, left) : NATS_TIMEOUT;
        if (ns == NATS_TIMEOUT) {
            if (left <= 0)
                p->open = 0; /* ended without a word (the byte bound met exactly) */
            break;
        }
        if (ns != NATS_OK)
            return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "next message: %s", natsStatus_GetText(ns));
        code = status_code(m);
        if (code == 0) {
            msgs[(*n)++] = m;
            /* an event says not which request brought it (its subject is the stream's), so it
             * counts for the open one: one of an ended request ends it early, at worst */
            p->ends_at = svc_mono_ms() + wait_ms + END_SLACK_MS; /* still delivering */
            if (++p->got == p->asked)
                p->open = 0;
            continue;
        }
        if (current(p, m)) {
            p->open = 0;
            if (code == 409 && p->got == 0) /* the next message alone exceeds max_bytes */
                p->unbounded = 1;
            else if (code != 404 && code != 408 && code != 409)
                st = err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "next message: status %d", code);
        }
        natsMsg_Destroy(m);
    }
    /* a full answer: more is likely waiting, so it is asked for while this batch is applied */
    if (st == ST_OK && !p->open && p->got == p->asked)
        st = request(p, wait_ms, e);
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
