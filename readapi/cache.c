/* Account-document cache of the read API (see cache.h for when an entry may be served).
 * Two-way set associative: an account lives in one of the two slots of its set, a third
 * account of the set replaces the older entry (direct mapping lost 11% of reads to collisions
 * over 10,000 accounts). Sets share 256 lock stripes; each stripe counts the notifications
 * that touched it, which is what a fill ticket remembers. */
#include "cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "uuid.h"

#define NSTRIPES 256

struct centry {
    char id[UUID_STR_SIZE];
    long gen;
    uint64_t epoch;
    int64_t version;
    int64_t filled_ms;
    char *doc; /* NULL: empty slot */
    size_t len;
};

struct stripe {
    _Alignas(64) pthread_mutex_t mu; /* one cache line each: no false sharing between stripes */
    uint64_t seq;
};

struct rcache {
    struct centry *slots;
    size_t mask;
    int ttl_ms;
    _Atomic uint64_t epoch;
    _Atomic long gen;
    struct stripe stripes[NSTRIPES];
    _Atomic unsigned long long hits, misses, stores, refused, invalidations, clears, pushes;
};

#define WAYS 2

/* The first slot of id's set (the set is slots [set, set + WAYS)). */
static size_t slot_of(const struct rcache *c, const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return ((size_t)(h ^ (h >> 32)) & c->mask) & ~(size_t)(WAYS - 1);
}

static struct stripe *stripe_of(struct rcache *c, size_t slot)
{
    return &c->stripes[(slot / WAYS) & (NSTRIPES - 1)];
}

/* id's entry in the set at slot, or NULL (stripe locked). */
static struct centry *find(struct rcache *c, size_t slot, const char *id)
{
    for (int w = 0; w < WAYS; w++) {
        struct centry *en = &c->slots[slot + w];
        if (en->doc != NULL && strcmp(en->id, id) == 0)
            return en;
    }
    return NULL;
}

static void entry_free(struct centry *en)
{
    free(en->doc);
    en->doc = NULL;
    en->len = 0;
}

status rc_create(struct rcache **out, size_t slots, int ttl_ms, struct err *e)
{
    struct rcache *c;
    size_t n = NSTRIPES;

    *out = NULL;
    while (n < slots && n < ((size_t)1 << 30))
        n <<= 1;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    /* calloc: untouched slots cost address space, not resident memory */
    c->slots = calloc(n, sizeof *c->slots);
    if (c->slots == NULL) {
        free(c);
        return err_set(e, ST_INTERNAL, "out of memory for %zu cache slots", n);
    }
    c->mask = n - 1;
    c->ttl_ms = ttl_ms < 0 ? 0 : ttl_ms;
    for (int i = 0; i < NSTRIPES; i++)
        pthread_mutex_init(&c->stripes[i].mu, NULL);
    *out = c;
    return ST_OK;
}

void rc_destroy(struct rcache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i <= c->mask; i++)
        entry_free(&c->slots[i]);
    for (int i = 0; i < NSTRIPES; i++)
        pthread_mutex_destroy(&c->stripes[i].mu);
    free(c->slots);
    free(c);
}

/* en may be served: filled in this generation and cache epoch, within its lifetime (stripe
 * locked). */
static bool servable(struct rcache *c, const struct centry *en, long gen, int64_t now_ms)
{
    return en != NULL && gen > 0 && c->ttl_ms > 0 && en->gen == gen && en->epoch == atomic_load(&c->epoch) &&
           now_ms - en->filled_ms < c->ttl_ms;
}

