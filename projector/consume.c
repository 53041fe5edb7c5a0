/* Consumption: the owner of partition p reads events.<p> with an ordered consumer (no acks, in
 * stream order) that starts after the sequence recorded in Redis (rm:part:<p>), so one process
 * sees each account's events in order and gap repair is only the safety net. What is applied
 * is recorded by the apply script itself (the seq moves with the read models, fenced by the
 * owner's epoch), so a restart or a hand-over resumes exactly where the models are:
 * - claim: the claim script installs our epoch (refused when a newer owner's is there) and
 *   returns the seq to start after;
 * - a batch is applied until every item is settled (retried as a whole while Redis or Postgres
 *   fail, or an item waits): nothing is skipped, nothing needs acknowledging;
 * - refused by a newer epoch: the thread exits (fenced), the caller forgets the partition;
 * - the store went back in time (seq or epoch below ours): claim again, resume after the seq
 *   the store holds, and everything after it is projected again (duplicates are no-ops); the
 *   views and generations the thread remembers (engine.h) are forgotten then;
 * - memory: a pull consumer (pull.c) brings at most one batch per fetch, bounded in messages
 *   (PROJECTOR_BATCH) and bytes (PROJECTOR_FETCH_BYTES), with the next fetched while a batch is
 *   applied, so a partition holds at most two batches. A hole in the consumer sequence (not
 *   expected: the consumer delivers each message once) ends the batch before it, and the
 *   partition subscribes again after what the batch applied. */
#include "consume.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "batch.h"
#include "engine.h"
#include "log.h"
#include "pull.h"
#include "rds.h"
#include "readmodel.h"
#include "svc.h"
#include "vcache.h"

#define BACKOFF_MAX_MS 5000
#define RETRY_DELAY_MS 200 /* an item waits (no model yet, contended): retry the batch */
#define FIRST_WAIT_MS 200  /* how long a pull waits for the first message (stop latency) */
#define STATS_EVERY_MS 1000

struct batch {
    natsMsg **msgs;
    struct pj_item *items;
    int n, cap;
    uint64_t next_dseq; /* the consumer sequence the next message must have (0: any) */
    int hole;           /* a message was lost in the library: subscribe again after the batch */
};

static void batch_clear(struct batch *b)
{
    for (int i = 0; i < b->n; i++) {
        pj_item_release(&b->items[i]);
        natsMsg_Destroy(b->msgs[i]);
    }
    b->n = 0;
}

static uint64_t msg_meta(natsMsg *m, uint64_t *pending, int64_t *ts_ns, uint64_t *dseq)
{
    jsMsgMetaData *meta = NULL;
    uint64_t seq = 0;

    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
        seq = meta->Sequence.Stream;
        if (pending != NULL)
            *pending = meta->NumPending;
        if (ts_ns != NULL)
            *ts_ns = meta->Timestamp;
        if (dseq != NULL)
            *dseq = meta->Sequence.Consumer;
    }
    jsMsgMetaData_Destroy(meta);
    return seq;
}

/* Installs our epoch in rm:part:<p>; reset >= 0 also rewrites the seq. *fenced when a newer
 * owner's epoch is there. */
static status claim(struct cs_part *w, struct pj *p, struct rm_fence *f, long long reset,
                    int *fenced, struct err *e)
{
    char key[RM_KEY_SIZE];
    redisReply *r;
    status st;

    *fenced = 0;
    st = pj_redis(p, e);
    if (st != ST_OK)
        return st;
    rm_key_partition(key, sizeof key, w->part);
    r = rds_command(p->rc, "EVAL %s 1 %s %" PRIu64 " %lld %s %lld", rm_claim_script(), key, w->epoch,
                    reset, w->worker, (long long)pj_now_ms());
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[2]->type != REDIS_REPLY_INTEGER) {
        st = pj_redis_failed(p, r, e, "claim partition %d", w->part);
    } else if (r->element[0]->integer < 0) {
        *fenced = 1;
        f->held_epoch = (uint64_t)r->element[1]->integer;
    } else {
        f->expect_seq = (uint64_t)r->element[2]->integer;
    }
    freeReplyObject(r);
    return st;
}

