/* libmicrohttpd glue: request accumulation with a size bound, authentication, request ids and
 * the access log, response building, metrics, parked read-your-writes requests, and the
 * janitor that closes connections whose headers arrive too slowly. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "jsonx.h"
#include "log.h"
#include "metrics.h"
#include "sbuf.h"
#include "svc.h"

#define MAX_HEADERS 8
#define HEADERS_MAX_BYTES 8192  /* request headers beyond this: 431 with a JSON body */
#define HEADERS_MAX_COUNT 100
/* libmicrohttpd's per-connection pool holds the whole header block: past it, libmicrohttpd
 * answers 431 itself, in HTML, or closes. libmicrohttpd zeroes the whole pool before every
 * request (a 1 MiB pool was 24% of the writer's CPU), so it is sized for the legitimate
 * bound (HEADERS_MAX_BYTES) with room for refuse_early's JSON 431 up to 128 KiB of headers
 * in up to 100 fields (measured: JSON up to pool - ~60 bytes per field). */
#define CONN_MEMORY (144 * 1024)
#define DRAIN_MAX (1024 * 1024)  /* body bytes dropped after a 413 before the connection closes */
#define TICK_MS 20

struct http_response {
    int status;
    int deferred;
    char request_id[REQID_MAX + 1];
    char *body;
    size_t body_len;
    const char *content_type;
    const char *route;
    int nheaders;
    char *hname[MAX_HEADERS];
    char *hvalue[MAX_HEADERS];
};

/* A connection, from accept to close: for the janitor's header deadline. */
struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    int64_t since_ms;  /* accepted, or its last request completed */
    int in_request;    /* headers of the current request are complete */
};

/* One request. */
struct conn_state {
    struct sbuf body;
    size_t dropped;
    int too_large;
    int begun;      /* the first handler call (headers complete) happened */
    int bad_uri;    /* a control byte, raw or %-encoded, in the request target */
    int waiting;    /* counts against max_waiters */
    int parked;
    int resumed;
    int64_t wake_at;
    struct MHD_Connection *conn;
    struct conn_state *prev, *next; /* parked list */
    struct timespec started;
    int64_t started_ms;
    struct auth_principal who;
    char request_id[REQID_MAX + 1];
};

struct http_server {
    struct MHD_Daemon *daemon;
    struct http_server_opts o;
    int can_defer;
    pthread_mutex_t mu; /* the lists and counts below */
    struct conn_state *parked;
    struct conn_track *conns;
    int nwaiting;
    uint64_t wake_gen;
    int stopping;
    pthread_t ticker;
    int ticker_started;
    atomic_int ticker_stop;
};

/* What http_request.priv points at. */
struct req_priv {
    struct MHD_Connection *conn;
    struct conn_state *cs;
    struct http_server *srv;
};

const char *http_header(const struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value(((struct req_priv *)r->priv)->conn, MHD_HEADER_KIND, name);
}

const char *http_query(const struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value(((struct req_priv *)r->priv)->conn, MHD_GET_ARGUMENT_KIND,
                                       name);
}

struct query_walk {
    int (*fn)(void *ctx, const char *name, const char *value);
    void *ctx;
    int rc;
};

static enum MHD_Result query_visit(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct query_walk *w = cls;

    (void)kind;
    w->rc = w->fn(w->ctx, key, value);
    return w->rc == 0 ? MHD_YES : MHD_NO;
}

int http_query_each(const struct http_request *r,
                    int (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    struct query_walk w = {fn, ctx, 0};

    MHD_get_connection_values(((struct req_priv *)r->priv)->conn, MHD_GET_ARGUMENT_KIND, query_visit,
                              &w);
    return w.rc;
}

void http_reply(struct http_response *resp, int status, char *body)
{
    free(resp->body);
    resp->status = status;
    resp->body = body;
    resp->body_len = body != NULL ? strlen(body) : 0;
}

void http_reply_error(struct http_response *resp, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    json_t *doc;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    doc = json_pack("{s:s, s:s, s:s}", "error", code, "message", msg, "request_id", resp->request_id);
    if (doc == NULL) {
        /* the message quotes client input that is not UTF-8 (a path with %ff): an error must
         * still be a JSON error, so such bytes become '?' */
        for (char *p = msg; *p != '\0'; p++)
            if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
                *p = '?';
        doc = json_pack("{s:s, s:s, s:s}", "error", code, "message", msg, "request_id",
                        resp->request_id);
    }
    http_reply(resp, status, jsonx_dump_decref(doc));
}

bool http_require(const struct http_request *req, struct http_response *resp, unsigned need)
{
    if (req->who->scopes == 0) {
        http_set_header(resp, "WWW-Authenticate", "Bearer");
        http_reply_error(resp, 401, "unauthorized", "a valid bearer token is required");
        return false;
    }
    if (!auth_has(req->who, need)) {
        http_reply_error(resp, 403, "forbidden", "the token does not grant the '%s' scope",
                         (need & AUTH_ADMIN) ? "admin"
                         : (need & AUTH_WRITE) ? "accounts:write"
                         : (need & AUTH_METRICS) ? "admin"
                                                 : "accounts:read");
        return false;
    }
    return true;
}

/* The server's own counters, also set to 0 at start so they exist before anything happens. */
static void count_waiter_refused(double v)
{
    metrics_counter_add("http_waiters_refused_total", "Read-your-writes waits refused at once: too many already waiting.",
                        v);
}

static void count_slow_closed(double v)
{
    metrics_counter_add("http_slow_connections_closed_total",
                        "Connections closed because their request headers came too slowly.", v);
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
        count_waiter_refused(1);
        return false;
    }
    cs->wake_at = wake_at_ms;
    resp->deferred = 1;
    return true;
}

