/* Ownership: each partition events.<p> is owned by one live worker through a lease in the
 * JetStream KV bucket OWN_BUCKET. The bucket is the arbiter, nothing here votes:
 * - key p.<n>: the lease. Claimed with kvStore_Create (fails when the key exists), renewed with
 *   kvStore_Update on the revision we last wrote (fails when anyone else wrote it, or when it
 *   expired: the bucket's TTL is PROJECTOR_LEASE_MS, so a key nobody renews disappears). The
 *   revision of the claim is the owner's fencing epoch: revisions only grow, so a later owner
 *   always has a higher epoch, and the apply script refuses writes of a lower one.
 * - key w.<worker>: liveness, put every round; a worker counts as live while its latest
 *   heartbeat is younger than 3/4 of the lease relative to the newest heartbeat (server
 *   timestamps), so a dead worker stops counting before its leases expire.
 * A worker renews every lease_ms / 4 and acts on a partition only while its last renewal is
 * younger than 3/4 of the lease, so it stops before anyone can claim what it held.
 * Epochs must never go back: the bucket uses file storage (its last sequence survives restarts
 * of NATS), and when its last sequence is below an epoch Redis holds (NATS lost the bucket's
 * state: a memory bucket of an older version restarted, unsynced writes lost in a power cut of
 * every node, the bucket deleted by hand) it is purged up to past that epoch (own_advance),
 * which moves its sequence forward: every lease is lost and claimed again above it. */
#include "ownership.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "log.h"
#include "svc.h"

#define OWN_STREAM "KV_" OWN_BUCKET
#define LIST_IDLE_MS 250 /* list_bucket: the initial entries come in one burst */
#define ORPHAN_POLL_MS 200 /* survey period while leases are due to expire or to be handed over */
#define SETTLE_MS 350      /* a new worker claims nothing before (its first surveys only count) */

static void part_key(char *buf, size_t len, int p)
{
    snprintf(buf, len, "p.%d", p);
}

static void worker_key(char *buf, size_t len, const char *worker)
{
    snprintf(buf, len, "w.%s", worker);
}

static status kv_failed(struct err *e, const char *what, natsStatus ns)
{
    return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "lease bucket %s: %s", what,
                    natsStatus_GetText(ns));
}

status own_bind(kvStore **kv, struct bus *b, struct err *e)
{
    natsStatus ns = js_KeyValue(kv, b->js, OWN_BUCKET);

    if (ns == NATS_NOT_FOUND)
        return err_set(e, ST_NOT_FOUND, "no lease bucket");
    if (ns != NATS_OK)
        return kv_failed(e, "bind", ns);
    return ST_OK;
}

/* The bucket's storage and last sequence (the next revision is above it). */
static status bucket_state(jsCtx *js, int *memory, uint64_t *last, struct err *e)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus ns = js_GetStreamInfo(&si, js, OWN_STREAM, NULL, &jerr);

    if (ns != NATS_OK)
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "lease bucket info: %s (%d)", natsStatus_GetText(ns),
                        (int)jerr);
    if (memory != NULL)
        *memory = si->Config->Storage == js_MemoryStorage;
    *last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return ST_OK;
}

status own_advance(struct own *o, uint64_t floor, uint64_t *was, struct err *e)
{
    jsOptions jo;
    jsErrCode jerr = 0;
    uint64_t last = 0;
    natsStatus ns;
    status st = bucket_state(o->js, NULL, &last, e);

    *was = 0;
    if (st != ST_OK || last >= floor)
        return st;
    /* a purge up to a sequence past the last one empties the stream and sets its first sequence
     * there (nats-server 2.9+): the next revision is floor + 1 */
    jsOptions_Init(&jo);
    jo.Stream.Purge.Sequence = floor + 1;
    ns = js_PurgeStream(o->js, OWN_STREAM, &jo, &jerr);
    if (ns != NATS_OK)
        return err_setr(e, ST_UNAVAILABLE, "bus_unavailable", "lease bucket purge to %" PRIu64 ": %s (%d)",
                        floor + 1, natsStatus_GetText(ns), (int)jerr);
    *was = last > 0 ? last : 1;
    o->round_ms = 0; /* renew now: the leases are gone */
    return ST_OK;
}

