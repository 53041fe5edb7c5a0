/* readapi: the HTTP query API over the Redis read models. */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "httpd.h"
#include "jsonx.h"
#include "log.h"
#include "query.h"
#include "rstore.h"
#include "svc.h"

static void reply_status_error(struct http_response *resp, const struct err *e)
{
    if (e->code == ST_UNAVAILABLE)
        http_reply_error(resp, 503, "read_model_unavailable", "%s", e->msg);
    else
        http_reply_error(resp, 500, "internal_error", "%s", e->msg);
}

static void reply_not_yet(struct http_response *resp, const struct ra_query *q, int64_t projected)
{
    json_t *doc = json_pack("{s:s, s:s, s:I, s:I}", "error", "not_yet_projected", "message",
                            "the read model has not reached the requested version yet",
                            "projected_version", (json_int_t)projected, "min_version",
                            (json_int_t)q->min_version);
    http_set_header(resp, "Retry-After", "1");
    http_reply(resp, 503, jsonx_dump_decref(doc));
}

static char *build_statement(const struct rs_statement *s, const char *id, struct err *e)
{
    json_t *doc = NULL;
    json_int_t balance;
    size_t cap = 256, len;
    char *out, *p;

    /* The entries are already JSON in Redis: they are copied, never re-parsed. */
    doc = json_loadb(s->acc.doc, strlen(s->acc.doc), 0, NULL);
    if (doc == NULL) {
        err_set(e, ST_INTERNAL, "corrupt read model for '%s'", id);
        return NULL;
    }
    balance = json_integer_value(json_object_get(doc, "balance"));
    json_decref(doc);
    for (int i = 0; i < s->nentries; i++)
        cap += strlen(s->entries[i]) + 1;
    out = malloc(cap);
    if (out == NULL) {
        err_set(e, ST_INTERNAL, "out of memory");
        return NULL;
    }
    p = out;
    p += sprintf(p, "{\"account_id\":\"%s\",\"balance\":%lld,\"version\":%lld,\"entries\":[", id,
                 (long long)balance, (long long)s->acc.version);
    for (int i = s->nentries - 1; i >= 0; i--) {
        len = strlen(s->entries[i]);
        memcpy(p, s->entries[i], len);
        p += len;
        if (i > 0)
            *p++ = ',';
    }
    if (s->nentries > 0 && s->low > 1)
        sprintf(p, "],\"next_before\":%lld}", (long long)s->low);
    else
        sprintf(p, "],\"next_before\":null}");
    return out;
}

/* Account and statement: load, and while min_version is not reached wait for the projector's
 * next applied batch (no polling loop), up to wait_ms. */
static void serve_account(const struct ra_query *q, struct http_response *resp)
{
    int64_t deadline = svc_mono_ms() + q->wait_ms;
    /* taken before the read, so a batch landing in between still wakes the wait below */
    uint64_t seen = q->min_version > 0 ? rs_applied_seq() : 0;
    struct err e = {0};

    for (;;) {
        struct rs_statement s;
        status st;

        memset(&s, 0, sizeof s);
        if (q->route == RA_ACCOUNT)
            st = rs_account(&s.acc, q->account_id, q->min_version, &e);
        else
            st = rs_statement(&s, q->account_id, q->limit, q->before, &e);
        if (st != ST_OK) {
            reply_status_error(resp, &e);
            rs_statement_release(&s);
            return;
        }
        if (s.acc.gen == 0) {
            http_reply_error(resp, 503, "read_model_unavailable",
                             "no read model generation is current (a rebuild may be running)");
            http_set_header(resp, "Retry-After", "1");
            rs_statement_release(&s);
            return;
        }
        if (s.acc.doc != NULL && s.acc.version >= q->min_version) {
            char *body = q->route == RA_ACCOUNT ? s.acc.doc : build_statement(&s, q->account_id, &e);
            if (q->route == RA_ACCOUNT)
                s.acc.doc = NULL;
            if (body == NULL)
                reply_status_error(resp, &e);
            else
                http_reply(resp, 200, body);
            rs_statement_release(&s);
            return;
        }
        rs_statement_release(&s);
        if (q->min_version == 0) {
            http_reply_error(resp, 404, "account_not_found", "account '%s' does not exist",
                             q->account_id);
            return;
        }
        if (svc_mono_ms() >= deadline) {
            reply_not_yet(resp, q, s.acc.version);
            return;
        }
        {
            int64_t left = deadline - svc_mono_ms();
            /* a bounded fallback wake-up covers a lost notification */
            seen = rs_wait_applied(seen, left < 100 ? (int)left : 100);
        }
    }
}

