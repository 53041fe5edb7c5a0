/* Projector metrics: counters of this process and gauges of the shared read side. */
#include "observe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "metrics.h"
#include "rds.h"
#include "readmodel.h"
#include "svc.h"

#define REFRESH_MS 1000

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Value of field in a HGETALL reply; NULL when absent. */
static const char *field(const redisReply *pairs, const char *name)
{
    if (pairs == NULL || pairs->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < pairs->elements; i += 2)
        if (pairs->element[i]->type == REDIS_REPLY_STRING && strcmp(pairs->element[i]->str, name) == 0 &&
            pairs->element[i + 1]->type == REDIS_REPLY_STRING)
            return pairs->element[i + 1]->str;
    return NULL;
}

static int64_t field_int(const redisReply *pairs, const char *name)
{
    const char *v = field(pairs, name);
    return v != NULL ? strtoll(v, NULL, 10) : 0;
}

static double field_double(const redisReply *pairs, const char *name)
{
    const char *v = field(pairs, name);
    return v != NULL ? strtod(v, NULL) : 0;
}

static void counters(const struct pj_counts *p)
{
    metrics_counter_set("projector_events_applied_total", "Events this process applied to the current read model.",
                        (double)p->applied);
    metrics_counter_set("projector_events_duplicate_total",
                        "Events this process dropped as already applied (redelivery, replay).",
                        (double)p->duplicates);
    metrics_counter_set("projector_gap_repair_events_total",
                        "Events this process read from Postgres to fill a gap in an account's versions.",
                        (double)p->gap_events);
    metrics_counter_set("projector_cas_conflicts_total",
                        "Compare-and-set conflicts: another writer moved the account first, re-read and re-folded.",
                        (double)p->conflicts);
    metrics_counter_set("projector_events_parked_total", "Poison events this process parked.", (double)p->parked);
    metrics_counter_set("projector_history_holes_total",
                        "Events this process parked because earlier versions of their account are missing from the event store.",
                        (double)p->holes);
    metrics_counter_set("projector_stray_messages_total",
                        "Messages dropped because the event store holds another event (or none) at their version.",
                        (double)p->strays);
}

/* The read side's state from one status script call; ST_OK with *has_model set when a current
 * generation exists. */
static status read_side(struct pj *p, int *has_model, struct err *e)
{
    redisReply *r = rds_command(p->rc, "EVAL %s 0", rm_read_status_script());
    const redisReply *cp, *head, *stalled, *rb;
    int64_t pos, headpos, lag_events, lag_s = 0, at_ms;
    const char *state;
    int running;

    *has_model = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 10) {
        status st = pj_redis_failed(p, r, e, "read status");
        freeReplyObject(r);
        return st;
    }
    cp = r->element[2];
    head = r->element[4];
    stalled = r->element[5];
    rb = r->element[6];
    *has_model = rds_reply_int(r->element[9]) == 1;
    pos = field_int(cp, "position");
    at_ms = field_int(cp, "at_ms");
    headpos = field_int(head, "position");
    if (headpos < pos) /* the head is sampled once a second: never behind what was applied */
        headpos = pos;
    lag_events = headpos - pos;
    if (lag_events > 0 && at_ms > 0)
        lag_s = (wall_ms() - at_ms) / 1000;
    metrics_gauge_set("projector_read_model_available", "1 when a current read-model generation exists.",
                      *has_model);
    metrics_gauge_set("projector_checkpoint_position", "Highest global position applied to the current generation.",
                      (double)pos);
    metrics_gauge_set("projector_event_store_head_position", "Highest global position in the events table (sampled).",
                      (double)headpos);
    metrics_gauge_set("projector_lag_events", "Events recorded but not yet in the current read model.",
                      (double)lag_events);
    metrics_gauge_set("projector_lag_seconds",
                      "Seconds since the current read model last applied an event, while it is behind (0 when caught up).",
                      (double)lag_s);
    metrics_gauge_set("projector_horizon_held_events",
                      "Committed events the sweep and rebuilds cannot read yet: an open transaction holds the horizon below them.",
                      (double)field_int(head, "horizon_held"));
    metrics_gauge_set("projector_horizon_wait_seconds",
                      "How long the oldest open transaction has held the horizon while committed events wait behind it (0: none wait).",
                      field_int(head, "horizon_held") > 0 ? (double)field_int(head, "horizon_wait_ms") / 1000.0 : 0);
    metrics_gauge_set("projector_parked_events", "Poison events parked in rm:parked, waiting for an operator.",
                      (double)rds_reply_int(r->element[7]));
    metrics_gauge_set("projector_stalled_accounts", "Accounts stalled behind a parked event.",
                      stalled->type == REDIS_REPLY_ARRAY ? (double)(stalled->elements / 2) : 0);
    state = field(rb, "state");
    running = state != NULL && (strcmp(state, "building") == 0 || strcmp(state, "verifying") == 0);
    metrics_gauge_set("projector_rebuild_running", "1 while a rebuild (or rollback catch-up) is in progress.", running);
    if (state != NULL) {
        int64_t done = field_int(rb, "done"), total = field_int(rb, "total");
        metrics_gauge_set("projector_rebuild_generation", "Generation the last rebuild built.",
                          (double)field_int(rb, "gen"));
        metrics_gauge_set("projector_rebuild_events", "Events the last rebuild has applied so far.", (double)done);
        metrics_gauge_set("projector_rebuild_target_events", "Events the last rebuild has to apply (estimate).",
                          (double)total);
        metrics_gauge_set("projector_rebuild_progress_ratio", "Share of the last rebuild done, 0 to 1.",
                          total > 0 ? (double)done / (double)total : (running ? 0 : 1));
        metrics_gauge_set("projector_rebuild_events_per_second", "Rate of the last rebuild.",
                          field_double(rb, "events_per_s"));
        metrics_gauge_set("projector_rebuild_eta_seconds", "Estimated seconds until the running rebuild is done.",
                          running ? field_double(rb, "eta_s") : 0);
    }
    freeReplyObject(r);
    return ST_OK;
}

