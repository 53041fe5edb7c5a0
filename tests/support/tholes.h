/* Support for the rebuild-hole suites (issue 13): unrelated keys by the million, a deposit load
 * over many existing accounts, pair checks of a generation, Redis restarted from a snapshot. */
#ifndef TESTS_THOLES_H
#define TESTS_THOLES_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdint.h>

#include "uuid.h"

/* n keys "junk:<i>" (DEBUG POPULATE, or pipelined MSET where DEBUG is refused): a keyspace
 * that makes SCAN slow. */
void th_populate(redisContext *rc, long n);

/* Opens n accounts through the writer (8 client threads); their ids into ids. */
void th_open_accounts(char (*ids)[UUID_STR_SIZE], int n, const char *owner);

/* Deposits from nthreads client threads, round robin over ids (not copied: keep them alive).
 * 409 (closed account) and 422 answers are counted, not failures. */
struct th_load {
    int n, nthreads;
    char (*ids)[UUID_STR_SIZE];
    volatile int stop;
    long sent, ok, refused, failed;
    char first_failure[512];
    pthread_t threads[8];
    pthread_mutex_t mu;
};
void th_load_start(struct th_load *l, char (*ids)[UUID_STR_SIZE], int n, int nthreads);
void th_load_stop(struct th_load *l);

/* Broken accounts of generation gen: a hash whose v differs from its list's LLEN, or a list or
 * hash without the other. Prints up to 10 of them. */
long th_broken_pairs(redisContext *rc, long gen);

/* Redis restarted from a snapshot taken now, the writes after it lost (a promoted replica, an
 * everysec AOF, a restore): th_snapshot turns the AOF off and BGSAVEs (waits for it);
 * th_restart_from_snapshot kills Redis and starts it again from that file; th_aof_back turns
 * the AOF on again (rewritten from the data as it is) so later restarts keep what is there. */
void th_snapshot(redisContext *rc);
void th_restart_from_snapshot(void);
void th_aof_back(redisContext *rc);

/* A transaction that took an xid and stays open (BEGIN; pg_current_xact_id()): readers of the
 * events table (rebuild, sweep) see nothing committed after it until th_release_horizon
 * commits it and closes the connection. */
void *th_hold_horizon(void);
void th_release_horizon(void *holder);

/* Inserts an event row through pg (a PGconn *) and nothing else (not published): returns its
 * position, its recorded_at (the envelope's form) into at when not NULL. */
long long th_insert_event(void *pg, const char *event_id, const char *stream, int version, const char *type,
                          const char *data, char at[40]);
/* Publishes an event envelope on the account's events.<partition> subject (Nats-Msg-Id =
 * event_id); with insert, the row goes into the events table first (th_insert_event: the
 * message carries its position and recorded_at, so it folds as the row does). Returns the
 * position (0 for a message that is not in the store). */
long long th_event(void *pg, int insert, const char *event_id, const char *stream, int version,
                   const char *type, const char *data);

/* The fix an operator makes to a poison event (a type no fold knows, e.g. "MoneyTeleported"):
 * its row in the events table becomes a MoneyDeposited of 5, ready for replay-parked. */
void th_fix_poison(void *pg, const char *event_id);

/* Lines of the projector's test log (logs/test-projector.log) that contain needle, counted
 * from byte offset from (th_log_size gives the current end). */
long th_log_size(const char *binary);
long th_log_count(const char *binary, long from, const char *needle);

/* GET /accounts/{id}?min_version=v&wait_ms=3000: the status, and how long it took (logged). */
int th_read_min_version(const char *id, int64_t v, int64_t *ms);
/* A deposit of 100 through the writer; its version. */
int64_t th_deposit(const char *id, const char *description);

#endif
