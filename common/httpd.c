/* libmicrohttpd glue: request accumulation with a size bound, response building, metrics. */
#include "httpd.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonx.h"
#include "log.h"
#include "metrics.h"

#define MAX_HEADERS 8

struct http_response {
    int status;
    char *body;
    size_t body_len;
    const char *content_type;
    const char *route;
    int nheaders;
    char *hname[MAX_HEADERS];
    char *hvalue[MAX_HEADERS];
};

struct http_server {
    struct MHD_Daemon *daemon;
    struct http_server_opts o;
};

struct conn_state {
    char *body;
    size_t len, cap;
    int too_large;
    struct timespec started;
};

const char *http_header(const struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)r->priv, MHD_HEADER_KIND, name);
}

const char *http_query(const struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)r->priv, MHD_GET_ARGUMENT_KIND, name);
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

    MHD_get_connection_values((struct MHD_Connection *)r->priv, MHD_GET_ARGUMENT_KIND, query_visit, &w);
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
    doc = json_pack("{s:s, s:s}", "error", code, "message", msg);
    if (doc == NULL) {
        /* the message quotes client input that is not UTF-8 (a path with %ff): an error must
         * still be a JSON error, so such bytes become '?' */
        for (char *p = msg; *p != '\0'; p++)
            if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
                *p = '?';
        doc = json_pack("{s:s, s:s}", "error", code, "message", msg);
    }
    http_reply(resp, status, jsonx_dump_decref(doc));
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

static enum MHD_Result send_response(struct MHD_Connection *conn, struct http_response *r)
{
    struct MHD_Response *mr;
    enum MHD_Result ret;

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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_server *srv = cls;
    struct conn_state *cs = *con_cls;
    struct http_response resp;
    struct http_request req;
    enum MHD_Result ret;

    (void)version;
    if (cs == NULL) {
        cs = calloc(1, sizeof *cs);
        if (cs == NULL)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &cs->started);
        *con_cls = cs;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cs->too_large || cs->len + n > srv->o.max_body) {
            cs->too_large = 1; /* keep reading (and dropping) so the 413 reaches the client */
            return MHD_YES;
        }
        if (cs->len + n + 1 > cs->cap) {
            size_t cap = cs->cap == 0 ? 1024 : cs->cap;
            while (cap < cs->len + n + 1)
                cap *= 2;
            char *nb = realloc(cs->body, cap);
            if (nb == NULL)
                return MHD_NO;
            cs->body = nb;
            cs->cap = cap;
        }
        memcpy(cs->body + cs->len, upload_data, n);
        cs->len += n;
        return MHD_YES;
    }

    memset(&resp, 0, sizeof resp);
    resp.status = 500;
    if (cs->too_large) {
        http_set_route(&resp, "body_too_large");
        http_reply_error(&resp, 413, "body_too_large", "the request body exceeds %zu bytes",
                         srv->o.max_body);
    } else if (strcmp(method, "GET") == 0 && strcmp(url, "/metrics") == 0) {
        http_set_route(&resp, "GET /metrics");
        http_set_content_type(&resp, "text/plain; version=0.0.4");
        http_reply(&resp, 200, metrics_render(srv->o.service));
    } else {
        req.method = method;
        req.path = url;
        req.body = cs->body != NULL ? cs->body : "";
        if (cs->body != NULL)
            cs->body[cs->len] = '\0';
        req.body_len = cs->len;
        req.priv = conn;
        srv->o.handler(srv->o.ctx, &req, &resp);
    }
    metrics_http_observe(resp.route, resp.status, elapsed(&cs->started));
    ret = send_response(conn, &resp);
    response_release(&resp);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct conn_state *cs = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (cs != NULL) {
        free(cs->body);
        free(cs);
        *con_cls = NULL;
    }
}

/* libmicrohttpd's own messages (refused connections, FD_SETSIZE, bad requests) go through the
 * service's logger, with its time, level and service name, instead of bare lines on stderr. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
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

status http_server_start(struct http_server **out, const struct http_server_opts *o, struct err *e)
{
    struct http_server *srv;
    struct sockaddr_in addr;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

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
    if (o->threads == 0)
        flags |= MHD_USE_THREAD_PER_CONNECTION;
    else
        flags |= MHD_USE_EPOLL;
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        srv, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, o->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
        (unsigned)o->threads, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        free(srv);
        return err_set(e, ST_UNAVAILABLE, "unable to listen on %s:%d",
                       o->bind != NULL ? o->bind : "127.0.0.1", o->port);
    }
    *out = srv;
    return ST_OK;
}

void http_server_stop(struct http_server **s)
{
    if (s == NULL || *s == NULL)
        return;
    /* MHD_stop_daemon closes the listener and joins the worker threads, so requests in flight
     * (already in a handler) complete before it returns. */
    MHD_stop_daemon((*s)->daemon);
    free(*s);
    *s = NULL;
}
