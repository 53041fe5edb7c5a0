/* The fault suites' load (clients that retry with their Idempotency-Key, readers that measure
 * staleness) and the checker of what it left behind. */
#include "tload.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "support.h"
#include "tgen.h"
#include "thttp.h"
#include "twriter.h"

#define MAX_CLIENTS 16
#define MAX_READERS 8
#define CMDS_PER_CLIENT 20000 /* a bound on the count; the caller's schedule bounds the time */
#define ATTEMPTS_MAX 600000
#define SHARED_MAX 1024
#define ACKS_PER_ACCOUNT 16

enum kind { K_OPEN, K_DEPOSIT, K_WITHDRAW, K_TRANSFER, K_REVERSE, K_CLOSE, K__COUNT };
static const char *const kind_names[] = {"open", "deposit", "withdraw", "transfer", "reverse", "close"};

/* One command as the client saw it; the final outcome after its retries. */
struct cmd {
    enum kind kind;
    char key[64];
    char path[128];
    char body[320];
    int64_t net;       /* effect on the sum of all balances when it took effect */
    int expect_events; /* events a success writes */
    int status;        /* final status: 0 = timeout after the retry budget */
    char *resp;        /* final body (owned) */
    int attempts;
};

struct target { /* something a reversal may undo */
    char event_id[UUID_STR_SIZE];
    char account[UUID_STR_SIZE];
    int64_t net;
    int legs;
};

struct client {
    struct tload *l;
    int id;
    uint64_t rng;
    struct cmd *cmds;
    int n;
    char own[64][UUID_STR_SIZE];
    int nown;
    struct target targets[64];
    int ntargets;
    long replays_ok, replays_bad, reuse_ok, reuse_bad;
};

struct attempt {
    int64_t t0, t1;
    char svc;   /* 'w' writer, 'r' read API */
    char ok;    /* an answer that is not 5xx */
    char noans; /* no answer at all (timeout, connection refused) */
    int stale;  /* reads: ms behind an acknowledged version (0: current) */
    int status; /* HTTP status (0: no answer) */
};

/* A shared account and its last acknowledged versions (for the staleness of reads). */
struct shared {
    char id[UUID_STR_SIZE];
    int64_t ver[ACKS_PER_ACCOUNT], at[ACKS_PER_ACCOUNT];
    int next;
};

struct tload {
    struct tload_opts o;
    atomic_int running;
    struct attempt *attempts;
    atomic_long nattempts;
    atomic_long acked;
    pthread_mutex_t mu;
    struct shared shared[SHARED_MAX];
    int nshared;
    char last_acked[UUID_STR_SIZE]; /* the account of the latest acknowledged command */
    int64_t run_t0;
    struct client cl[MAX_CLIENTS];
    pthread_t th[MAX_CLIENTS], rth[MAX_READERS];
};

static void log_attempt(struct tload *l, char svc, int64_t t0, int status, int stale)
{
    long i = atomic_fetch_add(&l->nattempts, 1);
    if (i < ATTEMPTS_MAX)
        l->attempts[i] = (struct attempt){t0, tnow_ms(), svc, (char)(status != 0 && status < 500),
                                          (char)(status == 0), stale, status};
}

static int64_t rnd(struct client *c, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(tgen_rand(&c->rng) % (uint64_t)(hi - lo + 1));
}

static struct shared *find_shared(struct tload *l, const char *id)
{
    for (int i = l->nshared - 1; i >= 0; i--)
        if (strcmp(l->shared[i].id, id) == 0)
            return &l->shared[i];
    return NULL;
}

static void share_account(struct tload *l, const char *id)
{
    pthread_mutex_lock(&l->mu);
    if (l->nshared < SHARED_MAX && find_shared(l, id) == NULL) {
        memset(&l->shared[l->nshared], 0, sizeof l->shared[0]);
        snprintf(l->shared[l->nshared++].id, UUID_STR_SIZE, "%s", id);
    }
    pthread_mutex_unlock(&l->mu);
}

