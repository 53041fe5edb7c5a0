/* Process plumbing shared by the three services: the stop flag and how signals reach it. */
#ifndef COMMON_SVC_H
#define COMMON_SVC_H

#include <signal.h>
#include <stdint.h>
#include <time.h>

/* Set (only) by the SIGTERM/SIGINT handler; loops poll it to finish their work and drain. */
extern volatile sig_atomic_t svc_stop_requested;

/* Installs the handler that sets svc_stop_requested and ignores SIGPIPE. With block set, also
 * blocks SIGTERM/SIGINT in the calling thread, so every thread started later inherits the
 * block and only svc_wait_stop/svc_sleep in this thread take them. */
void svc_signals_install(int block);
/* Main thread: sleeps until SIGTERM/SIGINT (needs svc_signals_install(1)). */
void svc_wait_stop(void);
/* Main thread: sleeps ms, or less when SIGTERM/SIGINT arrives (needs svc_signals_install(1)). */
void svc_sleep(int ms);
/* Sleeps ms in any thread, or less when a signal arrives (loops poll svc_stop_requested). */
void svc_pause_ms(int ms);
/* Milliseconds of CLOCK_MONOTONIC: for deadlines and durations, never for timestamps. */
int64_t svc_mono_ms(void);
/* The same in nanoseconds. */
int64_t svc_mono_ns(void);
/* The absolute time ns from now on clock (CLOCK_REALTIME for a default condition variable,
 * CLOCK_MONOTONIC for one whose attribute says so): a pthread_cond_timedwait deadline. */
struct timespec svc_time_after_ns(clockid_t clock, int64_t ns);

#endif
