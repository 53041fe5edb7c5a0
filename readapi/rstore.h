/* Read-model access for the read API: one script per read (rstore.c) over a Redis connection per
 * worker thread (rconn.c), and the rm:applied listener (listener.c). */
#ifndef READAPI_RSTORE_H
#define READAPI_RSTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "status.h"

struct rs_account {
    long gen;        /* 0: no current generation (read model unavailable) */
    int64_t version; /* 0 with doc NULL: account not in the read model */
    char *doc;       /* malloc'd JSON body of GET /accounts/{id}, or NULL */
    char *stalled;   /* malloc'd rm:stalled record {"event_id","reason","since"}, or NULL */
};

struct rs_statement {
    struct rs_account acc;
    int64_t first, last; /* versions of entries[0] and the last entry (0 when none) */
    int nentries;
    char **entries;      /* malloc'd entry strings of the layout, oldest first */
};

/* Remembers the settings and makes the document cache; connections are made lazily per thread. */
status rs_init(const struct cfg *c, struct err *e) WUR;
void rs_fini(void);
/* Loads one account: from the cache when it holds a current document at or above min_version,
 * else in one Redis round trip. ST_UNAVAILABLE when Redis fails (bounded by timeouts). */
status rs_account(struct rs_account *out, const char *id, int64_t min_version, struct err *e) WUR;
/* With READ_REPLICAS=1 the reads below go to the Redis replica while replica.c finds it
 * usable, and to the primary whenever the replica's answer does not do (a failure, no
 * generation or document, a version below min_version): never an answer below min_version,
 * never a failed read for the replica's sake. /projections and readiness ask the primary. */
/* Loads one account from Redis (never the cache), with its stall record. */
/* The document cache knows id is below min_version and nothing newer was announced since
 * (*version: the cached one; *doc, when doc is not NULL: a malloc'd copy of the cached
 * document): a read that must wait parks without a round trip. */
bool rs_account_below(const char *id, int64_t min_version, int64_t *version, char **doc);
status rs_account_fresh(struct rs_account *out, const char *id, struct err *e) WUR;
/* Loads the account and, in one round trip, the page of at most limit entries of versions
 * lo..hi (hi 0: the newest) from the top (asc 0) or the bottom (asc 1), from a server that has
 * the account at min_version when one does (the replica's answer below it is not taken). */
status rs_statement(struct rs_statement *out, const char *id, int limit, int64_t lo, int64_t hi,
                    int asc, int64_t min_version, struct err *e) WUR;
/* The first version of account id in generation gen (of v versions) whose entry's time is at
 * or after t_us (microseconds since the epoch); v + 1 when none. A binary search over the
 * statement, which is in time order: about log2(v) round trips. */
status rs_statement_seek(int64_t *out, long gen, const char *id, int64_t v, int64_t t_us,
                         struct err *e) WUR;
/* The documents of n accounts from one generation: docs[i] malloc'd or NULL (not projected);
 * *gen 0 when there is no current generation. The caller frees each docs[i]. */
status rs_accounts(char **docs, long *gen, const char *const *ids, int n, struct err *e) WUR;
/* Status document of GET /projections (malloc'd JSON) into *out. */
status rs_projections(char **out, struct err *e) WUR;
/* PING and current generation present. */
status rs_ready(struct err *e) WUR;
void rs_account_release(struct rs_account *a);
void rs_statement_release(struct rs_statement *s);

/* fn(arg, account_id) is called (from the listener thread) for every account an rm:applied
 * notification names, and fn(arg, NULL) when anything may have changed (a reconnection, a
 * cleared cache, a lost notification); NULL removes it. */
void rs_on_applied(void (*fn)(void *, const char *), void *arg);
/* Starts the thread that listens on rm:applied. */
status rs_start_listener(struct err *e) WUR;
void rs_stop_listener(void);

#endif
