/* projector: JetStream pull-consumer workers that keep the Redis read models (and heal them
 * when they vanish), plus the operator commands status, replay-parked, discard-parked (parked.c),
 * rebuild, rollback and drop-generation. */
#include <inttypes.h>
#include <jansson.h>
#include <malloc.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "cfg.h"
#include "db.h"
#include "engine.h"
#include "gens.h"
#include "http.h"
#include "log.h"
#include "observe.h"
#include "parked.h"
#include "ownership.h"
#include "rds.h"
#include "readmodel.h"
#include "rebuild.h"
#include "svc.h"
#include "uuid.h"
#include "worker.h"

#define ARENAS 2 /* malloc arenas of a projector process (see main) */

#define BACKOFF_MAX_MS 5000

/* ---- status ---- */

/* One line per partition: the owner and epoch in the lease bucket, the epoch and seq recorded in
 * Redis (rm:part:<p>) and the lag its owner last reported. */
static void print_partitions(const struct cfg *c, redisContext *rc)
{
    struct bus b = {0};
    kvStore *kv = NULL;
    struct err e;
    int have_kv = 0;

    err_clear(&e);
    if (bus_connect(&b, c->nats_url, "projector-status", c->request_timeout_ms, &e) == ST_OK &&
        own_bind(&kv, &b, &e) == ST_OK)
        have_kv = 1;
    printf("partitions:        %d (lease %d ms)%s%s\n", c->partitions, c->projector_lease_ms,
           have_kv ? "" : ": owners unknown: ", have_kv ? "" : e.msg);
    for (int part = 0; part < c->partitions; part++) {
        char key[RM_KEY_SIZE], owner[OWN_WORKER_SIZE] = "";
        uint64_t kv_epoch = 0;
        redisReply *r;
        const char *f[5] = {"-", "-", "-", "-", "-"};

        if (have_kv && own_read(kv, part, owner, sizeof owner, &kv_epoch, &e) != ST_OK)
            snprintf(owner, sizeof owner, "?");
        rm_key_partition(key, sizeof key, part);
        r = rds_command(rc, "HMGET %s epoch seq pending lag_ms owner", key);
        for (size_t k = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && k < r->elements && k < 5; k++)
            if (r->element[k]->type == REDIS_REPLY_STRING)
                f[k] = r->element[k]->str;
        printf("  %2d owner %s epoch %" PRIu64 " | redis epoch %s seq %s | lag %s events, %s ms\n", part,
               owner[0] != '\0' ? owner : (have_kv ? "none" : "?"), kv_epoch, f[0], f[1], f[2], f[3]);
        freeReplyObject(r);
    }
    if (kv != NULL)
        kvStore_Destroy(kv);
    bus_release(&b);
}

