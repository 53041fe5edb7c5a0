/* Writer test helpers: commands over HTTP, questions to the events table, the EVENTS stream read back. */
#ifndef TESTS_TWRITER_H
#define TESTS_TWRITER_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdint.h>

#include "uuid.h"

/* POSTs body (may be NULL) to base (NULL: the stack's WRITER_URL) + path with extra_headers
 * (NULL or "Name: value\r\n" lines) and fails the test unless the status is expect_status and
 * the body is JSON. Returns the parsed body (new reference, caller decrefs). */
json_t *tw_post(const char *base, const char *path, const char *body, const char *extra_headers,
                int expect_status);

/* Sends a command that must be rejected with expect_status and the contract error code, and
 * checks that the events, accounts and idempotency_keys tables did not change in size. */
void tw_reject(const char *base, const char *path, const char *body, const char *extra_headers,
               int expect_status, const char *code);

/* Opens an account on the stack's writer; its id into id. Returns the event's version (1). */
int64_t tw_open(char id[UUID_STR_SIZE], const char *owner, const char *name, const char *currency,
                int64_t overdraft_limit);
/* Deposit ("deposits") or withdrawal ("withdrawals") that must succeed; returns the reply
 * (new reference). */
json_t *tw_money(const char *account_id, const char *kind, int64_t amount, const char *description);

/* Integer field of a JSON object (0 when absent); string field (NULL when absent). */
int64_t tw_int(const json_t *doc, const char *key);
const char *tw_str(const json_t *doc, const char *key);

/* A connection to the stack's DATABASE_URL; fails the test otherwise. Caller PQfinish-es. */
PGconn *tw_pg(void);
/* First column of the first row of sql with up to two text parameters (NULL: fewer), as an
 * integer; fails the test on an error or no row. */
int64_t tw_scalar(PGconn *pg, const char *sql, const char *p1, const char *p2);
/* Runs sql (no parameters); fails the test unless it succeeds. */
void tw_exec(PGconn *pg, const char *sql);
/* Row counts of the writer's tables, in one snapshot. */
struct tw_counts {
    int64_t events, outbox, accounts, idempotency_keys;
};
void tw_counts(PGconn *pg, struct tw_counts *out);
/* Fails the test unless the stream's versions are exactly 1..n; returns n. */
int64_t tw_check_gapless(PGconn *pg, const char *stream_id);

/* One request of a batch sent by client threads, and what came back. */
struct tw_call {
    char path[128];
    char body[256];
    char headers[128]; /* "" or "Name: value\r\n" lines */
    int status;        /* 0: no response */
    char *raw;         /* the body as received (owned) */
    int replayed;      /* Idempotent-Replayed: true */
    json_t *doc;       /* the body parsed, or NULL (owned) */
    int64_t elapsed_ms;
};
/* POSTs every call to base from nthreads client threads started together (each request
 * bounded by 20 s); returns the wall time in ms. Assertion-free: check the calls afterwards. */
int64_t tw_run_batch(const char *base, struct tw_call *calls, int n, int nthreads);
/* Frees the results and the array. */
void tw_calls_free(struct tw_call *calls, int n);

/* One message of the EVENTS stream. */
struct tw_msg {
    uint64_t seq;
    char subject[32];
    char msg_id[UUID_STR_SIZE + 8];   /* Nats-Msg-Id header */
    char event_id[UUID_STR_SIZE];     /* from the payload */
    char stream_id[UUID_STR_SIZE];
    int64_t stream_version;
};
/* Reads the whole EVENTS stream in sequence order into a malloc'd array (*out, caller frees;
 * *count set). Every payload must decode as an event envelope. Fails the test on error. */
void tw_stream_read(struct tw_msg **out, long *count);

/* Rows in the outbox now; waits until it is empty (fails the test after timeout_ms). */
int64_t tw_outbox_rows(PGconn *pg);
void tw_wait_outbox_empty(PGconn *pg, int timeout_ms);
/* The stream against the events table: every event exactly once (message id = event id, on its
 * partition's subject), nothing else, and each account's events in version order. Returns
 * the number of messages. */
long tw_check_stream_exactly_once(PGconn *pg);

#endif
