/* Rebuild test helpers: projector commands with their output, Redis questions, a steady writer
 * load and a read API watcher running in threads. */
#ifndef TESTS_TREBUILD_H
#define TESTS_TREBUILD_H

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <sys/types.h>

#include "uuid.h"

/* Runs $CQRS_BIN_DIR/<binary> args... (NULL-terminated) with the stack's environment and waits;
 * stdout and stderr (merged) into a malloc'd *out (may be NULL). Returns the exit status. */
int trb_run(const char *binary, const char *const *args, char **out);
/* Waits for a child started with tsvc_start; returns its exit status, -1 on timeout. */
int trb_wait(pid_t pid, int timeout_ms);

/* Integer value of GET key (0 when missing), and of HGET key field. */
long trb_get(redisContext *rc, const char *key);
long trb_hget(redisContext *rc, const char *key, const char *field);

/* Steady writer load: deposits at about rate_per_s, round robin over n accounts opened here. */
struct trb_load {
    int n;
    char (*ids)[UUID_STR_SIZE];
    int rate_per_s;
    volatile int stop;
    long sent;
    pthread_t thread;
};
void trb_load_open(struct trb_load *l, int n, int rate_per_s);
void trb_load_start(struct trb_load *l);
void trb_load_stop(struct trb_load *l);

/* Read API watcher: GETs every account of ids in a loop and records what came back. */
struct trb_watch {
    int n;
    char (*ids)[UUID_STR_SIZE];
    int64_t *seen;            /* highest version seen per account */
    volatile int stop;
    long requests, ok, unavailable, other_5xx, not_yet, not_found, regressions, errors;
    char first_problem[512];
    pthread_t thread;
};
void trb_watch_start(struct trb_watch *w, int n, char (*ids)[UUID_STR_SIZE]);
void trb_watch_stop(struct trb_watch *w);

#endif