static int cmd_status(const struct cfg *c)
{
    struct pj p;
    struct err e;
    redisReply *cp = NULL, *parked = NULL, *stalled = NULL, *rebuild = NULL;
    struct rm_gens gens;
    PGresult *res = NULL;
    long gen = 0;
    int64_t pos = 0, at_ms = 0, events = 0, head = 0, lag_s = 0;
    int rc = 1;
    char msg[200], pos_s[24];
    const char *params[1] = {pos_s};

    pj_init(&p, c);
    if (rds_connect_cfg(&p.rc, c, &e) != ST_OK) {
        fprintf(stderr, "projector status: %s\n", e.msg);
        goto cleanup;
    }
    if (rm_load_gens(p.rc, &gens, &e) != ST_OK) {
        fprintf(stderr, "projector status: %s\n", e.msg);
        goto cleanup;
    }
    gen = gens.current;
    rebuild = rds_command(p.rc, "HGETALL %s", RM_REBUILD_KEY);
    if (gen > 0) {
        char key[RM_KEY_SIZE];
        rm_key_checkpoint(key, sizeof key, gen);
        cp = rds_command(p.rc, "HMGET %s position at_ms events", key);
        if (cp != NULL && cp->type == REDIS_REPLY_ARRAY && cp->elements == 3) {
            pos = cp->element[0]->type == REDIS_REPLY_STRING ? strtoll(cp->element[0]->str, NULL, 10) : 0;
            at_ms = cp->element[1]->type == REDIS_REPLY_STRING ? strtoll(cp->element[1]->str, NULL, 10) : 0;
            events = cp->element[2]->type == REDIS_REPLY_STRING ? strtoll(cp->element[2]->str, NULL, 10) : 0;
        }
    }
    parked = rds_command(p.rc, "HGETALL %s", RM_PARKED_KEY);
    stalled = rds_command(p.rc, "HGETALL %s", RM_STALLED_KEY);
    if (parked == NULL || stalled == NULL || parked->type != REDIS_REPLY_ARRAY ||
        stalled->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "projector status: redis: %s\n", rds_errstr(p.rc));
        goto cleanup;
    }
    if (pj_pg(&p, &e) != ST_OK) {
        fprintf(stderr, "projector status: %s\n", e.msg);
        goto cleanup;
    }
    snprintf(pos_s, sizeof pos_s, "%" PRId64, pos);
    /* lag in seconds: how long the oldest event not yet applied has been waiting */
    res = PQexecParams(p.pg,
                       "SELECT coalesce(max(position), 0), "
                       "coalesce(extract(epoch FROM now() - min(recorded_at) FILTER (WHERE position > $1::bigint))::bigint, 0) "
                       "FROM events",
                       1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "projector status: event store: %s\n", db_error(msg, sizeof msg, p.pg, res));
        goto cleanup;
    }
    head = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    lag_s = strtoll(PQgetvalue(res, 0, 1), NULL, 10);

    if (gen > 0)
        printf("generation:        %ld\n", gen);
    else if (gens.current_named > 0)
        printf("generation:        %ld has no data: the read API answers 503 until a rebuild\n", gens.current_named);
    else
        printf("generation:        none (no read model: the read API answers 503 until a rebuild)\n");
    if (gens.building > 0)
        printf("building:          %ld\n", gens.building);
    if (gens.previous > 0)
        printf("previous:          %ld (projector rollback / projector drop-generation)\n", gens.previous);
    {
        struct pj_gens_present pres;
        if (pj_gens_present(p.rc, &pres, &e) != ST_OK) {
            fprintf(stderr, "projector status: %s\n", e.msg);
            goto cleanup;
        }
        printf("in redis:          %d generation%s\n", pres.n, pres.n == 1 ? "" : "s");
        for (int i = 0; i < pres.n; i++) {
            long g = pres.gen[i];
            printf("  %ld: %ld key%s, %s\n", g, pres.keys[i], pres.keys[i] == 1 ? "" : "s",
                   g == gens.current ? "current"
                   : g == gens.building ? "building"
                   : g == gens.previous ? "previous"
                   : g == gens.current_named ? "named current but without data"
                                             : "unreachable (projector drop-generation removes it)");
        }
    }
    if (rebuild != NULL && rebuild->type == REDIS_REPLY_ARRAY && rebuild->elements > 0) {
        char f[10][32];
        static const char *const names[10] = {"gen", "state", "mode", "done", "total", "events_per_s",
                                              "eta_s", "cursor", "started_at_ms", "differing"};
        int64_t done = 0, total = 0;
        for (int i = 0; i < 10; i++) {
            snprintf(f[i], sizeof f[i], "-");
            for (size_t k = 0; k + 1 < rebuild->elements; k += 2)
                if (strcmp(rebuild->element[k]->str, names[i]) == 0)
                    snprintf(f[i], sizeof f[i], "%s", rebuild->element[k + 1]->str);
        }
        done = strtoll(f[3], NULL, 10);
        total = strtoll(f[4], NULL, 10);
        printf("rebuild:           generation %s, %s (%s): %" PRId64 "/%" PRId64 " events (%.1f%%), %s events/s, ETA %s s, cursor %s\n",
               f[0], f[1], f[2], done, total, total > 0 ? 100.0 * (double)done / (double)total : 0.0, f[5], f[6], f[7]);
        if (strcmp(f[9], "-") != 0)
            printf("verify:            %s accounts differ\n", f[9]);
    }
    if (at_ms > 0) {
        time_t t = (time_t)(at_ms / 1000);
        struct tm tm;
        char when[40];
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("checkpoint:        position %" PRId64 " at %s (%" PRId64 " events applied)\n", pos, when, events);
    } else {
        printf("checkpoint:        position %" PRId64 " (nothing applied yet)\n", pos);
    }
    printf("event store head:  %" PRId64 "\n", head);
    {
        /* the highest applied position cannot see events held back behind a stall: the
         * sweep records their count and lowest position in rm:head */
        redisReply *h = rds_command(p.rc, "HMGET %s unapplied lowest_unapplied", RM_HEAD_KEY);
        int64_t unapplied = 0, lowest = 0;
        if (h != NULL && h->type == REDIS_REPLY_ARRAY && h->elements == 2) {
            unapplied = h->element[0]->type == REDIS_REPLY_STRING ? strtoll(h->element[0]->str, NULL, 10) : 0;
            lowest = h->element[1]->type == REDIS_REPLY_STRING ? strtoll(h->element[1]->str, NULL, 10) : 0;
        }
        freeReplyObject(h);
        printf("lag:               %" PRId64 " events, %" PRId64 " s\n", (head > pos ? head - pos : 0) + unapplied,
               head > pos ? lag_s : 0);
        if (unapplied > 0)
            printf("held back:         %" PRId64 " events behind stalled accounts, lowest position %" PRId64 "\n",
                   unapplied, lowest);
    }
    {
        /* committed events the sweep and rebuilds may not read yet: an open transaction holds
         * the horizon (pg_snapshot_xmin) below them */
        redisReply *h = rds_command(p.rc, "HMGET %s horizon_held horizon_wait_ms horizon_pid horizon_xmin",
                                    RM_HEAD_KEY);
        if (h != NULL && h->type == REDIS_REPLY_ARRAY && h->elements == 4 && rds_reply_int(h->element[0]) > 0)
            printf("horizon:           %" PRId64 " committed events wait behind transaction %s (pid %" PRId64
                   ") open for %" PRId64 " s\n",
                   rds_reply_int(h->element[0]), h->element[3]->type == REDIS_REPLY_STRING ? h->element[3]->str : "-",
                   rds_reply_int(h->element[2]), rds_reply_int(h->element[1]) / 1000);
        freeReplyObject(h);
    }
    printf("parked events:     %zu\n", parked->elements / 2);
    for (size_t i = 0; i + 1 < parked->elements; i += 2) {
        json_t *rec = pk_parse_record(parked->element[i + 1]);
        printf("  %s account=%s version=%" JSON_INTEGER_FORMAT " at=%s: %s\n", parked->element[i]->str,
               pk_jstr(rec, "account_id"), json_integer_value(json_object_get(rec, "stream_version")),
               pk_jstr(rec, "parked_at"), pk_jstr(rec, "reason"));
        json_decref(rec);
    }
    pk_print_stalls("stalled accounts:  ", stalled);
    if (gens.building > 0) {
        /* stalls met only while building: that generation's, not the served one's */
        char title[80];
        redisReply *b = rds_command(p.rc, "HGETALL rm:%ld:stalled", gens.building);
        snprintf(title, sizeof title, "stalled in building generation %ld: ", gens.building);
        if (b != NULL && b->type == REDIS_REPLY_ARRAY && b->elements > 0)
            pk_print_stalls(title, b);
        freeReplyObject(b);
    }
    print_partitions(c, p.rc);
    rc = 0;
