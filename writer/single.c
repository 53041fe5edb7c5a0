/* A command in a transaction of its own: lock the accounts, decide, append events + outbox,
 * update the write-side accounts and the idempotency record, notify the relay, commit. */
#include "single.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "decide.h"
#include "idem.h"
#include "outcome.h"
#include "reply.h"
#include "sql.h"

#define MAX_ATTEMPTS 3 /* serialization failures and deadlocks are retried */

/* Reads and locks what a reversal needs, accounts in id order (no deadlock between two
 * reversals of one transfer from both sides). */
static status load_reversal(PGconn *conn, const struct command *c, struct account_view *acc,
                            struct account_view *other, struct event *target, struct event *leg,
                            bool *reversed, struct err *e)
{
    const char *p[2];
    char ids[2 * UUID_STR_SIZE + 4];
    PGresult *res = NULL;
    status st;
    bool transfer;

    *reversed = false;
    memset(leg, 0, sizeof *leg);
    account_view_init(other, "");
    if (c->event_id[0] != '\0') {
        p[0] = c->event_id;
        st = sql_read_event(conn, "ev_get", 1, p, target, e);
    } else {
        /* a reversal named by its transfer: this account's leg of it */
        p[0] = c->account_id;
        p[1] = c->transfer_id;
        st = sql_read_event(conn, "ev_leg", 2, p, target, e);
        if (st == ST_OK && target->event_id[0] == '\0')
            return err_setr(e, ST_NOT_FOUND, "transfer_not_found", "account '%s' has no leg of transfer '%s'",
                            c->account_id, c->transfer_id);
    }
    if (st != ST_OK)
        return st;
    if (target->event_id[0] != '\0' && strcmp(target->stream_id, c->account_id) != 0)
        memset(target, 0, sizeof *target); /* another account's event: not found here */
    transfer = target->type == EV_TRANSFER_SENT || target->type == EV_TRANSFER_RECEIVED;
    if (transfer && strcmp(target->counterparty, c->account_id) < 0) {
        st = sql_lock_account(conn, target->counterparty, other, e);
        if (st == ST_OK)
            st = sql_lock_account(conn, c->account_id, acc, e);
    } else {
        st = sql_lock_account(conn, c->account_id, acc, e);
        if (st == ST_OK && transfer)
            st = sql_lock_account(conn, target->counterparty, other, e);
    }
    if (st != ST_OK || target->event_id[0] == '\0')
        return st;
    if (transfer) {
        p[0] = target->counterparty;
        p[1] = target->transfer_id;
        st = sql_read_event(conn, "ev_leg", 2, p, leg, e);
        if (st != ST_OK)
            return st;
    }
    /* after the locks: a reversal committed meanwhile is visible to this statement */
    snprintf(ids, sizeof ids, "{%s%s%s}", target->event_id, leg->event_id[0] ? "," : "", leg->event_id);
    p[0] = ids;
    st = sql_run(conn, &res, "ev_reversed", 1, p, PGRES_TUPLES_OK, e);
    if (st == ST_OK)
        *reversed = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    PQclear(res);
    return st;
}

/* What a COMMIT whose answer is lost is asked by: its xid, read before the COMMIT is sent,
 * and the ids of its events (a uuid[] literal). */
struct lost_commit {
    char xid[32];
    char event_ids[DECISION_MAX * (UUID_STR_SIZE + 1) + 2];
    int nevents;
};

/* *lc: what to ask for if the COMMIT's answer is lost. *commit_lost: the COMMIT was sent and
 * its answer lost with the connection (the transaction may have committed). */
