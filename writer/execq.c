/* The executor: a small pool of threads for the jobs that block on Postgres (a command that
 * runs alone, a readiness ping), so the HTTP threads never do. */
#include <pthread.h>
#include <stdlib.h>

#include "job.h"

struct execq {
    pthread_mutex_t mu;
    pthread_cond_t more;
    struct store_job *head, *tail;
    bool stop;
    int nthreads;
    pthread_t *threads;
    void (*run)(void *ctx, struct store_job *j);
    void *ctx;
};

static void *worker(void *arg)
{
    struct execq *q = arg;

    pthread_mutex_lock(&q->mu);
    for (;;) {
        struct store_job *j;
        while (q->head == NULL && !q->stop)
            pthread_cond_wait(&q->more, &q->mu);
        if (q->head == NULL)
            break;
        j = q->head;
        q->head = j->next;
        if (q->head == NULL)
            q->tail = NULL;
        pthread_mutex_unlock(&q->mu);
        j->next = NULL;
        q->run(q->ctx, j);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

status execq_start(struct execq **out, int nthreads, void (*run)(void *ctx, struct store_job *j), void *ctx,
                   struct err *e)
{
    struct execq *q = calloc(1, sizeof *q);

    *out = NULL;
    if (q == NULL || (q->threads = calloc((size_t)nthreads, sizeof *q->threads)) == NULL) {
        free(q);
        return err_set(e, ST_INTERNAL, "out of memory");
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->more, NULL);
    q->run = run;
    q->ctx = ctx;
    for (; q->nthreads < nthreads; q->nthreads++)
        if (pthread_create(&q->threads[q->nthreads], NULL, worker, q) != 0) {
            execq_stop(&q);
            return err_set(e, ST_INTERNAL, "unable to start the executor's threads");
        }
    *out = q;
    return ST_OK;
}

void execq_push(struct execq *q, struct store_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail != NULL)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    pthread_cond_signal(&q->more);
    pthread_mutex_unlock(&q->mu);
}

void execq_stop(struct execq **qp)
{
    struct execq *q = *qp;

    if (q == NULL)
        return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->more);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_cond_destroy(&q->more);
    pthread_mutex_destroy(&q->mu);
    free(q->threads);
    free(q);
    *qp = NULL;
}