cleanup:
    freeReplyObject(cp);
    freeReplyObject(rebuild);
    freeReplyObject(parked);
    freeReplyObject(stalled);
    PQclear(res);
    pj_release(&p);
    return rc;
}

/* ---- rebuild, rollback, drop-generation ---- */

static int rebuild_exit(const char *what, status st, const struct err *e)
{
    fprintf(stderr, "\nprojector %s: %s\n", what, e->msg);
    return st == ST_CONFLICT ? 4 : st == ST_NOT_FOUND ? 5 : st == ST_INVALID ? 2 : 1;
}

static int cmd_rebuild(const struct cfg *c, int argc, char **argv)
{
    struct rb_opts o = {.mode = RB_SWITCH, .stop = &svc_stop_requested, .out = stdout, .progress = stderr};
    struct rb_result res;
    struct err e;
    status st;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--verify") == 0) {
            o.mode = RB_VERIFY;
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            char *end = NULL;
            long b = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end != '\0' || b < 1 || b > 100000) {
                fprintf(stderr, "projector rebuild: --batch takes 1..100000 events\n");
                return 2;
            }
            o.batch = (int)b;
        } else if (strcmp(argv[i], "--lanes") == 0 && i + 1 < argc) {
            char *end = NULL;
            long l = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end != '\0' || l < 1 || l > PJ_LANES_MAX) {
                fprintf(stderr, "projector rebuild: --lanes takes 1..%d\n", PJ_LANES_MAX);
                return 2;
            }
            o.lanes = (int)l;
        } else if (strcmp(argv[i], "--abort") == 0) {
            long gen = 0, removed = 0;
            err_clear(&e);
            st = rb_abort(c, &gen, &removed, &e);
            if (st != ST_OK)
                return rebuild_exit("rebuild --abort", st, &e);
            if (gen == 0)
                printf("no rebuild in progress\n");
            else
                printf("abandoned the rebuild of generation %ld (%ld keys removed); the current generation is untouched\n",
                       gen, removed);
            return 0;
        } else {
            fprintf(stderr, "projector rebuild: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    err_clear(&e);
    st = rb_run(c, &o, &res, &e);
    if (st != ST_OK)
        return rebuild_exit(o.mode == RB_VERIFY ? "rebuild --verify" : "rebuild", st, &e);
    if (o.mode == RB_VERIFY)
        return res.differing == 0 && res.unfolded == 0 ? 0 : 3;
    if (res.unfolded > 0)
        fprintf(stderr, "rebuild: %" PRId64 " event%s could not be folded and %s parked (projector status)\n",
                res.unfolded, res.unfolded == 1 ? "" : "s", res.unfolded == 1 ? "is" : "are");
    printf("rebuild: generation %ld is current (was %ld%s): %" PRId64 " events in %.1f s, %.0f events/s%s\n", res.gen,
           res.replaced, res.replaced > 0 ? ", kept for projector rollback" : "", res.events,
           (double)res.elapsed_ms / 1000.0, res.events_per_s, res.resumed ? ", resumed from its checkpoint" : "");
    return 0;
}

static int cmd_rollback(const struct cfg *c)
{
    struct rb_opts o = {.mode = RB_ROLLBACK, .stop = &svc_stop_requested, .out = stdout, .progress = stderr};
    struct rb_result res;
    struct err e;
    status st;

    err_clear(&e);
    st = rb_run(c, &o, &res, &e);
    if (st != ST_OK)
        return rebuild_exit("rollback", st, &e);
    printf("rollback: generation %ld is current again (caught up %" PRId64 " events); %ld is now the previous one\n",
           res.gen, res.events, res.replaced);
    return 0;
}

static int cmd_drop(const struct cfg *c)
{
    long gen = 0, removed = 0;
    struct err e;
    status st;

    struct pj p;
    long orphans = 0, orphan_keys = 0;

    err_clear(&e);
    st = rb_drop_previous(c, &gen, &removed, &e);
    if (st != ST_OK)
        return rebuild_exit("drop-generation", st, &e);
    if (gen == 0)
        printf("no previous generation to drop\n");
    else
        printf("dropped generation %ld (%ld key%s unlinked)\n", gen, removed, removed == 1 ? "" : "s");
    /* and any generation nothing names any more (left by a lost rm:current) */
    pj_init(&p, c);
    st = rds_connect_cfg(&p.rc, c, &e);
    if (st == ST_OK)
        st = pj_gens_drop_unreachable(p.rc, &orphans, &orphan_keys, &e);
    pj_release(&p);
    if (st != ST_OK)
        return rebuild_exit("drop-generation", st, &e);
    if (orphans > 0)
        printf("dropped %ld unreachable generation%s (%ld key%s unlinked)\n", orphans, orphans == 1 ? "" : "s",
               orphan_keys, orphan_keys == 1 ? "" : "s");
    return 0;
}

/* discard-parked <event> --reason TEXT (either order) into event_id and *reason; 2 when they
 * are not that (printed), else 0. */
static int discard_args(int argc, char **argv, char event_id[UUID_STR_SIZE], const char **reason)
{
    *reason = NULL;
    event_id[0] = '\0';
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc) {
            *reason = argv[++i];
        } else if (event_id[0] != '\0' || !uuid_parse(argv[i], strlen(argv[i]), event_id)) {
            fprintf(stderr, "projector discard-parked: unexpected argument '%s' (usage: discard-parked <event id> "
                    "--reason TEXT)\n", argv[i]);
            return 2;
        }
    }
    if (event_id[0] == '\0' || *reason == NULL) {
        fprintf(stderr, "projector discard-parked: %s (usage: discard-parked <event id> --reason TEXT)\n",
                event_id[0] == '\0' ? "an event id (a UUID) is required" : "--reason is required");
        return 2;
    }
    if ((*reason)[0] == '\0' || strlen(*reason) > REASON_MAX) {
        fprintf(stderr, "projector discard-parked: --reason must be 1 to %d characters\n", REASON_MAX);
        return 2;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: projector <command>\n"
            "  run                     a worker: applies events from JetStream (run several); rebuilds\n"
            "                          by itself when there is no current read-model generation\n"
            "  status                  generations, checkpoint, lag, rebuild progress, parked, stalled\n"
            "  replay-parked [event]   retry parked (poison) events after fixing their cause (all of\n"
            "                          them, or the one event id given)\n"            "  discard-parked <event> --reason TEXT\n"
            "                          give up on a parked event, recorded (who, when, why) in\n"
            "                          discarded_events: it folds as a no-op everywhere from then on\n"
            "                          and its account resumes\n"
            "  rebuild                 build a new generation from the events table while the live one\n"
            "                          serves, then switch to it; resumes a rebuild that was stopped\n"
            "  rebuild --verify        build a generation, compare it with the current one account by\n"
            "                          account, print the differences, drop it; exit 3 when they differ\n"
            "                          or events of the history could not be folded\n"
            "  rebuild --abort         abandon the rebuild in progress and remove its keys\n"
            "  rebuild --batch N       events per read of the events table (default 20000)\n"
            "  rebuild --lanes N       partition lanes applied in parallel (1..16, default 2)\n"
            "  rollback                make the previous generation current again (caught up first)\n"
            "  drop-generation         remove the previous generation (UNLINK over SCAN)\n"
            "exit status: 0 done (or nothing to do), 1 failure (a dependency, an event left parked),\n"
            "2 usage or configuration, 3 verify found differences or events that do not fold,\n"
            "4 refused (another rebuild holds the lease, a rebuild is in progress, an event that\n"
            "cannot be discarded),\n"
            "5 not found (no such parked event, nothing to roll back to or verify against)\n\n");
    cfg_usage("projector");
}

