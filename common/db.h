/* Postgres helpers shared by every service: bounded connect, migrations, reading event rows. */
#ifndef COMMON_DB_H
#define COMMON_DB_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "status.h"

/* Columns to select from events, in the order db_event_from_row expects (SQL fragment). */
#define DB_EVENT_COLUMNS                                                                    \
    "position, event_id::text, stream_id::text, stream_version, type, schema, data::text, " \
    "metadata::text, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* Connects with a bounded connect timeout (timeout_ms) and a statement_timeout of the same
 * bound; *out is NULL on failure (ST_UNAVAILABLE). Caller owns *out (PQfinish). */
status db_connect(PGconn **out, const char *conninfo, int timeout_ms, struct err *e) WUR;

/* Applies every pending migration of the embedded list once, under an advisory lock, each in
 * its own transaction recorded in schema_migrations. Safe to call from several processes. */
status db_migrate(PGconn *conn, struct err *e) WUR;

/* Decodes row `row` of res (selected with DB_EVENT_COLUMNS starting at column `col`) into ev,
 * upcasting its data. A row that does not decode: ST_INVALID, reason "poison". */
status db_event_from_row(struct event *ev, const PGresult *res, int row, int col, struct err *e) WUR;

/* One-line text of a failure for messages and logs: the result's primary message when res
 * carries one, else the connection's error, newlines flattened. Written to buf; returns buf. */
const char *db_error(char *buf, size_t len, const PGconn *conn, const PGresult *res);

/* True when the connection is unusable and should be replaced. */
int db_broken(PGconn *conn);

#endif
