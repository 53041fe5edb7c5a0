/* A command (or a readiness ping) handed to the store without a thread waiting for it: the
 * HTTP handler parks its request, the store's threads run the job, done() resumes the request. */
#ifndef WRITER_JOB_H
#define WRITER_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "command.h"
#include "grouptx.h"
#include "status.h"
#include "store.h"

struct store_job {
    /* the caller's, set before store_submit; pointers in m must outlive the job */
    struct command c;
    struct store_meta m;
    char scope[160];        /* what m.scope may point at */
    bool ping;              /* a readiness round trip (store_ping), not a command */
    const char *request_id; /* for the log lines of the threads that run it (may be NULL) */
    void (*done)(struct store_job *j); /* called once, on any thread (also inside store_submit),
                                        * when the answer is final; j is the caller's again */
    void *arg;                         /* done's */
    /* the answer: store_execute's status, reply (st ST_OK; the body is the job's) and error */
    status st;
    struct store_reply out;
    struct err e;
    /* the store's */
    struct pending p;
    struct store *store;
    struct store_job *next;
    int64_t queued_ms;
};

/* Runs j (a command or a ping) on the store's threads: the group commit's committer, or a
 * thread of the executor for commands that run on their own; then calls j->done. Never
 * blocks on Postgres. After store_drain began: ST_UNAVAILABLE at once (nothing applied). */
void store_submit(struct store *s, struct store_job *j);
/* Refuses new jobs and waits until every submitted one is done (its done() returned). */
void store_drain(struct store *s);

/* The executor: a few threads that run jobs which block (one command's transaction, a ping). */
struct execq;
/* Starts nthreads threads calling run(ctx, j) for each pushed job, in order. */
status execq_start(struct execq **out, int nthreads, void (*run)(void *ctx, struct store_job *j), void *ctx,
                   struct err *e) WUR;
/* Queues j (thread-safe). */
void execq_push(struct execq *q, struct store_job *j);
/* Runs what is queued, stops the threads, frees *q and clears the pointer. */
void execq_stop(struct execq **q);

#endif