/* An acknowledged version of an account: reads older than it from now on are stale. */
static void note_ack(struct tload *l, const char *id, int64_t version)
{
    struct shared *s;
    if (id == NULL || version <= 0)
        return;
    pthread_mutex_lock(&l->mu);
    s = find_shared(l, id);
    snprintf(l->last_acked, sizeof l->last_acked, "%s", id);
    if (s != NULL) {
        s->ver[s->next] = version;
        s->at[s->next] = tnow_ms();
        s->next = (s->next + 1) % ACKS_PER_ACCOUNT;
    }
    pthread_mutex_unlock(&l->mu);
}

/* How long ago the oldest acknowledged version above `seen` was acknowledged (0: none). */
static int stale_ms(struct tload *l, const char *id, int64_t seen, int64_t now)
{
    int64_t oldest = 0;
    struct shared *s;
    pthread_mutex_lock(&l->mu);
    s = find_shared(l, id);
    for (int i = 0; s != NULL && i < ACKS_PER_ACCOUNT; i++)
        if (s->ver[i] > seen && s->at[i] > 0 && (oldest == 0 || s->at[i] < oldest))
            oldest = s->at[i];
    pthread_mutex_unlock(&l->mu);
    return oldest > 0 && now > oldest ? (int)(now - oldest) : 0;
}

static void random_shared(struct tload *l, uint64_t *rng, char out[UUID_STR_SIZE])
{
    pthread_mutex_lock(&l->mu);
    if (l->nshared > 0)
        snprintf(out, UUID_STR_SIZE, "%s", l->shared[tgen_rand(rng) % (uint64_t)l->nshared].id);
    else
        out[0] = '\0';
    pthread_mutex_unlock(&l->mu);
}

/* One attempt; returns the status (0: no answer) and the body (owned) in *resp. */
static int post_once(struct tload *l, const char *path, const char *body, const char *key, char **resp,
                     int *replayed)
{
    struct thttp_resp r;
    char hdr[96], hv[16];
    int64_t t0 = tnow_ms();
    int status;

    snprintf(hdr, sizeof hdr, "Idempotency-Key: %s\r\n", key);
    (void)thttp_request(&r, "POST", l->o.writer_url, path, body, hdr, l->o.attempt_timeout_ms);
    status = r.status;
    log_attempt(l, 'w', t0, status, 0);
    if (replayed != NULL)
        *replayed = thttp_header(&r, "Idempotent-Replayed", hv, sizeof hv) != NULL && strcmp(hv, "true") == 0;
    *resp = r.body;
    r.body = NULL;
    thttp_resp_release(&r);
    return status;
}

/* Sends the command, retrying with the same Idempotency-Key after a timeout or a 5xx (what
 * makes a real client's retry safe) until an answer or the retry budget is spent. */
