/* The read API's reads: an account (from the document cache when it is current, else one
 * script), a statement page, the seek by time, a page of documents, the status document of
 * GET /projections and readiness. Each answer, generation included, comes from one script run,
 * so it never mixes generations. Connections are rconn.c's; the rm:applied listener that keeps
 * the cache true and wakes read-your-writes waiters is listener.c. */
#include "rstore.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "account.h"
#include "cache.h"
#include "jsonx.h"
#include "metrics.h"
#include "query.h"
#include "rconn.h"
#include "rds.h"
#include "readmodel.h"
#include "svc.h"

static struct rcache *cache; /* account documents, kept true by the rm:applied listener */
static int partitions;       /* PARTITIONS: /projections lists each */

static void count_replica_reads(double v)
{
    metrics_counter_add("readapi_replica_reads_total", "Reads answered by the Redis replica.", v);
}

static void count_fallbacks(const char *reason, double v)
{
    char labels[48];

    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    metrics_counter_add_l("readapi_replica_fallbacks_total", labels,
                          "Reads the replica could not answer, answered by the primary: behind "
                          "(below min_version), missing (no generation or no document), error.",
                          v);
}

status rs_init(const struct cfg *c, struct err *e)
{
    rconn_setup(c);
    partitions = c->partitions;
    if (c->read_replicas) { /* the series exist before the first read */
        count_replica_reads(0);
        count_fallbacks("behind", 0);
        count_fallbacks("missing", 0);
        count_fallbacks("error", 0);
    }
    return rc_create(&cache, (size_t)c->read_cache_slots, c->read_cache_ttl_ms, e);
}

void rs_fini(void)
{
    rc_destroy(cache);
    cache = NULL;
}

struct rcache *rs__cache(void)
{
    return cache;
}

static char *dup_str(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        return NULL;
    return strndup(r->str, r->len);
}

static status fill_account(struct rs_account *out, const redisReply *r, struct err *e)
{
    memset(out, 0, sizeof *out);
    if (r->type != REDIS_REPLY_ARRAY)
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "unexpected reply from redis");
    if (r->elements == 0)
        return ST_OK; /* no current generation */
    out->gen = (long)rds_reply_int(r->element[0]);
    if (r->elements >= 4 && r->element[3]->type == REDIS_REPLY_STRING) {
        out->stalled = dup_str(r->element[3]);
        if (out->stalled == NULL)
            return err_set(e, ST_INTERNAL, "out of memory");
    }
    if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_STRING) {
        out->version = rds_reply_int(r->element[1]);
        out->doc = dup_str(r->element[2]);
        if (out->doc == NULL)
            return err_set(e, ST_INTERNAL, "out of memory");
    }
    return ST_OK;
}

/* Runs an account-shaped script (reply: generation, version, document, ...) on src, and on the
 * primary when src is the replica and its answer does not do: a failure, no generation or
 * document, or a version below min_version. So an answer from the replica is never older than
 * min_version, and one the replica cannot give costs a round trip, not a failed read. *from:
 * where the answer came from. */
static redisReply *account_script(int idx, int argc, const char **argv, int64_t min_version,
                                  enum rs_src src, enum rs_src *from, struct err *e)
{
    *from = RS_PRIMARY;
    if (src == RS_REPLICA) {
        struct err re = {0};
        redisReply *r = rconn_script_on(RS_REPLICA, idx, argc, argv, &re);
        int has_doc = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 &&
                      r->element[2]->type == REDIS_REPLY_STRING;

        if (has_doc && rds_reply_int(r->element[1]) >= min_version) {
            count_replica_reads(1);
            *from = RS_REPLICA;
            return r;
        }
        count_fallbacks(r == NULL ? "error" : has_doc ? "behind" : "missing", 1);
        freeReplyObject(r);
    }
    return rconn_script(idx, argc, argv, e);
}

/* One account from src (else the primary, see account_script). */
static status account_read(struct rs_account *out, const char *id, int64_t min_version,
                           enum rs_src src, enum rs_src *from, struct err *e)
{
    const char *argv[1] = {id};
    redisReply *r = account_script(RS_SCRIPT_ACCOUNT, 1, argv, min_version, src, from, e);
    status st;

