/* Generated event histories for tests and benchmarks: valid by the domain's rules, every type. */
#ifndef TESTS_TGEN_H
#define TESTS_TGEN_H

#include <stdint.h>

#include "event.h"

struct tgen_history {
    struct event *events; /* in position (commit) order; positions are 1..n */
    long n, cap;
    int naccounts;
    char (*accounts)[UUID_STR_SIZE];
};

/* Deterministic for a seed: naccounts accounts and about nevents events of every type
 * (deposits, withdrawals within the overdraft, transfers, reversals of single events and of
 * both transfer legs, closes at balance 0). */
void tgen_generate(struct tgen_history *h, int naccounts, long nevents, uint64_t seed);
/* Inserts the events (not the outbox) into the events table with their positions, and moves
 * the position sequence past them. Aborts the test on error. */
void tgen_insert(const struct tgen_history *h, const char *database_url);
void tgen_release(struct tgen_history *h);
/* The stack emptied (treset_state), the schema migrated, then a generated history
 * (tgen_generate) inserted into the stack's DATABASE_URL. Aborts the test on error. */
void tgen_fresh_store(struct tgen_history *h, int naccounts, long nevents, uint64_t seed);
/* The same without the insert (h released first: zeroed or a history). */
void tgen_fresh_history(struct tgen_history *h, int naccounts, long nevents, uint64_t seed);

/* xorshift64*: small deterministic PRNG. */
uint64_t tgen_rand(uint64_t *s);

#endif
