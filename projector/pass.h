/* One projection pass over a batch, shared by its files: the per-account working state that
 * engine.c (the pass), apply.c (read, fold, compare-and-set) and repair.c (gaps) hand around. */
#ifndef PROJECTOR_PASS_H
#define PROJECTOR_PASS_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdint.h>

#include "account.h"
#include "engine.h"

#define PJ_ROW_TX_COL 9 /* tx_id::text after DB_EVENT_COLUMNS (pj_tail_read) */

enum acct_stop { STOP_NONE = 0, STOP_MISSING, STOP_POISON };

struct acct {
    const char *id;
    struct pj_item **it; /* this account's items, sorted by version */
    int n;
    int need_read;
    int cached; /* applied and view come from p->cache: not read from Redis this round */
    int tries;
    /* read */
    int64_t applied;
    int stalled;
    char *cur_doc; /* doc held by Redis (malloc'd) */
    /* fold */
    enum acct_stop stop;
    int64_t new_version;
    int64_t max_pos;
    char *doc;
    struct account_view view; /* the fold's result (from the cache when cached) */
    int have_view;            /* view is the account at new_version */
    char **entries;
    int nent, cap;
    /* gap events prefetched for this round (one query for the whole batch), by version */
    struct pj_item *gap;
    int ngap;
};

/* engine.c: (re)loads the apply script into p->sha. */
status pj_load_script(struct pj *p, struct err *e) WUR;

/* apply.c: one round of a pass. ap_read_accounts reads v, doc and stall flag of every account
 * with need_read; ap_fold_account folds its items (gaps from repair.c) onto that; ap_apply_accounts
 * sends the compare-and-set scripts (publish: each call announces what it applied on rm:applied,
 * pj_notify_lost when refused) and sets *gone when the generation is gone or, for the live path,
 * renamed (p->gens_changed); ap_settle sets dispositions once the version is durable. */
status ap_read_accounts(struct pj *p, long gen, struct acct *accts, int na, struct err *e) WUR;
status ap_fold_account(struct pj *p, struct acct *a, unsigned flags, struct err *e) WUR;
status ap_apply_accounts(struct pj *p, long gen, struct acct *accts, int na, int publish, int *reload,
                         int *gone, struct err *e) WUR;
void ap_settle(struct pj *p, struct acct *a);
/* Frees what the pass allocated in a (not a itself). */
void ap_acct_release(struct acct *a);

/* Gap repair reads and folds at most this many versions of one account per pass (memory and
 * the apply script's size stay bounded whatever the gap; issue 13, hole 7). */
#define RP_GAP_PAGE 10000

/* repair.c: Postgres rows as items (*out malloc'd, pj_items_free), without a payload: pj_park
 * reads a row's JSON text when it parks it. */
status pj_rows_to_items(const PGresult *res, struct pj_item **out, int *n, struct err *e) WUR;
/* Reads every gap of the pending accounts in one query into each account's gap pool. */
status rp_prefetch_gaps(struct pj *p, struct acct *accts, int na, unsigned flags, struct err *e) WUR;
/* Versions from..to of a's stream: from the pool (*owned 0) or read now (*owned 1: caller frees). */
status rp_gap_events(struct pj *p, struct acct *a, int64_t from, int64_t to, struct pj_item **out,
                     int *n, int *owned, struct err *e) WUR;

/* park.c: an event read from the store that does not fold: when an operator discarded it
 * (discarded_events), the no-op in its place is folded onto view and described in en (*found
 * 1); otherwise nothing changes (*found 0). */
status pj_fold_discarded(struct pj *p, struct account_view *view, const struct pj_item *it,
                         struct statement_entry *en, int *found, struct err *e) WUR;

/* park.c: the stall hash of the generation the running pass writes: rm:stalled for the served
 * one, rm:<gen>:stalled for one being built (the switch makes it rm:stalled), so a stall met
 * only in a building generation never freezes the served one. Returns RM_STALLED_KEY or buf. */
const char *pj_stalled_key(const struct pj *p, char *buf, size_t len);

/* park.c: stalls account_id in the pass generation's stall hash (the first cause is kept). */
status pj_stall(struct pj *p, const char *account_id, const char *event_id, const char *reason,
                struct err *e) WUR;

#endif
