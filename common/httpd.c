/* The HTTP server's life cycle on libmicrohttpd: start and stop, a connection from accept to
 * close, and a request from its first call (authentication, request id, early refusals)
 * through body accumulation with a size bound to the handler, the metrics and the access
 * log. What a handler sees is httpd_reply.c, the limits httpd_limits.c, parking
 * httpd_park.c. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd_priv.h"
#include "log.h"
#include "metrics.h"
#include "openapi.h"
#include "svc.h"

static struct conn_track *track_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

static void access_log(const char *method, const struct http_response *resp,
                       const struct conn_state *cs)
{
    log_info("access method=%s route=\"%s\" status=%d ms=%.1f sub=%s", method,
             resp->route != NULL ? resp->route : "-", resp->status, http__elapsed(&cs->started) * 1000.0,
             cs->who.sub[0] != '\0' ? cs->who.sub : "-");
}

static enum MHD_Result finish(struct MHD_Connection *conn, const char *method,
                              struct http_response *resp, struct conn_state *cs)
{
    enum MHD_Result ret;

    metrics_http_observe(resp->route, resp->status, http__elapsed(&cs->started));
    access_log(method, resp, cs);
    ret = http__send_response(conn, resp);
    http__response_release(resp);
    log_set_request_id(NULL);
    return ret;
}

static void authenticate(struct http_server *srv, struct MHD_Connection *conn, struct conn_state *cs)
{
    struct err e = {0};
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);

    if (srv->o.auth == NULL) {
        snprintf(cs->who.sub, sizeof cs->who.sub, "anonymous");
        cs->who.scopes = AUTH_READ | AUTH_WRITE | AUTH_ADMIN | AUTH_METRICS;
        return;
    }
    if (auth_authenticate(srv->o.auth, h, (int64_t)time(NULL), &cs->who, &e) != ST_OK && h != NULL)
        log_info("token refused: %s", e.msg); /* the reason, never the token */
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_server *srv = cls;
    struct conn_state *cs = *con_cls;
    struct http_response resp;
    struct http_request req;
    struct req_priv priv;

    (void)version;
    if (cs == NULL) /* on_uri ran out of memory */
        return MHD_NO;
    memset(&resp, 0, sizeof resp);
    resp.status = 500;
    if (!cs->begun) {
        struct conn_track *t = track_of(conn);
        cs->begun = 1;
        if (t != NULL) {
            pthread_mutex_lock(&srv->mu);
            t->in_request = 1;
            pthread_mutex_unlock(&srv->mu);
        }
        reqid_take(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id"), cs->request_id);
        log_set_request_id(cs->request_id);
        authenticate(srv, conn, cs);
        memcpy(resp.request_id, cs->request_id, sizeof resp.request_id);
        if (http__refuse_early(srv, conn, cs, &resp))
            return finish(conn, method, &resp, cs);
        log_set_request_id(NULL);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cs->too_large || cs->body.len + n > srv->o.max_body) {
            /* a body without a length: dropped up to a bound, so the 413 still reaches the
             * client, then the connection closes */
            cs->too_large = 1;
            cs->dropped += n;
            return cs->dropped > DRAIN_MAX ? MHD_NO : MHD_YES;
        }
        sbuf_add(&cs->body, upload_data, n);
        return cs->body.failed ? MHD_NO : MHD_YES;
    }

    log_set_request_id(cs->request_id);
    memcpy(resp.request_id, cs->request_id, sizeof resp.request_id);
    if (cs->too_large) {
        http_set_route(&resp, "body_too_large");
        http_reply_error(&resp, 413, "body_too_large", "the request body exceeds %zu bytes",
                         srv->o.max_body);
    } else if ((strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) && strcmp(url, "/openapi.json") == 0) {
        /* open like /healthz: the description of the APIs is no secret */
        http_set_route(&resp, "GET /openapi.json");
        http_set_content_type(&resp, "application/json");
        http_reply(&resp, 200, strdup(openapi_document()));
    } else if (strcmp(method, "GET") == 0 && strcmp(url, "/metrics") == 0) {
        http_set_route(&resp, "GET /metrics");
        req = (struct http_request){.who = &cs->who};
        if (http_require(&req, &resp, AUTH_METRICS)) {
            http_set_content_type(&resp, "text/plain; version=0.0.4");
            http_reply(&resp, 200, metrics_render(srv->o.service));
        }
    } else {
        uint64_t gen;
        pthread_mutex_lock(&srv->mu);
        gen = srv->wake_gen;
        pthread_mutex_unlock(&srv->mu);
        req.method = method;
        req.path = url;
        req.body = cs->body.p != NULL ? cs->body.p : ""; /* NUL-terminated */
        req.body_len = cs->body.len;
        req.request_id = cs->request_id;
        req.who = &cs->who;
        req.started_ms = cs->started_ms;
        req.resumed = cs->resumed;
        req.park_data = cs->park_data;
        cs->park_data = NULL;
        priv = (struct req_priv){conn, cs, srv};
        req.priv = &priv;
        srv->o.handler(srv->o.ctx, &req, &resp);
        if (resp.deferred == DEFER_PARK) {
            bool early;
            http__response_release(&resp);
            cs->resumed++;
            MHD_suspend_connection(conn);
            pthread_mutex_lock(&srv->mu);
            early = cs->park == PARK_RESUME_EARLY; /* http_resume came before the suspend */
            cs->park = early ? PARK_NONE : PARK_SUSPENDED;
            pthread_mutex_unlock(&srv->mu);
            if (early)
                MHD_resume_connection(conn);
            log_set_request_id(NULL);
            return MHD_YES;
        }
        if (resp.deferred == DEFER_WAKE) {
            bool woken;
            http__response_release(&resp);
            cs->resumed++;
            /* Parked outside our lock: libmicrohttpd takes its own locks in suspend and calls
             * our callbacks under them, so ours is never held around one of its calls. */
            MHD_suspend_connection(conn);
            pthread_mutex_lock(&srv->mu);
            /* a wake-up between the handler's read and now would be lost: resumed at once,
             * libmicrohttpd then calls the handler again */
            woken = http__woken_since_locked(srv, gen, cs->wake_key) || srv->stopping;
            if (!woken) {
                cs->parked = 1;
                cs->next = srv->parked;
                if (cs->next != NULL)
                    cs->next->prev = cs;
                cs->prev = NULL;
                srv->parked = cs;
            }
            pthread_mutex_unlock(&srv->mu);
            if (woken)
                MHD_resume_connection(conn);
            log_set_request_id(NULL);
            return MHD_YES;
        }
    }
    return finish(conn, method, &resp, cs);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *srv = cls;
    struct conn_state *cs = *con_cls;
    struct conn_track *t = track_of(conn);

    (void)toe;
    pthread_mutex_lock(&srv->mu);
    if (t != NULL) {
        t->in_request = 0;
        t->since_ms = svc_mono_ms();
    }
    if (cs != NULL && cs->waiting)
        srv->nwaiting--;
    if (cs != NULL && cs->held)
        srv->nheld--;
    pthread_mutex_unlock(&srv->mu);
    if (cs != NULL) {
        if (cs->park_data != NULL && cs->park_drop != NULL) /* resumed, but the client was gone */
            cs->park_drop(cs->park_data);
        sbuf_release(&cs->body);
        free(cs);
        *con_cls = NULL;
    }
}