static status transact(PGconn *conn, struct fastpub *pub, const struct command *c, const struct store_meta *m,
                       const char *request, int retention_s, struct store_reply *out, struct lost_commit *lc,
                       bool *commit_lost, struct err *e)
{
    status st;
    struct account_view acc, other;
    struct event target, leg;
    struct decision d;
    bool replay = false, reversed = false;

    st = sql_exec(conn, "BEGIN", e);
    if (st != ST_OK && db_broken(conn)) {
        /* a pooled connection that died while idle: nothing was sent, a fresh one may work */
        char cause[sizeof e->msg];
        snprintf(cause, sizeof cause, "%s", e->msg);
        return err_setr(e, ST_CONFLICT, "retry", "%s", cause);
    }
    if (st != ST_OK)
        return st;
    if (m->idempotency_key != NULL) {
        st = idem_claim(conn, m, request, retention_s, &replay, out, e);
        if (st != ST_OK || replay)
            return st; /* the caller rolls back: nothing of this request is kept */
    }

    switch (c->kind) {
    case CMD_OPEN:
        account_view_init(&acc, c->account_id);
        st = decide(&acc, c, &d, e);
        break;
    case CMD_TRANSFER: {
        /* both rows locked in id order, so opposite transfers cannot deadlock */
        bool from_first = strcmp(c->account_id, c->to) < 0;
        st = sql_lock_account(conn, from_first ? c->account_id : c->to, from_first ? &acc : &other, e);
        if (st == ST_OK)
            st = sql_lock_account(conn, from_first ? c->to : c->account_id, from_first ? &other : &acc, e);
        if (st == ST_OK)
            st = decide_transfer(&acc, &other, c, &d, e);
        break;
    }
    case CMD_REVERSE:
        st = load_reversal(conn, c, &acc, &other, &target, &leg, &reversed, e);
        if (st == ST_OK)
            st = decide_reversal(&acc, &target, &other, &leg, reversed, c, &d, e);
        break;
    default:
        st = sql_lock_account(conn, c->account_id, &acc, e);
        if (st == ST_OK)
            st = decide(&acc, c, &d, e);
        break;
    }
    if (st != ST_OK)
        return st;

    for (int i = 0; i < d.count && st == ST_OK; i++) {
        const struct account_view *owner_acc = strcmp(d.events[i].stream_id, acc.account_id) == 0 ? &acc : &other;
        st = sql_append_event(conn, &d.events[i], m, e);
        if (st == ST_OK)
            st = sql_save_account(conn, owner_acc, &d.events[i], d.balance_after[i], e);
    }
    if (st == ST_OK)
        st = reply_build(c, &d, out, e);
    if (st == ST_OK && m->idempotency_key != NULL)
        st = idem_record(conn, m, out, e);
    if (st == ST_OK) {
        /* the relays are woken by pg_notify only when nothing publishes after the COMMIT */
        PGresult *res = NULL;
        st = sql_run(conn, &res, pub == NULL ? "notify" : "xact_id", 0, NULL, PGRES_TUPLES_OK, e);
        if (st == ST_OK)
            snprintf(lc->xid, sizeof lc->xid, "%s", PQgetvalue(res, 0, pub == NULL ? 1 : 0));
        PQclear(res);
    }
    if (st == ST_OK) {
        size_t len = 0;
        for (int i = 0; i < d.count; i++)
            len += (size_t)snprintf(lc->event_ids + len, sizeof lc->event_ids - len, "%s%s", i ? "," : "{",
                                    d.events[i].event_id);
        snprintf(lc->event_ids + len, sizeof lc->event_ids - len, "}");
        lc->nevents = d.count;
    }
    if (st == ST_OK) {
        /* its rows are locked: whatever committed on them before has its ticket already */
        uint64_t ticket = fastpub_ticket(pub);
        PGresult *res = PQexec(conn, "COMMIT");
        st = PQresultStatus(res) == PGRES_COMMAND_OK ? sql_committed(res, e) : sql_fail(conn, res, "COMMIT", e);
        PQclear(res);
        /* an error answer to COMMIT is a rollback; no answer at all is a question */
        *commit_lost = st != ST_OK && db_broken(conn);
        if (st == ST_OK) {
            const struct event *evs[DECISION_MAX] = {NULL};
            for (int i = 0; i < d.count; i++)
                evs[i] = &d.events[i];
            fastpub_offer(pub, ticket, evs, d.count);
        } else {
            if (*commit_lost)
                fastpub_missed(pub); /* later commits go after this one's rows, if it committed */
            fastpub_release(pub, ticket);
        }
    }
    return st;
}

/* The COMMIT of a command was sent and its answer lost: the truth from the store. Its events
 * are published as read back from the outbox (by the next publisher round, or the relay). */
static status resolve(struct pool *p, struct fastpub *pub, const struct lost_commit *lc, struct store_reply *out,
                      struct err *e)
{
    const struct cfg *cfg = pool_cfg(p);
    char cause[sizeof e->msg];
    struct err re = {0};

    snprintf(cause, sizeof cause, "%s", e->msg);
    switch (outcome_resolve(cfg->database_url, lc->xid, lc->event_ids, lc->nevents, NULL, cfg->outcome_wait_ms,
                            &re)) {
    case OUTCOME_COMMITTED:
        err_clear(e);
        fastpub_missed(pub);
        return out->body != NULL ? ST_OK : err_set(e, ST_INTERNAL, "committed reply missing");
    case OUTCOME_ABORTED:
        return err_setr(e, ST_UNAVAILABLE, "store_unavailable", "commit answer lost (%s), not committed: %s",
                        cause, re.msg);
    default:
        return err_setr(e, ST_INTERNAL, "outcome_unknown", "commit answer lost (%s): %s", cause, re.msg);
    }
}

status single_execute(struct pool *p, struct fastpub *pub, const struct command *c, const struct store_meta *m,
                      struct store_reply *out, struct err *e)
{
    status st = ST_OK;
    struct pool_slot *sl = NULL;
    char *request = NULL;

    memset(out, 0, sizeof *out);
    if (m->idempotency_key != NULL) {
        request = idem_request_text(m);
        if (request == NULL)
            return err_set(e, ST_INTERNAL, "out of memory");
    }
    /* stale pooled connections (after a server restart) each cost one attempt */
    for (int attempt = 1; attempt <= MAX_ATTEMPTS + pool_size(p); attempt++) {
        struct lost_commit lc = {.nevents = 0};
        bool commit_lost = false;
        st = pool_checkout(p, &sl, e);
        if (st != ST_OK)
            break;
        st = transact(sl->conn, pub, c, m, request, pool_cfg(p)->idempotency_retention_s, out, &lc, &commit_lost,
                      e);
        if (!commit_lost && PQtransactionStatus(sl->conn) != PQTRANS_IDLE) {
            PGresult *res = PQexec(sl->conn, "ROLLBACK");
            PQclear(res);
        }
        pool_checkin(p, sl);
        sl = NULL;
        if (commit_lost) {
            fastpub_missed(pub); /* see group.c: later commits go after this one's rows */
            st = resolve(p, pub, &lc, out, e);
            break;
        }
        if (st == ST_OK || strcmp(e->reason, "retry") != 0)
            break;
        free(out->body);
        memset(out, 0, sizeof *out);
    }
    if (st == ST_CONFLICT && strcmp(e->reason, "retry") == 0) {
        char cause[sizeof e->msg];
        snprintf(cause, sizeof cause, "%s", e->msg);
        err_setr(e, ST_UNAVAILABLE, "store_unavailable", "too much contention: %s", cause);
    }
    if (st != ST_OK) {
        free(out->body);
        memset(out, 0, sizeof *out);
        st = e->code;
    }
    free(request);
    return st;
}