static void execute(struct tload *l, struct cmd *cmd)
{
    int64_t start = tnow_ms();
    int backoff = 100;

    for (;;) {
        char *resp = NULL;
        int st = post_once(l, cmd->path, cmd->body, cmd->key, &resp, NULL);
        cmd->attempts++;
        free(cmd->resp);
        cmd->resp = resp;
        cmd->status = st;
        if ((st != 0 && st < 500) || tnow_ms() - start > l->o.retry_budget_ms)
            return;
        usleep((useconds_t)backoff * 1000);
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
}

static json_t *resp_json(const struct cmd *cmd)
{
    return cmd->resp != NULL ? json_loads(cmd->resp, 0, NULL) : NULL;
}

static struct cmd *next_cmd(struct client *c, enum kind k)
{
    struct cmd *cmd = &c->cmds[c->n++];
    memset(cmd, 0, sizeof *cmd);
    cmd->kind = k;
    snprintf(cmd->key, sizeof cmd->key, "%s-%lld-c%d-%d", c->l->o.tag, (long long)c->l->run_t0, c->id, c->n);
    cmd->expect_events = 1;
    return cmd;
}

/* After a success: the same key and body again must replay the first answer byte for byte
 * and write nothing; the same key with another body must be refused. */
static void probe_key(struct client *c, const struct cmd *cmd)
{
    char *resp = NULL;
    int replayed = 0, st;

    if (rnd(c, 0, 9) == 0) {
        st = post_once(c->l, cmd->path, cmd->body, cmd->key, &resp, &replayed);
        if (st == cmd->status && replayed && resp != NULL && strcmp(resp, cmd->resp) == 0)
            c->replays_ok++;
        else if (st != 0 && st < 500)
            c->replays_bad++, fprintf(stderr, "replay of %s: %d %s (first %d %s)\n", cmd->key, st,
                                      resp ? resp : "", cmd->status, cmd->resp);
        free(resp);
    } else if ((cmd->kind == K_DEPOSIT || cmd->kind == K_WITHDRAW) && rnd(c, 0, 19) == 0) {
        /* a valid body, another request: refused by the key, not by validation */
        resp = NULL;
        st = post_once(c->l, cmd->path, "{\"amount\":1,\"description\":\"other body\"}", cmd->key, &resp, NULL);
        if (st == 422 && resp != NULL && strstr(resp, "idempotency_key_reused") != NULL)
            c->reuse_ok++;
        else if (st != 0 && st < 500)
            c->reuse_bad++, fprintf(stderr, "reuse of %s: %d %s\n", cmd->key, st, resp ? resp : "");
        free(resp);
    }
}

/* The versions a success acknowledged, for the staleness of later reads. */
static void note_reply(struct tload *l, const json_t *doc)
{
    note_ack(l, tw_str(doc, "account_id"), tw_int(doc, "version"));
    note_ack(l, tw_str(json_object_get(doc, "from"), "account_id"), tw_int(json_object_get(doc, "from"), "version"));
    note_ack(l, tw_str(json_object_get(doc, "to"), "account_id"), tw_int(json_object_get(doc, "to"), "version"));
}

static void do_open(struct client *c, int temp)
{
    struct cmd *cmd = next_cmd(c, K_OPEN);
    json_t *doc;

    snprintf(cmd->path, sizeof cmd->path, "/accounts");
    snprintf(cmd->body, sizeof cmd->body,
             "{\"owner\":\"%s-c%d\",\"name\":\"%s-%d\",\"currency\":\"EUR\",\"overdraft_limit\":%d}",
             c->l->o.tag, c->id, temp ? "tmp" : "acc", c->n, rnd(c, 0, 1) ? 5000 : 0);
    execute(c->l, cmd);
    if (cmd->status != 201)
        return;
    doc = resp_json(cmd);
    if (tw_str(doc, "account_id") != NULL) {
        share_account(c->l, tw_str(doc, "account_id"));
        note_reply(c->l, doc);
        if (temp) {
            /* open and close at once: a successful close */
            char id[UUID_STR_SIZE];
            struct cmd *cl;
            snprintf(id, sizeof id, "%s", tw_str(doc, "account_id"));
            cl = next_cmd(c, K_CLOSE);
            snprintf(cl->path, sizeof cl->path, "/accounts/%s/close", id);
            snprintf(cl->body, sizeof cl->body, "{\"reason\":\"load\"}");
            execute(c->l, cl);
            if (cl->status / 100 == 2)
                atomic_fetch_add(&c->l->acked, 1);
        } else if (c->nown < 64) {
            snprintf(c->own[c->nown++], UUID_STR_SIZE, "%s", tw_str(doc, "account_id"));
        }
    }
    json_decref(doc);
    atomic_fetch_add(&c->l->acked, 1);
    probe_key(c, cmd);
}

static void add_target(struct client *c, const char *event_id, const char *account, int64_t net, int legs)
{
    struct target *t;
    if (event_id == NULL || account == NULL)
        return;
    t = &c->targets[c->ntargets < 64 ? c->ntargets++ : (int)rnd(c, 0, 63)];
    snprintf(t->event_id, sizeof t->event_id, "%s", event_id);
    snprintf(t->account, sizeof t->account, "%s", account);
    t->net = net;
    t->legs = legs;
}

static void one_command(struct client *c)
{
    int64_t r = rnd(c, 0, 99);
    const char *acc;
    struct cmd *cmd;
    json_t *doc;

    if (c->nown < 3 || r < 4) {
        do_open(c, 0);
        return;
    }
    if (r < 7) {
        do_open(c, 1);
        return;
    }
    acc = c->own[rnd(c, 0, c->nown - 1)];
    if (r < 40) {
        int64_t a = rnd(c, 1, 10000);
        cmd = next_cmd(c, K_DEPOSIT);
        snprintf(cmd->path, sizeof cmd->path, "/accounts/%s/deposits", acc);
        snprintf(cmd->body, sizeof cmd->body, "{\"amount\":%lld,\"description\":\"d%d\"}", (long long)a, c->n);
        cmd->net = a;
    } else if (r < 60) {
        int64_t a = rnd(c, 1, 6000);
        cmd = next_cmd(c, K_WITHDRAW);
        snprintf(cmd->path, sizeof cmd->path, "/accounts/%s/withdrawals", acc);
        snprintf(cmd->body, sizeof cmd->body, "{\"amount\":%lld,\"description\":\"w%d\"}", (long long)a, c->n);
        cmd->net = -a;
    } else if (r < 85) {
        char to[UUID_STR_SIZE];
        random_shared(c->l, &c->rng, to);
        if (to[0] == '\0' || strcmp(to, acc) == 0)
            return;
        cmd = next_cmd(c, K_TRANSFER);
        snprintf(cmd->path, sizeof cmd->path, "/transfers");
        snprintf(cmd->body, sizeof cmd->body,
                 "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":%lld,\"description\":\"t%d\"}", acc, to,
                 (long long)rnd(c, 1, 4000), c->n);
        cmd->expect_events = 2;
    } else if (r < 97) {
        struct target *t;
        if (c->ntargets == 0)
            return;
        t = &c->targets[rnd(c, 0, c->ntargets - 1)];
        cmd = next_cmd(c, K_REVERSE);
        snprintf(cmd->path, sizeof cmd->path, "/accounts/%s/reversals", t->account);
        snprintf(cmd->body, sizeof cmd->body, "{\"event_id\":\"%s\",\"reason\":\"r%d\"}", t->event_id, c->n);
        cmd->net = -t->net;
        cmd->expect_events = t->legs;
    } else {
        /* usually refused (balance not zero): a rejection that must write nothing */
        cmd = next_cmd(c, K_CLOSE);
        snprintf(cmd->path, sizeof cmd->path, "/accounts/%s/close", acc);
        snprintf(cmd->body, sizeof cmd->body, "{\"reason\":\"c%d\"}", c->n);
    }
    execute(c->l, cmd);
    if (cmd->status / 100 != 2)
        return;
    atomic_fetch_add(&c->l->acked, 1);
    doc = resp_json(cmd);
    note_reply(c->l, doc);
    if (cmd->kind == K_DEPOSIT || cmd->kind == K_WITHDRAW)
        add_target(c, tw_str(doc, "event_id"), tw_str(doc, "account_id"), cmd->net, 1);
    else if (cmd->kind == K_TRANSFER)
        add_target(c, tw_str(json_object_get(doc, "from"), "event_id"),
                   tw_str(json_object_get(doc, "from"), "account_id"), 0, 2);
    json_decref(doc);
    probe_key(c, cmd);
}

static void *client_main(void *arg)
{
    struct client *c = arg;

    /* leave room for the commands one_command may add (open + close) */
    while (c->l->running && c->n < CMDS_PER_CLIENT - 2) {
        one_command(c);
        usleep((useconds_t)c->l->o.pause_us); /* bounded churn: every request is a new connection */
    }
    return NULL;
}

static void *reader_main(void *arg)
{
    struct tload *l = arg;
    uint64_t rng = 77 + (uint64_t)tnow_ms();

    while (l->running) {
        char id[UUID_STR_SIZE], path[128];
        struct thttp_resp r;
        int64_t t0 = tnow_ms(), seen = 0;
        int doc_read = tgen_rand(&rng) % 2, stale = 0;

        /* half the document reads ask for the account written last: they see the staleness */
        if (doc_read && tgen_rand(&rng) % 2) {
            pthread_mutex_lock(&l->mu);
            snprintf(id, sizeof id, "%s", l->last_acked);
            pthread_mutex_unlock(&l->mu);
        } else {
            random_shared(l, &rng, id);
        }
        if (id[0] == '\0') {
            usleep(20000);
            continue;
        }
        snprintf(path, sizeof path, doc_read ? "/accounts/%s" : "/accounts/%s/statement?limit=5", id);
        (void)thttp_request(&r, "GET", l->o.readapi_url, path, NULL, NULL, l->o.attempt_timeout_ms);
        /* 404: not projected yet, a fine answer (and a stale one) */
        if (doc_read && (r.status == 200 || r.status == 404)) {
            if (r.status == 200) {
                json_t *doc = thttp_json(&r);
                seen = tw_int(doc, "version");
                json_decref(doc);
            }
            stale = stale_ms(l, id, seen, t0);
        }
        log_attempt(l, 'r', t0, r.status, stale);
        thttp_resp_release(&r);
        usleep(10000);
    }
    return NULL;
}

struct tload *tload_start(const struct tload_opts *o)
{
    struct tload *l = calloc(1, sizeof *l);

    assert_non_null(l);
    assert_true(o->clients >= 1 && o->clients <= MAX_CLIENTS && o->readers >= 0 && o->readers <= MAX_READERS);
    l->o = *o;
    l->attempts = calloc(ATTEMPTS_MAX, sizeof *l->attempts);
    assert_non_null(l->attempts);
    pthread_mutex_init(&l->mu, NULL);
    l->running = 1;
    l->run_t0 = (int64_t)time(NULL);
    for (int i = 0; i < o->clients; i++) {
        struct client *c = &l->cl[i];
        c->l = l;
        c->id = i;
        c->rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1) ^ (uint64_t)l->run_t0;
        c->cmds = calloc(CMDS_PER_CLIENT, sizeof *c->cmds);
        assert_non_null(c->cmds);
        assert_int_equal(pthread_create(&l->th[i], NULL, client_main, c), 0);
    }
    for (int i = 0; i < o->readers; i++)
        assert_int_equal(pthread_create(&l->rth[i], NULL, reader_main, l), 0);
    return l;
}