/* libmicrohttpd's own messages (refused connections, FD_SETSIZE, bad requests) go through the
 * service's logger, with its time, level and service name, instead of bare lines on stderr. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t len;

    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        msg[--len] = '\0';
    log_warn("libmicrohttpd: %s", msg);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct http_server *srv = cls;
    struct conn_track *t;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        t = calloc(1, sizeof *t);
        if (t == NULL)
            return;
        t->fd = ci != NULL ? ci->connect_fd : -1;
        t->since_ms = svc_mono_ms();
        pthread_mutex_lock(&srv->mu);
        t->next = srv->conns;
        if (t->next != NULL)
            t->next->prev = t;
        srv->conns = t;
        pthread_mutex_unlock(&srv->mu);
        *socket_context = t;
        return;
    }
    t = *socket_context;
    if (t == NULL)
        return;
    pthread_mutex_lock(&srv->mu);
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        srv->conns = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    pthread_mutex_unlock(&srv->mu);
    free(t);
    *socket_context = NULL;
}

static void server_free(struct http_server *srv)
{
    if (srv->ticker_started) {
        atomic_store(&srv->ticker_stop, 1);
        pthread_join(srv->ticker, NULL);
    }
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}

status http_server_start(struct http_server **out, const struct http_server_opts *o, struct err *e)
{
    struct http_server *srv;
    struct sockaddr_in addr;
    unsigned flags = MHD_USE_ERROR_LOG | MHD_USE_ITC; /* ITC: MHD_quiesce_daemon at stop */
    int threads = o->threads;

    *out = NULL;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->bind != NULL ? o->bind : "127.0.0.1", &addr.sin_addr) != 1)
        return err_set(e, ST_INVALID, "bad bind address '%s'", o->bind);
    srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    srv->o = *o;
    if (srv->o.max_connections <= 0)
        srv->o.max_connections = 1024;
    if (srv->o.timeout_s <= 0)
        srv->o.timeout_s = 15;
    pthread_mutex_init(&srv->mu, NULL);
    /* poll/epoll, never select: connections beyond FD_SETSIZE must work */
    if (threads == 0) {
        flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD;
    } else {
        flags |= MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
        srv->can_defer = o->max_waiters > 0;
        srv->can_suspend = 1;
    }
    http__count_slow_closed(0);
    if (srv->can_defer)
        http__count_waiter_refused(0);
    if (pthread_create(&srv->ticker, NULL, http__ticker_main, srv) != 0) {
        server_free(srv);
        return err_set(e, ST_INTERNAL, "unable to start the HTTP ticker thread");
    }
    srv->ticker_started = 1;
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        srv, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_URI_LOG_CALLBACK, http__on_uri, srv,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        srv, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)srv->o.timeout_s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)srv->o.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)(o->per_ip_connections > 0 ? o->per_ip_connections : 0),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
        (unsigned)threads, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        int err = errno;
        server_free(srv);
        return err_set(e, ST_UNAVAILABLE, "unable to listen on %s:%d: %s",
                       o->bind != NULL ? o->bind : "127.0.0.1", o->port, strerror(err));
    }
    *out = srv;
    return ST_OK;
}

