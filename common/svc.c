/* Signals for the services: a flag set by the handler, waited on by the main thread only. */
#include "svc.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

volatile sig_atomic_t svc_stop_requested;

static sigset_t stop_set;     /* SIGTERM and SIGINT */
static sigset_t waiting_mask; /* the mask before blocking: what sigsuspend runs with */

static void on_signal(int sig)
{
    (void)sig;
    svc_stop_requested = 1;
}

void svc_signals_install(int block)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    if (block)
        pthread_sigmask(SIG_BLOCK, &stop_set, &waiting_mask);
}

void svc_wait_stop(void)
{
    while (!svc_stop_requested)
        sigsuspend(&waiting_mask);
}

void svc_sleep(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    int sig = sigtimedwait(&stop_set, NULL, &ts);

    if (sig == SIGTERM || sig == SIGINT)
        svc_stop_requested = 1;
}

int64_t svc_mono_ms(void)
{
    return svc_mono_ns() / 1000000;
}

int64_t svc_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct timespec svc_time_after_ns(clockid_t clock, int64_t ns)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    if (ns < 0)
        ns = 0;
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec += (long)(ns % 1000000000);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

void svc_pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    (void)nanosleep(&ts, NULL); /* a signal ends it early: the caller's loop then sees the stop */
}