void tload_stop(struct tload *l)
{
    int full = 0;
    if (!l->running)
        return;
    for (int i = 0; i < l->o.clients; i++)
        full |= l->cl[i].n >= CMDS_PER_CLIENT - 2;
    l->running = 0;
    for (int i = 0; i < l->o.clients; i++)
        pthread_join(l->th[i], NULL);
    for (int i = 0; i < l->o.readers; i++)
        pthread_join(l->rth[i], NULL);
    if (full)
        tfail("a load client ran out of commands before the schedule ended: raise CMDS_PER_CLIENT");
}

long tload_acked(struct tload *l)
{
    return atomic_load(&l->acked);
}

void tload_window(struct tload *l, int64_t from, int64_t until, struct tload_window *w)
{
    long n = atomic_load(&l->nattempts);
    int64_t wf0 = 0, wf1 = 0, rf0 = 0, rf1 = 0;

    memset(w, 0, sizeof *w);
    if (n > ATTEMPTS_MAX)
        n = ATTEMPTS_MAX;
    for (long i = 0; i < n; i++) {
        const struct attempt *a = &l->attempts[i];
        if (a->t1 < from || a->t0 >= until)
            continue;
        if (a->svc == 'r') {
            w->reads++;
            if (a->stale > 0)
                w->stale_reads++;
            if (a->stale > w->max_stale_ms)
                w->max_stale_ms = a->stale;
        }
        /* a failure ending after the window belongs to the next one (the next fault's kill) */
        if (a->ok || a->t1 >= until)
            continue;
        if (a->svc == 'w') {
            w->w_fail++;
            w->w_noans += a->noans;
            w->w_late += a->t0 >= from;
            wf0 = wf0 == 0 || a->t0 < wf0 ? a->t0 : wf0;
            wf1 = a->t1 > wf1 ? a->t1 : wf1;
        } else {
            w->r_fail++;
            w->r_late += a->t0 >= from;
            rf0 = rf0 == 0 || a->t0 < rf0 ? a->t0 : rf0;
            rf1 = a->t1 > rf1 ? a->t1 : rf1;
        }
    }
    w->w_outage = wf1 > 0 ? wf1 - (wf0 > from ? wf0 : from) : 0;
    w->w_first = wf1 > 0 ? (wf0 > from ? wf0 : from) - from : 0;
    w->w_last = wf1 > 0 ? wf1 - from : 0;
    w->r_outage = rf1 > 0 ? rf1 - (rf0 > from ? rf0 : from) : 0;
}

