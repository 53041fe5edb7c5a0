/* readapi: the HTTP query API over the Redis read models. */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "boot.h"
#include "cfg.h"
#include "httpd.h"
#include "jsonx.h"
#include "log.h"
#include "query.h"
#include "replica.h"
#include "lookup.h"
#include "rstore.h"
#include "serve.h"
#include "svc.h"

static const char *route_name(enum ra_route r)
{
    switch (r) {
    case RA_HEALTHZ:
        return "GET /healthz";
    case RA_READYZ:
        return "GET /readyz";
    case RA_PROJECTIONS:
        return "GET /projections";
    case RA_ACCOUNT:
        return "GET /accounts/{id}";
    case RA_STATEMENT:
        return "GET /accounts/{id}/statement";
    case RA_OWNER_ACCOUNTS:
        return "GET /accounts";
    case RA_EVENT:
        return "GET /events/{id}";
    case RA_TRANSFER:
        return "GET /transfers/{id}";
    default:
        return "not_found";
    }
}

struct param_walk {
    struct ra_query *q;
    struct err *e;
};

static int take_param(void *ctx, const char *name, const char *value)
{
    struct param_walk *w = ctx;
    return ra_parse_param(w->q, name, value, w->e) != ST_OK;
}

/* A token lists only its own subject's accounts (admin: anyone's). */
static int may_read_owner(const struct http_request *req, const char *owner)
{
    return auth_owns(req->who, owner);
}

static void handle(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct ra_query q;
    struct err e = {0};
    struct param_walk w = {&q, &e};
    status st;

    (void)ctx;
    st = ra_parse_path(&q, req->path, &e);
    http_set_route(resp, route_name(q.route));
    if (st != ST_OK) {
        http_reply_error(resp, 400, e.reason, "%s", e.msg);
        return;
    }
    if (q.route == RA_NOT_FOUND) {
        http_reply_error(resp, 404, "not_found", "no route for '%.200s'", req->path);
        return;
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        http_set_header(resp, "Allow", "GET");
        http_reply_error(resp, 405, "method_not_allowed", "%s is not allowed here, use GET",
                         req->method);
        return;
    }
    if (http_query_each(req, take_param, &w) != 0 || ra_check_query(&q, &e) != ST_OK) {
        http_reply_error(resp, 400, e.reason, "%s", e.msg);
        return;
    }
    switch (q.route) {
    case RA_HEALTHZ:
    case RA_READYZ:
        break;
    case RA_PROJECTIONS:
        if (!http_require(req, resp, AUTH_ADMIN))
            return;
        break;
    default:
        if (!http_require(req, resp, AUTH_READ))
            return;
        break;
    }
    switch (q.route) {
    case RA_HEALTHZ:
        http_reply(resp, 200, strdup("{\"status\":\"ok\"}"));
        break;
    case RA_READYZ:
        if (rs_ready(&e) != ST_OK) {
            log_warn("not ready: %s", e.msg);
            ra_reply_unavailable(resp, "read_model_unavailable", "the read model is not reachable");
        } else {
            http_reply(resp, 200, strdup("{\"status\":\"ready\"}"));
        }
        break;
    case RA_PROJECTIONS: {
        char *body = NULL;
        if (rs_projections(&body, &e) != ST_OK)
            ra_reply_status_error(resp, &e);
        else
            http_reply(resp, 200, body);
        break;
    }
    case RA_OWNER_ACCOUNTS:
        if (!may_read_owner(req, q.owner))
            http_reply_error(resp, 403, "forbidden", "this token may not read another owner's accounts");
        else
            ra_serve_owner_accounts(&q, resp);
        break;
    case RA_EVENT:
    case RA_TRANSFER:
        ra_serve_lookup(req, &q, resp);
        break;
    default:
        ra_serve_account(req, &q, resp);
        break;
    }
}

static void wake_waiters(void *srv, const char *account_id)
{
    http_server_wake_for(srv, account_id);
}

int main(int argc, char **argv)
{
    static struct cfg cfg;
    struct http_server *srv = NULL;
    struct http_server_opts o;
    struct auth *auth = NULL;
    struct err e = {0};
    int rc;

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fprintf(stderr, "usage: readapi\n"
                        "  the query API over the Redis read models (GET /accounts/{id}, statements,\n"
                        "  /accounts?owner=, /events/{id}, /transfers/{id}, /projections);\n"
                        "  SIGTERM drains requests in flight and exits\n"
                        "exit status: 0 stopped cleanly, 1 failed to start (a port, a dependency),\n"
                        "2 usage or configuration\n\n");
        cfg_usage("readapi");
        return 0;
    }
    rc = boot_service("readapi", argc, argv, &cfg, &auth);
    if (rc != 0)
        return rc;
    ra_serve_metrics_init();
    if (rs_init(&cfg, &e) != ST_OK || lk_init(&cfg, &e) != ST_OK || rs_start_listener(&e) != ST_OK ||
        replica_start(&cfg, &e) != ST_OK) {
        log_error("%s", e.msg);
        rs_stop_listener();
        rs_fini();
        auth_free(&auth);
        return 1;
    }

    o = (struct http_server_opts){.bind = cfg.http_bind,
                                  .port = cfg.readapi_port,
                                  /* a pool: waits park their connection, never a thread */
                                  .threads = cfg.http_threads > 0 ? cfg.http_threads : 4,
                                  .max_body = 4096,
                                  .service = "readapi",
                                  .handler = handle,
                                  .ctx = NULL,
                                  .auth = auth,
                                  .max_connections = cfg.http_max_connections,
                                  .per_ip_connections = cfg.http_per_ip_connections,
                                  .timeout_s = cfg.http_timeout_s,
                                  .max_waiters = cfg.http_max_waiters};
    if (http_server_start(&srv, &o, &e) != ST_OK) {
        log_error("%s", e.msg);
        replica_stop();
        rs_stop_listener();
        rs_fini();
        auth_free(&auth);
        return 1;
    }
    rs_on_applied(wake_waiters, srv);
    log_info("listening on %s:%d redis=%s:%d replica=%s auth=%s", cfg.http_bind, cfg.readapi_port,
             cfg.redis_host, cfg.redis_port,
             !cfg.read_replicas ? "none"
             : cfg.redis_replica_url[0] != '\0' ? cfg.redis_replica_url
                                                 : "sentinels",
             auth_mode_str(auth));
    svc_wait_stop();
    log_info("stopping: draining requests");
    rs_on_applied(NULL, NULL);
    http_server_stop(&srv);
    replica_stop();
    rs_stop_listener();
    rs_fini();
    lk_fini();
    auth_free(&auth);
    log_info("stopped");
    return 0;
}