int rc_below(struct rcache *c, const char *id, int64_t min_version, int64_t now_ms, int64_t *version,
             char **doc)
{
    size_t slot = slot_of(c, id);
    struct stripe *s = stripe_of(c, slot);
    const struct centry *en;
    int below = 0;

    pthread_mutex_lock(&s->mu);
    en = find(c, slot, id);
    if (servable(c, en, atomic_load(&c->gen), now_ms) && en->version < min_version) {
        *version = en->version;
        below = 1;
        if (doc != NULL) {
            *doc = malloc(en->len + 1);
            if (*doc != NULL)
                memcpy(*doc, en->doc, en->len + 1);
            else
                below = 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (below) /* answered from memory; otherwise the read that follows counts */
        atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
    return below;
}

int rc_get(struct rcache *c, const char *id, int64_t min_version, int64_t now_ms, char **body,
           int64_t *version, long *gen_out)
{
    size_t slot = slot_of(c, id);
    struct stripe *s = stripe_of(c, slot);
    struct centry *en;
    long gen = atomic_load(&c->gen);
    int hit = 0;

    *body = NULL;
    if (gen <= 0 || c->ttl_ms == 0) {
        atomic_fetch_add_explicit(&c->misses, 1, memory_order_relaxed);
        return 0;
    }
    pthread_mutex_lock(&s->mu);
    en = find(c, slot, id);
    if (servable(c, en, gen, now_ms) && en->version >= min_version) {
        *body = malloc(en->len + 1);
        if (*body != NULL) {
            memcpy(*body, en->doc, en->len + 1);
            *version = en->version;
            *gen_out = gen;
            hit = 1;
        }
    }
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add_explicit(hit ? &c->hits : &c->misses, 1, memory_order_relaxed);
    return hit;
}

struct rc_ticket rc_fill_begin(struct rcache *c, const char *id)
{
    struct stripe *s = stripe_of(c, slot_of(c, id));
    struct rc_ticket t;

    pthread_mutex_lock(&s->mu);
    t.seq = s->seq;
    t.epoch = atomic_load(&c->epoch);
    pthread_mutex_unlock(&s->mu);
    return t;
}

/* Stores doc (malloc'd copy, taken over) as id's entry in the set at slot: its own slot, else an
 * empty one, else the one filled longest ago (stripe locked). */
static void put_locked(struct rcache *c, size_t slot, const char *id, long gen, uint64_t epoch,
                       int64_t version, char *copy, size_t len, int64_t now_ms)
{
    struct centry *en = find(c, slot, id);

    for (int w = 0; en == NULL && w < WAYS; w++)
        if (c->slots[slot + w].doc == NULL)
            en = &c->slots[slot + w];
    if (en == NULL) {
        en = &c->slots[slot];
        for (int w = 1; w < WAYS; w++)
            if (c->slots[slot + w].filled_ms < en->filled_ms)
                en = &c->slots[slot + w];
    }
    entry_free(en);
    strcpy(en->id, id);
    en->gen = gen;
    en->epoch = epoch;
    en->version = version;
    en->filled_ms = now_ms;
    en->doc = copy;
    en->len = len;
}

static char *copy_doc(const char *doc, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy != NULL) {
        memcpy(copy, doc, len);
        copy[len] = '\0';
    }
    return copy;
}

int rc_fill_commit(struct rcache *c, const char *id, struct rc_ticket t, long gen, int64_t version,
                   const char *doc, int64_t now_ms)
{
    size_t slot = slot_of(c, id), len;
    struct stripe *s = stripe_of(c, slot);
    char *copy;
    int stored = 0;

    if (c->ttl_ms == 0 || gen <= 0 || doc == NULL || strlen(id) >= sizeof c->slots[0].id)
        return 0;
    len = strlen(doc);
    copy = copy_doc(doc, len);
    if (copy == NULL)
        return 0;
    pthread_mutex_lock(&s->mu);
    if (s->seq == t.seq && atomic_load(&c->epoch) == t.epoch && atomic_load(&c->gen) == gen) {
        put_locked(c, slot, id, gen, t.epoch, version, copy, len, now_ms);
        copy = NULL;
        stored = 1;
    }
    pthread_mutex_unlock(&s->mu);
    free(copy);
    atomic_fetch_add_explicit(stored ? &c->stores : &c->refused, 1, memory_order_relaxed);
    return stored;
}

/* A notification of id at version, carrying the document written (doc not NULL, from generation
 * gen) or not: fills that read before it must not land, an entry below it goes, and the
 * document it carries takes its place (never over a newer entry). */
static void notified(struct rcache *c, const char *id, int64_t version, long gen, const char *doc, size_t len,
                     int64_t now_ms)
{
    size_t slot = slot_of(c, id);
    struct stripe *s = stripe_of(c, slot);
    struct centry *en;
    char *copy = NULL;
    int pushed = 0;

    if (doc != NULL && c->ttl_ms > 0 && gen > 0)
        copy = copy_doc(doc, len);
    pthread_mutex_lock(&s->mu);
    s->seq++; /* fills that read before this notification must not land */
    en = find(c, slot, id);
    if (en != NULL && en->version < version) {
        entry_free(en);
        en = NULL;
    }
    if (copy != NULL && atomic_load(&c->gen) == gen) {
        uint64_t epoch = atomic_load(&c->epoch);
        /* what is left is newer, or from another generation or cache epoch (never served) */
        if (en == NULL || en->gen != gen || en->epoch != epoch) {
            put_locked(c, slot, id, gen, epoch, version, copy, len, now_ms);
            copy = NULL;
            pushed = 1;
        }
    }
    pthread_mutex_unlock(&s->mu);
    free(copy);
    atomic_fetch_add_explicit(&c->invalidations, 1, memory_order_relaxed);
    if (pushed)
        atomic_fetch_add_explicit(&c->pushes, 1, memory_order_relaxed);
}

void rc_invalidate(struct rcache *c, const char *id, int64_t version)
{
    notified(c, id, version, 0, NULL, 0, 0);
}

void rc_clear(struct rcache *c)
{
    /* entries of an older epoch are never served; they are freed when their slot is reused */
    atomic_fetch_add(&c->epoch, 1);
    atomic_fetch_add_explicit(&c->clears, 1, memory_order_relaxed);
}

int rc_set_gen(struct rcache *c, long gen)
{
    long old = atomic_exchange(&c->gen, gen);
    if (old != gen)
        rc_clear(c);
    return old != gen;
}

/* Digits at msg[*i..] (at most 18) into *out; 0 when there are none. */
static int digits_at(const char *msg, size_t len, size_t *i, int64_t *out)
{
    int n = 0;

    *out = 0;
    for (; *i < len && msg[*i] >= '0' && msg[*i] <= '9' && n < 18; (*i)++, n++)
        *out = *out * 10 + (msg[*i] - '0');
    return n;
}

int rc_apply_message(struct rcache *c, const char *msg, size_t len, int push, int64_t now_ms,
                     void (*each)(const char *id, void *arg), void *arg)
{
    size_t i = 0;

    while (i < len) {
        char id[UUID_STR_SIZE];
        size_t start, idlen, doclen = 0;
        const char *doc = NULL;
        int64_t v = 0, gen = 0, n = 0;

        while (i < len && msg[i] == ' ')
            i++;
        if (i == len)
            break;
        start = i;
        while (i < len && msg[i] != ':' && msg[i] != ' ')
            i++;
        idlen = i - start;
        if (i == len || msg[i] != ':' || idlen == 0 || idlen >= sizeof id)
            goto unreadable; /* "*" or something this reader does not understand */
        memcpy(id, msg + start, idlen);
        id[idlen] = '\0';
        i++;
        if (digits_at(msg, len, &i, &v) == 0)
            goto unreadable;
        if (i < len && msg[i] == ':') { /* ":<gen>:<length>:<document>" */
            i++;
            if (digits_at(msg, len, &i, &gen) == 0 || i >= len || msg[i] != ':')
                goto unreadable;
            i++;
            if (digits_at(msg, len, &i, &n) == 0 || i >= len || msg[i] != ':' || (uint64_t)n > len - i - 1)
                goto unreadable;
            doc = msg + i + 1;
            doclen = (size_t)n;
            i += 1 + doclen;
        }
        if (i < len && msg[i] != ' ')
            goto unreadable;
        notified(c, id, v, (long)gen, push ? doc : NULL, doclen, now_ms);
        if (each != NULL)
            each(id, arg);
    }
    return 0;
unreadable:
    rc_clear(c);
    return 1;
}

void rc_stats(struct rcache *c, struct rc_stats *out)
{
    out->hits = atomic_load(&c->hits);
    out->misses = atomic_load(&c->misses);
    out->stores = atomic_load(&c->stores);
    out->refused = atomic_load(&c->refused);
    out->invalidations = atomic_load(&c->invalidations);
    out->clears = atomic_load(&c->clears);
    out->pushes = atomic_load(&c->pushes);
}
