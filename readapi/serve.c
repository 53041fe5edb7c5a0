/* The read API's answers. Accounts and statements come from the Redis read model (one script
 * per read, so an answer never mixes generations); events, transfers and an owner's account ids
 * come from the event store (readapi/lookup.c), since they never change once written. */
#include "serve.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonx.h"
#include "log.h"
#include "lookup.h"
#include "metrics.h"
#include "rstore.h"
#include "sbuf.h"
#include "svc.h"

static void count_unavailable_by(const char *reason, double v)
{
    char labels[64];

    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    metrics_counter_add_l("readapi_unavailable_responses_total", labels,
                          "503 answers by reason (the error code of the body).", v);
}

static void count_unavailable(const char *reason)
{
    count_unavailable_by(reason, 1);
}

static void count_waits(const char *name, double v)
{
    if (strcmp(name, "started") == 0)
        metrics_counter_add("readapi_waits_started_total", "min_version reads parked until the version is projected.",
                            v);
    else if (strcmp(name, "satisfied") == 0)
        metrics_counter_add("readapi_waits_satisfied_total",
                            "min_version waits answered once the version was projected.", v);
    else
        metrics_counter_add("readapi_waits_timed_out_total",
                            "min_version waits that ended at wait_ms without the version.", v);
}

void ra_serve_metrics_init(void)
{
    static const char *const reasons[] = {"not_yet_projected", "read_model_unavailable", "store_unavailable",
                                          "too_many_waiters"};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        count_unavailable_by(reasons[i], 0);
    count_waits("started", 0);
    count_waits("satisfied", 0);
    count_waits("timed_out", 0);
}

void ra_reply_unavailable(struct http_response *resp, const char *reason, const char *message)
{
    count_unavailable(reason);
    http_set_header(resp, "Retry-After", "1");
    http_reply_error(resp, 503, reason, "%s", message);
}

/* A request that was parked (http_defer) ends: satisfied (answered with the document) or
 * timed out (answered 503 not_yet_projected); other ends (an error) count in neither. */
static void count_wait_end(const struct http_request *req, int satisfied)
{
    if (req->resumed == 0)
        return;
    count_waits(satisfied ? "satisfied" : "timed_out", 1);
}

void ra_reply_status_error(struct http_response *resp, const struct err *e)
{
    if (e->code == ST_UNAVAILABLE) {
        /* the detail names hosts and library errors: it goes to the log, not the body */
        int store = strcmp(e->reason, "store_unavailable") == 0;
        log_warn("%s unavailable: %s", store ? "event store" : "read model", e->msg);
        ra_reply_unavailable(resp, store ? "store_unavailable" : "read_model_unavailable",
                             store ? "the event store is unavailable; nothing was changed, "
                                     "retry later"
                                   : "the read model is unavailable; nothing was changed, "
                                     "retry later");
    } else if (e->code == ST_NOT_FOUND) {
        http_reply_error(resp, 404, e->reason[0] != '\0' ? e->reason : "not_found", "%s", e->msg);
    } else {
        log_error("%s", e->msg);
        http_reply_error(resp, 500, "internal_error", "the request could not be served");
    }
}

static void reply_no_model(struct http_response *resp)
{
    ra_reply_unavailable(resp, "read_model_unavailable",
                         "no read model generation is current (a rebuild may be running)");
}

static void reply_not_yet(struct http_response *resp, const struct ra_query *q, int64_t projected)
{
    json_t *doc = json_pack("{s:s, s:s, s:I, s:I}", "error", "not_yet_projected", "message",
                            "the read model has not reached the requested version yet",
                            "projected_version", (json_int_t)projected, "min_version",
                            (json_int_t)q->min_version);
    count_unavailable("not_yet_projected");
    http_set_header(resp, "Retry-After", "1");
    http_reply(resp, 503, jsonx_dump_decref(doc));
}

/* The account waits behind a parked event: no amount of waiting reaches min_version until an
 * operator replays or discards it, so the answer is at once and invites no retry. */
static void reply_stalled(struct http_response *resp, const struct ra_query *q, int64_t projected,
                          const char *stalled)
{
    json_t *rec = json_loads(stalled, 0, NULL);
    json_t *doc = json_pack("{s:s, s:s, s:I, s:I, s:o}", "error", "account_stalled", "message",
                            "the account's projection is stopped behind a parked event; an "
                            "operator must replay or discard it",
                            "projected_version", (json_int_t)projected, "min_version",
                            (json_int_t)q->min_version, "stalled",
                            rec != NULL ? rec : json_null());
    http_reply(resp, 409, jsonx_dump_decref(doc));
}

