/* Test helpers for the partition-owned projector: leases, partition checkpoints, worker logs. */
#ifndef TESTS_TPROJ_H
#define TESTS_TPROJ_H

#include <stdint.h>
#include <sys/types.h>

#define TPROJ_OWNER_SIZE 96

struct bus;
struct tgen_history;

/* A live generation 1 with no data yet (what a first start of the read side leaves). */
void tproj_seed_generation(void);
/* Inserts events from .. from+n-1 of h into Postgres, then publishes them in order on their
 * partitions' subjects (what writer and relay do) and waits for the acks. */
void tproj_publish(struct bus *b, const struct tgen_history *h, long from, long n);
/* The stream sequence of the last message on events.<part> (0: none). */
uint64_t tproj_stream_last(struct bus *b, int part);

/* Waits until rm:part:<part> records a seq >= seq; fails the test after timeout_ms. */
void tproj_wait_seq(int part, uint64_t seq, int timeout_ms);
/* The seq and epoch rm:part:<part> holds (0 when missing). */
void tproj_part(int part, uint64_t *seq, uint64_t *epoch);
/* Reads the owner (worker name, "" when unowned) and epoch of partitions 0..n-1 from the lease
 * bucket; returns how many have an owner (0 when the bucket does not exist). */
int tproj_owners(int n, char (*owner)[TPROJ_OWNER_SIZE], uint64_t *epoch);
/* Starts `projector run` with its output in logpath (truncated) and extra_env (NULL-ended
 * "NAME=value" list, may be NULL). */
pid_t tproj_spawn(const char *logpath, const char *const *extra_env);
/* Number of lines of logpath containing text. */
long tproj_log_count(const char *logpath, const char *text);
/* The number after the last "<label> " in logpath (-1 when absent), e.g. label "(" in
 * "applied 10 events (3 from gap repair)" is not meant: pass the exact text before the number. */
long tproj_log_number(const char *logpath, const char *before);
/* The worker name a log announces ("starting worker <name>:"), into name. */
int tproj_log_worker(const char *logpath, char *name, size_t len);

#endif