    memset(out, 0, sizeof *out);
    if (r == NULL)
        return e != NULL ? e->code : ST_UNAVAILABLE;
    st = fill_account(out, r, e);
    freeReplyObject(r);
    if (st != ST_OK)
        rs_account_release(out);
    return st;
}

status rs_account_fresh(struct rs_account *out, const char *id, struct err *e)
{
    enum rs_src from;

    return account_read(out, id, 0, rs__source(), &from, e);
}

bool rs_account_below(const char *id, int64_t min_version, int64_t *version, char **doc)
{
    return cache != NULL && rc_below(cache, id, min_version, svc_mono_ms(), version, doc);
}

status rs_account(struct rs_account *out, const char *id, int64_t min_version, struct err *e)
{
    struct rc_ticket t = {0, 0};
    enum rs_src src, from;
    status st;

    memset(out, 0, sizeof *out);
    if (cache != NULL) {
        if (rc_get(cache, id, min_version, svc_mono_ms(), &out->doc, &out->version, &out->gen))
            return ST_OK;
        t = rc_fill_begin(cache, id);
    }
    /* after the ticket: a source switched since is refused by the clear that came with it */
    src = rs__source();
    st = account_read(out, id, min_version, src, &from, e);
    /* a stalled account is not cached: its marker must go as soon as the stall is lifted; an
     * answer from another server than the one whose notifications the cache follows neither */
    if (st == ST_OK && cache != NULL && out->doc != NULL && out->stalled == NULL && from == src)
        (void)rc_fill_commit(cache, id, t, out->gen, out->version, out->doc, svc_mono_ms());
    return st;
}

status rs_statement(struct rs_statement *out, const char *id, int limit, int64_t lo, int64_t hi,
                    int asc, int64_t min_version, struct err *e)
{
    enum rs_src from;
    char lim[16], los[24], his[24];
    const char *argv[5] = {id, lim, los, his, asc ? "asc" : "desc"};
    redisReply *r;
    status st = ST_OK;

    memset(out, 0, sizeof *out);
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(los, sizeof los, "%lld", (long long)lo);
    snprintf(his, sizeof his, "%lld", (long long)hi);
    r = account_script(RS_SCRIPT_STATEMENT, 5, argv, min_version, rs__source(), &from, e);
    if (r == NULL)
        return e != NULL ? e->code : ST_UNAVAILABLE;
    st = fill_account(&out->acc, r, e);
    if (st == ST_OK && r->elements >= 7 && out->acc.doc != NULL) {
        const redisReply *list = r->element[6];
        out->first = rds_reply_int(r->element[4]);
        out->last = rds_reply_int(r->element[5]);
        if (list->type == REDIS_REPLY_ARRAY && list->elements > 0) {
            out->entries = calloc(list->elements, sizeof *out->entries);
            if (out->entries == NULL) {
                st = err_set(e, ST_INTERNAL, "out of memory");
                goto cleanup;
            }
            for (size_t i = 0; i < list->elements; i++) {
                const redisReply *it = list->element[i];
                /* stored compact: rendered as the contract's JSON (version = place in the list) */
                out->entries[i] = it->type == REDIS_REPLY_STRING
                                      ? statement_entry_render(it->str, it->len, out->first + (int64_t)i)
                                      : NULL;
                if (out->entries[i] == NULL) {
                    st = err_set(e, ST_INTERNAL, "statement entry %lld of '%s' cannot be read",
                                 (long long)(out->first + (int64_t)i), id);
                    goto cleanup;
                }
                out->nentries++;
            }
        }
    }
cleanup:
    freeReplyObject(r);
    return st;
}

/* Time of the entry of version ver (1-based) of id in gen, in microseconds. */
static status entry_time(struct rconn *rc, long gen, const char *id, int64_t ver, int64_t *us,
                         struct err *e)
{
    char key[RM_KEY_SIZE];
    struct statement_entry en;
    redisReply *r;
    status st = ST_OK;