/* Adds the Account-Stalled header (the parked event's id). */
static void stalled_header(struct http_response *resp, const char *stalled)
{
    json_t *rec = json_loads(stalled, 0, NULL);
    const char *ev = json_string_value(json_object_get(rec, "event_id"));

    http_set_header(resp, "Account-Stalled", ev != NULL ? ev : "unknown");
    json_decref(rec);
}

/* doc with ,"stalled":<stalled> before its closing brace (a copy; caller frees). */
static char *with_stalled(const char *doc, const char *stalled)
{
    struct sbuf b = {0};
    size_t len = strlen(doc);

    while (len > 0 && doc[len - 1] != '}')
        len--;
    if (len == 0)
        return NULL;
    sbuf_add(&b, doc, len - 1);
    sbuf_str(&b, ",\"stalled\":");
    sbuf_str(&b, stalled);
    sbuf_str(&b, "}");
    return sbuf_take(&b);
}

static int64_t doc_balance(const char *doc)
{
    json_t *d = json_loads(doc, 0, NULL);
    int64_t balance = json_integer_value(json_object_get(d, "balance"));
    json_decref(d);
    return balance;
}

/* Statement page as JSON. Entries are stored as the JSON the API returns and copied as they
 * are: the order of the page (newest or oldest first) is the query's. */
static char *statement_body(const struct ra_query *q, const struct rs_statement *s, int64_t next)
{
    struct sbuf b = {0};

    sbuf_str(&b, "{\"account_id\":\"");
    sbuf_str(&b, q->account_id);
    sbuf_str(&b, "\",\"balance\":");
    sbuf_int(&b, doc_balance(s->acc.doc));
    sbuf_str(&b, ",\"version\":");
    sbuf_int(&b, s->acc.version);
    sbuf_str(&b, ",\"order\":\"");
    sbuf_str(&b, q->order == RA_ASC ? "asc" : "desc");
    sbuf_str(&b, "\",\"entries\":[");
    for (int k = 0; k < s->nentries; k++) {
        int i = q->order == RA_ASC ? k : s->nentries - 1 - k;
        if (k > 0)
            sbuf_str(&b, ",");
        sbuf_str(&b, s->entries[i]);
    }
    sbuf_str(&b, q->order == RA_ASC ? "],\"next_after\":" : "],\"next_before\":");
    if (next > 0)
        sbuf_int(&b, next);
    else
        sbuf_str(&b, "null");
    if (s->acc.stalled != NULL) {
        sbuf_str(&b, ",\"stalled\":");
        sbuf_str(&b, s->acc.stalled);
    }
    sbuf_str(&b, "}");
    return sbuf_take(&b);
}

/* The statement page of q: the time range becomes a version range by binary search over the
 * statement (entries are in time order), then the cursor narrows it, then one script reads the
 * page. *next is the cursor of the following page (0: none). */
static status load_statement(const struct ra_query *q, struct rs_statement *s, int64_t *next,
                             struct err *e)
{
    int64_t lo = 1, hi = INT64_MAX, v;
    status st;

    *next = 0;
    memset(s, 0, sizeof *s);
    if (q->from_us != INT64_MIN || q->to_us != INT64_MAX) {
        struct rs_account a;
        st = rs_account_fresh(&a, q->account_id, e);
        if (st != ST_OK || a.gen == 0 || a.doc == NULL) {
            s->acc = a; /* no model or no account: said by the caller */
            return st;
        }
        if (q->from_us != INT64_MIN)
            st = rs_statement_seek(&lo, a.gen, q->account_id, a.version, q->from_us, e);
        if (st == ST_OK && q->to_us != INT64_MAX) {
            st = rs_statement_seek(&hi, a.gen, q->account_id, a.version, q->to_us, e);
            hi--;
        }
        rs_account_release(&a);
        if (st != ST_OK)
            return st;
    }
    if (q->order == RA_DESC && q->before > 0 && q->before - 1 < hi)
        hi = q->before - 1;
    if (q->order == RA_ASC && q->after + 1 > lo)
        lo = q->after + 1;
    /* the script takes 0 as "the newest" and reads nothing for hi < lo */
    st = rs_statement(s, q->account_id, q->limit, lo, hi == INT64_MAX ? 0 : (hi < 1 ? -1 : hi),
                      q->order == RA_ASC, q->min_version, e);
    if (st != ST_OK || s->acc.doc == NULL)
        return st;
    v = s->acc.version;
    if (hi > v)
        hi = v;
    if (s->nentries > 0) {
        if (q->order == RA_DESC && s->first > lo)
            *next = s->first;
        if (q->order == RA_ASC && s->last < hi)
            *next = s->last;
    }
    return ST_OK;
}

