/* What a handler sees of the HTTP server: request headers and query parameters, the reply it
 * sets (JSON errors of the contract, headers, route), the scope check, and how a response is
 * handed to libmicrohttpd. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpd_priv.h"
#include "jsonx.h"

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

double http__elapsed(const struct timespec *from)
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

enum MHD_Result http__send_response(struct MHD_Connection *conn, struct http_response *r)
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

void http__response_release(struct http_response *r)
{
    free(r->body);
    for (int i = 0; i < r->nheaders; i++) {
        free(r->hname[i]);
        free(r->hvalue[i]);
    }
}