    rm_key_statement(key, sizeof key, gen, id);
    r = redisCommand(rc->ctx, "LINDEX %s %lld", key, (long long)(ver - 1));
    if (r == NULL) {
        err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "redis: %s", rc->ctx->errstr);
        rconn_drop(rc);
        rconn_count_error();
        return ST_UNAVAILABLE;
    }
    if (r->type != REDIS_REPLY_STRING) {
        /* the generation was dropped under us (a rollback or drop-generation): try again */
        st = err_setr(e, ST_UNAVAILABLE, "read_model_unavailable",
                      "the read model generation changed during the request");
        goto cleanup;
    }
    if (statement_entry_decode(&en, ver, r->str, r->len, e) != ST_OK ||
        ra_parse_time(en.at, us) != ST_OK) {
        st = err_set(e, ST_INTERNAL, "statement entry %lld of '%s' has no readable time",
                     (long long)ver, id);
        goto cleanup;
    }
cleanup:
    freeReplyObject(r);
    return st;
}

status rs_statement_seek(int64_t *out, long gen, const char *id, int64_t v, int64_t t_us,
                         struct err *e)
{
    struct rconn *rc = rconn_get(e);
    int64_t lo = 1, hi = v + 1;

    if (rc == NULL) {
        rconn_count_error();
        return e != NULL ? e->code : ST_UNAVAILABLE;
    }
    /* invariant: every version below lo is earlier than t, every version from hi on is not */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2, at;
        status st = entry_time(rc, gen, id, mid, &at, e);
        if (st != ST_OK)
            return st;
        if (at < t_us)
            lo = mid + 1;
        else
            hi = mid;
    }
    *out = lo;
    return ST_OK;
}

status rs_accounts(char **docs, long *gen, const char *const *ids, int n, struct err *e)
{
    redisReply *r;

    *gen = 0;
    for (int i = 0; i < n; i++)
        docs[i] = NULL;
    r = NULL;
    if (rs__source() == RS_REPLICA) {
        struct err re = {0};
        r = rconn_script_on(RS_REPLICA, RS_SCRIPT_ACCOUNTS, n, (const char **)ids, &re);
        if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)n + 1) {
            count_replica_reads(1);
        } else {
            count_fallbacks(r == NULL ? "error" : "missing", 1);
            freeReplyObject(r);
            r = NULL;
        }
    }
    if (r == NULL)
        r = rconn_script(RS_SCRIPT_ACCOUNTS, n, (const char **)ids, e);
    if (r == NULL)
        return e != NULL ? e->code : ST_UNAVAILABLE;
    if (r->type != REDIS_REPLY_ARRAY || (r->elements != 0 && r->elements != (size_t)n + 1)) {
        freeReplyObject(r);
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "unexpected reply from redis");
    }
    if (r->elements > 0) {
        *gen = (long)rds_reply_int(r->element[0]);
        for (int i = 0; i < n; i++) {
            if (r->element[i + 1]->type != REDIS_REPLY_STRING)
                continue;
            docs[i] = dup_str(r->element[i + 1]);
            if (docs[i] == NULL) {
                freeReplyObject(r);
                return err_set(e, ST_INTERNAL, "out of memory");
            }
        }
    }
    freeReplyObject(r);
    return ST_OK;
}

static json_t *pairs_to_object(const redisReply *r)
{
    json_t *o = json_object();
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return o;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        json_t *parsed;
        char *end = NULL;
        long long n;
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        n = strtoll(v->str, &end, 10);
        if (end != v->str && *end == '\0')
            json_object_set_new(o, k->str, json_integer(n));
        else if ((parsed = json_loadb(v->str, v->len, 0, NULL)) != NULL)
            json_object_set_new(o, k->str, parsed);
        else
            json_object_set_new(o, k->str, json_stringn(v->str, v->len));
    }
    return o;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

