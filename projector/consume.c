/* Consumption: the JetStream pull consumer, fetching batches and acknowledging each message
 * only once its effect is durable in Redis (or it is parked). */
#include "consume.h"

#include <stdlib.h>

#include "log.h"
#include "svc.h"

#define BACKOFF_MAX_MS 5000
#define NAK_DELAY_MS 1000
#define MAX_ACK_PENDING 20000

/* Up to batch messages, returning as soon as what is there has been delivered. The simple
 * natsSubscription_Fetch keeps a pull open until the whole batch arrives or wait_ms passes, so
 * under a light load every event waited up to wait_ms: here a no-wait pull with an expiry asks
 * the server to wait for the first message only. */
natsStatus cs_fetch(natsSubscription *sub, natsMsgList *list, int batch, int wait_ms)
{
    jsFetchRequest req;

    jsFetchRequest_Init(&req);
    req.Batch = batch;
    req.NoWait = true;
    req.Expires = (int64_t)wait_ms * 1000000;
    return natsSubscription_FetchRequest(list, sub, &req);
}

/* Sleeps ms in slices, telling JetStream the batch in hand is still being worked on so it is
 * not redelivered to another worker while a dependency is down. */
static void wait_in_progress(natsMsgList *list, int ms, int ack_wait_ms, int64_t *last_progress)
{
    int64_t end = svc_mono_ms() + ms;

    while (svc_mono_ms() < end) {
        if (list != NULL && svc_mono_ms() - *last_progress >= ack_wait_ms / 3) {
            for (int i = 0; i < list->Count; i++)
                (void)natsMsg_InProgress(list->Msgs[i], NULL);
            *last_progress = svc_mono_ms();
        }
        svc_pause_ms(100);
    }
}

/* The durable pull consumer every worker shares. */
status cs_ensure_consumer(struct bus *b, const struct cfg *c, struct err *e)
{
    jsConsumerConfig cc;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus ns;

    jsConsumerConfig_Init(&cc);
    cc.Durable = BUS_CONSUMER;
    /* every partition subject: any worker may get any account, the CAS makes that safe */
    cc.FilterSubject = BUS_SUBJECTS;
    /* explicit: a message is done only when its effect is in Redis (or it is parked) */
    cc.AckPolicy = js_AckExplicit;
    /* a fresh consumer (new deployment, reset read side) must see the whole stream */
    cc.DeliverPolicy = js_DeliverAll;
    /* how long a worker may hold a message before JetStream hands it to another: long enough
     * for a batch with gap repair; a worker waiting on Redis sends InProgress meanwhile */
    cc.AckWait = (int64_t)c->projector_ack_wait_ms * 1000000;
    /* -1 (unlimited) by default: a message that cannot be applied yet is retried, never
     * dropped; poison is terminated explicitly instead of exhausting deliveries */
    cc.MaxDeliver = c->projector_max_deliver;
    /* room for several workers' batches in flight; the per-account CAS, not ordering,
     * provides correctness, so a large window costs nothing but memory on the server */
    cc.MaxAckPending = MAX_ACK_PENDING;
    ns = js_AddConsumer(&ci, b->js, BUS_STREAM, &cc, NULL, &jerr);
    if (ns != NATS_OK) {
        /* it exists with other settings (e.g. a changed PROJECTOR_ACK_WAIT_MS): update it */
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        jerr = 0;
        ns = js_UpdateConsumer(&ci, b->js, BUS_STREAM, &cc, NULL, &jerr);
    }
    jsConsumerInfo_Destroy(ci);
    if (ns != NATS_OK)
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "consumer '%s': %s (%d)", BUS_CONSUMER,
                        natsStatus_GetText(ns), (int)jerr);
    return ST_OK;
}

status cs_subscribe(natsSubscription **sub, struct bus *b, struct err *e)
{
    jsSubOptions so;
    jsErrCode jerr = 0;
    natsStatus ns;

    jsSubOptions_Init(&so);
    so.Stream = BUS_STREAM;
    so.Consumer = BUS_CONSUMER; /* bind to the consumer made by ensure_consumer */
    so.ManualAck = true;
    ns = js_PullSubscribe(sub, b->js, BUS_SUBJECTS, BUS_CONSUMER, NULL, &so, &jerr);
    if (ns != NATS_OK)
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "pull subscribe: %s (%d)",
                        natsStatus_GetText(ns), (int)jerr);
    return ST_OK;
}

static uint64_t msg_seq(natsMsg *m)
{
    jsMsgMetaData *meta = NULL;
    uint64_t seq = 0;

    if (natsMsg_GetMetaData(&meta, m) == NATS_OK)
        seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
    return seq;
}

/* Projects one fetched batch and acks it; retries (without acking) while Redis or Postgres is
 * down. The messages stay owned by list. */
void cs_handle_batch(struct pj *p, const struct cfg *c, natsMsgList *list)
{
    struct pj_item *items = calloc((size_t)list->Count, sizeof *items);
    int64_t last_progress = svc_mono_ms();
    struct err e;
    status st = ST_UNAVAILABLE;
    long ack = 0, term = 0, nak = 0;

    if (items == NULL) {
        log_error("out of memory for a batch of %d: redelivering", list->Count);
        for (int i = 0; i < list->Count; i++)
            (void)natsMsg_Nak(list->Msgs[i], NULL);
        goto cleanup;
    }
    for (int i = 0; i < list->Count; i++) {
        natsMsg *m = list->Msgs[i];
        pj_item_decode(&items[i], natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), msg_seq(m));
    }
    for (int attempt = 0;; attempt++) {
        err_clear(&e);
        st = pj_process(p, items, list->Count, 0, &e);
        if (st == ST_OK)
            break;
        log_warn("batch of %d not applied (attempt %d): %s", list->Count, attempt + 1, e.msg);
        if (svc_stop_requested && attempt >= 2) {
            /* stopping and still failing: hand the batch back rather than hang the shutdown */
            for (int i = 0; i < list->Count; i++)
                (void)natsMsg_Nak(list->Msgs[i], NULL);
            log_warn("stopping: %d messages handed back for redelivery", list->Count);
            goto cleanup;
        }
        wait_in_progress(list, pj_backoff_ms(attempt, BACKOFF_MAX_MS), c->projector_ack_wait_ms,
                         &last_progress);
    }
    /* only now is every effect durable in Redis (or parked): acknowledge */
    for (int i = 0; i < list->Count; i++) {
        natsMsg *m = list->Msgs[i];
        switch (items[i].disp) {
        case PJ_ACK:
            (void)natsMsg_Ack(m, NULL);
            ack++;
            break;
        case PJ_TERM:
            (void)natsMsg_Term(m, NULL);
            term++;
            break;
        default:
            (void)natsMsg_NakWithDelay(m, NAK_DELAY_MS, NULL);
            nak++;
            break;
        }
    }
    log_debug("batch of %d: %ld acked, %ld terminated, %ld redelivered later", list->Count, ack, term, nak);
cleanup:
    if (items != NULL)
        for (int i = 0; i < list->Count; i++)
            pj_item_release(&items[i]);
    free(items);
}