/* The owner of an account document, or "" when it has none. */
static void doc_owner(const char *doc, char *owner, size_t len)
{
    json_t *d = json_loads(doc, 0, NULL);
    const char *o = json_string_value(json_object_get(d, "owner"));

    snprintf(owner, len, "%s", o != NULL ? o : "");
    json_decref(d);
}

static bool owns_doc(const struct http_request *req, const char *doc)
{
    char owner[AUTH_SUB_MAX + 2];

    if (req->who->scopes & AUTH_ADMIN)
        return true;
    doc_owner(doc, owner, sizeof owner);
    return auth_owns(req->who, owner);
}

/* Whether the caller may read account_id (its read model names the owner); false also when
 * the account is not in the read model or Redis fails (the caller then answers 404). */
static bool may_read_account(const struct http_request *req, const char *account_id)
{
    struct rs_account a;
    struct err e = {0};
    bool ok;

    if (req->who->scopes & AUTH_ADMIN)
        return true;
    if (account_id == NULL || rs_account(&a, account_id, 0, &e) != ST_OK)
        return false;
    ok = a.doc != NULL && owns_doc(req, a.doc);
    rs_account_release(&a);
    return ok;
}

/* Loads, and while min_version is not reached parks the request until the projector's next
 * applied batch (no thread held, no polling), up to wait_ms from its arrival. Another owner's
 * account is answered exactly like one that does not exist (404): a token learns nothing about
 * accounts it may not read. */
void ra_serve_account(const struct http_request *req, const struct ra_query *q,
                      struct http_response *resp)
{
    int64_t deadline = req->started_ms + q->wait_ms, now;
    struct err e = {0};
    struct rs_statement s;
    int64_t next = 0;
    status st;

    memset(&s, 0, sizeof s);
    /* The cache holds the account below min_version and nothing newer was announced since:
     * park without a round trip. A resumed read was let through by an earlier pass (it woke for
     * another account's news); a first pass, a read right behind its command (1.7 scripts per
     * read at 2,000 commands/s before), only once the cached document names the caller's
     * account. */
    if (q->route == RA_ACCOUNT && q->min_version > 0) {
        char *doc = NULL;
        bool first = req->resumed == 0,
             wait = rs_account_below(q->account_id, q->min_version, &s.acc.version, first ? &doc : NULL) &&
                    (!first || owns_doc(req, doc));
        free(doc);
        if (wait)
            goto park;
    }
    if (q->route == RA_ACCOUNT)
        st = rs_account(&s.acc, q->account_id, q->min_version, &e);
    else
        st = load_statement(q, &s, &next, &e);
    if (st != ST_OK) {
        ra_reply_status_error(resp, &e);
        goto cleanup;
    }
    if (s.acc.gen == 0) {
        reply_no_model(resp);
        goto cleanup;
    }
    if (s.acc.doc != NULL && !owns_doc(req, s.acc.doc)) {
        http_reply_error(resp, 404, "account_not_found", "account '%s' does not exist",
                         q->account_id);
        goto cleanup;
    }
    if (s.acc.doc != NULL && s.acc.version >= q->min_version) {
        char *body;
        if (q->route == RA_STATEMENT) {
            body = statement_body(q, &s, next);
        } else if (s.acc.stalled != NULL) {
            body = with_stalled(s.acc.doc, s.acc.stalled);
        } else {
            body = s.acc.doc;
            s.acc.doc = NULL;
        }
        if (s.acc.stalled != NULL)
            stalled_header(resp, s.acc.stalled);
        if (q->route == RA_ACCOUNT) {
            /* the version is the entity tag: a writer command's If-Match takes it back */
            char etag[32];
            snprintf(etag, sizeof etag, "\"%lld\"", (long long)s.acc.version);
            http_set_header(resp, "ETag", etag);
        }
        if (body == NULL) {
            err_set(&e, ST_INTERNAL, "out of memory");
            ra_reply_status_error(resp, &e);
        } else {
            count_wait_end(req, 1);
            http_reply(resp, 200, body);
        }
        goto cleanup;
    }
    if (s.acc.stalled != NULL && s.acc.doc != NULL) {
        reply_stalled(resp, q, s.acc.version, s.acc.stalled);
        goto cleanup;
    }
    if (q->min_version == 0) {
        http_reply_error(resp, 404, "account_not_found", "account '%s' does not exist",
                         q->account_id);
        goto cleanup;
    }
park:
    now = svc_mono_ms();
    if (now >= deadline) {
        count_wait_end(req, 0);
        reply_not_yet(resp, q, s.acc.version);
        goto cleanup;
    }
    /* woken by a batch applied to this account (and by anything that clears the cache: the
     * listener's reconnection, a lost notification, a switch); a sparse fallback covers a lost
     * notification without waking thousands of parked reads every second */
    if (!http_defer_for(req, resp, deadline - now < 3000 ? deadline : now + 3000, q->account_id))
        ra_reply_unavailable(resp, "too_many_waiters",
                             "too many requests are waiting for the projection; retry later");
    else if (req->resumed == 0)
        count_waits("started", 1);
cleanup:
    rs_statement_release(&s);
}

