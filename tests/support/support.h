/* Test support: the stack's settings, HTTP calls, service processes, waiting. */
#ifndef TESTS_SUPPORT_H
#define TESTS_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Value of KEY in the stack env file named by $CQRS_STACK_ENV (or the process environment);
 * NULL when absent. The string lives until exit. */
const char *tenv(const char *key);

/* Milliseconds on a monotonic clock. */
int64_t tnow_ms(void);

#include <sys/types.h>

/* Starts build/bin/<binary> (from $CQRS_BIN_DIR) with args (NULL-terminated, may be NULL), the
 * stack env file's variables, LOG_LEVEL=info and extra_env ("K=V" strings, NULL-terminated, may
 * be NULL), stdout/stderr appended to <stack dir>/logs/test-<binary>.log. Returns the pid. */
pid_t tsvc_start(const char *binary, const char *const *args, const char *const *extra_env);
/* What tsvc_start and trb_run share: forks and execs build/bin/<binary> with args, the stack's
 * variables, LOG_LEVEL=info and extra_env, its stdout and stderr on out_fd (-1: inherited),
 * killed when the test process dies. Returns the pid. */
pid_t tsvc_spawn(const char *binary, const char *const *args, const char *const *extra_env, int out_fd);
/* The PROJECTOR_PORT tsvc_spawn gave the `projector run` process pid (each one it starts gets
 * its own: the stack's PROJECTOR_PORT when free, else one of the next six); -1 when unknown. */
int tsvc_projector_port(pid_t pid);
/* Sends sig, waits up to timeout_ms, then SIGKILL. Returns the exit code (128+signal if killed). */
int tsvc_stop(pid_t pid, int sig, int timeout_ms);
/* A process's resident memory (VmRSS, KiB) and open descriptors; -1 when it is gone. */
long tproc_rss_kib(pid_t pid);
/* Its peak resident memory so far (VmHWM, KiB); -1 when it is gone. */
long tproc_hwm_kib(pid_t pid);
int tproc_fds(pid_t pid);
/* Polls GET base+path until it answers 200 or timeout_ms passes. */
bool twait_http_ok(const char *base, const char *path, int timeout_ms);
/* Starts the three services (writer, projector run, readapi) and waits until they serve: both
 * healthy within 20 s, the read API ready (a current generation) within ready_timeout_ms. */
void tsvc_start_all(pid_t *writer, pid_t *projector, pid_t *readapi, int ready_timeout_ms);

/* Empties the event store, outbox, accounts, idempotency keys, the Redis database and the
 * JetStream stream (with its consumer). Call with no service running. Aborts the test on error. */
void treset_state(void);

/* A Redis connection to the stack's REDIS_URL with its database selected; aborts the test
 * when Redis does not answer. Caller redisFree-s. */
struct redisContext *tredis_open(void);
/* The Redis master's address as the stack's REDIS_SENTINELS name it (REDIS_MASTER_NAME); aborts
 * the test when no Sentinel answers. */
void tsentinel_master(char *host, size_t host_len, int *port);
/* Number of keys matching pattern (SCAN, so Redis is never blocked); aborts the test when a
 * SCAN fails. */
long tredis_count_keys(struct redisContext *rc, const char *pattern);

/* Aborts the test with a message. */
void tfail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Empties only the read side (the Redis database and the JetStream stream with its consumer),
 * keeping the event store. Call with no service running. */
void treset_read_side(void);

/* Runs build/bin/<binary> with args (one shell-quoted string, may be "") and the stack's
 * settings, captures stdout+stderr into out (len bytes, NUL-terminated) and returns the exit
 * status (-1 when it could not run). */
int trun_capture(const char *binary, const char *args, char *out, size_t len);

#endif
