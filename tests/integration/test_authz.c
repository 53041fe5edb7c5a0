/* Who may do what, on both services: a table of (token, endpoint) -> status, asserted row by
 * row, with the event store counted around every refused command (nothing written), the
 * principal recorded in the metadata and a transfer's reply limited to the caller's account.
 * The services run with JWT_AUDIENCE set, so a token for another audience is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"
#include "thttp.h"
#include "tstack.h"
#include "ttoken.h"
#include "twriter.h"

#define AUD "cqrs-auth-test"

enum tok { T_NONE, T_EXPIRED, T_BADSIG, T_BADAUD, T_ALGNONE, T_OTHER, T_READONLY, T_OWNER, T_ADMIN, T__N };
static const char *const tok_names[T__N] = {"no token",   "expired",        "wrong signature",
                                            "wrong aud",  "alg none",       "another owner",
                                            "read-only",  "owner",          "admin JWT"};
static char *auth_line[T__N];

enum ep {
    E_OPEN, E_DEPOSIT, E_WITHDRAW, E_TRANSFER, E_REVERSE, E_CLOSE, E_W_METRICS, E_W_HEALTH,
    E_ACCOUNT, E_STATEMENT, E_OWNER_LIST, E_EVENT, E_XFER, E_PROJECTIONS, E_R_METRICS, E_R_HEALTH,
    E__N
};

struct endpoint {
    const char *name;
    int writer;          /* 1: writer, 0: read API */
    const char *method;
    const char *path;    /* {A} alice's account, {B} bob's, {E} her deposit event, {X} the */
    const char *body;    /* transfer, {T} the run's tag, {N} the token's row */
};

static const struct endpoint eps[E__N] = {
    [E_OPEN] = {"open for alice", 1, "POST", "/accounts", "{\"owner\":\"alice-{T}\",\"name\":\"n-{N}\",\"currency\":\"EUR\"}"},
    [E_DEPOSIT] = {"deposit", 1, "POST", "/accounts/{A}/deposits", "{\"amount\":100}"},
    [E_WITHDRAW] = {"withdraw", 1, "POST", "/accounts/{A}/withdrawals", "{\"amount\":1}"},
    [E_TRANSFER] = {"transfer from alice", 1, "POST", "/transfers", "{\"from\":\"{A}\",\"to\":\"{B}\",\"amount\":1}"},
    [E_REVERSE] = {"reversal", 1, "POST", "/accounts/{A}/reversals", "{\"event_id\":\"{E}\"}"},
    [E_CLOSE] = {"close", 1, "POST", "/accounts/{A}/close", "{}"},
    [E_W_METRICS] = {"writer /metrics", 1, "GET", "/metrics", NULL},
    [E_W_HEALTH] = {"writer /healthz", 1, "GET", "/healthz", NULL},
    [E_ACCOUNT] = {"account", 0, "GET", "/accounts/{A}", NULL},
    [E_STATEMENT] = {"statement", 0, "GET", "/accounts/{A}/statement", NULL},
    [E_OWNER_LIST] = {"owner's accounts", 0, "GET", "/accounts?owner=alice-{T}", NULL},
    [E_EVENT] = {"event", 0, "GET", "/events/{E}", NULL},
    [E_XFER] = {"transfer", 0, "GET", "/transfers/{X}", NULL},
    [E_PROJECTIONS] = {"/projections", 0, "GET", "/projections", NULL},
    [E_R_METRICS] = {"read API /metrics", 0, "GET", "/metrics", NULL},
    [E_R_HEALTH] = {"read API /healthz", 0, "GET", "/healthz", NULL},
};

/* Expected status per token and endpoint. Another owner's account is 404 (not 403): a token
 * cannot even learn that it exists. The transfer is alice -> bob, so bob may read it. Alice's
 * balance is never 0, so close is 422 for whoever may try; the owner reverses the deposit
 * first, so the admin's reversal is 409 already_reversed (authorised, refused by the rules). */
static const int want[T__N][E__N] = {
    /*            open dep  wd   xfer rev  close wmet wh  acct stmt list evt  xfr  proj rmet rh */
    [T_NONE] =     {401, 401, 401, 401, 401, 401, 401, 200, 401, 401, 401, 401, 401, 401, 401, 200},
    [T_EXPIRED] =  {401, 401, 401, 401, 401, 401, 401, 200, 401, 401, 401, 401, 401, 401, 401, 200},
    [T_BADSIG] =   {401, 401, 401, 401, 401, 401, 401, 200, 401, 401, 401, 401, 401, 401, 401, 200},
    [T_BADAUD] =   {401, 401, 401, 401, 401, 401, 401, 200, 401, 401, 401, 401, 401, 401, 401, 200},
    [T_ALGNONE] =  {401, 401, 401, 401, 401, 401, 401, 200, 401, 401, 401, 401, 401, 401, 401, 200},
    [T_OTHER] =    {403, 404, 404, 404, 404, 404, 403, 200, 404, 404, 403, 404, 200, 403, 403, 200},
    [T_READONLY] = {403, 403, 403, 403, 403, 403, 403, 200, 200, 200, 200, 200, 200, 403, 403, 200},
    [T_OWNER] =    {201, 201, 201, 201, 201, 422, 403, 200, 200, 200, 200, 200, 200, 403, 403, 200},
    [T_ADMIN] =    {201, 201, 201, 201, 409, 422, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200},
};

