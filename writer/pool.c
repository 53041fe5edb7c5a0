/* The writer's Postgres connection pool: a fixed set of slots, each a lazily opened session
 * that is set up (settings, prepared statements) once and replaced when it breaks. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "sql.h"
#include "svc.h"
#include "wmetrics.h"

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t freed;
    struct pool_slot *slots;
    int size;
    int timeout_ms;
    char *conninfo;
    const struct cfg *cfg;
};

status pool_create(struct pool **out, const struct cfg *cfg, struct err *e)
{
    const char *conninfo = cfg->database_url;
    int size = cfg->pg_pool_size;

    struct pool *p = calloc(1, sizeof *p);
    pthread_condattr_t ca;

    *out = NULL;
    if (p == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    p->slots = calloc((size_t)size, sizeof *p->slots);
    p->conninfo = strdup(conninfo);
    if (p->slots == NULL || p->conninfo == NULL) {
        free(p->slots);
        free(p->conninfo);
        free(p);
        return err_set(e, ST_INTERNAL, "out of memory");
    }
    p->size = size;
    wm_pool_in_use(0, size);
    p->timeout_ms = cfg->request_timeout_ms;
    p->cfg = cfg;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->freed, &ca);
    pthread_condattr_destroy(&ca);
    *out = p;
    return ST_OK;
}

void pool_free(struct pool **pp)
{
    struct pool *p = *pp;

    if (p == NULL)
        return;
    for (int i = 0; i < p->size; i++)
        if (p->slots[i].conn != NULL)
            PQfinish(p->slots[i].conn);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->freed);
    free(p->slots);
    free(p->conninfo);
    free(p);
    *pp = NULL;
}

int pool_size(const struct pool *p)
{
    return p->size;
}

int pool_timeout_ms(const struct pool *p)
{
    return p->timeout_ms;
}

const struct cfg *pool_cfg(const struct pool *p)
{
    return p->cfg;
}

void pool_discard(struct pool_slot *sl)
{
    if (sl->conn != NULL)
        PQfinish(sl->conn);
    sl->conn = NULL;
}

void pool_checkin(struct pool *p, struct pool_slot *sl)
{
    /* A connection left inside a transaction (a failed ROLLBACK) is not reused. */
    if (sl->conn != NULL && (db_broken(sl->conn) || PQtransactionStatus(sl->conn) != PQTRANS_IDLE))
        pool_discard(sl);
    pthread_mutex_lock(&p->mu);
    sl->busy = 0;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->mu);
    wm_pool_in_use(-1, p->size);
}

status pool_checkout(struct pool *p, struct pool_slot **out, struct err *e)
{
    struct timespec deadline;
    struct pool_slot *sl = NULL;
    status st = ST_OK;
    int64_t started = svc_mono_ms();

    *out = NULL;
    deadline = svc_time_after_ns(CLOCK_MONOTONIC, (int64_t)p->timeout_ms * 1000000);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* prefer a connected slot so a broken one is only reopened when needed */
        for (int i = 0; i < p->size && sl == NULL; i++)
            if (!p->slots[i].busy && p->slots[i].conn != NULL)
                sl = &p->slots[i];
        for (int i = 0; i < p->size && sl == NULL; i++)
            if (!p->slots[i].busy)
                sl = &p->slots[i];
        if (sl != NULL)
            break;
        if (pthread_cond_timedwait(&p->freed, &p->mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            wm_pool_checkout((double)(svc_mono_ms() - started) / 1000.0, 0);
            return err_setr(e, ST_UNAVAILABLE, "store_unavailable",
                            "no postgres connection free within %d ms", p->timeout_ms);
        }
    }
    sl->busy = 1;
    pthread_mutex_unlock(&p->mu);
    wm_pool_in_use(1, p->size);

    /* connecting happens outside the lock: other requests keep using healthy slots */
    if (sl->conn != NULL && db_broken(sl->conn))
        pool_discard(sl);
    if (sl->conn == NULL) {
        st = db_connect(&sl->conn, p->conninfo, p->timeout_ms, e);
        if (st == ST_OK)
            st = sql_session_init(sl->conn, p->cfg, e);
        if (st != ST_OK) {
            pool_discard(sl);
            pool_checkin(p, sl);
            wm_pool_checkout((double)(svc_mono_ms() - started) / 1000.0, 0);
            return st;
        }
    }
    wm_pool_checkout((double)(svc_mono_ms() - started) / 1000.0, 1);
    *out = sl;
    return ST_OK;
}