void http_server_stop(struct http_server **s)
{
    struct http_server *srv;
    int64_t until;

    if (s == NULL || *s == NULL)
        return;
    srv = *s;
    /* parked requests are answered (503: a wait refused) before the daemon goes */
    pthread_mutex_lock(&srv->mu);
    srv->stopping = 1;
    pthread_mutex_unlock(&srv->mu);
    http_server_wake(srv);
    until = svc_mono_ms() + 2000;
    for (;;) {
        int n;
        pthread_mutex_lock(&srv->mu);
        n = srv->parked != NULL ? 1 : 0;
        pthread_mutex_unlock(&srv->mu);
        if (n == 0 || svc_mono_ms() > until)
            break;
        http_server_wake(srv);
        svc_pause_ms(10);
    }
    /* no new connections; the requests in flight finish and are answered before the daemon
     * goes (MHD_stop_daemon would close their connections, also those of a thread per
     * connection, whose answer would be lost). A request parked by http_park is waited for
     * however long: its work may still be committing; others up to a bound (a client sending
     * its body slowly). */
    {
        MHD_socket lfd = MHD_quiesce_daemon(srv->daemon);
        if (lfd != MHD_INVALID_SOCKET)
            close(lfd);
    }
    until = svc_mono_ms() + 30000;
    for (int64_t next_log = svc_mono_ms() + 5000;;) {
        int held, busy = 0;
        pthread_mutex_lock(&srv->mu);
        held = srv->nheld;
        for (struct conn_track *t = srv->conns; t != NULL; t = t->next)
            busy += t->in_request;
        pthread_mutex_unlock(&srv->mu);
        if (held == 0 && (busy == 0 || svc_mono_ms() > until))
            break;
        if (svc_mono_ms() > next_log) {
            log_warn("stopping: %d requests in flight (%d parked) not answered yet", busy, held);
            next_log = svc_mono_ms() + 5000;
        }
        svc_pause_ms(5);
    }
    /* MHD_stop_daemon closes the listener and joins the worker threads, so requests in flight
     * (already in a handler) complete before it returns. */
    MHD_stop_daemon(srv->daemon);
    server_free(srv);
    *s = NULL;
}