static char alice[UUID_STR_SIZE], bob[UUID_STR_SIZE], dep_event[UUID_STR_SIZE], xfer[UUID_STR_SIZE];
static char tag[32];

/* tmpl with its {A} {B} {E} {X} {T} {N} filled in. */
static void subst(char *out, size_t len, const char *tmpl, int row)
{
    size_t o = 0;
    char num[16];

    snprintf(num, sizeof num, "%d", row);
    for (const char *p = tmpl; *p != '\0' && o + 1 < len; p++) {
        const char *v = NULL;
        if (p[0] == '{' && p[1] != '\0' && p[2] == '}') {
            switch (p[1]) {
            case 'A': v = alice; break;
            case 'B': v = bob; break;
            case 'E': v = dep_event; break;
            case 'X': v = xfer; break;
            case 'T': v = tag; break;
            case 'N': v = num; break;
            default: break;
            }
        }
        if (v == NULL) {
            out[o++] = *p;
            continue;
        }
        for (; *v != '\0' && o + 1 < len; v++)
            out[o++] = *v;
        p += 2;
    }
    out[o] = '\0';
}

static char *line_for(const struct ttoken_spec *s)
{
    char *tok = ttoken_make(s), *line = NULL;
    if (asprintf(&line, "Authorization: Bearer %s\r\n", tok) < 0)
        tfail("asprintf");
    free(tok);
    return line;
}

static int setup(void **state)
{
    char owner_a[64], owner_b[64], body[256];
    json_t *doc;

    /* the services inherit it: every JWT below but one is for this audience */
    setenv("JWT_AUDIENCE", AUD, 1);
    tstack_group_setup(state);
    snprintf(tag, sizeof tag, "%lld", (long long)tnow_ms());
    snprintf(owner_a, sizeof owner_a, "alice-%s", tag);
    snprintf(owner_b, sizeof owner_b, "bob-%s", tag);
    auth_line[T_NONE] = strdup("");
    auth_line[T_EXPIRED] = line_for(&(struct ttoken_spec){.sub = owner_a, .scope = "accounts:read accounts:write", .exp_in_s = -600, .aud = AUD});
    auth_line[T_BADSIG] = line_for(&(struct ttoken_spec){.key = "another-secret-of-at-least-32-bytes!!", .sub = owner_a, .scope = "accounts:read accounts:write", .aud = AUD});
    auth_line[T_BADAUD] = line_for(&(struct ttoken_spec){.sub = owner_a, .scope = "accounts:read accounts:write", .aud = "another-service"});
    auth_line[T_ALGNONE] = line_for(&(struct ttoken_spec){.alg = "none", .sub = owner_a, .scope = "admin", .aud = AUD});
    auth_line[T_OTHER] = line_for(&(struct ttoken_spec){.sub = owner_b, .scope = "accounts:read accounts:write", .aud = AUD});
    auth_line[T_READONLY] = line_for(&(struct ttoken_spec){.sub = owner_a, .scope = "accounts:read", .aud = AUD});
    auth_line[T_OWNER] = line_for(&(struct ttoken_spec){.sub = owner_a, .scope = "accounts:read accounts:write", .aud = AUD});
    auth_line[T_ADMIN] = line_for(&(struct ttoken_spec){.sub = "ops", .scope = "admin", .aud = AUD});

    /* alice's account with money and a deposit; bob's account; a transfer alice -> bob (the
     * stack's API_TOKEN, admin, through the test client's default) */
    tw_open(alice, owner_a, "main", "EUR", 0);
    tw_open(bob, owner_b, "main", "EUR", 0);
    doc = tw_money(alice, "deposits", 100000, "seed");
    snprintf(dep_event, sizeof dep_event, "%s", tw_str(doc, "event_id"));
    json_decref(doc);
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":10}", alice, bob);
    doc = tw_post(NULL, "/transfers", body, NULL, 201);
    snprintf(xfer, sizeof xfer, "%s", tw_str(doc, "transfer_id"));
    json_decref(doc);
    /* the read side has them before the table runs */
    {
        char path[128];
        struct thttp_resp r;
        snprintf(path, sizeof path, "/accounts/%s?min_version=3&wait_ms=10000", alice);
        if (thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 15000) != 0 || r.status != 200)
            tfail("alice's account not projected: %d", r.status);
        thttp_resp_release(&r);
        snprintf(path, sizeof path, "/accounts/%s?min_version=2&wait_ms=10000", bob);
        if (thttp_request(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, 15000) != 0 || r.status != 200)
            tfail("bob's account not projected: %d", r.status);
        thttp_resp_release(&r);
    }
    return 0;
}