void tload_print_failures(struct tload *l, int64_t from, int64_t until, FILE *f)
{
    long n = atomic_load(&l->nattempts);

    if (n > ATTEMPTS_MAX)
        n = ATTEMPTS_MAX;
    for (long i = 0; i < n; i++) {
        const struct attempt *a = &l->attempts[i];
        if (a->ok || a->t1 < from || a->t0 >= until)
            continue;
        fprintf(f, "    %s attempt %+.2f..%+.2f s: %s%d\n", a->svc == 'w' ? "command" : "read", (a->t0 - from) / 1000.0,
                (a->t1 - from) / 1000.0, a->status == 0 ? "no answer " : "status ", a->status);
    }
}

/* ---- the checker ---- */

struct evrow {
    char key[64];
    char event_id[UUID_STR_SIZE];
    char stream_id[UUID_STR_SIZE];
};

static int cmp_evrow(const void *a, const void *b)
{
    return strcmp(((const struct evrow *)a)->key, ((const struct evrow *)b)->key);
}

static int has_event(const struct evrow *rows, long lo, long hi, const char *field, const char *id)
{
    if (id == NULL)
        return 0;
    for (long i = lo; i < hi; i++)
        if (strcmp(strcmp(field, "event") == 0 ? rows[i].event_id : rows[i].stream_id, id) == 0)
            return 1;
    return 0;
}

