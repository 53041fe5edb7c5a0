/* Parked requests. Read-your-writes: a handler defers (http_defer) instead of replying, its
 * connection is suspended on the parked list, and is resumed by http_server_wake (a projector
 * batch landed) or by the ticker at its wake_at, whichever comes first. Work done elsewhere
 * (http_park): the connection is suspended until its completer calls http_resume with the
 * token, no list, no scan. The ticker also runs the header deadline (httpd_limits.c). */
#include "httpd_priv.h"
#include "metrics.h"
#include "svc.h"

/* The server's own counters, also set to 0 at start so they exist before anything happens. */
void http__count_waiter_refused(double v)
{
    metrics_counter_add("http_waiters_refused_total", "Read-your-writes waits refused at once: too many already waiting.",
                        v);
}

/* FNV-1a of key, never 0 (0 stands for no key). */
static uint64_t key_hash(const char *key)
{
    uint64_t h = 1469598103934665603ULL;

    if (key == NULL)
        return 0;
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h != 0 ? h : 1;
}

bool http_defer(const struct http_request *req, struct http_response *resp, int64_t wake_at_ms)
{
    return http_defer_for(req, resp, wake_at_ms, NULL);
}

bool http_defer_for(const struct http_request *req, struct http_response *resp, int64_t wake_at_ms,
                    const char *key)
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
    cs->wake_key = key_hash(key);
    resp->deferred = DEFER_WAKE;
    return true;
}

struct http_parked *http_park(const struct http_request *req, struct http_response *resp, void *data,
                              void (*drop)(void *data))
{
    struct conn_state *cs = ((struct req_priv *)req->priv)->cs;
    struct http_server *srv = ((struct req_priv *)req->priv)->srv;

    if (!srv->can_suspend)
        return NULL;
    pthread_mutex_lock(&srv->mu);
    if (!cs->held)
        srv->nheld++;
    cs->held = 1;
    cs->park = PARK_PARKING; /* suspended by on_request once the handler returned */
    pthread_mutex_unlock(&srv->mu);
    cs->park_data = data;
    cs->park_drop = drop;
    resp->deferred = DEFER_PARK;
    return (struct http_parked *)cs;
}

/* A parked connection cannot complete until resumed, so cs is valid until then. Resumed
 * outside our lock, as libmicrohttpd takes its own locks in resume. */
void http_resume(struct http_parked *token)
{
    struct conn_state *cs = (struct conn_state *)token;
    struct http_server *srv = cs->srv;
    struct MHD_Connection *conn = cs->conn;
    bool now;

    pthread_mutex_lock(&srv->mu);
    now = cs->park == PARK_SUSPENDED;
    cs->park = now ? PARK_NONE : PARK_RESUME_EARLY; /* early: on_request resumes it at once */
    pthread_mutex_unlock(&srv->mu);
    if (now)
        MHD_resume_connection(conn);
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
    http_server_wake_for(srv, NULL);
}

/* A wake-up per applied batch used to resume every parked request, each of which then looked
 * again and parked again: with a few dozen waiting at 2,000 commands/s that was most of the
 * read API's CPU. Now only the requests deferred on the key (or on none) are resumed. */
void http_server_wake_for(struct http_server *srv, const char *key)
{
    struct conn_state *todo = NULL, *cs, *next;
    uint64_t k = key_hash(key);

    if (srv == NULL)
        return;
    pthread_mutex_lock(&srv->mu);
    srv->wake_gen++;
    srv->woke[srv->wake_gen % WAKE_RING].gen = srv->wake_gen;
    srv->woke[srv->wake_gen % WAKE_RING].key = k;
    for (cs = srv->parked; cs != NULL; cs = next) {
        next = cs->next;
        if (k == 0 || cs->wake_key == 0 || cs->wake_key == k)
            unpark_locked(srv, cs, &todo);
    }
    pthread_mutex_unlock(&srv->mu);
    resume_list(todo);
}

bool http__woken_since_locked(const struct http_server *srv, uint64_t gen, uint64_t key)
{
    if (srv->wake_gen == gen)
        return false;
    if (srv->wake_gen - gen >= WAKE_RING)
        return true; /* more than the ring remembers: assume one was for it */
    for (uint64_t g = gen + 1; g <= srv->wake_gen; g++) {
        uint64_t k = srv->woke[g % WAKE_RING].key;
        if (k == 0 || key == 0 || k == key)
            return true;
    }
    return false;
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
