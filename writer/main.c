/* writer: the HTTP command API, its Postgres pool and the outbox relay thread. */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "boot.h"
#include "cfg.h"
#include "command.h"
#include "db.h"
#include "httpd.h"
#include "jsonx.h"
#include "janitor.h"
#include "job.h"
#include "log.h"
#include "relay.h"
#include "store.h"
#include "svc.h"
#include "uuid.h"
#include "wmetrics.h"

#define MAX_BODY (64 * 1024)
#define START_BACKOFF_MAX_MS 5000

struct writer {
    const struct cfg *cfg;
    struct store *store;
};

/* 5xx details (hosts, ports, SQL states, library text) go to the log under the request id;
 * the body says only what the caller can act on. */
static void reply_err(struct http_response *resp, const struct err *e)
{
    int code = cmd_http_status(e->code);

    if (code == 503) {
        log_warn("%s", e->msg);
        http_set_header(resp, "Retry-After", "1");
        http_reply_error(resp, code, e->reason[0] != '\0' ? e->reason : "store_unavailable",
                         "the event store is not reachable; nothing was applied, retry later");
    } else if (code >= 500) {
        log_error("%s", e->msg);
        if (strcmp(e->reason, "outcome_unknown") == 0)
            http_reply_error(resp, code, e->reason,
                             "the command may or may not have been applied: read the account "
                             "before retrying");
        else
            http_reply_error(resp, code, e->reason[0] != '\0' ? e->reason : "internal_error",
                             "the command could not be served");
    } else {
        http_reply_error(resp, code, e->reason, "%s", e->msg);
    }
}

/* A 5xx of a command: e->msg (libpq text, hosts) goes to the log, the body says only what
 * happened and whether sending the command again is safe. */
static void reply_failure(struct http_response *resp, const struct err *e, const char *command_id)
{
    if (e->code == ST_UNAVAILABLE) {
        http_set_header(resp, "Retry-After", "1");
        if (strcmp(e->reason, "account_unavailable") == 0)
            http_reply_error(resp, 503, e->reason,
                             "the account is held by another operation; nothing was applied, "
                             "retry later");
        else
            http_reply_error(resp, 503, "store_unavailable",
                             "the event store is unavailable; nothing was applied, retry later");
        return;
    }
    if (strcmp(e->reason, "outcome_unknown") == 0) {
        json_t *doc = json_pack("{s:s, s:s, s:s}", "error", "outcome_unknown", "message",
                                "the event store stopped answering after the command was sent: it "
                                "may or may not have been applied; look for its command_id in the "
                                "account's events before sending it again without an Idempotency-Key",
                                "command_id", command_id);
        http_reply(resp, 500, jsonx_dump_decref(doc));
        return;
    }
    http_reply_error(resp, 500, "internal_error", "internal error; nothing was applied");
}

/* The answer to a command whose job ended; frees the job. */
static void reply_command(const struct cmd_route *rt, struct store_job *j, struct http_response *resp)
{
    if (j->st != ST_OK) {
        if (j->e.code == ST_UNAVAILABLE || j->e.code == ST_INTERNAL) {
            log_warn("command=%s route=\"%s\" account=%s %s: %s", j->m.command_id, rt->route, j->c.account_id,
                     j->e.reason, j->e.msg);
            reply_failure(resp, &j->e, j->m.command_id);
        } else {
            reply_err(resp, &j->e);
        }
        wm_command(rt->kind, j->e.reason);
    } else {
        wm_command(rt->kind, j->out.replayed ? "replayed" : "ok");
        if (j->out.replayed)
            http_set_header(resp, "Idempotent-Replayed", "true");
        http_reply(resp, j->out.http_status, j->out.body);
        j->out.body = NULL;
    }
    free(j->out.body);
    free(j);
}

static void reply_ready(struct store_job *j, struct http_response *resp)
{
    if (j->st != ST_OK) {
        log_warn("readyz: %s", j->e.msg);
        http_set_header(resp, "Retry-After", "1"); /* as every 503 of the contract */
        http_reply_error(resp, 503, "store_unavailable", "the event store is unavailable");
    } else {
        http_reply(resp, 200, strdup("{\"status\":\"ready\"}"));
    }
    free(j);
}

/* http_park's drop: the client went away before its answer (the command ran all the same). */
static void drop_job(void *data)
{
    struct store_job *j = data;

    if (!j->ping)
        wm_command(j->c.kind, j->st != ST_OK ? j->e.reason : j->out.replayed ? "replayed" : "ok");
    free(j->out.body);
    free(j);
}

/* The job's done: the parked request is called again, with the job, and replies. */
static void job_done(struct store_job *j)
{
    http_resume(j->arg);
}

/* Runs j: with an epoll pool, parked until the store's threads have run it (true: the
 * handler returns, its next call replies); with a thread per connection, in this thread. */