status cs_max_epoch(redisContext *rc, int nparts, uint64_t *max, struct err *e)
{
    status st = ST_OK;

    *max = 0;
    if (rc == NULL)
        return err_set(e, ST_UNAVAILABLE, "no redis connection");
    for (int p = 0; p < nparts; p++) {
        char key[RM_KEY_SIZE];
        rm_key_partition(key, sizeof key, p);
        if (redisAppendCommand(rc, "HGET %s epoch", key) != REDIS_OK)
            return err_set(e, ST_UNAVAILABLE, "redis: %s", rc->errstr);
    }
    for (int p = 0; p < nparts; p++) {
        redisReply *r = NULL;
        if (redisGetReply(rc, (void **)&r) != REDIS_OK || r == NULL) {
            freeReplyObject(r);
            return err_set(e, ST_UNAVAILABLE, "redis: %s", rc->errstr);
        }
        if (r->type == REDIS_REPLY_STRING && strtoull(r->str, NULL, 10) > *max)
            *max = strtoull(r->str, NULL, 10);
        else if (r->type == REDIS_REPLY_ERROR)
            st = err_set(e, ST_UNAVAILABLE, "redis: %s", r->str);
        freeReplyObject(r);
    }
    return st;
}

/* The stream's last sequence: a checkpoint beyond it means the stream was recreated. */
static status stream_last(struct cs_part *w, uint64_t *last, struct err *e)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus ns = js_GetStreamInfo(&si, w->bus->js, BUS_STREAM, NULL, &jerr);

    if (ns != NATS_OK)
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "stream info: %s (%d)",
                        natsStatus_GetText(ns), (int)jerr);
    *last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return ST_OK;
}

/* Up to the batch size of messages, waiting only for the first; it stops before a hole in the
 * consumer sequence (b->hole: what the batch holds is contiguous). */
static int batch_now(const struct cs_part *w)
{
    return pj_partition_batch(w->cfg->projector_batch, w->cfg->projector_worker_events,
                              w->share != NULL ? atomic_load(w->share) : 1);
}

static status collect(struct cs_part *w, struct pull *pl, struct batch *b, struct err *e)
{
    int want = batch_now(w), got = 0;
    status st;

    if (b->cap < want) {
        natsMsg **m = realloc(b->msgs, (size_t)want * sizeof *m);
        struct pj_item *it = m != NULL ? realloc(b->items, (size_t)want * sizeof *it) : NULL;
        if (m != NULL)
            b->msgs = m;
        if (it == NULL)
            return err_set(e, ST_INTERNAL, "out of memory for a batch of %d", want);
        b->items = it;
        b->cap = want;
    }
    pull_set_batch(pl, want); /* never more than b->msgs holds */
    st = pull_next(pl, b->msgs, &got, FIRST_WAIT_MS, e);
    for (int i = 0; i < got; i++) {
        natsMsg *m = b->msgs[i];
        uint64_t seq, dseq = 0;

        b->msgs[i] = NULL;
        if (b->hole) {
            natsMsg_Destroy(m);
            continue;
        }
        seq = msg_meta(m, NULL, NULL, &dseq);
        if (b->next_dseq != 0 && dseq != b->next_dseq) {
            natsMsg_Destroy(m); /* a message before it was lost (or the consumer reset) */
            b->hole = 1;
            continue;
        }
        b->next_dseq = dseq + 1;
        b->msgs[b->n] = m;
        pj_item_decode(&b->items[b->n], natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), seq);
        b->n++;
    }
    return st;
}

static int settled(const struct batch *b)
{
    for (int i = 0; i < b->n; i++)
        if (b->items[i].disp != PJ_ACK && b->items[i].disp != PJ_TERM)
            return 0;
    return 1;
}

/* Lag of the partition into rm:part:<p> for status, and how far its consumer got (the highest
 * event position applied, at_ms: when it said so) for the catch-up sweep, which leaves what the
 * consumer has not reached to it (sweep.c). At most once a second; not fenced: only figures, the
 * next owner overwrites them. */
static void record_lag(struct cs_part *w, struct pj *p)
{
    char key[RM_KEY_SIZE];
    redisReply *r;

    if (p->rc == NULL)
        return;
    rm_key_partition(key, sizeof key, w->part);
    r = rds_command(p->rc, "HSET %s pending %" PRIu64 " lag_ms %lld pos %lld at_ms %lld", key,
                    atomic_load(&w->pending), (long long)atomic_load(&w->lag_ms),
                    (long long)atomic_load(&w->pos), (long long)pj_now_ms());
    freeReplyObject(r);
}

/* The thread's counters, for the worker's logs and metrics. */
static void publish_counts(struct cs_part *w, const struct pj *p)
{
    atomic_store(&w->applied, p->applied);
    atomic_store(&w->gap_events, p->gap_events);
    atomic_store(&w->conflicts, p->conflicts);
    atomic_store(&w->duplicates, p->duplicates);
    atomic_store(&w->parked, p->parked);
    atomic_store(&w->strays, p->strays);
    atomic_store(&w->holes, p->holes);
}

