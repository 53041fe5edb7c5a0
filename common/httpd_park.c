/* Parked read-your-writes requests: a handler defers (http_defer) instead of replying, its
 * connection is suspended on the parked list, and is resumed by http_server_wake (a projector
 * batch landed) or by the ticker at its wake_at, whichever comes first. The ticker also runs
 * the header deadline (httpd_limits.c). */
#include "httpd_priv.h"
#include "metrics.h"
#include "svc.h"

/* The server's own counters, also set to 0 at start so they exist before anything happens. */
void http__count_waiter_refused(double v)
{
    metrics_counter_add("http_waiters_refused_total", "Read-your-writes waits refused at once: too many already waiting.",
                        v);
}

bool http_defer(const struct http_request *req, struct http_response *resp, int64_t wake_at_ms)
{
    struct conn_state *cs = ((struct req_priv *)req->priv)->cs;
    struct http_server *srv = ((struct req_priv *)req->priv)->srv;
    bool ok = false;

    if (!srv->can_defer)
        return false;
    pthread_mutex_lock(&srv->mu);
    if (!srv->stopping && (cs->waiting || srv->nwaiting < srv->o.max_waiters)) {
        if (!cs->waiting)
            srv->nwaiting++;
        cs->waiting = 1;
        ok = true;
    }
    pthread_mutex_unlock(&srv->mu);
    if (!ok) {
        http__count_waiter_refused(1);
        return false;
    }
    cs->wake_at = wake_at_ms;
    resp->deferred = 1;
    return true;
}

/* Takes cs off the parked list onto *out (through cs->next); the caller resumes them after
 * dropping srv->mu, so libmicrohttpd's own locks are never taken under ours. A parked
 * connection cannot complete until it is resumed, so cs stays valid meanwhile. */
static void unpark_locked(struct http_server *srv, struct conn_state *cs, struct conn_state **out)
{
    if (cs->prev != NULL)
        cs->prev->next = cs->next;
    else
        srv->parked = cs->next;
    if (cs->next != NULL)
        cs->next->prev = cs->prev;
    cs->prev = NULL;
    cs->parked = 0;
    cs->next = *out;
    *out = cs;
}

static void resume_list(struct conn_state *list)
{
    while (list != NULL) {
        struct conn_state *next = list->next;
        struct MHD_Connection *conn = list->conn;
        list->next = NULL;
        MHD_resume_connection(conn);
        list = next;
    }
}

void http_server_wake(struct http_server *srv)
{
    struct conn_state *todo = NULL;

    if (srv == NULL)
        return;
    pthread_mutex_lock(&srv->mu);
    srv->wake_gen++;
    while (srv->parked != NULL)
        unpark_locked(srv, srv->parked, &todo);
    pthread_mutex_unlock(&srv->mu);
    resume_list(todo);
}

void *http__ticker_main(void *arg)
{
    struct http_server *srv = arg;
    int64_t last_janitor = svc_mono_ms();

    while (!atomic_load(&srv->ticker_stop)) {
        int64_t now = svc_mono_ms();
        struct conn_state *cs, *next, *todo = NULL;

        pthread_mutex_lock(&srv->mu);
        for (cs = srv->parked; cs != NULL; cs = next) {
            next = cs->next;
            if (cs->wake_at <= now)
                unpark_locked(srv, cs, &todo);
        }
        if (now - last_janitor >= 500) {
            http__janitor_locked(srv, now);
            last_janitor = now;
        }
        metrics_gauge_set("http_waiters", "Read-your-writes requests waiting now.", srv->nwaiting);
        pthread_mutex_unlock(&srv->mu);
        resume_list(todo);
        svc_pause_ms(TICK_MS);
    }
    return NULL;
}
