/* One batch of group commit as one pipelined transaction in two round trips. */
#ifndef WRITER_GROUPTX_H
#define WRITER_GROUPTX_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "command.h"
#include "fastpub.h"
#include "decide.h"
#include "status.h"
#include "store.h"

/* A queued command: finish(p) is called on the committer's thread once its batch ended. */
struct pending {
    const struct command *c;
    const struct store_meta *m;
    struct store_reply *out;
    struct err *e;
    void (*finish)(struct pending *p);
    void *arg; /* finish's */
    char *request;   /* keyed: idem_request_text of m (its hash is what the key binds) */
    int retention_s; /* IDEMPOTENCY_RETENTION_S (the same in every command) */
    status st;
    bool done;         /* group_execute: its caller waits on cv until then */
    pthread_cond_t cv;
    struct pending *next;
    /* filled while the batch runs */
    struct decision d;
    bool decided; /* events decided and written by the batch */
    bool alone;   /* its account was missing or held elsewhere, or its key was used before (a
                   * replay) or twice in the batch: it runs on its own */
    bool claimed; /* keyed: its key was claimed by this batch */
};

enum grouptx_end {
    GTX_COMMITTED,       /* decided commands committed (or nothing needed writing) */
    GTX_NOT_COMMITTED,   /* certainly nothing committed (e says why) */
    GTX_COMMIT_LOST,     /* the COMMIT may have been sent and its answer was lost: ask by xid */
    GTX_COMMITTED_WRONG, /* committed, but not what was asked (outcome_unknown) */
};

/* Runs the batch: each command is decided (p->decided, p->d) or rejected (p->st, p->e) or
 * marked alone; notify: wake the relays with pg_notify at COMMIT. sent(arg) (may be NULL) is
 * called once the writes and COMMIT are on their way (the next batch may then take its locks
 * while this one's WAL flush runs); not at all when the batch ends before. *ticket receives
 * pub's ticket (fastpub_ticket) taken before the writes are sent, once its rows are locked (0
 * when the batch ended before): the caller ends it (fastpub_offer or fastpub_release). xid receives the transaction id once known; *event_ids (malloc'd, caller
 * frees; may be NULL) the uuid[] literal of the events written. The caller rolls back or
 * drops the connection when it is not idle afterwards. */
enum grouptx_end grouptx_run(PGconn *conn, struct pending **batch, int n, bool notify, void (*sent)(void *),
                             void *arg, struct fastpub *pub, uint64_t *ticket, char *xid, size_t xid_len,
                             char **event_ids, struct err *e);

/* Sets the positions and times of the batch's events from rows "event_id, position,
 * recorded_at". */
void grouptx_positions(struct pending **batch, int n, const PGresult *res);

#endif