static bool run_job(struct writer *w, const struct http_request *req, struct http_response *resp,
                    struct store_job *j)
{
    j->request_id = req->request_id;
    if (w->cfg->http_threads > 0 && (j->arg = http_park(req, resp, j, drop_job)) != NULL) {
        j->done = job_done;
        store_submit(w->store, j);
        return true;
    }
    if (j->ping)
        j->st = store_ping(w->store, &j->e);
    else
        j->st = store_execute(w->store, &j->c, &j->m, &j->out, &j->e);
    return false;
}

static void handle_command(struct writer *w, const struct cmd_route *rt,
                           const struct http_request *req, struct http_response *resp)
{
    struct store_job *j;
    struct command *c;
    struct store_meta *m;
    struct err e = {0};
    const char *key = http_header(req, "Idempotency-Key");
    const char *corr = http_header(req, "X-Correlation-Id");

    if (!http_require(req, resp, AUTH_WRITE))
        return;
    j = calloc(1, sizeof *j);
    if (j == NULL) {
        http_reply_error(resp, 500, "internal_error", "internal error; nothing was applied");
        return;
    }
    c = &j->c;
    m = &j->m;
    if (cmd_parse(c, rt->kind, rt->account_id, req->body, req->body_len, &e) != ST_OK ||
        cmd_parse_if_match(&c->expected_version, http_header(req, "If-Match"), &e) != ST_OK ||
        (key != NULL && cmd_check_idempotency_key(key, &e) != ST_OK)) {
        reply_err(resp, &e);
        wm_command(rt->kind, e.reason);
        free(j);
        return;
    }
    uuid_generate(m->command_id);
    /* a caller's correlation id is kept only when it is a UUID (the envelope's type) */
    if (corr == NULL || !uuid_parse(corr, strlen(corr), m->correlation_id))
        memcpy(m->correlation_id, m->command_id, sizeof m->correlation_id);
    /* these point into the request, which outlives the job (parked until it is done) */
    m->principal = req->who->sub;
    m->idempotency_key = key;
    /* the account of the path belongs to the request: one key sent to two accounts is reuse */
    snprintf(j->scope, sizeof j->scope, "%s %s", rt->route, rt->account_id);
    m->scope = j->scope;
    m->body = req->body;
    m->body_len = req->body_len;
    if (!(req->who->scopes & AUTH_ADMIN))
        snprintf(c->actor, sizeof c->actor, "%s", req->who->sub);
    /* an account is opened for the caller only (admin: for anyone) */
    if (c->kind == CMD_OPEN && !auth_owns(req->who, c->owner)) {
        http_reply_error(resp, 403, "forbidden", "a token may open accounts only for its own owner");
        wm_command(rt->kind, "forbidden");
        free(j);
        return;
    }
    if (c->kind == CMD_OPEN)
        uuid_generate(c->account_id);
    if (c->kind == CMD_TRANSFER)
        uuid_generate(c->transfer_id);
    if (!run_job(w, req, resp, j))
        reply_command(rt, j, resp);
}

static void handle(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct writer *w = ctx;
    struct cmd_route rt;
    struct err e = {0};
    struct store_job *j;
    status st = cmd_route(&rt, req->path, &e);

    http_set_route(resp, rt.route);
    if (req->park_data != NULL) { /* its job is done: the answer */
        if (((struct store_job *)req->park_data)->ping)
            reply_ready(req->park_data, resp);
        else
            reply_command(&rt, req->park_data, resp);
        return;
    }
    if (st != ST_OK) {
        reply_err(resp, &e);
        return;
    }
    if (strcmp(req->method, rt.method) != 0 &&
        !(strcmp(rt.method, "GET") == 0 && strcmp(req->method, "HEAD") == 0)) {
        http_set_header(resp, "Allow", rt.method);
        http_reply_error(resp, 405, "method_not_allowed", "%s is not allowed here, use %s",
                         req->method, rt.method);
        return;
    }
    switch (rt.kind) {
    case CMD_HEALTHZ:
        http_reply(resp, 200, strdup("{\"status\":\"ok\"}"));
        return;
    case CMD_READYZ:
        if ((j = calloc(1, sizeof *j)) == NULL) {
            http_reply_error(resp, 500, "internal_error", "out of memory");
            return;
        }
        j->ping = true;
        if (!run_job(w, req, resp, j))
            reply_ready(j, resp);
        return;
    default:
        handle_command(w, &rt, req, resp);
        return;
    }
}

/* Postgres must be there and migrated before the first command: retried with backoff, each
 * attempt bounded by the request timeout. */