void ra_serve_owner_accounts(const struct ra_query *q, struct http_response *resp)
{
    struct lk_owner_page page;
    struct err e = {0};
    struct sbuf b = {0};
    char **docs = NULL;
    const char **ids = NULL;
    long gen = 0;
    status st;
    char *body;

    st = lk_owner_accounts(&page, q->owner, q->after, q->limit, &e);
    if (st != ST_OK) {
        ra_reply_status_error(resp, &e);
        return;
    }
    docs = calloc((size_t)page.n + 1, sizeof *docs);
    ids = calloc((size_t)page.n + 1, sizeof *ids);
    if (docs == NULL || ids == NULL) {
        err_set(&e, ST_INTERNAL, "out of memory");
        ra_reply_status_error(resp, &e);
        goto cleanup;
    }
    for (int i = 0; i < page.n; i++)
        ids[i] = page.ids[i];
    if (page.n > 0) {
        st = rs_accounts(docs, &gen, ids, page.n, &e);
        if (st != ST_OK) {
            ra_reply_status_error(resp, &e);
            goto cleanup;
        }
        if (gen == 0) {
            reply_no_model(resp);
            goto cleanup;
        }
    }
    /* an account opened a moment ago and not projected yet is left out of its page; the
     * cursor is the event store's, so paging stays exact */
    sbuf_str(&b, "{\"accounts\":[");
    for (int i = 0, k = 0; i < page.n; i++) {
        if (docs[i] == NULL)
            continue;
        if (k++ > 0)
            sbuf_str(&b, ",");
        sbuf_str(&b, docs[i]);
    }
    sbuf_str(&b, "],\"next_after\":");
    if (page.next_after > 0)
        sbuf_int(&b, page.next_after);
    else
        sbuf_str(&b, "null");
    sbuf_str(&b, "}");
    body = sbuf_take(&b);
    if (body == NULL)
        http_reply_error(resp, 500, "internal_error", "out of memory");
    else
        http_reply(resp, 200, body);
cleanup:
    if (docs != NULL)
        for (int i = 0; i < page.n; i++)
            free(docs[i]);
    free(docs);
    free(ids);
    lk_owner_page_release(&page);
}

/* An event is readable with its account; a transfer with either of its accounts. Anything
 * else is answered as if it did not exist. */
static bool may_read_lookup(const struct http_request *req, const struct ra_query *q, const char *body)
{
    json_t *d;
    bool ok;

    if (req->who->scopes & AUTH_ADMIN)
        return true;
    d = json_loads(body, 0, NULL);
    if (q->route == RA_EVENT)
        ok = may_read_account(req, json_string_value(json_object_get(d, "stream_id")));
    else
        ok = may_read_account(req, json_string_value(json_object_get(json_object_get(d, "from"), "account_id"))) ||
             may_read_account(req, json_string_value(json_object_get(json_object_get(d, "to"), "account_id")));
    json_decref(d);
    return ok;
}

void ra_serve_lookup(const struct http_request *req, const struct ra_query *q,
                     struct http_response *resp)
{
    struct err e = {0};
    char *body = NULL;
    status st = q->route == RA_EVENT ? lk_event(&body, q->account_id, &e)
                                     : lk_transfer(&body, q->account_id, &e);

    if (st != ST_OK) {
        ra_reply_status_error(resp, &e);
    } else if (!may_read_lookup(req, q, body)) {
        free(body);
        if (q->route == RA_EVENT)
            http_reply_error(resp, 404, "event_not_found", "event '%s' does not exist", q->account_id);
        else
            http_reply_error(resp, 404, "transfer_not_found", "transfer '%s' does not exist",
                             q->account_id);
    } else {
        http_reply(resp, 200, body);
    }
}
