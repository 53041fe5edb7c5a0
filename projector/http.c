/* The projector's HTTP listener: liveness, readiness and the metrics registry, nothing else
 * (the projector takes no commands over HTTP). */
#include "http.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "httpd.h"

struct pj_http {
    struct http_server *srv;
    struct auth *auth; /* GET /metrics needs METRICS_TOKEN or an admin token, as elsewhere */
};

static pthread_mutex_t ready_mu = PTHREAD_MUTEX_INITIALIZER;
static int ready;
static char ready_reason[200] = "starting";

void pj_http_set_ready(int r, const char *reason)
{
    pthread_mutex_lock(&ready_mu);
    ready = r;
    snprintf(ready_reason, sizeof ready_reason, "%s", reason != NULL ? reason : "");
    pthread_mutex_unlock(&ready_mu);
}

static void handle(void *ctx, const struct http_request *req, struct http_response *resp)
{
    (void)ctx;
    if (strcmp(req->path, "/healthz") == 0) {
        http_set_route(resp, "GET /healthz");
    } else if (strcmp(req->path, "/readyz") == 0) {
        http_set_route(resp, "GET /readyz");
    } else {
        http_set_route(resp, "not_found");
        http_reply_error(resp, 404, "not_found", "no route for '%.200s'", req->path);
        return;
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        http_set_header(resp, "Allow", "GET");
        http_reply_error(resp, 405, "method_not_allowed", "%s is not allowed here, use GET", req->method);
        return;
    }
    if (strcmp(req->path, "/healthz") == 0) {
        http_reply(resp, 200, strdup("{\"status\":\"ok\"}"));
        return;
    }
    pthread_mutex_lock(&ready_mu);
    if (ready)
        http_reply(resp, 200, strdup("{\"status\":\"ready\"}"));
    else
        http_reply_error(resp, 503, "not_ready", "%s", ready_reason);
    pthread_mutex_unlock(&ready_mu);
}

status pj_http_start(struct pj_http **out, const struct cfg *c, struct err *e)
{
    struct pj_http *h = calloc(1, sizeof *h);
    struct http_server_opts o = {.bind = c->http_bind,
                                 .port = c->projector_port,
                                 .threads = 1, /* scrapes and probes: one thread is plenty */
                                 .max_body = 1024,
                                 .service = "projector",
                                 .handler = handle,
                                 .ctx = NULL};
    status st;

    *out = NULL;
    if (h == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    st = auth_create(&h->auth, c, e);
    if (st == ST_OK) {
        o.auth = h->auth;
        st = http_server_start(&h->srv, &o, e);
    }
    if (st != ST_OK) {
        auth_free(&h->auth);
        free(h);
        return st;
    }
    *out = h;
    return ST_OK;
}

void pj_http_stop(struct pj_http **h)
{
    if (h == NULL || *h == NULL)
        return;
    http_server_stop(&(*h)->srv);
    auth_free(&(*h)->auth);
    free(*h);
    *h = NULL;
}