static void progress(struct cs_part *w, const struct batch *b)
{
    uint64_t pending = 0;
    int64_t ts = 0;

    (void)msg_meta(b->msgs[b->n - 1], &pending, &ts, NULL);
    for (int i = 0; i < b->n; i++)
        if (b->items[i].ev.position > atomic_load(&w->pos))
            atomic_store(&w->pos, b->items[i].ev.position);
    atomic_store(&w->pending, pending);
    atomic_store(&w->lag_ms, pending > 0 && ts > 0 ? pj_now_ms() - ts / 1000000 : 0);
}

/* rm:part:<p> holds an older seq or another epoch than this owner wrote (a newer epoch is left to
 * the next apply, which refuses and drops the partition). */
static int store_behind(struct cs_part *w, struct pj *p, struct rm_fence *f)
{
    char key[RM_KEY_SIZE];
    redisReply *r;
    int behind = 0;

    if (p->rc == NULL)
        return 0;
    rm_key_partition(key, sizeof key, w->part);
    r = rds_command(p->rc, "HMGET %s epoch seq", key);
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        f->held_epoch = r->element[0]->type == REDIS_REPLY_STRING ? strtoull(r->element[0]->str, NULL, 10) : 0;
        f->held_seq = r->element[1]->type == REDIS_REPLY_STRING ? strtoull(r->element[1]->str, NULL, 10) : 0;
        behind = f->held_epoch < w->epoch || (f->held_epoch == w->epoch && f->held_seq < f->expect_seq);
    } else if (r == NULL) {
        pj_drop_redis(p);
    }
    freeReplyObject(r);
    return behind;
}

