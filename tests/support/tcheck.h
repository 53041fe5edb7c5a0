/* The oracle of the integration tests: read models must equal the fold of the events table. */
#ifndef TESTS_TCHECK_H
#define TESTS_TCHECK_H

struct tcheck_stats {
    long accounts;
    long events;
    long mismatches;
};

/* Folds every stream of the events table with proj_evolve and compares, field by field and
 * entry by entry, with the current generation in Redis (doc, version, statement list), and
 * that Redis holds no account the events table lacks. Prints up to 20 differences (when
 * verbose) and returns the number of mismatching accounts (stats may be NULL). */
long tcheck_readmodels(struct tcheck_stats *stats, int verbose);
/* Repeats tcheck_readmodels until it finds no mismatch or timeout_ms passes; returns the last
 * mismatch count (printing the differences when it is not 0). */
long tcheck_wait_converged(int timeout_ms, struct tcheck_stats *stats);
/* tcheck_wait_converged with its figures printed under the label when, and a cmocka assertion
 * that no mismatch is left after timeout_ms. */
void tcheck_expect_exact(const char *when, int timeout_ms);

#endif