int main(int argc, char **argv)
{
    static struct cfg c;
    char errs[4096] = "", event_id[UUID_STR_SIZE];
    const char *cmd = argc > 1 ? argv[1] : NULL, *reason = NULL;

    if (cmd == NULL || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage();
        return cmd == NULL ? 2 : 0;
    }
    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "status") != 0 && strcmp(cmd, "replay-parked") != 0 &&
        strcmp(cmd, "discard-parked") != 0 &&
        strcmp(cmd, "rebuild") != 0 && strcmp(cmd, "rollback") != 0 && strcmp(cmd, "drop-generation") != 0) {
        fprintf(stderr, "projector: unknown command '%s'\n", cmd);
        usage();
        return 2;
    }
    if (strcmp(cmd, "discard-parked") == 0) {
        if (discard_args(argc, argv, event_id, &reason) != 0)
            return 2;
    } else if (strcmp(cmd, "rebuild") != 0 && (argc > 3 || (argc == 3 && strcmp(cmd, "replay-parked") != 0))) {
        fprintf(stderr, "projector %s: unexpected argument '%s'\n", cmd, argv[argc - 1]);
        return 2;
    }
    if (cfg_load(&c, errs, sizeof errs) != ST_OK) {
        fputs(errs, stderr);
        return 2;
    }
    log_init("projector", (enum log_level)c.log_level, (enum log_format)c.log_format);
    /* A thread per owned partition would each get a malloc arena of its own (up to 8 per core),
     * every one keeping the high-water mark of the batches decoded in it: one worker catching
     * up 16 partitions peaked at 108-120 MiB with them, 92-96 MiB with 2. MALLOC_ARENA_MAX, when
     * set, is glibc's to apply. */
    if (getenv("MALLOC_ARENA_MAX") == NULL)
        (void)mallopt(M_ARENA_MAX, ARENAS);
    /* the handler only sets the flag: loops finish their batch and drain */
    svc_signals_install(0);
    if (strcmp(cmd, "run") == 0)
        return worker_run(&c);
    if (strcmp(cmd, "status") == 0)
        return cmd_status(&c);
    if (strcmp(cmd, "rebuild") == 0)
        return cmd_rebuild(&c, argc, argv);
    if (strcmp(cmd, "discard-parked") == 0)
        return pk_cmd_discard(&c, event_id, reason);
    if (strcmp(cmd, "rollback") == 0)
        return cmd_rollback(&c);
    if (strcmp(cmd, "drop-generation") == 0)
        return cmd_drop(&c);
    if (argc > 2) {
        char canon[UUID_STR_SIZE];
        if (!uuid_parse(argv[2], strlen(argv[2]), canon)) {
            fprintf(stderr, "projector replay-parked: '%s' is not an event id (a UUID)\n", argv[2]);
            return 2;
        }
        snprintf(argv[2], strlen(argv[2]) + 1, "%s", canon);
    }
    return pk_cmd_replay(&c, argc > 2 ? argv[2] : NULL);
}