status rs_projections(char **out, struct err *e)
{
    char nparts[16];
    const char *argv[1] = {nparts};
    redisReply *r;
    json_t *doc = NULL, *cp, *bcp, *head, *stalled, *rebuild, *parts;
    int64_t pos, headpos, lag_events, lag_s = 0;

    *out = NULL;
    snprintf(nparts, sizeof nparts, "%d", partitions);
    r = rconn_script(RS_SCRIPT_PROJECTIONS, 1, argv, e);
    if (r == NULL)
        return e != NULL ? e->code : ST_UNAVAILABLE;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 11) {
        freeReplyObject(r);
        return err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "unexpected reply from redis");
    }
    cp = pairs_to_object(r->element[2]);
    bcp = pairs_to_object(r->element[3]);
    head = pairs_to_object(r->element[4]);
    stalled = pairs_to_object(r->element[5]);
    rebuild = pairs_to_object(r->element[6]);
    /* per partition: the owner and epoch that last claimed it in Redis, the stream sequence
     * applied, and the lag its owner reports (pending events, lag_ms) */
    parts = json_array();
    for (size_t i = 0; r->element[10]->type == REDIS_REPLY_ARRAY && i < r->element[10]->elements; i++) {
        json_t *o = pairs_to_object(r->element[10]->element[i]);
        json_object_set_new(o, "partition", json_integer((json_int_t)i));
        json_array_append_new(parts, o);
    }
    pos = json_integer_value(json_object_get(cp, "position"));
    headpos = json_integer_value(json_object_get(head, "position"));
    /* the head is sampled by the projector once a second: never report it behind what was
     * already applied */
    if (headpos < pos)
        headpos = pos;
    lag_events = headpos > pos ? headpos - pos : 0;
    /* events held back behind stalled accounts: the highest position cannot see them */
    lag_events += json_integer_value(json_object_get(head, "unapplied"));
    if (lag_events > 0 && json_integer_value(json_object_get(cp, "at_ms")) > 0)
        lag_s = (now_ms() - json_integer_value(json_object_get(cp, "at_ms"))) / 1000;
    doc = json_pack("{s:o, s:b, s:o, s:o, s:I, s:o, s:I, s:I, s:I, s:o, s:o, s:I, s:o, s:o}", "current_generation",
                    r->element[0]->type == REDIS_REPLY_STRING ? json_integer(rds_reply_int(r->element[0]))
                                                              : json_null(),
                    "read_model_available", rds_reply_int(r->element[9]) == 1,
                    "previous_generation",
                    r->element[8]->type == REDIS_REPLY_STRING ? json_integer(rds_reply_int(r->element[8]))
                                                              : json_null(),
                    "building_generation",
                    r->element[1]->type == REDIS_REPLY_STRING ? json_integer(rds_reply_int(r->element[1]))
                                                              : json_null(),
                    "position", (json_int_t)pos, "checkpoint", cp, "head", (json_int_t)headpos,
                    "lag_events", (json_int_t)lag_events, "lag_seconds", (json_int_t)lag_s, "rebuild",
                    json_object_size(rebuild) > 0 ? rebuild : json_null(), "building_checkpoint", bcp,
                    "parked_events", (json_int_t)rds_reply_int(r->element[7]), "stalled_accounts", stalled,
                    "partitions", parts);
    if (json_object_size(rebuild) == 0)
        json_decref(rebuild);
    json_decref(head);
    freeReplyObject(r);
    if (doc == NULL)
        return err_set(e, ST_INTERNAL, "out of memory");
    *out = jsonx_dump(doc);
    json_decref(doc);
    return *out != NULL ? ST_OK : err_set(e, ST_INTERNAL, "out of memory");
}

status rs_ready(struct err *e)
{
    struct rs_account a;
    char zero[] = "00000000-0000-0000-0000-000000000000";
    enum rs_src from;
    status st = account_read(&a, zero, 0, RS_PRIMARY, &from, e);

    if (st != ST_OK)
        return st;
    st = a.gen > 0 ? ST_OK
                   : err_setr(e, ST_UNAVAILABLE, "read_model_unavailable", "no current generation");
    rs_account_release(&a);
    return st;
}

void rs_account_release(struct rs_account *a)
{
    free(a->doc);
    a->doc = NULL;
    free(a->stalled);
    a->stalled = NULL;
}

void rs_statement_release(struct rs_statement *s)
{
    rs_account_release(&s->acc);
    for (int i = 0; i < s->nentries; i++)
        free(s->entries[i]);
    free(s->entries);
    s->entries = NULL;
    s->nentries = 0;
}