static int teardown(void **state)
{
    for (int i = 0; i < T__N; i++)
        free(auth_line[i]);
    unsetenv("JWT_AUDIENCE");
    return tstack_group_teardown(state);
}

static void test_table(void **state)
{
    PGconn *pg = tw_pg();
    int rows = 0, failures = 0;

    (void)state;
    for (int t = 0; t < T__N; t++) {
        for (int p = 0; p < E__N; p++) {
            const struct endpoint *ep = &eps[p];
            char path[256], body[512];
            struct thttp_resp r;
            struct tw_counts before, after;
            json_t *doc;

            subst(path, sizeof path, ep->path, t);
            if (ep->body != NULL)
                subst(body, sizeof body, ep->body, t);
            tw_counts(pg, &before);
            if (thttp_request_as(&r, ep->method, ep->writer ? tenv("WRITER_URL") : tenv("READAPI_URL"),
                                 path, ep->body != NULL ? body : NULL, NULL, auth_line[t], 10000) != 0)
                tfail("%s / %s: no answer", tok_names[t], ep->name);
            tw_counts(pg, &after);
            rows++;
            printf("  %-16s %-20s -> %d\n", tok_names[t], ep->name, r.status);
            if (r.status != want[t][p]) {
                fprintf(stderr, "FAIL %s / %s: %d, expected %d: %s\n", tok_names[t], ep->name, r.status,
                        want[t][p], r.body);
                failures++;
            }
            if (r.status >= 400 && ep->writer &&
                (after.events != before.events || after.accounts != before.accounts ||
                 after.idempotency_keys != before.idempotency_keys)) {
                fprintf(stderr, "FAIL %s / %s: refused (%d) but wrote events %lld -> %lld\n", tok_names[t],
                        ep->name, r.status, (long long)before.events, (long long)after.events);
                failures++;
            }
            doc = r.status >= 400 ? thttp_json(&r) : NULL;
            if (r.status >= 400) {
                /* every refusal is the contract's JSON error with the request id */
                const char *code = json_string_value(json_object_get(doc, "error"));
                if (code == NULL || json_string_value(json_object_get(doc, "request_id")) == NULL ||
                    (r.status == 401 && strcmp(code, "unauthorized") != 0) ||
                    (r.status == 403 && strcmp(code, "forbidden") != 0) ||
                    (r.status == 404 && strstr(code, "not_found") == NULL)) {
                    fprintf(stderr, "FAIL %s / %s: body %s\n", tok_names[t], ep->name, r.body);
                    failures++;
                }
                if (r.body != NULL && auth_line[t][0] != '\0' &&
                    strstr(r.body, auth_line[t] + strlen("Authorization: Bearer ")) != NULL) {
                    fprintf(stderr, "FAIL %s / %s: the token is echoed\n", tok_names[t], ep->name);
                    failures++;
                }
            }
            json_decref(doc);
            thttp_resp_release(&r);
        }
    }
    printf("  %d rows, %d failures\n", rows, failures);
    assert_int_equal(failures, 0);
    PQfinish(pg);
}

/* The owner's own commands: the principal in the metadata; a transfer's reply without the
 * recipient's balance (an admin sees both). */
static void test_principal_and_transfer_reply(void **state)
{
    PGconn *pg = tw_pg();
    char body[256], owner_a[64];
    struct thttp_resp r;
    json_t *doc;
    int64_t n;

    (void)state;
    snprintf(owner_a, sizeof owner_a, "alice-%s", tag);
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":5}", alice, bob);
    assert_int_equal(thttp_request_as(&r, "POST", tenv("WRITER_URL"), "/transfers", body, NULL,
                                      auth_line[T_OWNER], 10000), 0);
    assert_int_equal(r.status, 201);
    doc = thttp_json(&r);
    assert_non_null(json_object_get(json_object_get(doc, "from"), "balance"));
    assert_null(json_object_get(json_object_get(doc, "to"), "balance"));
    n = tw_scalar(pg, "SELECT count(*) FROM events WHERE data->>'transfer_id' = $1 AND metadata->>'principal' = $2",
                  tw_str(doc, "transfer_id"), owner_a);
    assert_int_equal(n, 2); /* both legs say who sent it */
    json_decref(doc);
    thttp_resp_release(&r);

    assert_int_equal(thttp_request_as(&r, "POST", tenv("WRITER_URL"), "/transfers", body, NULL,
                                      auth_line[T_ADMIN], 10000), 0);
    assert_int_equal(r.status, 201);
    doc = thttp_json(&r);
    assert_non_null(json_object_get(json_object_get(doc, "to"), "balance"));
    n = tw_scalar(pg, "SELECT count(*) FROM events WHERE data->>'transfer_id' = $1 AND metadata->>'principal' = 'ops'",
                  tw_str(doc, "transfer_id"), NULL);
    assert_int_equal(n, 2);
    json_decref(doc);
    thttp_resp_release(&r);
    PQfinish(pg);
}

