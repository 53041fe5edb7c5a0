/* The statements a command's transaction is built from: session setup, prepared statements,
 * and the classification of a failed statement into the API's terms. */
#ifndef WRITER_SQL_H
#define WRITER_SQL_H

#include <libpq-fe.h>

#include "account.h"
#include "cfg.h"
#include "event.h"
#include "status.h"
#include "store.h"

/* Sets up a fresh command session: synchronous_commit, lock and idle timeouts from cfg,
 * keepalives, and every prepared statement. */
status sql_session_init(PGconn *conn, const struct cfg *cfg, struct err *e) WUR;

/* Server-side TCP keepalives for this session (the client side is set by db_connect). */
status sql_keepalive(PGconn *conn, struct err *e) WUR;

/* Classifies a failed statement (res may be NULL: a send or connection failure) into e:
 * ST_UNAVAILABLE store_unavailable, ST_CONFLICT retry (serialization, deadlock), the API's
 * constraint codes, ST_UNAVAILABLE account_unavailable (lock timeout), else ST_INTERNAL.
 * Returns e->code. */
status sql_fail(PGconn *conn, const PGresult *res, const char *what, struct err *e);

/* Runs prepared statement name; ok is the expected result status. *res owned by the caller. */
status sql_run(PGconn *conn, PGresult **res, const char *name, int n, const char *const *p,
               ExecStatusType ok, struct err *e) WUR;

/* Runs a parameterless command (BEGIN, COMMIT) expecting PGRES_COMMAND_OK. */
status sql_exec(PGconn *conn, const char *sql, struct err *e) WUR;
/* res, the answer to a COMMIT, says the transaction committed: a COMMIT of a transaction that
 * had failed is answered "ROLLBACK" with success (nothing of it is applied). */
status sql_committed(const PGresult *res, struct err *e) WUR;

/* Locks and reads an account; a missing row is an ACCOUNT_NONE view. */
status sql_lock_account(PGconn *conn, const char *id, struct account_view *v, struct err *e) WUR;

/* Reads one event (stmt "ev_get" or "ev_leg"); none found leaves ev->event_id empty. */
status sql_read_event(PGconn *conn, const char *stmt, int n, const char *const *p,
                      struct event *ev, struct err *e) WUR;

/* Gives ev its id and metadata from m, appends it with its outbox row, sets its position. */
status sql_append_event(PGconn *conn, struct event *ev, const struct store_meta *m,
                        struct err *e) WUR;

/* Writes the account row ev leaves behind (insert for AccountOpened, else update). */
status sql_save_account(PGconn *conn, const struct account_view *before, const struct event *ev,
                        int64_t balance, struct err *e) WUR;

#endif