void http_set_header(struct http_response *resp, const char *name, const char *value)
{
    if (resp->nheaders >= MAX_HEADERS)
        return;
    resp->hname[resp->nheaders] = strdup(name);
    resp->hvalue[resp->nheaders] = strdup(value);
    resp->nheaders++;
}

void http_set_content_type(struct http_response *resp, const char *content_type)
{
    resp->content_type = content_type;
}

void http_set_route(struct http_response *resp, const char *route)
{
    resp->route = route;
}

static double elapsed(const struct timespec *from)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - from->tv_sec) + (double)(now.tv_nsec - from->tv_nsec) / 1e9;
}

/* Every error body carries the request id, also those a handler built itself. */
static void stamp_request_id(struct http_response *r)
{
    json_t *doc;

    if (r->status < 400 || r->body == NULL || r->content_type != NULL ||
        strstr(r->body, "\"request_id\"") != NULL)
        return;
    doc = json_loads(r->body, 0, NULL);
    if (json_is_object(doc) && json_object_set_new(doc, "request_id", json_string(r->request_id)) == 0) {
        char *b = json_dumps(doc, JSON_COMPACT);
        if (b != NULL)
            http_reply(r, r->status, b);
    }
    json_decref(doc);
}

static enum MHD_Result send_response(struct MHD_Connection *conn, struct http_response *r)
{
    struct MHD_Response *mr;
    enum MHD_Result ret;

    stamp_request_id(r);
    if (r->body == NULL)
        r->body_len = 0;
    mr = MHD_create_response_from_buffer(r->body_len, r->body != NULL ? r->body : (void *)"",
                                         r->body != NULL ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (mr == NULL)
        return MHD_NO;
    r->body = NULL; /* owned by libmicrohttpd now */
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type != NULL ? r->content_type : "application/json");
    for (int i = 0; i < r->nheaders; i++)
        MHD_add_response_header(mr, r->hname[i], r->hvalue[i]);
    if (r->request_id[0] != '\0')
        MHD_add_response_header(mr, "X-Request-Id", r->request_id);
    ret = MHD_queue_response(conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ret;
}

static void response_release(struct http_response *r)
{
    free(r->body);
    for (int i = 0; i < r->nheaders; i++) {
        free(r->hname[i]);
        free(r->hvalue[i]);
    }
}

/* --- parked requests --- */

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

/* Header deadline: a connection whose request headers are not complete within the timeout
 * (slowloris) is shut down; libmicrohttpd then sees the end of the stream and closes it. The
 * fd stays libmicrohttpd's, so it cannot be reused under us. */
static void janitor_locked(struct http_server *srv, int64_t now)
{
    int64_t limit = (int64_t)srv->o.timeout_s * 1000;

    for (struct conn_track *t = srv->conns; t != NULL; t = t->next) {
        if (!t->in_request && t->fd >= 0 && now - t->since_ms > limit) {
            shutdown(t->fd, SHUT_RDWR);
            t->fd = -1;
            count_slow_closed(1);
        }
    }
}

static void *ticker_main(void *arg)
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
            janitor_locked(srv, now);
            last_janitor = now;
        }
        metrics_gauge_set("http_waiters", "Read-your-writes requests waiting now.", srv->nwaiting);
        pthread_mutex_unlock(&srv->mu);
        resume_list(todo);
        svc_pause_ms(TICK_MS);
    }
    return NULL;
}

/* --- request life cycle --- */