static void count_sweep(const char *result, double runs, double events, double fetched);

void pj_observe(struct pj *p, const struct pj_counts *n, int subscribed)
{
    static int64_t last;
    int64_t now = svc_mono_ms();
    int has_model = 0;
    struct err e;

    if (last == 0) { /* both results exist from the start, so an alert on failures has a series */
        count_sweep("result=\"ok\"", 0, 0, 0);
        count_sweep("result=\"failed\"", 0, 0, 0);
    }
    counters(n);
    if (last != 0 && now - last < REFRESH_MS)
        return;
    last = now;
    if (p->rc == NULL) {
        pj_http_set_ready(0, "redis is not connected");
        return;
    }
    err_clear(&e);
    if (read_side(p, &has_model, &e) != ST_OK)
        pj_http_set_ready(0, "redis does not answer");
    else if (!has_model)
        pj_http_set_ready(0, "no current read-model generation (a rebuild is due or running)");
    else if (!subscribed)
        pj_http_set_ready(0, "not taking part in the partition leases");
    else
        pj_http_set_ready(1, NULL);
}

static void count_sweep(const char *result, double runs, double events, double fetched)
{
    metrics_counter_add_l("projector_sweep_runs_total", result, "Catch-up sweeps of the events table by result.", runs);
    metrics_counter_add("projector_sweep_events_total", "Events the catch-up sweeps read from the events table.",
                        events);
    metrics_counter_add("projector_sweep_fetched_events_total",
                        "Events the catch-up sweeps found missing from the read model and read whole to apply them.",
                        fetched);
}

void pj_observe_sweep(int ok, int count, int fetched)
{
    count_sweep(ok ? "result=\"ok\"" : "result=\"failed\"", 1, (double)count, (double)fetched);
}

void pj_observe_owned(int n)
{
    metrics_gauge_set("projector_partitions_owned", "Stream partitions this worker owns (consumes) now.", n);
}

void pj_observe_partition(int part, int owned, uint64_t pending, int64_t lag_ms)
{
    char labels[32];

    snprintf(labels, sizeof labels, "partition=\"%d\"", part);
    if (!owned) {
        metrics_remove_l("projector_partition_pending_messages", labels);
        metrics_remove_l("projector_partition_lag_seconds", labels);
        return;
    }
    metrics_gauge_set_l("projector_partition_pending_messages", labels,
                        "Messages of an owned partition after the last one applied.", (double)pending);
    metrics_gauge_set_l("projector_partition_lag_seconds", labels,
                        "Age of the last message applied of an owned partition while more are pending (0 when caught up).",
                        (double)lag_ms / 1000.0);
}
