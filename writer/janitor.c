/* Housekeeping of the writer: idempotency records older than IDEMPOTENCY_RETENTION_S are
 * deleted every few seconds (any writer may do it: the deletes are idempotent), and the number
 * of dead-lettered outbox rows is exported as writer_outbox_dead_letters, the outbox's depth and
 * the age of its oldest row as writer_outbox_rows and writer_outbox_oldest_age_seconds (here,
 * not in the relay, so they keep moving while NATS is down and no relay holds a session). */
#include "janitor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "idem.h"
#include "log.h"
#include "metrics.h"
#include "wmetrics.h"

#define ROUND_MAX_MS 5000

struct janitor {
    const struct cfg *cfg;
    pthread_t thread;
    bool started;
    int wake[2];
    atomic_int stopping;
};

static void janitor_round(struct janitor *j, PGconn **pg, bool *warned)
{
    struct err e = {0};
    long purged = 0;
    PGresult *res = NULL;
    char msg[200];

    if (*pg != NULL && db_broken(*pg)) {
        PQfinish(*pg);
        *pg = NULL;
    }
    if (*pg == NULL && db_connect(pg, j->cfg->database_url, j->cfg->request_timeout_ms, &e) != ST_OK)
        goto failed;
    if (idem_purge(*pg, j->cfg->idempotency_retention_s, &purged, &e) != ST_OK)
        goto failed;
    if (purged > 0) {
        wm_keys_purged(purged);
        log_debug("janitor: %ld idempotency records past their retention purged", purged);
    }
    res = PQexec(*pg, "SELECT count(*) FROM outbox_dead_letters");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err_setr(&e, ST_UNAVAILABLE, "store_unavailable", "count dead letters: %s",
                 db_error(msg, sizeof msg, *pg, res));
        PQclear(res);
        goto failed;
    }
    metrics_gauge_set("writer_outbox_dead_letters",
                      "outbox rows the relay could not encode, moved aside (writer dead-letters)",
                      strtod(PQgetvalue(res, 0, 0), NULL));
    PQclear(res);
    res = PQexec(*pg, "SELECT (SELECT count(*) FROM outbox), coalesce((SELECT extract(epoch FROM "
                      "clock_timestamp() - created_at) FROM outbox ORDER BY position LIMIT 1), 0)");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        wm_outbox(strtod(PQgetvalue(res, 0, 0), NULL), strtod(PQgetvalue(res, 0, 1), NULL));
    PQclear(res);
    *warned = false;
    return;
failed:
    if (!*warned) /* once per outage, not every round */
        log_warn("janitor: %s", e.msg);
    *warned = true;
}

static void *janitor_main(void *arg)
{
    struct janitor *j = arg;
    PGconn *pg = NULL;
    bool warned = false;
    int every = j->cfg->idempotency_retention_s * 1000 < ROUND_MAX_MS ? j->cfg->idempotency_retention_s * 1000
                                                                      : ROUND_MAX_MS;

    while (!j->stopping) {
        struct pollfd p = {.fd = j->wake[0], .events = POLLIN};
        janitor_round(j, &pg, &warned);
        (void)poll(&p, 1, every);
    }
    if (pg != NULL)
        PQfinish(pg);
    return NULL;
}

status janitor_start(struct janitor **out, const struct cfg *cfg, struct err *e)
{
    struct janitor *j = calloc(1, sizeof *j);

    *out = NULL;
    if (j == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    j->cfg = cfg;
    j->wake[0] = j->wake[1] = -1;
    if (pipe2(j->wake, O_CLOEXEC) != 0 || pthread_create(&j->thread, NULL, janitor_main, j) != 0) {
        janitor_stop(&j);
        return err_set(e, ST_INTERNAL, "janitor thread: %s", strerror(errno));
    }
    j->started = true;
    *out = j;
    return ST_OK;
}

void janitor_stop(struct janitor **jp)
{
    struct janitor *j = *jp;

    if (j == NULL)
        return;
    if (j->started) {
        j->stopping = 1;
        if (write(j->wake[1], "x", 1) < 0) {
            /* the thread still sees the flag within one round */
        }
        pthread_join(j->thread, NULL);
    }
    if (j->wake[0] >= 0)
        close(j->wake[0]);
    if (j->wake[1] >= 0)
        close(j->wake[1]);
    free(j);
    *jp = NULL;
}
