/* A mixed command and read load for fault suites, and the checker of its outcome: every
 * acknowledged command exactly once, nothing rejected written, read models = event store,
 * money conserved. Used by the chaos suite (single node) and the HA suite. */
#ifndef TESTS_TLOAD_H
#define TESTS_TLOAD_H

#include <stdint.h>
#include <stdio.h>

struct tload_opts {
    const char *writer_url;  /* where commands go (a writer, or haproxy) */
    const char *readapi_url; /* where reads go */
    const char *tag;         /* names the run in owners and Idempotency-Keys */
    int clients;             /* command threads (at most 16) */
    int readers;             /* read threads (at most 8) */
    int attempt_timeout_ms;  /* one HTTP attempt */
    int retry_budget_ms;     /* a command is retried (same key) this long after a 5xx/no answer */
    int pause_us;            /* between two commands of a client */
};

/* What the load saw in a window of time [from, until) (monotonic ms). */
struct tload_window {
    long w_fail, r_fail;        /* failed attempts (5xx, no answer) that ended in the window */
    long w_noans;               /* of w_fail: no answer within the attempt timeout */
    long w_late, r_late;        /* of w_fail, r_fail: attempts begun at or after `from` (not in flight then) */
    int64_t w_outage, r_outage; /* first to last failure in the window, ms (0: none) */
    int64_t w_first, w_last;    /* first failed command attempt's start, last one's end, ms after from */
    int64_t max_stale_ms;       /* longest a read saw a version older than an acknowledged one */
    long reads, stale_reads;
};

/* Totals and the checker's findings after tload_check. */
struct tload_report {
    long sent, final_2xx, final_4xx, unanswered, ambiguous_landed, ambiguous_none;
    long attempts_w, failed_w, reads, failed_r;
    long replays_ok, replays_bad, reuse_ok, reuse_bad;
    long problems; /* lost, doubled or foreign events, read API differences */
    long events, accounts;
    int64_t money_clients, money_events, money_write, money_read, sent_sum, recv_sum;
};

struct tload;

/* Starts the client and reader threads. Caller stops with tload_stop and frees with tload_free. */
struct tload *tload_start(const struct tload_opts *o);
/* Stops and joins every thread; fails the test when a client ran out of room for commands. */
void tload_stop(struct tload *l);
/* Commands answered 2xx so far. */
long tload_acked(struct tload *l);
/* What the load saw in [from, until): reads that overlap it, failures that end in it. */
void tload_window(struct tload *l, int64_t from, int64_t until, struct tload_window *out);
/* One line per failed attempt of the window (when, and its status) on f. */
void tload_print_failures(struct tload *l, int64_t from, int64_t until, FILE *f);
/* After the read side converged (tcheck_wait_converged): every command against the events
 * table, versions gapless, the read API equal to the write side, the money sums. */
void tload_check(struct tload *l, struct tload_report *out);
/* The figures in the chaos suite's format, on f. */
void tload_print(const struct tload_report *r, FILE *f);
void tload_free(struct tload *l);

#endif
