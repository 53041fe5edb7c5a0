/* The test stack's own processes: stop a component, bring the stack back, reap our services on abort. */
#ifndef TESTS_TSTACK_H
#define TESTS_TSTACK_H

#include <stdbool.h>
#include <sys/types.h>

/* Pid of a running stack component ("nats", "redis") from its pidfile <STACK_DIR>/run/<name>.pid
 * (scripts/stack's layout); -1 when there is no pidfile or the process is gone. */
pid_t tstack_pid(const char *component);
/* Sends sig to the component and waits (up to timeout_ms) until the process is gone; fails
 * the test when it was not running or does not go. */
void tstack_kill(const char *component, int sig, int timeout_ms);
/* Runs `scripts/stack up --name $STACK_NAME` (starts only what is not running; output appended
 * to <STACK_DIR>/logs/test-stack-up.log); fails the test when it does not succeed. */
void tstack_up(void);

/* SIGKILLs pid when the test process aborts (tfail, a crash), so a failed test leaves no
 * service holding the stack's ports; tstack_unguard when it was stopped normally. */
void tstack_guard(pid_t pid);
void tstack_unguard(pid_t pid);

#endif