/* Every 2xx has exactly its events, once; no 4xx has any; every event belongs to a command. */
static long check_commands(PGconn *pg, struct tload *l, struct tload_report *rep)
{
    PGresult *res = PQexec(pg, "SELECT coalesce(metadata->>'idempotency_key', ''), event_id::text, "
                               "stream_id::text FROM events");
    long nrows, bad = 0, matched = 0;
    struct evrow *rows;

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    nrows = PQntuples(res);
    rows = calloc((size_t)nrows + 1, sizeof *rows);
    assert_non_null(rows);
    for (long i = 0; i < nrows; i++) {
        snprintf(rows[i].key, sizeof rows[i].key, "%s", PQgetvalue(res, (int)i, 0));
        snprintf(rows[i].event_id, sizeof rows[i].event_id, "%s", PQgetvalue(res, (int)i, 1));
        snprintf(rows[i].stream_id, sizeof rows[i].stream_id, "%s", PQgetvalue(res, (int)i, 2));
    }
    PQclear(res);
    qsort(rows, (size_t)nrows, sizeof *rows, cmp_evrow);
    for (int t = 0; t < l->o.clients; t++) {
        for (int i = 0; i < l->cl[t].n; i++) {
            struct cmd *c = &l->cl[t].cmds[i];
            long lo = 0, hi = nrows, got;
            json_t *doc;
            /* lower bound, then the run of equal keys */
            while (lo < hi) {
                long mid = (lo + hi) / 2;
                if (strcmp(rows[mid].key, c->key) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (hi = lo; hi < nrows && strcmp(rows[hi].key, c->key) == 0; hi++)
                ;
            got = hi - lo;
            matched += got;
            if (c->status / 100 == 2) {
                if (got != c->expect_events) {
                    fprintf(stderr, "  %s %s: %d but %ld events (expected %d)\n", kind_names[c->kind],
                            c->key, c->status, got, c->expect_events);
                    bad++;
                    continue;
                }
                doc = resp_json(c);
                if (c->kind == K_OPEN ? !has_event(rows, lo, hi, "stream", tw_str(doc, "account_id"))
                    : c->kind == K_TRANSFER
                        ? !has_event(rows, lo, hi, "event", tw_str(json_object_get(doc, "from"), "event_id")) ||
                              !has_event(rows, lo, hi, "event", tw_str(json_object_get(doc, "to"), "event_id"))
                        : !has_event(rows, lo, hi, "event", tw_str(doc, "event_id"))) {
                    fprintf(stderr, "  %s %s: the answer names events that are not its own: %s\n",
                            kind_names[c->kind], c->key, c->resp);
                    bad++;
                }
                json_decref(doc);
                rep->money_clients += c->net;
            } else if (c->status != 0 && c->status < 500) {
                if (got != 0) {
                    fprintf(stderr, "  %s %s: rejected with %d but %ld events exist\n", kind_names[c->kind],
                            c->key, c->status, got);
                    bad++;
                }
            } else if (got != 0 && got != c->expect_events) {
                /* no answer within the budget: all of it or none of it */
                fprintf(stderr, "  %s %s: unanswered, and %ld of %d events exist\n", kind_names[c->kind],
                        c->key, got, c->expect_events);
                bad++;
            } else if (got != 0) {
                rep->ambiguous_landed++;
                rep->money_clients += c->net;
            } else {
                rep->ambiguous_none++;
            }
        }
    }
    if (matched != nrows) {
        fprintf(stderr, "  %ld events belong to no command the clients sent\n", nrows - matched);
        bad++;
    }
    rep->events = nrows;
    free(rows);
    return bad;
}

/* Each account through the read API: the same balance, version and status as the write side,
 * and a statement with one entry per version, none twice, none missing. */
static long check_read_api(PGconn *pg, struct tload *l, struct tload_report *rep)
{
    PGresult *res = PQexec(pg, "SELECT account_id::text, balance, version, status FROM accounts");
    long bad = 0;

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    rep->accounts = PQntuples(res);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0);
        int64_t balance = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        int64_t version = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        char path[160];
        struct thttp_resp r;
        json_t *doc, *entries;
        size_t n;

        if (version > 500)
            tfail("account %s has %lld events: more than one statement page", id, (long long)version);
        /* at the write side's version: a read API on a Redis replica answers from the primary
         * what its replica has not reached yet, as it does for a client's min_version */
        snprintf(path, sizeof path, "/accounts/%s?min_version=%lld&wait_ms=3000", id, (long long)version);
        if (thttp_request(&r, "GET", l->o.readapi_url, path, NULL, NULL, 5000) == 0 && r.status == 503) {
            fprintf(stderr, "  read API %s: not at the write side's version %lld: %s\n", id,
                    (long long)version, r.body ? r.body : "");
            thttp_resp_release(&r);
            bad++;
            continue;
        }
        if (r.status != 200)
            tfail("GET %s: %d %s", path, r.status, r.body ? r.body : "");
        doc = thttp_json(&r);
        if (tw_int(doc, "balance") != balance || tw_int(doc, "version") != version ||
            tw_str(doc, "status") == NULL || strcmp(tw_str(doc, "status"), PQgetvalue(res, i, 3)) != 0) {
            fprintf(stderr, "  read API %s: %s; write side balance %lld version %lld %s\n", id, r.body,
                    (long long)balance, (long long)version, PQgetvalue(res, i, 3));
            bad++;
        }
        rep->money_read += tw_int(doc, "balance");
        json_decref(doc);
        thttp_resp_release(&r);

        snprintf(path, sizeof path, "/accounts/%s/statement?limit=500&min_version=%lld&wait_ms=3000", id,
                 (long long)version);
        if (thttp_request(&r, "GET", l->o.readapi_url, path, NULL, NULL, 5000) != 0 || r.status != 200)
            tfail("GET %s: %d", path, r.status);
        doc = thttp_json(&r);
        entries = json_object_get(doc, "entries");
        n = json_array_size(entries);
        if ((int64_t)n != version) {
            fprintf(stderr, "  statement %s: %zu entries for version %lld\n", id, n, (long long)version);
            bad++;
        }
        for (size_t k = 0; k < n; k++) {
            json_t *en = json_array_get(entries, k);
            /* newest first: version, version-1, ..., 1 */
            if (tw_int(en, "version") != version - (int64_t)k) {
                fprintf(stderr, "  statement %s: entry %zu has version %lld (a gap or a repeat)\n", id, k,
                        (long long)tw_int(en, "version"));
                bad++;
                break;
            }
        }
        if (n > 0 && tw_int(json_array_get(entries, 0), "balance_after") != balance) {
            fprintf(stderr, "  statement %s: newest balance_after %lld, balance %lld\n", id,
                    (long long)tw_int(json_array_get(entries, 0), "balance_after"), (long long)balance);
            bad++;
        }
        json_decref(doc);
        thttp_resp_release(&r);
    }
    PQclear(res);
    return bad;
}