static int prepare_database(const struct cfg *cfg)
{
    int backoff = 250;

    while (!svc_stop_requested) {
        PGconn *pg = NULL;
        struct err e = {0};
        status st = db_connect(&pg, cfg->database_url, cfg->request_timeout_ms, &e);

        if (st == ST_OK)
            st = db_migrate(pg, &e);
        if (pg != NULL)
            PQfinish(pg);
        if (st == ST_OK)
            return 0;
        log_warn("postgres not ready: %s (retrying in %d ms)", e.msg, backoff);
        svc_sleep(backoff);
        backoff = backoff * 2 > START_BACKOFF_MAX_MS ? START_BACKOFF_MAX_MS : backoff * 2;
    }
    return -1;
}

/* `writer dead-letters`: one line per dead-lettered outbox row, oldest first. */
static int list_dead_letters(const struct cfg *cfg)
{
    PGconn *pg = NULL;
    PGresult *res = NULL;
    struct err e = {0};
    char msg[200];
    int rc = 1;

    if (db_connect(&pg, cfg->database_url, cfg->request_timeout_ms, &e) != ST_OK) {
        fprintf(stderr, "writer: %s\n", e.msg);
        return 1;
    }
    res = PQexec(pg, "SELECT d.position, d.event_id, e.stream_id, e.type, e.schema, "
                     "to_char(d.moved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), d.reason "
                     "FROM outbox_dead_letters d JOIN events e USING (position) ORDER BY d.position");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "writer: list dead letters: %s\n", db_error(msg, sizeof msg, pg, res));
        goto cleanup;
    }
    printf("%d dead-lettered events\n", PQntuples(res));
    for (int i = 0; i < PQntuples(res); i++)
        printf("position=%s event_id=%s stream_id=%s type=%s schema=%s moved_at=%s reason=\"%s\"\n",
               PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
               PQgetvalue(res, i, 4), PQgetvalue(res, i, 5), PQgetvalue(res, i, 6));
    rc = 0;
cleanup:
    PQclear(res);
    PQfinish(pg);
    return rc;
}

int main(int argc, char **argv)
{
    static struct cfg cfg;
    char errs[4096];
    struct writer w = {0};
    struct http_server *srv = NULL;
    struct relay *relay = NULL;
    struct janitor *janitor = NULL;
    struct http_server_opts o;
    struct auth *auth = NULL;
    struct err e = {0};
    int rc = 1;

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fprintf(stderr, "usage: writer                 serve the command API and relay the outbox\n"
                        "       writer dead-letters    list the outbox rows the relay could not encode\n"
                        "  SIGTERM drains requests in flight and exits\n"
                        "exit status: 0 stopped cleanly (or listed), 1 failed to start (a port, a\n"
                        "dependency), 2 usage or configuration\n\n");
        cfg_usage("writer");
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "dead-letters") == 0) {
        if (cfg_load(&cfg, errs, sizeof errs) != ST_OK) {
            fprintf(stderr, "writer: invalid configuration:\n%s", errs);
            return 2;
        }
        return list_dead_letters(&cfg);
    }
    rc = boot_service("writer", argc, argv, &cfg, &auth);
    if (rc != 0)
        return rc;

    if (prepare_database(&cfg) != 0) {
        log_info("stopped before the database was ready");
        auth_free(&auth);
        return 0;
    }
    w.cfg = &cfg;
    wm_init();
    if (store_create(&w.store, &cfg, &e) != ST_OK) {
        log_error("%s", e.msg);
        goto cleanup;
    }
    if (relay_start(&relay, &cfg, &e) != ST_OK || janitor_start(&janitor, &cfg, &e) != ST_OK) {
        log_error("%s", e.msg);
        goto cleanup;
    }
    o = (struct http_server_opts){.bind = cfg.http_bind,
                                  .port = cfg.writer_port,
                                  .threads = cfg.http_threads, /* 0: a thread per connection */
                                  .max_body = MAX_BODY,
                                  .service = "writer",
                                  .handler = handle,
                                  .ctx = &w,
                                  .auth = auth,
                                  .max_connections = cfg.http_max_connections,
                                  .per_ip_connections = cfg.http_per_ip_connections,
                                  .timeout_s = cfg.http_timeout_s,
                                  .max_waiters = cfg.http_max_waiters};
    if (http_server_start(&srv, &o, &e) != ST_OK) {
        log_error("%s", e.msg);
        goto cleanup;
    }
    log_info("listening on %s:%d pool=%d auth=%s", cfg.http_bind, cfg.writer_port, cfg.pg_pool_size,
             auth_mode_str(auth));
    svc_wait_stop();
    log_info("stopping: draining requests");
    /* new commands get 503 (not applied) from here; every one submitted is answered with its
     * true outcome before the HTTP server stops (which waits for their parked requests) */
    store_drain(w.store);
    rc = 0;
cleanup:
    http_server_stop(&srv);
    relay_stop(&relay);
    janitor_stop(&janitor);
    store_free(&w.store);
    auth_free(&auth);
    if (rc == 0)
        log_info("stopped");
    return rc;
}
