/* Read-model access for the read API: per-thread Redis connections and one script per request. */
#ifndef READAPI_RSTORE_H
#define READAPI_RSTORE_H

#include <stdint.h>

#include "cfg.h"
#include "status.h"

struct rs_account {
    long gen;        /* 0: no current generation (read model unavailable) */
    int64_t version; /* 0 with doc NULL: account not in the read model */
    char *doc;       /* malloc'd JSON body of GET /accounts/{id}, or NULL */
};

struct rs_statement {
    struct rs_account acc;
    int64_t low;     /* lowest version in entries (0 when none) */
    int nentries;
    char **entries;  /* malloc'd JSON strings, oldest first */
};

/* Remembers the settings and makes the document cache; connections are made lazily per thread. */
status rs_init(const struct cfg *c, struct err *e) WUR;
void rs_fini(void);
/* Loads one account: from the cache when it holds a current document at or above min_version,
 * else in one Redis round trip. ST_UNAVAILABLE when Redis fails (bounded by timeouts). */
status rs_account(struct rs_account *out, const char *id, int64_t min_version, struct err *e) WUR;
/* Loads the account and the page of limit entries below before (0: newest) in one round trip. */
status rs_statement(struct rs_statement *out, const char *id, int limit, int64_t before,
                    struct err *e) WUR;
/* Status document of GET /projections (malloc'd JSON) into *out. */
status rs_projections(char **out, struct err *e) WUR;
/* PING and current generation present. */
status rs_ready(struct err *e) WUR;
void rs_account_release(struct rs_account *a);
void rs_statement_release(struct rs_statement *s);

/* Read-your-writes: blocks until a projector batch lands (rm:applied) or timeout_ms passes.
 * Returns the wake-up sequence seen; pass the previous value to wait for a newer one. */
uint64_t rs_wait_applied(uint64_t seen, int timeout_ms);
/* The wake-up sequence now (taken before a read that may have to wait). */
uint64_t rs_applied_seq(void);
/* Starts the thread that listens on rm:applied. */
status rs_start_listener(struct err *e) WUR;
void rs_stop_listener(void);

#endif