void tload_check(struct tload *l, struct tload_report *rep)
{
    PGconn *pg = tw_pg();
    long n = atomic_load(&l->nattempts);

    memset(rep, 0, sizeof *rep);
    rep->problems = check_commands(pg, l, rep);
    /* versions: 1..n per account, no gap, no repeat */
    rep->problems += tw_scalar(pg, "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                                   "HAVING min(stream_version) <> 1 OR max(stream_version) <> count(*) "
                                   "OR count(DISTINCT stream_version) <> count(*)) g", NULL, NULL);
    rep->problems += tw_scalar(pg, "SELECT count(*) FROM accounts a WHERE version <> (SELECT count(*) "
                                   "FROM events e WHERE e.stream_id = a.account_id)", NULL, NULL);
    rep->problems += check_read_api(pg, l, rep);
    rep->money_events = tw_scalar(pg, "SELECT coalesce(sum(CASE type WHEN 'MoneyDeposited' THEN (data->>'amount')::bigint "
                                      "WHEN 'MoneyWithdrawn' THEN -(data->>'amount')::bigint "
                                      "WHEN 'TransactionReversed' THEN (data->>'amount')::bigint "
                                      "WHEN 'TransferSent' THEN -(data->>'amount')::bigint "
                                      "WHEN 'TransferReceived' THEN (data->>'amount')::bigint ELSE 0 END), 0) FROM events",
                                  NULL, NULL);
    rep->sent_sum = tw_scalar(pg, "SELECT coalesce(sum((data->>'amount')::bigint), 0) FROM events WHERE type = 'TransferSent'",
                              NULL, NULL);
    rep->recv_sum = tw_scalar(pg, "SELECT coalesce(sum((data->>'amount')::bigint), 0) FROM events WHERE type = 'TransferReceived'",
                              NULL, NULL);
    rep->money_write = tw_scalar(pg, "SELECT coalesce(sum(balance), 0) FROM accounts", NULL, NULL);
    PQfinish(pg);

    for (int t = 0; t < l->o.clients; t++) {
        const struct client *c = &l->cl[t];
        rep->sent += c->n;
        rep->replays_ok += c->replays_ok;
        rep->replays_bad += c->replays_bad;
        rep->reuse_ok += c->reuse_ok;
        rep->reuse_bad += c->reuse_bad;
        for (int i = 0; i < c->n; i++) {
            int st = c->cmds[i].status;
            if (st / 100 == 2)
                rep->final_2xx++;
            else if (st != 0 && st < 500)
                rep->final_4xx++;
            else
                rep->unanswered++;
        }
    }
    for (long i = 0; i < n && i < ATTEMPTS_MAX; i++) {
        if (l->attempts[i].svc == 'r') {
            rep->reads++;
            rep->failed_r += !l->attempts[i].ok;
        } else {
            rep->attempts_w++;
            rep->failed_w += !l->attempts[i].ok;
        }
    }
}

