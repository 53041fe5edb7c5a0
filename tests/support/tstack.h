/* The test stack's own processes: stop a component, bring the stack back, reap our services on abort. */
#ifndef TESTS_TSTACK_H
#define TESTS_TSTACK_H

#include <stdbool.h>
#include <sys/types.h>

/* Pid of a running stack component ("nats", "redis") from its pidfile <STACK_DIR>/run/<name>.pid
 * (scripts/stack's layout), "postgres" from <STACK_DIR>/pg/postmaster.pid; -1 when there is no
 * pidfile or the process is gone. */
pid_t tstack_pid(const char *component);
/* Sends sig to the component and waits (up to timeout_ms) until the process is gone; fails
 * the test when it was not running or does not go. */
void tstack_kill(const char *component, int sig, int timeout_ms);
/* tstack_up when a component (nats, redis, postgres) is not running: a test before may have
 * stopped one. */
void tstack_ensure_up(void);
/* Runs `scripts/stack up --name $STACK_NAME` (starts only what is not running; output appended
 * to <STACK_DIR>/logs/test-stack-up.log); fails the test when it does not succeed. */
void tstack_up(void);
/* Stops the stack's Postgres with `pg_ctl -m immediate` (no checkpoint: crash recovery at the
 * next tstack_up); fails the test when it does not stop. */
void tstack_pg_stop_immediate(void);

/* SIGKILLs pid when the test process aborts (tfail, a crash), so a failed test leaves no
 * service holding the stack's ports; tstack_unguard when it was stopped normally. */
void tstack_guard(pid_t pid);
void tstack_unguard(pid_t pid);

/* The three services of a test: writer, projector (run) and read API. */
struct tstack_svcs {
    pid_t writer, projector, readapi;
};
/* Starts the three (tsvc_start_all: waits until they serve, the read API ready within 20 s)
 * and guards them. A test that restarts one of them stores the new pid in the struct (and
 * guards it). _within: the read API ready within ready_timeout_ms (a first generation to
 * build from a large event store). */
void tstack_start_services(struct tstack_svcs *s);
void tstack_start_services_within(struct tstack_svcs *s, int ready_timeout_ms);
/* Unguards the three, SIGTERMs them (read API, projector, writer) and fails the test unless
 * each drains and exits 0 within its timeout: projector_timeout_ms for the projector, 10 s for
 * the others. All three are stopped before a failure is reported. */
void tstack_stop_services(struct tstack_svcs *s, int projector_timeout_ms);
/* cmocka group fixtures for tests of the three services from an empty state: tstack_ensure_up,
 * treset_state and
 * tstack_start_services, *state (the group's, which cmocka passes to every test) pointing at
 * the struct tstack_svcs; the teardown stops them (tstack_stop_services, projector 10 s). */
int tstack_group_setup(void **state);
int tstack_group_teardown(void **state);

#endif