/* A read that must wait for a version parks on what the read API's cache holds, without
 * asking Redis: only once the cached document names the caller as the owner. Another owner's
 * token is answered 404 at once, as for an account that does not exist, not parked until
 * wait_ms and then told the account is behind. */
static void test_waiting_read_of_anothers_account(void **state)
{
    char path[160];
    struct thttp_resp r;
    json_t *doc;
    int64_t version, t0;

    (void)state;
    snprintf(path, sizeof path, "/accounts/%s", alice);
    assert_int_equal(thttp_request_as(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, auth_line[T_ADMIN],
                                      5000), 0);
    assert_int_equal(r.status, 200); /* read, so cached */
    doc = thttp_json(&r);
    version = tw_int(doc, "version");
    json_decref(doc);
    thttp_resp_release(&r);
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=3000", alice, (long long)version + 50);
    t0 = tnow_ms();
    assert_int_equal(thttp_request_as(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, auth_line[T_OTHER],
                                      10000), 0);
    assert_int_equal(r.status, 404);
    assert_true(tnow_ms() - t0 < 1000);
    thttp_resp_release(&r);
    /* the owner's own read of a version not there yet waits, and is told so at wait_ms */
    snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=300", alice, (long long)version + 50);
    t0 = tnow_ms();
    assert_int_equal(thttp_request_as(&r, "GET", tenv("READAPI_URL"), path, NULL, NULL, auth_line[T_OWNER],
                                      10000), 0);
    assert_int_equal(r.status, 503);
    assert_true(tnow_ms() - t0 >= 290);
    doc = thttp_json(&r);
    assert_string_equal(json_string_value(json_object_get(doc, "error")), "not_yet_projected");
    json_decref(doc);
    thttp_resp_release(&r);
}

/* X-Request-Id: a safe one is echoed in the header and the error body; an unsafe one is
 * replaced; the access log line names the route and the subject, never the token. */
static void test_request_id(void **state)
{
    struct thttp_resp r;
    char hv[128], logpath[512], line[4096], rid[64], hdr[128], want_line[128];
    json_t *doc;
    FILE *f;
    int seen = 0, leaked = 0;

    (void)state;
    snprintf(rid, sizeof rid, "auth-test-%s", tag);
    snprintf(hdr, sizeof hdr, "X-Request-Id: %s\r\n", rid);
    snprintf(want_line, sizeof want_line, "req=%s", rid);
    assert_int_equal(thttp_request_as(&r, "GET", tenv("READAPI_URL"), "/projections", NULL, hdr,
                                      auth_line[T_OWNER], 5000), 0);
    assert_int_equal(r.status, 403);
    assert_non_null(thttp_header(&r, "X-Request-Id", hv, sizeof hv));
    assert_string_equal(hv, rid);
    doc = thttp_json(&r);
    assert_string_equal(json_string_value(json_object_get(doc, "request_id")), rid);
    json_decref(doc);
    thttp_resp_release(&r);
    assert_int_equal(thttp_request_as(&r, "GET", tenv("READAPI_URL"), "/healthz", NULL,
                                      "X-Request-Id: bad id <script>\r\n", "", 5000), 0);
    assert_non_null(thttp_header(&r, "X-Request-Id", hv, sizeof hv));
    assert_int_equal(strlen(hv), 32);
    thttp_resp_release(&r);
    usleep(200000);
    snprintf(logpath, sizeof logpath, "%s/logs/test-readapi.log", tenv("STACK_DIR"));
    f = fopen(logpath, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, want_line) != NULL && strstr(line, "access ") != NULL &&
            strstr(line, "route=\"GET /projections\" status=403") != NULL && strstr(line, "sub=alice-") != NULL)
            seen++;
        for (int t = 1; t < T__N; t++)
            if (strstr(line, auth_line[t] + strlen("Authorization: Bearer ")) != NULL)
                leaked++;
    }
    fclose(f);
    assert_int_equal(seen, 1);
    assert_int_equal(leaked, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_principal_and_transfer_reply),
        cmocka_unit_test(test_waiting_read_of_anothers_account),
        cmocka_unit_test(test_request_id),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
