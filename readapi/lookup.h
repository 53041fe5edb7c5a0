/* The read API's read-only questions to the event store: what never changes once written (an
 * event, a transfer's legs, which accounts an owner opened). A small pool of connections. */
#ifndef READAPI_LOOKUP_H
#define READAPI_LOOKUP_H

#include <stdint.h>

#include "cfg.h"
#include "status.h"
#include "uuid.h"

/* Remembers the settings; connections (at most PG_POOL_SIZE) open lazily, read-only. */
status lk_init(const struct cfg *c, struct err *e) WUR;
void lk_fini(void);

/* The envelope of event_id as stored (malloc'd JSON into *out); ST_NOT_FOUND when there is no
 * such event, ST_UNAVAILABLE (reason store_unavailable) when Postgres does not answer. */
status lk_event(char **out, const char *event_id, struct err *e) WUR;
/* {"transfer_id","from":{leg},"to":{leg},"amount","description","at","reversed_by"} with
 * leg = {"account_id","event_id","version","position"} (malloc'd JSON into *out). */
status lk_transfer(char **out, const char *transfer_id, struct err *e) WUR;

/* One page of the accounts an owner opened, newest first. */
struct lk_owner_page {
    int n;
    char (*ids)[UUID_STR_SIZE]; /* malloc'd, n of them */
    int64_t next_after;         /* position to pass as `after` for the next page; 0: last page */
};
/* At most limit accounts of owner opened at a position below after (0: from the newest). */
status lk_owner_accounts(struct lk_owner_page *out, const char *owner, int64_t after, int limit,
                         struct err *e) WUR;
void lk_owner_page_release(struct lk_owner_page *p);

#endif