static bool control_in_target(const char *uri)
{
    for (const unsigned char *p = (const unsigned char *)uri; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return true;
        if (*p == '%' && p[1] != '\0' && p[2] != '\0') {
            char hex[3] = {(char)p[1], (char)p[2], '\0'};
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end == '\0' && (v < 0x20 || v == 0x7f))
                return true;
        }
    }
    return false;
}

/* Called with the raw request target, before libmicrohttpd decodes %00 into a NUL that would
 * silently cut the path: its result becomes the request's state. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct conn_state *cs = calloc(1, sizeof *cs);

    (void)cls;
    if (cs == NULL)
        return NULL;
    cs->conn = conn;
    cs->bad_uri = uri == NULL || control_in_target(uri);
    clock_gettime(CLOCK_MONOTONIC, &cs->started);
    cs->started_ms = svc_mono_ms();
    return cs;
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    size_t *sum = cls;

    (void)kind;
    sum[0] += strlen(key) + (value != NULL ? strlen(value) : 0) + 4;
    sum[1]++;
    return MHD_YES;
}

static struct conn_track *track_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

/* First call, headers complete: what can be refused before any body is read. */
static bool refuse_early(struct http_server *srv, struct MHD_Connection *conn, struct conn_state *cs,
                         struct http_response *resp)
{
    size_t sum[2] = {0, 0};
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, sum);
    if (sum[0] > HEADERS_MAX_BYTES || sum[1] > HEADERS_MAX_COUNT) {
        http_set_route(resp, "headers_too_large");
        http_reply_error(resp, 431, "headers_too_large",
                         "the request headers exceed %d bytes or %d fields", HEADERS_MAX_BYTES,
                         HEADERS_MAX_COUNT);
        return true;
    }
    if (cs->bad_uri) {
        http_set_route(resp, "invalid_path");
        http_reply_error(resp, 400, "invalid_path",
                         "the request target contains a control character");
        return true;
    }
    if (cl != NULL && strtoull(cl, NULL, 10) > srv->o.max_body) {
        /* answered before the body is read; libmicrohttpd closes the connection after it */
        http_set_route(resp, "body_too_large");
        http_reply_error(resp, 413, "body_too_large", "the request body exceeds %zu bytes",
                         srv->o.max_body);
        return true;
    }
    return false;
}

static void access_log(const char *method, const struct http_response *resp,
                       const struct conn_state *cs)
{
    log_info("access method=%s route=\"%s\" status=%d ms=%.1f sub=%s", method,
             resp->route != NULL ? resp->route : "-", resp->status, elapsed(&cs->started) * 1000.0,
             cs->who.sub[0] != '\0' ? cs->who.sub : "-");
}

static enum MHD_Result finish(struct MHD_Connection *conn, const char *method,
                              struct http_response *resp, struct conn_state *cs)
{
    enum MHD_Result ret;

    metrics_http_observe(resp->route, resp->status, elapsed(&cs->started));
    access_log(method, resp, cs);
    ret = send_response(conn, resp);
    response_release(resp);
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
        if (refuse_early(srv, conn, cs, &resp))
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
        priv = (struct req_priv){conn, cs, srv};
        req.priv = &priv;
        srv->o.handler(srv->o.ctx, &req, &resp);
        if (resp.deferred) {
            bool woken;
            response_release(&resp);
            cs->resumed++;
            /* Parked outside our lock: libmicrohttpd takes its own locks in suspend and calls
             * our callbacks under them, so ours is never held around one of its calls. */
            MHD_suspend_connection(conn);
            pthread_mutex_lock(&srv->mu);
            /* a wake-up between the handler's read and now would be lost: resumed at once,
             * libmicrohttpd then calls the handler again */
            woken = srv->wake_gen != gen || srv->stopping;
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
    pthread_mutex_unlock(&srv->mu);
    if (cs != NULL) {
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
    unsigned flags = MHD_USE_ERROR_LOG;
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
    }
    count_slow_closed(0);
    if (srv->can_defer)
        count_waiter_refused(0);
    if (pthread_create(&srv->ticker, NULL, ticker_main, srv) != 0) {
        server_free(srv);
        return err_set(e, ST_INTERNAL, "unable to start the HTTP ticker thread");
    }
    srv->ticker_started = 1;
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        srv, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_URI_LOG_CALLBACK, on_uri, srv,
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
    /* MHD_stop_daemon closes the listener and joins the worker threads, so requests in flight
     * (already in a handler) complete before it returns. */
    MHD_stop_daemon(srv->daemon);
    server_free(srv);
    *s = NULL;
}
