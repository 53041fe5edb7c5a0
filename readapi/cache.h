/* The read API's account-document cache: what GET /accounts/{id} last read from Redis, or the
 * document the projector's rm:applied notification carried, kept only while it is provably
 * current.
 *
 * An entry is served only when all of these hold:
 *  - the cache is enabled: the rm:applied listener is subscribed and has seen the current
 *    generation (rc_set_gen with g > 0);
 *  - the entry was read from that generation, or announced in it (a notification carries the
 *    document its script wrote, in order with every other write: what a read right after it
 *    would have returned);
 *  - no notification for its account arrived between the Redis read and the store (the fill
 *    ticket: a store that raced an invalidation is dropped, so an older document can never
 *    overwrite the invalidation of a newer one);
 *  - it is younger than the time-to-live, which bounds staleness when a notification is lost
 *    (a projector killed between its apply and its PUBLISH, keys flushed by hand).
 * Pure memory structure, no I/O: the listener in rstore.c feeds it. Thread-safe. */
#ifndef READAPI_CACHE_H
#define READAPI_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct rcache;

struct rc_ticket {
    uint64_t epoch;
    uint64_t seq;
};

struct rc_stats {
    unsigned long long hits, misses, stores, refused, invalidations, clears, pushes;
};

/* slots is rounded up to a power of two; ttl_ms 0 makes a cache that never hits. */
status rc_create(struct rcache **out, size_t slots, int ttl_ms, struct err *e) WUR;
void rc_destroy(struct rcache *c);

/* On a hit copies the document into *body (malloc'd, NUL-terminated), its version and
 * generation into *version and *gen and returns 1. An entry below min_version is a miss. */
int rc_get(struct rcache *c, const char *id, int64_t min_version, int64_t now_ms, char **body,
           int64_t *version, long *gen);
/* Returns 1 (and the entry's version) when the cache holds id below min_version: no
 * notification of a newer version has come since it was filled, so Redis holds nothing newer
 * than what was announced (a parked read need not ask it again until one comes). With doc not
 * NULL, also a malloc'd copy of the cached document (0 when that copy cannot be made). */
int rc_below(struct rcache *c, const char *id, int64_t min_version, int64_t now_ms, int64_t *version,
             char **doc);
/* Taken before reading id from Redis; rc_fill_commit stores only if nothing touched the account
 * (or cleared the cache) since. */
struct rc_ticket rc_fill_begin(struct rcache *c, const char *id);
/* Returns 1 when stored. */
int rc_fill_commit(struct rcache *c, const char *id, struct rc_ticket t, long gen, int64_t version,
                   const char *doc, int64_t now_ms);

/* The account reached version: entries below it go. */
void rc_invalidate(struct rcache *c, const char *id, int64_t version);
/* Applies one rm:applied message: "<id>:<version> ..." invalidates those accounts (and calls
 * each(id, arg) for every one, when each is not NULL); "<id>:<version>:<gen>:<length>:<document>"
 * also carries the document written, stored as the entry (when push is set and gen is the
 * cache's generation: a read woken by it is answered from memory). "*" (a generation switch, a
 * projector that connected) clears everything, and so does anything unparsable. Returns 1 when
 * it cleared everything. */
int rc_apply_message(struct rcache *c, const char *msg, size_t len, int push, int64_t now_ms,
                     void (*each)(const char *id, void *arg), void *arg);
/* The generation readers see now; a change clears, 0 disables the cache. */
int rc_set_gen(struct rcache *c, long gen); /* 1: it was another (the cache was cleared) */
void rc_clear(struct rcache *c);
void rc_stats(struct rcache *c, struct rc_stats *out);

#endif
