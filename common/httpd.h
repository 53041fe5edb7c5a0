/* HTTP server on libmicrohttpd: bounded bodies, JSON errors, /metrics, one handler per service. */
#ifndef COMMON_HTTPD_H
#define COMMON_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "reqid.h"
#include "status.h"

struct http_request {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* without the query string */
    const char *body;   /* NUL-terminated copy of the body ("" when none) */
    size_t body_len;
    const char *request_id;          /* the caller's X-Request-Id (sanitised) or a new one */
    const struct auth_principal *who; /* the caller; scopes 0 when not authenticated */
    int64_t started_ms;              /* svc_mono_ms() when the request arrived (deadlines) */
    int resumed;                     /* times this request was called again after http_defer */
    void *park_data;                 /* on the call after http_resume: http_park's data; else NULL */
    void *priv; /* the server's; do not touch */
};

struct http_response;
struct http_server;

/* Request header (case-insensitive name); NULL when absent. Valid during the handler call. */
const char *http_header(const struct http_request *r, const char *name);
/* Query parameter; NULL when absent. Valid during the handler call. */
const char *http_query(const struct http_request *r, const char *name);
/* Calls fn for every query parameter in the order sent (value NULL when given without '=')
 * until fn returns non-zero; returns that value, or 0. */
int http_query_each(const struct http_request *r,
                    int (*fn)(void *ctx, const char *name, const char *value), void *ctx);

/* Sets the status and the JSON body; takes ownership of body (malloc'd, may be NULL: empty). */
void http_reply(struct http_response *resp, int status, char *body);
/* Contract error body {"error":code,"message":...,"request_id":...}. The message is for the
 * caller: never a host, port, SQL state or library text (those go to the log). */
void http_reply_error(struct http_response *resp, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Adds a response header (name and value copied; at most 8 headers). */
void http_set_header(struct http_response *resp, const char *name, const char *value);
/* Content type of the body (static string); default application/json. */
void http_set_content_type(struct http_response *resp, const char *content_type);
/* Metrics label for this request (static string, e.g. "GET /accounts/{id}"). */
void http_set_route(struct http_response *resp, const char *route);

/* The caller must be authenticated and hold every scope of need: otherwise answers 401
 * unauthorized (no or a refused token) or 403 forbidden (a scope missing) and returns false. */
bool http_require(const struct http_request *req, struct http_response *resp, unsigned need);

/* Read-your-writes without a thread per waiter: instead of replying, the handler asks to be
 * called again (same request, resumed + 1) after http_server_wake or at wake_at_ms
 * (svc_mono_ms clock), whichever comes first; the connection is parked meanwhile. Returns
 * false (the handler must reply, 503) when the server holds max_waiters parked requests, is
 * stopping, or runs a thread per connection. */
bool http_defer(const struct http_request *req, struct http_response *resp, int64_t wake_at_ms);
/* The same, woken only by http_server_wake and by http_server_wake_for(s, key) of the same key
 * (e.g. an account id): a wake-up about other keys leaves it parked. key NULL: http_defer. */
bool http_defer_for(const struct http_request *req, struct http_response *resp, int64_t wake_at_ms,
                    const char *key);

/* A request parked by http_park until its completer calls http_resume. */
struct http_parked;

/* Parks the request until work done elsewhere (another thread) completes, without a thread
 * waiting: instead of replying, the handler hands the returned token to that work, which calls
 * http_resume(token) exactly once, from any thread, even before the handler has returned. The
 * handler is then called again (resumed + 1, park_data = data) and replies. Until then the
 * connection stays parked: no timeout applies, a client that went away is noticed only after
 * the resume, and http_server_stop waits for it, so the token stays valid until http_resume
 * and must never be dropped. A client gone by the resume may get no second handler call:
 * drop(data) is then called instead (on completion; drop may be NULL). NULL (reply now): the
 * server runs a thread per connection. */
struct http_parked *http_park(const struct http_request *req, struct http_response *resp, void *data,
                              void (*drop)(void *data));
/* Resumes a request parked by http_park (thread-safe; once per token; invalid afterwards). */
void http_resume(struct http_parked *token);

/* Called from several threads at once; must set a reply (or http_defer, http_park). */
typedef void (*http_handler_fn)(void *ctx, const struct http_request *req, struct http_response *resp);

struct http_server_opts {
    const char *bind;   /* IPv4 address to listen on, e.g. "127.0.0.1" or "0.0.0.0" */
    int port;
    int threads;        /* 0: a thread per connection (for handlers that block); > 0: a pool */
    size_t max_body;    /* larger bodies get 413 body_too_large without reaching the handler */
    const char *service; /* metrics label */
    const struct auth *auth; /* authenticates every request (GET /metrics: METRICS or ADMIN) */
    int max_connections;     /* 0: 1024 */
    int per_ip_connections;  /* 0: no per-address limit */
    int timeout_s;           /* idle or slow connection; 0: 15 */
    int max_waiters;         /* parked requests (http_defer); 0: none */
    http_handler_fn handler;
    void *ctx;
};

/* Starts listening; *out owned by the caller (http_server_stop). */
status http_server_start(struct http_server **out, const struct http_server_opts *o, struct err *e) WUR;
/* Calls every parked request's handler again (thread-safe; e.g. a projector batch landed). */
void http_server_wake(struct http_server *s);
/* Calls again the parked requests deferred on key (http_defer_for) and those deferred on no key
 * (http_defer); key NULL: every one (http_server_wake). Thread-safe. */
void http_server_wake_for(struct http_server *s, const char *key);
/* Stops accepting, lets requests in flight finish (waits for every http_park request to be
 * resumed and answered, however long), frees *s and clears the pointer. */
void http_server_stop(struct http_server **s);

#endif