void tload_print(const struct tload_report *r, FILE *f)
{
    fprintf(f, "  commands sent          %ld (%ld HTTP attempts to the writer incl. retries and key probes)\n",
            r->sent, r->attempts_w);
    fprintf(f, "  final 2xx              %ld\n", r->final_2xx);
    fprintf(f, "  final 4xx              %ld (business rejections)\n", r->final_4xx);
    fprintf(f, "  final 5xx/timeout      %ld (retry budget spent; %ld landed, %ld did not)\n", r->unanswered,
            r->ambiguous_landed, r->ambiguous_none);
    fprintf(f, "  5xx/timeout attempts   %ld (retried with the same Idempotency-Key)\n", r->failed_w);
    fprintf(f, "  key replays            %ld identical, %ld wrong; key reuse refused %ld, wrong %ld\n",
            r->replays_ok, r->replays_bad, r->reuse_ok, r->reuse_bad);
    fprintf(f, "  reads                  %ld (%ld 5xx/timeout)\n", r->reads, r->failed_r);
    fprintf(f, "  event store            %ld events, %ld accounts\n", r->events, r->accounts);
    fprintf(f, "  money                  clients %lld, events %lld, write side %lld, read API %lld; "
               "transfers sent %lld = received %lld\n",
            (long long)r->money_clients, (long long)r->money_events, (long long)r->money_write,
            (long long)r->money_read, (long long)r->sent_sum, (long long)r->recv_sum);
    fprintf(f, "  checker                %ld problems\n", r->problems);
}

void tload_free(struct tload *l)
{
    if (l == NULL)
        return;
    tload_stop(l);
    for (int t = 0; t < l->o.clients; t++) {
        for (int i = 0; i < l->cl[t].n; i++)
            free(l->cl[t].cmds[i].resp);
        free(l->cl[t].cmds);
    }
    pthread_mutex_destroy(&l->mu);
    free(l->attempts);
    free(l);
}