static void handle(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct ra_query q;
    struct err e = {0};
    static const char *const params[] = {"min_version", "wait_ms", "limit", "before", NULL};

    (void)ctx;
    if (ra_parse_path(&q, req->path, &e) != ST_OK) {
        http_set_route(resp, strstr(req->path, "/statement") ? "GET /accounts/{id}/statement"
                                                             : "GET /accounts/{id}");
        http_reply_error(resp, 400, e.reason, "%s", e.msg);
        return;
    }
    switch (q.route) {
    case RA_HEALTHZ:
        http_set_route(resp, "GET /healthz");
        break;
    case RA_READYZ:
        http_set_route(resp, "GET /readyz");
        break;
    case RA_PROJECTIONS:
        http_set_route(resp, "GET /projections");
        break;
    case RA_ACCOUNT:
        http_set_route(resp, "GET /accounts/{id}");
        break;
    case RA_STATEMENT:
        http_set_route(resp, "GET /accounts/{id}/statement");
        break;
    default:
        http_set_route(resp, "not_found");
        http_reply_error(resp, 404, "not_found", "no route for '%.200s'", req->path);
        return;
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        http_set_header(resp, "Allow", "GET");
        http_reply_error(resp, 405, "method_not_allowed", "%s is not allowed here, use GET",
                         req->method);
        return;
    }
    for (int i = 0; params[i] != NULL; i++) {
        if (ra_parse_param(&q, params[i], http_query(req, params[i]), &e) != ST_OK) {
            http_reply_error(resp, 400, e.reason, "%s", e.msg);
            return;
        }
    }
    switch (q.route) {
    case RA_HEALTHZ:
        http_reply(resp, 200, strdup("{\"status\":\"ok\"}"));
        break;
    case RA_READYZ:
        if (rs_ready(&e) != ST_OK)
            http_reply_error(resp, 503, "read_model_unavailable", "%s", e.msg);
        else
            http_reply(resp, 200, strdup("{\"status\":\"ready\"}"));
        break;
    case RA_PROJECTIONS: {
        char *body = NULL;
        if (rs_projections(&body, &e) != ST_OK)
            reply_status_error(resp, &e);
        else
            http_reply(resp, 200, body);
        break;
    }
    default:
        serve_account(&q, resp);
        break;
    }
}

int main(int argc, char **argv)
{
    static struct cfg cfg;
    char errs[4096];
    struct http_server *srv = NULL;
    struct http_server_opts o;
    struct err e = {0};

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fprintf(stderr, "usage: readapi\n");
        cfg_usage();
        return 0;
    }
    if (cfg_load(&cfg, errs, sizeof errs) != ST_OK) {
        fprintf(stderr, "readapi: invalid configuration:\n%s", errs);
        return 2;
    }
    log_init("readapi", (enum log_level)cfg.log_level);
    /* Only the main thread takes SIGTERM/SIGINT: block them before any thread starts. */
    svc_signals_install(1);
    if (rs_init(&cfg, &e) != ST_OK || rs_start_listener(&e) != ST_OK) {
        log_error("%s", e.msg);
        rs_fini();
        return 1;
    }

    o = (struct http_server_opts){.bind = cfg.http_bind,
                                  .port = cfg.readapi_port,
                                  .threads = cfg.http_threads,
                                  .max_body = 4096,
                                  .service = "readapi",
                                  .handler = handle,
                                  .ctx = NULL};
    if (http_server_start(&srv, &o, &e) != ST_OK) {
        log_error("%s", e.msg);
        rs_stop_listener();
        rs_fini();
        return 1;
    }
    log_info("listening on %s:%d redis=%s:%d", cfg.http_bind, cfg.readapi_port, cfg.redis_host,
             cfg.redis_port);
    svc_wait_stop();
    log_info("stopping: draining requests");
    http_server_stop(&srv);
    rs_stop_listener();
    rs_fini();
    log_info("stopped");
    return 0;
}