static void *part_main(void *arg)
{
    struct cs_part *w = arg;
    struct rm_fence fence = {.part = w->part, .epoch = w->epoch};
    struct batch b = {0};
    struct pull *pl = NULL;
    struct pj p;
    struct err e;
    int claimed = 0, attempt = 0, fenced = 0, unrecorded = 0;
    long long reset = -1;
    int64_t last_stats = 0, last_check = 0;

    pj_init(&p, w->cfg);
    p.fence = &fence;
    p.cache = vc_new(VC_LIVE_SETS); /* NULL: every account is read before its fold */
    while (!atomic_load(&w->stop) && !svc_stop_requested) {
        status st = ST_OK;
        int pull_failed = 0; /* the pull itself failed (not the apply): it is opened again */
        err_clear(&e);
        if (!claimed) {
            pj_forget(&p); /* the store went back in time, or this is the start */
            st = claim(w, &p, &fence, reset, &fenced, &e);
            if (st == ST_OK && fenced) {
                uint64_t floor = 0;
                log_warn("partition %d: epoch %" PRIu64 " is older than %" PRIu64 " in Redis: dropping it",
                         w->part, w->epoch, fence.held_epoch);
                /* for the ownership thread: if the lease bucket is below it, NATS lost its state */
                if (cs_max_epoch(p.rc, w->cfg->partitions, &floor, &e) != ST_OK)
                    floor = fence.held_epoch;
                atomic_store(&w->floor, floor > fence.held_epoch ? floor : fence.held_epoch);
                atomic_store(&w->fenced, 1);
                break;
            }
            if (st == ST_OK) {
                uint64_t last = 0;
                st = stream_last(w, &last, &e);
                if (st == ST_OK && last < fence.expect_seq) {
                    log_warn("partition %d: Redis has applied up to sequence %" PRIu64 " but the stream "
                             "ends at %" PRIu64 " (recreated): starting it from the beginning",
                             w->part, fence.expect_seq, last);
                    reset = 0;
                    continue;
                }
            }
            if (st == ST_OK) {
                claimed = 1;
                reset = -1;
                atomic_store(&w->seq, fence.expect_seq);
                log_info("partition %d: epoch %" PRIu64 " installed, consuming after sequence %" PRIu64,
                         w->part, w->epoch, fence.expect_seq);
            }
        }
        if (st == ST_OK && pl == NULL) {
            st = pull_open(&pl, w->bus, w->part, fence.expect_seq + 1, w->cfg->projector_fetch_bytes, &e);
            b.next_dseq = 0;
            b.hole = 0;
        }
        if (st == ST_OK && b.n == 0 && !b.hole) {
            st = collect(w, pl, &b, &e);
            pull_failed = st != ST_OK;
        }
        if (st == ST_OK && b.n == 0 && b.hole) {
            pull_close(&pl); /* nothing before the hole: again from the recorded seq */
            atomic_fetch_add(&w->resubscribes, 1);
            continue;
        }
        if (st == ST_OK && b.n == 0) {
            /* idle: nothing came, so nothing is pending; said at once after applying (the sweep
             * waits for it) and every second */
            if (unrecorded || svc_mono_ms() - last_stats >= STATS_EVERY_MS) {
                atomic_store(&w->pending, 0);
                atomic_store(&w->lag_ms, 0);
                record_lag(w, &p);
                last_stats = svc_mono_ms();
                unrecorded = 0;
            }
            /* a store that went back in time must be noticed without new events */
            if (svc_mono_ms() - last_check >= STATS_EVERY_MS) {
                last_check = svc_mono_ms();
                if (store_behind(w, &p, &fence)) {
                    log_warn("partition %d: Redis holds seq %" PRIu64 " epoch %" PRIu64 ", expected seq %" PRIu64
                             " epoch %" PRIu64 ": it went back in time: projecting again from sequence %" PRIu64,
                             w->part, fence.held_seq, fence.held_epoch, fence.expect_seq, w->epoch,
                             fence.held_seq + 1);
                    atomic_fetch_add(&w->rewinds, 1);
                    pull_close(&pl);
                    claimed = 0;
                }
            }
            continue;
        }
        if (st == ST_OK && svc_mono_ms() >= atomic_load(&w->valid_until)) {
            svc_pause_ms(50); /* the lease is not confirmed: apply nothing until it is (or lost) */
            continue;
        }
        if (st == ST_OK) {
            fence.new_seq = b.items[b.n - 1].seq;
            st = pj_process(&p, b.items, b.n, 0, &e);
        }
        if (st == ST_OK && settled(&b)) {
            atomic_store(&w->seq, fence.expect_seq);
            progress(w, &b);
            batch_clear(&b);
            attempt = 0;
            unrecorded = 1;
            if (b.hole) { /* the batch ended before a hole: again after what it applied */
                pull_close(&pl);
                atomic_fetch_add(&w->resubscribes, 1);
            }
        } else if (st == ST_OK) {
            svc_pause_ms(RETRY_DELAY_MS); /* an item waits: the whole batch again */
        } else if (p.fenced) {
            log_warn("partition %d: %s: dropping it", w->part, e.msg);
            atomic_store(&w->fenced, 1);
            break;
        } else if (p.rewound) {
            log_warn("%s: projecting again from sequence %" PRIu64, e.msg, fence.held_seq + 1);
            atomic_fetch_add(&w->rewinds, 1);
            batch_clear(&b);
            pull_close(&pl);
            claimed = 0;
        } else {
            log_warn("partition %d: batch of %d not applied (attempt %d): %s", w->part, b.n,
                     attempt + 1, e.msg);
            svc_pause_ms(pj_backoff_ms(attempt++, BACKOFF_MAX_MS));
            if (pull_failed) {
                pull_close(&pl); /* resubscribe from the recorded seq */
                batch_clear(&b);
            }
        }
        publish_counts(w, &p);
        if (svc_mono_ms() - last_stats >= STATS_EVERY_MS) {
            record_lag(w, &p);
            last_stats = svc_mono_ms();
            unrecorded = 0;
        }
    }
    publish_counts(w, &p);
    batch_clear(&b);
    free(b.msgs);
    free(b.items);
    pull_close(&pl);
    pj_release(&p);
    atomic_store(&w->finished, 1);
    return NULL;
}

status cs_part_start(struct cs_part *w, struct err *e)
{
    atomic_store(&w->stop, 0);
    atomic_store(&w->finished, 0);
    atomic_store(&w->fenced, 0);
    if (pthread_create(&w->thread, NULL, part_main, w) != 0)
        return err_set(e, ST_INTERNAL, "unable to start the thread of partition %d", w->part);
    return ST_OK;
}

void cs_part_join(struct cs_part *w)
{
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
}

status cs_retire_shared_consumer(struct bus *b, struct err *e)
{
    jsErrCode jerr = 0;
    natsStatus ns = js_DeleteConsumer(b->js, BUS_STREAM, BUS_CONSUMER, NULL, &jerr);

    if (ns == NATS_OK || ns == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr)
        return ST_OK;
    return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "delete consumer '%s': %s (%d)",
                    BUS_CONSUMER, natsStatus_GetText(ns), (int)jerr);
}