static status survey(struct own *o, int *owned, struct err *e);

/* A bucket created by an older version uses memory storage: its revisions restart at 1 with
 * NATS. Recreated with file storage when no worker holds a lease (nothing to lose: the floor
 * moves the new one past the old one's revisions); kept, with a warning, otherwise. */
static status move_to_file(struct own *o, kvConfig *kc, uint64_t *floor, struct err *e)
{
    int *owned = calloc((size_t)o->nparts, sizeof *owned), held = 0, memory = 0;
    uint64_t last = 0;
    natsStatus ns;
    status st;

    if (owned == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    st = bucket_state(o->js, &memory, &last, e);
    if (st == ST_OK && memory)
        st = survey(o, owned, e);
    for (int p = 0; st == ST_OK && p < o->nparts; p++)
        held += owned[p];
    free(owned);
    if (st != ST_OK || !memory)
        return st;
    if (held > 0 || o->live_seen > 0) {
        log_warn("lease bucket %s uses memory storage (created by an older version) and %d partitions are "
                 "leased: kept for now; its revisions restart at 1 when NATS restarts (repaired by moving "
                 "them past the epochs in Redis, at the cost of every lease). To move it to file storage, stop "
                 "every projector worker for one lease (PROJECTOR_LEASE_MS) and start them again",
                 OWN_BUCKET, held);
        return ST_OK;
    }
    kvStore_Destroy(o->kv);
    o->kv = NULL;
    ns = js_DeleteKeyValue(o->js, OWN_BUCKET);
    if (ns == NATS_OK || ns == NATS_NOT_FOUND)
        ns = js_CreateKeyValue(&o->kv, o->js, kc);
    if (ns != NATS_OK) /* another worker recreated it first */
        ns = js_KeyValue(&o->kv, o->js, OWN_BUCKET);
    if (ns != NATS_OK)
        return kv_failed(e, "recreate", ns);
    if (last > *floor)
        *floor = last;
    log_warn("lease bucket %s used memory storage (an older version) and no worker held a lease: "
             "recreated with file storage, revisions continuing above %" PRIu64, OWN_BUCKET, *floor);
    return ST_OK;
}

status own_open(struct own *o, const struct cfg *c, struct bus *b, const char *worker, uint64_t floor,
                struct err *e)
{
    kvConfig kc;
    natsStatus ns;
    uint64_t was = 0;
    status st;

    memset(o, 0, sizeof *o);
    o->cfg = c;
    o->js = b->js;
    o->nparts = c->partitions;
    o->live = 1;
    o->opened_ms = svc_mono_ms();
    snprintf(o->worker, sizeof o->worker, "%s", worker);
    o->parts = calloc((size_t)o->nparts, sizeof *o->parts);
    o->events = calloc((size_t)o->nparts * 2, sizeof *o->events);
    if (o->parts == NULL || o->events == NULL) {
        own_close(o);
        return err_set(e, ST_INTERNAL, "out of memory");
    }
    kvConfig_Init(&kc);
    kc.Bucket = OWN_BUCKET;
    kc.History = 1;
    kc.TTL = (int64_t)c->projector_lease_ms * 1000000; /* nanoseconds */
    kc.StorageType = js_FileStorage; /* the revisions (epochs) must survive a restart of NATS */
    kc.Replicas = c->nats_replicas;
    ns = js_CreateKeyValue(&o->kv, b->js, &kc);
    if (ns != NATS_OK) /* it exists (possibly with other settings, kept: the first one wins) */
        ns = js_KeyValue(&o->kv, b->js, OWN_BUCKET);
    if (ns != NATS_OK) {
        own_close(o);
        return kv_failed(e, "open", ns);
    }
    st = move_to_file(o, &kc, &floor, e);
    if (st == ST_OK)
        st = own_advance(o, floor, &was, e);
    if (st != ST_OK) {
        own_close(o);
        return st;
    }
    if (was > 0)
        log_warn("lease bucket %s ended at revision %" PRIu64 ", below epoch %" PRIu64 " recorded in Redis "
                 "(NATS lost its state): moved past it", OWN_BUCKET, was, floor);
    return ST_OK;
}

void own_close(struct own *o)
{
    struct err e;

    for (int p = 0; o->parts != NULL && p < o->nparts; p++)
        if (o->parts[p].held && own_release(o, p, &e) != ST_OK)
            continue; /* it expires within the lease */
    if (o->kv != NULL) {
        char key[OWN_WORKER_SIZE + 8];
        worker_key(key, sizeof key, o->worker);
        (void)kvStore_Delete(o->kv, key); /* the others count one worker less at once */
        kvStore_Destroy(o->kv);
    }
    free(o->parts);
    free(o->events);
    memset(o, 0, sizeof *o);
}

static void event(struct own *o, int p, enum own_event_kind kind, const char *why)
{
    struct own_event *ev = &o->events[o->nevents++];

    ev->part = p;
    ev->kind = kind;
    ev->epoch = o->parts[p].epoch;
    snprintf(ev->why, sizeof ev->why, "%s", why);
}

static void drop(struct own *o, int p, const char *why)
{
    event(o, p, OWN_LOST, why);
    o->parts[p].held = 0;
    o->parts[p].release_wanted = 0;
    o->held--;
}

static void renew(struct own *o, int p)
{
    struct own_part *pp = &o->parts[p];
    char key[32], val[OWN_WORKER_SIZE + 24], why[120];
    uint64_t rev = 0;
    int64_t sent = svc_mono_ms();
    natsStatus ns;

    part_key(key, sizeof key, p);
    snprintf(val, sizeof val, "%s %" PRIu64, o->worker, pp->epoch);
    ns = kvStore_UpdateString(&rev, o->kv, key, val, pp->rev);
    if (ns == NATS_OK) {
        pp->rev = rev;
        pp->renewed_ms = sent;
        return;
    }
    /* give up at once: the key moved (expired and taken) or NATS did not confirm in time */
    snprintf(why, sizeof why, "renewal failed: %s", nats_GetLastError(NULL) != NULL ? nats_GetLastError(NULL)
                                                                                  : natsStatus_GetText(ns));
    drop(o, p, why);
}

static void claim(struct own *o, int p, const char *why)
{
    struct own_part *pp = &o->parts[p];
    char key[32];
    uint64_t rev = 0;
    int64_t sent = svc_mono_ms();

    part_key(key, sizeof key, p);
    if (kvStore_CreateString(&rev, o->kv, key, o->worker) != NATS_OK) {
        /* someone else was faster (or NATS failed): the next tick looks again */
        log_debug("partition %d: claim refused: %s", p, nats_GetLastError(NULL) != NULL ? nats_GetLastError(NULL) : "");
        return;
    }
    pp->held = 1;
    pp->rev = rev;
    pp->epoch = rev;
    pp->renewed_ms = sent;
    pp->unowned_since = 0;
    pp->release_wanted = 0;
    o->held++;
    event(o, p, OWN_CLAIMED, why);
}

/* The latest entry of one key seen by a listing. */
struct seen {
    char key[OWN_WORKER_SIZE + 8];
    char value[OWN_WORKER_SIZE + 24];
    uint64_t rev;
    int64_t created_ns; /* server timestamp */
    int gone;           /* its latest entry is a delete or purge marker */
};

/* Every key's latest entry, from a watcher over the bucket. Not kvStore_Keys: its listing ends
 * only once as many messages as were pending at its first one have come, so puts made while it
 * runs (heartbeats, renewals) come in as more keys, the same worker counted several times (seen:
 * 10 live workers with 2 running), and deletes made meanwhile are ignored. Here each key counts
 * once, with its latest revision, and a delete marker removes it. */
static status list_bucket(struct own *o, struct seen **out, int *n, struct err *e)
{
    kvWatcher *w = NULL;
    kvWatchOptions wo;
    struct seen *v = NULL;
    int cap = 0;
    int64_t deadline = svc_mono_ms() + o->cfg->request_timeout_ms;
    natsStatus ns;

    *out = NULL;
    *n = 0;
    kvWatchOptions_Init(&wo);
    ns = kvStore_WatchAll(&w, o->kv, &wo);
    if (ns != NATS_OK)
        return kv_failed(e, "watch", ns);
    for (;;) {
        kvEntry *en = NULL;
        int64_t left = deadline - svc_mono_ms();
        const char *k, *val;
        int i;
        /* libnats ends the initial values (a NULL entry) once as many have come as the server
         * said were pending when the watch began; a lease or heartbeat that expires (MaxAge)
         * meanwhile never comes, so at a hand-over the NULL never came and each survey waited
         * the whole request timeout (the ha suite's survivor: "lease bucket list: Timeout",
         * the dead worker's partitions claimed past lease + 2 s). The entries come in one burst:
         * LIST_IDLE_MS without one after the first ends the listing too. An incomplete list is
         * safe: claims are creates and renewals compare-and-sets in the bucket itself. */
        if (*n > 0 && left > LIST_IDLE_MS)
            left = LIST_IDLE_MS;
        ns = left > 0 ? kvWatcher_Next(&en, w, left) : NATS_TIMEOUT;
        if (ns == NATS_TIMEOUT && *n > 0 && deadline - svc_mono_ms() > 0) {
            ns = NATS_OK; /* quiet after the burst: what came is the bucket */
            break;
        }
        if (ns != NATS_OK || en == NULL)
            break; /* NULL: every key's latest entry has come */
        k = kvEntry_Key(en);
        for (i = 0; i < *n && strcmp(v[i].key, k) != 0; i++)
            ;
        if (i == *n) {
            if (*n == cap) {
                struct seen *nv = realloc(v, (size_t)(cap = cap ? 2 * cap : 32) * sizeof *v);
                if (nv == NULL) {
                    kvEntry_Destroy(en);
                    ns = NATS_NO_MEMORY;
                    break;
                }
                v = nv;
            }
            memset(&v[i], 0, sizeof v[i]);
            snprintf(v[i].key, sizeof v[i].key, "%s", k);
            (*n)++;
        }
        if (kvEntry_Revision(en) >= v[i].rev) {
            val = kvEntry_ValueString(en);
            v[i].rev = kvEntry_Revision(en);
            v[i].created_ns = kvEntry_Created(en);
            v[i].gone = kvEntry_Operation(en) != kvOp_Put;
            snprintf(v[i].value, sizeof v[i].value, "%s", val != NULL ? val : "");
        }
        kvEntry_Destroy(en);
    }
    kvWatcher_Destroy(w);
    if (ns != NATS_OK) {
        free(v);
        *n = 0;
        return kv_failed(e, "list", ns);
    }
    *out = v;
    return ST_OK;
}

/* The live workers, which partitions have a lease and how many of those are about to expire
 * (held by a worker that no longer counts as live, or not renewed for half a lease: they are
 * claimed as soon as they expire), from one listing. */
static status survey(struct own *o, int *owned, struct err *e)
{
    struct seen *v = NULL;
    int n = 0, live = 0, orphans = 0, max_held = 0;
    int64_t newest = 0, latest = 0, fresh_ns = (int64_t)o->cfg->projector_lease_ms * 3 / 4 * 1000000;
    status st = list_bucket(o, &v, &n, e);

    if (st != ST_OK)
        return st;
    for (int i = 0; i < n; i++) {
        if (!v[i].gone && strncmp(v[i].key, "w.", 2) == 0 && v[i].created_ns > newest)
            newest = v[i].created_ns;
        if (!v[i].gone && v[i].created_ns > latest)
            latest = v[i].created_ns;
    }
    for (int i = 0; i < n; i++) /* live: a heartbeat recent relative to the newest one */
        if (!v[i].gone && strncmp(v[i].key, "w.", 2) == 0 && v[i].created_ns >= newest - fresh_ns)
            live++;
        else if (strncmp(v[i].key, "w.", 2) == 0)
            v[i].gone = 1;
    for (int i = 0; i < n; i++) {
        int p, owner_live = 0;
        size_t len;
        if (v[i].gone || strncmp(v[i].key, "p.", 2) != 0 || (p = atoi(v[i].key + 2)) < 0 || p >= o->nparts)
            continue;
        owned[p] = 1;
        len = strcspn(v[i].value, " ");
        for (int j = 0; j < n && !owner_live; j++)
            owner_live = !v[j].gone && strncmp(v[j].key, "w.", 2) == 0 && strlen(v[j].key + 2) == len &&
                         strncmp(v[j].key + 2, v[i].value, len) == 0;
        /* its owner is gone, or missed two renewals: it expires soon */
        orphans += !owner_live || v[i].created_ns < latest - fresh_ns * 2 / 3;
    }
    for (int j = 0; j < n; j++) { /* the most leases one live worker holds */
        int count = 0;
        if (v[j].gone || strncmp(v[j].key, "w.", 2) != 0)
            continue;
        for (int i = 0; i < n; i++) {
            size_t len = strcspn(v[i].value, " ");
            count += !v[i].gone && strncmp(v[i].key, "p.", 2) == 0 && strlen(v[j].key + 2) == len &&
                     strncmp(v[j].key + 2, v[i].value, len) == 0;
        }
        if (count > max_held)
            max_held = count;
    }
    o->max_held = max_held;
    free(v);
    log_debug("lease bucket: %d keys, %d live workers, %d leases about to expire", n, live, orphans);
    o->live_seen = live;
    o->live = live > 0 ? live : 1;
    o->orphans = orphans;
    return ST_OK;
}

status own_tick(struct own *o, struct err *e)
{
    char key[OWN_WORKER_SIZE + 8], val[24];
    int *owned = NULL, share, start, round;
    int64_t now = svc_mono_ms();
    natsStatus ns;
    status st;

    o->nevents = 0;
    round = o->round_ms == 0 || now - o->round_ms >= o->cfg->projector_lease_ms / 4;
    /* While leases are about to expire, the heartbeat goes with every survey: liveness is
     * relative to the newest heartbeat, so a dead worker stops counting as live about 3/4 of a
     * lease after its last one, not up to a quarter lease later (its leases expired meanwhile,
     * the share still counted it, and the survivor claimed nothing: a hand-over past lease +
     * 2 s in one ha run). */
    if (round || o->orphans > 0) {
        worker_key(key, sizeof key, o->worker);
        snprintf(val, sizeof val, "%d", o->held);
        ns = kvStore_PutString(NULL, o->kv, key, val);
        if (round) {
            o->round_ms = now;
            for (int p = 0; p < o->nparts; p++)
                if (o->parts[p].held)
                    renew(o, p);
        }
        if (ns != NATS_OK)
            return kv_failed(e, "heartbeat", ns);
    }
    owned = calloc((size_t)o->nparts, sizeof *owned);
    if (owned == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    st = survey(o, owned, e);
    if (st != ST_OK)
        goto cleanup;
    share = (o->nparts + o->live - 1) / o->live;
    /* start where this worker's name points, so newcomers do not all race for partition 0 */
    start = (int)(fnv1a32(o->worker) % (unsigned)o->nparts);
    for (int i = 0; i < o->nparts; i++) {
        int p = (start + i) % o->nparts;
        struct own_part *pp = &o->parts[p];
        if (owned[p] || pp->held) {
            pp->unowned_since = 0;
            continue;
        }
        if (pp->unowned_since == 0)
            pp->unowned_since = now;
        if (now - o->opened_ms < SETTLE_MS)
            continue; /* workers started together: see the others' heartbeats before claiming */
        if (o->held < share)
            claim(o, p, "below the share");
        else if (now - pp->unowned_since >= o->cfg->projector_lease_ms &&
                 (pp->released_ms == 0 || now - pp->released_ms >= 2 * o->cfg->projector_lease_ms))
            claim(o, p, "unowned for a whole lease");
    }
    /* above the share: hand the surplus over (the caller stops the consumer first) */
    for (int p = 0, extra = o->held - share; p < o->nparts; p++) {
        o->parts[p].release_wanted = o->parts[p].held && extra > 0;
        if (o->parts[p].release_wanted)
            extra--;
    }
cleanup:
    free(owned);
    return st;
}

int64_t own_next_ms(const struct own *o)
{
    int64_t now = svc_mono_ms(), round = o->round_ms + o->cfg->projector_lease_ms / 4;
    int share = (o->nparts + o->live - 1) / o->live;
    int soon = o->orphans > 0 || o->max_held > share || now - o->opened_ms < o->cfg->projector_lease_ms / 4;

    if (soon && now + ORPHAN_POLL_MS < round)
        return now + ORPHAN_POLL_MS;
    return round;
}

int own_valid(const struct own *o, int p, int64_t now_ms)
{
    const struct own_part *pp = &o->parts[p];

    return pp->held && now_ms - pp->renewed_ms < (int64_t)o->cfg->projector_lease_ms * 3 / 4;
}

status own_release(struct own *o, int p, struct err *e)
{
    char subject[64];
    natsMsg *m = NULL;
    jsPubOptions po;
    int valid = own_valid(o, p, svc_mono_ms());
    natsStatus ns;

    if (!o->parts[p].held)
        return ST_OK;
    o->parts[p].held = 0;
    o->parts[p].release_wanted = 0;
    o->parts[p].released_ms = svc_mono_ms();
    o->held--;
    if (!valid) /* (checked before held is cleared: own_valid needs it; it never deleted a lease) */
        return ST_OK; /* too old to be sure it is still ours: let it expire */
    /* a delete marker on the revision we last wrote (what kvStore_Delete writes, as a
     * compare-and-set): never the lease of a later owner */
    snprintf(subject, sizeof subject, "$KV.%s.p.%d", OWN_BUCKET, p);
    jsPubOptions_Init(&po);
    po.ExpectLastSubjectSeq = o->parts[p].rev;
    ns = natsMsg_Create(&m, subject, NULL, NULL, 0);
    if (ns == NATS_OK)
        ns = natsMsgHeader_Set(m, "KV-Operation", "DEL");
    if (ns == NATS_OK)
        ns = js_PublishMsg(NULL, o->js, m, &po, NULL);
    natsMsg_Destroy(m);
    if (ns != NATS_OK)
        return kv_failed(e, "release", ns); /* it expires within the lease anyway */
    return ST_OK;
}

void own_forget(struct own *o, int p)
{
    if (o->parts[p].held)
        o->held--;
    o->parts[p].held = 0;
    o->parts[p].release_wanted = 0;
    o->parts[p].released_ms = svc_mono_ms();
}

status own_read(kvStore *kv, int p, char *owner, size_t len, uint64_t *epoch, struct err *e)
{
    kvEntry *en = NULL;
    char key[32];
    natsStatus ns;
    const char *v, *sp;

    owner[0] = '\0';
    *epoch = 0;
    part_key(key, sizeof key, p);
    ns = kvStore_Get(&en, kv, key);
    if (ns == NATS_NOT_FOUND)
        return ST_OK;
    if (ns != NATS_OK)
        return kv_failed(e, "get", ns);
    v = kvEntry_ValueString(en);
    sp = v != NULL ? strchr(v, ' ') : NULL;
    /* "worker epoch" after a renewal; a fresh claim holds the worker only (epoch = revision) */
    snprintf(owner, len, "%.*s", sp != NULL ? (int)(sp - v) : (int)strlen(v != NULL ? v : ""),
             v != NULL ? v : "");
    *epoch = sp != NULL ? strtoull(sp + 1, NULL, 10) : kvEntry_Revision(en);
    kvEntry_Destroy(en);
    return ST_OK;
}
