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

#endif
